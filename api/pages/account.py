"""The sign-in pages: the home redirect, signing in with email and password, signing out."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request

from api import account as account_api
from api.deps import DbSession, session_principal, session_user, start_session
from api.pages.web import csrf_ok, csrf_token, flash, redirect, render, require_csrf, safe_next
from api.serve import discard_initial_credentials
from services.auth import principal_of
from services.login import ThrottlePolicy, sign_in

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request, db: DbSession):
    principal = session_principal(request, db)
    if principal is None:
        return redirect("/login")
    return redirect("/review" if principal.can_review else "/submissions")


@router.get("/login")
def login_form(request: Request, db: DbSession, next: str = "/"):
    if session_principal(request, db) is not None:
        return redirect(safe_next(next))
    return render(request, "login.html", {"next": safe_next(next), "email": ""})


@router.post("/login")
def login(request: Request, db: DbSession, email: str = Form(""), password: str = Form(""),
          csrf: str = Form(""), next: str = Form("/")):
    if not csrf_ok(request, csrf):
        return render(request, "login.html", {"next": safe_next(next), "email": email,
                                              "error": "The sign-in form expired; please try again."}, status_code=403)
    if not email or not password:
        return render(request, "login.html", {"next": safe_next(next), "email": email,
                                              "error": "Wrong email or password."}, status_code=401)
    address = request.client.host if request.client else "unknown"
    result = sign_in(db, email, password, address, ThrottlePolicy.from_settings(request.app.state.settings))
    if result.retry_after:
        return render(request, "login.html", {
            "next": safe_next(next), "email": email,
            "error": f"Too many failed sign-ins. Try again in {result.retry_after} seconds."},
            status_code=429, headers={"Retry-After": str(result.retry_after)})
    if result.user is None:
        return render(request, "login.html", {"next": safe_next(next), "email": email,
                                              "error": "Wrong email or password."}, status_code=401)
    user = result.user
    discard_initial_credentials(request.app.state.settings.data_dir, user.email)
    start_session(request, user)
    csrf_token(request)
    return redirect(safe_next(next))


@router.post("/logout")
def logout(request: Request, db: DbSession, csrf: str = Form("")):
    """Signing out ends every session of the user, not only this browser's: a copied cookie must not
    outlive the sign-out (the cookie is stateless; only its version ties it to the account)."""
    require_csrf(request, csrf)
    user = session_user(request, db)
    if user is not None:
        account_api.end_my_sessions(principal_of(user), db, why="sign_out")
    request.session.clear()
    flash(request, "You are signed out.")
    return redirect("/login")
