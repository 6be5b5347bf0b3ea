"""The worker's Celery app: ``celery -A tasks.app worker -Q cpu,gpu``.

Its broker, queues, routes and task names come from services/queue.py, which the API uses to send work
without importing this module; here the tasks are registered under those names: the stages in
tasks/pipeline.py, the reaper's pass and the worker signals in tasks/housekeeping.py.
"""

from __future__ import annotations

from evaluation.runtime import use_runtime
from services.db import configure_pool
from services.queue import QUEUES, REAP_TASK, TASK_NAMES, celery_config, make_celery, send_stage

# Re-exported: the worker's code and the tests read them from here.
__all__ = ["QUEUES", "REAP_TASK", "TASK_NAMES", "app", "celery_app", "celery_config", "make_celery", "send_stage"]

celery_app = make_celery()
app = celery_app  # `celery -A tasks.app`

# The worker's edge: its settings, read once by make_celery, configure the database pool and become the
# process runtime of the evaluation core (its registries and judges); each stage also passes them explicitly.
_settings = celery_app.conf.ftgate_settings
configure_pool(_settings.resolved_database_url, _settings.db_pool_size, _settings.db_max_overflow)
use_runtime(_settings.runtime())

# Register the tasks and worker signals (imported last: they use celery_app).
from tasks import housekeeping as _housekeeping  # noqa: E402,F401
from tasks import pipeline as _pipeline  # noqa: E402,F401
