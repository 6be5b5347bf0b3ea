"""The submission lifecycle: create, claim a stage, heartbeat, progress, complete, fail, cancel, review, reap.

Every status change goes through ``_transition``: a conditional UPDATE whose WHERE lists the statuses the
state machine (ftgate.status.TRANSITIONS) allows to reach the target, so two actors racing on one
submission cannot both win, and a redelivered task does nothing twice. Each change is recorded in the
append-only audit log in the same transaction. Callers commit, and only then enqueue the next stage.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (
    ACTIVE,
    CLAIMABLE_FROM,
    STAGE_STATUS,
    STATUS_STAGE,
    TERMINAL,
    AuditEvent,
    Decision,
    Kind,
    Review,
    ReviewState,
    Stage,
    StageRun,
    StageRunStatus,
    Submission,
    SubmissionStatus,
    VerdictRecord,
    sources_of,
    utcnow,
)
from services.auth import Principal

S = SubmissionStatus


class LifecycleError(Exception):
    """A request the state machine refuses (e.g. cancelling a finished submission)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _rows_matched(result: Result[Any]) -> int:
    """How many rows an UPDATE matched. Session.execute is typed to return a Result; for an UPDATE it is a
    CursorResult, the Result that carries the count."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"expected the CursorResult of an UPDATE, got {type(result).__name__}")
    return result.rowcount


# ----------------------------------------------------------------------------------------------------------
# progress: one 0-100 number over the stages a submission goes through
_WEIGHTS = {
    Kind.ADAPTER: {Stage.INSPECT: 10, Stage.EVALUATE: 85, Stage.DECIDE: 5},
    Kind.DATASET: {Stage.INSPECT: 15, Stage.FINETUNE: 40, Stage.EVALUATE: 40, Stage.DECIDE: 5},
}


def overall_progress(kind: str, status: str, done: int = 0, total: int = 0) -> float:
    status = S(status)
    if status in TERMINAL:
        return 100.0
    if status == S.QUEUED:
        return 0.0
    if status == S.REPAIRING:  # the verdict is in; the bar now follows the repair on its own
        return round(100 * min(max(done / total, 0.0), 1.0), 1) if total > 0 else 0.0
    weights = _WEIGHTS[Kind(kind)]
    stage = STATUS_STAGE[status]
    before = 0.0
    for st, w in weights.items():
        if st == stage:
            frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
            return round(before + w * frac, 1)
        before += w
    return round(before, 1)


# ----------------------------------------------------------------------------------------------------------
def audit(
    session: Session, action: str, *, actor: str, submission_id: str | None = None, actor_user_id: int | None = None,
    from_status: str | None = None, to_status: str | None = None, details: dict | None = None,
) -> None:
    session.add(
        AuditEvent(
            action=action, actor=actor, actor_user_id=actor_user_id, submission_id=submission_id,
            from_status=from_status, to_status=to_status, details=details or {},
        )
    )


def _transition(
    session: Session, sub_id: str, dst: SubmissionStatus, *, actor: str, actor_user_id: int | None = None,
    only_from: Iterable[SubmissionStatus] | None = None, claim_token: str | None = None, release: bool = True,
    values: dict[str, Any] | None = None, details: dict | None = None,
) -> bool:
    """Move ``sub_id`` to ``dst`` if the state machine allows it from its current status (and, with
    ``claim_token``, only while that claim holds). Returns False, changing nothing, otherwise."""
    allowed = sources_of(dst)
    if only_from is not None:
        allowed &= frozenset(only_from)
    src = session.scalar(select(Submission.status).where(Submission.id == sub_id))
    if src is None or S(src) not in allowed:
        return False
    now = utcnow()
    vals: dict[str, Any] = {"status": dst.value, "updated_at": now, **(values or {})}
    if release:
        vals.update(claim_token=None, claimed_by=None, claimed_at=None, heartbeat_at=None)
    if dst in TERMINAL:
        vals.setdefault("finished_at", now)
        vals.setdefault("progress", 100.0)
        if dst in (S.FAILED, S.CANCELLED):
            vals["dedup_key"] = None  # the same upload may run again
    conds = [Submission.id == sub_id, Submission.status == src]
    if claim_token is not None:
        conds.append(Submission.claim_token == claim_token)
    res = session.execute(update(Submission).where(*conds).values(**vals).execution_options(synchronize_session=False))
    if _rows_matched(res) != 1:
        return False
    audit(
        session, "status", actor=actor, actor_user_id=actor_user_id, submission_id=sub_id, from_status=src,
        to_status=dst.value, details=details,
    )
    return True


# ----------------------------------------------------------------------------------------------------------
# intake
def dedup_key(organisation_id: int, sha256: str, kind: str, base: str, policy: str, training: dict,
              repair: str | None = None) -> str:
    # a repair asked for is part of the run; without one, the key is the one recorded before repairs existed
    parts = [organisation_id, sha256, kind, base, policy, training] + ([repair] if repair is not None else [])
    canon = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class Quotas:
    """Per-organisation limits checked when a submission is recorded (None: no limit)."""

    max_in_flight: int | None = None
    max_stored_bytes: int | None = None


def check_quotas(session: Session, organisation_id: int, size: int, quotas: Quotas) -> None:
    """Raises LifecycleError ``quota_exceeded`` (too many in flight: try later) or ``storage_quota_exceeded``
    (too many bytes kept). Soft limits: two uploads racing past the same count may both get in."""
    mine = Submission.organisation_id == organisation_id
    if quotas.max_in_flight is not None:
        in_flight = session.scalar(
            select(func.count()).select_from(Submission).where(mine, Submission.status.in_([a.value for a in ACTIVE]))) or 0
        if in_flight >= quotas.max_in_flight:
            raise LifecycleError(
                "quota_exceeded",
                f"your organisation has {in_flight} submissions queued or running, the limit is "
                f"{quotas.max_in_flight}; submit again when one finishes",
            )
    if quotas.max_stored_bytes is not None:
        stored = session.scalar(
            select(func.coalesce(func.sum(Submission.artifact_size), 0)).where(
                mine, Submission.artifact_deleted_at.is_(None))) or 0
        if stored + size > quotas.max_stored_bytes:
            raise LifecycleError(
                "storage_quota_exceeded",
                f"your organisation stores {stored // 2**20} MiB of uploads; this one ({size // 2**20} MiB) would pass "
                f"the quota of {quotas.max_stored_bytes // 2**20} MiB (finished uploads are deleted after the "
                "retention period)",
            )


def artifact_in_use(session: Session, artifact_path: str) -> bool:
    """Whether any submission's artifact is this stored file (uploads are stored by content, so shared)."""
    return (session.scalar(select(func.count()).select_from(Submission).where(
        Submission.artifact_path == artifact_path)) or 0) > 0


def create_submission(
    session: Session, principal: Principal, *, kind: str, base: str, policy: str, name: str, training: dict,
    filename: str, artifact_path: str, sha256: str, size: int, quotas: Quotas = Quotas(), repair: str | None = None,
) -> tuple[Submission, bool]:
    """Record a new submission (status queued), or return the existing one for the same artifact, base,
    policy, training overrides and repair request in the organisation (a duplicate costs nothing, so quotas do
    not apply to it). ``repair`` (off | offer | auto, None: the policy's) was checked against the policy by
    the caller. Returns (submission, created). Caller commits."""
    from services.catalog import policy_repair

    # asking for what the policy does anyway is the same run as asking for nothing: one key for both
    key = dedup_key(principal.organisation_id, sha256, kind, base, policy, training,
                    None if repair == policy_repair(policy) else repair)
    existing = session.scalar(select(Submission).where(Submission.dedup_key == key))
    if existing is not None:
        return existing, False
    check_quotas(session, principal.organisation_id, size, quotas)
    sub = Submission(
        id=uuid.uuid4().hex, organisation_id=principal.organisation_id, user_id=principal.user_id, name=name,
        kind=Kind(kind).value, base_name=base, policy_name=policy, training=training, repair=repair, filename=filename,
        artifact_path=artifact_path, artifact_sha256=sha256, artifact_size=size, dedup_key=key,
        status=S.QUEUED.value,
    )
    try:
        with session.begin_nested():
            session.add(sub)
            session.flush()
    except IntegrityError:  # the same upload raced in: return the winner
        existing = session.scalar(select(Submission).where(Submission.dedup_key == key))
        if existing is None:
            raise
        return existing, False
    audit(
        session, "submitted", actor=principal.actor, actor_user_id=principal.user_id, submission_id=sub.id,
        to_status=S.QUEUED.value, details={"sha256": sha256, "size": size, "kind": kind, "base": base, "policy": policy},
    )
    return sub, True


def mark_enqueued(session: Session, sub_id: str) -> None:
    session.execute(update(Submission).where(Submission.id == sub_id).values(enqueued_at=utcnow()))


# ----------------------------------------------------------------------------------------------------------
# the worker side
@dataclass
class Claim:
    submission_id: str
    stage: Stage
    token: str
    attempt: int
    stage_run_id: int


def claim(
    session: Session, sub_id: str, stage: Stage, *, worker: str, task_id: str | None, lost_worker_seconds: float,
) -> Claim | None:
    """Take the stage of ``sub_id`` for this worker: a conditional UPDATE that succeeds only if the
    submission is in a status this stage runs from and nobody holds a live claim (a claim whose heartbeat
    is older than ``lost_worker_seconds`` belongs to a dead worker and is taken over). Caller commits."""
    stage = Stage(stage)
    now = utcnow()
    lost_before = now - timedelta(seconds=lost_worker_seconds)
    src = session.scalar(select(Submission.status).where(Submission.id == sub_id))
    if src is None or S(src) not in CLAIMABLE_FROM[stage]:
        return None
    dst = STAGE_STATUS[stage]
    token = uuid.uuid4().hex
    res = session.execute(
        update(Submission)
        .where(
            Submission.id == sub_id,
            Submission.status == src,
            or_(Submission.claim_token.is_(None), Submission.heartbeat_at < lost_before),
        )
        .values(
            status=dst.value, claim_token=token, claimed_by=worker, claimed_at=now, heartbeat_at=now,
            stage_done=0, stage_total=0, progress_message=f"{stage.value}: started on {worker}", updated_at=now,
            started_at=func.coalesce(Submission.started_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    if _rows_matched(res) != 1:
        return None
    if S(src) != dst:
        audit(session, "status", actor=f"worker:{worker}", submission_id=sub_id, from_status=src, to_status=dst.value)
    # a previous attempt still marked running lost its worker: close it
    session.execute(
        update(StageRun)
        .where(StageRun.submission_id == sub_id, StageRun.status == StageRunStatus.RUNNING.value)
        .values(status=StageRunStatus.LOST.value, finished_at=now, error=f"worker stopped; taken over by {worker}")
        .execution_options(synchronize_session=False)
    )
    attempt = (
        session.scalar(
            select(func.max(StageRun.attempt)).where(StageRun.submission_id == sub_id, StageRun.stage == stage.value)
        )
        or 0
    ) + 1
    run = StageRun(
        submission_id=sub_id, stage=stage.value, attempt=attempt, claim_token=token, worker=worker, task_id=task_id,
        started_at=now, heartbeat_at=now,
    )
    session.add(run)
    session.flush()
    return Claim(sub_id, stage, token, attempt, run.id)


def heartbeat(session: Session, c: Claim) -> bool:
    """Refresh the claim; False if it was taken away (cancelled, reaped): the stage must stop."""
    now = utcnow()
    res = session.execute(
        update(Submission)
        .where(Submission.id == c.submission_id, Submission.claim_token == c.token)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(StageRun).where(StageRun.id == c.stage_run_id).values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rows_matched(res) == 1


def write_progress(session: Session, c: Claim, kind: str, done: int, total: int, message: str) -> bool:
    now = utcnow()
    status = STAGE_STATUS[c.stage]
    res = session.execute(
        update(Submission)
        .where(Submission.id == c.submission_id, Submission.claim_token == c.token)
        .values(
            stage_done=done, stage_total=total, progress_message=message[:2000],
            progress=overall_progress(kind, status, done, total), heartbeat_at=now, updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return _rows_matched(res) == 1


def _finish_run(session: Session, c: Claim, status: StageRunStatus, error: str | None = None) -> None:
    session.execute(
        update(StageRun)
        .where(StageRun.id == c.stage_run_id)
        .values(status=status.value, finished_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    )


def complete_stage(
    session: Session, c: Claim, next_status: SubmissionStatus, *, worker: str, values: dict | None = None,
    kind: str | None = None, details: dict | None = None,
) -> bool:
    """Finish the claimed stage and move on, only while the claim holds. The caller adds the stage's
    results to the same transaction *after* this returns True (and rolls back if it returns False)."""
    vals = dict(values or {})
    if kind is not None and next_status not in TERMINAL:
        vals.setdefault("progress", overall_progress(kind, next_status))
        vals.setdefault("stage_done", 0)
        vals.setdefault("stage_total", 0)
        vals.setdefault("progress_message", f"waiting for a worker ({STATUS_STAGE[next_status].value})")
    ok = _transition(
        session, c.submission_id, next_status, actor=f"worker:{worker}", only_from=[STAGE_STATUS[c.stage]],
        claim_token=c.token, values=vals, details=details,
    )
    if ok:
        _finish_run(session, c, StageRunStatus.SUCCEEDED)
    return ok


def reject(session: Session, c: Claim, reason: str, code: str, *, worker: str) -> bool:
    ok = _transition(
        session, c.submission_id, S.REJECTED, actor=f"worker:{worker}", only_from=[STAGE_STATUS[c.stage]],
        claim_token=c.token, values={"error": reason, "error_code": code, "progress_message": reason[:2000]},
        details={"reason": reason, "code": code},
    )
    if ok:
        _finish_run(session, c, StageRunStatus.REJECTED, reason)
    return ok


def _repair_ended(session: Session, sub_id: str, outcome: str, why: str, *, actor: str, claim_token: str | None,
                  details: dict, actor_user_id: int | None = None) -> bool:
    """The repair stage ending without a repaired adapter (``outcome`` "failed": its error, its retries, its worker
    lost or hung; "cancelled": by a person) does not fail or cancel the submission: the verdict was saved before
    it, so the submission is done with that verdict and the report's ``repair`` says why there is no repaired
    adapter (docs/api.md, "The pipeline"). Without this a review would never be reviewable (only a done
    submission is) and ``ftgate submit --wait`` would report an error. The worker's claim is released, so a
    repair still running finds it lost and its result is discarded."""
    ok = _transition(
        session, sub_id, S.DONE, actor=actor, actor_user_id=actor_user_id, only_from=[S.REPAIRING],
        claim_token=claim_token, values={"progress_message": f"repair {outcome}: {why}"[:2000]}, details=details,
    )
    if ok:
        record = session.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sub_id))
        if record is not None and isinstance(record.report, dict):
            mode = (record.report.get("repair") or {}).get("mode")
            # a new object: the JSON column sees the change
            record.report = {**record.report, "repair": {"status": outcome, "mode": mode, "reason": why[:2000]}}
    return ok


def fail(session: Session, c: Claim, reason: str, *, worker: str, code: str = "stage_failed") -> bool:
    if c.stage == Stage.REPAIR:
        ok = _repair_ended(session, c.submission_id, "failed", reason, actor=f"worker:{worker}", claim_token=c.token,
                            details={"reason": reason, "stage": c.stage.value, "attempt": c.attempt, "code": code})
        if ok:
            _finish_run(session, c, StageRunStatus.FAILED, reason)
        return ok
    ok = _transition(
        session, c.submission_id, S.FAILED, actor=f"worker:{worker}", only_from=[STAGE_STATUS[c.stage]],
        claim_token=c.token, values={"error": reason, "error_code": code, "progress_message": reason[:2000]},
        details={"reason": reason, "stage": c.stage.value, "attempt": c.attempt},
    )
    if ok:
        _finish_run(session, c, StageRunStatus.FAILED, reason)
    return ok


def release(session: Session, c: Claim, run_status: StageRunStatus, error: str | None = None) -> bool:
    """Give the claim back without changing status (a retry will claim again)."""
    res = session.execute(
        update(Submission)
        .where(Submission.id == c.submission_id, Submission.claim_token == c.token)
        .values(claim_token=None, claimed_by=None, claimed_at=None, heartbeat_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    _finish_run(session, c, run_status, error)
    return _rows_matched(res) == 1


def abandon(session: Session, c: Claim, why: str) -> None:
    """The claim was taken away while the stage ran: record that its result was discarded."""
    session.execute(
        update(StageRun)
        .where(StageRun.id == c.stage_run_id, StageRun.status == StageRunStatus.RUNNING.value)
        .values(status=StageRunStatus.ABANDONED.value, finished_at=utcnow(), error=why)
        .execution_options(synchronize_session=False)
    )


# ----------------------------------------------------------------------------------------------------------
# the API side
def cancel(session: Session, sub: Submission, principal: Principal) -> bool:
    if S(sub.status) in TERMINAL:
        raise LifecycleError("already_finished", f"submission {sub.id} is already {sub.status}")
    if S(sub.status) == S.REPAIRING:  # the verdict stands: only the repair is cancelled
        ok = _repair_ended(session, sub.id, "cancelled", f"cancelled by {principal.email}", actor=principal.actor,
                           actor_user_id=principal.user_id, claim_token=None, details={"stage": Stage.REPAIR.value})
    else:
        ok = _transition(
            session, sub.id, S.CANCELLED, actor=principal.actor, actor_user_id=principal.user_id,
            values={"progress_message": f"cancelled by {principal.email}", "error_code": "cancelled"},
        )
    if not ok:
        raise LifecycleError("conflict", f"submission {sub.id} changed while cancelling; try again")
    session.execute(
        update(StageRun)
        .where(StageRun.submission_id == sub.id, StageRun.status == StageRunStatus.RUNNING.value)
        .values(status=StageRunStatus.CANCELLED.value, finished_at=utcnow(), error="cancelled")
        .execution_options(synchronize_session=False)
    )
    return ok


def review(session: Session, sub: Submission, principal: Principal, decision: str, reason: str,
           override_reason: str | None = None) -> Review:
    """A reviewer's approve/block, kept beside the automatic verdict; the review state changes, not the
    run state. Only a finished submission (one with an automatic verdict) can be reviewed.

    Four eyes: nobody reviews their own submission. An admin may, with an ``override_reason`` that is
    audited on its own (``four_eyes_override``), e.g. when nobody else can."""
    if not principal.can_review:
        raise LifecycleError("forbidden", "only reviewers and admins can review")
    override_reason = (override_reason or "").strip()
    if sub.user_id == principal.user_id:
        if not principal.is_admin:
            raise LifecycleError("own_submission", "nobody reviews their own submission: another reviewer must")
        if not override_reason:
            raise LifecycleError("own_submission", "this is your own submission: an admin may review it only with "
                                                   "an override_reason, which is audited")
    decision = Decision(decision)
    if decision not in (Decision.APPROVE, Decision.BLOCK):
        raise LifecycleError("invalid_decision", "a review decides approve or block")
    if not reason or not reason.strip():
        raise LifecycleError("reason_required", "a review needs a reason")
    if S(sub.status) != S.DONE:
        raise LifecycleError("not_reviewable", f"submission {sub.id} is {sub.status}; only finished ones are reviewed")
    new_state = ReviewState.APPROVED if decision == Decision.APPROVE else ReviewState.BLOCKED
    old_state = sub.review_state
    row = Review(submission_id=sub.id, reviewer_id=principal.user_id, decision=decision.value, reason=reason.strip())
    session.add(row)
    session.execute(
        update(Submission).where(Submission.id == sub.id).values(review_state=new_state.value, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    audit(
        session, "review", actor=principal.actor, actor_user_id=principal.user_id, submission_id=sub.id,
        details={"decision": decision.value, "reason": reason.strip(), "from_review_state": old_state,
                 "to_review_state": new_state.value, "automatic": sub.decision},
    )
    if sub.user_id == principal.user_id:
        audit(session, "four_eyes_override", actor=principal.actor, actor_user_id=principal.user_id,
              submission_id=sub.id, details={"decision": decision.value, "override_reason": override_reason})
    session.flush()
    return row


def final_decision(sub: Submission) -> str | None:
    """What the gate says now: the latest human review if any, else the automatic verdict."""
    if sub.review_state == ReviewState.APPROVED:
        return Decision.APPROVE.value
    if sub.review_state == ReviewState.BLOCKED:
        return Decision.BLOCK.value
    return sub.decision


# ----------------------------------------------------------------------------------------------------------
# the reaper
@dataclass
class ReapResult:
    requeue: list[tuple[str, Stage]]
    failed: list[str]
    released: list[str]


def reap(
    session: Session, *, lost_worker_seconds: float, stale_job_seconds: float, max_attempts: int,
    now: datetime | None = None, actor: str = "reaper", unqueued_grace_seconds: float = 30.0,
) -> ReapResult:
    """Find jobs nobody is working on and make them move again. Caller commits, then enqueues ``requeue``.

    - a claim whose heartbeat is older than ``lost_worker_seconds`` (the worker died): release it and
      re-run the stage, or fail the submission once the stage used ``max_attempts``;
    - a stage claimed longer than ``stale_job_seconds`` (hung): fail it with that reason;
    - an active, unclaimed submission never enqueued (the enqueue after the commit failed), or enqueued
      longer than ``stale_job_seconds`` ago (the message was lost): enqueue it again (tasks are idempotent).
    """
    now = now or utcnow()
    out = ReapResult([], [], [])
    active = [s.value for s in ACTIVE]
    lost_before = now - timedelta(seconds=lost_worker_seconds)
    stale_before = now - timedelta(seconds=stale_job_seconds)
    claimed = session.scalars(
        select(Submission).where(
            Submission.status.in_(active),
            Submission.claim_token.is_not(None),
            or_(Submission.heartbeat_at < lost_before, Submission.claimed_at < stale_before),
        )
    ).all()
    for sub in claimed:
        status = S(sub.status)
        stage = STATUS_STAGE[status]
        run = session.scalar(select(StageRun).where(StageRun.claim_token == sub.claim_token))
        attempts = session.scalar(
            select(func.count()).select_from(StageRun).where(
                StageRun.submission_id == sub.id, StageRun.stage == stage.value
            )
        ) or 0
        hung = sub.claimed_at is not None and sub.claimed_at < stale_before and not (
            sub.heartbeat_at is not None and sub.heartbeat_at < lost_before
        )
        if hung:
            reason = f"stage {stage.value} ran longer than {int(stale_job_seconds)} s on {sub.claimed_by}; stopped"
        else:
            reason = f"worker {sub.claimed_by} stopped responding during {stage.value} (attempt {attempts})"
        token = sub.claim_token
        if hung or attempts >= max_attempts:
            why = reason if hung else f"{reason}; {stage.value} failed {attempts} times"
            if stage == Stage.REPAIR:
                if _repair_ended(session, sub.id, "failed", why, actor=actor, claim_token=token,
                                  details={"reason": why, "stage": stage.value}):
                    out.failed.append(sub.id)  # the stage failed; the submission is done with its verdict
                    if run is not None:
                        run.status, run.finished_at, run.error = StageRunStatus.LOST.value, now, why
            elif _transition(
                session, sub.id, S.FAILED, actor=actor, claim_token=token,
                values={"error": why, "error_code": "stage_stale" if hung else "worker_lost",
                        "progress_message": why},
                details={"reason": why, "stage": stage.value},
            ):
                out.failed.append(sub.id)
                if run is not None:
                    run.status, run.finished_at, run.error = StageRunStatus.LOST.value, now, why
        else:
            res = session.execute(
                update(Submission)
                .where(Submission.id == sub.id, Submission.claim_token == token)
                .values(claim_token=None, claimed_by=None, claimed_at=None, heartbeat_at=None,
                        progress_message=f"{reason}; retrying", updated_at=now, enqueued_at=None)
                .execution_options(synchronize_session=False)
            )
            if _rows_matched(res) == 1:
                if run is not None:
                    run.status, run.finished_at, run.error = StageRunStatus.LOST.value, now, reason
                audit(session, "requeued", actor=actor, submission_id=sub.id, from_status=status.value,
                      to_status=status.value, details={"reason": reason, "stage": stage.value})
                out.released.append(sub.id)
                out.requeue.append((sub.id, stage))
    session.flush()
    grace = now - timedelta(seconds=unqueued_grace_seconds)
    pending = session.execute(
        select(Submission.id, Submission.status).where(
            Submission.status.in_(active),
            Submission.claim_token.is_(None),
            or_(
                and_(Submission.enqueued_at.is_(None), Submission.updated_at < grace),
                Submission.enqueued_at < stale_before,
            ),
        )
    ).all()
    already = {sid for sid, _ in out.requeue}
    for sid, status_value in pending:
        if sid not in already:
            out.requeue.append((sid, STATUS_STAGE[S(status_value)]))
    return out
