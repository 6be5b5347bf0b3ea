"""Safe unpacking of uploaded archives (.zip, .tar, .tar.gz/.tgz).

Every member is checked before a byte is written: no absolute paths, no `..`, no links, devices or
FIFOs, no nested archives, at most `max_files` files, and the total uncompressed size is counted while
streaming (a zip bomb can lie in its headers), so nothing is ever extracted blindly.

The archive's own metadata is bounded before the standard library parses it, because tarfile and zipfile
hold it in memory whole: a tar's GNU long-name and pax headers are size-checked before they are read (a
255 KB .tar.gz declaring a 256 MiB long name took 2.35 GB), sparse members are refused, and a zip's
central directory (entry count and bytes, from the end record) is checked before ZipFile reads it.
Directories count toward the entry limit in both formats.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from evaluation.errors import InputRejected

CHUNK = 1024 * 1024

# Entries of any kind (files, directories, junk) per allowed file: room for folders, never a flood.
ENTRIES_PER_FILE = 4
EXTRA_ENTRIES = 16
# A tar metadata header (GNU long name / long link, pax) holds a path or a few key=value records.
MAX_TAR_META_HEADER_BYTES = 64 * 1024
MAX_TAR_META_TOTAL_BYTES = 1024 * 1024
# A zip central-directory record is 46 bytes plus name, extra field and comment.
MAX_ZIP_DIRECTORY_BYTES_PER_ENTRY = 1024

# Members that are silently skipped: archive junk some tools add (macOS Finder).
_JUNK_DIRS = {"__MACOSX"}
_JUNK_FILES = {".DS_Store", "Thumbs.db"}

# Names and magic numbers of archives; an archive inside an archive is refused (bomb depth, scan evasion).
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".lz4", ".lzma")
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf", b"Rar!", b"\x28\xb5\x2f\xfd")


def archive_kind(path: Path) -> str | None:
    """'zip' or 'tar' (plain or compressed) by the file's content, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04" or head == b"PK\x05\x06":
        return "zip"
    return "tar" if _starts_with_tar_header(path, head) else None


def _starts_with_tar_header(path: Path, head: bytes) -> bool:
    """Whether the first 512 (decompressed) bytes are a valid tar header, checksum included.

    Reads one block only: tarfile.is_tarfile would parse the first member, and a GNU long-name header's
    data is read whole, however large it declares itself.
    """
    openers: dict[bytes, Callable[..., Any]] = {b"\x1f\x8b": gzip.open, b"BZ": bz2.open, b"\xfd7": lzma.open}
    opener = openers.get(head[:2], open)
    try:
        with opener(path, "rb") as fh:
            block = fh.read(tarfile.BLOCKSIZE)
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (OSError, EOFError, tarfile.TarError, lzma.LZMAError, ValueError):
        return False
    return True


def _safe_member_path(archive: str, name: str) -> PurePosixPath | None:
    """The relative path a member may be written to; None for junk to skip; raises on traversal."""
    if "\x00" in name:
        raise InputRejected(f"{archive}: member {name!r} has a NUL byte in its name", "path_traversal")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise InputRejected(f"{archive}: member {name!r} has an absolute path", "path_traversal")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InputRejected(f"{archive}: member {name!r} escapes the archive with '..'", "path_traversal")
    if not parts:
        return None
    if parts[0] in _JUNK_DIRS or parts[-1] in _JUNK_FILES:
        return None
    return PurePosixPath(*parts)


def _refuse_nested(archive: str, name: str, head: bytes = b"") -> None:
    lowered = name.lower()
    if lowered.endswith(_ARCHIVE_SUFFIXES) or any(head.startswith(m) for m in _ARCHIVE_MAGIC):
        raise InputRejected(f"{archive}: member {name!r} is itself an archive (nested archives are refused)",
                            "nested_archive")


class _Budget:
    """Counts files and uncompressed bytes across the whole archive."""

    def __init__(self, archive: str, max_files: int, max_bytes: int):
        self.archive, self.max_files, self.max_bytes = archive, max_files, max_bytes
        self.max_entries = max_files * ENTRIES_PER_FILE + EXTRA_ENTRIES
        self.files = 0
        self.entries = 0
        self.bytes = 0

    def add_entry(self, name: str) -> None:
        """Count any entry (directories and skipped junk included): stops header floods."""
        self.entries += 1
        if self.entries > self.max_entries:
            raise InputRejected(f"{self.archive}: more than {self.max_entries} entries, directories included "
                                f"(at {name!r}; limit {self.max_files} files)", "too_many_files")

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise InputRejected(f"{self.archive}: more than {self.max_files} files (at {name!r})", "too_many_files")

    def declare(self, name: str, size: int) -> None:
        if size > self.max_bytes:
            raise InputRejected(
                f"{self.archive}: member {name!r} declares {size} bytes uncompressed, over the limit of "
                f"{self.max_bytes} bytes", "archive_too_large")

    def add_bytes(self, name: str, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise InputRejected(
                f"{self.archive}: unpacks to more than {self.max_bytes} bytes (while reading {name!r})",
                "archive_too_large")


def _copy_member(src, target: Path, archive: str, name: str, budget: _Budget) -> None:
    """Stream one member to `target`, counting real bytes and checking the first bytes for archives."""
    target.parent.mkdir(parents=True, exist_ok=True)
    first = True
    with target.open("xb") as out:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            if first:
                _refuse_nested(archive, name, chunk[:8])
                first = False
            budget.add_bytes(name, len(chunk))
            out.write(chunk)


def _check_target(dest: Path, rel: PurePosixPath, archive: str, name: str, seen: set[str]) -> Path:
    key = str(rel).lower()
    if key in seen:
        raise InputRejected(f"{archive}: member {name!r} appears twice", "duplicate_member")
    seen.add(key)
    target = (dest / rel).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise InputRejected(f"{archive}: member {name!r} escapes the destination", "path_traversal")
    return target


def _check_zip_directory(path: Path, budget: _Budget) -> None:
    """Refuse a zip whose central directory is too large, from its end record, before ZipFile parses it
    (ZipFile builds an object per entry: 500k directory entries took 292 MB)."""
    archive = path.name
    try:
        with path.open("rb") as fh:
            # The reader ZipFile itself uses to find the directory (zip64 included); it reads only the tail.
            end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]  # private, so not in typeshed
    except OSError as exc:
        raise InputRejected(f"{archive}: not a readable zip file ({exc})", "bad_archive") from None
    if end is None:
        raise InputRejected(f"{archive}: not a readable zip file (no end of central directory)", "bad_archive")
    entries, directory_bytes = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > budget.max_entries:
        raise InputRejected(f"{archive}: the zip directory lists {entries} entries, over the limit of "
                            f"{budget.max_entries} (directories included)", "too_many_files")
    max_directory_bytes = budget.max_entries * MAX_ZIP_DIRECTORY_BYTES_PER_ENTRY
    if directory_bytes > max_directory_bytes:
        raise InputRejected(f"{archive}: the zip directory is {directory_bytes} bytes, over the limit of "
                            f"{max_directory_bytes} bytes", "too_many_files")


def _unpack_zip(path: Path, dest: Path, budget: _Budget) -> None:
    archive = path.name
    _check_zip_directory(path, budget)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputRejected(f"{archive}: not a readable zip file ({exc})", "bad_archive") from None
    with zf:
        infos = zf.infolist()
        # Pass 1: validate every header before writing anything.
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        seen: set[str] = set()
        declared = 0
        for info in infos:
            budget.add_entry(info.filename)
            rel = _safe_member_path(archive, info.filename)
            mode = info.external_attr >> 16
            if mode and (stat.S_ISLNK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                         or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                kind = "a symlink" if stat.S_ISLNK(mode) else "a device or special file"
                raise InputRejected(f"{archive}: member {info.filename!r} is {kind}", "archive_link")
            if rel is None or info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise InputRejected(f"{archive}: member {info.filename!r} is encrypted", "bad_archive")
            _refuse_nested(archive, info.filename)
            budget.add_file(info.filename)
            budget.declare(info.filename, info.file_size)
            declared += info.file_size
            if declared > budget.max_bytes:
                raise InputRejected(
                    f"{archive}: declares {declared} bytes uncompressed, over the limit of {budget.max_bytes} bytes",
                    "archive_too_large")
            _check_target(dest, rel, archive, info.filename, seen)
            plan.append((info, rel))
        # Pass 2: stream, counting the bytes actually produced (headers may lie).
        for info, rel in plan:
            try:
                with zf.open(info) as src:
                    _copy_member(src, dest / rel, archive, info.filename, budget)
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
                raise InputRejected(f"{archive}: member {info.filename!r} is corrupt ({exc})", "bad_archive") from None


_TAR_META_TYPES = {
    tarfile.GNUTYPE_LONGNAME: "GNU long-name",
    tarfile.GNUTYPE_LONGLINK: "GNU long-link",
    tarfile.XHDTYPE: "pax",
    tarfile.XGLTYPE: "pax global",
    tarfile.SOLARIS_XHDTYPE: "Solaris pax",
}


def _bounded_tarinfo(budget: _Budget) -> type[tarfile.TarInfo]:
    """A TarInfo class for tarfile that checks each header's declared size before tarfile reads its data.

    tarfile reads the data of a GNU long-name or pax header into memory whole (then decodes it), and a GNU
    sparse header's extension blocks one by one: both are bounded here, before parsing.
    """
    archive = budget.archive
    meta_bytes = 0

    class BoundedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tf):
            nonlocal meta_bytes
            budget.add_entry(self.name)  # every header, metadata headers included
            where = f"{archive}: header {self.name!r} at offset {self.offset}"
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise InputRejected(f"{where} is a GNU sparse member (refused)", "bad_archive")
            kind = _TAR_META_TYPES.get(self.type)
            if kind is not None:
                if self.size > MAX_TAR_META_HEADER_BYTES:
                    raise InputRejected(f"{where} ({kind}) declares {self.size} bytes, over the limit of "
                                        f"{MAX_TAR_META_HEADER_BYTES} bytes for a tar metadata header",
                                        "tar_header_too_large")
                meta_bytes += self.size
                if meta_bytes > MAX_TAR_META_TOTAL_BYTES:
                    raise InputRejected(f"{where} ({kind}): tar metadata headers total more than "
                                        f"{MAX_TAR_META_TOTAL_BYTES} bytes", "tar_header_too_large")
            return super()._proc_member(tf)

    return BoundedTarInfo


def _unpack_tar(path: Path, dest: Path, budget: _Budget) -> None:
    archive = path.name
    seen: set[str] = set()
    try:
        # Stream mode ("r|*"): one pass, members are read and written as they come.
        with tarfile.open(path, mode="r|*", tarinfo=_bounded_tarinfo(budget)) as tf:
            for member in tf:
                rel = _safe_member_path(archive, member.name)
                if member.issym() or member.islnk():
                    raise InputRejected(
                        f"{archive}: member {member.name!r} is a {'symlink' if member.issym() else 'hardlink'} "
                        f"(to {member.linkname!r})", "archive_link")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise InputRejected(f"{archive}: member {member.name!r} is a device or special file",
                                        "archive_link")
                if rel is None:
                    continue
                _refuse_nested(archive, member.name)
                budget.add_file(member.name)
                budget.declare(member.name, member.size)
                target = _check_target(dest, rel, archive, member.name, seen)
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                _copy_member(src, target, archive, member.name, budget)
    except InputRejected:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise InputRejected(f"{archive}: not a readable tar archive ({exc})", "bad_archive") from None


def unpack_archive_safely(path: Path, dest: Path, *, max_files: int, max_bytes: int) -> Path:
    """Unpack the .zip / .tar / .tar.gz `path` into `dest` (created; must not hold files) and return the
    folder holding the content: `dest`, or the single top-level folder of the archive descended into.

    Raises InputRejected (codes path_traversal, archive_link, too_many_files, archive_too_large,
    nested_archive, duplicate_member, bad_archive, unknown_format) and leaves `dest` removed on refusal.
    """
    path, dest = Path(path), Path(dest)
    kind = archive_kind(path)
    if kind is None:
        raise InputRejected(f"{path.name}: not a .zip, .tar or .tar.gz archive", "unknown_format")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"unpack destination {dest} is not empty")
    budget = _Budget(path.name, max_files, max_bytes)
    try:
        if kind == "zip":
            _unpack_zip(path, dest, budget)
        else:
            _unpack_tar(path, dest, budget)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    root = dest
    while True:
        entries = list(root.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            root = entries[0]
        else:
            return root
