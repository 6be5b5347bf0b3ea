"""Local file storage for uploads and stage work directories (a shared volume in production).

Uploads are streamed to a temporary file while their sha256 and size are computed, then moved to a
content-addressed path ``artifacts/<sha256>/<filename>``. Paths stored in the database are relative to
the root, so API and workers may mount the volume at different places.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the limit of {limit} bytes")
        self.limit = limit


class StorageFull(Exception):
    """The storage volume is full, or has less free space than the configured reserve: the API answers
    507, never a 400 about the body or a 500."""


# what a full disk (ENOSPC) or an exhausted filesystem quota (EDQUOT) raises on write or close
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass
class StoredUpload:
    tmp_path: Path
    filename: str
    sha256: str
    size: int
    head: bytes  # the first bytes, to check the file type


@dataclass(frozen=True)
class PlacedArtifact:
    rel: str  # relative to the storage root, as stored on the submission
    new: bool  # this upload put the file there (it was not stored already)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, default: str = "upload") -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    base = _SAFE.sub("_", base).lstrip(".")[:200]
    return base or default


class Storage:
    def __init__(self, root: Path, *, min_free_bytes: int = 0):
        self.root = Path(root).resolve()
        # the reserve: uploads are refused (and readiness fails) below it, so a full disk never reaches the
        # database, the broker's folders or a worker's half-written results on the same volume
        self.min_free_bytes = min_free_bytes

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def check_room(self) -> None:
        """Raises StorageFull when the volume's free space is under the reserve."""
        free = self.free_bytes()
        if free < self.min_free_bytes:
            raise StorageFull(
                f"the storage volume is low on space: {free // 2**20} MiB free, under the reserve of "
                f"{self.min_free_bytes // 2**20} MiB"
            )

    def ensure(self) -> None:
        for sub in ("artifacts", "incoming", "work"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def path(self, rel: str | os.PathLike) -> Path:
        p = (self.root / rel).resolve()
        if not p.is_relative_to(self.root):
            raise ValueError(f"path {rel!s} is outside the storage root")
        return p

    def relative(self, p: Path) -> str:
        return str(Path(p).resolve().relative_to(self.root))

    def workdir(self, submission_id: str, stage: str) -> Path:
        d = self.root / "work" / submission_id / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def open_incoming(self) -> tuple[Path, BinaryIO]:
        self.ensure()
        self.check_room()
        tmp = self.root / "incoming" / f"{uuid.uuid4().hex}.part"
        return tmp, open(tmp, "wb")

    def place(self, upload: StoredUpload) -> PlacedArtifact:
        """Move a finished upload to its content-addressed place. ``new`` says whether this upload put the
        file there (else the same content was already stored and the upload's own copy is dropped)."""
        dest_dir = self.root / "artifacts" / upload.sha256
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / upload.filename
        if dest.exists():
            upload.tmp_path.unlink(missing_ok=True)
            return PlacedArtifact(self.relative(dest), new=False)
        os.replace(upload.tmp_path, dest)
        return PlacedArtifact(self.relative(dest), new=True)

    def remove_artifact(self, rel: str) -> None:
        """Remove a placed artifact (and its directory when it is left empty)."""
        p = self.path(rel)
        if not p.is_relative_to(self.root / "artifacts"):
            raise ValueError(f"{rel} is not an artifact")
        p.unlink(missing_ok=True)
        try:
            p.parent.rmdir()
        except OSError:  # other files of the same content, or already gone
            pass

    def discard(self, upload: StoredUpload | None) -> None:
        if upload is not None:
            upload.tmp_path.unlink(missing_ok=True)

    def remove_workdir(self, submission_id: str) -> None:
        shutil.rmtree(self.root / "work" / submission_id, ignore_errors=True)

    def check(self) -> None:
        """Raises if the storage is not writable or is under its free-space reserve (readiness)."""
        self.ensure()
        probe = self.root / "incoming" / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
        self.check_room()


class UploadWriter:
    """Receives an upload's chunks: writes them to an incoming file, hashes them, enforces the size limit."""

    HEAD = 512

    def __init__(self, storage: Storage, filename: str | None, limit: int):
        self.storage, self.limit = storage, limit
        self.filename = safe_filename(filename)
        self.tmp_path, self._fh = storage.open_incoming()
        self._sha = hashlib.sha256()
        self.size = 0
        self.head = b""

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.abort()
            raise TooLarge(self.limit)
        if len(self.head) < self.HEAD:
            self.head += chunk[: self.HEAD - len(self.head)]
        self._sha.update(chunk)
        try:
            self._fh.write(chunk)
        except OSError as e:
            self._abort_if_full(e)
            raise

    def close(self) -> StoredUpload:
        try:
            self._fh.close()  # flushes: a full disk can first show here
        except OSError as e:
            self._abort_if_full(e)
            raise
        return StoredUpload(self.tmp_path, self.filename, self._sha.hexdigest(), self.size, self.head)

    def _abort_if_full(self, e: OSError) -> None:
        if e.errno in NO_SPACE_ERRNOS:
            self.abort()
            raise StorageFull("the storage volume is full") from None

    def abort(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass  # closing flushes, and a full disk fails the flush again: the file goes either way
        finally:
            self.tmp_path.unlink(missing_ok=True)
