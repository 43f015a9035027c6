"""Pass rates of SmolLM2-135M-Instruct (or any checkpoint) on the arithmetic pool, per level.

Shows the spread a naive pool has: most groups of k samples are all-wrong (or all-right), i.e.
zero-variance groups that GRPO cannot learn from. Writes benchmarks/results/smollm2_pass_rates.*

    python benchmarks/smollm2_pass_rates.py --per-level 16 --samples 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.llm.evaluation import sample_outcomes
from rollwise.llm.models import resolve_model
from rollwise.llm.tasks import ARITHMETIC_LEVELS, arithmetic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--per-level", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--out", default="benchmarks/results/smollm2_pass_rates")
    args = p.parse_args()
    task = arithmetic()
    rows = []
    for lvl in range(len(ARITHMETIC_LEVELS)):
        rows += [r for r in task.train if r["level"] == lvl][: args.per_level]
    scores = sample_outcomes(resolve_model(args.model), rows, task.verify, samples=args.samples,
                             max_new_tokens=args.max_new_tokens)
    levels = np.array([r["level"] for r in rows])
    table = ["| level | chain_sum setting | pass rate | all-wrong groups | all-right groups |",
             "|---|---|---|---|---|"]
    per_level = []
    for lvl, cfg in enumerate(ARITHMETIC_LEVELS):
        s = scores[levels == lvl]
        rate, wrong, right = s.mean(), (s.max(1) == 0).mean(), (s.min(1) == 1).mean()
        per_level.append({"level": lvl, "setting": cfg, "pass_rate": rate,
                          "all_wrong": wrong, "all_right": right})
        table.append(f"| {lvl} | {cfg['min_terms']} terms x {cfg['min_digits']} digit(s) | "
                     f"{rate:.3f} | {wrong:.2f} | {right:.2f} |")
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
