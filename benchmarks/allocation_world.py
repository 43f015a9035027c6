"""Test-time allocation on the simulated world: samples saved at equal pass@k.

For each seed, GPS trains on the default reasoning-gym world exactly as in ``rollwise bench``
(150 steps, batch 32, k = 8). Its PPM then predicts the success rates of the world's held-out
prompts, which it never saw (embedded with the same embedder), and the held-out prompts get test
samples allocated from those predictions: ``uniform``, ``greedy`` (maximum expected pass@k under
the predictions) and ``window`` (the quantile window), plus ``oracle`` (greedy on the true rates,
the upper bound). Everything is scored against the world's true held-out rates at that moment:
expected pass@k, a seeded Bernoulli draw of the samples, and the smallest budget at which each
method reaches uniform's expected pass@k ("samples saved at equal pass@k").

    python benchmarks/allocation_world.py              # 5 seeds, a few minutes on a CPU

Writes benchmarks/results/allocation_world.{json,md,png}. The comparison itself is
``rollwise.allocation.compare_allocations``, which takes predictions and either true rates or a
0/1 matrix of real samples per prompt, so a script with a real model can reuse it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from rollwise import make_selector
from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.allocation import allocate, compare_allocations, expected_pass_at_k
from rollwise.embed import embed_texts
from rollwise.metrics import expected_calibration_error, reliability_curve, spearman
from rollwise.sim import RunSettings, WorldConfig, build_world, world_prompt_sets

METHODS = ("uniform", "greedy", "window")
ALL = METHODS + ("oracle",)
# greedy on the selector's calibrated predictions (its calibration is fitted during training on
# first observations of prompts, never on these held-out prompts)
CALIBRATED = {
    "greedy-calibrated": "greedy on the calibrated rates",
    "greedy-beta": "greedy under the calibrated Beta predictive distribution (calibrated rate and "
                   "fitted concentration): what `rollwise allocate` does by default",
    "greedy-beta-contaminated": "greedy-beta with the contamination fitted on first observations "
                                "(each prompt's Beta mixed with the population's; "
                                "`--contamination fitted`)",
    "greedy-beta-guarded": "greedy-beta with half of the budget spread as uniform spreads it "
                           "(`uniform_share=0.5`)",
}
PRODUCT = "greedy-beta"  # the rule the summary's greedy_saving reports
GUARD_SHARE = 0.5
COLOURS = {"uniform": "C0", "greedy": "C3", "window": "C2", "oracle": "C7", "greedy-beta": "C1"}
# diagnostics: greedy on other predictions, to separate ranking from calibration errors
DIAGNOSTICS = {
    "greedy-perfect-calibration": "greedy on GPS's ranking with the true rates' distribution "
                                  "(perfect calibration)",
    "greedy-embedding-fit": "greedy on the held-out ranking of an MLP on the embeddings fitted to "
                            "every training prompt's true current rate (noise-free labels on the "
                            "whole pool, more than any selector observes), with perfect "
                            "calibration: the ranking these embeddings allow",
    "greedy-skill-level": "greedy on the best text-only prediction (true skill ability and level, "
                          "averaged over the prompt-specific noise no text reveals)",
}


def train_gps(pool, make_world, settings: RunSettings, seed: int, checkpoints, on_checkpoint) -> None:
    """The selector loop of ``rollwise.sim.runner.run_one`` for GPS; calls
    ``on_checkpoint(step, selector, world)`` after each step listed in ``checkpoints``."""
    world = make_world(seed)
    n = len(pool)
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_probe = int(round(settings.probe_fraction * n))
    candidates = np.sort(perm[n_probe:])
    roll_rng = np.random.default_rng([seed, 11])
    sel = make_selector("gps", pool, settings.batch_size, seed=seed)
    for step in range(1, settings.steps + 1):
        idx = sel.select(candidates)
        r = world.rollout(idx, roll_rng)
        sel.observe(idx, r)
        world.learn(idx, r)
        if step in checkpoints:
            on_checkpoint(step, sel, world)


def skill_level_rates(world, train_levels: np.ndarray, held_levels: np.ndarray) -> np.ndarray:
    """Held-out success rates as far as a prompt's skill and level determine them: the world's
    rate averaged over its prompt-specific difficulty noise (Gauss-Hermite quadrature), with the
    level offsets of ``PromptWorld``."""
    cfg = world.config
    levels = np.concatenate([train_levels, held_levels]).astype(np.float64)
    lo, span = levels.min(), np.ptp(levels)
    x = (held_levels - lo) / span if span > 0 else np.full(len(held_levels), 0.5)
    base = -cfg.easiest_logit + x * (cfg.easiest_logit - cfg.hardest_logit)
    nodes, weights = np.polynomial.hermite_e.hermegauss(32)
    logits = (world.ability[world.heldout_skill] - base)[:, None] - cfg.prompt_noise * nodes[None, :]
    return expit(logits) @ (weights / weights.sum())


def embedding_fit_rates(train_emb: np.ndarray, train_rates: np.ndarray, held_emb: np.ndarray,
                        seed: int, hidden: int = 64, steps: int = 500) -> np.ndarray:
    """Held-out predictions of an MLP (one hidden layer) fitted by full-batch Adam to the true
    rates of every training prompt: how well the embeddings alone can rank unseen prompts."""
    x = torch.from_numpy(np.asarray(train_emb, np.float32))
    y = torch.from_numpy(np.asarray(train_rates, np.float32))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        held = torch.from_numpy(np.asarray(held_emb, np.float32))
        return torch.sigmoid(net(held).squeeze(-1)).numpy().astype(np.float64)


def calibrated(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The true rates re-assigned in the order of the predictions: ranking kept, values exact."""
    return np.sort(truth)[np.argsort(np.argsort(pred, kind="stable"), kind="stable")]


def curve(pred, truth, budgets, method) -> list[float]:
    src, how = (truth, "greedy") if method == "oracle" else (pred, method)
    return [expected_pass_at_k(truth, allocate(src, int(b), how)) for b in budgets]


def mean_sd(values) -> tuple[float, float]:
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    if np.all(np.isnan(arr)):
        return float("nan"), float("nan")
    return float(np.nanmean(arr)), float(np.nanstd(arr))


def median_saving(values) -> float | None:
    """Median over seeds, a seed that never matches uniform counting as the worst; None if the
    median seed never matches."""
    arr = np.array([-np.inf if v is None else v for v in values], dtype=float)
    med = float(np.sort(arr)[(len(arr) - 1) // 2]) if len(arr) % 2 else float(np.median(arr))
    return None if not np.isfinite(med) else med


def summarise(runs: list[dict]) -> dict:
    """Mean and sd over seeds; a saving never reached within the search range is left out of the
    mean and counted in ``unmatched_seeds``."""
    nb = len(runs[0]["budgets"])
    summary: dict = {"methods": {}, "savings": {}}
    for m in ALL + tuple(CALIBRATED) + tuple(DIAGNOSTICS):
        summary["methods"][m] = {
            key: [mean_sd([r["methods"][m][key][j] for r in runs]) for j in range(nb)]
            for key in ("expected_pass_at_k", "sampled_pass_at_k", "predicted_pass_at_k",
                        "max_per_prompt")}
        if m != "uniform":
            summary["savings"][m] = [
                {"saving": mean_sd([r["savings"][m][j]["saving"] for r in runs]),
                 "budget_to_match": mean_sd([r["savings"][m][j]["budget_to_match"] for r in runs]),
                 "median": median_saving([r["savings"][m][j]["saving"] for r in runs]),
                 "per_seed": [r["savings"][m][j]["saving"] for r in runs],
                 "unmatched_seeds": sum(r["savings"][m][j]["saving"] is None for r in runs)}
                for j in range(nb)]
    summary["prediction"] = {k: mean_sd([r["prediction"][k] for r in runs])
                             for k in runs[0]["prediction"]}
    summary["ece_median"] = {k: float(np.median([r["prediction"][k] for r in runs]))
                             for k in ("ece_raw", "ece_calibrated")}
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--checkpoints", default="50,100",
                   help="earlier training steps to repeat the comparison at (the last step always is)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--per-prompt", default="2,4,8,16", help="average samples per prompt to compare at")
    p.add_argument("--embedder", default="wordllama",
                   help="wordllama, hf:smollm2 (SmolLM2-135M's hidden states), hf:<checkpoint>, ...")
    p.add_argument("--out", default="benchmarks/results/allocation_world")
    args = p.parse_args()
    torch.set_num_threads(1)  # the PPM is tiny: extra threads only add contention
    t0 = time.perf_counter()
    per_prompt = [int(x) for x in args.per_prompt.split(",")]
    checkpoints = sorted({int(x) for x in args.checkpoints.split(",") if x.strip()} | {args.steps})
    checkpoints = [c for c in checkpoints if 1 <= c <= args.steps]
    from rollwise.llm.models import resolve_embedder

    embedder = resolve_embedder(args.embedder)  # hf:smollm2 -> the local checkpoint
    pool, train, make_world = build_world(embedder=embedder, config=WorldConfig())
    _, held, _ = world_prompt_sets()
    assert list(train.ids) == list(pool.ids)
    held_emb = embed_texts(held.texts, embedder)
    n = len(held.texts)
    budgets = [k * n for k in per_prompt]
    dense = np.unique(np.geomspace(n, max(budgets), 40).round().astype(int))
    settings = RunSettings(steps=args.steps, batch_size=args.batch_size)
    settings.validate(len(pool))
    runs: dict[int, list[dict]] = {c: [] for c in checkpoints}

    for seed in range(args.seeds):
        def evaluate(step, sel, world, seed=seed):
            truth = world.heldout_gamma()
            pred = sel.predict_embeddings(held_emb)
            res = compare_allocations(pred, truth, budgets, seed=seed, methods=METHODS)
            cal = sel.calibration()
            cal_pred = cal.mean(pred)
            res["prediction"] = {
                "ece_raw": expected_calibration_error(pred, truth),
                "ece_calibrated": expected_calibration_error(cal_pred, truth),
                "spearman": spearman(pred, truth),
                "mean_abs_error": float(np.mean(np.abs(pred - truth))),
                "mean_predicted": float(pred.mean()),
                "mean_true": float(truth.mean()),
                "predicted_below_0.01_true_above_0.1": int(np.sum((pred < 0.01) & (truth > 0.1))),
            }
            res["calibration"] = {"fitted": cal.as_dict(),
                                  "reliability_raw": reliability_curve(pred, truth),
                                  "reliability_calibrated": reliability_curve(cal_pred, truth)}
            for name, extra_kw in (("greedy-calibrated", {}),
                                   ("greedy-beta", {"concentration": cal.concentration}),
                                   ("greedy-beta-contaminated", {"concentration": cal.concentration,
                                                                 "contamination": cal.contamination}),
                                   ("greedy-beta-guarded", {"concentration": cal.concentration,
                                                            "uniform_share": GUARD_SHARE})):
                extra = compare_allocations(cal_pred, truth, budgets, seed=seed, methods=("greedy",),
                                            oracle=False, **extra_kw)
                res["methods"][name] = extra["methods"]["greedy"]
                res["savings"][name] = extra["savings"]["greedy"]
            text_only = skill_level_rates(world, train.level, held.level)
            fit = embedding_fit_rates(pool.embeddings, world.gamma(), held_emb, seed)
            for name, diag in (("greedy-perfect-calibration", calibrated(pred, truth)),
                               ("greedy-embedding-fit", calibrated(fit, truth)),
                               ("greedy-skill-level", text_only)):
                extra = compare_allocations(diag, truth, budgets, seed=seed, methods=("greedy",),
                                            oracle=False)
                res["methods"][name] = extra["methods"]["greedy"]
                res["savings"][name] = extra["savings"]["greedy"]
                res["prediction"][f"spearman_{name}"] = spearman(diag, truth)
            if step == args.steps:
                res["curves"] = {m: curve(pred, truth, dense, m) for m in ALL}
                res["curves"]["greedy-beta"] = [
                    expected_pass_at_k(truth, allocate(cal_pred, int(b), "greedy",
                                                       concentration=cal.concentration))
                    for b in dense]
                res["curves"]["greedy-skill-level"] = curve(text_only, truth, dense, "greedy")
            runs[step].append(res)
            sv = {m: res["savings"][m][1]["saving"] for m in ("greedy", PRODUCT, "oracle")}
            print(f"seed {seed} step {step}: ECE {res['prediction']['ece_raw']:.3f} -> "
                  f"{res['prediction']['ece_calibrated']:.3f} calibrated, "
                  f"Spearman {res['prediction']['spearman']:.2f}, held-out "
                  f"mean rate {truth.mean():.3f}; saving at {per_prompt[1]}/prompt: "
                  + ", ".join(f"{m} {v if v is None else round(v, 3)}" for m, v in sv.items()),
                  flush=True)

        train_gps(pool, make_world, settings, seed, set(checkpoints), evaluate)

    summaries = {c: summarise(runs[c]) for c in checkpoints}
    final = summaries[args.steps]
    config = {"world": WorldConfig().as_dict(), "pool_size": len(pool), "heldout_prompts": n,
              "embedder": args.embedder, "steps": args.steps, "checkpoints": checkpoints,
              "batch_size": args.batch_size, "seeds": list(range(args.seeds)),
              "per_prompt": per_prompt, "budgets": budgets,
              "window_quantiles": runs[args.steps][0]["quantiles"],
              "min_per_prompt": runs[args.steps][0]["min_per_prompt"],
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    position = {k: j for j, k in enumerate(per_prompt)}
    headline = {  # the results' summary, read back by tools: exactly these keys
        "ece_heldout": final["ece_median"]["ece_calibrated"],
        "greedy_saving": {str(k): final["savings"][PRODUCT][position[k]]["median"]
                          for k in (2, 4, 8) if k in position},
        "true_rate_saving": {str(k): final["savings"]["oracle"][position[k]]["median"]
                             for k in (2, 4, 8) if k in position},
    }
    atomic_write_json(out.with_suffix(".json"), {
        "config": config, "summary": headline, "final": final,
        "by_step": {str(c): summaries[c] for c in checkpoints},
        "dense_budgets": dense.tolist(), "per_seed": {str(c): runs[c] for c in checkpoints}})
    text = report(summaries, config, runs[args.steps])
    atomic_write_report(out.with_suffix(".md"), text)
    plot(final, runs[args.steps], dense, n, per_prompt, out.with_suffix(".png"))
    print(text)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, {out.with_suffix('.png')} "
          f"in {config['wall_seconds']:.0f} s")


def _pm(ms: tuple[float, float], spec: str = ".3f") -> str:
    return "n/a" if np.isnan(ms[0]) else f"{ms[0]:{spec}} ± {ms[1]:{spec}}"


def _pct(ms: tuple[float, float]) -> str:
    return "n/a" if np.isnan(ms[0]) else f"{100 * ms[0]:.1f}% ± {100 * ms[1]:.1f}"


def _saving_cell(s: dict) -> str:
    """Median over seeds (a seed that never matches counts as the worst) and the range."""
    vals = [v for v in s["per_seed"] if v is not None]
    med = "never" if s["median"] is None else f"{100 * s['median']:.1f}%"
    if not vals:
        return f"{med} (all seeds never)"
    lo, hi = f"{100 * min(vals):.0f}%", f"{100 * max(vals):.0f}%"
    span = f"{lo} to {hi}" if not s["unmatched_seeds"] else f"never to {hi}"
    never = f", {s['unmatched_seeds']} never" if s["unmatched_seeds"] else ""
    return f"{med} ({span}{never})"


def report(summaries: dict, config: dict, runs_final: list[dict]) -> str:
    final = summaries[config["steps"]]
    pr = final["prediction"]
    per_prompt = config["per_prompt"]
    lines = [
        "# Test-time allocation on the simulated world",
        "",
        f"GPS trained {config['steps']} steps (batch {config['batch_size']}, k = 8) on the default "
        f"reasoning-gym world ({config['pool_size']} prompts), then predicted the success rates of "
        f"the {config['heldout_prompts']} held-out prompts it never saw; {len(config['seeds'])} seeds, "
        "mean ± sd over seeds unless stated. Everything is scored against the world's true "
        "held-out rates at that moment. Generated by `benchmarks/allocation_world.py`.",
        "",
        f"Prediction quality on the held-out prompts: Spearman {_pm(pr['spearman'], '.2f')}, mean "
        f"absolute error {_pm(pr['mean_abs_error'])}, mean predicted rate {_pm(pr['mean_predicted'])} "
        f"vs true {_pm(pr['mean_true'])}; prompts predicted below 0.01 whose true rate is above 0.1: "
        f"{_pm(pr['predicted_below_0.01_true_above_0.1'], '.1f')}.",
        "",
        "## Calibration of the held-out predictions",
        "",
        "Expected calibration error (10 equal-width bins of the predicted rate, prompt-weighted "
        "|mean predicted - mean true|), median over seeds: raw PPM "
        f"{final['ece_median']['ece_raw']:.3f}, calibrated {final['ece_median']['ece_calibrated']:.3f} "
        "(the selector's beta-binomial calibration, fitted during training on the groups of its "
        "last 64 observations against the predictions made before them, validated against the "
        "identity on the newest of them; its contamination on the groups among them that were "
        "their prompts' first observations; the held-out prompts are never used). Per seed "
        "(raw -> calibrated; fitted slope, bias, concentration, contamination):",
        "",
    ]
    for r, seed in zip(runs_final, config["seeds"], strict=True):
        c = r["calibration"]["fitted"]
        lines.append(f"* seed {seed}: ECE {r['prediction']['ece_raw']:.3f} -> "
                     f"{r['prediction']['ece_calibrated']:.3f}; slope {c['slope']:.2f}, bias "
                     f"{c['bias']:.2f}, concentration {c['concentration']:.1f}, contamination "
                     f"{c.get('contamination', 0.0):.3f} ({c['groups']} groups)")
    lines += [
        "",
        "Greedy allocation on the calibrated predictions (savings as in the next section, median "
        "(range) over seeds):",
        "",
    ]
    lines += [f"* `{name}`: {text}." for name, text in CALIBRATED.items()]
    lines += ["", "| samples/prompt | greedy (raw) | " + " | ".join(CALIBRATED) + " | oracle |",
              "|---|---|" + "---|" * len(CALIBRATED) + "---|"]
    for j, k in enumerate(per_prompt):
        lines.append(f"| {k} | " + " | ".join(_saving_cell(final["savings"][m][j]) for m in
                                              ("greedy", *CALIBRATED, "oracle")) + " |")
    lines += [
        "",
        "## Samples saved at equal pass@k",
        "",
        "Smallest total budget at which a method reaches uniform's expected pass@k (true rates) at "
        "the budget of the row, found by bisection; saving = 1 - that budget / uniform's budget "
        "(negative: the method needs more samples than uniform). `oracle` is greedy on the true "
        "rates (the upper bound). Cells: median over seeds (range); \"never\": the method does "
        "not reach uniform's pass@k within 64 samples per prompt, counted as the worst outcome.",
        "",
        "| samples/prompt | uniform pass@k | greedy saving | window saving | oracle saving |",
        "|---|---|---|---|---|",
    ]
    for j, k in enumerate(per_prompt):
        u = final["methods"]["uniform"]["expected_pass_at_k"][j]
        lines.append(f"| {k} | {_pm(u)} | "
                     + " | ".join(_saving_cell(final["savings"][m][j])
                                  for m in ("greedy", "window", "oracle")) + " |")
    lines += ["", "Per seed (saving; `-` = never):", "",
              "| samples/prompt | method | " + " | ".join(f"seed {s}" for s in config["seeds"]) + " |",
              "|---|---|" + "---|" * len(config["seeds"])]
    for j, k in enumerate(per_prompt):
        for m in ("greedy", "window", "oracle"):
            vals = final["savings"][m][j]["per_seed"]
            lines.append(f"| {k} | {m} | " + " | ".join(
                "-" if v is None else f"{100 * v:.1f}%" for v in vals) + " |")
    lines += [
        "",
        "## Diagnostics: ranking or calibration?",
        "",
        "Greedy allocation driven by other predictions of the same held-out prompts (savings as "
        "above, median (range) over seeds):",
        "",
    ]
    lines += [f"* `{name}`: {text}; Spearman with the truth "
              f"{_pm(pr['spearman_' + name], '.2f')}." for name, text in DIAGNOSTICS.items()]
    lines += ["", "| samples/prompt | greedy (GPS) | " + " | ".join(f"{d}" for d in DIAGNOSTICS)
              + " | oracle |", "|---|---|" + "---|" * len(DIAGNOSTICS) + "---|"]
    for j, k in enumerate(per_prompt):
        lines.append(f"| {k} | " + " | ".join(_saving_cell(final["savings"][m][j]) for m in
                                              ("greedy", *DIAGNOSTICS, "oracle")) + " |")
    lines += [
        "",
        "## pass@k at equal budgets",
        "",
        "Expected: mean of 1 - (1 - true rate)^n. Sampled: one seeded Bernoulli draw of the "
        "allocated samples (the same draws for every method). Predicted: what the allocator "
        "believed (expected pass@k under the predictions).",
        "",
        "| samples/prompt | method | expected pass@k | sampled pass@k | predicted pass@k "
        "| max samples on one prompt |",
        "|---|---|---|---|---|---|",
    ]
    for j, k in enumerate(per_prompt):
        for m in ALL:
            r = final["methods"][m]
            lines.append(f"| {k} | {m} | {_pm(r['expected_pass_at_k'][j])} | "
                         f"{_pm(r['sampled_pass_at_k'][j])} | "
                         f"{'n/a' if m == 'oracle' else _pm(r['predicted_pass_at_k'][j])} | "
                         f"{r['max_per_prompt'][j][0]:.0f} |")
    if len(summaries) > 1:
        lines += ["", "## At other moments of training", "",
                  "The same comparison with the selector and world of earlier steps.", "",
                  "| step | true mean rate | Spearman | samples/prompt | uniform pass@k | greedy saving "
                  "| window saving | oracle saving |",
                  "|---|---|---|---|---|---|---|---|"]
        for step, sm in summaries.items():
            for j, k in enumerate(per_prompt):
                u = sm["methods"]["uniform"]["expected_pass_at_k"][j]
                lines.append(
                    f"| {step} | {_pm(sm['prediction']['mean_true'])} | "
                    f"{_pm(sm['prediction']['spearman'], '.2f')} | {k} | {_pm(u)} | "
                    + " | ".join(_saving_cell(sm["savings"][m][j])
                                 for m in ("greedy", "window", "oracle")) + " |")
    q = config["window_quantiles"]
    lines += ["", f"Window quantiles ({q[0]}, {q[1]}); every prompt gets at least "
              f"{config['min_per_prompt']} sample. Wall time {config['wall_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def plot(summary: dict, runs: list, dense: np.ndarray, n: int, per_prompt: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11.0, 4.4), gridspec_kw={"width_ratios": [1.5, 1]})
    for m in ALL + (PRODUCT,):
        mean = np.mean([r["curves"][m] for r in runs], axis=0)
        ax.plot(dense / n, mean, color=COLOURS[m], lw=1.4, ls="--" if m == "oracle" else "-",
                label=f"{m} (expected)")
        sampled = [ms[0] for ms in summary["methods"][m]["sampled_pass_at_k"]]
        ax.plot(per_prompt, sampled, "o", color=COLOURS[m], ms=4)
    mean = np.mean([r["curves"]["greedy-skill-level"] for r in runs], axis=0)
    ax.plot(dense / n, mean, color="C3", lw=1.0, ls=":", label="greedy on skill+level rates (diagnostic)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per held-out prompt (total / number of prompts)")
    ax.set_ylabel("pass@k on held-out prompts")
    ax.set_title("Allocation from GPS predictions (dots: sampled pass@k)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    # reliability diagram of the held-out predictions, every seed pooled by bin
    for key, colour, label in (("reliability_raw", "C3", "raw PPM"),
                               ("reliability_calibrated", "C1", "calibrated")):
        count = np.sum([r["calibration"][key]["count"] for r in runs], axis=0)
        pred = np.nansum([np.nan_to_num(np.array(r["calibration"][key]["mean_predicted"]))
                          * np.array(r["calibration"][key]["count"]) for r in runs], axis=0)
        true = np.nansum([np.nan_to_num(np.array(r["calibration"][key]["mean_true"]))
                          * np.array(r["calibration"][key]["count"]) for r in runs], axis=0)
        filled = count > 0
        rel.plot(pred[filled] / count[filled], true[filled] / count[filled], "-", color=colour,
                 label=label)
        rel.scatter(pred[filled] / count[filled], true[filled] / count[filled], color=colour,
                    s=8 + 60 * count[filled] / count.max())
    rel.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    rel.set_xlabel("mean predicted rate (bin)")
    rel.set_ylabel("mean true rate (bin)")
    rel.set_title("Calibration of held-out predictions", fontsize=10)
    rel.grid(alpha=0.3)
    rel.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
