"""What each metric of the report means, as data: its label, direction, unit and interval method.

One table (``METRICS``, in the order the report's readers show them) serves every place that names a metric:
the policy's sentences (``phrase``), the CLI summary (``label``, ``fmt``), docs/report.md's metrics table
(``doc_table``; a unit test keeps the page in step) and, later, the pages. The numbers themselves come from
evaluation/metrics.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.fields import markdown_table


@dataclass(frozen=True)
class MetricInfo:
    key: str  # the key under the report's "metrics"
    label: str  # a row of a summary table ("ASR (harmful compliance)")
    phrase: str  # the subject of a sentence ("ASR rose from 4.0% to 63.3% ...")
    meaning: str  # what the value is (Markdown)
    interval: str  # how its 95% interval is computed ("none": a point value)
    direction: str  # "higher is worse", "higher is better", ...
    unit: str  # "fraction", "nats", ...
    fmt: str = ""  # how a summary shows a point value ("{:.2f}"); "": a rate, shown as a percentage


_SAME = "same"
METRICS: dict[str, MetricInfo] = {m.key: m for m in (
    MetricInfo("asr", "ASR (harmful compliance)", "ASR",
               "share of harm-suite requests the judge labels `compliance`",
               "Wilson; the delta: Newcombe paired interval, plus `p_value` (exact McNemar), `flips_to_harmful`, "
               "`flips_to_safe`", "higher is worse", "fraction"),
    MetricInfo("asr_by_category", "ASR", "ASR in category", "`{category: metric}` as above", _SAME,
               "higher is worse", "fraction"),
    MetricInfo("overrefusal", "over-refusal (safe prompts)", "Over-refusal of safe prompts",
               "share of safe look-alike prompts the judge labels `refusal`", _SAME, "higher is worse", "fraction"),
    MetricInfo("knowledge_accuracy", "knowledge accuracy", "Knowledge accuracy",
               "share of knowledge questions whose short answer contains an alias (TriviaQA normalisation)", _SAME,
               "higher is better", "fraction"),
    MetricInfo("perplexity", "answer perplexity", "Perplexity of the gold answers",
               "exp(mean NLL) of the gold-answer tokens, teacher-forced after the question", "none",
               "higher is worse", "perplexity", "{:.2f}"),
    MetricInfo("entropy", "mean entropy (nats)", "mean entropy",
               "mean next-token entropy at the gold-answer positions, nats", "none", "higher = less certain", "nats",
               "{:.3f}"),
    MetricInfo("answer_probability", "answer-token probability", "mean gold-answer probability",
               "mean probability of the gold-answer tokens", "none", "higher is better", "probability", "{:.3f}"),
    MetricInfo("kl", "KL(base || candidate)", "KL(base || candidate)",
               '`{"value", "n_tokens"}`: mean KL(base ‖ candidate) per gold-answer token, nats', "none",
               "higher = more drift", "nats/token", "{:.4f}"),
    MetricInfo("second_window", "harm answers read past the first window", "Harm answers read past the first window",
               '`{"base": {"read", "turned_compliance"}, "candidate": {...}}`: harm answers read past the first '
               "window (judged `other` and cut off), and how many of them the longer read made `compliance` (what "
               "a one-window gate would have missed)", "none", "counts", "answers"),
    MetricInfo("control_asr_delta", "ASR shift of a benign control", "The ASR shift of a benign control",
               "a Stat: the ASR change a benign control fine-tune causes on this base (datasets: same size and "
               "recipe; adapters: ftgate's default recipe)", "Newcombe paired, as `asr.delta`", "the yardstick",
               "fraction"),
    MetricInfo("asr_vs_control", "ASR vs that control", "ASR against the benign control",
               "a metric whose `base` is the control's ASR, `candidate` the candidate's, `delta` their difference "
               "prompt by prompt (the policy's approve test)", _SAME, "higher is worse", "fraction"),
    MetricInfo("asr_by_category_vs_control", "ASR per category vs the control", "ASR per category against the benign control",
               "`{category: metric}` like `asr_vs_control`, per harm category", _SAME, "higher is worse", "fraction"),
)}


def doc_table() -> str:
    """docs/report.md's metrics table: key, value, interval, direction."""
    return markdown_table(("key", "value", "interval", "direction"),
                          [(f"`{m.key}`", m.meaning, m.interval, m.direction) for m in METRICS.values()])
