"""GenSelect on SmolLM2-135M-Instruct (CPU): Best-of-N accuracy before and after DAPO training.

1. Candidates: SmolLM2 samples solutions to arithmetic problems (reasoning-gym chain_sum, the
   levels it sometimes solves). Training problems get ``--train-n`` candidates at
   ``--temperature``; held-out problems get ``--eval-n`` at the same temperature and, for the
   transfer test, ``--eval-n`` more at ``--transfer-temperature``.
2. Selection tasks are synthesised from the training candidates (final-answer view, windows of
   ``--min-window``..``--window`` candidates, mixed windows only).
3. DAPO (TRL, loss_type="dapo", clip-higher) trains SmolLM2 on them, a rollwise selector choosing
   the tasks.
4. Best-of-N on the held-out problems for N in ``--ns``: random pick, majority vote, untrained
   GenSelect, DAPO-trained GenSelect, oracle (pass@N); both candidate distributions.

Every stage caches its output under ``--runs``, so an interrupted run continues where it stopped.
Writes benchmarks/results/genselect_smollm2.{json,md,png}.

    python benchmarks/genselect_smollm2.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.genselect import (
    GenSelectModel,
    GenSelectTrainSettings,
    evaluate_best_of_n,
    read_jsonl,
    sample_candidates,
    synthesize,
    train,
    write_jsonl,
)
from rollwise.llm.tasks import arithmetic


def _candidates(path: Path, problems, n: int, temperature: float, args, seed: int,
                timings: dict) -> list[dict]:
    """Sampled once, then read from ``path``; the sampling time is kept next to it."""
    seconds = path.with_suffix(".seconds.json")
    if path.exists():
        if seconds.exists():
            timings[path.stem + "_s"] = json.loads(seconds.read_text())["seconds"]
        return read_jsonl(path)
    t0 = time.perf_counter()
    sets = sample_candidates(problems, model="smollm2", n=n, temperature=temperature,
                             max_new_tokens=args.max_new_tokens, seed=seed, batch_size=64)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, sets)
    timings[path.stem + "_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(seconds, {"seconds": timings[path.stem + "_s"]}, make_parents=True)
    print(f"sampled {len(problems)} x {n} candidates at T={temperature} in "
          f"{time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return sets


def _stats(sets: list[dict]) -> dict:
    s = np.array([x["scores"] for x in sets])
    return {"problems": len(sets), "candidates_per_problem": int(s.shape[1]),
            "accuracy": float(s.mean()), "any_correct": float((s.max(1) > 0).mean()),
            "mixed": float(((s.max(1) > 0) & (s.min(1) == 0)).mean()),
            "no_answer": float(np.mean([a is None for x in sets for a in x["answers"]]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="0,1")
    p.add_argument("--train-per-level", type=int, default=48)
    p.add_argument("--heldout-per-level", type=int, default=20)
    p.add_argument("--train-n", type=int, default=8)
    p.add_argument("--eval-n", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--transfer-temperature", type=float, default=0.5)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--min-window", type=int, default=2)
    p.add_argument("--windows-per-problem", type=int, default=3)
    p.add_argument("--strategy", default="mopps")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--ns", default="4,8,16")
    p.add_argument("--eval-seeds", type=int, default=1, help="tournament presentation orders")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/genselect_smollm2")
    p.add_argument("--out", default="benchmarks/results/genselect_smollm2")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    runs = Path(args.runs)
    levels = {int(x) for x in args.levels.split(",")}
    task = arithmetic(seed=args.seed)
    train_problems = []
    for lvl in sorted(levels):
        train_problems += [r for r in task.train if r["level"] == lvl][: args.train_per_level]
    held = []
    for lvl in sorted(levels):
        held += [r for r in task.heldout if r["level"] == lvl][: args.heldout_per_level]
    timings = {}

    train_sets = _candidates(runs / "candidates_train.jsonl", train_problems, args.train_n,
                             args.temperature, args, args.seed, timings)
    eval_sets = {
        f"T={args.temperature:g} (training distribution)":
            _candidates(runs / "candidates_heldout.jsonl", held, args.eval_n, args.temperature, args,
                        args.seed + 1, timings),
        f"T={args.transfer_temperature:g} (transfer)":
            _candidates(runs / "candidates_transfer.jsonl", held, args.eval_n,
                        args.transfer_temperature, args, args.seed + 2, timings),
    }

    tasks_path = runs / "tasks.jsonl"
    tasks = synthesize(train_problems, [s["candidates"] for s in train_sets], window=args.window,
                       min_window=args.min_window, windows_per_problem=args.windows_per_problem,
                       view="answer", seed=args.seed, out=tasks_path)
    print(f"{len(tasks)} selection tasks from {len(train_problems)} problems", flush=True)

    settings = GenSelectTrainSettings(
        tasks=str(tasks_path), model="smollm2", strategy=args.strategy, seed=args.seed,
        output_dir=str(runs / "dapo"), steps=args.steps, prompts_per_step=args.prompts_per_step,
        num_generations=args.num_generations, learning_rate=args.learning_rate,
        save_steps=args.steps, overwrite=True)  # trained again only when no final model is kept
    final = Path(settings.output_dir) / "final"
    t0 = time.perf_counter()
    if not (final / "config.json").exists():
        train(settings)
    timings["train_s"] = round(time.perf_counter() - t0, 1)  # 0 when the trained model is cached
    run_log = json.loads((Path(settings.output_dir) / "rollwise_run.json").read_text())
    hist = [h for h in run_log["log_history"] if "rollwise/esr" in h]
    curve = {"step": [h["step"] for h in hist], "reward": [h.get("reward", float("nan")) for h in hist],
             "esr": [h["rollwise/esr"] for h in hist]}

    t0 = time.perf_counter()
    choosers = {"genselect_untrained": GenSelectModel("smollm2", prefix=settings.prefix,
                                                      max_new_tokens=settings.max_new_tokens),
                "genselect_dapo": GenSelectModel(str(final), prefix=settings.prefix,
                                                 max_new_tokens=settings.max_new_tokens)}
    ns = [int(x) for x in args.ns.split(",")]
    results = {}
    for name, sets in eval_sets.items():
        results[name] = evaluate_best_of_n(sets, ns=ns, choosers=choosers, window=args.window,
                                           seeds=list(range(args.eval_seeds)))
        print(name, json.dumps(results[name]), flush=True)
    diagnostics = {name: _positions(ch, next(iter(eval_sets.values())), args.window)
                   for name, ch in choosers.items()}
    timings["eval_s"] = round(time.perf_counter() - t0, 1)
    timings["total_s"] = round(time.perf_counter() - t_start, 1)

    summary = {
        "args": vars(args), "timings": timings, "selection_tasks": len(tasks),
        "train_candidates": _stats(train_sets),
        "eval_candidates": {k: _stats(v) for k, v in eval_sets.items()},
        "training": {"rollouts": run_log["rollouts"], "wall_seconds": run_log["wall_seconds"],
                     "settings": run_log["settings"], **curve},
        "results": results,
        "chosen_position": diagnostics,
    }
    _write(Path(args.out), summary)


def _positions(chooser, sets: list[dict], window: int) -> dict:
    """Which shown position (1..window) the chooser names for each problem's first ``window``
    candidates in sampling order (a random order): a selector that reads the candidates spreads
    its choices, one that learned a position prior does not."""
    chosen = chooser.choose([(s["question"], s["candidates"][:window]) for s in sets])
    counts = {str(k): 0 for k in range(1, window + 1)} | {"malformed": 0}
    for c in chosen:
        counts["malformed" if c is None else str(c + 1)] += 1
    return counts


METHODS = [("random", "random pick"), ("majority", "majority vote"),
           ("genselect_untrained", "GenSelect, untrained"), ("genselect_dapo", "GenSelect, DAPO-trained"),
           ("oracle", "oracle (pass@N)")]


def _write(out: Path, summary: dict) -> None:
    atomic_write_json(out.with_suffix(".json"), summary)
    lines = ["# GenSelect on SmolLM2-135M-Instruct (CPU)", ""]
    for dist, res in summary["results"].items():
        st = summary["eval_candidates"][dist]
        lines += [f"## Candidates at {dist}", "",
                  f"{st['problems']} held-out problems x {st['candidates_per_problem']} candidates, "
                  f"candidate accuracy {st['accuracy']:.3f}, problems with a correct candidate "
                  f"{st['any_correct']:.2f}.", "",
                  "| N | draws | " + " | ".join(label for _, label in METHODS)
                  + " | malformed (untrained / DAPO) |",
                  "|---|---|" + "---|" * len(METHODS) + "---|"]
        for n, row in res.items():
            cells = " | ".join(f"{row[m]:.3f} ± {row[m + '_se']:.3f}" for m, _ in METHODS)
            lines.append(f"| {n} | {row['draws']} | {cells} | {row['genselect_untrained_malformed']:.2f} / "
                         f"{row['genselect_dapo_malformed']:.2f} |")
        lines.append("")
    lines += ["## Chosen position", "",
              "Position named for each held-out problem's first 8 candidates (training distribution):",
              "", "| chooser | " + " | ".join(next(iter(summary["chosen_position"].values()))) + " |",
              "|---|" + "---|" * len(next(iter(summary["chosen_position"].values())))]
    for name, counts in summary["chosen_position"].items():
        lines.append(f"| {name} | " + " | ".join(str(v) for v in counts.values()) + " |")
    lines.append("")
    tr = summary["training"]
    lines += ["## Training", "",
              f"{summary['selection_tasks']} selection tasks; {len(tr['step'])} DAPO steps, "
              f"{tr['rollouts']} rollouts, {tr['wall_seconds']:.0f} s; train reward "
              f"{np.mean(tr['reward'][:5]):.3f} (first 5 steps) -> {np.mean(tr['reward'][-5:]):.3f} "
              f"(last 5); mean ESR {np.mean(tr['esr']):.2f}.", "",
              f"Wall time: {summary['timings']}", ""]
    atomic_write_report(out.with_suffix(".md"), "\n".join(lines))
    _plot(out.with_suffix(".png"), summary)
    print("\n".join(lines))


def _plot(path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rollwise._io import atomic_write

    dists = list(summary["results"])
    fig, axes = plt.subplots(1, len(dists) + 1, figsize=(5 * (len(dists) + 1), 4))
    for ax, dist in zip(axes, dists, strict=False):
        res = summary["results"][dist]
        ns = list(res)
        width = 0.8 / len(METHODS)
        for k, (m, label) in enumerate(METHODS):
            x = np.arange(len(ns)) + (k - (len(METHODS) - 1) / 2) * width
            ax.bar(x, [res[n][m] for n in ns], width, yerr=[res[n][m + "_se"] for n in ns], label=label,
                   capsize=2)
        ax.set_xticks(np.arange(len(ns)), [f"N={n}" for n in ns])
        ax.set_ylabel("Best-of-N accuracy")
        ax.set_title(f"candidates at {dist}", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7, loc="upper left")
    tr = summary["training"]
    ax = axes[-1]
    ax.plot(tr["step"], tr["reward"], label="train reward")
    ax.plot(tr["step"], tr["esr"], label="ESR", alpha=0.6)
    ax.set_xlabel("DAPO step")
    ax.set_title("training (selected tasks)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    main()
