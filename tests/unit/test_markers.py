"""tests/markers.py: a test that cannot run here skips on a developer's machine and fails in CI."""

from __future__ import annotations

import pytest

from tests import markers


def test_outside_ci_it_skips_saying_how_to_run_it(monkeypatch):
    monkeypatch.setattr(markers, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="Redis is not reachable; start it"):
        markers.skip_or_fail("Redis is not reachable", "start it")


def test_in_ci_it_fails(monkeypatch):
    monkeypatch.setattr(markers, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="Redis is not reachable; in CI this test must run"):
        markers.skip_or_fail("Redis is not reachable", "start it")
