"""`ftgate serve` as a process: a stop signal (what systemd, `docker stop` and Kubernetes send, or Ctrl-C)
stops its embedded Celery worker and leaves no process behind. The embedded default: SQLite, filesystem
broker, a generated session key; no outside server."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_the_worker_and_leaves_no_process(stop_signal, tmp_path):
    """Also: what serve leaves on disk (database, key, first admin's credentials, uploads) is private."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTGATE_")}
    env.update(PYTHONUNBUFFERED="1", FTGATE_CACHE_DIR=str(tmp_path / "cache"))
    log_path = tmp_path / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "api.serve", "--data-dir", str(tmp_path / "data"),
                                 "--port", str(port), "--log-level", "warning"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    family: list[psutil.Process] = []
    try:
        def serving() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"ftgate serve exited: {log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/v1/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(serving, 120, "ftgate serve to answer")
        wait_for(lambda: "ready" in log_path.read_text(), 120, "the embedded worker to be ready")
        data = tmp_path / "data"
        for private, mode in ((data, 0o700), (data / "storage", 0o700), (data / "ftgate.db", 0o600),
                              (data / "secret-key", 0o600), (data / "initial-admin.txt", 0o600)):
            assert stat.S_IMODE(private.stat().st_mode) == mode, private
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("celery" in " ".join(p.cmdline()) for p in family), [p.cmdline() for p in family]

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        for p in [*family, psutil.Process(proc.pid) if proc.poll() is None else None]:
            if p is not None and p.is_running():
                p.kill()


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period():
    from api.serve import stop_worker

    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('up', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, start_new_session=True)
    assert stubborn.stdout.readline().strip() == b"up"
    started = time.monotonic()
    stop_worker(stubborn, grace_seconds=1)
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - started < 10
