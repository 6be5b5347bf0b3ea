"""Artifact retention: a finished submission's uploaded file, fine-tuned adapter and work files are deleted
some days after it finished; its record, report, verdict and audit trail stay.

Uploads are stored by content (``artifacts/<sha256>/<filename>``), so one file can back several submissions
(the same file under another policy, or from another organisation). A file is deleted only when no
submission that still needs it points at it: one that is unfinished, or finished within the retention period.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from models import TERMINAL, Submission, utcnow
from services.storage import Storage
from services.submissions import audit


@dataclass
class RetentionResult:
    expired: list[str] = field(default_factory=list)  # submission ids whose files are now gone
    files_deleted: int = 0
    bytes_freed: int = 0


def _still_needed(cutoff: datetime, expiring: set[str]):
    """Submissions that keep their files: not finished, or finished after the cutoff."""
    return select(Submission.artifact_path, Submission.adapter_path).where(
        Submission.artifact_deleted_at.is_(None),
        Submission.id.not_in(expiring),
        or_(Submission.status.not_in([t.value for t in TERMINAL]), Submission.finished_at.is_(None),
            Submission.finished_at >= cutoff),
    )


def _tally(path: Path, result: RetentionResult) -> None:
    """Count the files and bytes of ``path`` (a file or a folder) as freed."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
    for f in files:
        result.bytes_freed += f.stat().st_size
        result.files_deleted += 1


def expire_artifacts(session: Session, storage: Storage, *, retention_days: float, now: datetime | None = None,
                     limit: int = 500, actor: str = "retention") -> RetentionResult:
    """Delete the files of submissions finished more than ``retention_days`` ago (at most ``limit`` per call,
    oldest first) and mark them; returns what was done. Caller commits. 0 days: nothing is deleted."""
    result = RetentionResult()
    if retention_days <= 0:
        return result
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    due = session.scalars(
        select(Submission)
        .where(Submission.artifact_deleted_at.is_(None), Submission.status.in_([t.value for t in TERMINAL]),
               Submission.finished_at.is_not(None), Submission.finished_at < cutoff)
        .order_by(Submission.finished_at)
        .limit(limit)
    ).all()
    if not due:
        return result
    kept = {p for row in session.execute(_still_needed(cutoff, {s.id for s in due})) for p in row if p}
    for sub in due:
        for rel in (sub.artifact_path, sub.adapter_path):
            if not rel or rel in kept:
                continue
            try:
                path = storage.path(rel)
            except ValueError:  # outside the storage root (the shared fine-tune cache): never ours to delete
                continue
            _tally(path, result)
            if rel == sub.artifact_path:
                storage.remove_artifact(rel)  # and artifacts/<sha256>/ once its last file is gone
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        _tally(storage.root / "work" / sub.id, result)
        storage.remove_workdir(sub.id)
        sub.artifact_deleted_at = now or utcnow()
        audit(session, "artifacts_expired", actor=actor, submission_id=sub.id,
              details={"retention_days": retention_days,
                       "finished_at": sub.finished_at.isoformat() if sub.finished_at else None})
        result.expired.append(sub.id)
    return result
