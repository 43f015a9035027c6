"""Hard-prompt rescue: the hard-prompt bank and GEPA template evolution (real engine, stand-in LMs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _support import hyper_for

import rollwise
from rollwise.embed import HashingEmbedder
from rollwise.rescue import HardPromptBank

FAIL = np.zeros((1, 4))
SOLVE = np.array([[0.0, 1.0, 0.0, 0.0]])


# ---- the bank ---------------------------------------------------------------------------------
def test_hard_after_window_failed_groups_only():
    bank = HardPromptBank(window=3)
    for _ in range(2):
        bank.observe(["a"], FAIL)
    assert bank.hard_ids() == [] and bank.history("a") == [0.0, 0.0]
    bank.observe(["a"], FAIL)
    assert bank.hard_ids() == ["a"] and bank.hard_ids("observed") == ["a"]
    # a success in the window breaks the streak: two failures then a success is not hard
    bank.observe(["b", "c"], np.zeros((2, 4)))
    bank.observe(["b", "c"], np.zeros((2, 4)))
    bank.observe(["b"], SOLVE)
    bank.observe(["c"], FAIL)
    assert bank.hard_ids() == ["a", "c"]
    assert "b" not in bank and bank.history("b") == []
    assert bank.history("a") == [0.0, 0.0, 0.0]  # only the last `window` groups are kept
    bank.observe(["a"], FAIL)
    assert bank.history("a") == [0.0, 0.0, 0.0]


def test_success_threshold_decides_what_counts_as_solved():
    partial = np.array([[0.6, 0.6]])
    strict, lenient = HardPromptBank(window=1, success_threshold=0.9), HardPromptBank(window=1)
    strict.observe(["p"], partial)
    lenient.observe(["p"], partial)
    assert strict.hard_ids() == ["p"] and lenient.hard_ids() == []


def test_rescue_is_a_hard_prompt_later_solved_on_its_own():
    bank = HardPromptBank(window=2)
    bank.observe(["a", "b"], np.zeros((2, 3)))
    bank.observe(["a", "b"], np.zeros((2, 3)))
    bank.observe(["c"], np.zeros((1, 3)))  # on a streak, not hard yet
    bank.observe(["a", "c"], np.array([[1.0, 0, 0], [1.0, 0, 0]]))
    assert bank.rescued == ["a"]  # c was never hard: solving it is no rescue
    assert bank.hard_ids() == ["b"] and not bank.is_hard("a")
    bank.mark_rescued("b")
    assert bank.rescued == ["a", "b"] and bank.hard_ids() == []
    with pytest.raises(ValueError, match="not hard"):
        bank.mark_rescued("c")
    # failing again makes it hard again; the rescue record stays
    bank.observe(["a"], FAIL)
    bank.observe(["a"], FAIL)
    assert bank.hard_ids() == ["a"] and bank.rescued == ["a", "b"]


def test_capacity_evicts_the_oldest_added():
    bank = HardPromptBank(capacity=3, window=1)
    for pid in ["p0", "p1", "p2"]:
        bank.observe([pid], FAIL)
    bank.observe(["p0"], FAIL)  # observing again does not refresh its age
    bank.observe(["p3"], FAIL)
    assert bank.hard_ids() == ["p1", "p2", "p3"] and len(bank) == 3 and bank.evicted == 1
    bank.observe(["p4", "p5"], np.zeros((2, 2)))
    assert bank.hard_ids() == ["p3", "p4", "p5"] and bank.evicted == 3
    # a solved prompt leaves without evicting anyone
    bank.observe(["p9"], SOLVE)
    assert len(bank) == 3 and bank.evicted == 3
    # the rescued record is bounded too
    for pid in ["p3", "p4", "p5"]:
        bank.mark_rescued(pid)
    for pid in ["q0", "q1"]:
        bank.observe([pid], FAIL)
        bank.observe([pid], SOLVE)
    assert bank.rescued == ["p5", "q0", "q1"]


def _pool(n: int = 12) -> rollwise.PromptPool:
    texts = [f"What is {i} + {3 * i}? Think step by step." for i in range(n)]
    return rollwise.PromptPool(HashingEmbedder(dim=32).encode(texts), ids=[f"q{i}" for i in range(n)],
                               texts=texts)


@pytest.mark.parametrize("name", ["gps", "mopps"])
def test_predicted_mining_uses_the_selectors_predictions(name):
    pool = _pool()
    sel = rollwise.make_selector(name, pool, 4, seed=0, **hyper_for(name))
    rng = np.random.default_rng(0)
    for _ in range(3):
        idx = sel.select()
        rates = np.where(idx % 3 == 0, 0.0, 0.9)
        sel.observe(idx, (rng.random((4, 4)) < rates[:, None]).astype(float))
    indices = np.arange(len(pool))
    ids = [f"q{i}" for i in indices]
    pred = sel.predict(indices)
    threshold = float(np.median(pred))
    expected = [pid for pid, p in zip(ids, pred, strict=True) if p < threshold]
    assert 0 < len(expected) < len(ids)
    bank = HardPromptBank(window=2, predicted_threshold=threshold)
    bank.observe([expected[0]], FAIL)  # an observed prompt keeps its observations
    new = bank.mine_predicted(sel, indices, ids)
    assert new == expected[1:]
    assert bank.hard_ids("predicted") == expected[1:] and bank.hard_ids("observed") == []
    assert not bank.is_hard(expected[0]) and bank.history(expected[0]) == [0.0]
    assert bank.mine_predicted(sel, indices, ids) == []  # already known
    # an observed success drops a predicted-hard prompt without calling it a rescue
    bank.observe([expected[1]], SOLVE)
    assert expected[1] not in bank.hard_ids() and bank.rescued == []
    # window failures turn a predicted-hard prompt into an observed one
    bank.observe([expected[2]], FAIL)
    assert bank.hard_ids("predicted")[0] == expected[2]
    bank.observe([expected[2]], FAIL)
    assert expected[2] in bank.hard_ids("observed")


def test_mopps_predicts_the_failing_prompts_hard():
    pool = _pool(6)
    sel = rollwise.make_selector("mopps", pool, 6, seed=0)
    fail = np.array([0, 3])
    rewards = np.ones((6, 8))
    rewards[fail] = 0.0
    for _ in range(3):
        sel.observe(np.arange(6), rewards)
    bank = HardPromptBank(predicted_threshold=0.3)
    assert bank.mine_predicted(sel, np.arange(6), [f"q{i}" for i in range(6)]) == ["q0", "q3"]


def test_state_round_trip_and_file(tmp_path):
    bank = HardPromptBank(capacity=4, window=2, success_threshold=0.7, predicted_threshold=0.2)
    bank.observe(["a", "b", "c"], np.zeros((3, 2)))
    bank.observe(["a", "b"], np.zeros((2, 2)))
    bank.observe(["b"], np.ones((1, 2)))
    bank.mine_predicted(_Const([0.1, 0.5]), [0, 1], ["d", "e"])
    bank.observe(["x", "y"], np.zeros((2, 2)))  # evicts a
    state = bank.state_dict()
    json.dumps(state)  # JSON-serialisable
    other = HardPromptBank(capacity=4, window=2, success_threshold=0.7, predicted_threshold=0.2)
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert other.hard_ids() == bank.hard_ids() == ["d"] and other.rescued == ["b"] and other.evicted == 1
    assert other.history("c") == [0.0]
    # the snapshot does not move with the bank
    bank.observe(["c"], FAIL)
    assert state["entries"][0]["rates"] == [0.0] and other.hard_ids() == ["d"]
    path = tmp_path / "bank.json"
    bank.save(path)
    loaded = HardPromptBank.load(path)
    assert loaded.state_dict() == bank.state_dict() and loaded.hard_ids() == ["c", "d"]
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a hard-prompt bank"):
        HardPromptBank.load(tmp_path / "other.json")
    # both continue identically
    for b in (bank, loaded):
        b.observe(["x", "z"], np.zeros((2, 2)))
    assert loaded.state_dict() == bank.state_dict()


class _Const:
    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def predict(self, indices):
        return self.values[np.asarray(indices)]


def _snapshot(bank):
    return json.dumps(bank.state_dict())


@pytest.mark.parametrize("kwargs, err", [
    (dict(capacity=0), ValueError), (dict(capacity=2.0), TypeError), (dict(window=0), ValueError),
    (dict(window=True), TypeError), (dict(success_threshold=1.5), ValueError),
    (dict(success_threshold=0.0), ValueError), (dict(predicted_threshold=-0.1), ValueError),
    (dict(predicted_threshold="low"), TypeError),
])
def test_bad_constructor_arguments(kwargs, err):
    name = next(iter(kwargs))
    with pytest.raises(err, match=name):
        HardPromptBank(**kwargs)


@pytest.mark.parametrize("ids, rewards, err", [
    ("ab", np.zeros((2, 2)), TypeError),
    (["a", "b"], np.zeros((3, 2)), ValueError),
    (["a", "a"], np.zeros((2, 2)), ValueError),
    (["a", 3], np.zeros((2, 2)), TypeError),
    (["a", ""], np.zeros((2, 2)), TypeError),
    (["a", "b"], np.zeros(2), ValueError),
    (["a", "b"], np.zeros((2, 0)), ValueError),
    (["a", "b"], [[0.0, np.nan], [0.0, 0.0]], ValueError),
    (["a", "b"], [["x", "y"], ["z", "w"]], TypeError),
])
def test_bad_observations_change_nothing(ids, rewards, err):
    bank = HardPromptBank(window=1)
    bank.observe(["a"], FAIL)
    before = _snapshot(bank)
    with pytest.raises(err):
        bank.observe(ids, rewards)
    assert _snapshot(bank) == before


def test_bad_predicted_mining_changes_nothing():
    bank = HardPromptBank(predicted_threshold=0.5)
    before = _snapshot(bank)
    with pytest.raises(TypeError, match="selector"):
        bank.mine_predicted(object(), [0], ["a"])
    with pytest.raises(ValueError, match="ids"):
        bank.mine_predicted(_Const([0.1, 0.1]), [0, 1], ["a"])
    with pytest.raises(ValueError, match="indices"):
        bank.mine_predicted(_Const([0.1, 0.1]), [[0, 1]], ["a", "b"])
    with pytest.raises(ValueError, match="predict"):
        bank.mine_predicted(_Const([np.nan, 0.1]), [0, 1], ["a", "b"])
    sel = rollwise.make_selector("mopps", _pool(4), 2, seed=0)
    with pytest.raises(ValueError):  # the selector rejects an index outside its pool
        bank.mine_predicted(sel, [0, 9], ["a", "b"])
    assert _snapshot(bank) == before


def test_bad_state_changes_nothing():
    bank = HardPromptBank(capacity=3, window=1)
    bank.observe(["a"], FAIL)
    good = bank.state_dict()
    before = _snapshot(bank)
    bad_states = [
        "state", {**good, "version": 99}, {k: v for k, v in good.items() if k != "rescued"},
        {**good, "config": {**good["config"], "window": 2}},
        {**good, "entries": [{"id": "a", "rates": [0.0, 0.0], "source": "observed", "predicted": None}]},
        {**good, "entries": [{"id": "a", "rates": [0.0], "source": "guessed", "predicted": None}]},
        {**good, "entries": [{"id": f"p{i}", "rates": [0.0], "source": None, "predicted": None}
                             for i in range(4)]},
        {**good, "rescued": ["a", "a"]}, {**good, "evicted": -1},
    ]
    for state in bad_states:
        with pytest.raises((TypeError, ValueError)):
            bank.load_state_dict(state)
        assert _snapshot(bank) == before
