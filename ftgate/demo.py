"""`ftgate demo` (the README's run command): bootstrap, check the bundled samples, then serve.

Shows a new user the whole gate on their machine: the embedded guarded base is built (once), the benign
and the harmful sample are checked with `ftgate check`, and the web service starts on 127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation.policy import Decision
from ftgate.cli import EXIT
from ftgate.cli import main as cli_main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAMPLES = (("benign.jsonl", Decision.APPROVE), ("harmful.jsonl", Decision.BLOCK))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ftgate demo")
    p.add_argument("--no-serve", action="store_true", help="stop after checking the samples")
    args = p.parse_args(argv)
    if cli_main(["bootstrap"]) != 0:
        return EXIT["error"]
    outcome_of = {code: outcome for outcome, code in EXIT.items()}
    for name, expected in SAMPLES:
        print(f"\n=== ftgate check examples/{name} (expected: {expected}) ===", flush=True)
        code = cli_main(["check", str(EXAMPLES / name)])
        print(f"=== exit code {code}: {outcome_of.get(code)} ===", flush=True)
    if args.no_serve:
        return 0
    from api.serve import main as serve_main

    return serve_main([])


if __name__ == "__main__":
    sys.exit(main())
