"""evaluation.generation on a tiny random Llama (fp32) with a tiny WordLevel chat tokenizer."""

from __future__ import annotations

import pytest

from evaluation import generation
from evaluation.generation import DecodingConfig, chat_prompt, generate, greedy_rows, length_sorted_batches
from tests.helpers.tiny import tiny_causal_lm, tiny_tokenizer, torch_threads

PROMPTS = [
    "hello there",
    "what is the capital of france ? the capital of france is",
    "who wrote hamlet ?",
    "tell me a story about a cat and a dog in a small town please",
    "sky",
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm(seed=0)


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


def test_length_sorted_batches_longest_first_and_covering():
    lengths = [3, 9, 1, 7, 7, 5]
    batches = list(length_sorted_batches(lengths, 2))
    assert [len(b) for b in batches] == [2, 2, 2]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert batches[0] == [1, 3]  # ties keep input order (stable sort)
    assert list(length_sorted_batches([4, 2, 6], 5)) == [[2, 0, 1]]
    assert list(length_sorted_batches([], 4)) == []


def test_chat_prompt_uses_the_tokenizers_template(tokenizer):
    assert chat_prompt(tokenizer, "hello there") == "<|user|> hello there <|end|> <|assistant|> "


def test_decoding_config_to_dict():
    d = DecodingConfig(max_new_tokens=8, batch_size=2).to_dict()
    assert d == {"strategy": "greedy", "max_new_tokens": 8, "batch_size": 2, "knowledge_max_new_tokens": 16,
                 "extended_max_new_tokens": 256}


def test_a_prefix_continues_where_the_first_window_stopped(model, tokenizer):
    """Generating 3 tokens, then 5 more after them, gives the 8 tokens generated at once: the second window
    reuses the first instead of generating it again."""
    first = generation.generate_ids(model, tokenizer, PROMPTS, max_new_tokens=3, batch_size=2)
    more = generation.generate_ids(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=2, prefixes=first)
    at_once = generation.generate_ids(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=2)
    continued = [i for i, ids in enumerate(first) if tokenizer.eos_token_id not in ids]
    assert continued, "every prompt ended within 3 tokens: the comparison below would be empty"
    for i in continued:
        assert first[i] + more[i] == at_once[i]
        assert len(more[i]) >= 1
    with pytest.raises(ValueError, match="2 prefixes for 5 texts"):
        generation.generate_ids(model, tokenizer, PROMPTS, max_new_tokens=1, batch_size=2, prefixes=first[:2])


def test_batched_left_padded_greedy_equals_one_at_a_time(model, tokenizer):
    tokenizer.padding_side = "right"
    singles = [generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in PROMPTS]
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=len(PROMPTS))
    assert batched == singles
    assert any(s for s in singles)  # the comparison is not between empty strings
    assert tokenizer.padding_side == "right"  # restored afterwards


def test_right_padding_would_differ_so_the_test_above_has_teeth(model, tokenizer):
    """Control: right padding a mixed-length batch breaks the short rows (what LEFT padding avoids)."""
    import torch

    texts = [chat_prompt(tokenizer, p) for p in (PROMPTS[3], PROMPTS[0])]
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    short_right = tokenizer.decode(out[1, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    single = generate(model, tokenizer, [PROMPTS[0]], max_new_tokens=4, batch_size=1)[0]
    assert short_right != single


def test_outputs_come_back_in_input_order(model, tokenizer):
    singles = {p: generate(model, tokenizer, [p], max_new_tokens=5, batch_size=1)[0] for p in PROMPTS}
    shuffled = [PROMPTS[i] for i in (4, 1, 3, 0, 2)]
    out = generate(model, tokenizer, shuffled, max_new_tokens=5, batch_size=2)
    assert out == [singles[p] for p in shuffled]
    # batches run longest first, yet the outputs are not in batch order
    assert len(set(singles.values())) > 1


def test_progress_called_once_per_batch_and_at_the_end(model, tokenizer):
    calls = []
    out = generate(model, tokenizer, PROMPTS, max_new_tokens=2, batch_size=2,
                   progress=lambda *a: calls.append(a), stage="gen-test")
    assert len(out) == len(PROMPTS)
    assert [(s, d, t) for s, d, t, _ in calls] == [("gen-test", 0, 3), ("gen-test", 1, 3), ("gen-test", 2, 3),
                                                   ("gen-test", 3, 3)]
    assert calls[0][3] == "generation batch 1/3"


def test_empty_input_returns_empty_without_progress(model, tokenizer):
    calls = []
    assert generate(model, tokenizer, [], max_new_tokens=4, batch_size=2, progress=lambda *a: calls.append(a)) == []
    assert calls == []


def _generate_reference(model, enc, max_new_tokens, eos):
    """transformers' own greedy generate, its rows cut after their first end token."""
    import torch

    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=eos)
    rows = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


@pytest.mark.parametrize("drop_share", [0.0, 0.25, 1.01])  # drop at once, in groups, never
def test_greedy_rows_equals_transformers_generate_while_rows_end_at_different_steps(model, tokenizer, monkeypatch,
                                                                                     drop_share):
    tokenizer.padding_side = "left"
    enc = tokenizer([chat_prompt(tokenizer, p) for p in PROMPTS], return_tensors="pt", padding=True,
                    add_special_tokens=False)
    # The tiny random model never says its real end token: make "end" a token it does produce, so rows end
    # at different steps and leave the batch while the others go on.
    free = _generate_reference(model, enc, 10, eos=-1)

    def end_steps(eos):  # where each row would end with this end token (10: it runs to the limit)
        return [row.index(eos) + 1 if eos in row else 10 for row in free]

    # the first token (by id) that ends rows at two or more different steps before the limit, while
    # another row runs to it
    eos = next(t for t in sorted({t for row in free for t in row})
               if len({e for e in end_steps(t) if e < 10}) >= 2 and 10 in end_steps(t))
    reference = _generate_reference(model, enc, 10, eos)
    assert [len(r) for r in reference] == end_steps(eos), (eos, end_steps(eos))
    monkeypatch.setattr(generation, "DROP_FINISHED_SHARE", drop_share)
    got = greedy_rows(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=10, eos_token_id=eos)
    assert got == reference


def test_greedy_rows_edge_cases(model, tokenizer):
    import torch

    tokenizer.padding_side = "left"
    enc = tokenizer([chat_prompt(tokenizer, "sky")], return_tensors="pt", add_special_tokens=False)
    assert greedy_rows(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=0, eos_token_id=2) == [[]]
    empty = torch.zeros((0, 3), dtype=torch.long)
    assert greedy_rows(model, empty, empty, max_new_tokens=4, eos_token_id=2) == []
    assert len(greedy_rows(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=3, eos_token_id=None)[0]) == 3
