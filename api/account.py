"""/api/v1/account: what any signed-in user may do to their own account."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from api.deps import CurrentPrincipal, DbSession
from models import User
from services.auth import Principal, end_sessions
from services.submissions import audit

router = APIRouter(prefix="/account", tags=["account"])


@router.post("/sessions/revoke", status_code=204, summary="Sign out everywhere: end every web session of yours")
def revoke_my_sessions(principal: CurrentPrincipal, db: DbSession) -> Response:
    end_my_sessions(principal, db)
    return Response(status_code=204)


def end_my_sessions(principal: Principal, db: Session, why: str = "sign_out_everywhere") -> None:
    """The caller's session cookies, on every browser, stop working (API tokens are not touched)."""
    user = db.get(User, principal.user_id)
    if user is not None:  # a user deleted meanwhile has no session left to end
        end_sessions(db, user)
    audit(db, "sessions_ended", actor=principal.actor, actor_user_id=principal.user_id,
          details={"user": principal.email, "why": why})
    db.commit()
