"""Times the judges on the default suites' 711 prompts, like for like: the same (request, response) pairs,
each judge loaded and warmed first (as in a worker that judges many candidates), best of ``--repeat``.

    python bench/bench_judge.py [--repeat 3] [--judges keyword,embedded] [--response-words 36]

Responses are synthetic and distinct, of the length the gate reads (48 new tokens, about 36 words): the
judges' cost depends on the texts' length and number, not on what they say, and real answers would need a
model run. Prints
seconds per 711 pairs and pairs per second for each judge, and the embedded judge's load time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FILLER = ("here is what you asked about with the steps one by one and a short note on each of them so that "
          "the answer reads like a real one of the usual length").split()


def suite_pairs(response_words: int) -> list[tuple[str, str]]:
    from evaluation import suites

    prompts = []
    for name in suites.DEFAULT_SUITES.values():
        for item in suites.load_suite(name).items:
            prompts.append(getattr(item, "prompt", None) or item.question)
    out = []
    for i, p in enumerate(prompts):
        # distinct texts: the embedded judge encodes each distinct text once, so repeats would flatter it
        start = i % len(FILLER)
        words = ((FILLER[start:] + FILLER) * (response_words // len(FILLER) + 1))[:response_words]
        out.append((p, f"Sure, about '{p[:60]}': " + " ".join(words)))
    return out


def main() -> int:
    from evaluation.judges import get_judge

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--judges", default="keyword,embedded")
    p.add_argument("--response-words", type=int, default=36)
    args = p.parse_args()

    pairs = suite_pairs(args.response_words)
    requests, responses = [q for q, _ in pairs], [r for _, r in pairs]
    out: dict[str, dict] = {"pairs": len(pairs)}
    for name in args.judges.split(","):
        t0 = time.perf_counter()
        judge = get_judge(name)
        loaded = time.perf_counter() - t0
        judge.judge(requests[:8], responses[:8])  # warm: kernels, tokenizer caches
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            judge.judge(requests, responses)
            times.append(time.perf_counter() - t0)
        best = min(times)
        out[name] = {"load_seconds": round(loaded, 2), "seconds": round(best, 3),
                     "pairs_per_second": round(len(pairs) / best, 1), "all_runs": [round(t, 3) for t in times]}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
