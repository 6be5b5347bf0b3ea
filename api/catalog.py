"""/api/v1/bases, /suites, /policies: what a submission can be checked against."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from api.deps import current_principal, get_db
from services import catalog
from services.auth import Principal

router = APIRouter(tags=["catalog"])


@router.get("/bases", summary="Registered base models")
def list_bases(principal: Principal = Depends(current_principal), db: Session = Depends(get_db)):
    return {"items": catalog.list_bases(db)}


@router.get("/suites", summary="Evaluation suites (name, kind, content hash, size)")
def list_suites(principal: Principal = Depends(current_principal)):
    items = catalog.list_suites()
    return {"items": items or [], "available": items is not None}


@router.get("/policies", summary="Gate policies")
def list_policies(principal: Principal = Depends(current_principal)):
    items = catalog.list_policies()
    return {"items": items or [], "available": items is not None}
