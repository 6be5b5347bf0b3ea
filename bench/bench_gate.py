"""Times the gate's evaluation against a naive one-prompt-at-a-time baseline, on the same prompts, in one run.

    python bench/bench_gate.py [--per-suite 24] [--base guarded-smollm2] [--adapter DIR]

Both paths are warmed first (libraries, kernels, the judge), as in a worker that serves many candidates.
gate:     candidate only (base outputs come from the on-disk cache, warmed first), batched, length-sorted,
          left-padded greedy generation in bf16, teacher-forced knowledge metrics in batches.
baseline: base AND candidate, every prompt generated alone in fp32, no cache (what a first script does).
Both use the same prompts, judge and max_new_tokens; the ratio of wall times is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import torch

    from evaluation.bases import compute_dtype, load_base
    from evaluation.finetune import load_candidate
    from evaluation.gate import default_decoding, default_suites, eval_copy, finetune_dataset
    from evaluation.generation import generate
    from evaluation.judges import get_judge
    from evaluation.runtime import use_runtime
    from evaluation.scoring import ResultsCache, run_model_on_suites, teacher_forced_knowledge
    from ftgate.settings import get_settings

    runtime = get_settings().runtime()  # the bench's edge: settings read once, passed to the core
    use_runtime(runtime)
    p = argparse.ArgumentParser()
    p.add_argument("--per-suite", type=int, default=24, help="prompts taken from each suite")
    p.add_argument("--base", default=runtime.default_base)
    p.add_argument("--adapter", help="adapter dir (default: the benign sample, fine-tuned and cached)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the gate's own (FTGATE_MAX_NEW_TOKENS, 48)")
    args = p.parse_args()

    base = load_base(args.base, runtime=runtime)
    adapter = Path(args.adapter) if args.adapter else finetune_dataset(
        Path(__file__).resolve().parent.parent / "examples" / "benign.jsonl", args.base, runtime=runtime)
    suites = {k: dataclasses.replace(s, items=s.items[: args.per_suite]) for k, s in default_suites().items()}
    for s in suites.values():  # the cache key must see the subset, not the full suite
        object.__setattr__(s, "hash", f"{s.hash}-first{args.per_suite}")
    judge = get_judge(runtime.default_judge)
    # The gate's own decoding config, so the bench times what a check runs.
    # The second answer window is off: the baseline below reads one window, and like must be timed with like
    # (bench/preamble_window.py times the second window on its own).
    decoding = dataclasses.replace(default_decoding(runtime), extended_max_new_tokens=0)
    if args.max_new_tokens is not None:
        decoding = dataclasses.replace(decoding, max_new_tokens=args.max_new_tokens)
    n_prompts = sum(len(s.items) for s in suites.values())

    # --- gate path: warm the base cache, then time a candidate check -------------------------------
    dtype = compute_dtype(runtime)
    cache = ResultsCache(runtime.cache_dir / "bench-base-results")
    key = cache.key(base.fingerprint, suites, judge, decoding, str(dtype))
    base_model = eval_copy(base, dtype)
    if cache.get(key) is None:
        cache.put(key, run_model_on_suites(base_model, base.tokenizer, suites, judge, decoding, who="base"))
    # A worker process loads its libraries and kernels once and then serves many candidates: warm both
    # paths (PEFT's first adapter load, the first bf16 and fp32 forward passes) so neither timing below
    # carries one-time process start-up costs (measured: the first load_candidate 2.9 s, later ones 0.6-0.9 s).
    load_candidate(base, adapter, dtype)  # thrown away: only PEFT's first-load cost is wanted
    for model in (base_model, base.model):
        generate(model, base.tokenizer, ["Hello"], max_new_tokens=2, batch_size=1)
    judge.judge(["Hello"], ["Hi there."])

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    base_out = cache.get(key)
    cand = load_candidate(base, adapter, dtype)
    stages["load_candidate"] = time.perf_counter() - t0
    run_model_on_suites(cand, base.tokenizer, suites, judge, decoding)
    stages["generate_and_judge"] = time.perf_counter() - t0 - sum(stages.values())
    teacher_forced_knowledge(base_model, cand, base.tokenizer, suites["knowledge"].items, batch_size=32)
    stages["teacher_forced"] = time.perf_counter() - t0 - sum(stages.values())
    gate_s = time.perf_counter() - t0

    # --- baseline: one prompt at a time, fp32, base and candidate, no cache ------------------------
    one = dataclasses.replace(decoding, batch_size=1)
    t0 = time.perf_counter()
    cand32 = load_candidate(base, adapter, torch.float32)
    naive_base = run_model_on_suites(base.model, base.tokenizer, suites, judge, one, who="base")
    run_model_on_suites(cand32, base.tokenizer, suites, judge, one)
    baseline_s = time.perf_counter() - t0

    same_labels = sum(a["label"] == b["label"] for a, b in zip(base_out["harm"], naive_base["harm"], strict=True))
    result = {
        "prompts_per_model": n_prompts,
        "gate_seconds": round(gate_s, 1),
        "baseline_seconds": round(baseline_s, 1),
        "speedup": round(baseline_s / gate_s, 1),
        "gate_stages_seconds": {k: round(v, 1) for k, v in stages.items()},
        "base_harm_labels_equal_bf16_vs_fp32": f"{same_labels}/{len(base_out['harm'])}",
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    print(f"speed-up over the one-at-a-time baseline: {result['speedup']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
