"""Strategy names and their presets, without importing any selector (so that a command line can
list and check names without loading torch). :mod:`rollwise.selectors` maps them to classes."""

from __future__ import annotations

from typing import Any

# The GPS default: the fixed guards (4 random warm-up steps, a quarter-pass rest), a coverage
# floor per embedding cluster (no region falls below half its share of the recent selections
# unless its recent groups all gave equal rewards) and diversity measured on pool-centred
# embeddings (no pull to the embedding's outliers). "gps-uncentred" is the default before the
# centring, "gps-guarded" the default before the floor (both uncentred), "gps-unguarded" the
# rule before any guard, "gps-paper" the paper's rule (fixed diversity weight). "gps-trust"
# replaces the warm-up by a measured trust in the predictor, and "gps-adaptive-rest" sets the
# rest from a measured excess of repeats (rollwise.regime); both were measured and not adopted
# (docs/gps.md); "gps-evidence-rest" lifts the rest only on evidence that repeats do not outrun
# first visits, "gps-evidence-probe" also spends an eighth of each batch on repeats to read them
# sooner. "gps-eager-exempt" is the floor as first shipped (any 4 all-equal groups exempt
# a cluster; uncentred). Ablations switch one part off.
GPS_DEFAULT: dict[str, Any] = {"cooldown": 0.25, "warmup_steps": 4, "coverage_floor": 0.5,
                               "centred_diversity": True}


def _gps(**changes: Any) -> tuple[str, dict[str, Any]]:
    return "gps", {**GPS_DEFAULT, **changes}


# name -> (selector kind, preset hyper-parameters)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "uniform": ("uniform", {}),
    "mopps": ("mopps", {}),
    "greso": ("greso", {}),
    "gps": _gps(),
    "gps-nodiv": _gps(diversity=0.0),
    "gps-nolatent": _gps(latent_dim=0),
    "gps-nointer": _gps(inter=False),
    "gps-unscaled": _gps(scale_diversity=False),
    "gps-nocooldown": _gps(cooldown=0.0),
    "gps-nowarmup": _gps(warmup_steps=0),
    "gps-trust": _gps(warmup_steps=0, adaptive_trust=True),
    "gps-adaptive-rest": _gps(repeat_control=True),
    "gps-evidence-rest": _gps(repeat_control=True, repeat_margin=0.05),
    "gps-evidence-probe": _gps(repeat_control=True, repeat_margin=0.05, repeat_probe=0.125),
    "gps-regime": _gps(warmup_steps=0, adaptive_trust=True, repeat_control=True),
    "gps-guarded": _gps(coverage_floor=0.0, centred_diversity=False),
    "gps-eager-exempt": _gps(floor_exempt_p=None, centred_diversity=False),
    "gps-uncentred": _gps(centred_diversity=False),
    "gps-unguarded": ("gps", {}),
    "gps-paper": ("gps", {"scale_diversity": False}),
}

# Run by the simulated benchmark only: DAPO's dynamic-sampling filter (not a selector), the
# oracle that knows the true success rates, and the oracle splitting rollouts by them.
BENCH_ONLY = ("ds", "oracle", "oracle-budget")

# Per-prompt rollout budgets (rollwise.budgets) in the simulated benchmark: name -> (the selector
# that chooses the prompts, whose predictions split the rollouts: "selector" its own, "mopps"
# MoPPS-like Beta posteriors kept beside it, as the budget papers' baseline does).
BUDGETED: dict[str, tuple[str, str]] = {
    "gps-budget": ("gps", "selector"),
    "mopps-budget": ("mopps", "selector"),
    "uniform-budget": ("uniform", "mopps"),
}


def selector_names() -> list[str]:
    """Every strategy a selector implements (what ``make_selector`` and training accept)."""
    return list(PRESETS)


# Training filters: a name that trains a selector with DAPO's dynamic-sampling filter on top
# (``rollwise train --strategy ds``; any selector takes the filter with ``--dynamic-sampling``,
# or as ``NAME+ds``, e.g. ``gps+ds``: predictive dynamic sampling).
TRAIN_FILTERS: dict[str, str] = {"ds": "uniform"}
DS_SUFFIX = "+ds"


def train_names() -> list[str]:
    """Every strategy real training accepts: the selectors, ``ds`` and ``NAME+ds`` for the
    algorithms (not their ablations)."""
    return selector_names() + list(TRAIN_FILTERS) + [f"{n}{DS_SUFFIX}" for n in DS_SELECTORS]


# the selectors whose ``+ds`` spelling is listed (any selector name takes the suffix)
DS_SELECTORS = ("gps", "mopps", "greso")


def train_strategy(name: str) -> tuple[str, bool]:
    """``(selector name, dynamic sampling on)`` for a training strategy name."""
    if name in TRAIN_FILTERS:
        return TRAIN_FILTERS[name], True
    if name.endswith(DS_SUFFIX) and name[: -len(DS_SUFFIX)] in PRESETS:
        return name[: -len(DS_SUFFIX)], True
    return name, False


def bench_names() -> list[str]:
    """Every strategy the simulated benchmark runs by name (any selector or ``oracle`` also
    takes ``+ds``: dynamic sampling over its prompts)."""
    return selector_names() + list(BUDGETED) + list(BENCH_ONLY) + [
        f"{n}{DS_SUFFIX}" for n in (*DS_SELECTORS, "oracle")]


def bench_strategy(name: str) -> tuple[str, bool]:
    """``(strategy, dynamic sampling on)`` for a simulated-benchmark name: ``ds`` is uniform's
    prompts with DAPO's full generation batches, ``NAME+ds`` NAME's prompts with its sizing."""
    if name == "ds":
        return "uniform", True
    if name.endswith(DS_SUFFIX):
        base = name[: -len(DS_SUFFIX)]
        if base in PRESETS or base == "oracle":
            return base, True
    return name, False
