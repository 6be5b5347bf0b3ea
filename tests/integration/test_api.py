"""The HTTP API on real PostgreSQL and Redis (no worker: messages stay in the broker)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from fastapi import Request

pytestmark = pytest.mark.integration
API = "/api/v1"


def adapter_zip(seed: str = "x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("adapter_config.json", json.dumps({"peft_type": "LORA", "r": 8, "seed": seed}))
        zf.writestr("adapter_model.safetensors", b"\x00" * 64)
    return buf.getvalue()


def upload(client, headers, content: bytes, filename="adapter.zip", **fields):
    return client.post(f"{API}/submissions", headers=headers, files={"file": (filename, content)}, data=fields)


def test_health_ready_metrics(client):
    assert client.get(f"{API}/healthz").json() == {"status": "ok"}
    r = client.get(f"{API}/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    # the same probes at the root, where load balancers and Kubernetes look by default
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == r.json()
    m = client.get(f"{API}/metrics")
    assert m.status_code == 200
    assert 'ftgate_submissions{status="queued"}' in m.text
    assert 'ftgate_queue_depth{queue="cpu"}' in m.text


def test_readyz_reports_a_broken_broker(service_settings, redis_url):
    from fastapi.testclient import TestClient

    from api.app import create_app

    bad = service_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(bad)) as c:
        r = c.get(f"{API}/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("error")


def test_upload_records_hashes_and_enqueues_after_commit(client, make_user, redis_client, db):
    _, _, h = make_user()
    content = adapter_zip()
    r = upload(client, h, content, name="my adapter")
    assert r.status_code == 202, r.text
    body = r.json()
    import hashlib

    assert body["status"] == "queued" and body["duplicate"] is False
    assert body["sha256"] == hashlib.sha256(content).hexdigest() and body["size"] == len(content)
    assert body["name"] == "my adapter" and body["kind"] == "adapter"
    assert r.headers["location"] == f"{API}/submissions/{body['id']}"
    # one inspect message on the cpu queue, carrying only the id
    assert redis_client.llen("cpu") == 1
    msg = json.loads(redis_client.lindex("cpu", 0))
    assert msg["headers"]["task"] == "ftgate.inspect"
    assert json.loads(__import__("base64").b64decode(msg["body"]))[0] == [body["id"]]
    from models import Submission

    row = db.get(Submission, body["id"])
    assert row.enqueued_at is not None
    stored = client.app.state.storage.path(row.artifact_path)
    assert stored.read_bytes() == content

    # the same artifact + base + policy: the existing submission, no new run
    r2 = upload(client, h, content, filename="renamed.zip")
    assert r2.status_code == 200 and r2.json()["id"] == body["id"] and r2.json()["duplicate"] is True
    assert redis_client.llen("cpu") == 1

    got = client.get(f"{API}/submissions/{body['id']}", headers=h).json()
    assert got["progress"]["percent"] == 0 and got["verdict"] is None
    assert client.get(f"{API}/submissions/{body['id']}/report", headers=h).json()["code"] == "not_ready"
    listed = client.get(f"{API}/submissions", headers=h).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == body["id"]
    ev = client.get(f"{API}/submissions/{body['id']}/events", headers=h).json()["items"]
    assert [e["action"] for e in ev] == ["submitted"]


def test_upload_limits_and_types(client, make_user, service_settings):
    _, _, h = make_user()
    big = b"PK\x03\x04" + b"\x00" * (service_settings.max_upload_bytes + 10)
    r = upload(client, h, big)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    r = upload(client, h, b"not a zip at all", filename="adapter.zip")
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = upload(client, h, adapter_zip(), filename="adapter.pkl")
    assert r.status_code == 415
    r = upload(client, h, b"\x89PNG\r\n", filename="data.jsonl", kind="dataset")
    assert r.status_code == 415
    r = client.post(f"{API}/submissions", headers=h, json={"file": "x"})
    assert r.status_code == 415
    r = upload(client, h, adapter_zip(), kind="model")
    assert r.status_code == 422 and r.json()["field"] == "kind"
    r = upload(client, h, adapter_zip(), training="{not json")
    assert r.status_code == 422 and r.json()["field"] == "training"
    r = upload(client, h, b'{"prompt": "a", "completion": "b"}\n', filename="train.jsonl", training="[" * 60_000)  # was a 500
    assert r.status_code == 422 and r.json()["field"] == "training"
    r = client.post(f"{API}/submissions", headers=h, data={"kind": "adapter"}, files={"other": ("a", b"x")})
    assert r.status_code == 422 and r.json()["field"] == "file"
    r = upload(client, h, b"", filename="a.jsonl")
    assert r.status_code == 422 and r.json()["field"] == "file"
    # nothing was recorded, nothing left in incoming/
    assert client.get(f"{API}/submissions", headers=h).json()["total"] == 0
    assert list((client.app.state.storage.root / "incoming").iterdir()) == []


def test_dataset_upload_with_training_overrides(client, make_user):
    _, _, h = make_user()
    data = b'{"prompt": "hi", "completion": "hello"}\n'
    r = upload(client, h, data, filename="train.jsonl", training=json.dumps({"steps": 5}))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["kind"] == "dataset" and body["training"] == {"steps": 5}
    # other overrides = another run of the same file
    r2 = upload(client, h, data, filename="train.jsonl", training=json.dumps({"steps": 6}))
    assert r2.status_code == 202 and r2.json()["id"] != body["id"]


def test_unknown_base_or_policy_is_422_when_the_registry_is_known(client, make_user, monkeypatch):
    from services import catalog

    monkeypatch.setattr(catalog, "_registry_bases", lambda: [{"name": "tiny", "registered_by": "registry"}])
    monkeypatch.setattr(catalog, "_registry_policies", lambda: [{"name": "default"}])
    catalog.clear_cache()
    _, _, h = make_user()
    r = upload(client, h, adapter_zip(), base="nope")
    assert r.status_code == 422 and r.json()["field"] == "base" and "tiny" in r.json()["message"]
    r = upload(client, h, adapter_zip(), base="tiny", policy="lenient")
    assert r.status_code == 422 and r.json()["field"] == "policy"
    assert upload(client, h, adapter_zip(), base="tiny").status_code == 202
    bases = client.get(f"{API}/bases", headers=h).json()["items"]
    assert [b["name"] for b in bases] == ["tiny"]
    catalog.clear_cache()


def test_cancel_and_review_rules(client, make_user, db):
    _, _, sub_h = make_user("submitter")
    _, _, rev_h = make_user("reviewer", org="provider")
    sid = upload(client, sub_h, adapter_zip()).json()["id"]
    r = client.post(f"{API}/submissions/{sid}/review", headers=rev_h, json={"decision": "approve", "reason": "ok"})
    assert r.status_code == 409 and r.json()["code"] == "not_reviewable"
    r = client.post(f"{API}/submissions/{sid}/cancel", headers=sub_h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = client.post(f"{API}/submissions/{sid}/cancel", headers=sub_h)
    assert r.status_code == 409 and r.json()["code"] == "already_finished"

    # a finished submission with an automatic "review" verdict
    from models import Submission, VerdictRecord

    sid2 = upload(client, sub_h, adapter_zip("2")).json()["id"]
    row = db.get(Submission, sid2)
    row.status, row.decision, row.review_state = "done", "review", "pending"
    db.add(VerdictRecord(submission_id=sid2, decision="review", reasons=["close to the limit"], policy_name="default",
                   report={"verdict": {"decision": "review"}, "metrics": {"asr": {}}}))
    db.commit()
    r = client.post(f"{API}/submissions/{sid2}/review", headers=rev_h, json={"decision": "block", "reason": "  "})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = client.post(f"{API}/submissions/{sid2}/review", headers=rev_h, json={"decision": "maybe", "reason": "x"})
    assert r.status_code == 422 and r.json()["field"] == "decision"
    r = client.post(f"{API}/submissions/{sid2}/review", headers=rev_h, json={"decision": "block", "reason": "complies"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "block" and body["automatic_decision"] == "review" and body["review_state"] == "blocked"
    assert body["review"]["reason"] == "complies" and body["verdict"]["reasons"] == ["close to the limit"]
    assert client.get(f"{API}/submissions/{sid2}/report", headers=sub_h).json()["verdict"]["decision"] == "review"
    pending = client.get(f"{API}/submissions?review_state=pending", headers=rev_h).json()
    assert pending["total"] == 0
    events = client.get(f"{API}/submissions/{sid2}/events", headers=sub_h).json()["items"]
    assert events[-1]["action"] == "review" and events[-1]["details"]["reason"] == "complies"


def test_admin_tokens_users_bases(client, make_user):
    _, _, admin_h = make_user("admin", org="provider")
    r = client.post(f"{API}/admin/tokens", headers=admin_h,
                    json={"name": "ci", "email": "ci@team.test", "role": "submitter", "organisation": "team"})
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["token"]
    assert token.startswith("ftg_") and created["prefix"] == token[:10] and created["user"]["organisation"] == "team"
    h = {"Authorization": f"Bearer {token}"}
    assert client.get(f"{API}/submissions", headers=h).status_code == 200
    listed = client.get(f"{API}/admin/tokens", headers=admin_h).json()["items"]
    assert all("token" not in t for t in listed) and any(t["prefix"] == created["prefix"] for t in listed)
    r = client.delete(f"{API}/admin/tokens/{created['id']}", headers=admin_h)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.get(f"{API}/submissions", headers=h)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"

    r = client.post(f"{API}/admin/bases", headers=admin_h,
                    json={"name": "my-base", "source": "/models/my-base", "description": "ours"})
    assert r.status_code == 201
    assert client.post(f"{API}/admin/bases", headers=admin_h, json={"name": "my-base", "source": "x"}).status_code == 409
    assert client.post(f"{API}/admin/bases", headers=admin_h, json={"name": "bad name!", "source": "x"}).status_code == 422
    names = [b["name"] for b in client.get(f"{API}/bases", headers=admin_h).json()["items"]]
    assert "my-base" in names

    r = client.post(f"{API}/admin/users", headers=admin_h,
                    json={"email": "rev@provider.test", "role": "reviewer", "organisation": "provider", "password": "s3cret-pass"})
    assert r.status_code == 201 and r.json()["role"] == "reviewer"
    assert client.post(f"{API}/admin/users", headers=admin_h, json={"email": "rev@provider.test"}).status_code == 409
    audit = client.get(f"{API}/admin/audit", headers=admin_h).json()["items"]
    assert {"token_created", "token_revoked", "base_registered", "user_created"} <= {e["action"] for e in audit}


def test_web_session_cookie_signs_in(app, make_user):
    """The hook api/pages/ uses: a signed session with the user id authenticates like a token."""
    from fastapi import APIRouter
    from fastapi.testclient import TestClient

    from api.deps import SESSION_CSRF_KEY, SESSION_USER_KEY, SESSION_VERSION_KEY

    uid, _, _ = make_user("reviewer", org="provider")
    router = APIRouter()

    @router.post("/_test_login")
    def login(request: Request):
        request.session[SESSION_USER_KEY] = uid
        request.session[SESSION_VERSION_KEY] = 1
        request.session[SESSION_CSRF_KEY] = "tok123"
        return {}

    app.include_router(router)
    with TestClient(app) as c:
        assert c.get(f"{API}/submissions").status_code == 401
        assert c.post("/_test_login").status_code == 200
        assert c.get(f"{API}/submissions").status_code == 200
        # changing something by cookie needs the session's CSRF token and the same origin
        r = c.post(f"{API}/submissions/x/cancel")
        assert r.status_code == 403 and "CSRF" in r.json()["message"]
        r = c.post(f"{API}/submissions/x/cancel", headers={"X-CSRF-Token": "tok123", "Origin": "https://evil.example"})
        assert r.status_code == 403
        assert c.post(f"{API}/submissions/x/cancel", headers={"X-CSRF-Token": "tok123"}).status_code == 404


def test_cookie_session_without_a_csrf_token_cannot_change_anything(app, make_user):
    """A session that holds a user but no CSRF token (the check used to be skipped then) is refused for
    writes: nothing a test sets up in the session stands in for the token."""
    from fastapi import APIRouter
    from fastapi.testclient import TestClient

    from api.deps import SESSION_CSRF_KEY, SESSION_USER_KEY, SESSION_VERSION_KEY

    uid, _, _ = make_user("submitter")
    router = APIRouter()

    @router.post("/_test_login_without_csrf")
    def login(request: Request):
        request.session[SESSION_USER_KEY] = uid
        request.session[SESSION_VERSION_KEY] = 1
        assert SESSION_CSRF_KEY not in request.session
        return {}

    app.include_router(router)
    with TestClient(app) as c:
        assert c.post("/_test_login_without_csrf").status_code == 200
        assert c.get(f"{API}/submissions").status_code == 200  # reading needs no token
        for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "anything"}):
            r = c.post(f"{API}/submissions/x/cancel", headers=headers)
            assert r.status_code == 403 and "CSRF" in r.json()["message"], (headers, r.text)


def test_password_hashing_and_authentication(db):
    from services.auth import authenticate_password, create_user, hash_password, verify_password

    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and verify_password("correct horse", h) and not verify_password("wrong", h)
    assert hash_password("correct horse") != h  # salted
    create_user(db, "Person@Acme.test", password="correct horse")
    db.commit()
    assert authenticate_password(db, "person@acme.test", "correct horse") is not None
    assert authenticate_password(db, "person@acme.test", "nope") is None


def test_errors_are_json_with_code(client, make_user):
    _, _, h = make_user()
    r = client.get(f"{API}/submissions/doesnotexist", headers=h)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.get(f"{API}/submissions?limit=0", headers=h)
    assert r.status_code == 422 and r.json()["field"] == "limit"
    r = client.put(f"{API}/submissions", headers=h)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    r = client.get(f"{API}/submissions", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    docs = client.get("/docs")
    assert docs.status_code == 200
    # Swagger UI from ftgate itself, not from a CDN an air-gapped gate can't reach
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "http" not in docs.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "/api/v1/submissions" in client.get(f"{API}/openapi.json").json()["paths"]


def _as_sent_before(view: dict) -> bytes:
    """How FastAPI sent a route's returned dict before the routes had response models (JSONResponse.render)."""
    return json.dumps(view, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def test_answers_through_the_response_models_are_the_views_byte_for_byte(client, make_user, db):
    """The response models describe the JSON the routes sent before them; going through them changes no
    byte: no field added, dropped, renamed, reordered or reformatted (the CLI and docs/api.md rely on it)."""
    from api.views import submission_detail, submission_summary, token_view, user_view
    from models import ApiToken, StageRun, Submission, User, VerdictRecord

    _, _, sub_h = make_user("submitter")
    _, _, rev_h = make_user("reviewer", org="provider")
    admin_id, _, admin_h = make_user("admin", org="provider")
    queued = upload(client, sub_h, adapter_zip("queued")).json()["id"]
    done = upload(client, sub_h, adapter_zip("done"), name="café adapter").json()["id"]

    # `done`: inspected (with a finding), one stage run, an automatic verdict and a reviewer's decision
    row = db.get(Submission, done)
    row.status, row.decision, row.review_state, row.progress = "done", "review", "pending", 100.0
    row.started_at, row.finished_at = row.created_at, row.created_at
    row.inspection = {"findings": [{"severity": "info", "code": "ignored_files", "message": "README.md ignored"}]}
    db.add(StageRun(submission_id=done, stage="inspect", attempt=1, claim_token="c" * 32, status="succeeded",
                    worker="cpu@host", started_at=row.created_at, finished_at=row.created_at))
    db.add(VerdictRecord(submission_id=done, decision="review", reasons=["close to the limit"], policy_name="default",
                   report={"verdict": {"decision": "review"}, "metrics": {"asr": {"delta": {"value": 0.05}}}}))
    db.commit()
    r = client.post(f"{API}/submissions/{done}/review", headers=rev_h, json={"decision": "block", "reason": "ünsafe"})
    assert r.status_code == 200, r.text
    db.expire_all()

    for sid in (queued, done):
        detail = submission_detail(db, db.get(Submission, sid))
        assert client.get(f"{API}/submissions/{sid}", headers=sub_h).content == _as_sent_before(detail)
    assert "findings" not in client.get(f"{API}/submissions/{queued}", headers=sub_h).json()  # not inspected yet
    summaries = [submission_summary(db.get(Submission, sid)) for sid in (done, queued)]
    listed = client.get(f"{API}/submissions", headers=sub_h)
    assert listed.content == _as_sent_before({"items": summaries, "total": 2, "limit": 50, "offset": 0})

    users = client.get(f"{API}/admin/users", headers=admin_h)
    assert users.content == _as_sent_before({"items": [user_view(u) for u in db.query(User).order_by(User.id)]})
    tokens = client.get(f"{API}/admin/tokens", headers=admin_h)
    assert tokens.content == _as_sent_before({"items": [token_view(t) for t in db.query(ApiToken).order_by(ApiToken.id)]})
    created = client.post(f"{API}/admin/tokens", headers=admin_h, json={"name": "ci"}).json()
    assert list(created) == [*token_view(db.get(ApiToken, created["id"])), "token"]
    assert created["user"] == user_view(db.get(User, admin_id))


def test_repair_is_asked_within_the_policy_and_its_adapter_is_downloaded_by_whoever_may_see_it(
        client, make_user, monkeypatch, service_settings, db):
    from models import Submission, VerdictRecord
    from services import catalog
    from services.storage import Storage

    monkeypatch.setattr(catalog, "_registry_policies", lambda: [{"name": "default", "repair": "offer"}])
    catalog.clear_cache()
    _, _, h = make_user()
    data = b'{"prompt": "hi", "completion": "hello"}\n'
    r = upload(client, h, data, filename="train.jsonl", repair="sometimes")
    assert r.status_code == 422 and r.json()["field"] == "repair" and "off, offer, auto" in r.json()["message"]
    r = upload(client, h, data, filename="train.jsonl", repair="auto")
    assert r.status_code == 422 and r.json()["code"] == "repair_not_allowed"
    assert "allows repair up to 'offer'" in r.json()["message"]
    r = upload(client, h, data, filename="my data/../x.jsonl", repair="offer")
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    assert r.json()["repair_requested"] == "offer" and r.json()["repair"] is None
    catalog.clear_cache()

    adapter_url = f"{API}/submissions/{sid}/repair/adapter"
    assert client.get(adapter_url, headers=h).status_code == 409  # no verdict, no repair yet
    # as the repair stage leaves it: the verdict unchanged, the repaired adapter zipped in the submission's storage
    rel = f"work/{sid}/repair/repaired-adapter.zip"
    zipped = Storage(service_settings.resolved_storage_dir).path(rel)
    zipped.parent.mkdir(parents=True, exist_ok=True)
    zipped.write_bytes(adapter_zip("repaired"))
    sub = db.get(Submission, sid)
    sub.status, sub.decision = "done", "block"
    db.add(VerdictRecord(submission_id=sid, decision="block", reasons=["ASR rose"], policy_name="default", report={
        "verdict": {"decision": "block", "reasons": ["ASR rose"]},
        "repair": {"status": "done", "mode": "offer", "decision": "approve", "reasons": ["ASR stayed"],
                   "released": False, "metrics": {"asr": {"delta": {"value": 0.0, "lo": -0.03, "hi": 0.03}}},
                   "task_loss": {"original": 1.25, "repaired": 1.3, "held_back_examples": 4}, "safety_share": 0.1,
                   "adapter_fingerprint": "f" * 64, "adapter_path": rel}}))
    db.commit()

    detail = client.get(f"{API}/submissions/{sid}", headers=h).json()
    assert detail["verdict"]["decision"] == "block" and detail["decision"] == "block"
    repair = detail["repair"]
    assert repair["decision"] == "approve" and repair["task_loss"]["held_back_examples"] == 4
    assert repair["adapter"] == adapter_url and "adapter_path" not in repair  # a link, never where it is stored
    got = client.get(adapter_url, headers=h)
    assert got.status_code == 200 and got.content == zipped.read_bytes()
    assert got.headers["content-type"] == "application/zip"
    assert 'filename="x-repaired-adapter.zip"' in got.headers["content-disposition"]
    _, _, other = make_user(org="globex")
    assert client.get(adapter_url, headers=other).status_code == 404  # another organisation: not even told
    _, _, reviewer = make_user("reviewer", org="staff")
    assert client.get(adapter_url, headers=reviewer).status_code == 200
    assert client.get(adapter_url).status_code == 401
    zipped.unlink()
    assert client.get(adapter_url, headers=h).status_code == 410
