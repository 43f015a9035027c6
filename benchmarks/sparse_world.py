"""The sparse-reward regime of a small model, simulated: does a selector survive all-wrong groups?

The arithmetic task's prompts (``rollwise.llm.tasks.arithmetic``, 400 train / 100 held out, five
chain_sum levels) in a world whose starting rates follow SmolLM2-135M-Instruct's measured base
pass rates (``smollm2_pass_rates.md``: about 0.16 on the easiest level, 0 from the third level
on): ``easiest_logit = logit(0.16)``, ``hardest_logit = -6``, with the real run's sizes (4 prompts
x 4 rollouts a step). Most groups come back all-wrong, as in the real GRPO run on SmolLM2.
Writes benchmarks/results/sparse_world.{json,md}.

    python benchmarks/sparse_world.py --steps 40 --seeds 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from arithmetic_world import arithmetic_world

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.sim import RunSettings, run_one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--strategies", default="uniform,mopps,gps,gps-unscaled,gps-nodiv,oracle")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--easiest-rate", type=float, default=0.16)
    p.add_argument("--out", default="benchmarks/results/sparse_world")
    args = p.parse_args()
    t0 = time.perf_counter()
    pool, _, cfg, make_world = arithmetic_world(args.k, args.easiest_rate)

    settings = RunSettings(steps=args.steps, batch_size=args.batch_size)
    rows, per = [], {}
    for s in args.strategies.split(","):
        runs = [run_one(s, pool, make_world, settings, seed) for seed in range(args.seeds)]
        acc0 = np.mean([r["accuracy0"][0] for r in runs])
        acc = np.array([r["accuracy"][-1] for r in runs])
        esr = np.array([np.mean(r["esr"]) for r in runs])
        solved = np.array([np.mean(np.asarray(r["esr"]) > 0) for r in runs])
        per[s] = {"final_accuracy": acc.tolist(), "mean_esr": esr.tolist(),
                  "steps_with_signal": solved.tolist(), "accuracy0": float(acc0)}
        rows.append(f"| {s} | {acc0:.3f} -> {acc.mean():.3f} ± {acc.std(ddof=1) / np.sqrt(len(acc)):.3f} "
                    f"| {esr.mean():.2f} | {solved.mean():.2f} |")
        print(rows[-1], flush=True)
    header = ("| strategy | held-out acc. (start -> end, ± s.e.) | mean ESR | steps with any "
              "informative group |\n|---|---|---|---|\n")
    out = Path(args.out)
    note = (f"# Sparse-reward world (arithmetic pool, SmolLM2-like start)\n\n{args.seeds} seeds x "
            f"{args.steps} steps x {args.batch_size} prompts x {args.k} rollouts; easiest-level "
            f"start rate {args.easiest_rate}, hardest about 0.0025. Written by "
            f"`benchmarks/sparse_world.py` in {time.perf_counter() - t0:.0f} s.\n\n")
    atomic_write_json(out.with_suffix(".json"), {"args": vars(args), "world": cfg.as_dict(),
                                                 "strategies": per})
    atomic_write_report(out.with_suffix(".md"), note + header + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
