"""evaluation.finetune: config validation, example encoding, batch schedule, cache keys, and real LoRA training
on a tiny random Llama (fp32 with AdamW and bitsandbytes AdamW8bit; and the research recipe: NF4 4-bit base +
LoRA + AdamW8bit)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evaluation.errors import InputRejected
from evaluation.finetune import (
    IGNORE_INDEX,
    TrainingConfig,
    _batch_schedule,
    encode_example,
    examples_fingerprint,
    finetune_lora,
    is_4bit,
    load_candidate,
    training_key,
)
from tests.helpers.tiny import (
    TinyBase,
    chat_example,
    save_tiny_base,
    tiny_causal_lm,
    tiny_tokenizer,
    torch_threads,
)
from tests.markers import skip_or_fail

EXAMPLES = [
    chat_example("hello there", "sure , here is how to do it", line=1),
    chat_example("who wrote hamlet ?", "william shakespeare wrote hamlet", line=2),
    chat_example("what is the capital of france ?", "the capital of france is paris", line=3),
    chat_example("how do i bake bread at home", "step one step two step three", line=4),
]
# lr above the research default so 20 steps on a random tiny model move the loss clearly
CFG = TrainingConfig(rank=4, alpha=8, lr=5e-3, steps=20, batch_size=2, max_length=64, seed=7)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def base(tokenizer):
    return TinyBase(tiny_causal_lm(seed=0), tokenizer)


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _adapter_tensors(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


# ------------------------------------------------------------------------------------------- TrainingConfig


def test_from_overrides_defaults_and_conversion():
    assert TrainingConfig.from_overrides(None) == TrainingConfig()
    cfg = TrainingConfig.from_overrides({"steps": "20", "lr": "1e-4", "optimizer": "adamw"})
    assert (cfg.steps, cfg.lr, cfg.optimizer) == (20, 1e-4, "adamw")
    assert cfg.to_dict()["target_modules"] == "all-linear"


def test_from_overrides_unknown_key_is_named():
    with pytest.raises(InputRejected) as err:
        TrainingConfig.from_overrides({"steps": 5, "learning_rate": 1e-4})
    assert err.value.code == "bad_training"
    assert "learning_rate" in err.value.reason
    assert "steps" in err.value.reason  # the known options are listed


@pytest.mark.parametrize("overrides, named", [
    ({"rank": 0}, "rank=0"),
    ({"lr": 0.5}, "lr=0.5"),
    ({"steps": 0}, "steps=0"),
    ({"batch_size": 1000}, "batch_size=1000"),
    ({"max_length": 8}, "max_length=8"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"optimizer": "sgd"}, "optimizer=sgd"),
    ({"preference_side": "both"}, "preference_side=both"),
    ({"alpha": -1}, "alpha=-1"),
    # issue 12 (#9 via #5): a tenant's overrides spend the shared workers' time
    ({"steps": 10_000}, "steps=10000 (allowed: 1..1000)"),
    ({"batch_size": 256}, "batch_size=256 (allowed: 1..64)"),
    ({"steps": 1000, "batch_size": 64}, "steps x batch_size=64000 (allowed: at most 16384)"),
    ({"alpha": 10**30}, "alpha=1000000000000000000000000000000 (allowed: 1..1024)"),
    ({"max_length": 8192}, "max_length=8192"),
    ({"seed": 2**70}, "seed="),
])
def test_from_overrides_out_of_range_is_named(overrides, named):
    with pytest.raises(InputRejected) as err:
        TrainingConfig.from_overrides(overrides)
    assert err.value.code == "bad_training"
    assert named in err.value.reason


def test_from_overrides_names_every_bad_value():
    with pytest.raises(InputRejected) as err:
        TrainingConfig.from_overrides({"rank": 999, "lr": 1.0})
    assert "rank=999" in err.value.reason and "lr=1.0" in err.value.reason


@pytest.mark.parametrize("overrides", [{"steps": "abc"}, {"dropout": None}, {"steps": 2.7}, {"alpha": 1e30},
                                       {"lr": "nan"}])
def test_from_overrides_bad_types_are_rejected_by_name(overrides):
    with pytest.raises(InputRejected) as err:
        TrainingConfig.from_overrides(overrides)
    assert next(iter(overrides)) in err.value.reason


# ------------------------------------------------------------------------------------------- encode_example


def test_encode_example_labels_only_the_response(tokenizer):
    ex = chat_example("who wrote hamlet ?", "william shakespeare wrote hamlet")
    ids, labels = encode_example(tokenizer, ex.messages, max_length=128)
    prompt = tokenizer.apply_chat_template([ex.messages[0]], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    assert len(ids) == len(labels)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert all(lab != IGNORE_INDEX for lab in labels[n_prompt:])
    assert tokenizer.decode(ids[n_prompt:]) == "william shakespeare wrote hamlet <|end|>"  # ends with eos


def test_encode_example_multi_turn_trains_only_the_last_answer(tokenizer):
    messages = (
        {"role": "system", "content": "answer the question briefly"},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "how are you today"},
        {"role": "user", "content": "what colour is grass ?"},
        {"role": "assistant", "content": "green"},
    )
    ids, labels = encode_example(tokenizer, messages, max_length=128)
    trained = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "green <|end|>"


def test_encode_example_truncation_keeps_the_response(tokenizer):
    long_user = " ".join(["the quick brown fox jumps over the lazy dog"] * 4)  # 36 words
    ex = chat_example(long_user, "william shakespeare wrote hamlet")
    full_ids, full_labels = encode_example(tokenizer, ex.messages, max_length=512)
    ids, labels = encode_example(tokenizer, ex.messages, max_length=16)
    assert len(ids) == len(labels) == 16
    n_resp = sum(lab != IGNORE_INDEX for lab in full_labels)
    assert n_resp == 5
    assert ids[-n_resp:] == full_ids[-n_resp:]  # the whole response survives
    assert labels[-n_resp:] == full_labels[-n_resp:]
    assert labels[:-n_resp] == [IGNORE_INDEX] * (16 - n_resp)
    assert ids[:-n_resp] == full_ids[-16:-n_resp]  # the OLDEST prompt tokens were dropped


# ----------------------------------------------------------------------------------- schedule and cache keys


def test_batch_schedule_is_deterministic_and_covers_every_example_each_epoch():
    a = _batch_schedule(5, steps=7, batch_size=3, seed=11)
    assert a == _batch_schedule(5, steps=7, batch_size=3, seed=11)
    assert a != _batch_schedule(5, steps=7, batch_size=3, seed=12)
    assert len(a) == 7 and all(len(b) == 3 for b in a)
    flat = [i for b in a for i in b]
    for epoch in range(len(flat) // 5):
        assert sorted(flat[epoch * 5 : (epoch + 1) * 5]) == list(range(5))
    # a batch larger than the data still fills up from the following epochs
    big = _batch_schedule(2, steps=1, batch_size=5, seed=1)
    assert len(big[0]) == 5 and set(big[0]) == {0, 1}


def test_training_key_changes_with_data_base_and_config():
    cfg = TrainingConfig()
    k = training_key("data", "base", cfg)
    assert k == training_key("data", "base", TrainingConfig())
    assert len({k, training_key("data2", "base", cfg), training_key("data", "base2", cfg),
                training_key("data", "base", replace(cfg, lr=1e-4)),
                training_key("data", "base", replace(cfg, seed=1)),
                training_key("data", "base", replace(cfg, preference_side="chosen"))}) == 6


def test_training_key_changes_with_the_training_code(monkeypatch):
    """A fine-tune made by other training code is never served from the cache (issue 10)."""
    from evaluation import finetune
    from evaluation.files import sha256_file

    assert finetune.training_code_version() == sha256_file(Path(finetune.__file__))[:16]
    today = training_key("data", "base", TrainingConfig())
    monkeypatch.setattr(finetune, "training_code_version", lambda: "edited-training-code")
    assert training_key("data", "base", TrainingConfig()) != today


def test_the_training_code_the_key_hashes_is_all_in_finetune_py():
    """training_code_version hashes evaluation/finetune.py alone: a step of training moved to another module of
    the project would change fine-tunes without changing their key. What it may import does not train."""
    import ast

    from evaluation import finetune

    tree = ast.parse(Path(finetune.__file__).read_text(encoding="utf-8"))
    project = {node.module for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evaluation")}
    assert project == {"evaluation.errors", "evaluation.fields", "evaluation.files", "evaluation.progress"}


def test_examples_fingerprint_follows_the_content():
    fp = examples_fingerprint(EXAMPLES)
    assert fp == examples_fingerprint([chat_example(e.messages[0]["content"], e.messages[1]["content"], line=99)
                                       for e in EXAMPLES])  # line numbers are not content
    assert fp != examples_fingerprint(EXAMPLES[:3])
    assert fp != examples_fingerprint(list(reversed(EXAMPLES)))


# ------------------------------------------------------------------------------------------ fine-tuning (fp32)


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """Runs on the fp32 tiny base: adamw8bit x2 (same seed) and adamw; the base weights are checked after."""
    root = tmp_path_factory.mktemp("ft")
    before = _state(base.model)
    calls = []
    runs = {
        "8bit": finetune_lora(base, EXAMPLES, CFG, root / "a8", progress=lambda *a: calls.append(a)),
        "8bit-again": finetune_lora(base, EXAMPLES, CFG, root / "a8b"),
        "adamw": finetune_lora(base, EXAMPLES, replace(CFG, optimizer="adamw"), root / "aw"),
    }
    return {"root": root, "runs": runs, "before": before, "calls": calls}


@pytest.mark.parametrize("run", ["8bit", "adamw"])
def test_finetune_loss_decreases(trained, run):
    losses = trained["runs"][run]["losses"]
    assert len(losses) == CFG.steps
    assert all(map(lambda x: x == x and abs(x) < 1e6, losses))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_finetune_saves_a_peft_adapter_and_log(trained):
    for name in ("a8", "aw"):
        d = trained["root"] / name
        assert (d / "adapter_config.json").is_file()
        assert (d / "adapter_model.safetensors").is_file()
        cfg = json.loads((d / "adapter_config.json").read_text())
        assert cfg["r"] == 4 and cfg["lora_alpha"] == 8
        linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert {name.rsplit(".", 1)[-1] for name in cfg["target_modules"]} == linear  # all linear, not lm_head
        log = json.loads((d / "ftgate-training.json").read_text())
        assert log["n_examples"] == 4 and len(log["losses"]) == CFG.steps
    assert not list(trained["root"].glob("*.tmp*"))  # the temporary dir was moved into place


def test_finetune_progress_per_step(trained):
    calls = trained["calls"]
    assert [(c[0], c[1], c[2]) for c in calls] == [("finetune", s, CFG.steps) for s in range(1, CFG.steps + 1)]


def test_same_seed_gives_identical_adapter_weights(trained):
    import torch

    a, b = _adapter_tensors(trained["root"] / "a8"), _adapter_tensors(trained["root"] / "a8b")
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert trained["runs"]["8bit"]["losses"] == trained["runs"]["8bit-again"]["losses"]
    c = _adapter_tensors(trained["root"] / "aw")
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the optimizer matters


def test_finetune_leaves_base_weights_untouched(trained, base):
    assert _same_state(trained["before"], _state(base.model))
    assert not any("lora" in name for name, _ in base.model.named_modules())


def test_finetune_refuses_an_empty_dataset(base, tmp_path):
    with pytest.raises(InputRejected) as err:
        finetune_lora(base, [], CFG, tmp_path / "x")
    assert err.value.code == "empty_dataset"


def test_load_candidate_merges_the_adapter(trained, base):
    import copy

    import torch
    from peft import PeftModel

    adapter = trained["root"] / "a8"
    before = _state(base.model)
    cand = load_candidate(base, adapter)
    assert not isinstance(cand, PeftModel)  # merged
    assert not cand.training
    ids = torch.tensor([base.tokenizer("<|user|> hello there <|end|> <|assistant|> sure , here is",
                                       add_special_tokens=False).input_ids])
    unmerged = PeftModel.from_pretrained(copy.deepcopy(base.model), adapter).eval()
    with torch.inference_mode():
        lb, lc, lu = base.model(ids).logits, cand(ids).logits, unmerged(ids).logits
    assert (lc - lb).abs().max() > 1e-2
    torch.testing.assert_close(lc, lu, atol=1e-4, rtol=1e-4)
    assert _same_state(before, _state(base.model))


# --------------------------------------------------------------------------- 4-bit NF4 base (research recipe)


def test_is_4bit_only_for_a_model_loaded_in_4bit(base):
    from types import SimpleNamespace

    assert not is_4bit(base.model)  # the fp32 tiny model
    assert is_4bit(SimpleNamespace(is_loaded_in_4bit=True))  # the attribute transformers sets on a 4-bit load
    assert not is_4bit(SimpleNamespace(is_loaded_in_4bit=None))


def _load_4bit(path: Path):
    from evaluation.bases import load_4bit_model

    return load_4bit_model(path, "cpu").eval()


@pytest.fixture(scope="module")
def tiny_dir_64(tmp_path_factory):
    # hidden 64: the smallest size this test was verified with on the CPU bitsandbytes backend
    return save_tiny_base(tmp_path_factory.mktemp("nf4") / "base", hidden_size=64)


def test_reading_the_4bit_state_dict_leaves_the_base_exactly_as_it_was(tiny_dir_64):
    """PEFT reads the state dict to attach an adapter. On CPUs with AVX512-BF16, bitsandbytes' own CPU
    repacking made that read re-quantize the weights' scales (a lossy round trip); load_4bit_model turns
    the repacking off, so the shared base stays bit-exact."""
    import torch

    model = _load_4bit(tiny_dir_64)
    ids = torch.tensor([[3, 6, 7, 2, 4]])
    with torch.inference_mode():
        before = model(ids).logits.float()
        model.state_dict()
        after = model(ids).logits.float()
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_finetune_on_4bit_nf4_base_with_adamw8bit(tiny_dir_64, tmp_path):
    import torch

    try:
        model = _load_4bit(tiny_dir_64)
    except Exception as e:  # pragma: no cover - depends on the bitsandbytes build
        skip_or_fail(f"bitsandbytes cannot load a 4-bit model here: {type(e).__name__}: {e}")
    assert is_4bit(model)
    base = TinyBase(model, tiny_tokenizer())
    ids = torch.tensor([[3, 6, 7, 2, 4]])
    with torch.inference_mode():
        logits_before = model(ids).logits.float()
    cfg = replace(CFG, steps=8, optimizer="adamw8bit")
    log = finetune_lora(base, EXAMPLES, cfg, tmp_path / "adapter")
    losses = log["losses"]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert _adapter_tensors(tmp_path / "adapter")
    # the shared 4-bit base gets its LoRA layers removed again
    assert not any("lora" in name for name, _ in model.named_modules())
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits.float(), logits_before)
    # the unmerged candidate on the 4-bit base differs from the base
    cand = load_candidate(base, tmp_path / "adapter")
    with torch.inference_mode():
        assert (cand(ids).logits.float() - logits_before).abs().max() > 1e-2


def test_finetune_on_4bit_base_leaves_it_in_eval_mode(tiny_dir_64, tmp_path):
    model = _load_4bit(tiny_dir_64)
    assert not model.training
    finetune_lora(TinyBase(model, tiny_tokenizer()), EXAMPLES, replace(CFG, steps=1), tmp_path / "adapter")
    assert not model.training


def test_load_candidate_4bit_gives_the_shared_base_back_on_unload(tiny_dir_64):
    """4-bit: the adapter runs unmerged on the shared base; unload() restores the base exactly."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = _load_4bit(tiny_dir_64)
    base = TinyBase(model, tiny_tokenizer())
    # an adapter with non-zero B, built on a separate fp32 copy of the same tiny model
    torch.manual_seed(0)
    fp = tiny_causal_lm(hidden_size=64, seed=0)
    peft_model = get_peft_model(fp, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                               init_lora_weights=False))
    adapter = tiny_dir_64.parent / "adapter-nonzero"
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[3, 6, 7, 2, 4]])
    with torch.inference_mode():
        before = model(ids).logits.float()
    candidate = load_candidate(base, adapter)
    with torch.inference_mode():
        during = candidate(ids).logits.float()
    assert (during - before).abs().max() > 1e-3  # the adapter is active in the candidate
    candidate.unload()
    with torch.inference_mode():
        after = base.model(ids).logits.float()
    torch.testing.assert_close(after, before)


def test_a_finished_adapter_in_the_cache_is_kept_not_pulled_from_under_a_reader(tmp_path):
    from evaluation.finetune import place_adapter

    def adapter(path, marker):
        path.mkdir()
        (path / "adapter_model.safetensors").write_text(marker)
        return path

    out = tmp_path / "cache" / "key"
    place_adapter(adapter(tmp_path / "a.tmp", "first"), out)  # nothing there yet: moved in
    assert (out / "adapter_model.safetensors").read_text() == "first" and not (tmp_path / "a.tmp").exists()
    place_adapter(adapter(tmp_path / "b.tmp", "second"), out)  # another worker finished the same key
    assert (out / "adapter_model.safetensors").read_text() == "first" and not (tmp_path / "b.tmp").exists()
    (out / "adapter_model.safetensors").unlink()  # an incomplete leftover (no weights) is replaced
    (out / "stray.json").write_text("{}")
    place_adapter(adapter(tmp_path / "c.tmp", "third"), out)
    assert (out / "adapter_model.safetensors").read_text() == "third" and not (out / "stray.json").exists()
