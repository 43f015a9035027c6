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
