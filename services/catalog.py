"""Bases, suites and policies as the API lists them: the evaluation core's registries (imported lazily,
cached briefly; they are cheap to list) merged with the bases an operator registered in the database."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import BaseModelRecord

log = logging.getLogger("ftgate.catalog")
_TTL = 60.0
_cache: dict[str, tuple[float, list[dict] | None]] = {}
_lock = threading.Lock()


def jsonable(obj: Any, depth: int = 0) -> Any:
    """A JSON-able view of a registry object (dataclass, object with to_dict, dict, ...)."""
    if depth > 4:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        try:
            return jsonable(obj.to_dict(), depth + 1)
        except Exception:  # pragma: no cover - fall through to the generic view
            pass
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj)
                if not f.name.startswith("_")}
    if isinstance(obj, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in obj]
    return str(obj)


def _cached(key: str, load) -> list[dict] | None:
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < _TTL:
            return hit[1]
    try:
        value = load()
    except ImportError as e:
        log.info("%s registry not available yet: %s", key, e)
        value = None
    except Exception as e:
        log.warning("%s registry failed: %s", key, e)
        value = None
    with _lock:
        _cache[key] = (now, value)
    return value


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _registry_bases() -> list[dict]:
    from evaluation.bases import list_bases

    out = []
    for b in list_bases():
        d = jsonable(b)
        if not isinstance(d, dict):
            d = {"name": str(getattr(b, "name", b))}
        d.setdefault("name", getattr(b, "name", None))
        d["registered_by"] = "registry"
        out.append(d)
    return out


def _registry_suites() -> list[dict]:
    from evaluation.suites import list_suites

    out = []
    for s in list_suites():
        out.append({
            "name": s.name, "kind": s.kind, "hash": s.hash, "source": str(s.source), "n_items": len(s.items),
            "warnings": list(getattr(s, "warnings", ()) or ()),
        })
    return out


def _registry_policies() -> list[dict]:
    from evaluation.policy import list_policies

    out = []
    for p in list_policies():
        d = jsonable(p)
        if not isinstance(d, dict):
            d = {"name": str(getattr(p, "name", p))}
        d.setdefault("name", getattr(p, "name", None))
        out.append(d)
    return out


def list_bases(session: Session) -> list[dict]:
    items = list(_cached("bases", _registry_bases) or [])
    known = {b.get("name") for b in items}
    for row in session.scalars(select(BaseModelRecord).where(BaseModelRecord.enabled.is_(True)).order_by(BaseModelRecord.name)):
        if row.name in known:
            continue
        items.append({"name": row.name, "source": row.source, "description": row.description,
                      "config": row.config, "registered_by": "operator"})
    return items


def base_names(session: Session) -> set[str] | None:
    """Known base names, or None when the registry cannot be read (then the worker validates)."""
    reg = _cached("bases", _registry_bases)
    if reg is None:
        return None
    names = {b["name"] for b in reg if b.get("name")}
    names |= set(session.scalars(select(BaseModelRecord.name).where(BaseModelRecord.enabled.is_(True))))
    return names


def list_suites() -> list[dict] | None:
    return _cached("suites", _registry_suites)


def list_policies() -> list[dict] | None:
    return _cached("policies", _registry_policies)


def policy_names() -> set[str] | None:
    pols = list_policies()
    return None if pols is None else {p["name"] for p in pols if p.get("name")}


def policy_repair(name: str) -> str | None:
    """The most repair the policy ``name`` allows (off | offer | auto), or None when it cannot be told here."""
    for p in list_policies() or []:
        if p.get("name") == name:
            value = p.get("repair")
            return value if isinstance(value, str) else None
    return None
