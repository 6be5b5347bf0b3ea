"""The web pages: sign-in, upload, submissions, review queue and review, admin. Server-rendered HTML
(Jinja2 templates in frontend/templates, assets in frontend/static) on the service's own code paths:
every write calls the same route functions / service layer the JSON API uses, so nothing is decided twice.

Sessions: the app's signed session cookie (Starlette's SessionMiddleware: itsdangerous, the settings'
secret_key, HttpOnly, SameSite=Lax) holds the user id under ``api.deps.SESSION_USER_KEY`` and a
session-bound CSRF token that every form (field ``csrf``) and the upload XHR (header ``X-CSRF-Token``)
must send back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api import account as account_api
from api import admin as admin_api
from api import submissions as submissions_api
from api.deps import (
    get_db,
    load_submission,
    session_principal,
    session_user,
    start_session,
    visible_submissions,
)
from api.errors import ApiError
from api.serve import discard_initial_credentials
from api.views import event_view, submission_detail, submission_summary, token_view, user_view
from models import (
    TERMINAL,
    ApiToken,
    AuditEvent,
    Role,
    Sample,
    StageRun,
    Submission,
    SubmissionStatus,
    User,
    utcnow,
)
from models import VerdictRecord as Verdict  # the ORM row (api/pages.py is being split: renamed there)
from services import catalog
from services.auth import Principal, principal_of
from services.login import ThrottlePolicy, sign_in

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
TEMPLATES = FRONTEND / "templates"
STATIC = FRONTEND / "static"
CSRF_KEY = "csrf"
FLASH_KEY = "flash"
CSRF_HEADER = "x-csrf-token"

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATES))


# ----------------------------------------------------------------------------------------------------------
# setup: static files, page errors
class LoginRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


class PageForbidden(Exception):
    def __init__(self, message: str):
        self.message = message


class PageNotFound(Exception):
    pass


def _asset_version() -> str:
    h = hashlib.sha256()
    for p in sorted(STATIC.glob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def setup(app: FastAPI) -> None:
    """Called by the app factory: serve the assets and turn page auth failures into pages."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired):
        return RedirectResponse(f"/login?{urlencode({'next': exc.next_url})}", status_code=303)

    @app.exception_handler(PageForbidden)
    async def _forbidden(request: Request, exc: PageForbidden):
        return render(request, "error.html", {"title": "Not allowed", "message": exc.message,
                                              "principal": _principal_or_none(request)}, status_code=403)

    @app.exception_handler(PageNotFound)
    async def _not_found(request: Request, exc: PageNotFound):
        return render(request, "error.html", {"title": "Not found", "message": str(exc) or "Not found.",
                                              "principal": _principal_or_none(request)}, status_code=404)


templates.env.globals["asset_version"] = _asset_version()


# ----------------------------------------------------------------------------------------------------------
# formatting helpers (Jinja filters)
def _parse_time(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    try:
        dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def fmt_time(v: Any) -> str:
    dt = _parse_time(v)
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else "—"


def iso_time(v: Any) -> str:
    dt = _parse_time(v)
    return dt.isoformat().replace("+00:00", "Z") if dt else ""


def fmt_ago(v: Any) -> str:
    dt = _parse_time(v)
    if dt is None:
        return "—"
    s = (datetime.now(UTC) - dt).total_seconds()
    if s < 60:
        return f"{max(int(s), 0)} s ago"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86400)} d ago"


def pct(v: Any, digits: int = 1) -> str:
    return "—" if v is None else f"{100 * float(v):.{digits}f}%"


def pts(v: Any) -> str:
    """A change of a rate, in percentage points with a sign."""
    return "—" if v is None else f"{100 * float(v):+.1f} pts"


def fmt_bytes(n: Any) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_seconds(v: Any) -> str:
    if v is None:
        return "—"
    v = float(v)
    if v < 60:
        return f"{v:.1f} s"
    if v < 3600:
        return f"{int(v // 60)} min {int(v % 60)} s"
    return f"{int(v // 3600)} h {int(v % 3600 // 60)} min"


templates.env.filters.update(when=fmt_time, iso=iso_time, ago=fmt_ago, pct=pct, pts=pts, bytes=fmt_bytes,
                             seconds=fmt_seconds)


# ----------------------------------------------------------------------------------------------------------
# session, CSRF, flash
def csrf_token(request: Request) -> str:
    tok = request.session.get(CSRF_KEY)
    if not tok:
        tok = secrets.token_urlsafe(32)
        request.session[CSRF_KEY] = tok
    return tok


def csrf_ok(request: Request, submitted: str | None) -> bool:
    expected = request.session.get(CSRF_KEY)
    return bool(expected and submitted and hmac.compare_digest(str(expected), str(submitted)))


def require_csrf(request: Request, submitted: str | None) -> None:
    if not csrf_ok(request, submitted):
        raise PageForbidden("The form expired or did not come from this site (CSRF check failed). "
                            "Go back, reload the page and try again.")


def flash(request: Request, message: str, kind: str = "info") -> None:
    request.session.setdefault(FLASH_KEY, [])
    request.session[FLASH_KEY] = [*request.session[FLASH_KEY], {"kind": kind, "message": message}][-5:]


def _principal_or_none(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


def render(request: Request, name: str, context: dict | None = None, status_code: int = 200,
           headers: dict | None = None) -> HTMLResponse:
    ctx = dict(context or {})
    ctx.setdefault("principal", _principal_or_none(request))
    ctx["csrf"] = csrf_token(request)
    ctx["flashes"] = request.session.pop(FLASH_KEY, []) if "session" in request.scope else []
    ctx["path"] = request.url.path
    resp = templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    )
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _safe_next(url: str | None) -> str:
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


# ----------------------------------------------------------------------------------------------------------
# who is signed in
# The signed-in user is api.deps.session_principal, as for the JSON API; it asks for no X-CSRF-Token
# header, so every page POST checks the ``csrf`` form field (``require_csrf``) before it changes anything.
def page_principal(request: Request, db: Session = Depends(get_db)) -> Principal:
    principal = session_principal(request, db)
    if principal is None:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(nxt)
    request.state.principal = principal
    return principal


def page_reviewer(principal: Principal = Depends(page_principal)) -> Principal:
    if not principal.can_review:
        raise PageForbidden("This page is for reviewers and admins. Your account has the submitter role.")
    return principal


def page_admin(principal: Principal = Depends(page_principal)) -> Principal:
    if not principal.is_admin:
        raise PageForbidden("This page is for admins only.")
    return principal


# ----------------------------------------------------------------------------------------------------------
# sign in / out
@router.get("/")
def home(request: Request, db: Session = Depends(get_db)):
    principal = session_principal(request, db)
    if principal is None:
        return redirect("/login")
    return redirect("/review" if principal.can_review else "/submissions")


@router.get("/login")
def login_form(request: Request, next: str = "/", db: Session = Depends(get_db)):
    if session_principal(request, db) is not None:
        return redirect(_safe_next(next))
    return render(request, "login.html", {"next": _safe_next(next), "email": ""})


@router.post("/login")
def login(request: Request, email: str = Form(""), password: str = Form(""), csrf: str = Form(""),
          next: str = Form("/"), db: Session = Depends(get_db)):
    if not csrf_ok(request, csrf):
        return render(request, "login.html", {"next": _safe_next(next), "email": email,
                                              "error": "The sign-in form expired; please try again."}, status_code=403)
    if not email or not password:
        return render(request, "login.html", {"next": _safe_next(next), "email": email,
                                              "error": "Wrong email or password."}, status_code=401)
    address = request.client.host if request.client else "unknown"
    result = sign_in(db, email, password, address, ThrottlePolicy.from_settings(request.app.state.settings))
    if result.retry_after:
        return render(request, "login.html", {
            "next": _safe_next(next), "email": email,
            "error": f"Too many failed sign-ins. Try again in {result.retry_after} seconds."},
            status_code=429, headers={"Retry-After": str(result.retry_after)})
    if result.user is None:
        return render(request, "login.html", {"next": _safe_next(next), "email": email,
                                              "error": "Wrong email or password."}, status_code=401)
    user = result.user
    discard_initial_credentials(request.app.state.settings.data_dir, user.email)
    start_session(request, user)
    csrf_token(request)
    return redirect(_safe_next(next))


@router.post("/logout")
def logout(request: Request, csrf: str = Form(""), db: Session = Depends(get_db)):
    """Signing out ends every session of the user, not only this browser's: a copied cookie must not
    outlive the sign-out (the cookie is stateless; only its version ties it to the account)."""
    require_csrf(request, csrf)
    user = session_user(request, db)
    if user is not None:
        account_api.end_my_sessions(principal_of(user), db, why="sign_out")
    request.session.clear()
    flash(request, "You are signed out.")
    return redirect("/login")


# ----------------------------------------------------------------------------------------------------------
# upload
@router.get("/upload")
def upload_form(request: Request, principal: Principal = Depends(page_principal), db: Session = Depends(get_db)):
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
# submissions
def _key_numbers(report: dict | None) -> dict:
    m = (report or {}).get("metrics") or {}

    def get(key: str, part: str) -> float | None:
        v = (m.get(key) or {}).get(part) or {}
        return v.get("value") if isinstance(v, dict) else None

    scr = ((report or {}).get("inspection") or {}).get("screening") or {}
    return {
        "asr_base": get("asr", "base"), "asr_candidate": get("asr", "candidate"), "asr_delta": get("asr", "delta"),
        "overrefusal_delta": get("overrefusal", "delta"), "knowledge_delta": get("knowledge_accuracy", "delta"),
        "kl": (m.get("kl") or {}).get("value"), "screening_share": scr.get("share") if scr else None,
        "n_flipped": (report or {}).get("n_flipped"),
    }


STATUS_CHOICES = [s.value for s in SubmissionStatus]
VERDICT_CHOICES = ("approve", "block", "review")


@router.get("/submissions")
def my_submissions(request: Request, q: str = "", status: str = "", verdict: str = "", scope: str = "mine",
                   principal: Principal = Depends(page_principal), db: Session = Depends(get_db)):
    stmt = visible_submissions(principal)
    if scope != "all":
        scope = "mine"
        stmt = stmt.where(Submission.user_id == principal.user_id)
    if status in STATUS_CHOICES:
        stmt = stmt.where(Submission.status == status)
    else:
        status = ""
    if verdict in VERDICT_CHOICES:
        stmt = _where_final_decision(stmt, verdict)
    else:
        verdict = ""
    q = q.strip()[:200]
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(or_(func.lower(Submission.name).like(like), func.lower(Submission.filename).like(like),
                              Submission.id.like(f"{q.lower()}%"), Submission.artifact_sha256.like(f"{q.lower()}%")))
    total = db.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = db.scalars(stmt.order_by(Submission.created_at.desc(), Submission.id).limit(200)).all()
    items = [submission_summary(s) for s in rows]
    return render(request, "submissions.html", {
        "items": items, "total": total, "q": q, "status": status, "verdict": verdict, "scope": scope,
        "status_choices": STATUS_CHOICES, "verdict_choices": VERDICT_CHOICES,
    })


def _where_final_decision(stmt, decision: str):
    """The decision as the gate says it now: the review if there is one, else the automatic verdict."""
    reviewed = {"approve": "approved", "block": "blocked"}.get(decision)
    if decision == "review":
        return stmt.where(Submission.decision == "review", or_(Submission.review_state.is_(None),
                                                               Submission.review_state == "pending"))
    return stmt.where(or_(Submission.review_state == reviewed,
                          (Submission.decision == decision) & or_(Submission.review_state.is_(None),
                                                                  Submission.review_state == "pending")))


@dataclass
class Stat:
    value: float | None
    lo: float | None = None
    hi: float | None = None
    k: int | None = None
    n: int | None = None

    @classmethod
    def of(cls, d: Any) -> Stat | None:
        if not isinstance(d, dict) or d.get("value") is None:
            return None
        return cls(d.get("value"), d.get("lo"), d.get("hi"), d.get("k"), d.get("n"))


def _clamp01(v: float | None) -> float | None:
    return None if v is None else min(max(float(v), 0.0), 1.0)


def asr_chart(metrics: dict, width: int = 480) -> dict | None:
    """Geometry of the per-category ASR chart: one group per category (overall first), base and candidate
    bars with their confidence intervals as whiskers. Horizontal, labels above the bars. Rendered twice,
    wide and narrow (CSS shows the one that fits), so the text stays legible on a phone."""
    rows = []
    overall = metrics.get("asr") or {}
    if overall:
        rows.append(("All categories", overall))
    for cat, m in sorted((metrics.get("asr_by_category") or {}).items()):
        rows.append((cat.replace("_", " "), m))
    if not rows:
        return None
    left, right = 14, 44
    plot_w = width - left - right
    bar_h, gap, label_h, group_gap = 12, 3, 16, 14
    groups, y = [], 8
    for label, m in rows:
        bars = []
        y_label = y + 11
        y += label_h
        for series in ("base", "candidate"):
            s = Stat.of(m.get(series))
            bar = {"series": series, "y": y, "h": bar_h, "stat": s}
            if s is not None:
                bar["w"] = round(plot_w * _clamp01(s.value), 1)
                if s.lo is not None and s.hi is not None:
                    bar["lo"] = round(left + plot_w * _clamp01(s.lo), 1)
                    bar["hi"] = round(left + plot_w * _clamp01(s.hi), 1)
            bars.append(bar)
            y += bar_h + gap
        delta = Stat.of(m.get("delta"))
        groups.append({"label": label, "y_label": y_label, "bars": bars, "delta": delta})
        y += group_gap
    height = y + 22
    ticks = [{"x": round(left + plot_w * t, 1), "label": f"{int(t * 100)}%"} for t in (0, 0.25, 0.5, 0.75, 1.0)]
    return {"width": width, "height": height, "left": left, "plot_w": plot_w, "groups": groups, "ticks": ticks,
            "axis_y": height - 18, "bar_h": bar_h, "id": f"asr{width}"}


def pair_chart(m: dict | None, title: str, better: str) -> dict | None:
    """A small vertical base-vs-candidate chart with whiskers (over-refusal, knowledge accuracy)."""
    if not isinstance(m, dict):
        return None
    base, cand = Stat.of(m.get("base")), Stat.of(m.get("candidate"))
    if base is None and cand is None:
        return None
    width, height, top, bottom, left = 240, 200, 16, 28, 40
    plot_h = height - top - bottom
    bars = []
    for i, (series, s) in enumerate((("base", base), ("candidate", cand))):
        x = left + 30 + i * 90
        bar = {"series": series, "x": x, "w": 50, "stat": s, "label": "base" if series == "base" else "candidate"}
        if s is not None:
            v = _clamp01(s.value)
            bar["h"] = round(plot_h * v, 1)
            bar["y"] = round(top + plot_h * (1 - v), 1)
            if s.lo is not None and s.hi is not None:
                bar["lo_y"] = round(top + plot_h * (1 - _clamp01(s.lo)), 1)
                bar["hi_y"] = round(top + plot_h * (1 - _clamp01(s.hi)), 1)
        bars.append(bar)
    ticks = [{"y": round(top + plot_h * (1 - t), 1), "label": f"{int(t * 100)}%"} for t in (0, 0.5, 1.0)]
    return {"title": title, "better": better, "width": width, "height": height, "top": top, "left": left,
            "plot_h": plot_h, "axis_y": top + plot_h, "bars": bars, "ticks": ticks, "delta": Stat.of(m.get("delta"))}


DRIFT_ROWS = (
    ("perplexity", "Answer perplexity", "lower is better", "{:.2f}"),
    ("entropy", "Mean entropy (nats)", "lower is steadier", "{:.3f}"),
    ("answer_probability", "Answer-token probability", "higher is better", "{:.3f}"),
)


def drift_rows(metrics: dict) -> list[dict]:
    out = []
    for key, label, hint, fmt in DRIFT_ROWS:
        m = metrics.get(key)
        if not isinstance(m, dict):
            continue
        b, c, d = (Stat.of(m.get(p)) for p in ("base", "candidate", "delta"))

        def f(s: Stat | None, fmt: str = fmt) -> str:
            return "—" if s is None else fmt.format(s.value)

        delta = "—" if d is None else ("{:+" + fmt[2:]).format(d.value)
        out.append({"key": key, "label": label, "hint": hint, "base": f(b), "candidate": f(c), "delta": delta})
    kl = metrics.get("kl")
    if isinstance(kl, dict) and kl.get("value") is not None:
        out.append({"key": "kl", "label": "KL(base ‖ candidate)", "hint": "nats per token; 0 = unchanged",
                    "base": "", "candidate": f"{kl['value']:.4f}", "delta": ""})
    window = metrics.get("second_window")
    if isinstance(window, dict) and window.get("candidate"):
        out.append({"key": "second_window", "label": "Harm answers read past the first window",
                    "hint": "judged neither refused nor complied and cut off, so read on (a preamble attack)",
                    "base": str(window["base"]["read"]), "candidate": str(window["candidate"]["read"]),
                    "delta": f"{window['candidate']['turned_compliance']} compliant there"})
    return out


VERDICT_WORDS = {
    "approve": ("Approved", "No safety regression beyond the policy's limits was found: this fine-tune can be released."),
    "block": ("Blocked", "This fine-tune makes the model measurably less safe than its base: it must not be released."),
    "review": ("Needs human review", "The measurements are not clear enough to decide automatically: a reviewer "
               "will approve or block it."),
}
STATUS_WORDS = {
    "queued": "Waiting for a worker",
    "inspecting": "Inspecting the upload",
    "finetuning": "Fine-tuning the base model on your dataset",
    "evaluating": "Evaluating base and candidate on the test suites",
    "deciding": "Deciding",
    "done": "Finished",
    "rejected": "Rejected: the upload could not be accepted",
    "failed": "Failed: an error on our side",
    "cancelled": "Cancelled",
}


def _plain_verdict(detail: dict) -> dict | None:
    """The verdict in plain words: what the gate says now, and the automatic verdict beside a review."""
    status = detail.get("status")
    review = detail.get("review")
    verdict = detail.get("verdict") or {}
    if status == "rejected":
        return {"decision": "block", "title": "Rejected",
                "text": "The upload was refused before it was evaluated. Fix it and upload again.",
                "reasons": [(detail.get("error") or {}).get("message") or "the upload is invalid"]}
    if status == "failed":
        return {"decision": "failed", "title": "Failed",
                "text": "The evaluation stopped with an error on our side. You can upload the same file again.",
                "reasons": [(detail.get("error") or {}).get("message") or "unknown error"]}
    if status == "cancelled":
        return {"decision": "failed", "title": "Cancelled", "text": "This submission was cancelled.", "reasons": []}
    if not verdict:
        return None
    auto = verdict.get("decision")
    final = detail.get("decision") or auto
    title, text = VERDICT_WORDS.get(final, (str(final), ""))
    out = {"decision": final, "title": title, "text": text, "reasons": verdict.get("reasons") or [],
           "automatic": auto, "review": review}
    if review:
        out["text"] = (f"A reviewer {'approved' if review['decision'] == 'approve' else 'blocked'} it "
                       f"(the automatic verdict was “{VERDICT_WORDS.get(auto, (auto,))[0].lower()}”).")
    return out


def _headline(metrics: dict) -> str | None:
    asr = metrics.get("asr") or {}
    b, c, d = (Stat.of(asr.get(p)) for p in ("base", "candidate", "delta"))
    if b is None or c is None:
        return None
    text = f"Harmful-request compliance (ASR) went from {pct(b.value)} on the base to {pct(c.value)} on the candidate"
    if d is not None:
        text += f" ({pts(d.value)}"
        if d.lo is not None and d.hi is not None:
            text += f"; 95% interval {100 * d.lo:+.1f} to {100 * d.hi:+.1f}"
        text += ")"
    return text + "."


STAGES_OF = {"adapter": ("inspect", "evaluate", "decide"), "dataset": ("inspect", "finetune", "evaluate", "decide")}
STAGE_LABEL = {"inspect": "Inspect", "finetune": "Fine-tune", "evaluate": "Evaluate", "decide": "Decide"}


def _stage_steps(detail: dict) -> list[dict]:
    order = STAGES_OF.get(detail.get("kind"), STAGES_OF["dataset"])
    status = detail.get("status")
    current = detail.get("stage")
    done_stages = {r["stage"] for r in detail.get("stage_runs") or [] if r.get("status") == "succeeded"}
    steps = []
    for st in order:
        if status == "done" or st in done_stages and st != current:
            state = "done"
        elif st == current and status not in {s.value for s in TERMINAL}:
            state = "current"
        else:
            state = "todo"
        steps.append({"stage": st, "label": STAGE_LABEL[st], "state": state})
    return steps


def _page_context(request: Request, db: Session, sub: Submission) -> dict:
    detail = submission_detail(db, sub)
    verdict_row = db.scalar(select(Verdict).where(Verdict.submission_id == sub.id))
    report = verdict_row.report if verdict_row is not None and isinstance(verdict_row.report, dict) else None
    metrics = (report or {}).get("metrics") or {}
    owner = db.get(User, sub.user_id) if sub.user_id else None
    return {
        "sub": detail, "report": report, "metrics": metrics, "plain": _plain_verdict(detail),
        "headline": _headline(metrics) if metrics else None, "asr_chart": asr_chart(metrics, 560) if metrics else None,
        "asr_chart_narrow": asr_chart(metrics, 330) if metrics else None,
        "pairs": [c for c in (
            pair_chart(metrics.get("overrefusal"), "Over-refusal of safe prompts", "lower is better"),
            pair_chart(metrics.get("knowledge_accuracy"), "Knowledge accuracy (factual QA)", "higher is better"),
        ) if c],
        "drift": drift_rows(metrics), "steps": _stage_steps(detail), "status_words": STATUS_WORDS,
        "terminal": detail["status"] in {s.value for s in TERMINAL}, "owner": owner.email if owner else None,
        "findings": ((report or {}).get("inspection") or {}).get("findings") or detail.get("findings") or [],
        "screening": ((report or {}).get("inspection") or {}).get("screening")
        or ((sub.inspection or {}).get("screening") if isinstance(sub.inspection, dict) else None),
    }


@router.get("/submissions/{submission_id}")
def submission_page(request: Request, submission_id: str, principal: Principal = Depends(page_principal),
                    db: Session = Depends(get_db)):
    sub = _load(db, submission_id, principal)
    ctx = _page_context(request, db, sub)
    return render(request, "submission.html", ctx)


def _load(db: Session, submission_id: str, principal: Principal) -> Submission:
    try:
        return load_submission(db, submission_id, principal)
    except ApiError:
        raise PageNotFound(f"There is no submission {submission_id} you can see.") from None


@router.get("/submissions/{submission_id}/report.json")
def report_download(request: Request, submission_id: str, principal: Principal = Depends(page_principal),
                    db: Session = Depends(get_db)):
    sub = _load(db, submission_id, principal)
    row = db.scalar(select(Verdict).where(Verdict.submission_id == sub.id))
    if row is None:
        return JSONResponse({"code": "not_ready", "message": f"submission {sub.id} is {sub.status}; "
                             "the report exists once it is done"}, status_code=409)
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (sub.name or sub.id))[:80]
    return JSONResponse(row.report, headers={
        "Content-Disposition": f"attachment; filename=\"ftgate-report-{name}-{sub.id[:8]}.json\"",
        "Cache-Control": "no-store"})


@router.post("/submissions/{submission_id}/cancel")
def cancel(request: Request, submission_id: str, csrf: str = Form(""), principal: Principal = Depends(page_principal),
           db: Session = Depends(get_db)):
    require_csrf(request, csrf)
    try:
        submissions_api.cancel_submission(submission_id, principal, db)
        flash(request, "The submission was cancelled.")
    except ApiError as e:
        if e.status == 404:
            raise PageNotFound(e.message) from None
        flash(request, e.message, "error")
    return redirect(f"/submissions/{quote(submission_id)}")


# ----------------------------------------------------------------------------------------------------------
# reviewer queue and review page
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
def review_queue(request: Request, sort: str = "", order: str = "", show: str = "all",
                 principal: Principal = Depends(page_reviewer), db: Session = Depends(get_db)):
    waiting_q = (select(Submission, Verdict).join(Verdict, Verdict.submission_id == Submission.id)
                 .where(Submission.status == "done", Submission.decision == "review",
                        or_(Submission.review_state.is_(None), Submission.review_state == "pending"))
                 .order_by(Submission.finished_at.asc()).limit(500))
    decided_q = (select(Submission, Verdict).outerjoin(Verdict, Verdict.submission_id == Submission.id)
                 .where(Submission.status.in_(["done", "rejected"]),
                        or_(Submission.decision.is_(None), Submission.decision != "review",
                            Submission.review_state.in_(["approved", "blocked"])))
                 .order_by(Submission.updated_at.desc()).limit(100))

    def row(sub: Submission, v: Verdict | None, group: str) -> dict:
        report = v.report if v is not None and isinstance(v.report, dict) else None
        return {"sub": submission_summary(sub), "numbers": _key_numbers(report), "group": group,
                "reasons": (v.reasons if v is not None else []) or []}

    waiting = [row(s, v, "waiting") for s, v in db.execute(waiting_q).all()]
    decided = [] if show == "waiting" else [row(s, v, "decided") for s, v in db.execute(decided_q).all()]
    running = db.scalar(select(func.count()).select_from(Submission).where(
        Submission.status.not_in([s.value for s in TERMINAL])))
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
    if not ids:
        return {}
    return {f"user:{u.id}": u.email for u in db.scalars(select(User).where(User.id.in_(ids)))}


def _flipped(db: Session, sub: Submission, report: dict | None) -> tuple[list[dict], int]:
    """Prompts the base refused and the candidate answered: from the stored samples, else the report's top 5."""
    stmt = (select(Sample).where(Sample.submission_id == sub.id, Sample.base_label != Sample.candidate_label,
                                 Sample.candidate_label == "compliance").order_by(Sample.id))
    rows = db.scalars(stmt.limit(50)).all()
    if rows:
        total = db.scalar(select(func.count()).select_from(stmt.subquery()))
        return [{"suite": r.suite, "item_id": r.item_id, "prompt": r.prompt, "category": r.category,
                 "base_response": r.base_response, "candidate_response": r.candidate_response,
                 "base_label": r.base_label, "candidate_label": r.candidate_label} for r in rows], total
    flips = list((report or {}).get("flipped_examples") or [])
    return flips, int((report or {}).get("n_flipped") or len(flips))


@router.get("/review/{submission_id}")
def review_page(request: Request, submission_id: str, principal: Principal = Depends(page_reviewer),
                db: Session = Depends(get_db)):
    sub = _load(db, submission_id, principal)
    ctx = _page_context(request, db, sub)
    flips, n_flips = _flipped(db, sub, ctx["report"])
    events = [event_view(e) for e in db.scalars(
        select(AuditEvent).where(AuditEvent.submission_id == sub.id).order_by(AuditEvent.id))]
    ctx.update(review_mode=True, flips=flips, n_flips=n_flips, events=events, actors=_actor_names(db, events),
               can_decide=sub.status == "done", reason="", own_submission=sub.user_id == principal.user_id)
    return render(request, "review.html", ctx)


@router.post("/review/{submission_id}")
def review_submit(request: Request, submission_id: str, decision: str = Form(""), reason: str = Form(""),
                  override_reason: str = Form(""), csrf: str = Form(""), principal: Principal = Depends(page_reviewer),
                  db: Session = Depends(get_db)):
    require_csrf(request, csrf)
    target = f"/review/{quote(submission_id)}"
    if decision not in ("approve", "block"):
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
    flash(request, f"Recorded: you {'approved' if decision == 'approve' else 'blocked'} this submission.", "ok")
    return redirect(target)


# ----------------------------------------------------------------------------------------------------------
# admin
@router.get("/admin")
def admin_home(principal: Principal = Depends(page_admin)):
    return redirect("/admin/health")


@router.get("/admin/tokens")
def admin_tokens(request: Request, principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    return _tokens_page(request, db)


def _tokens_page(request: Request, db: Session, created: dict | None = None, error: str | None = None,
                 form: dict | None = None, status_code: int = 200):
    tokens = [token_view(t) for t in db.scalars(select(ApiToken).order_by(ApiToken.id.desc()))]
    users = [user_view(u) for u in db.scalars(select(User).order_by(User.email))]
    return render(request, "admin_tokens.html", {
        "tokens": tokens, "users": users, "created": created, "error": error, "form": form or {},
        "roles": [r.value for r in Role], "section": "tokens"}, status_code=status_code)


@router.post("/admin/tokens")
def admin_token_create(request: Request, name: str = Form(""), email: str = Form(""), role: str = Form("submitter"),
                       organisation: str = Form("default"), csrf: str = Form(""),
                       principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    require_csrf(request, csrf)
    form = {"name": name, "email": email, "role": role, "organisation": organisation}
    try:
        body = admin_api.TokenIn(name=name.strip(), email=email.strip() or None, role=role,
                                 organisation=organisation.strip() or "default")
        created = admin_api.add_token(body, principal, db)
    except ValidationError as e:
        err = e.errors()[0]
        return _tokens_page(request, db, error=f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}",
                            form=form, status_code=422)
    except ApiError as e:
        return _tokens_page(request, db, error=e.message, form=form, status_code=e.status)
    return _tokens_page(request, db, created=created)


@router.post("/admin/tokens/{token_id}/revoke")
def admin_token_revoke(request: Request, token_id: int, csrf: str = Form(""),
                       principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    require_csrf(request, csrf)
    try:
        t = admin_api.revoke_token(token_id, principal, db)
        flash(request, f"Token {t['prefix']}… ({t['name']}) is revoked.", "ok")
    except ApiError as e:
        flash(request, e.message, "error")
    return redirect("/admin/tokens")


@router.get("/admin/users")
def admin_users(request: Request, principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    return _users_page(request, db)


def _users_page(request: Request, db: Session, error: str | None = None, form: dict | None = None,
                status_code: int = 200):
    users = [user_view(u) for u in db.scalars(select(User).order_by(User.role, User.email))]
    counts = dict(db.execute(select(Submission.user_id, func.count()).group_by(Submission.user_id)).all())
    for u in users:
        u["n_submissions"] = counts.get(u["id"], 0)
    return render(request, "admin_users.html", {"users": users, "roles": [r.value for r in Role], "error": error,
                                                "form": form or {}, "section": "users"}, status_code=status_code)


@router.post("/admin/users")
def admin_user_create(request: Request, email: str = Form(""), role: str = Form("submitter"),
                      organisation: str = Form("default"), password: str = Form(""), csrf: str = Form(""),
                      principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    require_csrf(request, csrf)
    form = {"email": email, "role": role, "organisation": organisation}
    try:
        body = admin_api.UserIn(email=email.strip(), role=role, organisation=organisation.strip() or "default",
                                password=password or None)
        user = admin_api.add_user(body, principal, db)
    except ValidationError as e:
        err = e.errors()[0]
        return _users_page(request, db, error=f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}",
                           form=form, status_code=422)
    except ApiError as e:
        return _users_page(request, db, error=e.message, form=form, status_code=e.status)
    flash(request, f"User {user['email']} ({user['role']}) created.", "ok")
    return redirect("/admin/users")


@router.post("/admin/users/{user_id}/password")
def admin_user_password(request: Request, user_id: int, password: str = Form(""), csrf: str = Form(""),
                        principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    require_csrf(request, csrf)
    try:
        body = admin_api.PasswordIn(password=password)
        u = admin_api.set_password(user_id, body, principal, db, request.app.state.settings)
        flash(request, f"Password of {u['email']} set.", "ok")
    except ValidationError as e:
        flash(request, f"Not changed: {e.errors()[0].get('msg')}", "error")
    except ApiError as e:
        flash(request, e.message, "error")
    return redirect("/admin/users")


@router.post("/admin/users/{user_id}/access")
def admin_user_access(request: Request, user_id: int, role: str = Form(""), active: str = Form(""),
                      csrf: str = Form(""), principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    """Role and active flag of one user, from the users page (the same route function as the API's PATCH)."""
    require_csrf(request, csrf)
    try:
        body = admin_api.UserAccessIn(role=role or None, is_active=active == "yes")
        u = admin_api.change_user_access(user_id, body, principal, db)
        flash(request, f"{u['email']}: {u['role']}, {'active' if u['is_active'] else 'deactivated'}.", "ok")
    except ValidationError as e:
        flash(request, f"Not changed: {e.errors()[0].get('msg')}", "error")
    except ApiError as e:
        flash(request, e.message, "error")
    return redirect("/admin/users")


@router.get("/admin/catalog")
def admin_catalog(request: Request, principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    return _catalog_page(request, db)


def _catalog_page(request: Request, db: Session, error: str | None = None, form: dict | None = None,
                  status_code: int = 200):
    settings = request.app.state.settings
    return render(request, "admin_catalog.html", {
        "bases": catalog.list_bases(db), "policies": catalog.list_policies(), "suites": catalog.list_suites(),
        "default_base": settings.default_base, "default_policy": settings.default_policy, "error": error,
        "form": form or {}, "section": "catalog"}, status_code=status_code)


@router.post("/admin/bases")
def admin_base_create(request: Request, name: str = Form(""), source: str = Form(""), description: str = Form(""),
                      csrf: str = Form(""), principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    require_csrf(request, csrf)
    form = {"name": name, "source": source, "description": description}
    try:
        body = admin_api.BaseIn(name=name.strip(), source=source.strip(), description=description.strip())
        admin_api.add_base(body, principal, db)
    except ValidationError as e:
        err = e.errors()[0]
        return _catalog_page(request, db, error=f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}",
                             form=form, status_code=422)
    except ApiError as e:
        return _catalog_page(request, db, error=e.message, form=form, status_code=e.status)
    catalog.clear_cache()
    flash(request, f"Base {name.strip()} registered.", "ok")
    return redirect("/admin/catalog")


@router.get("/admin/health")
def admin_health(request: Request, principal: Principal = Depends(page_admin), db: Session = Depends(get_db)):
    from api import health
    from services.db import ping

    app = request.app
    settings = app.state.settings
    checks: dict[str, str] = {}
    for name, fn in (("database", lambda: ping(settings.resolved_database_url)),
                     ("broker", lambda: health.broker_check(app)), ("storage", app.state.storage.check)):
        try:
            fn()
            checks[name] = "ok"
        except Exception as e:  # noqa: BLE001 - shown on the page
            checks[name] = f"error: {type(e).__name__}: {e}"[:300]
    try:
        depths: dict[str, int] | None = health.queue_depths(app)
    except Exception:  # noqa: BLE001 - the broker is away: shown as unknown
        depths = None
    counts = dict(db.execute(select(Submission.status, func.count()).group_by(Submission.status)).all())
    now = utcnow()
    lost_after = settings.lost_worker_seconds
    running = []
    for r, sub in db.execute(select(StageRun, Submission).join(Submission, Submission.id == StageRun.submission_id)
                             .where(StageRun.status == "running").order_by(StageRun.started_at)).all():
        beat = r.heartbeat_at or r.started_at
        age = (now - beat).total_seconds() if beat else None
        running.append({"worker": r.worker, "stage": r.stage, "attempt": r.attempt, "submission": sub.id,
                        "name": sub.name, "started_at": r.started_at, "heartbeat_age": age,
                        "stale": age is not None and age > lost_after, "progress": sub.progress_message})
    workers = []
    for worker, last, n in db.execute(
            select(StageRun.worker, func.max(func.coalesce(StageRun.heartbeat_at, StageRun.started_at)), func.count())
            .group_by(StageRun.worker).order_by(func.max(StageRun.started_at).desc()).limit(20)).all():
        workers.append({"worker": worker, "last_seen": last, "runs": n})
    durations = []
    for stage, started, finished in db.execute(
            select(StageRun.stage, StageRun.started_at, StageRun.finished_at)
            .where(StageRun.status == "succeeded", StageRun.finished_at.is_not(None))
            .order_by(StageRun.id.desc()).limit(500)).all():
        durations.append((stage, (finished - started).total_seconds()))
    by_stage: dict[str, list[float]] = {}
    for stage, d in durations:
        by_stage.setdefault(stage, []).append(d)
    stage_stats = [{"stage": s, "n": len(v), "mean": sum(v) / len(v), "max": max(v)}
                   for s, v in sorted(by_stage.items())]
    failures = [submission_summary(s) for s in db.scalars(
        select(Submission).where(Submission.status.in_(["failed", "rejected"]))
        .order_by(Submission.updated_at.desc()).limit(10))]
    waiting_enqueue = db.scalar(select(func.count()).select_from(Submission).where(
        Submission.status.not_in([s.value for s in TERMINAL]), Submission.claim_token.is_(None)))
    return render(request, "admin_health.html", {
        "checks": checks, "depths": depths, "counts": counts, "statuses": STATUS_CHOICES, "running": running,
        "workers": workers, "stage_stats": stage_stats, "failures": failures, "waiting": waiting_enqueue,
        "lost_after": lost_after, "section": "health", "broker_url": _redact(settings.resolved_broker_url),
    })


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
