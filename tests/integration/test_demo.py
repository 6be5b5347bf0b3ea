"""`ftgate demo` (what `make run` runs) as a process, with the evaluation core faked in each of its processes
(tests/integration/fake_core, put on PYTHONPATH) and a guarded-base build that takes ten minutes: the service
answers within seconds while the build runs in its worker, the bundled samples arrive as submissions through
the API, the build's progress with the time left reaches the submission and the terminal, and SIGTERM stops
the service and its worker with no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ftgate.demo import SAMPLES
from tests.integration.test_serve import free_port, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FAKE_CORE = Path(__file__).resolve().parent / "fake_core"
SERVED_WITHIN_SECONDS = 30  # `make run` promises the page within a minute; imports and migrations take a few s


@pytest.mark.timeout(300)
def test_the_demo_serves_at_once_submits_the_samples_and_stops_cleanly(tmp_path):
    port, data, cache = free_port(), tmp_path / "data", tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTGATE_")}
    env.update(PYTHONUNBUFFERED="1", FTGATE_CACHE_DIR=str(cache), FAKE_GUARD_BUILD_SECONDS="600",
               PYTHONPATH=os.pathsep.join([str(FAKE_CORE), str(ROOT)]))
    log_path = tmp_path / "demo.log"
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ftgate.demo", "--data-dir", str(data), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    family: list[psutil.Process] = []

    def output() -> str:
        return log_path.read_text(errors="replace")

    def wait(condition, seconds: float, what: str) -> None:
        try:
            wait_for(condition, seconds, what)
        except pytest.fail.Exception:
            pytest.fail(f"timed out waiting for {what}; the demo printed:\n{output()[-4000:]}")

    try:
        def serving() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"ftgate demo exited: {output()[-3000:]}")
            try:
                return httpx.get(f"{url}/api/v1/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait(serving, SERVED_WITHIN_SECONDS, "the demo to serve its health route")
        assert time.monotonic() - started < SERVED_WITHIN_SECONDS
        build = cache / "bases" / "fake-guarded-smollm2"
        assert not (build / "built").exists()  # serving does not wait for the guarded base

        token = next(line.split(":", 1)[1].strip() for line in (data / "initial-admin.txt").read_text().splitlines()
                     if line.startswith("token:"))
        api = httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10)

        def submissions() -> dict[str, dict]:
            return {s["filename"]: s for s in api.get("/submissions").json()["items"]}

        # harmful.jsonl goes first and alone: its screening verdict does not wait for the guard build.
        wait(lambda: "harmful.jsonl" in submissions(), 30, "harmful.jsonl to be submitted")
        wait(lambda: submissions()["harmful.jsonl"]["status"] == "done", 60, "harmful.jsonl's verdict")
        assert submissions()["harmful.jsonl"]["decision"] == "block"
        wait(lambda: len(submissions()) == len(SAMPLES), 30, "the other samples to be submitted")
        assert set(submissions()) == {s.file for s in SAMPLES}

        # The worker builds the guarded base in the first fine-tune (benign.jsonl's), and says so on its page
        # and, with the time left, in the demo's terminal.
        wait(lambda: "guard fine-tuning step" in submissions()["benign.jsonl"]["progress"]["message"], 120,
             "the guard build's progress on benign.jsonl's submission")
        assert (build / "build-started").exists() and not (build / "built").exists()
        wait(lambda: "min left" in output(), 60, "the time left of the build in the terminal")
        assert "examples/harmful.jsonl: BLOCK (as expected)" in output()
        api.close()

        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("celery" in " ".join(p.cmdline()) for p in family), [p.cmdline() for p in family]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output()[-3000:]
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        if proc.poll() is None:  # a failed check above: stop the demo its own way, so its worker goes too
            family = family or psutil.Process(proc.pid).children(recursive=True)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for p in family:
            if p.is_running():
                p.kill()


def test_on_a_later_start_the_demo_submits_with_a_short_lived_token_it_then_revokes(tmp_path):
    """The first start's token is shown once and only its hash is kept: a later start mints its own for the
    first admin, which stops working when the demo stops following the samples."""
    import threading
    from datetime import timedelta

    from api.serve import Serving, bootstrap_admin
    from ftgate.demo import DEMO_TOKEN_LIFETIME, demo_token, revoke_demo_token
    from ftgate.settings import Settings
    from models import ApiToken, utcnow
    from services.auth import authenticate_token
    from services.db import session_scope, upgrade

    settings = Settings(data_dir=tmp_path / "data", database_url="", broker_url="")
    settings.data_dir.mkdir()  # serve makes it before it migrates
    upgrade(settings.resolved_database_url)
    first = bootstrap_admin(settings)
    assert demo_token(Serving("http://unused", settings, first, threading.Event())) == (first["token"], None)

    token, token_id = demo_token(Serving("http://unused", settings, None, threading.Event()))
    assert token and token != first["token"]
    with session_scope(settings.resolved_database_url) as s:
        principal = authenticate_token(s, token)
        assert principal is not None and principal.email == "admin@localhost" and principal.role == "admin"
        assert s.get(ApiToken, token_id).expires_at <= utcnow() + DEMO_TOKEN_LIFETIME + timedelta(seconds=5)
    revoke_demo_token(settings, token_id)
    with session_scope(settings.resolved_database_url) as s:
        assert authenticate_token(s, token) is None
        assert authenticate_token(s, first["token"]) is not None  # the admin's own token is untouched
