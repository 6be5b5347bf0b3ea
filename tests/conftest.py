"""Shared fixtures: a PostgreSQL database per test run (migrated with Alembic), Redis, service settings, an
app client and users with tokens.

PostgreSQL and Redis are taken from FTGATE_TEST_PG_URL (a server URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and FTGATE_TEST_REDIS_URL (default
redis://127.0.0.1:6379/15). An unreachable server skips the tests, or fails them in CI (tests/markers.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.markers import skip_or_fail

PG_SERVER_URL = os.environ.get("FTGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FTGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def unreachable(what: str, err: Exception) -> None:
    skip_or_fail(f"{what} is not reachable ({type(err).__name__}: {err})", "start it to run these tests")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated with `alembic upgrade head`."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    try:
        admin = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # pragma: no cover - depends on the machine
        unreachable(f"PostgreSQL at {PG_SERVER_URL}", e)
    name = f"ftgate_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    from services.db import upgrade

    upgrade(url)
    yield url
    from services.db import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        import redis

        r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        r.ping()
        r.flushdb()
    except Exception as e:  # pragma: no cover - depends on the machine
        unreachable(f"Redis at {REDIS_URL}", e)
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url):
    import redis

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    yield r
    r.close()


@pytest.fixture
def clean_db(pg_url) -> str:
    """Empty every table (TRUNCATE: the audit log's append-only guard refuses DELETE, not TRUNCATE)."""
    from sqlalchemy import text

    from models import Base
    from services.db import get_engine

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine(pg_url).begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    from services import catalog

    catalog.clear_cache()
    return pg_url


@pytest.fixture
def service_settings(clean_db, redis_url, tmp_path):
    """Settings of a service on the test PostgreSQL database and Redis, with storage in tmp_path."""
    from ftgate.settings import Settings

    return Settings(
        data_dir=tmp_path / "data", database_url=clean_db, broker_url=redis_url, storage_dir=tmp_path / "storage",
        secret_key="test-secret-" + "x" * 32, max_upload_bytes=1024 * 1024,
    )


@pytest.fixture
def db(service_settings):
    from services.db import session_factory

    session = session_factory(service_settings.resolved_database_url)()
    yield session
    session.close()


@pytest.fixture
def app(service_settings):
    from api.app import create_app

    return create_app(service_settings)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture
def make_user(service_settings):
    """make_user(role="submitter", org="acme") -> (user_id, token, auth headers)."""
    from services.auth import create_token, create_user
    from services.db import session_scope

    def make(role: str = "submitter", org: str = "acme", email: str | None = None, password: str | None = None):
        with session_scope(service_settings.resolved_database_url) as s:
            user = create_user(s, email or f"{role}-{uuid.uuid4().hex[:6]}@{org}.test", role=role, organisation=org,
                               password=password)
            _, token = create_token(s, user, "test")
            uid = user.id
        return uid, token, {"Authorization": f"Bearer {token}"}

    return make
