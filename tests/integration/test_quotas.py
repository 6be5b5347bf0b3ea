"""Quotas, a full disk and retention, on real PostgreSQL and Redis: an upload past a limit is refused at the
door (429 / 507) and leaves nothing stored; finished submissions' files are deleted after the retention
period while their records stay."""

from __future__ import annotations

import errno
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.integration.test_api import API, adapter_zip, upload

pytestmark = pytest.mark.integration


def _client(service_settings, **changes):
    from fastapi.testclient import TestClient

    from api.app import create_app

    return TestClient(create_app(service_settings.model_copy(update=changes)))


def _stored_files(storage) -> list[str]:
    return sorted(str(p.relative_to(storage.root)) for sub in ("incoming", "artifacts")
                  for p in (storage.root / sub).rglob("*") if p.is_file())


def _rows(db) -> int:
    from models import Submission

    db.expire_all()
    return len(db.scalars(select(Submission)).all())


class _FullFile:
    """A file whose writes fail as a full disk's do, after ``room`` bytes."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def close(self) -> None:
        self.fh.close()


def test_a_disk_that_fills_during_an_upload_answers_507_and_keeps_nothing(service_settings, make_user, db,
                                                                          monkeypatch):
    from services.storage import Storage

    real_open = Storage.open_incoming
    monkeypatch.setattr(Storage, "open_incoming", lambda self: (lambda p, fh: (p, _FullFile(fh, 100)))(*real_open(self)))
    _, _, h = make_user()
    with _client(service_settings) as c:
        r = upload(c, h, adapter_zip() + b"\x00" * 4096)
        assert r.status_code == 507, r.text  # was 400 "malformed multipart body"
        assert r.json()["code"] == "insufficient_storage" and "full" in r.json()["message"]
        assert _stored_files(c.app.state.storage) == [] and _rows(db) == 0


def test_under_the_free_space_reserve_uploads_get_507_and_readyz_says_why(service_settings, make_user, db):
    _, _, h = make_user()
    with _client(service_settings, min_free_bytes=2**62) as c:
        r = upload(c, h, adapter_zip())
        assert r.status_code == 507 and r.json()["code"] == "insufficient_storage"
        assert "low on space" in r.json()["message"] and "reserve" in r.json()["message"]
        assert _stored_files(c.app.state.storage) == [] and _rows(db) == 0
        ready = c.get(f"{API}/readyz")
        assert ready.status_code == 503 and "low on space" in ready.json()["checks"]["storage"]
    with _client(service_settings) as c:  # the default reserve on this machine's disk: room enough
        assert c.get(f"{API}/readyz").json()["checks"]["storage"] == "ok"


def test_in_flight_quota_is_per_organisation_and_duplicates_are_free(service_settings, make_user, db):
    _, _, acme = make_user(org="acme")
    _, _, other = make_user(org="other")
    with _client(service_settings, max_in_flight_per_organisation=2) as c:
        first = adapter_zip("1")
        assert upload(c, acme, first).status_code == 202
        assert upload(c, acme, adapter_zip("2")).status_code == 202
        r = upload(c, acme, adapter_zip("3"))
        assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"
        assert r.headers["retry-after"] == "60" and "2 submissions queued or running" in r.json()["message"]
        assert upload(c, acme, first).status_code == 200  # the same upload again: no new run, no quota
        assert upload(c, other, adapter_zip("3")).status_code == 202  # another organisation is not held up
        # the refused upload left no file behind (the other organisation's identical file is its own row's)
        assert len(_stored_files(c.app.state.storage)) == 3 and _rows(db) == 3


def test_storage_quota_counts_kept_uploads_only(service_settings, make_user, db):
    from models import Submission

    _, _, h = make_user()
    first = adapter_zip("a")
    with _client(service_settings, max_stored_bytes_per_organisation=len(first) + 10) as c:
        r1 = upload(c, h, first)
        assert r1.status_code == 202
        r2 = upload(c, h, adapter_zip("b"))
        assert r2.status_code == 507 and r2.json()["code"] == "storage_quota_exceeded"
        assert "retention" in r2.json()["message"] and "retry-after" not in r2.headers
        assert len(_stored_files(c.app.state.storage)) == 1
        # once the first upload's files have expired, they no longer count
        db.execute(update(Submission).values(artifact_deleted_at=Submission.created_at))
        db.commit()
        assert upload(c, h, adapter_zip("b")).status_code == 202


def _finish(db, sub_id: str, days_ago: float, status: str = "done") -> None:
    from models import Submission, utcnow

    db.execute(update(Submission).where(Submission.id == sub_id).values(
        status=status, finished_at=utcnow() - timedelta(days=days_ago)))
    db.commit()


def test_retention_deletes_old_files_keeps_records_and_shared_files(service_settings, make_user, db):
    from models import AuditEvent, Submission
    from services.retention import expire_artifacts
    from services.storage import Storage

    _, _, h = make_user()
    shared = adapter_zip("shared")
    with _client(service_settings) as c:
        old = upload(c, h, adapter_zip("old")).json()["id"]
        old_shared = upload(c, h, shared).json()["id"]
        recent_shared = upload(c, h, shared, policy="strict").json()["id"]  # the same file, another run
        running = upload(c, h, adapter_zip("running")).json()["id"]
    storage = Storage(service_settings.resolved_storage_dir)
    for sub_id in (old, old_shared):
        _finish(db, sub_id, days_ago=40)
    _finish(db, recent_shared, days_ago=1)
    workdir = storage.workdir(old, "inspect")
    (workdir / "unpacked.bin").write_bytes(b"x" * 10)
    paths = {s.id: storage.path(s.artifact_path) for s in db.scalars(select(Submission))}

    assert expire_artifacts(db, storage, retention_days=0).expired == []  # 0: kept forever
    res = expire_artifacts(db, storage, retention_days=30)
    db.commit()
    assert sorted(res.expired) == sorted([old, old_shared]) and res.files_deleted == 2  # the upload + a work file
    assert not paths[old].exists() and not workdir.exists()
    assert paths[old_shared].exists()  # still the artifact of a submission within the period
    assert paths[running].exists()
    db.expire_all()
    assert db.get(Submission, old).artifact_deleted_at is not None
    assert db.get(Submission, old).decision is None and db.get(Submission, old).status == "done"  # record stays
    assert db.get(Submission, running).artifact_deleted_at is None
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "artifacts_expired")).all()
    assert sorted(e.submission_id for e in events) == sorted([old, old_shared])
    # idempotent: a second pass finds nothing; once the shared file's last user expires, it goes too
    assert expire_artifacts(db, storage, retention_days=30).expired == []
    _finish(db, recent_shared, days_ago=31)
    assert expire_artifacts(db, storage, retention_days=30).expired == [recent_shared]
    assert not paths[old_shared].exists()


def test_the_reaper_pass_runs_retention_with_the_settings(service_settings, make_user, db):
    from tasks.housekeeping import expire_once

    _, _, h = make_user()
    with _client(service_settings) as c:
        sub_id = upload(c, h, adapter_zip()).json()["id"]
    _finish(db, sub_id, days_ago=3, status="rejected")
    assert expire_once(service_settings.model_copy(update={"artifact_retention_days": 7})).expired == []
    assert expire_once(service_settings.model_copy(update={"artifact_retention_days": 2})).expired == [sub_id]
