"""Build small valid and invalid PEFT LoRA adapters for tests, on a tiny random Llama (hidden 32, 2 layers,
vocab 128). Adapters are built once per recipe with peft (get_peft_model + save_pretrained), cached in a
temporary folder for the session and copied to where the test wants them.

    from tests.helpers.adapters import make_adapter, tiny_base_shape, zip_dir
    adapter = make_adapter(tmp_path / "a", r=4)
    inspect_adapter(adapter, tiny_base_shape(), workdir=tmp_path / "w")
"""

from __future__ import annotations

import atexit
import json
import shutil
import tarfile
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

_CACHE = Path(tempfile.mkdtemp(prefix="ftgate-test-adapters-"))
atexit.register(shutil.rmtree, _CACHE, True)


def tiny_llama_config(hidden_size: int = 32, num_hidden_layers: int = 2, vocab_size: int = 128):
    """A LlamaConfig small enough to build in milliseconds."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )


@lru_cache(maxsize=4)
def tiny_base_shape(hidden_size: int = 32):
    """The BaseShape of tiny_llama_config(hidden_size) (built on the meta device)."""
    from evaluation.adapters import base_shape_from_config

    return base_shape_from_config(tiny_llama_config(hidden_size), name="tiny-llama")


def tiny_model(hidden_size: int = 32, seed: int = 0):
    """A random tiny LlamaForCausalLM (real weights; for tests that load adapters)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(hidden_size)).eval()


@lru_cache(maxsize=32)
def _built(r: int, target_modules: tuple[str, ...], modules_to_save: tuple[str, ...] | None,
           hidden_size: int, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    model = tiny_model(hidden_size, seed)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=r, target_modules=list(target_modules), init_lora_weights=False,
                     modules_to_save=list(modules_to_save) if modules_to_save else None)
    peft_model = get_peft_model(model, cfg)
    out = _CACHE / f"r{r}-{'-'.join(target_modules)}-{'-'.join(modules_to_save or ())}-h{hidden_size}-s{seed}"
    peft_model.save_pretrained(out)
    return out


def make_adapter(dest: Path, *, r: int = 4, target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
                 modules_to_save: tuple[str, ...] | None = None, hidden_size: int = 32, seed: int = 0,
                 readme: bool = True) -> Path:
    """A valid PEFT LoRA adapter directory at `dest` (created), built with peft on the tiny Llama."""
    src = _built(r, tuple(target_modules), tuple(modules_to_save) if modules_to_save else None, hidden_size, seed)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for fname in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copyfile(src / fname, dest / fname)
    if readme:
        (dest / "README.md").write_text("# tiny test adapter\n")
    return dest


def edit_config(adapter_dir: Path, *, remove: tuple[str, ...] = (), **changes: Any) -> Path:
    """Rewrite adapter_config.json with keys removed and/or changed."""
    p = Path(adapter_dir) / CONFIG_NAME
    cfg = json.loads(p.read_text())
    for key in remove:
        cfg.pop(key, None)
    cfg.update(changes)
    p.write_text(json.dumps(cfg, indent=2))
    return Path(adapter_dir)


def edit_tensors(adapter_dir: Path, fn) -> Path:
    """Rewrite adapter_model.safetensors with fn(dict name -> tensor) -> dict name -> tensor."""
    from safetensors.torch import load_file, save_file

    p = Path(adapter_dir) / WEIGHTS_NAME
    tensors = fn(dict(load_file(str(p))))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(p), metadata={"format": "pt"})
    return Path(adapter_dir)


def poison_tensor(adapter_dir: Path, value: float = float("nan"), name_contains: str = "lora_B") -> str:
    """Put `value` (NaN by default) into the first tensor whose name contains `name_contains`; return its name."""
    hit: list[str] = []

    def fn(tensors):
        for name in sorted(tensors):
            if name_contains in name:
                t = tensors[name].clone()
                t.view(-1)[0] = value
                tensors[name] = t
                hit.append(name)
                break
        return tensors

    edit_tensors(adapter_dir, fn)
    return hit[0]


def zip_dir(src: Path, zip_path: Path, *, prefix: str = "", extra: dict[str, bytes] | None = None) -> Path:
    """Zip the files of `src` (under `prefix/` if given), plus `extra` {member name: bytes}."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(Path(src).rglob("*")):
            if p.is_file():
                zf.write(p, (Path(prefix) / p.relative_to(src)).as_posix() if prefix else p.relative_to(src).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return Path(zip_path)


def tar_dir(src: Path, tar_path: Path, *, prefix: str = "", symlinks: dict[str, str] | None = None) -> Path:
    """tar.gz the files of `src` (under `prefix/`), plus symlink members {member name: link target}."""
    import io

    with tarfile.open(tar_path, "w:gz") as tf:
        for p in sorted(Path(src).rglob("*")):
            if p.is_file():
                rel = p.relative_to(src).as_posix()
                tf.add(p, arcname=f"{prefix}/{rel}" if prefix else rel)
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info, io.BytesIO(b""))
    return Path(tar_path)
