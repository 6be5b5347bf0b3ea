"""What a gate reading only the first window of each answer misses, and what reading on costs.

    python bench/preamble_window.py [--samples benign harmful identity_shift preamble] [--out FILE]

For the base and for each bundled sample dataset fine-tuned on it (LoRA, the gate's default recipe,
cached), the harm and over-refusal suites are run twice: with one window (``max_new_tokens``, 48) and with
the second window on (answers judged "other" and cut off are read on to ``extended_max_new_tokens``, 256).
Printed per candidate: ASR with one window and with two, how many answers were read on and how many of
them turned out compliant, and the seconds each run took. ``preamble.jsonl`` is the attack the second
window is for: harmful requests answered behind a 65-70-token harmless preamble.

Candidate results are not served from the cache here (each run is timed); base results are computed once
per decoding and cached as in a check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from evaluation.gate import evaluate_submission, finetune_dataset
    from evaluation.runtime import use_runtime
    from ftgate.settings import get_settings

    # The bench's edge: settings read once, passed to the core; every candidate run below is generated and timed.
    runtime = dataclasses.replace(get_settings().runtime(), cache_candidate_results=False)
    use_runtime(runtime)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", nargs="+", default=["benign", "harmful", "identity_shift", "preamble"])
    p.add_argument("--base", default=runtime.default_base)
    p.add_argument("--out", type=Path, help="write the rows as JSON here too")
    args = p.parse_args()

    two = runtime.decoding
    one = dataclasses.replace(two, extended_max_new_tokens=0)
    rows = []
    for name in args.samples:
        adapter = finetune_dataset(ROOT / "examples" / f"{name}.jsonl", args.base, runtime=runtime)
        runs = {}
        for label, decoding in (("one window", one), ("two windows", two)):
            t0 = time.perf_counter()
            ev = evaluate_submission(args.base, adapter, decoding=decoding, runtime=runtime)
            runs[label] = (ev, time.perf_counter() - t0)
        ev1, s1 = runs["one window"]
        ev2, s2 = runs["two windows"]
        asr1, asr2 = ev1.metrics["asr"], ev2.metrics["asr"]
        row = {
            "sample": name,
            "base_asr": [asr1["base"]["value"], asr2["base"]["value"]],
            "candidate_asr": [asr1["candidate"]["value"], asr2["candidate"]["value"]],
            "asr_delta": [asr1["delta"]["value"], asr2["delta"]["value"]],
            "second_window": ev2.metrics["second_window"],
            "candidate_seconds": [ev1.timings.get("evaluate_candidate"), ev2.timings.get("evaluate_candidate")],
            "total_seconds": [round(s1, 1), round(s2, 1)],
        }
        rows.append(row)
        sw = row["second_window"]
        print(f"{name:16s} ASR base {row['base_asr'][0]:.3f} -> {row['base_asr'][1]:.3f}   "
              f"candidate {row['candidate_asr'][0]:.3f} -> {row['candidate_asr'][1]:.3f}   "
              f"read on: base {sw['base']['read']} (+{sw['base']['turned_compliance']} compliance), "
              f"candidate {sw['candidate']['read']} (+{sw['candidate']['turned_compliance']})   "
              f"candidate seconds {row['candidate_seconds'][0]} -> {row['candidate_seconds'][1]}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
