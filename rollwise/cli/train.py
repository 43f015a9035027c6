"""``rollwise train``: real GRPO with TRL, options built from ``TrainSettings`` and, for P²O,
``RescueSettings`` (``--rescue-<field>``)."""

from __future__ import annotations

import argparse
from typing import Any

from rollwise._options import add_settings_options, settings_from_args

RESCUE_PREFIX = "rescue_"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rollwise.llm.engine import TrainSettings
    from rollwise.rescue.addon import RescueSettings

    add_settings_options(p, TrainSettings)
    r = p.add_argument_group("hard-prompt rescue (P²O; needs the rescue extra)")
    r.add_argument("--rescue", choices=["p2o"], default=None,
                   help="guide hard prompts' groups with a GEPA-evolved template and distil it")
    add_settings_options(r, RescueSettings, prefix=RESCUE_PREFIX)


def train_settings(args: argparse.Namespace) -> Any:
    """The ``TrainSettings`` the ``train`` arguments describe (not yet validated)."""
    from rollwise.llm.engine import TrainSettings

    return settings_from_args(TrainSettings, args)


def addons(args: argparse.Namespace) -> list[Any]:
    """The add-ons the arguments turn on (``--rescue p2o``)."""
    if getattr(args, "rescue", None) is None:
        from dataclasses import MISSING, fields

        from rollwise.rescue.addon import RescueSettings

        for f in fields(RescueSettings):
            default = f.default if f.default is not MISSING else f.default_factory()
            value = getattr(args, RESCUE_PREFIX + f.name, default)
            if value != default:  # a rescue setting with no rescue would do nothing
                flag = f"--{RESCUE_PREFIX}{f.name}".replace("_", "-")
                raise ValueError(f"{flag} applies only with --rescue p2o")
        return []
    from rollwise.rescue.addon import P2ORescue, RescueSettings

    return [P2ORescue(settings_from_args(RescueSettings, args, prefix=RESCUE_PREFIX))]


def summary_line(strategy: str, output_dir: str, result: dict[str, Any]) -> str:
    """The line ``rollwise train`` ends with: held-out accuracy at the first and the last
    evaluation of the run log (every completion weighted once, with its count), not TRL's
    ``eval_reward``, which averages per-batch means and so over-weights a short last batch."""
    evals = [e for e in result.get("evaluations", []) if "reward" in e]
    if evals:
        first, last = evals[0], evals[-1]
        heldout = (f"held-out accuracy {first['reward']:.3f} (step {first['step']}) -> "
                   f"{last['reward']:.3f} (step {last['step']}; n = {last['n']} completions)")
    else:
        heldout = "no held-out evaluation"
    done = "already trained" if result.get("already_finished") else "trained"
    return (f"{done} {result['steps']} steps with {strategy}: {result['rollouts']} rollouts, "
            f"{heldout}; log in {output_dir}/rollwise_run.json")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rollwise._options import flag_error
    from rollwise.llm.engine import TrainSettings, check_addons
    from rollwise.llm.engine import run as run_training

    settings = train_settings(args)
    try:
        settings.validate()
    except ValueError as err:
        raise flag_error(TrainSettings, err) from err
    attached = check_addons(settings, addons(args))  # a bad add-on setting fails before the model
    result = run_training(settings, addons=attached)
    print(summary_line(settings.strategy, settings.output_dir, result))
    if "rescue" in result:
        rescue = result["rescue"]
        print(f"rescue: {len(rescue['evolutions'])} evolutions, {rescue['gepa_rollouts']} GEPA rollouts "
              f"(included above), {rescue['guided_rollouts']} guided, {rescue['rescued']} prompts rescued")
    return result
