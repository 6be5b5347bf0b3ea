"""Passwords (scrypt), API tokens (only a sha256 stored, shown once) and the roles' permissions."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import ApiToken, Organisation, Role, User, utcnow

TOKEN_PREFIX = "ftg_"
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        algo, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if algo != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=len(digest) // 2, n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(got.hex(), digest)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (by token or web session)."""

    user_id: int
    email: str
    role: Role
    organisation_id: int
    token_id: int | None = None

    @property
    def is_staff(self) -> bool:
        """Reviewers and admins see every organisation's submissions."""
        return self.role in (Role.REVIEWER, Role.ADMIN)

    @property
    def can_review(self) -> bool:
        return self.role in (Role.REVIEWER, Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"


def principal_of(user: User, token_id: int | None = None) -> Principal:
    return Principal(user.id, user.email, Role(user.role), user.organisation_id, token_id)


def authenticate_token(session: Session, token: str) -> Principal | None:
    """The principal of a valid, unrevoked, unexpired token of an active user, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.execute(
        select(ApiToken, User).join(User, ApiToken.user_id == User.id).where(ApiToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    tok, user = row
    now = utcnow()
    if tok.revoked_at is not None or (tok.expires_at is not None and tok.expires_at <= now) or not user.is_active:
        return None
    if tok.last_used_at is None or (now - tok.last_used_at).total_seconds() > 60:
        session.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=now))
        session.commit()
    return principal_of(user, tok.id)


_DUMMY_PASSWORD_HASH: list[str] = []  # computed once, on the first sign-in attempt


def _dummy_password_hash() -> str:
    if not _DUMMY_PASSWORD_HASH:
        _DUMMY_PASSWORD_HASH.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY_PASSWORD_HASH[0]


def authenticate_password(session: Session, email: str, password: str) -> User | None:
    """For the web sign-in: the active user with this email and password, else None. Always runs one scrypt,
    also for an unknown email, a deactivated or a token-only user, so the answer's time tells nothing."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    stored = user.password_hash if user is not None and user.password_hash else _dummy_password_hash()
    password_ok = verify_password(password, stored)
    if user is None or not user.is_active or not user.password_hash or not password_ok:
        return None
    user.last_login_at = utcnow()
    session.commit()
    return user


def end_sessions(session: Session, user: User) -> None:
    """Every session cookie issued to ``user`` so far stops working: their stored version no longer matches."""
    session.flush()  # the refresh below must not drop the caller's pending changes
    session.execute(update(User).where(User.id == user.id).values(session_version=User.session_version + 1))
    session.refresh(user)


def change_password(session: Session, user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    end_sessions(session, user)


def change_access(session: Session, user: User, *, role: Role | None = None, is_active: bool | None = None) -> dict:
    """Set the role and/or the active flag; ends the user's sessions when either changes. Returns what changed
    as {field: [old, new]}."""
    changed: dict[str, list[Any]] = {}
    if role is not None and Role(role).value != user.role:
        changed["role"] = [user.role, Role(role).value]
        user.role = Role(role).value
    if is_active is not None and is_active != user.is_active:
        changed["is_active"] = [user.is_active, is_active]
        user.is_active = is_active
    if changed:
        session.flush()
        end_sessions(session, user)
    return changed


def get_or_create_org(session: Session, name: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None:
        org = Organisation(name=name)
        session.add(org)
        session.flush()
    return org


def create_user(
    session: Session, email: str, *, role: Role | str = Role.SUBMITTER, organisation: str = "default",
    password: str | None = None,
) -> User:
    user = User(
        email=email.strip().lower(),
        role=Role(role).value,
        organisation=get_or_create_org(session, organisation),
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    return user


def create_token(
    session: Session, user: User, name: str, *, created_by: int | None = None, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user``: returns the row and the token itself (shown once, never stored). Every
    token expires: ``expires_at``, or DEFAULT_TOKEN_LIFETIME from now (a leaked token must not work forever)."""
    token = new_token()
    row = ApiToken(
        user_id=user.id, name=name, prefix=token[: len(TOKEN_PREFIX) + 6], token_hash=hash_token(token),
        created_by_id=created_by, expires_at=expires_at or utcnow() + DEFAULT_TOKEN_LIFETIME,
    )
    session.add(row)
    session.flush()
    return row, token
