"""/api/v1/healthz (liveness), /readyz (database, broker, storage), /metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from sqlalchemy import func, select

from api.schemas import Liveness, Readiness
from models import StageRun, SubmissionStatus
from services import queries
from services.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
def healthz() -> Liveness:
    return Liveness(status="ok")


def broker_check(app) -> None:
    with app.state.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def queue_depths(app) -> dict[str, int]:
    out = {}
    with app.state.celery.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        channel = conn.default_channel
        for q in ("cpu", "gpu"):
            try:
                out[q] = channel.queue_declare(queue=q, passive=True).message_count
            except Exception:
                out[q] = 0
    return out


@router.get("/readyz", summary="Readiness: database, broker and storage reachable", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "a check failed; `checks` says which"}})
async def readyz(request: Request) -> JSONResponse:
    app = request.app
    checks: dict[str, str] = {}

    def run(name, fn):
        try:
            fn()
            checks[name] = "ok"
        except Exception as e:
            checks[name] = f"error: {type(e).__name__}: {e}"[:300]

    def all_checks():
        run("database", lambda: ping(app.state.settings.resolved_database_url))
        run("broker", lambda: broker_check(app))
        run("storage", app.state.storage.check)

    await run_in_threadpool(all_checks)
    ok = all(v == "ok" for v in checks.values())
    answer = Readiness(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(answer.model_dump(), status_code=200 if ok else 503)


class DbCollector:
    """Collected at scrape time from the database (workers are other processes) and the broker."""

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        by_status = GaugeMetricFamily("ftgate_submissions", "Submissions by status", labels=["status"])
        durations = SummaryMetricFamily("ftgate_stage_duration_seconds", "Durations of finished stage runs",
                                        labels=["stage"])
        runs = GaugeMetricFamily("ftgate_stage_runs", "Stage runs by stage and outcome", labels=["stage", "status"])
        depth = GaugeMetricFamily("ftgate_queue_depth", "Messages waiting in the broker", labels=["queue"])
        with app.state.sessionmaker() as db:
            counts = queries.submission_counts_by_status(db)
            for st in SubmissionStatus:
                by_status.add_metric([st.value], counts.get(st.value, 0))
            agg: dict[str, list[float]] = {}
            for stage, seconds in queries.stage_durations(db):
                a = agg.setdefault(stage, [0, 0.0])
                a[0] += 1
                a[1] += seconds
            for stage, (n, total) in sorted(agg.items()):
                durations.add_metric([stage], count_value=int(n), sum_value=total)
            for stage, status, n in db.execute(
                select(StageRun.stage, StageRun.status, func.count()).group_by(StageRun.stage, StageRun.status)
            ).all():
                runs.add_metric([stage, status], n)
        try:
            for q, n in queue_depths(app).items():
                depth.add_metric([q], n)
        except Exception:
            pass
        yield from (by_status, durations, runs, depth)


# Not JSON: the Prometheus text format, declared so /docs does not promise an application/json body.
@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={
    200: {"description": "Prometheus text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    app = request.app
    registry = getattr(app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DbCollector(app))
        app.state.metrics_registry = registry
    data = await run_in_threadpool(generate_latest, registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
