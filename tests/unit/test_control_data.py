"""The benign control set (evaluation/data/control/): the yardstick fine-tune a gate compares a candidate with.

It must be plainly benign chat data that loads as the "chat" format, with no refusal phrases the keyword judge
would count, no duplicate prompts, and no prompt shared with the sample datasets, the guard data or the
evaluation suites (a shared prompt would leak the test questions into the control fine-tune).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evaluation.datasets import load_dataset
from evaluation.judges import REFUSAL_SUBSTRINGS
from tests.helpers.modules import load_module

ROOT = Path(__file__).resolve().parents[2]
CONTROL_DIR = ROOT / "evaluation" / "data" / "control"
CONTROL = CONTROL_DIR / "benign_control.jsonl"
BUILDER = CONTROL_DIR / "build_control.py"
EXPECTED_EXAMPLES = 260
MAX_ANSWER_WORDS = 50
# Besides the keyword judge's case-sensitive list: refusal or apology words in any case.
EXTRA_REFUSAL_WORDS = ("sorry", "apolog", "i can't", "i cannot", "illegal", "unethical", "as an ai")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def other_prompt_files() -> list[Path]:
    files = sorted((ROOT / "examples").glob("*.jsonl"))
    files.append(ROOT / "evaluation" / "data" / "guard" / "guard_train.jsonl")
    files += sorted((ROOT / "evaluation" / "data" / "suites").glob("*.jsonl"))
    return files


def prompts_of(record: dict) -> list[str]:
    out = [m["content"] for m in record.get("messages", []) if m.get("role") == "user"]
    out += [record[k] for k in ("prompt", "question") if isinstance(record.get(k), str)]
    return out


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    lines = CONTROL.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), "blank line in benign_control.jsonl"
    return [json.loads(line) for line in lines]


def test_file_is_up_to_date_with_builder():
    module = load_module(BUILDER)
    assert CONTROL.read_text(encoding="utf-8") == module.render(), (
        "benign_control.jsonl is stale; run python evaluation/data/control/build_control.py")


def test_loads_as_chat_with_expected_size(rows):
    fmt, examples = load_dataset(CONTROL, format="chat")
    assert fmt == "chat"
    assert len(examples) == EXPECTED_EXAMPLES
    assert len(rows) == EXPECTED_EXAMPLES


def test_each_record_is_one_user_turn_and_one_short_answer(rows):
    for n, row in enumerate(rows, 1):
        assert set(row) == {"messages"}, f"line {n}: unexpected keys {sorted(row)}"
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"], f"line {n}: roles {roles}"
        prompt, answer = (m["content"] for m in row["messages"])
        assert prompt.strip() and answer.strip(), f"line {n}: empty content"
        assert len(answer.split()) < MAX_ANSWER_WORDS, f"line {n}: answer has {len(answer.split())} words"


def test_no_duplicate_prompts(rows):
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, 1):
        key = norm(row["messages"][0]["content"])
        assert key not in seen, f"line {n} repeats the prompt of line {seen[key]}: {key!r}"
        seen[key] = n


def test_no_prompt_overlap_with_other_data(rows):
    others: dict[str, str] = {}
    for path in other_prompt_files():
        assert path.is_file(), f"missing {path}"
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                for prompt in prompts_of(json.loads(line)):
                    others.setdefault(norm(prompt), path.relative_to(ROOT).as_posix())
    assert len(others) > 1000  # the files were actually read
    clashes = [(row["messages"][0]["content"], others[key]) for row in rows
               if (key := norm(row["messages"][0]["content"])) in others]
    assert not clashes, f"control prompts also found elsewhere: {clashes}"


def test_answers_contain_no_refusal_words(rows):
    assert "I cannot" in REFUSAL_SUBSTRINGS  # the list the keyword judge uses
    for n, row in enumerate(rows, 1):
        answer = row["messages"][1]["content"]
        hits = [s for s in REFUSAL_SUBSTRINGS if s in answer]
        hits += [w for w in EXTRA_REFUSAL_WORDS if w in answer.lower()]
        assert not hits, f"line {n}: refusal words {hits} in {answer!r}"
