"""``rollwise genselect synthesize|train|eval``: the GenSelect command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rollwise._options import add_settings_options, flag_error, settings_from_args
from rollwise.genselect.train import GenSelectTrainSettings


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


def _add_problem_args(p: argparse.ArgumentParser, split: str, n: int) -> None:
    p.add_argument("--task", default="arithmetic",
                   help="'arithmetic' or a JSON/JSONL/parquet file of problems with answers")
    p.add_argument("--split", choices=("train", "heldout"), default=split,
                   help="which split of --task's problems")
    p.add_argument("--levels", type=_int_list, default=None,
                   help="comma-separated difficulty levels to keep; none: all")
    p.add_argument("--limit", type=int, default=None, help="at most this many problems")
    p.add_argument("--generator", default="smollm2",
                   help="model that samples the candidate solutions; none: the SmolLM2 policy")
    p.add_argument("--n", type=int, default=n, help="candidates sampled per problem")
    p.add_argument("--temperature", type=float, default=1.0, help="candidate sampling temperature")
    p.add_argument("--max-new-tokens", type=int, default=48, help="candidate length budget")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")


def add_parser(sub: Any, common: list[argparse.ArgumentParser] | None = None) -> None:
    """Register ``genselect`` on the ``rollwise`` command's subparsers; ``common`` are parent
    parsers every subcommand shares (e.g. ``-v``)."""
    p = sub.add_parser("genselect", help="generative Best-of-N selection trained with DAPO")
    gs = p.add_subparsers(dest="genselect_command", required=True, metavar="COMMAND")
    _add = gs.add_parser

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:  # defaults shown in every --help
        return _add(name, description=kw.get("help"), parents=common or [],
                    formatter_class=p.formatter_class, **kw)

    gs.add_parser = add

    syn = gs.add_parser("synthesize", help="selection tasks from sampled, verified candidates")
    _add_problem_args(syn, "train", 8)
    syn.add_argument("--window", type=int, default=8, help="candidates per selection task (max)")
    syn.add_argument("--min-window", type=int, default=None,
                     help="draw each task's size from [min-window, window]; none: fixed")
    syn.add_argument("--windows-per-problem", type=int, default=1,
                     help="selection tasks drawn from each problem's candidates")
    syn.add_argument("--view", choices=("answer", "full"), default="answer",
                     help="what a candidate shows: its final answer or its (truncated) text")
    syn.add_argument("--max-chars", type=int, default=200, help="truncation of the 'full' view")
    syn.add_argument("--max-correct-fraction", type=float, default=None,
                     help="drop tasks with a larger share of correct candidates (the paper: 0.5)")
    syn.add_argument("--out", type=Path, required=True, help="selection tasks (JSONL)")
    syn.add_argument("--candidates-out", type=Path, default=None,
                     help="also write the candidate sets (JSONL), e.g. for 'genselect eval'")

    tr = gs.add_parser("train", help="DAPO (TRL) on selection tasks, tasks chosen by a selector")
    # the task fields name rollwise train's problem files; GenSelect reads --tasks instead
    add_settings_options(tr, GenSelectTrainSettings, exclude=("task", "text_field", "answer_field"))

    ev = gs.add_parser("eval", help="Best-of-N accuracy: random, majority vote, GenSelect, oracle")
    ev.add_argument("--candidates", type=Path, default=None,
                    help="candidate sets (JSONL from 'synthesize --candidates-out'); default: "
                         "sample them from --task's held-out split")
    _add_problem_args(ev, "heldout", 16)
    ev.add_argument("--model", action="append", default=None,
                    help="selector model (repeatable; default: smollm2)")
    ev.add_argument("--ns", type=_int_list, default=[4, 8, 16], help="values of N")
    ev.add_argument("--window", type=int, default=8, help="candidates one selection call sees")
    ev.add_argument("--view", choices=("answer", "full"), default="answer",
                    help="what a candidate shows: its final answer or its (truncated) text")
    ev.add_argument("--max-chars", type=int, default=200, help="truncation of the 'full' view")
    ev.add_argument("--prefix", default=GenSelectTrainSettings.prefix, help="reply prefix inside the prompt")
    ev.add_argument("--out", type=Path, default=None, help="results JSON")


def _problems(args: argparse.Namespace) -> list[dict[str, Any]]:
    from rollwise.llm.tasks import get_task

    task = get_task(args.task)
    rows = task.train if args.split == "train" else task.heldout
    if args.levels is not None:
        rows = [r for r in rows if int(r["level"]) in set(args.levels)]
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        rows = rows[: args.limit]
    if not rows:
        raise ValueError("no problems left after --levels/--limit")
    return rows


def run(args: argparse.Namespace) -> Any:
    """Dispatch ``rollwise genselect <command>``."""
    from rollwise.genselect import synthesis

    cmd = args.genselect_command
    if cmd == "train":
        from rollwise.genselect.train import train

        settings = settings_from_args(GenSelectTrainSettings, args)
        try:
            settings.validate()
        except ValueError as err:
            raise flag_error(GenSelectTrainSettings, err) from err
        if not Path(settings.tasks).is_file():
            raise FileNotFoundError(f"--tasks: file {settings.tasks!r} does not exist")
        result = train(settings)
        rewards = [h["reward"] for h in result["log_history"] if "reward" in h]
        print(f"trained {settings.steps} DAPO steps ({settings.strategy} selection): "
              f"{result['rollouts']} rollouts, train reward {rewards[0]:.3f} -> {rewards[-1]:.3f}; "
              f"model in {result['final_model']}")
        return result
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    from rollwise._io import check_output_file

    if cmd == "synthesize":
        try:  # before any candidate is sampled
            synthesis.check_task_shape(args.window, args.min_window, args.windows_per_problem,
                                       args.max_correct_fraction, args.view)
        except ValueError as err:  # "min_window must ..." -> "--min-window must ..."
            field, _, rest = str(err).partition(" ")
            raise ValueError(f"--{field.replace('_', '-')} {rest}" if field in vars(args)
                             else str(err)) from err
        task_file = {"--task": args.task} if Path(str(args.task)).is_file() else {}
        check_output_file("--out", args.out, inputs=task_file)
        if args.candidates_out is not None:
            check_output_file("--candidates-out", args.candidates_out,
                              inputs={"--out": args.out, **task_file})
        problems = _problems(args)
        sets = synthesis.sample_candidates(problems, model=args.generator, n=args.n,
                                           temperature=args.temperature,
                                           max_new_tokens=args.max_new_tokens, seed=args.seed)
        tasks = synthesis.synthesize(
            problems, [s["candidates"] for s in sets], window=args.window, min_window=args.min_window,
            windows_per_problem=args.windows_per_problem, view=args.view, max_chars=args.max_chars,
            max_correct_fraction=args.max_correct_fraction, seed=args.seed, out=args.out)
        if args.candidates_out is not None:
            synthesis.write_jsonl(args.candidates_out, sets)
        print(f"{len(problems)} problems x {args.n} candidates -> {len(tasks)} selection tasks "
              f"in {args.out}")
        return tasks
    # eval
    from rollwise.genselect.inference import GenSelectModel, evaluate_best_of_n

    if args.window < 2:
        raise ValueError(f"--window must be >= 2 (a choice needs two candidates), got {args.window}")
    if args.out is not None:
        inputs = {"--candidates": args.candidates} if args.candidates else {}
        if Path(str(args.task)).is_file():
            inputs["--task"] = args.task
        check_output_file("--out", args.out, inputs=inputs)

    if args.candidates is not None:
        sets = synthesis.read_jsonl(args.candidates)
        missing = [k for k in ("id", "question", "candidates", "answers", "scores") if k not in sets[0]] \
            if sets else ["rows"]
        if missing:
            raise ValueError(f"--candidates: {str(args.candidates)!r} is not a candidate-set file "
                             f"(missing {missing})")
        for line, row in enumerate(sets, start=1):
            sizes = {k: len(row[k]) if isinstance(row[k], list) else None
                     for k in ("candidates", "answers", "scores")}
            if None in sizes.values() or len(set(sizes.values())) != 1:
                raise ValueError(f"--candidates: line {line} of {str(args.candidates)!r} needs lists "
                                 f"of equal length in candidates, answers and scores, got {sizes}")
    else:
        sets = synthesis.sample_candidates(_problems(args), model=args.generator, n=args.n,
                                           temperature=args.temperature,
                                           max_new_tokens=args.max_new_tokens, seed=args.seed)
    choosers = {name: GenSelectModel(name, view=args.view, max_chars=args.max_chars, prefix=args.prefix)
                for name in (args.model or ["smollm2"])}
    result = evaluate_best_of_n(sets, ns=args.ns, choosers=choosers, window=args.window, seeds=[args.seed])
    methods = ["random", "majority", *choosers, "oracle"]
    print("| N | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods))
    for n, row in result.items():
        print(f"| {n} | " + " | ".join(f"{row[m]:.3f}" for m in methods) + " |")
    if args.out is not None:
        from rollwise._io import atomic_write_json

        atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "results": result})
    return result

