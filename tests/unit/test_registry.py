"""evaluation.registry: registration, lazy targets, sources and their order, and UnknownName's suggestions."""

from __future__ import annotations

import sys

import pytest

from evaluation.errors import UnknownName
from evaluation.registry import Registry


def test_values_keep_their_registration_order_and_a_name_is_registered_once():
    reg: Registry[int] = Registry("thing")
    reg.register("b", 2)
    reg.register("a", 1)
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and len(reg) == 2
    assert reg.get("a") == 1 and "a" in reg and "c" not in reg
    assert reg.items() == [("b", 2), ("a", 1)]
    with pytest.raises(ValueError, match="thing 'a' is registered already"):
        reg.register("a", 3)
    reg.register("a", 3, replace=True)
    assert reg.values() == [2, 3]


def test_a_lazy_factory_runs_on_first_use_and_once():
    calls = []
    reg: Registry[str] = Registry("thing")
    reg.register_lazy("x", lambda: calls.append(1) or "built")
    assert calls == [] and reg.names() == ["x"]
    assert reg.get("x") == "built" and reg.get("x") == "built"
    assert calls == [1]


def test_a_lazy_module_attribute_is_imported_on_first_use(monkeypatch):
    monkeypatch.delitem(sys.modules, "evaluation.formatting", raising=False)
    reg: Registry = Registry("formatter")
    reg.register_lazy("percent", "evaluation.formatting:percent")
    assert "evaluation.formatting" not in sys.modules
    assert reg.get("percent")(0.5) == "50.0%"
    for bad in ("evaluation.formatting", "a:b:c", ":percent"):
        with pytest.raises(ValueError, match="module:attr"):
            reg.register_lazy("bad", bad)


def test_sources_are_read_at_lookup_and_later_layers_override_in_place():
    live: dict[str, str] = {}
    found = {"packaged": "p", "shared": "from-source"}
    reg: Registry[str] = Registry("policy")
    reg.register("shared", "own")
    reg.add_source(lambda: found)
    reg.add_source(live)
    assert reg.names() == ["shared", "packaged"] and reg.get("shared") == "from-source"
    live["shared"] = "live"
    live["new"] = "n"
    assert reg.names() == ["shared", "packaged", "new"] and reg.get("shared") == "live"


def test_an_unknown_name_lists_the_known_ones_and_suggests_the_closest():
    reg: Registry[int] = Registry("judge")
    for i, name in enumerate(("keyword", "embedded", "llama-guard")):
        reg.register(name, i)
    with pytest.raises(UnknownName) as e:
        reg.get("embeded")
    assert str(e.value) == ("unknown judge 'embeded'; known: embedded, keyword, llama-guard; "
                            "did you mean 'embedded'?")
    assert e.value.kind == "judge" and e.value.name == "embeded" and e.value.suggestions == ["embedded"]
    assert set(e.value.known) == {"keyword", "embedded", "llama-guard"}
    with pytest.raises(UnknownName) as e:
        reg.get("gpt-4")
    assert str(e.value) == "unknown judge 'gpt-4'; known: embedded, keyword, llama-guard"
    with pytest.raises(UnknownName, match=r"known: \(none\)$"):
        Registry("suite").get("x")
