"""DAPO dynamic sampling helpers and the shared metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rollwise
from rollwise.dynamic_sampling import DynamicSamplingBuffer, informative_mask
from rollwise.metrics import Stopwatch, effective_sample_ratio, spearman


def test_informative_mask():
    r = np.array([[1, 1, 1], [0, 0, 0], [0, 1, 0], [0.5, 0.5, 0.5], [0.5, 0.25, 0.5]])
    np.testing.assert_array_equal(informative_mask(r), [False, False, True, False, True])
    np.testing.assert_array_equal(informative_mask(np.ones((2, 1))), [False, False])  # k = 1
    assert informative_mask(np.empty((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match="rewards"):
        informative_mask(np.array([0, 1]))


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 6)),
                  elements=st.sampled_from([0.0, 0.5, 1.0])))
def test_informative_mask_matches_definition(r):
    expected = [len(set(row)) > 1 for row in r.tolist()]
    np.testing.assert_array_equal(informative_mask(r), expected)
    assert effective_sample_ratio(r) == pytest.approx(np.mean(expected))


def test_buffer_fills_with_informative_groups_only():
    buf = DynamicSamplingBuffer(batch_size=3)
    assert buf.needed == 3 and buf.rollouts_spent == 0
    keep = buf.add([0, 1, 2, 3], [[1, 1], [0, 1], [0, 0], [1, 0]])
    np.testing.assert_array_equal(keep, [False, True, False, True])
    assert buf.needed == 1 and buf.rollouts_spent == 8 and buf.rounds == 1
    keep = buf.add([5, 6], [[0, 1], [1, 0]])  # only one slot left: the second is not kept
    np.testing.assert_array_equal(keep, [True, False])
    assert buf.needed == 0 and buf.rollouts_spent == 12  # dropped groups still cost
    idx, rew = buf.pop()
    np.testing.assert_array_equal(idx, [1, 3, 5])
    np.testing.assert_array_equal(rew, [[0, 1], [1, 0], [0, 1]])
    assert buf.needed == 3 and buf.rounds == 0 and buf.rollouts_spent == 12  # lifetime total
    with pytest.raises(ValueError, match="nothing"):
        buf.pop()


def test_buffer_gives_up_after_max_rounds():
    buf = DynamicSamplingBuffer(batch_size=2, max_rounds=3)
    for r in range(3):
        assert buf.needed == 2
        buf.add([r], [[1, 1, 1]])  # never informative
    assert buf.needed == 0  # out of rounds
    idx, rew = buf.pop()
    assert idx.shape == (0,) and rew.shape == (0, 3)
    assert buf.rollouts_spent == 9


def test_buffer_loop_as_documented():
    """The docstring's loop with a selector: every kept group is informative, none repeats."""
    pool = rollwise.PromptPool(np.random.default_rng(0).standard_normal((200, 4)))
    sel = rollwise.make_selector("uniform", pool, 16, seed=0)
    truth = np.random.default_rng(1).uniform(size=200)
    rng = np.random.default_rng(2)
    buf = DynamicSamplingBuffer(batch_size=16)
    while buf.needed:
        idx = sel.select()[: buf.needed]
        buf.add(idx, (rng.random((idx.size, 4)) < truth[idx, None]).astype(float))
    idx, rew = buf.pop()
    assert idx.size == 16 and np.unique(idx).size == 16
    assert informative_mask(rew).all()
    assert buf.rollouts_spent >= 16 * 4


def test_buffer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        DynamicSamplingBuffer(0)
    with pytest.raises(ValueError, match="max_rounds"):
        DynamicSamplingBuffer(4, max_rounds=0)
    buf = DynamicSamplingBuffer(4)
    with pytest.raises(ValueError, match="rewards"):
        buf.add([0, 1], [[1, 0]])
    with pytest.raises(ValueError, match="rewards"):
        buf.add([0], [1, 0])
    assert buf.rollouts_spent == 0 and buf.rounds == 0 and buf.needed == 4  # nothing counted


def test_effective_sample_ratio():
    assert effective_sample_ratio(np.array([[1, 0], [1, 1], [0, 0], [0, 1]])) == 0.5
    assert np.isnan(effective_sample_ratio(np.empty((0, 4))))
    with pytest.raises(ValueError, match="rewards"):
        effective_sample_ratio(np.array([1, 0, 1]))


def test_spearman():
    x = np.array([0.1, 0.4, 0.2, 0.9])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.full(4, 0.5), x))  # constant prediction
    assert np.isnan(spearman(x, np.ones(4)))  # constant truth
    assert np.isnan(spearman(x[:1], x[:1]))  # fewer than two points
    with pytest.raises(ValueError, match="pred"):
        spearman(x, x[:3])


def test_stopwatch_accumulates():
    sw = Stopwatch()
    for _ in range(3):
        with sw("a"):
            pass
    with pytest.raises(RuntimeError):
        with sw("b"):
            raise RuntimeError("still timed")
    assert set(sw.seconds) == {"a", "b"} and all(v >= 0 for v in sw.seconds.values())
