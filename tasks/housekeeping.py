"""The workers' housekeeping: what runs beside the stages, not as one.

- ``reap_once``: claims whose heartbeat stopped (a worker died) or that ran past ``stale_job_seconds`` are
  released for another attempt, or failed after ``max_stage_attempts``; stages that were never enqueued
  are enqueued (services.submissions.reap decides; this sends).
- ``expire_once``: the files of submissions finished longer ago than ``artifact_retention_days`` are
  deleted (services.retention).
- Every worker runs both in a reaper thread (first pass at start, then every ``reaper_interval_seconds``);
  ``reap_task`` runs one pass on demand. After a fork a worker process opens fresh database connections.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from ftgate.settings import Settings
from services import submissions as lifecycle
from services.db import dispose_engines, session_scope
from services.retention import RetentionResult, expire_artifacts
from services.storage import Storage
from tasks.app import REAP_TASK, celery_app
from tasks.pipeline import enqueue_after_commit, worker_name, worker_settings

log = logging.getLogger("ftgate.tasks")


def reap_once(settings: Settings | None = None, *, actor: str = "reaper") -> lifecycle.ReapResult:
    """Release or fail stale jobs and re-enqueue the lost ones (see services.submissions.reap)."""
    settings = settings or worker_settings()
    with session_scope(settings.resolved_database_url) as s:
        res = lifecycle.reap(
            s, lost_worker_seconds=settings.lost_worker_seconds, stale_job_seconds=settings.stale_job_seconds,
            max_attempts=settings.max_stage_attempts, actor=actor,
        )
    for sub_id, stage in res.requeue:
        enqueue_after_commit(settings, sub_id, stage)
    if res.requeue or res.failed:
        log.warning("reaper: requeued %s, failed %s", [i for i, _ in res.requeue], res.failed)
    return res


def expire_once(settings: Settings | None = None, *, actor: str = "retention") -> RetentionResult:
    """Delete the files of submissions finished longer ago than the retention period (services.retention)."""
    settings = settings or worker_settings()
    with session_scope(settings.resolved_database_url) as s:
        res = expire_artifacts(s, Storage(settings.resolved_storage_dir),
                               retention_days=settings.artifact_retention_days, actor=actor)
    if res.expired:
        log.info("retention: expired %d submissions, %d files, %d bytes", len(res.expired), res.files_deleted,
                 res.bytes_freed)
    return res


def housekeeping_pass() -> tuple[lifecycle.ReapResult, RetentionResult]:
    """What each worker's reaper does every interval: stale jobs, then expired files."""
    name = worker_name()
    return reap_once(actor=f"reaper:{name}"), expire_once(actor=f"retention:{name}")


@celery_app.task(name=REAP_TASK, bind=True, acks_late=True, shared=False)  # see pipeline._TASK_OPTS
def reap_task(self) -> dict:
    res, expired = housekeeping_pass()
    return {"requeued": [i for i, _ in res.requeue], "failed": res.failed, "expired": expired.expired}


# ----------------------------------------------------------------------------------------------------------
# worker lifecycle: a reaper thread in every worker (first pass at start), fresh connections after fork
_reaper_stop = threading.Event()


def _reaper_loop(interval: float) -> None:
    while True:
        try:
            housekeeping_pass()
        except Exception as e:
            log.warning("reaper pass failed: %s", e)
        if _reaper_stop.wait(interval):
            return


@worker_ready.connect
def _start_reaper(**_kw) -> None:
    interval = worker_settings().reaper_interval_seconds
    if interval > 0:
        threading.Thread(target=_reaper_loop, args=(interval,), name="ftgate-reaper", daemon=True).start()


@worker_shutdown.connect
def _stop_reaper(**_kw) -> None:
    _reaper_stop.set()


@worker_process_init.connect
def _after_fork(**_kw) -> None:
    dispose_engines()


__all__ = ["expire_once", "housekeeping_pass", "reap_once", "reap_task"]
