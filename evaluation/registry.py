"""One registry shape for every named thing of the core: suites, judges, bases, dataset formats and policies.

A ``Registry`` maps names to entries, in registration order:

- ``register(name, value)`` adds a value;
- ``register_lazy(name, target)`` adds a ``"module:attr"`` string or a zero-argument factory, resolved on
  the first ``get`` and kept, so a heavy import or load happens only when the entry is used;
- ``add_source(mapping_or_function)`` adds entries found at lookup time (the files of a folder, an operator's
  settings file, a dict filled while the process runs). Layers are read in the order they were added, the
  registry's own entries first; a later layer's entry replaces an earlier one of the same name, in place.

``get(name)`` raises ``UnknownName``, whose message lists the known names and the closest ones to the name
asked for ("did you mean ...?"). Entries of a source are read as they are (a source is never lazy).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from evaluation.errors import UnknownName

T = TypeVar("T")
Source = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class _Lazy:
    """An entry not built yet: a "module:attr" string or a zero-argument factory."""

    __slots__ = ("target",)

    def __init__(self, target: str | Callable[[], Any]):
        if isinstance(target, str) and (target.count(":") != 1 or not all(target.split(":"))):
            raise ValueError(f"a lazy registry target is 'module:attr', got {target!r}")
        if not isinstance(target, str) and not callable(target):
            raise TypeError(f"a lazy registry target is 'module:attr' or a factory, got {target!r}")
        self.target = target

    def resolve(self) -> Any:
        if isinstance(self.target, str):
            module, attr = self.target.split(":")
            return getattr(importlib.import_module(module), attr)
        return self.target()


class Registry(Generic[T]):
    """Named entries of one kind ("judge", "suite", ...): the kind names them in UnknownName's message."""

    def __init__(self, kind: str):
        self.kind = kind
        self._own: dict[str, T | _Lazy] = {}
        self._layers: list[Source] = [self._own]
        self._lock = threading.RLock()  # a factory may look other entries up

    # ------------------------------------------------------------------------------------- registering
    def register(self, name: str, value: T, *, replace: bool = False) -> T:
        """Add ``value`` under ``name``; a second registration of a name is refused unless ``replace``."""
        self._add(name, value, replace)
        return value

    def register_lazy(self, name: str, target: str | Callable[[], T], *, replace: bool = False) -> None:
        """Add an entry built on first use: ``"package.module:attr"`` (imported then) or a factory (called
        then, once)."""
        self._add(name, _Lazy(target), replace)

    def add_source(self, source: Source) -> None:
        """Add a layer read at every lookup: a mapping (read live) or a function returning one."""
        self._layers.append(source)

    def _add(self, name: str, entry: T | _Lazy, replace: bool) -> None:
        with self._lock:
            if name in self._own and not replace:
                raise ValueError(f"{self.kind} {name!r} is registered already")
            self._own[name] = entry

    # ------------------------------------------------------------------------------------- looking up
    def _entries(self) -> dict[str, T | _Lazy]:
        merged: dict[str, T | _Lazy] = {}
        for layer in self._layers:
            merged.update(layer if isinstance(layer, Mapping) else layer())
        return merged

    def names(self) -> list[str]:
        """Every name, in registration order (an overriding layer keeps the overridden name's place)."""
        return list(self._entries())

    def get(self, name: str) -> T:
        """The entry registered under ``name`` (built now if it was lazy); UnknownName if there is none."""
        with self._lock:
            entries = self._entries()
            if name not in entries:
                raise UnknownName(self.kind, name, list(entries))
            entry = entries[name]
            if isinstance(entry, _Lazy):
                entry = entry.resolve()
                if isinstance(self._own.get(name), _Lazy):
                    self._own[name] = entry
            return entry

    def values(self) -> list[T]:
        """Every entry, in the order of ``names()`` (lazy ones are built)."""
        return [self.get(name) for name in self.names()]

    def items(self) -> list[tuple[str, T]]:
        return [(name, self.get(name)) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
