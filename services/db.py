"""Engines, sessions and migrations. One engine per URL per process (after a fork: ``dispose_engines``)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from ftgate.settings import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE

ROOT = Path(__file__).resolve().parent.parent
_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_makers: dict[str, sessionmaker[Session]] = {}
# (pool_size, max_overflow) per URL, as the edges configure them from the settings (FTGATE_DB_POOL_SIZE,
# FTGATE_DB_MAX_OVERFLOW); a URL nobody configured gets the settings' defaults.
_pools: dict[str, tuple[int, int]] = {}


def clean(obj):
    """JSON-safe on every backend: non-finite floats become null and NUL characters are dropped
    (PostgreSQL refuses both in jsonb and text)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return obj.replace("\x00", "") if "\x00" in obj else obj
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def json_dumps(obj) -> str:
    return json.dumps(clean(obj), default=str)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # API and worker processes read while the other writes
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def configure_pool(url: str, pool_size: int, max_overflow: int) -> None:
    """The connection pool the engine of ``url`` is made with (an edge calls it with its settings before its
    first session). An engine already made with another pool is disposed, so the next use makes it anew."""
    with _lock:
        if _pools.get(url) == (pool_size, max_overflow):
            return
        _pools[url] = (pool_size, max_overflow)
        engine = _engines.pop(url, None)
        _makers.pop(url, None)
    if engine is not None:
        engine.dispose()


def get_engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                       json_serializer=json_dumps)
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                pool_size, max_overflow = _pools.get(url, (DEFAULT_POOL_SIZE, DEFAULT_MAX_OVERFLOW))
                engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow,
                                       json_serializer=json_dumps)
            _engines[url] = engine
        return engine


def session_factory(url: str) -> sessionmaker[Session]:
    engine = get_engine(url)
    with _lock:
        maker = _makers.get(url)
        if maker is None:
            maker = _makers[url] = sessionmaker(engine, expire_on_commit=False)
        return maker


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Forget inherited connections (call in a forked child before it touches the database)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
        _makers.clear()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """`alembic upgrade head` on ``url`` (the same migrations the migrate service runs)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def ping(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))
