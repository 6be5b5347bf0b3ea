import pytest
from pydantic import ValidationError

from ftgate.settings import Settings


def test_embedded_defaults_need_no_server(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_broker_url == "filesystem://"
    assert s.resolved_storage_dir == tmp_path / "storage"


def test_env_overrides_and_validation(monkeypatch):
    monkeypatch.setenv("FTGATE_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("FTGATE_MAX_NEW_TOKENS", "32")
    s = Settings()
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert s.max_new_tokens == 32
    with pytest.raises(ValidationError):
        Settings(dtype="float8")


@pytest.mark.parametrize("key, problem", [
    ("", "not set"), ("change-me-in-production", "published default"), ("short-key", "at least 32"),
])
def test_a_missing_published_or_short_secret_key_is_refused(key, problem):
    from ftgate.settings import InsecureSecretKey

    with pytest.raises(InsecureSecretKey, match=problem):
        Settings(secret_key=key).require_secure_secret_key()
    Settings(secret_key="k" * 32).require_secure_secret_key()


def test_the_default_settings_carry_no_usable_secret_key(monkeypatch):
    from ftgate.settings import InsecureSecretKey

    monkeypatch.delenv("FTGATE_SECRET_KEY", raising=False)
    with pytest.raises(InsecureSecretKey):
        Settings(_env_file=None).require_secure_secret_key()


def test_every_setting_says_what_it_does_where_it_is_declared():
    undocumented = {name for name, field in Settings.model_fields.items() if not field.description}
    # the decoding settings are being reworked in another change, which documents them
    assert undocumented <= {"generation_batch_size", "max_new_tokens"}


def test_settings_that_did_nothing_are_gone_and_an_old_environment_still_starts(monkeypatch):
    monkeypatch.setenv("FTGATE_SEED", "7")
    monkeypatch.setenv("FTGATE_TORCH_THREADS", "2")
    s = Settings(_env_file=None)
    assert not hasattr(s, "seed") and not hasattr(s, "torch_threads")
