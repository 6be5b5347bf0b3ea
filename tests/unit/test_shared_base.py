"""The shared base is verified unchanged after each candidate (issue 12, #5): an adapter whose config said
init_lora_weights="olora" rewrote a shared 4-bit base's weights (72% relative change after unload) for every
later tenant of the worker. The allow-list refuses such configs at inspection; this is the check behind it,
exercised here by loading such an adapter directly, on a tiny 4-bit base."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaluation import bases
from evaluation.bases import weights_checksum
from evaluation.errors import SharedBaseModified
from evaluation.gate import candidate_on_base
from tests.helpers.tiny import TinyBase, save_tiny_base, tiny_causal_lm, tiny_tokenizer, torch_threads


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("shared") / "base", hidden_size=64)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    """A LoRA adapter with non-zero weights for the tiny base (hidden 64)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(tiny_causal_lm(hidden_size=64, seed=0),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapters") / "plain"
    peft_model.save_pretrained(out)
    return out


def with_init(adapter: Path, dest: Path, init) -> Path:
    """A copy of `adapter` whose config asks PEFT for another initialisation (as an upload could)."""
    dest.mkdir()
    for f in adapter.iterdir():
        dest.joinpath(f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dest / "adapter_config.json").read_text())
    cfg["init_lora_weights"] = init
    (dest / "adapter_config.json").write_text(json.dumps(cfg))
    return dest


def shared_4bit_base(tiny_dir: Path, monkeypatch) -> TinyBase:
    """A 4-bit base registered as loaded (as a worker keeps it between jobs)."""
    model = bases.load_4bit_model(tiny_dir, "cpu").eval()
    base = TinyBase(model, tiny_tokenizer(), spec=SimpleNamespace(name="tiny-4bit"))
    monkeypatch.setitem(bases._LOADED, "tiny-4bit", base)
    return base


def test_checksum_is_stable_and_sees_a_rewritten_matrix():
    import torch

    model = tiny_causal_lm(hidden_size=32)
    first = weights_checksum(model)
    assert weights_checksum(model) == first
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(0.5)
    assert weights_checksum(model) != first


def test_checksum_samples_tensors_over_2_to_the_24_elements():
    """A float32 linspace of indices rounded past the end of SmolLM2-135M's embedding (49152 x 576)."""
    import torch

    model = torch.nn.Module()
    model.register_buffer("embedding", torch.zeros(49152 * 576, dtype=torch.uint8))
    first = weights_checksum(model)
    model.embedding[-1] = 1  # the last element is one of the samples
    assert weights_checksum(model) != first


def test_olora_adapter_on_the_shared_4bit_base_is_caught(tiny_dir, adapter_dir, tmp_path, monkeypatch):
    import torch

    base = shared_4bit_base(tiny_dir, monkeypatch)
    olora = with_init(adapter_dir, tmp_path / "olora", "olora")
    with torch_threads(1), pytest.raises(SharedBaseModified) as info:
        with candidate_on_base(base, olora, torch.float32, label="adapter abc123") as candidate:
            assert candidate is not None
    assert "tiny-4bit" in str(info.value) and "adapter abc123" in str(info.value)
    assert "tiny-4bit" not in bases._LOADED  # the next job loads the base again from disk


def test_ordinary_adapter_leaves_the_shared_4bit_base_as_it_was(tiny_dir, adapter_dir, monkeypatch):
    import torch

    base = shared_4bit_base(tiny_dir, monkeypatch)
    before = weights_checksum(base.model)
    ids = torch.tensor([[3, 6, 7, 2, 4]])
    with torch_threads(1), torch.inference_mode():
        with candidate_on_base(base, adapter_dir, torch.float32) as candidate:
            candidate(ids)
    assert weights_checksum(base.model) == before
    assert bases._LOADED["tiny-4bit"] is base
    assert not any("lora" in name for name, _ in base.model.named_modules())


def test_fp32_base_is_never_touched_the_candidate_is_a_copy(adapter_dir, tmp_path):
    import torch

    base = TinyBase(tiny_causal_lm(hidden_size=64, seed=0), tiny_tokenizer())
    before = weights_checksum(base.model)
    olora = with_init(adapter_dir, tmp_path / "olora", "olora")
    with torch_threads(1), candidate_on_base(base, olora, torch.float32):
        pass
    assert weights_checksum(base.model) == before
