"""Celery app and the thin stage tasks of the pipeline (inspect -> finetune -> evaluate -> decide).

`celery -A tasks.app worker -Q cpu,gpu` runs a worker. Tasks receive submission ids, claim the stage
with a conditional UPDATE, call the evaluation core, save, transition, and enqueue the next stage after
the commit.
"""
