"""Bad input: every public entry point raises ValueError/TypeError naming the argument, and a
failed call changes no state."""

from __future__ import annotations

import numpy as np
import pytest
from _support import continue_equal, make, make_pool, twins

import rollwise
from rollwise.embed import HashingEmbedder, embed_texts

NAMES = sorted(rollwise.STRATEGIES)
NAN, INF = float("nan"), float("inf")


# ---- PromptPool ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "exc", "arg"),
    [
        ({"embeddings": np.empty((0, 4))}, ValueError, "embeddings"),  # empty pool
        ({"embeddings": np.ones(4)}, ValueError, "embeddings"),  # 1-D
        ({"embeddings": np.ones((2, 2, 2))}, ValueError, "embeddings"),
        ({"embeddings": np.empty((3, 0))}, ValueError, "embeddings"),  # d = 0
        ({"embeddings": [[1.0, NAN], [1.0, 0.0]]}, ValueError, "embeddings"),
        ({"embeddings": [[1.0, INF], [1.0, 0.0]]}, ValueError, "embeddings"),
        ({"embeddings": [[1.0, -INF]]}, ValueError, "embeddings"),
        ({"embeddings": [[1.0, 2.0], [0.0, 0.0]]}, ValueError, "embeddings"),  # zero row
        ({"embeddings": [["a", "b"]]}, TypeError, "embeddings"),
        ({"embeddings": np.ones((2, 2)), "ids": ["a", "a"]}, ValueError, "ids"),  # duplicates
        ({"embeddings": np.ones((2, 2)), "ids": ["a"]}, ValueError, "ids"),
        ({"embeddings": np.ones((2, 2)), "ids": "ab"}, TypeError, "ids"),
        ({"embeddings": np.ones((2, 2)), "ids": [1, 2]}, TypeError, "ids"),
        ({"embeddings": np.ones((2, 2)), "texts": ["x"]}, ValueError, "texts"),
        ({"embeddings": np.ones((2, 2)), "texts": "xy"}, TypeError, "texts"),
        ({"embeddings": np.ones((2, 2)), "texts": ["x", None]}, TypeError, "texts"),
    ],
)
def test_prompt_pool_rejects(kwargs, exc, arg):
    with pytest.raises(exc, match=arg):
        rollwise.PromptPool(**kwargs)


def test_from_texts_rejects(tmp_path):
    with pytest.raises(ValueError, match="texts"):
        rollwise.PromptPool.from_texts([], embedder="hashing", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="texts"):
        rollwise.PromptPool.from_texts("one string", embedder="hashing", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="texts"):
        rollwise.PromptPool.from_texts(["a", 3], embedder="hashing", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="embedder"):
        rollwise.PromptPool.from_texts(["a"], embedder="no-such-embedder", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="embedder"):
        rollwise.PromptPool.from_texts(["a"], embedder=42, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="ids"):
        rollwise.PromptPool.from_texts(["a", "b"], ids=["x", "x"], embedder="hashing",
                                       cache_dir=tmp_path)
    with pytest.raises(ValueError, match="dim"):
        HashingEmbedder(dim=0)
    with pytest.raises(TypeError, match="texts"):
        embed_texts("abc", "hashing", cache_dir=tmp_path)


# ---- building selectors ----------------------------------------------------------------------

def test_make_selector_rejects():
    pool = make_pool(5)
    with pytest.raises(ValueError, match="strategy"):
        rollwise.make_selector("no-such-strategy", pool, 2)
    with pytest.raises(ValueError, match="strategy"):
        rollwise.make_selector(None, pool, 2)
    with pytest.raises(TypeError, match="pool"):
        rollwise.make_selector("uniform", pool.embeddings, 2)
    for name in NAMES:
        with pytest.raises(ValueError, match="batch_size"):
            make(name, pool, 6)  # larger than the pool
        with pytest.raises(ValueError, match="batch_size"):
            make(name, pool, 0)
        with pytest.raises(TypeError, match="batch_size"):
            make(name, pool, 2.0)
        with pytest.raises(TypeError, match="batch_size"):
            make(name, pool, True)
        with pytest.raises(TypeError, match="seed"):
            make(name, pool, 2, seed=0.5)


@pytest.mark.parametrize(
    ("name", "hyper", "exc", "arg"),
    [
        ("gps", {"target": 1.5}, ValueError, "target"),
        ("gps", {"target": NAN}, ValueError, "target"),
        ("gps", {"diversity": -0.1}, ValueError, "diversity"),
        ("gps", {"diversity": INF}, ValueError, "diversity"),
        ("gps", {"candidate_ratio": 0.5}, ValueError, "candidate_ratio"),
        ("gps", {"bogus": 1}, TypeError, "bogus"),
        ("gps", {"hidden": 10, "encoder_heads": 4}, ValueError, "hidden"),
        ("gps", {"latent_dim": -1}, ValueError, "latent_dim"),
        ("gps", {"grad_steps": 1.5}, ValueError, "grad_steps"),
        ("gps", {"lr": NAN}, ValueError, "lr"),
        ("mopps", {"prior_alpha": 0.0}, ValueError, "prior_alpha"),
        ("mopps", {"prior_beta": NAN}, ValueError, "prior_beta"),
        ("mopps", {"decay": 1.5}, ValueError, "decay"),
        ("mopps", {"target": -0.1}, ValueError, "target"),
        ("uniform", {"target": 0.5}, TypeError, "target"),
    ],
)
def test_strategy_hyper_parameters_rejected(name, hyper, exc, arg):
    with pytest.raises(exc, match=arg):
        rollwise.make_selector(name, make_pool(8), 2, **hyper)


# ---- select / observe / predict --------------------------------------------------------------

def _bad_selects(n, batch):
    return [
        (np.arange(batch - 1), ValueError, "batch_size"),  # fewer candidates than the batch
        (np.array([], dtype=np.int64), ValueError, "batch_size"),
        (np.array([0, 1, n]), ValueError, "candidates"),  # out of range
        (np.array([-1, 0, 1]), ValueError, "candidates"),
        (np.array([0, 1, 1, 2]), ValueError, "candidates"),  # repeated
        (np.arange(6).reshape(2, 3), ValueError, "candidates"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "candidates"),
        (["a", "b", "c"], TypeError, "candidates"),
    ]


def _bad_observes(n, batch):
    idx = np.arange(batch)
    ok = np.ones((batch, 3))
    return [
        (np.array([0, n]), np.ones((2, 3)), ValueError, "indices"),  # out of range
        (np.array([-1, 0]), np.ones((2, 3)), ValueError, "indices"),
        (np.array([1, 1]), np.ones((2, 3)), ValueError, "indices"),  # repeated in one observe
        (np.array([], dtype=np.int64), np.ones((0, 3)), ValueError, "indices"),
        (np.zeros((2, 1), dtype=np.int64), np.ones((2, 3)), ValueError, "indices"),
        (np.array([0.0, 1.0]), np.ones((2, 3)), TypeError, "indices"),
        (idx, np.where(np.eye(batch, 3) > 0, NAN, ok), ValueError, "rewards"),  # NaN
        (idx, np.where(np.eye(batch, 3) > 0, INF, ok), ValueError, "rewards"),
        (idx, ok * 1.5, ValueError, "rewards"),  # outside [0, 1]
        (idx, ok * -0.5, ValueError, "rewards"),
        (idx, np.ones((batch + 1, 3)), ValueError, "rewards"),  # shape mismatches
        (idx, np.ones((batch, 0)), ValueError, "rewards"),
        (idx, np.ones(batch), ValueError, "rewards"),
        (idx, np.ones((batch, 3, 1)), ValueError, "rewards"),
        (idx, [[1.0, 0.0]] + [[]] * (batch - 1), ValueError, "rewards"),  # an empty group
        (idx, [[1.0, 0.0]] + [[[1.0]]] * (batch - 1), ValueError, "rewards"),  # a 2-D group
        (idx, [[1.0, 0.0]] * (batch - 1), ValueError, "rewards"),  # a group missing
        (idx, [[1.0, NAN]] + [[1.0]] * (batch - 1), ValueError, "rewards"),  # ragged with NaN
        (idx, np.full((batch, 3), "x"), TypeError, "rewards"),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_bad_calls_raise_and_change_nothing(name):
    a, b, pool, truth = twins(name, {})
    n, batch = len(pool), a.batch_size
    for cand, exc, arg in _bad_selects(n, batch):
        with pytest.raises(exc, match=arg):
            a.select(cand)
    for idx, rew, exc, arg in _bad_observes(n, batch):
        with pytest.raises(exc, match=arg):
            a.observe(idx, rew)
    for bad, exc in ((np.array([n]), ValueError), (np.array([[0]]), ValueError),
                     (np.array([0.5]), TypeError)):
        with pytest.raises(exc, match="indices"):
            a.predict(bad)
    assert a.step == b.step
    continue_equal(a, b, truth)  # same selections, predictions and step count as the twin


@pytest.mark.parametrize("name", NAMES)
def test_observe_accepts_other_valid_forms(name):
    """Lists, bool rewards, int rewards, any k and a subset of a batch are all fine."""
    sel = make(name, make_pool(12), 3)
    sel.observe([0, 5], [[True, False], [True, True]])
    sel.observe(np.array([7], dtype=np.int32), np.array([[1, 0, 0, 1, 1]]))
    sel.observe([2, 3, 4], np.zeros((3, 1)))
    assert sel.step == 3


def test_gps_predict_embeddings_rejects():
    sel = make("gps", make_pool(10, d=6), 2)
    for bad in (np.ones((2, 5)), np.ones(6), np.ones((1, 2, 6)), np.zeros((1, 6)),
                np.array([[1.0, NAN, 0, 0, 0, 0]]), np.array([[INF, 0, 0, 0, 0, 0]])):
        with pytest.raises(ValueError, match="embeddings"):
            sel.predict_embeddings(bad)


def test_load_selector_rejects_non_pool(tmp_path):
    a, _, _, _ = twins("uniform", {})
    a.save(tmp_path / "s.pt")
    with pytest.raises(TypeError, match="pool"):
        rollwise.load_selector(tmp_path / "s.pt", "not a pool")
