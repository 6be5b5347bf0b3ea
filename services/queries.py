"""The questions the web pages and the JSON API ask the database: one function a question, each with a typed
answer (rows, counts or small named tuples). Reads only: every change goes through the lifecycle
(services/submissions.py) or services/auth.py. A page and its JSON route call the same function, so they
cannot disagree about what "visible", "waiting for review" or "failed recently" means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from models import (
    TERMINAL,
    ApiToken,
    AuditEvent,
    Decision,
    ReviewState,
    Sample,
    StageRun,
    StageRunStatus,
    Submission,
    SubmissionStatus,
    User,
    VerdictRecord,
)
from services.auth import Principal

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """Some rows of a listing, and how many rows the listing has in all."""

    items: list[T]
    total: int


def _page(db: Session, stmt: Select, *order_by, limit: int, offset: int = 0) -> Page:
    total = db.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return Page(list(db.scalars(stmt.order_by(*order_by).limit(limit).offset(offset))), total)


_FINISHED = [s.value for s in TERMINAL]


# ----------------------------------------------------------------------------------------------------------
# submissions
def visible_submissions(principal: Principal) -> Select:
    """A SELECT of the submissions this caller may see: staff see all, submitters their organisation's."""
    stmt = select(Submission)
    if not principal.is_staff:
        stmt = stmt.where(Submission.organisation_id == principal.organisation_id)
    return stmt


@dataclass(frozen=True)
class SubmissionFilter:
    """Which submissions to list; None (or empty) leaves a field unfiltered."""

    status: str | None = None
    decision: str | None = None  # the automatic verdict
    final_decision: str | None = None  # what the gate says now: the review if there is one, else the automatic verdict
    review_state: str | None = None
    kind: str | None = None
    organisation_id: int | None = None
    user_id: int | None = None
    search: str | None = None  # in the name or the file name, or the start of the id or of the sha256


def _not_reviewed() -> ColumnElement[bool]:
    return or_(Submission.review_state.is_(None), Submission.review_state == ReviewState.PENDING.value)


def _final_decision_is(decision: str) -> ColumnElement[bool]:
    """The SQL of services.submissions.final_decision(sub) == decision."""
    if decision == Decision.REVIEW:
        return and_(Submission.decision == Decision.REVIEW.value, _not_reviewed())
    reviewed = {Decision.APPROVE: ReviewState.APPROVED, Decision.BLOCK: ReviewState.BLOCKED}[Decision(decision)]
    return or_(Submission.review_state == reviewed.value, and_(Submission.decision == decision, _not_reviewed()))


def list_submissions(db: Session, principal: Principal, where: SubmissionFilter, *, limit: int,
                     offset: int = 0) -> Page[Submission]:
    """The submissions ``principal`` may see that match ``where``, newest first."""
    stmt = visible_submissions(principal)
    for column, value in ((Submission.status, where.status), (Submission.decision, where.decision),
                          (Submission.review_state, where.review_state), (Submission.kind, where.kind),
                          (Submission.organisation_id, where.organisation_id), (Submission.user_id, where.user_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if where.final_decision is not None:
        stmt = stmt.where(_final_decision_is(where.final_decision))
    if where.search:
        q = where.search.lower()
        stmt = stmt.where(or_(func.lower(Submission.name).like(f"%{q}%"), func.lower(Submission.filename).like(f"%{q}%"),
                              Submission.id.like(f"{q}%"), Submission.artifact_sha256.like(f"{q}%")))
    return _page(db, stmt, Submission.created_at.desc(), Submission.id, limit=limit, offset=offset)


def verdict_of(db: Session, submission_id: str) -> VerdictRecord | None:
    """The stored verdict (and report) of a submission; None until it is decided."""
    return db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == submission_id))


def events_of(db: Session, submission_id: str) -> list[AuditEvent]:
    """A submission's audit trail, oldest first."""
    return list(db.scalars(select(AuditEvent).where(AuditEvent.submission_id == submission_id).order_by(AuditEvent.id)))


def list_samples(db: Session, submission_id: str, *, suite: str | None = None, changed: bool = False,
                 candidate_label: str | None = None, limit: int, offset: int = 0) -> Page[Sample]:
    """A submission's per-prompt completions: of one suite, only those whose label changed from base to
    candidate, only those the candidate's judge labelled ``candidate_label``; in stored order."""
    stmt = select(Sample).where(Sample.submission_id == submission_id)
    if suite:
        stmt = stmt.where(Sample.suite == suite)
    if changed:
        stmt = stmt.where(Sample.base_label != Sample.candidate_label)
    if candidate_label is not None:
        stmt = stmt.where(Sample.candidate_label == candidate_label)
    return _page(db, stmt, Sample.id, limit=limit, offset=offset)


# ----------------------------------------------------------------------------------------------------------
# the review queue
def awaiting_review(db: Session, limit: int = 500) -> list[tuple[Submission, VerdictRecord]]:
    """Finished submissions whose verdict is review and that nobody reviewed yet, longest waiting first."""
    stmt = (select(Submission, VerdictRecord).join(VerdictRecord, VerdictRecord.submission_id == Submission.id)
            .where(Submission.status == SubmissionStatus.DONE.value, Submission.decision == Decision.REVIEW.value,
                   _not_reviewed())
            .order_by(Submission.finished_at.asc()).limit(limit))
    return [(sub, verdict) for sub, verdict in db.execute(stmt).all()]


def recently_decided(db: Session, limit: int = 100) -> list[tuple[Submission, VerdictRecord | None]]:
    """Submissions with a final decision (approved or blocked automatically or by a review, or rejected at
    intake: those have no verdict row), most recently changed first."""
    stmt = (select(Submission, VerdictRecord).outerjoin(VerdictRecord, VerdictRecord.submission_id == Submission.id)
            .where(Submission.status.in_([SubmissionStatus.DONE.value, SubmissionStatus.REJECTED.value]),
                   or_(Submission.decision.is_(None), Submission.decision != Decision.REVIEW.value,
                       Submission.review_state.in_([ReviewState.APPROVED.value, ReviewState.BLOCKED.value])))
            .order_by(Submission.updated_at.desc()).limit(limit))
    return [(sub, verdict) for sub, verdict in db.execute(stmt).all()]


def count_unfinished(db: Session) -> int:
    """Submissions not yet done, rejected, failed or cancelled."""
    return db.scalar(select(func.count()).select_from(Submission).where(Submission.status.not_in(_FINISHED))) or 0


def count_unclaimed(db: Session) -> int:
    """Unfinished submissions no worker holds: queued, or between two stages."""
    return db.scalar(select(func.count()).select_from(Submission).where(
        Submission.status.not_in(_FINISHED), Submission.claim_token.is_(None))) or 0


def recent_failures(db: Session, limit: int = 10) -> list[Submission]:
    """Failed and rejected submissions, most recently changed first."""
    return list(db.scalars(select(Submission).where(
        Submission.status.in_([SubmissionStatus.FAILED.value, SubmissionStatus.REJECTED.value]))
        .order_by(Submission.updated_at.desc()).limit(limit)))


def submission_counts_by_status(db: Session) -> dict[str, int]:
    """How many submissions are in each status (a status with none is absent)."""
    return {status: n for status, n in db.execute(
        select(Submission.status, func.count()).group_by(Submission.status)).all()}


def submission_counts_by_user(db: Session) -> dict[int | None, int]:
    """How many submissions each user made (None: of deleted users)."""
    return {user_id: n for user_id, n in db.execute(
        select(Submission.user_id, func.count()).group_by(Submission.user_id)).all()}


# ----------------------------------------------------------------------------------------------------------
# users and tokens
UserOrder = Literal["id", "email", "role"]
_USER_ORDER = {"id": (User.id,), "email": (User.email,), "role": (User.role, User.email)}


def list_users(db: Session, order: UserOrder = "id") -> list[User]:
    """Every user, by id, by email, or by role and then email."""
    return list(db.scalars(select(User).order_by(*_USER_ORDER[order])))


def emails_of(db: Session, user_ids: Iterable[int]) -> dict[int, str]:
    """The email of each of these users that exists."""
    ids = set(user_ids)
    if not ids:
        return {}
    return {u.id: u.email for u in db.scalars(select(User).where(User.id.in_(ids)))}


def list_tokens(db: Session, newest_first: bool = False) -> list[ApiToken]:
    """Every API token (revoked and expired too)."""
    return list(db.scalars(select(ApiToken).order_by(ApiToken.id.desc() if newest_first else ApiToken.id)))


# ----------------------------------------------------------------------------------------------------------
# workers and stages
def running_stages(db: Session) -> list[tuple[StageRun, Submission]]:
    """The stage runs a worker is on now, with their submission, longest running first."""
    stmt = (select(StageRun, Submission).join(Submission, Submission.id == StageRun.submission_id)
            .where(StageRun.status == StageRunStatus.RUNNING.value).order_by(StageRun.started_at))
    return [(run, sub) for run, sub in db.execute(stmt).all()]


class WorkerSeen(NamedTuple):
    worker: str
    last_seen: datetime | None  # its last heartbeat, or the start of its last run
    runs: int


def workers_seen(db: Session, limit: int = 20) -> list[WorkerSeen]:
    """The workers that ran stages, the one that started a run most recently first."""
    stmt = (select(StageRun.worker, func.max(func.coalesce(StageRun.heartbeat_at, StageRun.started_at)), func.count())
            .group_by(StageRun.worker).order_by(func.max(StageRun.started_at).desc()).limit(limit))
    return [WorkerSeen(worker, last, n) for worker, last, n in db.execute(stmt).all()]


class StageDuration(NamedTuple):
    stage: str
    seconds: float


def stage_durations(db: Session, limit: int | None = None) -> list[StageDuration]:
    """How long succeeded stage runs took, the latest first (all of them without ``limit``)."""
    stmt = (select(StageRun.stage, StageRun.started_at, StageRun.finished_at)
            .where(StageRun.status == StageRunStatus.SUCCEEDED.value, StageRun.finished_at.is_not(None))
            .order_by(StageRun.id.desc()).limit(limit))
    return [StageDuration(stage, (finished - started).total_seconds()) for stage, started, finished in db.execute(stmt)
            if started is not None and finished is not None]  # a run that never started has no duration
