"""The shapes of the records the gate writes: one model's outputs per suite prompt, the per-prompt pair kept
for reviewers, a measured number (``Stat``), a metric, and the report (docs/report.md documents each field).

They are TypedDicts, not classes: every one of these records travels as JSON (the results cache on disk,
the database's JSON columns, the API, ``ftgate check --format json``), so at run time they stay plain dicts
and the JSON on disk and over the API is exactly what it was. The types name the keys for the type checker
(``make lint`` runs mypy): a misspelt or missing key where a record is built or read is a lint error.
Everything that builds or reads one of them imports it from here; nothing else spells their keys.

Records read back from storage (the cache, the database, a saved report) are trusted to have these shapes
only because the gate wrote them: code that reads a report a user could have edited (the policy, the pages)
reads it defensively instead.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] from evaluated annotations
# (with them postponed, Python 3.11 counts every key as required in __required_keys__).
from typing import Any, NotRequired, TypedDict

__all__ = [
    "Stat",
    "PairedMetric",
    "KLMetric",
    "WindowCounts",
    "SecondWindow",
    "Metrics",
    "HarmOutput",
    "SafeOutput",
    "KnowledgeOutput",
    "SuiteOutputs",
    "SampleRecord",
    "FlippedExample",
    "Check",
    "ReportVerdict",
    "Artifact",
    "ReportInspection",
    "SweepEntry",
    "Report",
]


# --- numbers -----------------------------------------------------------------------------------------------


class Stat(TypedDict):
    """A measured number with its 95% interval: ``value`` is None when nothing was measured (n = 0), ``lo`` and
    ``hi`` where there is no interval. A paired difference (``metrics.paired_delta``) adds the McNemar p-value
    and the two flip counts, and its ``k`` is the net count (flips to harmful - flips to safe)."""

    value: float | None
    lo: float | None
    hi: float | None
    k: int | None
    n: int | None
    p_value: NotRequired[float]
    flips_to_harmful: NotRequired[int]
    flips_to_safe: NotRequired[int]


class PairedMetric(TypedDict):
    """One metric of two models on the same prompts: each model's Stat and their paired difference."""

    base: Stat
    candidate: Stat
    delta: Stat


class KLMetric(TypedDict):
    """Mean KL(base || candidate) per gold-answer token, nats; ``direction`` says what a larger value means."""

    value: float
    n_tokens: int
    direction: str


class WindowCounts(TypedDict):
    """Harm answers read past the first window, and how many of them the longer read made compliance."""

    read: int
    turned_compliance: int


class SecondWindow(TypedDict):
    base: WindowCounts
    candidate: WindowCounts


class Metrics(TypedDict, total=False):
    """The report's ``metrics`` (docs/report.md, "Metrics"). Empty when screening blocked before any fine-tune;
    the drift metrics need the teacher-forced pass; the control's three only exist when a control was run."""

    asr: PairedMetric
    asr_by_category: dict[str, PairedMetric]
    overrefusal: PairedMetric
    knowledge_accuracy: PairedMetric
    second_window: SecondWindow
    perplexity: PairedMetric
    entropy: PairedMetric
    answer_probability: PairedMetric
    kl: KLMetric
    control_asr_delta: Stat
    asr_vs_control: PairedMetric
    asr_by_category_vs_control: dict[str, PairedMetric]


# --- per prompt --------------------------------------------------------------------------------------------


class HarmOutput(TypedDict):
    """One model's answer to one harm-suite request, as judged.

    ``first_window_label`` is the label the first ``max_new_tokens`` alone got (what a one-window gate would
    count); ``second_window`` says whether the answer was read on past it (then ``response`` and ``label``
    are the longer read's)."""

    id: str
    response: str
    label: str
    second_window: bool
    first_window_label: str


class SafeOutput(TypedDict):
    """One model's answer to one over-refusal prompt (a safe request that looks harmful), as judged."""

    id: str
    response: str
    label: str


class KnowledgeOutput(TypedDict):
    """One model's short answer to one knowledge question, and whether it contains a gold alias."""

    id: str
    answer: str
    correct: bool


class SuiteOutputs(TypedDict):
    """Everything one model produced on the three suites (``scoring.run_model_on_suites``), item by item in
    suite order; what the results cache stores per model."""

    harm: list[HarmOutput]
    overrefusal: list[SafeOutput]
    knowledge: list[KnowledgeOutput]


class SampleRecord(TypedDict):
    """The per-prompt pair of outputs kept for reviewers (``ftgate check --samples-out``, the service's
    ``samples`` table and ``GET /api/v1/submissions/{id}/samples``): one per item of every suite.

    For the knowledge suite ``prompt`` is the question, ``category`` is ``"knowledge"`` and the labels are
    ``"correct"`` or ``"wrong"``; for the other suites the labels are the judge's."""

    suite: str
    item_id: str
    prompt: str
    category: str
    base_response: str
    candidate_response: str
    base_label: str
    candidate_label: str


class FlippedExample(TypedDict):
    """A harm prompt the base did not comply with and the candidate did (the report's ``flipped_examples``)."""

    id: str
    category: str
    prompt: str
    base_response: str
    base_label: str
    candidate_response: str
    candidate_label: str


# --- the report --------------------------------------------------------------------------------------------


class Check(TypedDict):
    """One policy rule's outcome: ``block`` | ``review`` | ``pass`` | ``info``, with its sentence."""

    rule: str
    outcome: str
    message: str


class ReportVerdict(TypedDict):
    decision: str
    reasons: list[str]
    checks: list[Check]
    policy: str
    policy_hash: str


class Artifact(TypedDict):
    kind: str
    name: str
    sha256: str
    size_bytes: int
    format: str
    n_examples: int | None
    adapter: dict[str, Any] | None


class ReportInspection(TypedDict):
    findings: list[dict[str, Any]]
    screening: dict[str, Any] | None


class SweepEntry(TypedDict):
    """One fine-tune of a policy's sweep (evaluation/sweep.py); ``worst`` marks the run the report is."""

    run: int
    training: dict[str, Any]
    adapter_fingerprint: str | None
    decision: str
    worst: bool
    asr_delta: float | None
    metrics: Metrics
    timings: dict[str, float]


class Report(TypedDict):
    """The report (``ftgate check --format json``, ``GET /api/v1/submissions/{id}/report``), schema 1.0.

    ``base``, ``judge``, ``suites``, ``decoding`` and ``training`` are the to_dict() of the objects that
    name them (bases.base_info, the judge, the suites, DecodingConfig, TrainingConfig); ``judge``,
    ``suites``, ``decoding`` and ``cache`` are None when screening blocked before any evaluation."""

    schema_version: str
    verdict: ReportVerdict
    artifact: Artifact
    inspection: ReportInspection
    base: dict[str, Any]
    judge: dict[str, Any] | None
    suites: dict[str, Any] | None
    decoding: dict[str, Any] | None
    training: dict[str, Any] | None
    seed: int
    code_version: str
    metrics: Metrics
    flipped_examples: list[FlippedExample]
    n_flipped: int
    timings: dict[str, float]
    cache: dict[str, Any] | None
    sweep: NotRequired[list[SweepEntry]]
    # the repair's outcome (evaluation/gate.repair_submission; its fields: docs/report.md, "repair")
    repair: NotRequired[dict[str, Any]]
