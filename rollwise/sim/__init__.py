"""Simulated RLVR benchmark: a prompt world built on real prompt texts, a runner and reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rollwise.feedback.prompt_files import PromptSet, load_prompt_file
from rollwise.pool import PromptPool
from rollwise.sim.pools import DEFAULT_GROUPS, reasoning_gym_sets
from rollwise.sim.runner import OracleSelector, RunSettings, run_one, summarise
from rollwise.sim.world import PromptWorld, WorldConfig


def build_world(
    pool_file: str | Path | None = None,
    heldout_file: str | Path | None = None,
    embedder: str = "wordllama",
    config: WorldConfig | None = None,
    heldout_fraction: float = 0.1,
    data_seed: int = 0,
    text_field: str | None = None,
) -> tuple[PromptPool, PromptSet, Callable[[int], PromptWorld]]:
    """The prompt pool (embedded) and a factory ``seed -> PromptWorld``.

    Without ``pool_file`` the default reasoning-gym set is generated. With a file and no
    ``heldout_file``, a seeded ``heldout_fraction`` of its rows is held out.
    """
    train, held, groups = world_prompt_sets(pool_file, heldout_file, heldout_fraction, data_seed,
                                            text_field)
    pool = PromptPool.from_texts(train.texts, ids=train.ids, embedder=embedder)

    def make_world(seed: int) -> PromptWorld:
        return PromptWorld(train.skills, train.level, held.skills, held.level,
                           config=config, groups=groups, seed=seed)

    return pool, train, make_world


def world_prompt_sets(
    pool_file: str | Path | None = None,
    heldout_file: str | Path | None = None,
    heldout_fraction: float = 0.1,
    data_seed: int = 0,
    text_field: str | None = None,
) -> tuple[PromptSet, PromptSet, dict[str, str] | None]:
    """The train and held-out prompt sets behind :func:`build_world` (same arguments), and the
    skill groups of the default set (``None`` for a file).

    ``make_world(seed).heldout_gamma()`` follows the order of the held-out set returned here.
    """
    groups = None
    if pool_file is None:
        train, held = reasoning_gym_sets(seed=data_seed)
        groups = DEFAULT_GROUPS
    else:
        full = load_prompt_file(pool_file, text_field=text_field)
        if heldout_file is not None:
            train, held = full, load_prompt_file(heldout_file, text_field=text_field)
            shared = set(train.texts) & set(held.texts)
            if shared:  # held-out accuracy would partly be training accuracy
                raise ValueError(f"--pool and --heldout share {len(shared)} prompt(s) by text "
                                 f"(e.g. {next(iter(sorted(shared)))[:60]!r}); remove them from "
                                 "one of the files")
        else:
            if not 0 < heldout_fraction < 1:
                raise ValueError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
            train, held = _split(full, heldout_fraction, data_seed)
    return train, held, groups


def _split(ps: PromptSet, frac: float, seed: int) -> tuple[PromptSet, PromptSet]:
    import numpy as np

    perm = np.random.default_rng(seed).permutation(len(ps.texts))
    cut = int(round(frac * len(perm)))
    if cut < 1 or cut >= len(perm):
        raise ValueError("the --pool file is too small to hold out a set; pass --heldout")

    def take(idx):
        idx = np.sort(idx)
        return PromptSet([ps.texts[i] for i in idx], [ps.skills[i] for i in idx], ps.level[idx],
                         [ps.ids[i] for i in idx],
                         [ps.answers[i] for i in idx] if ps.answers else None)

    return take(perm[cut:]), take(perm[:cut])


__all__ = ["build_world", "world_prompt_sets", "PromptWorld", "WorldConfig", "RunSettings", "run_one",
           "summarise", "OracleSelector", "PromptSet", "load_prompt_file", "reasoning_gym_sets"]
