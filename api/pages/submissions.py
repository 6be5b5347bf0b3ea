"""The submitter's pages: the upload form and its XHR, my submissions (filter and search), a submission's
page (status, verdict, charts, drift) with its report download, and cancelling."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api import submissions as submissions_api
from api.deps import DbSession, load_submission, session_principal
from api.errors import ApiError
from api.pages.charts import asr_chart, pair_chart
from api.pages.report_view import (
    STATUS_WORDS,
    drift_rows,
    headline,
    plain_verdict,
    repair_view,
    stage_steps,
    sweep_rows,
)
from api.pages.web import (
    CSRF_HEADER,
    PageNotFound,
    PagePrincipal,
    csrf_ok,
    flash,
    redirect,
    render,
    require_csrf,
)
from api.views import submission_detail, submission_summary
from models import TERMINAL, Decision, Submission, SubmissionStatus
from services import catalog, queries
from services.auth import Principal
from services.queries import SubmissionFilter

router = APIRouter(include_in_schema=False)


# ----------------------------------------------------------------------------------------------------------
# upload
@router.get("/upload")
def upload_form(request: Request, principal: PagePrincipal, db: DbSession):
    settings = request.app.state.settings
    from api.uploads import ADAPTER_SUFFIXES, DATASET_SUFFIXES

    bases = catalog.list_bases(db)
    policies = catalog.list_policies() or []
    return render(request, "upload.html", {
        "bases": bases, "policies": policies, "default_base": settings.default_base,
        "default_policy": settings.default_policy, "max_bytes": settings.max_upload_bytes,
        "adapter_suffixes": ADAPTER_SUFFIXES, "dataset_suffixes": DATASET_SUFFIXES,
    })


@router.post("/upload")
async def upload(request: Request):
    """The upload XHR: the CSRF header, then the API's own intake (streaming, limits, dedup, enqueue)."""
    with request.app.state.sessionmaker() as db:
        principal = session_principal(request, db)
    if principal is None:
        return JSONResponse({"code": "unauthenticated", "message": "Your session ended; sign in again."}, 401)
    if not csrf_ok(request, request.headers.get(CSRF_HEADER)):
        return JSONResponse({"code": "csrf_failed",
                             "message": "The page expired (CSRF check failed); reload it and try again."}, 403)
    resp = await submissions_api.create_submission(request, principal)
    return resp


# ----------------------------------------------------------------------------------------------------------
# my submissions
STATUS_CHOICES = [s.value for s in SubmissionStatus]
VERDICT_CHOICES = [d.value for d in Decision]


@router.get("/submissions")
def my_submissions(request: Request, principal: PagePrincipal, db: DbSession, q: str = "", status: str = "",
                   verdict: str = "", scope: str = "mine"):
    scope = "all" if scope == "all" else "mine"
    status = status if status in STATUS_CHOICES else ""
    verdict = verdict if verdict in VERDICT_CHOICES else ""
    q = q.strip()[:200]
    where = SubmissionFilter(user_id=principal.user_id if scope == "mine" else None, status=status or None,
                             final_decision=verdict or None, search=q or None)
    found = queries.list_submissions(db, principal, where, limit=200)
    return render(request, "submissions.html", {
        "items": [submission_summary(s) for s in found.items], "total": found.total, "q": q, "status": status,
        "verdict": verdict, "scope": scope, "status_choices": STATUS_CHOICES, "verdict_choices": VERDICT_CHOICES,
    })


# ----------------------------------------------------------------------------------------------------------
# one submission
def submission_context(db: Session, sub: Submission) -> dict:
    """What the submission page shows (the review page shows it too, and more)."""
    detail = submission_detail(db, sub)
    verdict_row = queries.verdict_of(db, sub.id)
    report = verdict_row.report if verdict_row is not None and isinstance(verdict_row.report, dict) else None
    metrics = (report or {}).get("metrics") or {}
    return {
        "sub": detail, "report": report, "metrics": metrics, "plain": plain_verdict(detail),
        "headline": headline(metrics) if metrics else None, "asr_chart": asr_chart(metrics, 560) if metrics else None,
        "asr_chart_narrow": asr_chart(metrics, 330) if metrics else None,
        "pairs": [c for c in (
            pair_chart(metrics.get("overrefusal"), "Over-refusal of safe prompts", "lower is better"),
            pair_chart(metrics.get("knowledge_accuracy"), "Knowledge accuracy (factual QA)", "higher is better"),
        ) if c],
        "drift": drift_rows(metrics), "sweep": sweep_rows(report), "steps": stage_steps(detail), "status_words": STATUS_WORDS,
        "repair": repair_view(detail.get("repair"), metrics),
        "terminal": detail["status"] in TERMINAL, "owner": detail["submitted_by"],
        "findings": ((report or {}).get("inspection") or {}).get("findings") or detail.get("findings") or [],
        "screening": ((report or {}).get("inspection") or {}).get("screening")
        or ((sub.inspection or {}).get("screening") if isinstance(sub.inspection, dict) else None),
    }


def load_visible(db: Session, submission_id: str, principal: Principal) -> Submission:
    """The submission if this user may see it, else the 404 page."""
    try:
        return load_submission(db, submission_id, principal)
    except ApiError:
        raise PageNotFound(f"There is no submission {submission_id} you can see.") from None


@router.get("/submissions/{submission_id}")
def submission_page(request: Request, submission_id: str, principal: PagePrincipal, db: DbSession):
    sub = load_visible(db, submission_id, principal)
    ctx = submission_context(db, sub)
    return render(request, "submission.html", ctx)


@router.get("/submissions/{submission_id}/report.json")
def report_download(request: Request, submission_id: str, principal: PagePrincipal, db: DbSession):
    sub = load_visible(db, submission_id, principal)
    row = queries.verdict_of(db, sub.id)
    if row is None:
        return JSONResponse({"code": "not_ready", "message": f"submission {sub.id} is {sub.status}; "
                             "the report exists once it is done"}, status_code=409)
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (sub.name or sub.id))[:80]
    return JSONResponse(row.report, headers={
        "Content-Disposition": f"attachment; filename=\"ftgate-report-{name}-{sub.id[:8]}.json\"",
        "Cache-Control": "no-store"})


@router.post("/submissions/{submission_id}/cancel")
def cancel(request: Request, submission_id: str, principal: PagePrincipal, db: DbSession,
           csrf: str = Form("")):
    require_csrf(request, csrf)
    try:
        submissions_api.cancel_submission(submission_id, principal, db)
        flash(request, "The submission was cancelled.")
    except ApiError as e:
        if e.status == 404:
            raise PageNotFound(e.message) from None
        flash(request, e.message, "error")
    return redirect(f"/submissions/{quote(submission_id)}")
