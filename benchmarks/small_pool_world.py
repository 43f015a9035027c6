"""The real SmolLM2 run's regime, simulated: a small pool passed over again and again.

The arithmetic task's 400 train / 100 held-out prompts (five chain_sum levels) in a world whose
starting rates follow SmolLM2-135M-Instruct's measured base pass rates (about 0.16 on the
easiest level, near 0 from the third on), at the real run's sizes (8 prompts x 8 rollouts x 40
steps), with memorisation on (``WorldConfig.memorisation``): a prompt trained on again passes
less of its signal to the abilities and more to its own rate, as a small policy that memorises
the answers of the few prompts it keeps seeing. With ``--memorisation 0`` repeats transfer like
first visits (the default world's assumption).

This is the configuration in which GPS without its guards fell behind uniform sampling, as on
the real model: it is checked here on CPU in about a minute per arm. Per arm: held-out accuracy
(start, middle, end; mean ± s.e. over seeds), mean ESR, the level mix of the first 10 batches,
distinct prompts chosen and the most times one prompt was chosen.
Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/small_pool_world``).

    python benchmarks/small_pool_world.py --seeds 8
    python benchmarks/small_pool_world.py --seeds 8 --memorisation 0 \
        --out benchmarks/results/small_pool_world_nomem
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from arithmetic_world import arithmetic_world

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.sim import RunSettings, run_one

ARMS = "uniform,mopps,gps,gps-uncentred,gps-nocooldown,gps-nowarmup,gps-unguarded,gps-paper,oracle"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=ARMS)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--easiest-rate", type=float, default=0.16)
    p.add_argument("--memorisation", type=float, default=1.0)
    p.add_argument("--out", default="benchmarks/results/small_pool_world")
    args = p.parse_args()
    t0 = time.perf_counter()
    pool, levels, cfg, make_world = arithmetic_world(args.k, args.easiest_rate, args.memorisation)

    settings = RunSettings(steps=args.steps, batch_size=args.batch_size)
    mid = args.steps // 2 - 1
    rows, per = [], {}
    for s in args.strategies.split(","):
        runs, picks = [], []
        for seed in range(args.seeds):
            chosen: list[np.ndarray] = []
            runs.append(run_one(s, pool, make_world, settings, seed, chosen=chosen))
            picks.append(np.concatenate(chosen))
        acc0 = np.array([r["accuracy0"][0] for r in runs])
        acc_mid = np.array([r["accuracy"][mid] for r in runs])
        acc = np.array([r["accuracy"][-1] for r in runs])
        esr = np.array([np.mean(r["esr"]) for r in runs])
        early = np.concatenate([p[: 10 * args.batch_size] for p in picks])
        mix = np.bincount(levels[early].astype(int), minlength=5) / args.seeds
        distinct = np.array([np.unique(p).size for p in picks])
        repeats = np.array([np.bincount(p).max() for p in picks])
        per[s] = {"final_accuracy": acc.tolist(), "mid_accuracy": acc_mid.tolist(),
                  "accuracy0": acc0.tolist(), "mean_esr": esr.tolist(),
                  "first10_level_mix": mix.tolist(), "distinct_prompts": distinct.tolist(),
                  "max_repeats": repeats.tolist()}
        se = acc.std(ddof=1) / np.sqrt(len(acc))
        rows.append(f"| {s} | {acc0.mean():.3f} | {acc_mid.mean():.3f} | {acc.mean():.3f} ± {se:.3f} "
                    f"| {esr.mean():.2f} | {'/'.join(f'{m:.1f}' for m in mix)} | "
                    f"{distinct.mean():.0f} / {args.steps * args.batch_size} | {repeats.mean():.1f} |")
        print(rows[-1], flush=True)
    header = ("| strategy | held-out start | middle | end ± s.e. | mean ESR | levels 0-4 in the "
              "first 10 batches | distinct prompts / slots | max repeats |\n"
              "|---|---|---|---|---|---|---|---|\n")
    out = Path(args.out)
    note = (f"# Small-pool world (arithmetic pool, SmolLM2-like start, memorisation "
            f"{args.memorisation})\n\n{args.seeds} seeds x {args.steps} steps x {args.batch_size} "
            f"prompts x {args.k} rollouts; easiest-level start rate {args.easiest_rate}. Written by "
            f"`benchmarks/small_pool_world.py` in {time.perf_counter() - t0:.0f} s.\n\n")
    atomic_write_json(out.with_suffix(".json"), {"args": vars(args), "world": cfg.as_dict(),
                                                 "strategies": per})
    atomic_write_report(out.with_suffix(".md"), note + header + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
