"""Greedy batch acquisition against brute force: every step's pick maximises the marginal gain."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollwise.acquisition import (
    BatchAcquisition,
    InterStepExploration,
    IntraBatchDispersion,
    PredictedSignalScale,
    TargetRateUtility,
    centred_unit,
    greedy_batch,
    greedy_batch_reference,
)

TOL = 1e-9


def unit_rows(rng, n, d, dtype=np.float32):
    e = rng.standard_normal((n, d))
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(dtype)


# ---- brute force -----------------------------------------------------------------------------

def pair_objective(static, emb, batch, c):
    """sum_i static_i + c * sum_{i<j in S} (1 - e_i . e_j), from scratch, in float64."""
    s = np.asarray(batch, dtype=np.int64)
    e = emb[s].astype(np.float64)
    return float(static[s].sum()) + c * pair_distance_sum(e)


def pair_distance_sum(e):
    """sum_{i<j} (1 - e_i . e_j); explicit upper triangle (float32 rows are not exactly unit)."""
    return float(np.triu(1.0 - e @ e.T, k=1).sum())


def check_greedy(chosen, gain_fn, n, tol=TOL):
    """Replay ``chosen``: at each step its pick's gain, recomputed from scratch against every
    remaining candidate, is the maximum (up to ``tol``; the maximiser itself when it is unique)."""
    chosen = np.asarray(chosen)
    assert np.unique(chosen).size == chosen.size
    assert chosen.min() >= 0 and chosen.max() < n
    for t in range(len(chosen)):
        prefix = [int(i) for i in chosen[:t]]
        remaining = np.setdiff1d(np.arange(n), prefix)
        gains = np.array([gain_fn(prefix, int(i)) for i in remaining])
        best = gains.max()
        winners = remaining[gains >= best - tol]
        assert chosen[t] in winners, f"step {t}: picked {chosen[t]}, maximisers {winners}"


def greedy_gain_fn(static, emb, c):
    def gain(prefix, i):
        return pair_objective(static, emb, prefix + [i], c) - pair_objective(static, emb, prefix, c)
    return gain


# ---- greedy_batch ----------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 6),
    frac=st.floats(0.0, 1.0),
    coef=st.sampled_from([0.0, 1e-4, 1e-2, 0.3, 2.0]),
    ties=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_greedy_batch_matches_brute_force_small(n, d, frac, coef, ties, seed):
    rng = np.random.default_rng(seed)
    batch = max(1, int(round(frac * n)))
    emb = unit_rows(rng, n, d)
    if ties:  # duplicated embeddings and integer statics: many exact ties
        emb = emb[rng.integers(0, max(1, n // 3), size=n)]
        static = rng.integers(-2, 1, size=n).astype(np.float64)
    else:
        static = -((rng.uniform(size=n) - 0.5) ** 2)
    out = greedy_batch(static, emb, batch, coef)
    assert out.dtype == np.int64 and out.shape == (batch,)
    check_greedy(out, greedy_gain_fn(static, emb, coef), n)


def test_greedy_without_pair_term_is_top_b_lowest_index_first():
    static = np.array([0.0, 1.0, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(greedy_batch(static, np.ones((5, 2)), 3, 0.0), [1, 2, 4])


def test_greedy_ties_go_to_lowest_index():
    emb = np.tile(np.array([[1.0, 0.0]]), (6, 1))
    emb[3] = [0.0, 1.0]
    # all equal statics: the first pick is index 0; then index 3 (orthogonal) has the largest gain
    out = greedy_batch(np.zeros(6), emb, 3, 0.5)
    np.testing.assert_array_equal(out, [0, 3, 1])


def test_greedy_batch_rejects_bad_batch_size():
    for b in (0, 4):
        with pytest.raises(ValueError, match="batch_size"):
            greedy_batch(np.zeros(3), np.ones((3, 2)), b, 0.1)


def _large_case(kind, n, d, seed=0):
    rng = np.random.default_rng(seed)
    emb = unit_rows(rng, n, d)
    if kind == "spread":  # predictions spread over [0, 1]
        static = -((rng.uniform(size=n) - 0.5) ** 2)
    elif kind == "concentrated":  # an untrained model: everything predicted near 0.5
        static = -((0.5 + 0.01 * rng.standard_normal(n) - 0.5) ** 2)
    elif kind == "flat":  # identical predictions: only diversity decides
        static = np.zeros(n)
    else:  # clustered embeddings (a few topics) and spread predictions
        centres = unit_rows(rng, 8, d, np.float64)
        emb = centres[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, d)) / np.sqrt(d)
        emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
        static = -((rng.uniform(size=n) - 0.5) ** 2)
    return static, emb


def assert_is_greedy(out, static, emb, c, tol=TOL):
    """Vectorised replay: every pick's gain, recomputed from scratch in float64, is the maximum
    over the remaining candidates (up to ``tol``)."""
    e = emb.astype(np.float64)
    assert np.unique(out).size == out.size
    for t in range(out.size):
        s = e[out[:t]].sum(axis=0)
        gains = static + c * (t - e @ s)
        gains[out[:t]] = -np.inf
        assert gains[out[t]] >= gains.max() - tol, f"step {t}: {gains[out[t]]} < {gains.max()}"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(10, 150),
    d=st.integers(1, 8),
    batch=st.integers(1, 25),
    chunk=st.sampled_from([1, 3, 8, 32]),
    coef=st.sampled_from([1e-3, 0.05, 0.5, 5.0]),
    kind=st.sampled_from(["spread", "flat", "ties"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_greedy_batch_frontier_and_verification(n, d, batch, chunk, coef, kind, seed):
    """Small frontiers (``chunk``, B << N) force the speculate-and-verify rounds."""
    rng = np.random.default_rng(seed)
    batch = min(batch, n)
    emb = unit_rows(rng, n, d)
    static = {"spread": -((rng.uniform(size=n) - 0.5) ** 2), "flat": np.zeros(n),
              "ties": rng.integers(-1, 1, size=n).astype(np.float64)}[kind]
    if kind == "ties":
        emb = emb[rng.integers(0, max(1, n // 4), size=n)]
    out = greedy_batch(static, emb, batch, coef, chunk=chunk)
    assert out.shape == (batch,) and out.dtype == np.int64
    assert_is_greedy(out, static, emb, coef)
    ref = greedy_batch_reference(static, emb, batch, coef)
    np.testing.assert_allclose(pair_objective(static, emb, out, coef),
                               pair_objective(static, emb, ref, coef), rtol=0, atol=1e-7)


@pytest.mark.parametrize("kind", ["spread", "concentrated", "flat", "clustered"])
@pytest.mark.parametrize("coef", [2 * 0.1 / 63, 0.05])
def test_greedy_batch_matches_brute_force_large(kind, coef):
    """N = 20000, d = 64, B = 64: the frontier and its verification must not change the result."""
    static, emb = _large_case(kind, 20000, 64)
    out = greedy_batch(static, emb, 64, coef)
    ref = greedy_batch_reference(static, emb, 64, coef)
    if not np.array_equal(out, ref):  # only float near-ties may differ
        assert_is_greedy(out, static, emb, coef)
    np.testing.assert_allclose(pair_objective(static, emb, out, coef),
                               pair_objective(static, emb, ref, coef), rtol=0, atol=1e-7)


def test_greedy_batch_float64_embeddings_and_minus_inf():
    rng = np.random.default_rng(3)
    emb = unit_rows(rng, 500, 16, np.float64)
    static = -((rng.uniform(size=500) - 0.5) ** 2)
    static[::3] = -np.inf  # excluded candidates come last, in index order
    out = greedy_batch(static, emb, 400, 0.01, chunk=8)
    finite = np.isfinite(static).sum()
    assert np.isfinite(static[out[:finite]]).all()
    np.testing.assert_array_equal(out[finite:], np.flatnonzero(~np.isfinite(static))[: 400 - finite])
    assert_is_greedy(out[:finite], static, emb, 0.01)
    with pytest.raises(ValueError, match="static"):
        greedy_batch(np.array([0.0, np.nan]), emb[:2], 1, 0.1)


# ---- BatchAcquisition ------------------------------------------------------------------------

def final_b_objective(acq, pred, emb, batch_size, previous):
    """F(S) of the module docstring with every mean normalised by the final batch size B:

    F_B(S) = sum_{i in S} u_i / B
             + w_intra * 2 / (B (B - 1)) * sum_{i<j in S} (1 - e_i . e_j)
             + w_inter / (B |P|) * sum_{i in S, p in P} (1 - e_i . e_p)

    For |S| = B this is ``acq.objective``; B * (F_B(S + i) - F_B(S)) is the greedy's gain.
    """
    e_all = emb.astype(np.float64)
    prev = None if previous is None or len(previous) == 0 else np.asarray(previous, np.float64)
    factor = 1.0 if acq.scale is None else float(np.mean(4 * pred * (1 - pred)))

    def f(batch):
        s = np.asarray(batch, dtype=np.int64)
        e = e_all[s]
        val = float(acq.utility(pred[s]).sum()) / batch_size
        if acq.intra is not None and batch_size > 1:
            pairs = pair_distance_sum(e)
            val += factor * acq.intra.weight * 2.0 / (batch_size * (batch_size - 1)) * pairs
        if acq.inter is not None and prev is not None:
            val += factor * acq.inter.weight * float((1.0 - e @ prev.T).sum()) / (batch_size * len(prev))
        return val

    return f


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(1, 25),
    d=st.integers(1, 5),
    frac=st.floats(0.0, 1.0),
    target=st.floats(0.0, 1.0),
    w_intra=st.sampled_from([None, 0.0, 0.05, 0.5, 3.0]),
    w_inter=st.sampled_from([None, 0.0, 0.1, 1.0]),
    n_prev=st.integers(0, 6),
    scaled=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_batch_acquisition_is_greedy_on_final_b_objective(
    n, d, frac, target, w_intra, w_inter, n_prev, scaled, seed
):
    rng = np.random.default_rng(seed)
    batch = max(1, int(round(frac * n)))
    pred, emb = rng.uniform(size=n), unit_rows(rng, n, d)
    previous = unit_rows(rng, n_prev, d) if n_prev else None
    acq = BatchAcquisition(
        TargetRateUtility(target),
        None if w_intra is None else IntraBatchDispersion(w_intra),
        None if w_inter is None else InterStepExploration(w_inter),
        PredictedSignalScale() if scaled else None,
    )
    out = acq.select(pred, emb, batch, previous)
    f = final_b_objective(acq, pred, emb, batch, previous)
    np.testing.assert_allclose(f(out), acq.objective(out, pred, emb, previous), atol=1e-6)
    check_greedy(out, lambda prefix, i: batch * (f(prefix + [i]) - f(prefix)), n, tol=1e-8)


def test_signal_scale_lets_the_ranking_decide_when_nothing_is_predicted_informative():
    # Every prediction near 0 (after all-wrong groups): the utility's differences are tiny.
    # Unscaled, a diversity weight of 0.1 picks the two outliers; scaled by the mean predicted
    # reward variance, the two prompts predicted most often solved win.
    emb = np.array([[1.0, 0.0], [0.99, 0.141], [0.6, 0.8], [0.6, -0.8]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pred = np.array([0.004, 0.003, 0.0001, 0.0001])
    plain = BatchAcquisition(TargetRateUtility(0.5), IntraBatchDispersion(0.1),
                             InterStepExploration(0.1))
    scaled = BatchAcquisition(TargetRateUtility(0.5), IntraBatchDispersion(0.1),
                              InterStepExploration(0.1), PredictedSignalScale())
    previous = emb[[0]]
    assert set(plain.select(pred, emb, 2, previous)) == {2, 3}
    assert set(scaled.select(pred, emb, 2, previous)) == {0, 1}
    assert PredictedSignalScale()(np.full(3, 0.5)) == pytest.approx(1.0)
    assert PredictedSignalScale()(np.array([0.0, 1.0])) == 0.0
    # predictions spread around the target keep most of the diversity weight
    assert PredictedSignalScale()(np.array([0.3, 0.5, 0.7])) == pytest.approx((0.84 + 1 + 0.84) / 3)


def test_utility_prefers_the_target_rate():
    u = TargetRateUtility(0.3)
    np.testing.assert_allclose(u(np.array([0.3, 0.0, 1.0])), [0.0, -0.09, -0.49])
    acq = BatchAcquisition(u)
    pred = np.array([0.9, 0.31, 0.5, 0.29, 0.0])
    assert set(acq.select(pred, unit_rows(np.random.default_rng(0), 5, 3), 2)) == {1, 3}


def test_dispersion_prefers_spread_batches():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    acq = BatchAcquisition(TargetRateUtility(0.5), IntraBatchDispersion(1.0))
    # equal utilities: the duplicate of prompt 0 is skipped for the orthogonal prompt 2
    np.testing.assert_array_equal(acq.select(np.full(3, 0.5), emb, 2), [0, 2])
    assert IntraBatchDispersion(1.0).value(emb[[0, 2]]) == pytest.approx(1.0)
    assert IntraBatchDispersion(1.0).value(emb[[0, 1]]) == pytest.approx(0.0)


def test_inter_step_exploration_moves_away_from_previous_batch():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    acq = BatchAcquisition(TargetRateUtility(0.5), None, InterStepExploration(1.0))
    np.testing.assert_array_equal(acq.select(np.full(3, 0.5), emb, 1, emb[[0]]), [2])
    np.testing.assert_array_equal(acq.select(np.full(3, 0.5), emb, 1, None), [0])


def test_centred_unit_is_unit_and_ignores_a_shared_offset():
    rng = np.random.default_rng(3)
    e = rng.standard_normal((40, 6))
    c = centred_unit(e)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-6)
    # directions from the pool's middle: adding one vector to every row changes nothing
    np.testing.assert_allclose(centred_unit(e + 5.0 * rng.standard_normal(6)), c, atol=1e-5)
    # a row at the mean stays zero rather than dividing by zero
    np.testing.assert_array_equal(centred_unit(np.array([[1.0, 2.0], [3.0, 4.0], [2.0, 3.0]]))[2],
                                  [0.0, 0.0])


def outlier_pool(seed=0, d=16):
    """90 prompts close around one direction and 10 outliers around it, unit rows (as a text
    embedding of one family with a few long or odd prompts looks)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(d)
    c /= np.linalg.norm(c)
    e = np.vstack([c + 0.05 * rng.standard_normal((90, d)), c + 0.5 * rng.standard_normal((10, d))])
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centred_diversity_drops_the_pull_to_outliers(seed):
    """Equal predictions: raw cosine diversity fills the batches with the outliers (10% of the
    pool); on centred embeddings they get a few slots, not all."""
    raw = outlier_pool(seed)
    acq = BatchAcquisition(TargetRateUtility(), IntraBatchDispersion(0.1), InterStepExploration(0.1))
    pred = np.full(len(raw), 0.3)
    for emb, low, high in [(raw, 45, 50), (centred_unit(raw), 0, 25)]:
        prev, outliers = None, 0
        for _ in range(5):
            batch = acq.select(pred, emb, 10, prev)
            outliers += int((batch >= 90).sum())
            prev = emb[batch]
        assert low <= outliers <= high
