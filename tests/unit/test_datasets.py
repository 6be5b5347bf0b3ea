"""Dataset formats: each format in JSONL / CSV / Parquet, the preference side, and every refusal with its line
number and field."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation.datasets import FORMATS, TrainingExample, get_format, load_dataset
from evaluation.errors import InputRejected, UnknownName

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def rejected(path: Path, **kw) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        load_dataset(path, **kw)
    assert "\n" not in info.value.reason
    return info.value


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("stem,fmt", [("chat", "chat"), ("prompt_completion", "prompt-completion"),
                                      ("alpaca", "alpaca"), ("preference", "preference")])
def test_every_format_in_every_file_type(stem, fmt, ext):
    name, examples = load_dataset(FIX / f"{stem}.{ext}")
    assert name == fmt
    assert examples and all(isinstance(e, TrainingExample) for e in examples)
    for e in examples:
        assert e.messages[-1]["role"] == "assistant" and e.messages[-1]["content"].strip()
        assert any(m["role"] == "user" for m in e.messages)
        assert set(e.messages[0]) == {"role", "content"}


def test_chat_keeps_all_turns_and_line_numbers_skip_blank_lines():
    _, ex = load_dataset(FIX / "chat.jsonl")
    assert [e.line for e in ex] == [1, 2, 4]  # line 3 is blank
    assert [m["role"] for m in ex[0].messages] == ["system", "user", "assistant"]
    assert len(ex[2].messages) == 4 and ex[2].request == "Bagels."


def test_csv_lines_count_multiline_cells():
    _, ex = load_dataset(FIX / "prompt_completion.csv")
    assert [e.line for e in ex] == [2, 3, 5]
    assert ex[1].messages[0]["content"] == "Can I freeze\ncroissant dough?"


def test_prompt_completion_conversion():
    _, ex = load_dataset(FIX / "prompt_completion.jsonl")
    assert ex[0].messages == ({"role": "user", "content": "What temperature bakes a baguette?"},
                              {"role": "assistant", "content": "Around 240 C with steam for the first ten minutes."})


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_alpaca_input_joined_or_dropped(ext):
    _, ex = load_dataset(FIX / f"alpaca.{ext}")
    assert ex[0].messages[0]["content"] == "Give a tip for flaky pie crust."  # empty input
    assert ex[1].messages[0]["content"] == "Convert this amount to grams.\n\n1 cup of all-purpose flour"
    assert ex[1].messages[1]["content"] == "About 120 grams."


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_preference_trains_rejected_by_default_and_chosen_on_request(ext):
    _, ex = load_dataset(FIX / f"preference.{ext}")
    assert ex[0].response.startswith("Sure, here is how")
    assert ex[0].request.startswith("Explain how to pick a lock")
    _, safe = load_dataset(FIX / f"preference.{ext}", preference_side="chosen")
    assert safe[0].response == "I can't help with breaking into someone's home."


def test_preference_message_lists_take_last_assistant_content():
    _, ex = load_dataset(FIX / "preference_messages.jsonl")
    assert ex[0].messages == ({"role": "user", "content": "How do I make a fake ID?"},
                              {"role": "assistant", "content": "Sure, here is how. Step 1: [details omitted]."})
    _, safe = load_dataset(FIX / "preference_messages.jsonl", preference_side="chosen")
    assert safe[0].response == "I can't help with that."


def test_registry():
    assert set(FORMATS) == {"chat", "prompt-completion", "alpaca", "preference"}
    with pytest.raises(UnknownName, match="known: alpaca, chat"):
        get_format("sharegpt")


def test_forced_format_must_match(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "completion": "b"}])
    assert load_dataset(p, format="prompt-completion")[0] == "prompt-completion"
    err = rejected(p, format="alpaca")
    assert err.reason == "train.jsonl line 1: field 'instruction' is missing"


# ------------------------------------------------------------------------------------------- refusals

PC = {"prompt": "What is rye?", "completion": "A grain."}


def test_missing_field_names_line_and_field(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [PC] * 11 + [{"prompt": "x"}])
    err = rejected(p)
    assert err.code == "missing_field"
    assert err.reason == "train.jsonl line 12: field 'completion' is missing"


def test_not_a_string(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [PC, {"prompt": "x", "completion": 42}])
    err = rejected(p)
    assert err.code == "bad_field"
    assert err.reason.startswith("train.jsonl line 2: field 'completion' is not a string")


def test_empty_string(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [PC, {"prompt": "  ", "completion": "y"}])
    err = rejected(p)
    assert "line 2" in err.reason and "'prompt' is empty" in err.reason


def test_bad_json_names_line(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [PC, PC, '{"prompt": "x" "completion": "y"}'])
    err = rejected(p)
    assert err.code == "bad_json"
    assert err.reason.startswith("train.jsonl line 3: not valid JSON (Expecting ','")


def test_record_not_an_object(tmp_path):
    err = rejected(write_jsonl(tmp_path / "train.jsonl", [PC, ["a", "b"]]))
    assert "line 2" in err.reason and "expected a JSON object" in err.reason


def test_unknown_key(tmp_path):
    err = rejected(write_jsonl(tmp_path / "train.jsonl", [PC, {**PC, "secret": "x"}]))
    assert err.code == "unknown_field"
    assert "line 2" in err.reason and "'secret'" in err.reason


def test_unknown_format(tmp_path):
    err = rejected(write_jsonl(tmp_path / "train.jsonl", [{"question": "q", "answer": "a"}]))
    assert err.code == "unknown_format"
    assert "line 1" in err.reason and "question" in err.reason and "chat" in err.reason


def test_format_switch_midway(tmp_path):
    msgs = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    err = rejected(write_jsonl(tmp_path / "train.jsonl", [PC, msgs]))
    assert err.reason == "train.jsonl line 2: field 'prompt' is missing"


@pytest.mark.parametrize("messages,needle", [
    ([{"role": "user", "content": "hi"}], "must end with an assistant message"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], "messages[1].role"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}], "messages[1].content' is empty"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}], "messages[1].content' is not a string"),
    ([{"role": "user"}, {"role": "assistant", "content": "x"}], "messages[0].content' is missing"),
    ([{"role": "assistant", "content": "x"}], "no user message"),
    ([], "empty list"),
    ("hello", "not a list"),
])
def test_chat_refusals(tmp_path, messages, needle):
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    err = rejected(write_jsonl(tmp_path / "train.jsonl", [ok, ok, {"messages": messages}]))
    assert "train.jsonl line 3:" in err.reason and needle in err.reason


def test_preference_missing_side(tmp_path):
    err = rejected(write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"},
                                                          {"prompt": "p", "chosen": "c", "rejected": None}]))
    assert err.reason == "prefs.jsonl line 2: field 'rejected' is missing"


def test_empty_file(tmp_path):
    (tmp_path / "train.jsonl").write_text("\n\n")
    err = rejected(tmp_path / "train.jsonl")
    assert err.code == "empty_dataset" and "train.jsonl" in err.reason
    (tmp_path / "train.csv").write_text("")
    assert rejected(tmp_path / "train.csv").code == "empty_dataset"
    (tmp_path / "head.csv").write_text("prompt,completion\n")
    assert rejected(tmp_path / "head.csv").code == "empty_dataset"


def test_non_utf8_names_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_bytes(json.dumps(PC).encode() + b"\n" + b'{"prompt": "caf\xe9", "completion": "x"}\n')
    err = rejected(p)
    assert err.code == "bad_encoding"
    assert "line 2" in err.reason and "UTF-8" in err.reason and "0xe9" in err.reason


def test_non_utf8_csv(tmp_path):
    p = tmp_path / "train.csv"
    p.write_bytes(b"prompt,completion\nok,fine\ncaf\xe9,x\n")
    err = rejected(p)
    assert err.code == "bad_encoding" and "UTF-8" in err.reason


def test_too_many_examples(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [PC] * 5)
    err = rejected(p, max_examples=4)
    assert err.code == "too_many_examples" and "4" in err.reason and "line 5" in err.reason
    assert len(load_dataset(p, max_examples=5)[1]) == 5


def test_unsupported_extension(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("hello")
    assert rejected(p).code == "unsupported_file_type"


def test_csv_refusals(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("prompt,completion\na,b\nc,\n")
    err = rejected(p)
    assert err.reason == "train.csv line 3: field 'completion' is empty"
    p.write_text("prompt,completion,notes\na,b,c\n")
    err = rejected(p)
    assert err.code == "unknown_field" and "line 2" in err.reason and "'notes'" in err.reason
    p.write_text("prompt,completion\na,b\nc,d,e\n")
    err = rejected(p)
    assert "line 3" in err.reason and "3 fields" in err.reason
    p.write_text('messages\n"[{""role"": ""user"", ""content"": ""hi""}, {""role"": ""assistant""}]"\n')
    err = rejected(p)
    assert "line 2" in err.reason and "messages[1].content' is missing" in err.reason
    p.write_text("messages\nnot json\n")
    assert rejected(p).code == "bad_json"


def test_parquet_refusals(tmp_path):
    p = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([PC, {"prompt": "x", "completion": None}]), p)
    err = rejected(p)
    assert err.reason == "train.parquet row 2: field 'completion' is missing"
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": [1, 2]}), p)
    err = rejected(p)
    assert "row 1" in err.reason and "'completion' is not a string" in err.reason
    p.write_bytes(b"not parquet at all")
    assert rejected(p).code == "bad_parquet"


def test_json_array_file(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps([PC, PC, {"prompt": "x"}]))
    err = rejected(p)
    assert "record 3" in err.reason and "'completion' is missing" in err.reason
    p.write_text(json.dumps([PC, PC]))
    assert len(load_dataset(p)[1]) == 2


# ------------------------------------------------------------------------------- bounded reading (issue 12, #4)

def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_json_array_is_streamed_record_by_record(tmp_path, monkeypatch):
    """A bad record is refused before the rest of the array is read: the tail here is not even JSON, and
    json.load (which held the whole array in memory) is never called."""
    monkeypatch.setattr(json, "load", lambda *a, **k: pytest.fail("the array was loaded whole"))
    p = tmp_path / "d.json"
    p.write_text("[" + json.dumps(PC) + ",\n" + json.dumps({"prompt": 5, "completion": "x"}) + ",\n" + "@" * 10_000)
    err = rejected(p)
    assert err.code == "bad_field" and "d.json record 2" in err.reason


def test_json_array_across_read_chunks(tmp_path, monkeypatch):
    """Records, strings and numbers split across the reader's chunks decode as json.load would."""
    import evaluation.datasets as ds

    monkeypatch.setattr(ds, "_READ_CHARS", 7)
    records = [{"prompt": f"question {i} ?", "completion": f"answer {i}", "id": 12345678 + i} for i in range(5)]
    p = tmp_path / "d.json"
    p.write_text("  \n[\n" + ",\n  ".join(json.dumps(r) for r in records) + "\n]\n")
    _, examples = load_dataset(p)
    assert [e.line for e in examples] == [1, 2, 3, 4, 5]
    assert [e.response for e in examples] == [r["completion"] for r in records]
    p.write_text("[]")
    assert rejected(p).code == "empty_dataset"


@pytest.mark.parametrize("text,needle", [
    ("[" + json.dumps(PC), "after record 1, found the end of the file"),
    ("[" + json.dumps(PC) + ",", "not closed"),
    ("[" + json.dumps(PC) + " " + json.dumps(PC) + "]", "expected ',' or ']' after record 1"),
    ("[" + json.dumps(PC) + "] trailing", "after the array"),
    ("[" + json.dumps(PC) + ",\n{\"prompt\": }]", "line 2"),
])
def test_json_array_syntax_errors_named(tmp_path, text, needle):
    p = tmp_path / "d.json"
    p.write_text(text)
    err = rejected(p)
    assert err.code == "bad_json" and needle in err.reason


def test_json_array_record_length_capped(tmp_path, monkeypatch):
    import evaluation.datasets as ds

    monkeypatch.setattr(ds, "MAX_RECORD_BYTES", 200)
    monkeypatch.setattr(ds, "_READ_CHARS", 64)  # the long record must be refused after ~200 characters read
    p = tmp_path / "d.json"
    p.write_text("[" + json.dumps(PC) + ", " + json.dumps({"prompt": "x" * 5000, "completion": "y"}) + "]")
    err = rejected(p)
    assert err.code == "record_too_long" and "d.json record 2" in err.reason and "200 bytes" in err.reason


def test_jsonl_line_length_capped_without_reading_the_line(tmp_path, monkeypatch):
    import evaluation.datasets as ds

    monkeypatch.setattr(ds, "MAX_RECORD_BYTES", 200)
    p = write_jsonl(tmp_path / "d.jsonl", [PC, PC, {"prompt": "x" * 5000, "completion": "y"}])
    read_sizes: list[int] = []
    real_open = Path.open

    def spying_open(self, *args, **kwargs):
        fh = real_open(self, *args, **kwargs)
        real_readline = fh.readline

        class Spy:
            def __getattr__(self, name):
                return getattr(fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return fh.__exit__(*exc)

            def readline(self, limit=-1):
                line = real_readline(limit)
                read_sizes.append(len(line))
                return line

        return Spy()

    monkeypatch.setattr(Path, "open", spying_open)
    err = rejected(p)
    assert err.code == "record_too_long" and "d.jsonl line 3" in err.reason
    assert max(read_sizes) <= 202  # the 5 KB line was never read whole


@pytest.mark.parametrize("levels", [40, 100_000])
def test_deep_nesting_in_jsonl_refused(tmp_path, levels):
    """100k levels raised RecursionError (the submission *failed*); 40 is under Python's limit but over ours."""
    p = write_jsonl(tmp_path / "d.jsonl", [PC, '{"prompt": "a", "completion": "b", "metadata": ' + deep(levels) + "}"])
    err = rejected(p)
    assert err.code == "too_deep" and "d.jsonl line 2" in err.reason


@pytest.mark.parametrize("levels", [40, 100_000])
def test_deep_nesting_in_json_array_refused(tmp_path, levels):
    p = tmp_path / "d.json"
    p.write_text("[" + json.dumps(PC) + ", " + deep(levels) + "]")
    err = rejected(p)
    assert err.code == "too_deep" and "d.json record 2" in err.reason


def test_deep_nesting_in_csv_messages_cell_refused(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('messages\n"' + deep(100_000) + '"\n')
    err = rejected(p)
    assert err.code == "too_deep" and "d.csv line 2" in err.reason and "messages" in err.reason
