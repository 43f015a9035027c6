"""Calibration of predicted success rates, fitted on outcomes the predictor had not trained on.

A selector's predictions for prompts it never observed are what test-time allocation runs on,
and a model trained on its own selections tends to be over-confident there (a prompt predicted
at 0.005 that the policy solves one time in five is starved of samples). Each time a batch is
observed, the predictions made *before* its outcomes were known and those outcomes form honest
out-of-time pairs. :class:`BetaBinomialCalibration` fits, on such pairs, a map from the raw
prediction ``p`` to a Beta predictive distribution of the true rate:

    rate ~ Beta(mu * c, (1 - mu) * c),    mu = sigmoid(slope * logit(p) + bias)

by maximum likelihood of the observed successes under the beta-binomial (``k`` rollouts per
prompt), with a weak pull of ``(slope, bias)`` towards the identity. The slope is kept in
``[MIN_SLOPE, MAX_SLOPE]``: the map never inverts or flattens the predictor's ranking, which is
informative even where its values are not (a selector's pairs cover a narrow band of predictions,
and a free slope fitted there can extrapolate anywhere). ``mu`` is the calibrated
rate; the concentration ``c`` says how far a prompt's true rate may lie from it, which
:func:`rollwise.allocation.allocate` uses so that an uncertain prompt is not starved.

A Beta around each prediction still trusts the ranking: a prompt predicted far from the target
keeps a narrow share of its rate's range. But a predictor that generalises to a never-seen prompt
sometimes gets it entirely wrong. :meth:`BetaBinomialCalibration.fit_contamination` fits the
fraction ``e`` of such prompts, by maximum likelihood of the model "with probability ``e`` the
rate is that of a random prompt of the pool", on first observations only (the outcomes of prompts
seen for the first time: the held-out case); allocation can then mix each prompt's Beta with
the population's in that proportion (``allocate(..., contamination=e)``, off by default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import betaln, expit, logit

from rollwise.validation import check_number

EDGE = 1e-4  # raw predictions are clipped to [EDGE, 1 - EDGE] before the logit
DEFAULT_CONCENTRATION = 100.0  # the identity's concentration: a sharp Beta around the prediction
IDENTITY_PULL = 1e-2  # L2 pull of (slope, bias) towards (1, 0), per group
MIN_SLOPE, MAX_SLOPE = 0.25, 1.5  # the map keeps the ranking and at least a quarter of its spread
MIN_FIRST_GROUPS = 32  # first observations needed to fit the contamination (fewer: 0)
MAX_CONTAMINATION = 0.5
POPULATION_POINTS = 256  # the pool's predictions are summarised by this many quantiles


@dataclass(frozen=True)
class BetaBinomialCalibration:
    """``mu = sigmoid(slope * logit(p) + bias)``, true rate ~ ``Beta(mu c, (1 - mu) c)``;
    ``groups`` is the number of (prediction, outcomes) pairs it was fitted on (0: not fitted);
    ``contamination`` the fraction of never-seen prompts whose prediction is no better than a
    random prompt's (:meth:`fit_contamination`; 0 until fitted)."""

    slope: float = 1.0
    bias: float = 0.0
    concentration: float = DEFAULT_CONCENTRATION
    groups: int = 0
    contamination: float = 0.0

    def __post_init__(self) -> None:
        check_number("slope", self.slope)
        check_number("bias", self.bias)
        check_number("concentration", self.concentration, 0.0, None, closed="neither")
        check_number("contamination", self.contamination, 0.0, 1.0)

    @classmethod
    def fit(cls, pred: Any, successes: Any, k: Any, fit_map: bool = True) -> BetaBinomialCalibration:
        """Maximum-likelihood fit on groups: ``pred`` the raw predictions made before the
        outcomes, ``successes`` of ``k`` rollouts each (successes may be fractional: mean reward
        times k). ``fit_map=False`` keeps the identity map and fits the concentration only.
        Fewer than two groups give the identity."""
        p = np.asarray(pred, dtype=np.float64)
        s = np.asarray(successes, dtype=np.float64)
        n = np.broadcast_to(np.asarray(k, dtype=np.float64), p.shape)
        if p.ndim != 1 or s.shape != p.shape:
            raise ValueError(f"pred and successes must be 1-D of one shape, got {p.shape}, {s.shape}")
        if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
            raise ValueError("pred must hold rates in [0, 1]")
        if p.size and (np.any(n < 1) or np.any(s < 0) or np.any(s > n)):
            raise ValueError("need k >= 1 and 0 <= successes <= k")
        if p.size < 2:
            return cls()
        x = logit(np.clip(p, EDGE, 1.0 - EDGE))

        def loss(w: np.ndarray) -> float:
            slope, bias = (w[0], w[1]) if fit_map else (1.0, 0.0)
            return float(-_log_lik(x, s, n, slope, bias, np.exp(w[-1])).mean()
                         + IDENTITY_PULL * ((slope - 1.0) ** 2 + bias ** 2))

        log_c = (np.log(0.05), np.log(1e4))
        if fit_map:
            w = minimize(loss, np.array([1.0, 0.0, np.log(10.0)]), method="L-BFGS-B",
                         bounds=[(MIN_SLOPE, MAX_SLOPE), (-20.0, 20.0), log_c]).x
            return cls(float(w[0]), float(w[1]), float(np.exp(w[2])), int(p.size))
        w = minimize(loss, np.array([np.log(10.0)]), method="L-BFGS-B", bounds=[log_c]).x
        return cls(1.0, 0.0, float(np.exp(w[0])), int(p.size))

    @classmethod
    def fit_validated(cls, pred: Any, successes: Any, k: Any,
                      holdout: float = 1 / 3) -> BetaBinomialCalibration:
        """:meth:`fit`, keeping the fitted map only where it earns its place: groups in time order,
        the map and the identity (concentration only) are fitted on all but the newest
        ``holdout`` of them and scored on those; the winner is refitted on every group. Early
        outcomes of a predictor that has since learned can teach a map that no longer holds."""
        p = np.asarray(pred, dtype=np.float64)
        s = np.asarray(successes, dtype=np.float64)
        n = np.broadcast_to(np.asarray(k, dtype=np.float64), p.shape)
        cut = int(round(p.size * (1.0 - holdout)))
        if cut < 2 or p.size - cut < 2:
            return cls.fit(p, s, n, fit_map=False)
        x = logit(np.clip(p[cut:], EDGE, 1.0 - EDGE))
        scores = []
        for fit_map in (True, False):
            m = cls.fit(p[:cut], s[:cut], n[:cut], fit_map=fit_map)
            scores.append(float(_log_lik(x, s[cut:], n[cut:], m.slope, m.bias, m.concentration).mean()))
        return cls.fit(p, s, n, fit_map=scores[0] > scores[1])

    def fit_contamination(self, pred: Any, successes: Any, k: Any,
                          population: Any) -> BetaBinomialCalibration:
        """This calibration with ``contamination`` fitted by maximum likelihood on first
        observations (``pred`` made before a prompt's first outcomes, ``successes`` of ``k``):
        each group's outcome is explained by its own Beta with probability ``1 - e`` and by the
        Beta of a random prompt of ``population`` (raw predictions of the pool) with probability
        ``e``, ``e`` in ``[0, MAX_CONTAMINATION]``. Fewer than ``MIN_FIRST_GROUPS`` groups, or
        an empty population, give 0."""
        p = np.asarray(pred, dtype=np.float64)
        s = np.asarray(successes, dtype=np.float64)
        n = np.broadcast_to(np.asarray(k, dtype=np.float64), p.shape)
        pop = np.asarray(population, dtype=np.float64).ravel()
        if p.ndim != 1 or s.shape != p.shape:
            raise ValueError(f"pred and successes must be 1-D of one shape, got {p.shape}, {s.shape}")
        if p.size < MIN_FIRST_GROUPS or pop.size == 0:
            return replace(self, contamination=0.0)
        pop = np.quantile(pop, (np.arange(POPULATION_POINTS) + 0.5) / POPULATION_POINTS)
        own = np.exp(self._group_log_lik(p, s, n))
        pa, pb = self.beta(pop)
        mixed = np.exp(betaln(s[:, None] + pa, (n - s)[:, None] + pb) - betaln(pa, pb)).mean(axis=1)
        fit = minimize_scalar(lambda e: -float(np.mean(np.log((1.0 - e) * own + e * mixed + 1e-300))),
                              bounds=(0.0, MAX_CONTAMINATION), method="bounded")
        return replace(self, contamination=float(fit.x))

    def _group_log_lik(self, pred: np.ndarray, s: np.ndarray, n: np.ndarray) -> np.ndarray:
        x = logit(np.clip(pred, EDGE, 1.0 - EDGE))
        return _log_lik(x, s, n, self.slope, self.bias, self.concentration)

    def mean(self, pred: Any) -> np.ndarray:
        """The calibrated rates of raw predictions."""
        x = logit(np.clip(np.asarray(pred, dtype=np.float64), EDGE, 1.0 - EDGE))
        return expit(self.slope * x + self.bias)

    def beta(self, pred: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(alpha, beta)`` of each raw prediction's Beta predictive distribution."""
        mu = np.clip(self.mean(pred), 1e-9, 1.0 - 1e-9)
        return mu * self.concentration, (1.0 - mu) * self.concentration

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _log_lik(x: np.ndarray, s: np.ndarray, n: np.ndarray, slope: float, bias: float,
             concentration: float) -> np.ndarray:
    """Beta-binomial log-likelihood of each group (without the constant binomial coefficient)."""
    mu = np.clip(expit(slope * x + bias), 1e-9, 1.0 - 1e-9)
    alpha, beta = mu * concentration, (1.0 - mu) * concentration
    return betaln(s + alpha, n - s + beta) - betaln(alpha, beta)


__all__ = ["BetaBinomialCalibration"]
