"""evaluation/bases.py: how a derived base (the guarded one) is materialized from its parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation import bases, guard
from evaluation.errors import UnknownName
from evaluation.runtime import Runtime
from tests.helpers.runtime import installed_runtime


def test_the_guarded_base_is_built_from_the_parent_it_is_handed(monkeypatch, tmp_path):
    parent_dir = tmp_path / "smollm2"
    runtime = Runtime(cache_dir=tmp_path / "cache")
    converted_in = []
    monkeypatch.setattr(bases, "_convert_smollm2",
                        lambda progress, cache_dir: converted_in.append(cache_dir) or parent_dir)
    loads = []
    monkeypatch.setattr(bases, "load_base",
                        lambda name, progress=None, *, runtime: loads.append((name, runtime)) or f"loaded {name}")
    calls = []

    def build(parent, got_dir, load_parent, *, cache_dir, progress=print):
        calls.append((parent, got_dir, cache_dir))
        assert loads == []  # loading the parent (seconds, memory) waits until a build needs it
        assert load_parent() == "loaded smollm2-135m"
        return tmp_path / "guarded"

    monkeypatch.setattr(guard, "build_guarded_base", build)
    assert bases.materialize("guarded-smollm2", runtime=runtime) == tmp_path / "guarded"
    # the runtime handed in decides where the parent is converted and the guarded base is built
    assert calls == [("smollm2-135m", parent_dir, tmp_path / "cache")] and converted_in == [tmp_path / "cache"]
    assert loads == [("smollm2-135m", runtime)]


def test_a_runtime_handed_in_reads_its_own_bases_file(tmp_path):
    bases_file = tmp_path / "bases.toml"
    bases_file.write_text('[[base]]\nname = "team-base"\npath = "/models/team"\nload_in_4bit = true\n')
    spec = bases.get_base_spec("team-base", Runtime(bases_file=bases_file))
    assert spec.source == "/models/team" and spec.load_in_4bit
    with pytest.raises(UnknownName, match="team-base"):
        bases.get_base_spec("team-base")  # not this process's: its runtime names no bases file
    with installed_runtime(Runtime(bases_file=bases_file)):
        assert "team-base" in {b.name for b in bases.list_bases()}


def test_the_evaluation_dtype_follows_the_runtime():
    import torch

    assert bases.compute_dtype(Runtime(dtype="float32", device="cuda")) == torch.float32
    assert bases.compute_dtype(Runtime(dtype="bfloat16")) == torch.bfloat16
    assert bases.compute_dtype(Runtime(device="cuda")) == torch.bfloat16  # auto on a GPU
    with pytest.raises(ValueError, match="dtype must be one of auto, bfloat16, float32"):
        Runtime(dtype="float8")


def test_the_guard_adapter_sits_beside_the_guarded_base():
    assert guard.guard_adapter_dir(Path("/c/bases/guarded-smollm2-abc")) == Path("/c/bases/guarded-smollm2-abc.adapter")
