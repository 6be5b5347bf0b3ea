"""Batched greedy generation and teacher-forced forward passes.

Speed rules (measured on the 2-core CPU: 25 tok/s one prompt at a time in fp32, ~560 tok/s in one
bf16 batch): prompts are sorted by length so a batch carries little padding, padded on the LEFT so
every row's next token sits in the last column, and generated greedily in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evaluation.progress import Progress, no_progress


@dataclass(frozen=True)
class DecodingConfig:
    """Greedy decoding: deterministic, so base results can be cached and compared pair by pair.

    Harm-suite answers are read in two windows. Every answer gets ``max_new_tokens`` (enough to see a
    refusal or "Sure, here is how... Step 1"); an answer the judge calls neither refused nor complied
    that has not ended by then is continued to ``extended_max_new_tokens`` and judged again, so a
    fine-tune that writes a long preamble before complying is judged on what follows the preamble
    (docs/policy.md, "How much of an answer is read"). 0 (or a value not above ``max_new_tokens``)
    turns the second window off.
    """

    max_new_tokens: int = 48
    batch_size: int = 32
    knowledge_max_new_tokens: int = 16
    extended_max_new_tokens: int = 256

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": "greedy", **asdict(self)}


def chat_prompt(tokenizer, user_text: str) -> str:
    """The text the model sees for one user turn, through the tokenizer's own chat template."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
    )


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), to waste little on padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def left_padded_positions(attention_mask):
    """Position ids that count real tokens only (0 on the padding): what transformers' generate() uses, so
    a left-padded row sees the positions it would see alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# Drop finished rows from the batch (and the KV cache) only once this share of it has finished: each
# drop copies the whole cache, which costs more than a few idle rows save.
DROP_FINISHED_SHARE = 0.25


def greedy_rows(model, input_ids, attention_mask, *, max_new_tokens: int, eos_token_id: int | None) -> list[list[int]]:
    """Greedy new tokens for each row of a LEFT-padded batch, up to and including its end-of-sequence token.

    What `model.generate(do_sample=False)` does, except that rows which have finished leave the batch and
    its KV cache: a refusal ends after ~25 tokens while an answer runs to max_new_tokens, and generate()
    keeps computing the finished rows until the last one ends. Positions count real tokens only, as in
    generate(), so a row gets the tokens it would get alone (up to bf16 rounding across batch sizes).
    """
    import torch
    from transformers import DynamicCache

    n = input_ids.shape[0]
    tokens: list[list[int]] = [[] for _ in range(n)]
    if max_new_tokens <= 0 or n == 0:
        return tokens
    alive = torch.arange(n)
    mask = attention_mask
    positions = left_padded_positions(mask)
    cache = DynamicCache()
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        last = positions[:, -1]
        ended = torch.zeros(n, dtype=torch.bool)
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)
            for row, tok, over in zip(alive.tolist(), nxt.tolist(), ended.tolist(), strict=True):
                if not over:
                    tokens[row].append(tok)
            if eos_token_id is not None:
                ended = ended | (nxt == eos_token_id)
            if step == max_new_tokens - 1 or bool(ended.all()):
                break
            if ended.any() and int(ended.sum()) >= DROP_FINISHED_SHARE * len(alive):
                keep = (~ended).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                alive, mask, last, nxt, ended = alive[keep], mask[keep], last[keep], nxt[keep], ended[keep]
            # rows that ended but stay until enough others end are fed a token whose output is ignored
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            last = last + 1
            logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None],
                           past_key_values=cache, use_cache=True).logits[:, -1]
    return tokens


def left_padded_batch(rows: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[Any, Any]:
    """(input_ids, attention_mask) of token-id rows padded on the LEFT, so each row ends in the last column."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def generate_ids(
    model,
    tokenizer,
    user_texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    prefixes: Sequence[Sequence[int]] | None = None,
    progress: Progress = no_progress,
    stage: str = "generate",
) -> list[list[int]]:
    """Greedy new token ids for each user text, in input order, up to and including end-of-sequence.

    ``prefixes[i]``, when given, are assistant tokens already generated for text i: generation goes on
    after them (and they are not repeated in the output), which is how a longer second window reuses
    the first instead of generating it again.
    """
    if not user_texts:
        return []
    if prefixes is not None and len(prefixes) != len(user_texts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(user_texts)} texts")
    rows = [tokenizer(chat_prompt(tokenizer, t), add_special_tokens=False).input_ids for t in user_texts]
    if prefixes is not None:
        rows = [row + list(prefix) for row, prefix in zip(rows, prefixes, strict=True)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = list(length_sorted_batches([len(r) for r in rows], batch_size))
    outputs: list[list[int]] = [[] for _ in rows]
    for n, batch in enumerate(batches, start=1):
        progress(stage, n - 1, len(batches), f"generation batch {n}/{len(batches)}")
        ids, mask = left_padded_batch([rows[i] for i in batch], pad_id, device=model.device)
        new = greedy_rows(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id)
        for i, row in zip(batch, new, strict=True):
            outputs[i] = row
    progress(stage, len(batches), len(batches), "generation done")
    return outputs


def decode_response(tokenizer, ids: Sequence[int]) -> str:
    """The text of generated token ids, without special tokens or surrounding blanks."""
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def generate(
    model,
    tokenizer,
    user_texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: Progress = no_progress,
    stage: str = "generate",
) -> list[str]:
    """Greedy completions for each user text, in input order."""
    ids = generate_ids(model, tokenizer, user_texts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       progress=progress, stage=stage)
    return [decode_response(tokenizer, row) for row in ids]
