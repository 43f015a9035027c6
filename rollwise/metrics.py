"""Metrics shared by benchmarks and integrations."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
from scipy import stats

from rollwise.dynamic_sampling import informative_mask


def effective_sample_ratio(rewards: np.ndarray) -> float:
    """ESR: fraction of groups whose rewards are not all equal (the ones GRPO learns from)."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return float("nan")
    if not np.all(np.isfinite(r)) or r.min() < 0.0 or r.max() > 1.0:
        raise ValueError("rewards must be finite and lie in [0, 1] (map rewards to success first)")
    return float(informative_mask(r).mean())


def spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    """Spearman rank correlation (scipy); NaN when either side is constant."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth shapes differ: {p.shape} vs {t.shape}")
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.spearmanr(p, t).statistic)


def reliability_curve(pred: np.ndarray, truth: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Predictions against outcomes in ``bins`` equal-width bins of the predicted rate: per bin
    its edges, the number of prompts, the mean prediction and the mean true (or empirical)
    rate (NaN where a bin is empty). The data of a reliability diagram."""
    p, t = _check_pair(pred, truth)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(which, weights=p, minlength=bins) / count
        mean_true = np.bincount(which, weights=t, minlength=bins) / count
    return {"edges": edges.tolist(), "count": count.tolist(), "mean_predicted": mean_pred.tolist(),
            "mean_true": mean_true.tolist()}


def expected_calibration_error(pred: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """ECE: the prompt-weighted mean over equal-width bins of the predicted rate of
    ``|mean prediction - mean true rate|`` (true rates, or empirical rates of real samples)."""
    curve = reliability_curve(pred, truth, bins)
    count = np.asarray(curve["count"], dtype=np.float64)
    gap = np.abs(np.asarray(curve["mean_predicted"]) - np.asarray(curve["mean_true"]))
    filled = count > 0
    return float(np.sum(count[filled] * gap[filled]) / count.sum())


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.ndim != 1 or p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred and truth must be non-empty 1-D arrays of one shape, got {p.shape} "
                         f"and {t.shape}")
    for name, a in (("pred", p), ("truth", t)):
        if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
            raise ValueError(f"{name} must hold rates in [0, 1]")
    return p, t


class Stopwatch:
    """Accumulates seconds per named section: ``with sw("select"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
