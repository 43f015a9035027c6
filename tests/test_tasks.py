"""Real-RL tasks generated offline: the mixed pool of two reasoning-gym families."""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")

from rollwise.llm.tasks import MIXED_LEVELS, get_task, mixed, verify_number  # noqa: E402


def test_mixed_task_levels_families_and_answers():
    task = get_task("mixed", per_level=4, heldout_per_level=2)
    assert task.name == "mixed" and task.verify is verify_number
    assert len(task.train) == 4 * len(MIXED_LEVELS) and len(task.heldout) == 2 * len(MIXED_LEVELS)
    rows = task.train + task.heldout
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["question"] for r in rows}) == len(rows)  # no held-out prompt also trained on
    families = {f for f, _ in MIXED_LEVELS}
    assert families == {"letter_counting", "simple_equations"}
    for r in rows:
        family, level = r["id"].split("/")[1], int(r["id"].split("/")[2])
        assert r["level"] == level and MIXED_LEVELS[level][0] == family
        assert r["answer"].lstrip("-").isdigit()  # a number the verifier can match
        assert verify_number(f"so\nAnswer: {r['answer']}", r["answer"]) == 1.0
        assert r["prompt"][0]["content"].startswith(r["question"])
    assert [r["id"] for r in mixed(per_level=4, heldout_per_level=2).train] == [r["id"] for r in task.train]
