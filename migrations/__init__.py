"""Alembic migrations of the ftgate service database (see alembic.ini and services.db.upgrade)."""
