"""The rollwise command: demo (the main job), bench, train, allocate and genselect."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rollwise.train import TrainSettings

log = logging.getLogger("rollwise")

DEMO_STRATEGIES = ["uniform", "ds", "mopps", "gps", "oracle"]


def _strategies(text: str) -> list[str]:
    from rollwise.strategies import bench_names as known_strategies

    names = [s.strip() for s in text.split(",") if s.strip()]
    if text.strip() == "all":
        return known_strategies()
    bad = [s for s in names if s not in known_strategies()]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {bad or text!r}; choose from {', '.join(known_strategies())} or 'all'"
        )
    return names


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def run_bench(args: argparse.Namespace, title: str) -> dict:
    import numpy as np
    from tqdm import tqdm

    from rollwise._io import atomic_write_json, atomic_write_text
    from rollwise.sim import RunSettings, WorldConfig, build_world, run_one, summarise
    from rollwise.sim.report import markdown_table, plot

    check_bench_args(args)
    t0 = time.perf_counter()
    pool, _, make_world = build_world(args.pool, args.heldout, embedder=args.embedder,
                                      config=WorldConfig(k=args.k), text_field=args.text_field)
    settings = RunSettings(steps=args.steps, batch_size=args.batch_size)
    settings.validate(len(pool))
    seeds = list(range(args.seeds))
    logs: dict[str, list] = {s: [] for s in args.strategies}
    out = Path(args.out)
    (out / "selectors").mkdir(parents=True, exist_ok=True)
    pool.write_jsonl(out / "pool.jsonl")  # with selectors/<strategy>.pt: what `allocate` needs
    total = len(args.strategies) * len(seeds) * args.steps
    # smoothing=0: the ETA from the mean rate so far; every seed runs every strategy in turn, so
    # after the first seed the slow strategies weigh in as much as the fast ones
    with tqdm(total=total, desc=title, unit="step", disable=args.quiet, smoothing=0) as bar:
        for seed in seeds:
            for s in args.strategies:
                bar.set_postfix_str(f"{s} seed {seed}")
                keep = out / "selectors" / f"{s}.pt" if seed == seeds[0] and s.startswith("gps") else None
                logs[s].append(run_one(s, pool, make_world, settings, seed, on_step=bar.update,
                                       save_selector=keep))
    summary = summarise(logs, target=args.target)
    summary["config"] = {
        "pool": str(args.pool) if args.pool else "reasoning-gym default",
        "heldout": str(args.heldout) if args.heldout else None,
        "pool_size": len(pool), "embedder": args.embedder, "steps": args.steps,
        "batch_size": args.batch_size, "k": args.k, "seeds": seeds,
        "strategies": args.strategies, "world": WorldConfig(k=args.k).as_dict(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    summary["per_seed"] = {s: [{k: np.asarray(v).tolist() for k, v in run.items()} for run in runs]
                           for s, runs in logs.items()}
    table = markdown_table(summary)
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "summary.md", f"# {title}\n\n{table}")
    plot(summary, out / "curves.png", title=f"{title}: {summary['config']['pool']}")
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'}, {out / 'curves.png'} "
          f"in {summary['config']['wall_seconds']:.0f} s")
    return summary


def check_bench_args(args: argparse.Namespace) -> None:
    """Everything about ``demo``/``bench`` arguments that can fail, checked before any work."""
    import math

    from rollwise._io import check_output_dir

    check_output_dir("--out", args.out)
    if args.target is not None and not (math.isfinite(args.target) and 0 <= args.target <= 1):
        raise ValueError(f"--target must be a held-out accuracy in [0, 1], got {args.target}")
    if args.target is None and "uniform" not in args.strategies:
        raise ValueError("--target is required when uniform is not among --strategies (the "
                         "default target is uniform's final accuracy)")
    if args.k < 2:
        raise ValueError(f"--k must be >= 2: a group of {args.k} rollout(s) never has unequal "
                         "rewards, so nothing would be learned")


def _add_bench_args(p: argparse.ArgumentParser, demo: bool) -> None:
    p.add_argument("--out", default="rollwise-demo" if demo else "rollwise-bench",
                   help="output directory (results.json, summary.md, curves.png)")
    p.add_argument("--embedder", default="wordllama",
                   help="wordllama, hashing, or sentence-transformers:<model>")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    if demo:
        p.set_defaults(pool=None, heldout=None, strategies=DEMO_STRATEGIES, seeds=3, steps=150,
                       batch_size=32, k=8, target=None, text_field=None)
        return
    from rollwise.strategies import bench_names

    p.add_argument("--strategies", type=_strategies, default="all",
                   help=f"comma-separated strategies, or 'all': {', '.join(bench_names())}")
    p.add_argument("--seeds", type=_positive_int, default=5, help="number of seeds (0..N-1)")
    p.add_argument("--steps", type=_positive_int, default=150, help="selection steps per run")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="prompts per step")
    p.add_argument("--k", type=_positive_int, default=8, help="rollouts per prompt")
    p.add_argument("--pool", type=Path, default=None,
                   help="JSON/JSONL/parquet prompt file; none: a generated reasoning-gym pool")
    p.add_argument("--heldout", type=Path, default=None,
                   help="held-out prompt file; none: 10%% of --pool held out")
    p.add_argument("--text-field", default=None,
                   help="field holding the prompt text in --pool/--heldout; none: the first of "
                        "prompt, problem, question, text")
    p.add_argument("--target", type=float, default=None,
                   help="target held-out accuracy; none: uniform's final accuracy")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from rollwise.train import TrainSettings

    d = TrainSettings()
    p.add_argument("--model", default=d.model,
                   help="'smollm2' (offline SmolLM2-135M-Instruct), a checkpoint dir or a hub id")
    p.add_argument("--task", default=d.task,
                   help="'arithmetic' or a JSON/JSONL/parquet file of problems with answers")
    from rollwise.strategies import selector_names

    p.add_argument("--text-field", default=d.text_field,
                   help="a task file's problem field; none: the first of prompt, problem, "
                        "question, text")
    p.add_argument("--answer-field", default=d.answer_field,
                   help="a task file's reference-answer field; none: answer")
    p.add_argument("--strategy", default=d.strategy, choices=selector_names(), metavar="STRATEGY",
                   help=f"prompt selector: {', '.join(selector_names())}")
    p.add_argument("--output-dir", default=d.output_dir,
                   help="checkpoints, the selector and rollwise_run.json (the run's log)")
    p.add_argument("--steps", type=_positive_int, default=d.steps, help="optimiser steps")
    p.add_argument("--max-rollouts", type=_positive_int, default=d.max_rollouts,
                   help="rollout budget: stop before the run would exceed it (template evolution's "
                        "rollouts included); default: --steps alone")
    p.add_argument("--prompts-per-step", type=_positive_int, default=d.prompts_per_step,
                   help="prompts the selector chooses per step")
    p.add_argument("--num-generations", type=int, default=d.num_generations,
                   help="rollouts per prompt (>= 2)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=d.max_new_tokens,
                   help="completion length limit (training and evaluation)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="policy learning rate")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of TRL and of the selector")
    p.add_argument("--embedder", default=d.embedder,
                   help="prompt embedder: wordllama, hashing, or sentence-transformers:<model>")
    p.add_argument("--threads", type=_positive_int, default=d.threads,
                   help="torch threads for the policy on the CPU; none: one less than the "
                        "cores, so the process's other work and its neighbours keep one")
    p.add_argument("--eval-steps", type=_positive_int, default=d.eval_steps,
                   help="steps between held-out evaluations")
    p.add_argument("--eval-prompts", type=int, default=d.eval_prompts,
                   help="held-out prompts per evaluation (0: none)")
    p.add_argument("--save-steps", type=_positive_int, default=d.save_steps,
                   help="steps between checkpoints")
    p.add_argument("--save-optimizer", action="store_true",
                   help="also keep the optimizer, scheduler and RNG state in checkpoints (about 3x "
                        "the size); without it --resume restarts the optimizer")
    p.add_argument("--resume", action="store_true",
                   help="resume from the last checkpoint (the selector's state always comes back)")
    p.add_argument("--report-to", default=d.report_to,
                   help="TRL logging backends (none, tensorboard, wandb, ...)")
    r = p.add_argument_group("hard-prompt rescue (P²O; needs the rescue extra)")
    r.add_argument("--rescue", choices=["p2o"], default=d.rescue,
                   help="guide hard prompts' groups with a GEPA-evolved template and distil it")
    r.add_argument("--rescue-every", type=_positive_int, default=d.rescue_every,
                   help="optimiser steps between template evolutions")
    r.add_argument("--rescue-guided", type=int, default=d.rescue_guided,
                   help="template-guided rollouts per hard prompt's group (1..num_generations-1)")
    r.add_argument("--rescue-reflection", default=d.rescue_reflection,
                   help="reflection LM: 'policy' (the policy itself) or an OpenAI-compatible URL")
    r.add_argument("--rescue-max-metric-calls", type=_positive_int, default=d.rescue_max_metric_calls,
                   help="GEPA rollout budget per evolution")
    r.add_argument("--rescue-max-hard", type=_positive_int, default=d.rescue_max_hard,
                   help="hard prompts given to GEPA per evolution")
    r.add_argument("--rescue-seed-template", default=d.rescue_seed_template,
                   help="first template GEPA starts from ('{problem}' marks where the problem goes)")
    r.add_argument("--rescue-window", type=_positive_int, default=d.rescue_window,
                   help="failed groups in a row that make a prompt hard")
    r.add_argument("--rescue-threshold", type=float, default=d.rescue_threshold,
                   help="a reward at least this counts as a success")


def train_settings(args: argparse.Namespace) -> TrainSettings:
    """The ``TrainSettings`` the ``train`` arguments describe (not yet validated)."""
    from rollwise.train import TrainSettings

    fields = TrainSettings.__dataclass_fields__
    return TrainSettings(**{k: v for k, v in vars(args).items() if k in fields})


def run_train(args: argparse.Namespace) -> None:
    from rollwise.train import run

    settings = train_settings(args)
    result = run(settings)
    evals = [h for h in result["log_history"] if "eval_reward" in h]
    start = result["initial_eval"].get("eval_reward")
    print(f"trained {result['steps']} steps with {settings.strategy}: {result['rollouts']} rollouts, "
          f"held-out accuracy {start if start is None else round(start, 3)} -> "
          f"{round(evals[-1]['eval_reward'], 3) if evals else 'n/a'}; "
          f"log in {settings.output_dir}/rollwise_run.json")
    if "rescue" in result:
        rescue = result["rescue"]
        print(f"rescue: {len(rescue['evolutions'])} evolutions, {rescue['gepa_rollouts']} GEPA rollouts "
              f"(included above), {rescue['guided_rollouts']} guided, {rescue['rescued']} prompts rescued")


def _quantiles(text: str) -> tuple[float, float]:
    try:
        lower, upper = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOWER,UPPER (e.g. 0.25,0.75), got {text!r}") from None
    if not 0.0 <= lower <= upper <= 1.0:
        raise argparse.ArgumentTypeError(f"need 0 <= LOWER <= UPPER <= 1, got {text!r}")
    return lower, upper


def _add_allocate_args(p: argparse.ArgumentParser) -> None:
    from rollwise.allocation import DEFAULT_QUANTILES, METHODS

    p.add_argument("--selector", type=Path, required=True,
                   help="saved GPS selector state (Selector.save)")
    p.add_argument("--pool", type=Path, required=True,
                   help="the JSON/JSONL/parquet prompt file the selector's pool was built from "
                        "(same rows, same ids), embedded again with --embedder")
    p.add_argument("--prompts", type=Path, required=True,
                   help="JSON/JSONL/parquet file of the new prompts to allocate samples to")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", type=int, help="total number of samples")
    budget.add_argument("--per-prompt", type=_positive_int,
                        help="average samples per prompt (budget = K * number of prompts)")
    p.add_argument("--method", choices=METHODS, default="greedy",
                   help="allocation rule (see rollwise.allocation)")
    p.add_argument("--min-per-prompt", type=int, default=1, help="samples every prompt gets at least")
    p.add_argument("--quantiles", type=_quantiles, default=DEFAULT_QUANTILES,
                   help="LOWER,UPPER quantiles of the window method")
    p.add_argument("--out", type=Path, required=True, help="output JSONL: one {id, samples} per prompt")
    p.add_argument("--text-field", default=None,
                   help="field holding the prompt text in --pool and --prompts; none: the first "
                        "of prompt, problem, question, text")
    p.add_argument("--embedder", default="wordllama",
                   help="the embedder the selector was trained with: wordllama, hashing, "
                        "or sentence-transformers:<model>")


def _selector_pool_check(state_path: Path, pool) -> None:
    """Explain a pool mismatch before load_selector refuses it with a terser message."""
    import torch

    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: load_selector reports it
        return
    if not isinstance(state, dict) or "pool_fingerprint" not in state:
        return
    size = state.get("pool_size")
    if state["pool_fingerprint"] != pool.fingerprint():
        what = (f"it was trained on {int(size)} prompts, --pool has {len(pool)}"
                if size is not None and int(size) != len(pool) else "the ids or embeddings differ")
        raise ValueError(
            f"--selector {str(state_path)!r} was not trained on this pool ({what}); pass the same "
            "prompt file as --pool and the same --embedder the selector was trained with"
        )


def run_allocate(args: argparse.Namespace) -> dict:
    import json

    from rollwise import load_selector
    from rollwise._io import atomic_write_text
    from rollwise.allocation import allocate, saving_vs_uniform
    from rollwise.pool import PromptPool
    from rollwise.sim.pools import load_prompt_file

    for flag, path in (("--selector", args.selector), ("--pool", args.pool),
                       ("--prompts", args.prompts)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag}: file {str(path)!r} does not exist")
    from rollwise._io import check_output_file

    check_output_file("--out", args.out)
    if args.min_per_prompt < 0:
        raise ValueError(f"--min-per-prompt must be >= 0, got {args.min_per_prompt}")
    try:
        pool_set = load_prompt_file(args.pool, text_field=args.text_field)
    except ValueError as err:
        raise ValueError(f"--pool: {err}") from err
    try:
        new = load_prompt_file(args.prompts, text_field=args.text_field)
    except ValueError as err:
        raise ValueError(f"--prompts: {err}") from err
    pool = PromptPool.from_texts(pool_set.texts, ids=pool_set.ids, embedder=args.embedder)
    _selector_pool_check(args.selector, pool)
    sel = load_selector(args.selector, pool)
    if not hasattr(sel, "predict_texts"):
        raise ValueError(f"--selector: strategy {sel.name!r} cannot predict prompts outside its pool; "
                         "use a GPS selector")
    pred = sel.predict_texts(new.texts, embedder=args.embedder)
    n = len(new.texts)
    budget = args.budget if args.budget is not None else args.per_prompt * n
    if budget < 0:
        raise ValueError(f"--budget must be >= 0, got {budget}")
    if budget < n * args.min_per_prompt:
        raise ValueError(f"--budget {budget} is smaller than {n} prompts * --min-per-prompt "
                         f"{args.min_per_prompt} = {n * args.min_per_prompt}")
    counts = allocate(pred, budget, args.method, args.min_per_prompt, quantiles=args.quantiles)
    lines = [json.dumps({"id": pid, "samples": int(c), "predicted_rate": round(float(p), 6)})
             for pid, c, p in zip(new.ids, counts, pred, strict=True)]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    saving = saving_vs_uniform(pred, counts, min_per_prompt=args.min_per_prompt)
    used = saving["samples"]
    print(f"{n} prompts, {args.method}: {used} samples (budget {budget}), "
          f"{int(counts.min())}-{int(counts.max())} per prompt; predicted pass@k {saving['pass_at_k']:.3f}")
    if saving["uniform_samples"] is None:
        print("uniform allocation does not reach the same predicted pass@k within "
              f"{64 * n * max(1, args.min_per_prompt)} samples")
    else:
        print(f"uniform allocation needs {saving['uniform_samples']} samples for the same predicted "
              f"pass@k: {saving['saved']} saved ({saving['saved_fraction']:.1%})")
    print(f"wrote {args.out}")
    return saving


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help; descriptions kept as written."""


def build_parser() -> argparse.ArgumentParser:
    from rollwise import __version__

    verbose = argparse.ArgumentParser(add_help=False)  # -v before or after the subcommand
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log progress (INFO)")
    parser = argparse.ArgumentParser(prog="rollwise", description=__doc__, parents=[verbose],
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"rollwise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_parser = sub.add_parser

    def add_parser(name: str, **kw):
        kw.setdefault("description", kw.get("help"))
        return _add_parser(name, parents=[verbose], formatter_class=_Formatter, **kw)

    sub.add_parser = add_parser  # so that genselect's own registration gets it too
    demo = sub.add_parser("demo", help="uniform, DS, MoPPS, GPS and the oracle on the default "
                                       "world, 3 seeds, a few minutes on a CPU")
    _add_bench_args(demo, demo=True)
    bench = sub.add_parser("bench", help="the simulated benchmark at any size, ablations included")
    _add_bench_args(bench, demo=False)
    train = sub.add_parser("train", help="real GRPO with TRL, prompts chosen by a selector")
    _add_train_args(train)
    alloc = sub.add_parser("allocate", help="test-time samples per new prompt from a trained GPS "
                                            "selector's predicted success rates")
    _add_allocate_args(alloc)
    from rollwise.genselect.cli import add_parser as add_genselect_parser

    add_genselect_parser(sub, common=[verbose])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if isinstance(args.strategies if hasattr(args, "strategies") else None, str):
        args.strategies = _strategies(args.strategies)  # the default, "all"
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("demo", "bench"):
            if args.pool is not None and not Path(args.pool).exists():
                parser.error(f"--pool: file {str(args.pool)!r} does not exist")
            if args.heldout is not None and not Path(args.heldout).exists():
                parser.error(f"--heldout: file {str(args.heldout)!r} does not exist")
            run_bench(args, title=f"rollwise {args.command}")
        elif args.command == "train":
            run_train(args)
        elif args.command == "allocate":
            run_allocate(args)
        elif args.command == "genselect":
            from rollwise.genselect.cli import run as run_genselect

            run_genselect(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"rollwise {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
