"""Request dependencies: settings, database session, the caller (token or web session) and role checks.

Routes name them by the ``Annotated`` aliases at the end of this module (``db: DbSession``,
``principal: Admin``) rather than spelling ``Depends(...)`` each time. The HTML pages have their own principal
types beside these (api/pages/web.py: a sign-in redirect and 403 page instead of a JSON error).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.errors import forbidden, not_found, unauthenticated
from ftgate.settings import Settings
from models import Submission, User
from services.auth import Principal, authenticate_token, principal_of
from services.storage import Storage

# The web sign-in (api/pages/) stores the signed-in user's id under this key of request.session, and its
# CSRF token under SESSION_CSRF_KEY: an API call authenticated by the session cookie (not a token) that
# changes something must send that token in the X-CSRF-Token header, and come from the same origin.
SESSION_USER_KEY = "user_id"
SESSION_VERSION_KEY = "session_version"  # the user's session_version at sign-in (see models.User)
SESSION_CSRF_KEY = "csrf"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _check_csrf(request: Request) -> None:
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise forbidden("cross-origin request refused")
    # A session without a CSRF token proves nothing: refuse it rather than skip the check (it would let any
    # site that gets the browser to send the cookie change things).
    expected = request.session.get(SESSION_CSRF_KEY)
    if not expected or not hmac.compare_digest(str(expected), request.headers.get("x-csrf-token", "")):
        raise forbidden("missing or wrong X-CSRF-Token header")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_db(request: Request) -> Iterator[Session]:
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def resolve_principal(request: Request, db: Session) -> Principal | None:
    """The caller of ``request``: the user of its Bearer token or of its session cookie (then with the CSRF
    check), None when it sends neither. The one place a request's credentials are checked."""
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("the Authorization header must be 'Bearer <token>'")
        principal = authenticate_token(db, token.strip())
        if principal is None:
            raise unauthenticated("the API token is invalid, expired or revoked")
        return principal
    principal = session_principal(request, db)
    if principal is None:
        return None
    _check_csrf(request)
    return principal


def optional_principal(request: Request) -> Principal | None:
    """``resolve_principal`` in a database session of its own, closed (its connection back in the pool)
    before the endpoint runs. It used to share the request's ``get_db`` session, which holds its connection
    until the response is sent: 16 slow uploads, each holding one while its body trickled in, emptied the
    pool (5 + 10) and every other caller waited 30 s for a 500. A Principal is plain data, safe to keep."""
    with request.app.state.sessionmaker() as db:
        return resolve_principal(request, db)


def start_session(request: Request, user: User) -> None:
    """Sign ``user`` in on this browser: a fresh session (no fixation) bound to the user's session version."""
    request.session.clear()
    request.session[SESSION_USER_KEY] = user.id
    request.session[SESSION_VERSION_KEY] = user.session_version


def session_user(request: Request, db: Session) -> User | None:
    """The active user the session cookie names, if the cookie is of that user's current session version.
    A cookie that is not (signed out everywhere, password or role changed, deactivated) is emptied."""
    if "session" not in request.scope:
        return None
    user_id = request.session.get(SESSION_USER_KEY)
    if user_id is None:
        return None
    user = db.get(User, int(user_id))
    if user is None or not user.is_active or request.session.get(SESSION_VERSION_KEY) != user.session_version:
        request.session.clear()
        return None
    return user


def session_principal(request: Request, db: Session) -> Principal | None:
    """The signed-in user of the session cookie (``session_user``) as a Principal, None without one: how both
    the JSON API (``resolve_principal``) and the HTML pages (api/pages/) know a browser's user. It checks
    no CSRF token: the API then asks for the X-CSRF-Token header, while the pages, whose HTML forms cannot
    send a header, check their ``csrf`` form field before they change anything."""
    user = session_user(request, db)
    return principal_of(user) if user is not None else None


def current_principal(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise unauthenticated()
    return principal


def require_reviewer(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.can_review:
        raise forbidden("this needs the reviewer or admin role")
    return principal


def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise forbidden("this needs the admin role")
    return principal


def load_submission(db: Session, submission_id: str, principal: Principal) -> Submission:
    """The submission, or 404 (also when it belongs to another organisation: its existence is not told)."""
    sub = db.get(Submission, submission_id) if len(submission_id) <= 64 else None
    if sub is None or (not principal.is_staff and sub.organisation_id != principal.organisation_id):
        raise not_found(f"submission {submission_id}")
    return sub


# The dependencies as parameter types, e.g. ``def route(principal: Reviewer, db: DbSession)``.
DbSession = Annotated[Session, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]  # any signed-in caller, else 401
Reviewer = Annotated[Principal, Depends(require_reviewer)]  # a reviewer or an admin, else 403
Admin = Annotated[Principal, Depends(require_admin)]  # an admin, else 403
