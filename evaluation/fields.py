"""Dataclass fields that document themselves: help, unit and bounds declared once, as field metadata.

``option(default, help=..., unit=..., low=..., high=...)`` declares a field (as TRL's dataclass arguments do);
the validation, the command-line flags and the documentation tables read that one declaration:

- ``Bounds`` checks a value and says the allowed range the way a submitter reads it ("1..1000", "over 0,
  at most 0.01", "0 or more, under 1");
- ``choices`` gives a ``Literal`` field's allowed values;
- ``add_arguments`` adds an argparse flag for each field declared with ``cli``;
- ``markdown_table`` renders rows as a Markdown table (for docs generated from the declarations).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Bounds:
    """An interval: ``low`` / ``high`` (None: unbounded), each end closed unless marked open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def text(self, integer: bool = False) -> str:
        """"1..1000" for whole numbers between closed ends; else "over 0, at most 0.01" and the like."""
        if integer and None not in (self.low, self.high) and not (self.low_open or self.high_open):
            return f"{self.low}..{self.high}"
        parts = []
        if self.low is not None:
            parts.append(f"over {self.low:g}" if self.low_open else f"{self.low:g} or more")
        if self.high is not None:
            parts.append(f"under {self.high:g}" if self.high_open else f"at most {self.high:g}")
        return ", ".join(parts) or "any"


def option(default: Any, *, help: str, unit: str = "", low: float | None = None,  # noqa: A002 - argparse's word
           high: float | None = None, low_open: bool = False, high_open: bool = False,
           cli: bool | str = False, **extra: Any) -> Any:
    """A dataclass field with its documentation in ``metadata``: ``help`` (one line), ``unit``, ``bounds``
    (when ``low`` or ``high`` is given), ``cli`` (True: a flag named after the field; a string: that flag) and
    any ``extra`` keys a caller reads (e.g. a policy field's section)."""
    bounds = None if low is None and high is None else Bounds(low, high, low_open, high_open)
    return dataclasses.field(default=default, metadata={"help": help, "unit": unit, "bounds": bounds, "cli": cli,
                                                        **extra})


def choices(cls: type, name: str) -> tuple[Any, ...] | None:
    """The allowed values of a field typed ``Literal[...]``, else None."""
    hint = typing.get_type_hints(cls)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def allowed(cls: type, f: dataclasses.Field) -> str:
    """What a field accepts, as shown to the person who set it: its choices or its bounds ("" if anything)."""
    values = choices(cls, f.name)
    if values:
        return ", ".join(map(str, values))
    bounds = f.metadata.get("bounds")
    return bounds.text(integer=type(f.default) is int) if bounds else ""


def is_allowed(cls: type, f: dataclasses.Field, value: Any) -> bool:
    values = choices(cls, f.name)
    if values:
        return value in values
    bounds = f.metadata.get("bounds")
    return bounds is None or value in bounds


def add_arguments(group: argparse._ActionsContainer, cls: type) -> None:
    """One flag per field of ``cls`` declared with ``cli``: its type, choices and help (with the allowed values
    and the default) from the declaration. The parsed value lands in ``args.<field name>`` (None: not given)."""
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("cli")
        if not flag:
            continue
        values = choices(cls, f.name)
        rule = allowed(cls, f)
        help_text = f.metadata["help"] + (f" ({rule}; default {f.default})" if rule and not values
                                           else f" (default {f.default})")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if f.default is dataclasses.MISSING:  # the flag's type is its default's
            raise TypeError(f"{cls.__name__}.{f.name}: a command-line option needs a default")
        group.add_argument(flag if isinstance(flag, str) else "--" + f.name.replace("_", "-"), dest=f.name,
                           type=type(f.default), choices=values, help=help_text)  # a Literal's default is one of its values


def markdown_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """A Markdown table: the header, the separator and one line per row (cells as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
