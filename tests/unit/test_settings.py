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
