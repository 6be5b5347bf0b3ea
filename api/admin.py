"""/api/v1/admin: users, API tokens (shown once, only a hash stored), base models, the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Admin, AppSettings, DbSession
from api.errors import ApiError, invalid, not_found
from api.schemas import BaseOut, EventList, TokenCreated, TokenList, TokenOut, UserList, UserOut
from api.serve import discard_initial_credentials
from api.views import event_view, token_view, user_view
from models import ApiToken, AuditEvent, BaseModelRecord, Role, User, utcnow
from services import catalog, queries
from services.auth import change_access, change_password, create_token, create_user, end_sessions
from services.submissions import audit

router = APIRouter(prefix="/admin", tags=["admin"])


class UserIn(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    role: Role = Role.SUBMITTER
    organisation: str = Field("default", min_length=1, max_length=200)
    password: str | None = Field(None, min_length=8, max_length=200)


class PasswordIn(BaseModel):
    password: str = Field(min_length=8, max_length=200, description="the new password (at least 8 characters)")


class UserAccessIn(BaseModel):
    role: Role | None = Field(None, description="the new role; omitted: unchanged")
    is_active: bool | None = Field(None, description="false: the user can no longer sign in or use tokens")


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="what the token is for, e.g. 'CI of team X'")
    email: str | None = Field(None, description="owner; created (with role and organisation) if new; default: you")
    role: Role = Role.SUBMITTER
    organisation: str = Field("default", min_length=1, max_length=200)
    expires_at: datetime | None = Field(None, description="when it stops working; default: 90 days from now")


class BaseIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    source: str = Field(min_length=1, description="local path or model id the workers load")
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)


@router.get("/users", response_model=UserList)
def list_users(principal: Admin, db: DbSession):
    return {"items": [user_view(u) for u in queries.list_users(db)]}


@router.post("/users", status_code=201, response_model=UserOut)
def add_user(body: UserIn, principal: Admin, db: DbSession):
    if db.scalar(select(User).where(User.email == body.email.strip().lower())) is not None:
        raise ApiError(409, "conflict", f"user {body.email} exists", field="email")
    user = create_user(db, body.email, role=body.role, organisation=body.organisation, password=body.password)
    audit(db, "user_created", actor=principal.actor, actor_user_id=principal.user_id,
          details={"user": user.email, "role": user.role, "organisation": body.organisation})
    db.commit()
    return user_view(user)


def _user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise not_found(f"user {user_id}")
    return user


@router.post("/users/{user_id}/password", summary="Set a user's password (ends the user's web sessions)",
             response_model=UserOut)
def set_password(user_id: int, body: PasswordIn, principal: Admin, db: DbSession, settings: AppSettings):
    user = _user(db, user_id)
    change_password(db, user, body.password)
    audit(db, "password_set", actor=principal.actor, actor_user_id=principal.user_id, details={"user": user.email})
    db.commit()
    discard_initial_credentials(settings.data_dir, user.email)  # its password is rotated: the file is stale
    return user_view(user)


@router.patch("/users/{user_id}", summary="Change a user's role or deactivate them (ends the user's web sessions)",
              response_model=UserOut)
def change_user_access(user_id: int, body: UserAccessIn, principal: Admin, db: DbSession):
    user = _user(db, user_id)
    if user.id == principal.user_id:
        # An admin who demotes or deactivates themselves may leave nobody to undo it.
        raise ApiError(409, "own_account", "admins cannot change their own role or deactivate themselves")
    changed = change_access(db, user, role=body.role, is_active=body.is_active)
    if "role" in changed:
        audit(db, "user_role_changed", actor=principal.actor, actor_user_id=principal.user_id,
              details={"user": user.email, "from": changed["role"][0], "to": changed["role"][1]})
    if "is_active" in changed:
        audit(db, "user_activated" if user.is_active else "user_deactivated", actor=principal.actor,
              actor_user_id=principal.user_id, details={"user": user.email})
    db.commit()
    return user_view(user)


@router.post("/users/{user_id}/sessions/revoke", status_code=204,
             summary="End every web session of a user (API tokens are revoked one by one)")
def revoke_user_sessions(user_id: int, principal: Admin, db: DbSession) -> Response:
    user = _user(db, user_id)
    end_sessions(db, user)
    audit(db, "sessions_ended", actor=principal.actor, actor_user_id=principal.user_id,
          details={"user": user.email, "why": "admin"})
    db.commit()
    return Response(status_code=204)


@router.get("/tokens", response_model=TokenList)
def list_tokens(principal: Admin, db: DbSession):
    return {"items": [token_view(t) for t in queries.list_tokens(db)]}


@router.post("/tokens", status_code=201, summary="Create an API token (the token is in this answer only)",
             response_model=TokenCreated)
def add_token(body: TokenIn, principal: Admin, db: DbSession):
    if body.expires_at is not None and body.expires_at.replace(tzinfo=body.expires_at.tzinfo or UTC) <= utcnow():
        raise invalid("expires_at", "expires_at must be in the future")
    email = (body.email or principal.email).strip().lower()
    user = db.scalar(select(User).where(User.email == email))
    if user is None:
        user = create_user(db, email, role=body.role, organisation=body.organisation)
        audit(db, "user_created", actor=principal.actor, actor_user_id=principal.user_id,
              details={"user": email, "role": user.role, "organisation": body.organisation})
    row, token = create_token(db, user, body.name, created_by=principal.user_id, expires_at=body.expires_at)
    audit(db, "token_created", actor=principal.actor, actor_user_id=principal.user_id,
          details={"token_id": row.id, "prefix": row.prefix, "user": user.email, "name": body.name})
    db.commit()
    db.refresh(row)
    return {**token_view(row), "token": token, "user": user_view(user)}


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut)
@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(token_id: int, principal: Admin, db: DbSession):
    row = db.get(ApiToken, token_id)
    if row is None:
        raise not_found(f"token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit(db, "token_revoked", actor=principal.actor, actor_user_id=principal.user_id,
              details={"token_id": row.id, "prefix": row.prefix})
        db.commit()
    return token_view(row)


@router.post("/bases", status_code=201, summary="Register a base model", response_model=BaseOut)
def add_base(body: BaseIn, principal: Admin, db: DbSession):
    if db.scalar(select(BaseModelRecord).where(BaseModelRecord.name == body.name)) is not None:
        raise ApiError(409, "conflict", f"base {body.name!r} is already registered", field="name")
    known = catalog.base_names(db)
    if known is not None and body.name in known:
        raise ApiError(409, "conflict", f"base {body.name!r} is already known to the registry", field="name")
    row = BaseModelRecord(name=body.name, source=body.source, description=body.description, config=body.config,
                       created_by_id=principal.user_id)
    db.add(row)
    audit(db, "base_registered", actor=principal.actor, actor_user_id=principal.user_id,
          details={"name": body.name, "source": body.source})
    db.commit()
    return {"name": row.name, "source": row.source, "description": row.description, "config": row.config,
            "registered_by": "operator"}


@router.get("/audit", summary="The append-only audit log, newest first", response_model=EventList)
def audit_log(
    principal: Admin, db: DbSession, submission_id: str | None = None, action: str | None = None,
    limit: int = Query(100, ge=1, le=1000), before_id: int | None = None,
):
    stmt = select(AuditEvent)
    if submission_id:
        stmt = stmt.where(AuditEvent.submission_id == submission_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if before_id:
        stmt = stmt.where(AuditEvent.id < before_id)
    rows = db.scalars(stmt.order_by(AuditEvent.id.desc()).limit(limit)).all()
    return {"items": [event_view(e) for e in rows]}
