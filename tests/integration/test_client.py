"""`ftgate submit` (api.client) against a live uvicorn server on PostgreSQL + Redis, and the first-start
bootstrap of `ftgate serve`. The verdicts are written by the test (the real pipeline runs in tests/e2e)."""

from __future__ import annotations

import io
import stat
import threading
import time
from xml.etree import ElementTree as ET

import pytest

from api import client as cli
from tests.integration.test_api import adapter_zip
from tests.live_server import start_server

pytestmark = pytest.mark.integration


@pytest.fixture
def live_server(app):
    url, server, t = start_server(app)
    yield url
    server.should_exit = True
    t.join(timeout=10)


def _finish(url: str, sub_id: str, decision: str, delay: float = 0.5):
    def run():
        time.sleep(delay)
        from models import Submission, VerdictRecord
        from services.db import session_scope

        with session_scope(url) as s:
            row = s.get(Submission, sub_id)
            row.status, row.decision, row.progress = "done", decision, 100.0
            s.add(VerdictRecord(submission_id=sub_id, decision=decision, reasons=["ASR rose by 40 points"],
                          policy_name="default", report={"verdict": {"decision": decision,
                                                                     "reasons": ["ASR rose by 40 points"]}}))

    t = threading.Thread(target=run)
    t.start()
    return t


def test_submit_waits_for_the_verdict_and_writes_junit(live_server, make_user, service_settings, tmp_path, db):
    _, token, _ = make_user()
    f = tmp_path / "adapter.zip"
    f.write_bytes(adapter_zip("client"))
    out, err = io.StringIO(), io.StringIO()
    assert cli.submit(f, live_server, token, wait=False, out=out, err=err) == 0
    sub_id = err.getvalue().split("submitted: ")[1].split()[0]
    assert "queued" in out.getvalue()

    t = _finish(service_settings.resolved_database_url, sub_id, "block")
    out, err = io.StringIO(), io.StringIO()
    junit = tmp_path / "junit.xml"
    code = cli.submit(f, live_server, token, wait=True, junit=junit, poll=0.2, out=out, err=err)
    t.join()
    assert code == 1, err.getvalue()
    assert "already submitted" in err.getvalue()
    assert "verdict: BLOCK" in out.getvalue() and "ASR rose by 40 points" in out.getvalue()
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case.find("failure").get("type") == "block"


def test_submit_exit_codes_for_refused_input_and_bad_token(live_server, make_user, tmp_path):
    _, token, _ = make_user()
    bad = tmp_path / "adapter.zip"
    bad.write_bytes(b"not a zip")
    err = io.StringIO()
    assert cli.submit(bad, live_server, token, out=io.StringIO(), err=err) == 3
    assert "unsupported_media_type" in err.getvalue()
    assert cli.submit(tmp_path / "missing.zip", live_server, token, out=io.StringIO(), err=io.StringIO()) == 3
    good = tmp_path / "ok.zip"
    good.write_bytes(adapter_zip("tok"))
    err = io.StringIO()
    junit = tmp_path / "j.xml"
    assert cli.submit(good, live_server, "ftg_wrong", junit=junit, out=io.StringIO(), err=err) == 4
    assert "unauthenticated" in err.getvalue()
    assert ET.parse(junit).getroot().find("testsuite/testcase/error") is not None
    assert cli.submit(good, "http://127.0.0.1:1", token, out=io.StringIO(), err=io.StringIO()) == 4


def test_submit_waits_out_the_users_upload_cap_instead_of_failing(app, live_server, make_user, tmp_path):
    uid, token, _ = make_user()
    limiter = app.state.upload_limiter
    held = 0
    while limiter.try_acquire(uid) is None:  # the user's other CI jobs hold every upload slot
        held += 1

    def other_jobs_finish():
        time.sleep(1.5)
        for _ in range(held):
            limiter.release(uid)

    t = threading.Thread(target=other_jobs_finish)
    t.start()
    f = tmp_path / "adapter.zip"
    f.write_bytes(adapter_zip("busy"))
    err = io.StringIO()
    code = cli.submit(f, live_server, token, wait=False, out=io.StringIO(), err=err)
    t.join()
    assert code == 0, err.getvalue()
    assert "server busy: too_many_requests" in err.getvalue() and "submitted: " in err.getvalue()


def test_submit_packs_a_peft_directory_and_main_parses_args(live_server, make_user, tmp_path, service_settings):
    _, token, _ = make_user()
    d = tmp_path / "my-adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"r": 4}')
    (d / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    code = cli.main([str(d), "--server", live_server, "--token", token, "--name", "dir upload"])
    assert code == 0
    from models import Submission
    from services.db import session_factory

    with session_factory(service_settings.resolved_database_url)() as s:
        row = s.query(Submission).one()
        assert row.kind == "adapter" and row.filename == "my-adapter.zip" and row.name == "dir upload"
    assert cli.main([str(d), "--server", live_server]) == 4  # no token


def test_serve_bootstrap_creates_the_admin_once(service_settings, client):
    from api.serve import CREDENTIALS_FILE, bootstrap_admin, worker_argv

    creds = bootstrap_admin(service_settings)
    assert creds and creds["email"] == "admin@localhost" and creds["token"].startswith("ftg_")
    path = service_settings.data_dir / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and creds["password"] in path.read_text()
    assert bootstrap_admin(service_settings) is None
    r = client.get("/api/v1/admin/tokens", headers={"Authorization": f"Bearer {creds['token']}"})
    assert r.status_code == 200
    from services.auth import authenticate_password
    from services.db import session_factory

    with session_factory(service_settings.resolved_database_url)() as s:
        assert authenticate_password(s, "admin@localhost", creds["password"]).role == "admin"
    argv = worker_argv("cpu", name="x@h")
    assert argv[1:5] == ["-m", "celery", "-A", "tasks.app"] and "-Q" in argv and "cpu" in argv
