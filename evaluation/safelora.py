"""A training-free repair of an uploaded LoRA adapter, in the spirit of SafeLoRA (Hsu et al., 2024).

An uploaded adapter comes without its training data, so it cannot be fine-tuned again with safety data. What
the gate does have is the safety direction of every layer: the guarded base is the raw base plus the guard's
LoRA (evaluation/guard.py), so per module the safety update is ``V = B_g @ A_g * scale_g``. For each module of
the customer's adapter, its update ``dW = B @ A * scale`` is projected onto the subspace V's columns span,
``C dW``; a layer whose update points away from that subspace (cosine similarity of ``dW`` and ``C dW`` below the
threshold) gets ``C dW`` in place of ``dW``, and the result is refactored into a LoRA of the same rank by a
truncated SVD. Layers at or over the threshold, and modules the guard does not touch, are kept as they were.

One difference from SafeLoRA, on purpose: SafeLoRA uses ``C = V V^T / ||V||_F``, which is not a projection
(it scales each safety direction by its singular value squared over the norm, so an update inside the safety
subspace is still changed). Here ``C = U U^T`` with U an orthonormal basis of V's column space (its singular
vectors above a relative tolerance): an orthogonal projection, so an update already inside the subspace is
kept exactly and one orthogonal to it is removed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.errors import InputRejected

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
RANK_TOLERANCE = 1e-6  # singular values under this share of the largest do not span the safety subspace


@dataclass
class LoraModule:
    """One adapted module: ``lora_A`` (rank x in), ``lora_B`` (out x rank) and the scale of ``B @ A``."""

    a: Any
    b: Any
    scale: float

    @property
    def delta(self):
        return (self.b.double() @ self.a.double()) * self.scale


def _module_name(key: str) -> tuple[str, str] | None:
    """("model.layers.0.self_attn.q_proj", "A"), from a PEFT weight name, else None (not a LoRA matrix).
    ``lora_B.bias`` (PEFT's lora_bias, which the gate accepts) is "bias": it must not be taken for B."""
    for which in ("A", "B"):
        marker = f".lora_{which}."
        if marker in key:
            name = key.split(marker)[0]
            part = "bias" if which == "B" and key.endswith(".bias") else which
            return name.removeprefix("base_model.model."), part
    return None


def _pattern_value(module: str, pattern: dict[str, Any], default: Any) -> Any:
    from evaluation.lora_config import name_matches

    return next((v for key, v in pattern.items() if name_matches(module, (key,))), default)


def load_lora(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, LoraModule], dict[str, Any]]:
    """(config, modules by name, every tensor by key) of a PEFT LoRA folder. Refuses what the projection cannot
    treat as ``B @ A``: transposed (fan-in-fan-out) weights."""
    from safetensors.torch import load_file

    config = json.loads((Path(adapter_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("fan_in_fan_out"):
        raise InputRejected("a fan-in-fan-out (Conv1D) adapter cannot be repaired without training", "bad_repair")
    tensors = load_file(str(Path(adapter_dir) / WEIGHTS_FILE))
    parts: dict[str, dict[str, Any]] = {}
    for key, t in tensors.items():
        found = _module_name(key)
        if found:
            parts.setdefault(found[0], {})[found[1]] = t
    r, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    modules = {}
    for name, ab in parts.items():
        if not {"A", "B"} <= set(ab):
            continue
        rank = int(_pattern_value(name, config.get("rank_pattern") or {}, r))
        a = float(_pattern_value(name, config.get("alpha_pattern") or {}, alpha))
        scale = a / math.sqrt(rank) if config.get("use_rslora") else a / rank
        modules[name] = LoraModule(ab["A"], ab["B"], scale)
    return config, modules, tensors


def safety_basis(v):
    """An orthonormal basis (out x k) of the column space of the safety update ``v`` (out x in)."""
    import torch

    u, s, _ = torch.linalg.svd(v.double(), full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return u[:, :0]
    return u[:, s > RANK_TOLERANCE * s[0]]


def project(delta, basis):
    """``C dW`` with ``C = U U^T``: the part of the update inside the safety subspace."""
    return basis @ (basis.T @ delta.double())


def cosine(x, y) -> float:
    """Cosine similarity of two matrices, flattened (0 when either is zero)."""
    import torch

    nx, ny = float(torch.linalg.norm(x)), float(torch.linalg.norm(y))
    return float((x.double() * y.double()).sum()) / (nx * ny) if nx and ny else 0.0


def refactor(delta, rank: int, scale: float, dtype) -> tuple[Any, Any]:
    """(A, B) of the given rank with ``B @ A * scale`` the best rank-``rank`` approximation of ``delta``."""
    import torch

    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    k = min(rank, s.numel())
    root = torch.sqrt(s[:k])
    b = torch.zeros(delta.shape[0], rank, dtype=torch.float64)
    a = torch.zeros(rank, delta.shape[1], dtype=torch.float64)
    b[:, :k] = u[:, :k] * root / math.sqrt(scale)
    a[:k] = root[:, None] * vh[:k] / math.sqrt(scale)
    return a.to(dtype), b.to(dtype)


def repair_lora(adapter_dir: Path, guard_dir: Path, out_dir: Path, *, threshold: float) -> dict[str, Any]:
    """Write the repaired adapter to ``out_dir`` (config and weights as uploaded but for the projected layers)
    and return what was done: per module its similarity and whether it was projected, and the share of the
    update's norm kept."""
    import shutil

    from safetensors.torch import save_file

    config, modules, tensors = load_lora(adapter_dir)
    _, guard, _ = load_lora(guard_dir)
    layers: list[dict[str, Any]] = []
    kept_sq, total_sq = 0.0, 0.0
    out = dict(tensors)
    for name, m in sorted(modules.items()):
        delta = m.delta
        total_sq += float((delta ** 2).sum())
        if name not in guard or guard[name].delta.shape != delta.shape:
            layers.append({"module": name, "similarity": None, "projected": False})
            kept_sq += float((delta ** 2).sum())
            continue
        basis = safety_basis(guard[name].delta)
        projected = project(delta, basis)
        similarity = cosine(delta, projected)
        replace = similarity < threshold
        layers.append({"module": name, "similarity": round(similarity, 4), "projected": replace})
        if not replace:
            kept_sq += float((delta ** 2).sum())
            continue
        kept_sq += float((projected ** 2).sum())
        a, b = refactor(projected, m.a.shape[0], m.scale, m.a.dtype)
        for key, t in tensors.items():
            found = _module_name(key)
            if found and found[0] == name:
                if found[1] == "bias":  # a lora bias adds to the same outputs as B @ A: the same projection
                    out[key] = project(t[:, None], basis)[:, 0].to(t.dtype)
                else:
                    out[key] = a if found[1] == "A" else b
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in out.items()}, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    n_projected = sum(1 for la in layers if la["projected"])
    return {"threshold": threshold, "layers": len(layers), "projected_layers": n_projected,
            "unmatched_layers": sum(1 for la in layers if la["similarity"] is None),
            "update_norm_kept": round(math.sqrt(kept_sq / total_sq), 4) if total_sq else 1.0,
            "per_layer": layers}
