"""Declared argument checks, and bad-input cases derived from every settings dataclass's
declarations: each invalid value of each constrained field is refused, naming the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rollwise.validation import Interval, InvalidArgument, OneOf, check_fields, check_int


def test_interval_edges_types_and_words():
    positive = Interval(int, 1)
    assert positive.is_valid(1) and positive.is_valid(np.int64(3))
    assert not any(positive.is_valid(v) for v in (0, True, 1.0, "1", None))
    unit = Interval(float, 0, 1, closed="right")
    assert unit.is_valid(1) and unit.is_valid(0.5) and not unit.is_valid(0.0)
    assert not unit.is_valid(float("nan")) and not unit.is_valid(float("inf"))
    assert unit.describe() == "a finite number in (0, 1]"
    assert Interval(int, 1, optional=True).describe() == "an int >= 1 or None"
    with pytest.raises(InvalidArgument, match=r"steps must be an int >= 1, got 0"):
        check_int("steps", 0, 1)
    with pytest.raises(TypeError):  # an InvalidArgument is both a TypeError and a ValueError
        check_int("steps", "3", 1)


def test_one_of_reads_lazy_choices():
    choice = OneOf(lambda: ["a", "b"])
    assert choice.is_valid("a") and not choice.is_valid("c")
    with pytest.raises(ValueError, match=r"mode must be one of \['a', 'b'\], got 'c'"):
        choice.check("mode", "c")


def _settings_classes():
    from rollwise.genselect.train import GenSelectTrainSettings
    from rollwise.llm.engine import TrainSettings
    from rollwise.ppm import PPMConfig
    from rollwise.rescue.addon import RescueSettings

    return [(TrainSettings, {}), (GenSelectTrainSettings, {"tasks": "tasks.jsonl"}),
            (RescueSettings, {}), (PPMConfig, {})]


def _cases():
    for cls, base in _settings_classes():
        for f in dataclasses.fields(cls):
            constraint = f.metadata.get("constraint")
            if constraint is None:
                continue
            for value in constraint.invalid_values():
                yield pytest.param(cls, base, f.name, value, id=f"{cls.__name__}.{f.name}={value!r}")


@pytest.mark.parametrize(("cls", "base", "name", "value"), list(_cases()))
def test_every_declared_constraint_is_enforced(cls, base, name, value):
    ok = cls(**base)
    check_fields(ok)  # the defaults are valid: only the bad value can fail
    bad = dataclasses.replace(ok, **{name: value})
    with pytest.raises(ValueError, match=rf"\b{name} must be"):
        check_fields(bad)
    validate = getattr(bad, "validate", None)
    with pytest.raises(ValueError, match=rf"\b{name} must be"):
        validate()
