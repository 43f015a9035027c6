"""Real GRPO on SmolLM2-135M-Instruct (CPU): uniform vs MoPPS vs GPS from the same start.

Every arm trains with TRL's GRPOTrainer through rollwise.integrations.trl, the same seed, model,
task, sizes and number of steps (hence the same rollout budget), and is evaluated on the same
held-out prompts. Writes benchmarks/results/trl_smollm2.{json,md,png}.

    python benchmarks/trl_smollm2.py --steps 30 --prompts-per-step 4 --num-generations 8
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.llm.engine import TrainSettings, run


def _curves(result: dict) -> dict:
    hist = result["log_history"]
    train = [h for h in hist if "rollwise/esr" in h]
    evals = [h for h in hist if "eval_reward" in h]
    rollouts_at = {h["step"]: h["rollwise/rollouts"] for h in train}
    init = result["initial_eval"].get("eval_reward", float("nan"))
    return {
        "step": [h["step"] for h in train],
        "rollouts": [h["rollwise/rollouts"] for h in train],
        "train_reward": [h.get("reward", float("nan")) for h in train],
        "esr": [h["rollwise/esr"] for h in train],
        "spearman": [h.get("rollwise/spearman", float("nan")) for h in train],
        "eval_step": [0] + [h["step"] for h in evals],
        "eval_rollouts": [0] + [rollouts_at.get(h["step"], float("nan")) for h in evals],
        "eval_accuracy": [init] + [h["eval_reward"] for h in evals],
        "wall_seconds": result["wall_seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--strategies", default="uniform,mopps,gps")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-prompts", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/trl_smollm2")
    p.add_argument("--out", default="benchmarks/results/trl_smollm2")
    p.add_argument("--hyper", type=json.loads, default={},
                   help='selector hyper-parameters as JSON, e.g. \'{"candidate_ratio": 4}\'')
    p.add_argument("--suffix", default="", help="appended to each arm's name (e.g. '+stream')")
    p.add_argument("--merge", action="store_true",
                   help="keep the arms already in OUT.json that this call does not run")
    p.add_argument("--previous-suffix", default=None,
                   help="with --merge: keep an arm this call re-runs under NAME + SUFFIX")
    args = p.parse_args()
    arms = {}
    if args.merge and Path(args.out).with_suffix(".json").exists():
        arms = json.loads(Path(args.out).with_suffix(".json").read_text())["arms"]
        for strategy in args.strategies.split(","):
            if strategy + args.suffix in arms and args.previous_suffix:
                arms[strategy + args.suffix + args.previous_suffix] = arms.pop(strategy + args.suffix)
    for strategy in args.strategies.split(","):
        settings = TrainSettings(
            model="smollm2", task="arithmetic", strategy=strategy, seed=args.seed,
            output_dir=f"{args.runs}/{strategy}", overwrite=True, steps=args.steps,
            prompts_per_step=args.prompts_per_step, num_generations=args.num_generations,
            max_new_tokens=args.max_new_tokens, learning_rate=args.learning_rate,
            eval_steps=args.eval_steps, eval_prompts=args.eval_prompts,
            save_steps=args.steps, hyper=dict(args.hyper))
        name = strategy + args.suffix
        arms[name] = _curves(run(settings))
        arms[name]["args"] = {k: v for k, v in vars(args).items()
                              if k not in ("strategies", "merge", "previous_suffix")}
        print(name, json.dumps({k: arms[name][k] for k in ("eval_step", "eval_accuracy")}))
        _write(args, arms)


def _write(args: argparse.Namespace, arms: dict) -> None:
    out = Path(args.out)
    rows = ["| strategy | rollouts | held-out acc. (start -> end) | mean ESR | mean Spearman | "
            "train reward (mean) | wall s |", "|---|---|---|---|---|---|---|"]
    for name, c in arms.items():
        rho = np.nanmean(c["spearman"]) if any(not math.isnan(x) for x in c["spearman"]) else np.nan
        rows.append(f"| {name} | {c['rollouts'][-1]:,.0f} | {c['eval_accuracy'][0]:.3f} -> "
                    f"{c['eval_accuracy'][-1]:.3f} | {np.mean(c['esr']):.2f} | "
                    f"{'n/a' if math.isnan(rho) else f'{rho:.2f}'} | "
                    f"{np.mean(c['train_reward']):.3f} | {c['wall_seconds']:.0f} |")
    table = "\n".join(rows) + "\n"
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    atomic_write_json(out.with_suffix(".json"), {"args": vars(args), "arms": arms})
    atomic_write_report(out.with_suffix(".md"), f"# GRPO on SmolLM2-135M-Instruct ({device})\n\n" + table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for name, c in arms.items():
        ax[0].plot(c["eval_rollouts"], c["eval_accuracy"], marker="o", label=name)
        ax[1].plot(c["step"], c["esr"], label=name)
        ax[2].plot(c["step"], c["spearman"], label=name)
    ax[0].set(xlabel="training rollouts", ylabel="held-out accuracy (T=1)", title="accuracy")
    ax[1].set(xlabel="step", ylabel="ESR", title="effective sample ratio")
    ax[2].set(xlabel="step", ylabel="Spearman", title="predicted vs empirical rate (batch)")
    for a in ax:
        a.grid(alpha=0.3)
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(table)


if __name__ == "__main__":
    main()
