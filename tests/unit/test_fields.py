"""evaluation.fields: bounds and their wording, and the declarations TrainingConfig and Policy make with them
(help on every field, bounds the checks use, flags made from them)."""

from __future__ import annotations

import dataclasses

import pytest

from evaluation.errors import InputRejected
from evaluation.fields import Bounds, allowed, choices
from evaluation.finetune import TrainingConfig
from evaluation.policy import Policy


@pytest.mark.parametrize(("bounds", "integer", "text", "inside", "outside"), [
    (Bounds(1, 1000), True, "1..1000", [1, 1000], [0, 1001]),
    (Bounds(0, 0.01, low_open=True), False, "over 0, at most 0.01", [1e-9, 0.01], [0, 0.011, float("nan")]),
    (Bounds(0, 1, high_open=True), False, "0 or more, under 1", [0, 0.99], [-0.1, 1]),
    (Bounds(low=1), True, "1 or more", [1, 10**9], [0]),
    (Bounds(), False, "any", [-1e9], []),
])
def test_bounds_check_and_say_their_range(bounds, integer, text, inside, outside):
    assert bounds.text(integer) == text
    assert all(v in bounds for v in inside) and not any(v in bounds for v in outside)


def test_every_training_option_and_policy_key_declares_its_help_and_what_it_accepts():
    for f in dataclasses.fields(TrainingConfig):
        assert f.metadata["help"] and allowed(TrainingConfig, f), f.name
    assert choices(TrainingConfig, "optimizer") == ("adamw8bit", "adamw")
    for f in dataclasses.fields(Policy):
        if f.name != "source":
            assert f.metadata["help"] and f.metadata["kind"] and f.metadata["section"], f.name
            assert (f.metadata["bounds"] is None) == (f.metadata["kind"] in ("text", "flag", "choice")), f.name
            assert bool(choices(Policy, f.name)) == (f.metadata["kind"] == "choice"), f.name


@pytest.mark.parametrize("f", [f for f in dataclasses.fields(TrainingConfig) if f.metadata["bounds"]],
                         ids=lambda f: f.name)
def test_a_value_past_a_declared_bound_is_refused_with_the_declared_range(f):
    bounds = f.metadata["bounds"]
    past = bounds.high + (1 if type(f.default) is int else 0.5) if bounds.high is not None else bounds.low - 1
    with pytest.raises(InputRejected) as err:
        TrainingConfig.from_overrides({f.name: past})
    assert f"{f.name}={type(f.default)(past)} (allowed: {allowed(TrainingConfig, f)})" in err.value.reason


def test_the_training_flags_are_made_from_the_declarations():
    from ftgate.cli import _training_from_args, build_parser

    args = build_parser().parse_args(["check", "x.jsonl", "--batch-size", "4", "--train-on", "chosen", "--lr", "1e-4"])
    cfg = _training_from_args(args)
    assert (cfg.batch_size, cfg.preference_side, cfg.lr, cfg.steps) == (4, "chosen", 1e-4, 50)
    assert build_parser().parse_args(["make-adapter", "d.jsonl", "--out", "o", "--optimizer", "adamw"]).optimizer == "adamw"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", "x.jsonl", "--optimizer", "sgd"])
