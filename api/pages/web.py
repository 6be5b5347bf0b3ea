"""What every page route shares: the templates and ``render`` (with the security headers), redirects, the
session's CSRF token and flash messages, the page errors (sign-in needed, not allowed, not found; turned
into a redirect or an HTML page by ``api.pages.setup``) and who is signed in."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from api.deps import DbSession, session_principal
from api.pages.filters import FILTERS
from evaluation.files import sha256_file
from models import TERMINAL
from services.auth import Principal

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
TEMPLATES = FRONTEND / "templates"
STATIC = FRONTEND / "static"
CSRF_KEY = "csrf"
FLASH_KEY = "flash"
CSRF_HEADER = "x-csrf-token"

templates = Jinja2Templates(directory=str(TEMPLATES))


# ----------------------------------------------------------------------------------------------------------
# page errors
class LoginRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


class PageForbidden(Exception):
    def __init__(self, message: str):
        self.message = message


class PageNotFound(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------
# templates
def _asset_version() -> str:
    """A digest of the static files' names and contents, appended to their URLs (``?v=``): a browser fetches
    a changed file anew."""
    listing = "".join(f"{p.name} {sha256_file(p)}\n" for p in sorted(STATIC.glob("*")) if p.is_file())
    return hashlib.sha256(listing.encode()).hexdigest()[:10]


templates.env.globals["asset_version"] = _asset_version()
# The finished statuses, for the templates and (through a data attribute) the page script: one definition.
templates.env.globals["TERMINAL"] = sorted(TERMINAL)
templates.env.filters.update(FILTERS)


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


def principal_or_none(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


def render(request: Request, name: str, context: dict | None = None, status_code: int = 200,
           headers: dict | None = None) -> HTMLResponse:
    ctx = dict(context or {})
    ctx.setdefault("principal", principal_or_none(request))
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


def safe_next(url: str | None) -> str:
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


# ----------------------------------------------------------------------------------------------------------
# who is signed in
# The signed-in user is api.deps.session_principal, as for the JSON API; it asks for no X-CSRF-Token
# header, so every page POST checks the ``csrf`` form field (``require_csrf``) before it changes anything.
# Not api.deps' CurrentPrincipal / Reviewer / Admin: those answer a JSON 401/403 and want that header on a
# session's POST, which an HTML form cannot send; a page sends the browser to sign in, or shows a 403 page.
def page_principal(request: Request, db: DbSession) -> Principal:
    principal = session_principal(request, db)
    if principal is None:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(nxt)
    request.state.principal = principal
    return principal


# The page routes' parameter types, beside api.deps.DbSession: ``def page(principal: PageReviewer, db: DbSession)``.
PagePrincipal = Annotated[Principal, Depends(page_principal)]  # anyone signed in, else to the sign-in page


def page_reviewer(principal: PagePrincipal) -> Principal:
    if not principal.can_review:
        raise PageForbidden("This page is for reviewers and admins. Your account has the submitter role.")
    return principal


def page_admin(principal: PagePrincipal) -> Principal:
    if not principal.is_admin:
        raise PageForbidden("This page is for admins only.")
    return principal


PageReviewer = Annotated[Principal, Depends(page_reviewer)]  # a reviewer or an admin, else the 403 page
PageAdmin = Annotated[Principal, Depends(page_admin)]  # an admin, else the 403 page
