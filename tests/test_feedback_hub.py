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


def test_observation_batches_split_by_repeats_only():
    calls = observation_batches([(3, r(1, 0, 1, 1)), (5, r(0, 0, 0)), (3, r(0, 0, 0, 0)),
                                 (7, r(1, 1, 1, 1)), (5, r(1, 1, 0))])
    assert [(c[0].tolist(), [g.size for g in c[1]]) for c in calls] == [
        ([3, 5, 7], [4, 3, 4]), ([3, 5], [4, 3])]
    assert [g.tolist() for g in calls[0][1]] == [[0, 0, 0, 0], [0, 0, 0], [1, 1, 1, 1]]
    assert [g.tolist() for g in calls[1][1]] == [[1, 0, 1, 1], [1, 1, 0]]
    # arrival order (random uids in a distributed store) does not change the calls
    again = observation_batches([(5, r(1, 1, 0)), (7, r(1, 1, 1, 1)), (3, r(1, 0, 1, 1)),
                                 (5, r(0, 0, 0)), (3, r(0, 0, 0, 0))])
    for (i1, r1), (i2, r2) in zip(calls, again, strict=True):
        np.testing.assert_array_equal(i1, i2)
        assert [g.tolist() for g in r1] == [g.tolist() for g in r2]


def test_budgets_split_each_selection_and_survive_checkpoints():
    hub = hub_over(budget_objective="groups", rollout_n=4, budget_k_max=8)
    taken = hub.take_with_rollouts(B)
    assert len(taken) == B and sum(k for _, k in taken) == B * 4
    assert all(2 <= k <= 8 for _, k in taken)
    # the served prompts' groups, unequal in size, are observed in one call
    for j, (i, k) in enumerate(taken):
        hub.record(f"u{j}", hub.pool.ids[i], [1.0, 0.0] * (k // 2) + [0.0] * (k % 2))
    half = hub.take_with_rollouts(B // 2)  # a fresh selection; the rest stays queued
    assert hub.counters["observe_calls"] == 1 and hub.counters["rollouts"] == B * 4
    twin = hub_over(budget_objective="groups", rollout_n=4, budget_k_max=8)
    twin.load_state_dict(hub.state_dict())
    assert twin.take_with_rollouts(B // 2) == hub.take_with_rollouts(B // 2)
    assert all(k is not None for _, k in half)
    assert all(k is None for _, k in hub_over().take_with_rollouts(B))


@pytest.mark.parametrize("config, match", [
    ({"budget_objective": "x", "rollout_n": 4}, "budget_objective"),
    ({"budget_objective": "groups"}, "rollout_n"),
    ({"budget_objective": "groups", "rollout_n": 1}, "k_min"),
])
def test_bad_budget_settings_are_refused(config, match):
    with pytest.raises(ValueError, match=match):
        HubConfig.from_kwargs(config)


def test_budgets_need_a_selector_with_predictions():
    hub = SelectionHub(HubConfig(strategy="uniform", budget_objective="groups", rollout_n=4))
    with pytest.raises(ValueError, match="budget_objective.*uniform"):
        hub.bind(make_pool(N, d=6), B)
    assert not hub.bound


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
