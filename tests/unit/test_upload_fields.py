"""The upload form's `training` field (api/submissions.py), parsed without a server: 100k nested brackets
answered 500 (RecursionError); every malformed value is a 422 naming the field."""

from __future__ import annotations

import pytest

from api.errors import ApiError
from api.submissions import parse_training_field


def refused(raw: str, kind: str = "dataset") -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_training_field(raw, kind)
    assert info.value.status == 422 and info.value.field == "training"
    return info.value


def test_deep_nesting_is_a_422_not_a_500():
    assert "nested too deep" in refused("[" * 100_000 + "]" * 100_000).message
    assert "nested too deep" in refused('{"steps": ' + "[" * 60_000 + "}").message


def test_nested_values_refused_by_option_name():
    assert "'steps'" in refused('{"steps": [[1]]}').message


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"steps"'])
def test_malformed_training_refused(raw):
    refused(raw)


def test_flat_overrides_accepted():
    assert parse_training_field(' {"steps": 5, "lr": 1e-4, "optimizer": "adamw"} ', "dataset") == {
        "steps": 5, "lr": 1e-4, "optimizer": "adamw"}
    assert parse_training_field("", "adapter") == {}
    refused('{"steps": 5}', kind="adapter")
