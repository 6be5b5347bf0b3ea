"""Approve with repair: when a dataset is blocked or sent to review for safety, fine-tune it again with safety
data mixed in, evaluate the result exactly like a candidate, and offer it with its own verdict.

The safety data is the guard's (evaluation/data/guard/guard_train.jsonl, docs/guard.md): refusals of harmful
requests and helpful answers to safe look-alikes, so the repair teaches "refuse harm" without teaching
"refuse everything". Safety examples whose request is an evaluation-suite prompt are never used: the repaired
candidate would be tested on what it was taught (the screening's suite-overlap index decides, by the same
normalisation).

The customer's task must survive the repair. A slice of the customer's own data is held back (deterministic by
the training seed) and the mean token NLL of its responses is measured for two adapters trained on the SAME
remaining data with the SAME recipe: the unrepaired one (the customer's data as submitted) and the repaired
one (minus the examples screening judged harmful, plus the safety mix). The submitted candidate itself trained
on all the data, held-back slice included, so its loss on that slice would flatter it; it is not compared. The
repaired adapter offered for download is exactly the one measured: trained without the held-back slice.

Fine-tunes are cached by content (``gate.finetune_examples``) and the evaluations by the results cache, so a
repair asked again costs only the task-loss forward passes.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from evaluation.datasets import TrainingExample
from evaluation.errors import InputRejected
from evaluation.fields import allowed, is_allowed, option
from evaluation.progress import Progress, no_progress
from evaluation.runtime import Runtime, current_runtime

GUARD_DATA = Path(__file__).resolve().parent / "data" / "guard" / "guard_train.jsonl"
SAFETY_KINDS = ("refusal", "lookalike")

# The checks of evaluation.policy whose block or review a repair can answer: what the model does with harmful
# requests, and harmful training data. Over-refusal, knowledge drift and inspection findings are not safety
# findings, and evaluation-suite overlap (gaming) is not fixed by more training.
SAFETY_RULES = frozenset({"asr", "candidate_asr", "category_asr", "screening", "persona", "responses"})

REPAIR_MODES = ("off", "offer", "auto")  # in order: each allows what the previous one does, and more
# Why a dataset blocked at screening, before any fine-tune, is not repaired (docs/policy.md, "Not repaired"):
# `ftgate check` and the service's decide stage say it in the same words.
EARLY_BLOCK_NOT_REPAIRED = ("blocked at screening, before any fine-tune: most of the data is harmful, so there is "
                            "no customer task to keep")


@dataclass(frozen=True)
class RepairConfig:
    """How a dataset is repaired. Each field declares its help and bounds once (evaluation/fields.py)."""

    safety_share: float = option(0.10, help="share of the repair fine-tune's examples that are safety data",
                                 low=0.01, high=0.5, cli="--repair-safety-share")
    refusal_share: float = option(0.5, help="of the safety examples, the share that are refusals of harmful "
                                  "requests (the rest: helpful answers to safe look-alikes)", low=0, high=1)
    holdout_share: float = option(0.10, help="share of the customer's examples held back to measure the task loss",
                                  low=0.01, high=0.5)
    min_holdout: int = option(4, help="held-back examples at least (when the data has twice as many)",
                              unit="examples", low=1, high=1000)
    similarity_threshold: float = option(0.5, help="uploaded adapters: a layer whose update has a cosine "
                                         "similarity under this with its projection on the safety subspace is "
                                         "replaced by that projection", low=0, high=1)

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None) -> RepairConfig:
        """A config from overrides; unknown keys and values out of bounds are refused by name."""
        overrides = dict(overrides or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise InputRejected(f"unknown repair option(s) {unknown}; known: {sorted(known)}", "bad_repair")
        bad = []
        for key, value in overrides.items():
            want = type(known[key].default)
            ok = not isinstance(value, bool) and (isinstance(value, want) or (want is float and isinstance(value, int)))
            if not ok or not is_allowed(cls, known[key], value) or (want is float and not math.isfinite(value)):
                bad.append(f"{key}={value!r} (allowed: {allowed(cls, known[key])})")
        if bad:
            raise InputRejected(f"repair option(s) out of range: {', '.join(bad)}", "bad_repair")
        values: dict[str, Any] = {k: float(v) if type(known[k].default) is float else v for k, v in overrides.items()}
        return replace(cls(), **values)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def repair_mode(requested: str | None, policy_mode: str, policy_name: str = "") -> str:
    """The repair a run does: ``requested`` (None: the policy's own setting), never more than the policy allows.
    Raises InputRejected for a value that is not a mode or asks for more than the policy allows."""
    if requested is None:
        return policy_mode
    if requested not in REPAIR_MODES:
        raise InputRejected(f"repair must be one of {', '.join(REPAIR_MODES)}, not {requested!r}", "bad_repair")
    if REPAIR_MODES.index(requested) > REPAIR_MODES.index(policy_mode):
        raise InputRejected(f"policy {policy_name!r} allows repair up to {policy_mode!r}; {requested!r} was asked",
                            "repair_not_allowed")
    return requested


def safety_findings(verdict: Mapping[str, Any]) -> list[str]:
    """The block and review reasons of ``verdict`` (a report's) that a repair can answer."""
    return [c["message"] for c in verdict.get("checks") or []
            if c.get("rule") in SAFETY_RULES and c.get("outcome") in ("block", "review")]


# --------------------------------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------------------------------


def safety_pool(excluded_requests: set[str] | None = None, path: Path = GUARD_DATA) -> dict[str, list[TrainingExample]]:
    """The guard's refusals and look-alikes by kind, without those whose request (normalised as screening does)
    is in ``excluded_requests`` (default: every prompt and question of the default evaluation suites)."""
    from evaluation.screening import default_suite_index, normalize_prompt

    if excluded_requests is None:
        warnings: list[str] = []
        excluded_requests = set(default_suite_index(warnings))
        if warnings:  # a suite that did not load could be trained on without anyone knowing: refuse
            raise RuntimeError("repair: the evaluation suites are needed to keep them out of the safety data: "
                               + "; ".join(warnings))
    pool: dict[str, list[TrainingExample]] = {kind: [] for kind in SAFETY_KINDS}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("kind") not in pool:
            continue
        example = TrainingExample(messages=tuple(record["messages"]), line=line_no)
        if normalize_prompt(example.request) in excluded_requests:
            continue
        pool[record["kind"]].append(example)
    return pool


def holdout_size(n: int, cfg: RepairConfig) -> int:
    """How many of ``n`` task examples are held back: the configured share, at least ``min_holdout``, at most
    half (the repair must still have data to learn the task from); 0 when there is too little data to split."""
    wanted = max(cfg.min_holdout, math.ceil(cfg.holdout_share * n))
    return min(wanted, n // 2)


def split_holdout(examples: Sequence[TrainingExample], cfg: RepairConfig, seed: int
                  ) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """(trained on, held back): a random slice of ``holdout_size`` examples, the same for the same seed; both
    keep the file's order."""
    k = holdout_size(len(examples), cfg)
    held = set(random.Random(seed).sample(range(len(examples)), k))
    return ([ex for i, ex in enumerate(examples) if i not in held],
            [ex for i, ex in enumerate(examples) if i in held])


def safety_count(n_task: int, share: float) -> int:
    """Safety examples to add to ``n_task`` customer examples so they make up ``share`` of the mix."""
    return max(1, round(share * n_task / (1 - share)))


def safety_mix(task: Sequence[TrainingExample], pool: dict[str, list[TrainingExample]], cfg: RepairConfig,
               seed: int) -> tuple[list[TrainingExample], int]:
    """``task`` plus the safety examples (``refusal_share`` refusals, the rest look-alikes, each drawn in a seeded
    order and repeated only when the pool runs out), and how many were added."""
    m = safety_count(len(task), cfg.safety_share)
    n_refusal = round(m * cfg.refusal_share)
    rng = random.Random(seed)
    chosen: list[TrainingExample] = []
    for kind, count in (("refusal", n_refusal), ("lookalike", m - n_refusal)):
        examples = list(pool.get(kind) or [])
        if count and not examples:
            raise RuntimeError(f"repair: the safety data has no {kind} examples left after removing suite prompts")
        rng.shuffle(examples)
        chosen += [examples[i % len(examples)] for i in range(count)]
    return list(task) + chosen, m


# --------------------------------------------------------------------------------------------------
# the task loss
# --------------------------------------------------------------------------------------------------


def response_nll(model, tokenizer, examples: Sequence[TrainingExample], *, max_length: int,
                 batch_size: int = 8) -> float:
    """Mean negative log-likelihood per response token (nats) of ``examples`` under ``model``: the loss the
    fine-tune minimised, on data it did not see. Prompts are encoded exactly as for training."""
    import torch

    from evaluation.finetune import IGNORE_INDEX, _collate, encode_example

    encoded = [encode_example(tokenizer, ex.messages, max_length) for ex in examples]
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            input_ids, labels, attention = _collate(encoded[start:start + batch_size], tokenizer.pad_token_id)
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
            target = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                    ignore_index=IGNORE_INDEX, reduction="sum")
            total += float(nll)
            tokens += int((target != IGNORE_INDEX).sum())
    return total / tokens if tokens else float("nan")


def task_loss(base_name: str, adapter_dir: Path, examples: Sequence[TrainingExample], *, max_length: int,
              batch_size: int = 8, runtime: Runtime | None = None) -> float:
    """``response_nll`` of the base with the adapter, in fp32 (the base is checked unchanged afterwards)."""
    import torch

    from evaluation.bases import load_base
    from evaluation.gate import candidate_on_base

    base = load_base(base_name, runtime=runtime)
    with candidate_on_base(base, adapter_dir, torch.float32, label="repair task loss") as model:
        return round(response_nll(model, base.tokenizer, examples, max_length=max_length, batch_size=batch_size), 4)


# --------------------------------------------------------------------------------------------------
# the repair
# --------------------------------------------------------------------------------------------------


def screening_after_repair(screening: dict | None, dropped: int) -> dict | None:
    """The screening as it applies to the repaired training data: the examples judged harmful, and those whose
    response was read as harmful when all of them were listed, were left out, so they count no more (the persona
    flags and suite overlap stay: those examples were kept)."""
    if not screening:
        return screening
    after = {**screening, "n_harmful": 0, "share": 0.0, "flagged": [], "removed_for_repair": dropped}
    if screening.get("n_response_flagged", 0) <= len(screening.get("response_flagged") or []):
        after.update(n_response_flagged=0, response_share=0.0, response_flagged=[])
    return after


def repaired_verdict(mode: str, method: str, verdict: Any, metrics: Mapping[str, Any], adapter: Path) -> dict[str, Any]:
    """What every finished repair reports, whatever the method: its own verdict, metrics and adapter."""
    from evaluation.adapters import adapter_fingerprint

    return {
        "status": "done",
        "mode": mode,
        "method": method,
        "decision": str(verdict.decision),
        "reasons": verdict.reasons,
        "checks": verdict.checks,
        "released": mode == "auto" and verdict.decision == "approve",
        "metrics": metrics,
        "adapter_fingerprint": adapter_fingerprint(adapter),
        "adapter_path": str(adapter),
    }


def repair_dataset(inspection: Any, base_name: str, training: Any = None, *, policy: str | None = None,
                   judge: str | None = None, mode: str = "offer", config: RepairConfig | None = None,
                   progress: Progress = no_progress, runtime: Runtime | None = None) -> dict[str, Any]:
    """Repair a dataset submission (``inspection`` from gate.inspect_submission) and return the report's
    ``repair`` object (docs/report.md): the repaired adapter's verdict, metrics, task loss and where it is.

    ``status`` is "done", or "skipped" with the ``reason`` when the data is too small to hold a slice back.
    """
    from evaluation.datasets import load_dataset
    from evaluation.finetune import TrainingConfig
    from evaluation.gate import Inspection, evaluate_candidate, finetune_examples
    from evaluation.policy import decide, load_policy

    runtime = runtime or current_runtime()
    cfg = config or RepairConfig()
    training = training or TrainingConfig()
    if inspection.kind != "dataset":
        raise ValueError("repair_dataset repairs datasets; an uploaded adapter is repaired by repair_adapter")
    _, examples = load_dataset(Path(inspection.dataset_path), preference_side=training.preference_side,
                               max_examples=runtime.max_dataset_examples)
    screening = inspection.screening or {}
    harmful_lines = {f["line"] for key in ("flagged", "response_flagged") for f in screening.get(key) or []}
    task = [ex for ex in examples if ex.line not in harmful_lines]
    if holdout_size(len(task), cfg) < 1:
        return {"status": "skipped", "mode": mode,
                "reason": f"too few examples to hold a slice back for the task loss ({len(task)} usable)"}
    trained, held_back = split_holdout(task, cfg, training.seed)
    held_lines = {ex.line for ex in held_back}
    unrepaired_data = [ex for ex in examples if ex.line not in held_lines]  # as submitted, minus the held-back slice
    repaired_data, n_safety = safety_mix(trained, safety_pool(), cfg, training.seed)

    progress("repair", 0, 3, "fine-tuning the unrepaired recipe without the held-back slice")
    unrepaired = finetune_examples(unrepaired_data, base_name, training, progress=progress, runtime=runtime)
    progress("repair", 1, 3, f"fine-tuning with {n_safety} safety examples mixed in")
    repaired = finetune_examples(repaired_data, base_name, training, progress=progress, runtime=runtime)
    progress("repair", 2, 3, f"task loss on {len(held_back)} held-back examples")
    losses = {who: task_loss(base_name, adapter, held_back, max_length=training.max_length,
                             batch_size=training.batch_size, runtime=runtime)
              for who, adapter in (("original", unrepaired), ("repaired", repaired))}

    repaired_inspection = Inspection.from_dict({**inspection.to_dict(),
                                                "screening": screening_after_repair(inspection.screening,
                                                                                     len(harmful_lines))})
    ev = evaluate_candidate(repaired_inspection, base_name, repaired, training, judge=judge, progress=progress,
                            runtime=runtime)
    verdict = decide(ev.metrics, repaired_inspection.to_dict(), load_policy(policy, runtime=runtime))
    progress("repair", 3, 3, f"repaired adapter: {verdict.decision}")

    return {
        **repaired_verdict(mode, "safety-mix fine-tune", verdict, ev.metrics, repaired),
        "task_loss": {**losses, "held_back_examples": len(held_back),
                      "compared": "both adapters trained on the same data without the held-back slice; "
                                  "original: the data as submitted, repaired: with the safety mix"},
        "safety_share": round(n_safety / len(repaired_data), 4),
        "safety_examples": n_safety,
        "training_examples": len(repaired_data),
        "removed_harmful_examples": len(harmful_lines),
        "config": cfg.to_dict(),
    }


# --------------------------------------------------------------------------------------------------
# uploaded adapters: training-free (evaluation/safelora.py)
# --------------------------------------------------------------------------------------------------

SAFELORA_VERSION = 1  # bump when the projection changes: the cached repaired adapters are made again


def repair_adapter(inspection: Any, base_name: str, *, policy: str | None = None, judge: str | None = None,
                   mode: str = "offer", config: RepairConfig | None = None, guard_dir: Path | None = None,
                   progress: Progress = no_progress, runtime: Runtime | None = None) -> dict[str, Any]:
    """Repair an uploaded adapter without training (evaluation/safelora.py: its update projected on the safety
    subspace of the guard's LoRA, layer by layer) and judge the result like a candidate. ``guard_dir``: the
    safety LoRA (default: the guard beside the base, which only a base built by the guard recipe has).

    There is no customer data, so no task loss: ``task_loss`` is None, and the knowledge metrics and
    ``projection.update_norm_kept`` say what the projection cost."""
    import hashlib

    from evaluation.adapters import adapter_fingerprint
    from evaluation.bases import get_base_spec, materialize
    from evaluation.files import atomic_write_text
    from evaluation.gate import evaluate_candidate
    from evaluation.guard import guard_adapter_dir
    from evaluation.policy import decide, load_policy
    from evaluation.safelora import repair_lora

    runtime = runtime or current_runtime()
    cfg = config or RepairConfig()
    if guard_dir is None:
        if get_base_spec(base_name, runtime).builder != "guard":
            return {"status": "skipped", "mode": mode, "reason": (
                f"base {base_name!r} has no safety adapter beside it (only a base built by the guard recipe has "
                "one), so there is no safety subspace to project an uploaded adapter on")}
        guard_dir = guard_adapter_dir(materialize(base_name, runtime=runtime))
    adapter = Path(inspection.adapter_dir)
    key = hashlib.sha256(json.dumps({"adapter": adapter_fingerprint(adapter), "guard": adapter_fingerprint(guard_dir),
                                     "threshold": cfg.similarity_threshold, "v": SAFELORA_VERSION},
                                    sort_keys=True).encode()).hexdigest()[:20]
    out = runtime.cache_dir / "repairs" / key
    info_file = out.with_suffix(".json")
    if info_file.exists() and (out / "adapter_model.safetensors").exists():
        projection = json.loads(info_file.read_text())
    else:
        progress("repair", 0, 2, "projecting the adapter's update on the safety subspace")
        projection = repair_lora(adapter, guard_dir, out, threshold=cfg.similarity_threshold)
        atomic_write_text(info_file, json.dumps(projection))
    progress("repair", 1, 2, f"{projection['projected_layers']} of {projection['layers']} layers projected")
    ev = evaluate_candidate(inspection, base_name, out, None, judge=judge, progress=progress, runtime=runtime)
    verdict = decide(ev.metrics, inspection.to_dict(), load_policy(policy, runtime=runtime))
    progress("repair", 2, 2, f"repaired adapter: {verdict.decision}")
    return {
        **repaired_verdict(mode, "safety-subspace projection (SafeLoRA)", verdict, ev.metrics, out),
        "task_loss": None,
        "projection": {**{k: v for k, v in projection.items() if k != "per_layer"},
                       "projected": [la for la in projection["per_layer"] if la["projected"]]},
        "config": cfg.to_dict(),
    }
