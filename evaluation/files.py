"""Hashing and writing files, each done one way for the whole project.

- ``sha256_file``: the hex sha256 of one file, read in chunks (artifacts and weights are large).
- ``atomic_write_bytes`` / ``atomic_write_text``: a reader sees the old file or the new one, never half of
  one. Caches are shared by workers and CLI runs on one machine, so a half-written entry would be read
  back as a result.
- ``weights_fingerprint``: a model directory's fingerprint, computed once and kept beside its weights.

Stdlib only: every layer may import it (the workers, the services and the evaluation core).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

CHUNK_BYTES = 1 << 20
FINGERPRINT_FILE = "ftgate-fingerprint.txt"


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` (its folder created if missing) so that no reader sees a partial file.

    The bytes go to a uniquely named file beside ``path`` (two processes may write the same cache entry at
    once), are flushed to disk, then renamed over ``path``: without the flush a crash could leave the
    renamed file empty, and an empty cache entry would be read as a result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """``atomic_write_bytes`` of ``text`` encoded (UTF-8 unless told otherwise)."""
    atomic_write_bytes(path, text.encode(encoding))


def write_weights_fingerprint(directory: Path) -> str:
    """Compute the fingerprint of the model in ``directory`` and store it there (FINGERPRINT_FILE).

    The fingerprint is the first 16 hex characters of a sha256 over each ``*.safetensors`` file's name and
    sha256, in name order. Builders call this last, on the finished folder: its marker file is what says
    the folder is complete. Results caches are keyed by it, so the definition must not change casually.
    """
    h = hashlib.sha256()
    for f in sorted(directory.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    fingerprint = h.hexdigest()[:16]
    atomic_write_text(directory / FINGERPRINT_FILE, fingerprint)
    return fingerprint


def weights_fingerprint(directory: Path) -> str:
    """The fingerprint of the model in ``directory``: read from its FINGERPRINT_FILE, computed and stored
    there the first time (see ``write_weights_fingerprint``)."""
    marker = directory / FINGERPRINT_FILE
    return marker.read_text().strip() if marker.exists() else write_weights_fingerprint(directory)
