"""verl custom reward for the parquet files of prepare_data.py (binary: 1.0 right, 0.0 wrong).

    reward.custom_reward_function.path=examples/verl/reward.py
    reward.custom_reward_function.name=compute_score

verl's reward loop calls ``compute_score(data_source, solution_str, ground_truth, extra_info)``.
"""

from __future__ import annotations

from typing import Any


def compute_score(data_source: str, solution_str: str, ground_truth: str,
                  extra_info: dict[str, Any] | None = None, **_: Any) -> float:
    from rollwise.llm.tasks import verify_math, verify_number

    if data_source == "rollwise/arithmetic":
        return verify_number(solution_str, ground_truth)
    return verify_math(solution_str, ground_truth)
