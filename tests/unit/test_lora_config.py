"""The adapter_config.json allow-list (evaluation/lora_config.py): regex fields, initialisations that rewrite
the base, bounds on rank and alpha, and fields the gate does not know. Pure checks on dicts, plus a few
through inspect_adapter on real adapters built with peft on the tiny Llama."""

from __future__ import annotations

import json
import re

import pytest

from evaluation.adapters import inspect_adapter
from evaluation.errors import InputRejected
from evaluation.lora_config import ALPHA_PER_RANK, check_lora_config
from tests.helpers.adapters import edit_config, make_adapter, tiny_base_shape

MAX_RANK = 256
# Catastrophic backtracking: as a regex against a module name of n characters it takes ~2^n steps.
EVIL_REGEX = "(.|.)*X"


def valid(**changes) -> dict:
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
           "target_modules": ["q_proj", "v_proj"], "init_lora_weights": True, "peft_version": "0.21.2"}
    cfg.update(changes)
    return {k: v for k, v in cfg.items() if v is not ...}


def rejected(cfg: dict) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        check_lora_config(cfg, MAX_RANK)
    assert info.value.reason.startswith("adapter_config.json: ")
    return info.value


@pytest.fixture
def no_regex_evaluated(monkeypatch):
    """Fail the test if the hostile pattern reaches the re module (as it did through PEFT and the old check):
    refused by construction, not by a timeout. ("((" needs no guard: compiling it raised re.error, *failed*.)"""
    def guarded(original):
        def call(pattern, *args, **kwargs):
            if EVIL_REGEX in str(pattern):
                raise AssertionError(f"uploaded regex evaluated: {pattern!r}")
            return original(pattern, *args, **kwargs)
        return call

    for fn in ("match", "fullmatch", "search", "compile"):
        monkeypatch.setattr(re, fn, guarded(getattr(re, fn)))


# ------------------------------------------------------------------------------- #2: no regular expressions


@pytest.mark.parametrize("target", [EVIL_REGEX, "((", ".*q_proj", "q_proj"])
def test_string_target_modules_refused_without_running_it(target, no_regex_evaluated):
    err = rejected(valid(target_modules=target))
    assert err.code == "regex_not_allowed" and "target_modules" in err.reason and "all-linear" in err.reason


@pytest.mark.parametrize("name", [EVIL_REGEX, "((", "q_proj|v_proj", "layers.*.q_proj", "q proj", ""])
def test_target_module_names_must_be_plain(name, no_regex_evaluated):
    err = rejected(valid(target_modules=["q_proj", name]))
    assert err.code in ("regex_not_allowed", "bad_field") and "target_modules[1]" in err.reason


@pytest.mark.parametrize("key", ["rank_pattern", "alpha_pattern"])
@pytest.mark.parametrize("pattern", [EVIL_REGEX, "(("])
def test_pattern_keys_must_be_plain_names(key, pattern, no_regex_evaluated):
    err = rejected(valid(**{key: {pattern: 4}}))
    assert err.code == "regex_not_allowed" and key in err.reason


@pytest.mark.parametrize("field,value", [("exclude_modules", EVIL_REGEX), ("layers_pattern", "layers"),
                                         ("exclude_modules", [EVIL_REGEX])])
def test_other_regex_fields_refused(field, value, no_regex_evaluated):
    err = rejected(valid(**{field: value}))
    assert field in err.reason


def test_all_linear_and_plain_patterns_accepted():
    cfg = check_lora_config(valid(target_modules="all-linear", rank_pattern={"self_attn.q_proj": 8},
                                  alpha_pattern={"v_proj": 16}, exclude_modules=["mlp.down_proj"]), MAX_RANK)
    linear = {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "lm_head"}
    assert cfg.targets("model.layers.0.self_attn.q_proj", linear)
    assert not cfg.targets("model.layers.0.mlp.down_proj", linear)  # excluded
    assert not cfg.targets("lm_head", linear)  # all-linear leaves the output head out, as PEFT does
    assert cfg.rank_of("model.layers.3.self_attn.q_proj") == 8 and cfg.rank_of("model.layers.3.mlp.up_proj") == 4


def test_too_many_names_refused():
    err = rejected(valid(target_modules=[f"m{i}" for i in range(2000)]))
    assert "target_modules" in err.reason and "limit" in err.reason


def test_regex_target_refused_through_inspect(tmp_path, no_regex_evaluated):
    """The hang of issue 12 (#2), end to end: refused as an input (exit 3), the field named."""
    src = edit_config(make_adapter(tmp_path / "a"), target_modules=EVIL_REGEX)
    with pytest.raises(InputRejected) as info:
        inspect_adapter(src, tiny_base_shape(), workdir=tmp_path / "w")
    assert info.value.code == "regex_not_allowed" and "target_modules" in info.value.reason


# ------------------------------------------------------------------------------- #5: fields and bounds


@pytest.mark.parametrize("init", ["olora", "pissa", "pissa_niter_4", "corda", "loftq", "eva", "orthogonal"])
def test_initialisations_that_rewrite_the_base_refused(init):
    err = rejected(valid(init_lora_weights=init))
    assert err.code == "unsupported_adapter" and "init_lora_weights" in err.reason


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_harmless_initialisations_loaded_as_the_default(init):
    assert check_lora_config(valid(init_lora_weights=init), MAX_RANK).to_peft_dict()["init_lora_weights"] is True


@pytest.mark.parametrize("alpha", [1e30, float("inf"), float("nan"), 0, -8, True, "16",
                                   ALPHA_PER_RANK * MAX_RANK + 1])
def test_lora_alpha_bounded(alpha):
    err = rejected(valid(lora_alpha=alpha))
    assert err.code == "bad_field" and "lora_alpha" in err.reason


def test_lora_alpha_at_the_documented_maximum_accepted():
    assert check_lora_config(valid(lora_alpha=ALPHA_PER_RANK * MAX_RANK), MAX_RANK).lora_alpha == 1024


@pytest.mark.parametrize("changes,needle", [
    ({"alpha_pattern": {"q_proj": 1e30}}, "alpha_pattern['q_proj']"),
    ({"rank_pattern": {"q_proj": 512}}, "rank_pattern['q_proj']"),
    ({"rank_pattern": {"q_proj": 0}}, "rank_pattern['q_proj']"),
    ({"r": 0}, "'r'"),
    ({"r": 257}, "'r'"),
    ({"r": ...}, "'r'"),
    ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"use_rslora": "yes"}, "use_rslora"),
])
def test_rank_and_other_bounds(changes, needle):
    assert needle in rejected(valid(**changes)).reason


@pytest.mark.parametrize("field,value", [
    ("modules_to_save", ["lm_head"]),
    ("use_dora", True),
    ("bias", "all"),
    ("bias", "lora_only"),
    ("task_type", "SEQ_CLS"),
    ("trainable_token_indices", [1, 2]),
    ("layer_replication", [[0, 1]]),
    ("loftq_config", {"loftq_bits": 4}),
    ("corda_config", {"cache_file": "x"}),
    ("layers_to_transform", [0]),
])
def test_unsupported_features_refused(field, value):
    err = rejected(valid(**{field: value}))
    assert err.code == "unsupported_adapter" and field in err.reason


def test_unknown_field_refused_when_set_ignored_when_empty():
    err = rejected(valid(future_init_method="rewrite-base"))
    assert err.code == "unknown_field" and "future_init_method" in err.reason
    cfg = check_lora_config(valid(future_feature=None, another={}), MAX_RANK)
    assert cfg.ignored == ("another", "future_feature")
    assert "future_feature" not in cfg.to_peft_dict()


def test_default_peft_config_accepted():
    """What peft writes for an ordinary LoRA (every field of this peft version) passes the allow-list."""
    from peft import LoraConfig

    saved = json.loads(json.dumps(LoraConfig(r=4, target_modules=["q_proj"]).to_dict(), default=sorted))
    cfg = check_lora_config(saved, MAX_RANK)
    assert cfg.target_modules == ("q_proj",) and cfg.ignored == ()


def test_gate_loads_the_rewritten_config(tmp_path):
    """inspect writes the checked config beside the weights: PEFT never sees the uploaded file's extra fields."""
    src = edit_config(make_adapter(tmp_path / "a"), init_lora_weights="gaussian", unknown_empty=None,
                      auto_mapping={"base_model_class": "Evil"})
    res = inspect_adapter(src, tiny_base_shape(), workdir=tmp_path / "w")
    loaded = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    assert loaded == res.config
    assert loaded["init_lora_weights"] is True and loaded["modules_to_save"] is None and loaded["use_dora"] is False
    assert "unknown_empty" not in loaded and "auto_mapping" not in loaded
    assert any(f["code"] == "ignored_config_fields" for f in res.findings)


def test_deeply_nested_config_refused(tmp_path):
    """100k nested brackets raised RecursionError (*failed*); now an input refusal naming the file."""
    src = make_adapter(tmp_path / "a")
    (src / "adapter_config.json").write_text('{"peft_type": "LORA", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InputRejected) as info:
        inspect_adapter(src, tiny_base_shape(), workdir=tmp_path / "w")
    assert info.value.code == "too_deep" and "adapter_config.json" in info.value.reason
