"""evaluation/files.py: file hashes, atomic writes and a model folder's weights fingerprint."""

from __future__ import annotations

import hashlib
import os

import pytest

from evaluation import files
from evaluation.files import (
    FINGERPRINT_FILE,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
    weights_fingerprint,
    write_weights_fingerprint,
)


def test_sha256_file_is_the_sha256_of_the_bytes_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK_BYTES", 7)  # several chunks, the last one short
    data = bytes(range(256)) * 3
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(str(tmp_path / "empty")) == hashlib.sha256(b"").hexdigest()


def test_atomic_write_creates_the_folder_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "cache" / "deep" / "entry.json"
    atomic_write_text(target, "first ✓")
    assert target.read_text(encoding="utf-8") == "first ✓"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["entry.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "entry.json"
    target.write_text("old")

    def no_rename(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["entry.json"]


def test_weights_fingerprint_is_computed_once_stored_and_follows_the_weights(tmp_path):
    (tmp_path / "b.safetensors").write_bytes(b"bbb")
    (tmp_path / "a.safetensors").write_bytes(b"aaa")
    (tmp_path / "config.json").write_text("{}")  # not a weight file: does not count
    # the definition the results caches are keyed by (a change would orphan every cached base result)
    h = hashlib.sha256()
    for name, data in (("a.safetensors", b"aaa"), ("b.safetensors", b"bbb")):
        h.update(name.encode())
        h.update(hashlib.sha256(data).hexdigest().encode())
    expected = h.hexdigest()[:16]

    assert weights_fingerprint(tmp_path) == expected
    assert (tmp_path / FINGERPRINT_FILE).read_text() == expected
    (tmp_path / "a.safetensors").write_bytes(b"changed")
    assert weights_fingerprint(tmp_path) == expected  # read from the marker, not computed again
    assert write_weights_fingerprint(tmp_path) != expected
    assert weights_fingerprint(tmp_path) == (tmp_path / FINGERPRINT_FILE).read_text()
