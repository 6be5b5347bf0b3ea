"""The admin pages: workers and queue health, API tokens (create, shown once; revoke), users and roles
(add, set a password, change role or deactivate), and the catalogue of base models and policies."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api import admin as admin_api
from api.deps import DbSession
from api.errors import ApiError
from api.pages.submissions import STATUS_CHOICES
from api.pages.web import PageAdmin, flash, redirect, render, require_csrf
from api.views import submission_summary, token_view, user_view
from models import Role, utcnow
from services import catalog, queries

router = APIRouter(include_in_schema=False)


def _refusal(e: ValidationError | ApiError) -> tuple[str, int]:
    """Why a create form was refused, and the status of the page that says it: the first invalid field, or
    the API's own answer."""
    if isinstance(e, ApiError):
        return e.message, e.status
    err = e.errors()[0]
    return f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}", 422


@router.get("/admin")
def admin_home(principal: PageAdmin):
    return redirect("/admin/health")


@router.get("/admin/tokens")
def admin_tokens(request: Request, principal: PageAdmin, db: DbSession):
    return _tokens_page(request, db)


def _tokens_page(request: Request, db: Session, created: dict | None = None, error: str | None = None,
                 form: dict | None = None, status_code: int = 200):
    tokens = [token_view(t) for t in queries.list_tokens(db, newest_first=True)]
    users = [user_view(u) for u in queries.list_users(db, order="email")]
    return render(request, "admin_tokens.html", {
        "tokens": tokens, "users": users, "created": created, "error": error, "form": form or {},
        "roles": [r.value for r in Role], "section": "tokens"}, status_code=status_code)


@router.post("/admin/tokens")
def admin_token_create(request: Request, principal: PageAdmin, db: DbSession, name: str = Form(""),
                       email: str = Form(""), role: str = Form("submitter"),
                       organisation: str = Form("default"), csrf: str = Form("")):
    require_csrf(request, csrf)
    form = {"name": name, "email": email, "role": role, "organisation": organisation}
    try:
        body = admin_api.TokenIn(name=name.strip(), email=email.strip() or None, role=role,
                                 organisation=organisation.strip() or "default")
        created = admin_api.add_token(body, principal, db)
    except (ValidationError, ApiError) as e:
        error, status = _refusal(e)
        return _tokens_page(request, db, error=error, form=form, status_code=status)
    return _tokens_page(request, db, created=created)


@router.post("/admin/tokens/{token_id}/revoke")
def admin_token_revoke(request: Request, token_id: int, principal: PageAdmin, db: DbSession,
                       csrf: str = Form("")):
    require_csrf(request, csrf)
    try:
        t = admin_api.revoke_token(token_id, principal, db)
        flash(request, f"Token {t['prefix']}… ({t['name']}) is revoked.", "ok")
    except ApiError as e:
        flash(request, e.message, "error")
    return redirect("/admin/tokens")


@router.get("/admin/users")
def admin_users(request: Request, principal: PageAdmin, db: DbSession):
    return _users_page(request, db)


def _users_page(request: Request, db: Session, error: str | None = None, form: dict | None = None,
                status_code: int = 200):
    users = [user_view(u) for u in queries.list_users(db, order="role")]
    counts = queries.submission_counts_by_user(db)
    for u in users:
        u["n_submissions"] = counts.get(u["id"], 0)
    return render(request, "admin_users.html", {"users": users, "roles": [r.value for r in Role], "error": error,
                                                "form": form or {}, "section": "users"}, status_code=status_code)


@router.post("/admin/users")
def admin_user_create(request: Request, principal: PageAdmin, db: DbSession, email: str = Form(""),
                      role: str = Form("submitter"), organisation: str = Form("default"),
                      password: str = Form(""), csrf: str = Form("")):
    require_csrf(request, csrf)
    form = {"email": email, "role": role, "organisation": organisation}
    try:
        body = admin_api.UserIn(email=email.strip(), role=role, organisation=organisation.strip() or "default",
                                password=password or None)
        user = admin_api.add_user(body, principal, db)
    except (ValidationError, ApiError) as e:
        error, status = _refusal(e)
        return _users_page(request, db, error=error, form=form, status_code=status)
    flash(request, f"User {user['email']} ({user['role']}) created.", "ok")
    return redirect("/admin/users")


@router.post("/admin/users/{user_id}/password")
def admin_user_password(request: Request, user_id: int, principal: PageAdmin, db: DbSession,
                        password: str = Form(""), csrf: str = Form("")):
    require_csrf(request, csrf)
    try:
        body = admin_api.PasswordIn(password=password)
        u = admin_api.set_password(user_id, body, principal, db, request.app.state.settings)
        flash(request, f"Password of {u['email']} set.", "ok")
    except (ValidationError, ApiError) as e:
        flash(request, e.message if isinstance(e, ApiError) else f"Not changed: {e.errors()[0].get('msg')}", "error")
    return redirect("/admin/users")


@router.post("/admin/users/{user_id}/access")
def admin_user_access(request: Request, user_id: int, principal: PageAdmin, db: DbSession,
                      role: str = Form(""), active: str = Form(""), csrf: str = Form("")):
    """Role and active flag of one user, from the users page (the same route function as the API's PATCH)."""
    require_csrf(request, csrf)
    try:
        body = admin_api.UserAccessIn(role=role or None, is_active=active == "yes")
        u = admin_api.change_user_access(user_id, body, principal, db)
        flash(request, f"{u['email']}: {u['role']}, {'active' if u['is_active'] else 'deactivated'}.", "ok")
    except (ValidationError, ApiError) as e:
        flash(request, e.message if isinstance(e, ApiError) else f"Not changed: {e.errors()[0].get('msg')}", "error")
    return redirect("/admin/users")


@router.get("/admin/catalog")
def admin_catalog(request: Request, principal: PageAdmin, db: DbSession):
    return _catalog_page(request, db)


def _catalog_page(request: Request, db: Session, error: str | None = None, form: dict | None = None,
                  status_code: int = 200):
    settings = request.app.state.settings
    return render(request, "admin_catalog.html", {
        "bases": catalog.list_bases(db), "policies": catalog.list_policies(), "suites": catalog.list_suites(),
        "default_base": settings.default_base, "default_policy": settings.default_policy, "error": error,
        "form": form or {}, "section": "catalog"}, status_code=status_code)


@router.post("/admin/bases")
def admin_base_create(request: Request, principal: PageAdmin, db: DbSession, name: str = Form(""),
                      source: str = Form(""), description: str = Form(""), csrf: str = Form("")):
    require_csrf(request, csrf)
    form = {"name": name, "source": source, "description": description}
    try:
        body = admin_api.BaseIn(name=name.strip(), source=source.strip(), description=description.strip())
        admin_api.add_base(body, principal, db)
    except (ValidationError, ApiError) as e:
        error, status = _refusal(e)
        return _catalog_page(request, db, error=error, form=form, status_code=status)
    catalog.clear_cache()
    flash(request, f"Base {name.strip()} registered.", "ok")
    return redirect("/admin/catalog")


@router.get("/admin/health")
def admin_health(request: Request, principal: PageAdmin, db: DbSession):
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
    counts = queries.submission_counts_by_status(db)
    now = utcnow()
    lost_after = settings.lost_worker_seconds
    running = []
    for r, sub in queries.running_stages(db):
        beat = r.heartbeat_at or r.started_at
        age = (now - beat).total_seconds() if beat else None
        running.append({"worker": r.worker, "stage": r.stage, "attempt": r.attempt, "submission": sub.id,
                        "name": sub.name, "started_at": r.started_at, "heartbeat_age": age,
                        "stale": age is not None and age > lost_after, "progress": sub.progress_message})
    workers = queries.workers_seen(db)
    by_stage: dict[str, list[float]] = {}
    for stage, seconds in queries.stage_durations(db, limit=500):
        by_stage.setdefault(stage, []).append(seconds)
    stage_stats = [{"stage": s, "n": len(v), "mean": sum(v) / len(v), "max": max(v)}
                   for s, v in sorted(by_stage.items())]
    failures = [submission_summary(s) for s in queries.recent_failures(db)]
    waiting_enqueue = queries.count_unclaimed(db)
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
