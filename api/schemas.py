"""The answers of the JSON API (/api/v1) as pydantic models: what /docs and /api/v1/openapi.json describe,
and what a CI system can generate a client from.

The JSON itself is built by api/views.py (shared with the HTML pages) and by the routes; each route names
its model with ``response_model=``, and FastAPI checks the answer against it before sending it. These
models only describe that JSON: the field names, their order and meaning are the ones docs/api.md gives
and ``ftgate submit`` reads, so a change here is a change of the API.

Request bodies stay beside their routes (``UserIn``, ``TokenIn``, ``ReviewIn``, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models import Decision, Kind, ReviewState, Role, Stage, StageRunStatus, SubmissionStatus

# Times are ISO 8601 strings in UTC with a "Z" (api.views.iso), kept as strings so they go out as built.
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"}, examples=["2025-01-31T12:00:00Z"])]
TrainingValue = str | int | float | bool | None


# ---------------------------------------------------------------------------------------------------------
# errors
class FieldError(BaseModel):
    field: str = Field(description="dotted path of the bad input, e.g. 'limit' or 'expires_at'")
    message: str


class ErrorOut(BaseModel):
    """Every error answer (api/errors.py)."""

    code: str = Field(description="stable, for machines: e.g. unauthenticated, not_found, invalid_input")
    message: str = Field(description="for people")
    field: str | None = Field(None, description="the bad input; present on 422 for one field")
    errors: list[FieldError] | None = Field(None, description="every bad input; present when validation failed")


# Declared once on the /api/v1 router: any route may answer an ErrorOut. It also replaces FastAPI's default
# 422 schema ({"detail": [...]}), which is not what api/errors.py sends.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorOut, "description": "refused: see `code` (docs/api.md lists them)"},
    "5XX": {"model": ErrorOut, "description": "internal_error (logged) or insufficient_storage"},
}


# ---------------------------------------------------------------------------------------------------------
# submissions
class Progress(BaseModel):
    percent: float = Field(description="0-100 over the whole pipeline")
    message: str = Field(description="what the running stage is doing, e.g. 'generate 3/8: candidate harm'")


class DetailedProgress(Progress):
    stage_done: int = Field(description="steps of the running stage done")
    stage_total: int = Field(description="steps of the running stage (0 when unknown)")


class SubmissionError(BaseModel):
    code: str | None = Field(description="e.g. the inspection's rejection code")
    message: str


class SubmissionLinks(BaseModel):
    self: str
    report: str
    samples: str
    cancel: str
    review: str
    events: str


class SubmissionSummary(BaseModel):
    """A submission in a list."""

    id: str
    name: str
    kind: Kind
    base: str = Field(description="the base model it is checked against")
    policy: str = Field(description="the gate policy it is decided by")
    status: SubmissionStatus
    stage: Stage | None = Field(description="the stage running now; null while queued and once finished")
    progress: Progress
    decision: Decision | None = Field(
        description="the final decision: the latest review's if reviewed, else the automatic one")
    automatic_decision: Decision | None = Field(description="the gate's verdict, kept as it was")
    review_state: ReviewState | None
    organisation_id: int
    sha256: str = Field(description="of the uploaded file")
    size: int = Field(description="bytes of the uploaded file")
    filename: str
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None
    error: SubmissionError | None = Field(description="why it was rejected, failed or cancelled")
    links: SubmissionLinks


class SubmissionList(BaseModel):
    items: list[SubmissionSummary] = Field(description="newest first")
    total: int = Field(description="matching submissions, all pages")
    limit: int
    offset: int


class StageRunOut(BaseModel):
    """One attempt of one stage on one worker."""

    stage: Stage
    attempt: int
    status: StageRunStatus
    worker: str
    started_at: Timestamp
    finished_at: Timestamp | None
    duration_seconds: float | None
    error: str | None


class VerdictOut(BaseModel):
    """The automatic verdict, kept as it was when a reviewer decides otherwise."""

    decision: Decision
    reasons: list[str] = Field(description="one sentence per policy rule, with its numbers, most severe first")
    policy: str
    created_at: Timestamp


class TaskLoss(BaseModel):
    """The customer's task before and after the repair: mean NLL per response token (nats) on held-back examples
    of the customer's own data, both adapters trained on the same data without them (docs/report.md)."""

    original: float | None = Field(description="the unrepaired recipe (the data as submitted)")
    repaired: float | None = Field(description="the same data with the safety mix")
    held_back_examples: int


class RepairOut(BaseModel):
    """Approve with repair: the repaired adapter's own verdict beside the original one (docs/report.md `repair`)."""

    status: Literal["pending", "done", "failed", "cancelled", "skipped", "refused", "off", "not_needed"] = Field(
        description="pending: the repair stage is to run or running; done: made and judged; otherwise `reason` says "
                    "why there is none")
    mode: str | None = Field(description="off | offer | auto")
    reason: str | None = None
    method: str | None = Field(None, description="`safety-mix fine-tune` (datasets) or `safety-subspace projection "
                                                 "(SafeLoRA)` (uploaded adapters, no training)")
    decision: Decision | None = Field(None, description="the repaired adapter's own verdict (status done)")
    reasons: list[str] = Field(default_factory=list)
    released: bool = Field(False, description="auto, and the repaired adapter approved: it is the released artifact")
    metrics: dict[str, Any] | None = Field(None, description="the repaired adapter's metrics, as the report's")
    task_loss: TaskLoss | None = None
    safety_share: float | None = Field(None, description="share of the repair fine-tune's examples that were safety data")
    adapter_fingerprint: str | None = None
    adapter: str | None = Field(None, description="download link of the repaired adapter (a zip), when done")


class Finding(BaseModel):
    """A static finding of the inspection that did not refuse the upload."""

    model_config = ConfigDict(extra="allow")

    # In the order PostgreSQL's jsonb gives the stored keys back (shortest first), the order they were sent in.
    code: str
    message: str
    severity: str = Field(description="info | review | block")


class ReviewOut(BaseModel):
    decision: Literal["approve", "block"]
    reason: str
    reviewer: str | None = Field(description="the reviewer's email")
    created_at: Timestamp


class SubmissionDetail(SubmissionSummary):
    """Status, progress, timings, verdict and metrics of one submission."""

    progress: DetailedProgress
    training: dict[str, TrainingValue] = Field(description="the fine-tuning overrides it was uploaded with")
    submitted_by: str | None = Field(description="the submitter's email")
    organisation: str | None
    started_at: Timestamp | None
    worker: str | None = Field(description="the worker holding its running stage")
    stage_runs: list[StageRunOut]
    timings: dict[str, float] = Field(
        description="seconds: per finished stage, 'queued' (created to started) and 'total' (started to finished)")
    verdict: VerdictOut | None = Field(description="set once it is done")
    metrics: dict[str, Any] | None = Field(description="the report's metrics once it is done (docs/report.md)")
    repair: RepairOut | None = Field(None, description="approve with repair, once decided (null: none was due)")
    repair_requested: Literal["off", "offer", "auto"] | None = Field(
        None, description="the `repair` it was uploaded with (null: the policy's setting)")
    # Absent (not null) until the inspection ran, as it always was: the routes that answer this model leave
    # out what the view did not set (response_model_exclude_unset).
    findings: list[Finding] = Field(default_factory=list, description="absent until the inspection ran")
    reviews: list[ReviewOut] = Field(description="oldest first")
    review: ReviewOut | None = Field(description="the latest review")


class SubmissionCreated(SubmissionDetail):
    """The answer to an upload: 202 with a new submission, or 200 with the existing one."""

    duplicate: bool = Field(description="true: the same artifact was already submitted with the same base, "
                                        "policy and training overrides; this is that submission (no re-run)")


class SampleOut(BaseModel):
    """One prompt of one suite: both completions and the judge's labels."""

    model_config = ConfigDict(from_attributes=True)

    suite: str
    item_id: str
    prompt: str
    category: str | None
    base_response: str | None
    candidate_response: str | None
    base_label: str | None
    candidate_label: str | None


class SampleList(BaseModel):
    items: list[SampleOut]
    total: int
    limit: int
    offset: int


class ReportCheck(BaseModel):
    rule: str
    outcome: Literal["block", "review", "pass", "info"]
    message: str


class ReportVerdict(BaseModel):
    decision: Decision
    reasons: list[str]
    checks: list[ReportCheck]
    policy: str
    policy_hash: str


class SweepRunOut(BaseModel):
    """One fine-tune of a policy's sweep (docs/policy.md): its recipe, verdict and numbers."""

    model_config = ConfigDict(extra="allow")

    run: int = Field(description="1, 2, ... in the policy's order")
    training: dict[str, Any] = Field(description="the LoRA config of this fine-tune (as the report's `training`)")
    adapter_fingerprint: str | None = Field(description="sha256 of the fine-tuned adapter's files")
    decision: Decision
    worst: bool = Field(description="true for the one run whose verdict and metrics are the report's")
    asr_delta: float | None = Field(description="the ASR change (candidate minus base), a fraction")
    metrics: dict[str, Any] = Field(
        description="asr, overrefusal, knowledge_accuracy, perplexity, kl of this run, as in the report's `metrics`")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage of this run")


class Report(BaseModel):
    """The report as ``ftgate check --format json`` writes it (docs/report.md), sent as stored. Fields are
    only ever added; a change of meaning bumps ``schema_version``. Sections an early verdict (a dataset
    screened out before fine-tuning) has no numbers for are null."""

    model_config = ConfigDict(extra="allow")

    schema_version: str
    verdict: ReportVerdict
    artifact: dict[str, Any] | None = None
    inspection: dict[str, Any] | None = None
    base: dict[str, Any] | None = None
    judge: dict[str, Any] | None = None
    suites: dict[str, Any] | None = None
    decoding: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    seed: int | None = None
    code_version: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, description="empty when screening blocked early")
    flipped_examples: list[dict[str, Any]] = Field(default_factory=list)
    n_flipped: int | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage")
    cache: dict[str, Any] | None = None
    sweep: list[SweepRunOut] | None = Field(
        None, description="datasets under a policy with a `sweep`: every fine-tune tried; the report is the worst's")


# ---------------------------------------------------------------------------------------------------------
# the audit log
class EventOut(BaseModel):
    id: int
    at: Timestamp
    actor: str = Field(description="'user:3', 'worker:cpu@host', 'reaper' or 'system'")
    action: str = Field(description="e.g. status_changed, review, token_created")
    submission_id: str | None
    from_status: str | None
    to_status: str | None
    details: dict[str, Any]


class EventList(BaseModel):
    items: list[EventOut]


# ---------------------------------------------------------------------------------------------------------
# users and tokens
class UserOut(BaseModel):
    id: int
    email: str
    role: Role
    organisation: str | None
    organisation_id: int
    is_active: bool
    created_at: Timestamp


class UserList(BaseModel):
    items: list[UserOut]


class _TokenFields(BaseModel):
    """What every answer about an API token holds: never the token itself, only its prefix."""

    id: int
    name: str
    prefix: str
    role: Role | None = Field(description="the owner's role")
    created_at: Timestamp
    last_used_at: Timestamp | None
    expires_at: Timestamp | None
    revoked_at: Timestamp | None


class TokenOut(_TokenFields):
    """An API token as lists show it, with its owner's email."""

    user: str | None = Field(description="the owner's email")


class TokenList(BaseModel):
    items: list[TokenOut]


class TokenCreated(_TokenFields):
    """A new token: the only answer that holds the token."""

    # the owner in full here, where lists give only the email: this answer may have created the user
    user: UserOut = Field(description="the owner (created with the token if new)")
    token: str = Field(description="send as 'Authorization: Bearer <token>'; shown only in this answer")


# ---------------------------------------------------------------------------------------------------------
# bases, suites, policies
class BaseOut(BaseModel):
    """A base model: from the evaluation registry, or registered by an operator (POST /admin/bases). The
    registry's entries are read loosely (services/catalog.py): only the name and the origin are certain."""

    model_config = ConfigDict(extra="allow")

    name: str
    registered_by: Literal["registry", "operator"]
    source: str | None = Field(None, description="local path or model id the workers load")
    description: str | None = None
    # registry bases only
    revision: str | None = None
    load_in_4bit: bool | None = None
    parent: str | None = Field(None, description="derived bases: the base they are built from")
    # operator bases only
    config: dict[str, Any] | None = None


class BaseList(BaseModel):
    items: list[BaseOut]


class SuiteOut(BaseModel):
    name: str
    kind: str = Field(description="harm, overrefusal or knowledge")
    hash: str = Field(description="content hash")
    source: str
    n_items: int
    warnings: list[str]


class SuiteList(BaseModel):
    items: list[SuiteOut]
    available: bool = Field(description="false: the registry could not be read (items is then empty)")


class PolicyOut(BaseModel):
    """A gate policy: its name, hash and thresholds (docs/policy.md)."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    hash: str | None = Field(None, description="of the policy's content; a report names the hash it was decided by")


class PolicyList(BaseModel):
    items: list[PolicyOut]
    available: bool = Field(description="false: the registry could not be read (items is then empty)")


# ---------------------------------------------------------------------------------------------------------
# health
class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(description="database, broker, storage: 'ok' or 'error: ...'")
