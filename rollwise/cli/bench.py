"""``rollwise demo`` and ``rollwise bench``: the simulated benchmark, its files and its table."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

DEMO_STRATEGIES = ["uniform", "ds", "mopps", "gps", "oracle"]


def parse_strategies(text: str) -> list[str]:
    from rollwise.strategies import bench_names

    names = [s.strip() for s in text.split(",") if s.strip()]
    if text.strip() == "all":
        return bench_names()
    bad = [s for s in names if s not in bench_names()]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {bad or text!r}; choose from {', '.join(bench_names())} or 'all'"
        )
    return names


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser, demo: bool) -> None:
    p.add_argument("--out", default="rollwise-demo" if demo else "rollwise-bench",
                   help="output directory (results.json, summary.md, curves.png)")
    p.add_argument("--embedder", default="wordllama",
                   help="wordllama, hashing, hf:<checkpoint> (a language model's hidden states; "
                        "hf:smollm2 ships with the project), or sentence-transformers:<model>")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (its selectors too, which "
                        "allocate reads); other files there are kept")
    if demo:
        p.set_defaults(pool=None, heldout=None, strategies=DEMO_STRATEGIES, seeds=3, steps=150,
                       batch_size=32, k=8, target=None, text_field=None, budget_objective="variance")
        return
    from rollwise.strategies import bench_names

    p.add_argument("--strategies", type=parse_strategies, default="all",
                   help=f"comma-separated strategies, or 'all': {', '.join(bench_names())}")
    p.add_argument("--seeds", type=positive_int, default=5, help="number of seeds (0..N-1)")
    p.add_argument("--steps", type=positive_int, default=150, help="selection steps per run")
    p.add_argument("--batch-size", type=positive_int, default=32, help="prompts per step")
    p.add_argument("--k", type=positive_int, default=8, help="rollouts per prompt")
    p.add_argument("--pool", type=Path, default=None,
                   help="JSON/JSONL/parquet prompt file; none: a generated reasoning-gym pool")
    p.add_argument("--heldout", type=Path, default=None,
                   help="held-out prompt file; none: 10%% of --pool held out")
    p.add_argument("--text-field", default=None,
                   help="field holding the prompt text in --pool/--heldout; none: the first of "
                        "prompt, problem, question, text")
    p.add_argument("--target", type=float, default=None,
                   help="target held-out accuracy; none: uniform's final accuracy")
    p.add_argument("--budget-objective", default="variance", choices=["groups", "rollouts", "variance"],
                   help="what the *-budget strategies' per-prompt rollout budgets maximise "
                        "(rollwise.budgets): expected informative groups, expected rollouts in "
                        "informative groups, or expected squared advantages (docs/budgets.md)")


# what a run writes to --out (other files there are left alone)
RESULT_FILES = ("results.json", "summary.md", "curves.png", "pool.jsonl", "selectors")


def check_arguments(args: argparse.Namespace) -> None:
    """Everything about ``demo``/``bench`` arguments that can fail, checked before any work."""
    from rollwise._io import check_output_dir

    for flag, path in (("--pool", args.pool), ("--heldout", args.heldout)):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{flag}: file {str(path)!r} does not exist")
    inputs = [(flag, Path(path).resolve()) for flag, path in (("--pool", args.pool),
                                                               ("--heldout", args.heldout))
              if path is not None]
    if len(inputs) == 2 and inputs[0][1] == inputs[1][1]:
        raise ValueError(f"--pool and --heldout are the same file ({str(inputs[0][1])!r}): "
                         "held-out accuracy would be training accuracy")
    out = Path(args.out).resolve()
    for flag, path in inputs:
        if out == path or out in path.parents:
            raise ValueError(f"--out {str(args.out)!r} holds the {flag} file {str(path)!r}, which "
                             "writing the results would replace; choose another --out")
    check_output_dir("--out", args.out)
    earlier = sorted(p.name for p in Path(args.out).glob("*") if p.name in RESULT_FILES)
    if earlier and not args.overwrite:
        raise ValueError(f"--out {str(args.out)!r} holds an earlier run's results "
                         f"({', '.join(earlier)}); pass --overwrite to replace them (its "
                         "selectors/ included), or choose another --out")
    from rollwise.llm.models import resolve_embedder

    try:
        resolve_embedder(args.embedder)
    except ValueError as err:
        raise ValueError(f"--embedder: {err}") from err
    if args.target is not None and not (math.isfinite(args.target) and 0 <= args.target <= 1):
        raise ValueError(f"--target must be a held-out accuracy in [0, 1], got {args.target}")
    if args.target is None and "uniform" not in args.strategies:
        raise ValueError("--target is required when uniform is not among --strategies (the "
                         "default target is uniform's final accuracy)")
    if args.k < 2:
        raise ValueError(f"--k must be >= 2: a group of {args.k} rollout(s) never has unequal "
                         "rewards, so nothing would be learned")


def run(args: argparse.Namespace, title: str) -> dict[str, Any]:
    """Run the benchmark the arguments describe; write results.json, summary.md, curves.png, the
    pool (pool.jsonl) and the first seed's GPS selectors (selectors/) to ``--out``, all at the
    end (an interrupted run leaves an earlier ``--out`` untouched). A second run into the same
    ``--out`` while this one lives is refused (:mod:`rollwise._lock`)."""
    from rollwise._lock import output_lock

    check_arguments(args)
    with output_lock("--out", args.out):
        return _run(args, title)


def _run(args: argparse.Namespace, title: str) -> dict[str, Any]:
    from tqdm import tqdm

    from rollwise._io import atomic_write_json, atomic_write_report, staged_folder
    from rollwise.llm.models import resolve_embedder
    from rollwise.sim import RunSettings, WorldConfig, build_world
    from rollwise.sim.bench import run_benchmark
    from rollwise.sim.report import markdown_table, plot

    check_arguments(args)
    t0 = time.perf_counter()
    pool, _, make_world = build_world(args.pool, args.heldout,
                                      embedder=resolve_embedder(args.embedder),
                                      config=WorldConfig(k=args.k), text_field=args.text_field)
    settings = RunSettings(steps=args.steps, batch_size=args.batch_size,
                           budget_objective=args.budget_objective)
    settings.validate(len(pool))
    seeds = list(range(args.seeds))
    out = Path(args.out)
    with staged_folder(out) as stage:  # an interrupted run leaves an earlier --out as it was
        (stage / "selectors").mkdir()
        pool.write_jsonl(stage / "pool.jsonl")  # with selectors/<strategy>.pt: what `allocate` needs
        total = len(args.strategies) * len(seeds) * args.steps
        # smoothing=0: the ETA from the mean rate so far; every seed runs every strategy in turn,
        # so after the first seed the slow strategies weigh in as much as the fast ones
        with tqdm(total=total, desc=title, unit="step", disable=args.quiet, smoothing=0) as bar:
            summary = run_benchmark(pool, make_world, args.strategies, seeds, settings,
                                    target=args.target, on_step=bar.update,
                                    on_run=lambda s, seed: bar.set_postfix_str(f"{s} seed {seed}"),
                                    selectors_dir=stage / "selectors")
        per_seed = summary.pop("per_seed")
        summary["config"] = {
            "pool": str(args.pool) if args.pool else "reasoning-gym default",
            "heldout": str(args.heldout) if args.heldout else None,
            "pool_size": len(pool), "embedder": args.embedder, "steps": args.steps,
            "batch_size": args.batch_size, "k": args.k, "seeds": seeds,
            "budget_objective": args.budget_objective,
            "strategies": args.strategies, "world": WorldConfig(k=args.k).as_dict(),
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
        summary["per_seed"] = per_seed
        table = markdown_table(summary)
        atomic_write_json(stage / "results.json", summary)
        atomic_write_report(stage / "summary.md", f"# {title}\n\n{table}")
        plot(summary, stage / "curves.png", title=f"{title}: {summary['config']['pool']}")
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'}, {out / 'curves.png'} "
          f"in {summary['config']['wall_seconds']:.0f} s")
    return summary
