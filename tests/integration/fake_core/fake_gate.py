"""A fast stand-in for evaluation/gate.py (the shapes of tests/integration/test_tasks.py's fake gate), except
that a fine-tune needs the guarded base first, through the real on-demand path (evaluation.bases.materialize),
which reaches the slow fake_guard. A file named *harmful* is blocked by its screening, as the real one is."""

import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: sitecustomize imports this module before the project is on sys.path
    from evaluation.records import SampleRecord


@dataclass
class Inspection:
    kind: str
    adapter_dir: str | None = None
    dataset_path: str | None = None
    early_verdict: dict | None = None
    findings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


@dataclass
class Evaluation:
    metrics: dict
    samples: "list[SampleRecord]"

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


def inspect_submission(path, kind, base_name, *, workdir, policy=None, preference_side="rejected", progress=None,
                       runtime=None):
    if progress is not None:  # none in the limited child process that inspects for the worker
        progress("inspect", 1, 1, "screened")
    early = ({"decision": "block", "reasons": ["screening: most examples are harmful"]}
             if "harmful" in Path(path).name else None)
    return Inspection(kind or "dataset", dataset_path=str(path), early_verdict=early)


def inspect_as_dict(**kwargs):
    return inspect_submission(**kwargs).to_dict()


def finetune_submission(inspection, base_name, training=None, *, workdir=None, progress, runtime=None):
    from evaluation.bases import materialize
    from evaluation.progress import base_progress

    materialize(base_name, base_progress(progress), runtime=runtime)
    out = Path(workdir) / "adapter"
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(b"fake")
    progress("finetune", 1, 1, "fine-tuned")
    return out


def evaluate_candidate(inspection, base_name, adapter_dir, training=None, *, progress, judge=None, runtime=None):
    progress("generate", 1, 1, "evaluated")
    return Evaluation(metrics={}, samples=[])


def decide_submission(inspection, evaluation, policy, *, training=None, runtime=None):
    verdict = inspection.early_verdict or {"decision": "approve", "reasons": ["fake"]}
    report = {"verdict": {**verdict, "policy": policy, "policy_hash": None}, "metrics": {}}
    return types.SimpleNamespace(report=report, samples=[])
