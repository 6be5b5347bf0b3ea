"""Celery app and the thin stage tasks of the pipeline (inspect -> finetune -> evaluate -> decide).

`celery -A tasks.app worker -Q cpu,gpu` runs a worker. Tasks receive submission ids, claim the stage
with a conditional UPDATE, call the evaluation core, save, transition, and enqueue the next stage after
the commit.

- tasks/app.py: the Celery app (broker, queues and task names from services/queue.py); the worker's edge:
  its settings configure the database pool and become the core's runtime.
- tasks/pipeline.py: the four stages and ``execute_stage``, which runs any of them the same way.
- tasks/heartbeat.py: holding a claim while a stage runs (heartbeat thread, progress, ClaimLost).
- tasks/housekeeping.py: the reaper (stale claims, lost stages) and retention, and the worker signals.

May import everything below it (services, models, evaluation, ftgate.settings); nothing imports it but the
worker and the tests. Start with pipeline.py: ``execute_stage``, then the stage functions.
"""
