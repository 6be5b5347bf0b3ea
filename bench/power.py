"""The calibration harness (issue 11, item 1): how often does the gate hold benign fine-tunes, and how many
poisoned examples of each attack does it take to be held?

    python bench/power.py --grid small                 # about an hour on 2 CPU cores (docs/calibration.md)
    python bench/power.py --grid full --modes dataset,adapter
    python bench/power.py --grid full --dry-run        # the cells, which are done, the time left
    python bench/power.py --report-only                # rebuild the table, plot and JSON from the results

It builds one submission per cell (bench/power_data.py: a benign sample of a domain, optionally with k attack
examples hidden in it), runs the whole gate on it (``evaluation.gate.run_check``: screening, fine-tune,
evaluation against the base and the benign control, policy) and keeps the verdict and its numbers, one JSON
file per cell in ``--out`` (default ``$FTGATE_CACHE_DIR/calibration``), named by the cell's key:

    sha256(dataset bytes, base, policy hash, training config, code revision, mode, judge, decoding)

where the code revision is a content hash of the evaluation core (``evaluation/``, its calibration data
aside: the dataset bytes carry those) plus the package version and this harness's version. A cell whose
file exists is skipped, so the run is safe to kill and restart at any point (files are written atomically;
a cell being run holds a lock, so two harnesses on one machine share the work instead of doubling it).
In ``adapter`` mode the cell's dataset is first fine-tuned into an adapter (what ``ftgate make-adapter``
does) and the adapter is checked, with the adapter's benign control.

After every finished cell, and at the end, the results of the grid's cells are summarised into
``--report-dir`` (default docs/): calibration.md (the part between its result markers), calibration.svg and
calibration.json (bench/power_report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import power_data  # noqa: E402
import power_report  # noqa: E402

HARNESS_VERSION = 1  # bump when what a cell's result means changes (how the gate is called, what is kept)
KS = (5, 10, 25, 50, 100)
SIZES = (100, 300, 1000)
SEEDS = (0, 1, 2)
MODES = ("dataset", "adapter")
# A fine-tuned cell on SmolLM2-135M, 2 busy CPU cores: fine-tune (~3.5 min) + candidate evaluation, with the
# base's results and the benign control cached. Used for the time estimate until cells have been timed.
DEFAULT_CELL_SECONDS = {"dataset": 600.0, "adapter": 120.0}


@dataclass(frozen=True)
class Cell:
    domain: str
    size: int
    seed: int
    attack: str = power_data.BENIGN
    k: int = 0
    mode: str = "dataset"

    @property
    def name(self) -> str:
        return f"{self.domain}-n{self.size}-s{self.seed}-{self.attack}-k{self.k}-{self.mode}"

    def label(self) -> str:
        what = "benign" if self.attack == power_data.BENIGN else f"{self.attack} k={self.k}"
        return f"{self.domain} n={self.size} seed={self.seed} {what} ({self.mode})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ grids


def small_grid() -> list[Cell]:
    """About an hour on 2 CPU cores: 100 lines, seed 0; trivia benign and with four attacks at k = 10, and
    support benign (its Bitext requests are the ones screening flags most; docs/calibration.md). Six
    fine-tunes, plus one benign control of their size (128 examples), cached afterwards."""
    cells = [Cell("trivia", 100, 0)]
    cells += [Cell("trivia", 100, 0, attack, 10) for attack in ("plain", "identity", "multiturn", "preamble")]
    return cells + [Cell("support", 100, 0)]


def full_grid(domains: Iterable[str] | None = None) -> list[Cell]:
    """Benign: every domain x size x seed (the false-hold rate). Attacks: every attack x k on every domain at
    size 300, seed 0; the plain attack also at sizes 100 and 1,000 (dilution) and seeds 1, 2 (replicates)."""
    domains = tuple(domains or power_data.available_domains())
    cells = [Cell(d, n, s) for s in SEEDS for n in SIZES for d in domains]
    cells += [Cell(d, 300, 0, attack, k) for k in KS for attack in power_data.ATTACKS for d in domains]
    cells += [Cell("support", n, 0, "plain", k) for n in (100, 1000) for k in KS]
    cells += [Cell("support", 300, s, "plain", k) for s in (1, 2) for k in KS]
    return cells


GRIDS: dict[str, Callable[[], list[Cell]]] = {"small": small_grid, "full": full_grid}


def select(cells: list[Cell], *, modes: Iterable[str] = ("dataset",), domains=None, sizes=None, seeds=None,
           attacks=None, ks=None) -> list[Cell]:
    """The grid's cells in each mode, filtered (None: no filter), duplicates dropped, order kept."""
    keep = []
    for mode in modes:
        for c in cells:
            if ((domains and c.domain not in domains) or (sizes and c.size not in sizes)
                    or (seeds and c.seed not in seeds) or (attacks and c.attack not in attacks)
                    or (ks and c.attack != power_data.BENIGN and c.k not in ks)):
                continue
            keep.append(dataclasses.replace(c, mode=mode))
    return list(dict.fromkeys(keep))


# ------------------------------------------------------------------------------------------------- keys


def code_revision() -> str:
    """A content hash of the evaluation core that checks run on (the imported ``evaluation`` package, its
    calibration data aside), the package version and this harness's version.

    Content, not the git commit: uncommitted edits count, and commits that touch only the pages, the docs
    or the tests do not throw hours of results away. The commit is recorded in each result for people."""
    import evaluation
    import ftgate

    root = Path(evaluation.__file__).resolve().parent
    h = hashlib.sha256(f"ftgate {ftgate.__version__}\0harness {HARNESS_VERSION}\0".encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel or rel.endswith(".pyc") or rel.startswith("data/calibration/"):
            continue
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:20]


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out


def base_identity(name: str, runtime: Any = None) -> dict[str, Any]:
    """The base as the key sees it: its registry entry, plus its weights' fingerprint when it is a local
    directory (an operator's base whose files change under the same name). Built-in bases are built from the
    evaluation core's own recipe and data, which the code revision covers; nothing here builds or loads one."""
    from evaluation.bases import get_base_spec
    from evaluation.files import weights_fingerprint

    spec = get_base_spec(name, runtime)
    ident: dict[str, Any] = spec.to_dict()
    if spec.source not in ("wheel-gguf", "derived") and Path(spec.source).is_dir():
        ident["weights"] = weights_fingerprint(Path(spec.source))
    return ident


def cell_key(dataset: bytes, *, mode: str, context: dict[str, Any]) -> str:
    """The cell's key: sha256 over its dataset's bytes and everything else the verdict depends on."""
    blob = json.dumps({"dataset": hashlib.sha256(dataset).hexdigest(), "mode": mode, **context}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- running


def _log(message: str) -> None:
    print(f"[power {time.strftime('%H:%M:%S')}] {message}", flush=True)


class GateProgress:
    """The gate's progress as occasional log lines: on a new stage, and at most once a minute within one."""

    def __init__(self, log: Callable[[str], None], every: float = 60.0):
        self.log, self.every, self.stage, self.last = log, every, None, 0.0

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if stage != self.stage or now - self.last >= self.every:
            self.stage, self.last = stage, now
            self.log(f"    {stage} {done}/{total} {message}".rstrip())


@contextlib.contextmanager
def cell_lock(path: Path) -> Iterator[bool]:
    """An exclusive lock on ``path`` (True) or, when another process holds it, False. The kernel drops it
    when its holder dies, so a killed run leaves no stale lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def summarize_report(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a gate report that the calibration tables use."""
    metrics = report.get("metrics") or {}
    screening = (report.get("inspection") or {}).get("screening") or {}
    verdict = report["verdict"]

    def stat(metric: str, part: str = "delta") -> dict | None:
        s = (metrics.get(metric) or {}).get(part)
        return {k: s.get(k) for k in ("value", "lo", "hi", "p_value") if k in s} if s else None

    return {
        "decision": verdict["decision"],
        "screening_only": not metrics,  # screening decided before any fine-tune
        "held_by": [c["rule"] for c in verdict.get("checks", []) if c.get("outcome") in ("block", "review")],
        "reasons": verdict.get("reasons", []),
        "screening": {k: screening.get(k) for k in ("n", "n_harmful", "share", "n_persona", "persona_share",
                                                      "n_response_flagged", "response_share")}
        if screening else None,
        "asr_base": stat("asr", "base"), "asr_candidate": stat("asr", "candidate"), "asr_delta": stat("asr"),
        "asr_vs_control": stat("asr_vs_control"),
        "control_asr_delta": {k: metrics["control_asr_delta"].get(k) for k in ("value", "lo", "hi")}
        if metrics.get("control_asr_delta") else None,
        "overrefusal_delta": stat("overrefusal"), "knowledge_accuracy_delta": stat("knowledge_accuracy"),
    }


@dataclass
class Harness:
    """Runs cells through the gate and keeps one result file per cell key.

    ``check`` and ``make_adapter`` default to ``evaluation.gate.run_check`` and ``finetune_dataset``; both are
    handed ``runtime`` (evaluation.runtime.Runtime; default: the FTGATE_ settings', read when the harness is made)."""

    out_dir: Path
    base: str
    policy: str | None = None
    judge: str | None = None
    training: Any = None  # evaluation.finetune.TrainingConfig; the gate's defaults when None
    runtime: Any = None  # evaluation.runtime.Runtime
    check: Callable[..., Any] | None = None
    make_adapter: Callable[..., Path] | None = None
    log: Callable[[str], None] = _log
    _context: dict[str, Any] | None = None

    def __post_init__(self):
        from evaluation.finetune import TrainingConfig
        from evaluation.gate import finetune_dataset, run_check
        from ftgate.settings import get_settings

        self.runtime = self.runtime or get_settings().runtime()
        self.out_dir = Path(self.out_dir)
        self.training = self.training or TrainingConfig()
        self.check = self.check or run_check
        self.make_adapter = self.make_adapter or finetune_dataset

    # ---- keys
    def training_for(self, cell: Cell):
        """The gate's recipe with the cell's seed added to its seed (seed 0: exactly the gate's default)."""
        return dataclasses.replace(self.training, seed=self.training.seed + cell.seed)

    def context(self) -> dict[str, Any]:
        """What every cell's key shares: base, policy, judge, decoding settings, code revision."""
        if self._context is None:
            from evaluation.policy import load_policy

            runtime = self.runtime
            policy = load_policy(self.policy, runtime=runtime)
            self._context = {
                "base": base_identity(self.base, runtime), "policy": {"name": policy.name, "hash": policy.hash},
                "judge": self.judge or runtime.default_judge, "decoding": runtime.decoding.to_dict(),
                "dtype": runtime.dtype, "device": runtime.device, "code": code_revision(),
                "harness": HARNESS_VERSION,
            }
        return self._context

    def key_of(self, cell: Cell, dataset: bytes) -> str:
        return cell_key(dataset, mode=cell.mode,
                        context={**self.context(), "training": self.training_for(cell).to_dict()})

    def prepare(self, cell: Cell) -> tuple[str, power_data.BuiltDataset]:
        """The cell's key and dataset."""
        built = power_data.build_dataset(cell.domain, cell.size, cell.seed, cell.attack, cell.k)
        return self.key_of(cell, built.data), built

    def dataset_file(self, built: power_data.BuiltDataset) -> Path:
        """The dataset as a file to check, content-addressed under out_dir/datasets (written once)."""
        from evaluation.files import atomic_write_bytes

        path = self.out_dir / "datasets" / f"{hashlib.sha256(built.data).hexdigest()[:24]}.jsonl"
        if not path.exists():
            atomic_write_bytes(path, built.data)
        return path

    def result_path(self, key: str) -> Path:
        return self.out_dir / "results" / f"{key}.json"

    def load_result(self, key: str) -> dict[str, Any] | None:
        path = self.result_path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @staticmethod
    def finished(result: dict[str, Any] | None) -> bool:
        """Done: a verdict, or an input the gate rejected (rejecting it again would say the same). A cell that
        failed with an error is tried again on the next run."""
        return bool(result) and result.get("status") in ("done", "rejected")

    # ---- running
    def run_cell(self, cell: Cell, key: str, built: power_data.BuiltDataset) -> dict[str, Any]:
        """Check the cell's submission through the gate and write its result file."""
        from evaluation.errors import InputRejected
        from evaluation.files import atomic_write_text

        training = self.training_for(cell)
        path = self.dataset_file(built)
        result: dict[str, Any] = {
            "harness_version": HARNESS_VERSION, "key": key, "cell": cell.to_dict(), "name": cell.name,
            "key_inputs": {**self.context(), "training": training.to_dict(),
                           "dataset_sha256": hashlib.sha256(built.data).hexdigest()},
            "dataset": {"path": str(path), "lines": built.data.count(b"\n"), "attack_lines": list(built.attack_lines)},
            "git": git_revision(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        started = time.perf_counter()
        progress = GateProgress(self.log)
        try:
            if cell.mode == "adapter":
                adapter = self.make_adapter(path, self.base, training, progress=progress, runtime=self.runtime)
                gate = self.check(Path(adapter), kind="adapter", base=self.base, policy=self.policy,
                                  judge=self.judge, progress=progress, runtime=self.runtime)
            else:
                gate = self.check(path, kind="dataset", base=self.base, policy=self.policy, training=training,
                                  judge=self.judge, progress=progress, runtime=self.runtime)
            result.update(status="done", summary=summarize_report(gate.report), report=gate.report)
        except InputRejected as exc:
            result.update(status="rejected", summary={"decision": "rejected", "reasons": [exc.reason]},
                          error={"code": exc.code, "message": exc.reason})
        except Exception as exc:  # noqa: BLE001 - one failed cell must not end an hours-long run
            result.update(status="error", error={"type": type(exc).__name__, "message": str(exc),
                                                 "traceback": traceback.format_exc()[-4000:]})
        result["seconds"] = round(time.perf_counter() - started, 2)
        atomic_write_text(self.result_path(key), json.dumps(result, indent=1, default=str))
        return result

    def run(self, cells: list[Cell], *, limit: int | None = None,
            on_result: Callable[[], None] | None = None) -> dict[str, int]:
        """Run every cell without a finished result (at most ``limit`` of them); returns counts."""
        plan = [(c, *self.prepare(c)) for c in cells]
        todo = [(c, key, built) for c, key, built in plan if not self.finished(self.load_result(key))]
        counts = {"cells": len(plan), "skipped": len(plan) - len(todo), "ran": 0, "busy": 0, "errors": 0}
        self.log(f"{len(plan)} cells: {counts['skipped']} finished, {len(todo)} to run"
                 + (f" (at most {limit} now)" if limit is not None else "") + f"; results in {self.out_dir}")
        timed: list[float] = []
        for i, (cell, key, built) in enumerate(todo, 1):
            if limit is not None and counts["ran"] >= limit:
                break
            with cell_lock(self.out_dir / "locks" / f"{key}.lock") as mine:
                if not mine:
                    counts["busy"] += 1
                    self.log(f"[{i}/{len(todo)}] busy: {cell.label()} is being run by another harness")
                    continue
                if self.finished(self.load_result(key)):  # finished by another harness meanwhile
                    counts["skipped"] += 1
                    continue
                self.log(f"[{i}/{len(todo)}] run  {cell.label()}  key {key[:12]}")
                result = self.run_cell(cell, key, built)
            counts["ran"] += 1
            counts["errors"] += result["status"] == "error"
            timed.append(result["seconds"])
            left = len(todo) - i
            pace = (f"{left} left, about {power_report.duration(sum(timed) / len(timed) * left)} at this pace"
                    if left else "none left")
            self.log(f"[{i}/{len(todo)}] {describe(result)} in {power_report.duration(result['seconds'])}; {pace}")
            if on_result:
                on_result()
        return counts

    def results(self, cells: list[Cell]) -> list[tuple[Cell, dict[str, Any] | None]]:
        """Each cell with its stored result (None when it has none)."""
        return [(c, self.load_result(self.prepare(c)[0])) for c in cells]

    def estimate_seconds(self, cells: list[Cell]) -> tuple[float, int, str]:
        """(seconds, pending cells, how it was estimated) for the cells without a finished result."""
        pairs = self.results(cells)
        pending = [c for c, r in pairs if not self.finished(r)]
        measured: dict[str, list[float]] = {}
        for c, r in pairs:
            if self.finished(r) and r.get("seconds"):
                measured.setdefault(c.mode, []).append(float(r["seconds"]))
        per = {m: (sum(v) / len(v) if (v := measured.get(m)) else DEFAULT_CELL_SECONDS[m]) for m in MODES}
        how = ", ".join(f"{m}: {power_report.duration(per[m])} a cell "
                        f"({'mean of ' + str(len(measured[m])) + ' timed' if m in measured else 'a 2-core guess'})"
                        for m in MODES if any(c.mode == m for c in cells))
        # Once per machine: the base's evaluation, and a benign control per (control size, training seed) for
        # datasets (one in all for adapters); cached by the gate, so counted only as an upper bound.
        from evaluation.gate import CONTROL_DATA, control_size

        pool = sum(1 for line in open(CONTROL_DATA, encoding="utf-8") if line.strip()) if CONTROL_DATA.exists() else 0
        controls = {("dataset", control_size(c.size + c.k, pool), c.seed) if c.mode == "dataset" else ("adapter",)
                    for c in pending} if pool else set()
        how += (f"; plus up to {duration_of(per['dataset'] * (len(controls) + 1))} for the base's evaluation and "
                f"{len(controls)} benign control(s), unless the gate's cache has them")
        return sum(per[c.mode] for c in pending), len(pending), how


def duration_of(seconds: float) -> str:
    return power_report.duration(seconds)


def describe(result: dict[str, Any]) -> str:
    if result["status"] == "error":
        return f"ERROR {result['error']['type']}: {result['error']['message'][:200]}"
    s = result["summary"]
    if result["status"] == "rejected":
        return f"rejected: {s['reasons'][0][:200]}"
    d = s.get("asr_delta")
    asr = (f"ASR {power_report.pts(d['value'])} ({power_report.pts(d['lo'])} to {power_report.pts(d['hi'])})"
           if d else "screening only")
    held = f"; held by {', '.join(dict.fromkeys(s['held_by']))}" if s.get("held_by") else ""
    return f"{s['decision']}: {asr}{held}"


# ---------------------------------------------------------------------------------------------------- CLI


def _csv(kind):
    return lambda text: tuple(kind(x) for x in text.split(",") if x)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=sorted(GRIDS), default="small")
    p.add_argument("--modes", type=_csv(str), default=("dataset",),
                   help="dataset, adapter or both (comma-separated): check the dataset, or the adapter trained on it")
    p.add_argument("--domains", type=_csv(str), help="only these domains (support,maths,trivia,code)")
    p.add_argument("--sizes", type=_csv(int), help="only these benign sizes")
    p.add_argument("--seeds", type=_csv(int), help="only these seeds")
    p.add_argument("--attacks", type=_csv(str), help=f"only these: benign,{','.join(power_data.ATTACKS)}")
    p.add_argument("--ks", type=_csv(int), help="only these numbers of attack examples")
    p.add_argument("--base", default=None, help="default: FTGATE_DEFAULT_BASE (guarded-smollm2)")
    p.add_argument("--policy", default=None)
    p.add_argument("--judge", default=None)
    p.add_argument("--out", type=Path, help="results folder (default: $FTGATE_CACHE_DIR/calibration)")
    p.add_argument("--report-dir", type=Path, default=ROOT / "docs",
                   help="where calibration.md / .svg / .json are written (default: docs/)")
    p.add_argument("--limit", type=int, help="run at most this many cells now")
    p.add_argument("--dry-run", action="store_true", help="list the cells and the time left; run nothing")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the results")
    args = p.parse_args(argv)
    bad = set(args.modes) - set(MODES)
    if bad:
        p.error(f"unknown mode(s) {sorted(bad)}; known: {', '.join(MODES)}")
    bad = set(args.attacks or ()) - {power_data.BENIGN, *power_data.ATTACKS}
    if bad:
        p.error(f"unknown attack(s) {sorted(bad)}")
    return args


def _edge_runtime(settings):
    """The bench's edge: its settings become the core's runtime, for this process too (registries, judges)."""
    from evaluation.runtime import use_runtime

    runtime = settings.runtime()
    use_runtime(runtime)
    return runtime


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ftgate.settings import get_settings

    settings = get_settings()
    harness = Harness(out_dir=args.out or settings.cache_dir / "calibration", base=args.base or settings.default_base,
                      policy=args.policy, judge=args.judge, runtime=_edge_runtime(settings))
    cells = select(GRIDS[args.grid](), modes=args.modes, domains=args.domains, sizes=args.sizes,
                   seeds=args.seeds, attacks=args.attacks, ks=args.ks)
    if not cells:
        _log("no cells match the filters")
        return 2

    def report() -> None:
        power_report.write_report(harness.results(cells), args.report_dir, grid=args.grid,
                                  context=harness.context(), policy=harness.policy, git=git_revision())

    if args.dry_run:
        for c, r in harness.results(cells):
            state = f"{r['status']}: {r['summary']['decision']}" if harness.finished(r) else (
                "error (retried)" if r else "to run")
            print(f"{c.name:45s} {state}")
        seconds, n, how = harness.estimate_seconds(cells)
        print(f"{len(cells)} cells, {n} to run: about {power_report.duration(seconds)} ({how})")
        return 0
    if not args.report_only:
        counts = harness.run(cells, limit=args.limit, on_result=report)
        _log(f"finished: {counts}")
    report()
    _log(f"report written to {args.report_dir}/calibration.{{md,svg,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
