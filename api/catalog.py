"""/api/v1/bases, /suites, /policies: what a submission can be checked against."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentPrincipal, DbSession
from services import catalog

router = APIRouter(tags=["catalog"])


@router.get("/bases", summary="Registered base models")
def list_bases(principal: CurrentPrincipal, db: DbSession):
    return {"items": catalog.list_bases(db)}


@router.get("/suites", summary="Evaluation suites (name, kind, content hash, size)")
def list_suites(principal: CurrentPrincipal):
    items = catalog.list_suites()
    return {"items": items or [], "available": items is not None}


@router.get("/policies", summary="Gate policies")
def list_policies(principal: CurrentPrincipal):
    items = catalog.list_policies()
    return {"items": items or [], "available": items is not None}
