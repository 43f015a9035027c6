"""The rollwise command: demo (the main job), bench, train, allocate and genselect."""

from __future__ import annotations

import argparse
import logging
import sys


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Each option's help followed by its default, readable: ``(required)`` for a required
    option, nothing for a default of None or "" (the help says what none means), a tuple or
    list as comma-separated values; descriptions kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        default = action.default
        if default is None or default == "" or isinstance(action, argparse._HelpAction):
            return text
        if isinstance(default, (tuple, list)):
            default = ",".join(map(str, default))
        return f"{text} (default: {str(default).replace('%', '%%')})"


def build_parser() -> argparse.ArgumentParser:
    from rollwise import __version__
    from rollwise.cli import allocate as allocate_cmd
    from rollwise.cli import bench as bench_cmd
    from rollwise.cli import train as train_cmd

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
                                       "simulated world (1,680 prompts), 3 seeds x 150 steps x 32 "
                                       "prompts x 8 rollouts; under a minute on 2 CPU cores")
    bench_cmd.add_arguments(demo, demo=True)
    bench = sub.add_parser("bench", help="the simulated benchmark at any size, ablations included")
    bench_cmd.add_arguments(bench, demo=False)
    train = sub.add_parser("train", help="real GRPO with TRL, prompts chosen by a selector")
    train_cmd.add_arguments(train)
    alloc = sub.add_parser("allocate", help="test-time samples per new prompt from a trained GPS "
                                            "selector's predicted success rates")
    allocate_cmd.add_arguments(alloc)
    from rollwise.genselect.cli import add_parser as add_genselect_parser

    add_genselect_parser(sub, common=[verbose])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if isinstance(getattr(args, "strategies", None), str):
        from rollwise.cli.bench import parse_strategies

        args.strategies = parse_strategies(args.strategies)  # the default, "all"
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("demo", "bench"):
            from rollwise.cli import bench

            bench.run(args, title=f"rollwise {args.command}")
        elif args.command == "train":
            from rollwise.cli import train

            train.run(args)
        elif args.command == "allocate":
            from rollwise.cli import allocate

            allocate.run(args)
        elif args.command == "genselect":
            from rollwise.genselect.cli import run as run_genselect

            run_genselect(args)
    except (ValueError, OSError, ImportError) as err:  # OSError: missing, existing, unwritable paths
        print(f"rollwise {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rollwise {args.command}: interrupted; {KEPT_ON_INTERRUPT.get(args.command, '')}".rstrip("; "),
              file=sys.stderr)
        return 130
    return 0


# what an interrupted command leaves behind, in its own words
KEPT_ON_INTERRUPT = {
    "demo": "the --out folder is as it was before this run",
    "bench": "the --out folder is as it was before this run",
    "train": "checkpoints saved so far stay in --output-dir (--resume continues from the last)",
    "allocate": "--out was not written",
}


if __name__ == "__main__":
    sys.exit(main())
