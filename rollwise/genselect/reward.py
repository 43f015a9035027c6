"""The selection reward: 1 when the strictly parsed final choice names a correct candidate, else 0.

The parsing rule (:func:`parse_choice`), strict so that no output format earns reward by hedging:

1. A *choice line* is a line that starts (after optional spaces) with ``Selected:``, any case.
   Other lines (reasoning, restatements) are ignored; ``Selected:`` in the middle of a line is
   not a choice.
2. Each choice line must hold exactly one number after the colon, optionally in brackets and
   followed by a period: ``Selected: 3``, ``Selected: [3]``, ``Selected: 3.``. Anything else on
   a choice line (``Selected: 3 or 4``, ``Selected: three``, ``Selected:``) makes the whole output
   malformed.
3. There must be at least one choice line, and all choice lines must name the same number;
   conflicting choices are malformed.
4. The number must lie in ``1..n`` for ``n`` shown candidates.

Malformed outputs (rules 1-4 fail, empty text included) get reward 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rollwise.llm.tasks import completion_text
from rollwise.validation import check_int

_CHOICE_LINE = re.compile(r"^\s*selected\s*:(.*)$", re.IGNORECASE)
_CHOICE_VALUE = re.compile(r"\[?\s*(\d{1,6})\s*\]?\s*\.?")


def parse_choice(text: str, n: int) -> int | None:
    """The 1-based candidate number the output selects, or None when it is malformed."""
    check_int("n (number of shown candidates)", n, 1)
    if not isinstance(text, str):
        return None
    choices = set()
    for line in text.splitlines():
        m = _CHOICE_LINE.match(line)
        if m is None:
            continue
        value = _CHOICE_VALUE.fullmatch(m.group(1).strip())
        if value is None:
            return None
        choices.add(int(value.group(1)))
    if len(choices) != 1:
        return None
    (choice,) = choices
    return choice if 1 <= choice <= n else None


def selection_reward(text: str, correct: Sequence[int], n: int) -> float:
    """1.0 when the parsed choice is one of the ``correct`` (1-based) numbers, else 0.0."""
    choice = parse_choice(text, n)
    return float(choice is not None and choice in set(int(c) for c in correct))


def reward_function(prefix: str = "") -> Callable[..., list[float]]:
    """A TRL reward function over selection-task rows (``correct``, ``n_candidates`` columns).

    ``prefix`` is the start of the reply that the prompt already holds (see
    :func:`~rollwise.genselect.synthesis.render_prompt`); it is put back before parsing.
    """

    def genselect_correct(completions: list[Any], correct: list[Sequence[int]],
                          n_candidates: list[int], **kwargs: Any) -> list[float]:
        return [selection_reward(prefix + completion_text(c), ok, int(n))
                for c, ok, n in zip(completions, correct, n_candidates, strict=True)]

    return genselect_correct
