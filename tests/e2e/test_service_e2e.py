"""End to end, the service as a user runs it: the README's embedded `ftgate serve` (SQLite, local storage,
filesystem broker, a real worker subprocess) takes a curl-style upload to its verdict. Also the helpers of
test_service_adapters.py: sample adapters (fine-tuned once, cached), an API server and Celery workers as
subprocesses."""


from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def sample_adapter(dataset: str, base: str) -> Path:
    """A zipped LoRA adapter fine-tuned on examples/<dataset> over ``base`` with the research defaults (what
    `ftgate make-adapter` does), cached under the settings' cache_dir by the dataset's content, so CI pays for
    it once per machine."""
    import shutil

    from ftgate.settings import Settings

    src = ROOT / "examples" / dataset
    key = hashlib.sha256(src.read_bytes() + base.encode()).hexdigest()[:12]
    zipped = Settings().cache_dir / "e2e-adapters" / f"{src.stem}-{base}-{key}.zip"
    if not zipped.exists():
        from evaluation.gate import finetune_dataset

        adapter_dir = finetune_dataset(src, base)  # itself cached by content in cache_dir/finetunes
        zipped.parent.mkdir(parents=True, exist_ok=True)
        part = shutil.make_archive(str(zipped.with_suffix("")) + ".part", "zip", adapter_dir)
        os.replace(part, zipped)
    return zipped


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Service:
    """An API server and workers as subprocesses sharing one environment (data dir, database, broker)."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FTGATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1",
                    "FTGATE_SECRET_KEY": os.urandom(32).hex(), **(env or {})}
        self.workers: list[subprocess.Popen] = []
        self.api: subprocess.Popen | None = None
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start_api(self) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]
        self.api = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=open(self.logs / "api.log", "ab"),
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/v1/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited: {(self.logs / 'api.log').read_text()[-3000:]}")
            time.sleep(0.3)
        raise RuntimeError("the API did not start in 60 s")

    def start_worker(self, name: str, queues: str = "cpu,gpu") -> subprocess.Popen:
        from api.serve import worker_argv

        env = {**self.env, "FTGATE_WORKER_NAME": name}
        p = subprocess.Popen(worker_argv(queues, name=f"{name}@%h"), cwd=ROOT, env=env,
                             stdout=open(self.logs / f"{name}.log", "ab"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.workers.append(p)
        return p

    def kill(self, p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(p.pid, sig)  # the worker and anything it started
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # A warm shutdown (SIGTERM) waits for the running stage: after a safety block the default policy starts
            # a repair, which outlasts the test. The test is over: cut it short, as a lost worker would be.
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                self.kill(p, signal.SIGTERM)
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.api.kill()

    def log_tail(self, n: int = 4000) -> str:
        return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-n:]}" for f in sorted(self.logs.glob("*.log")))


# ----------------------------------------------------------------------------------------------------------
pytestmark = [pytest.mark.slow]
BASE = "guarded-smollm2"
API = "/api/v1"


def wait_for(fn, timeout: float, what: str, svc: Service | None = None, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last}\n"
                         + (svc.log_tail() if svc else ""))


def test_embedded_serve_takes_an_upload_to_its_verdict(tmp_path):
    """`ftgate serve` with nothing configured: SQLite, local storage, filesystem broker, one worker.
    The bundled harmful dataset is blocked by screening (no fine-tune), so this stays short."""
    port = free_port()
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTGATE_") or k == "FTGATE_CACHE_DIR"}
    env["PYTHONUNBUFFERED"] = "1"
    log = open(tmp_path / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "api.serve", "--data-dir", str(data), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            try:
                return httpx.get(f"{url}{API}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None and pytest.fail((tmp_path / "serve.log").read_text()[-3000:])
        wait_for(ready, 90, "ftgate serve to be ready")
        token = [ln.split(": ", 1)[1] for ln in (data / "initial-admin.txt").read_text().splitlines()
                 if ln.startswith("token: ")][0]
        assert token in (tmp_path / "serve.log").read_text()  # printed on first start
        h = {"Authorization": f"Bearer {token}"}
        with open(ROOT / "examples" / "harmful.jsonl", "rb") as fh:
            r = httpx.post(f"{url}{API}/submissions", headers=h, files={"file": ("harmful.jsonl", fh)}, timeout=60)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]

        def verdict():
            d = httpx.get(f"{url}{API}/submissions/{sid}", headers=h, timeout=10).json()
            return d if d["status"] in ("done", "rejected", "failed", "cancelled") else None

        final = wait_for(verdict, 300, "the embedded verdict", interval=2)
        assert final["status"] == "done" and final["decision"] == "block", final
        assert (data / "ftgate.db").exists() and (data / "broker").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
