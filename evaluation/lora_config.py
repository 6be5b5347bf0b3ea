"""The allow-list of `adapter_config.json` fields the gate accepts, with their bounds.

PEFT treats adapter_config.json as instructions, not data. A string `target_modules` (and a string
`exclude_modules`, `layers_pattern`, the keys of `rank_pattern` / `alpha_pattern`) is compiled as a regular
expression: `"(.|.)*X"` backtracks for hours while holding the GIL. `init_lora_weights` methods such as
"olora", "pissa", "corda" or "loftq" REWRITE THE BASE'S WEIGHTS when the adapter is attached: on a shared
4-bit base, for every later tenant of that worker. `modules_to_save` and `bias` carry full weights that
are loaded over the base's. So every field is checked here, and the gate loads the config rebuilt from the
checked values (`CheckedLoraConfig.to_peft_dict()`), never the uploaded file.

The rules, by field:
- `peft_type` "LORA"; `task_type` null or "CAUSAL_LM";
- `r` an integer in [1, max_rank]; `lora_alpha` a finite number in (0, ALPHA_PER_RANK * max_rank];
- `target_modules` a list of plain module names (letters, digits, `_`, dot-separated) or the literal
  "all-linear"; `exclude_modules` null or such a list; `rank_pattern` / `alpha_pattern` objects whose keys
  are plain names and whose values obey the bounds of `r` / `lora_alpha`;
- `init_lora_weights` true, false or "gaussian" (they only choose the random start of A and B, which the
  uploaded weights replace) and loaded as true; every other method is refused;
- `lora_dropout` in [0, 1); `use_rslora`, `fan_in_fan_out`, `lora_bias` booleans; `bias` "none";
- the fields in MUST_BE_OFF must be absent or empty (null, false, {}, []);
- metadata fields (METADATA_FIELDS) are kept for the report only;
- any other field is ignored if empty and refused otherwise (a field the gate does not know could change
  what PEFT does when loading).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from evaluation.errors import InputRejected

CONFIG_NAME = "adapter_config.json"
ALL_LINEAR: Final = "all-linear"
ALPHA_PER_RANK = 4  # lora_alpha <= 4 * max_rank (1024 with the default max rank 256)
MAX_NAMES = 1024  # entries in target_modules / exclude_modules / each pattern: bounds the matching work
MAX_NAME_CHARS = 200
# A module name or a dotted suffix of one ("q_proj", "self_attn.q_proj"). As a regex (PEFT compiles pattern
# keys) such a name can only match in linear time: no quantifiers, groups or alternations.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")

# These only choose the random initialisation of A and B; the uploaded weights replace it.
HARMLESS_INITS: tuple[Any, ...] = (True, False, "gaussian")

# Fields that say nothing about how to load the adapter: recorded, never passed to PEFT.
METADATA_FIELDS = frozenset({"peft_version", "base_model_name_or_path", "revision", "auto_mapping",
                             "inference_mode", "megatron_core", "qalora_group_size", "ensure_weight_tying"})

# Fields that switch on something the gate refuses, and why (shown to the submitter).
MUST_BE_OFF: dict[str, str] = {
    "modules_to_save": "it replaces whole modules of the base (e.g. embeddings or lm_head) with uploaded weights",
    "use_dora": "DoRA adapters are not supported by the gate",
    "layers_to_transform": "layer selection is not supported by the gate",
    "layers_pattern": "it is used as a regular expression",
    "trainable_token_indices": "it replaces rows of the base's embeddings",
    "target_parameters": "'target_parameters' adapters are not supported",
    "layer_replication": "it changes the base's layer stack",
    "megatron_config": "Megatron layers are not supported",
    "loftq_config": "LoftQ initialisation rewrites the base's weights",
    "eva_config": "EVA initialisation is not supported",
    "corda_config": "CorDA initialisation rewrites the base's weights",
    "lora_ga_config": "LoRA-GA initialisation rewrites the base's weights",
    "velora_config": "VeLoRA is not supported",
    "alora_invocation_tokens": "activated LoRA (aLoRA) is not supported",
    "use_qalora": "QA-LoRA is not supported",
    "monteclora_config": "MonteCLoRA is not supported",
    "use_bdlora": "BD-LoRA is not supported",
    "arrow_config": "Arrow routing is not supported",
    "kasa_config": "KaSA is not supported",
}

_CHECKED_FIELDS = frozenset({"peft_type", "task_type", "r", "lora_alpha", "target_modules", "exclude_modules",
                             "rank_pattern", "alpha_pattern", "init_lora_weights", "lora_dropout", "use_rslora",
                             "fan_in_fan_out", "lora_bias", "bias"})


@dataclass(frozen=True)
class CheckedLoraConfig:
    """An adapter_config.json that passed the allow-list: only the fields the gate lets PEFT see."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | Literal["all-linear"]
    task_type: str | None = None
    exclude_modules: tuple[str, ...] = ()
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    lora_dropout: float = 0.0
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    lora_bias: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # METADATA_FIELDS as uploaded (report only)
    ignored: tuple[str, ...] = ()  # unknown fields that were empty, dropped

    def targets(self, module: str, linear_modules: dict | set) -> bool:
        """PEFT's matching rule restricted to plain names: 'all-linear' is every linear layer but the output
        head; a name matches a module equal to it or ending in '.' + it; exclusions win."""
        if name_matches(module, self.exclude_modules):
            return False
        if isinstance(self.target_modules, str):  # ALL_LINEAR: every other value is a tuple of names
            return module in linear_modules and not module.endswith("lm_head")
        return name_matches(module, self.target_modules)

    def rank_of(self, module: str) -> int:
        return next((r for key, r in self.rank_pattern.items() if name_matches(module, (key,))), self.r)

    def to_peft_dict(self) -> dict[str, Any]:
        """The adapter_config.json the gate writes beside the weights and PEFT loads."""
        return {
            "peft_type": "LORA",
            "task_type": self.task_type,
            "base_model_name_or_path": _str_or_none(self.metadata.get("base_model_name_or_path")),
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "target_modules": ALL_LINEAR if self.target_modules == ALL_LINEAR else list(self.target_modules),
            "exclude_modules": list(self.exclude_modules) or None,
            "rank_pattern": dict(self.rank_pattern),
            "alpha_pattern": dict(self.alpha_pattern),
            "lora_dropout": self.lora_dropout,
            "use_rslora": self.use_rslora,
            "fan_in_fan_out": self.fan_in_fan_out,
            "lora_bias": self.lora_bias,
            "bias": "none",
            "init_lora_weights": True,  # forced: other methods rewrite the base when the adapter attaches
            "inference_mode": True,
            "modules_to_save": None,
            "use_dora": False,
        }


def name_matches(module: str, names: tuple[str, ...] | list[str]) -> bool:
    """PEFT's rule for a list of names: the module is one of them, or ends in "." + one of them."""
    return any(module == n or module.endswith("." + n) for n in names)


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _fail(msg: str, code: str = "bad_field") -> InputRejected:
    return InputRejected(f"{CONFIG_NAME}: {msg}", code)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_off(v: Any) -> bool:
    return v is None or v is False or (isinstance(v, dict | list | str) and len(v) == 0)


def _plain_name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise _fail(f"{where} must be a non-empty module name, got {name!r}")
    if len(name) > MAX_NAME_CHARS or not _PLAIN_NAME.fullmatch(name):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise _fail(f"{where} {shown!r} is not a plain module name (letters, digits, '_' and dots; regular "
                    f"expressions are not accepted)", "regex_not_allowed")
    return name


def _name_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(f"field {key!r} must be a list of module names, got {type(value).__name__}")
    if len(value) > MAX_NAMES:
        raise _fail(f"field {key!r} has {len(value)} entries, over the limit of {MAX_NAMES}")
    return tuple(_plain_name(f"{key}[{i}]", v) for i, v in enumerate(value))


def _target_modules(value: Any) -> tuple[str, ...] | Literal["all-linear"]:
    if value == ALL_LINEAR:
        return ALL_LINEAR
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise _fail(f"field 'target_modules' is the string {shown!r}: it must be a list of module names or "
                    f"{ALL_LINEAR!r} (PEFT would use a string as a regular expression, which is not accepted)",
                    "regex_not_allowed")
    names = _name_list("target_modules", value)
    if not names:
        raise _fail("field 'target_modules' is empty", "missing_field")
    return names


def _rank(where: str, value: Any, max_rank: int) -> int:
    if not _is_int(value) or value < 1:
        raise _fail(f"{where} must be a positive integer, got {value!r}")
    if value > max_rank:
        raise _fail(f"{where}={value} is over the limit of {max_rank}", "rank_too_large")
    return value


def _alpha(where: str, value: Any, max_alpha: float) -> float:
    if not _is_number(value) or not math.isfinite(value) or not 0 < value <= max_alpha:
        raise _fail(f"{where} must be a finite number in (0, {max_alpha:g}], got {value!r}")
    return value


def _pattern(key: str, value: Any, check) -> dict:
    if _is_off(value):
        return {}
    if not isinstance(value, dict):
        raise _fail(f"field {key!r} must be an object of module name -> value")
    if len(value) > MAX_NAMES:
        raise _fail(f"field {key!r} has {len(value)} entries, over the limit of {MAX_NAMES}")
    return {_plain_name(f"{key} key", k): check(f"{key}[{k!r}]", v) for k, v in value.items()}


def _boolean(cfg: dict, key: str) -> bool:
    value = cfg.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(f"field {key!r} must be true or false, got {value!r}")
    return value


def check_lora_config(cfg: dict, max_rank: int) -> CheckedLoraConfig:
    """Check an uploaded adapter_config.json (a parsed JSON object) against the allow-list.

    Raises InputRejected naming the field on the first problem; returns the checked, typed config.
    """
    if "peft_type" not in cfg:
        raise _fail("field 'peft_type' is missing", "missing_field")
    if cfg["peft_type"] != "LORA":
        raise _fail(f"field 'peft_type' is {cfg['peft_type']!r}; only 'LORA' is supported", "unsupported_adapter")
    task_type = cfg.get("task_type")
    if task_type not in (None, "CAUSAL_LM"):
        raise _fail(f"field 'task_type' is {task_type!r}; only 'CAUSAL_LM' (or null) is supported",
                    "unsupported_adapter")

    for key, why in MUST_BE_OFF.items():
        if not _is_off(cfg.get(key)):
            raise _fail(f"field {key!r} is not accepted ({why})", "unsupported_adapter")
    unknown = sorted(k for k in cfg if k not in _CHECKED_FIELDS | METADATA_FIELDS | set(MUST_BE_OFF))
    refused = [k for k in unknown if not _is_off(cfg[k])]
    if refused:
        raise _fail(f"unknown field {refused[0]!r} (the gate accepts only the fields it checks; unknown fields "
                    f"must be absent or empty)", "unknown_field")

    if "r" not in cfg:
        raise _fail("field 'r' (the LoRA rank) is missing", "missing_field")
    r = _rank("field 'r'", cfg["r"], max_rank)
    max_alpha = float(ALPHA_PER_RANK * max_rank)
    alpha = _alpha("field 'lora_alpha'", cfg.get("lora_alpha", 8), max_alpha)

    if _is_off(cfg.get("target_modules")):
        raise _fail("field 'target_modules' is missing", "missing_field")
    target = _target_modules(cfg["target_modules"])
    exclude = () if _is_off(cfg.get("exclude_modules")) else _name_list("exclude_modules", cfg["exclude_modules"])
    rank_pattern = _pattern("rank_pattern", cfg.get("rank_pattern"), lambda w, v: _rank(w, v, max_rank))
    alpha_pattern = _pattern("alpha_pattern", cfg.get("alpha_pattern"), lambda w, v: _alpha(w, v, max_alpha))

    init = cfg.get("init_lora_weights", True)
    if not any(init is h or (isinstance(h, str) and init == h) for h in HARMLESS_INITS):
        raise _fail(f"field 'init_lora_weights' is {init!r}; only true, false or 'gaussian' are accepted (other "
                    f"initialisations rewrite the base model's weights when the adapter is attached)",
                    "unsupported_adapter")
    dropout = cfg.get("lora_dropout", 0.0)
    if dropout is None:
        dropout = 0.0
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise _fail(f"field 'lora_dropout' must be a number in [0, 1), got {dropout!r}")
    bias = cfg.get("bias", "none")
    if bias not in (None, "none"):
        raise _fail(f"field 'bias' is {bias!r}; only 'none' is accepted ('all' and 'lora_only' load bias "
                    f"weights over the base's)", "unsupported_adapter")

    return CheckedLoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=target,
        task_type=task_type,
        exclude_modules=exclude,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        lora_dropout=float(dropout),
        use_rslora=_boolean(cfg, "use_rslora"),
        fan_in_fan_out=_boolean(cfg, "fan_in_fan_out"),
        lora_bias=_boolean(cfg, "lora_bias"),
        metadata={k: cfg[k] for k in sorted(METADATA_FIELDS) if k in cfg},
        ignored=tuple(unknown),
    )
