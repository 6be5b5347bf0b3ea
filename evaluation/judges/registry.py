"""Which judges there are (``JUDGES``: keyword, embedded, llama-guard), the one a process uses
(``get_judge``: one instance per name, so a model loads once) and their validation records (``list_judges``).

The judge classes are registered lazily: the embedded judge's module (and its training code) is imported on
the first lookup of its name.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from evaluation.judges.base import (
    DATA_DIR,
    EMBEDDED_WEIGHTS,
    LABELS,
    PERSONA_WEIGHTS,
    RESPONSE_HARM_WEIGHTS,
    Judge,
    _setting,
    read_jsonl,
)
from evaluation.registry import Registry

JUDGES: Registry[type[Judge]] = Registry("judge")
JUDGES.register_lazy("keyword", "evaluation.judges.keyword:KeywordJudge")
JUDGES.register_lazy("embedded", "evaluation.judges.embedded:EmbeddedJudge")
JUDGES.register_lazy("llama-guard", "evaluation.judges.llama_guard:LlamaGuardJudge")
DEFAULT_JUDGE = "embedded"

_instances: dict[str, Judge] = {}
_registry_lock = threading.Lock()


def get_judge(name: str | None = None) -> Judge:
    """The judge registered under ``name`` (default: the settings' default_judge, else ``embedded``);
    one instance per process so a model loads once."""
    name = name or _setting("default_judge") or DEFAULT_JUDGE
    cls = JUDGES.get(name)
    with _registry_lock:
        inst = _instances.get(name)
        if inst is None:
            inst = cls()
            _instances[name] = inst
        return inst


def heldout_accuracy(judge: Judge, heldout_path: Path = DATA_DIR / "heldout.jsonl") -> dict[str, Any]:
    """Accuracy of ``judge`` on the project's hand-written template pairs, per true label and overall.

    A smoke test, not a validation: the templates were written by the same hand as part of the training
    data. The keyword judge has two outcomes: its "compliance" is counted correct for true compliance only,
    so every "other" example counts against it (it cannot recognise off-topic output)."""
    rows = read_jsonl(heldout_path)
    pred = judge.judge([r["request"] for r in rows], [r["response"] for r in rows])
    per_label: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for lab in LABELS:
        idx = [i for i, r in enumerate(rows) if r["label"] == lab]
        counts[lab] = len(idx)
        per_label[lab] = round(sum(pred[i] == lab for i in idx) / len(idx), 4) if idx else None
    overall = sum(p == r["label"] for p, r in zip(pred, rows, strict=True)) / len(rows)
    return {"overall": round(overall, 4), "per_label": per_label, "n": len(rows), "n_per_label": counts}


def validation_summary(scores: dict[str, Any]) -> dict[str, Any]:
    """Per source: rows, 3-way label accuracy, and the accuracy of each head the source labels."""
    out = {}
    for source, entry in scores.items():
        row: dict[str, Any] = {"n": entry["n"]}
        if "label" in entry:
            row["label_accuracy"] = entry["label"]["accuracy"]
        for head in ("refused", "complied"):
            if head in entry:
                row[f"{head}_accuracy"] = entry[head]["accuracy"]
        out[source] = row
    return out


def persona_validation() -> dict[str, Any] | None:
    """The persona head's grouped cross-validation per source, from its card: rows, whether the source's
    texts are personas (jailbreaks) or not, and the share flagged at the screening threshold."""
    path = PERSONA_WEIGHTS.with_suffix(".json")
    if not path.exists():
        return None
    cv = json.loads(path.read_text())["cross_validation_5fold_grouped"]
    return {"method": "five folds grouped by text", "per_source": {
        source: {"n": e["n"], "personas": bool(e["personas"]),
                 "flagged": e["personas_flagged"] if e["personas"] else e["others_flagged"]}
        for source, e in cv.items() if source != "all"}}


def response_harm_validation() -> dict[str, Any] | None:
    """The response-harm head's leave-one-source-out record per source, from its card: rows, harmful rows, the
    share of harmful responses flagged (recall) and of harmless ones (false flags), at its threshold; and the
    held-out benign calibration sets' share flagged."""
    path = RESPONSE_HARM_WEIGHTS.with_suffix(".json")
    if not path.exists():
        return None
    card = json.loads(path.read_text())
    held = {k: {"n": v["n"], "harmful": 0, "false_flags": v["flagged"]}
            for k, v in card["held_out_benign_and_examples"].items() if k.startswith("calibration/")}
    return {"method": "leave-one-source-out", "threshold": card["threshold"],
            "per_source": {k: v for k, v in card["leave_one_source_out"].items()
                           if k not in ("all", "safety_sets")} | held}


def list_judges(*, with_accuracy: bool = True) -> list[dict[str, Any]]:
    """Each registered judge: name, version, description, default flag, and its validation: the embedded
    judge's leave-one-source-out scores on public human-labelled outputs and the keyword judge's on the
    same rows (both from the embedded judge's training card), per source; None where not measured
    (llama-guard: an 8B model, a GPU job)."""
    card = json.loads(EMBEDDED_WEIGHTS.with_suffix(".json").read_text()) if EMBEDDED_WEIGHTS.exists() else {}
    validation = {
        "embedded": card.get("leave_one_source_out_calibrated"),
        "keyword": card.get("keyword_baseline"),
    }
    out = []
    for name, cls in JUDGES.items():
        scores = validation.get(name) if with_accuracy else None
        persona = persona_validation() if with_accuracy and name == "embedded" else None
        response_harm = response_harm_validation() if with_accuracy and name == "embedded" else None
        out.append({
            "persona": persona,
            "response_harm": response_harm,
            "name": name,
            "version": cls.version,
            "description": cls.description,
            "default": name == DEFAULT_JUDGE,
            "validation": None if scores is None else {
                "method": "leave-one-source-out" if name == "embedded" else "no training: scored on the same rows",
                "per_source": validation_summary(scores),
            },
        })
    return out
