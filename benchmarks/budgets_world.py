"""Per-prompt rollout budgets in the simulated world: which objective, and what they buy.

Every budgeted arm spends exactly the fixed-k arms' rollouts per step (batch x k), split among
the chosen prompts by :class:`rollwise.budgets.PromptBudgets` (k from 2 to four times k) under
one objective: ``gps-budget`` (GPS's calibrated predictions), ``mopps-budget`` (MoPPS's
posteriors), ``uniform-budget`` (uniform prompts, MoPPS-like posteriors kept beside it: the
budget papers' baseline) and ``oracle-budget`` (the true rates: the limit). Arms named
``ARM/OBJECTIVE``. Worlds:

* ``default``: the default reasoning-gym world (32 prompts x 8 rollouts, 150 steps);
* ``sparse``: the arithmetic task's prompts at SmolLM2-135M's base rates (8 x 4, 40 steps),
  where most groups come back all-wrong, as on the real model;
* ``math``: the MATH pool (``--math-pool`` and ``--math-heldout``, JSON files; skipped without).

``--whole-groups`` splits in whole groups of k rollouts, 0 to 4 of them per prompt (a prompt
given none is dropped from the step); with ``--separate-groups`` each group is valued and learned
from on its own, as the TRL trainer does (TRL normalises advantages per group).

Each world's results go to ``OUT_<world>.json`` (with a top-level ``summary``: per arm
``final_heldout`` and ``rollouts_to_uniform_final``, one per seed, null where never reached, and
``rollouts_per_arm``) and one table for all worlds to ``OUT.md``; each world is written as soon
as it finishes.

    python benchmarks/budgets_world.py --seeds 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from arithmetic_world import arithmetic_world
from provenance import provenance

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.budgets import OBJECTIVES
from rollwise.sim import RunSettings, build_world, run_one
from rollwise.sim.runner import rollouts_to_reach

FIXED = ["uniform", "mopps", "gps", "oracle"]
BUDGETED = ["uniform-budget", "mopps-budget", "gps-budget", "oracle-budget"]


def worlds(args: argparse.Namespace) -> dict:
    """name -> (pool, make_world, run settings); built lazily by the caller in this order."""
    out = {
        "default": lambda: (*build_world()[::2], RunSettings(steps=args.default_steps)),
        "sparse": lambda: (*arithmetic_world(4)[::3], RunSettings(steps=args.sparse_steps,
                                                                   batch_size=8)),
    }
    if args.math_pool and args.math_heldout:
        out["math"] = lambda: (*build_world(args.math_pool, args.math_heldout)[::2],
                               RunSettings(steps=args.default_steps))
    return out


def run_world(pool, make_world, settings: RunSettings, seeds: list[int], objectives: list[str]
              ) -> dict:
    """Every arm on every seed: ``{arm: [per-seed log]}``."""
    runs: dict[str, list] = {}
    for seed in seeds:
        for arm in FIXED:
            runs.setdefault(arm, []).append(run_one(arm, pool, make_world, settings, seed))
        for objective in objectives:
            settings.budget_objective = objective
            for arm in BUDGETED:
                runs.setdefault(f"{arm}/{objective}", []).append(
                    run_one(arm, pool, make_world, settings, seed))
        print(f"  seed {seed} done", flush=True)
    return runs


def summarise(runs: dict) -> dict:
    target = float(np.mean([r["accuracy"][-1] for r in runs["uniform"]]))
    summary: dict = {"rollouts_per_arm": int(runs["uniform"][0]["rollouts"][-1])}
    for arm, logs in runs.items():
        reach = [rollouts_to_reach(np.asarray(r["rollouts"]), np.asarray(r["accuracy"]), target)
                 for r in logs]
        summary[arm] = {"final_heldout": [float(r["accuracy"][-1]) for r in logs],
                        "rollouts_to_uniform_final": [None if x != x else float(x) for x in reach]}
    return summary


def table(name: str, runs: dict, summary: dict) -> list[str]:
    """One markdown table: per arm, final held-out, rollouts to uniform's final (ratio of the
    seed-mean curve), mean ESR, group-size spread."""
    from rollwise.sim.runner import summarise as sim_summary

    s = sim_summary(runs)["strategies"]
    lines = [f"### {name}", "", "| arm | held-out end ± s.e. | rollouts to uniform's final (x uniform) "
             "| seeds reaching it | mean ESR | group-size CV |", "|---|---|---|---|---|---|"]
    for arm, logs in runs.items():
        fin = np.array(summary[arm]["final_heldout"])
        se = fin.std(ddof=1) / np.sqrt(fin.size) if fin.size > 1 else float("nan")
        hit = sum(x is not None for x in summary[arm]["rollouts_to_uniform_final"])
        cvs = [np.nanmean(r["group_size_cv"]) for r in logs if np.isfinite(r["group_size_cv"]).any()]
        cv = float(np.mean(cvs)) if cvs else float("nan")  # n/a: fixed-k arms
        lines.append(f"| {arm} | {fin.mean():.3f} ± {se:.3f} | {s[arm]['ratio_to_uniform']:.3f} | "
                     f"{hit}/{fin.size} | {s[arm]['mean_esr']:.2f} | "
                     f"{'n/a' if cv != cv else f'{cv:.2f}'} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--worlds", default="default,sparse,math")
    p.add_argument("--default-steps", type=int, default=150)
    p.add_argument("--sparse-steps", type=int, default=40)
    p.add_argument("--math-pool", default=None, help="MATH training problems (JSON)")
    p.add_argument("--math-heldout", default=None, help="MATH-500 (JSON)")
    p.add_argument("--whole-groups", action="store_true",
                   help="budgets in whole groups of k, 0 to 4 per prompt (the TRL trainer's way)")
    p.add_argument("--separate-groups", action="store_true",
                   help="with --whole-groups: each group valued and learned from on its own, as "
                        "TRL normalises advantages per group (else a prompt's groups merged)")
    p.add_argument("--out", default="benchmarks/results/budgets_world")
    args = p.parse_args()
    objectives = args.objectives.split(",")
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        p.error(f"--objectives: unknown {bad}; choose from {list(OBJECTIVES)}")
    known = worlds(args)
    wanted = [w for w in args.worlds.split(",") if w in known]
    if not wanted:
        p.error(f"--worlds: none of {args.worlds!r} can run; available: {list(known)}")
    out = Path(args.out)
    run = provenance()
    md = ["# Per-prompt rollout budgets in the simulated world", "",
          f"{args.seeds} seeds; written by `{run['command']}` at commit {run['commit']}. "
          "Budgeted arms spend the fixed-k arms' rollouts, split per prompt "
          + ("in whole groups of k (0 to 4 groups; a prompt given none dropped"
             + ("; each group valued and learned from on its own) " if args.separate_groups
                else "; a prompt's groups merged) ") if args.whole_groups
             else "(k from 2 to 4x k) ")
          + "under the objective after the slash. Ratios: rollouts at which the seed-mean curve "
          "reaches uniform's mean final held-out accuracy, over uniform's.", ""]
    for name in wanted:
        t0 = time.perf_counter()
        print(f"world {name}", flush=True)
        pool, make_world, settings = known[name]()
        if args.whole_groups:
            k = make_world(0).config.k
            settings.budget_k_min, settings.budget_step, settings.budget_k_max = 0, k, 4 * k
            settings.budget_separate_groups = args.separate_groups
        runs = run_world(pool, make_world, settings, list(range(args.seeds)), objectives)
        summary = summarise(runs)
        seconds = time.perf_counter() - t0
        atomic_write_json(out.parent / f"{out.name}_{name}.json", {
            "args": vars(args), **provenance(), "world": name, "seconds": seconds,
            "settings": {"steps": settings.steps, "batch_size": settings.batch_size,
                         "k": make_world(0).config.k},
            "summary": summary, "uniform_final_mean": float(np.mean(
                [r["accuracy"][-1] for r in runs["uniform"]])),
            "per_seed": {arm: [{k: np.asarray(v).tolist() for k, v in r.items()} for r in logs]
                         for arm, logs in runs.items()}})
        md += table(f"{name} ({settings.steps} steps x {settings.batch_size} prompts x "
                    f"{make_world(0).config.k} rollouts, {seconds:.0f} s)", runs, summary) + [""]
        atomic_write_report(out.with_suffix(".md"), "\n".join(md))
        print(json.dumps({a: v for a, v in summary.items() if not isinstance(v, dict)}), flush=True)


if __name__ == "__main__":
    main()
