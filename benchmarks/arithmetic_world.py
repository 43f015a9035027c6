"""The arithmetic task's prompts in the simulated world at SmolLM2-135M's base pass rates: shared
by the sparse-reward and small-pool benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import logit

from rollwise.llm import tasks
from rollwise.pool import PromptPool
from rollwise.sim import WorldConfig
from rollwise.sim.world import PromptWorld


def arithmetic_world(k: int, easiest_rate: float = 0.16, memorisation: float = 0.0
                     ) -> tuple[PromptPool, np.ndarray, WorldConfig, Callable[[int], PromptWorld]]:
    """The pool (400 train prompts), their levels, the world's config and a factory
    ``seed -> PromptWorld``: starting rate ``easiest_rate`` on the easiest level, about 0.0025
    on the hardest, one skill."""
    task = tasks.arithmetic()
    pool = PromptPool.from_texts([r["question"] for r in task.train], ids=[r["id"] for r in task.train])
    levels = np.array([r["level"] for r in task.train])
    held = np.array([r["level"] for r in task.heldout])
    cfg = WorldConfig(k=k, easiest_logit=float(logit(easiest_rate)), hardest_logit=-6.0,
                      memorisation=memorisation)

    def make_world(seed: int) -> PromptWorld:
        return PromptWorld(["sum"] * len(levels), levels, ["sum"] * len(held), held, config=cfg,
                           seed=seed)

    return pool, levels, cfg, make_world
