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
* :class:`PredictedSignalScale` (optional): multiplies every diversity weight by the candidates'
  mean predicted reward variance ``4 gamma_hat (1 - gamma_hat)``. Diversity spreads a batch over
  *informative* prompts; when the predictor says almost nothing is informative (e.g. every rate
  near 0 after a run of all-wrong groups) the utility's differences shrink with it, and an
  unscaled diversity bonus would decide the batch alone, picking the embedding's outliers again
  and again. Scaled, the ranking of the predictions keeps the say.

:func:`greedy_batch` adds, B times, the candidate with the largest marginal gain. Exact gains are
kept incrementally for a frontier of the best candidates only; the rest of the pool is bounded, and
visited again (one matrix-vector product) only when that bound could beat the frontier, so the
result is the same as recomputing every gain from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rollwise.dynamic_sampling import informative_probability


def centred_unit(emb: np.ndarray) -> np.ndarray:
    """Rows minus their mean, scaled to unit norm (float32): embeddings whose cosine distances
    measure direction from the pool's middle rather than from the origin. A row at the mean stays
    zero (distance 1 from everything)."""
    x = np.asarray(emb, dtype=np.float64)
    x = x - x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 1e-12, norms, 1.0)).astype(np.float32)


@dataclass(frozen=True)
class TargetRateUtility:
    """u(gamma_hat) = -(gamma_hat - target)^2."""

    target: float = 0.5

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        return -((np.asarray(pred, dtype=np.float64) - self.target) ** 2)


@dataclass(frozen=True)
class InformativeGroupUtility:
    """u(gamma_hat) = the chance that a group of ``k`` rollouts is informative (rewards not all
    equal), ``E[1 - p^k - (1 - p)^k]`` with ``p ~ Beta(mu c, (1 - mu) c)``, ``mu =
    calibrate(gamma_hat)``, mixed with the candidates' mean chance in the proportion
    ``contamination``: what a dynamic-sampling round keeps. Ranks like :class:`TargetRateUtility`
    at target 0.5 where every prompt is as certain; uncertainty lowers the value at 0.5 (0.875
    -> 0.6 at k = 4 under Beta(1, 1))."""

    k: int
    concentration: float = float("inf")
    contamination: float = 0.0
    calibrate: Callable[[np.ndarray], np.ndarray] | None = None

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        mean = np.asarray(pred, dtype=np.float64)
        if self.calibrate is not None:
            mean = np.asarray(self.calibrate(mean), dtype=np.float64)
        return informative_probability(mean, self.k, self.concentration, self.contamination)


@dataclass(frozen=True)
class InterStepExploration:
    """Bonus for being far (in cosine distance) from the previous step's batch."""

    weight: float

    def static_gain(self, emb: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        if previous is None or len(previous) == 0 or self.weight == 0:
            return np.zeros(len(emb))
        mean_prev = np.asarray(previous, dtype=np.float64).mean(axis=0)
        if emb.dtype == np.float32:  # no float64 copy of a large pool
            mean_prev = mean_prev.astype(np.float32)
        return self.weight * (1.0 - (emb @ mean_prev).astype(np.float64))

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
class PredictedSignalScale:
    """Diversity multiplier: mean over the candidates of ``4 gamma_hat (1 - gamma_hat)`` (1 when
    every prediction is 0.5, 0 when every prompt is predicted always or never solved)."""

    def __call__(self, pred: np.ndarray) -> float:
        p = np.clip(np.asarray(pred, dtype=np.float64), 0.0, 1.0)
        return float(np.mean(4.0 * p * (1.0 - p))) if p.size else 0.0


@dataclass(frozen=True)
class BatchAcquisition:
    """Utility plus diversity terms; ``select`` builds the batch greedily.

    ``scale`` (e.g. :class:`PredictedSignalScale`) maps the candidates' predictions to a factor
    applied to every diversity term; None keeps the weights as they are."""

    utility: TargetRateUtility | InformativeGroupUtility
    intra: IntraBatchDispersion | None = None
    inter: InterStepExploration | None = None
    scale: PredictedSignalScale | None = None

    def diversity_factor(self, pred: np.ndarray) -> float:
        return 1.0 if self.scale is None else self.scale(pred)

    def objective(
        self, batch: Sequence[int], pred: np.ndarray, emb: np.ndarray, previous: np.ndarray | None
    ) -> float:
        """F(S) from scratch (for tests and reports; the greedy never calls it)."""
        idx = np.asarray(batch, dtype=np.int64)
        e = emb[idx].astype(np.float64)
        f = float(self.utility(pred[idx]).mean())
        factor = self.diversity_factor(pred)  # over all candidates, as in select
        if self.intra is not None:
            # D_intra uses the final batch size; here the batch is complete
            f += factor * self.intra.value(e)
        if self.inter is not None:
            f += factor * self.inter.value(e, previous)
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
        factor = self.diversity_factor(pred)
        if self.inter is not None and factor > 0:
            static = static + factor * self.inter.static_gain(emb, previous)
        coef = 0.0 if self.intra is None else factor * self.intra.pair_coefficient(batch_size)
        return greedy_batch(static, emb, batch_size, coef)


# Tuning of greedy_batch's rounds. None changes which batch it returns (every pick is verified
# exactly); they only trade matrix products against Python-level work. The frontier's size was
# measured on one core (benchmarks/overhead.py's pools): a frontier of max(1024, 4 B) makes the
# slowest early step at N = 40k, B = 256 about a quarter faster than max(4096, 8 B), and a
# steady step 14 ms faster, since every speculative pick updates the whole frontier.
FRONTIER_MIN = 1024  # the frontier holds at least this many candidates ...
VERIFY_BLOCK = 8  # picks verified against the whole pool per product, doubling block by block
FRONTIER_PER_PICK = 4  # ... and at least this many per batch slot
FIRST_SPECULATION = 16  # picks speculated in the first round; doubled after a fully kept round
MAX_SPECULATION = 256  # ... up to this many
MIN_SPECULATION = 4  # after a round that kept only some picks: max(this, twice what it kept)
MAX_GAIN_REUSES = 4  # rounds that may reuse the gains a verification computed before a fresh pass
GATHER_FRACTION = 4  # verify by gathering the rows at risk when fewer than 1/this of the pool
RELATIVE_SLACK = 1e-12  # float64 slack on the picks' gains
DRIFT_SLACK = 1e-6  # relative slack on the norm of the drifted running sum


def greedy_batch_reference(static: np.ndarray, emb: np.ndarray, batch_size: int,
                           pair_coef: float) -> np.ndarray:
    """The greedy :func:`greedy_batch` computes, by recomputing every gain at every step (one full
    pass per pick; float64, lowest index on ties): the specification, and the tests' reference."""
    e = np.asarray(emb, dtype=np.float64)
    static = np.asarray(static, dtype=np.float64)
    alive = np.ones(len(static), dtype=bool)
    chosen: list[int] = []
    for _ in range(batch_size):
        s = e[chosen].sum(axis=0) if chosen else np.zeros(e.shape[1])
        gains = static + pair_coef * (len(chosen) - e @ s)
        gains[~alive] = -np.inf
        i = int(np.argmax(gains))
        chosen.append(i)
        alive[i] = False
    return np.asarray(chosen, dtype=np.int64)


def greedy_batch(
    static: np.ndarray, emb: np.ndarray, batch_size: int, pair_coef: float, chunk: int = FRONTIER_MIN
) -> np.ndarray:
    """Greedy maximisation of ``sum_i static_i + pair_coef * sum_{i<j in S} (1 - e_i . e_j)``.

    Step t adds ``argmax_i static_i + pair_coef * (t - e_i . s_t)`` over the remaining candidates,
    with ``s_t`` the sum of the chosen embeddings (ties go to the lowest index); rows of ``emb``
    are unit vectors. The result is that of recomputing every gain from scratch at every step,
    but the pool is swept with a few matrix products instead of one pass per step, in rounds:

    1. every candidate's gain at the current state (one matrix-vector pass, or the previous
       round's products); the best one, re-checked in float64 among all candidates within the
       rounding error, is picked;
    2. the next picks are made greedily inside a *frontier*, the ``max(chunk, 4 B)`` candidates
       with the best gains, whose exact float64 gains are kept up to date;
    3. those picks are verified against every candidate outside the frontier. After a pick's
       predecessors a candidate's gain has grown by at most ``pair_coef * ||s_t - s_round||``
       (unit vectors); the candidates that this bound cannot rule out get their exact gains from
       matrix products with the picks' running sums, in blocks of picks that double in size, up
       to the first pick that an outside candidate could match or beat (picks before it are kept).

    Rounding errors of the (float32) products are bounded and only ever widen the checks.
    """
    static = np.asarray(static, dtype=np.float64)
    n = len(static)
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}], got {batch_size}")
    if np.isnan(static).any():
        raise ValueError("static gains contain NaN")
    if pair_coef == 0.0:
        return np.argsort(-static, kind="stable")[:batch_size].astype(np.int64)
    emb = np.asarray(emb)
    if emb.dtype not in (np.float32, np.float64):
        emb = emb.astype(np.float64)
    c = float(pair_coef)
    dim = emb.shape[1]
    # |fl(e_i . v) - e_i . v| <= eps * ||v|| for a unit e_i (a generous rounding-error bound)
    eps = 4.0 * dim * float(np.finfo(emb.dtype).eps)
    chosen: list[int] = []
    alive = np.ones(n, dtype=bool)
    s = np.zeros(dim)  # sum of the chosen embeddings, float64
    size = min(n, max(int(chunk), FRONTIER_PER_PICK * batch_size))
    spec = FIRST_SPECULATION  # picks speculated per round
    carried: tuple[np.ndarray, float] | None = None  # gains at the current state, their error
    reuse = 0

    def take(i: int) -> None:
        chosen.append(i)
        alive[i] = False
        s[:] += emb[i]

    while len(chosen) < batch_size:
        # 1. every candidate's gain at the current state, and a certified pick
        if carried is not None and reuse < MAX_GAIN_REUSES:
            (g, err), reuse = carried, reuse + 1
        elif chosen:
            g = static - c * (emb @ s.astype(emb.dtype)).astype(np.float64)
            err, reuse = c * eps * (1.0 + float(np.linalg.norm(s))), 0
        else:
            g, err = static.copy(), 0.0
        carried = None
        g[~alive] = -np.inf
        top = g.max()
        near = np.flatnonzero(alive & (g >= top - 2.0 * err))
        if near.size > 1 and err > 0:  # resolve in float64 (and ties by the lowest index)
            exact = static[near] - c * (emb[near].astype(np.float64) @ s)
            near = near[exact == exact.max()]
        take(int(near.min()))
        remaining = batch_size - len(chosen)
        if remaining == 0:
            break

        # 2. speculate inside the frontier
        live = np.flatnonzero(alive)
        complete = size >= live.size
        if complete:
            front = live
        else:
            front = np.sort(live[np.argpartition(-g[live], size)[:size]])
        e_front = emb[front].astype(np.float64)
        acc = e_front @ s
        st_front = static[front]
        alive_f = np.ones(front.size, dtype=bool)
        m = remaining if complete else min(spec, remaining)
        picks = np.empty(m, dtype=np.int64)
        bests = np.empty(m)
        for k in range(m):
            gains = np.where(alive_f, st_front - c * acc, -np.inf)
            bests[k] = gains.max()
            j = int(np.flatnonzero(alive_f & (gains == bests[k]))[0])  # front is sorted
            picks[k] = front[j]
            alive_f[j] = False
            acc += e_front @ e_front[j]
        if complete:  # nothing outside the frontier: the picks are the greedy's
            for i in picks:
                take(int(i))
            break

        # 3. verify the picks against everything outside the frontier
        outside = alive.copy()
        outside[front] = False
        # embeddings added since g, before each speculative pick: chosen[-1], picks[:-1]
        cols = np.concatenate([[chosen[-1]], picks[:-1]])
        grown_s = np.cumsum(emb[cols].astype(np.float64), axis=0)  # (m, d): s_k - s_round
        drift = np.linalg.norm(grown_s, axis=1)
        grown_s = grown_s.astype(emb.dtype)
        slack = RELATIVE_SLACK * (1.0 + np.abs(bests))
        threshold = np.min(bests - c * drift * (1.0 + DRIFT_SLACK)) - err - float(slack.max())
        risky = outside & (g >= threshold)
        n_risky = int(risky.sum())
        # error bound of the gains below: the products, then the float32 running sums
        steps = np.arange(1, m + 1)
        margin = err + c * (eps * steps + 2.0 * float(np.finfo(emb.dtype).eps) * steps**2) + slack
        ok = np.ones(m, dtype=bool)
        grown = None
        if GATHER_FRACTION * n_risky < n:  # gather the few rows at risk
            if n_risky:
                idx = np.flatnonzero(risky)
                # (m, n_risky): e_i . (s_k - s_round)
                worst = (g[idx] - c * (grown_s @ emb[idx].T).astype(np.float64)).max(axis=1)
                ok = bests > worst + margin
        else:  # most of the pool: products with all of it, in growing blocks of picks, up to
            # the first pick that fails; the failing row is reused by the next round
            g_out = np.where(outside, g, -np.inf)
            lo, width = 0, VERIFY_BLOCK
            while lo < m and ok[lo]:
                block = grown_s[lo : lo + width] @ emb.T  # (width, n)
                for r in range(block.shape[0]):
                    k = lo + r
                    if not bests[k] > (g_out - c * block[r]).max() + margin[k]:
                        ok[k:] = False
                        grown = block[r]
                        break
                lo, width = lo + block.shape[0], 2 * width
        kept = m if ok.all() else int(np.argmin(ok))
        for i in picks[:kept]:
            take(int(i))
        if grown is not None:  # every gain at the new state, for the next round
            g_new = g - c * grown.astype(np.float64)
            g_new[front] = static[front] - c * (e_front @ s)  # exact where cheap
            carried = (g_new, float(margin[kept]))
        spec = min(2 * spec, MAX_SPECULATION) if kept == m else max(MIN_SPECULATION, 2 * kept)
    return np.asarray(chosen, dtype=np.int64)
