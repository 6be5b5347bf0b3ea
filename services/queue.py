"""The pipeline's Celery queues as a sender sees them: broker, queues, routes and the task names.

The API enqueues a stage by its task NAME (``send_task``) through a Celery app built here from the settings.
That app registers no task, so a process that only sends (the API, tools, tests) never imports the worker's
modules (``tasks.app``, ``tasks.pipeline``) nor the evaluation core and torch behind them. The worker builds
its own app from the same ``celery_config`` (tasks/app.py) and registers the tasks under these names: one
place decides which queue a stage runs on, for both ends.

Queues: ``cpu`` (inspect, decide, reaper) and ``gpu`` (finetune, evaluate). Embedded default: the
filesystem broker in data_dir/broker (no server). Production: Redis by FTGATE_BROKER_URL. There is no
result backend: the state of every job lives in the database.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from ftgate.settings import Settings, get_settings
from models import STAGE_QUEUE, Stage

TASK_NAMES: dict[Stage, str] = {
    Stage.INSPECT: "ftgate.inspect",
    Stage.FINETUNE: "ftgate.finetune",
    Stage.EVALUATE: "ftgate.evaluate",
    Stage.DECIDE: "ftgate.decide",
    Stage.REPAIR: "ftgate.repair",
}
REAP_TASK = "ftgate.reap"
QUEUES = ("cpu", "gpu")


def celery_config(settings: Settings) -> dict[str, Any]:
    url = settings.resolved_broker_url
    conf: dict[str, Any] = {
        "broker_url": url,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,  # a message is acknowledged after the task ran: a killed worker's job is redelivered
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # a long job never holds a second one hostage
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        "task_default_queue": "cpu",
        "task_routes": {
            **{name: {"queue": STAGE_QUEUE[stage], "routing_key": STAGE_QUEUE[stage]} for stage, name in TASK_NAMES.items()},
            REAP_TASK: {"queue": "cpu", "routing_key": "cpu"},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "beat_schedule": {
            "reap-stale-jobs": {"task": REAP_TASK, "schedule": max(settings.reaper_interval_seconds, 10.0)},
        },
    }
    if url.startswith("filesystem"):
        d = settings.broker_dir.resolve()
        for sub in ("queue", "processed", "control"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(d / "queue"),
            "data_folder_out": str(d / "queue"),
            "processed_folder": str(d / "processed"),
            "control_folder": str(d / "control"),
            "store_processed": False,
        }
        conf["worker_enable_remote_control"] = False
    else:
        # Redis redelivers an unacknowledged message after the visibility timeout: longer than any job.
        conf["broker_transport_options"] = {"visibility_timeout": settings.resolved_visibility_timeout}
    return conf


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app on the settings' broker with the pipeline's queues and routes, and no task registered."""
    settings = settings or get_settings()
    app = Celery("ftgate", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.ftgate_settings = settings
    return app


def send_stage(app: Celery, submission_id: str, stage: Stage | str) -> None:
    """Enqueue one stage of one submission (call only after the commit that made it due)."""
    stage = Stage(stage)
    queue = STAGE_QUEUE[stage]
    app.send_task(TASK_NAMES[stage], args=[submission_id], queue=queue, routing_key=queue)
