"""Readings of a run's regime from a predictor's own track record, for GPS to act on, and the
coverage floor that keeps every region of the pool checked.

Both read the records a selector keeps of each observed batch: the predictions it made *before*
the outcomes were known, the successes, the rollouts and whether each group was its prompt's
first observation. Nothing here sees true rates; everything is measured online.

* :class:`PredictorTrust`: does the predictor rank outcomes better than flat predictions? The
  Spearman correlation between the predictions and the observed success fractions of the groups
  of the last ``window`` batches (flat predictions score 0), turned into a trust in [0, 1] by its
  evidence: ``z = rho * sqrt(n - 1)`` (n groups; about standard normal under no discrimination),
  ``trust = clip(z / full_z, 0, 1)``. A predictor that has seen too little, or that is confident
  about regions it no longer samples and wrong there, earns none.
* :class:`RepeatExcess`: do repeats teach something their neighbours do not share? A prompt that
  is memorised rises on its repeats faster than the predictor (a function of the embedding,
  fitted on everything, memorised prompts included) expects for it, and the predictor then
  over-rates prompts never seen; prompts that transfer show neither. The reading compares the
  residuals (observed fraction minus prediction) of repeat visits with those of first visits in
  the same last ``window`` batches (Welch's t, so a predictor lagging a fast-learning policy moves
  both alike) and maps ``z`` linearly from ``null_z`` (0) to ``full_z`` (1). Measured on the
  simulated worlds (median z over a run, GPS repeating freely): 0.0 on the default world, 0.9
  on the small pool without memorisation, 2.5 / 2.5 / 3.0 at memorisation 0.5 / 1 / 2.
  With a ``margin`` the reading asks for evidence of absence instead: the rest comes off only as
  far as the upper confidence bound of the gap (``gap + bound_z * se``) lies below ``margin``.
  Under a rest, repeats are spread out and few, so the bound stays wide and the rest stays;
  absence of evidence is not read as evidence that repeats transfer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# one observed batch: (predictions before, successes, rollouts, first observation of the prompt)
Outcome = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _recent(outcomes: Sequence[Outcome], window: int) -> tuple[np.ndarray, ...] | None:
    recent = list(outcomes)[-window:]
    if not recent:
        return None
    return tuple(np.concatenate(c) for c in zip(*recent, strict=True))


@dataclass(frozen=True)
class Reading:
    """A regime reading: ``value`` in [0, 1] and the statistic behind it."""

    value: float
    statistic: float  # Spearman's rho (trust) or the mean residual gap (repeats); nan: no data
    z: float
    n: int  # groups the reading rests on


NO_READING = Reading(0.0, float("nan"), 0.0, 0)


@dataclass(frozen=True)
class PredictorTrust:
    """Trust in the predictor's ranking, from its recent batches (see the module)."""

    window: int = 8
    full_z: float = 2.0
    min_groups: int = 16

    def __call__(self, outcomes: Sequence[Outcome]) -> Reading:
        data = _recent(outcomes, self.window)
        if data is None:
            return NO_READING
        pred, succ, k = data[:3]
        rate = succ / np.maximum(k, 1.0)
        n = int(pred.size)
        if n < max(self.min_groups, 4) or np.ptp(pred) == 0 or np.ptp(rate) == 0:
            return Reading(0.0, float("nan"), 0.0, n)
        rho = float(stats.spearmanr(pred, rate).statistic)
        if not np.isfinite(rho):
            return Reading(0.0, float("nan"), 0.0, n)
        z = rho * float(np.sqrt(n - 1))
        return Reading(float(np.clip(z / self.full_z, 0.0, 1.0)), rho, z, n)


@dataclass(frozen=True)
class RepeatExcess:
    """How strongly repeats outrun the predictor compared with first visits (see the module)."""

    window: int = 16
    null_z: float = 1.0
    full_z: float = 2.5
    min_groups: int = 4  # of each kind
    margin: float | None = None  # set: the evidence rule (value from the gap's upper bound)
    bound_z: float = 1.64  # the one-sided bound of the evidence rule (95%)

    def __call__(self, outcomes: Sequence[Outcome]) -> Reading:
        data = _recent(outcomes, self.window)
        if data is None:
            return NO_READING
        pred, succ, k, first = data
        resid = succ / np.maximum(k, 1.0) - pred
        a, b = resid[~first], resid[first]
        n = int(resid.size)
        if a.size < self.min_groups or b.size < self.min_groups:
            return Reading(0.0, float("nan"), 0.0, n)
        gap = float(a.mean() - b.mean())
        var_a, var_b = a.var(ddof=1), b.var(ddof=1)
        if self.margin is not None:  # how far the gap's upper bound leaves room for memorising
            # a few groups that all failed vary less than their binomial noise: floor each
            # kind's variance at the noise its predictions imply, so they cannot narrow the bound
            p = np.clip(pred, 0.0, 1.0)
            noise = p * (1.0 - p) / np.maximum(k, 1.0)
            var_a, var_b = max(var_a, noise[~first].mean()), max(var_b, noise[first].mean())
        se = float(np.sqrt(var_a / a.size + var_b / b.size))
        if self.margin is not None:
            value = (gap + self.bound_z * se) / self.margin
            return Reading(float(np.clip(value, 0.0, 1.0)), gap, gap / se if se > 0 else 0.0, n)
        if se == 0:
            return Reading(0.0, gap, 0.0, n)
        z = gap / se
        value = (z - self.null_z) / (self.full_z - self.null_z)
        return Reading(float(np.clip(value, 0.0, 1.0)), gap, z, n)


def embedding_clusters(embeddings: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Each prompt's k-means cluster (cosine geometry: the rows are unit vectors), seeded."""
    from scipy.cluster.vq import kmeans2

    emb = np.asarray(embeddings, dtype=np.float64)
    k = int(min(n_clusters, len(emb)))
    if k <= 1:
        return np.zeros(len(emb), dtype=np.int64)
    _, labels = kmeans2(emb, k, seed=np.random.default_rng(seed), minit="++")
    return np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class CoverageFloor:
    """Per-cluster floors on the recent selections, so no region is written off on stale
    predictions.

    Over the last ``window`` observed batches and the one being built, each embedding cluster
    should hold at least ``floor`` times its share of the pool; the deficit is drawn at random
    inside the cluster. A cluster whose recent groups all came back with equal rewards is exempt
    when that is itself evidence: at least ``min_groups`` of them, and so many that all-equal
    rewards would be unlikely (probability below ``exempt_p``) had the cluster given informative
    groups at half the rate of all the recent groups. Then recent observations, not predictions,
    say it gives no signal (an easy region the policy always solves, a hard one it never does).
    Where every region is sparse (a small model: a few informative groups in ten), a handful of
    all-wrong groups is what an informative region also gives, and the floor stays.
    ``exempt_p=None`` is the first rule: any ``min_groups`` all-equal groups exempt a cluster.
    """

    clusters: np.ndarray
    floor: float = 0.5
    window: int = 8
    min_groups: int = 4
    exempt_p: float | None = 0.05

    def deficits(self, recent: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int
                 ) -> np.ndarray:
        """Draws owed to each cluster this step. ``recent``: (indices, success fractions) of the
        observed batches, oldest first."""
        n_c = int(self.clusters.max()) + 1
        share = np.bincount(self.clusters, minlength=n_c) / self.clusters.size
        batches = list(recent)[-self.window:]
        idx = (np.concatenate([b[0] for b in batches]) if batches
               else np.empty(0, dtype=np.int64)).astype(np.int64)
        rate = np.concatenate([b[1] for b in batches]) if batches else np.empty(0)
        counts = np.bincount(self.clusters[idx], minlength=n_c)
        informative = np.bincount(self.clusters[idx], weights=(rate > 0) & (rate < 1),
                                  minlength=n_c)
        target = self.floor * share * (len(batches) + 1) * batch_size
        owed = np.maximum(0, np.floor(target - counts)).astype(np.int64)
        rate = informative.sum() / counts.sum() if counts.sum() else 0.0
        silent = (counts >= self.min_groups) & (informative == 0)
        if self.exempt_p is None:  # the first rule: no evidence asked for
            pass
        elif rate > 0:  # all-equal groups unlikely at half the recent rate: the cluster is silent
            silent &= (1.0 - rate / 2.0) ** counts < self.exempt_p
        else:  # nothing anywhere gave signal: no cluster is known to be worse than the rest
            silent[:] = False
        owed[silent] = 0
        return owed

    def draw(self, recent, allowed: np.ndarray, batch_size: int, rng: np.random.Generator
             ) -> np.ndarray:
        """Prompts drawn at random inside the clusters owed draws (at most ``batch_size``)."""
        owed = self.deficits(recent, batch_size)
        if not owed.any():
            return np.empty(0, dtype=np.int64)
        if owed.sum() > batch_size:  # owed more than a batch: shares in proportion, largest first
            scaled = owed * batch_size / owed.sum()
            owed = np.floor(scaled).astype(np.int64)
            rest = batch_size - int(owed.sum())
            owed[np.argsort(-(scaled - owed), kind="stable")[:rest]] += 1
        picks = []
        for c in np.flatnonzero(owed):
            members = allowed[self.clusters[allowed] == c]
            take = min(int(owed[c]), members.size)
            if take:
                picks.append(rng.choice(members, size=take, replace=False))
        return np.sort(np.concatenate(picks)) if picks else np.empty(0, dtype=np.int64)
