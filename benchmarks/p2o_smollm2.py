"""Hard-prompt rescue (P²O) on SmolLM2-135M-Instruct: plain GRPO vs GRPO + P²O vs GPS + P²O.

Every arm starts from the same model and trains on the same small pool of arithmetic prompts
(levels 0-3, so prompts recur and hard ones come back) until the same rollout budget is spent,
GEPA's rollouts included: a P²O arm pays for its template evolutions with fewer training steps.
Measured after training, with the same protocol for every arm:

- held-out accuracy (TRL evaluation, T = 1, unseen prompts);
- the *initially hard* pool prompts (no success in ``--k`` samples from the starting model):
  the fraction solved at least once in ``--k`` bare-prompt samples from the final model, and
  their mean success rate. No template is used at test time.

Writes benchmarks/results/p2o_smollm2.{json,md,png}.

    python benchmarks/p2o_smollm2.py --budget 960
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.llm.engine import TrainSettings, run_grpo
from rollwise.rescue.addon import P2ORescue, RescueSettings

ARMS = {  # name: (strategy, rescue)
    "grpo": ("uniform", None),
    "grpo+p2o": ("uniform", "p2o"),
    "gps+p2o": ("gps", "p2o"),
    "gps": ("gps", None),
}
COLUMNS = ("id", "prompt", "answer", "level", "question")


def pool_rows(task: Any, levels: list[int], per_level: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for level in levels:
        at = [r for r in task.train if int(r["level"]) == level]
        rows += rng.sample(at, min(per_level, len(at)))
    return [{k: r[k] for k in COLUMNS} for r in rows]


def success_rates(model: str, rows: list[dict[str, Any]], verify: Any, k: int, max_new_tokens: int,
                  seed: int) -> np.ndarray:
    """Per-row success rate over ``k`` samples (T = 1) on the bare training prompt."""
    import torch

    from rollwise.llm.generation import TransformersPolicy

    policy = TransformersPolicy(model, max_new_tokens=max_new_tokens, temperature=1.0, batch_size=64,
                                seed=seed)
    texts = [r["prompt"][-1]["content"] for r in rows for _ in range(k)]
    completions = policy(texts)
    scores = [verify(c, r["answer"]) for c, r in zip(completions, [r for r in rows for _ in range(k)],
                                                      strict=True)]
    del policy
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return np.asarray(scores, dtype=float).reshape(len(rows), k).mean(axis=1)


def eval_curve(result: dict[str, Any]) -> dict[str, list[float]]:
    """Held-out accuracy against rollouts spent so far (training + GEPA)."""
    hist = result["log_history"]
    train_at = {h["step"]: h["rollwise/rollouts"] for h in hist if "rollwise/rollouts" in h}
    evolutions = result.get("rescue", {}).get("evolutions", [])

    def spent(step: int) -> float:
        return train_at.get(step, float("nan")) + sum(e.get("rollouts", 0) for e in evolutions
                                                      if e["step"] <= step)

    evals = [h for h in hist if "eval_reward" in h]
    return {"rollouts": [0.0] + [spent(h["step"]) for h in evals],
            "accuracy": [result["initial_eval"].get("eval_reward", float("nan"))]
            + [h["eval_reward"] for h in evals]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arms", default="grpo,grpo+p2o,gps+p2o")
    p.add_argument("--budget", type=int, default=960, help="rollouts per arm, GEPA's included")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--levels", default="0,1,2,3")
    p.add_argument("--per-level", type=int, default=16)
    p.add_argument("--k", type=int, default=8, help="samples per prompt to call a prompt hard / solved")
    p.add_argument("--eval-prompts", type=int, default=40)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--rescue-every", type=int, default=8)
    p.add_argument("--rescue-guided", type=int, default=2)
    p.add_argument("--rescue-max-metric-calls", type=int, default=48)
    p.add_argument("--rescue-max-hard", type=int, default=8)
    p.add_argument("--rescue-window", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/p2o_smollm2")
    p.add_argument("--out", default="benchmarks/results/p2o_smollm2")
    p.add_argument("--finalize", action="store_true",
                   help="only add the final held-out score (k samples per prompt from each arm's saved "
                        "final model) to an OUT.json written without it")
    args = p.parse_args()
    if args.finalize:
        finalize(args)
        return
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown {unknown}; choose from {list(ARMS)}")

    from rollwise.llm.models import resolve_model
    from rollwise.llm.tasks import get_task, reward_function

    model = resolve_model("smollm2")
    task = get_task("arithmetic")
    rows = pool_rows(task, [int(x) for x in args.levels.split(",")], args.per_level, args.seed)
    stride = max(1, len(task.heldout) // args.eval_prompts)
    held = [{k: r[k] for k in COLUMNS} for r in task.heldout[::stride][: args.eval_prompts]]
    t0 = time.perf_counter()
    base = success_rates(model, rows, task.verify, args.k, args.max_new_tokens, args.seed)
    hard = [i for i, rate in enumerate(base) if rate == 0]
    print(f"start: {len(hard)}/{len(rows)} pool prompts hard (0/{args.k}); "
          f"mean pool rate {base.mean():.3f} ({time.perf_counter() - t0:.0f} s)")
    report: dict[str, Any] = {
        "args": vars(args), "pool": [r["id"] for r in rows],
        "pool_levels": [int(r["level"]) for r in rows], "base_rates": base.tolist(),
        "hard": [rows[i]["id"] for i in hard], "arms": {},
    }
    per_step = args.prompts_per_step * args.num_generations
    for name in args.arms.split(","):
        strategy, rescue = ARMS[name]
        settings = TrainSettings(
            model="smollm2", strategy=strategy, seed=args.seed, output_dir=f"{args.runs}/{name}",
            steps=args.budget // per_step, max_rollouts=args.budget,
            prompts_per_step=args.prompts_per_step, num_generations=args.num_generations,
            max_new_tokens=args.max_new_tokens, learning_rate=args.learning_rate,
            eval_steps=args.eval_steps, eval_prompts=args.eval_prompts, save_steps=10_000)
        addons = [] if rescue is None else [P2ORescue(RescueSettings(
            every=args.rescue_every, guided=args.rescue_guided, max_metric_calls=args.rescue_max_metric_calls,
            max_hard=args.rescue_max_hard, window=args.rescue_window))]
        final = f"{args.runs}/{name}/final"
        result = run_grpo(settings, model, rows, held, reward_function(task), final_model_dir=final,
                          verify=task.verify, addons=addons)
        after = success_rates(final, [rows[i] for i in hard], task.verify, args.k, args.max_new_tokens,
                              args.seed + 1)
        held_rates = success_rates(final, held, task.verify, args.k, args.max_new_tokens, args.seed + 2)
        hist = result["log_history"]
        arm = {
            "strategy": strategy, "rescue": rescue, "steps": result["steps"],
            "rollouts": result["rollouts"], "wall_seconds": result["wall_seconds"],
            "curve": eval_curve(result),
            "hard_solved": float(np.mean(after > 0)) if hard else float("nan"),
            "hard_rate": float(np.mean(after)) if hard else float("nan"),
            "hard_after": after.tolist(),
            "final_heldout": float(np.mean(held_rates)),
            "eval_steps_done": [h["step"] for h in hist if "eval_reward" in h],
            "train_reward": [h.get("reward", float("nan")) for h in hist if "rollwise/rollouts" in h],
            "esr": [h["rollwise/esr"] for h in hist if "rollwise/esr" in h],
        }
        if "rescue" in result:
            r = result["rescue"]
            guided = [h["rescue/guided_success"] for h in hist if "rescue/guided_success" in h]
            arm["rescue_summary"] = {
                "training_rollouts": r["training_rollouts"], "gepa_rollouts": r["gepa_rollouts"],
                "guided_rollouts": r["guided_rollouts"], "evolutions": r["evolutions"],
                "template": r["template"], "bank_hard": r["hard_prompts"], "bank_rescued": r["rescued"],
                "guided_success": float(np.mean(guided)) if guided else float("nan"),
            }
        report["arms"][name] = arm
        print(name, json.dumps({k: arm[k] for k in ("steps", "rollouts", "hard_solved", "hard_rate")}),
              "held-out", [round(a, 3) for a in arm["curve"]["accuracy"]])
        write(Path(args.out), report)


def finalize(args: argparse.Namespace) -> None:
    from rollwise.llm.tasks import get_task

    out = Path(args.out)
    report = json.loads(out.with_suffix(".json").read_text())
    task = get_task("arithmetic")
    run = report["args"]
    stride = max(1, len(task.heldout) // run["eval_prompts"])
    held = [{k: r[k] for k in COLUMNS} for r in task.heldout[::stride][: run["eval_prompts"]]]
    for name, arm in report["arms"].items():
        if "final_heldout" not in arm:
            rates = success_rates(f"{run['runs']}/{name}/final", held, task.verify, run["k"],
                                  run["max_new_tokens"], run["seed"] + 2)
            arm["final_heldout"] = float(np.mean(rates))
        if "eval_steps_done" not in arm:
            hist = json.loads(Path(f"{run['runs']}/{name}/rollwise_run.json").read_text())["log_history"]
            arm["eval_steps_done"] = [h["step"] for h in hist if "eval_reward" in h]
        print(name, "final held-out", round(arm["final_heldout"], 3))
    write(out, report)


def write(out: Path, report: dict[str, Any]) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    report["device"] = device
    n_hard, k = len(report["hard"]), report["args"]["k"]
    lines = [f"# Hard-prompt rescue (P²O) on SmolLM2-135M-Instruct ({device})", "",
             f"Pool: {len(report['pool'])} arithmetic prompts (levels {report['args']['levels']}); "
             f"{n_hard} initially hard (0/{k} successes from the starting model). Budget "
             f"{report['args']['budget']} rollouts per arm, GEPA's included. Hard prompts re-sampled "
             f"{k} times on the bare prompt after training.", "",
             f"Held-out: TRL's evaluation during training (start -> last evaluation, at the step shown), and "
             f"the final model's mean success over {k} samples per held-out prompt (same protocol for "
             "every arm, measured after training).", "",
             "| arm | steps | rollouts (GEPA) | held-out (TRL eval) start -> last (step) | final held-out | "
             "hard solved (>=1 of k) | hard mean rate | guided success | bank rescued | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, a in report["arms"].items():
        r = a.get("rescue_summary")
        acc = a["curve"]["accuracy"]
        gepa = f" ({r['gepa_rollouts']})" if r else ""
        guided = f"{r['guided_success']:.3f}" if r else "n/a"
        rescued = r["bank_rescued"] if r else "n/a"
        last = a["eval_steps_done"][-1] if a.get("eval_steps_done") else "?"
        final = f"{a['final_heldout']:.3f}" if "final_heldout" in a else "n/a"
        lines.append(f"| {name} | {a['steps']} | {a['rollouts']}{gepa} | {acc[0]:.3f} -> {acc[-1]:.3f} "
                     f"({last}) | {final} | {a['hard_solved']:.3f} | {a['hard_rate']:.3f} | {guided} | "
                     f"{rescued} | {a['wall_seconds']:.0f} |")
    for name, a in report["arms"].items():
        r = a.get("rescue_summary")
        if not r:
            continue
        lines += ["", f"## {name}: template evolutions", ""]
        for e in r["evolutions"]:
            lines.append(f"- step {e['step']}: {e['hard']} hard, {e.get('used', 0)} given to GEPA, "
                         f"{e.get('tried', 0)} templates scored, seed score {e.get('seed_score')}, "
                         f"best {e.get('best_score')}, {e.get('rollouts', 0)} rollouts"
                         f"{' (skipped: ' + e['skipped'] + ')' if e.get('skipped') else ''}")
        lines.append(f"- final template: `{json.dumps(r['template'])}`")
    atomic_write_json(out.with_suffix(".json"), report)
    atomic_write_report(out.with_suffix(".md"), "\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    names = list(report["arms"])
    for name in names:
        c = report["arms"][name]["curve"]
        ax[0].plot(c["rollouts"], c["accuracy"], marker="o", label=name)
    ax[0].set(xlabel="rollouts spent (training + GEPA)", ylabel="held-out accuracy (T=1)",
              title="held-out accuracy")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    colors = ["C0", "C1", "C2", "C3"][: len(names)]
    final = [report["arms"][n].get("final_heldout", float("nan")) for n in names]
    ax[1].bar(names, final, color=colors)
    ax[1].set(ylabel=f"mean success, {k} samples per prompt", title="final model, held-out prompts")
    solved = [report["arms"][n]["hard_solved"] for n in names]
    ax[2].bar(names, solved, color=colors)
    ax[2].set(ylabel=f"solved at least once in {k} samples", ylim=(0, max(0.05, max(solved) * 1.3)),
              title=f"initially hard prompts (n={n_hard}), no template")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
