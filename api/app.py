"""The FastAPI app factory: `uvicorn api.app:create_app --factory`. Everything is under /api/v1."""

from __future__ import annotations

import importlib.util
import logging

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from api import account, admin, catalog, health, submissions
from api.errors import install_error_handlers
from api.schemas import ERROR_RESPONSES
from evaluation.runtime import use_runtime
from ftgate.settings import Settings, get_settings
from services.db import configure_pool, session_factory
from services.queue import make_celery, send_stage
from services.storage import Storage
from services.upload_limits import UploadLimiter

log = logging.getLogger("ftgate.api")
API_PREFIX = "/api/v1"
DOCS_ASSETS = "/docs-assets"  # Swagger UI's own files, served from the fastapi-offline package


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.require_secure_secret_key()  # before anything is served: a guessable key signs anyone in
    app = FastAPI(
        title="ftgate",
        version="0.1.0",
        description="A release gate for LoRA adapters and fine-tuning datasets: upload, and get a stored, "
        "explainable verdict (approve, block or review) on safety and knowledge drift against the base model.",
        # /docs is served below from local files: FastAPI's default page loads Swagger UI from a CDN, which
        # a provider's air-gapped gate (and this project's CI machine) can't reach, so the page stayed blank.
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    _install_docs(app)
    app.state.settings = settings
    # The catalog routes list the core's registries (bases, policies): they read the process runtime.
    use_runtime(settings.runtime())
    configure_pool(settings.resolved_database_url, settings.db_pool_size, settings.db_max_overflow)
    app.state.sessionmaker = session_factory(settings.resolved_database_url)
    app.state.storage = Storage(settings.resolved_storage_dir, min_free_bytes=settings.min_free_bytes)
    app.state.storage.ensure()
    # Per-user upload admission, counted in this process (see services/upload_limits.py).
    app.state.upload_limiter = UploadLimiter(settings.max_concurrent_uploads_per_user,
                                             settings.max_uploads_per_minute_per_user)

    # Work is sent by task name (services/queue.py): the API never imports the worker's modules.
    app.state.celery = make_celery(settings)
    app.state.send_stage = lambda sub_id, stage: send_stage(app.state.celery, sub_id, stage)

    # Signed session cookie for the web sign-in (api.pages); API clients use Bearer tokens.
    app.add_middleware(
        SessionMiddleware, secret_key=settings.secret_key, session_cookie="ftgate_session", same_site="lax",
        https_only=settings.session_cookie_secure, max_age=12 * 3600,
    )
    install_error_handlers(app)

    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    api.include_router(health.router)
    api.include_router(submissions.router)
    api.include_router(catalog.router)
    api.include_router(admin.router)
    api.include_router(account.router)
    app.include_router(api)
    # the conventional probe paths at the root too: what load balancers and Kubernetes probes ask by default
    app.add_api_route("/healthz", health.healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", health.readyz, methods=["GET"], include_in_schema=False)

    # The web pages (upload form, dashboard) live in api/pages/, owned by the frontend: included if present.
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


def _install_docs(app: FastAPI) -> None:
    """The interactive API reference at /docs, with Swagger UI's scripts and styles served by ftgate itself."""
    from importlib.resources import files

    openapi_url = app.openapi_url
    if openapi_url is None:  # an app that serves no schema has nothing for the page to show
        return
    # Swagger UI 5 (fastapi-offline's copy): version 4 can't render the OpenAPI 3.1 that FastAPI writes.
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def _docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )
