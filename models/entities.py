"""The ORM tables of the service. Enumerated columns are strings with CHECK constraints (portable)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ftgate.status import Decision, Kind, ReviewState, Role, Stage, StageRunStatus, SubmissionStatus
from models.base import Base, JSONType, UTCDateTime, utcnow


def _in(column: str, enum) -> str:
    return f"{column} IN ({', '.join(repr(e.value) for e in enum)})"


def new_id() -> str:
    return uuid.uuid4().hex


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    users: Mapped[list[User]] = relationship(back_populates="organisation")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", Role), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16), default=Role.SUBMITTER.value)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Copied into the session cookie at sign-in; a cookie with an older number is refused. Bumped by
    # sign-out, password change, deactivation and role change, so a copied cookie dies with them.
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    organisation: Mapped[Organisation] = relationship(back_populates="users")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", foreign_keys="ApiToken.user_id")


class ApiToken(Base):
    """An API token: only its sha256 is stored; the token is shown once. ``prefix`` identifies it in lists."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens", foreign_keys=[user_id])


class BaseModelRecord(Base):
    """A base model registered by an operator (beside the ones the evaluation registry knows)."""

    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(Text)  # local path or model id
    description: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class PolicyRecord(Base):
    """A snapshot of a gate policy (name + content hash) as used by verdicts."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("name", "content_hash", name="uq_policies_name_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        CheckConstraint(_in("status", SubmissionStatus), name="status"),
        CheckConstraint(_in("kind", Kind), name="kind"),
        CheckConstraint(_in("decision", Decision), name="decision"),
        CheckConstraint(_in("review_state", ReviewState), name="review_state"),
        Index("ix_submissions_org_created", "organisation_id", "created_at"),
        Index("ix_submissions_status", "status"),
        Index("ix_submissions_sha256", "artifact_sha256"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))
    base_name: Mapped[str] = mapped_column(String(200))
    policy_name: Mapped[str] = mapped_column(String(200))
    training: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # off | offer | auto, as the submitter asked (None: the policy's setting); see evaluation/repair.py
    repair: Mapped[str | None] = mapped_column(String(8))

    filename: Mapped[str] = mapped_column(String(300))
    artifact_path: Mapped[str] = mapped_column(Text)  # relative to the storage root
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    # Same artifact + base + policy + training in one organisation = one run. NULL once it failed or
    # was cancelled, so the same upload may run again.
    dedup_key: Mapped[str | None] = mapped_column(String(64), unique=True)

    status: Mapped[str] = mapped_column(String(16), default=SubmissionStatus.QUEUED.value)
    stage_done: Mapped[int] = mapped_column(Integer, default=0)
    stage_total: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0-100 overall
    progress_message: Mapped[str] = mapped_column(Text, default="")

    # The claim (lease) of the stage now running: set by a conditional UPDATE, cleared on completion.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_by: Mapped[str | None] = mapped_column(String(300))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    inspection: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    adapter_path: Mapped[str | None] = mapped_column(Text)  # fine-tuned or unpacked adapter (storage-relative)
    # set when retention deleted the artifact, the adapter and the work files (services/retention.py)
    artifact_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    decision: Mapped[str | None] = mapped_column(String(16))  # the automatic verdict
    review_state: Mapped[str | None] = mapped_column(String(16))  # human review, separate
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    organisation: Mapped[Organisation] = relationship()
    user: Mapped[User | None] = relationship()
    stage_runs: Mapped[list[StageRun]] = relationship(
        back_populates="submission", order_by="StageRun.id", cascade="all, delete-orphan"
    )
    verdict: Mapped[VerdictRecord | None] = relationship(back_populates="submission", uselist=False)
    reviews: Mapped[list[Review]] = relationship(back_populates="submission", order_by="Review.id")


class StageRun(Base):
    """One attempt of one stage on one worker."""

    __tablename__ = "stage_runs"
    __table_args__ = (
        UniqueConstraint("submission_id", "stage", "attempt", name="uq_stage_runs_attempt"),
        CheckConstraint(_in("stage", Stage), name="stage"),
        CheckConstraint(_in("status", StageRunStatus), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    claim_token: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=StageRunStatus.RUNNING.value)
    worker: Mapped[str] = mapped_column(String(300), default="")
    task_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    submission: Mapped[Submission] = relationship(back_populates="stage_runs")

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class EvaluationRun(Base):
    """The measured evaluation of a candidate against its base (what `evaluate_submission` returned)."""

    __tablename__ = "evaluation_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), unique=True)
    model_fingerprint: Mapped[str | None] = mapped_column(String(128))
    base_fingerprint: Mapped[str | None] = mapped_column(String(128))
    suite_hashes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    judge: Mapped[str | None] = mapped_column(String(200))
    decoding: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)  # Evaluation.to_dict()
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sample(Base):
    """One prompt's base and candidate completions with their judge labels."""

    __tablename__ = "samples"
    __table_args__ = (Index("ix_samples_submission_suite", "submission_id", "suite"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"))
    suite: Mapped[str] = mapped_column(String(200))
    item_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(200))
    base_response: Mapped[str | None] = mapped_column(Text)
    candidate_response: Mapped[str | None] = mapped_column(Text)
    base_label: Mapped[str | None] = mapped_column(String(32))
    candidate_label: Mapped[str | None] = mapped_column(String(32))


class VerdictRecord(Base):
    """The automatic verdict (one per submission: the unique key makes a duplicate impossible)."""

    __tablename__ = "verdicts"
    __table_args__ = (CheckConstraint(_in("decision", Decision), name="decision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), unique=True)
    decision: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    policy_name: Mapped[str] = mapped_column(String(200))
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id"))
    report: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the JSON of `ftgate check --format json`
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    submission: Mapped[Submission] = relationship(back_populates="verdict")


class Review(Base):
    """A human decision on a submission; the automatic verdict is kept beside it."""

    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint("decision IN ('approve', 'block')", name="decision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    submission: Mapped[Submission] = relationship(back_populates="reviews")
    reviewer: Mapped[User] = relationship()


class AuditEvent(Base):
    """Append-only: every status change, review and administrative action. Never updated or deleted."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_submission", "submission_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(300), default="")  # "user:3", "worker:cpu@host", "reaper", "system"
    submission_id: Mapped[str | None] = mapped_column(ForeignKey("submissions.id"))
    action: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class LoginThrottle(Base):
    """Failed sign-ins counted per key ("account:<email>" or "address:<ip>"), shared by every API process."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
