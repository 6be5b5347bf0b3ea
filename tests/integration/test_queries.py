"""services/queries.py on real PostgreSQL: the questions whose answer carries a rule of the gate (who sees
what, what the gate says now, what waits for review), asked the way the pages and the JSON API ask them."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from models import Decision, ReviewState, Sample, Submission, SubmissionStatus, VerdictRecord
from services import queries
from services import submissions as lc
from services.auth import create_user, principal_of
from services.queries import SubmissionFilter
from services.submissions import final_decision

pytestmark = pytest.mark.integration


@pytest.fixture
def people(db):
    users = {name: create_user(db, f"{name}@{org}.test", role=role, organisation=org)
             for name, role, org in (("ann", "submitter", "acme"), ("bob", "submitter", "acme"),
                                     ("eve", "submitter", "other"), ("rev", "reviewer", "ops"))}
    db.commit()
    return {name: principal_of(u) for name, u in users.items()}


def _sub(db, principal, name: str, **state) -> Submission:
    sub, created = lc.create_submission(db, principal, kind="adapter", base="b", policy="default", name=name,
                                        training={}, filename=f"{name}.zip", artifact_path=f"a/{name}",
                                        sha256=uuid.uuid4().hex * 2, size=10)
    assert created
    if state:
        db.execute(update(Submission).where(Submission.id == sub.id).values(**state))
    db.commit()
    db.refresh(sub)
    return sub


def test_a_submitter_lists_their_organisations_submissions_and_staff_list_all(db, people):
    mine = _sub(db, people["ann"], "mine")
    colleague = _sub(db, people["bob"], "colleague")
    _sub(db, people["eve"], "elsewhere")
    page = queries.list_submissions(db, people["ann"], SubmissionFilter(), limit=10)
    assert {s.id for s in page.items} == {mine.id, colleague.id} and page.total == 2
    only_mine = queries.list_submissions(db, people["ann"], SubmissionFilter(user_id=people["ann"].user_id), limit=10)
    assert [s.id for s in only_mine.items] == [mine.id]
    everyone = queries.list_submissions(db, people["rev"], SubmissionFilter(), limit=1)
    assert len(everyone.items) == 1 and everyone.total == 3  # the total counts past the limit


def test_the_final_decision_filter_agrees_with_final_decision(db, people):
    subs = [_sub(db, people["ann"], f"{d}-{r}", status=SubmissionStatus.DONE.value, decision=d, review_state=r)
            for d in (Decision.APPROVE.value, Decision.BLOCK.value, Decision.REVIEW.value)
            for r in (None, ReviewState.PENDING.value, ReviewState.APPROVED.value, ReviewState.BLOCKED.value)]
    for decision in Decision:
        found = queries.list_submissions(db, people["ann"], SubmissionFilter(final_decision=decision.value), limit=50)
        assert {s.id for s in found.items} == {s.id for s in subs if final_decision(s) == decision}, decision


def test_search_finds_a_name_a_file_name_or_the_start_of_an_id_or_sha256(db, people):
    sub = _sub(db, people["ann"], "Identity-Shift")
    _sub(db, people["ann"], "other")
    for q in ("identity", "SHIFT.zip", sub.id[:6], sub.artifact_sha256[:8]):
        found = queries.list_submissions(db, people["ann"], SubmissionFilter(search=q), limit=10)
        assert [s.id for s in found.items] == [sub.id], q
    assert queries.list_submissions(db, people["ann"], SubmissionFilter(search=sub.id[2:8]), limit=10).total == 0


def test_the_review_queue_holds_unreviewed_review_verdicts_and_the_decided_the_rest(db, people):
    def decided(name, decision, review_state=None, status=SubmissionStatus.DONE.value):
        sub = _sub(db, people["ann"], name, status=status, decision=decision, review_state=review_state)
        if decision:
            db.add(VerdictRecord(submission_id=sub.id, decision=decision, reasons=[], policy_name="default", report={}))
            db.commit()
        return sub

    waiting = decided("waiting", Decision.REVIEW.value, ReviewState.PENDING.value)
    reviewed = decided("reviewed", Decision.REVIEW.value, ReviewState.APPROVED.value)
    blocked = decided("blocked", Decision.BLOCK.value)
    rejected = decided("rejected", None, status=SubmissionStatus.REJECTED.value)
    running = _sub(db, people["ann"], "running", status=SubmissionStatus.EVALUATING.value)
    assert [s.id for s, _ in queries.awaiting_review(db)] == [waiting.id]
    decided_rows = dict(queries.recently_decided(db))
    assert {s.id for s in decided_rows} == {reviewed.id, blocked.id, rejected.id}
    assert next(v for s, v in decided_rows.items() if s.id == rejected.id) is None  # no verdict at intake
    assert queries.count_unfinished(db) == 1 and running.claim_token is None
    assert queries.count_unclaimed(db) == 1
    assert [s.id for s in queries.recent_failures(db)] == [rejected.id]
    assert queries.submission_counts_by_status(db) == {"done": 3, "rejected": 1, "evaluating": 1}
    assert queries.submission_counts_by_user(db) == {people["ann"].user_id: 5}


def test_flipped_samples_are_those_that_changed_to_the_asked_label(db, people):
    sub = _sub(db, people["ann"], "samples")
    for i, (base, cand) in enumerate((("refusal", "compliance"), ("refusal", "refusal"), ("other", "compliance"),
                                      ("compliance", "refusal"), ("compliance", "compliance"))):
        db.add(Sample(submission_id=sub.id, suite="harm" if i < 4 else "safe", item_id=str(i), prompt="p",
                      base_label=base, candidate_label=cand))
    db.commit()
    flips = queries.list_samples(db, sub.id, changed=True, candidate_label="compliance", limit=1)
    assert [s.item_id for s in flips.items] == ["0"] and flips.total == 2
    changed = queries.list_samples(db, sub.id, changed=True, limit=10)
    assert [s.item_id for s in changed.items] == ["0", "2", "3"]
    assert queries.list_samples(db, sub.id, suite="safe", limit=10).total == 1
