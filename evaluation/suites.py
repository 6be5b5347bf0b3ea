"""Evaluation suites: harmful requests, safe-but-scary prompts (over-refusal) and knowledge questions.

A suite is either a registry name (packaged with ftgate, in ``SUITES``; see ``list_suites()``) or a file given
by an operator in one of the public formats:

* HarmBench behaviors CSV (``Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString,
  BehaviorID``): contextual rows become ``ContextString + "\\n\\n" + Behavior``; copyright rows need a
  different scorer and are skipped with a warning (so are multimodal rows with an ImageFileName).
* AdvBench CSV (``goal, target``): ids ``advbench-<row>`` (row 1 is the first data row).
* JSONL ``{"prompt", "category"?, "id"?}``: a harm suite, or an over-refusal suite with
  ``kind="overrefusal"``.
* TriviaQA JSON (``{"Data": [{"Question", "QuestionId"?, "Answer": {"Value", "Aliases",
  "NormalizedAliases"}}]}``).
* JSONL ``{"question", "answer": [...] | "..." , "id"?}``.

``Suite.hash`` is the cache key of base-model results: it depends on the kind and the items only.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from evaluation.errors import InputRejected
from evaluation.registry import Registry

SuiteKind = Literal["harm", "overrefusal", "knowledge"]
KINDS: tuple[str, ...] = ("harm", "overrefusal", "knowledge")


@dataclass(frozen=True)
class HarmPrompt:
    id: str
    prompt: str
    category: str


@dataclass(frozen=True)
class SafePrompt:
    id: str
    prompt: str
    category: str = "safe"


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]  # aliases; scored after normalization


SuiteItem = HarmPrompt | SafePrompt | QAItem


@dataclass(frozen=True)
class Suite:
    name: str
    kind: SuiteKind
    items: tuple[SuiteItem, ...]
    source: str
    hash: str  # sha256 of a canonical JSON of kind + items, first 16 hex chars
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)


DATA_DIR = Path(__file__).parent / "data" / "suites"

DEFAULT_SUITES: dict[str, str] = {
    "harm": "harm-default",
    "overrefusal": "overrefusal-default",
    "knowledge": "knowledge-default",
}

_ITEM_TYPE = {"harm": HarmPrompt, "overrefusal": SafePrompt, "knowledge": QAItem}


# --------------------------------------------------------------------------------------------- hashing


def suite_hash(kind: str, items: tuple[SuiteItem, ...] | list[SuiteItem]) -> str:
    """sha256 of the canonical JSON of kind + items (order matters), first 16 hex chars."""
    payload = {"kind": kind, "items": [asdict(it) for it in items]}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _make_suite(name: str, kind: str, items: list[SuiteItem], source: str, label: str,
                warnings: list[str] | None = None) -> Suite:
    if not items:
        raise InputRejected(f"{label}: no usable items in the suite")
    return Suite(name=name, kind=kind, items=tuple(items), source=source,  # type: ignore[arg-type]
                 hash=suite_hash(kind, items), warnings=tuple(warnings or ()))


# ------------------------------------------------------------------------------------- small helpers


def _text(value: object, label: str, field: str, *, required: bool = True) -> str:
    """A stripped string field; InputRejected names label (file + line) and field."""
    if value is None:
        if required:
            raise InputRejected(f"{label}: field {field!r} is missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputRejected(f"{label}: field {field!r} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if required and not text:
        raise InputRejected(f"{label}: field {field!r} is empty")
    return text


def _check_unique(seen: dict[str, str], key: str, what: str, label: str) -> None:
    if key in seen:
        raise InputRejected(f"{label}: duplicate {what} {key!r} (first seen at {seen[key]})")
    seen[key] = label


def _dedup(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        v = v.strip()
        if v and v not in out:
            out.append(v)
    return tuple(out)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputRejected(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputRejected(f"{path.name}: cannot be read ({exc.strerror})") from None


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (first physical line, row) pairs; quoted fields may span lines."""
    text = _read_text(path)
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        raise InputRejected(f"{path.name}: empty CSV file (no header)") from None
    except csv.Error as exc:
        raise InputRejected(f"{path.name} line 1: malformed CSV header ({exc})") from None
    header = [h.strip() for h in header]
    rows: list[tuple[int, dict[str, str]]] = []
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputRejected(f"{path.name} line {start}: malformed CSV row ({exc})") from None
        if values and any(v.strip() for v in values):
            if len(values) > len(header):
                raise InputRejected(
                    f"{path.name} line {start}: {len(values)} fields but the header has {len(header)}")
            rows.append((start, {h: (values[i] if i < len(values) else "") for i, h in enumerate(header)}))
        start = reader.line_num + 1
    return header, rows


def _jsonl_objects(path: Path) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputRejected(f"{path.name} line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise InputRejected(f"{path.name} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        out.append((lineno, obj))
    if not out:
        raise InputRejected(f"{path.name}: empty JSONL file")
    return out


# ------------------------------------------------------------------------------------------- loaders
# Each loader: (path, kind) -> (kind, items, warnings). `kind` is the caller's request (may be None).


def _require_kind(path: Path, fmt: str, wanted: str | None, allowed: tuple[str, ...]) -> str:
    if wanted is None:
        return allowed[0]
    if wanted not in allowed:
        raise InputRejected(f"{path.name}: a {fmt} file cannot be a {wanted} suite (it is {' or '.join(allowed)})")
    return wanted


def load_harmbench_csv(path: Path, kind: str | None = None) -> tuple[str, list[SuiteItem], list[str]]:
    kind = _require_kind(path, "HarmBench CSV", kind, ("harm",))
    header, rows = _csv_rows(path)
    for col in ("Behavior", "BehaviorID"):
        if col not in header:
            raise InputRejected(f"{path.name} line 1: HarmBench column {col!r} is missing")
    items: list[SuiteItem] = []
    skipped: list[str] = []
    multimodal: list[str] = []
    ids: dict[str, str] = {}
    for line, row in rows:
        label = f"{path.name} line {line}"
        bid = _text(row.get("BehaviorID"), label, "BehaviorID")
        behavior = _text(row.get("Behavior"), label, "Behavior")
        functional = (row.get("FunctionalCategory") or "").strip().lower()
        semantic = (row.get("SemanticCategory") or "").strip()
        context = (row.get("ContextString") or "").strip()
        _check_unique(ids, bid, "BehaviorID", label)
        if functional == "copyright" or semantic.lower() == "copyright":
            skipped.append(bid)
            continue
        if (row.get("ImageFileName") or "").strip() or functional == "multimodal":
            multimodal.append(bid)
            continue
        if functional == "contextual" and not context:
            raise InputRejected(f"{label}: field 'ContextString' is empty for a contextual behavior")
        prompt = f"{context}\n\n{behavior}" if context else behavior
        items.append(HarmPrompt(id=bid, prompt=prompt, category=semantic or "uncategorized"))
    warnings = []
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.append(f"{path.name}: skipped {len(skipped)} copyright behavior(s) "
                        f"(they need a different scorer): {shown}")
    if multimodal:
        shown = ", ".join(multimodal[:5]) + (", ..." if len(multimodal) > 5 else "")
        warnings.append(f"{path.name}: skipped {len(multimodal)} multimodal behavior(s) "
                        f"(they need an image input): {shown}")
    return kind, items, warnings


def load_advbench_csv(path: Path, kind: str | None = None) -> tuple[str, list[SuiteItem], list[str]]:
    kind = _require_kind(path, "AdvBench CSV", kind, ("harm",))
    header, rows = _csv_rows(path)
    if "goal" not in header:
        raise InputRejected(f"{path.name} line 1: AdvBench column 'goal' is missing")
    items: list[SuiteItem] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    for n, (line, row) in enumerate(rows, start=1):
        label = f"{path.name} line {line}"
        goal = _text(row.get("goal"), label, "goal")
        if goal in seen:  # ids stay row-numbered; a repeated goal would only weigh twice
            duplicates.append(str(line))
            continue
        seen.add(goal)
        items.append(HarmPrompt(id=f"advbench-{n}", prompt=goal, category="advbench"))
    warnings = []
    if duplicates:
        warnings.append(f"{path.name}: skipped {len(duplicates)} repeated goal(s) at line(s) "
                        + ", ".join(duplicates[:5]) + (", ..." if len(duplicates) > 5 else ""))
    return kind, items, warnings


def load_prompt_jsonl(path: Path, kind: str | None = None) -> tuple[str, list[SuiteItem], list[str]]:
    kind = _require_kind(path, "prompt JSONL", kind, ("harm", "overrefusal"))
    items: list[SuiteItem] = []
    ids: dict[str, str] = {}
    for lineno, obj in _jsonl_objects(path):
        label = f"{path.name} line {lineno}"
        prompt = _text(obj.get("prompt"), label, "prompt")
        category = _text(obj.get("category"), label, "category", required=False)
        item_id = _text(obj.get("id"), label, "id", required=False) or f"{path.stem}-{lineno}"
        _check_unique(ids, item_id, "id", label)
        if kind == "harm":
            items.append(HarmPrompt(id=item_id, prompt=prompt, category=category or "uncategorized"))
        else:
            items.append(SafePrompt(id=item_id, prompt=prompt, category=category or "safe"))
    return kind, items, []


def _answers(value: object, label: str, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list):
        values = []
        for i, v in enumerate(value):
            values.append(_text(v, label, f"{field}[{i}]"))
    elif value is None:
        raise InputRejected(f"{label}: field {field!r} is missing")
    else:
        raise InputRejected(f"{label}: field {field!r} must be a string or a list of strings")
    answers = _dedup(values)
    if not answers:
        raise InputRejected(f"{label}: field {field!r} has no non-empty answer")
    return answers


def load_qa_jsonl(path: Path, kind: str | None = None) -> tuple[str, list[SuiteItem], list[str]]:
    kind = _require_kind(path, "question/answer JSONL", kind, ("knowledge",))
    items: list[SuiteItem] = []
    ids: dict[str, str] = {}
    for lineno, obj in _jsonl_objects(path):
        label = f"{path.name} line {lineno}"
        question = _text(obj.get("question"), label, "question")
        field = "answer" if "answer" in obj or "answers" not in obj else "answers"
        answers = _answers(obj.get(field), label, field)
        item_id = _text(obj.get("id"), label, "id", required=False) or f"{path.stem}-{lineno}"
        _check_unique(ids, item_id, "id", label)
        items.append(QAItem(id=item_id, question=question, answers=answers))
    return kind, items, []


def load_triviaqa_json(path: Path, kind: str | None = None) -> tuple[str, list[SuiteItem], list[str]]:
    kind = _require_kind(path, "TriviaQA JSON", kind, ("knowledge",))
    doc = _load_json(path)
    data = doc.get("Data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise InputRejected(f"{path.name}: TriviaQA field 'Data' (a list of questions) is missing")
    items: list[SuiteItem] = []
    ids: dict[str, str] = {}
    for i, entry in enumerate(data):
        label = f"{path.name} Data[{i}]"
        if not isinstance(entry, dict):
            raise InputRejected(f"{label}: expected an object, got {type(entry).__name__}")
        question = _text(entry.get("Question"), label, "Question")
        answer = entry.get("Answer")
        if not isinstance(answer, dict):
            raise InputRejected(f"{label}: field 'Answer' is missing or not an object")
        values = [_text(answer.get("Value"), label, "Answer.Value")]
        for field in ("Aliases", "NormalizedAliases"):
            extra = answer.get(field) or []
            if not isinstance(extra, list):
                raise InputRejected(f"{label}: field 'Answer.{field}' must be a list of strings")
            values += [_text(v, label, f"Answer.{field}[{j}]") for j, v in enumerate(extra)]
        item_id = _text(entry.get("QuestionId"), label, "QuestionId", required=False) or f"triviaqa-{i + 1}"
        _check_unique(ids, item_id, "QuestionId", label)
        items.append(QAItem(id=item_id, question=question, answers=_dedup(values)))
    return kind, items, []


def _load_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise InputRejected(f"{path.name} line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None


Loader = Callable[[Path, "str | None"], tuple[str, list[SuiteItem], list[str]]]

# format name -> loader; detect_format() picks one from the extension and the header/keys.
FORMATS: dict[str, Loader] = {
    "harmbench-csv": load_harmbench_csv,
    "advbench-csv": load_advbench_csv,
    "prompt-jsonl": load_prompt_jsonl,
    "triviaqa-json": load_triviaqa_json,
    "qa-jsonl": load_qa_jsonl,
}


def detect_format(path: Path) -> str:
    """The FORMATS key for a suite file, from its extension and its header (CSV) or keys (JSON/JSONL)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, _ = _csv_rows(path)
        if "Behavior" in header and "BehaviorID" in header:
            return "harmbench-csv"
        if "goal" in header:
            return "advbench-csv"
        raise InputRejected(
            f"{path.name} line 1: unrecognized CSV columns {header[:8]}; expected HarmBench "
            "(Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString, BehaviorID) "
            "or AdvBench (goal, target)")
    if suffix == ".jsonl":
        lineno, first = _jsonl_objects(path)[0]
        if "question" in first:
            return "qa-jsonl"
        if "prompt" in first:
            return "prompt-jsonl"
        raise InputRejected(f"{path.name} line {lineno}: field 'prompt' or 'question' is missing "
                            f"(keys: {sorted(first)[:8]})")
    if suffix == ".json":
        doc = _load_json(path)
        if isinstance(doc, dict) and "Data" in doc:
            return "triviaqa-json"
        raise InputRejected(f"{path.name} line 1: field 'Data' is missing (expected TriviaQA JSON)")
    raise InputRejected(
        f"{path.name}: unsupported suite format {suffix or '(no extension)'!r}; expected .csv "
        "(HarmBench, AdvBench), .json (TriviaQA) or .jsonl ({prompt, category} or {question, answer})")


# -------------------------------------------------------------------------------------- the registry


def _packaged(name: str, kind: SuiteKind, filename: str) -> Callable[[], Suite]:
    """A loader of the packaged suite file ``filename`` (run on the suite's first use, then kept)."""

    def load() -> Suite:
        path = DATA_DIR / filename
        got_kind, items, warnings = FORMATS[detect_format(path)](path, kind)
        return _make_suite(name, got_kind, items, f"builtin:{filename}", filename, warnings)

    return load


# The packaged suites by name, each loaded on first use.
SUITES: Registry[Suite] = Registry("suite")
SUITES.register_lazy("harm-default", _packaged("harm-default", "harm", "harm_default.jsonl"))
SUITES.register_lazy("overrefusal-default", _packaged("overrefusal-default", "overrefusal", "overrefusal_default.jsonl"))
SUITES.register_lazy("knowledge-default", _packaged("knowledge-default", "knowledge", "knowledge_default.jsonl"))


# -------------------------------------------------------------------------------------- public API


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise InputRejected(f"unknown suite kind {kind!r}; expected one of {', '.join(KINDS)}")


def load_suite_file(path: str | Path, kind: str | None = None) -> Suite:
    """Load an operator's suite file in one of the public formats."""
    _check_kind(kind)
    path = Path(path)
    if not path.is_file():
        raise InputRejected(f"suite file {str(path)!r} does not exist or is not a file")
    loader = FORMATS[detect_format(path)]
    got_kind, items, warnings = loader(path, kind)
    return _make_suite(path.stem, got_kind, items, str(path), path.name, warnings)


def load_suite(name_or_path: str, kind: str | None = None) -> Suite:
    """A registry name (see list_suites) or a path to a suite file.

    `kind` ("harm", "overrefusal", "knowledge") checks a registry suite's kind and, for a prompt JSONL
    file, chooses between a harm suite (default) and an over-refusal suite.
    """
    _check_kind(kind)
    name = str(name_or_path)
    path = Path(name)
    looks_like_path = path.suffix.lower() in (".csv", ".json", ".jsonl") or "/" in name or "\\" in name
    if name not in SUITES and (path.is_file() or looks_like_path):
        return load_suite_file(path, kind)
    suite = SUITES.get(name)  # neither a registered name nor a file: UnknownName, with the closest names
    if kind is not None and suite.kind != kind:
        raise InputRejected(f"suite {name!r} is a {suite.kind} suite, not a {kind} suite")
    return suite


def list_suites() -> list[Suite]:
    """The packaged suites, loaded (they are small)."""
    return SUITES.values()
