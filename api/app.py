"""The FastAPI app factory: `uvicorn api.app:create_app --factory`. Everything is under /api/v1."""

from __future__ import annotations

import importlib.util
import logging

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.middleware.sessions import SessionMiddleware

from api import admin, catalog, health, submissions
from api.errors import install_error_handlers
from ftgate.settings import Settings, get_settings
from services.db import session_factory
from services.storage import Storage

log = logging.getLogger("ftgate.api")
API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="ftgate",
        version="0.1.0",
        description="A release gate for LoRA adapters and fine-tuning datasets: upload, and get a stored, "
        "explainable verdict (approve, block or review) on safety and knowledge drift against the base model.",
        docs_url="/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    app.state.settings = settings
    app.state.sessionmaker = session_factory(settings.resolved_database_url)
    app.state.storage = Storage(settings.resolved_storage_dir)
    app.state.storage.ensure()

    from tasks.app import make_celery, send_stage

    app.state.celery = make_celery(settings)
    app.state.send_stage = lambda sub_id, stage: send_stage(app.state.celery, sub_id, stage)

    # Signed session cookie for the web sign-in (api.pages); API clients use Bearer tokens.
    app.add_middleware(
        SessionMiddleware, secret_key=settings.secret_key, session_cookie="ftgate_session", same_site="lax",
        https_only=settings.session_cookie_secure, max_age=12 * 3600,
    )
    install_error_handlers(app)

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(health.router)
    api.include_router(submissions.router)
    api.include_router(catalog.router)
    api.include_router(admin.router)
    app.include_router(api)

    # The web pages (upload form, dashboard) live in api/pages.py, owned by the frontend: included if present.
    if importlib.util.find_spec("api.pages") is not None:
        from api import pages

        app.include_router(pages.router)
        if hasattr(pages, "setup"):
            pages.setup(app)
    else:

        @app.get("/", include_in_schema=False)
        def _root():
            return RedirectResponse("/docs")

    return app
