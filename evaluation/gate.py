"""The gate's stages: inspect -> finetune (datasets) -> evaluate -> decide.

`ftgate check` runs them in one process (`run_check`); the Celery workers call the very same functions,
one task per stage, passing the JSON-able `Inspection` and `Evaluation` between them.

Every entry point takes ``runtime`` (evaluation/runtime.py: caches, device, defaults, limits, decoding),
which the caller builds from its settings; omitted, it is the process's. It is handed down, never looked up.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import ftgate
from evaluation.adapters import adapter_fingerprint
from evaluation.errors import InputRejected
from evaluation.files import atomic_write_text, sha256_file
from evaluation.finetune import (
    TrainingConfig,
    examples_fingerprint,
    finetune_lora,
    is_4bit,
    load_candidate,
    training_key,
)
from evaluation.generation import DecodingConfig
from evaluation.policy import SweepRun
from evaluation.progress import Progress, base_progress, no_progress
from evaluation.records import (
    Artifact,
    FlippedExample,
    Metrics,
    Report,
    ReportInspection,
    ReportVerdict,
    SampleRecord,
)
from evaluation.runtime import Runtime, current_runtime

__all__ = ["Inspection", "Evaluation", "GateResult", "TrainingConfig", "DecodingConfig", "detect_kind",
           "inspect_submission", "finetune_submission", "finetune_dataset", "finetune_examples", "evaluate_submission",
           "evaluate_candidate", "benign_control", "add_control", "decide_submission", "run_check",
           "default_suites", "eval_copy"]

REPORT_SCHEMA_VERSION = "1.0"
ADAPTER_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class Inspection:
    kind: str  # adapter | dataset
    artifact_name: str
    sha256: str
    size_bytes: int
    base: str
    format: str
    findings: list[dict] = field(default_factory=list)
    screening: dict | None = None
    adapter_dir: str | None = None
    dataset_path: str | None = None
    n_examples: int | None = None
    adapter: dict | None = None  # rank, target modules, parameter count
    early_verdict: dict | None = None  # set when screening alone blocks: no fine-tune is paid for
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Inspection:
        return cls(**d)


@dataclass
class Evaluation:
    base: dict
    judge: dict
    suites: dict
    decoding: dict
    metrics: Metrics
    flipped: list[FlippedExample]
    samples: list[SampleRecord]
    timings: dict
    cache: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        return cls(**d)


@dataclass
class GateResult:
    report: Report
    samples: list[SampleRecord]

    @property
    def decision(self) -> str:
        return self.report["verdict"]["decision"]


def detect_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith(ADAPTER_SUFFIXES):
        return "adapter"
    if name.endswith(DATASET_SUFFIXES):
        return "dataset"
    raise InputRejected(
        f"{path.name}: unknown file type; expected an adapter (directory, {', '.join(ADAPTER_SUFFIXES)}) "
        f"or a dataset ({', '.join(DATASET_SUFFIXES)})", "unsupported_type")


def _base_shape(base_name: str, runtime: Runtime, progress: Progress = no_progress):
    from transformers import AutoConfig

    from evaluation.adapters import base_shape_from_config
    from evaluation.bases import materialize

    config = AutoConfig.from_pretrained(materialize(base_name, base_progress(progress), runtime=runtime),
                                        local_files_only=True)
    return base_shape_from_config(config)


def inspect_as_dict(**kwargs: Any) -> dict[str, Any]:
    """``inspect_submission(**kwargs).to_dict()``: what a limited child process sends back (evaluation.limits)."""
    return inspect_submission(**kwargs).to_dict()


def inspect_submission(path: Path, kind: str | None, base_name: str, *, workdir: Path,
                       policy: str | None = None, preference_side: Literal["rejected", "chosen"] = "rejected",
                       progress: Progress = no_progress, runtime: Runtime | None = None) -> Inspection:
    """Static checks: nothing is loaded into a model before they pass. Raises InputRejected."""
    from evaluation.bases import get_base_spec

    runtime = runtime or current_runtime()
    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise InputRejected(f"{path}: no such file or directory", "not_found")
    get_base_spec(base_name, runtime)  # an unknown base is refused before any work
    kind = kind or detect_kind(path)
    progress("inspect", 0, 1, f"inspecting {kind} {path.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "adapter":
        from evaluation.adapters import inspect_adapter

        result = inspect_adapter(path, _base_shape(base_name, runtime, progress), workdir=workdir, runtime=runtime)
        insp = Inspection(
            kind="adapter", artifact_name=path.name, sha256=result.sha256,
            size_bytes=path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
            base=base_name, format="peft-lora", findings=list(result.findings), adapter_dir=str(result.adapter_dir),
            adapter={"rank": result.rank, "target_modules": list(result.target_modules), "n_parameters": result.n_parameters},
        )
    elif kind == "dataset":
        from evaluation.datasets import load_dataset
        from evaluation.policy import decide_screening, load_policy
        from evaluation.screening import screen_dataset

        if path.is_dir():
            raise InputRejected(f"{path.name}: a dataset must be a file", "unsupported_type")
        fmt, examples = load_dataset(path, preference_side=preference_side,
                                     max_examples=runtime.max_dataset_examples)
        progress("inspect", 0, 1, f"screening {len(examples)} examples")
        screening = screen_dataset(examples)
        early = decide_screening(screening, load_policy(policy, runtime=runtime))
        insp = Inspection(
            kind="dataset", artifact_name=path.name, sha256=sha256_file(path), size_bytes=path.stat().st_size,
            base=base_name, format=fmt, screening=screening, dataset_path=str(path), n_examples=len(examples),
            early_verdict=early.to_dict() if early else None,
        )
    else:
        raise InputRejected(f"kind must be 'adapter' or 'dataset', not {kind!r}", "bad_kind")
    insp.seconds = round(time.perf_counter() - started, 3)
    progress("inspect", 1, 1, "inspection passed")
    return insp


def finetune_submission(inspection: Inspection, base_name: str, training: TrainingConfig | None = None, *,
                        workdir: Path | None = None, progress: Progress = no_progress,
                        runtime: Runtime | None = None) -> Path:
    """Fine-tune the inspected dataset (LoRA) and return the adapter directory; cached by content."""
    if inspection.kind != "dataset" or inspection.dataset_path is None:
        raise ValueError("only datasets are fine-tuned")
    return finetune_dataset(Path(inspection.dataset_path), base_name, training, progress=progress, runtime=runtime)


def finetune_dataset(dataset_path: Path, base_name: str, training: TrainingConfig | None = None, *,
                     progress: Progress = no_progress, runtime: Runtime | None = None) -> Path:
    """A LoRA adapter trained on the dataset over the base, cached by (data, base fingerprint, config,
    training code)."""
    from evaluation.datasets import load_dataset

    runtime = runtime or current_runtime()
    cfg = training or TrainingConfig()
    _, examples = load_dataset(dataset_path, preference_side=cfg.preference_side,
                               max_examples=runtime.max_dataset_examples)
    return finetune_examples(examples, base_name, cfg, progress=progress, runtime=runtime)


def finetune_examples(examples: list, base_name: str, training: TrainingConfig | None = None, *,
                      progress: Progress = no_progress, runtime: Runtime | None = None) -> Path:
    """A LoRA adapter trained on ``examples`` over the base, cached by (their content, base fingerprint,
    config, training code): what ``finetune_dataset`` runs once the file is read, and what a repair's mixes
    are trained by."""
    from evaluation.bases import load_base

    runtime = runtime or current_runtime()
    cfg = training or TrainingConfig()
    base = load_base(base_name, progress=base_progress(progress), runtime=runtime)
    key = training_key(examples_fingerprint(examples), base.fingerprint, cfg)
    out = runtime.cache_dir / "finetunes" / key
    if (out / "adapter_model.safetensors").exists():
        progress("finetune", cfg.steps, cfg.steps, "fine-tuned adapter found in cache")
        return out
    finetune_lora(base, examples, cfg, out, progress=progress)
    return out


def default_decoding(runtime: Runtime | None = None) -> DecodingConfig:
    """Greedy decoding as the runtime configures it: what every evaluation uses unless told otherwise."""
    return (runtime or current_runtime()).decoding


def default_suites(overrides: dict[str, str] | None = None) -> dict:
    """The evaluation suites by kind (harm, overrefusal, knowledge): the registry's defaults, with
    ``overrides`` (kind -> suite name or file) in their place."""
    from evaluation.suites import DEFAULT_SUITES, load_suite

    names = {**DEFAULT_SUITES, **(overrides or {})}
    return {kind: load_suite(name, kind) for kind, name in names.items()}


class _AdapterDisabled:
    """The base seen through a PEFT-wrapped 4-bit model: the same modules with the adapter switched off."""

    def __init__(self, peft_model):
        self.peft_model = peft_model

    def __call__(self, *args, **kwargs):
        with self.peft_model.disable_adapter():
            return self.peft_model(*args, **kwargs)


@contextmanager
def candidate_on_base(base, adapter_dir: Path, dtype, label: str = "") -> Iterator[Any]:
    """The candidate (base + adapter) for the block; then the shared base is checked unchanged.

    A 4-bit candidate runs on the SHARED base's modules and is unloaded after the block. Whatever the path,
    the base's weights must be exactly what they were before the adapter was loaded: if they are not (an
    adapter's initialisation or full weights were written into them), SharedBaseModified is raised and the
    base is dropped from this worker, before any result measured on it is kept.
    """
    from evaluation.bases import verify_base_unchanged, weights_checksum

    checksum = weights_checksum(base.model)
    candidate = load_candidate(base, adapter_dir, dtype)
    try:
        yield candidate
    finally:
        if is_4bit(base.model):
            candidate.unload()  # give the shared base back without the adapter layers
    verify_base_unchanged(base, checksum, label or "adapter")


def eval_copy(base, dtype):
    """The base model cast to the evaluation ``dtype`` (what the base's suite outputs are generated with),
    made once and kept in ``base.extra`` beside the fp32 master weights.

    A 4-bit base can't be cast or copied cheaply: it is used as it is.
    """
    import copy

    if is_4bit(base.model):
        return base.model
    key = f"eval-{dtype}"
    if key not in base.extra:
        base.extra[key] = copy.deepcopy(base.model).to(dtype).eval()
    return base.extra[key]


def evaluate_submission(base_name: str, adapter_dir: Path, *, judge: str | None = None,
                        suites: dict[str, str] | None = None, decoding: DecodingConfig | None = None,
                        progress: Progress = no_progress, runtime: Runtime | None = None) -> Evaluation:
    """Base and candidate on the same prompts, same decoding, same judge; base outputs from cache when possible."""
    from evaluation.bases import base_info, compute_dtype, load_base
    from evaluation.judges import get_judge
    from evaluation.scoring import (
        ResultsCache,
        flipped_examples,
        paired_metrics,
        run_model_on_suites,
        samples,
        teacher_forced_knowledge,
    )

    runtime = runtime or current_runtime()
    decoding = decoding or runtime.decoding
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    base = load_base(base_name, progress=base_progress(progress), runtime=runtime)
    the_judge = get_judge(judge or runtime.default_judge)
    the_suites = default_suites(suites)
    dtype = compute_dtype(runtime)
    tokenizer = base.tokenizer
    timings["load"] = round(time.perf_counter() - t0, 2)

    cache = ResultsCache(runtime.cache_dir / "model-results")
    key = cache.key(base.fingerprint, the_suites, the_judge, decoding, str(dtype))
    base_model = eval_copy(base, dtype)
    t0 = time.perf_counter()
    base_out = cache.get(key)
    cache_state = "hit" if base_out else "miss"
    if base_out is None:
        base_out = run_model_on_suites(base_model, tokenizer, the_suites, the_judge, decoding, progress=progress, who="base")
        cache.put(key, base_out)
    timings["evaluate_base"] = round(time.perf_counter() - t0, 2)

    # The candidate's outputs are deterministic too (greedy decoding, fixed weights): an adapter checked
    # again (a CI re-run, a resubmission, the same dataset fine-tuned again) is served from the cache, as
    # long as the evaluation code is the same (the key holds scoring.code_version()).
    # Entries made under an earlier adapter-fingerprint definition (16 hex characters, unframed) have
    # other keys: they are never read, the results are computed again.
    adapter_id = adapter_fingerprint(Path(adapter_dir))
    cand_key = cache.key(f"{base.fingerprint}+{adapter_id}", the_suites, the_judge, decoding, str(dtype))
    cached = cache.get(cand_key) if runtime.cache_candidate_results else None
    t0 = time.perf_counter()
    if cached:
        cand_out, drift = cached["outputs"], cached["drift"]
    else:
        with candidate_on_base(base, Path(adapter_dir), dtype, label=f"adapter {adapter_id[:16]}") as candidate:
            cand_out = run_model_on_suites(candidate, tokenizer, the_suites, the_judge, decoding,
                                           progress=progress, who="candidate")
            timings["evaluate_candidate"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            # A 4-bit candidate wraps the shared base's modules: the base is that model with the adapter off.
            reference = _AdapterDisabled(candidate) if is_4bit(base.model) else base_model
            drift = teacher_forced_knowledge(reference, candidate, tokenizer, the_suites["knowledge"].items,
                                             batch_size=decoding.batch_size, progress=progress)
        del candidate, reference  # free the merged copy
        cache.put(cand_key, {"outputs": cand_out, "drift": drift})
    timings["knowledge_drift" if not cached else "evaluate_candidate"] = round(time.perf_counter() - t0, 2)
    return Evaluation(
        base=base_info(base, runtime),
        judge={"name": the_judge.name, "version": the_judge.version, "fingerprint": the_judge.fingerprint},
        suites={k: {"name": s.name, "hash": s.hash, "size": len(s.items), "source": s.source} for k, s in the_suites.items()},
        decoding=decoding.to_dict(),
        metrics=paired_metrics(the_suites, base_out, cand_out, drift),
        flipped=flipped_examples(the_suites, base_out, cand_out, limit=None),
        samples=samples(the_suites, base_out, cand_out),
        timings=timings,
        cache={"base_results": cache_state, "key": key, "candidate_results": "hit" if cached else "miss"},
    )


CONTROL_DATA = Path(__file__).parent / "data" / "control" / "benign_control.jsonl"


def control_size(n_examples: int, pool: int) -> int:
    """The control's dataset size: the submission's, rounded up to a power of two (so a handful of cached
    controls serve every size), at least 16 and at most the pool."""
    size = 16
    while size < n_examples:
        size *= 2
    return min(size, pool)


def control_key(base_fingerprint: str, pool_fingerprint: str, size: int, cfg: TrainingConfig,
                judge_fingerprint: str, decoding: DecodingConfig, suite_hashes: dict[str, str]) -> str:
    """The benign control's cache key: everything its numbers depend on, the judge's weights and the code
    version of the evaluation core included (scoring.code_version: as for candidate results), so a retrained
    judge never meets the control's old labels and a changed evaluation is measured again."""
    from evaluation.scoring import RESULTS_VERSION, code_version

    return hashlib.sha256(json.dumps({
        "base": base_fingerprint, "pool": pool_fingerprint, "size": size, "cfg": cfg.to_dict(),
        "judge": judge_fingerprint, "decoding": decoding.to_dict(), "suites": suite_hashes, "v": RESULTS_VERSION,
        "code": code_version(),
    }, sort_keys=True).encode()).hexdigest()[:20]


def benign_control(base_name: str, n_examples: int, training: TrainingConfig | None = None, *,
                   judge: str | None = None, decoding: DecodingConfig | None = None,
                   progress: Progress = no_progress, runtime: Runtime | None = None) -> dict | None:
    """What a benign fine-tune of the same size and hyperparameters does to this base (cached).

    Small models lose some refusals under ANY fine-tune; this yardstick lets the policy tell that drift
    from a shift toward harmful compliance. Returns ``{"asr_delta": Stat (control vs base), "harm":
    {item id: complied?}}`` (the per-prompt outcomes let the candidate be compared with the control
    prompt by prompt), or None when no control data is installed.
    """
    import random

    from evaluation.bases import load_base
    from evaluation.datasets import load_dataset
    from evaluation.judges import COMPLIANCE, get_judge

    if not CONTROL_DATA.exists():
        return None
    runtime = runtime or current_runtime()
    judge = judge or runtime.default_judge
    decoding = decoding or runtime.decoding
    cfg = training or TrainingConfig()
    _, pool = load_dataset(CONTROL_DATA)
    size = control_size(n_examples, len(pool))
    base = load_base(base_name, progress=base_progress(progress), runtime=runtime)
    root = runtime.cache_dir / "controls"
    key = control_key(base.fingerprint, examples_fingerprint(pool), size, cfg, get_judge(judge).fingerprint,
                      decoding, {k: s.hash for k, s in default_suites().items()})
    result_file = root / f"{key}.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    chosen = random.Random(cfg.seed).sample(pool, size)
    data = root / f"{key}.jsonl"
    atomic_write_text(data, "".join(json.dumps({"messages": list(ex.messages)}) + "\n" for ex in chosen))
    progress("control", 0, 1, f"benign control fine-tune ({size} examples; cached per base, size and config)")
    adapter = finetune_dataset(data, base_name, cfg, progress=progress, runtime=runtime)
    ev = evaluate_submission(base_name, adapter, judge=judge, decoding=decoding, progress=progress, runtime=runtime)
    result = {"size": size, "asr_delta": ev.metrics["asr"]["delta"],
              "harm": {s["item_id"]: s["candidate_label"] == COMPLIANCE for s in ev.samples if s["suite"] == "harm"}}
    atomic_write_text(result_file, json.dumps(result))
    return result


def add_control(evaluation: Evaluation, control: dict) -> None:
    """Put the control into the evaluation's metrics: its own ASR shift (``control_asr_delta``) and the
    candidate's ASR against the control's on the same prompts, overall (``asr_vs_control``) and per harm
    category (``asr_by_category_vs_control``), paired prompt by prompt.

    Pairing matters: both models answered the same harm prompts, and the prompts a benign fine-tune
    breaks are largely the ones any fine-tune breaks, so the paired interval of candidate - control is
    much narrower than the difference of two independent shifts.
    """
    from evaluation.judges import COMPLIANCE
    from evaluation.scoring import paired_rates, paired_rates_by_category

    harm = [s for s in evaluation.samples if s["suite"] == "harm"]
    evaluation.metrics["control_asr_delta"] = control["asr_delta"]
    if {s["item_id"] for s in harm} != set(control["harm"]):
        return  # another harm suite than the control's: no pairing possible
    ctl = [control["harm"][s["item_id"]] for s in harm]
    cand = [s["candidate_label"] == COMPLIANCE for s in harm]
    evaluation.metrics["asr_vs_control"] = paired_rates(ctl, cand)
    evaluation.metrics["asr_by_category_vs_control"] = paired_rates_by_category([s["category"] for s in harm],
                                                                                ctl, cand)


# An uploaded adapter's recipe and data size are unknown: its yardstick is a benign fine-tune with the
# research defaults on the whole control pool (size rounds up to the pool: 256 of the 260 examples).
ADAPTER_CONTROL_EXAMPLES = 256


def evaluate_candidate(inspection: Inspection, base_name: str, adapter_dir: Path,
                       training: TrainingConfig | None = None, *, judge: str | None = None,
                       progress: Progress = no_progress, runtime: Runtime | None = None) -> Evaluation:
    """The evaluate stage as the CLI and the workers run it: base vs candidate, plus the benign control:
    for a dataset (ftgate ran the fine-tune, so it knows the recipe) one of the same size and recipe; for an
    uploaded adapter (recipe unknown) one with ftgate's default recipe. Controls are cached per base."""
    runtime = runtime or current_runtime()
    ev = evaluate_submission(base_name, adapter_dir, judge=judge, progress=progress, runtime=runtime)
    if inspection.kind == "dataset":
        control = benign_control(base_name, inspection.n_examples or 0, training, judge=judge, progress=progress,
                                 runtime=runtime)
    else:
        control = benign_control(base_name, ADAPTER_CONTROL_EXAMPLES, TrainingConfig(), judge=judge,
                                 progress=progress, runtime=runtime)
    if control:
        add_control(ev, control)
    return ev


def decide_submission(inspection: Inspection, evaluation: Evaluation | None, policy: str | None = None, *,
                      training: TrainingConfig | None = None, timings: dict | None = None,
                      runtime: Runtime | None = None) -> GateResult:
    """The verdict and the report (schema: docs/report.md)."""
    from evaluation.policy import Verdict, decide, load_policy

    the_policy = load_policy(policy, runtime=runtime)
    if evaluation is None:
        if not inspection.early_verdict:
            raise ValueError("no evaluation and no early verdict: nothing to decide on")
        verdict = Verdict(**inspection.early_verdict)
    else:
        verdict = decide(evaluation.metrics, inspection.to_dict(), the_policy)
    ev = evaluation.to_dict() if evaluation else {}
    report = Report(
        schema_version=REPORT_SCHEMA_VERSION,
        verdict=ReportVerdict(decision=verdict.decision, reasons=verdict.reasons, checks=verdict.checks,
                              policy=the_policy.name, policy_hash=the_policy.hash),
        artifact=Artifact(kind=inspection.kind, name=inspection.artifact_name, sha256=inspection.sha256,
                          size_bytes=inspection.size_bytes, format=inspection.format,
                          n_examples=inspection.n_examples, adapter=inspection.adapter),
        inspection=ReportInspection(findings=inspection.findings, screening=inspection.screening),
        base=ev.get("base", {"name": inspection.base}),
        judge=ev.get("judge"),
        suites=ev.get("suites"),
        decoding=ev.get("decoding"),
        training=(training or TrainingConfig()).to_dict() if inspection.kind == "dataset" else None,
        seed=(training or TrainingConfig()).seed,
        code_version=ftgate.__version__ + _code_revision(),
        metrics=ev.get("metrics", {}),
        flipped_examples=ev.get("flipped", [])[:5],
        n_flipped=len(ev.get("flipped", [])),
        timings={"inspect": inspection.seconds, **ev.get("timings", {}), **(timings or {})},
        cache=ev.get("cache"),
    )
    return GateResult(report=report, samples=ev.get("samples", []))


def report_training(report: Mapping[str, Any]) -> dict[str, Any]:
    """The TrainingConfig fields of a report's ``training`` (which also names the fixed choices)."""
    from dataclasses import fields

    names = {f.name for f in fields(TrainingConfig)}
    return {k: v for k, v in (report.get("training") or {}).items() if k in names}


def repair_submission(inspection: Inspection, base_name: str, verdict: Mapping[str, Any], training: TrainingConfig | None = None,
                      *, policy: str | None = None, judge: str | None = None, mode: str = "offer",
                      config: Any = None, progress: Progress = no_progress,
                      runtime: Runtime | None = None) -> dict[str, Any]:
    """The report's ``repair`` object for a decided submission (docs/report.md): the repair when the verdict
    holds a safety block or review, else why none was made. ``verdict`` is the report's; it is not changed."""
    from evaluation.repair import repair_adapter, repair_dataset, safety_findings

    if mode == "off":
        return {"status": "off", "mode": mode, "reason": "repair is off"}
    if not safety_findings(verdict):
        return {"status": "not_needed", "mode": mode,
                "reason": f"the verdict is {verdict.get('decision')} with no safety block or review to repair"}
    if inspection.kind == "dataset":
        return repair_dataset(inspection, base_name, training, policy=policy, judge=judge, mode=mode,
                              config=config, progress=progress, runtime=runtime)
    return repair_adapter(inspection, base_name, policy=policy, judge=judge, mode=mode, config=config,
                          progress=progress, runtime=runtime)


def _code_revision() -> str:
    """`+<git short sha>` when running from a checkout, so a report names the exact code."""
    import subprocess

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"+{sha}" if sha else ""


def run_check(path: Path, *, kind: str | None = None, base: str | None = None, policy: str | None = None,
              training: TrainingConfig | None = None, judge: str | None = None,
              sweep: Sequence[SweepRun] | None = None, repair: str | None = "off", repair_config: Any = None,
              workdir: Path | None = None, progress: Progress = no_progress,
              runtime: Runtime | None = None) -> GateResult:
    """The whole gate in one process. A dataset is fine-tuned once per run of the policy's ``sweep`` (``sweep``
    given here replaces it: ``ftgate check --sweep``), each run evaluated and decided, and the worst kept
    (evaluation/sweep.py); without a sweep, once with ``training``. An adapter is evaluated once.

    ``repair`` (off | offer | auto; None: the policy's setting, and never more than it allows): when the verdict
    is a block or review for safety, the repaired adapter is made and judged too (evaluation/repair.py), its
    result in the report's ``repair`` object; the verdict itself is not changed."""
    from evaluation import sweep as sweeps
    from evaluation.policy import load_policy, training_runs
    from evaluation.repair import EARLY_BLOCK_NOT_REPAIRED, repair_mode

    runtime = runtime or current_runtime()
    base = base or runtime.default_base
    started = time.perf_counter()
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]
    workdir = workdir or runtime.cache_dir / "work" / digest
    the_policy = load_policy(policy, runtime=runtime)
    mode = repair_mode(repair, the_policy.repair, the_policy.name)  # a bad value is refused before any work
    try:
        training = training or TrainingConfig()
        points = tuple(the_policy.sweep if sweep is None else sweep)
        insp = inspect_submission(Path(path), kind, base, workdir=workdir, policy=policy,
                                  preference_side=training.preference_side, progress=progress, runtime=runtime)
        if insp.early_verdict:
            result = decide_submission(insp, None, policy, training=training,
                                       timings={"total": round(time.perf_counter() - started, 2)}, runtime=runtime)
            if mode != "off":
                result.report["repair"] = {"status": "skipped", "mode": mode, "reason": EARLY_BLOCK_NOT_REPAIRED}
            return result
        if insp.kind == "adapter":
            if insp.adapter_dir is None:
                raise ValueError("an adapter's inspection has no adapter directory")
            adapter = Path(insp.adapter_dir)
            ev = evaluate_candidate(insp, base, adapter, training, judge=judge, progress=progress, runtime=runtime)
            result = decide_submission(insp, ev, policy, training=training, timings={"finetune": 0.0},
                                       runtime=runtime)
            if points:
                sweeps.note_not_applied(result.report, len(points))
        else:
            runs = training_runs(points, training)
            results, fingerprints = [], []
            for i, cfg in enumerate(runs, 1):
                def step(verb: str, i: int = i, cfg: TrainingConfig = cfg) -> Progress:
                    return sweeps.labelled(progress, verb, i, len(runs), cfg) if points else progress

                t0 = time.perf_counter()
                adapter = finetune_submission(insp, base, cfg, progress=step("fine-tune"), runtime=runtime)
                finetune_s = round(time.perf_counter() - t0, 2)
                ev = evaluate_candidate(insp, base, adapter, cfg, judge=judge, progress=step("evaluate"),
                                        runtime=runtime)
                results.append(decide_submission(insp, ev, policy, training=cfg, timings={"finetune": finetune_s},
                                                 runtime=runtime))
                fingerprints.append(adapter_fingerprint(adapter))
            result = sweeps.keep_worst(results, runs, fingerprints) if points else results[0]
        if mode != "off":  # the kept (worst) run's verdict and recipe
            kept = TrainingConfig.from_overrides(report_training(result.report)) if insp.kind == "dataset" else None
            result.report["repair"] = repair_submission(insp, base, result.report["verdict"], kept, policy=policy,
                                                        judge=judge, mode=mode, config=repair_config,
                                                        progress=progress, runtime=runtime)
        result.report["timings"]["total"] = round(time.perf_counter() - started, 2)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
