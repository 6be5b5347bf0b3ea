"""What the submission, review and queue pages say about a submission and its stored report, as plain data
for the templates: the verdict in plain words, the headline sentence, the knowledge-drift table rows, the
sweep's runs, the pipeline's steps and the queue's key numbers. Pure functions of the API's views and the report's dicts:
no FastAPI, no database."""

from __future__ import annotations

from api.pages.charts import Stat
from api.pages.filters import pct, pts
from evaluation.formatting import points
from evaluation.policy import SweepRun
from models import TERMINAL, Decision, Kind, Stage, StageRunStatus
from models import SubmissionStatus as S


def key_numbers(report: dict | None) -> dict:
    """The numbers a queue row shows of a report (None where the report has none)."""
    m = (report or {}).get("metrics") or {}

    def get(key: str, part: str) -> float | None:
        v = (m.get(key) or {}).get(part) or {}
        return v.get("value") if isinstance(v, dict) else None

    scr = ((report or {}).get("inspection") or {}).get("screening") or {}
    return {
        "asr_base": get("asr", "base"), "asr_candidate": get("asr", "candidate"), "asr_delta": get("asr", "delta"),
        "overrefusal_delta": get("overrefusal", "delta"), "knowledge_delta": get("knowledge_accuracy", "delta"),
        "kl": (m.get("kl") or {}).get("value"), "screening_share": scr.get("share") if scr else None,
        "n_flipped": (report or {}).get("n_flipped"),
    }


DRIFT_ROWS = (
    ("perplexity", "Answer perplexity", "lower is better", "{:.2f}"),
    ("entropy", "Mean entropy (nats)", "lower is steadier", "{:.3f}"),
    ("answer_probability", "Answer-token probability", "higher is better", "{:.3f}"),
)


def drift_rows(metrics: dict) -> list[dict]:
    out = []
    for key, label, hint, fmt in DRIFT_ROWS:
        m = metrics.get(key)
        if not isinstance(m, dict):
            continue
        b, c, d = (Stat.of(m.get(p)) for p in ("base", "candidate", "delta"))

        def f(s: Stat | None, fmt: str = fmt) -> str:
            return "—" if s is None else fmt.format(s.value)

        delta = "—" if d is None else ("{:+" + fmt[2:]).format(d.value)
        out.append({"key": key, "label": label, "hint": hint, "base": f(b), "candidate": f(c), "delta": delta})
    kl = metrics.get("kl")
    if isinstance(kl, dict) and kl.get("value") is not None:
        out.append({"key": "kl", "label": "KL(base ‖ candidate)", "hint": "nats per token; 0 = unchanged",
                    "base": "", "candidate": f"{kl['value']:.4f}", "delta": ""})
    window = metrics.get("second_window")
    if isinstance(window, dict) and window.get("candidate"):
        out.append({"key": "second_window", "label": "Harm answers read past the first window",
                    "hint": "judged neither refused nor complied and cut off, so read on (a preamble attack)",
                    "base": str(window["base"]["read"]), "candidate": str(window["candidate"]["read"]),
                    "delta": f"{window['candidate']['turned_compliance']} compliant there"})
    return out


def _change(metric: object) -> dict:
    """A metric's change as a table cell: the points, and its 95% interval when there is one."""
    d = Stat.of(metric.get("delta")) if isinstance(metric, dict) else None
    if d is None:
        return {"value": "—", "interval": ""}
    interval = f"{points(d.lo)} to {points(d.hi)}" if d.lo is not None and d.hi is not None else ""
    return {"value": pts(d.value), "interval": interval}


def sweep_rows(report: dict | None) -> list[dict]:
    """The runs of a policy's sweep (report["sweep"]) as the submission page's table rows: the recipe, decision,
    ASR change with its interval, over-refusal and knowledge-accuracy changes, the perplexity ratio, KL and the
    adapter's fingerprint; ``worst`` marks the run whose verdict is the submission's. [] without a sweep."""
    runs = (report or {}).get("sweep")
    if not isinstance(runs, list):
        return []
    rows = []
    for run in runs:
        if not isinstance(run, dict):
            continue
        training = run.get("training") or {}
        metrics = run.get("metrics") or {}
        ppl = metrics.get("perplexity") or {}
        b, c = Stat.of(ppl.get("base")), Stat.of(ppl.get("candidate"))
        kl = metrics.get("kl") or {}
        recipe = (SweepRun(training["lr"], training["steps"]).label()
                  if isinstance(training.get("lr"), int | float) and isinstance(training.get("steps"), int) else "—")
        rows.append({
            "run": run.get("run"), "recipe": recipe, "decision": run.get("decision"), "worst": bool(run.get("worst")),
            "asr": _change(metrics.get("asr")), "overrefusal": _change(metrics.get("overrefusal")),
            "knowledge": _change(metrics.get("knowledge_accuracy")),
            "perplexity": f"×{c.value / b.value:.2f}" if b and c and b.value else "—",
            "kl": f"{kl['value']:.4f}" if isinstance(kl.get("value"), int | float) else "—",
            "adapter": str(run.get("adapter_fingerprint") or "")[:12] or "—",
        })
    return rows


VERDICT_WORDS: dict[str, tuple[str, str]] = {
    Decision.APPROVE: ("Approved", "No safety regression beyond the policy's limits was found: this fine-tune can be released."),
    Decision.BLOCK: ("Blocked", "This fine-tune makes the model measurably less safe than its base: it must not be released."),
    Decision.REVIEW: ("Needs human review", "The measurements are not clear enough to decide automatically: a reviewer "
               "will approve or block it."),
}
STATUS_WORDS = {
    S.QUEUED: "Waiting for a worker",
    S.INSPECTING: "Inspecting the upload",
    S.FINETUNING: "Fine-tuning the base model on your dataset",
    S.EVALUATING: "Evaluating base and candidate on the test suites",
    S.DECIDING: "Deciding",
    S.REPAIRING: "Verdict ready; making the repaired adapter (safety data mixed into the fine-tune)",
    S.DONE: "Finished",
    S.REJECTED: "Rejected: the upload could not be accepted",
    S.FAILED: "Failed: an error on our side",
    S.CANCELLED: "Cancelled",
}
FAILED = "failed"  # the verdict box of a submission that has no verdict because it failed or was cancelled


def plain_verdict(detail: dict) -> dict | None:
    """The verdict in plain words: what the gate says now, and the automatic verdict beside a review."""
    status = detail.get("status")
    review = detail.get("review")
    verdict = detail.get("verdict") or {}
    if status == S.REJECTED:
        return {"decision": Decision.BLOCK, "title": "Rejected",
                "text": "The upload was refused before it was evaluated. Fix it and upload again.",
                "reasons": [(detail.get("error") or {}).get("message") or "the upload is invalid"]}
    if status == S.FAILED:
        return {"decision": FAILED, "title": "Failed",
                "text": "The evaluation stopped with an error on our side. You can upload the same file again.",
                "reasons": [(detail.get("error") or {}).get("message") or "unknown error"]}
    if status == S.CANCELLED:
        return {"decision": FAILED, "title": "Cancelled", "text": "This submission was cancelled.", "reasons": []}
    if not verdict:
        return None
    auto = verdict.get("decision")
    final = detail.get("decision") or auto
    title, text = VERDICT_WORDS.get(str(final), (str(final), ""))
    out = {"decision": final, "title": title, "text": text, "reasons": verdict.get("reasons") or [],
           "automatic": auto, "review": review}
    if review:
        out["text"] = (f"A reviewer {'approved' if review['decision'] == Decision.APPROVE else 'blocked'} it "
                       f"(the automatic verdict was “{VERDICT_WORDS.get(str(auto), (str(auto), ''))[0].lower()}”).")
    return out


def headline(metrics: dict) -> str | None:
    asr = metrics.get("asr") or {}
    b, c, d = (Stat.of(asr.get(p)) for p in ("base", "candidate", "delta"))
    if b is None or c is None:
        return None
    text = f"Harmful-request compliance (ASR) went from {pct(b.value)} on the base to {pct(c.value)} on the candidate"
    if d is not None:
        text += f" ({pts(d.value)}"
        if d.lo is not None and d.hi is not None:
            text += f"; 95% interval {points(d.lo)} to {points(d.hi)}"
        text += ")"
    return text + "."


STAGES_OF: dict[str, tuple[Stage, ...]] = {Kind.ADAPTER: (Stage.INSPECT, Stage.EVALUATE, Stage.DECIDE),
             Kind.DATASET: (Stage.INSPECT, Stage.FINETUNE, Stage.EVALUATE, Stage.DECIDE)}
STAGE_LABEL = {Stage.INSPECT: "Inspect", Stage.FINETUNE: "Fine-tune", Stage.EVALUATE: "Evaluate", Stage.DECIDE: "Decide",
               Stage.REPAIR: "Repair"}


def stage_steps(detail: dict) -> list[dict]:
    order = STAGES_OF.get(detail.get("kind") or "", STAGES_OF[Kind.DATASET])
    if (detail.get("repair") or {}).get("status") in ("pending", "done", "failed"):  # the repair stage ran or runs
        order = (*order, Stage.REPAIR)
    status = detail.get("status")
    current = detail.get("stage")
    done_stages = {r["stage"] for r in detail.get("stage_runs") or [] if r.get("status") == StageRunStatus.SUCCEEDED}
    steps = []
    for st in order:
        if status == S.DONE or st in done_stages and st != current:
            state = "done"
        elif st == current and status not in TERMINAL:
            state = "current"
        else:
            state = "todo"
        steps.append({"stage": st.value, "label": STAGE_LABEL[st], "state": state})
    return steps


REPAIR_STATUS_WORDS = {
    "pending": "The repaired adapter is being made: the same fine-tune with safety data mixed in, then evaluated "
               "like any candidate.",
    "failed": "The repair could not be made",
    "cancelled": "The repair was cancelled; the verdict stands",
    "skipped": "No repair was made",
    "refused": "No repair was made",
    "off": "Repair is off",
    "not_needed": "No repair was needed",
}


def repair_view(repair: dict | None, metrics: dict) -> dict | None:
    """Approve with repair on the submission page: the repaired adapter's verdict and, side by side with the
    original candidate, the safety changes (with their intervals) and the customer's task loss."""
    if not repair:
        return None
    if repair.get("status") != "done":
        return {"done": False, "text": REPAIR_STATUS_WORDS.get(str(repair.get("status")), str(repair.get("status"))),
                "reason": repair.get("reason")}
    after = repair.get("metrics") or {}

    def change(m: dict | None) -> str:
        d = Stat.of((m or {}).get("delta"))
        if d is None:
            return "—"
        text = pts(d.value)
        return text + (f" ({points(d.lo)} to {points(d.hi)})" if d.lo is not None and d.hi is not None else "")

    rows = [{"label": label, "original": change(metrics.get(key)), "repaired": change(after.get(key))}
            for key, label in (("asr", "ASR change (95% interval)"), ("overrefusal", "Over-refusal change"),
                               ("knowledge_accuracy", "Knowledge accuracy change")) if key in after]
    loss = repair.get("task_loss") or {}
    if loss:
        def f(v: float | None) -> str:
            return "—" if v is None else f"{v:.3f}"

        rows.append({"label": f"Task loss on {loss.get('held_back_examples')} held-back examples of your data",
                     "original": f(loss.get("original")), "repaired": f(loss.get("repaired")),
                     "hint": "mean loss per answer token, lower is better; both trained without those examples"})
    words = VERDICT_WORDS.get(str(repair.get("decision")), (str(repair.get("decision")), ""))[0]
    return {"done": True, "decision": repair.get("decision"), "title": words, "reasons": repair.get("reasons") or [],
            "released": bool(repair.get("released")), "safety_share": repair.get("safety_share"), "rows": rows,
            "adapter": repair.get("adapter")}
