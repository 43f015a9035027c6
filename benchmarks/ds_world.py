"""Predictive dynamic sampling in the simulated world: the same full batches for fewer rollouts?

Every arm runs DAPO's dynamic sampling: each step keeps rolling out prompts until its batch holds
``batch_size`` informative groups (rewards not all equal; at most 30 rounds), and pays every
rollout, the dropped groups included. The arms differ in which prompts each round rolls out and
how many:

* ``ds``: uniform prompts, DAPO's full generation batch every round (the baseline);
* ``gps+ds``, ``mopps+ds``, ``oracle+ds``: each round chosen by the selector after it has
  observed the previous round, valued by the chance of an informative group and sized from those
  chances so that the batch fills with probability 0.9 (the oracle knows the true rates: the
  limit of this sizing);
* ``greso+ds``: GRESO's skipping of prompts whose recent groups were all equal, rounds sized from
  the previous step's keep rate, as its authors do.

Worlds (each to ``OUT_<world>.json``, ``.md`` and ``.png``, written after every seed):

* ``default``: the default reasoning-gym world of ``rollwise bench`` (1,680 train prompts, 150
  steps of 32 prompts x 8 rollouts);
* ``math``: the MATH training problems as the pool and MATH-500 held out (``--math-pool``,
  ``--math-heldout``; skipped with a message without them), as ``rollwise bench --pool
  --heldout`` builds it;
* ``small_pool``: the arithmetic task's 400 train prompts at SmolLM2-135M's base rates (the world
  of ``small_pool_world.py``: 8 prompts x 8 rollouts, memorisation on), run for enough steps that
  the pool is passed over several times, so that GRESO's per-prompt histories have data.

Each JSON holds a top-level ``summary``: per arm ``{"rollouts_to_ds_final": [one per seed]}``,
the cumulative rollouts at which the arm's held-out accuracy first reaches the ``ds`` arm's final
held-out accuracy of the same seed (linear interpolation between steps; null where never
reached). Beside it: per arm and seed the curves, final accuracy, total rollouts and the dynamic
sampling per step (rounds, keep rates, short batches), the settings and the seconds taken.

    python benchmarks/ds_world.py --math-pool DIR/train_math.json --math-heldout DIR/test_math.json
    python benchmarks/ds_world.py --worlds default --seeds 1 --default-steps 10   # a smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from arithmetic_world import arithmetic_world
from provenance import provenance
from scipy import stats

from rollwise._io import atomic_write, atomic_write_json, atomic_write_report
from rollwise.sim import RunSettings, WorldConfig, build_world, run_one
from rollwise.sim.report import strategy_color
from rollwise.sim.runner import rollouts_to_reach

ARMS = "ds,gps+ds,mopps+ds,greso+ds,oracle+ds"
COMPARED = ("ds", "greso+ds", "mopps+ds")  # gps+ds paired against each
TARGET_RATIO = 0.5  # the project's target: gps+ds reaches ds's final with <= 0.5x ds's rollouts


def worlds(args: argparse.Namespace) -> dict:
    """name -> a function building (pool, make_world, run settings, a line describing it)."""
    def default():
        pool, _, make_world = build_world(config=WorldConfig(k=args.k))
        return pool, make_world, RunSettings(steps=args.default_steps, batch_size=32), (
            f"the default reasoning-gym world of `rollwise bench` ({len(pool):,} train prompts)")

    def math_world():
        pool, _, make_world = build_world(args.math_pool, args.math_heldout,
                                          config=WorldConfig(k=args.k))
        return pool, make_world, RunSettings(steps=args.math_steps, batch_size=32), (
            f"MATH: {len(pool):,} training problems as the pool (skill = subject, level = MATH "
            "level), MATH-500 held out")

    def small_pool():
        pool, _, cfg, make_world = arithmetic_world(args.k, args.easiest_rate, args.memorisation)
        return pool, make_world, RunSettings(steps=args.small_steps, batch_size=args.small_batch), (
            f"the arithmetic task's {len(pool)} train prompts at SmolLM2-135M's base rates "
            f"(easiest level {args.easiest_rate}), memorisation {args.memorisation}")

    out = {"default": default, "small_pool": small_pool}
    if args.math_pool and args.math_heldout:
        missing = [f for f in (args.math_pool, args.math_heldout) if not Path(f).exists()]
        if missing:
            print(f"MATH world skipped: {', '.join(map(str, missing))} not found", flush=True)
        else:
            out["math"] = math_world
    else:
        print("MATH world skipped: pass --math-pool (train_math.json) and --math-heldout "
              "(test_math.json)", flush=True)
    return out


def recorded(args: argparse.Namespace) -> tuple[dict, dict]:
    """The provenance and the arguments as recorded: data files by their names only (where the
    data lives differs from machine to machine)."""
    run, kept = provenance(), dict(vars(args))
    for key in ("math_pool", "math_heldout"):
        if kept[key]:
            name = Path(kept[key]).name
            run["command"] = run["command"].replace(kept[key], name)
            kept[key] = name
    return run, kept


def _nan_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _r(values, digits: int = 5) -> list:
    return [_nan_none(round(float(v), digits)) for v in values]


def seed_record(log: dict, k: int, batch_size: int) -> dict:
    """What one run keeps: the curve from the start (0 rollouts) and its dynamic sampling."""
    rollouts = np.concatenate([[0.0], np.asarray(log["rollouts"], dtype=float)])
    accuracy = np.concatenate([log["accuracy0"], log["accuracy"]]).astype(float)
    prompts = np.diff(rollouts) / k
    informative = np.asarray(log["ds_kept"], float) + np.asarray(log["ds_surplus"], float)
    predicted = np.asarray(log["ds_predicted_keep_rate"], float)
    realised = np.asarray(log["ds_realised_keep_rate"], float)
    with np.errstate(invalid="ignore"):
        pooled_pred = (float(np.sum(predicted * prompts) / prompts.sum())
                       if np.isfinite(predicted).all() else float("nan"))
    return {
        "rollouts": rollouts.tolist(), "accuracy": accuracy.tolist(),
        "final_accuracy": float(accuracy[-1]), "total_rollouts": float(rollouts[-1]),
        "mean_rounds": float(np.mean(log["ds_rounds"])),
        "mean_keep_rate": _nan_none(float(np.nanmean(realised))),
        "mean_predicted_keep_rate": _nan_none(float(np.nanmean(predicted))
                                              if np.isfinite(predicted).any() else float("nan")),
        "pooled_keep_rate": float(informative.sum() / prompts.sum()),
        "pooled_predicted_keep_rate": _nan_none(pooled_pred),
        "mean_filled": float(np.mean(log["ds_filled"])),
        "mean_kept": float(np.mean(log["ds_kept"])),
        "mean_surplus": float(np.mean(log["ds_surplus"])),
        "short_steps": int(np.sum(np.asarray(log["ds_kept"]) < batch_size)),
        "per_step": {"rounds": _r(log["ds_rounds"], 0), "kept": _r(log["ds_kept"], 0),
                     "realised_keep_rate": _r(realised, 4),
                     "predicted_keep_rate": _r(predicted, 4)},
    }


def summarise(records: dict) -> dict:
    """Per arm, per seed: rollouts at which the arm first reaches ds's final of that seed."""
    targets = [r["final_accuracy"] for r in records["ds"]]
    out = {}
    for arm, recs in records.items():
        reach = [rollouts_to_reach(np.asarray(r["rollouts"]), np.asarray(r["accuracy"], float), t)
                 for r, t in zip(recs, targets, strict=True)]
        out[arm] = {"rollouts_to_ds_final": [_nan_none(x) for x in reach]}
    return out


def _mean_se(x) -> tuple[float, float]:
    a = np.asarray([v for v in x if v is not None and math.isfinite(v)], dtype=float)
    if not a.size:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")


def _ms(x, spec: str = ".3f") -> str:
    m, s = _mean_se(x)
    if m != m:
        return "n/a"
    return f"{m:{spec}}" + ("" if s != s else f" ± {s:{spec}}")


def arm_numbers(records: dict, summary: dict) -> dict:
    """Per arm: the per-seed numbers the table shows (ratios over ds's total rollouts)."""
    ds_total = [r["total_rollouts"] for r in records["ds"]]
    ds_reach = summary["ds"]["rollouts_to_ds_final"]
    rows = {}
    for arm, recs in records.items():
        reach = summary[arm]["rollouts_to_ds_final"]
        rows[arm] = {
            "final": [r["final_accuracy"] for r in recs],
            "total": [r["total_rollouts"] for r in recs],
            "total_vs_ds": [r["total_rollouts"] / d for r, d in zip(recs, ds_total, strict=True)],
            "reach": reach,
            "reach_vs_ds_total": [None if x is None else x / d
                                  for x, d in zip(reach, ds_total, strict=True)],
            "reach_vs_ds_reach": [None if x is None or d is None or d <= 0 else x / d
                                  for x, d in zip(reach, ds_reach, strict=True)],
            "rounds": [r["mean_rounds"] for r in recs],
            "keep": [r["mean_keep_rate"] for r in recs],
            "predicted": [r["mean_predicted_keep_rate"] for r in recs],
            "filled": [r["mean_filled"] for r in recs],
            "short": [r["short_steps"] for r in recs],
            "surplus": [r["mean_surplus"] for r in recs],
            # the arm's final held-out accuracy less ds's at the arm's total rollouts (None where
            # the arm spent more than ds): the comparison where the arm's run ends first
            "vs_ds_same_rollouts": [
                r["final_accuracy"] - float(np.interp(r["total_rollouts"], d["rollouts"],
                                                      d["accuracy"]))
                if r["total_rollouts"] <= d["total_rollouts"] else None
                for r, d in zip(recs, records["ds"], strict=True)],
        }
    return rows


def paired(summary: dict, a: str, b: str) -> dict:
    """Paired comparison of rollouts to ds's final, a against b, over the seeds both reach."""
    xa, xb = summary[a]["rollouts_to_ds_final"], summary[b]["rollouts_to_ds_final"]
    both = [(x, y) for x, y in zip(xa, xb, strict=True) if x is not None and y is not None]
    out: dict = {"a": a, "b": b, "seeds_both_reach": len(both), "seeds": len(xa)}
    if len(both) < 2:
        return out
    x, y = np.array(both).T
    diff = x - y
    out.update(mean_a=float(x.mean()), mean_b=float(y.mean()), mean_diff=float(diff.mean()),
               ratio_of_means=float(x.mean() / y.mean()), a_lower=int(np.sum(diff < 0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ttest_rel_p"] = _nan_none(float(stats.ttest_rel(x, y).pvalue))
    try:
        out["wilcoxon_p"] = float(stats.wilcoxon(x, y).pvalue)
    except ValueError:  # every difference zero
        out["wilcoxon_p"] = 1.0
    return out


def _fmt_p(p) -> str:
    return "n/a" if p is None or p != p else f"{p:.3g}"


def report(name: str, desc: str, settings: RunSettings, k: int, selectable: int,
           seeds_done: list[int], seeds_wanted: int, records: dict, summary: dict,
           comparisons: list[dict], seconds: float, run: dict) -> str:
    rows = arm_numbers(records, summary)
    n = len(seeds_done)
    passes = [np.mean([r["total_rollouts"] / k / selectable for r in recs])
              for recs in records.values()]
    filled = float(np.mean([f for r in rows.values() for f in r["filled"]]))
    lines = [
        f"# Predictive dynamic sampling in the simulated world: {name}", "",
        f"{desc}; {settings.steps} steps x {settings.batch_size} informative groups x {k} "
        f"rollouts, at most {settings.ds_max_rounds} rounds a step; seeds "
        f"{', '.join(map(str, seeds_done))}" + (f" (of {seeds_wanted}: a partial run)"
                                                if n < seeds_wanted else "")
        + f". The arms rolled out the {selectable:,} selectable prompts {min(passes):.1f} to "
        f"{max(passes):.1f} times each (seed means). Written by `{run['command']}` at commit "
        f"{run['commit']} in {seconds:.0f} s.", "",
        "Every arm fills each step's batch with informative groups (up to the round limit) and "
        "pays every rollout. Mean ± s.e. over seeds. *rollouts vs ds*: the arm's total over ds's "
        "total, per seed. *to ds's final*: cumulative rollouts at which the arm's held-out "
        "accuracy first reaches ds's final held-out accuracy of the same seed (interpolated), "
        "mean over the seeds that reach it; *x ds* divides it by ds's total rollouts per seed "
        "(what ds spent to get there). Keep rates: informative groups per prompt rolled out, "
        "realised and as the arm predicted it (mean over steps; greso and ds predict none). "
        "*surplus*: informative groups beyond the batch per step, paid for and dropped. "
        "*short steps*: steps whose batch did not fill within the round limit or the pool (such "
        "a step learns from the groups it has; groups completed without a gradient, the log's "
        f"`ds_filled`, average {filled:.1f} a step over all arms). Every run has the same "
        "number of steps, so an arm that spends fewer rollouts per step ends its curve earlier: "
        "*never reaching* ds's final can mean it ran out of steps, not that it needs more "
        "rollouts; *vs ds at its rollouts* is the arm's final held-out accuracy less ds's at "
        "the arm's total rollouts (seeds where the arm spent no more than ds).", "",
        "| arm | final held-out | total rollouts | rollouts vs ds | to ds's final | x ds "
        "| seeds reaching | vs ds at its rollouts | rounds / step | keep rate realised "
        "| predicted | surplus / step | short steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in rows.items():
        hit = sum(x is not None for x in r["reach"])
        lines.append(
            f"| {arm} | {_ms(r['final'])} | {_ms(r['total'], ',.0f')} | {_ms(r['total_vs_ds'])} | "
            f"{_ms(r['reach'], ',.0f')} | {_ms(r['reach_vs_ds_total'])} | {hit}/{n} | "
            f"{_ms(r['vs_ds_same_rollouts'])} | "
            f"{_ms(r['rounds'], '.2f')} | {_ms(r['keep'])} | {_ms(r['predicted'])} | "
            f"{_ms(r['surplus'], '.1f')} | "
            f"{_ms(r['short'], '.1f')} |")
    lines += ["", "Paired over seeds, rollouts to ds's final (seeds where both arms reach it; "
              "two-sided p: `scipy.stats.ttest_rel`, `scipy.stats.wilcoxon`, exact, whose "
              "smallest p with 5 seeds is 0.0625):", "",
              "| comparison | seeds | mean a | mean b | a / b | seeds a lower | t-test p "
              "| Wilcoxon p |", "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        if "mean_a" not in c:
            lines.append(f"| {c['a']} vs {c['b']} | {c['seeds_both_reach']}/{c['seeds']} | "
                         "n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        lines.append(f"| {c['a']} vs {c['b']} | {c['seeds_both_reach']}/{c['seeds']} | "
                     f"{c['mean_a']:,.0f} | {c['mean_b']:,.0f} | {c['ratio_of_means']:.3f} | "
                     f"{c['a_lower']}/{c['seeds_both_reach']} | {_fmt_p(c.get('ttest_rel_p'))} | "
                     f"{_fmt_p(c.get('wilcoxon_p'))} |")
    lines += ["", "Targets (set for the default world; read here as on it):", ""]
    if "gps+ds" in rows:
        g = rows["gps+ds"]
        ratio = [x for x in g["reach_vs_ds_total"] if x is not None]
        hit = len(ratio)
        m = float(np.mean(ratio)) if ratio else float("nan")
        met = hit == n and m <= TARGET_RATIO
        under = sum(x <= TARGET_RATIO for x in ratio)
        lines.append(
            f"* `gps+ds` reaches ds's final with <= {TARGET_RATIO}x ds's rollouts: "
            f"**{'met' if met else 'not met'}** (mean {m:.3f}x over {hit}/{n} seeds reaching; "
            f"{under}/{n} seeds at or under {TARGET_RATIO}x).")
    if "oracle+ds" in rows:
        o = [x for x in rows["oracle+ds"]["reach_vs_ds_total"] if x is not None]
        best = min(((float(np.mean([x for x in r["reach_vs_ds_total"] if x is not None])), a)
                    for a, r in rows.items()
                    if any(x is not None for x in r["reach_vs_ds_total"])), default=(None, None))
        lines.append(
            f"* `oracle+ds` shows the limit: {np.mean(o):.3f}x ds's rollouts over "
            f"{len(o)}/{n} seeds reaching; " + (
                "it is the fewest of any arm." if best[1] == "oracle+ds" else
                f"**not the fewest**: {best[1]} needs {best[0]:.3f}x.") if o else
            "* `oracle+ds` never reaches ds's final.")
    return "\n".join(lines) + "\n"


def plot(name: str, records: dict, path: Path, title: str) -> None:
    """Held-out accuracy against rollouts (seed means step by step, ± 1 s.e. of accuracy) and
    cumulative rollouts against steps, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.6, 1]})
    ds_final = np.mean([r["final_accuracy"] for r in records["ds"]])
    for arm, recs in records.items():
        x = np.mean([r["rollouts"] for r in recs], axis=0)
        y = np.array([r["accuracy"] for r in recs], dtype=float)
        color = strategy_color(arm.removesuffix("+ds") if arm != "ds" else "ds")
        ax.plot(x, y.mean(axis=0), color=color, lw=1.5, label=arm)
        if len(recs) > 1:
            se = y.std(axis=0, ddof=1) / np.sqrt(len(recs))
            ax.fill_between(x, y.mean(axis=0) - se, y.mean(axis=0) + se, color=color, alpha=0.15,
                            lw=0)
        ax2.plot(np.arange(x.size), x, color=color, lw=1.5)
    ax.axhline(ds_final, color="grey", ls="--", lw=0.8, label="ds's final (seed mean)")
    ax.set(xlabel="rollouts (cumulative, dropped groups included)", ylabel="held-out accuracy",
           title="held-out accuracy vs rollouts")
    ax2.set(xlabel="step", ylabel="rollouts (cumulative)", title="rollouts spent")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    ax.legend(fontsize=9, frameon=False, loc="lower right")
    n = len(next(iter(records.values())))
    fig.suptitle(f"{title} ({n} seed{'s' if n > 1 else ''}"
                 + ("; bands ± 1 s.e." if n > 1 else "") + ")")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=ARMS, help="comma-separated; ds must be among them")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    p.add_argument("--worlds", default="default,math,small_pool")
    p.add_argument("--k", type=int, default=8, help="rollouts per prompt")
    p.add_argument("--default-steps", type=int, default=150)
    p.add_argument("--math-steps", type=int, default=150)
    p.add_argument("--math-pool", default=None, help="MATH training problems (train_math.json)")
    p.add_argument("--math-heldout", default=None, help="MATH-500 (test_math.json)")
    p.add_argument("--small-steps", type=int, default=100,
                   help="small-pool world steps (100: every arm rolls out the 360 selectable "
                        "prompts over four times; by then held-out accuracy nears its ceiling)")
    p.add_argument("--small-batch", type=int, default=8)
    p.add_argument("--easiest-rate", type=float, default=0.16)
    p.add_argument("--memorisation", type=float, default=1.0)
    p.add_argument("--out", default="benchmarks/results/ds_world")
    args = p.parse_args()
    arms = args.strategies.split(",")
    if "ds" not in arms:
        p.error("--strategies must include ds (the target is ds's final accuracy)")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    known = worlds(args)
    wanted = [w for w in args.worlds.split(",") if w in known]
    if not wanted:
        p.error(f"--worlds: none of {args.worlds!r} can run; available: {list(known)}")
    out = Path(args.out)
    for name in wanted:
        t0 = time.perf_counter()
        print(f"world {name}", flush=True)
        pool, make_world, settings, desc = known[name]()
        settings.validate(len(pool))
        k = make_world(0).config.k
        records: dict = {arm: [] for arm in arms}
        seeds_done: list[int] = []
        for seed in range(args.seeds):
            for arm in arms:
                t1 = time.perf_counter()
                log = run_one(arm, pool, make_world, settings, seed)
                records[arm].append(seed_record(log, k, settings.batch_size))
                r = records[arm][-1]
                print(f"  seed {seed} {arm}: final {r['final_accuracy']:.3f}, "
                      f"{r['total_rollouts']:,.0f} rollouts, {r['mean_rounds']:.2f} rounds/step, "
                      f"{time.perf_counter() - t1:.0f} s", flush=True)
            seeds_done.append(seed)
            summary = summarise(records)
            comparisons = [paired(summary, "gps+ds", b) for b in COMPARED
                           if b in arms and "gps+ds" in arms]
            seconds = time.perf_counter() - t0
            run, recorded_args = recorded(args)
            base = out.parent / f"{out.name}_{name}"
            atomic_write_json(base.with_suffix(".json"), {
                "summary": summary, "world": name, "description": desc, **run,
                "args": recorded_args, "seconds": seconds, "seeds": seeds_done,
                "settings": {"steps": settings.steps, "batch_size": settings.batch_size, "k": k,
                             "pool_size": len(pool), "probe_fraction": settings.probe_fraction,
                             "ds_max_rounds": settings.ds_max_rounds,
                             "ds_fill_confidence": settings.ds_fill_confidence,
                             "world": make_world(0).config.as_dict()},
                "ds_final": [r["final_accuracy"] for r in records["ds"]],
                "comparisons": comparisons,
                "arms": records})
            selectable = len(pool) - int(round(settings.probe_fraction * len(pool)))
            atomic_write_report(base.with_suffix(".md"), report(
                name, desc, settings, k, selectable, seeds_done, args.seeds, records, summary,
                comparisons, seconds, run))
            plot(name, records, base.with_suffix(".png"),
                 f"Dynamic sampling, {name} world: {settings.steps} steps x "
                 f"{settings.batch_size} x {k}")
            print(f"  seed {seed} done, {seconds:.0f} s; wrote {base}.json/.md/.png", flush=True)


if __name__ == "__main__":
    main()
