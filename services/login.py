"""Password sign-in with throttling: failed attempts are counted per account and per client address, in the
database (every API process sees the same counts); past a free allowance each further failure doubles the
wait before the next attempt is even checked. Failed sign-ins are audited."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import LoginThrottle, User, utcnow
from services.auth import authenticate_password
from services.submissions import audit

# A counter with no new failure for this long starts again from zero (longer than any wait, so waiting out
# the longest backoff does not reset it).
FORGET_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures_per_account: int = 5
    free_failures_per_address: int = 20
    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 900.0

    @classmethod
    def from_settings(cls, settings) -> ThrottlePolicy:
        return cls(settings.login_free_failures_per_account, settings.login_free_failures_per_address,
                   settings.login_first_backoff_seconds, settings.login_max_backoff_seconds)

    def wait_after(self, failures: int, free: int) -> timedelta | None:
        """How long the key waits after its ``failures``-th failure (None while within the allowance)."""
        if failures < free:
            return None
        return timedelta(seconds=min(self.max_backoff_seconds, self.first_backoff_seconds * 2 ** (failures - free)))


@dataclass(frozen=True)
class SignIn:
    """The outcome: ``user`` when signed in; else ``retry_after`` (seconds) when throttled, or neither when refused."""

    user: User | None = None
    retry_after: int | None = None


def account_key(email: str) -> str:
    return f"account:{email.strip().lower()[:320]}"


def address_key(address: str) -> str:
    return f"address:{address[:64]}"


def sign_in(session: Session, email: str, password: str, address: str, policy: ThrottlePolicy) -> SignIn:
    """Check the throttle, then the password; count and audit a failure, forget the account's on success."""
    now = utcnow()
    keys = {account_key(email): policy.free_failures_per_account,
            address_key(address): policy.free_failures_per_address}
    wait = _seconds_blocked(session, keys, now)
    if wait:
        return SignIn(retry_after=wait)
    user = authenticate_password(session, email, password)
    if user is not None:
        _forget(session, account_key(email))
        session.commit()
        return SignIn(user=user)
    known = session.scalar(select(User.id).where(User.email == email.strip().lower()))
    for key, free in keys.items():
        _count_failure(session, key, free, policy, now)
    audit(session, "login_failed", actor=f"address:{address}", actor_user_id=known,
          details={"email": email.strip().lower()[:320], "address": address, "known_account": known is not None})
    session.commit()
    return SignIn()


def _seconds_blocked(session: Session, keys: dict[str, int], now: datetime) -> int | None:
    waits = [row.blocked_until for key in keys if (row := session.get(LoginThrottle, key)) is not None
             and row.blocked_until is not None and row.blocked_until > now]
    return math.ceil((max(waits) - now).total_seconds()) if waits else None


def _count_failure(session: Session, key: str, free: int, policy: ThrottlePolicy, now: datetime) -> None:
    row = session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():  # two first failures at once: the loser counts on the winner's row
                row = LoginThrottle(key=key, failures=0, last_failure_at=now)
                session.add(row)
        except IntegrityError:
            row = session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
            if row is None:  # the winner's row was forgotten in between (its login succeeded): no count to add to
                return
    if now - row.last_failure_at > FORGET_AFTER:
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    wait = policy.wait_after(row.failures, free)
    row.blocked_until = now + wait if wait else None


def _forget(session: Session, key: str) -> None:
    row = session.get(LoginThrottle, key)
    if row is not None:
        session.delete(row)
