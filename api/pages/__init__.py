"""The web pages: sign-in, upload, submissions, review queue and review, admin. Server-rendered HTML
(Jinja2 templates in frontend/templates, assets in frontend/static) on the service's own code paths:
every write calls the same route functions / service layer the JSON API uses, so nothing is decided twice.

One module a room: ``account`` (sign in and out), ``submissions`` (upload, my submissions, a submission's
page), ``review`` (queue and review page), ``admin``; what they share is in ``web`` (rendering, CSRF, flash,
page errors, who is signed in). Beside them, pure helpers: ``charts`` (the SVG geometry), ``report_view``
(a report in words and rows) and ``filters`` (the templates' formatting). The app factory includes
``router`` and calls ``setup``. May import services (queries.py for every read), models and the core's light
helpers (formatting, files); never tasks or torch. Start with web.py, then submissions.py. What the pages
show: docs/ui.md.

Sessions: the app's signed session cookie (Starlette's SessionMiddleware: itsdangerous, the settings'
secret_key, HttpOnly, SameSite=Lax) holds the user id under ``api.deps.SESSION_USER_KEY`` and a
session-bound CSRF token that every form (field ``csrf``) and the upload XHR (header ``X-CSRF-Token``)
must send back.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.pages import account, admin, review, submissions
from api.pages.web import STATIC, LoginRequired, PageForbidden, PageNotFound, principal_or_none, render

router = APIRouter(include_in_schema=False)
for _room in (account, submissions, review, admin):
    router.include_router(_room.router)


def setup(app: FastAPI) -> None:
    """Called by the app factory: serve the assets and turn page auth failures into pages."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired):
        return RedirectResponse(f"/login?{urlencode({'next': exc.next_url})}", status_code=303)

    @app.exception_handler(PageForbidden)
    async def _forbidden(request: Request, exc: PageForbidden):
        return render(request, "error.html", {"title": "Not allowed", "message": exc.message,
                                              "principal": principal_or_none(request)}, status_code=403)

    @app.exception_handler(PageNotFound)
    async def _not_found(request: Request, exc: PageNotFound):
        return render(request, "error.html", {"title": "Not found", "message": str(exc) or "Not found.",
                                              "principal": principal_or_none(request)}, status_code=404)
