"""Pass rates of SmolLM2-135M-Instruct (or any checkpoint) on a generated pool, per level.

Shows the spread a naive pool has: most groups of k samples are all-wrong (or all-right), i.e.
zero-variance groups that GRPO cannot learn from. Writes benchmarks/results/smollm2_pass_rates.*
(the arithmetic pool) or, with ``--task mixed``, smollm2_pass_rates_mixed.*

    python benchmarks/smollm2_pass_rates.py --per-level 16 --samples 8
    python benchmarks/smollm2_pass_rates.py --task mixed --per-level 32 --samples 8 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.llm.evaluation import sample_outcomes
from rollwise.llm.models import resolve_model
from rollwise.llm.tasks import ARITHMETIC_LEVELS, MIXED_LEVELS, get_task


def describe(task: str, level: int) -> str:
    """A level's generator setting, in words."""
    if task == "arithmetic":
        cfg = ARITHMETIC_LEVELS[level]
        return f"{cfg['min_terms']} terms x {cfg['min_digits']} digit(s)"
    family, cfg = MIXED_LEVELS[level]
    return f"{family} " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "operators_weights")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--task", default="arithmetic", choices=["arithmetic", "mixed"])
    p.add_argument("--per-level", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--out", default=None, help="default: benchmarks/results/smollm2_pass_rates "
                                               "(with _mixed for the mixed task)")
    args = p.parse_args()
    args.out = args.out or "benchmarks/results/smollm2_pass_rates" + (
        "_mixed" if args.task == "mixed" else "")
    task = get_task(args.task)
    n_levels = len(ARITHMETIC_LEVELS if args.task == "arithmetic" else MIXED_LEVELS)
    rows = []
    for lvl in range(n_levels):
        rows += [r for r in task.train if r["level"] == lvl][: args.per_level]
    scores = sample_outcomes(resolve_model(args.model), rows, task.verify, samples=args.samples,
                             max_new_tokens=args.max_new_tokens)
    levels = np.array([r["level"] for r in rows])
    table = ["| level | setting | pass rate | all-wrong groups | all-right groups |",
             "|---|---|---|---|---|"]
    per_level = []
    for lvl in range(n_levels):
        s = scores[levels == lvl]
        rate, wrong, right = s.mean(), (s.max(1) == 0).mean(), (s.min(1) == 1).mean()
        cfg = (ARITHMETIC_LEVELS[lvl] if args.task == "arithmetic"
               else {"family": MIXED_LEVELS[lvl][0], **MIXED_LEVELS[lvl][1]})
        per_level.append({"level": lvl, "setting": cfg, "pass_rate": rate,
                          "all_wrong": wrong, "all_right": right})
        table.append(f"| {lvl} | {describe(args.task, lvl)} | {rate:.3f} | {wrong:.2f} | {right:.2f} |")
    esr = float((scores.max(1) > scores.min(1)).mean())
    table.append(f"\nOverall pass rate {scores.mean():.3f}; ESR (groups with mixed rewards) "
                 f"{esr:.2f} over {len(rows)} prompts x {args.samples} samples at T = 1, "
                 f"{args.max_new_tokens} new tokens.")
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"args": vars(args), "per_level": per_level,
                                                 "esr": esr, "ids": [r["id"] for r in rows],
                                                 "scores": scores.tolist()})
    text = "\n".join(table) + "\n"
    atomic_write_report(out.with_suffix(".md"), f"# Base pass rates ({args.model})\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
