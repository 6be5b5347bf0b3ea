"""The submission state machine: every allowed status change is in ONE table, TRANSITIONS.

Standard library only, so the CI client (api/client.py) and the demo read the very statuses the service
writes without importing SQLAlchemy; ``models`` re-exports them for the service.

Run state (``SubmissionStatus``) and review state (``ReviewState``) are separate: a human review never
changes how far the pipeline got, and the automatic verdict is kept beside the review.
"""

from __future__ import annotations

from enum import StrEnum


class SubmissionStatus(StrEnum):
    QUEUED = "queued"
    INSPECTING = "inspecting"
    FINETUNING = "finetuning"
    EVALUATING = "evaluating"
    DECIDING = "deciding"
    REPAIRING = "repairing"  # the verdict is saved; the repaired adapter of a safety block/review is being made
    DONE = "done"
    REJECTED = "rejected"  # the artifact is invalid or unsafe (InputRejected): the submitter must fix it
    FAILED = "failed"  # our fault or the infrastructure's: error recorded, may be resubmitted
    CANCELLED = "cancelled"


S = SubmissionStatus

# from -> allowed next statuses. A status may "transition" to itself only where a stage is re-run
# (a lost worker's stage is released and claimed again): that is not a change, so not listed.
TRANSITIONS: dict[SubmissionStatus, frozenset[SubmissionStatus]] = {
    S.QUEUED: frozenset({S.INSPECTING, S.CANCELLED, S.FAILED}),
    S.INSPECTING: frozenset({S.FINETUNING, S.EVALUATING, S.DECIDING, S.REJECTED, S.FAILED, S.CANCELLED}),
    S.FINETUNING: frozenset({S.EVALUATING, S.REJECTED, S.FAILED, S.CANCELLED}),
    S.EVALUATING: frozenset({S.DECIDING, S.FAILED, S.CANCELLED}),
    S.DECIDING: frozenset({S.DONE, S.REPAIRING, S.FAILED, S.CANCELLED}),
    S.REPAIRING: frozenset({S.DONE, S.FAILED, S.CANCELLED}),
    S.DONE: frozenset(),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL: frozenset[SubmissionStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
ACTIVE: frozenset[SubmissionStatus] = frozenset(TRANSITIONS) - TERMINAL


class Stage(StrEnum):
    """A pipeline stage = one Celery task. Each runs while the submission is in its status."""

    INSPECT = "inspect"
    FINETUNE = "finetune"
    EVALUATE = "evaluate"
    DECIDE = "decide"
    REPAIR = "repair"  # after a safety block or review, when the submission or its policy asks for it


STAGE_STATUS: dict[Stage, SubmissionStatus] = {
    Stage.INSPECT: S.INSPECTING,
    Stage.FINETUNE: S.FINETUNING,
    Stage.EVALUATE: S.EVALUATING,
    Stage.DECIDE: S.DECIDING,
    Stage.REPAIR: S.REPAIRING,
}
STATUS_STAGE: dict[SubmissionStatus, Stage] = {v: k for k, v in STAGE_STATUS.items()}
STATUS_STAGE[S.QUEUED] = Stage.INSPECT

# Statuses from which a stage's task may claim the submission (WHERE status IN (...)).
CLAIMABLE_FROM: dict[Stage, frozenset[SubmissionStatus]] = {
    Stage.INSPECT: frozenset({S.QUEUED, S.INSPECTING}),
    Stage.FINETUNE: frozenset({S.FINETUNING}),
    Stage.EVALUATE: frozenset({S.EVALUATING}),
    Stage.DECIDE: frozenset({S.DECIDING}),
    Stage.REPAIR: frozenset({S.REPAIRING}),
}

# Celery queue of each stage: a cheap inspection never waits behind a fine-tune.
STAGE_QUEUE: dict[Stage, str] = {
    Stage.INSPECT: "cpu",
    Stage.FINETUNE: "gpu",
    Stage.EVALUATE: "gpu",
    Stage.DECIDE: "cpu",
    Stage.REPAIR: "gpu",  # two fine-tunes and an evaluation
}


def can_transition(src: SubmissionStatus | str, dst: SubmissionStatus | str) -> bool:
    return SubmissionStatus(dst) in TRANSITIONS[SubmissionStatus(src)]


def sources_of(dst: SubmissionStatus | str) -> frozenset[SubmissionStatus]:
    """Every status that may change to ``dst`` (the WHERE status IN (...) of a transition)."""
    dst = SubmissionStatus(dst)
    return frozenset(s for s, nxt in TRANSITIONS.items() if dst in nxt)


class StageRunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    RETRYING = "retrying"  # transient error: released, the task retries
    LOST = "lost"  # the worker died (heartbeat stopped); reaped
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # the claim was taken away (reaped or cancelled) while it ran: result discarded


class Role(StrEnum):
    SUBMITTER = "submitter"
    REVIEWER = "reviewer"
    ADMIN = "admin"


class Decision(StrEnum):
    APPROVE = "approve"
    BLOCK = "block"
    REVIEW = "review"


class ReviewState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    BLOCKED = "blocked"


class Kind(StrEnum):
    ADAPTER = "adapter"
    DATASET = "dataset"
