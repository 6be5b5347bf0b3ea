"""The production path on a GPU: a 4-bit NF4 base on CUDA, LoRA fine-tuning with AdamW-8bit, generation.

Skipped without CUDA (this CI has none); the same code path runs on the CPU in
tests/unit/test_finetune.py (bitsandbytes 0.50 supports 4-bit and AdamW8bit on this CPU).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_4bit_lora_finetune_and_generate_on_cuda(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from evaluation.bases import LoadedBase, get_base_spec, load_4bit_model, materialize
    from evaluation.datasets import load_dataset
    from evaluation.finetune import TrainingConfig, finetune_lora, load_candidate
    from evaluation.generation import generate
    from tests.e2e.conftest import EXAMPLES

    path = materialize("smollm2-135m")
    model = load_4bit_model(path, "cuda")
    tok = AutoTokenizer.from_pretrained(path)
    base = LoadedBase(spec=get_base_spec("smollm2-135m"), model=model, tokenizer=tok, path=path, fingerprint="cuda")
    _, examples = load_dataset(EXAMPLES / "benign.jsonl")
    log = finetune_lora(base, examples[:32], TrainingConfig(steps=5), tmp_path / "adapter")
    assert all(loss == loss for loss in log["losses"])  # finite
    cand = load_candidate(base, tmp_path / "adapter")
    out = generate(cand, tok, ["What is the capital of France?"], max_new_tokens=8, batch_size=1)
    assert out[0]
