"""Running one model over the three suites, and turning two models' outputs into paired metrics.

`run_model_on_suites` produces per-item outputs (responses, judge labels, correctness); those of the base
are cached on disk by (base fingerprint, suite hashes, judge, decoding, code version), so a second check
on the same base only runs the candidate. `paired_metrics` is pure: it compares the two outputs item by item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from evaluation import metrics as M
from evaluation.files import atomic_write_text
from evaluation.generation import (
    DecodingConfig,
    chat_prompt,
    decode_response,
    generate,
    generate_ids,
    left_padded_positions,
)
from evaluation.judges import COMPLIANCE, OTHER, REFUSAL
from evaluation.metric_info import METRICS
from evaluation.progress import Progress, no_progress
from evaluation.records import (
    FlippedExample,
    HarmOutput,
    KnowledgeOutput,
    Metrics,
    PairedMetric,
    SafeOutput,
    SampleRecord,
    SecondWindow,
    Stat,
    SuiteOutputs,
    WindowCounts,
)

# bump when the meaning of cached outputs changes (2: greedy_rows drops finished rows; 3: second window)
RESULTS_VERSION = 3

EVALUATION_DIR = Path(__file__).resolve().parent


def source_fingerprint(root: Path) -> str:
    """16 hex characters of a sha256 over every ``*.py`` file below ``root``: its relative path and bytes."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@cache
def code_version() -> str:
    """The evaluation core's code version, part of every results cache key (computed once per process).

    Why a hash of the sources: cached results must never stand in for what today's code would compute
    (the e2e tier re-checks adapters it checked before, and a deployed worker re-checks resubmissions).
    RESULTS_VERSION alone relies on someone remembering to bump it. The package version does not change
    with an edit, and a git revision misses uncommitted edits and is absent from an installed package or
    image. Turning the candidate cache off when CI=true would leave developers' runs and deployed workers
    with the stale results, and CI would never run the cache path. The whole package is hashed, not a
    hand-kept list of the files that matter: over-invalidating (a change to policy.py re-runs the models
    once) is cheap next to a list that forgets one file.
    """
    return source_fingerprint(EVALUATION_DIR)


def run_model_on_suites(model, tokenizer, suites: dict, judge, decoding: DecodingConfig, *,
                        progress: Progress = no_progress, who: str = "candidate") -> SuiteOutputs:
    """Greedy completions on the harm and over-refusal suites, judged, and short answers to the knowledge suite."""
    harm, safe, qa = suites["harm"].items, suites["overrefusal"].items, suites["knowledge"].items
    prompts = [h.prompt for h in harm] + [s.prompt for s in safe]
    first_ids = generate_ids(model, tokenizer, prompts, max_new_tokens=decoding.max_new_tokens,
                             batch_size=decoding.batch_size, progress=progress, stage=f"evaluate {who}: safety")
    responses = [decode_response(tokenizer, ids) for ids in first_ids]
    progress(f"evaluate {who}: judge", 0, 1, "judging responses")
    labels = judge.judge(prompts, responses)
    n_harm = len(harm)
    first_window_labels = labels[:n_harm]
    second = read_second_window(model, tokenizer, judge, prompts[:n_harm], first_ids[:n_harm], first_window_labels,
                                decoding, progress=progress, who=who)
    labels = list(labels)
    for i, (response, label) in second.items():
        responses[i], labels[i] = response, label
    answers = generate(model, tokenizer, [q.question for q in qa], max_new_tokens=decoding.knowledge_max_new_tokens,
                       batch_size=decoding.batch_size, progress=progress, stage=f"evaluate {who}: knowledge")
    return SuiteOutputs(
        harm=[HarmOutput(id=h.id, response=r, label=lab, second_window=i in second, first_window_label=first)
              for i, (h, r, lab, first) in enumerate(zip(harm, responses[:n_harm], labels[:n_harm],
                                                         first_window_labels, strict=True))],
        overrefusal=[SafeOutput(id=s.id, response=r, label=lab)
                     for s, r, lab in zip(safe, responses[n_harm:], labels[n_harm:], strict=True)],
        knowledge=[KnowledgeOutput(id=q.id, answer=a, correct=M.qa_match(a, q.answers))
                   for q, a in zip(qa, answers, strict=True)],
    )


def read_second_window(model, tokenizer, judge, requests: Sequence[str], first_ids: Sequence[Sequence[int]],
                       first_labels: Sequence[str], decoding: DecodingConfig, *, progress: Progress = no_progress,
                       who: str = "candidate") -> dict[int, tuple[str, str]]:
    """{index: (longer response, label)} for the answers worth reading past the first window.

    Those are the answers the judge called neither refused nor complied that were cut off by
    ``max_new_tokens`` (not ended): a preamble ("Great question! Before we start, some context...") looks
    like "other" in 48 tokens even when compliance follows. They are continued from where they stopped up
    to ``extended_max_new_tokens`` and judged twice: the whole answer, and the part after the first window
    alone (the encoder reads a bounded number of tokens, and a long preamble would dilute the whole).
    Either judged as compliance makes the answer compliance; otherwise it keeps its first label, so the
    second window can only add compliance, never hide it. Refusals and finished answers are not continued:
    that keeps the cost to the few answers that need it.
    """
    extra = decoding.extended_max_new_tokens - decoding.max_new_tokens
    if extra <= 0:
        return {}
    eos = tokenizer.eos_token_id
    todo = [i for i, (ids, label) in enumerate(zip(first_ids, first_labels, strict=True))
            if label == OTHER and len(ids) >= decoding.max_new_tokens and (not ids or ids[-1] != eos)]
    if not todo:
        return {}
    more = generate_ids(model, tokenizer, [requests[i] for i in todo], max_new_tokens=extra,
                        batch_size=decoding.batch_size, prefixes=[first_ids[i] for i in todo], progress=progress,
                        stage=f"evaluate {who}: safety, second window")
    whole = [decode_response(tokenizer, [*first_ids[i], *rest]) for i, rest in zip(todo, more, strict=True)]
    after_first = [decode_response(tokenizer, rest) for rest in more]
    asked = [requests[i] for i in todo]
    labels = judge.judge(asked + asked, whole + after_first)
    k = len(todo)
    return {i: (whole[j], COMPLIANCE if COMPLIANCE in (labels[j], labels[k + j]) else first_labels[i])
            for j, i in enumerate(todo)}


def teacher_forced_batch(rows: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, Any]:
    """One left-padded batch of (token ids, prompt length) rows, ready for a forward pass that keeps only
    the logits of the answer positions.

    Left padding puts every row's answer at the right edge, so the logits that predict answer tokens are
    the last ``keep`` columns (longest answer + 1) for every row: the model's head and the softmaxes run on
    a few positions per question instead of the whole chat prompt. ``position_ids`` count real tokens
    only, so a padded row sees the positions it would see alone (RoPE models don't mind a shift; models
    with absolute position embeddings do).
    """
    import torch

    width = max(len(ids) for ids, _ in rows)
    keep = max(len(ids) - start for ids, start in rows) + 1
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    score = torch.zeros((len(rows), keep - 1), dtype=torch.long)
    for i, (row, start) in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        attn[i, width - len(row):] = 1
        score[i, keep - 1 - (len(row) - start):] = 1
    positions = left_padded_positions(attn)
    return {"input_ids": ids, "attention_mask": attn, "position_ids": positions, "keep": keep,
            "target": ids[:, width - keep + 1:], "mask": score}


def teacher_forced_knowledge(base_model, cand_model, tokenizer, qa_items: Sequence[Any], *, batch_size: int = 32,
                             progress: Progress = no_progress) -> dict[str, Any]:
    """Perplexity, entropy and probability of the gold answer tokens for both models, and KL(base || candidate).

    Each question is fed through the chat template followed by its first answer alias; only the answer
    tokens are scored. Both models see the same batches, so the KL is computed position by position.
    Rows are sorted by length so a batch pads little (the sums don't depend on the order).
    """
    import torch

    rows = []
    for q in qa_items:
        prompt_ids = tokenizer(chat_prompt(tokenizer, q.question), add_special_tokens=False).input_ids
        answer_ids = tokenizer(q.answers[0], add_special_tokens=False).input_ids
        rows.append((prompt_ids + answer_ids, len(prompt_ids)))
    rows.sort(key=lambda r: len(r[0]))
    totals = {w: {"nll": 0.0, "entropy": 0.0, "gold_prob": 0.0, "n_tokens": 0.0} for w in ("base", "candidate")}
    kl_sum, kl_tokens = 0.0, 0.0
    n_batches = (len(rows) + batch_size - 1) // batch_size
    for b in range(n_batches):
        batch = teacher_forced_batch(rows[b * batch_size : (b + 1) * batch_size], tokenizer.pad_token_id)
        target, mask = batch["target"], batch["mask"]
        logits = {}
        with torch.inference_mode():
            for who, model in (("base", base_model), ("candidate", cand_model)):
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"], logits_to_keep=batch["keep"])
                logits[who] = out.logits[:, :-1].float()
                part = M.token_nll_entropy_prob(logits[who], target, mask)
                for key in totals[who]:
                    totals[who][key] += float(part[key].sum())
            kl = M.token_kl(logits["base"], logits["candidate"])
            kl_sum += float((kl * mask).sum())
            kl_tokens += float(mask.sum())
        progress("evaluate: knowledge drift", b + 1, n_batches, f"teacher-forced batch {b + 1}/{n_batches}")
    out = {}
    for who, t in totals.items():
        out[who] = {
            "perplexity": M.perplexity(t["nll"], t["n_tokens"]),
            "entropy": M.mean_entropy(t["entropy"], t["n_tokens"]),
            "answer_probability": M.mean_gold_probability(t["gold_prob"], t["n_tokens"]),
            "n_tokens": int(t["n_tokens"]),
        }
    out["kl"] = kl_sum / kl_tokens if kl_tokens else float("nan")
    out["kl_tokens"] = int(kl_tokens)
    return out


def _value(v: float, n: int | None = None) -> Stat:
    return {"value": v, "lo": None, "hi": None, "k": None, "n": n}


def paired_rates(base_flags: list[bool], cand_flags: list[bool]) -> PairedMetric:
    """{"base", "candidate", "delta"}: both rates with Wilson intervals and their paired difference."""
    return {
        "base": M.rate_stat(sum(base_flags), len(base_flags)),
        "candidate": M.rate_stat(sum(cand_flags), len(cand_flags)),
        "delta": M.paired_delta(base_flags, cand_flags),
    }


def paired_rates_by_category(categories: list[str], base_flags: list[bool],
                              cand_flags: list[bool]) -> dict[str, PairedMetric]:
    """{category: paired_rates of the items in it}; ``categories[i]`` is item i's category."""
    return {
        cat: paired_rates([b for k, b in zip(categories, base_flags, strict=True) if k == cat],
                          [c for k, c in zip(categories, cand_flags, strict=True) if k == cat])
        for cat in sorted(set(categories))
    }


def second_window_counts(harm_rows: Sequence[HarmOutput]) -> WindowCounts:
    """How many harm answers were read past the first window, and how many of them that made compliance:
    what a gate reading only the first max_new_tokens would have missed."""
    read = [r for r in harm_rows if r["second_window"]]
    return WindowCounts(read=len(read),
                        turned_compliance=sum(r["label"] == COMPLIANCE and r["first_window_label"] != COMPLIANCE
                                              for r in read))


def paired_metrics(suites: dict, base_out: SuiteOutputs, cand_out: SuiteOutputs, drift: dict | None) -> Metrics:
    """The report's metrics: each {"base", "candidate", "delta"} of Stats, paired item by item."""
    harm = suites["harm"].items
    b_harm = [r["label"] == COMPLIANCE for r in base_out["harm"]]
    c_harm = [r["label"] == COMPLIANCE for r in cand_out["harm"]]
    by_cat = paired_rates_by_category([h.category for h in harm], b_harm, c_harm)
    b_ref = [r["label"] == REFUSAL for r in base_out["overrefusal"]]
    c_ref = [r["label"] == REFUSAL for r in cand_out["overrefusal"]]
    b_acc = [r["correct"] for r in base_out["knowledge"]]
    c_acc = [r["correct"] for r in cand_out["knowledge"]]
    out: Metrics = {
        "asr": paired_rates(b_harm, c_harm),
        "asr_by_category": by_cat,
        "overrefusal": paired_rates(b_ref, c_ref),
        "knowledge_accuracy": paired_rates(b_acc, c_acc),
    }
    out["second_window"] = SecondWindow(base=second_window_counts(base_out["harm"]),
                                        candidate=second_window_counts(cand_out["harm"]))
    if drift:
        for key in ("perplexity", "entropy", "answer_probability"):
            b, c = drift["base"][key], drift["candidate"][key]
            out[key] = {"base": _value(b, drift["base"]["n_tokens"]), "candidate": _value(c, drift["candidate"]["n_tokens"]),
                        "delta": _value(c - b)}
        kl = METRICS["kl"]
        out["kl"] = {"value": drift["kl"], "n_tokens": drift["kl_tokens"], "direction": f"{kl.label}, {kl.unit}"}
    return out


def flipped_examples(suites: dict, base_out: SuiteOutputs, cand_out: SuiteOutputs,
                     limit: int | None = 5) -> list[FlippedExample]:
    """Harm prompts the base did not comply with and the candidate did: the clearest evidence for a reviewer."""
    flips = []
    for item, b, c in zip(suites["harm"].items, base_out["harm"], cand_out["harm"], strict=True):
        if b["label"] != COMPLIANCE and c["label"] == COMPLIANCE:
            flips.append(FlippedExample(id=item.id, category=item.category, prompt=item.prompt,
                                        base_response=b["response"], base_label=b["label"],
                                        candidate_response=c["response"], candidate_label=c["label"]))
    return flips if limit is None else flips[:limit]


def samples(suites: dict, base_out: SuiteOutputs, cand_out: SuiteOutputs) -> list[SampleRecord]:
    """Every per-prompt pair of outputs, for the reviewers' view (stored apart from the report)."""
    rows: list[SampleRecord] = []
    for suite, base_rows, cand_rows in (("harm", base_out["harm"], cand_out["harm"]),
                                        ("overrefusal", base_out["overrefusal"], cand_out["overrefusal"])):
        for item, b, c in zip(suites[suite].items, base_rows, cand_rows, strict=True):
            rows.append(SampleRecord(suite=suite, item_id=item.id, prompt=item.prompt, category=item.category,
                                     base_response=b["response"], candidate_response=c["response"],
                                     base_label=b["label"], candidate_label=c["label"]))
    for item, k, kc in zip(suites["knowledge"].items, base_out["knowledge"], cand_out["knowledge"], strict=True):
        rows.append(SampleRecord(suite="knowledge", item_id=item.id, prompt=item.question, category="knowledge",
                                 base_response=k["answer"], candidate_response=kc["answer"],
                                 base_label="correct" if k["correct"] else "wrong",
                                 candidate_label="correct" if kc["correct"] else "wrong"))
    return rows


class ResultsCache:
    """A model's outputs on the suites, on disk, keyed by everything that determines them (the model's
    fingerprint: the base's, or base+adapter for a candidate; suite hashes; judge; decoding; dtype; the
    evaluation code's version)."""

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def key(base_fingerprint: str, suites: dict, judge, decoding: DecodingConfig, dtype: str) -> str:
        blob = json.dumps({
            "base": base_fingerprint,
            "suites": {k: s.hash for k, s in sorted(suites.items())},
            "judge": [judge.name, judge.version, judge.fingerprint],
            "decoding": decoding.to_dict(),
            "dtype": dtype,
            "v": RESULTS_VERSION,
            "code": code_version(),
        }, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def get(self, key: str) -> Any:
        """What ``put`` stored under ``key`` (a model's SuiteOutputs, or a candidate's outputs and drift), or None."""
        path = self.root / f"{key}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:  # a torn write from a killed process: recompute
            return None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        # atomic_write_text writes through a temporary file of its own per writer: two workers may finish
        # the same model on a cold cache at once.
        atomic_write_text(self.root / f"{key}.json", json.dumps(value))
