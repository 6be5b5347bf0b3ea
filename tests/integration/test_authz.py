"""Authorization: tokens, roles and organisation scoping."""

from __future__ import annotations

import pytest

from tests.integration.test_api import adapter_zip, upload

pytestmark = pytest.mark.integration
API = "/api/v1"


@pytest.fixture
def world(client, make_user, db):
    _, _, acme = make_user("submitter", org="acme")
    _, _, acme2 = make_user("submitter", org="acme")
    _, _, other = make_user("submitter", org="globex")
    _, _, reviewer = make_user("reviewer", org="provider")
    _, _, admin = make_user("admin", org="provider")
    sid = upload(client, acme, adapter_zip("w")).json()["id"]
    from models import Submission, VerdictRecord

    row = db.get(Submission, sid)
    row.status, row.decision, row.review_state = "done", "review", "pending"
    db.add(VerdictRecord(submission_id=sid, decision="review", reasons=[], policy_name="default", report={"verdict": {}}))
    db.commit()
    return {"acme": acme, "acme2": acme2, "other": other, "reviewer": reviewer, "admin": admin, "sid": sid}


def test_unauthenticated_requests_get_401(client, world):
    sid = world["sid"]
    for method, path in [
        ("get", "/submissions"), ("get", f"/submissions/{sid}"), ("get", f"/submissions/{sid}/report"),
        ("get", f"/submissions/{sid}/samples"), ("post", f"/submissions/{sid}/cancel"),
        ("post", f"/submissions/{sid}/review"), ("post", "/submissions"), ("get", "/bases"), ("get", "/suites"),
        ("get", "/policies"), ("get", "/admin/tokens"), ("post", "/admin/tokens"), ("post", "/admin/bases"),
    ]:
        r = getattr(client, method)(API + path)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["code"] == "unauthenticated" and r.headers["www-authenticate"] == "Bearer"
    r = client.get(f"{API}/submissions", headers={"Authorization": "Bearer ftg_not-a-real-token"})
    assert r.status_code == 401
    # health and metrics stay open (probes, Prometheus)
    assert client.get(f"{API}/healthz").status_code == 200


def test_submitter_cannot_see_another_organisations_submission(client, world):
    sid, other = world["sid"], world["other"]
    for path in (f"/submissions/{sid}", f"/submissions/{sid}/report", f"/submissions/{sid}/events"):
        r = client.get(API + path, headers=other)
        assert r.status_code == 404 and r.json()["code"] == "not_found"  # its existence is not told
    assert client.post(f"{API}/submissions/{sid}/cancel", headers=other).status_code == 404
    assert client.get(f"{API}/submissions", headers=other).json()["total"] == 0
    # a colleague in the same organisation sees it
    assert client.get(f"{API}/submissions/{sid}", headers=world["acme2"]).status_code == 200
    assert client.get(f"{API}/submissions", headers=world["acme2"]).json()["total"] == 1


def test_submitter_cannot_review_or_read_samples(client, world):
    sid, acme = world["sid"], world["acme"]
    r = client.post(f"{API}/submissions/{sid}/review", headers=acme, json={"decision": "approve", "reason": "mine"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert client.get(f"{API}/submissions/{sid}/samples", headers=acme).status_code == 403
    r = client.post(f"{API}/submissions/{sid}/review", headers=world["other"], json={"decision": "approve", "reason": "x"})
    assert r.status_code == 403


def test_reviewers_see_all_and_review_admins_administer(client, world):
    sid = world["sid"]
    rev, admin = world["reviewer"], world["admin"]
    assert client.get(f"{API}/submissions", headers=rev).json()["total"] == 1
    assert client.get(f"{API}/submissions/{sid}/samples", headers=rev).status_code == 200
    r = client.post(f"{API}/submissions/{sid}/review", headers=rev, json={"decision": "approve", "reason": "benign"})
    assert r.status_code == 200 and r.json()["decision"] == "approve"
    for h in (world["acme"], rev):
        assert client.get(f"{API}/admin/tokens", headers=h).status_code == 403
        assert client.post(f"{API}/admin/bases", headers=h, json={"name": "x", "source": "y"}).status_code == 403
    assert client.get(f"{API}/admin/tokens", headers=admin).status_code == 200
    r = client.post(f"{API}/submissions/{sid}/review", headers=admin, json={"decision": "block", "reason": "second look"})
    assert r.status_code == 200 and len(r.json()["reviews"]) == 2
