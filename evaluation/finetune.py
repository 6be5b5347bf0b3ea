"""LoRA fine-tuning exactly as a customer would run it, and loading a candidate (base + adapter).

Research defaults (DESIGN.md): r=16, alpha=16, lr 2e-4, 50 steps, batch 8, all linear projections,
AdamW-8bit (bitsandbytes), loss on the response tokens only, fixed seeds. Results are cached by the
content of the data, the base fingerprint and the config, so the same dataset is never trained twice.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from evaluation.errors import InputRejected
from evaluation.fields import allowed, is_allowed, markdown_table, option
from evaluation.files import sha256_file
from evaluation.progress import Progress, no_progress

IGNORE_INDEX = -100

# Bounds on what a submitter may ask the gate to train: a tenant's overrides spend the shared workers' time
# (a 10,000 steps x batch 256 fine-tune was accepted). The defaults and the guard recipe (250 steps x 8) fit.
MAX_STEPS = 1000
MAX_BATCH_SIZE = 64
MAX_EXAMPLES_SEEN = 16_384  # steps x batch_size
MAX_LENGTH = 2048
MAX_RANK = 256
MAX_ALPHA = 4 * MAX_RANK


@dataclass(frozen=True)
class TrainingConfig:
    """A LoRA fine-tune's settings. Each field declares its help, unit and bounds once (evaluation/fields.py):
    ``from_overrides`` checks them, ``ftgate check``'s flags and docs/api.md's table are made from them."""

    rank: int = option(16, help="LoRA rank r", low=1, high=MAX_RANK, cli=True)
    alpha: int = option(16, help="LoRA alpha (the update is scaled by alpha / rank)", low=1, high=MAX_ALPHA,
                        cli=True)
    lr: float = option(2e-4, help="learning rate", low=0, low_open=True, high=1e-2, cli=True)
    steps: int = option(50, help="optimizer steps", unit="steps", low=1, high=MAX_STEPS, cli=True)
    batch_size: int = option(8, help="examples per step", unit="examples", low=1, high=MAX_BATCH_SIZE, cli=True)
    max_length: int = option(128, help="tokens per example (a longer prompt loses its oldest tokens)",
                             unit="tokens", low=16, high=MAX_LENGTH)
    dropout: float = option(0.0, help="LoRA dropout", low=0, high=1, high_open=True)
    optimizer: Literal["adamw8bit", "adamw"] = option("adamw8bit", help="AdamW, 8-bit (bitsandbytes) or 32-bit",
                                                      cli=True)
    seed: int = option(1234, help="seed of the LoRA initialisation and the batch order", low=0, high=2**32 - 1,
                       cli=True)
    preference_side: Literal["rejected", "chosen"] = option(
        "rejected", help="preference data: which side to train on", cli="--train-on")

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None) -> TrainingConfig:
        """A config from user overrides; unknown keys and bad values are refused by name."""
        overrides = dict(overrides or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise InputRejected(f"unknown training option(s) {unknown}; known: {sorted(known)}", "bad_training")
        defaults = cls()
        for key, value in overrides.items():
            overrides[key] = _coerce(key, value, type(getattr(defaults, key)))
        cfg = replace(defaults, **overrides)
        bad = [f"{f.name}={getattr(cfg, f.name)} (allowed: {allowed(cls, f)})"
               for f in fields(cls) if not is_allowed(cls, f, getattr(cfg, f.name))]
        if cfg.steps * cfg.batch_size > MAX_EXAMPLES_SEEN:
            bad.append(f"steps x batch_size={cfg.steps * cfg.batch_size} (allowed: at most {MAX_EXAMPLES_SEEN})")
        if bad:
            raise InputRejected(f"training option(s) out of range: {', '.join(bad)}", "bad_training")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_modules": "all-linear", "loss": "response tokens only"}

    @classmethod
    def doc_table(cls) -> str:
        """The options as a Markdown table (docs/api.md): name, default (with its unit), allowed values, meaning."""
        rows = [(f"`{f.name}`", f"`{f.default}` {f.metadata['unit']}".strip(), allowed(cls, f), f.metadata["help"])
                for f in fields(cls)]
        rows.append(("`steps` x `batch_size`", f"`{cls().steps * cls().batch_size}` examples", f"at most {MAX_EXAMPLES_SEEN}",
                     "examples seen in all (both options together)"))
        return markdown_table(("option", "default", "allowed", "meaning"), rows)


def _coerce(key: str, value: Any, want: type) -> Any:
    """A training option as its field's type. Form fields arrive as strings ("20") and JSON gives ints for
    floats ("lr": 1); anything else is refused by name, and 2.7 steps is refused rather than truncated."""
    if isinstance(value, bool) or value is None:
        ok = False
    elif isinstance(value, str) and want is not str:
        try:
            value = want(value.strip())
            ok = True
        except ValueError:
            ok = False
    else:
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
    if not ok:
        raise InputRejected(f"training option {key}={value!r} must be a{'n' if want is int else ''} {want.__name__}",
                            "bad_training")
    return want(value)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_example(tokenizer, messages: Sequence[dict], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels for one chat; labels are IGNORE_INDEX except on the final response."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    full_ids = tokenizer(full, add_special_tokens=False).input_ids
    if full_ids[: len(prompt_ids)] != prompt_ids:  # templates that re-tokenize differently at the seam
        response_ids = tokenizer(full[len(prompt) :], add_special_tokens=False).input_ids
        full_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    # Keep the response: drop the oldest prompt tokens first when too long.
    if len(full_ids) > max_length:
        cut = len(full_ids) - max_length
        keep_prompt = max(len(prompt_ids) - cut, min(len(prompt_ids), max_length // 2))
        drop = len(prompt_ids) - keep_prompt
        full_ids, labels = full_ids[drop:][:max_length], labels[drop:][:max_length]
    return full_ids, labels


def _collate(batch: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return input_ids, labels, attention


def _batch_schedule(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Deterministic epochs of shuffled indices, cut into `steps` batches."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        epoch = list(range(n_examples))
        rng.shuffle(epoch)
        order.extend(epoch)
    return [order[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def _make_optimizer(params, cfg: TrainingConfig):
    import torch

    if cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)


@cache
def training_code_version() -> str:
    """16 hex characters of the sha256 of this module: the training code (example encoding and masking, the
    loop, the optimizers, LoRA's set-up), part of every fine-tune's cache key, so an edit to it never serves a
    fine-tune the old code made. Only this module, unlike scoring.code_version's whole package: every step
    that shapes a fine-tune lives here (tests/unit/test_finetune.py fails if it starts importing one from
    elsewhere), and a change to, say, the policy must not re-train every cached fine-tune (minutes each)."""
    return sha256_file(Path(__file__))[:16]


def training_key(data_fingerprint: str, base_fingerprint: str, cfg: TrainingConfig) -> str:
    """A fine-tune's cache key: everything its weights depend on (data, base weights, recipe, training code)."""
    blob = json.dumps({"data": data_fingerprint, "base": base_fingerprint, "cfg": asdict(cfg), "v": 1,
                       "code": training_code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def examples_fingerprint(examples: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(list(ex.messages), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def finetune_lora(
    base,
    examples: Sequence[Any],
    cfg: TrainingConfig,
    out_dir: Path,
    *,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Train a LoRA adapter on `examples` over `base` (a LoadedBase) and save it to `out_dir`.

    The base stays untouched (a copy is trained unless it is 4-bit). Returns a log with the losses.
    """
    from peft import LoraConfig, get_peft_model

    if not examples:
        raise InputRejected("the dataset has no training examples", "empty_dataset")
    _seed_everything(cfg.seed)
    tokenizer = base.tokenizer
    quantized = is_4bit(base.model)
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(base.model, use_gradient_checkpointing=False)
    else:
        model = copy.deepcopy(base.model)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        bias="none",
    )
    model = get_peft_model(model, lora)
    model.train()
    encoded = [encode_example(tokenizer, ex.messages, cfg.max_length) for ex in examples]
    schedule = _batch_schedule(len(encoded), cfg.steps, cfg.batch_size, cfg.seed)
    optimizer = _make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    losses: list[float] = []
    started = time.perf_counter()
    for step, idx in enumerate(schedule, start=1):
        input_ids, labels, attention = _collate([encoded[i] for i in idx], tokenizer.pad_token_id)
        # fp32 on purpose: bf16 autocast speeds the CPU forward pass but its backward ran ~100x slower here
        # (measured: 254 s against 2.5 s for one batch of 8 x 80 tokens on SmolLM2-135M).
        out = model(input_ids=input_ids, attention_mask=attention, labels=labels)
        loss = out.loss
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"fine-tuning diverged at step {step} (loss {loss.item()})")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        progress("finetune", step, cfg.steps, f"fine-tuning step {step}/{cfg.steps}, loss {loss.item():.3f}")
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    log = {"losses": losses, "seconds": round(time.perf_counter() - started, 2), "config": cfg.to_dict(),
           "n_examples": len(examples)}
    (tmp / "ftgate-training.json").write_text(json.dumps(log, indent=1))
    if quantized:
        model.unload()  # give the shared 4-bit base back without the LoRA layers
        base.model.eval()
    place_adapter(tmp, out_dir)
    return log


def place_adapter(tmp: Path, out_dir: Path) -> None:
    """Move a finished adapter from ``tmp`` to its cache folder ``out_dir``, atomically.

    The folder is named by content (data, base and config), so two workers may finish the same fine-tune.
    The first one's adapter stays: another job may be reading it, and deleting it to put an identical copy
    in its place would pull it from under that reader. Only an incomplete leftover (no weights) is replaced."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out_dir)  # fails when out_dir is a non-empty folder
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if (out_dir / "adapter_model.safetensors").exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)


def is_4bit(model) -> bool:
    """Whether ``model`` was loaded in 4-bit (bitsandbytes NF4): such weights can't be merged exactly nor
    copied cheaply, so an adapter runs unmerged on the shared base and is unloaded after use."""
    return bool(getattr(model, "is_loaded_in_4bit", False))


def load_candidate(base, adapter_dir: Path, dtype=None):
    """A new model: the base with the adapter merged in (fp32 merge, then cast), the base untouched."""
    import torch
    from peft import PeftModel

    if is_4bit(base.model):
        # 4-bit weights can't be merged exactly, nor copied cheaply: the adapter runs unmerged on the SHARED
        # base, so the caller must call `.unload()` on the result when done (evaluate_submission does).
        return PeftModel.from_pretrained(base.model, adapter_dir, adapter_name="candidate").eval()
    model = copy.deepcopy(base.model)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.eval()
    return model.to(dtype or torch.float32)
