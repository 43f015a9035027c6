"""The selection hub without any training framework: serve, record in any order, apply, resume."""

from __future__ import annotations

import numpy as np
import pytest
from _support import TINY_GPS, make_pool

from rollwise.feedback import HubConfig, SelectionHub, observation_batches

N, B = 20, 4


def r(*values: float) -> np.ndarray:
    return np.array(values, dtype=float)


def hub_over(n: int = N, batch: int = B, **config) -> SelectionHub:
    hub = SelectionHub(HubConfig(**{"strategy": "gps", "hyper": dict(TINY_GPS), **config}))
    hub.bind(make_pool(n, d=6), batch)
    return hub


def test_observation_batches_split_by_k_and_repeats():
    calls = observation_batches([(3, r(1, 0, 1, 1)), (5, r(0, 0, 0)), (3, r(0, 0, 0, 0)),
                                 (7, r(1, 1, 1, 1)), (5, r(1, 1, 0))])
    assert [(c[0].tolist(), c[1].shape) for c in calls] == [
        ([3, 7], (2, 4)), ([3], (1, 4)), ([5], (1, 3)), ([5], (1, 3))]
    np.testing.assert_array_equal(calls[0][1], [[0, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(calls[1][1], [[1, 0, 1, 1]])
    # arrival order (random uids in a distributed store) does not change the calls
    again = observation_batches([(5, r(1, 1, 0)), (7, r(1, 1, 1, 1)), (3, r(1, 0, 1, 1)),
                                 (5, r(0, 0, 0)), (3, r(0, 0, 0, 0))])
    for (i1, r1), (i2, r2) in zip(calls, again, strict=True):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(r1, r2)


def test_served_prompts_are_not_chosen_again_while_in_flight():
    hub = hub_over()
    first = hub.take(B)
    second = hub.take(B)  # no rewards yet: the first batch is still in flight
    assert len(set(first)) == B and not set(first) & set(second)
    assert hub.counters["served"] == 2 * B


def test_recorded_groups_are_applied_before_the_next_selection():
    hub = hub_over()
    served = hub.take(B)
    for j, i in enumerate(served):
        hub.record(f"u{j}", hub.pool.ids[i], [1.0, 0.0, 1.0, 0.0])
    assert hub.counters["groups"] == B and hub.counters["observe_calls"] == 0
    hub.take(B)
    assert hub.counters["observe_calls"] == 1  # one observe call for the batch of equal-k groups
    assert hub.counters["rollouts"] == 4 * B
    hub.record("u0", hub.pool.ids[served[0]], [1.0, 1.0])  # a uid is observed once
    assert hub.counters["groups"] == B


def test_unknown_ids_are_counted_and_ignored():
    hub = hub_over()
    hub.take(B)
    hub.record("x", "not-a-prompt", [1.0, 0.0])
    assert hub.counters["unknown_ids"] == 1 and hub.counters["groups"] == 0
    assert hub.forget(["x"]) == []


def test_rewards_outside_the_unit_interval_need_a_threshold():
    hub = hub_over()
    i = hub.take(B)[0]
    with pytest.raises(ValueError, match="success_threshold"):
        hub.record("u", hub.pool.ids[i], [2.0, 0.0])
    hub = hub_over(success_threshold=1.5)
    i = hub.take(B)[0]
    hub.record("u", hub.pool.ids[i], [2.0, 0.0, 1.0])
    _, rate, informative = hub.forget(["u"])[0]
    assert rate == pytest.approx(1 / 3) and informative


def test_state_round_trip_makes_the_same_selections():
    rng = np.random.default_rng(0)

    def drive(hub: SelectionHub, steps: int, start: int = 0) -> list[list[int]]:
        picks = []
        for t in range(start, start + steps):
            served = hub.take(B)
            picks.append(served)
            for j, i in enumerate(served):
                hub.record(f"{t}-{j}", hub.pool.ids[i], (rng.random(4) < 0.5).astype(float))
        return picks

    a = hub_over(seed=3)
    drive(a, 3)
    state = a.state_dict()
    rng_state = rng.bit_generator.state
    after_a = drive(a, 3, start=3)
    b = hub_over(seed=3)
    b.load_state_dict(state)
    rng.bit_generator.state = rng_state
    assert drive(b, 3, start=3) == after_a


def test_config_and_state_errors_are_explicit():
    with pytest.raises(ValueError, match="strategy"):
        HubConfig.from_kwargs({"strategy": "nope"})
    with pytest.raises(ValueError, match="unknown rollwise sampler_kwargs"):
        HubConfig.from_kwargs({"batchsize": 3})
    with pytest.raises(RuntimeError, match="no training dataset is bound"):
        SelectionHub(HubConfig()).take(1)
    hub = hub_over()
    with pytest.raises(ValueError, match="different prompt pool"):
        other = hub_over(n=N + 1)
        other.take(B)
        hub.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="batch_size"):
        hub_over(n=3, batch=4)
