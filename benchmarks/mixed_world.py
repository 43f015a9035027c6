"""The mixed task's prompts in the simulated world at SmolLM2-135M's measured base pass rates:
two families (letter counting, simple equations), three settings each, one skill per family.

Not a benchmark: the builder behind the mixed-family world of ``regime_worlds.py``. Each
setting's starting rate is SmolLM2-135M-Instruct's measured base pass rate for it
(``results/smollm2_pass_rates_mixed.md``: 0.035 / 0.039 / 0.078 and 0.031 / 0.062 / 0.012), so the
world starts as sparse as the real run: most groups all wrong, a learnable fringe in each family.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import logit

from rollwise.llm import tasks
from rollwise.pool import PromptPool
from rollwise.sim import WorldConfig
from rollwise.sim.world import PromptWorld

# measured base pass rates per level of rollwise.llm.tasks.MIXED_LEVELS
BASE_RATES = (0.035, 0.039, 0.078, 0.031, 0.062, 0.012)


def mixed_world(k: int = 4, memorisation: float = 0.0, embedder: str = "wordllama"
                ) -> tuple[PromptPool, np.ndarray, WorldConfig, Callable[[int], PromptWorld]]:
    """The pool (900 train prompts), each prompt's family (0 letter counting, 1 equations), the
    world's config and a factory ``seed -> PromptWorld``."""
    task = tasks.mixed()
    pool = PromptPool.from_texts([r["question"] for r in task.train],
                                 ids=[r["id"] for r in task.train], embedder=embedder)
    family_names = [tasks.MIXED_LEVELS[int(r["level"])][0] for r in task.train]
    held_names = [tasks.MIXED_LEVELS[int(r["level"])][0] for r in task.heldout]
    # the world's difficulty is linear in the level value: use each setting's base-rate logit
    difficulty = -logit(np.asarray(BASE_RATES))
    lv = difficulty[[int(r["level"]) for r in task.train]]
    held_lv = difficulty[[int(r["level"]) for r in task.heldout]]
    cfg = WorldConfig(k=k, easiest_logit=float(logit(max(BASE_RATES))),
                      hardest_logit=float(logit(min(BASE_RATES))), skill_offset_sd=0.0,
                      memorisation=memorisation)
    groups = {name: name for name in set(family_names)}  # no shared gains across families

    def make_world(seed: int) -> PromptWorld:
        return PromptWorld(family_names, lv, held_names, held_lv, config=cfg, groups=groups,
                           seed=seed)

    family = np.array([0 if n == "letter_counting" else 1 for n in family_names])
    return pool, family, cfg, make_world
