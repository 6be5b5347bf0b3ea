"""`ftgate serve`: the embedded service in one command, no outside server.

Migrates the database (SQLite in data_dir unless FTGATE_DATABASE_URL says otherwise), creates an admin
account and an API token on first start and prints them, starts a Celery worker subprocess (both queues,
the filesystem broker in data_dir/broker unless FTGATE_BROKER_URL is set), then serves the API and pages
with uvicorn on http://127.0.0.1:8000. The same code paths as production: real Celery, real SQLAlchemy.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("ftgate.serve")
ADMIN_EMAIL = "admin@localhost"
CREDENTIALS_FILE = "initial-admin.txt"
WORKER_STOP_GRACE_SECONDS = 15.0  # warm shutdown of the embedded worker before it is killed
SECRET_KEY_FILE = "secret-key"  # the session key generated on first start when FTGATE_SECRET_KEY is unset
COMPANION_STOP_SECONDS = 5.0  # how long a stop waits for the companion thread to finish its last request


@dataclass(frozen=True)
class Serving:
    """What `serve` hands its companion (`ftgate demo` submits the bundled samples with it): where the service
    answers, its settings, the first admin's credentials when this start created them (else None), and an
    event that is set when the service stops."""

    url: str
    settings: Any
    initial_admin: dict | None
    stopping: threading.Event


def worker_argv(queues: str = "cpu,gpu", name: str | None = None, loglevel: str = "INFO", pool: str = "solo",
                concurrency: int = 1) -> list[str]:
    """The command of a worker process (also used by the e2e tests and documented for operators)."""
    name = name or f"ftgate-{os.getpid()}@%h"
    return [
        sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-Q", queues, "-n", name,
        "--pool", pool, "--concurrency", str(concurrency), "--loglevel", loglevel,
        "--without-mingle", "--without-gossip",
    ]


def load_or_create_secret_key(data_dir: Path) -> str:
    """The embedded service's session key: generated on first start, kept in data_dir (mode 600) so
    sessions survive a restart, and never the same on two installations."""
    path = data_dir / SECRET_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def bootstrap_admin(settings) -> dict | None:
    """On first start (no user yet) create the organisation 'default', an admin with a random password and
    an API token; returns them (shown once; also written to data_dir/initial-admin.txt, mode 600)."""
    from sqlalchemy import func, select

    from models import Role, User
    from services.auth import create_token, create_user
    from services.db import session_scope
    from services.submissions import audit

    with session_scope(settings.resolved_database_url) as s:
        if s.scalar(select(func.count()).select_from(User)):
            return None
        password = secrets.token_urlsafe(12)
        user = create_user(s, ADMIN_EMAIL, role=Role.ADMIN, organisation="default", password=password)
        row, token = create_token(s, user, "created at first start")
        expires = row.expires_at.date().isoformat() if row.expires_at else "never"
        audit(s, "bootstrap_admin", actor="system", details={"user": ADMIN_EMAIL})
    creds = {"email": ADMIN_EMAIL, "password": password, "token": token, "token_expires": expires}
    path = settings.data_dir / CREDENTIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"email: {ADMIN_EMAIL}\npassword: {password}\ntoken: {token}\ntoken expires: {expires}\n"
                "(this file is removed when this account first signs in or gets a new password)\n")
    return creds


def discard_initial_credentials(data_dir: Path, email: str) -> bool:
    """Remove initial-admin.txt once the account it names has signed in or had its password set: the
    password in it is then either known or dead, and must not lie around. True if it was removed."""
    path = data_dir / CREDENTIALS_FILE
    try:
        named = path.read_text().splitlines()[0].removeprefix("email:").strip()
    except (FileNotFoundError, IndexError):
        return False
    if named != email:
        return False
    path.unlink(missing_ok=True)
    log.info("removed %s: %s has signed in or has a new password", path, email)
    return True


def _banner(settings, host: str, port: int, creds: dict | None, worker: bool) -> str:
    url = f"http://{host}:{port}"
    lines = [
        "",
        f"ftgate is serving on {url}   (API docs: {url}/docs)",
        f"  database: {settings.resolved_database_url}",
        f"  broker:   {settings.resolved_broker_url}   worker: {'started' if worker else 'not started (--no-worker)'}",
        f"  storage:  {settings.resolved_storage_dir.resolve()}",
    ]
    if creds:
        lines += [
            "",
            "First start: created the admin account (shown once; also in "
            f"{(settings.data_dir / CREDENTIALS_FILE).resolve()}, readable only by you and removed at its first sign-in):",
            f"  email:     {creds['email']}",
            f"  password:  {creds['password']}",
            f"  API token: {creds['token']}   (expires {creds['token_expires']})",
            "",
            "Try:",
            f"  curl -H 'Authorization: Bearer {creds['token']}' -F file=@examples/harmful.jsonl {url}/api/v1/submissions",
            f"  ftgate submit examples/benign.jsonl --server {url} --token {creds['token']} --wait",
        ]
    else:
        kept = settings.data_dir / CREDENTIALS_FILE
        lines += ["", f"Sign in with your account (the first admin's password is in {kept} until its first sign-in)."
                  if kept.exists() else "Sign in with your account."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftgate serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=None, help="default: FTGATE_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: FTGATE_PORT or 8000")
    p.add_argument("--data-dir", default=None, help="embedded state (SQLite, uploads, broker); default FTGATE_DATA_DIR or ./var")
    p.add_argument("--no-worker", action="store_true", help="serve only (workers run elsewhere)")
    p.add_argument("--queues", default="cpu,gpu", help="queues of the embedded worker")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


def serve(args: argparse.Namespace, companion: Callable[[Serving], None] | None = None) -> int:
    """Serve until a stop signal. ``companion``, if given, runs in a daemon thread from just before the server
    starts; it must wait for the service to answer, and return soon after ``Serving.stopping`` is set."""
    if args.data_dir:
        os.environ["FTGATE_DATA_DIR"] = str(Path(args.data_dir).resolve())
    from ftgate.settings import InsecureSecretKey, get_settings

    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValueError as e:  # pydantic's ValidationError: it names the setting and what is wrong with it
        print(f"ftgate serve: refusing to start: invalid settings: {e}", file=sys.stderr)
        return 2
    os.environ["FTGATE_DATA_DIR"] = str(settings.data_dir.resolve())  # the worker sees the same paths
    # Everything serve and its worker write (SQLite file, uploads, broker messages, keys) is for this user
    # only: files 600, directories 700, and the data dir itself 700 also when an older version made it.
    os.umask(0o077)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for private_dir in {settings.data_dir, settings.resolved_storage_dir}:
        private_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(private_dir, 0o700)
    if not settings.secret_key:
        settings = settings.model_copy(update={"secret_key": load_or_create_secret_key(settings.data_dir)})
    try:
        settings.require_secure_secret_key()
    except InsecureSecretKey as e:
        print(f"ftgate serve: refusing to start: {e}", file=sys.stderr)
        return 2
    host, port = args.host or settings.host, args.port or settings.port
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "kombu.connection"):
        logging.getLogger(noisy).setLevel(logging.WARNING if noisy == "alembic" else logging.ERROR)

    from services.db import upgrade

    upgrade(settings.resolved_database_url)
    creds = bootstrap_admin(settings)

    # uvicorn handles SIGTERM/SIGINT while it serves, then restores the handlers it found and raises the
    # signal again: with Python's default SIGTERM handler that killed this process on the spot, before the
    # `finally` below could stop the worker, which was left running orphaned. Ours turns both into an
    # exception, so the worker is always stopped.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_stop)
    worker: subprocess.Popen | None = None
    companion_thread: threading.Thread | None = None
    stopping = threading.Event()
    try:
        if not args.no_worker:
            # Its own session: a Ctrl-C on the terminal reaches only this process, which then stops the worker
            # once (a second SIGINT straight to Celery would turn its warm shutdown into a cold one).
            worker = subprocess.Popen(worker_argv(args.queues, name=f"embedded-{os.getpid()}@%h"),
                                      cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
        import uvicorn

        from api.app import create_app

        app = create_app(settings)
        config = uvicorn.Config(app, host=host, port=port, log_level=args.log_level, proxy_headers=False)
        server = uvicorn.Server(config)
        sys.stdout.write(_banner(settings, host, port, creds, worker is not None))
        sys.stdout.flush()
        if companion is not None:
            local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard is not an address
            local_host = f"[{local_host}]" if ":" in local_host else local_host  # IPv6 in a URL
            serving = Serving(f"http://{local_host}:{port}", settings, creds, stopping)
            companion_thread = threading.Thread(target=companion, args=(serving,), name="serve-companion", daemon=True)
            companion_thread.start()
        server.run()
        return 0 if server.started else 4
    except StopRequested as stop:
        log.info("%s: stopping", stop)
        return 0
    finally:
        stopping.set()
        if companion_thread is not None:
            try:
                companion_thread.join(COMPANION_STOP_SECONDS)
            except StopRequested:  # a second Ctrl-C: the worker must still be stopped below
                pass
        if worker is not None:
            stop_worker(worker, WORKER_STOP_GRACE_SECONDS)


class StopRequested(Exception):
    """SIGTERM or SIGINT reached `ftgate serve`."""


def _raise_stop(signum: int, frame) -> None:
    raise StopRequested(signal.Signals(signum).name)


def stop_worker(worker: subprocess.Popen, grace_seconds: float) -> None:
    """Warm shutdown (SIGTERM: the worker finishes its running stage, or it is re-run later), then SIGKILL to
    the worker's whole process group after ``grace_seconds``, or at once on another stop signal."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=grace_seconds)
        except (subprocess.TimeoutExpired, StopRequested):
            log.warning("the worker did not stop within %.0f s: killing it", grace_seconds)
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # also any pool children it left
    except (ProcessLookupError, PermissionError):
        pass
    worker.wait()


if __name__ == "__main__":
    sys.exit(main())
