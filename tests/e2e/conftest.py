"""End-to-end fixtures: the real embedded base (SmolLM2-135M from its wheel) and real adapters.

Caches (converted base, guarded base, fine-tunes, base results) live in the normal ftgate cache dir: they
are keyed by content, so sharing them between runs is safe and keeps CI short after the first run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`ftgate ...` in a subprocess, exactly as a user or CI runs it."""
    return subprocess.run([sys.executable, "-m", "ftgate.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="session", autouse=True)
def settings_runtime():
    """The tier's in-process calls to the core (materialize, finetune_dataset) run as the CLI it starts does:
    with the FTGATE_ settings of this environment (its cache dir above all), read once and installed."""
    from ftgate.settings import get_settings
    from tests.helpers.runtime import installed_runtime

    with installed_runtime(get_settings().runtime()) as runtime:
        yield runtime


@pytest.fixture(scope="session")
def guarded_base_dir() -> Path:
    from evaluation.bases import materialize

    return materialize("guarded-smollm2")


@pytest.fixture(scope="session")
def smollm2_blank_adapter(tmp_path_factory, guarded_base_dir) -> Path:
    """A valid LoRA adapter for SmolLM2 (lora_B zero: the identity), the seed of the crafted bad uploads."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapters") / "blank"
    torch.manual_seed(0)  # the same lora_A every run: the same adapter fingerprint, so its results are cached
    model = AutoModelForCausalLM.from_pretrained(guarded_base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def load_report(path: Path) -> dict:
    return json.loads(path.read_text())
