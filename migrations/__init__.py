"""Alembic migrations of the ftgate service database (see alembic.ini and services.db.upgrade).

env.py finds the URL (-x url=..., alembic.ini, else the settings); versions/ holds one file a schema change,
written against models/. Imports models and ftgate.settings only.
"""
