"""The API sends pipeline work by task name (services/queue.py) without importing the worker's code."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER_TASKS = ("ftgate.inspect", "ftgate.finetune", "ftgate.evaluate", "ftgate.decide", "ftgate.reap")

# Run in a fresh interpreter: in the test process another test may already have imported tasks.*.
_BUILD_APP_AND_LIST_MODULES = """
import json, sys
from api.app import create_app
from ftgate.settings import Settings

create_app(Settings(data_dir=sys.argv[1], secret_key="k" * 32))
print(json.dumps(sorted(sys.modules)))
"""


def test_building_the_api_imports_neither_the_worker_nor_torch(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _BUILD_APP_AND_LIST_MODULES, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "api.app" in modules and "services.queue" in modules  # the listing is of the right process
    worker = [m for m in modules if m == "tasks" or m.startswith("tasks.")]
    assert worker == [], f"the API imported the worker's modules: {worker}"
    assert "torch" not in modules, "the API imported torch (through the worker or the evaluation core)"


@pytest.mark.parametrize(("stage", "task", "queue"), [
    ("inspect", "ftgate.inspect", "cpu"),
    ("finetune", "ftgate.finetune", "gpu"),
    ("evaluate", "ftgate.evaluate", "gpu"),
    ("decide", "ftgate.decide", "cpu"),
])
def test_a_stage_is_sent_by_name_to_its_queue_on_the_embedded_broker(tmp_path, stage, task, queue):
    from ftgate.settings import Settings
    from services.queue import make_celery, send_stage

    settings = Settings(data_dir=tmp_path, broker_url="", secret_key="k" * 32)  # "": the embedded broker
    app = make_celery(settings)
    assert app.tasks.keys().isdisjoint(WORKER_TASKS), "the sender's app must not register the worker's tasks"
    send_stage(app, "sub-123", stage)

    messages = list((tmp_path / "broker" / "queue").iterdir())
    assert len(messages) == 1
    # kombu's filesystem transport names a message file <time>_<id>.<queue>.msg
    assert messages[0].name.endswith(f".{queue}.msg")
    message = json.loads(messages[0].read_text())
    assert message["headers"]["task"] == task
    assert message["properties"]["delivery_info"]["routing_key"] == queue
    args, _kwargs, _embed = json.loads(_body(message))
    assert args == ["sub-123"]


def _body(message: dict) -> str:
    body = message["body"]
    return base64.b64decode(body).decode() if message["properties"].get("body_encoding") == "base64" else body

