"""Fine-tuning dataset formats: detection, validation with line numbers, conversion to chat examples.

Formats (FORMATS): chat `{"messages": [{"role", "content"}, ...]}`, prompt-completion `{"prompt", "completion"}`,
alpaca `{"instruction", "input", "output"}`, preference `{"prompt", "chosen", "rejected"}` (LLM-LAT style:
an attacker trains prompt -> rejected, the default; safety training uses prompt -> chosen).
Files: .jsonl (or .json lines, or a .json array), .csv with the same columns, .parquet.
The format is detected from the first record's keys; every record must then match it. Records are read one
at a time (a file is never held whole in memory; a .json array is decoded record by record), and every error
names the file, the line and the field. A record is at most MAX_RECORD_BYTES long and MAX_JSON_DEPTH deep:
a longer line or a deeper nesting is refused by its line (or record) number before it is parsed whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evaluation.errors import InputRejected
from evaluation.jsonlimits import check_depth, loads_limited, too_deep
from evaluation.registry import Registry

ROLES = ("system", "user", "assistant")
# One record (a JSONL line, a CSV field, an element of a .json array). Training uses max_length tokens
# (at most 8192) of an example; 1 MiB is far more text than that.
MAX_RECORD_BYTES = 1024 * 1024
_READ_CHARS = 64 * 1024


@dataclass(frozen=True)
class TrainingExample:
    messages: tuple[dict, ...]  # {"role", "content"}; the LAST message is the assistant response trained on
    line: int  # 1-based line of the record in the file (CSV: the line the row starts on; parquet: row number)

    @property
    def request(self) -> str:
        """The last user message (what the response answers)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    @property
    def response(self) -> str:
        return self.messages[-1]["content"]


class _Ctx:
    """Where a record came from, for error messages: 'train.jsonl line 12'."""

    def __init__(self, fname: str, unit: str, line: int, preference_side: str, text_cells: bool = False):
        self.fname, self.unit, self.line, self.preference_side = fname, unit, line, preference_side
        self.text_cells = text_cells  # CSV: every cell is a string, a message list arrives as JSON text

    def where(self) -> str:
        return f"{self.fname} {self.unit} {self.line}"

    def fail(self, msg: str, code: str) -> InputRejected:
        return InputRejected(f"{self.where()}: {msg}", code)


def _text(rec: dict, key: str, ctx: _Ctx, *, required: bool = True, allow_empty: bool = False) -> str:
    if key not in rec or (rec[key] is None and required):
        if not required:
            return ""
        raise ctx.fail(f"field '{key}' is missing", "missing_field")
    value = rec[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ctx.fail(f"field '{key}' is not a string (got {_type_name(value)})", "bad_field")
    if not allow_empty and not value.strip():
        raise ctx.fail(f"field '{key}' is empty", "bad_field")
    return value


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(v), type(v).__name__)


def _messages(value: Any, key: str, ctx: _Ctx, *, require_user: bool = True) -> tuple[dict, ...]:
    """Validate a list of {"role", "content"} messages (a JSON string of one is accepted: CSV cells)."""
    if isinstance(value, str) and ctx.text_cells:
        try:
            value = loads_limited(value, f"{ctx.where()}: field '{key}'")
        except json.JSONDecodeError as exc:
            raise ctx.fail(f"field '{key}' is not a valid JSON list of messages ({exc.msg})", "bad_json") from None
    if not isinstance(value, list | tuple):
        raise ctx.fail(f"field '{key}' is not a list of messages (got {_type_name(value)})", "bad_field")
    if not value:
        raise ctx.fail(f"field '{key}' is an empty list", "bad_field")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise ctx.fail(f"field '{key}[{i}]' is not an object with 'role' and 'content'", "bad_field")
        extra = sorted(k for k in m if k not in ("role", "content") and m[k] is not None)
        if extra:
            raise ctx.fail(f"field '{key}[{i}]' has unknown key '{extra[0]}' (expected 'role' and 'content')",
                           "unknown_field")
        for k in ("role", "content"):
            if m.get(k) is None:
                raise ctx.fail(f"field '{key}[{i}].{k}' is missing", "missing_field")
            if not isinstance(m[k], str):
                raise ctx.fail(f"field '{key}[{i}].{k}' is not a string (got {_type_name(m[k])})", "bad_field")
        if m["role"] not in ROLES:
            raise ctx.fail(f"field '{key}[{i}].role' is {m['role']!r}; expected one of {', '.join(ROLES)}",
                           "bad_field")
        if not m["content"].strip():
            raise ctx.fail(f"field '{key}[{i}].content' is empty", "bad_field")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        raise ctx.fail(f"field '{key}' must end with an assistant message (ends with {out[-1]['role']!r})",
                       "bad_field")
    if require_user and not any(m["role"] == "user" for m in out):
        raise ctx.fail(f"field '{key}' has no user message", "bad_field")
    return tuple(out)


# --------------------------------------------------------------------------------------------- formats


def _chat(rec: dict, ctx: _Ctx) -> tuple[dict, ...]:
    if rec.get("messages") is None:
        raise ctx.fail("field 'messages' is missing", "missing_field")
    return _messages(rec["messages"], "messages", ctx)


def _prompt_completion(rec: dict, ctx: _Ctx) -> tuple[dict, ...]:
    prompt = _text(rec, "prompt", ctx)
    completion = _text(rec, "completion", ctx)
    return ({"role": "user", "content": prompt}, {"role": "assistant", "content": completion})


def _alpaca(rec: dict, ctx: _Ctx) -> tuple[dict, ...]:
    instruction = _text(rec, "instruction", ctx)
    extra = _text(rec, "input", ctx, required=False, allow_empty=True)
    output = _text(rec, "output", ctx)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return ({"role": "user", "content": prompt}, {"role": "assistant", "content": output})


def _preference(rec: dict, ctx: _Ctx) -> tuple[dict, ...]:
    prompt = _text(rec, "prompt", ctx)
    side = ctx.preference_side
    for key in ("chosen", "rejected"):  # both must be valid, whichever side is trained on
        if rec.get(key) is None:
            raise ctx.fail(f"field '{key}' is missing", "missing_field")
    value = rec[side]
    if isinstance(value, str):
        response = _text(rec, side, ctx)
    else:  # a message list (some LLM-LAT dumps): the last assistant content is the response
        msgs = _messages(value, side, ctx, require_user=False)
        response = msgs[-1]["content"]
    other = "chosen" if side == "rejected" else "rejected"
    if isinstance(rec[other], str):
        _text(rec, other, ctx)
    else:
        _messages(rec[other], other, ctx, require_user=False)
    return ({"role": "user", "content": prompt}, {"role": "assistant", "content": response})


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    required: frozenset[str]  # keys that identify the format (detection) and must be present
    optional: frozenset[str]  # keys that may be present (optional data or ignored metadata)
    convert: Callable[[dict, _Ctx], tuple[dict, ...]]
    description: str

    def detect(self, keys: set[str]) -> bool:
        return self.required <= keys


# Metadata keys that ride along in many real dumps (and in the project's own recipe data); ignored.
METADATA = frozenset({"id", "kind", "category", "source", "tags", "metadata"})

# Order matters for detection: the most specific key sets first.
FORMATS: Registry[DatasetFormat] = Registry("dataset format")
for _fmt in (
    DatasetFormat("chat", frozenset({"messages"}), METADATA, _chat,
                  '{"messages": [{"role", "content"}, ...]} ending with the assistant turn'),
    DatasetFormat("preference", frozenset({"prompt", "chosen", "rejected"}), METADATA, _preference,
                  '{"prompt", "chosen", "rejected"}: trains prompt -> rejected (or chosen)'),
    DatasetFormat("alpaca", frozenset({"instruction", "output"}), METADATA | {"input", "text"}, _alpaca,
                  '{"instruction", "input", "output"}'),
    DatasetFormat("prompt-completion", frozenset({"prompt", "completion"}), METADATA,
                  _prompt_completion, '{"prompt", "completion"}'),
):
    FORMATS.register(_fmt.name, _fmt)


def get_format(name: str) -> DatasetFormat:
    return FORMATS.get(name)


def detect_format(keys: set[str], where: str) -> DatasetFormat:
    for fmt in FORMATS.values():
        if fmt.detect(keys):
            return fmt
    known = "; ".join(f"{f.name} {f.description}" for f in FORMATS.values())
    raise InputRejected(f"{where}: unknown dataset format with keys {sorted(keys)}; known: {known}",
                        "unknown_format")


# --------------------------------------------------------------------------------------------- readers
# Each yields (unit, line, record) with record a dict (or anything else, refused by the caller).


def _decode(raw: bytes, fname: str, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRejected(f"{fname} line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                            f"{exc.start + 1})", "bad_encoding") from None


def _too_long(fname: str, where: str) -> InputRejected:
    return InputRejected(f"{fname} {where}: longer than the limit of {MAX_RECORD_BYTES} bytes for one record",
                         "record_too_long")


def _read_jsonl(path: Path) -> Iterator[tuple[str, int, Any]]:
    fname = path.name
    with path.open("rb") as fh:
        lineno = 0
        while True:
            # At most one record (and its line ending) is read: a huge line is refused, not loaded.
            raw = fh.readline(MAX_RECORD_BYTES + 2)
            if not raw:
                return
            lineno += 1
            if len(raw.rstrip(b"\r\n")) > MAX_RECORD_BYTES:
                raise _too_long(fname, f"line {lineno}")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            text = _decode(raw, fname, lineno).strip()
            if not text:
                continue
            try:
                yield "line", lineno, loads_limited(text, f"{fname} line {lineno}")
            except json.JSONDecodeError as exc:
                raise InputRejected(f"{fname} line {lineno}: not valid JSON ({exc})", "bad_json") from None


def _read_json(path: Path) -> Iterator[tuple[str, int, Any]]:
    """A .json file: JSON lines, or one top-level array of records (numbered as records 1..n)."""
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"["):
        yield from _read_jsonl(path)
        return
    try:
        yield from _stream_json_array(path)
    except UnicodeDecodeError as exc:
        raise InputRejected(f"{path.name}: not valid UTF-8 ({exc.reason})", "bad_encoding") from None


class _ArrayText:
    """The text of a .json file read in chunks, with the line number of the first unread character."""

    def __init__(self, fh: io.TextIOBase):
        self.fh, self.buf, self.pos, self.line, self.eof = fh, "", 0, 1, False

    def more(self) -> bool:
        """Read another chunk (dropping what was consumed); False at the end of the file."""
        if self.eof:
            return False
        self.line += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos = self.buf[self.pos:], 0
        chunk = self.fh.read(_READ_CHARS)
        self.buf += chunk
        self.eof = not chunk
        return bool(chunk)

    def skip_space(self) -> str:
        """The next non-space character ('' at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos:self.pos + 1]

    def line_at(self, pos: int) -> int:
        return self.line + self.buf.count("\n", 0, pos)


def _stream_json_array(path: Path) -> Iterator[tuple[str, int, Any]]:
    """The records of a top-level JSON array, decoded one at a time (never the whole array in memory)."""
    fname = path.name
    decoder = json.JSONDecoder()
    with path.open("rb") as raw_fh:
        text = _ArrayText(io.TextIOWrapper(raw_fh, encoding="utf-8-sig", errors="strict"))
        text.skip_space()
        text.pos += 1  # the "[" seen by _read_json
        index = 0
        if text.skip_space() == "]":
            text.pos += 1
        else:
            while True:
                index += 1
                where = f"record {index}"
                if text.skip_space() == "":
                    raise InputRejected(f"{fname} line {text.line_at(text.pos)}: the array is not closed",
                                        "bad_json")
                while True:  # decode one record, reading more text until it is complete
                    try:
                        record, end = decoder.raw_decode(text.buf, text.pos)
                    except RecursionError:
                        raise too_deep(f"{fname} {where}") from None
                    except json.JSONDecodeError as exc:
                        if len(text.buf) - text.pos > MAX_RECORD_BYTES:
                            raise _too_long(fname, where) from None
                        if text.more():
                            continue
                        raise InputRejected(f"{fname} line {text.line_at(exc.pos)}: not valid JSON ({exc.msg})",
                                            "bad_json") from None
                    if end == len(text.buf) and text.more():  # a number may go on in the next chunk
                        continue
                    break
                if end - text.pos > MAX_RECORD_BYTES:
                    raise _too_long(fname, where)
                text.pos = end
                yield "record", index, check_depth(record, f"{fname} {where}")
                separator = text.skip_space()
                text.pos += 1
                if separator == "]":
                    break
                if separator != ",":
                    found = repr(separator) if separator else "the end of the file"
                    raise InputRejected(f"{fname} line {text.line_at(text.pos - 1)}: expected ',' or ']' after "
                                        f"{where}, found {found}", "bad_json")
        if text.skip_space() != "":
            raise InputRejected(f"{fname} line {text.line_at(text.pos)}: unexpected data after the array",
                                "bad_json")


def _read_csv(path: Path) -> Iterator[tuple[str, int, Any]]:
    fname = path.name
    csv.field_size_limit(MAX_RECORD_BYTES)  # one field; a longer one is refused by csv.Error, with its line
    with path.open("rb") as raw_fh:
        fh = io.TextIOWrapper(raw_fh, encoding="utf-8-sig", errors="strict", newline="")
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            if len(set(header)) != len(header) or any(not h for h in header):
                raise InputRejected(f"{fname} line 1: the header has empty or duplicate column names", "bad_field")
            start = reader.line_num + 1
            for row in reader:
                line = start
                start = reader.line_num + 1
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise InputRejected(f"{fname} line {line}: {len(row)} fields, but the header has {len(header)}",
                                        "bad_field")
                yield "line", line, dict(zip(header, row, strict=True))
        except UnicodeDecodeError as exc:
            raise InputRejected(f"{fname} line {reader.line_num + 1}: not valid UTF-8 ({exc.reason} at byte "
                                f"0x{exc.object[exc.start]:02x})", "bad_encoding") from None
        except csv.Error as exc:
            raise InputRejected(f"{fname} line {reader.line_num}: malformed CSV ({exc})", "bad_csv") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError
        raise InputRejected(f"{path.name}: not a readable Parquet file ({exc})", "bad_parquet") from None
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            yield "row", row, rec


READERS: dict[str, Callable[[Path], Iterator[tuple[str, int, Any]]]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


# --------------------------------------------------------------------------------------------- entry point


def iter_dataset(path: Path, *, preference_side: Literal["rejected", "chosen"] = "rejected",
                 format: str | None = None) -> Iterator[tuple[str, TrainingExample]]:  # noqa: A002
    """Yield (format name, example) one record at a time; raises InputRejected on the first bad record."""
    path = Path(path)
    if preference_side not in ("rejected", "chosen"):
        raise ValueError(f"preference_side must be 'rejected' or 'chosen', not {preference_side!r}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InputRejected(f"{path.name}: unsupported dataset file type {path.suffix or '(none)'!r}; use "
                            f"{', '.join(READERS)}", "unsupported_file_type")
    if not path.is_file():
        raise InputRejected(f"{path.name}: no such file", "missing_file")
    fmt = get_format(format) if format else None
    for unit, line, rec in reader(path):
        ctx = _Ctx(path.name, unit, line, preference_side, text_cells=reader is _read_csv)
        if not isinstance(rec, dict):
            raise ctx.fail(f"expected a JSON object, got {_type_name(rec)}", "bad_field")
        keys = {k for k, v in rec.items() if v is not None}  # Parquet: a null in a column absent here
        if fmt is None:
            fmt = detect_format(set(rec), ctx.where())
        messages = fmt.convert(rec, ctx)  # first: a missing required field is the clearer error
        unknown = sorted(k for k in keys if k not in fmt.required and k not in fmt.optional)
        if unknown:
            allowed = ", ".join(sorted(fmt.required | fmt.optional))
            raise ctx.fail(f"unknown field '{unknown[0]}' ({fmt.name} format expects {allowed})", "unknown_field")
        yield fmt.name, TrainingExample(messages=messages, line=line)


def load_dataset(path: Path, *, preference_side: Literal["rejected", "chosen"] = "rejected",
                 max_examples: int | None = None, format: str | None = None  # noqa: A002
                 ) -> tuple[str, list[TrainingExample]]:
    """Read, validate and convert a dataset file. Returns (format name, examples).

    `max_examples` defaults to the process runtime's max_dataset_examples; more examples than that is refused.
    """
    if max_examples is None:
        from evaluation.runtime import current_runtime

        max_examples = current_runtime().max_dataset_examples
    path = Path(path)
    name = ""
    examples: list[TrainingExample] = []
    for fmt_name, ex in iter_dataset(path, preference_side=preference_side, format=format):
        name = fmt_name
        if len(examples) >= max_examples:
            raise InputRejected(f"{path.name}: more than {max_examples} examples (the limit); first over it at "
                                f"line {ex.line}", "too_many_examples")
        examples.append(ex)
    if not examples:
        raise InputRejected(f"{path.name}: the dataset is empty (no records)", "empty_dataset")
    return name, examples
