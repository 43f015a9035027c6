"""GPS against uniform, MoPPS and DS on SmolLM2-135M-Instruct, several seeds.

Every (arm, seed) run trains with ``rollwise train``'s engine (TRL's GRPOTrainer) from the same
start on the arithmetic task (five chain_sum levels) or a task file (``--task``), the same sizes
and the same held-out
protocol (``--eval-prompts`` rows spread over all levels x 4 samples, at start and every
``--eval-steps``). Runs go in parallel as separate processes (``--jobs``, each with
``--threads`` torch threads), seed by seed; each finished run is merged into
``OUT.json`` at once, so an interrupted call keeps what finished and ``--merge`` adds to it.
``OUT.md`` and ``OUT.png`` are redrawn from the JSON (``--report`` redraws only).
Selector arms spend equal rollouts (steps x prompts x rollouts); the ``ds`` arm (DAPO's dynamic
sampling over uniform prompts, in the trainer) runs the same optimiser steps and pays for every
round it generates, so its cost shows in ``rollouts``. An arm ``STRATEGY@EMBEDDER`` (e.g.
``gps@policy``: the policy's own hidden states at its start) embeds the pool with that embedder
instead of WordLlama, and ``STRATEGY@policy+N`` re-embeds the pool from the current policy every
N steps (``rollwise train --embed-refresh-steps N``); ``STRATEGY/OBJECTIVE`` (e.g.
``gps/variance``) gives per-prompt rollout budgets (``rollwise train --budgets``); both combine
as ``gps@policy/variance``.

    python benchmarks/gps_smollm2.py --seeds 0 1 2 --jobs 2          # CPU size (the defaults)
    python benchmarks/gps_smollm2.py --steps 40 --prompts-per-step 8 --num-generations 8 \\
        --max-new-tokens 48 --eval-steps 10 --jobs 12 --threads 1 --out OUT   # GPU size
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from parallel_runs import run_workers
from provenance import provenance

from rollwise._io import atomic_write, atomic_write_json, atomic_write_report

ARMS = ["uniform", "mopps", "gps", "gps-guarded", "gps-unguarded", "ds"]
SETTINGS_KEYS = ("task", "steps", "prompts_per_step", "num_generations", "max_new_tokens",
                 "learning_rate", "eval_steps", "eval_prompts", "threads")


def arm_settings(arm: str, seed: int, args: argparse.Namespace):
    """The run settings of one arm (``STRATEGY[@EMBEDDER][/BUDGET_OBJECTIVE]``) and seed;
    validated, so a bad arm is refused before any run starts."""
    from rollwise.llm.engine import TrainSettings

    rest, _, budgets = arm.partition("/")
    strategy, _, embedder = rest.partition("@")
    embedder, plus, every = embedder.partition("+")
    try:
        if plus and not every.isdigit():
            raise ValueError("re-embedding needs a whole number of steps after '+' (gps@policy+5)")
        settings = TrainSettings(
            model="smollm2", strategy=strategy, seed=seed, embedder=embedder or "wordllama",
            budgets=budgets or None, embed_refresh_steps=int(every) if plus else None,
            output_dir=str(Path(args.runs) / arm.replace("/", "+") / f"seed{seed}"),
            save_steps=args.steps,
            overwrite=True, **{k: getattr(args, k) for k in SETTINGS_KEYS})
        settings.validate()
    except ValueError as err:
        raise SystemExit(f"--arms: {arm!r}: {err}") from err
    return settings


def run_one(arm: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one arm with one seed (in this process) and return its condensed record."""
    from rollwise.llm.engine import run

    return condense(run(arm_settings(arm, seed, args)))


def condense(result: dict) -> dict:
    """What the report needs from a run's log: curves, per-level evaluations, selections."""
    hist = result["log_history"]
    train = [h for h in hist if "rollwise/esr" in h]
    rollouts_at = {h["step"]: h["rollwise/rollouts"] for h in train}
    evals = result["evaluations"]
    chosen = [i for rec in result["selections"] for i in rec["indices"]]
    return {
        "eval_step": [e["step"] for e in evals],
        "eval_rollouts": [0 if e["step"] == 0 else rollouts_at.get(e["step"]) for e in evals],
        "eval_accuracy": [e["reward"] for e in evals],
        "eval_truncation": [e["truncation_rate"] for e in evals],
        "eval_levels": [e["levels"] for e in evals],
        # GPS's predictions for the held-out prompts against their empirical rates (where logged)
        "eval_calibration": [e.get("calibration") for e in evals],
        "esr": [h["rollwise/esr"] for h in train],
        "train_reward": [h.get("reward") for h in train],
        "selected_levels": [rec["level"] for rec in result["selections"]],
        "selected_predicted": [rec["predicted"] for rec in result["selections"]],
        "train_truncation": [rec["truncation_rate"] for rec in result["selections"]],
        "distinct_prompts": len(set(chosen)),
        "selections": len(chosen),
        "max_repeats": int(np.bincount(chosen).max()) if chosen else 0,
        "rollouts": result["rollouts"],
        "wall_seconds": result["wall_seconds"],
        # dynamic-sampling arms: each step's rounds, rollouts, keeps and keep rates (run log)
        "ds_log": result.get("dynamic_sampling") or None,
    }


def rollouts_to_reach(rollouts: list, accuracy: list, target: float) -> float | None:
    """Rollouts at which an evaluation curve first reaches ``target`` (linear interpolation
    between evaluations); None if it never does."""
    for j, acc in enumerate(accuracy):
        if acc >= target:
            if j == 0:
                return float(rollouts[0])
            a0, r0, r1 = accuracy[j - 1], rollouts[j - 1], rollouts[j]
            return float(r0 + (target - a0) / (acc - a0) * (r1 - r0))
    return None


def accuracy_at(rollouts: list, accuracy: list, budget: float) -> float | None:
    """Held-out accuracy of an evaluation curve at ``budget`` rollouts (linear interpolation
    between evaluations); None past the curve's last evaluation."""
    xs = [float(x) for x in rollouts]
    if budget > xs[-1]:
        return None
    j = next(i for i, x in enumerate(xs) if x >= budget)
    if j == 0 or xs[j] == budget:
        return float(accuracy[j])
    a0, r0 = accuracy[j - 1], xs[j - 1]
    return float(a0 + (accuracy[j] - a0) * (budget - r0) / (xs[j] - r0))


def families() -> dict[int, str]:
    """Level -> family of the mixed task."""
    from rollwise.llm.tasks import MIXED_LEVELS

    return {lvl: family for lvl, (family, _) in enumerate(MIXED_LEVELS)}


def family_shares(run: dict) -> dict[str, float]:
    """Per family of the mixed task: its share of the run's selections divided by its share of
    the pool (every level holds the same number of training prompts)."""
    fam = families()
    chosen = [fam[int(lv)] for batch in run["selected_levels"] for lv in batch]
    pool = {f: sum(1 for v in fam.values() if v == f) / len(fam) for f in set(fam.values())}
    return {f: chosen.count(f) / len(chosen) / pool[f] for f in sorted(pool)}


def family_accuracy(levels: dict) -> dict[str, float]:
    """Per family of the mixed task: held-out accuracy over its levels (weighted by rows)."""
    fam, out = families(), {}
    for f in sorted(set(fam.values())):
        rows = [(v["n"], v["reward"]) for lv, v in levels.items() if fam[int(float(lv))] == f]
        out[f] = sum(n * r for n, r in rows) / sum(n for n, _ in rows) if rows else float("nan")
    return out


def _mean_final(runs: dict) -> float | None:
    return float(np.mean([r["eval_accuracy"][-1] for r in runs.values()])) if runs else None


DS_ARMS = ("ds", "gps+ds", "greso+ds", "mopps+ds")  # the predictive dynamic-sampling comparison


def is_ds_comparison(data: dict) -> bool:
    """Whether every arm of the results is a dynamic-sampling arm (its own summary keys)."""
    return bool(data["runs"]) and set(data["runs"]) <= set(DS_ARMS)


def rounds_per_step(run: dict) -> float:
    """A dynamic-sampling run's mean generation rounds per step (the run log's
    ``dynamic_sampling``; records from before it was condensed count one selection a round)."""
    if run.get("ds_log"):
        return float(np.mean([r["rounds"] for r in run["ds_log"]]))
    return len(run["selected_levels"]) / len(run["esr"])


def keep_rates(run: dict) -> list[float] | None:
    """Per step, informative groups per prompt rolled out (None without the run log's record)."""
    if not run.get("ds_log"):
        return None
    return [r["realised_keep_rate"] for r in run["ds_log"]]


def ds_summary(data: dict) -> dict:
    """The dynamic-sampling comparison's ``summary``: per arm, per seed, the final held-out
    accuracy, the rollouts spent and the mean generation rounds per step; model, task, seeds."""
    arms = data["runs"]
    summary: dict = {"model": "SmolLM2-135M-Instruct",
                     "task": data.get("args", {}).get("task", "arithmetic"),
                     "seeds": sorted({int(s) for runs in arms.values() for s in runs})}
    for arm in DS_ARMS:
        runs = arms.get(arm, {})
        seeds = sorted(runs, key=int)
        summary[arm] = {"final_heldout": [runs[s]["eval_accuracy"][-1] for s in seeds],
                        "rollouts": [runs[s]["rollouts"] for s in seeds],
                        "rounds_per_step": [rounds_per_step(runs[s]) for s in seeds]}
    return summary


def summarise(data: dict) -> dict:
    """The ``summary`` object: per arm, per seed, the final held-out accuracy, the rollouts spent
    and the rollouts at which the arm reached uniform's and DS's mean final held-out accuracy
    (None where never reached, or where that arm has not run); model, task, seeds, rollouts per
    selector arm; on the mixed task also each seed's smallest family share ratio."""
    arms = data["runs"]
    targets = {"uniform": _mean_final(arms.get("uniform", {})), "ds": _mean_final(arms.get("ds", {}))}
    summary: dict = {"model": "SmolLM2-135M-Instruct", "task": data.get("args", {}).get("task", "arithmetic"),
                     "seeds": sorted({int(s) for runs in arms.values() for s in runs}),
                     "rollouts_per_arm": None}
    for arm, runs in arms.items():
        seeds = sorted(runs, key=int)
        summary[arm] = {"final_heldout": [runs[s]["eval_accuracy"][-1] for s in seeds]}
        for name, target in targets.items():
            summary[arm][f"rollouts_to_{name}_final"] = [
                None if target is None else rollouts_to_reach(
                    runs[s]["eval_rollouts"], runs[s]["eval_accuracy"], target) for s in seeds]
        summary[arm]["rollouts"] = [runs[s]["rollouts"] for s in seeds]
        if summary["task"] == "mixed":  # the keys the mixed pool's readers also ask for
            summary[arm]["min_family_share_ratio"] = [min(family_shares(runs[s]).values())
                                                      for s in seeds]
        if arm != "ds":
            summary["rollouts_per_arm"] = max(r["rollouts"] for r in runs.values())
    return summary


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def paired_against(data: dict, base: str) -> list[str]:
    """Markdown rows: each arm's final held-out minus ``base``'s, paired over their common seeds
    (mean ± s.e., two-sided paired t-test p-value from scipy)."""
    from scipy import stats

    runs = data["runs"]
    if base not in runs:
        return []
    lines = ["", f"Paired differences in final held-out accuracy against `{base}` (same seeds):", "",
             "| arm | seeds | mean difference | p (paired t) |", "|---|---|---|---|"]
    for arm in runs:
        if arm == base:
            continue
        seeds = sorted(set(runs[arm]) & set(runs[base]), key=int)
        d = [runs[base][k]["eval_accuracy"][-1] - runs[arm][k]["eval_accuracy"][-1] for k in seeds]
        if len(d) < 2:
            continue
        m, se = _mean_se(d)
        p = stats.ttest_rel([runs[base][k]["eval_accuracy"][-1] for k in seeds],
                            [runs[arm][k]["eval_accuracy"][-1] for k in seeds]).pvalue
        lines.append(f"| {base} - {arm} | {len(d)} | {m:+.3f} ± {se:.3f} | {p:.2f} |")
    return lines


def markdown(data: dict) -> str:
    s, a = data["summary"], data["args"]
    lines = [
        f"# GPS vs uniform, MoPPS and DS on SmolLM2-135M-Instruct ({s['task']}, several seeds)", "",
        f"Written by `benchmarks/gps_smollm2.py`. {a['steps']} steps x {a['prompts_per_step']} "
        f"prompts x {a['num_generations']} rollouts x {a['max_new_tokens']} tokens, lr "
        f"{a['learning_rate']}; held-out: {a['eval_prompts']} prompts over all levels x 4 "
        f"samples, at step 0 and every {a['eval_steps']} steps. Same start; the selector arms "
        f"spend the same rollouts, `ds` the same steps (its rollouts counted). Mean ± standard "
        f"error over seeds {s['seeds']}.", "",
        "| arm | seeds | final held-out | per evaluation | rollouts spent | rollouts to uniform's "
        "final | rollouts to DS's final | mean ESR | final truncation | distinct prompts / "
        "selections | max repeats |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, runs in data["runs"].items():
        rs = [runs[k] for k in sorted(runs, key=int)]
        m, se = _mean_se([r["eval_accuracy"][-1] for r in rs])
        curve = np.mean([r["eval_accuracy"] for r in rs], axis=0)
        reach = [", ".join("-" if x is None else f"{x:,.0f}" for x in s[arm][f"rollouts_to_{t}_final"])
                 for t in ("uniform", "ds")]
        lines.append(
            f"| {arm} | {len(rs)} | {m:.3f}{f' ± {se:.3f}' if len(rs) > 1 else ''} | "
            f"{' / '.join(f'{c:.3f}' for c in curve)} | "
            f"{np.mean([r['rollouts'] for r in rs]):,.0f} | {reach[0]} | {reach[1]} | "
            f"{np.mean([np.mean(r['esr']) for r in rs]):.2f} | "
            f"{np.mean([r['eval_truncation'][-1] for r in rs]):.2f} | "
            f"{np.mean([r['distinct_prompts'] for r in rs]):.0f} / "
            f"{np.mean([r['selections'] for r in rs]):.0f} | "
            f"{np.mean([r['max_repeats'] for r in rs]):.1f} |")
    budget = s["rollouts_per_arm"]
    if budget and "ds" in data["runs"]:
        at = {arm: [accuracy_at(r["eval_rollouts"], r["eval_accuracy"], budget) for r in runs.values()]
              for arm, runs in data["runs"].items()}
        lines += ["", f"Held-out accuracy at the selector arms' budget ({budget:,} rollouts; DS's curve "
                      "interpolated between its evaluations), mean ± s.e. over seeds:", "",
                  "| " + " | ".join(at) + " |", "|" + "---|" * len(at),
                  "| " + " | ".join("{:.3f} ± {:.3f}".format(*_mean_se([v for v in vals if v is not None]))
                                    for vals in at.values()) + " |"]
    # the default, and the defaults before it: uncentred diversity, the first coverage floor, the
    # guarded rule
    for base in ("gps", "gps-uncentred", "gps-eager-exempt", "gps-guarded"):
        lines += paired_against(data, base)
    levels = sorted({lv for runs in data["runs"].values() for r in runs.values()
                     for lv in r["eval_levels"][-1]}, key=float)
    lines += ["", "Final held-out accuracy per level (mean over seeds), and the level mix of the "
                  "first 4 and of all selections:", "",
              "| arm | " + " | ".join(f"level {float(lv):g}" for lv in levels) + " | first 4 steps' levels "
              "| all levels chosen |", "|---|" + "---|" * (len(levels) + 2)]
    for arm, runs in data["runs"].items():
        rs = list(runs.values())
        per = [np.mean([r["eval_levels"][-1][lv]["reward"] for r in rs]) for lv in levels]

        def mix(rs: list, steps: int | None) -> str:
            chosen = [lv for r in rs for batch in r["selected_levels"][:steps] for lv in batch]
            counts = np.bincount(np.asarray(chosen, dtype=int), minlength=len(levels))
            return "/".join(str(c) for c in counts)

        lines.append(f"| {arm} | " + " | ".join(f"{p:.3f}" for p in per)
                     + f" | {mix(rs, 4)} | {mix(rs, None)} |")
    if s["task"] == "mixed":
        names = sorted(set(families().values()))
        lines += ["", "Per family: final held-out accuracy, and share of the selections over share of "
                      "the pool (1 = as uniform; mean over seeds, the smallest in brackets):", "",
                  "| arm | " + " | ".join(f"{f} accuracy" for f in names) + " | "
                  + " | ".join(f"{f} share ratio" for f in names) + " |",
                  "|---|" + "---|" * (2 * len(names))]
        for arm, runs in data["runs"].items():
            rs = list(runs.values())
            acc = [np.mean([family_accuracy(r["eval_levels"][-1])[f] for r in rs]) for f in names]
            ratio = [[family_shares(r)[f] for r in rs] for f in names]
            lines.append(f"| {arm} | " + " | ".join(f"{a:.3f}" for a in acc) + " | "
                         + " | ".join(f"{np.mean(x):.2f} ({min(x):.2f})" for x in ratio) + " |")
    if data.get("conclusion"):
        lines += ["", "## Reading", "", data["conclusion"]]
    return "\n".join(lines) + "\n"


def ds_markdown(data: dict) -> str:
    """The report of the predictive dynamic-sampling comparison (arms of :data:`DS_ARMS`)."""
    from scipy import stats

    s, a, runs = data["summary"], data["args"], data["runs"]
    lines = [
        f"# Predictive dynamic sampling on SmolLM2-135M-Instruct ({s['task']})", "",
        f"Written by `benchmarks/gps_smollm2.py`. {a['steps']} steps x {a['prompts_per_step']} "
        f"informative groups x {a['num_generations']} rollouts x {a['max_new_tokens']} tokens, lr "
        f"{a['learning_rate']}; held-out: {a['eval_prompts']} prompts over all levels x 4 samples, "
        f"at step 0 and every {a['eval_steps']} steps. Same start for every arm; every arm fills "
        "each step's batch with informative groups (at most 10 rounds) and pays every rollout. "
        "Mean ± s.e. over seeds. *keep rate*: informative groups per prompt rolled out (mean over "
        "steps), realised and as the sizing predicted it; *surplus*: informative groups beyond the "
        "batch per step, paid for and dropped.", "",
        "| arm | seeds | final held-out | per evaluation | rollouts | x ds | rounds / step | "
        "keep rate | predicted | surplus / step |", "|---|---|---|---|---|---|---|---|---|---|"]
    ds_roll = np.mean(s["ds"]["rollouts"]) if s["ds"]["rollouts"] else float("nan")
    for arm in DS_ARMS:
        rs = [runs[arm][k] for k in sorted(runs.get(arm, {}), key=int)]
        if not rs:
            continue
        m, se = _mean_se(s[arm]["final_heldout"])
        curve = np.mean([r["eval_accuracy"] for r in rs], axis=0)
        logged = [r["ds_log"] for r in rs if r.get("ds_log")]

        def per_step(key: str, logged=logged) -> str:
            vals = [np.mean([x[key] for x in log if x[key] is not None]) for log in logged
                    if any(x[key] is not None for x in log)]
            return f"{np.mean(vals):.2f}" if vals else "n/a"

        lines.append(
            f"| {arm} | {len(rs)} | {m:.3f}{f' ± {se:.3f}' if len(rs) > 1 else ''} | "
            f"{' / '.join(f'{c:.3f}' for c in curve)} | {np.mean(s[arm]['rollouts']):,.0f} | "
            f"{np.mean(s[arm]['rollouts']) / ds_roll:.2f} | {np.mean(s[arm]['rounds_per_step']):.2f} | "
            f"{per_step('realised_keep_rate')} | {per_step('predicted_keep_rate')} | "
            f"{per_step('surplus')} |")
    lines += paired_against(data, "ds")
    if "gps+ds" in runs:
        lines += ["", "Paired rollouts against `gps+ds` (same seeds; ratio of means, two-sided "
                      "paired t-test on the rollouts):", "",
                  "| arm | seeds | arm's rollouts | gps+ds's | gps+ds / arm | seeds gps+ds fewer | p |",
                  "|---|---|---|---|---|---|---|"]
        for arm in DS_ARMS:
            if arm == "gps+ds" or arm not in runs:
                continue
            seeds = sorted(set(runs[arm]) & set(runs["gps+ds"]), key=int)
            if len(seeds) < 2:
                continue
            x = [runs[arm][k]["rollouts"] for k in seeds]
            g = [runs["gps+ds"][k]["rollouts"] for k in seeds]
            p = stats.ttest_rel(g, x).pvalue
            fewer = sum(gi < xi for gi, xi in zip(g, x, strict=True))
            lines.append(f"| {arm} | {len(seeds)} | {np.mean(x):,.0f} | {np.mean(g):,.0f} | "
                         f"{np.mean(g) / np.mean(x):.2f} | {fewer}/{len(seeds)} | {p:.3g} |")
    if data.get("conclusion"):
        lines += ["", "## Reading", "", data["conclusion"]]
    return "\n".join(lines) + "\n"


def ds_plot(data: dict, path: Path) -> None:
    """Held-out accuracy against rollouts, and rollouts per step over the run (between
    evaluations), per dynamic-sampling arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rollwise.sim.report import strategy_color

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm in DS_ARMS:
        rs = list(data["runs"].get(arm, {}).values())
        if not rs:
            continue
        c = strategy_color(arm)
        x = np.mean([r["eval_rollouts"] for r in rs], axis=0)
        y = np.array([r["eval_accuracy"] for r in rs])
        m = y.mean(0)
        se = y.std(0, ddof=1) / np.sqrt(len(rs)) if len(rs) > 1 else np.zeros_like(m)
        ax.plot(x, m, marker="o", color=c, label=f"{arm} ({len(rs)} seeds)")
        ax.fill_between(x, m - se, m + se, color=c, alpha=0.2)
        steps = np.asarray(rs[0]["eval_step"], dtype=float)
        per = np.mean([np.diff(r["eval_rollouts"]) / np.diff(steps) for r in rs], axis=0)
        bx.step(steps[1:], per, where="pre", color=c, label=arm)
    ax.set_xlabel("training rollouts")
    ax.set_ylabel("held-out accuracy (all levels)")
    ax.set_title("held-out accuracy, mean ± s.e. over seeds")
    ax.legend(fontsize=8)
    bx.set_xlabel("step")
    bx.set_ylabel("rollouts per step (mean between evaluations)")
    bx.set_title("what each step cost")
    bx.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rollwise.sim.report import strategy_color

    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.2))
    for arm, runs in data["runs"].items():
        rs = list(runs.values())
        x = np.nanmean([[np.nan if v is None else v for v in r["eval_rollouts"]] for r in rs], 0)
        y = np.array([r["eval_accuracy"] for r in rs])
        m = y.mean(0)
        se = y.std(0, ddof=1) / np.sqrt(len(rs)) if len(rs) > 1 else np.zeros_like(m)
        c = strategy_color(arm)
        ax.plot(x, m, marker="o", color=c, label=f"{arm} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        ax.fill_between(x, m - se, m + se, color=c, alpha=0.2)
        lv = sorted(rs[0]["eval_levels"][-1], key=float)
        per = [np.mean([r["eval_levels"][-1][k]["reward"] for r in rs]) for k in lv]
        off = list(data["runs"]).index(arm) * 0.8 / len(data["runs"])
        bx.bar(np.arange(len(lv)) + off, per, width=0.8 / len(data["runs"]), color=c, label=arm)
        rounds = min(len(r["selected_levels"]) for r in rs)  # DS's rounds differ per seed
        mean_level = np.mean([[np.mean(batch) for batch in r["selected_levels"][:rounds]]
                              for r in rs], axis=0)
        cx.plot(np.arange(1, len(mean_level) + 1), mean_level, color=c, label=arm)
    ax.set_xlabel("training rollouts")
    ax.set_ylabel("held-out accuracy (all levels)")
    ax.set_title("held-out accuracy, mean ± s.e. over seeds")
    ax.legend(fontsize=8)
    bx.set_xlabel("level")
    bx.set_ylabel("final held-out accuracy")
    bx.set_title("final accuracy per level")
    bx.legend(fontsize=8)
    cx.set_xlabel("selection (a step; DS: a generation round)")
    cx.set_ylabel("mean level of the chosen prompts")
    cx.set_title("level mix of the selections (0 easiest, 4 hardest)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write(data: dict, out: Path) -> None:
    data["summary"] = ds_summary(data) if is_ds_comparison(data) else summarise(data)
    data.pop("min_family_share_ratio", None)  # written beside the summary before it moved in
    uniform = data["runs"].get("uniform", {})
    data["uniform_final_mean"] = (float(np.mean([r["eval_accuracy"][-1] for r in uniform.values()]))
                                  if uniform else None)
    atomic_write_json(out.with_suffix(".json"), data)
    if is_ds_comparison(data):
        atomic_write_report(out.with_suffix(".md"), ds_markdown(data))
        ds_plot(data, out.with_suffix(".png"))
        return
    atomic_write_report(out.with_suffix(".md"), markdown(data))
    plot(data, out.with_suffix(".png"))


def reuse(data: dict, spec: str, args: argparse.Namespace) -> None:
    """Merge ARM's runs from FILE (``--reuse FILE:ARM``) into ``data``; refused where FILE's
    settings differ from this call's, so only runs of one protocol are compared."""
    path, _, arm = spec.rpartition(":")
    if not path or not arm:
        raise SystemExit(f"--reuse: expected FILE:ARM, got {spec!r}")
    try:
        other = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"--reuse: cannot read {path!r}: {err}") from err
    if arm not in other.get("runs", {}):
        raise SystemExit(f"--reuse: {path!r} has no arm {arm!r}")
    theirs = other.get("args", {})
    differ = [k for k in SETTINGS_KEYS if k != "threads" and theirs.get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--reuse: {path!r} ran other settings ({', '.join(differ)})")
    for seed, record in other["runs"][arm].items():
        data["runs"].setdefault(arm, {}).setdefault(seed, record)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--task", default="arithmetic", help="'arithmetic' or a task file (rollwise train --task)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--eval-steps", type=int, default=5)
    p.add_argument("--eval-prompts", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--runs", default="runs/gps_smollm2")
    p.add_argument("--out", default="benchmarks/results/gps_smollm2")
    p.add_argument("--merge", action="store_true", help="keep the runs already in OUT.json")
    p.add_argument("--report", action="store_true", help="only redraw OUT.md and OUT.png")
    p.add_argument("--conclusion", default=None, help="text for the report's reading section")
    p.add_argument("--reuse", action="append", default=[], metavar="FILE:ARM",
                   help="take ARM's runs from an earlier results FILE of the same settings "
                        "instead of re-running them (seeds already here are kept)")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    if args.one:  # a worker: train, print the condensed record as JSON on the last line
        record = run_one(args.one[0], int(args.one[1]), args)
        print("\n" + json.dumps(record))
        return
    data = {"runs": {}}
    if (args.merge or args.report) and out.with_suffix(".json").exists():
        data = json.loads(out.with_suffix(".json").read_text())
    if args.conclusion is not None:
        data["conclusion"] = args.conclusion
    for spec in args.reuse:
        reuse(data, spec, args)
    if args.report:
        write(data, out)
        return
    data["args"] = {k: v for k, v in vars(args).items()
                    if k not in ("merge", "report", "one", "conclusion")}
    data.setdefault("provenance", []).append(provenance())  # one entry per call that added runs
    todo = [(arm, seed) for seed in args.seeds for arm in args.arms.split(",")
            if str(seed) not in data["runs"].get(arm, {})]
    for arm, seed in todo:
        arm_settings(arm, seed, args)
    forwarded = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in SETTINGS_KEYS]

    def merge(arm: str, seed: int, record: dict) -> None:
        data["runs"].setdefault(arm, {})[str(seed)] = record
        write(data, out)

    run_workers(__file__, todo, forwarded, args.runs, args.jobs, merge)


if __name__ == "__main__":
    main()
