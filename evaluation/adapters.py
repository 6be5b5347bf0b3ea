"""Static inspection of an uploaded LoRA adapter, before anything is loaded into a model.

Accepts a PEFT directory, or a .zip / .tar / .tar.gz of one. Only `adapter_config.json` and
`adapter_model.safetensors` are used; pickle formats (.bin, .pt, ...) are refused because unpickling runs
code. The safetensors header is read with `safe_open` (no model), every tensor name is mapped to a module
of the base and its shape checked (lora_A [r, in_features], lora_B [out_features, r]), and every tensor is
checked for NaN / inf. Findings that do not refuse the adapter are returned for the policy to weigh.
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
# modules_to_save / full-weight entries matching these may change the vocabulary mapping: flagged for review.
EMBEDDING_HINTS = ("embed_tokens", "lm_head", "wte", "wpe", "embed_in", "embed_out", "word_embeddings",
                   "embeddings", "output_layer", "tok_embeddings")


@dataclass(frozen=True)
class BaseShape:
    """The shapes an adapter must fit: full module names -> (in_features, out_features) of the linear layers,
    (num_embeddings, embedding_dim) of the embeddings, and every parameter's shape (for modules_to_save)."""

    name: str
    model_type: str
    linear: dict[str, tuple[int, int]]
    embedding: dict[str, tuple[int, int]] = field(default_factory=dict)
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class AdapterInspection:
    adapter_dir: Path  # a folder holding exactly adapter_config.json + adapter_model.safetensors
    config: dict
    sha256: str  # of the uploaded file; for a directory of canonical_sha256(dir)
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

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()  # noqa: N806

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
        elif Conv1D and isinstance(module, Conv1D):  # GPT-2 style: weight is [in, out]
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_sha256(adapter_dir: Path) -> str:
    """sha256 over, for adapter_config.json then adapter_model.safetensors: name, NUL, size, NUL, bytes."""
    h = hashlib.sha256()
    for fname in ALLOWED:
        p = Path(adapter_dir) / fname
        h.update(f"{fname}\0{p.stat().st_size}\0".encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1024 * 1024), b""):
                h.update(chunk)
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
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputRejected(f"{CONFIG_NAME}: not valid UTF-8", "bad_json") from None
    except json.JSONDecodeError as exc:
        raise InputRejected(f"{CONFIG_NAME} line {exc.lineno}: not valid JSON ({exc.msg})", "bad_json") from None
    if not isinstance(cfg, dict):
        raise InputRejected(f"{CONFIG_NAME}: expected a JSON object, got {type(cfg).__name__}", "bad_config")
    return cfg


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_config(cfg: dict, max_rank: int) -> None:
    if "peft_type" not in cfg:
        raise InputRejected(f"{CONFIG_NAME}: field 'peft_type' is missing", "missing_field")
    if cfg["peft_type"] != "LORA":
        raise InputRejected(f"{CONFIG_NAME}: field 'peft_type' is {cfg['peft_type']!r}; only 'LORA' is supported",
                            "unsupported_adapter")
    if "r" not in cfg:
        raise InputRejected(f"{CONFIG_NAME}: field 'r' (the LoRA rank) is missing", "missing_field")
    if not _is_int(cfg["r"]) or cfg["r"] < 1:
        raise InputRejected(f"{CONFIG_NAME}: field 'r' must be a positive integer, got {cfg['r']!r}", "bad_field")
    if cfg["r"] > max_rank:
        raise InputRejected(f"{CONFIG_NAME}: rank r={cfg['r']} is over the limit of {max_rank}", "rank_too_large")
    pattern = cfg.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise InputRejected(f"{CONFIG_NAME}: field 'rank_pattern' must be an object", "bad_field")
    for key, value in pattern.items():
        if not _is_int(value) or value < 1:
            raise InputRejected(f"{CONFIG_NAME}: rank_pattern[{key!r}] must be a positive integer", "bad_field")
        if value > max_rank:
            raise InputRejected(f"{CONFIG_NAME}: rank_pattern[{key!r}]={value} is over the limit of {max_rank}",
                                "rank_too_large")
    alpha = cfg.get("lora_alpha", 8)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise InputRejected(f"{CONFIG_NAME}: field 'lora_alpha' must be a number, got {alpha!r}", "bad_field")
    if "target_modules" not in cfg or cfg["target_modules"] in (None, [], ""):
        if cfg.get("target_parameters"):
            raise InputRejected(f"{CONFIG_NAME}: 'target_parameters' adapters are not supported",
                                "unsupported_adapter")
        raise InputRejected(f"{CONFIG_NAME}: field 'target_modules' is missing", "missing_field")
    tm = cfg["target_modules"]
    if not (isinstance(tm, str) or (isinstance(tm, list) and all(isinstance(t, str) and t for t in tm))):
        raise InputRejected(f"{CONFIG_NAME}: field 'target_modules' must be a list of module names or a regex",
                            "bad_field")
    mts = cfg.get("modules_to_save")
    if mts is not None and not (isinstance(mts, list) and all(isinstance(t, str) and t for t in mts)):
        raise InputRejected(f"{CONFIG_NAME}: field 'modules_to_save' must be a list of module names", "bad_field")
    for unsupported in ("target_parameters", "trainable_token_indices", "layer_replication"):
        if cfg.get(unsupported):
            raise InputRejected(f"{CONFIG_NAME}: field {unsupported!r} is not supported by the gate",
                                "unsupported_adapter")


def _suffix_match(name: str, patterns: list[str]) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns)


def _targeted(name: str, target: str | list[str], linear: dict) -> bool:
    """PEFT's rule: a string is a regex matched on the full name; a list matches exact names or suffixes."""
    if isinstance(target, str):
        if target == "all-linear":
            return name in linear and not name.endswith("lm_head")
        return re.fullmatch(target, name) is not None
    return _suffix_match(name, target)


def _expected_rank(name: str, cfg: dict) -> int:
    for pattern, value in (cfg.get("rank_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", name):
            return value
    return cfg["r"]


# --------------------------------------------------------------------------------------------- tensors

_LORA_RE = re.compile(
    r"^(?P<mod>.+?)\.(?:"
    r"(?P<ab>lora_A|lora_B)(?:\.[A-Za-z0-9_\-]+)?\.(?P<param>weight|bias)"
    r"|(?P<emb>lora_embedding_A|lora_embedding_B)(?:\.[A-Za-z0-9_\-]+)?"
    r"|(?P<mag>lora_magnitude_vector)(?:\.[A-Za-z0-9_\-]+)?(?:\.weight)?"
    r")$"
)


def _check_tensors(weights: Path, cfg: dict, shape: BaseShape, max_rank: int, findings: list[dict]
                   ) -> tuple[int, int]:
    """Check names, shapes, dtypes and finiteness of every tensor. Returns (max rank, number of parameters)."""
    import torch
    from safetensors import safe_open

    try:
        handle = safe_open(str(weights), framework="pt")
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise InputRejected(f"{WEIGHTS_NAME}: not a valid safetensors file ({exc})", "bad_safetensors") from None

    target = cfg["target_modules"]
    mts = cfg.get("modules_to_save") or []
    lora: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    full_weights: list[str] = []
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
            if m:
                mod = m.group("mod")
                kind = m.group("ab") or m.group("emb") or m.group("mag")
                if m.group("param") == "bias":
                    kind = "bias"
                if mod not in shape.linear and mod not in shape.embedding:
                    raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} refers to module {mod!r}, which the base "
                                        f"{shape.name} does not have", "base_mismatch")
                if not _targeted(mod, target, shape.linear):
                    raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} is for module {mod!r}, which is not in "
                                        f"target_modules {target!r}", "unexpected_tensor")
                lora.setdefault(mod, {})[kind] = (key, dims)
            else:
                # Full weights: modules_to_save copies (saved under the module name) or embedding base layers.
                mod = name.rsplit(".", 1)[0]
                base_param = name.replace(".base_layer.", ".")
                if not (_suffix_match(mod, mts) or ".base_layer." in name):
                    raise InputRejected(f"{WEIGHTS_NAME}: unexpected tensor {key} (neither a LoRA weight nor in "
                                        f"modules_to_save)", "unexpected_tensor")
                expected = shape.params.get(base_param)
                if expected is None and shape.params:
                    raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} refers to parameter {base_param!r}, which "
                                        f"the base {shape.name} does not have", "base_mismatch")
                if expected is not None and dims != expected:
                    raise InputRejected(f"{WEIGHTS_NAME}: tensor {key} has shape {list(dims)} but the base "
                                        f"{base_param} is {list(expected)}", "base_mismatch")
                full_weights.append(base_param)
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
        expected_r = _expected_rank(mod, cfg)
        if r != expected_r:
            raise InputRejected(f"{WEIGHTS_NAME}: tensor {a_key} has rank {r} but {CONFIG_NAME} says "
                                f"r={expected_r}", "base_mismatch")
        for extra in ("bias", "lora_magnitude_vector"):
            if extra in parts and parts[extra][1] != (out_f,):
                raise InputRejected(f"{WEIGHTS_NAME}: tensor {parts[extra][0]} has shape {list(parts[extra][1])} "
                                    f"but the base {mod} needs [{out_f}]", "base_mismatch")
        max_r = max(max_r, r)

    if not lora:
        raise InputRejected(f"{WEIGHTS_NAME}: holds no LoRA weights (no lora_A / lora_B tensors)", "empty_adapter")
    # modules_to_save entries were flagged from the config already; flag the rest (embedding targets save the
    # full embedding matrix as <module>.base_layer.weight).
    full_weights = [p for p in full_weights if not _suffix_match(p.rsplit(".", 1)[0], mts)]
    touched = sorted({p for p in full_weights if any(h in p for h in EMBEDDING_HINTS)})
    if touched:
        findings.append({"severity": "review", "code": "embeddings_replaced",
                         "message": f"adapter replaces full weights of {', '.join(touched)} (embeddings / lm_head "
                                    f"can remap tokens); review"})
    others = sorted(set(full_weights) - set(touched))
    if others:
        findings.append({"severity": "info", "code": "full_weights",
                         "message": f"adapter carries full weights for {', '.join(others[:8])}"})
    return max_r, n_params


# --------------------------------------------------------------------------------------------- entry point


def inspect_adapter(path: Path, base: BaseShape, *, workdir: Path) -> AdapterInspection:
    """Inspect the adapter at `path` (PEFT directory, .zip, .tar, .tar.gz) against `base`.

    Copies the two adapter files into `workdir/adapter` (the returned adapter_dir; nothing else is there to
    load). Raises InputRejected with a one-line reason and a stable code on the first problem.
    """
    from ftgate.settings import get_settings

    settings = get_settings()
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
        root = unpack_archive_safely(path, unpacked, max_files=settings.max_archive_files,
                                     max_bytes=settings.max_unpacked_bytes)
    else:
        raise InputRejected(f"{label}: no such file or directory", "missing_file")

    _scan_files(root, label, settings.max_unpacked_bytes, findings)
    cfg = _load_config(root / CONFIG_NAME)
    _validate_config(cfg, settings.max_adapter_rank)

    target = cfg["target_modules"]
    candidates = {**shape.linear, **shape.embedding}
    if isinstance(target, str):
        if not any(_targeted(n, target, shape.linear) for n in candidates):
            raise InputRejected(f"{CONFIG_NAME}: target_modules {target!r} matches no layer of the base "
                                f"{shape.name}", "unknown_target_module")
    else:
        for t in target:
            if not any(_suffix_match(n, [t]) for n in candidates):
                raise InputRejected(f"{CONFIG_NAME}: target module {t!r} does not exist in the base {shape.name} "
                                    f"({shape.model_type})", "unknown_target_module")
    for m in cfg.get("modules_to_save") or []:
        names = set(candidates) | {p.rsplit(".", 1)[0] for p in shape.params}
        if not any(_suffix_match(n, [m]) for n in names):
            raise InputRejected(f"{CONFIG_NAME}: modules_to_save entry {m!r} does not exist in the base "
                                f"{shape.name}", "unknown_target_module")
        if any(h in m for h in EMBEDDING_HINTS):
            findings.append({"severity": "review", "code": "modules_to_save_embeddings",
                             "message": f"modules_to_save includes {m!r}: the adapter retrains the embeddings / "
                                        f"lm_head in full"})
    declared = cfg.get("base_model_name_or_path")
    if declared and shape.name and declared != shape.name:
        findings.append({"severity": "info", "code": "base_name_differs",
                         "message": f"adapter says it was trained on {declared!r}; inspected against {shape.name!r}"})

    rank, n_params = _check_tensors(root / WEIGHTS_NAME, cfg, shape, settings.max_adapter_rank, findings)

    adapter_dir.mkdir(parents=True)
    for fname in ALLOWED:
        shutil.copyfile(root / fname, adapter_dir / fname)
    if unpacked.exists():
        shutil.rmtree(unpacked)
    if sha is None:
        sha = canonical_sha256(adapter_dir)
    return AdapterInspection(
        adapter_dir=adapter_dir,
        config=cfg,
        sha256=sha,
        rank=rank,
        target_modules=[target] if isinstance(target, str) else sorted(target),
        n_parameters=n_params,
        findings=findings,
    )
