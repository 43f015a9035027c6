"""The mixed-family world: does a selector write a task family off on early evidence?

The mixed task's 900 prompts (letter counting and simple equations, three settings each; built by
``mixed_world.py``) in a world that starts at SmolLM2-135M's measured base rates per setting
(0.012-0.078: most groups all wrong), one skill per family, little transfer between families,
at the real run's sizes (8 prompts x 4 rollouts a step). On the real model GPS's guarded default
spent about 85% of its selections on one family in both of two seeds; this world checks whether a
selector does the same here, and whether the neglect is justified: a family whose recent groups
(the last ``--recent`` steps) all came back with equal rewards gives no signal.

Per arm (same seeds per arm): final held-out accuracy, per family; ``min_family_share_ratio`` per
seed (the smallest, over families, of the family's share of the arm's selections divided by its
share of the pool); the neglected family's share of mixed groups in the last ``--recent`` steps.

    python benchmarks/mixed_family_world.py --seeds 8

Writes OUT.json (``summary``: per arm ``final_heldout`` and ``min_family_share_ratio``, one per
seed), OUT.md; ``--merge`` keeps the arms already in OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from mixed_world import mixed_world

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.sim import RunSettings, run_one

ARMS = ("uniform,mopps,gps,gps-uncentred,gps-guarded,gps-unguarded,gps-paper,gps-adaptive-rest,"
        "gps-trust,gps-regime,oracle")
FAMILIES = ("letter_counting", "simple_equations")


def run_arm(arm: str, seeds: int, args, pool, family, make_world) -> dict:
    settings = RunSettings(steps=args.steps, batch_size=args.batch_size)
    pool_share = np.bincount(family, minlength=2) / family.size
    rec: dict[str, list] = {k: [] for k in ("final_accuracy", "accuracy0", "min_family_share_ratio",
                                            "family_share", "neglected_recent_mixed",
                                            "predicted_share", "rollouts")}
    for seed in range(seeds):
        chosen: list[np.ndarray] = []
        groups: list[np.ndarray] = []
        log = run_one(arm, pool, make_world, settings, seed, chosen=chosen, rewards=groups)
        picks = np.concatenate(chosen)
        share = np.bincount(family[picks], minlength=2) / picks.size
        ratio = share / pool_share
        worst = int(np.argmin(ratio))
        recent = [(c, g) for c, g in zip(chosen[-args.recent:], groups[-args.recent:], strict=True)]
        mixed = [float(np.ptp(g[i]) > 0) for c, g in recent for i in range(len(c))
                 if family[c[i]] == worst]
        rec["final_accuracy"].append(log["accuracy"][-1])
        rec["accuracy0"].append(log["accuracy0"][0])
        rec["min_family_share_ratio"].append(float(ratio.min()))
        rec["family_share"].append(share.tolist())
        rec["neglected_recent_mixed"].append(float(np.mean(mixed)) if mixed else None)
        rec["predicted_share"].append(float(np.nanmean(log["predicted_share"]))
                                      if not np.isnan(log["predicted_share"]).all() else None)
        rec["rollouts"].append(log["rollouts"][-1])
    return rec


def markdown(data: dict) -> str:
    a = data["args"]
    lines = ["# Mixed-family world\n",
             f"{a['seeds']} seeds x {a['steps']} steps x {a['batch_size']} prompts x {a['k']} "
             "rollouts, the mixed task's 900 prompts at SmolLM2-135M's base rates per setting. "
             f"Written by `benchmarks/mixed_family_world.py` in {data['seconds']:.0f} s.\n",
             "| strategy | held-out end ± s.e. | min family share ratio: mean (worst seed) | "
             "letter counting / equations share of selections | neglected family's mixed groups, "
             f"last {a['recent']} steps | share chosen by prediction |",
             "|---|---|---|---|---|---|"]
    for arm, r in data["runs"].items():
        acc = np.asarray(r["final_accuracy"])
        ratio = np.asarray(r["min_family_share_ratio"])
        share = np.mean(np.asarray(r["family_share"]), axis=0)
        mixed = [m for m in r["neglected_recent_mixed"] if m is not None]
        pshare = [s for s in r["predicted_share"] if s is not None]
        lines.append(f"| {arm} | {acc.mean():.3f} ± {acc.std(ddof=1) / np.sqrt(acc.size):.3f} | "
                     f"{ratio.mean():.2f} ({ratio.min():.2f}) | {share[0]:.2f} / {share[1]:.2f} | "
                     f"{(np.mean(mixed) if mixed else float('nan')):.2f} | "
                     f"{(f'{np.mean(pshare):.2f}' if pshare else 'n/a')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=ARMS)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--recent", type=int, default=10, help="steps that count as recent")
    p.add_argument("--embedder", default="wordllama")
    p.add_argument("--out", default="benchmarks/results/mixed_family_world")
    p.add_argument("--merge", action="store_true", help="keep the arms already in OUT.json")
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    data = {"runs": {}}
    if args.merge and out.with_suffix(".json").exists():
        data = json.loads(out.with_suffix(".json").read_text())
    data["args"] = {k: v for k, v in vars(args).items() if k != "merge"}
    from rollwise.llm.models import resolve_embedder

    pool, family, cfg, make_world = mixed_world(args.k, embedder=resolve_embedder(args.embedder))
    data["world"] = cfg.as_dict()
    for arm in args.strategies.split(","):
        data["runs"][arm] = run_arm(arm, args.seeds, args, pool, family, make_world)
        r = data["runs"][arm]
        print(f"{arm}: {np.mean(r['final_accuracy']):.3f}, min share ratio "
              f"{np.mean(r['min_family_share_ratio']):.2f}", flush=True)
        data["seconds"] = time.perf_counter() - t0
        data["summary"] = {a: {"final_heldout": v["final_accuracy"],
                               "min_family_share_ratio": v["min_family_share_ratio"]}
                           for a, v in data["runs"].items()}
        atomic_write_json(out.with_suffix(".json"), data)
    atomic_write_report(out.with_suffix(".md"), markdown(data))


if __name__ == "__main__":
    main()
