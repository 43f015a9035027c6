"""Tables and plots for benchmark results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# One colour per strategy in every plot, whatever the order of the strategies in a run.
STRATEGY_COLORS = {
    "uniform": "#4d4d4d", "ds": "#8c564b", "mopps": "#1f77b4", "gps": "#d62728",
    "oracle": "#2ca02c", "gps-unguarded": "#ff7f0e", "gps-paper": "#9467bd",
    "gps-nocooldown": "#e377c2", "gps-nowarmup": "#bcbd22", "gps-unscaled": "#17becf",
    "gps-nodiv": "#aec7e8", "gps-nolatent": "#ffbb78", "gps-nointer": "#98df8a",
}
_SPARE = ["#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#7f7f7f"]


def strategy_color(name: str) -> str:
    """A fixed colour for ``name`` (a stable pick from a spare palette for unknown names)."""
    import zlib

    return STRATEGY_COLORS.get(name) or _SPARE[zlib.crc32(name.encode()) % len(_SPARE)]


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per strategy: rollouts to the target accuracy and their ratios, accuracy, ESR..."""
    step = summary["spearman_step"]
    lines = [
        f"Target held-out accuracy: {summary['target_accuracy']:.3f}",
        "",
        "| strategy | rollouts to target | vs uniform | vs DS | final acc | mean ESR | "
        f"Spearman unseen @{step} | Spearman unseen (end) | s/step select+observe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["strategies"].items():
        reach = r["rollouts_to_target"]
        reach_s = f">{r['total_rollouts']:,.0f}" if math.isnan(reach) else f"{reach:,.0f}"
        lines.append(
            f"| {name} | {reach_s} | {_fmt(r['ratio_to_uniform'], '.2f')} | "
            f"{_fmt(r['ratio_to_ds'], '.2f')} | {r['final_accuracy']:.3f} ± "
            f"{r['final_accuracy_sd']:.3f} | {_fmt(r['mean_esr'], '.2f')} | "
            f"{_fmt(r['spearman_unseen_at_step'], '.2f')} | {_fmt(r['spearman_unseen_final'], '.2f')} | "
            f"{r['sec_per_step']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Accuracy vs rollouts, ESR over steps and Spearman on unseen prompts over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rollwise._io import atomic_write

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, m in summary["mean_curves"].items():
        style = {"label": name, "color": strategy_color(name), "lw": 1.2}
        ax[0].plot(m["rollouts"], m["accuracy"], **style)
        steps = range(1, len(m["esr"]) + 1)
        ax[1].plot(steps, m["esr"], **style)
        if any(v == v for v in m["spearman_unseen"]):
            ax[2].plot(steps, m["spearman_unseen"], **style)
    ax[0].axhline(summary["target_accuracy"], color="grey", ls="--", lw=0.8)
    ax[0].set(xlabel="rollouts", ylabel="held-out accuracy", title="accuracy vs rollouts")
    ax[1].set(xlabel="step", ylabel="ESR", title="effective sample ratio")
    ax[2].set(xlabel="step", ylabel="Spearman", title="predicted vs true rate, unseen prompts")
    for a in ax:
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
