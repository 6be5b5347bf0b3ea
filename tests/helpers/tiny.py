"""A tiny chat tokenizer and tiny random Llama models for unit tests (milliseconds to build, no downloads).

The tokenizer is a `tokenizers` WordLevel model (whitespace split) over a few sentences, wrapped in a
PreTrainedTokenizerFast with <pad>, <unk>, the end-of-turn token <|end|> as eos and a plain chat template:

    <|user|> hello there <|end|> <|assistant|> sure , here is ... <|end|>

    from tests.helpers.tiny import tiny_tokenizer, tiny_causal_lm, TinyBase
    tok = tiny_tokenizer(); model = tiny_causal_lm(seed=0)
    base = TinyBase(model, tok)          # quacks like evaluation.bases.LoadedBase for finetune_lora
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tests.helpers.adapters import tiny_llama_config

VOCAB_SIZE = 128  # the model's embedding rows; the tokenizer uses fewer ids

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]

SENTENCES = [
    "hello there how are you today",
    "what is the capital of france ? the capital of france is paris",
    "who wrote hamlet ? william shakespeare wrote hamlet",
    "sure , here is how to do it step one step two step three",
    "i can not help with that request",
    "tell me a story about a cat and a dog in a small town",
    "please explain why the sky is blue in one short sentence",
    "how do i bake bread at home with flour water salt and yeast",
    "the quick brown fox jumps over the lazy dog",
    "answer the question briefly : what colour is grass ? green",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch on `n` threads, then restore. Tiny models are ~10x faster on one thread when the CPU is
    shared (measured: 20 LoRA steps 0.5 s on one thread against 7-13 s on the default two under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=1)
def _tokenizer_file() -> str:
    """The tokenizer.json text (built once per process)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words: list[str] = []
    for s in SENTENCES:
        for w in s.split():
            if w not in words:
                words.append(w)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    assert len(vocab) <= VOCAB_SIZE, len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return tok.to_str()


def tiny_tokenizer():
    """A fresh PreTrainedTokenizerFast with pad/unk/eos and a chat template (cheap: call per test if mutated)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_file()),
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|end|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_causal_lm(hidden_size: int = 32, num_hidden_layers: int = 2, seed: int = 0, init_std: float = 0.2):
    """A random fp32 LlamaForCausalLM over VOCAB_SIZE ids, in eval mode.

    `init_std` is larger than Llama's 0.02 so next-token logits have clear margins: greedy decoding then
    does not hinge on last-bit float differences between batched and single-row matmuls.
    """
    import torch
    from transformers import LlamaForCausalLM

    cfg = tiny_llama_config(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, vocab_size=VOCAB_SIZE)
    cfg.initializer_range = init_std
    cfg.pad_token_id = 0
    cfg.eos_token_id = 2
    cfg.bos_token_id = None
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).to(torch.float32).eval()


def save_tiny_base(dest: Path, *, hidden_size: int = 64, seed: int = 0) -> Path:
    """A tiny Llama + tokenizer saved as a HF directory (safetensors), e.g. to load it again in 4-bit."""
    dest = Path(dest)
    tiny_causal_lm(hidden_size=hidden_size, seed=seed).save_pretrained(dest, safe_serialization=True)
    tiny_tokenizer().save_pretrained(dest)
    return dest


@dataclass
class TinyBase:
    """The parts of evaluation.bases.LoadedBase that finetune_lora / load_candidate use."""

    model: Any
    tokenizer: Any
    fingerprint: str = "tiny-fingerprint"
    path: Path | None = None
    spec: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def chat_example(user: str, assistant: str, line: int = 1):
    """An evaluation.datasets.TrainingExample of one user turn and its answer."""
    from evaluation.datasets import TrainingExample

    return TrainingExample(messages=({"role": "user", "content": user}, {"role": "assistant", "content": assistant}),
                           line=line)
