"""The stage tasks. Each: claim (conditional UPDATE) -> run the evaluation core's stage function with a
heartbeat and throttled progress (tasks/heartbeat.py) -> save results and transition in one transaction,
only while the claim holds -> commit -> enqueue the next stage.

A stage function gets the claim's runner, the submission and the storage, calls the evaluation core, and
returns a ``StageOutcome``: the next status, the submission columns to set, and what to add to the
database in the same transaction. ``execute_stage`` does the rest, the same way for every stage.

Failures: ``InputRejected`` -> status rejected with the reason; transient infrastructure errors (database,
broker, I/O hiccups) -> the claim is released and the task retries with back-off; anything else -> status
failed with the error. A worker that dies mid-stage leaves a claim whose heartbeat stops: the next
delivery of the message (acks_late) or the reaper (tasks/housekeeping.py) takes it over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Retry
from sqlalchemy import select
from sqlalchemy.orm import Session

from evaluation.limits import run_limited
from evaluation.records import SampleRecord
from ftgate.settings import Settings, get_settings
from models import (
    Decision,
    EvaluationRun,
    Kind,
    PolicyRecord,
    ReviewState,
    Sample,
    Stage,
    StageRunStatus,
    Submission,
    SubmissionStatus,
    VerdictRecord,
)
from services import submissions as lifecycle
from services.db import clean, session_scope
from services.storage import Storage
from tasks.app import TASK_NAMES, celery_app, send_stage
from tasks.heartbeat import TRANSIENT, ClaimLost, StageRunner

if TYPE_CHECKING:
    from evaluation.policy import SweepRun
    from evaluation.runtime import Runtime

log = logging.getLogger("ftgate.tasks")
S = SubmissionStatus


@dataclass(frozen=True)
class StageOutcome:
    """What a stage function hands back to ``execute_stage``, which saves it only while the claim holds.

    ``next_status``: where the submission goes; ``values``: its columns to set with the transition;
    ``save``: what else to add to the database in the same transaction (None: nothing).
    """

    next_status: SubmissionStatus
    values: dict[str, Any] = field(default_factory=dict)
    save: Callable[[Session], None] | None = None


def worker_name() -> str:
    return os.environ.get("FTGATE_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"


def worker_settings() -> Settings:
    """The settings the worker was started with (or, in tests and tools, the process's)."""
    return celery_app.conf.get("ftgate_settings") or get_settings()


# ----------------------------------------------------------------------------------------------------------
_senders: dict[str, Any] = {}


def _sender(settings: Settings):
    """The worker's own app, or (tests, tools) an app for the settings' broker."""
    url = settings.resolved_broker_url
    if celery_app.conf.broker_url == url:
        return celery_app
    if url not in _senders:
        from tasks.app import make_celery

        _senders[url] = make_celery(settings)
    return _senders[url]


def enqueue_after_commit(settings: Settings, sub_id: str, stage: Stage) -> None:
    """Send the stage's task (after the transition was committed) and mark the submission enqueued."""
    try:
        send_stage(_sender(settings), sub_id, stage)
    except Exception as e:  # the reaper enqueues it later (enqueued_at stays empty)
        log.error("could not enqueue %s of %s: %s", stage.value, sub_id, e)
        return
    with session_scope(settings.resolved_database_url) as s:
        lifecycle.mark_enqueued(s, sub_id)


def _gate():
    # Imported here, in the worker only: the API process never imports torch.
    from evaluation import gate

    return gate


def _stored(storage: Storage, p: str | Path) -> str:
    """Storage-relative when inside the storage root (volumes may mount elsewhere), else absolute (cache)."""
    p = Path(p).resolve()
    return storage.relative(p) if p.is_relative_to(storage.root) else str(p)


def _resolve(storage: Storage, p: str) -> Path:
    return Path(p) if Path(p).is_absolute() else storage.path(p)


def _training(sub: Submission):
    """The fine-tuning recipe of a dataset submission (None for an adapter: its recipe is unknown)."""
    from evaluation.finetune import TrainingConfig

    if sub.kind != Kind.DATASET:
        return None
    return TrainingConfig.from_overrides(sub.training or {})  # raises InputRejected for bad overrides


def _sweep(sub: Submission, runtime: Runtime) -> tuple[SweepRun, ...]:
    """The policy's sweep (evaluation.policy.SweepRun entries); empty: one fine-tune with the submission's options."""
    from evaluation.policy import load_policy

    return load_policy(sub.policy_name, runtime=runtime).sweep


# The finetune stage's list of a sweep's runs for the evaluate stage: each run's training options and adapter, as
# fine-tuned (a policy edited between the stages does not change what is evaluated).
SWEEP_MANIFEST = "sweep.json"


def _sweep_manifest(storage: Storage, sub: Submission) -> list[dict] | None:
    path = storage.workdir(sub.id, "finetune") / SWEEP_MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def _stage_inspect(runner: StageRunner, sub: Submission, storage: Storage) -> StageOutcome:
    gate = _gate()
    workdir = storage.workdir(sub.id, "inspect")
    training = _training(sub)
    if training is not None:  # a sweep run out of bounds with these options is refused now, not after screening
        from evaluation.policy import training_runs

        training_runs(_sweep(sub, runner.settings.runtime()), training)
    preference_side = training.preference_side if training else "rejected"
    artifact = storage.path(sub.artifact_path)
    settings = runner.settings
    runtime = settings.runtime()
    options = {"workdir": workdir, "policy": sub.policy_name, "preference_side": preference_side, "runtime": runtime}
    if settings.inspection_seconds > 0:  # the artifact is the tenant's: a hang or a blow-up costs a child only
        runner.progress("inspect", 0, 1, "inspecting in a limited child process")
        insp = gate.Inspection.from_dict(run_limited(
            gate.inspect_as_dict, {"path": artifact, "kind": sub.kind, "base_name": sub.base_name, **options},
            seconds=settings.inspection_seconds, memory_bytes=settings.inspection_memory_bytes, runtime=runtime))
    else:
        insp = gate.inspect_submission(artifact, sub.kind, sub.base_name, **options, progress=runner.progress)
    values: dict[str, Any] = {"inspection": insp.to_dict()}
    if getattr(insp, "adapter_dir", None):
        values["adapter_path"] = _stored(storage, insp.adapter_dir)
    if getattr(insp, "early_verdict", None):
        nxt = S.DECIDING
    elif sub.kind == Kind.DATASET:
        nxt = S.FINETUNING
    else:
        nxt = S.EVALUATING
    return StageOutcome(nxt, values)


def _stage_finetune(runner: StageRunner, sub: Submission, storage: Storage) -> StageOutcome:
    """One fine-tune; with the policy's sweep, one per run (labelled in the progress), listed in SWEEP_MANIFEST."""
    from dataclasses import asdict

    from evaluation.files import atomic_write_text
    from evaluation.policy import training_runs
    from evaluation.sweep import labelled

    gate = _gate()
    insp = gate.Inspection.from_dict(sub.inspection)
    runtime = runner.settings.runtime()
    workdir = storage.workdir(sub.id, "finetune")
    sweep = _sweep(sub, runtime)
    runs = training_runs(sweep, _training(sub))
    if not sweep:
        (workdir / SWEEP_MANIFEST).unlink(missing_ok=True)  # an earlier attempt's, under a policy since edited
        adapter_dir = gate.finetune_submission(insp, sub.base_name, runs[0], workdir=workdir, progress=runner.progress,
                                               runtime=runtime)
        return StageOutcome(S.EVALUATING, {"adapter_path": _stored(storage, adapter_dir)})
    manifest = []
    for i, cfg in enumerate(runs, 1):
        adapter_dir = gate.finetune_submission(insp, sub.base_name, cfg, workdir=workdir / f"run-{i}",
                                               progress=labelled(runner.progress, "fine-tune", i, len(runs), cfg),
                                               runtime=runtime)
        manifest.append({"training": asdict(cfg), "adapter_path": _stored(storage, adapter_dir)})
    atomic_write_text(workdir / SWEEP_MANIFEST, json.dumps(manifest))
    return StageOutcome(S.EVALUATING, {"adapter_path": manifest[0]["adapter_path"]})


def _stage_evaluate(runner: StageRunner, sub: Submission, storage: Storage) -> StageOutcome:
    """The candidate against its base (and the benign control); for a sweep, each run's adapter in turn."""
    from evaluation.finetune import TrainingConfig
    from evaluation.sweep import labelled

    gate = _gate()
    if not sub.adapter_path:
        raise RuntimeError("no adapter to evaluate (inspection recorded none)")
    started = time.monotonic()
    insp = gate.Inspection.from_dict(sub.inspection)
    runtime = runner.settings.runtime()
    manifest = _sweep_manifest(storage, sub) if sub.kind == Kind.DATASET else None
    if manifest is None:
        ev = gate.evaluate_candidate(insp, sub.base_name, _resolve(storage, sub.adapter_path), _training(sub),
                                     progress=runner.progress, runtime=runtime)
        data = ev.to_dict()
        first, fingerprint, metrics = data, _adapter_fingerprint(_resolve(storage, sub.adapter_path)), data.get("metrics")
    else:
        runs = []
        for i, run in enumerate(manifest, 1):
            cfg = TrainingConfig.from_overrides(run["training"])
            adapter = _resolve(storage, run["adapter_path"])
            ev = gate.evaluate_candidate(insp, sub.base_name, adapter, cfg,
                                         progress=labelled(runner.progress, "evaluate", i, len(manifest), cfg),
                                         runtime=runtime)
            runs.append({"training": run["training"], "adapter_fingerprint": _adapter_fingerprint(adapter),
                         "evaluation": ev.to_dict()})
        # One row holds every run; the decide stage picks the worst. Each run's adapter fingerprint is in its entry.
        data = {"sweep": runs}
        first, fingerprint, metrics = runs[0]["evaluation"], None, {"sweep": [r["evaluation"]["metrics"] for r in runs]}
    duration = time.monotonic() - started

    def save(session: Session) -> None:
        base = first.get("base") or {}
        judge = first.get("judge") or {}
        session.add(
            EvaluationRun(
                submission_id=sub.id, data=data, duration_seconds=duration,
                model_fingerprint=fingerprint, base_fingerprint=base.get("fingerprint"),
                suite_hashes={k: v.get("hash") for k, v in (first.get("suites") or {}).items() if isinstance(v, dict)},
                judge=f"{judge.get('name')}@{judge.get('version')}" if judge else None,
                decoding=first.get("decoding") or {}, metrics=metrics or {},
            )
        )

    return StageOutcome(S.DECIDING, save=save)


def _adapter_fingerprint(adapter_dir: Path) -> str | None:
    """The evaluated adapter's fingerprint (the one the candidate-results cache is keyed by), or None when
    its files are gone."""
    from evaluation.adapters import adapter_fingerprint

    try:
        return adapter_fingerprint(adapter_dir)
    except OSError:
        return None


def _stage_decide(runner: StageRunner, sub: Submission, storage: Storage) -> StageOutcome:
    gate = _gate()
    insp = gate.Inspection.from_dict(sub.inspection)
    with session_scope(runner.url) as s:
        ev_row = s.scalar(select(EvaluationRun).where(EvaluationRun.submission_id == sub.id))
        ev_data = ev_row.data if ev_row is not None else None
    runner.check()
    result = _decide(gate, insp, ev_data, sub, runner.settings.runtime())
    report = result.report
    verdict = report.get("verdict") or {}
    decision = verdict.get("decision")
    if decision not in set(Decision):
        raise RuntimeError(f"the gate returned no valid decision: {decision!r}")
    samples: list[SampleRecord] = list(result.samples or [])
    repair = _repair_after(sub, verdict, runner.settings.runtime(), early=ev_data is None)
    if repair is not None:
        report["repair"] = repair

    def save(session: Session) -> None:
        policy_id = _policy_snapshot(session, verdict.get("policy") or sub.policy_name, verdict.get("policy_hash"),
                                     runner.settings.runtime())
        session.add(
            VerdictRecord(
                submission_id=sub.id, decision=decision, reasons=list(verdict.get("reasons") or []),
                policy_name=sub.policy_name, policy_id=policy_id, report=report,
            )
        )
        for record in samples:
            smp: SampleRecord = clean(record)
            session.add(
                Sample(
                    submission_id=sub.id, suite=smp["suite"], item_id=smp["item_id"], prompt=smp["prompt"],
                    category=smp["category"], base_response=smp["base_response"],
                    candidate_response=smp["candidate_response"], base_label=smp["base_label"],
                    candidate_label=smp["candidate_label"],
                )
            )

    runs = report.get("sweep") or []
    values = {
        "decision": decision,
        "review_state": ReviewState.PENDING.value if decision == Decision.REVIEW else None,
        "progress_message": f"verdict: {decision}" + (f" (the worst of {len(runs)} fine-tunes)" if runs else ""),
    }
    if repair is not None and repair["status"] == "pending":
        values["progress_message"] = f"verdict: {decision}; repairing (safety data mixed into the fine-tune)"
        return StageOutcome(S.REPAIRING, values, save)
    return StageOutcome(S.DONE, values, save)


def _decide(gate: Any, insp: Any, ev_data: dict | None, sub: Submission, runtime: Runtime) -> Any:
    """The verdict of the stored evaluation: of each run of a sweep, keeping the worst (evaluation/sweep.py), or of
    the one evaluation; an adapter's report says when the policy's sweep did not apply to it."""
    from evaluation import sweep as sweeps
    from evaluation.finetune import TrainingConfig

    if ev_data is not None and "sweep" in ev_data:
        runs = [TrainingConfig.from_overrides(run["training"]) for run in ev_data["sweep"]]
        results = [gate.decide_submission(insp, gate.Evaluation.from_dict(run["evaluation"]), sub.policy_name,
                                          training=cfg, runtime=runtime)
                   for run, cfg in zip(ev_data["sweep"], runs, strict=True)]
        return sweeps.keep_worst(results, runs, [run["adapter_fingerprint"] for run in ev_data["sweep"]])
    ev = gate.Evaluation.from_dict(ev_data) if ev_data is not None else None
    result = gate.decide_submission(insp, ev, sub.policy_name, training=_training(sub), runtime=runtime)
    sweep = _sweep(sub, runtime) if sub.kind == Kind.ADAPTER and ev is not None else ()
    if sweep:
        sweeps.note_not_applied(result.report, len(sweep))
    return result


def _repair_after(sub: Submission, verdict: dict, runtime: Runtime, *, early: bool = False) -> dict | None:
    """The report's ``repair`` object as the decide stage leaves it: ``{"status": "pending", "mode"}`` when the
    repair stage is to run (a safety block or review, a mode other than off); else why not, when the
    submitter asked for a repair; else None. A request the policy no longer allows (it changed since the
    upload was checked) is recorded as refused: the verdict stands either way. ``early``: the verdict came from
    screening before any fine-tune, which is never repaired (skipped, as ``ftgate check`` records it)."""
    from evaluation.errors import InputRejected
    from evaluation.policy import load_policy
    from evaluation.repair import EARLY_BLOCK_NOT_REPAIRED, repair_mode, safety_findings

    policy = load_policy(sub.policy_name, runtime=runtime)
    try:
        mode = repair_mode(sub.repair, policy.repair, policy.name)
    except InputRejected as e:
        return {"status": "refused", "mode": sub.repair, "reason": e.reason}
    if mode == "off":
        return {"status": "off", "mode": mode, "reason": "repair is off"} if sub.repair else None
    if early:
        return {"status": "skipped", "mode": mode, "reason": EARLY_BLOCK_NOT_REPAIRED}
    if not safety_findings(verdict):
        return {"status": "not_needed", "mode": mode, "reason": f"the verdict is {verdict.get('decision')} with "
                "no safety block or review to repair"} if sub.repair else None
    return {"status": "pending", "mode": mode}


REPAIRED_ADAPTER_FILE = "repaired-adapter.zip"


def _kept_training(sub: Submission, report: dict):
    """The recipe of the verdict's run (a sweep's worst run, else the submission's own); None for an adapter."""
    from dataclasses import fields

    from evaluation.finetune import TrainingConfig

    training = _training(sub)
    recorded = report.get("training") if training is not None else None
    if not isinstance(recorded, dict):
        return training
    names = {f.name for f in fields(TrainingConfig)}
    return TrainingConfig.from_overrides({k: v for k, v in recorded.items() if k in names})


def _stage_repair(runner: StageRunner, sub: Submission, storage: Storage) -> StageOutcome:
    """Make and judge the repaired adapter (gate.repair_submission) and put it in the verdict's report, its
    adapter zipped into the submission's storage (where retention finds it). The original verdict is not
    touched, and a repair that fails leaves the reason in the report, not a failed submission."""
    gate = _gate()
    insp = gate.Inspection.from_dict(sub.inspection)
    with session_scope(runner.url) as s:
        row = s.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sub.id))
        if row is None:
            raise RuntimeError("no verdict to repair")
        verdict, mode = dict(row.report.get("verdict") or {}), (row.report.get("repair") or {}).get("mode", "offer")
        kept = _kept_training(sub, row.report)
    try:
        repair = gate.repair_submission(insp, sub.base_name, verdict, kept, policy=sub.policy_name,
                                        mode=mode, progress=runner.progress, runtime=runner.settings.runtime())
        if repair.get("status") == "done":
            repair["adapter_path"] = _stored(storage, _zip_adapter(Path(repair["adapter_path"]),
                                                                   storage.workdir(sub.id, "repair")))
    except (ClaimLost, *TRANSIENT):  # type: ignore[misc]  # mypy can't type a starred tuple of exception classes
        raise
    except Exception as e:  # the verdict stands: the repair's failure is its own
        log.exception("repair of %s failed", sub.id)
        repair = {"status": "failed", "mode": mode,
                  "reason": without_internal_paths(f"{type(e).__name__}: {e}")[:2000]}
    runner.check()

    def save(session: Session) -> None:
        row = session.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sub.id))
        if row is None:  # read above in this stage; only a deleted submission loses it
            raise RuntimeError("the verdict to attach the repair to is gone")
        row.report = {**row.report, "repair": clean(repair)}  # a new object: the JSON column sees the change

    message = f"repaired adapter: {repair['decision']}" if repair.get("status") == "done" else f"repair {repair['status']}"
    return StageOutcome(S.DONE, {"progress_message": message}, save)


def _zip_adapter(adapter_dir: Path, dest_dir: Path) -> Path:
    """The adapter's files (the folder the gate made: regular files only) as one zip in ``dest_dir``."""
    import zipfile

    out = dest_dir / REPAIRED_ADAPTER_FILE
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(adapter_dir.iterdir()):
            if f.is_file() and not f.is_symlink():
                zf.write(f, arcname=f.name)
    os.replace(tmp, out)
    return out


def _policy_snapshot(session, name: str, content_hash: str | None, runtime: Runtime) -> int | None:
    """The policy a verdict used, stored once per (name, content hash)."""
    if not content_hash:
        return None
    row = session.scalar(select(PolicyRecord).where(PolicyRecord.name == name, PolicyRecord.content_hash == content_hash))
    if row is None:
        try:
            from evaluation.policy import load_policy
            from services.catalog import jsonable

            body = jsonable(load_policy(name, runtime=runtime))
        except Exception:
            body = {}
        try:
            with session.begin_nested():
                row = PolicyRecord(name=name, content_hash=content_hash, body=body if isinstance(body, dict) else {})
                session.add(row)
                session.flush()
        except Exception:  # a concurrent decide stored it first
            row = session.scalar(select(PolicyRecord).where(PolicyRecord.name == name, PolicyRecord.content_hash == content_hash))
    return row.id if row is not None else None


def _register_db_bases(url: str) -> None:
    """Bases an operator registered through the API become known to this worker's evaluation registry."""
    try:
        import dataclasses

        from evaluation.bases import BaseSpec, list_bases, register_base
        from models import BaseModelRecord

        known = {b.name for b in list_bases()}
        fields = {f.name for f in dataclasses.fields(BaseSpec)}
        with session_scope(url) as s:
            for row in s.scalars(select(BaseModelRecord).where(BaseModelRecord.enabled.is_(True))):
                if row.name not in known:
                    extra = {k: v for k, v in (row.config or {}).items() if k in fields}
                    register_base(BaseSpec(name=row.name, description=row.description, source=row.source, **extra))
    except Exception as e:  # pragma: no cover - a bad row must not stop other submissions
        log.warning("could not register the database's bases: %s", e)


STAGES: dict[Stage, Callable[[StageRunner, Submission, Storage], StageOutcome]] = {
    Stage.INSPECT: _stage_inspect,
    Stage.FINETUNE: _stage_finetune,
    Stage.EVALUATE: _stage_evaluate,
    Stage.DECIDE: _stage_decide,
    Stage.REPAIR: _stage_repair,
}
NEXT_STAGE = {S.FINETUNING: Stage.FINETUNE, S.EVALUATING: Stage.EVALUATE, S.DECIDING: Stage.DECIDE,
              S.REPAIRING: Stage.REPAIR}


def execute_stage(task: Task | None, stage: Stage, submission_id: str, settings: Settings | None = None) -> str:
    """Run one stage of one submission. Returns what happened (for logs and tests)."""
    settings = settings or worker_settings()
    url = settings.resolved_database_url
    worker = worker_name()
    storage = Storage(settings.resolved_storage_dir)
    task_id = getattr(getattr(task, "request", None), "id", None)
    with session_scope(url) as s:
        c = lifecycle.claim(s, submission_id, stage, worker=worker, task_id=task_id,
                            lost_worker_seconds=settings.lost_worker_seconds)
        sub = s.get(Submission, submission_id) if c else None
        if c is None or sub is None:
            return "skipped"  # already done, running elsewhere, cancelled, or unknown: nothing to do twice
        s.expunge(sub)
    log.info("%s %s: claimed (attempt %d) on %s", stage.value, submission_id, c.attempt, worker)
    from evaluation.errors import InputRejected

    _register_db_bases(url)
    runner = StageRunner(settings, c, sub.kind, worker)
    try:
        with runner:
            outcome = STAGES[stage](runner, sub, storage)
            runner.check()
    except ClaimLost as e:
        with session_scope(url) as s:
            lifecycle.abandon(s, c, str(e))
        return "abandoned"
    except InputRejected as e:
        with session_scope(url) as s:
            lifecycle.reject(s, c, without_internal_paths(e.reason), e.code, worker=worker)
        return "rejected"
    except TRANSIENT as e:
        retries = getattr(getattr(task, "request", None), "retries", 0) or 0
        max_retries = getattr(task, "max_retries", 0) or 0
        reason = without_internal_paths(f"{stage.value}: {type(e).__name__}: {e}")
        try:
            with session_scope(url) as s:
                if task is not None and retries < max_retries:
                    lifecycle.release(s, c, StageRunStatus.RETRYING, reason)
                else:
                    lifecycle.fail(s, c, f"{reason} (after {retries} retries)", worker=worker, code="transient_error")
        except Exception:  # the database itself is away: the reaper will release the claim
            log.exception("could not record the transient error of %s", submission_id)
        if task is not None and retries < max_retries:
            raise task.retry(exc=e, countdown=min(60, 5 * 2**retries)) from e
        return "failed"
    except Exception as e:
        log.exception("%s %s failed", stage.value, submission_id)
        with session_scope(url) as s:
            lifecycle.fail(s, c, without_internal_paths(f"{stage.value} failed: {type(e).__name__}: {e}")[:4000],
                           worker=worker)
        return "failed"

    with session_scope(url) as s:
        ok = lifecycle.complete_stage(s, c, outcome.next_status, worker=worker, values=outcome.values,
                                      kind=sub.kind)
        if not ok:
            s.rollback()
            lifecycle.abandon(s, c, "the claim was taken away before the result was saved; result discarded")
            return "abandoned"
        if outcome.save is not None:
            outcome.save(s)
    nxt = outcome.next_status
    log.info("%s %s: -> %s", stage.value, submission_id, nxt.value)
    if nxt in NEXT_STAGE:
        enqueue_after_commit(settings, submission_id, NEXT_STAGE[nxt])
    return nxt.value


# An absolute path of two or more parts (POSIX or Windows): what a stage's exception text may carry. It
# starts where no name does (not inside a relative path such as an archive member 'adapter/sub/x' that a
# rejection names, nor a URL's '//').
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~\-/\\])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"():,]+[/\\])+([^\s/\\'\"():,]*)")


def without_internal_paths(text: str) -> str:
    """A stage's error text as the submitter sees it: every absolute path cut to its last part, so storage
    layout, work dirs, user names and library locations stay internal (the worker's log keeps the full text)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "…", text)


# ----------------------------------------------------------------------------------------------------------
# shared=False: registered on the worker's app only; a sender's app (services.queue.make_celery) made later
# in the same process must stay without tasks (a shared task is added to every app created after it).
_TASK_OPTS = {"bind": True, "acks_late": True, "reject_on_worker_lost": True, "max_retries": 5, "shared": False}


@celery_app.task(name=TASK_NAMES[Stage.INSPECT], **_TASK_OPTS)
def inspect_task(self, submission_id: str) -> str:
    return execute_stage(self, Stage.INSPECT, submission_id)


@celery_app.task(name=TASK_NAMES[Stage.FINETUNE], **_TASK_OPTS)
def finetune_task(self, submission_id: str) -> str:
    return execute_stage(self, Stage.FINETUNE, submission_id)


@celery_app.task(name=TASK_NAMES[Stage.EVALUATE], **_TASK_OPTS)
def evaluate_task(self, submission_id: str) -> str:
    return execute_stage(self, Stage.EVALUATE, submission_id)


@celery_app.task(name=TASK_NAMES[Stage.DECIDE], **_TASK_OPTS)
def decide_task(self, submission_id: str) -> str:
    return execute_stage(self, Stage.DECIDE, submission_id)


@celery_app.task(name=TASK_NAMES[Stage.REPAIR], **_TASK_OPTS)
def repair_task(self, submission_id: str) -> str:
    return execute_stage(self, Stage.REPAIR, submission_id)


__all__ = ["ClaimLost", "Retry", "StageOutcome", "execute_stage", "without_internal_paths"]
