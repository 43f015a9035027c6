"""MoPPS (arXiv 2507.04632): a Beta posterior per prompt, Thompson sampling toward a target rate."""

from __future__ import annotations

from typing import Any

import numpy as np

from rollwise.selectors.base import Selector, as_numpy, check_prepared
from rollwise.threads import DEFAULT_SELECTOR_THREADS


class MoPPSSelector(Selector):
    """Model-predictive prompt selection with a per-prompt Beta(alpha, beta) posterior.

    After each observation of a prompt with s successes out of k, its posterior is discounted
    toward the prior and updated: ``alpha <- decay * alpha + (1 - decay) * alpha0 + s`` (same for
    beta with k - s), so old evidence fades as the policy changes. Selection draws one Thompson
    sample per candidate and takes the ``batch_size`` samples closest to ``target``.
    Prompts never observed stay at the prior: MoPPS cannot generalise across prompts.
    """

    name = "mopps"

    def __init__(
        self,
        pool,
        batch_size: int,
        seed: int = 0,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        decay: float = 0.5,
        target: float = 0.5,
        threads: int | None = DEFAULT_SELECTOR_THREADS,
    ) -> None:
        super().__init__(pool, batch_size, seed, threads)
        for arg, v in (("prior_alpha", prior_alpha), ("prior_beta", prior_beta)):
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"{arg} must be a positive number, got {v}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target must lie in [0, 1], got {target}")
        self.prior_alpha, self.prior_beta = float(prior_alpha), float(prior_beta)
        self.decay, self.target = float(decay), float(target)
        self.alpha = np.full(len(pool), self.prior_alpha)
        self.beta = np.full(len(pool), self.prior_beta)

    def hyper_params(self) -> dict[str, Any]:
        return {"prior_alpha": self.prior_alpha, "prior_beta": self.prior_beta,
                "decay": self.decay, "target": self.target}

    def _select(self, candidates: np.ndarray | None, size: int,
                group_size: int | None) -> np.ndarray:
        cand = np.arange(len(self.pool)) if candidates is None else candidates
        theta = self.rng.beta(self.alpha[cand], self.beta[cand])
        if group_size is None:
            order = np.argsort(np.abs(theta - self.target), kind="stable")
        else:  # the sampled rate's chance of an informative group: Thompson sampling on it
            k = group_size
            order = np.argsort(theta**k + (1.0 - theta) ** k, kind="stable")
        return cand[order[:size]]

    def _observe(self, indices: np.ndarray, successes: np.ndarray, counts: np.ndarray) -> None:
        k, s = counts, successes
        d = self.decay
        self.alpha[indices] = d * self.alpha[indices] + (1 - d) * self.prior_alpha + s
        self.beta[indices] = d * self.beta[indices] + (1 - d) * self.prior_beta + (k - s)

    def _predict(self, indices: np.ndarray | None) -> np.ndarray:
        a = self.alpha if indices is None else self.alpha[indices]
        b = self.beta if indices is None else self.beta[indices]
        return a / (a + b)

    def predictive(self, indices: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """The Beta posteriors themselves: mean ``alpha / (alpha + beta)``, concentration
        ``alpha + beta``, no contamination."""
        idx = self._check_indices(indices, "indices", allow_repeats=True)
        a, b = self.alpha[idx], self.beta[idx]
        return a / (a + b), a + b, 0.0

    def _model_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta}

    def _prepare_model_state(self, model: dict[str, Any]):
        alpha, beta = as_numpy(model["alpha"], np.float64), as_numpy(model["beta"], np.float64)
        n = len(self.pool)
        check_prepared(alpha.shape == (n,) and beta.shape == (n,), "alpha/beta shape mismatch")
        check_prepared(bool(np.all(alpha > 0) and np.all(beta > 0)), "alpha/beta must be > 0")

        def commit() -> None:
            self.alpha, self.beta = alpha, beta

        return commit
