"""Predictive dynamic sampling (rollwise.dynamic_sampling) and the GRESO baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rollwise
from rollwise.dynamic_sampling import (
    DynamicSampler,
    fill_probability,
    informative_probability,
    prompts_to_fill,
)
from rollwise.selectors import MoPPSSelector


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    return rollwise.PromptPool(rng.normal(size=(60, 8)).astype(np.float32))


def test_informative_probability_point_and_beta():
    # k = 4: 1 - p^4 - (1 - p)^4
    assert informative_probability([0.5], 4)[0] == pytest.approx(1 - 2 / 16)
    assert informative_probability([0.0, 1.0], 4).tolist() == [0.0, 0.0]
    # under Beta(1, 1) (mean 0.5, concentration 2): E[p^4] = 1/5, so 1 - 2/5
    assert informative_probability([0.5], 4, 2.0)[0] == pytest.approx(0.6)
    # uncertainty moves the value: Beta(0.2, 1.8) puts its mass near 0, so less than the point
    assert informative_probability([0.1], 4, 2.0)[0] < informative_probability([0.1], 4)[0]


def test_fill_probability_and_prefix():
    assert fill_probability([0.5, 0.5], 2) == pytest.approx(0.25)
    assert fill_probability([0.5, 0.5], 1) == pytest.approx(0.75)
    assert fill_probability([1.0] * 3, 4) == 0.0
    # 1 of [0.5, 0.5, 0.5]: prefixes give 0.5, 0.75, 0.875
    assert prompts_to_fill([0.5, 0.5, 0.5], 1, 0.8) == 3
    assert prompts_to_fill([0.5, 0.5, 0.5], 1, 0.7) == 2
    assert prompts_to_fill([0.5, 0.5], 1, 0.9) is None


class _Fixed(MoPPSSelector):
    """MoPPS whose predictions are set by the test; records the order of its calls."""

    calls: list

    def informative_chance(self, indices, group_size):
        return np.full(len(indices), self.chance)


def test_round_is_sized_from_predictions(pool):
    sizes = {}
    for chance in (0.9, 0.5, 0.3):
        sel = _Fixed(pool, 8, seed=0)
        sel.chance = chance
        sampler = DynamicSampler(sel, 4, fill_confidence=0.9)
        sampler.begin_step()
        sizes[chance] = sampler.plan(8).indices.size
    assert sizes[0.9] < 16 < sizes[0.3]  # confident chances: fewer prompts, in one round
    assert sizes[0.5] == prompts_to_fill([0.5] * 60, 8, 0.9) < 32
    assert sizes[0.3] == 32  # the cap on prompts per round (4 batches)


def test_no_prompt_twice_in_one_step(pool):
    sel = rollwise.make_selector("mopps", pool, 8, seed=0)
    sampler = DynamicSampler(sel, 4, sizing="full")
    sampler.begin_step()
    rounds = []
    for _ in range(5):
        plan = sampler.plan(8)
        sel.observe(plan.indices, np.zeros((plan.indices.size, 4)))
        rounds.append(plan.indices)
    every = np.concatenate(rounds)
    assert every.size == 40 and np.unique(every).size == 40


def test_predicted_sizing_needs_predictions(pool):
    with pytest.raises(ValueError, match="sizing='predicted'"):
        DynamicSampler(rollwise.make_selector("uniform", pool, 8), 4, sizing="predicted")
    with pytest.raises(ValueError, match="fill_confidence"):
        DynamicSampler(rollwise.make_selector("gps", pool, 8), 4, fill_confidence=1.0)


def test_greso_skip_rule_by_hand(pool):
    sel = rollwise.make_selector("greso", pool, 4, seed=0)
    idx = np.array([0, 1, 2, 3])
    # prompt 0 all-correct, 1 all-wrong, 2 mixed, 3 all-wrong
    rewards = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=float)
    sel.observe(idx, rewards)
    # easy share 1/4 > 0.25/3: p_easy 0.5 -> 0.49; hard share 2/4 > 0.5/3: p_hard -> 0.49
    assert sel.p_easy == pytest.approx(0.49) and sel.p_hard == pytest.approx(0.49)
    skip = sel.skip_probability(idx)
    assert skip == pytest.approx([1 - 0.49, 1 - 0.49, 0.0, 1 - 0.49])
    sel.observe(idx, rewards)  # a second time: counts 2, p moved again to 0.48
    assert sel.skip_probability([0])[0] == pytest.approx(1 - 0.48**2)
    assert sel.skip_probability([4])[0] == 0.0  # never seen: never skipped
    for _ in range(300):  # many repeats: the floor keeps a chance of 1%
        sel.observe(idx, rewards)
    assert sel.skip_probability([1])[0] == pytest.approx(0.99)
    assert sel.p_hard == pytest.approx(0.05)


def test_greso_skips_zero_variance_prompts(pool):
    sel = rollwise.make_selector("greso", pool, 10, seed=0)
    hard = np.arange(30)
    for _ in range(5):
        sel.observe(hard, np.zeros((30, 4)))
    picked = np.concatenate([sel.select() for _ in range(6)])
    # half the pool is hard and skipped nearly always: far fewer than half the picks
    assert np.isin(picked, hard).mean() < 0.2


def test_calibration_corrects_a_predictor_off_in_level(pool):
    """A selector that says 0.3 where groups are informative 60% of the time: after a step the
    chances are raised and the next round is smaller; without calibration it is not."""
    sizes = {}
    for calibrate in (True, False):
        sel = _Fixed(pool, 8, seed=0)
        sel.chance = 0.3
        sampler = DynamicSampler(sel, 4, calibrate=calibrate)
        sampler.begin_step()
        first = sampler.plan(8)
        got = int(round(0.6 * first.indices.size))
        sampler.record_round(first, got, min(got, 8), max(0, got - 8))
        sampler.end_step()
        sampler.begin_step()
        sizes[calibrate] = (first.indices.size, sampler.plan(8).indices.size)
    assert sizes[False][0] == sizes[False][1] == sizes[True][0]
    assert sizes[True][1] < sizes[True][0]


def test_calibration_factor_by_hand():
    from rollwise.dynamic_sampling import ChanceCalibration

    cal = ChanceCalibration(prior=0.0)
    cal.observe(np.full(10, 0.5), 8)  # 10 prompts at 0.5 gave 8: odds x4 makes 0.8 each
    cal.end_step()
    assert cal.factor == pytest.approx(4.0, rel=1e-3)
    assert cal(np.array([0.5]))[0] == pytest.approx(0.8, rel=1e-3)
    assert cal.uncalibrated(cal(np.array([0.2, 0.7]))) == pytest.approx([0.2, 0.7])
    shrunk = ChanceCalibration(prior=10.0)
    shrunk.observe(np.full(10, 0.5), 8)
    shrunk.end_step()
    assert 1.0 < shrunk.factor < 4.0  # the prior pulls it toward 1
    restored = ChanceCalibration(prior=10.0)
    restored.load_state(json.loads(json.dumps(shrunk.state())))
    assert restored.factor == shrunk.factor
    for _ in range(8):  # a window of steps: old rounds leave it
        shrunk.observe(np.full(10, 0.5), 5)
        shrunk.end_step()
    assert shrunk.factor == pytest.approx(1.0, rel=1e-3)
