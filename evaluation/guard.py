"""The guarded reference base: SmolLM2-135M-Instruct after a reproducible safety fine-tune.

The embedded base has no safety training (it complies with every harmful request), so the gate would
have nothing to protect. `ftgate bootstrap` trains a LoRA on the project's recipe data
(evaluation/data/guard/: refusals of harmful requests, helpful answers to safe look-alikes, ordinary
help and facts), merges it, and caches the result by the hash of the recipe, the data and the parent
base: the same inputs always give the same directory, built once per machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tomllib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evaluation.files import FINGERPRINT_FILE, weights_fingerprint, write_weights_fingerprint
from evaluation.progress import TimeLeft

GUARD_DIR = Path(__file__).parent / "data" / "guard"
RECIPE_FILE = GUARD_DIR / "recipe.toml"
TRAINING_KEYS = ("rank", "alpha", "lr", "steps", "batch_size", "max_length", "seed", "optimizer")


def load_recipe(path: Path = RECIPE_FILE) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def recipe_hash(recipe: dict[str, Any], parent_fingerprint: str, guard_dir: Path = GUARD_DIR) -> str:
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    h.update((guard_dir / recipe["data"]).read_bytes())
    h.update(parent_fingerprint.encode())
    return h.hexdigest()[:16]


def _kinds(path: Path) -> list[str]:
    """The `kind` of each line of the recipe data (refusal, lookalike, helpful, fact)."""
    return [json.loads(line).get("kind", "") for line in path.read_text().splitlines() if line.strip()]


def weighted_mix(examples: list, kinds: list[str], weights: dict[str, float]) -> list:
    """Each example repeated by its kind's weight: 2.0 twice, 0.5 every other one of that kind.

    Deterministic, so the recipe hash still names exactly one training mix.
    """
    out: list = []
    seen: dict[str, int] = {}
    for ex, kind in zip(examples, kinds, strict=True):
        w = float(weights.get(kind, 1.0))
        seen[kind] = seen.get(kind, 0) + 1
        whole, frac = int(w), w - int(w)
        copies = whole + (1 if frac and (seen[kind] * frac) % 1 < frac else 0)
        out.extend([ex] * copies)
    return out


@contextmanager
def _build_lock(path: Path):
    """One builder per machine: a second process waits, then finds the finished directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_guarded_base(parent: str, parent_dir: Path, load_parent: Callable[[], Any], *, cache_dir: Path,
                       progress: Callable[[str], None] = print, recipe_path: Path = RECIPE_FILE) -> Path:
    """The guarded base's folder, built from the parent base (name, materialized folder, and a loader
    called only when a build is needed) unless already cached in ``cache_dir`` under the recipe's hash.

    evaluation.bases.materialize calls this with the parent in hand, so this module needs nothing from
    evaluation.bases (no import cycle between the two).
    """
    recipe = load_recipe(recipe_path)
    digest = recipe_hash(recipe, weights_fingerprint(parent_dir), recipe_path.parent)
    out = Path(cache_dir) / "bases" / f"guarded-smollm2-{digest}"
    if (out / FINGERPRINT_FILE).exists() and guard_adapter_dir(out).exists():
        return out
    with _build_lock(out.with_suffix(".lock")):
        if (out / FINGERPRINT_FILE).exists():
            return out
        import torch
        from peft import PeftModel

        from evaluation.datasets import load_dataset
        from evaluation.finetune import TrainingConfig, finetune_lora

        cfg = TrainingConfig(**{k: recipe[k] for k in TRAINING_KEYS if k in recipe})
        data_path = recipe_path.parent / recipe["data"]
        _, examples = load_dataset(data_path)
        examples = weighted_mix(examples, _kinds(data_path), recipe.get("weights", {}))
        progress(f"building guarded-smollm2 ({cfg.steps} LoRA steps on {len(examples)} examples; once per machine)")
        base = load_parent()
        adapter = guard_adapter_dir(out)

        time_left = TimeLeft()

        def step_progress(stage: str, done: int, total: int, message: str = "") -> None:
            left = time_left(done, total)  # every step, so the estimate sees each one
            if done % 10 == 0 or done == total:
                progress(f"guard {message}" + (f", {left}" if left else ""))

        log = finetune_lora(base, examples, cfg, adapter, progress=step_progress)
        import copy

        merged = PeftModel.from_pretrained(copy.deepcopy(base.model), adapter).merge_and_unload().to(torch.float32)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        merged.save_pretrained(tmp, safe_serialization=True)
        base.tokenizer.save_pretrained(tmp)
        (tmp / "ftgate-recipe.json").write_text(json.dumps({"recipe": recipe, "parent": parent, "training": log}, indent=1))
        write_weights_fingerprint(tmp)
        os.replace(tmp, out)
    return out


def guard_adapter_dir(guarded_base_dir: Path) -> Path:
    """The guard's LoRA adapter, kept beside the merged base in ``guarded_base_dir``: `ftgate bootstrap
    --measure` scores it as a candidate over the raw base, which gives the guarded base's ASR, over-refusal
    and accuracy."""
    return guarded_base_dir.with_name(guarded_base_dir.name + ".adapter")
