"""Whole checks, every stage, the real gate against a naive pipeline doing the same work: like for like.

    python bench/bench_e2e.py [--kinds adapter dataset] [--naive-fraction 1.0] [--out FILE]

The gate: ``run_check`` (inspection, screening, fine-tune for a dataset, base and candidate evaluation, the
benign control, the decision), exactly as ``ftgate check`` runs it, on the bundled benign sample: as a
dataset, and fine-tuned into an uploaded adapter. It is timed after a warm-up run:
the first one warms what a worker keeps between checks (libraries, the base's suite outputs, the benign
control, all cached per base). The benign sample has 227 examples, so its control is the 256-example one an
uploaded adapter gets too: one warm-up, before the first kind, warms both. Candidate results are never served from the cache, and the dataset's
fine-tune is removed before the timed run, so the timed run trains and generates everything that belongs
to this candidate.

The naive pipeline does the same stages with none of the gate's engineering: every prompt generated alone,
in fp32, base AND candidate generated (no cached base outputs), knowledge drift teacher-forced one
question at a time, and the benign control fine-tuned and evaluated again for every check (no caches).
Inspection and fine-tuning are the same code on both sides (fp32 training; the gate does not speed it up),
so they are timed once, on the gate side, and counted on both. The control's fine-tune and evaluation are
the same work as the candidate's (same recipe, same suites, same-size model), so the naive side counts them
at the naive candidate's measured times instead of running them again.

``--naive-fraction F`` times the naive generation on a seeded fraction F of every suite and scales its
seconds by 1/F (one prompt at a time costs in proportion to the number of prompts); the output says so.

Printed: per-stage seconds of both, the ratio, and the ratio without the control (what a naive pipeline that
at least cached its control would get). Record the machine's load beside the numbers: on 2 shared cores
the timings move with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "examples" / "benign.jsonl"


def gate_check(path: Path, kind: str, runtime) -> dict:
    """One ``run_check``, timed; the fine-tunes it creates are removed afterwards, so the next run trains again."""
    from evaluation.gate import run_check

    finetunes = runtime.cache_dir / "finetunes"
    before = set(finetunes.iterdir()) if finetunes.exists() else set()
    t0 = time.perf_counter()
    result = run_check(path, kind=kind, runtime=runtime)
    seconds = time.perf_counter() - t0
    if finetunes.exists():
        for new in set(finetunes.iterdir()) - before:
            shutil.rmtree(new, ignore_errors=True)
    timings = dict(result.report["timings"])
    timings["wall"] = round(seconds, 1)
    return {"decision": result.decision, "timings": timings,
            "asr_delta": result.report["metrics"]["asr"]["delta"]["value"]}


def subset(suites: dict, fraction: float, seed: int = 0) -> dict:
    """Each suite cut to a seeded random ``fraction`` of its items (at least one)."""
    if fraction >= 1:
        return suites
    out = {}
    for kind, suite in suites.items():
        items = list(suite.items)
        keep = sorted(random.Random(seed).sample(range(len(items)), max(1, round(len(items) * fraction))))
        out[kind] = dataclasses.replace(suite, items=[items[i] for i in keep])
    return out


def naive_evaluation(base_name: str, adapter: Path, fraction: float, runtime) -> dict[str, float]:
    """The naive evaluation stages, timed: base and candidate generated prompt by prompt in fp32, knowledge
    drift teacher-forced one question at a time. Seconds scaled by 1 / fraction."""
    import torch

    from evaluation.bases import load_base
    from evaluation.finetune import load_candidate
    from evaluation.gate import default_decoding, default_suites
    from evaluation.judges import get_judge
    from evaluation.scoring import run_model_on_suites, teacher_forced_knowledge

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    base = load_base(base_name, runtime=runtime)
    judge = get_judge(runtime.default_judge)
    suites = subset(default_suites(), fraction)
    one_at_a_time = dataclasses.replace(default_decoding(runtime), batch_size=1)
    stages["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_model_on_suites(base.model, base.tokenizer, suites, judge, one_at_a_time, who="base")
    stages["evaluate_base"] = (time.perf_counter() - t0) / fraction
    t0 = time.perf_counter()
    candidate = load_candidate(base, adapter, torch.float32)
    run_model_on_suites(candidate, base.tokenizer, suites, judge, one_at_a_time)
    stages["evaluate_candidate"] = (time.perf_counter() - t0) / fraction
    t0 = time.perf_counter()
    teacher_forced_knowledge(base.model, candidate, base.tokenizer, suites["knowledge"].items, batch_size=1)
    stages["knowledge_drift"] = (time.perf_counter() - t0) / fraction
    return stages


def main() -> int:
    import torch

    from evaluation.gate import finetune_dataset
    from evaluation.runtime import use_runtime
    from ftgate.settings import get_settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="+", choices=["adapter", "dataset"], default=["adapter", "dataset"])
    p.add_argument("--naive-fraction", type=float, default=1.0,
                   help="share of each suite the naive side generates (its seconds are scaled up)")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    p.add_argument("--reuse-naive", type=Path, metavar="JSON",
                   help="take the naive evaluation's seconds from an earlier --out file instead of measuring them again")
    args = p.parse_args()
    if not 0 < args.naive_fraction <= 1:
        p.error("--naive-fraction must be in (0, 1]")
    # The bench's edge: settings read once and handed to the core; the timed candidate is generated, never
    # read back from the results cache.
    runtime = dataclasses.replace(get_settings().runtime(), cache_candidate_results=False)
    use_runtime(runtime)
    base_name = runtime.default_base

    with tempfile.TemporaryDirectory(prefix="ftgate-bench-") as tmp:
        # The uploaded adapter: the benign sample fine-tuned once, copied out of the fine-tune cache so the
        # dataset runs below can remove their own fine-tune without touching it.
        adapter = Path(tmp) / "adapter"
        cached = finetune_dataset(SAMPLE, base_name, runtime=runtime)
        shutil.copytree(cached, adapter)
        shutil.rmtree(cached)  # the dataset's timed run must train it, not find it in the cache
        results: dict[str, dict] = {}
        for n, kind in enumerate(args.kinds):
            path = adapter if kind == "adapter" else SAMPLE
            if n == 0:  # warm-up, once: libraries, the base's outputs, the control (one serves both kinds)
                gate_check(path, kind, runtime)
            gate = gate_check(path, kind, runtime)
            results[kind] = {"gate": gate}
            print(f"{kind}: gate {gate['timings']}", flush=True)
        if args.reuse_naive:  # the naive evaluation does not depend on the kind: an earlier run's may serve
            earlier = json.loads(args.reuse_naive.read_text())
            naive_eval = {k: next(iter(earlier["kinds"].values()))["naive_seconds"][k]
                          for k in ("load", "evaluate_base", "evaluate_candidate", "knowledge_drift")}
            args.naive_fraction = earlier["naive_fraction"]
        else:
            naive_eval = naive_evaluation(base_name, adapter, args.naive_fraction, runtime)
        print(f"naive evaluation stages: {naive_eval}", flush=True)

    # The fine-tune of the default recipe, as the dataset's timed run measured it (the naive control trains
    # one too, for an adapter as well: its yardstick is a fine-tune with the default recipe).
    finetune_s = results.get("dataset", {}).get("gate", {}).get("timings", {}).get("finetune")
    out: dict = {"torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                 "naive_fraction": args.naive_fraction, "kinds": {}}
    for kind, r in results.items():
        t = r["gate"]["timings"]
        candidate_eval = naive_eval["evaluate_candidate"] + naive_eval["knowledge_drift"]
        naive = {
            "inspect": t.get("inspect", 0.0),
            "finetune": t.get("finetune", 0.0),
            "load": naive_eval["load"],
            "evaluate_base": naive_eval["evaluate_base"],
            "evaluate_candidate": naive_eval["evaluate_candidate"],
            "knowledge_drift": naive_eval["knowledge_drift"],
            "control_finetune": finetune_s if finetune_s is not None else float("nan"),
            "control_evaluate": candidate_eval,
        }
        naive_total = sum(naive.values())
        naive_no_control = naive_total - naive["control_finetune"] - naive["control_evaluate"]
        gate_total = t["wall"]
        out["kinds"][kind] = {
            "decision": r["gate"]["decision"],
            "gate_seconds": t,
            "naive_seconds": {k: round(v, 1) for k, v in naive.items()},
            "gate_total": round(gate_total, 1),
            "naive_total": round(naive_total, 1),
            "ratio": round(naive_total / gate_total, 1),
            "ratio_naive_control_cached": round(naive_no_control / gate_total, 1),
        }
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
