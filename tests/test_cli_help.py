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
    """Every option: help, then "(required)" or its default when it has a real one, never a
    "(default: None)", an empty default or a Python tuple."""
    for path, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            name = f"{' '.join(path)} {action.option_strings[0]}"
            assert action.help, f"{name} has no help"
            shown = formatter._get_help_string(action) % {"default": action.default}
            if action.required:
                assert shown.endswith("(required)"), name
            elif action.default not in (None, "", argparse.SUPPRESS):
                assert "(default: " in shown, name
            assert "(default: None)" not in shown and "(default: )" not in shown, name
            assert "(default: (" not in shown and "(default: [" not in shown, name


def test_required_options_and_tuple_defaults_read_well(capsys):
    with pytest.raises(SystemExit):
        main(["allocate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(required)" in out and "(default: None)" not in out
    assert "(default: 0.25,0.75)" in out  # --quantiles, not a Python tuple


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


def test_an_on_off_option_with_a_device_dependent_default_takes_both_spellings():
    """``--[no-]gradient-checkpointing``: on, off, or (neither) chosen by the device."""
    parser = build_parser()
    base = ["train", "--strategy", "uniform", "--output-dir", "out"]
    assert parser.parse_args(base).gradient_checkpointing is None
    assert parser.parse_args([*base, "--gradient-checkpointing"]).gradient_checkpointing is True
    assert parser.parse_args([*base, "--no-gradient-checkpointing"]).gradient_checkpointing is False
