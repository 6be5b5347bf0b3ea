"""docker-compose.yml and the Dockerfile, checked by parsing (no Docker engine here): services, images,
commands, healthchecks, volumes and settings refer to things that exist."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _cmd(svc: dict) -> list[str]:
    c = svc.get("command", [])
    return shlex.split(c) if isinstance(c, str) else list(c)


def test_services_images_and_build(compose):
    s = compose["services"]
    assert set(s) == {"postgres", "redis", "migrate", "api", "worker-cpu", "worker-gpu"}
    assert s["postgres"]["image"].startswith("postgres:") and s["redis"]["image"].startswith("redis:")
    for name in ("migrate", "api", "worker-cpu", "worker-gpu"):
        assert s[name]["build"] == "." and s[name]["image"] == "ftgate:latest"
    assert (ROOT / "Dockerfile").exists()


def test_dockerfile_copies_what_exists_and_runs_the_app():
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    for pkg in ("models", "migrations", "services", "tasks", "api", "evaluation", "ftgate"):
        assert f"COPY {pkg} " in text
    assert '"api.app:create_app", "--factory"' in text


def test_commands_reference_real_modules_and_queues(compose):
    from models import STAGE_QUEUE
    from tasks.app import QUEUES

    s = compose["services"]
    api = _cmd(s["api"])
    assert api[0] == "uvicorn" and "--factory" in api
    module, attr = api[1].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert _cmd(s["migrate"]) == ["alembic", "upgrade", "head"] and (ROOT / "alembic.ini").exists()
    served = set()
    for name in ("worker-cpu", "worker-gpu"):
        cmd = _cmd(s[name])
        assert cmd[:4] == ["celery", "-A", "tasks.app", "worker"]
        importlib.import_module(cmd[2])
        queues = set(cmd[cmd.index("-Q") + 1].split(","))
        assert queues <= set(QUEUES)
        served |= queues
    assert set(STAGE_QUEUE.values()) <= served  # every stage's queue has a worker
    assert "gpu" in _cmd(s["worker-gpu"]) and "solo" in _cmd(s["worker-gpu"])


def test_healthchecks(compose, tmp_path):
    s = compose["services"]
    for name in ("postgres", "redis", "api", "worker-cpu", "worker-gpu"):
        hc = s[name].get("healthcheck")
        assert hc and hc["test"][0] in ("CMD", "CMD-SHELL"), name
    url = re.search(r"http://127\.0\.0\.1:8000(/[\w/]+)", " ".join(s["api"]["healthcheck"]["test"])).group(1)
    from api.app import create_app
    from ftgate.settings import Settings

    paths = create_app(Settings(data_dir=tmp_path, secret_key="k" * 32)).openapi()["paths"]
    assert url in paths
    assert "inspect ping -d cpu@$$HOSTNAME" in s["worker-cpu"]["healthcheck"]["test"][1]
    assert "-n" in _cmd(s["worker-cpu"]) and "cpu@%h" in _cmd(s["worker-cpu"])


def test_dependencies_volumes_and_gpu(compose):
    s = compose["services"]
    for name, svc in s.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in s, f"{name} depends on unknown {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully", "service_started")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in s[dep]
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    declared = set(compose["volumes"])
    for name, svc in s.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            assert src in declared, f"{name} mounts undeclared volume {src}"
    assert s["api"]["volumes"] == s["worker-cpu"]["volumes"] == s["worker-gpu"]["volumes"]  # shared storage
    dev = s["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]


def test_environment_is_settings(compose):
    from ftgate.settings import Settings

    fields = set(Settings.model_fields)
    s = compose["services"]
    for name in ("migrate", "api", "worker-cpu", "worker-gpu"):
        env = s[name]["environment"]
        for key in env:
            assert key.startswith("FTGATE_") and key[7:].lower() in fields, f"{name}: {key} is not a setting"
    env = s["api"]["environment"]
    db = env["FTGATE_DATABASE_URL"]
    assert db.startswith("postgresql+psycopg://") and "@postgres:5432/" in db
    assert db.rsplit("/", 1)[1] == s["postgres"]["environment"]["POSTGRES_DB"]
    assert env["FTGATE_BROKER_URL"].startswith("redis://redis:6379")
    assert s["worker-gpu"]["environment"]["FTGATE_DEVICE"] == "cuda"
