"""Per-prompt rollout budgets on the real model: GPS with budgets against GPS without, on SmolLM2.

Reads the SmolLM2 chain-sum runs of ``gps_smollm2.py`` (``benchmarks/results/gps_smollm2.json``:
the arm ``gps/variance`` is GPS with per-prompt budgets under the ``variance`` objective,
``rollwise train --budgets variance``; same rollouts per step as ``gps``) and writes the budget
comparison over the seeds that ``uniform``, ``gps`` and ``gps/variance`` all have: OUT.json with
a top-level ``summary`` (per arm ``final_heldout`` and ``rollouts_to_uniform_final``, one per
seed, null where never reached; ``rollouts_per_arm``) and OUT.md. No training here: run the arm
with ``gps_smollm2.py --arms gps/variance`` first.

    python benchmarks/budgets_smollm2.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from gps_smollm2 import rollouts_to_reach
from provenance import provenance
from scipy import stats

from rollwise._io import atomic_write_json, atomic_write_report

ARMS = ("uniform", "gps", "gps/variance")


def compare(data: dict, arms: tuple[str, ...] = ARMS) -> dict:
    """The runs of ``arms`` over their common seeds, and the summary."""
    runs = data["runs"]
    missing = [a for a in arms if a not in runs]
    if missing:
        raise SystemExit(f"no runs of {missing} in the results: run gps_smollm2.py --arms ... first")
    seeds = sorted(set.intersection(*(set(runs[a]) for a in arms)), key=int)
    if not seeds:
        raise SystemExit(f"the arms {list(arms)} have no seed in common")
    target = float(np.mean([runs["uniform"][s]["eval_accuracy"][-1] for s in seeds]))
    summary: dict = {"rollouts_per_arm": max(runs[a][s]["rollouts"] for a in arms for s in seeds)}
    for arm in arms:
        summary[arm] = {
            "final_heldout": [runs[arm][s]["eval_accuracy"][-1] for s in seeds],
            "rollouts_to_uniform_final": [rollouts_to_reach(runs[arm][s]["eval_rollouts"],
                                                            runs[arm][s]["eval_accuracy"], target)
                                          for s in seeds]}
    return {"seeds": [int(s) for s in seeds], "uniform_final_mean": target, "summary": summary,
            "runs": {a: {s: runs[a][s] for s in seeds} for a in arms}}


def markdown(result: dict, source: str) -> str:
    s, runs = result["summary"], result["runs"]
    lines = ["# Per-prompt rollout budgets on SmolLM2-135M-Instruct (chain sums)", "",
             f"From `{source}` (runs of `benchmarks/gps_smollm2.py`), seeds {result['seeds']}, "
             f"{s['rollouts_per_arm']:,} rollouts per run. `gps/variance`: GPS choosing the prompts "
             "and splitting each step's rollouts among them under the `variance` objective "
             "(`rollwise train --budgets variance`). Written by `benchmarks/budgets_smollm2.py`.", "",
             "| arm | final held-out (per seed) | mean ± s.e. | rollouts to uniform's final "
             f"({result['uniform_final_mean']:.3f}) | mean ESR |", "|---|---|---|---|---|"]
    for arm in s:
        if arm == "rollouts_per_arm":
            continue
        fin = np.asarray(s[arm]["final_heldout"], dtype=float)
        reach = ", ".join("-" if x is None else f"{x:,.0f}" for x in s[arm]["rollouts_to_uniform_final"])
        esr = np.mean([np.mean(r["esr"]) for r in runs[arm].values()])
        lines.append(f"| {arm} | {' / '.join(f'{x:.3f}' for x in fin)} | {fin.mean():.3f} ± "
                     f"{fin.std(ddof=1) / np.sqrt(fin.size):.3f} | {reach} | {esr:.2f} |")
    a, b = (np.asarray(s[k]["final_heldout"], dtype=float) for k in ("gps/variance", "gps"))
    if a.size > 1:
        d = a - b
        lines += ["", f"Paired `gps/variance` - `gps`: {d.mean():+.3f} ± "
                      f"{d.std(ddof=1) / np.sqrt(d.size):.3f} (p = {stats.ttest_rel(a, b).pvalue:.2f}, "
                      "paired t-test)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="benchmarks/results/gps_smollm2.json")
    p.add_argument("--out", default="benchmarks/results/budgets_smollm2")
    args = p.parse_args()
    data = json.loads(Path(args.results).read_text())
    result = compare(data)
    out = Path(args.out)
    result["source"] = Path(args.results).name
    result["provenance"] = provenance()
    atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_report(out.with_suffix(".md"), markdown(result, Path(args.results).name))
    print(markdown(result, Path(args.results).name))


if __name__ == "__main__":
    main()
