"""SQLAlchemy 2.0 ORM models of the ftgate service: the tables (entities.py), the base class and UTC times
(base.py), and the statuses, re-exported from ftgate/status.py.

Imports SQLAlchemy and ftgate.status (standard library only); no other layer of the project. Start with
entities.py: ``Submission`` and what hangs off it. Migrations of these tables: migrations/.
"""

from sqlalchemy import event
from sqlalchemy.orm import Session

from ftgate.status import (
    ACTIVE,
    CLAIMABLE_FROM,
    STAGE_QUEUE,
    STAGE_STATUS,
    STATUS_STAGE,
    TERMINAL,
    TRANSITIONS,
    Decision,
    Kind,
    ReviewState,
    Role,
    Stage,
    StageRunStatus,
    SubmissionStatus,
    can_transition,
    sources_of,
)
from models.base import Base, utcnow
from models.entities import (
    ApiToken,
    AuditEvent,
    BaseModelRecord,
    EvaluationRun,
    LoginThrottle,
    Organisation,
    PolicyRecord,
    Review,
    Sample,
    StageRun,
    Submission,
    User,
    VerdictRecord,
    new_id,
)

__all__ = [
    "ACTIVE", "CLAIMABLE_FROM", "STAGE_QUEUE", "STAGE_STATUS", "STATUS_STAGE", "TERMINAL", "TRANSITIONS",
    "ApiToken", "AuditEvent", "Base", "BaseModelRecord", "Decision", "EvaluationRun", "Kind", "LoginThrottle", "Organisation",
    "PolicyRecord", "Review", "ReviewState", "Role", "Sample", "Stage", "StageRun", "StageRunStatus", "Submission",
    "SubmissionStatus", "User", "VerdictRecord", "can_transition", "new_id", "sources_of", "utcnow",
]


@event.listens_for(Session, "before_flush")
def _audit_is_append_only(session, flush_context, instances):
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEvent):
            raise ValueError("audit_events is append-only: an event cannot be changed or deleted")
