"""The training-free repair of an uploaded adapter (evaluation/safelora.py): the projection on the guard's safety
subspace, the layer selection by similarity and the refactoring into a LoRA of the same rank, on tiny random
adapters; then the repaired adapter judged like a candidate on a tiny base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evaluation.safelora import cosine, load_lora, project, refactor, repair_lora, safety_basis
from tests.helpers.adapters import edit_tensors, make_adapter


def _low_rank(out: int, inner: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, inner, generator=g,
                                                                                  dtype=torch.float64)


def test_an_update_inside_the_safety_subspace_is_kept_and_one_outside_is_removed():
    v = _low_rank(32, 24, 4, seed=0)  # the guard's update: rank 4
    basis = safety_basis(v)
    assert basis.shape == (32, 4) and torch.allclose(basis.T @ basis, torch.eye(4, dtype=torch.float64), atol=1e-10)
    inside = basis @ torch.randn(4, 24, dtype=torch.float64)
    assert torch.allclose(project(inside, basis), inside, atol=1e-10)
    assert cosine(inside, project(inside, basis)) == pytest.approx(1.0)
    # a direction orthogonal to every safety direction
    orth = torch.linalg.qr(torch.cat([basis, torch.randn(32, 1, dtype=torch.float64)], dim=1)).Q[:, 4:]
    outside = orth @ torch.randn(1, 24, dtype=torch.float64)
    assert torch.allclose(project(outside, basis), torch.zeros_like(outside), atol=1e-10)
    assert cosine(outside, project(outside, basis)) == pytest.approx(0.0, abs=1e-9)
    assert safety_basis(torch.zeros(8, 8)).shape == (8, 0)


def test_refactoring_gives_a_lora_of_the_same_rank_with_the_same_update():
    delta = _low_rank(32, 24, 3, seed=1)
    a, b = refactor(delta, rank=8, scale=2.0, dtype=torch.float32)
    assert a.shape == (8, 24) and b.shape == (32, 8) and a.dtype == torch.float32
    assert torch.allclose((b.double() @ a.double()) * 2.0, delta, atol=1e-4)
    full = _low_rank(32, 24, 12, seed=2)  # more than the rank: the best rank-8 approximation
    a, b = refactor(full, rank=8, scale=1.0, dtype=torch.float64)
    assert int(torch.linalg.matrix_rank(b @ a)) == 8
    s = torch.linalg.svdvals(full)
    assert float(torch.linalg.norm(full - b @ a)) == pytest.approx(float(torch.sqrt((s[8:] ** 2).sum())), rel=1e-6)


@pytest.fixture
def adapters(tmp_path):
    """A customer adapter and a 'guard' on the same tiny model; the customer's q_proj of layer 0 is the guard's
    own update (inside the safety subspace), its other modules random."""
    guard = make_adapter(tmp_path / "guard", r=4, target_modules=("q_proj", "v_proj"), seed=1, readme=False)
    customer = make_adapter(tmp_path / "customer", r=4, target_modules=("q_proj", "v_proj", "o_proj"), seed=2,
                            readme=False)
    from safetensors.torch import load_file

    guard_tensors = load_file(str(guard / "adapter_model.safetensors"))

    def copy_layer0_q(tensors):
        for key in tensors:
            if "layers.0.self_attn.q_proj" in key:
                tensors[key] = guard_tensors[key].clone()
        return tensors

    edit_tensors(customer, copy_layer0_q)
    return customer, guard


def test_the_threshold_selects_the_layers_that_point_away_from_the_safety_subspace(adapters, tmp_path):
    customer, guard = adapters
    info = repair_lora(customer, guard, tmp_path / "out", threshold=0.5)
    by_name = {la["module"]: la for la in info["per_layer"]}
    assert info["layers"] == 6 and info["unmatched_layers"] == 2  # o_proj: the guard does not touch it
    same = by_name["model.layers.0.self_attn.q_proj"]
    assert same["similarity"] == pytest.approx(1.0) and not same["projected"]
    for name, la in by_name.items():
        if "o_proj" in name:
            assert la["similarity"] is None and not la["projected"]
        elif name != "model.layers.0.self_attn.q_proj":
            assert la["projected"] == (la["similarity"] < 0.5)
    assert info["projected_layers"] == sum(la["projected"] for la in by_name.values()) >= 1
    assert 0 < info["update_norm_kept"] < 1
    # threshold 0 projects nothing (a similarity is never negative); 1 projects every matched layer that is not
    # already inside the subspace
    assert repair_lora(customer, guard, tmp_path / "none", threshold=0.0)["projected_layers"] == 0
    assert repair_lora(customer, guard, tmp_path / "all", threshold=1.0)["projected_layers"] >= info["projected_layers"]

    # the written adapter: the same config and rank; projected layers hold C dW, the others are unchanged
    config, before, _ = load_lora(customer)
    new_config, after, _ = load_lora(tmp_path / "out")
    _, guard_modules, _ = load_lora(guard)
    assert new_config == config
    for name, m in after.items():
        assert m.a.shape == before[name].a.shape and m.b.shape == before[name].b.shape
        if by_name[name]["projected"]:
            expected = project(before[name].delta, safety_basis(guard_modules[name].delta))
            assert torch.allclose(m.delta, expected, atol=1e-5)
        else:
            assert torch.equal(m.a, before[name].a) and torch.equal(m.b, before[name].b)


def test_a_transposed_adapter_is_refused_by_name(adapters, tmp_path):
    from evaluation.errors import InputRejected
    from tests.helpers.adapters import edit_config

    customer, guard = adapters
    edit_config(customer, fan_in_fan_out=True)
    with pytest.raises(InputRejected, match="fan-in-fan-out"):
        repair_lora(customer, guard, tmp_path / "out", threshold=0.5)


def test_an_uploaded_adapter_is_repaired_and_judged_like_a_candidate(adapters, tmp_path, monkeypatch):
    """On a tiny base registered as an operator base (the adapters' shapes: hidden 32), with the keyword judge."""
    from evaluation import gate
    from evaluation.bases import evict_base
    from evaluation.repair import RepairConfig, repair_adapter
    from ftgate.settings import get_settings
    from tests.helpers.tiny import save_tiny_base, torch_threads

    customer, guard = adapters
    base_dir = save_tiny_base(tmp_path / "base", hidden_size=32)
    bases = tmp_path / "bases.toml"
    bases.write_text(f'[[base]]\nname = "tiny-safelora"\npath = {json.dumps(str(base_dir))}\n')
    for key, value in {"CACHE_DIR": tmp_path / "cache", "BASES_FILE": bases, "DTYPE": "float32",
                       "DEFAULT_JUDGE": "keyword", "MAX_NEW_TOKENS": 8, "EXTENDED_MAX_NEW_TOKENS": 0}.items():
        monkeypatch.setenv(f"FTGATE_{key}", str(value))
    get_settings.cache_clear()
    runtime = get_settings().runtime()  # read as an edge reads them, handed to the core
    # the adapter's benign control: a short recipe, to keep this test in seconds
    real = gate.TrainingConfig
    monkeypatch.setattr(gate, "TrainingConfig", lambda: real.from_overrides(
        {"steps": 2, "rank": 4, "alpha": 8, "batch_size": 4, "optimizer": "adamw"}))
    try:
        with torch_threads(1):
            insp = gate.inspect_submission(customer, "adapter", "tiny-safelora", workdir=tmp_path / "w",
                                           runtime=runtime)
            # the base has no guard beside it: nothing to project on, said so
            skipped = repair_adapter(insp, "tiny-safelora", runtime=runtime)
            assert skipped["status"] == "skipped" and "no safety adapter" in skipped["reason"]
            repair = repair_adapter(insp, "tiny-safelora", guard_dir=guard, policy="default", mode="auto",
                                    config=RepairConfig(similarity_threshold=0.5), runtime=runtime)
            again = repair_adapter(insp, "tiny-safelora", guard_dir=guard, policy="default",
                                   config=RepairConfig(similarity_threshold=0.5), runtime=runtime)
    finally:
        evict_base("tiny-safelora")
        get_settings.cache_clear()
    assert repair["status"] == "done" and repair["task_loss"] is None
    assert repair["decision"] in ("approve", "review", "block") and repair["reasons"]
    assert repair["released"] == (repair["decision"] == "approve")
    assert {"lo", "hi"} <= set(repair["metrics"]["asr"]["delta"])
    assert repair["projection"]["projected_layers"] == len(repair["projection"]["projected"]) >= 1
    assert Path(repair["adapter_path"], "adapter_model.safetensors").exists()
    assert again["adapter_path"] == repair["adapter_path"] and again["metrics"] == repair["metrics"]  # cached


def test_a_lora_bias_is_projected_with_its_layer_not_taken_for_lora_b(adapters, tmp_path):
    """PEFT's lora_bias adds ``lora_B.bias`` (out,) beside ``lora_B.weight``; the gate accepts it. It is part of
    the layer's update (in the output space), so a projected layer's bias is projected too, and keeps its shape."""
    from tests.helpers.adapters import edit_config

    customer, guard = adapters
    edit_config(customer, lora_bias=True)
    g = torch.Generator().manual_seed(3)

    def add_biases(tensors):
        for key in [k for k in tensors if k.endswith("lora_B.weight")]:
            tensors[key.removesuffix("weight") + "bias"] = torch.randn(tensors[key].shape[0], generator=g)
        return tensors

    edit_tensors(customer, add_biases)
    info = repair_lora(customer, guard, tmp_path / "out", threshold=1.0)
    by_name = {la["module"]: la for la in info["per_layer"]}
    from safetensors.torch import load_file

    before, after = load_file(str(customer / "adapter_model.safetensors")), load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    _, guard_modules, _ = load_lora(guard)
    _, before_modules, _ = load_lora(customer)
    for name, la in by_name.items():
        key = next(k for k in before if k.endswith(f"{name}.lora_B.bias"))
        assert after[key].shape == before[key].shape
        assert before_modules[name].b.shape == before[key.removesuffix("bias") + "weight"].shape  # B is the weight
        if la["projected"]:
            basis = safety_basis(guard_modules[name].delta)
            assert torch.allclose(after[key].double(), project(before[key][:, None], basis)[:, 0], atol=1e-5)
        else:
            assert torch.equal(after[key], before[key])
    assert info["projected_layers"] >= 1
