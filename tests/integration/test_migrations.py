"""The Alembic migrations create exactly the tables the models describe, on PostgreSQL and on SQLite."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from models import Base
from services.db import get_engine, upgrade

pytestmark = pytest.mark.integration


def _diff(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_postgres_migrated_from_empty_matches_models(pg_url):
    engine = get_engine(pg_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    assert _diff(engine) == []
    from alembic.script import ScriptDirectory

    from services.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config(pg_url)).get_current_head()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_sqlite_upgrade_downgrade_upgrade_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    engine = create_engine(url)
    assert _diff(engine) == []
    from alembic import command

    from services.db import alembic_config

    command.downgrade(alembic_config(url), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert _diff(engine) == []
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_audit_events_are_append_only_in_the_database(backend, request, tmp_path):
    if backend == "sqlite":  # needs no PostgreSQL: the SQLite case runs (and fails) on its own
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        upgrade(url)
        engine = create_engine(url)
    else:
        engine = create_engine(request.getfixturevalue("pg_url"))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_events (at, actor, action, details) VALUES (CURRENT_TIMESTAMP, 't', 'probe', '{}')"))
    for stmt in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(stmt))
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_events WHERE action = 'probe'")).scalar() >= 1
    engine.dispose()
