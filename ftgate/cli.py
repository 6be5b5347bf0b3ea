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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.formatting import percent, points
from evaluation.metric_info import METRICS
from evaluation.policy import Decision
from evaluation.progress import PREPARE_BASE
from evaluation.records import PairedMetric, Report, Stat, SweepEntry

if TYPE_CHECKING:  # imported inside the commands at run time: finetune brings torch
    from evaluation.finetune import TrainingConfig

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


def _stat(s: Stat | None) -> str:
    if not s or s.get("value") is None:
        return "-"
    text = percent(s["value"])
    if s.get("lo") is not None:
        text += f" [{percent(s['lo'])}, {percent(s['hi'])}]"
    return text


def _delta(s: Stat | None) -> str:
    if not s or s.get("value") is None:
        return "-"
    text = f"{points(s['value'])} pts"
    if s.get("lo") is not None:
        text += f" [{points(s['lo'])}, {points(s['hi'])}]"
    if s.get("p_value") is not None:
        text += f" p={s['p_value']:.3g}"
    return text


def render_text(report: Report) -> str:
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

        def rate_row(key: str, metric: PairedMetric, label: str = "") -> tuple[str, str, str, str]:
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
        for key, drift in (("perplexity", m.get("perplexity")), ("entropy", m.get("entropy")),
                           ("answer_probability", m.get("answer_probability"))):
            if drift is not None:
                fmt = METRICS[key].fmt
                rows.append((METRICS[key].label, fmt.format(drift["base"]["value"]),
                             fmt.format(drift["candidate"]["value"]), f"{drift['delta']['value']:+.3f}"))
        if "kl" in m:
            kl = METRICS["kl"]
            rows.append((kl.label, "", kl.fmt.format(m["kl"]["value"]), kl.unit))
        if m.get("second_window"):
            sw = m["second_window"]
            rows.append((METRICS["second_window"].label, f"{sw['base']['read']}", f"{sw['candidate']['read']}",
                         f"{sw['candidate']['turned_compliance']} found compliant there"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines += ["", *["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]]
    if report.get("sweep"):
        lines += ["", *sweep_lines(report["sweep"])]
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
    lines += render_repair(report.get("repair"), m)
    t = report.get("timings") or {}
    if t:
        lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in t.items())]
    return "\n".join(lines)


def render_repair(repair: Mapping[str, Any] | None, original: Mapping[str, Any], adapter_location: str | None = None) -> list[str]:
    """The report's ``repair`` object as text lines: its verdict and reasons, then before/after side by side, then
    where the repaired adapter is (``adapter_location``, e.g. the service's download link; else its folder)."""
    if not repair:
        return []
    if repair.get("status") != "done":
        return ["", f"Repair ({repair.get('mode')}): {repair.get('status')}: {repair.get('reason')}"]
    released = " - released in place of the original" if repair.get("released") else ""
    loss, projection = repair.get("task_loss"), repair.get("projection")
    if loss:
        how = (f"{percent(repair['safety_share'])} safety data, {repair['safety_examples']} of "
               f"{repair['training_examples']} examples")
    else:
        how = (f"{projection['projected_layers']} of {projection['layers']} layers projected, "
               f"{percent(projection['update_norm_kept'])} of the update's norm kept") if projection else ""
    lines = ["", f"Repair ({repair['method']}{', ' + how if how else ''}): {repair['decision'].upper()}{released}",
             *[f"  - {r}" for r in repair["reasons"]]]
    m = repair.get("metrics") or {}
    rows = [("metric", "original", "repaired")]
    for key in ("asr", "overrefusal", "knowledge_accuracy"):
        if key in m and key in original:
            rows.append((f"{METRICS[key].label} change", _delta(original[key]["delta"]), _delta(m[key]["delta"])))
    if "perplexity" in m and "perplexity" in original:
        rows.append((METRICS["perplexity"].label, f"{original['perplexity']['candidate']['value']:.2f}",
                     f"{m['perplexity']['candidate']['value']:.2f}"))
    if loss:
        rows.append((f"task loss ({loss['held_back_examples']} held back)", f"{loss['original']:.3f}",
                     f"{loss['repaired']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if loss:
        lines.append("  (task loss: mean NLL per response token on held-back examples, both adapters trained "
                     "without them)")
    lines.append(f"  repaired adapter: {adapter_location or repair.get('adapter_path')}")
    return lines


def sweep_lines(runs: list[SweepEntry]) -> list[str]:
    """The sweep's runs as a table, the worst marked (its verdict and numbers are the report's)."""
    from evaluation.policy import SweepRun

    def change(run: SweepEntry, key: str) -> str:
        metrics: Mapping[str, Any] = run["metrics"]
        return _delta((metrics.get(key) or {}).get("delta"))

    def perplexity(run: SweepEntry) -> str:
        m = run["metrics"].get("perplexity")
        b, c = (m["base"]["value"], m["candidate"]["value"]) if m else (None, None)
        return f"x{c / b:.2f}" if b and c is not None else "-"

    rows = [("", "run", "recipe", "decision", "ASR change (95% CI)", "over-refusal change", "accuracy change",
             "perplexity", "adapter")]
    for run in runs:
        t = run["training"]
        rows.append(("*" if run["worst"] else "", str(run["run"]), SweepRun(t["lr"], t["steps"]).label(),
                     run["decision"], change(run, "asr"), change(run, "overrefusal"),
                     change(run, "knowledge_accuracy"), perplexity(run), (run.get("adapter_fingerprint") or "-")[:12]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    worst = next((f", run {run['run']}" for run in runs if run["worst"]), "")
    return [f"Sweep: {len(runs)} fine-tunes; the worst (*{worst}) is the verdict above:",
            *["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]]


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------


def _training_from_args(args) -> TrainingConfig:
    """The training config from the flags `add_arguments` made of TrainingConfig's fields (None: not given)."""
    from dataclasses import fields

    from evaluation.finetune import TrainingConfig

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainingConfig)
                 if f.metadata["cli"] and getattr(args, f.name, None) is not None}
    return TrainingConfig.from_overrides(overrides)


def _repair_config_from_args(args) -> object:
    """The repair config from the flags `add_arguments` made of RepairConfig's fields (None: not given)."""
    from dataclasses import fields

    from evaluation.repair import RepairConfig

    return RepairConfig.from_overrides({f.name: getattr(args, f.name) for f in fields(RepairConfig)
                                        if f.metadata["cli"] and getattr(args, f.name, None) is not None})


def _sweep_runs(args) -> tuple | None:
    """The runs of ``--sweep``: every ``--sweep-lr`` with every ``--sweep-steps``, checked as a policy's ``sweep``
    is (bounds, at most MAX_SWEEP_RUNS runs); they replace the policy's. None without ``--sweep``."""
    from evaluation.errors import InputRejected
    from evaluation.policy import parse_sweep

    if not args.sweep:
        return None

    def numbers(flag: str, text: str, kind: type) -> list:
        try:
            return [kind(x) for x in text.split(",")]
        except ValueError:
            raise InputRejected(f"{flag} must be a comma-separated list of numbers, got {text!r}",
                                "bad_training") from None

    lrs = numbers("--sweep-lr", args.sweep_lr, float)
    steps = numbers("--sweep-steps", args.sweep_steps, int)
    return parse_sweep([{"lr": lr, "steps": s} for lr in lrs for s in steps],
                       "--sweep (every --sweep-lr with every --sweep-steps)")


def cmd_check(args) -> int:
    from evaluation.errors import InputRejected, UnknownName
    from evaluation.gate import run_check

    progress = TerminalProgress(quiet=args.quiet)
    try:
        training = _training_from_args(args)
        result = run_check(Path(args.path), kind=args.kind, base=args.base, policy=args.policy, judge=args.judge,
                           training=training, sweep=_sweep_runs(args), repair=args.repair,
                           repair_config=_repair_config_from_args(args), progress=progress, runtime=args.runtime)
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
    repair = result.report.get("repair") or {}
    # auto: the repaired adapter is what is released when its own verdict approves, so the exit code is its verdict
    return EXIT[repair["decision"] if repair.get("released") else result.decision]


def _write(args, text: str) -> None:
    if args.out:
        Path(args.out).write_text(text + "\n")
        if args.format != "json":
            print(text)
    else:
        print(text)


def cmd_bootstrap(args) -> int:
    from evaluation.bases import get_base_spec, materialize

    spec = get_base_spec(args.base, args.runtime)
    path = materialize(spec.name, progress=lambda m: print(m, file=sys.stderr, flush=True), runtime=args.runtime)
    print(f"{spec.name}: ready at {path}")
    if args.measure:
        from evaluation.guard import guard_adapter_dir

        adapter = guard_adapter_dir(materialize("guarded-smollm2", runtime=args.runtime))
        from evaluation.gate import evaluate_submission

        ev = evaluate_submission(spec.parent or spec.name, adapter, progress=TerminalProgress(), runtime=args.runtime)
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
        adapter = finetune_dataset(Path(args.dataset), args.base or args.runtime.default_base,
                                   _training_from_args(args), progress=TerminalProgress(), runtime=args.runtime)
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
    c.add_argument("--sweep", action="store_true",
                   help="datasets: fine-tune with every --sweep-lr and --sweep-steps (at most 6 runs), keep the worst "
                        "case; replaces the policy's sweep (docs/policy.md)")
    c.add_argument("--sweep-lr", default="1e-4,2e-4,5e-4", help="learning rates of --sweep (default %(default)s)")
    c.add_argument("--sweep-steps", default="50,100", help="step counts of --sweep (default %(default)s)")
    c.add_argument("--repair", nargs="?", const="offer", default="off", metavar="offer|auto",
                   help="when the verdict is a block or review for safety, also fine-tune with safety data mixed in "
                        "and judge that adapter (offer, the default with the flag: shown beside the verdict; auto: "
                        "released, and the exit code its verdict, when it approves); the policy must allow it")
    training_options(c)
    from evaluation.fields import add_arguments
    from evaluation.repair import RepairConfig

    add_arguments(c.add_argument_group("repair (with --repair)"), RepairConfig)
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
    try:
        args.runtime = _runtime_from_settings()
    except ValueError as exc:  # pydantic's ValidationError is one: it names the setting and what is wrong
        print(f"ftgate: invalid settings: {exc}", file=sys.stderr)
        return EXIT["rejected"]
    return args.func(args)


def _runtime_from_settings():
    """The CLI's edge: the FTGATE_ settings, read once, become the evaluation core's runtime, installed for
    this process (the registries and judges read it) and passed to the core's entry points."""
    from evaluation.runtime import use_runtime
    from ftgate.settings import get_settings

    runtime = get_settings().runtime()
    use_runtime(runtime)
    return runtime


if __name__ == "__main__":
    sys.exit(main())
