"""Browser tests: the real app (uvicorn in a subprocess, embedded SQLite and a filesystem broker in a tmp
data dir) driven by headless Chromium through Playwright. Screenshots go to test-output/screenshots/.

Finished evaluations come from report JSONs saved under fixtures/ (see fixtures/README.md: one real
`ftgate check --format json` report, one hand-made stand-in in the same schema), inserted through the
service's own models and lifecycle functions (no worker needed); the slow test runs a real Celery worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.markers import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = os.environ.get("FTGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MAX_UPLOAD = 2 * 1024 * 1024
PASSWORDS = {"submitter": "submit-pass-1", "reviewer": "review-pass-1", "admin": "admin-pass-1"}


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    data_dir: Path
    env: dict
    db_url: str
    users: dict[str, str] = field(default_factory=dict)  # role -> email
    procs: list[subprocess.Popen] = field(default_factory=list)

    def insert_finished(self, owner_role: str, report_file: str, samples_file: str | None = None, *,
                        name: str | None = None, decision: str | None = None) -> str:
        """A finished submission from a real report JSON (and its samples), through the service's DB layer.
        ``decision`` routes the same report to another automatic verdict (e.g. review, for the queue)."""
        from sqlalchemy import select

        from evaluation.records import SampleRecord
        from models import Sample, Submission, User, VerdictRecord, utcnow
        from services import submissions as lifecycle
        from services.auth import principal_of
        from services.db import session_scope

        report = json.loads((FIXTURES / report_file).read_text())
        # what `ftgate check --samples-out` wrote
        samples: list[SampleRecord] = json.loads((FIXTURES / samples_file).read_text()) if samples_file else []
        if decision:
            report["verdict"]["decision"] = decision
        art = report.get("artifact") or {}
        with session_scope(self.db_url) as s:
            user = s.scalar(select(User).where(User.email == self.users[owner_role]))
            sub, created = lifecycle.create_submission(
                s, principal_of(user), kind=art.get("kind", "dataset"), base=(report.get("base") or {}).get("name") or
                "guarded-smollm2", policy=report["verdict"].get("policy") or "default",
                name=name or art.get("name") or report_file, training={}, filename=art.get("name") or report_file,
                artifact_path=f"fixtures/{report_file}", sha256=uuid.uuid4().hex * 2, size=art.get("size_bytes") or 1,
            )
            assert created
            now = utcnow()
            s.flush()
            d = report["verdict"]["decision"]
            s.execute(
                Submission.__table__.update().where(Submission.id == sub.id).values(
                    status="done", progress=100.0, progress_message=f"verdict: {d}", decision=d,
                    review_state="pending" if d == "review" else None, started_at=now, finished_at=now,
                    updated_at=now, inspection={"findings": report["inspection"].get("findings") or [],
                                                "screening": report["inspection"].get("screening")},
                )
            )
            lifecycle.audit(s, "status", actor="worker:fixture", submission_id=sub.id, from_status="queued",
                            to_status="done", details={"note": "inserted from a saved ftgate check report"})
            s.add(VerdictRecord(submission_id=sub.id, decision=d, reasons=report["verdict"].get("reasons") or [],
                          policy_name=report["verdict"].get("policy") or "default", report=report))
            for smp in samples:
                s.add(Sample(submission_id=sub.id, suite=smp["suite"], item_id=smp["item_id"], prompt=smp["prompt"],
                             category=smp["category"], base_response=smp["base_response"],
                             candidate_response=smp["candidate_response"], base_label=smp["base_label"],
                             candidate_label=smp["candidate_label"]))
            return sub.id

    def start_worker(self) -> subprocess.Popen:
        """A real Celery worker on both queues: the command `ftgate serve` starts."""
        from api.serve import worker_argv

        log = open(self.data_dir / "worker.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(worker_argv("cpu,gpu", name=f"browser-test-{os.getpid()}@%h"),
                                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    try:
        import api.app  # noqa: F401
    except ImportError as e:
        skip_or_fail(f"the service (api/app.py) does not import: {e}")
    data_dir = tmp_path_factory.mktemp("ftgate-browser")
    env = {
        **os.environ,
        "FTGATE_DATA_DIR": str(data_dir),
        "FTGATE_DATABASE_URL": "",
        "FTGATE_BROKER_URL": "",
        "FTGATE_STORAGE_DIR": str(data_dir / "storage"),
        "FTGATE_SECRET_KEY": "browser-test-" + uuid.uuid4().hex,
        "FTGATE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    from ftgate.settings import Settings
    from services.auth import create_user
    from services.db import session_scope, upgrade

    settings = Settings(data_dir=data_dir, database_url="", broker_url="")
    db_url = settings.resolved_database_url
    upgrade(db_url)
    users = {}
    with session_scope(db_url) as s:
        for role, org in (("submitter", "acme"), ("reviewer", "ops"), ("admin", "ops")):
            email = f"{role}@{org}.test"
            create_user(s, email, role=role, organisation=org, password=PASSWORDS[role])
            users[role] = email
        create_user(s, "other@acme.test", role="submitter", organisation="acme", password="other-pass-1")
    port = _free_port()
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - closed at the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    srv = Server(url=url, data_dir=data_dir, env=env, db_url=db_url, users=users, procs=[proc])
    import httpx

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {(data_dir / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/v1/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the server did not start in 60 s")
        time.sleep(0.2)
    try:
        yield srv
    finally:
        for p in reversed(srv.procs):
            p.terminate()
        for p in srv.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"Chromium is not installed at {CHROMIUM}", "apt-get install chromium chromium-driver")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright (python) is not installed", "pip install -e '.[dev]'")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def new_page(browser, server):
    """new_page(viewport=(w, h)) -> a page in a fresh context (its own cookies)."""
    contexts = []

    def make(width: int = 1280, height: int = 900, **kw):
        ctx = browser.new_context(viewport={"width": width, "height": height}, base_url=server.url,
                                  accept_downloads=True, **kw)
        ctx.set_default_timeout(30_000)  # generous: the machine may be busy training
        contexts.append(ctx)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.js_errors = errors
        return page

    yield make
    for c in contexts:
        c.close()


def sign_in(page, server: Server, role: str, next_path: str = "/") -> None:
    page.goto(f"/login?next={next_path}")
    page.get_by_label("Email").fill(server.users[role])
    page.get_by_label("Password").fill(PASSWORDS[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:2000]


def shot(page, name: str, full_page: bool = True) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
