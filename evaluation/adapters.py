"""Static inspection of an uploaded LoRA adapter, before anything is loaded into a model.

Accepts a PEFT directory, or a .zip / .tar / .tar.gz of one. Only `adapter_config.json` and
`adapter_model.safetensors` are used; pickle formats (.bin, .pt, ...) are refused because unpickling runs
code. The safetensors header is read with `safe_open` (no model), every tensor name is mapped to a module
of the base and its shape checked (lora_A [r, in_features], lora_B [out_features, r]), and every tensor is
checked for NaN / inf. Findings that do not refuse the adapter are returned for the policy to weigh.

adapter_config.json is checked against an allow-list of fields (evaluation/lora_config.py) and the gate
loads the config rebuilt from the checked values, never the uploaded file: PEFT would compile string
fields as regular expressions and run initialisations that rewrite the base's weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.archives import archive_kind, unpack_archive_safely
from evaluation.errors import InputRejected
from evaluation.files import CHUNK_BYTES, sha256_file
from evaluation.jsonlimits import loads_limited
from evaluation.lora_config import ALL_LINEAR, CheckedLoraConfig, check_lora_config, name_matches
from evaluation.runtime import Runtime, current_runtime

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
ALLOWED = (CONFIG_NAME, WEIGHTS_NAME)
PEFT_PREFIX = "base_model.model."
MAX_CONFIG_BYTES = 1024 * 1024

# Formats whose loading unpickles (runs arbitrary code).
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz"}
# Text files that commonly ride along with an adapter (model card, tokenizer files, training args as JSON).
HARMLESS_SUFFIXES = {".md", ".txt", ".rst", ".json", ".yaml", ".yml", ".toml", ".cfg", ".jinja", ".gitattributes",
                     ".gitignore", ".gitkeep"}
HARMLESS_NAMES = {"LICENSE", "NOTICE", "README", "COPYING", ".gitattributes", ".gitignore"}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


@dataclass(frozen=True)
class BaseShape:
    """The shapes an adapter must fit: full module names -> (in_features, out_features) of the linear layers,
    (num_embeddings, embedding_dim) of the embeddings, and every parameter's shape (for full-weight tensors)."""

    name: str
    model_type: str
    linear: dict[str, tuple[int, int]]
    embedding: dict[str, tuple[int, int]] = field(default_factory=dict)
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class AdapterInspection:
    adapter_dir: Path  # a folder holding exactly adapter_config.json (the checked one) + adapter_model.safetensors
    config: dict  # the adapter_config.json the gate wrote and loads (CheckedLoraConfig.to_peft_dict())
    sha256: str  # of the uploaded file; for an uploaded directory its adapter_fingerprint
    rank: int  # the largest rank of any module
    target_modules: list[str]
    n_parameters: int
    findings: list[dict]  # {"severity": "info" | "review" | "block", "code", "message"}


def base_shape_from_config(config: Any, name: str | None = None) -> BaseShape:
    """Build the base architecture on the meta device (no weights, no memory) and record its module shapes.

    `config` is a transformers PretrainedConfig, or a dict with a "model_type" (as in config.json).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    if isinstance(config, dict):
        d = dict(config)
        config = AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear: dict[str, tuple[int, int]] = {}
    embedding: dict[str, tuple[int, int]] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linear[mod_name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # GPT-2 style: weight is [in, out]
            linear[mod_name] = (int(module.weight.shape[0]), int(module.weight.shape[1]))
        elif isinstance(module, torch.nn.Embedding):
            embedding[mod_name] = (module.num_embeddings, module.embedding_dim)
    params = {n: tuple(int(s) for s in p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    return BaseShape(
        name=name or getattr(config, "name_or_path", "") or config.model_type,
        model_type=config.model_type,
        linear=linear,
        embedding=embedding,
        params=params,
    )


def _as_shape(base: Any) -> BaseShape:
    """Accept a BaseShape, or a registry entry carrying one as `.shape`."""
    if isinstance(base, BaseShape) or hasattr(base, "linear"):
        return base
    shape = getattr(base, "shape", None)
    if shape is not None and hasattr(shape, "linear"):
        return shape
    raise TypeError(f"expected a BaseShape (or an object with .shape), got {type(base).__name__}")


# --------------------------------------------------------------------------------------------- hashing


def adapter_fingerprint(adapter_dir: Path) -> str:
    """The identity of an adapter folder: the hex sha256 over, for adapter_config.json then
    adapter_model.safetensors, the name, NUL, the size, NUL and the bytes (the sizes keep the two files'
    bytes from running into each other). Other files in the folder do not count.

    The one definition: an uploaded folder's sha256 (what was uploaded), the candidate-results cache key
    and the model fingerprint the worker records (both of the checked adapter the gate loads) use it.
    """
    h = hashlib.sha256()
    for fname in ALLOWED:
        p = Path(adapter_dir) / fname
        h.update(f"{fname}\0{p.stat().st_size}\0".encode())
        with p.open("rb") as fh:
            while block := fh.read(CHUNK_BYTES):
                h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- files


def _scan_files(root: Path, label: str, max_bytes: int, findings: list[dict]) -> None:
    """Refuse pickles, links and unknown binaries; note ignored text files; require the two adapter files."""
    pickles, unexpected, ignored, total = [], [], [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = d / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise InputRejected(f"{label}: {rel} is a symlink (links are refused)", "archive_link")
            if p.is_dir():
                continue
            if not p.is_file():
                raise InputRejected(f"{label}: {rel} is not a regular file", "archive_link")
            total += p.stat().st_size
            suffix = p.suffix.lower()
            if suffix in PICKLE_SUFFIXES:
                pickles.append(rel)
            elif d == root and name in ALLOWED:
                continue
            elif suffix in HARMLESS_SUFFIXES or name in HARMLESS_NAMES or name.upper().startswith("LICENSE"):
                ignored.append(rel)
            else:
                unexpected.append(rel)
    if pickles:
        raise InputRejected(
            f"{label}: {pickles[0]} is a pickle-based file (refused: loading it runs code); "
            f"upload adapter_model.safetensors instead", "pickle_weights")
    for fname, code in ((CONFIG_NAME, "missing_config"), (WEIGHTS_NAME, "missing_weights")):
        if not (root / fname).is_file():
            elsewhere = sorted(p.relative_to(root).as_posix() for p in root.rglob(fname))
            hint = f" (found {elsewhere[0]}: put the adapter files at the top level)" if elsewhere else ""
            raise InputRejected(f"{label}: {fname} is missing{hint}", code)
    if unexpected:
        raise InputRejected(
            f"{label}: unexpected file {unexpected[0]} (an adapter holds only {CONFIG_NAME} and {WEIGHTS_NAME})",
            "unexpected_file")
    if total > max_bytes:
        raise InputRejected(f"{label}: {total} bytes, over the limit of {max_bytes} bytes", "archive_too_large")
    if ignored:
        findings.append({"severity": "info", "code": "ignored_files",
                         "message": f"ignored {len(ignored)} extra file(s): {', '.join(ignored[:8])}"})


# --------------------------------------------------------------------------------------------- config


def _load_config(path: Path) -> dict:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InputRejected(f"{CONFIG_NAME}: larger than {MAX_CONFIG_BYTES} bytes", "bad_config")
    try:
        cfg = loads_limited(path.read_bytes().decode("utf-8"), CONFIG_NAME)
    except UnicodeDecodeError:
        raise InputRejected(f"{CONFIG_NAME}: not valid UTF-8", "bad_json") from None
    except json.JSONDecodeError as exc:
        raise InputRejected(f"{CONFIG_NAME} line {exc.lineno}: not valid JSON ({exc.msg})", "bad_json") from None
    if not isinstance(cfg, dict):
        raise InputRejected(f"{CONFIG_NAME}: expected a JSON object, got {type(cfg).__name__}", "bad_config")
    return cfg


# --------------------------------------------------------------------------------------------- tensors

_LORA_RE = re.compile(
    r"^(?P<mod>.+?)\.(?:"
    r"(?P<ab>lora_A|lora_B)(?:\.[A-Za-z0-9_\-]+)?\.(?P<param>weight|bias)"
    r"|(?P<emb>lora_embedding_A|lora_embedding_B)(?:\.[A-Za-z0-9_\-]+)?"
    r")$"
)


def _check_tensors(weights: Path, cfg: CheckedLoraConfig, shape: BaseShape, max_rank: int) -> tuple[int, int]:
    """Check names, shapes, dtypes and finiteness of every tensor. Returns (max rank, number of parameters).

    Only LoRA tensors are accepted. Full weights of base modules (modules_to_save copies, the
    `<module>.base_layer.weight` PEFT saves when an embedding is targeted) are refused: PEFT loads them over
    the base's own weights, and on a shared 4-bit base that rewrites the base for every later tenant.
    """
    import torch
    from safetensors import safe_open

    try:
        handle = safe_open(str(weights), framework="pt")
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise InputRejected(f"{WEIGHTS_NAME}: not a valid safetensors file ({exc})", "bad_safetensors") from None

    lora: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    n_params = 0
    with handle as f:
        keys = list(f.keys())
        if not keys:
            raise InputRejected(f"{WEIGHTS_NAME}: holds no tensors", "empty_adapter")
        for key in keys:
            sl = f.get_slice(key)
            dims = tuple(int(s) for s in sl.get_shape())
            dtype = sl.get_dtype()
            if dtype not in FLOAT_DTYPES:
                raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} has dtype {dtype}; expected a float type",
                                    "bad_dtype")
            n = 1
            for s in dims:
                n *= s
            n_params += n
            name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
            m = _LORA_RE.match(name)
            if not m:
                hint = (" (save the adapter with save_embedding_layers=False)" if ".base_layer." in name else "")
                raise InputRejected(f"{WEIGHTS_NAME}: unexpected tensor {key}: only LoRA weights are accepted, "
                                    f"not full weights of the base's modules{hint}", "unexpected_tensor")
            mod = m.group("mod")
            kind = "bias" if m.group("param") == "bias" else (m.group("ab") or m.group("emb"))
            if mod not in shape.linear and mod not in shape.embedding:
                raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} refers to module {mod!r}, which the base "
                                    f"{shape.name} does not have", "base_mismatch")
            if not cfg.targets(mod, shape.linear):
                raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} is for module {mod!r}, which is not in "
                                    f"target_modules {cfg.to_peft_dict()['target_modules']!r}", "unexpected_tensor")
            lora.setdefault(mod, {})[kind] = (key, dims)
            t = f.get_tensor(key)
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} has {bad} non-finite (NaN/inf) value(s): weights must be finite", "nonfinite_weights")
            del t

    max_r = 0
    for mod, parts in sorted(lora.items()):
        if mod in shape.linear:
            in_f, out_f = shape.linear[mod]
            a_kind, b_kind = "lora_A", "lora_B"
        else:
            in_f, out_f = shape.embedding[mod]  # (num_embeddings, embedding_dim): A [r, num], B [dim, r]
            a_kind, b_kind = "lora_embedding_A", "lora_embedding_B"
        if a_kind not in parts or b_kind not in parts:
            missing = a_kind if a_kind not in parts else b_kind
            raise InputRejected(f"{WEIGHTS_NAME}: module {mod} has no {missing} tensor", "base_mismatch")
        (a_key, a_shape), (b_key, b_shape) = parts[a_kind], parts[b_kind]
        r = a_shape[0] if len(a_shape) == 2 else -1
        if a_shape != (r, in_f):
            raise InputRejected(f"{WEIGHTS_NAME}: tensor {a_key} has shape {list(a_shape)} but the base "
                                f"{mod} needs [r, {in_f}]", "base_mismatch")
        if b_shape != (out_f, r):
            raise InputRejected(f"{WEIGHTS_NAME}: tensor {b_key} has shape {list(b_shape)} but the base "
                                f"{mod} needs [{out_f}, {r}] (out_features, r)", "base_mismatch")
        if r > max_rank:
            raise InputRejected(f"{WEIGHTS_NAME}: module {mod} has rank {r}, over the limit of {max_rank}",
                                "rank_too_large")
        expected_r = cfg.rank_of(mod)
        if r != expected_r:
            raise InputRejected(f"{WEIGHTS_NAME}: tensor {a_key} has rank {r} but {CONFIG_NAME} says "
                                f"r={expected_r}", "base_mismatch")
        if "bias" in parts and parts["bias"][1] != (out_f,):
            raise InputRejected(f"{WEIGHTS_NAME}: tensor {parts['bias'][0]} has shape {list(parts['bias'][1])} "
                                f"but the base {mod} needs [{out_f}]", "base_mismatch")
        max_r = max(max_r, r)

    if not lora:
        raise InputRejected(f"{WEIGHTS_NAME}: holds no LoRA weights (no lora_A / lora_B tensors)", "empty_adapter")
    return max_r, n_params


# --------------------------------------------------------------------------------------------- entry point


def inspect_adapter(path: Path, base: BaseShape, *, workdir: Path, runtime: Runtime | None = None) -> AdapterInspection:
    """Inspect the adapter at `path` (PEFT directory, .zip, .tar, .tar.gz) against `base`.

    Copies the two adapter files into `workdir/adapter` (the returned adapter_dir; nothing else is there to
    load). Raises InputRejected with a one-line reason and a stable code on the first problem. The limits
    (files, unpacked bytes, rank) are the runtime's.
    """
    runtime = runtime or current_runtime()
    shape = _as_shape(base)
    path, workdir = Path(path), Path(workdir)
    label = path.name
    findings: list[dict] = []
    workdir.mkdir(parents=True, exist_ok=True)
    unpacked = workdir / "unpacked"
    adapter_dir = workdir / "adapter"
    for d in (unpacked, adapter_dir):
        if d.exists():
            shutil.rmtree(d)

    if path.is_symlink():
        raise InputRejected(f"{label}: is a symlink", "archive_link")
    if path.is_dir():
        root = path
        sha = None
    elif path.is_file():
        if archive_kind(path) is None:
            hint = " (pickle-based weights are refused)" if path.suffix.lower() in PICKLE_SUFFIXES else ""
            code = "pickle_weights" if hint else "unknown_format"
            raise InputRejected(f"{label}: not a PEFT adapter directory, .zip or .tar.gz{hint}", code)
        sha = sha256_file(path)
        root = unpack_archive_safely(path, unpacked, max_files=runtime.max_archive_files,
                                     max_bytes=runtime.max_unpacked_bytes)
    else:
        raise InputRejected(f"{label}: no such file or directory", "missing_file")

    _scan_files(root, label, runtime.max_unpacked_bytes, findings)
    cfg = check_lora_config(_load_config(root / CONFIG_NAME), runtime.max_adapter_rank)

    candidates = {**shape.linear, **shape.embedding}
    if cfg.target_modules == ALL_LINEAR:
        if not any(cfg.targets(n, shape.linear) for n in candidates):
            raise InputRejected(f"{CONFIG_NAME}: target_modules {ALL_LINEAR!r} matches no layer of the base "
                                f"{shape.name}", "unknown_target_module")
    else:
        for t in cfg.target_modules:
            if not any(name_matches(n, [t]) for n in candidates):
                raise InputRejected(f"{CONFIG_NAME}: target module {t!r} does not exist in the base {shape.name} "
                                    f"({shape.model_type})", "unknown_target_module")
    declared = cfg.metadata.get("base_model_name_or_path")
    if declared and shape.name and declared != shape.name:
        findings.append({"severity": "info", "code": "base_name_differs",
                         "message": f"adapter says it was trained on {declared!r}; inspected against {shape.name!r}"})
    if cfg.ignored:
        findings.append({"severity": "info", "code": "ignored_config_fields",
                         "message": f"ignored empty {CONFIG_NAME} field(s): {', '.join(cfg.ignored[:8])}"})

    rank, n_params = _check_tensors(root / WEIGHTS_NAME, cfg, shape, runtime.max_adapter_rank)

    if sha is None:
        sha = adapter_fingerprint(root)  # of what was uploaded, before the config is rewritten
    adapter_dir.mkdir(parents=True)
    # PEFT loads the config rebuilt from the checked fields, never the uploaded file.
    loaded_config = cfg.to_peft_dict()
    (adapter_dir / CONFIG_NAME).write_text(json.dumps(loaded_config, indent=2))
    shutil.copyfile(root / WEIGHTS_NAME, adapter_dir / WEIGHTS_NAME)
    if unpacked.exists():
        shutil.rmtree(unpacked)
    return AdapterInspection(
        adapter_dir=adapter_dir,
        config=loaded_config,
        sha256=sha,
        rank=rank,
        target_modules=[ALL_LINEAR] if cfg.target_modules == ALL_LINEAR else sorted(cfg.target_modules),
        n_parameters=n_params,
        findings=findings,
    )
