"""Tables and plots for benchmark results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

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
        f"Spearman unseen @{step} | Spearman unseen (end) | ECE unseen (end) | ECE calibrated "
        "| s/step select+observe |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["strategies"].items():
        reach = r["rollouts_to_target"]
        reach_s = f">{r['total_rollouts']:,.0f}" if math.isnan(reach) else f"{reach:,.0f}"
        lines.append(
            f"| {name} | {reach_s} | {_fmt(r['ratio_to_uniform'], '.2f')} | "
            f"{_fmt(r['ratio_to_ds'], '.2f')} | {r['final_accuracy']:.3f} ± "
            f"{r['final_accuracy_sd']:.3f} | {_fmt(r['mean_esr'], '.2f')} | "
            f"{_fmt(r['spearman_unseen_at_step'], '.2f')} | {_fmt(r['spearman_unseen_final'], '.2f')} | "
            f"{_fmt(r.get('ece_unseen_final'))} | {_fmt(r.get('ece_unseen_calibrated'))} | "
            f"{r['sec_per_step']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` steps (NaNs ignored)."""
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        part = x[max(0, i - window + 1) : i + 1]
        if np.isfinite(part).any():
            out[i] = np.nanmean(part)
    return out


def plot(summary: dict[str, Any], path: str | Path, title: str = "", smooth: int = 10) -> None:
    """Accuracy vs rollouts, ESR over steps (moving average over ``smooth`` steps), Spearman
    on unseen prompts over steps and a reliability diagram of the final unseen predictions;
    bands are ± one standard error over seeds where the summary holds per-seed runs. DS's
    rollouts are clipped at 1.5x the other strategies' budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rollwise._io import atomic_write

    per_seed = summary.get("per_seed", {})
    fig, ax = plt.subplots(1, 4, figsize=(21, 5))
    budgets = [m["rollouts"][-1] for name, m in summary["mean_curves"].items() if name != "ds"]
    x_max = 1.5 * max(budgets) if budgets else None
    clipped = []
    for name, m in summary["mean_curves"].items():
        color = strategy_color(name)
        runs = per_seed.get(name, [])

        def band(a: Any, x: Any, key: str, transform=lambda v: v, runs=runs, color=color) -> None:
            if len(runs) < 2:
                return
            ys = np.array([transform(np.asarray(r[key], dtype=float)) for r in runs])
            se = np.nanstd(ys, axis=0, ddof=1) / np.sqrt(len(runs))
            mean = np.nanmean(ys, axis=0)
            a.fill_between(x, mean - se, mean + se, color=color, alpha=0.15, lw=0)

        rollouts = np.asarray(m["rollouts"], dtype=float)
        ax[0].plot(rollouts, m["accuracy"], color=color, lw=1.4, label=name)
        band(ax[0], rollouts, "accuracy")
        if x_max is not None and rollouts[-1] > x_max:
            clipped.append(name)
        steps = np.arange(1, len(m["esr"]) + 1)
        smooth_esr = lambda v: _moving_average(v, smooth)  # noqa: E731
        ax[1].plot(steps, smooth_esr(np.asarray(m["esr"], dtype=float)), color=color, lw=1.4)
        band(ax[1], steps, "esr", smooth_esr)
        if any(v == v for v in m["spearman_unseen"]):
            ax[2].plot(steps, m["spearman_unseen"], color=color, lw=1.4)
            band(ax[2], steps, "spearman_unseen")
        count = np.asarray(m.get("reliability_count", []), dtype=float)
        if count.size and count.sum() > 0:  # the final unseen predictions, seeds pooled by bin
            filled = count > 0
            ax[3].plot(np.asarray(m["reliability_predicted_sum"])[filled] / count[filled],
                       np.asarray(m["reliability_true_sum"])[filled] / count[filled], "o-",
                       color=color, lw=1.2, ms=3)
    ax[0].axhline(summary["target_accuracy"], color="grey", ls="--", lw=0.8,
                  label="target (uniform's final)")
    if clipped:
        ax[0].set_xlim(0, x_max)
    note = f" ({', '.join(clipped)} clipped at {x_max:,.0f})" if clipped else ""
    ax[0].set(xlabel="rollouts" + note, ylabel="held-out accuracy", title="accuracy vs rollouts")
    ax[1].set(xlabel="step", ylabel="ESR", title=f"effective sample ratio ({smooth}-step mean)")
    ax[2].set(xlabel="step", ylabel="Spearman", title="predicted vs true rate, unseen prompts")
    ax[3].plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    ax[3].set(xlabel="mean predicted rate (bin)", ylabel="mean true rate (bin)",
              title="calibration on unseen prompts (end, raw predictions)")
    for a in ax:
        a.grid(alpha=0.3)
    handles, labels = ax[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=9,
               frameon=False)
    bands = " Bands: ± 1 s.e. over seeds." if any(len(v) > 1 for v in per_seed.values()) else ""
    fig.suptitle((title + "." if title else "") + bands)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
