"""Holding a claim while a stage runs.

A worker that claimed a stage (services.submissions.claim) keeps the claim alive with a heartbeat: a thread
that touches the submission row every ``heartbeat_seconds``. When the row says the claim is gone (the
submission was cancelled, or the reaper took it over after missed heartbeats) the stage is told through
``ClaimLost`` at its next progress report, and saves nothing. Progress reports from the evaluation core
go to the submission row here too, throttled to one write per ``progress_interval_seconds``.

``TRANSIENT`` lists the errors that mean the infrastructure hiccupped (database, broker, network): a
stage that meets one is retried, not failed.
"""

from __future__ import annotations

import logging
import threading
import time

from ftgate.settings import Settings
from services import submissions as lifecycle
from services.db import session_scope

log = logging.getLogger("ftgate.tasks")


class ClaimLost(Exception):
    """The claim was taken away (cancelled, or reaped after a missed heartbeat): stop, save nothing."""


def _transient_types() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import sqlalchemy.exc

    types: list[type[BaseException]] = [
        sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
        kombu.exceptions.OperationalError, ConnectionError, TimeoutError,
    ]
    try:
        import redis.exceptions

        types += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


TRANSIENT = _transient_types()


class StageRunner:
    """Holds one claim for the length of a stage: the heartbeat thread (while inside ``with``), the
    throttled progress writer the evaluation core reports to, and ``check`` that raises ClaimLost."""

    def __init__(self, settings: Settings, claim: lifecycle.Claim, kind: str, worker: str):
        self.settings, self.claim, self.kind, self.worker = settings, claim, kind, worker
        self.url = settings.resolved_database_url
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._last_progress = 0.0
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.submission_id[:8]}", daemon=True)

    def __enter__(self) -> StageRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with session_scope(self.url) as s:
                    if not lifecycle.heartbeat(s, self.claim):
                        self.lost.set()
                        return
            except Exception as e:  # the database is away: keep trying; the reaper decides
                log.warning("heartbeat of %s failed: %s", self.claim.submission_id, e)

    def check(self) -> None:
        if self.lost.is_set():
            raise ClaimLost(f"claim on {self.claim.submission_id} was taken away")

    def progress(self, stage: str, done: int, total: int, message: str = "") -> None:
        """The evaluation core's Progress: throttled writes to the submission row."""
        self.check()
        now = time.monotonic()
        final = total > 0 and done >= total
        if not final and now - self._last_progress < self.settings.progress_interval_seconds:
            return
        self._last_progress = now
        text = f"{stage} {done}/{total}" if total else stage
        if message:
            text = f"{text}: {message}"
        try:
            with session_scope(self.url) as s:
                if not lifecycle.write_progress(s, self.claim, self.kind, done, total, text):
                    self.lost.set()
        except TRANSIENT as e:
            log.warning("progress of %s not written: %s", self.claim.submission_id, e)
        self.check()
