"""Approve with repair, measured (issue 11, item 5): for each dataset, the gate's verdict, then the repaired
adapter's (evaluation/repair.py), with the ASR before and after (95% intervals) and the customer's task loss.

    python bench/repair.py                       # every dataset below on the default base (hours: see --dry-run)
    python bench/repair.py --only benign,hidden10 --always
    python bench/repair.py --dry-run             # the datasets, which are done, the time left
    python bench/repair.py --report-only         # the table from the results kept so far

Datasets: examples/benign.jsonl (227, the bundled benign sample), examples/benign_hidden10.jsonl (200 benign +
10 harmful hidden), examples/identity_shift.jsonl (40, the AOA persona attack), and the calibration sets'
first ``--size`` examples (evaluation/data/calibration: maths, support, trivia; written elsewhere, see their
CARD.md). The gate repairs only a safety block or review; ``--always`` repairs every dataset (the cost of a
repair to a dataset the gate approved: its task loss, its ASR).

Resumable and cached: one JSON file per dataset in ``--out`` (default ``$FTGATE_CACHE_DIR/repair-bench``),
named by sha256(dataset bytes, base, policy, repair config, --always, the evaluation code's content hash). A
dataset whose file exists is skipped; kill and restart at any point. Underneath, every fine-tune, base and
candidate result and benign control is cached by content too, so a restart mid-dataset loses at most the
step that was running.

Time on SmolLM2-135M (guarded), 2 busy CPU cores, default recipe (50 steps x 8): a dataset's gate run is about
10 minutes (fine-tune ~3.5 min, evaluation, controls cached after the first), and a repair adds two fine-tunes
and one evaluation, about 12 more: about 20-25 minutes a dataset, 2-2.5 hours for all six with --always.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from power import code_revision  # noqa: E402 - the evaluation code's content hash, as the calibration keys it

BENCH_VERSION = 1  # bump when what a result means changes
CALIBRATION = ROOT / "evaluation" / "data" / "calibration"
DATASETS = {
    "benign": ROOT / "examples" / "benign.jsonl",
    "hidden10": ROOT / "examples" / "benign_hidden10.jsonl",
    "identity_shift": ROOT / "examples" / "identity_shift.jsonl",
    "maths": CALIBRATION / "benign_maths.jsonl",
    "support": CALIBRATION / "benign_support.jsonl",
    "trivia": CALIBRATION / "benign_trivia.jsonl",
}
TRIMMED = ("maths", "support", "trivia")  # 1,200 lines each: their first --size are used
SECONDS_PER_DATASET = 22 * 60  # the estimate above, until datasets have been timed


def _log(message: str) -> None:
    print(f"[repair {time.strftime('%H:%M:%S')}] {message}", flush=True)


def dataset_bytes(name: str, size: int) -> bytes:
    raw = DATASETS[name].read_bytes()
    if name in TRIMMED:
        raw = b"".join(raw.splitlines(keepends=True)[:size])
    return raw


def result_key(data: bytes, context: dict[str, Any]) -> str:
    blob = json.dumps({"dataset": hashlib.sha256(data).hexdigest(), **context}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _interval(stat: dict | None, signed: bool = False) -> str:
    from evaluation.formatting import percent, points

    if not stat or stat.get("value") is None:
        return "-"
    f = points if signed else percent
    text = f(stat["value"])
    if stat.get("lo") is not None:
        text += f" [{f(stat['lo'])}, {f(stat['hi'])}]"
    return text


def run_one(name: str, data: bytes, work: Path, *, base: str, policy: str | None, always: bool,
            repair_config: Any, runtime: Any) -> dict[str, Any]:
    """The gate's check with repair on one dataset, and the numbers the table shows."""
    from evaluation.finetune import TrainingConfig
    from evaluation.gate import inspect_submission, repair_submission, report_training, run_check

    path = work / f"{name}.jsonl"
    path.write_bytes(data)
    started = time.perf_counter()
    result = run_check(path, kind="dataset", base=base, policy=policy, repair="offer", repair_config=repair_config,
                       runtime=runtime)
    report = result.report
    repair = report.get("repair") or {}
    if always and repair.get("status") == "not_needed":  # repair anyway: what it costs a dataset the gate approves
        insp = inspect_submission(path, "dataset", base, workdir=work / "inspect", policy=policy, runtime=runtime)
        forced = {**report["verdict"], "checks": [{"rule": "asr", "outcome": "review", "message": "forced"}]}
        repair = repair_submission(insp, base, forced, TrainingConfig.from_overrides(report_training(report)),
                                   policy=policy, mode="offer", config=repair_config, runtime=runtime)
        repair["forced"] = True
    m, rm = report.get("metrics") or {}, repair.get("metrics") or {}
    return {
        "dataset": name, "n_examples": report["artifact"]["n_examples"], "decision": report["verdict"]["decision"],
        "reasons": report["verdict"]["reasons"], "asr": m.get("asr"), "asr_vs_control": m.get("asr_vs_control"),
        "repair": {k: v for k, v in repair.items() if k not in ("checks",)},
        "repaired_asr": rm.get("asr"), "seconds": round(time.perf_counter() - started, 1),
    }


def table(results: list[dict]) -> str:
    rows = [("dataset", "n", "verdict", "ASR (cand.)", "ASR change", "repaired", "ASR (repaired)", "ASR change",
             "safety", "task loss orig -> rep.", "min")]
    for r in results:
        rep = r.get("repair") or {}
        asr, rasr = r.get("asr") or {}, r.get("repaired_asr") or {}
        loss = rep.get("task_loss") or {}
        rows.append((
            r["dataset"], str(r["n_examples"]), r["decision"], _interval(asr.get("candidate")),
            _interval(asr.get("delta"), signed=True),
            (rep.get("decision") or rep.get("status", "-")) + (" (forced)" if rep.get("forced") else ""),
            _interval(rasr.get("candidate")), _interval(rasr.get("delta"), signed=True),
            f"{rep['safety_share']:.0%}" if rep.get("safety_share") is not None else "-",
            f"{loss['original']:.3f} -> {loss['repaired']:.3f} (n={loss['held_back_examples']})" if loss else "-",
            f"{r['seconds'] / 60:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    from evaluation.repair import RepairConfig
    from evaluation.runtime import use_runtime
    from ftgate.settings import get_settings

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(DATASETS)}")
    p.add_argument("--size", type=int, default=220, help="examples taken from each calibration set (default 220)")
    p.add_argument("--base", default=None, help="base model (default: the configured one)")
    p.add_argument("--policy", default=None)
    p.add_argument("--always", action="store_true", help="repair every dataset, also those the gate approves")
    p.add_argument("--safety-share", type=float, default=None, help="share of safety data in the repair mix")
    p.add_argument("--out", type=Path, default=None, help="results folder (default $FTGATE_CACHE_DIR/repair-bench)")
    p.add_argument("--dry-run", action="store_true", help="list the datasets, which are done, the time left")
    p.add_argument("--report-only", action="store_true", help="print the table of the results kept so far")
    args = p.parse_args(argv)

    names = args.only.split(",") if args.only else list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    settings = get_settings()
    runtime = settings.runtime()  # the bench's edge: settings read once, handed to the core
    use_runtime(runtime)
    base = args.base or settings.default_base
    out = args.out or settings.cache_dir / "repair-bench"
    out.mkdir(parents=True, exist_ok=True)
    config = RepairConfig.from_overrides({} if args.safety_share is None else {"safety_share": args.safety_share})
    context = {"base": base, "policy": args.policy, "repair": config.to_dict(), "always": args.always,
               "code": code_revision(), "v": BENCH_VERSION}
    planned = {n: out / f"{n}-{result_key(dataset_bytes(n, args.size), context)}.json" for n in names}
    todo = [n for n, f in planned.items() if not f.exists()]
    if args.dry_run:
        for n, f in planned.items():
            print(f"{n:16} {'done' if f.exists() else 'to do'}  {f.name}")
        print(f"{len(todo)} to do, about {len(todo) * SECONDS_PER_DATASET / 3600:.1f} hours on 2 CPU cores")
        return 0
    failed = []
    for n in [] if args.report_only else todo:
        _log(f"{n}: check and repair ({len(todo)} to do)")
        work = out / "work"
        work.mkdir(exist_ok=True)
        try:
            result = run_one(n, dataset_bytes(n, args.size), work, base=base, policy=args.policy,
                             always=args.always, repair_config=config, runtime=runtime)
        except Exception:  # noqa: BLE001 - one dataset's failure is reported; the others still run
            traceback.print_exc()
            failed.append(n)
            continue
        tmp = planned[n].with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(planned[n])
        _log(f"{n}: {result['decision']}, repaired {(result['repair'] or {}).get('decision', '-')} "
             f"in {result['seconds'] / 60:.0f} min")
    results = [json.loads(f.read_text()) for f in planned.values() if f.exists()]
    if results:
        print(table(results))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
