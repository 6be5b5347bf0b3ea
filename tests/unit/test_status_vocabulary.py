"""The submission statuses have one definition (ftgate/status.py): the service (models), the CI client, the demo
and the pages read it, and the CI client gets it without importing SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_reader_of_the_finished_statuses_shares_one_definition():
    import api.client
    import ftgate.demo
    import models
    from api.pages.web import templates
    from ftgate.status import TERMINAL, SubmissionStatus

    assert models.TERMINAL is TERMINAL and api.client.TERMINAL is TERMINAL and ftgate.demo.TERMINAL is TERMINAL
    assert TERMINAL == {SubmissionStatus.DONE, SubmissionStatus.REJECTED, SubmissionStatus.FAILED,
                        SubmissionStatus.CANCELLED}
    assert set(templates.env.globals["TERMINAL"]) == TERMINAL
    # the page script reads them from the page (data-terminal) instead of keeping its own list
    script = (ROOT / "frontend" / "static" / "app.js").read_text(encoding="utf-8")
    assert '"cancelled"' not in script and "dataset.terminal" in script


def test_the_ci_client_imports_no_database_layer():
    code = "import sys, api.client; print(sorted(m for m in ('sqlalchemy', 'models') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
