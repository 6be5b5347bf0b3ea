"""/api/v1/submissions: upload, list, read, report, samples, events, cancel, review."""

from __future__ import annotations

import json
import logging
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from api.deps import CurrentPrincipal, DbSession, Reviewer, load_submission
from api.errors import ApiError, invalid
from api.schemas import (
    EventList,
    Report,
    SampleList,
    SampleOut,
    SubmissionCreated,
    SubmissionDetail,
    SubmissionList,
)
from api.uploads import check_type, infer_kind, parse_multipart, upload_slot
from api.views import event_view, submission_detail, submission_summary
from models import Stage, SubmissionStatus
from services import catalog, queries
from services import submissions as lifecycle
from services.auth import Principal
from services.queries import SubmissionFilter
from services.storage import safe_filename

log = logging.getLogger("ftgate.api")
router = APIRouter(prefix="/submissions", tags=["submissions"])

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "adapter: .zip/.tar.gz/.tar of a PEFT directory; dataset: .jsonl/.json/.csv/.parquet"},
                        "kind": {"type": "string", "enum": ["adapter", "dataset"],
                                 "description": "default: from the file name"},
                        "base": {"type": "string", "description": "registered base model (default: the configured one)"},
                        "name": {"type": "string"},
                        "policy": {"type": "string", "description": "gate policy (default: the configured one)"},
                        "training": {"type": "string", "description": "JSON object of fine-tuning overrides (datasets)"},
                        "repair": {"type": "string", "enum": ["off", "offer", "auto"],
                                   "description": "approve with repair after a safety block or review (default: the "
                                                  "policy's setting, which is also the most that may be asked)"},
                    },
                }
            }
        },
    }
}


TrainingValue = str | int | float | bool | None


def parse_training_field(raw: str, kind: str) -> dict[str, TrainingValue]:
    """The `training` form field: a flat JSON object of fine-tuning overrides (their names and ranges are
    checked when the stage runs). Values must be scalars: a nested one is refused here, and a nesting too
    deep for the decoder (100k levels answered 500) is a 422 too."""
    raw = raw.strip()
    if not raw:
        return {}
    try:
        training = json.loads(raw)
    except RecursionError:
        raise invalid("training", "training is nested too deep: it must be a flat JSON object of option: value") from None
    except json.JSONDecodeError as e:
        raise invalid("training", f"training is not valid JSON: {e}") from None
    if not isinstance(training, dict):
        raise invalid("training", "training must be a JSON object of fine-tuning overrides")
    nested = next((k for k, v in training.items() if isinstance(v, dict | list)), None)
    if nested is not None:
        raise invalid("training", f"training option {nested!r} must be a number, a string or a boolean")
    if kind == "adapter" and training:
        raise invalid("training", "training overrides apply to datasets only")
    return training


def parse_repair_field(raw: str, policy: str) -> str | None:
    """The `repair` form field: off, offer or auto, and no more than the policy allows (None: not asked, the
    policy's setting applies). When the policies cannot be read here, the worker checks it."""
    from evaluation.repair import REPAIR_MODES

    value = raw.strip()
    if not value:
        return None
    if value not in REPAIR_MODES:
        raise invalid("repair", f"repair must be one of {', '.join(REPAIR_MODES)}, not {value!r}")
    allows = catalog.policy_repair(policy)
    if allows is not None and REPAIR_MODES.index(value) > REPAIR_MODES.index(allows):
        raise invalid("repair", f"policy {policy!r} allows repair up to {allows!r}; {value!r} was asked",
                      code="repair_not_allowed")
    return value


QUOTA_RETRY_AFTER_SECONDS = 60


def _lifecycle_error(e: lifecycle.LifecycleError) -> ApiError:
    status = {"forbidden": 403, "own_submission": 403, "reason_required": 422, "invalid_decision": 422,
              "quota_exceeded": 429, "storage_quota_exceeded": 507}.get(e.code, 409)
    field = {"reason_required": "reason", "invalid_decision": "decision", "own_submission": "override_reason"}.get(e.code)
    # in flight is a passing state: a client that waits gets in; a full storage quota does not pass by itself
    headers = {"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)} if e.code == "quota_exceeded" else None
    return ApiError(status, e.code, e.message, field=field, headers=headers)


@router.post("", status_code=202, openapi_extra=_UPLOAD_SCHEMA, summary="Upload an adapter or a dataset",
             response_model=SubmissionCreated, responses={200: {"model": SubmissionCreated,
                                                                "description": "already submitted: that submission"}})
async def create_submission(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Streams the file to storage (size limit: 413; wrong type: 415; a stalled or too slow body: 408),
    records the submission and enqueues its inspection. 202 with the new submission, or 200 with the existing
    one when the same artifact was already submitted with the same base, policy and training overrides (no
    re-run). A user's uploads beyond their concurrent or per-minute allowance: 429 with Retry-After, before
    the body is read. No database connection is held while the body arrives (the principal was resolved in
    a session already closed); recording takes one, briefly."""
    state = request.app.state
    with upload_slot(state.upload_limiter, principal):
        return await _receive_and_record(request, principal)


async def _receive_and_record(request: Request, principal: Principal) -> JSONResponse:
    state = request.app.state
    settings = state.settings
    form = await parse_multipart(
        request, state.storage, settings.max_upload_bytes,
        idle_seconds=settings.upload_idle_timeout_seconds, max_seconds=settings.upload_max_seconds,
    )
    upload = form.upload
    try:
        if upload is None:
            raise invalid("file", "the 'file' part is missing")
        if upload.size == 0:
            raise invalid("file", f"{upload.filename} is empty")
        fields = form.fields
        kind = (fields.get("kind") or "").strip() or infer_kind(upload.filename)
        if kind is None:
            raise ApiError(
                415, "unsupported_media_type",
                f"{upload.filename}: cannot tell the kind from the name; send kind=adapter or kind=dataset",
            )
        if kind not in ("adapter", "dataset"):
            raise invalid("kind", f"kind must be 'adapter' or 'dataset', not {kind!r}")
        check_type(kind, upload)
        base = (fields.get("base") or "").strip() or settings.default_base
        policy = (fields.get("policy") or "").strip() or settings.default_policy
        name = (fields.get("name") or "").strip()[:300] or upload.filename
        training = parse_training_field(fields.get("training") or "", kind)
        repair = parse_repair_field(fields.get("repair") or "", policy)
    except BaseException:
        state.storage.discard(upload)
        raise
    if await request.is_disconnected():  # the client gave up while its body was checked: record nothing
        state.storage.discard(upload)
        raise ApiError(400, "client_disconnected", "the client closed the connection")

    def record() -> tuple[dict, bool, str]:
        """Everything that can fail happens before the commit, and the commit is the last step: a request
        that fails leaves no row (before, the response was built after the commit, and a pool timeout there
        answered 500 for a stored submission: a ghost the client would upload again)."""
        placed = None
        try:
            with state.sessionmaker() as db:
                known = catalog.base_names(db)
                if known is not None and base not in known:
                    raise invalid("base", f"unknown base {base!r}; known: {', '.join(sorted(k for k in known if k))}")
                pols = catalog.policy_names()
                if pols is not None and policy not in pols:
                    raise invalid("policy", f"unknown policy {policy!r}; known: {', '.join(sorted(p for p in pols if p))}")
                placed = state.storage.place(upload)
                try:
                    sub, created = lifecycle.create_submission(
                        db, principal, kind=kind, base=base, policy=policy, name=name, training=training, repair=repair,
                        filename=upload.filename, artifact_path=placed.rel, sha256=upload.sha256, size=upload.size,
                        quotas=lifecycle.Quotas(settings.max_in_flight_per_organisation,
                                                settings.max_stored_bytes_per_organisation),
                    )
                except lifecycle.LifecycleError as e:  # over a quota; the placed file is removed below
                    raise _lifecycle_error(e) from None
                body = submission_detail(db, sub)
                db.commit()
                return body, created, sub.id
        except BaseException:
            state.storage.discard(upload)
            if placed is not None and placed.new:
                _remove_unreferenced_artifact(state, placed.rel)
            raise

    detail, created, sub_id = await run_in_threadpool(record)
    if created:  # enqueue only after the commit, and never fail the request for it: the row is stored
        await run_in_threadpool(_enqueue_inspection, state, sub_id)
    # A JSONResponse (for the status and the Location header) skips the route's response_model: check here.
    answer = SubmissionCreated.model_validate({**detail, "duplicate": not created})
    return JSONResponse(answer.model_dump(mode="json", exclude_unset=True), status_code=202 if created else 200,
                        headers={"Location": answer.links.self})


def _enqueue_inspection(state, sub_id: str) -> None:
    """Send the inspect stage and note it. A failure is logged, not raised: the submission is committed and
    answered 202, and the reaper enqueues a submission that was never marked enqueued."""
    try:
        state.send_stage(sub_id, Stage.INSPECT)
        with state.sessionmaker() as db:
            lifecycle.mark_enqueued(db, sub_id)
            db.commit()
    except Exception as e:
        log.error("enqueue of %s failed: %s", sub_id, e)


def _remove_unreferenced_artifact(state, rel: str) -> None:
    """After a failed upload, remove the artifact file it placed unless a stored submission points to it (the
    same content may have been recorded by another request meanwhile). When that cannot be checked the file
    stays: an orphan file is harmless, a submission whose file is gone is not."""
    try:
        with state.sessionmaker() as db:
            if not lifecycle.artifact_in_use(db, rel):
                state.storage.remove_artifact(rel)
    except Exception as e:
        log.warning("kept artifact %s of a failed upload: %s", rel, e)


@router.get("", summary="List submissions (a submitter sees their organisation's)", response_model=SubmissionList)
def list_submissions(
    status: SubmissionStatus | None = None,
    decision: Literal["approve", "block", "review"] | None = None,
    review_state: Literal["pending", "approved", "blocked"] | None = None,
    kind: Literal["adapter", "dataset"] | None = None,
    organisation_id: int | None = Query(None, description="reviewers/admins: one organisation's"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    *,
    principal: CurrentPrincipal,
    db: DbSession,
):
    where = SubmissionFilter(status=status.value if status is not None else None, decision=decision,
                             review_state=review_state, kind=kind, organisation_id=organisation_id)
    found = queries.list_submissions(db, principal, where, limit=limit, offset=offset)
    return {"items": [submission_summary(s) for s in found.items], "total": found.total, "limit": limit,
            "offset": offset}


# response_model_exclude_unset on the routes answering a SubmissionDetail: its `findings` stays absent, not
# null, until the inspection ran (schemas.SubmissionDetail).
@router.get("/{submission_id}", summary="Status, progress, timings, verdict and metrics",
            response_model=SubmissionDetail, response_model_exclude_unset=True)
def get_submission(submission_id: str, principal: CurrentPrincipal, db: DbSession):
    return submission_detail(db, load_submission(db, submission_id, principal))


@router.get("/{submission_id}/report", summary="The JSON report (as `ftgate check --format json` writes it)",
            response_model=Report)
def get_report(submission_id: str, principal: CurrentPrincipal, db: DbSession) -> JSONResponse:
    """The report exactly as stored (a JSONResponse, so it is not re-serialised through ``Report``)."""
    sub = load_submission(db, submission_id, principal)
    verdict = queries.verdict_of(db, sub.id)
    if verdict is None:
        raise ApiError(409, "not_ready", f"submission {sub.id} is {sub.status}; the report exists once it is done")
    return JSONResponse(verdict.report)


@router.get("/{submission_id}/repair/adapter", summary="The repaired adapter (a zip of the PEFT folder)",
            response_class=FileResponse, responses={200: {"content": {"application/zip": {}}}})
def get_repaired_adapter(submission_id: str, request: Request, principal: CurrentPrincipal, db: DbSession):
    """Streamed from storage, under a name made from the submission's (safe characters only). 409 while there
    is no repaired adapter (none was due, it is still being made, or it failed: the detail's `repair` says
    which); 410 once retention deleted the submission's files."""
    sub = load_submission(db, submission_id, principal)
    verdict = queries.verdict_of(db, sub.id)
    repair = verdict.report.get("repair") if verdict is not None and isinstance(verdict.report, dict) else None
    if not isinstance(repair, dict) or repair.get("status") != "done":
        status = repair.get("status") if isinstance(repair, dict) else "none"
        raise ApiError(409, "no_repaired_adapter", f"submission {sub.id} has no repaired adapter (repair: {status})")
    storage = request.app.state.storage
    try:
        path = storage.path(str(repair.get("adapter_path") or ""))
    except ValueError:  # a stored path outside the storage root is never served
        path = None
    if sub.artifact_deleted_at is not None or path is None or not path.is_file():
        raise ApiError(410, "gone", f"the repaired adapter of submission {sub.id} is no longer stored")
    stem = safe_filename(sub.name, "submission").rsplit(".", 1)[0] or "submission"
    return FileResponse(path, media_type="application/zip", filename=f"{stem}-repaired-adapter.zip")


@router.get("/{submission_id}/samples", summary="Per-prompt completions and judge labels (reviewers only)",
            response_model=SampleList)
def get_samples(
    submission_id: str,
    suite: str | None = None,
    changed: bool = Query(False, description="only prompts whose label changed from base to candidate"),
    limit: int = Query(200, ge=1, le=2000),
    offset: int = Query(0, ge=0),
    *,
    principal: Reviewer,
    db: DbSession,
) -> SampleList:
    sub = load_submission(db, submission_id, principal)
    found = queries.list_samples(db, sub.id, suite=suite, changed=changed, limit=limit, offset=offset)
    return SampleList(items=[SampleOut.model_validate(r) for r in found.items], total=found.total, limit=limit,
                      offset=offset)


@router.get("/{submission_id}/events", summary="The audit trail of a submission", response_model=EventList)
def get_events(submission_id: str, principal: CurrentPrincipal, db: DbSession):
    sub = load_submission(db, submission_id, principal)
    return {"items": [event_view(e) for e in queries.events_of(db, sub.id)]}


@router.post("/{submission_id}/cancel", summary="Cancel a submission that has not finished",
             response_model=SubmissionDetail, response_model_exclude_unset=True)
def cancel_submission(submission_id: str, principal: CurrentPrincipal, db: DbSession):
    sub = load_submission(db, submission_id, principal)
    try:
        lifecycle.cancel(db, sub, principal)
    except lifecycle.LifecycleError as e:
        raise _lifecycle_error(e) from None
    db.commit()
    db.refresh(sub)
    return submission_detail(db, sub)


class ReviewIn(BaseModel):
    decision: Literal["approve", "block"]
    reason: str = Field(min_length=1, max_length=10_000, description="why (required; recorded in the audit trail)")
    override_reason: str | None = Field(
        None, max_length=10_000,
        description="admins only, to review their own submission (four eyes): why nobody else can (audited)",
    )


@router.post("/{submission_id}/review", summary="A reviewer's approve/block with a reason",
             response_model=SubmissionDetail, response_model_exclude_unset=True)
def review_submission(submission_id: str, body: ReviewIn, principal: Reviewer, db: DbSession):
    sub = load_submission(db, submission_id, principal)
    try:
        lifecycle.review(db, sub, principal, body.decision, body.reason, body.override_reason)
    except lifecycle.LifecycleError as e:
        raise _lifecycle_error(e) from None
    db.commit()
    db.refresh(sub)
    return submission_detail(db, sub)
