"""Strategy names and their presets, without importing any selector (so that a command line can
list and check names without loading torch). :mod:`rollwise.selectors` maps them to classes."""

from __future__ import annotations

from typing import Any

# The GPS default guards against the small-pool failure (see GPSSelector): a cooldown of a
# quarter pass and 4 warm-up steps. Ablations switch one thing off; "gps-paper" is the paper's
# rule (fixed diversity weight, no guards) and "gps-unguarded" the default before the guards.
GPS_DEFAULT: dict[str, Any] = {"cooldown": 0.25, "warmup_steps": 4}


def _gps(**changes: Any) -> tuple[str, dict[str, Any]]:
    return "gps", {**GPS_DEFAULT, **changes}


# name -> (selector kind, preset hyper-parameters)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "uniform": ("uniform", {}),
    "mopps": ("mopps", {}),
    "gps": _gps(),
    "gps-nodiv": _gps(diversity=0.0),
    "gps-nolatent": _gps(latent_dim=0),
    "gps-nointer": _gps(inter=False),
    "gps-unscaled": _gps(scale_diversity=False),
    "gps-nocooldown": _gps(cooldown=0.0),
    "gps-nowarmup": _gps(warmup_steps=0),
    "gps-unguarded": _gps(cooldown=0.0, warmup_steps=0),
    "gps-paper": _gps(cooldown=0.0, warmup_steps=0, scale_diversity=False),
}

# Run by the simulated benchmark only: DAPO's dynamic-sampling filter (not a selector) and the
# oracle that knows the true success rates.
BENCH_ONLY = ("ds", "oracle")


def selector_names() -> list[str]:
    """Every strategy a selector implements (what ``make_selector`` and training accept)."""
    return list(PRESETS)


# Training filters: a name that trains a selector with DAPO's dynamic-sampling filter on top
# (``rollwise train --strategy ds``; any selector takes the filter with ``--dynamic-sampling``).
TRAIN_FILTERS: dict[str, str] = {"ds": "uniform"}


def train_names() -> list[str]:
    """Every strategy real training accepts: the selectors and ``ds``."""
    return selector_names() + list(TRAIN_FILTERS)


def train_strategy(name: str) -> tuple[str, bool]:
    """``(selector name, dynamic sampling on)`` for a training strategy name."""
    if name in TRAIN_FILTERS:
        return TRAIN_FILTERS[name], True
    return name, False


def bench_names() -> list[str]:
    """Every strategy the simulated benchmark runs."""
    return selector_names() + list(BENCH_ONLY)
