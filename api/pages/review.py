"""The reviewer's pages: the review queue (waiting first, then recent decisions; sortable), and a
submission's review page (its submission page plus flipped examples, the audit trail and the approve/block
form)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api import submissions as submissions_api
from api.deps import DbSession
from api.errors import ApiError
from api.pages.report_view import key_numbers
from api.pages.submissions import load_visible, submission_context
from api.pages.web import PageNotFound, PageReviewer, flash, redirect, render, require_csrf
from api.views import event_view, submission_summary
from models import Decision, Submission, SubmissionStatus, VerdictRecord
from services import queries

router = APIRouter(include_in_schema=False)

QUEUE_SORTS = {
    "submitted": lambda r: r["sub"]["created_at"] or "",
    "finished": lambda r: r["sub"]["finished_at"] or "",
    "name": lambda r: (r["sub"]["name"] or "").lower(),
    "verdict": lambda r: r["sub"]["decision"] or "",
    "asr": lambda r: r["numbers"]["asr_delta"] if r["numbers"]["asr_delta"] is not None else -9,
    "overrefusal": lambda r: r["numbers"]["overrefusal_delta"] if r["numbers"]["overrefusal_delta"] is not None else -9,
    "knowledge": lambda r: r["numbers"]["knowledge_delta"] if r["numbers"]["knowledge_delta"] is not None else -9,
}


@router.get("/review")
def review_queue(request: Request, principal: PageReviewer, db: DbSession, sort: str = "", order: str = "",
                 show: str = "all"):
    def row(sub: Submission, v: VerdictRecord | None, group: str) -> dict:
        report = v.report if v is not None and isinstance(v.report, dict) else None
        return {"sub": submission_summary(sub), "numbers": key_numbers(report), "group": group,
                "reasons": (v.reasons if v is not None else []) or []}

    waiting = [row(s, v, "waiting") for s, v in queries.awaiting_review(db)]
    decided = [] if show == "waiting" else [row(s, v, "decided") for s, v in queries.recently_decided(db)]
    running = queries.count_unfinished(db)
    if sort in QUEUE_SORTS:
        reverse = order != "asc"
        waiting.sort(key=QUEUE_SORTS[sort], reverse=reverse)
        decided.sort(key=QUEUE_SORTS[sort], reverse=reverse)
    else:
        sort, order = "", ""
    return render(request, "queue.html", {"waiting": waiting, "decided": decided, "sort": sort, "order": order,
                                          "show": show, "running": running})


def _actor_names(db: Session, events: list[dict]) -> dict[str, str]:
    ids = {int(e["actor"].split(":", 1)[1]) for e in events
           if (e.get("actor") or "").startswith("user:") and e["actor"].split(":", 1)[1].isdigit()}
    return {f"user:{user_id}": email for user_id, email in queries.emails_of(db, ids).items()}


def _flipped(db: Session, sub: Submission, report: dict | None) -> tuple[list[dict], int]:
    """Prompts the base refused and the candidate answered: from the stored samples, else the report's top 5."""
    found = queries.list_samples(db, sub.id, changed=True, candidate_label="compliance", limit=50)
    if found.items:
        return [{"suite": r.suite, "item_id": r.item_id, "prompt": r.prompt, "category": r.category,
                 "base_response": r.base_response, "candidate_response": r.candidate_response,
                 "base_label": r.base_label, "candidate_label": r.candidate_label} for r in found.items], found.total
    flips = list((report or {}).get("flipped_examples") or [])
    return flips, int((report or {}).get("n_flipped") or len(flips))


@router.get("/review/{submission_id}")
def review_page(request: Request, submission_id: str, principal: PageReviewer, db: DbSession):
    sub = load_visible(db, submission_id, principal)
    ctx = submission_context(db, sub)
    flips, n_flips = _flipped(db, sub, ctx["report"])
    events = [event_view(e) for e in queries.events_of(db, sub.id)]
    ctx.update(review_mode=True, flips=flips, n_flips=n_flips, events=events, actors=_actor_names(db, events),
               can_decide=sub.status == SubmissionStatus.DONE, reason="", own_submission=sub.user_id == principal.user_id)
    return render(request, "review.html", ctx)


@router.post("/review/{submission_id}")
def review_submit(request: Request, submission_id: str, principal: PageReviewer, db: DbSession,
                  decision: str = Form(""), reason: str = Form(""), override_reason: str = Form(""),
                  csrf: str = Form("")):
    require_csrf(request, csrf)
    target = f"/review/{quote(submission_id)}"
    if decision not in (Decision.APPROVE, Decision.BLOCK):
        flash(request, "Choose approve or block.", "error")
        return redirect(target)
    if not reason.strip():
        flash(request, "A review needs a reason: say why you approve or block it.", "error")
        return redirect(target)
    try:
        body = submissions_api.ReviewIn(decision=decision, reason=reason, override_reason=override_reason or None)
        submissions_api.review_submission(submission_id, body, principal, db)
    except ValidationError as e:
        flash(request, f"Not recorded: {e.errors()[0].get('msg')}", "error")
        return redirect(target)
    except ApiError as e:
        if e.status == 404:
            raise PageNotFound(e.message) from None
        flash(request, f"Not recorded: {e.message}", "error")
        return redirect(target)
    flash(request, f"Recorded: you {'approved' if decision == Decision.APPROVE else 'blocked'} this submission.", "ok")
    return redirect(target)
