"""The submission state machine on real PostgreSQL: transitions, claims, heartbeats, the reaper, dedup."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from models import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    AuditEvent,
    Stage,
    StageRun,
    Submission,
    SubmissionStatus,
    can_transition,
    utcnow,
)
from services import submissions as lc
from services.auth import Principal, create_user
from services.db import session_factory, session_scope

pytestmark = pytest.mark.integration
S = SubmissionStatus


def test_transition_table_is_consistent():
    assert set(TRANSITIONS) == set(SubmissionStatus)
    assert TERMINAL == {S.DONE, S.REJECTED, S.FAILED, S.CANCELLED}
    for src in ACTIVE:  # every active status can be cancelled and can fail
        assert can_transition(src, S.CANCELLED)
        assert can_transition(src, S.FAILED)
    assert not can_transition(S.DONE, S.QUEUED)
    assert not can_transition(S.QUEUED, S.DONE)
    assert can_transition(S.INSPECTING, S.DECIDING)  # early verdict of a dataset screened far over the limit
    # every status is reachable from queued
    seen, todo = {S.QUEUED}, [S.QUEUED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(SubmissionStatus)


def test_overall_progress_is_monotonic_over_stages():
    seq = [
        lc.overall_progress("dataset", "queued"),
        lc.overall_progress("dataset", "inspecting", 1, 2),
        lc.overall_progress("dataset", "finetuning", 0, 50),
        lc.overall_progress("dataset", "finetuning", 25, 50),
        lc.overall_progress("dataset", "evaluating", 10, 10),
        lc.overall_progress("dataset", "deciding"),
        lc.overall_progress("dataset", "done"),
    ]
    assert seq == sorted(seq) and seq[0] == 0 and seq[-1] == 100


@pytest.fixture
def principal(db):
    user = create_user(db, "sub@acme.test", role="submitter", organisation="acme")
    db.commit()
    return Principal(user.id, user.email, "submitter", user.organisation_id)


def _new(db, principal, sha="a" * 64, **kw) -> Submission:
    args = {"kind": "adapter", "base": "b", "policy": "default", "name": "n", "training": {}, "filename": "a.zip",
            "artifact_path": "artifacts/x/a.zip", "sha256": sha, "size": 10}
    args.update(kw)
    sub, created = lc.create_submission(db, principal, **args)
    db.commit()
    return sub


def test_duplicate_artifact_base_policy_returns_existing(db, principal):
    a = _new(db, principal)
    b, created = lc.create_submission(db, principal, kind="adapter", base="b", policy="default", name="again",
                                      training={}, filename="a.zip", artifact_path="p", sha256="a" * 64, size=10)
    assert not created and b.id == a.id
    c = _new(db, principal, policy="strict")
    assert c.id != a.id  # another policy is another run
    # asking for the repair the policy does anyway (default: offer) is the same run; asking for another is not
    assert _new(db, principal, repair="offer").id == a.id
    assert _new(db, principal, repair="off").id != a.id
    # a failed run frees its key: the same upload runs again
    with session_scope(db.get_bind().url.render_as_string(hide_password=False)) as s:
        assert lc._transition(s, a.id, S.FAILED, actor="test")
    db.expire_all()
    d = _new(db, principal)
    assert d.id != a.id


def test_claim_is_exclusive_and_redelivery_does_nothing(service_settings, db, principal):
    url = service_settings.resolved_database_url
    sub = _new(db, principal)
    results = []
    barrier = threading.Barrier(4)

    def worker(i):
        barrier.wait()
        with session_scope(url) as s:
            results.append(lc.claim(s, sub.id, Stage.INSPECT, worker=f"w{i}", task_id=None, lost_worker_seconds=60))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    c = winners[0]
    with session_scope(url) as s:
        assert lc.complete_stage(s, c, S.EVALUATING, worker="w", kind="adapter")
    # a redelivered inspect message: nothing to do
    with session_scope(url) as s:
        assert lc.claim(s, sub.id, Stage.INSPECT, worker="late", task_id=None, lost_worker_seconds=60) is None
        # completing twice is refused too
        assert not lc.complete_stage(s, c, S.EVALUATING, worker="w", kind="adapter")
    with session_factory(url)() as s:
        runs = s.scalars(select(StageRun).where(StageRun.submission_id == sub.id)).all()
        assert [(r.stage, r.attempt, r.status) for r in runs] == [("inspect", 1, "succeeded")]
        events = s.scalars(select(AuditEvent).where(AuditEvent.submission_id == sub.id).order_by(AuditEvent.id)).all()
        assert [(e.from_status, e.to_status) for e in events if e.action == "status"] == [
            ("queued", "inspecting"), ("inspecting", "evaluating")
        ]


def test_dead_workers_claim_is_taken_over_on_redelivery(service_settings, db, principal):
    url = service_settings.resolved_database_url
    sub = _new(db, principal)
    with session_scope(url) as s:
        c1 = lc.claim(s, sub.id, Stage.INSPECT, worker="dead", task_id=None, lost_worker_seconds=60)
    with session_scope(url) as s:  # heartbeat fresh: nobody else may claim
        assert lc.claim(s, sub.id, Stage.INSPECT, worker="other", task_id=None, lost_worker_seconds=60) is None
    with session_scope(url) as s:  # the heartbeat stops ...
        s.execute(Submission.__table__.update().where(Submission.id == sub.id)
                  .values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    with session_scope(url) as s:
        c2 = lc.claim(s, sub.id, Stage.INSPECT, worker="new", task_id=None, lost_worker_seconds=60)
    assert c2 is not None and c2.attempt == 2
    with session_scope(url) as s:
        assert not lc.heartbeat(s, c1)  # the old worker, if it wakes up, learns it lost the claim
        assert not lc.complete_stage(s, c1, S.EVALUATING, worker="dead")
        assert lc.complete_stage(s, c2, S.EVALUATING, worker="new")
    with session_factory(url)() as s:
        runs = s.scalars(select(StageRun).where(StageRun.submission_id == sub.id).order_by(StageRun.id)).all()
        assert [r.status for r in runs] == ["lost", "succeeded"]


def test_cancel_takes_the_claim_away(service_settings, db, principal):
    url = service_settings.resolved_database_url
    sub = _new(db, principal)
    with session_scope(url) as s:
        c = lc.claim(s, sub.id, Stage.INSPECT, worker="w", task_id=None, lost_worker_seconds=60)
    with session_scope(url) as s:
        lc.cancel(s, s.get(Submission, sub.id), principal)
    with session_scope(url) as s:
        assert not lc.heartbeat(s, c)
        assert not lc.write_progress(s, c, "adapter", 1, 2, "x")
        assert not lc.complete_stage(s, c, S.EVALUATING, worker="w")
        with pytest.raises(lc.LifecycleError) as e:
            lc.cancel(s, s.get(Submission, sub.id), principal)
        assert e.value.code == "already_finished"
    with session_factory(url)() as s:
        row = s.get(Submission, sub.id)
        assert row.status == "cancelled" and row.dedup_key is None and row.claim_token is None


def test_reaper_requeues_lost_stage_then_fails_after_max_attempts(service_settings, db, principal):
    url = service_settings.resolved_database_url
    sub = _new(db, principal)
    for attempt in (1, 2, 3):
        with session_scope(url) as s:
            c = lc.claim(s, sub.id, Stage.INSPECT, worker=f"w{attempt}", task_id=None, lost_worker_seconds=60)
            assert c is not None and c.attempt == attempt
        later = utcnow() + timedelta(seconds=300)
        with session_scope(url) as s:
            res = lc.reap(s, lost_worker_seconds=60, stale_job_seconds=3600, max_attempts=3, now=later)
        if attempt < 3:
            assert res.requeue == [(sub.id, Stage.INSPECT)] and res.released == [sub.id]
        else:
            assert res.failed == [sub.id] and res.requeue == []
    with session_factory(url)() as s:
        row = s.get(Submission, sub.id)
        assert row.status == "failed" and row.error_code == "worker_lost"
        assert "stopped responding" in row.error
        assert s.scalar(select(func.count()).select_from(StageRun).where(StageRun.status == "lost")) == 3


def test_reaper_fails_hung_stage_and_requeues_unenqueued(service_settings, db, principal):
    url = service_settings.resolved_database_url
    hung = _new(db, principal, sha="b" * 64)
    never_sent = _new(db, principal, sha="c" * 64)
    with session_scope(url) as s:
        lc.claim(s, hung.id, Stage.INSPECT, worker="w", task_id=None, lost_worker_seconds=60)
        s.execute(Submission.__table__.update().where(Submission.id == hung.id)
                  .values(claimed_at=utcnow() - timedelta(hours=5)))
        s.execute(Submission.__table__.update().where(Submission.id == never_sent.id)
                  .values(updated_at=utcnow() - timedelta(minutes=5)))
    with session_scope(url) as s:
        res = lc.reap(s, lost_worker_seconds=60, stale_job_seconds=3600, max_attempts=3)
    assert res.failed == [hung.id]
    assert res.requeue == [(never_sent.id, Stage.INSPECT)]
    with session_factory(url)() as s:
        assert s.get(Submission, hung.id).error_code == "stage_stale"
