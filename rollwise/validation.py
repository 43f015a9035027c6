"""Argument checks, declared once (in the spirit of scikit-learn's parameter constraints).

A constraint knows what it accepts, says so in words, and raises a ``ValueError`` naming the
argument; settings dataclasses declare theirs per field with :func:`setting`, and
:func:`check_fields` checks them all. The command line reads the same declarations (help text,
option types), and the bad-input tests derive cases from them (:meth:`Interval.invalid_values`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

CLOSED = ("both", "left", "right", "neither")


class InvalidArgument(ValueError, TypeError):
    """An argument of the wrong type or out of range: both a ``ValueError`` and a ``TypeError``
    (as scikit-learn's ``InvalidParameterError``), so callers may catch either."""


def _is_int(value: Any) -> bool:
    """An int (numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (``int`` or ``float``; an int is a valid float, a bool is neither) in
    ``[low, high]``, either end left out with ``None`` or opened with ``closed``; ``None`` passes
    when ``optional``; floats must be finite."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (int, float) or self.closed not in CLOSED:
            raise ValueError(f"Interval needs kind int or float and closed in {CLOSED}")

    def is_valid(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if not (_is_int(value) if self.kind is int else _is_real(value) and math.isfinite(value)):
            return False
        low_open, high_open = self.closed in ("right", "neither"), self.closed in ("left", "neither")
        if self.low is not None and (value < self.low or (value == self.low and low_open)):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and high_open)))

    def describe(self) -> str:
        noun = "an int" if self.kind is int else "a finite number"
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            text = f"{noun} in {'[' if lo_in else '('}{self.low}, {self.high}{']' if hi_in else ')'}"
        elif self.low is not None:
            text = f"{noun} {'>=' if lo_in else '>'} {self.low}"
        elif self.high is not None:
            text = f"{noun} {'<=' if hi_in else '<'} {self.high}"
        else:
            text = noun
        return text + (" or None" if self.optional else "")

    def check(self, name: str, value: Any) -> Any:
        """``value`` unchanged if valid, else an :class:`InvalidArgument` that names ``name``."""
        if not self.is_valid(value):
            raise InvalidArgument(f"{name} must be {self.describe()}, got {value!r}")
        return value

    def invalid_values(self) -> list[Any]:
        """Values this constraint must refuse: just outside each end, a bool, a string, and
        ``None`` unless optional (for tests derived from the declarations)."""
        out: list[Any] = [True, "1"]
        step = 1 if self.kind is int else 1e-3
        if self.low is not None:
            out.append(self.low if self.closed in ("right", "neither") else self.low - step)
        if self.high is not None:
            out.append(self.high if self.closed in ("left", "neither") else self.high + step)
        if self.kind is int:
            out.append(1.5)
        if not self.optional:
            out.append(None)
        return out


@dataclass(frozen=True)
class OneOf:
    """One of ``choices`` (or of what ``choices()`` returns, for lists that load lazily)."""

    choices: Sequence[Any] | Callable[[], Sequence[Any]]
    optional: bool = False

    def options(self) -> list[Any]:
        return list(self.choices() if callable(self.choices) else self.choices)

    def is_valid(self, value: Any) -> bool:
        return (value is None and self.optional) or value in self.options()

    def describe(self) -> str:
        return f"one of {self.options()}" + (" or None" if self.optional else "")

    def check(self, name: str, value: Any) -> Any:
        if not self.is_valid(value):
            raise InvalidArgument(f"{name} must be {self.describe()}, got {value!r}")
        return value

    def invalid_values(self) -> list[Any]:
        return ["not-a-choice"] + ([] if self.optional else [None])


Constraint = Interval | OneOf


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None,
              optional: bool = False) -> Any:
    """``value`` if it is an int (not a bool) in ``[low, high]``, else a ``ValueError`` naming it."""
    return Interval(int, low, high, optional=optional).check(name, value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 closed: str = "both", optional: bool = False) -> Any:
    """``value`` if it is a finite real number (not a bool) in the interval, else a ``ValueError``."""
    return Interval(float, low, high, closed, optional).check(name, value)


def setting(default: Any = MISSING, *, help: str, constraint: Constraint | None = None,
            default_factory: Any = MISSING, cli: bool = True, **argparse_kw: Any) -> Any:
    """A dataclass field that declares its help text, its constraint and how the command line
    shows it (``cli=False``: Python only; ``argparse_kw`` override the derived option)."""
    metadata = {"help": help, "constraint": constraint, "cli": cli, "argparse": argparse_kw}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def redeclare(base: type, name: str, default: Any) -> Any:
    """The field ``name`` of the dataclass ``base`` (help, constraint, option) with a new default,
    for a subclass that only changes defaults."""
    (f,) = [f for f in fields(base) if f.name == name]
    return field(default=default, metadata=f.metadata)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check every field of the dataclass ``obj`` that declares a constraint."""
    for f in fields(obj):
        constraint = f.metadata.get("constraint")
        if constraint is not None:
            constraint.check(prefix + f.name, getattr(obj, f.name))


__all__ = ["InvalidArgument", "Interval", "OneOf", "check_int", "check_number", "setting", "redeclare",
           "check_fields"]
