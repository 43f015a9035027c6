"""Response prefixes for guided rollouts: the start of the policy's answer, written for it.

A small policy cannot write itself a better instruction, and no instruction phrasing lifted
SmolLM2-135M's hard prompts; continuing a better *start* of its own answer did. With the
problem's expression restated as the start of the assistant's turn (``8 - 7 = ``), the starting
model solved its hard arithmetic prompts 0.077 of the time against 0.020 bare (3.75x); after
640 rollouts of plain GRPO the lift was gone (0.007 against 0.017)
(``benchmarks/results/p2o_phrasings*.md``).

A prefix rule maps a problem's text to the prefix, or None where it does not apply (that row is
then not guided by a prefix). :class:`~rollwise.rescue.distill.RescueGRPOTrainer` starts the
guided rollouts' answers with it; the verifier scores prefix + continuation, and the policy is
trained on both under the bare prompt.
"""

from __future__ import annotations

from collections.abc import Callable

PrefixRule = Callable[[str], "str | None"]


def restate_expression(problem: str) -> str | None:
    """``"8 - 7 = "`` for a problem whose first line ends with an equation to complete after its
    last colon (``"... arithmetic problem: 8 - 7 ="``); None for any other problem."""
    lines = problem.strip().splitlines()
    tail = lines[0].rsplit(":", 1)[-1].strip() if lines else ""
    return f"{tail} " if len(tail) > 1 and tail.endswith("=") else None


RESPONSE_PREFIXES: dict[str, PrefixRule | None] = {
    "none": None,  # guided rollouts start their answers themselves
    "restate": restate_expression,
}


__all__ = ["RESPONSE_PREFIXES", "PrefixRule", "restate_expression"]
