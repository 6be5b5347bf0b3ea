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
    client.cookies.set("ftgate_session", session_cookie(PUBLISHED_KEY, {"user_id": admin_id, "session_version": 1, "csrf": "t"}))
    r = client.get("/admin/users", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(f"{API}/admin/users").status_code == 401
    r = client.post(f"{API}/admin/tokens", json={"name": "mine"}, headers={"X-CSRF-Token": "t"})
    assert r.status_code == 401
    # the same cookie signed with the service's own key is a session (so the forgery failed on the key alone)
    client.cookies.set("ftgate_session", session_cookie(app.state.settings.secret_key, {"user_id": admin_id, "session_version": 1}))
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


# --------------------------------------------------------------------------------------------------------
# sessions: one version per user, bumped by sign-out, password change, deactivation and role change
def csrf_of(html: str) -> str:
    import re

    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(app, email: str, password: str):
    """A browser (TestClient) signed in through the sign-in page; returns it and its session cookie."""
    from fastapi.testclient import TestClient

    browser = TestClient(app)
    r = browser.post("/login", data={"email": email, "password": password, "csrf": csrf_of(browser.get("/login").text),
                                     "next": "/submissions"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return browser, browser.cookies.get("ftgate_session")


def replay(app, cookie: str) -> int:
    """What a copy of ``cookie`` gets from the API now (200: a session, 401: none)."""
    from fastapi.testclient import TestClient

    other = TestClient(app)
    other.cookies.set("ftgate_session", cookie)
    return other.get(f"{API}/submissions").status_code


def test_signing_out_ends_every_session_of_the_user(app, make_user):
    make_user("submitter", email="sam@acme.test", password="sam-password-1")
    laptop, laptop_cookie = sign_in(app, "sam@acme.test", "sam-password-1")
    _, phone_cookie = sign_in(app, "sam@acme.test", "sam-password-1")
    assert replay(app, laptop_cookie) == 200 and replay(app, phone_cookie) == 200
    r = laptop.post("/logout", data={"csrf": csrf_of(laptop.get("/submissions").text)}, follow_redirects=False)
    assert r.status_code == 303
    assert replay(app, laptop_cookie) == 401 and replay(app, phone_cookie) == 401


def test_sign_out_everywhere_by_api_token(app, client, make_user):
    _, _, h = make_user("submitter", email="tok@acme.test", password="tok-password-1")
    _, cookie = sign_in(app, "tok@acme.test", "tok-password-1")
    assert client.post(f"{API}/account/sessions/revoke", headers=h).status_code == 204
    assert replay(app, cookie) == 401
    assert client.get(f"{API}/submissions", headers=h).status_code == 200  # tokens are not sessions


def test_admin_password_change_deactivation_and_role_change_end_sessions(app, client, make_user):
    _, _, admin_h = make_user("admin", org="provider")
    uid, token, user_h = make_user("reviewer", org="provider", email="rita@provider.test", password="rita-password-1")

    _, cookie = sign_in(app, "rita@provider.test", "rita-password-1")
    r = client.post(f"{API}/admin/users/{uid}/password", headers=admin_h, json={"password": "rita-password-2"})
    assert r.status_code == 200 and replay(app, cookie) == 401

    _, cookie = sign_in(app, "rita@provider.test", "rita-password-2")
    r = client.patch(f"{API}/admin/users/{uid}", headers=admin_h, json={"role": "submitter"})
    assert r.status_code == 200 and r.json()["role"] == "submitter" and replay(app, cookie) == 401
    assert client.get(f"{API}/submissions/x/samples", headers=user_h).status_code == 403  # the token has the new role

    _, cookie = sign_in(app, "rita@provider.test", "rita-password-2")
    r = client.patch(f"{API}/admin/users/{uid}", headers=admin_h, json={"is_active": False})
    assert r.status_code == 200 and r.json()["is_active"] is False and replay(app, cookie) == 401
    assert client.get(f"{API}/submissions", headers=user_h).status_code == 401
    # reactivated: the old cookie stays dead; a new sign-in works
    assert client.patch(f"{API}/admin/users/{uid}", headers=admin_h, json={"is_active": True}).status_code == 200
    assert replay(app, cookie) == 401
    sign_in(app, "rita@provider.test", "rita-password-2")

    _, cookie = sign_in(app, "rita@provider.test", "rita-password-2")
    assert client.post(f"{API}/admin/users/{uid}/sessions/revoke", headers=admin_h).status_code == 204
    assert replay(app, cookie) == 401

    actions = [e["action"] for e in client.get(f"{API}/admin/audit", headers=admin_h).json()["items"]]
    assert {"password_set", "user_role_changed", "user_deactivated", "user_activated", "sessions_ended"} <= set(actions)


def test_admins_cannot_demote_or_deactivate_themselves_and_others_cannot_at_all(client, make_user):
    admin_id, _, admin_h = make_user("admin", org="provider")
    uid, _, user_h = make_user("reviewer", org="provider")
    r = client.patch(f"{API}/admin/users/{admin_id}", headers=admin_h, json={"is_active": False})
    assert r.status_code == 409 and r.json()["code"] == "own_account"
    assert client.patch(f"{API}/admin/users/{uid}", headers=user_h, json={"role": "admin"}).status_code == 403
    assert client.patch(f"{API}/admin/users/999999", headers=admin_h, json={"role": "admin"}).status_code == 404


def test_admin_users_page_changes_role_and_access(app, make_user, db):
    make_user("admin", org="provider", email="ada@provider.test", password="ada-password-1")
    uid, _, _ = make_user("submitter", email="sub@acme.test", password="sub-password-1")
    admin, _ = sign_in(app, "ada@provider.test", "ada-password-1")
    page = admin.get("/admin/users")
    assert f'action="/admin/users/{uid}/access"' in page.text
    r = admin.post(f"/admin/users/{uid}/access", data={"role": "reviewer", "active": "no", "csrf": csrf_of(page.text)},
                   follow_redirects=False)
    assert r.status_code == 303
    from models import User

    user = db.get(User, uid)
    db.refresh(user)
    assert user.role == "reviewer" and user.is_active is False and user.session_version == 2


def test_a_password_is_set_from_the_api_and_the_page_and_a_short_one_is_refused(app, client, make_user):
    """Both take the same PasswordIn: at least 8 characters, else 422 (API) or a message (page), unchanged."""
    make_user("admin", org="provider", email="ada@provider.test", password="ada-password-1")
    _, _, admin_h = make_user("admin", org="provider")
    uid, _, _ = make_user("submitter", email="sub@acme.test", password="sub-password-1")

    r = client.post(f"{API}/admin/users/{uid}/password", headers=admin_h, json={"password": "short"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input" and r.json()["field"] == "password"
    r = client.post(f"{API}/admin/users/{uid}/password", headers=admin_h, json={})
    assert r.status_code == 422 and r.json()["field"] == "password"

    admin, _ = sign_in(app, "ada@provider.test", "ada-password-1")
    url = f"/admin/users/{uid}/password"
    r = admin.post(url, data={"password": "short", "csrf": csrf_of(admin.get("/admin/users").text)})
    assert r.status_code == 200 and "Not changed" in r.text and "at least 8 characters" in r.text
    sign_in(app, "sub@acme.test", "sub-password-1")  # the old password still works
    r = admin.post(url, data={"password": "sub-password-2", "csrf": csrf_of(admin.get("/admin/users").text)})
    assert r.status_code == 200 and "Password of sub@acme.test set" in r.text
    sign_in(app, "sub@acme.test", "sub-password-2")


# --------------------------------------------------------------------------------------------------------
# sign-in throttling, audit, constant time
def throttled_app(service_settings, **limits):
    from api.app import create_app

    return create_app(service_settings.model_copy(update={"login_first_backoff_seconds": 60, **limits}))


def attempt(browser, email: str, password: str):
    return browser.post("/login", data={"email": email, "password": password, "next": "/",
                                        "csrf": csrf_of(browser.get("/login").text)}, follow_redirects=False)


def test_wrong_passwords_make_the_account_wait_even_for_the_right_one(service_settings, make_user, db):
    from fastapi.testclient import TestClient

    make_user("submitter", email="vic@acme.test", password="vic-password-1")
    app = throttled_app(service_settings, login_free_failures_per_account=3)
    with TestClient(app) as browser:
        for _ in range(3):
            assert attempt(browser, "vic@acme.test", "guess").status_code == 401
        r = attempt(browser, "vic@acme.test", "vic-password-1")
        assert r.status_code == 429 and 55 <= int(r.headers["retry-after"]) <= 60
        assert "Too many failed sign-ins" in r.text
    # another address is held back too: the account's counter is the account's
    with TestClient(app, client=("10.0.0.9", 50000)) as elsewhere:
        assert attempt(elsewhere, "vic@acme.test", "vic-password-1").status_code == 429
    from models import AuditEvent

    failed = db.query(AuditEvent).filter(AuditEvent.action == "login_failed").all()
    assert len(failed) == 3 and failed[0].details["email"] == "vic@acme.test"
    assert failed[0].details["known_account"] is True and failed[0].actor == "address:testclient"


def test_one_address_guessing_many_accounts_is_held_back(service_settings, make_user):
    from fastapi.testclient import TestClient

    make_user("submitter", email="wes@acme.test", password="wes-password-1")
    app = throttled_app(service_settings, login_free_failures_per_address=4)
    with TestClient(app, client=("10.0.0.1", 40000)) as sprayer:
        for n in range(4):
            assert attempt(sprayer, f"nobody{n}@acme.test", "guess").status_code == 401
        assert attempt(sprayer, "wes@acme.test", "wes-password-1").status_code == 429
    with TestClient(app, client=("10.0.0.2", 40000)) as other:
        assert attempt(other, "wes@acme.test", "wes-password-1").status_code == 303


def test_a_successful_sign_in_forgets_the_accounts_failures(service_settings, make_user):
    from fastapi.testclient import TestClient

    make_user("submitter", email="xia@acme.test", password="xia-password-1")
    app = throttled_app(service_settings, login_free_failures_per_account=3)
    with TestClient(app) as browser:
        for _ in range(2):
            assert attempt(browser, "xia@acme.test", "typo").status_code == 401
        assert attempt(browser, "xia@acme.test", "xia-password-1").status_code == 303
        browser.cookies.clear()
        for _ in range(2):
            assert attempt(browser, "xia@acme.test", "typo").status_code == 401
        assert attempt(browser, "xia@acme.test", "xia-password-1").status_code == 303


def test_backoff_doubles_and_is_capped():
    from services.login import ThrottlePolicy

    p = ThrottlePolicy(free_failures_per_account=5, first_backoff_seconds=1, max_backoff_seconds=900)
    waits = [p.wait_after(n, 5) for n in range(1, 20)]
    assert waits[:4] == [None] * 4
    assert [w.total_seconds() for w in waits[4:9]] == [1, 2, 4, 8, 16] and waits[-1].total_seconds() == 900


def test_an_unknown_email_costs_the_same_password_check_as_a_known_one(db, monkeypatch):
    """The answer's time told whether an email exists (92 ms vs 7 ms): now every attempt runs one scrypt."""
    from services import auth

    auth.create_user(db, "known@acme.test", password="known-password-1")
    auth.create_user(db, "tokenonly@acme.test")
    db.commit()
    checks = []
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda pw, stored: checks.append(stored) or real(pw, stored))
    for email in ("known@acme.test", "unknown@acme.test", "tokenonly@acme.test"):
        assert auth.authenticate_password(db, email, "wrong") is None
    assert len(checks) == 3 and all(c and c.startswith("scrypt$") for c in checks)


# --------------------------------------------------------------------------------------------------------
# four eyes
def finished_submission(client, headers, db, seed: str) -> str:
    """An uploaded submission the test marks finished with an automatic "review" verdict."""
    import io
    import zipfile

    from models import Submission, VerdictRecord

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("adapter_config.json", json.dumps({"peft_type": "LORA", "r": 8, "seed": seed}))
        zf.writestr("adapter_model.safetensors", b"\x00" * 64)
    r = client.post(f"{API}/submissions", headers=headers, files={"file": ("a.zip", buf.getvalue())})
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    row = db.get(Submission, sid)
    row.status, row.decision, row.review_state = "done", "review", "pending"
    db.add(VerdictRecord(submission_id=sid, decision="review", reasons=["close"], policy_name="default", report={}))
    db.commit()
    return sid


def test_nobody_reviews_their_own_submission(client, make_user, db):
    _, _, rex_h = make_user("reviewer", org="provider")
    _, _, other_h = make_user("reviewer", org="provider")
    sid = finished_submission(client, rex_h, db, "own")
    r = client.post(f"{API}/submissions/{sid}/review", headers=rex_h, json={"decision": "approve", "reason": "mine, fine"})
    assert r.status_code == 403 and r.json()["code"] == "own_submission"
    # not even with an override: that is for admins
    r = client.post(f"{API}/submissions/{sid}/review", headers=rex_h,
                    json={"decision": "approve", "reason": "fine", "override_reason": "nobody else"})
    assert r.status_code == 403
    r = client.post(f"{API}/submissions/{sid}/review", headers=other_h, json={"decision": "approve", "reason": "looked"})
    assert r.status_code == 200 and r.json()["review_state"] == "approved"


def test_an_admin_overrides_four_eyes_only_with_an_audited_reason(client, make_user, db):
    _, _, admin_h = make_user("admin", org="provider")
    sid = finished_submission(client, admin_h, db, "admin-own")
    r = client.post(f"{API}/submissions/{sid}/review", headers=admin_h, json={"decision": "block", "reason": "bad"})
    assert r.status_code == 403 and r.json()["field"] == "override_reason"
    r = client.post(f"{API}/submissions/{sid}/review", headers=admin_h,
                    json={"decision": "block", "reason": "bad", "override_reason": "the only reviewer is on leave"})
    assert r.status_code == 200 and r.json()["review_state"] == "blocked"
    events = client.get(f"{API}/submissions/{sid}/events", headers=admin_h).json()["items"]
    override = [e for e in events if e["action"] == "four_eyes_override"]
    assert len(override) == 1 and override[0]["details"]["override_reason"] == "the only reviewer is on leave"


def test_the_review_page_does_not_offer_a_reviewer_their_own_submission(app, client, make_user, db):
    _, _, h = make_user("reviewer", org="provider", email="ron@provider.test", password="ron-password-1")
    sid = finished_submission(client, h, db, "page")
    browser, _ = sign_in(app, "ron@provider.test", "ron-password-1")
    page = browser.get(f"/review/{sid}")
    assert 'id="own-submission"' in page.text and 'id="review-form"' not in page.text
    r = browser.post(f"/review/{sid}", data={"decision": "approve", "reason": "x", "csrf": csrf_of(page.text)},
                     follow_redirects=False)
    assert r.status_code == 303
    from models import Submission

    row = db.get(Submission, sid)
    db.refresh(row)
    assert row.review_state == "pending"


# --------------------------------------------------------------------------------------------------------
# secrets at rest: the first admin's credentials, token expiry
def test_initial_credentials_are_removed_at_the_admins_first_sign_in(app, service_settings):
    from api.serve import CREDENTIALS_FILE, bootstrap_admin

    creds = bootstrap_admin(service_settings)
    path = service_settings.data_dir / CREDENTIALS_FILE
    assert path.exists() and "token expires" in path.read_text()
    sign_in(app, creds["email"], creds["password"])
    assert not path.exists()


def test_initial_credentials_are_removed_when_the_admins_password_is_rotated(client, service_settings):
    from api.serve import CREDENTIALS_FILE, bootstrap_admin

    creds = bootstrap_admin(service_settings)
    path = service_settings.data_dir / CREDENTIALS_FILE
    h = {"Authorization": f"Bearer {creds['token']}"}
    users = client.get(f"{API}/admin/users", headers=h).json()["items"]
    assert path.exists()
    r = client.post(f"{API}/admin/users/{users[0]['id']}/password", headers=h, json={"password": "a-new-password"})
    assert r.status_code == 200 and not path.exists()


def test_every_api_token_expires(client, make_user, service_settings):
    from datetime import UTC, datetime, timedelta

    from api.serve import bootstrap_admin

    _, _, admin_h = make_user("admin", org="provider")
    r = client.post(f"{API}/admin/tokens", headers=admin_h, json={"name": "ci"})
    assert r.status_code == 201
    expires = datetime.fromisoformat(r.json()["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    r = client.post(f"{API}/admin/tokens", headers=admin_h, json={"name": "old", "expires_at": "2020-01-01T00:00:00Z"})
    assert r.status_code == 422 and r.json()["field"] == "expires_at"
    tokens = client.get(f"{API}/admin/tokens", headers=admin_h).json()["items"]
    assert all(t["expires_at"] for t in tokens)
    assert bootstrap_admin(service_settings) is None  # users exist: no first admin, nothing printed
