"""Selectors: one module per strategy, one protocol (:class:`~rollwise.selectors.base.Selector`)."""

from __future__ import annotations

import os
import zipfile
from dataclasses import fields
from typing import Any

import torch

from rollwise.pool import PromptPool
from rollwise.ppm import PPMConfig
from rollwise.selectors.base import Selector
from rollwise.selectors.gps import GPSSelector, check_device
from rollwise.selectors.greso import GRESOSelector
from rollwise.selectors.mopps import MoPPSSelector
from rollwise.selectors.uniform import UniformSelector
from rollwise.strategies import PRESETS
from rollwise.threads import DEFAULT_SELECTOR_THREADS
from rollwise.validation import check_int

_CLASSES: dict[str, type[Selector]] = {
    "uniform": UniformSelector, "mopps": MoPPSSelector, "gps": GPSSelector,
    "greso": GRESOSelector}

# name -> (class, preset hyper-parameters); the names and presets live in rollwise.strategies
STRATEGIES: dict[str, tuple[type[Selector], dict[str, Any]]] = {
    name: (_CLASSES[kind], preset) for name, (kind, preset) in PRESETS.items()}


def make_selector(
    name: str, pool: PromptPool, batch_size: int, seed: int = 0, **hyper: Any
) -> Selector:
    """Build the selector registered as ``name`` (see ``STRATEGIES``): its preset, then ``hyper``.

    Hyper-parameters go by name, as configuration files give them; for GPS variants the PPM's
    fields may be given flat (``latent_dim=0``) or as ``ppm={...}``.
    """
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    cls, preset = STRATEGIES[name]
    kwargs = {**preset, **hyper}
    if cls is GPSSelector:
        ppm_fields = {f.name for f in fields(PPMConfig)}
        flat = {k: kwargs.pop(k) for k in list(kwargs) if k in ppm_fields}
        nested = kwargs.pop("ppm", None)
        nested = dict(nested.as_dict() if isinstance(nested, PPMConfig) else nested or {})
        if flat or nested:
            kwargs["ppm"] = {**flat, **nested}
    sel = cls(pool, batch_size, seed=seed, **kwargs)
    sel.strategy = name
    return sel


def load_selector(
    path: str | os.PathLike, pool: PromptPool, threads: int | None = DEFAULT_SELECTOR_THREADS,
    device: str | torch.device | None = None, prediction_workers: int | None = None,
) -> Selector:
    """Rebuild a selector saved with ``Selector.save`` against the same ``pool``. ``threads``,
    ``device`` and ``prediction_workers`` (GPS: where the PPM runs, default the CPU, and how many
    threads split its prediction over the pool, default
    :data:`~rollwise.threads.DEFAULT_PREDICTION_WORKERS`) are this machine's settings, not saved
    (see :mod:`rollwise.threads`)."""
    import json

    if not isinstance(pool, PromptPool):
        raise TypeError(f"pool must be a PromptPool, got {type(pool).__name__}")
    machine: dict[str, Any] = {"threads": threads}
    if device is not None:
        machine["device"] = check_device(device)
    if prediction_workers is not None:
        check_int("prediction_workers", prediction_workers, 1)
        machine["prediction_workers"] = int(prediction_workers)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"{os.fspath(path)!r} is empty, not a selector state file (Selector.save)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated zip, garbage bytes, unpickling error ...
        what = ("a torch file that holds more than tensors and plain values" if zipfile.is_zipfile(path)
                else "not a torch file (damaged or another format)")
        raise ValueError(f"{os.fspath(path)!r} is not a selector state file (Selector.save): "
                         f"{what}") from err
    if not isinstance(state, dict) or "strategy" not in state or "hyper" not in state:
        raise ValueError(f"{os.fspath(path)!r} is not a selector state")
    try:
        hyper = json.loads(state["hyper"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{os.fspath(path)!r}: corrupted hyper-parameters: {err}") from err
    if state.get("pool_fingerprint") != pool.fingerprint():
        raise ValueError(f"{os.fspath(path)!r} was saved against a different prompt pool")
    if not isinstance(hyper, dict):
        raise ValueError(f"{os.fspath(path)!r}: hyper-parameters are not a dict")
    hyper.pop("strategy_name", None)  # written by earlier versions; the strategy is saved apart
    kind = STRATEGIES.get(state["strategy"], (None,))[0]
    gps_only = [k for k in ("device", "prediction_workers") if k in machine]
    if gps_only and kind is not None and kind is not GPSSelector:
        raise ValueError(f"{gps_only[0]} applies to GPS selectors only; {os.fspath(path)!r} holds a "
                         f"{state['strategy']!r} selector")
    try:
        sel = make_selector(state["strategy"], pool, int(state["batch_size"]),
                            int(state["seed"]), **machine, **hyper)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{os.fspath(path)!r}: cannot rebuild the selector: {err!r}") from err
    sel.load_state_dict(state)
    return sel


__all__ = ["STRATEGIES", "Selector", "GPSSelector", "GRESOSelector", "MoPPSSelector",
           "UniformSelector",
           "make_selector", "load_selector"]
