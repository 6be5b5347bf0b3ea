"""The one rule for tests that cannot run here: on a developer's machine a missing server, tool or data
set skips them, saying how to get it; in CI (CI=1, true or yes) the same thing fails them, because a
skipped test in CI passes silently and checks nothing."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str, fix: str = "") -> NoReturn:
    """Skip the calling test for ``reason`` (with ``fix``, how to make it run), or fail it in CI."""
    if IN_CI:
        pytest.fail(f"{reason}; in CI this test must run, not skip", pytrace=False)
    pytest.skip(f"{reason}; {fix}" if fix else reason)
