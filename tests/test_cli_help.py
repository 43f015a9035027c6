"""The command line as people expect it: help and defaults for every option, -v anywhere,
--version, strategy names listed."""

from __future__ import annotations

import argparse

import pytest

from rollwise.cli import build_parser, main
from rollwise.strategies import bench_names


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("rollwise",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_has_help_and_shows_its_default():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{' '.join(path)} {action.option_strings[0]} has no help"
        text = parser.format_help()
        if any(a.option_strings and a.default not in (None, argparse.SUPPRESS, False)
               for a in parser._actions if a.dest not in ("help", "version")):
            assert "(default:" in text, " ".join(path)


def test_bench_help_lists_the_strategies(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in bench_names():
        assert name in out.replace("- ", "-")


def test_verbose_before_or_after_the_subcommand_and_version(capsys):
    parser = build_parser()
    assert parser.parse_args(["-v", "demo"]).verbose
    assert parser.parse_args(["demo", "-v"]).verbose
    assert not hasattr(parser.parse_args(["demo"]), "verbose")
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("rollwise ")
