"""Held-out accuracy against memorisation strength on the small-pool world, per strategy.

The small-pool world of ``small_pool_world.py`` (the arithmetic task's 400 prompts at
SmolLM2-135M's base rates, 8 prompts x 8 rollouts x 40 steps) at memorisation strengths
0, 0.25, 0.5, 1 and 2 (``WorldConfig.memorisation``: the n-th repeat of a prompt passes
1 / (1 + strength * n) of its signal to the abilities, the rest to that prompt alone). Resting
prompts (the quarter-pass cooldown of ``gps`` and ``gps-guarded``) should pay where repeats are
memorised and cost where they transfer; ``gps-adaptive-rest`` and ``gps-regime`` set the rest
from a reading of the run's own residuals (``rollwise.regime.RepeatExcess``). Same seeds for
every arm (paired).

    python benchmarks/memorisation_sweep.py --seeds 8

Writes OUT.json (``summary``: per arm ``heldout_by_strength``, strength -> mean final held-out
accuracy), OUT.md and OUT.png; ``--merge`` keeps the arms already in OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from arithmetic_world import arithmetic_world

from rollwise._io import atomic_write, atomic_write_json, atomic_write_report
from rollwise.sim import RunSettings, run_one

ARMS = ("uniform,mopps,gps,gps-uncentred,gps-guarded,gps-unguarded,gps-paper,gps-adaptive-rest,"
        "gps-trust,gps-regime,oracle")
STRENGTHS = (0.0, 0.25, 0.5, 1.0, 2.0)


def summarise(data: dict) -> dict:
    return {arm: {"heldout_by_strength": {s: float(np.mean(v["final_accuracy"]))
                                          for s, v in per.items()}}
            for arm, per in data["runs"].items()}


def markdown(data: dict) -> str:
    strengths = sorted({s for per in data["runs"].values() for s in per}, key=float)
    a = data["args"]
    lines = ["# Memorisation sweep (small-pool world)\n",
             f"{a['seeds']} seeds x {a['steps']} steps x {a['batch_size']} prompts x {a['k']} "
             "rollouts; final held-out accuracy, mean ± s.e. over seeds (same seeds per arm). "
             f"Written by `benchmarks/memorisation_sweep.py` in {data['seconds']:.0f} s.\n",
             "| strategy | " + " | ".join(f"memorisation {s}" for s in strengths) + " |",
             "|---|" + "---|" * len(strengths)]
    for arm, per in data["runs"].items():
        cells = []
        for s in strengths:
            v = np.asarray(per[s]["final_accuracy"]) if s in per else None
            cells.append("—" if v is None else
                         f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(v.size):.3f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines.append("\nMean cooldown applied (share of a pass) and mean share of each batch chosen by "
                 "prediction, for the GPS arms (the warm-up and the coverage floor draw at random):\n")
    lines.append("| strategy | " + " | ".join(f"memorisation {s}" for s in strengths) + " |")
    lines.append("|---|" + "---|" * len(strengths))
    for arm, per in data["runs"].items():
        if not any("cooldown" in per[s] for s in per):
            continue
        cells = [f"{np.mean(per[s]['cooldown']):.3f} / {np.mean(per[s]['predicted_share']):.2f}"
                 if s in per else "—" for s in strengths]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, per in data["runs"].items():
        xs = sorted(per, key=float)
        mean = [np.mean(per[s]["final_accuracy"]) for s in xs]
        se = [np.std(per[s]["final_accuracy"], ddof=1) / np.sqrt(len(per[s]["final_accuracy"]))
              for s in xs]
        ax.errorbar([float(s) for s in xs], mean, yerr=se, marker="o", capsize=3, label=arm,
                    lw=2.2 if arm == "gps" else 1.0)
    ax.set_xlabel("memorisation strength")
    ax.set_ylabel("final held-out accuracy")
    ax.set_title("small-pool world: held-out accuracy vs memorisation")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=ARMS)
    p.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS))
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--easiest-rate", type=float, default=0.16)
    p.add_argument("--out", default="benchmarks/results/memorisation_sweep")
    p.add_argument("--merge", action="store_true", help="keep the arms already in OUT.json")
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    data = {"runs": {}, "seconds": 0.0}
    if args.merge and out.with_suffix(".json").exists():
        data = json.loads(out.with_suffix(".json").read_text())
    data["args"] = {k: v for k, v in vars(args).items() if k != "merge"}
    settings = RunSettings(steps=args.steps, batch_size=args.batch_size)
    for strength in args.strengths:
        pool, _, _, make_world = arithmetic_world(args.k, args.easiest_rate, strength)
        for arm in args.strategies.split(","):
            finals, cooldown, share = [], [], []
            for seed in range(args.seeds):
                log = run_one(arm, pool, make_world, settings, seed)
                finals.append(log["accuracy"][-1])
                if not np.isnan(log["cooldown"]).all():  # the arm reads its regime
                    cooldown.append(float(np.mean(log["cooldown"])))
                    share.append(float(np.mean(log["predicted_share"])))
            rec = {"final_accuracy": finals}
            if cooldown:
                rec.update(cooldown=cooldown, predicted_share=share)
            data["runs"].setdefault(arm, {})[str(strength)] = rec
            print(f"memorisation {strength} {arm}: {np.mean(finals):.3f}", flush=True)
            data["seconds"] = time.perf_counter() - t0
            data["summary"] = summarise(data)
            atomic_write_json(out.with_suffix(".json"), data)
    atomic_write_report(out.with_suffix(".md"), markdown(data))
    plot(data, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
