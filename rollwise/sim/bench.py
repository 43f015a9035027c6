"""The simulated benchmark behind ``rollwise demo`` and ``rollwise bench``: every strategy on every
seed over one world, summarised, with the per-seed curves and the first seed's GPS selectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rollwise.pool import PromptPool
from rollwise.sim.runner import RunSettings, run_one, summarise
from rollwise.sim.world import PromptWorld


def run_benchmark(
    pool: PromptPool,
    make_world: Callable[[int], PromptWorld],
    strategies: Sequence[str],
    seeds: Sequence[int],
    settings: RunSettings,
    target: float | None = None,
    on_step: Callable[[int], Any] | None = None,
    on_run: Callable[[str, int], Any] | None = None,
    selectors_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run every strategy on every seed (seed by seed, so a partial run covers all strategies) and
    return :func:`~rollwise.sim.runner.summarise`'s summary plus the ``per_seed`` curves. With
    ``selectors_dir``, each GPS variant's selector of the first seed is saved there as
    ``<strategy>.pt`` (what ``rollwise allocate`` loads). ``on_run(strategy, seed)`` is called
    before each run, ``on_step`` after each step."""
    settings.validate(len(pool))
    seeds = list(seeds)
    logs: dict[str, list] = {s: [] for s in strategies}
    for seed in seeds:
        for s in strategies:
            if on_run is not None:
                on_run(s, seed)
            keep = None
            if selectors_dir is not None and seed == seeds[0] and s.startswith("gps"):
                keep = Path(selectors_dir) / f"{s}.pt"
            logs[s].append(run_one(s, pool, make_world, settings, seed, on_step=on_step,
                                   save_selector=keep))
    summary = summarise(logs, target=target)
    summary["per_seed"] = {s: [{k: np.asarray(v).tolist() for k, v in run.items()} for run in runs]
                           for s, runs in logs.items()}
    return summary
