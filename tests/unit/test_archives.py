"""Archive metadata bounded before the standard library parses it (issue 12, #4): tar long-name / pax headers,
zip directory entries and the zip central directory. The malicious archives are built here, byte by byte
where tarfile / zipfile would not write them; each declares far more than it holds, so a refusal that names
the declared size shows the check ran on the header, before the data was read."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from evaluation import archives
from evaluation.archives import MAX_TAR_META_HEADER_BYTES, archive_kind, unpack_archive_safely
from evaluation.errors import InputRejected

MB = 1024 * 1024
MAX_FILES = 16
MAX_ENTRIES = MAX_FILES * archives.ENTRIES_PER_FILE + archives.EXTRA_ENTRIES


def unpack_refused(arc: Path, dest: Path) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        unpack_archive_safely(arc, dest, max_files=MAX_FILES, max_bytes=MB)
    assert not dest.exists()
    return info.value


def tar_gz_with_meta_header(path: Path, member_type: bytes, declared: int, present: int = 1024) -> Path:
    """A .tar.gz whose first header is a metadata header (GNU long name, pax) declaring `declared` bytes of
    data, of which only `present` follow: reading the data whole is what the check must not do."""
    header = tarfile.TarInfo("././@LongLink")
    header.type = member_type
    header.size = declared
    block = header.tobuf(format=tarfile.GNU_FORMAT)
    assert len(block) == tarfile.BLOCKSIZE
    path.write_bytes(gzip.compress(block + b"a" * present))
    return path


@pytest.mark.parametrize("member_type,kind", [(tarfile.GNUTYPE_LONGNAME, "GNU long-name"),
                                              (tarfile.XHDTYPE, "pax")])
def test_huge_tar_metadata_header_refused_before_it_is_read(tmp_path, member_type, kind):
    arc = tar_gz_with_meta_header(tmp_path / "evil.tar.gz", member_type, declared=256 * MB)
    assert archive_kind(arc) == "tar"  # detected from one header block, not by parsing the first member
    err = unpack_refused(arc, tmp_path / "d")
    assert err.code == "tar_header_too_large"
    assert str(256 * MB) in err.reason and kind in err.reason and "././@LongLink" in err.reason


def test_many_small_metadata_headers_bounded_in_total(tmp_path):
    """Headers each under the per-header limit still cannot add up: a flood of them is refused."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(20):
            info = tarfile.TarInfo(f"f{i}.txt")
            info.size = 1
            info.pax_headers = {"comment": "x" * (MAX_TAR_META_HEADER_BYTES - 100)}
            tf.addfile(info, io.BytesIO(b"x"))
    arc = tmp_path / "flood.tar"
    arc.write_bytes(buf.getvalue())
    err = unpack_refused(arc, tmp_path / "d")
    assert err.code == "tar_header_too_large" and "total" in err.reason


def test_long_member_names_still_accepted(tmp_path):
    """An ordinary long path (a pax header in Python's default format, a GNU long name in GNU format)."""
    folder = "checkpoints/" + "run-" * 40
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        arc = tmp_path / f"ok{fmt}.tar.gz"
        with tarfile.open(arc, "w:gz", format=fmt) as tf:
            info = tarfile.TarInfo(f"{folder}/adapter_config.json")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"{}"))
        root = unpack_archive_safely(arc, tmp_path / f"d{fmt}", max_files=MAX_FILES, max_bytes=MB)
        assert (root / "adapter_config.json").read_bytes() == b"{}"


def test_tar_sparse_member_refused(tmp_path):
    arc = tmp_path / "sparse.tar"
    info = tarfile.TarInfo("adapter_model.safetensors")
    info.type = tarfile.GNUTYPE_SPARSE
    arc.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)
    err = unpack_refused(arc, tmp_path / "d")
    assert err.code == "bad_archive" and "sparse" in err.reason


def test_tar_directory_flood_refused(tmp_path):
    arc = tmp_path / "dirs.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for i in range(MAX_ENTRIES + 1):
            info = tarfile.TarInfo(f"d{i}")
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
    err = unpack_refused(arc, tmp_path / "d")
    assert err.code == "too_many_files" and "directories included" in err.reason


def zip_with_directories(path: Path, n_dirs: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("adapter_config.json", "{}")
        for i in range(n_dirs):
            zf.writestr(zipfile.ZipInfo(f"d{i}/"), b"")
    return path


def test_zip_directory_entries_count_toward_the_limit(tmp_path):
    """500k directory entries were accepted: only files were counted."""
    arc = zip_with_directories(tmp_path / "dirs.zip", MAX_ENTRIES)
    err = unpack_refused(arc, tmp_path / "d")
    assert err.code == "too_many_files" and "directories included" in err.reason


@pytest.fixture
def forbid_zip_parsing(monkeypatch):
    """Call it once the archive is built: from then on the refusal must come from the end record, before
    ZipFile builds an object per directory entry."""
    def forbid():
        def parse(*args, **kwargs):
            raise AssertionError("ZipFile parsed the central directory")

        monkeypatch.setattr(archives.zipfile, "ZipFile", parse)

    return forbid


def test_zip_directory_entry_count_checked_before_parsing(tmp_path, forbid_zip_parsing):
    arc = zip_with_directories(tmp_path / "dirs.zip", 10 * MAX_ENTRIES)
    forbid_zip_parsing()
    err = unpack_refused(arc, tmp_path / "d")
    assert err.code == "too_many_files" and f"lists {10 * MAX_ENTRIES + 1} entries" in err.reason


def test_zip_directory_bytes_checked_before_parsing(tmp_path, forbid_zip_parsing):
    """Few entries with huge names (or an end record that under-counts them): the directory's size decides."""
    arc = tmp_path / "names.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for i in range(30):
            zf.writestr(f"{i}-" + "n" * 4000, b"")
    forbid_zip_parsing()
    err = unpack_refused(arc, tmp_path / "d")
    assert err.code == "too_many_files" and "zip directory is" in err.reason


def test_ordinary_zip_with_folders_accepted(tmp_path):
    arc = tmp_path / "ok.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr(zipfile.ZipInfo("my-adapter/"), b"")
        zf.writestr("my-adapter/adapter_config.json", "{}")
    root = unpack_archive_safely(arc, tmp_path / "d", max_files=MAX_FILES, max_bytes=MB)
    assert root.name == "my-adapter"
