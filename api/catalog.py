"""/api/v1/bases, /suites, /policies: what a submission can be checked against."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentPrincipal, DbSession
from api.schemas import BaseList, PolicyList, SuiteList
from services import catalog

router = APIRouter(tags=["catalog"])


# exclude_unset: each base and policy lists the fields it has, no nulls added (schemas.BaseOut, PolicyOut).
@router.get("/bases", summary="Registered base models", response_model=BaseList, response_model_exclude_unset=True)
def list_bases(principal: CurrentPrincipal, db: DbSession):
    return {"items": catalog.list_bases(db)}


@router.get("/suites", summary="Evaluation suites (name, kind, content hash, size)", response_model=SuiteList)
def list_suites(principal: CurrentPrincipal):
    items = catalog.list_suites()
    return {"items": items or [], "available": items is not None}


@router.get("/policies", summary="Gate policies", response_model=PolicyList, response_model_exclude_unset=True)
def list_policies(principal: CurrentPrincipal):
    items = catalog.list_policies()
    return {"items": items or [], "available": items is not None}
