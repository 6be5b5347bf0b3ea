"""JSON views of the rows the API returns (one place, so the UI, the CLI and the docs agree). Their shapes are
described, and checked on the way out, by the response models in api/schemas.py: change both together."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import ApiToken, AuditEvent, Review, StageRun, Submission, SubmissionStatus, User
from services import queries
from services.submissions import final_decision

API = "/api/v1"


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def links(sub_id: str) -> dict:
    base = f"{API}/submissions/{sub_id}"
    return {"self": base, "report": f"{base}/report", "samples": f"{base}/samples", "cancel": f"{base}/cancel",
            "review": f"{base}/review", "events": f"{base}/events"}


def submission_summary(sub: Submission) -> dict:
    return {
        "id": sub.id, "name": sub.name, "kind": sub.kind, "base": sub.base_name, "policy": sub.policy_name,
        "status": sub.status, "stage": _stage(sub), "progress": {"percent": round(sub.progress or 0.0, 1),
                                                               "message": sub.progress_message or ""},
        "decision": final_decision(sub), "automatic_decision": sub.decision, "review_state": sub.review_state,
        "organisation_id": sub.organisation_id, "sha256": sub.artifact_sha256, "size": sub.artifact_size,
        "filename": sub.filename, "created_at": iso(sub.created_at), "updated_at": iso(sub.updated_at),
        "finished_at": iso(sub.finished_at),
        "error": {"code": sub.error_code, "message": sub.error} if sub.error else None,
        "links": links(sub.id),
    }


def _stage(sub: Submission) -> str | None:
    from models import STATUS_STAGE

    st = SubmissionStatus(sub.status)
    return STATUS_STAGE[st].value if st in STATUS_STAGE and st != SubmissionStatus.QUEUED else None


def submission_detail(db: Session, sub: Submission) -> dict:
    d = submission_summary(sub)
    runs = db.scalars(select(StageRun).where(StageRun.submission_id == sub.id).order_by(StageRun.id)).all()
    d["progress"].update({"stage_done": sub.stage_done, "stage_total": sub.stage_total})
    d["training"] = sub.training
    d["submitted_by"] = sub.user.email if sub.user else None
    d["organisation"] = sub.organisation.name if sub.organisation else None
    d["started_at"] = iso(sub.started_at)
    d["worker"] = sub.claimed_by
    d["stage_runs"] = [
        {"stage": r.stage, "attempt": r.attempt, "status": r.status, "worker": r.worker, "started_at": iso(r.started_at),
         "finished_at": iso(r.finished_at), "duration_seconds": r.duration_seconds, "error": r.error}
        for r in runs
    ]
    timings: dict[str, float] = {}
    for r in runs:
        if r.status == "succeeded" and r.duration_seconds is not None:
            timings[r.stage] = round(timings.get(r.stage, 0.0) + r.duration_seconds, 3)
    if sub.started_at and sub.finished_at:
        timings["total"] = round((sub.finished_at - sub.started_at).total_seconds(), 3)
    if sub.created_at and sub.started_at:
        timings["queued"] = round((sub.started_at - sub.created_at).total_seconds(), 3)
    d["timings"] = timings
    verdict = queries.verdict_of(db, sub.id)
    if verdict is not None:
        d["verdict"] = {"decision": verdict.decision, "reasons": verdict.reasons, "policy": verdict.policy_name,
                        "created_at": iso(verdict.created_at)}
        d["metrics"] = verdict.report.get("metrics") if isinstance(verdict.report, dict) else None
        d["repair"] = repair_view(sub.id, verdict.report.get("repair") if isinstance(verdict.report, dict) else None)
    else:
        d["verdict"] = None
        d["metrics"] = None
        d["repair"] = None
    d["repair_requested"] = sub.repair
    if sub.inspection:
        findings = sub.inspection.get("findings") if isinstance(sub.inspection, dict) else None
        d["findings"] = findings or []
    reviews = db.scalars(select(Review).where(Review.submission_id == sub.id).order_by(Review.id)).all()
    d["reviews"] = [review_view(db, r) for r in reviews]
    d["review"] = d["reviews"][-1] if d["reviews"] else None
    return d


REPAIR_FIELDS = ("status", "mode", "reason", "method", "decision", "reasons", "released", "metrics", "task_loss",
                 "safety_share", "adapter_fingerprint")


def repair_view(sub_id: str, repair: dict | None) -> dict | None:
    """The report's ``repair`` object as the API shows it: its numbers and verdict, and the repaired adapter's
    download link in place of where it is stored."""
    if not isinstance(repair, dict):
        return None
    out = {k: repair[k] for k in REPAIR_FIELDS if k in repair}
    if repair.get("status") == "done":
        out["adapter"] = f"{API}/submissions/{sub_id}/repair/adapter"
    return out


def review_view(db: Session, r: Review) -> dict:
    reviewer = db.get(User, r.reviewer_id)
    return {"decision": r.decision, "reason": r.reason, "reviewer": reviewer.email if reviewer else None,
            "created_at": iso(r.created_at)}


def event_view(e: AuditEvent) -> dict:
    return {"id": e.id, "at": iso(e.at), "actor": e.actor, "action": e.action, "submission_id": e.submission_id,
            "from_status": e.from_status, "to_status": e.to_status, "details": e.details}


def user_view(u: User) -> dict:
    return {"id": u.id, "email": u.email, "role": u.role, "organisation": u.organisation.name if u.organisation else None,
            "organisation_id": u.organisation_id, "is_active": u.is_active, "created_at": iso(u.created_at)}


def token_view(t: ApiToken) -> dict:
    # in the order of api/schemas.py's TokenOut (its shared fields, then the owner), so both send the same bytes
    return {"id": t.id, "name": t.name, "prefix": t.prefix, "role": t.user.role if t.user else None,
            "created_at": iso(t.created_at), "last_used_at": iso(t.last_used_at), "expires_at": iso(t.expires_at),
            "revoked_at": iso(t.revoked_at), "user": t.user.email if t.user else None}
