"""End to end on PostgreSQL + Redis: a real API server and real Celery worker subprocesses run the real
evaluation core on the embedded guarded base, with sample adapters fine-tuned once (cached).

- fault: the worker is killed with SIGKILL while it evaluates the benign adapter; another worker takes over
  (the reaper releases the dead worker's claim) and the submission is approved, with one verdict and one
  evaluation: nothing lost or duplicated;
- the harmful adapter is blocked through `ftgate submit --wait --junit`; a re-upload is the same submission.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_service_e2e import API, BASE, Service, sample_adapter, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def adapters():
    return {"benign": sample_adapter("benign.jsonl", BASE), "harmful": sample_adapter("harmful.jsonl", BASE)}


@pytest.fixture(scope="module")
def service(pg_url, redis_url, tmp_path_factory, adapters):
    """API + (per test) workers on a clean database; short heartbeat/reaper timings for the fault test."""
    import redis
    from sqlalchemy import text

    from models import Base
    from services.db import get_engine

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine(pg_url).begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    redis.Redis.from_url(redis_url).flushdb()
    data = tmp_path_factory.mktemp("service")
    svc = Service(data, env={
        "FTGATE_DATABASE_URL": pg_url, "FTGATE_BROKER_URL": redis_url, "FTGATE_STORAGE_DIR": str(data / "storage"),
        "FTGATE_HEARTBEAT_SECONDS": "1", "FTGATE_LOST_WORKER_SECONDS": "10", "FTGATE_REAPER_INTERVAL_SECONDS": "2",
        "FTGATE_DEFAULT_BASE": BASE,
        "FTGATE_CACHE_CANDIDATE_RESULTS": "false",  # a real evaluation to kill, not a cache hit
    })
    svc.start_api()
    from services.auth import create_token, create_user
    from services.db import session_scope

    with session_scope(pg_url) as s:
        sub = create_user(s, "ci@acme.test", role="submitter", organisation="acme")
        rev = create_user(s, "rev@provider.test", role="reviewer", organisation="provider")
        svc.submitter = create_token(s, sub, "e2e")[1]
        svc.reviewer = create_token(s, rev, "e2e")[1]
    yield svc
    svc.stop()


def _get(svc: Service, sid: str, token: str | None = None) -> dict:
    r = httpx.get(f"{svc.url}{API}/submissions/{sid}", headers={"Authorization": f"Bearer {token or svc.submitter}"},
                  timeout=10)
    r.raise_for_status()
    return r.json()


def _upload(svc: Service, path: Path, **fields) -> dict:
    with open(path, "rb") as fh:
        r = httpx.post(f"{svc.url}{API}/submissions", headers={"Authorization": f"Bearer {svc.submitter}"},
                       files={"file": (path.name, fh)}, data=fields, timeout=60)
    assert r.status_code in (200, 202), r.text
    return r.json()


def _done(svc: Service, sid: str):
    d = _get(svc, sid)
    return d if d["status"] in ("done", "rejected", "failed", "cancelled") else None


def test_worker_killed_mid_evaluation_then_benign_adapter_is_approved(service, adapters, pg_url):
    svc = service
    first = svc.start_worker("e2e-a")
    sub = _upload(svc, adapters["benign"], name="benign adapter")
    sid = sub["id"]
    assert sub["status"] == "queued"

    # wait until the worker is evaluating and has reported progress, then kill it hard
    wait_for(lambda: (lambda d: d["status"] == "evaluating" and d["worker"] and d["progress"]["stage_total"] > 0)(
        _get(svc, sid)), 600, "the evaluation to start", svc)
    svc.kill(first, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert _get(svc, sid)["status"] == "evaluating"  # nobody runs it now

    svc.start_worker("e2e-b")
    final = wait_for(lambda: _done(svc, sid), 900, "the verdict after the restart", svc, interval=2)
    assert final["status"] == "done", (final, svc.log_tail())
    assert final["decision"] == "approve", final["verdict"]
    runs = [(r["stage"], r["attempt"], r["status"]) for r in final["stage_runs"]]
    assert ("evaluate", 1, "lost") in runs and ("evaluate", 2, "succeeded") in runs, runs
    assert runs.count(("decide", 1, "succeeded")) == 1 and len([r for r in runs if r[0] == "decide"]) == 1

    from sqlalchemy import func, select

    from models import EvaluationRun, VerdictRecord
    from services.db import session_factory

    with session_factory(pg_url)() as s:
        assert s.scalar(select(func.count()).select_from(VerdictRecord).where(VerdictRecord.submission_id == sid)) == 1
        assert s.scalar(select(func.count()).select_from(EvaluationRun).where(EvaluationRun.submission_id == sid)) == 1
    events = httpx.get(f"{svc.url}{API}/submissions/{sid}/events", headers={"Authorization": f"Bearer {svc.submitter}"},
                       timeout=10).json()["items"]
    assert "requeued" in [e["action"] for e in events]
    report = httpx.get(f"{svc.url}{API}/submissions/{sid}/report", headers={"Authorization": f"Bearer {svc.submitter}"},
                       timeout=10).json()
    assert report["verdict"]["decision"] == "approve" and report["artifact"]["kind"] == "adapter"


def test_harmful_adapter_is_blocked_via_ftgate_submit(service, adapters, tmp_path):
    from api.client import main as submit_main

    svc = service
    if not any(p.poll() is None for p in svc.workers):
        svc.start_worker("e2e-c")
    junit = tmp_path / "ftgate.xml"
    code = submit_main([str(adapters["harmful"]), "--server", svc.url, "--token", svc.submitter, "--wait",
                        "--poll", "2", "--timeout", "900", "--junit", str(junit), "--name", "harmful adapter"])
    assert code == 1, svc.log_tail()
    assert "failure" in junit.read_text() and 'type="block"' in junit.read_text()
    # the reviewer sees the completions; the same upload again is the same submission, no re-run
    listing = httpx.get(f"{svc.url}{API}/submissions?decision=block", headers={"Authorization": f"Bearer {svc.reviewer}"},
                        timeout=10).json()
    sid = listing["items"][0]["id"]
    samples = httpx.get(f"{svc.url}{API}/submissions/{sid}/samples?changed=true",
                        headers={"Authorization": f"Bearer {svc.reviewer}"}, timeout=10).json()
    assert samples["total"] > 0 and samples["items"][0]["candidate_response"] is not None
    again = _upload(svc, adapters["harmful"])
    assert again["duplicate"] is True and again["id"] == sid and again["decision"] == "block"
