"""The default prompt sets of the simulated world, generated offline with reasoning-gym.

Several task families, each at graded generator settings, deterministic per seed. Prompt files
(JSON / JSONL / parquet) are read by :mod:`rollwise.feedback.prompt_files`.
"""

from __future__ import annotations

import numpy as np

from rollwise.feedback.prompt_files import PromptSet

# family -> generator settings from easiest to hardest (reasoning-gym config keywords)
DEFAULT_FAMILIES: dict[str, list[dict]] = {
    "basic_arithmetic": [
        dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
        dict(min_terms=3, max_terms=3, min_digits=1, max_digits=1),
        dict(min_terms=3, max_terms=3, min_digits=2, max_digits=2),
        dict(min_terms=4, max_terms=4, min_digits=2, max_digits=2),
        dict(min_terms=5, max_terms=5, min_digits=3, max_digits=3),
    ],
    "chain_sum": [
        dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
        dict(min_terms=3, max_terms=3, min_digits=1, max_digits=1),
        dict(min_terms=3, max_terms=3, min_digits=2, max_digits=2),
        dict(min_terms=4, max_terms=4, min_digits=3, max_digits=3),
        dict(min_terms=5, max_terms=5, min_digits=4, max_digits=4),
    ],
    "products": [
        dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
        dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2),
        dict(min_terms=2, max_terms=2, min_digits=3, max_digits=3),
        dict(min_terms=3, max_terms=3, min_digits=2, max_digits=2),
        dict(min_terms=3, max_terms=3, min_digits=3, max_digits=3),
    ],
    "simple_equations": [
        dict(min_terms=2, max_terms=2, min_value=1, max_value=10),
        dict(min_terms=2, max_terms=2, min_value=1, max_value=100),
        dict(min_terms=3, max_terms=3, min_value=1, max_value=100),
        dict(min_terms=4, max_terms=4, min_value=1, max_value=100),
        dict(min_terms=4, max_terms=4, min_value=1, max_value=1000),
    ],
    "letter_counting": [
        dict(min_words=2, max_words=3),
        dict(min_words=5, max_words=7),
        dict(min_words=10, max_words=12),
        dict(min_words=15, max_words=20),
        dict(min_words=25, max_words=30),
    ],
    "countdown": [
        dict(min_numbers=3, max_numbers=3, min_target=10, max_target=100),
        dict(min_numbers=4, max_numbers=4, min_target=100, max_target=500),
        dict(min_numbers=5, max_numbers=5, min_target=100, max_target=999),
    ],
}

# families that share most of their skill (transfer in the world)
DEFAULT_GROUPS: dict[str, str] = {
    "basic_arithmetic": "arithmetic",
    "chain_sum": "arithmetic",
    "products": "arithmetic",
    "simple_equations": "algebra",
    "countdown": "algebra",
    "letter_counting": "text",
}


def reasoning_gym_sets(
    per_level: int = 60, heldout_per_level: int = 15, seed: int = 0,
    families: dict[str, list[dict]] | None = None,
) -> tuple[PromptSet, PromptSet]:
    """Train and held-out prompt sets from reasoning-gym, deterministic per seed."""
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError("the default world needs reasoning-gym: pip install 'rollwise[sim]'") from err
    families = families or DEFAULT_FAMILIES
    out: dict[str, list] = {"train": [], "heldout": []}
    for f_i, (family, levels) in enumerate(sorted(families.items())):
        for lvl, cfg in enumerate(levels):
            size = per_level + heldout_per_level
            ds = reasoning_gym.create_dataset(family, size=size, seed=seed * 1000 + f_i * 10 + lvl,
                                              **cfg)
            diff = lvl / max(1, len(levels) - 1)
            for j in range(size):
                item = ds[j]
                split = "train" if j < per_level else "heldout"
                out[split].append((item["question"], family, diff, f"{family}/{lvl}/{j}",
                                   str(item["answer"])))
    return tuple(_to_set(out[s]) for s in ("train", "heldout"))  # type: ignore[return-value]


def _to_set(rows: list[tuple]) -> PromptSet:
    texts, skills, diff, ids, answers = (list(c) for c in zip(*rows, strict=True))
    return PromptSet(texts, skills, np.asarray(diff, dtype=np.float64), ids, answers)
