"""evaluation/bases.py: how a derived base (the guarded one) is materialized from its parent."""

from __future__ import annotations

from pathlib import Path

from evaluation import bases, guard


def test_the_guarded_base_is_built_from_the_parent_it_is_handed(monkeypatch, tmp_path):
    parent_dir = tmp_path / "smollm2"
    monkeypatch.setattr(bases, "_convert_smollm2", lambda progress: parent_dir)
    loads = []
    monkeypatch.setattr(bases, "load_base", lambda name, progress=None: loads.append(name) or f"loaded {name}")
    calls = []

    def build(parent, got_dir, load_parent, progress=print):
        calls.append((parent, got_dir))
        assert loads == []  # loading the parent (seconds, memory) waits until a build needs it
        assert load_parent() == "loaded smollm2-135m"
        return tmp_path / "guarded"

    monkeypatch.setattr(guard, "build_guarded_base", build)
    assert bases.materialize("guarded-smollm2") == tmp_path / "guarded"
    assert calls == [("smollm2-135m", parent_dir)] and loads == ["smollm2-135m"]


def test_the_guard_adapter_sits_beside_the_guarded_base():
    assert guard.guard_adapter_dir(Path("/c/bases/guarded-smollm2-abc")) == Path("/c/bases/guarded-smollm2-abc.adapter")
