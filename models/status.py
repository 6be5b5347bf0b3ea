"""The submission state machine and the service's vocabularies, defined in ftgate/status.py (standard library
only, so the CI client reads them without SQLAlchemy) and re-exported here for the service's code."""

from ftgate.status import (  # noqa: F401 - re-exported
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
    S,
    Stage,
    StageRunStatus,
    SubmissionStatus,
    can_transition,
    sources_of,
)
