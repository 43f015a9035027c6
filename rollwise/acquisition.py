"""Batch acquisition: a utility on predicted success rates plus diversity terms, built greedily.

The batch objective for a batch S of size B is

    F(S) = mean_i u(gamma_hat_i) + sum_terms weight * D_term(S)

with every term a *mean* over pairs, so a weight means the same at any B:

* :class:`TargetRateUtility`: u = -(gamma_hat - target)^2, prefers prompts the model solves about
  half the time (largest GRPO reward variance).
* :class:`InterStepExploration`: mean cosine distance from each chosen prompt to the previous
  step's batch. It does not depend on the rest of S, so it is a static per-candidate bonus.
* :class:`IntraBatchDispersion`: mean pairwise cosine distance inside S. Its marginal gain for
  candidate i is ``2 / (B - 1) * sum_{j in S} (1 - e_i . e_j)``, linear in ``s = sum_{j in S} e_j``.

:func:`greedy_batch` adds, B times, the candidate with the largest marginal gain. Marginal gains are
kept incrementally (one dot product per refreshed candidate, O(B N d) at worst) and refreshed lazily
from exact upper bounds, so on large pools only a small frontier is ever touched; the result is the
same as recomputing every gain from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TargetRateUtility:
    """u(gamma_hat) = -(gamma_hat - target)^2."""

    target: float = 0.5

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        return -((np.asarray(pred, dtype=np.float64) - self.target) ** 2)


@dataclass(frozen=True)
class InterStepExploration:
    """Bonus for being far (in cosine distance) from the previous step's batch."""

    weight: float

    def static_gain(self, emb: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        if previous is None or len(previous) == 0 or self.weight == 0:
            return np.zeros(len(emb))
        mean_prev = np.asarray(previous, dtype=np.float64).mean(axis=0)
        return self.weight * (1.0 - emb @ mean_prev)

    def value(self, batch: np.ndarray, previous: np.ndarray | None) -> float:
        if previous is None or len(previous) == 0:
            return 0.0
        return self.weight * float(np.mean(1.0 - batch @ np.asarray(previous, np.float64).T))


@dataclass(frozen=True)
class IntraBatchDispersion:
    """Bonus for spreading the batch out: mean pairwise cosine distance inside it."""

    weight: float

    def pair_coefficient(self, batch_size: int) -> float:
        """c such that B * marginal gain = c * sum_{j in S} (1 - e_i . e_j)."""
        return 0.0 if batch_size < 2 else 2.0 * self.weight / (batch_size - 1)

    def value(self, batch: np.ndarray) -> float:
        b = len(batch)
        if b < 2:
            return 0.0
        sim = batch @ batch.T
        return self.weight * float((b * b - sim.sum()) / (b * (b - 1)))  # diag of 1 - sim is 0


@dataclass(frozen=True)
class BatchAcquisition:
    """Utility plus diversity terms; ``select`` builds the batch greedily."""

    utility: TargetRateUtility
    intra: IntraBatchDispersion | None = None
    inter: InterStepExploration | None = None

    def objective(
        self, batch: Sequence[int], pred: np.ndarray, emb: np.ndarray, previous: np.ndarray | None
    ) -> float:
        """F(S) from scratch (for tests and reports; the greedy never calls it)."""
        idx = np.asarray(batch, dtype=np.int64)
        e = emb[idx].astype(np.float64)
        f = float(self.utility(pred[idx]).mean())
        if self.intra is not None:
            # D_intra uses the final batch size; here the batch is complete
            f += self.intra.value(e)
        if self.inter is not None:
            f += self.inter.value(e, previous)
        return f

    def select(
        self,
        pred: np.ndarray,
        emb: np.ndarray,
        batch_size: int,
        previous: np.ndarray | None = None,
    ) -> np.ndarray:
        """Indices (into ``pred``/``emb``) of the greedy batch."""
        static = self.utility(pred)
        if self.inter is not None:
            static = static + self.inter.static_gain(emb, previous)
        coef = 0.0 if self.intra is None else self.intra.pair_coefficient(batch_size)
        return greedy_batch(static, emb, batch_size, coef)


def greedy_batch(
    static: np.ndarray, emb: np.ndarray, batch_size: int, pair_coef: float, chunk: int = 512
) -> np.ndarray:
    """Greedy maximisation of ``sum_i static_i + pair_coef * sum_{i<j in S} (1 - e_i . e_j)``.

    Step t adds ``argmax_i static_i + pair_coef * (t - e_i . s_t)`` over the remaining candidates,
    with ``s_t`` the sum of the chosen embeddings (ties go to the lowest index). ``e_i . s`` is
    cached per candidate together with the step it was computed at; since
    ``e_i . s_t >= e_i . s_tau - ||s_t - s_tau||`` (unit vectors), a stale cache gives an exact
    upper bound on the current gain, and a candidate is recomputed only when that bound could beat
    the best exact gain. Candidates are visited in decreasing order of ``static`` and the unvisited
    tail is bounded by its first element, so work grows with the frontier, not with N.
    """
    n = len(static)
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}], got {batch_size}")
    if pair_coef == 0.0:
        return np.argsort(-static, kind="stable")[:batch_size].astype(np.int64)
    order = np.argsort(-static, kind="stable")  # position -> original index
    st = static[order].astype(np.float64)
    e_sorted = emb[order]
    dim = emb.shape[1]
    sums = np.zeros((batch_size + 1, dim))  # s_0 .. s_B
    acc = np.zeros(n)  # e_i . s_tau_i (positions), valid for visited positions
    tau = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    frontier = min(n, max(chunk, 2 * batch_size))
    chosen = np.empty(batch_size, dtype=np.int64)
    for t in range(batch_size):
        s_t = sums[t]
        drift = np.linalg.norm(s_t[None, :] - sums[: t + 1], axis=1)  # ||s_t - s_tau||
        s_norm = drift[0]  # s_0 = 0
        while True:
            pre = slice(0, frontier)
            gain_exact = st[pre] - pair_coef * acc[pre]
            fresh = (tau[pre] == t) & alive[pre]
            stale = (~fresh) & alive[pre]
            ub = np.where(stale, gain_exact + pair_coef * drift[tau[pre]] + 1e-9, -np.inf)
            best = gain_exact[fresh].max() if fresh.any() else -np.inf
            tail_ub = st[frontier] + pair_coef * s_norm + 1e-9 if frontier < n else -np.inf
            need = stale & (ub >= best)
            if need.any():
                pos = np.flatnonzero(need)
                acc[pos] = e_sorted[pos].astype(np.float64) @ s_t
                tau[pos] = t
                continue
            if tail_ub >= best:
                new = min(n, frontier + max(chunk, frontier))
                acc[frontier:new] = e_sorted[frontier:new].astype(np.float64) @ s_t
                tau[frontier:new] = t
                frontier = new
                continue
            break
        cand = np.flatnonzero(fresh)
        g = gain_exact[cand]
        top = cand[g == g.max()]
        pos = top[np.argmin(order[top])]  # lowest original index among ties
        chosen[t] = order[pos]
        alive[pos] = False
        sums[t + 1] = s_t + e_sorted[pos]
    return chosen
