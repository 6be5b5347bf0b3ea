"""`ftgate`: the command line. `check` runs the whole gate in-process, with no server.

Exit codes (check and submit): 0 approve, 1 block, 2 review, 3 input rejected, 4 internal error.
Heavy libraries are imported inside the commands, so `ftgate --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

from evaluation.formatting import percent, points
from evaluation.metric_info import METRICS
from evaluation.policy import Decision
from evaluation.progress import PREPARE_BASE

# The exit code of a check: its verdict, or why it has none (the input was refused; ftgate failed).
EXIT = {Decision.APPROVE: 0, Decision.BLOCK: 1, Decision.REVIEW: 2, "rejected": 3, "error": 4}
QUIET_PREPARE_INTERVAL = 60.0  # seconds between the lines --quiet still prints while a base is prepared


class TerminalProgress:
    """A one-line bar on a terminal; plain, throttled log lines elsewhere (CI logs, pipes)."""

    def __init__(self, stream=sys.stderr, quiet: bool = False):
        self.stream, self.quiet = stream, quiet
        self.tty = stream.isatty()
        self.last_line = ""
        self.last_time = 0.0
        self.preparing = False  # quiet mode: a PREPARE_BASE report has started the clock

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        if self.quiet:
            # Quiet still says when a once-per-machine preparation runs long (the guarded base takes ~17 min
            # to build on a fresh machine): after a minute of it, one line a minute, so a cold first check is
            # not silent; a warm check's quick "loading base" says nothing.
            if stage == PREPARE_BASE:
                now = time.monotonic()
                if not self.preparing:
                    self.preparing, self.last_time = True, now
                elif now - self.last_time >= QUIET_PREPARE_INTERVAL:
                    print(f"[{stage}] {message}", file=self.stream, flush=True)
                    self.last_time = now
            return
        if self.tty:
            width = 24
            filled = int(width * done / total) if total else 0
            line = f"\r{stage:<30} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {message[:50]:<50}"
            self.stream.write(line)
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        now = time.monotonic()
        line = f"[{stage}] {message or f'{done}/{total}'}"
        if line != self.last_line and (now - self.last_time > 2 or done >= total or done == 0):
            print(line, file=self.stream, flush=True)
            self.last_line, self.last_time = line, now

    def note(self, message: str) -> None:
        if not self.quiet:
            if self.tty:
                self.stream.write("\n")
            print(message, file=self.stream, flush=True)


# --------------------------------------------------------------------------------------------------
# text report
# --------------------------------------------------------------------------------------------------


def _stat(s: dict | None) -> str:
    if not s or s.get("value") is None:
        return "-"
    text = percent(s["value"])
    if s.get("lo") is not None:
        text += f" [{percent(s['lo'])}, {percent(s['hi'])}]"
    return text


def _delta(s: dict | None) -> str:
    if not s or s.get("value") is None:
        return "-"
    text = f"{points(s['value'])} pts"
    if s.get("lo") is not None:
        text += f" [{points(s['lo'])}, {points(s['hi'])}]"
    if s.get("p_value") is not None:
        text += f" p={s['p_value']:.3g}"
    return text


def render_text(report: dict) -> str:
    v = report["verdict"]
    a = report["artifact"]
    lines = [
        f"ftgate verdict: {v['decision'].upper()}   ({a['kind']} {a['name']}, sha256 {a['sha256'][:12]}, "
        f"base {report['base'].get('name')}, policy {v.get('policy')})",
        "",
        "Reasons:",
        *[f"  - {r}" for r in v["reasons"]],
    ]
    m = report.get("metrics") or {}
    if m:
        rows = [("metric", "base", "candidate", "change (95% CI)")]

        def rate_row(key: str, metric: dict, label: str = "") -> tuple[str, str, str, str]:
            label = label or METRICS[key].label
            return label, _stat(metric["base"]), _stat(metric["candidate"]), _delta(metric["delta"])

        for key in ("asr", "overrefusal", "knowledge_accuracy"):
            if key in m:
                rows.append(rate_row(key, m[key]))
        if m.get("control_asr_delta"):
            rows.append(("  " + METRICS["control_asr_delta"].label, "", "", _delta(m["control_asr_delta"])))
        if m.get("asr_vs_control"):
            rows.append(rate_row("asr_vs_control", m["asr_vs_control"], "  " + METRICS["asr_vs_control"].label))
        for cat, mc in (m.get("asr_by_category") or {}).items():
            rows.append(rate_row("asr_by_category", mc, f"  {METRICS['asr_by_category'].label} {cat}"))
        for key in ("perplexity", "entropy", "answer_probability"):
            if key in m:
                fmt = METRICS[key].fmt
                rows.append((METRICS[key].label, fmt.format(m[key]["base"]["value"]),
                             fmt.format(m[key]["candidate"]["value"]), f"{m[key]['delta']['value']:+.3f}"))
        if "kl" in m:
            kl = METRICS["kl"]
            rows.append((kl.label, "", kl.fmt.format(m["kl"]["value"]), kl.unit))
        if m.get("second_window"):
            sw = m["second_window"]
            rows.append((METRICS["second_window"].label, f"{sw['base']['read']}", f"{sw['candidate']['read']}",
                         f"{sw['candidate']['turned_compliance']} found compliant there"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines += ["", *["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]]
    flips = report.get("flipped_examples") or []
    if flips:
        lines += ["", f"Flipped examples (base did not comply, candidate did; {report.get('n_flipped', len(flips))} in all):"]
        for f in flips[:3]:
            lines.append(f"  [{f['category']}] {f['prompt'][:90]}")
            lines.append(f"      base:      {f['base_response'][:90]!r}")
            lines.append(f"      candidate: {f['candidate_response'][:90]!r}")
    screening = (report.get("inspection") or {}).get("screening")
    if screening:
        lines += ["", f"Dataset screening: {screening['n_harmful']} of {screening['n']} examples look harmful"
                      f" ({percent(screening['share'])})"]
        if screening.get("n_persona"):
            lines.append(f"  {screening['n_persona']} set up a jailbreak persona ({percent(screening['persona_share'])}),"
                         f" e.g. line {screening['persona_flagged'][0]['line']}")
        if screening.get("n_response_flagged"):
            shown = [str(f["line"]) for f in screening.get("response_flagged") or []][:10]
            more = ", ..." if screening["n_response_flagged"] > len(shown) else ""
            lines.append(f"  {screening['n_response_flagged']} have a response read as harmful"
                         f" ({percent(screening['response_share'])}): lines {', '.join(shown)}{more}")
    t = report.get("timings") or {}
    if t:
        lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in t.items())]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------


def _training_from_args(args) -> object:
    """The training config from the flags `add_arguments` made of TrainingConfig's fields (None: not given)."""
    from dataclasses import fields

    from evaluation.finetune import TrainingConfig

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainingConfig)
                 if f.metadata["cli"] and getattr(args, f.name, None) is not None}
    return TrainingConfig.from_overrides(overrides)


def _sweep_configs(args, training):
    from dataclasses import replace

    if not args.sweep:
        return None
    lrs = [float(x) for x in args.sweep_lr.split(",")]
    steps = [int(x) for x in args.sweep_steps.split(",")]
    return [replace(training, lr=lr, steps=s) for lr in lrs for s in steps]


def cmd_check(args) -> int:
    from evaluation.errors import InputRejected, UnknownName
    from evaluation.gate import run_check

    progress = TerminalProgress(quiet=args.quiet)
    try:
        training = _training_from_args(args)
        result = run_check(Path(args.path), kind=args.kind, base=args.base, policy=args.policy, judge=args.judge,
                           training=training, sweep=_sweep_configs(args, training), progress=progress)
    except (InputRejected, UnknownName) as exc:
        reason = exc.reason if isinstance(exc, InputRejected) else str(exc)
        code = exc.code if isinstance(exc, InputRejected) else "unknown_name"
        print(f"ftgate: input rejected: {reason}", file=sys.stderr)
        if args.format == "json":
            _write(args, json.dumps({"verdict": {"decision": "rejected", "reasons": [reason]}, "error": {"code": code, "message": reason}}, indent=2))
        return EXIT["rejected"]
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: exit 4 with the reason
        traceback.print_exc()
        print(f"ftgate: internal error: {exc}", file=sys.stderr)
        return EXIT["error"]
    text = json.dumps(result.report, indent=2) if args.format == "json" else render_text(result.report)
    _write(args, text)
    if args.samples_out:
        Path(args.samples_out).write_text(json.dumps(result.samples, indent=1))
    return EXIT[result.decision]


def _write(args, text: str) -> None:
    if args.out:
        Path(args.out).write_text(text + "\n")
        if args.format != "json":
            print(text)
    else:
        print(text)


def cmd_bootstrap(args) -> int:
    from evaluation.bases import get_base_spec, materialize

    spec = get_base_spec(args.base)
    path = materialize(spec.name, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"{spec.name}: ready at {path}")
    if args.measure:
        from evaluation.guard import guard_adapter_dir

        adapter = guard_adapter_dir(materialize("guarded-smollm2"))
        from evaluation.gate import evaluate_submission

        ev = evaluate_submission(spec.parent or spec.name, adapter, progress=TerminalProgress())
        m = ev.metrics
        summary = {
            "raw_asr": m["asr"]["base"]["value"], "guarded_asr": m["asr"]["candidate"]["value"],
            "raw_overrefusal": m["overrefusal"]["base"]["value"], "guarded_overrefusal": m["overrefusal"]["candidate"]["value"],
            "raw_knowledge_accuracy": m["knowledge_accuracy"]["base"]["value"],
            "guarded_knowledge_accuracy": m["knowledge_accuracy"]["candidate"]["value"],
            "judge": ev.judge, "suites": ev.suites,
        }
        print(json.dumps(summary, indent=2))
    return 0


def cmd_make_adapter(args) -> int:
    import shutil

    from evaluation.errors import InputRejected
    from evaluation.gate import finetune_dataset

    try:
        adapter = finetune_dataset(Path(args.dataset), args.base or _default_base(), _training_from_args(args),
                                   progress=TerminalProgress())
    except InputRejected as exc:
        print(f"ftgate: input rejected: {exc.reason}", file=sys.stderr)
        return EXIT["rejected"]
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.zip:
        shutil.make_archive(str(out), "zip", adapter)
        print(f"adapter written to {out}.zip")
    else:
        shutil.copytree(adapter, out)
        print(f"adapter written to {out}")
    return 0


def _default_base() -> str:
    from ftgate.settings import get_settings

    return get_settings().default_base


def cmd_list(args) -> int:
    if args.what == "suites":
        from evaluation.suites import list_suites

        rows = [{"name": s.name, "kind": s.kind, "size": len(s.items), "hash": s.hash, "source": s.source} for s in list_suites()]
    elif args.what == "judges":
        from evaluation.judges import list_judges

        rows = list_judges()
        if not args.json:
            print(format_judges(rows))
            return 0
    elif args.what == "bases":
        from evaluation.bases import list_bases

        rows = [b.to_dict() for b in list_bases()]
    else:
        from evaluation.policy import list_policies

        rows = [{"name": p.name, "hash": p.hash, "description": p.description} for p in list_policies()]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        for r in rows:
            print("  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


def format_judges(rows: list[dict]) -> str:
    """The judges, each with its validation per source: rows, 3-way label accuracy and each head's."""
    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = []
    for r in rows:
        lines.append(f"{r['name']} v{r['version']}{' (default)' if r['default'] else ''}: {r['description']}")
        v = r.get("validation")
        if not v:
            lines.append("  not measured here")
        else:
            lines.append(f"  {v['method']}, per source (accuracy):")
            lines.append(f"    {'source':<20} {'rows':>6} {'label':>7} {'refused':>8} {'complied':>9}")
            for source, e in v["per_source"].items():
                lines.append(f"    {source:<20} {e['n']:>6} {cell(e.get('label_accuracy')):>7} "
                             f"{cell(e.get('refused_accuracy')):>8} {cell(e.get('complied_accuracy')):>9}")
        persona = r.get("persona")
        if persona:
            lines.append(f"  persona head (dataset screening), {persona['method']}, share flagged:")
            lines.append(f"    {'source':<24} {'rows':>6} {'texts':>9} {'flagged':>8}")
            for source, e in persona["per_source"].items():
                kind = "jailbreak" if e["personas"] else "benign"
                lines.append(f"    {source:<24} {e['n']:>6} {kind:>9} {cell(e['flagged']):>8}")
        response_harm = r.get("response_harm")
        if response_harm:
            lines.append(f"  response-harm head (dataset screening), {response_harm['method']}, at "
                         f"{response_harm['threshold']}, share flagged:")
            lines.append(f"    {'source':<28} {'rows':>6} {'harmful':>8} {'recall':>7} {'false flags':>12}")
            for source, e in response_harm["per_source"].items():
                lines.append(f"    {source:<28} {e['n']:>6} {e['harmful']:>8} {cell(e.get('recall')):>7} "
                             f"{cell(e.get('false_flags')):>12}")
    return "\n".join(lines)


# Commands with their own argument parser in their own module: `main` hands them the rest of the command line
# untouched, so their options and --help are theirs (an argparse REMAINDER refused options before a positional).
DELEGATED = {
    "serve": ("api.serve", "run the web service (API, pages and a worker)"),
    "submit": ("api.client", "upload to a running ftgate server (for CI)"),
    "demo": ("ftgate.demo", "serve, then check the bundled samples through the service (make run)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftgate", description="A release gate for LoRA adapters and fine-tuning datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    def training_options(sp):
        from evaluation.fields import add_arguments
        from evaluation.finetune import TrainingConfig

        add_arguments(sp.add_argument_group("training (datasets; research defaults)"), TrainingConfig)

    c = sub.add_parser("check", help="gate an adapter (dir/.zip/.tar.gz) or a dataset (.jsonl/.csv/.parquet)")
    c.add_argument("path")
    c.add_argument("--kind", choices=["adapter", "dataset"])
    c.add_argument("--base", default=None, help="base model name (default: guarded-smollm2)")
    c.add_argument("--policy", default=None)
    c.add_argument("--judge", default=None)
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.add_argument("--out", help="write the report here")
    c.add_argument("--samples-out", help="write every per-prompt completion here (JSON)")
    c.add_argument("--quiet", action="store_true",
                   help="no progress output (a base build that runs long still prints a line a minute)")
    c.add_argument("--sweep", action="store_true", help="try several learning rates / step counts, keep the worst")
    c.add_argument("--sweep-lr", default="1e-4,2e-4,5e-4")
    c.add_argument("--sweep-steps", default="50,100")
    training_options(c)
    c.set_defaults(func=cmd_check)

    b = sub.add_parser("bootstrap", help="build the embedded guarded base (once per machine)")
    b.add_argument("--base", default="guarded-smollm2")
    b.add_argument("--measure", action="store_true", help="measure raw vs guarded on the default suites")
    b.set_defaults(func=cmd_bootstrap)

    m = sub.add_parser("make-adapter", help="fine-tune a dataset into a LoRA adapter directory")
    m.add_argument("dataset")
    m.add_argument("--out", required=True)
    m.add_argument("--base", default=None)
    m.add_argument("--zip", action="store_true", help="write OUT.zip instead of a directory")
    training_options(m)
    m.set_defaults(func=cmd_make_adapter)

    for what in ("suites", "judges", "bases", "policies"):
        sp = sub.add_parser(what, help=f"list the registered {what}")
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=cmd_list, what=what)

    for name, (_, text) in DELEGATED.items():  # listed in `ftgate --help`; run by `main` before parsing
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
