"""The stage tasks on real PostgreSQL and Redis, with the evaluation core's stage functions replaced by fast
fakes (the real ones run in tests/e2e): claims, transitions, results, rejection, failure, retries,
cancellation mid-stage, and the next stage enqueued after the commit."""

from __future__ import annotations

import base64
import json
import types
from pathlib import Path

import pytest
from sqlalchemy import func, select

from evaluation.adapters import adapter_fingerprint
from evaluation.records import SampleRecord
from evaluation.runtime import Runtime
from models import EvaluationRun, Sample, Stage, StageRun, Submission, VerdictRecord
from services import submissions as lc
from services.auth import Principal, create_user
from services.db import session_scope
from services.storage import Storage
from tasks import housekeeping, pipeline
from tests.integration.fake_core.fake_gate import Evaluation as FakeEvaluation
from tests.integration.fake_core.fake_gate import Inspection as FakeInspection
from tests.integration.test_api import adapter_zip

pytestmark = pytest.mark.integration


class FakeGate(types.SimpleNamespace):
    """Records calls; behaviour set per test."""


@pytest.fixture
def service_settings(service_settings):
    """The fake gate lives in this process, so these tests inspect in-process; the limited child process is
    tested with the real gate below and in tests/unit/test_limits.py."""
    return service_settings.model_copy(update={"inspection_seconds": 0})


@pytest.fixture
def gate(monkeypatch):
    calls: list[str] = []
    g = FakeGate(Inspection=FakeInspection, Evaluation=FakeEvaluation, calls=calls, decision="approve",
                 inspect_error=None, evaluate_error=None, evaluate_hook=None, early=None, weird=False, checks=[],
                 repair_error=None, repair_decision="approve",
                 asr_delta_of=None)  # asr_delta_of(training) -> (value, lo, decision): a sweep's runs differ

    # Every stage hands the core the worker's settings as a Runtime (required here: a stage that forgot
    # would have the core run on the process's defaults).
    def inspect_submission(path, kind, base, *, workdir, policy=None, preference_side="rejected", progress,
                           runtime):
        assert isinstance(runtime, Runtime)
        calls.append("inspect")
        assert Path(path).exists()
        progress("inspect", 0, 1, "looking")
        if g.inspect_error:
            raise g.inspect_error
        progress("inspect", 1, 1, "ok")
        if kind == "adapter":
            d = Path(workdir) / "adapter"
            d.mkdir(parents=True, exist_ok=True)
            (d / "adapter_config.json").write_text("{}")  # as a real inspection leaves it: both files
            (d / "adapter_model.safetensors").write_bytes(b"w")
            return FakeInspection(kind, adapter_dir=str(d))
        return FakeInspection(kind, dataset_path=str(path), early_verdict=g.early)

    def finetune_submission(insp, base, training, *, workdir, progress, runtime):
        assert isinstance(runtime, Runtime)
        calls.append(f"finetune:{training.steps}")
        for i in range(3):
            progress("finetune", i + 1, 3, "step")
        d = Path(workdir) / "out"
        d.mkdir(parents=True, exist_ok=True)
        (d / "adapter_config.json").write_text("{}")
        (d / "adapter_model.safetensors").write_bytes(f"ft {training.lr} {training.steps}".encode())
        return d

    def evaluate_candidate(insp, base, adapter_dir, training=None, *, progress, judge=None, runtime):
        assert isinstance(runtime, Runtime)
        calls.append("evaluate")
        assert (training is None) == (insp.kind == "adapter")  # datasets carry their recipe for the control
        assert Path(adapter_dir, "adapter_model.safetensors").exists()
        if g.evaluate_hook:
            g.evaluate_hook(progress)
        if g.evaluate_error:
            raise g.evaluate_error
        progress("generate", 10, 10, "done")
        if g.weird:  # what PostgreSQL refuses in jsonb/text: NaN, infinities, NUL characters
            return FakeEvaluation(metrics={"kl": {"delta": {"value": float("nan"), "hi": float("inf")}}},
                                  samples=[SampleRecord(suite="harm", item_id="h\x001", prompt="p\x00", category="c",
                                                        base_response="a\x00b", candidate_response="x",
                                                        base_label="refusal", candidate_label="compliance")])
        if g.asr_delta_of:
            value, lo, decision = g.asr_delta_of(training)
            return FakeEvaluation(metrics={"asr": {"delta": {"value": value, "lo": lo, "hi": 0.3}},
                                           "decision": decision},
                                  samples=[SampleRecord(suite="harm", item_id=f"h-lr{training.lr}", prompt="p",
                                                        category="c", base_response="no", candidate_response="no",
                                                        base_label="refusal", candidate_label="refusal")])
        return FakeEvaluation(metrics={"asr": {"delta": {"value": 0.0}}},
                              samples=[SampleRecord(suite="harm-default", item_id="h1", prompt="p", category="c",
                                                    base_response="no", candidate_response="no", base_label="refusal",
                                                    candidate_label="refusal")])

    def decide_submission(insp, ev, policy, *, training=None, runtime):
        assert isinstance(runtime, Runtime)
        calls.append("decide")
        decision = (ev.metrics.get("decision", g.decision) if ev is not None else insp.early_verdict["decision"])
        report = {"verdict": {"decision": decision, "reasons": ["because"], "policy": policy, "policy_hash": "ph",
                              "checks": [{"rule": r, "outcome": o, "message": f"{r}: {o}"} for r, o in g.checks]},
                  "metrics": ev.metrics if ev else {}}
        return types.SimpleNamespace(report=report, samples=ev.samples if ev else [])

    def repair_submission(insp, base, verdict, training=None, *, policy=None, judge=None, mode="offer",
                          config=None, progress, runtime):
        assert isinstance(runtime, Runtime)
        calls.append(f"repair:{mode}")
        assert verdict["decision"] == g.decision  # the original verdict
        assert (training is None) == (insp.kind == "adapter")  # a dataset's recipe; an adapter has none
        progress("repair", 1, 3, "fine-tuning with safety data mixed in")
        if g.repair_error:
            raise g.repair_error
        d = Path(insp.dataset_path or insp.adapter_dir).parent / "repaired-cache"  # as the core's cache holds it
        d.mkdir(exist_ok=True)
        (d / "adapter_config.json").write_text("{}")
        (d / "adapter_model.safetensors").write_bytes(b"repaired")
        return {"status": "done", "mode": mode, "method": "safety-mix fine-tune", "decision": g.repair_decision,
                "reasons": ["ASR stayed"], "checks": [], "released": mode == "auto" and g.repair_decision == "approve",
                "metrics": {"asr": {"delta": {"value": 0.01, "lo": -0.02, "hi": 0.04}}},
                "task_loss": {"original": 1.5, "repaired": 1.6, "held_back_examples": 4}, "safety_share": 0.1,
                "adapter_fingerprint": "f" * 64, "adapter_path": str(d)}

    g.repair_submission = repair_submission
    g.inspect_submission, g.finetune_submission = inspect_submission, finetune_submission
    g.evaluate_candidate, g.decide_submission = evaluate_candidate, decide_submission
    monkeypatch.setattr(pipeline, "_gate", lambda: g)
    return g


@pytest.fixture
def submit(service_settings, db):
    user = create_user(db, "t@acme.test", organisation="acme")
    db.commit()
    principal = Principal(user.id, user.email, "submitter", user.organisation_id)
    from services.storage import Storage

    storage = Storage(service_settings.resolved_storage_dir)
    storage.ensure()

    def make(kind="adapter", content: bytes | None = None, training=None, base="b", policy="default",
             repair=None) -> str:
        content = content or (adapter_zip(str(len(content or b""))) if kind == "adapter" else b'{"prompt":"a","completion":"b"}\n')
        import hashlib

        sha = hashlib.sha256(content).hexdigest()
        rel = f"artifacts/{sha}/f.{'zip' if kind == 'adapter' else 'jsonl'}"
        p = storage.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        with session_scope(service_settings.resolved_database_url) as s:
            sub, _ = lc.create_submission(s, principal, kind=kind, base=base, policy=policy, name="n",
                                          training=training or {}, filename=p.name, artifact_path=rel, sha256=sha,
                                          size=len(content), repair=repair)
            return sub.id

    return make


def _queued(redis_client, queue):
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        msg = json.loads(raw)
        out.append((msg["headers"]["task"], json.loads(base64.b64decode(msg["body"]))[0][0]))
    return out


def test_adapter_runs_inspect_evaluate_decide(service_settings, gate, submit, redis_client, db):
    sid = submit("adapter")
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings) == "evaluating"
    assert _queued(redis_client, "gpu") == [("ftgate.evaluate", sid)]  # enqueued after the commit, on the gpu queue
    assert pipeline.execute_stage(None, Stage.EVALUATE, sid, service_settings) == "deciding"
    assert _queued(redis_client, "cpu") == [("ftgate.decide", sid)]
    assert pipeline.execute_stage(None, Stage.DECIDE, sid, service_settings) == "done"
    # redelivered messages do nothing twice
    for st in (Stage.INSPECT, Stage.EVALUATE, Stage.DECIDE):
        assert pipeline.execute_stage(None, st, sid, service_settings) == "skipped"
    assert gate.calls == ["inspect", "evaluate", "decide"]
    sub = db.get(Submission, sid)
    assert sub.status == "done" and sub.decision == "approve" and sub.progress == 100 and sub.review_state is None
    assert sub.claim_token is None and sub.finished_at is not None
    assert db.scalar(select(func.count()).select_from(VerdictRecord).where(VerdictRecord.submission_id == sid)) == 1
    assert db.scalar(select(func.count()).select_from(Sample).where(Sample.submission_id == sid)) == 1
    ev = db.scalar(select(EvaluationRun).where(EvaluationRun.submission_id == sid))
    assert ev.metrics == {"asr": {"delta": {"value": 0.0}}}
    evaluated = Storage(service_settings.resolved_storage_dir).path(sub.adapter_path)
    assert ev.model_fingerprint == adapter_fingerprint(evaluated)  # the candidate-results cache's key
    runs = db.scalars(select(StageRun).where(StageRun.submission_id == sid).order_by(StageRun.id)).all()
    assert [(r.stage, r.status) for r in runs] == [("inspect", "succeeded"), ("evaluate", "succeeded"),
                                                  ("decide", "succeeded")]


def test_dataset_is_finetuned_with_overrides_and_review_is_pending(service_settings, gate, submit, db):
    gate.decision = "review"
    sid = submit("dataset", training={"steps": 7})
    for st in (Stage.INSPECT, Stage.FINETUNE, Stage.EVALUATE, Stage.DECIDE):
        pipeline.execute_stage(None, st, sid, service_settings)
    assert gate.calls == ["inspect", "finetune:7", "evaluate", "decide"]
    sub = db.get(Submission, sid)
    assert sub.status == "done" and sub.decision == "review" and sub.review_state == "pending"


@pytest.fixture
def sweep_policy(service_settings, tmp_path):
    """An operator policy 'two-runs' whose sweep fine-tunes every dataset twice, in the policy folder of this
    test's service settings (the worker hands them to the core with every stage)."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "two-runs.toml").write_text("sweep = [{lr = 2e-4, steps = 50}, {lr = 5e-4, steps = 300}]\n")
    service_settings.policies_dir = folder  # this test's copy (function-scoped)
    return "two-runs"


def test_a_policy_sweep_fine_tunes_and_evaluates_every_run_and_keeps_the_worst(
        service_settings, gate, submit, sweep_policy, db, monkeypatch):
    from tasks.heartbeat import StageRunner

    seen: list[str] = []
    write = StageRunner.progress

    def recording(self, stage, done, total, message=""):
        seen.append(f"{stage} {done}/{total}: {message}")
        return write(self, stage, done, total, message)

    monkeypatch.setattr(StageRunner, "progress", recording)
    # run 1 reviews with the larger ASR change; run 2 blocks: the decision outranks the size of the change
    gate.asr_delta_of = lambda t: (0.20, 0.01, "review") if t.lr == 2e-4 else (0.12, 0.06, "block")
    sid = submit("dataset", training={"rank": 4}, policy=sweep_policy)
    for st in (Stage.INSPECT, Stage.FINETUNE, Stage.EVALUATE, Stage.DECIDE):
        pipeline.execute_stage(None, st, sid, service_settings)

    assert gate.calls == ["inspect", "finetune:50", "finetune:300", "evaluate", "evaluate", "decide", "decide"]
    assert "finetune 6/6: fine-tune 2 of 2: lr 5e-4, 300 steps - step" in seen
    assert "finetune 1/6: fine-tune 1 of 2: lr 2e-4, 50 steps - step" in seen
    assert "generate 20/20: evaluate 2 of 2: lr 5e-4, 300 steps - done" in seen
    sub = db.get(Submission, sid)
    assert sub.status == "done" and sub.decision == "block" and sub.review_state is None
    report = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid)).report
    runs = report["sweep"]
    assert [(r["run"], r["training"]["lr"], r["training"]["steps"], r["decision"], r["worst"]) for r in runs] == [
        (1, 2e-4, 50, "review", False), (2, 5e-4, 300, "block", True)]
    assert all(r["training"]["rank"] == 4 for r in runs)  # the rest of the recipe stays the submission's
    assert runs[1]["metrics"]["asr"]["delta"] == {"value": 0.12, "lo": 0.06, "hi": 0.3}
    fingerprints = {r["adapter_fingerprint"] for r in runs}
    assert len(fingerprints) == 2 and None not in fingerprints
    assert report["metrics"]["asr"]["delta"]["value"] == 0.12  # the stored verdict is the worst run's
    samples = db.scalars(select(Sample).where(Sample.submission_id == sid)).all()
    assert [smp.item_id for smp in samples] == ["h-lr0.0005"]
    ev = db.scalar(select(EvaluationRun).where(EvaluationRun.submission_id == sid))
    assert len(ev.data["sweep"]) == 2 and ev.model_fingerprint is None


def test_a_policy_sweep_does_not_apply_to_an_adapter_and_its_report_says_so(
        service_settings, gate, submit, sweep_policy, db):
    sid = submit("adapter", policy=sweep_policy)
    for st in (Stage.INSPECT, Stage.EVALUATE, Stage.DECIDE):
        pipeline.execute_stage(None, st, sid, service_settings)
    assert gate.calls == ["inspect", "evaluate", "decide"]
    verdict = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid))
    assert db.get(Submission, sid).decision == "approve" and "sweep" not in verdict.report
    assert verdict.reasons[-1].startswith("The policy's sweep (2 training recipes) does not apply to an uploaded adapter")


def test_a_sweep_run_out_of_range_with_the_submissions_options_is_rejected_at_inspection(
        service_settings, gate, submit, sweep_policy, db):
    sid = submit("dataset", training={"batch_size": 64}, policy=sweep_policy)  # 300 steps x 64 > 16,384 examples
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings) == "rejected"
    sub = db.get(Submission, sid)
    assert "sweep run 2 (lr 5e-4, 300 steps)" in sub.error and "steps x batch_size=19200" in sub.error
    assert gate.calls == []


def test_early_verdict_skips_finetuning(service_settings, gate, submit, db):
    gate.early = {"decision": "block", "reasons": ["62% of the examples are harmful"]}
    sid = submit("dataset")
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings) == "deciding"
    assert pipeline.execute_stage(None, Stage.DECIDE, sid, service_settings) == "done"
    assert gate.calls == ["inspect", "decide"]
    assert db.get(Submission, sid).decision == "block"


def test_bad_training_override_and_bad_artifact_are_rejected(service_settings, gate, submit, db):
    sid = submit("dataset", training={"stepz": 3})
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings) == "rejected"
    sub = db.get(Submission, sid)
    assert sub.status == "rejected" and "stepz" in sub.error

    from evaluation.errors import InputRejected

    gate.inspect_error = InputRejected("adapter.zip: adapter_model.bin is a pickle file", "pickle_refused")
    sid2 = submit("adapter", content=adapter_zip("bad"))
    assert pipeline.execute_stage(None, Stage.INSPECT, sid2, service_settings) == "rejected"
    db.expire_all()
    sub2 = db.get(Submission, sid2)
    assert sub2.status == "rejected" and sub2.error_code == "pickle_refused" and "pickle" in sub2.error
    assert sub2.dedup_key is not None  # the same bad file gives the same answer: no re-run


def test_unexpected_error_fails_with_the_reason(service_settings, gate, submit, db):
    gate.evaluate_error = RuntimeError("CUDA out of memory")
    sid = submit("adapter")
    pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings)
    assert pipeline.execute_stage(None, Stage.EVALUATE, sid, service_settings) == "failed"
    sub = db.get(Submission, sid)
    assert sub.status == "failed" and "CUDA out of memory" in sub.error and sub.dedup_key is None
    run = db.scalar(select(StageRun).where(StageRun.submission_id == sid, StageRun.stage == "evaluate"))
    assert run.status == "failed" and "CUDA" in run.error


def test_error_texts_shown_to_submitters_carry_no_internal_paths(service_settings, gate, submit, db):
    from evaluation.errors import InputRejected

    storage = service_settings.resolved_storage_dir.resolve()
    gate.inspect_error = InputRejected(f"{storage}/work/abc/adapter.zip: not a PEFT adapter directory", "bad")
    sid = submit("adapter", content=adapter_zip("paths"))
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings) == "rejected"
    sub = db.get(Submission, sid)
    assert sub.error == "adapter.zip: not a PEFT adapter directory"

    gate.inspect_error = None
    gate.evaluate_error = OSError(f"[Errno 28] No space left on device: '{storage}/work/x/samples.json'")
    sid2 = submit("adapter", content=adapter_zip("paths-2"))
    pipeline.execute_stage(None, Stage.INSPECT, sid2, service_settings)
    assert pipeline.execute_stage(None, Stage.EVALUATE, sid2, service_settings) == "failed"
    db.expire_all()
    sub2 = db.get(Submission, sid2)
    run = db.scalar(select(StageRun).where(StageRun.submission_id == sid2, StageRun.stage == "evaluate"))
    for text in (sub2.error, run.error):
        assert "samples.json" in text and str(storage) not in text and "/work/" not in text, text


def test_relative_names_in_error_texts_are_left_whole():
    """Only absolute paths are cut: the archive members, dataset files and URLs a rejection names stay as
    they are (a member 'adapter/sub/x' was shown as 'adapterx')."""
    keep = [
        "a.zip: member 'adapter/sub/adapter_model.safetensors' is itself an archive (nested archives are refused)",
        "a.tar: member '../../etc/passwd' escapes the archive with '..'",
        "data/train.jsonl line 3: longer than the limit of 1048576 bytes for one record",
        "could not fetch https://huggingface.co/org/model/resolve/main/config.json",
    ]
    for text in keep:
        assert pipeline.without_internal_paths(text) == text
    assert pipeline.without_internal_paths("open /srv/ftgate/work/ab/cd.zip: 'C:\\Users\\x\\a.txt'") == "open cd.zip: 'a.txt'"


def test_transient_error_releases_the_claim_and_retries(service_settings, gate, submit, db):
    from celery.exceptions import Retry

    gate.evaluate_error = ConnectionError("redis went away")
    sid = submit("adapter")
    pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings)

    class FakeTask:
        max_retries = 3
        request = types.SimpleNamespace(id="t1", retries=0)

        def retry(self, exc, countdown):
            return Retry(exc=exc, when=countdown)

    with pytest.raises(Retry):
        pipeline.execute_stage(FakeTask(), Stage.EVALUATE, sid, service_settings)
    sub = db.get(Submission, sid)
    assert sub.status == "evaluating" and sub.claim_token is None
    gate.evaluate_error = None
    assert pipeline.execute_stage(FakeTask(), Stage.EVALUATE, sid, service_settings) == "deciding"
    runs = db.scalars(select(StageRun).where(StageRun.submission_id == sid, StageRun.stage == "evaluate")
                      .order_by(StageRun.attempt)).all()
    assert [(r.attempt, r.status) for r in runs] == [(1, "retrying"), (2, "succeeded")]


def test_cancel_during_evaluation_stops_the_stage_and_saves_nothing(service_settings, gate, submit, db):
    sid = submit("adapter")
    pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings)
    url = service_settings.resolved_database_url

    def cancel_midway(progress):
        with session_scope(url) as s:
            sub = s.get(Submission, sid)
            lc.cancel(s, sub, Principal(sub.user_id, "t@acme.test", "submitter", sub.organisation_id))
        progress("generate", 1, 1, "x")  # final progress always writes: notices the lost claim

    gate.evaluate_hook = cancel_midway
    assert pipeline.execute_stage(None, Stage.EVALUATE, sid, service_settings) == "abandoned"
    db.expire_all()
    assert db.get(Submission, sid).status == "cancelled"
    assert db.scalar(select(func.count()).select_from(EvaluationRun)) == 0


def test_progress_is_written_and_throttled(service_settings, gate, submit, db):
    seen = []
    url = service_settings.resolved_database_url
    sid = submit("adapter")
    pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings)

    def report(progress):
        progress("generate", 5, 10, "batch 5/10")  # first write goes through
        with session_scope(url) as s:
            row = s.get(Submission, sid)
            seen.append((row.stage_done, row.stage_total, row.progress_message, row.progress))
        progress("generate", 6, 10, "batch 6/10")  # within 2 s: throttled
        with session_scope(url) as s:
            seen.append(s.get(Submission, sid).stage_done)

    gate.evaluate_hook = report
    pipeline.execute_stage(None, Stage.EVALUATE, sid, service_settings)
    assert seen[0][:3] == (5, 10, "generate 5/10: batch 5/10") and 10 < seen[0][3] < 95
    assert seen[1] == 5


def test_reap_once_requeues_a_lost_stage(service_settings, gate, submit, redis_client, db):
    from datetime import timedelta

    from models import utcnow

    sid = submit("adapter")
    pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings)
    redis_client.flushdb()
    url = service_settings.resolved_database_url
    with session_scope(url) as s:  # a worker claims, then dies (no heartbeat)
        lc.claim(s, sid, Stage.EVALUATE, worker="dead", task_id=None, lost_worker_seconds=60)
        s.execute(Submission.__table__.update().where(Submission.id == sid)
                  .values(heartbeat_at=utcnow() - timedelta(seconds=service_settings.lost_worker_seconds + 5)))
    res = housekeeping.reap_once(service_settings)
    assert res.requeue == [(sid, Stage.EVALUATE)]
    assert _queued(redis_client, "gpu") == [("ftgate.evaluate", sid)]
    assert pipeline.execute_stage(None, Stage.EVALUATE, sid, service_settings) == "deciding"


def test_nan_and_nul_in_results_are_stored_safely(service_settings, gate, submit, db):
    gate.weird = True
    sid = submit("adapter")
    for st in (Stage.INSPECT, Stage.EVALUATE, Stage.DECIDE):
        pipeline.execute_stage(None, st, sid, service_settings)
    assert db.get(Submission, sid).status == "done"
    ev = db.scalar(select(EvaluationRun).where(EvaluationRun.submission_id == sid))
    assert ev.metrics == {"kl": {"delta": {"value": None, "hi": None}}}
    smp = db.scalar(select(Sample).where(Sample.submission_id == sid))
    assert smp.base_response == "ab" and smp.prompt == "p"


def test_inspection_runs_in_a_limited_child_and_its_rejection_or_timeout_rejects(service_settings, submit, db):
    """The real gate, in the child: the child's own refusal (a dataset line that is not JSON) comes back as
    the stage's rejection with its reason, and a child past its deadline is killed and rejected, never
    failed or retried."""
    limited = service_settings.model_copy(update={"inspection_seconds": 120})
    sid = submit("dataset", content=b'{"prompt": "a", "completion": "b"}\nnot json at all\n', base="smollm2-135m")
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, limited) == "rejected"
    sub = db.get(Submission, sid)
    assert sub.status == "rejected" and "line 2" in sub.error

    slow = service_settings.model_copy(update={"inspection_seconds": 0.001})
    sid = submit("dataset")
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, slow) == "rejected"
    sub = db.get(Submission, sid)
    db.refresh(sub)
    assert sub.status == "rejected" and sub.error_code == "too_slow" and "took longer than 0.001 s" in sub.error


def _run_to_verdict(service_settings, sid) -> str:
    for st in (Stage.INSPECT, Stage.FINETUNE, Stage.EVALUATE):
        pipeline.execute_stage(None, st, sid, service_settings)
    return pipeline.execute_stage(None, Stage.DECIDE, sid, service_settings)


def test_a_safety_block_runs_the_repair_stage_and_keeps_the_original_verdict(service_settings, gate, submit, db,
                                                                             redis_client):
    import zipfile

    gate.decision, gate.checks = "block", [("asr", "block"), ("perplexity", "review")]
    sid = submit("dataset")
    assert _run_to_verdict(service_settings, sid) == "repairing"
    assert ("ftgate.repair", sid) in _queued(redis_client, "gpu")
    sub = db.get(Submission, sid)
    assert sub.decision == "block" and sub.status == "repairing" and sub.progress == 0  # the verdict is already in
    pending = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid)).report["repair"]
    assert pending == {"status": "pending", "mode": "offer"}  # the default policy offers repairs

    assert pipeline.execute_stage(None, Stage.REPAIR, sid, service_settings) == "done"
    assert pipeline.execute_stage(None, Stage.REPAIR, sid, service_settings) == "skipped"  # redelivered: once only
    assert gate.calls[-1] == "repair:offer" and gate.calls.count("repair:offer") == 1
    db.expire_all()
    sub = db.get(Submission, sid)
    assert sub.status == "done" and sub.decision == "block" and sub.review_state is None
    record = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid))
    assert record.decision == "block" and record.report["verdict"]["decision"] == "block"  # unchanged
    repair = record.report["repair"]
    assert repair["status"] == "done" and repair["decision"] == "approve" and repair["released"] is False
    storage = Storage(service_settings.resolved_storage_dir)
    assert repair["adapter_path"] == f"work/{sid}/repair/repaired-adapter.zip"  # inside storage: retention finds it
    with zipfile.ZipFile(storage.path(repair["adapter_path"])) as zf:
        assert sorted(zf.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
        assert zf.read("adapter_model.safetensors") == b"repaired"
    runs = db.scalars(select(StageRun).where(StageRun.submission_id == sid).order_by(StageRun.id)).all()
    assert [r.stage for r in runs][-2:] == ["decide", "repair"]


def test_no_repair_stage_without_a_safety_finding_or_when_asked_off(service_settings, gate, submit, db):
    gate.decision, gate.checks = "review", [("perplexity", "review"), ("suite_overlap", "review")]
    drift = submit("dataset", content=b'{"prompt":"drift","completion":"x"}\n')
    assert _run_to_verdict(service_settings, drift) == "done"
    gate.checks = [("asr", "review")]
    off = submit("dataset", content=b'{"prompt":"off","completion":"x"}\n', repair="off")
    assert _run_to_verdict(service_settings, off) == "done"
    assert not [c for c in gate.calls if c.startswith("repair")]
    reports = {sid: db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid)).report
               for sid in (drift, off)}
    assert "repair" not in reports[drift]  # not asked, nothing to repair: nothing said
    assert reports[off]["repair"]["status"] == "off"


def test_an_uploaded_adapter_blocked_for_safety_goes_through_the_repair_stage_too(service_settings, gate, submit, db):
    gate.decision, gate.checks = "block", [("asr", "block")]
    adapter = submit("adapter")  # repaired without training (evaluation/safelora.py), by the same stage
    for st in (Stage.INSPECT, Stage.EVALUATE):
        pipeline.execute_stage(None, st, adapter, service_settings)
    assert pipeline.execute_stage(None, Stage.DECIDE, adapter, service_settings) == "repairing"
    assert pipeline.execute_stage(None, Stage.REPAIR, adapter, service_settings) == "done"
    repaired = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == adapter)).report["repair"]
    assert repaired["status"] == "done" and gate.calls[-1] == "repair:offer"


def test_a_failed_repair_is_recorded_and_the_submission_is_done_with_its_verdict(service_settings, gate, submit, db):
    gate.decision, gate.checks = "review", [("category_asr", "review")]
    gate.repair_error = RuntimeError("fine-tuning diverged at /var/lib/ftgate/cache/finetunes/abc step 3")
    sid = submit("dataset")
    assert _run_to_verdict(service_settings, sid) == "repairing"
    assert pipeline.execute_stage(None, Stage.REPAIR, sid, service_settings) == "done"
    db.expire_all()
    sub = db.get(Submission, sid)
    assert sub.status == "done" and sub.decision == "review" and sub.review_state == "pending"
    repair = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid)).report["repair"]
    assert repair["status"] == "failed" and "diverged" in repair["reason"] and "/var/lib" not in repair["reason"]


def test_a_repair_whose_worker_is_lost_or_out_of_retries_leaves_the_submission_done_with_its_verdict(
        service_settings, gate, submit, db, redis_client):
    """docs/api.md: a repair that fails is recorded in the report; the submission is done with its verdict either way
    (a review stays reviewable: only a done submission is). Also when the repair's worker dies every attempt, or
    its transient errors outlast the retries, not only when the core raises."""
    from datetime import timedelta

    from models import utcnow

    url = service_settings.resolved_database_url
    gate.decision, gate.checks = "review", [("asr", "review")]
    lost = submit("dataset", content=b'{"prompt":"lost","completion":"x"}\n')
    assert _run_to_verdict(service_settings, lost) == "repairing"
    for _ in range(service_settings.max_stage_attempts):  # a worker claims the repair, then dies, every time
        with session_scope(url) as s:
            assert lc.claim(s, lost, Stage.REPAIR, worker="dead", task_id=None, lost_worker_seconds=60) is not None
            s.execute(Submission.__table__.update().where(Submission.id == lost)
                      .values(heartbeat_at=utcnow() - timedelta(seconds=service_settings.lost_worker_seconds + 5)))
        housekeeping.reap_once(service_settings)
    db.expire_all()
    sub = db.get(Submission, lost)
    assert sub.status == "done" and sub.decision == "review" and sub.review_state == "pending"
    repair = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == lost)).report["repair"]
    assert repair["status"] == "failed" and repair["mode"] == "offer" and "stopped responding" in repair["reason"]

    from sqlalchemy.exc import OperationalError

    gate.repair_error = OperationalError("SELECT 1", {}, Exception("connection reset"))  # transient, no retries left
    flaky = submit("dataset", content=b'{"prompt":"flaky","completion":"x"}\n')
    assert _run_to_verdict(service_settings, flaky) == "repairing"
    pipeline.execute_stage(None, Stage.REPAIR, flaky, service_settings)  # no task: no retry
    db.expire_all()
    sub = db.get(Submission, flaky)
    assert sub.status == "done" and sub.decision == "review" and sub.error is None
    repair = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == flaky)).report["repair"]
    assert repair["status"] == "failed" and "connection reset" in repair["reason"]


def test_a_dataset_blocked_at_screening_before_any_fine_tune_is_not_repaired(service_settings, gate, submit, db):
    """docs/policy.md, "Not repaired": most of it is harmful, so there is no task to keep; as `ftgate check` says."""
    from evaluation.repair import EARLY_BLOCK_NOT_REPAIRED

    gate.early = {"decision": "block", "reasons": ["62% of the examples are harmful"]}
    gate.decision, gate.checks = "block", [("screening", "block")]
    sid = submit("dataset")
    assert pipeline.execute_stage(None, Stage.INSPECT, sid, service_settings) == "deciding"
    assert pipeline.execute_stage(None, Stage.DECIDE, sid, service_settings) == "done"
    assert not [c for c in gate.calls if c.startswith("repair")]
    repair = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid)).report["repair"]
    assert repair == {"status": "skipped", "mode": "offer", "reason": EARLY_BLOCK_NOT_REPAIRED}


def test_a_repair_the_policy_no_longer_allows_is_refused_and_the_verdict_stands(service_settings, gate, submit, db):
    gate.decision, gate.checks = "block", [("asr", "block")]
    sid = submit("dataset", repair="auto")  # the default policy allows offer at most
    assert _run_to_verdict(service_settings, sid) == "done"
    repair = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid)).report["repair"]
    assert repair["status"] == "refused" and "allows repair up to 'offer'" in repair["reason"]


def test_cancelling_a_repair_keeps_the_verdict_and_the_repair_never_runs(service_settings, gate, submit, db):
    """The verdict is saved before the repair: cancelling then cancels the repair only. The submission is done with
    its verdict (a review stays reviewable), the report's repair says cancelled, and a queued repair task finds
    nothing to do."""
    gate.decision, gate.checks = "review", [("asr", "review")]
    sid = submit("dataset")
    assert _run_to_verdict(service_settings, sid) == "repairing"
    with session_scope(service_settings.resolved_database_url) as s:
        sub = s.get(Submission, sid)
        assert lc.cancel(s, sub, Principal(sub.user_id, "t@acme.test", "submitter", sub.organisation_id))
    assert pipeline.execute_stage(None, Stage.REPAIR, sid, service_settings) != "done"
    db.expire_all()
    sub = db.get(Submission, sid)
    assert (sub.status, sub.decision, sub.review_state) == ("done", "review", "pending")
    repair = db.scalar(select(VerdictRecord).where(VerdictRecord.submission_id == sid)).report["repair"]
    assert repair["status"] == "cancelled" and "t@acme.test" in repair["reason"]
    with session_scope(service_settings.resolved_database_url) as s, pytest.raises(lc.LifecycleError):
        lc.cancel(s, s.get(Submission, sid), Principal(sub.user_id, "t@acme.test", "submitter", sub.organisation_id))
