"""Test-time allocation on the real LLM: SmolLM2 after GPS-selected GRPO (benchmarks/trl_smollm2.py).

The trained GPS selector predicts the success rates of the arithmetic task's held-out prompts
(never in its pool); the trained checkpoint is sampled ``--samples`` times per held-out prompt at
T = 1, and those real outcomes are the truth. Uniform, greedy and window allocation on the raw
predictions, greedy on the selector's calibrated rates and under its calibrated Beta rates (what
``rollwise allocate`` does by default; the calibration was fitted during training, never on these
samples), and the oracle (greedy on the empirical rates) are compared at several budgets with
``rollwise.allocation.compare_allocations``. Writes benchmarks/results/allocation_smollm2.*

    python benchmarks/allocation_smollm2.py --run runs/gps_smollm2/gps/seed2 --samples 8
    python benchmarks/allocation_smollm2.py --run runs/gps_smollm2/gps@policy/seed2 --samples 8 \
        --embedder policy --out benchmarks/results/allocation_smollm2_policy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from provenance import provenance

from rollwise import PromptPool, load_selector
from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.allocation import compare_allocations
from rollwise.llm.evaluation import sample_outcomes
from rollwise.llm.models import resolve_embedder
from rollwise.llm.tasks import arithmetic
from rollwise.metrics import expected_calibration_error, spearman


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", default="runs/trl_smollm2/gps", help="a rollwise train output dir")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--embedder", default="wordllama",
                   help="the embedder the run's selector was trained with: wordllama, hf:smollm2, "
                        "policy (the run's starting checkpoint), ...")
    p.add_argument("--out", default="benchmarks/results/allocation_smollm2")
    args = p.parse_args()
    run = Path(args.run)
    checkpoint = max(run.glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    task = arithmetic()
    record = json.loads((run / "rollwise_run.json").read_text())
    embedder = resolve_embedder(args.embedder, policy=record["model_path"])
    pool = PromptPool.from_texts([r["question"] for r in task.train],
                                 ids=[r["id"] for r in task.train], embedder=embedder)
    selector = load_selector(run / "rollwise_selector.pt", pool)
    held = task.heldout
    pred = selector.predict_texts([r["question"] for r in held], embedder=embedder)
    cal = selector.calibration()
    cal_pred = cal.mean(pred)
    outcomes = sample_outcomes(str(checkpoint), held, task.verify, samples=args.samples,
                               max_new_tokens=args.max_new_tokens)
    rates = outcomes.mean(axis=1)
    n = len(held)
    budgets = [n, 2 * n, 4 * n]
    res = compare_allocations(pred, outcomes, budgets, seed=0)
    for name, kw in (("greedy-calibrated", {}), ("greedy-beta", {"concentration": cal.concentration}),
                     ("greedy-beta-contaminated", {"concentration": cal.concentration,
                                                   "contamination": cal.contamination})):
        extra = compare_allocations(cal_pred, outcomes, budgets, seed=0, methods=("greedy",),
                                    oracle=False, **kw)
        res["methods"][name] = extra["methods"]["greedy"]
        res["savings"][name] = extra["savings"]["greedy"]
    rho = spearman(pred, rates)
    ece_raw, ece_cal = expected_calibration_error(pred, rates), expected_calibration_error(cal_pred, rates)
    lines = [
        "# Test-time allocation on SmolLM2-135M-Instruct after GPS-selected GRPO\n",
        f"{n} held-out arithmetic prompts, {args.samples} real samples each at T = 1 from "
        f"`{checkpoint.name}` of `{run}`; predictions from the run's GPS selector. "
        f"Spearman(predicted, empirical rate) = {rho:.2f}; mean predicted {pred.mean():.3f}, "
        f"mean empirical {rates.mean():.3f}. ECE against the empirical rates: raw {ece_raw:.3f}, "
        f"calibrated {ece_cal:.3f} (slope {cal.slope:.2f}, bias {cal.bias:.2f}, concentration "
        f"{cal.concentration:.1f}, contamination {cal.contamination:.3f}, fitted on {cal.groups} "
        "training groups; mean calibrated rate "
        f"{cal_pred.mean():.3f}). Pass@k is the unbiased estimate from the recorded "
        "samples (allocations above the recorded count are capped).\n",
        "| samples/prompt | method | expected pass@k | samples to match uniform | saving |",
        "|---|---|---|---|---|",
    ]
    for b_i, b in enumerate(budgets):
        for m, r in res["methods"].items():
            sv = next((s for s in res["savings"].get(m, []) if s["budget"] == b), None)
            match = "-" if sv is None else ("never" if sv["budget_to_match"] is None
                                            else str(sv["budget_to_match"]))
            saving = "-" if sv is None or sv["saving"] is None else f"{100 * sv['saving']:.1f}%"
            lines.append(f"| {b // n} | {m} | {r['expected_pass_at_k'][b_i]:.3f} | {match} | "
                         f"{saving} |")
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"args": vars(args), "spearman": rho,
                                                 "ece_raw": ece_raw, "ece_calibrated": ece_cal,
                                                 "calibration": cal.as_dict(),
                                                 "calibrated_pred": cal_pred.tolist(),
                                                 "pred": pred.tolist(), "outcomes":
                                                 outcomes.tolist(), "comparison": res,
                                                 "provenance": provenance()})
    text = "\n".join(lines) + "\n"
    atomic_write_report(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
