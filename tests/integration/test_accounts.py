"""Accounts, sessions and the service's secrets (docs/security.md, "Accounts, sessions and the service"),
on real PostgreSQL."""

from __future__ import annotations

import json
import stat
from base64 import b64encode

import pytest

pytestmark = pytest.mark.integration
API = "/api/v1"
PUBLISHED_KEY = "change-me-in-production"


def session_cookie(secret_key: str, session: dict) -> str:
    """A session cookie as Starlette's SessionMiddleware signs it: what an attacker who knows the key mints."""
    from itsdangerous import TimestampSigner

    return TimestampSigner(secret_key).sign(b64encode(json.dumps(session).encode())).decode()


def test_the_service_refuses_to_start_with_the_published_or_a_short_key(service_settings):
    from api.app import create_app
    from ftgate.settings import InsecureSecretKey

    for key in (PUBLISHED_KEY, "", "too-short"):
        with pytest.raises(InsecureSecretKey, match="FTGATE_SECRET_KEY"):
            create_app(service_settings.model_copy(update={"secret_key": key}))


def test_a_cookie_forged_with_the_published_key_opens_nothing(app, client, make_user):
    admin_id, _, _ = make_user("admin", org="provider")
    client.cookies.set("ftgate_session", session_cookie(PUBLISHED_KEY, {"user_id": admin_id, "csrf": "t"}))
    r = client.get("/admin/users", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(f"{API}/admin/users").status_code == 401
    r = client.post(f"{API}/admin/tokens", json={"name": "mine"}, headers={"X-CSRF-Token": "t"})
    assert r.status_code == 401
    # the same cookie signed with the service's own key is a session (so the forgery failed on the key alone)
    client.cookies.set("ftgate_session", session_cookie(app.state.settings.secret_key, {"user_id": admin_id}))
    assert client.get(f"{API}/admin/users").status_code == 200


def test_serve_generates_its_key_once_and_keeps_it_private(tmp_path):
    from api.serve import SECRET_KEY_FILE, load_or_create_secret_key

    key = load_or_create_secret_key(tmp_path)
    path = tmp_path / SECRET_KEY_FILE
    assert len(key) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret_key(tmp_path) == key
    other = tmp_path / "another-installation"
    other.mkdir()
    assert load_or_create_secret_key(other) != key


@pytest.mark.timeout(60)  # the code before this control started serving instead
@pytest.mark.parametrize("key", [PUBLISHED_KEY, "short"])
def test_serve_refuses_a_published_or_short_key_with_a_clear_message(key, tmp_path, monkeypatch, capsys):
    from api import serve
    from ftgate.settings import get_settings

    monkeypatch.setenv("FTGATE_SECRET_KEY", key)
    monkeypatch.setenv("FTGATE_DATA_DIR", str(tmp_path))
    assert serve.main(["--data-dir", str(tmp_path), "--no-worker"]) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "FTGATE_SECRET_KEY" in err and "openssl rand" in err
    assert not (tmp_path / "ftgate.db").exists()  # nothing started
    get_settings.cache_clear()  # serve cached the settings of this test's environment
