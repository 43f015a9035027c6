"""The selector protocol for every strategy: valid selections, determinism, persistence, purity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _support import continue_equal, make, make_pool, run_steps, twins
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rollwise
from rollwise.selectors.base import STATE_VERSION

NAMES = sorted(rollwise.STRATEGIES)
# every registered strategy, plus GPS scoring a random candidate subset (uses the selector's RNG)
CASES = [(n, {}) for n in NAMES] + [("gps", {"candidate_ratio": 2.0})]
CASE_IDS = [n + ("+ratio" if extra else "") for n, extra in CASES]

HYPO = settings(max_examples=15, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def test_registry_is_what_make_selector_builds():
    assert {"uniform", "mopps", "gps", "gps-nodiv", "gps-nolatent", "gps-nointer",
            "gps-unscaled"} <= set(NAMES)
    pool = make_pool(10)
    for name in NAMES:
        sel = make(name, pool, 3)
        assert isinstance(sel, rollwise.Selector)
        assert sel.strategy == name
        assert sel.batch_size == 3 and sel.step == 0


# ---- valid selections ----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@HYPO
@given(data=st.data())
def test_selections_are_valid(name, data):
    n = data.draw(st.integers(2, 40), label="n")
    d = data.draw(st.integers(2, 6), label="d")
    batch = data.draw(st.integers(1, n), label="batch")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    use_cand = data.draw(st.booleans(), label="use_candidates")
    pool = make_pool(n, d, seed=seed % 1000)
    sel = make(name, pool, batch, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        cand = None
        if use_cand:
            m = data.draw(st.integers(batch, n), label="n_candidates")
            cand = rng.choice(n, size=m, replace=False)
        idx = sel.select(cand)
        assert isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.shape == (batch,)
        assert np.unique(idx).size == batch, "selection repeats a prompt"
        assert idx.min() >= 0 and idx.max() < n
        if cand is not None:
            assert np.isin(idx, cand).all(), "selection left the candidates"
        k = data.draw(st.integers(1, 5), label="k")
        sel.observe(idx, rng.random((batch, k)))  # fractional rewards are allowed
        pred = sel.predict()
        assert pred.shape == (n,) and np.all((pred >= 0) & (pred <= 1))


def test_uniform_epoch_covers_pool():
    """Without candidates, uniform visits every prompt once per epoch (B does not divide N)."""
    pool = make_pool(10)
    sel = make("uniform", pool, 3)
    seen = np.concatenate([sel.select() for _ in range(3)])  # 9 of 10 prompts
    assert np.unique(seen).size == 9
    nxt = sel.select()  # crosses the epoch boundary: 1 old prompt + 2 from a fresh permutation
    assert np.unique(nxt).size == 3
    assert np.setdiff1d(np.arange(10), seen)[0] in nxt


def test_gps_candidate_stream_offers_each_prompt_once_per_epoch():
    """With candidate_ratio, GPS chooses from candidates drawn without replacement epoch by
    epoch: a prompt the PPM keeps predicting near 0.5 cannot be chosen step after step."""
    pool = make_pool(40)
    truth = np.full(40, 0.5)  # every prompt equally attractive: nothing but the stream limits repeats
    sel = make("gps", pool, 2, candidate_ratio=2.5)  # 5 candidates a step, 8 steps an epoch
    picks = run_steps(sel, truth, 8)
    assert np.unique(np.concatenate(picks)).size == 16  # no repeat inside the epoch
    whole = make("gps-unguarded", pool, 2)
    again = run_steps(whole, truth, 8)
    assert np.unique(np.concatenate(again)).size < 16  # the whole-pool GPS does repeat here


@pytest.mark.parametrize("cooldown", [0.25, 0.5, 1.0])
def test_gps_cooldown_rests_chosen_prompts(cooldown):
    """A prompt chosen at step t is not chosen again before step t + ceil(cooldown * N / B),
    however attractive it stays."""
    n, b = 40, 2
    pool = make_pool(n)
    sel = make("gps-unguarded", pool, b, cooldown=cooldown)
    picks = run_steps(sel, np.full(n, 0.5), 30)
    rest = int(np.ceil(cooldown * n / b))
    last: dict[int, int] = {}
    for step, batch in enumerate(picks):
        for i in batch:
            assert step - last.get(int(i), -rest) >= rest, (int(i), step)
            last[int(i)] = step
    # the rule applies inside candidates a caller passes, with N = len(candidates)
    sel = make("gps-unguarded", pool, b, cooldown=1.0)
    cand = np.arange(10)
    seen = [sel.select(cand) for _ in range(1)]
    sel.observe(seen[0], np.ones((b, 2)))
    for _ in range(4):
        nxt = sel.select(cand)
        assert not np.isin(nxt, np.concatenate(seen)).any()
        seen.append(nxt)
        sel.observe(nxt, np.ones((b, 2)))


def test_gps_cooldown_falls_back_to_the_longest_rested():
    """When fewer than a batch have rested, the prompts rested longest are allowed."""
    pool = make_pool(5)
    sel = make("gps-unguarded", pool, 2, cooldown=1.0)  # rests ceil(5 / 2) = 3 steps
    picks = run_steps(sel, np.full(5, 0.5), 3)
    never = np.setdiff1d(np.arange(5), np.concatenate(picks[:2]))
    assert never.size == 1  # step 2: one prompt never chosen, too few for a batch
    assert set(map(int, picks[2])) <= set(map(int, never)) | set(map(int, picks[0]))
    assert not set(map(int, picks[2])) & set(map(int, picks[1]))


def test_gps_warmup_chooses_uniformly_then_acquires(monkeypatch):
    pool = make_pool(30)
    sel = make("gps-guarded", pool, 3, warmup_steps=2, cooldown=0.0)
    calls = []
    acquire = sel.acquisition.select
    monkeypatch.setattr(type(sel.acquisition), "select",
                        lambda self, *a, **k: calls.append(1) or acquire(*a, **k))
    picks = run_steps(sel, np.full(30, 0.5), 4)
    assert len(calls) == 2  # steps 3 and 4 only
    assert all(len(set(map(int, p))) == 3 for p in picks)


# ---- determinism ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_same_seed_same_selections(name, extra):
    a, b, _, truth = twins(name, extra)
    continue_equal(a, b, truth)


@pytest.mark.parametrize("name", ["uniform", "mopps"])
def test_different_seeds_differ(name):
    pool = make_pool(200)
    picks = {tuple(make(name, pool, 20, seed=s).select()) for s in range(3)}
    assert len(picks) == 3


def test_gps_construction_leaves_global_torch_rng_alone():
    pool = make_pool(20)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sel = make("gps", pool, 4)
    sel.observe(sel.select(), np.ones((4, 2)))
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


# ---- persistence ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_save_load_round_trip(name, extra, tmp_path):
    a, b, pool, truth = twins(name, extra)
    path = tmp_path / "sel.pt"
    a.save(path)
    loaded = rollwise.load_selector(path, pool)
    assert type(loaded) is type(a) and loaded.strategy == a.strategy and loaded.step == a.step
    assert loaded.hyper_params() == a.hyper_params()
    # the uninterrupted twin b and the reloaded selector continue identically
    continue_equal(b, loaded, truth, steps=4)


def test_files_of_earlier_versions_still_load(tmp_path):
    """Earlier versions saved the PPM's fields flat and the ablation name as strategy_name."""
    import json

    a, b, pool, truth = twins("gps-nointer", {})
    a.save(tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    hyper = json.loads(state["hyper"])
    old = {**{k: v for k, v in hyper.items() if k != "ppm"}, **hyper["ppm"], "strategy_name": "gps-nointer"}
    torch.save({**state, "hyper": json.dumps(old)}, tmp_path / "old.pt")
    loaded = rollwise.load_selector(tmp_path / "old.pt", pool)
    assert loaded.strategy == "gps-nointer" and loaded.hyper_params() == a.hyper_params()
    continue_equal(b, loaded, truth, steps=3)


def test_gps_takes_its_ppm_config_explicitly():
    from rollwise.ppm import PPMConfig
    from rollwise.selectors import GPSSelector

    pool = make_pool(12)
    cfg = PPMConfig(hidden=8, encoder_heads=2, latent_dim=2)
    sel = GPSSelector(pool, 3, ppm=cfg)
    assert sel.cfg == cfg and sel.cfg is not cfg
    with pytest.raises(TypeError, match="unknown PPM setting"):
        GPSSelector(pool, 3, ppm={"hiden": 8})
    with pytest.raises(TypeError):
        GPSSelector(pool, 3, hidden=8)  # the class declares its parameters
    assert rollwise.make_selector("gps", pool, 3, hidden=8, encoder_heads=2).cfg.hidden == 8


@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_save_load_round_trip_with_candidates(name, extra, tmp_path):
    a, b, pool, truth = twins(name, extra, n=30)
    a.save(tmp_path / "sel.pt")
    loaded = rollwise.load_selector(tmp_path / "sel.pt", pool)
    continue_equal(b, loaded, truth, candidates=np.arange(3, 25))


@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_state_dict_is_a_snapshot(name, extra):
    """A state_dict taken earlier restores that earlier state, even after more observations."""
    a, b, _, truth = twins(name, extra)
    snap = a.state_dict()
    run_steps(a, truth, 3, seed=5)  # a moves on
    a.load_state_dict(snap)  # ... and is rolled back
    continue_equal(a, b, truth)


def test_load_selector_leaves_global_torch_rng_alone(tmp_path):
    a, _, pool, _ = twins("gps", {})
    a.save(tmp_path / "s.pt")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    rollwise.load_selector(tmp_path / "s.pt", pool)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_save_is_atomic_and_overwrites(tmp_path):
    a, _, pool, truth = twins("mopps", {})
    (tmp_path / "sub").mkdir()  # save creates no folders (a mistyped path fails instead)
    path = tmp_path / "sub" / "sel.pt"
    a.save(path)
    run_steps(a, truth, 2)
    a.save(path)
    assert rollwise.load_selector(path, pool).step == a.step
    assert [p.name for p in path.parent.iterdir()] == ["sel.pt"]  # no temp files left behind


# ---- predict is pure -----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_predict_is_pure(name, extra):
    a, b, pool, truth = twins(name, extra)
    p1, p2 = a.predict(), a.predict()
    np.testing.assert_array_equal(p1, p2)
    assert p1.dtype == np.float64 and p1.shape == (len(pool),)
    sub = np.array([3, 3, 0, 17])  # repeats are fine for predict
    np.testing.assert_array_equal(a.predict(sub), a.predict(sub))
    np.testing.assert_allclose(a.predict(sub), p1[sub], rtol=0, atol=1e-6)
    # a called predict (full, subset and empty); b did not: their futures must not differ
    assert a.predict(np.array([], dtype=np.int64)).shape == (0,)
    # small candidate sets (GPS scores them directly) after a full predict, and the reverse
    small = np.arange(2, 3 + a.batch_size)
    assert small.size < len(pool) // 4
    continue_equal(a, b, truth, steps=1, candidates=small)
    a.predict(np.arange(3))
    a.predict()
    continue_equal(a, b, truth, steps=1, candidates=small)
    continue_equal(a, b, truth, steps=2)


@pytest.mark.parametrize("name", ["gps", "gps-nolatent"])
def test_gps_predict_does_not_depend_on_earlier_predict_calls(name):
    """A subset prediction is bit-identical whether or not the full pool was predicted first."""
    pool = make_pool(400, 16)
    truth = np.random.default_rng(0).uniform(size=400)
    a, b = rollwise.make_selector(name, pool, 8), rollwise.make_selector(name, pool, 8)
    run_steps(a, truth, 2)
    run_steps(b, truth, 2)
    small = np.arange(5, 85)
    a.predict()
    np.testing.assert_array_equal(a.predict(small), b.predict(small))
    np.testing.assert_array_equal(a.select(small), b.select(small))


def test_gps_predict_embeddings_matches_pool_predictions(tmp_path):
    a, _, pool, _ = twins("gps", {})
    raw = pool.embeddings[:5] * np.array([[1.0], [2.0], [0.5], [3.0], [1.0]], dtype=np.float32)
    np.testing.assert_allclose(a.predict_embeddings(raw), a.predict(np.arange(5)), atol=1e-6)
    texts_pool = rollwise.PromptPool.from_texts(["a cat", "a dog", "two cats"],
                                                embedder="hashing", cache_dir=tmp_path)
    sel = make("gps", texts_pool, 2)
    out = sel.predict_texts(["a cat", "something new"], embedder="hashing", cache_dir=tmp_path)
    assert out.shape == (2,)
    np.testing.assert_allclose(out[0], sel.predict(np.array([0]))[0], atol=1e-6)


# ---- loading failures ----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_load_against_other_pool_raises(name, tmp_path):
    a, _, pool, _ = twins(name, {})
    a.save(tmp_path / "s.pt")
    other_emb = make_pool(len(pool), pool.dim, seed=99)
    other_ids = rollwise.PromptPool(pool.embeddings, ids=[f"p{i}" for i in range(len(pool))])
    for other in (other_emb, other_ids, make_pool(len(pool) + 1, pool.dim)):
        with pytest.raises(ValueError, match="different prompt pool"):
            rollwise.load_selector(tmp_path / "s.pt", other)
        fresh = make(name, other, a.batch_size)
        with pytest.raises(ValueError, match="different prompt pool"):
            fresh.load_state_dict(a.state_dict())


def _corrupt_files(tmp_path, good):
    blob = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a selector\n")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    return ["trunc.pt", "garbage.pt", "empty.pt", "text.pt", "list.pt", "dict.pt"]


@pytest.mark.parametrize("name", NAMES)
def test_unreadable_state_files_raise_value_error(name, tmp_path):
    a, _, pool, _ = twins(name, {})
    a.save(tmp_path / "good.pt")
    for fname in _corrupt_files(tmp_path, tmp_path / "good.pt"):
        with pytest.raises(ValueError):
            rollwise.load_selector(tmp_path / fname, pool)
    with pytest.raises(FileNotFoundError):
        rollwise.load_selector(tmp_path / "missing.pt", pool)


@pytest.mark.parametrize("name", NAMES)
def test_state_files_with_bad_fields_raise_value_error(name, tmp_path):
    a, _, pool, _ = twins(name, {})
    good = a.state_dict()

    def variants():
        for key in ("batch_size", "seed", "strategy", "hyper", "rng", "model", "step", "version"):
            s = dict(good)
            del s[key]
            yield f"no-{key}", s
        yield "bad-hyper-json", {**good, "hyper": "{not json"}
        yield "hyper-not-dict", {**good, "hyper": json.dumps([1, 2])}
        yield "unknown-hyper", {**good, "hyper": json.dumps({"bogus": 1})}
        yield "bad-batch", {**good, "batch_size": 10**6}
        yield "unknown-strategy", {**good, "strategy": "nope"}
        yield "bad-version", {**good, "version": STATE_VERSION + 1}
        yield "bad-rng", {**good, "rng": json.dumps({"bit_generator": "nope"})}
        yield "bad-step", {**good, "step": "three"}

    from rollwise.selectors.base import _tensorise

    for label, state in variants():
        path = tmp_path / f"{label}.pt"
        torch.save(_tensorise(state), path)
        with pytest.raises(ValueError):
            rollwise.load_selector(path, pool)


def _bad_model_states(name, good_model):
    """Corrupted ``state['model']`` dicts for each strategy."""
    yield "not-a-dict", [1, 2]
    optional = {"outcomes", "observed"}  # GPS calibration data: absent from earlier versions' files
    for key in [k for k in good_model if k not in optional]:
        m = dict(good_model)
        del m[key]
        yield f"no-{key}", m
    if name == "mopps":
        yield "alpha-shape", {**good_model, "alpha": np.ones(3)}
        yield "beta-negative", {**good_model, "beta": -np.ones_like(good_model["beta"])}
    elif name == "greso":
        yield "p-range", {**good_model, "p": np.array([0.5, 2.0])}
        yield "kind-shape", {**good_model, "kind": np.zeros(3, dtype=np.int64)}
        yield "count-negative", {**good_model, "count": -np.ones_like(good_model["count"])}
        yield "cursor", {**good_model, "cursor": "far"}
    elif name == "uniform":
        yield "order-range", {**good_model, "order": np.array([0, 10**6])}
        yield "cursor", {**good_model, "cursor": 10**6}
        yield "sum", {**good_model, "sum": "lots"}
        yield "count", {**good_model, "count": "many"}
    else:
        sd = dict(good_model["model"])
        key = next(iter(sd))
        yield "tensor-shape", {**good_model, "model": {**sd, key: torch.zeros(1, 1, 1)}}
        yield "missing-tensor", {**good_model, "model": {k: v for k, v in sd.items() if k != key}}
        yield "history-range", {**good_model, "history": [
            {"indices": np.array([10**6]), "rates": np.array([0.5]), "k": np.array([4.0])}]}
        yield "history-shape", {**good_model, "history": [
            {"indices": np.array([0, 1]), "rates": np.array([0.5]), "k": np.array([4.0])}]}
        yield "history-keys", {**good_model, "history": [{"indices": np.array([0])}]}
        yield "history-long", {**good_model, "history": good_model["history"] * 10}
        yield "previous-range", {**good_model, "previous": np.array([-1])}
        yield "generator", {**good_model, "generator": torch.zeros(3, dtype=torch.uint8)}
        yield "optimizer", {**good_model, "optimizer": {"state": {}, "param_groups": []}}
        yield "outcomes-shape", {**good_model, "outcomes": [
            {"predicted": np.array([0.5, 0.5]), "successes": np.array([1.0]), "k": np.array([4.0])}]}
        yield "outcomes-long", {**good_model, "outcomes": good_model["outcomes"] * 100}
        yield "outcomes-first-shape", {**good_model, "outcomes": [
            {**good_model["outcomes"][0], "first": np.array([True])}]}
        yield "observed-shape", {**good_model, "observed": np.ones(3, dtype=bool)}


@pytest.mark.parametrize("name", NAMES)
def test_failed_load_state_dict_changes_nothing(name):
    a, b, pool, truth = twins(name, {})
    # corrupt the state of a *different* selector on the same pool, so that a partially
    # applied state would show in a's later selections
    c = make(name, pool, a.batch_size, seed=1234)
    run_steps(c, truth, 2, seed=3)
    good = c.state_dict()
    other, _, _, _ = twins(name, {}, seed=8)  # on another pool
    bad_states = [
        ("not-a-dict", [good]),
        ("other-pool", other.state_dict()),
        ("other-strategy", {**good, "strategy": "something-else"}),
        ("bad-rng", {**good, "rng": "{}"}),
        ("bad-step", {**good, "step": "three"}),
        ("bad-version", {**good, "version": -1}),
        ("missing", {k: v for k, v in good.items() if k != "model"}),
    ]
    bad_states += [(f"model:{lbl}", {**good, "model": m})
                   for lbl, m in _bad_model_states(name, good["model"])]
    for label, state in bad_states:
        with pytest.raises((ValueError, TypeError)):
            a.load_state_dict(state)
        assert a.step == b.step, label
    # after all those failures, a still behaves exactly like its untouched twin
    continue_equal(a, b, truth)
    # and the uncorrupted state does load
    a.load_state_dict(good)
    assert a.step == c.step


# ---- groups of unequal size (per-prompt rollout budgets) -----------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_rows_as_groups_observe_like_the_array(name):
    """A rectangular batch given as a list of groups leaves exactly the state the array does."""
    pool = make_pool(30)
    a, b = make(name, pool, 5, seed=3), make(name, pool, 5, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        idx = a.select()
        assert np.array_equal(idx, b.select())
        rew = (rng.random((5, 4)) < 0.4).astype(float)
        a.observe(idx, rew)
        b.observe(idx, [list(row) for row in rew])
    assert np.array_equal(a.predict(), b.predict())
    assert np.array_equal(a.select(), b.select())


def test_mopps_counts_unequal_groups_rollout_by_rollout():
    pool = make_pool(10)
    sel = make("mopps", pool, 3, seed=0)
    a0, b0 = sel.alpha.copy(), sel.beta.copy()
    sel.observe([1, 4, 7], [[1.0], [0.0, 1.0, 1.0, 0.0, 0.0], [0.5, 0.5]])
    assert np.allclose(sel.alpha[[1, 4, 7]] - a0[[1, 4, 7]] * sel.decay
                       - (1 - sel.decay) * sel.prior_alpha, [1.0, 2.0, 1.0])
    assert np.allclose(sel.beta[[1, 4, 7]] - b0[[1, 4, 7]] * sel.decay
                       - (1 - sel.decay) * sel.prior_beta, [0.0, 3.0, 1.0])


def test_gps_learns_each_groups_size():
    """GPS's history and outcomes keep every group's own size and rate."""
    pool = make_pool(20)
    sel = make("gps", pool, 3, seed=0)
    sel.observe([2, 5, 9], [[1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 16])
    idx, rates, k = sel._history[-1]
    assert idx.tolist() == [2, 5, 9]
    assert rates.tolist() == [0.5, 0.375, 0.0] and k.tolist() == [2, 8, 16]
    _, successes, counts, first = sel._outcomes[-1]
    assert successes.tolist() == [1.0, 3.0, 0.0] and counts.tolist() == [2, 8, 16]
    assert first.all()


def test_gps_centred_diversity_feeds_centred_embeddings_to_the_acquisition(monkeypatch):
    """The diversity terms see pool-centred unit rows (batch and previous batch); the PPM reads
    the pool's own embeddings, so the predictions do not change."""
    from rollwise.acquisition import centred_unit

    pool = make_pool(30, d=5, seed=4)
    raw, cen = make("gps-unguarded", pool, 4), make("gps-unguarded", pool, 4, centred_diversity=True)
    seen = []
    original = type(cen.acquisition).select

    def spy(self, pred, emb, batch_size, previous=None):
        seen.append((emb.copy(), None if previous is None else previous.copy()))
        return original(self, pred, emb, batch_size, previous)

    monkeypatch.setattr(type(cen.acquisition), "select", spy)
    first = cen.select()
    cen.observe(first, np.ones((4, 3)))
    raw.observe(first, np.ones((4, 3)))
    cen.select()
    expected = centred_unit(pool.embeddings)
    np.testing.assert_allclose(seen[0][0], expected, atol=1e-6)
    np.testing.assert_allclose(seen[1][1], expected[first], atol=1e-6)
    np.testing.assert_array_equal(cen.predict(), raw.predict())
    assert cen.hyper_params()["centred_diversity"] and not raw.hyper_params()["centred_diversity"]


@pytest.mark.parametrize("name", NAMES)
def test_set_embeddings_keeps_what_was_learned_and_reads_the_new_rows(name, tmp_path):
    """A re-embedded pool (the policy's states having moved): the selector keeps its state and
    from then on predicts, diversifies and saves against the new embeddings, as a selector given
    that state over the new pool would; a bad array is refused and changes nothing."""
    pool = make_pool(40, d=6, seed=1)
    sel = make(name, pool, 4)
    run_steps(sel, np.linspace(0.05, 0.95, 40), steps=4)
    moved = pool.embeddings + 0.3 * np.random.default_rng(2).standard_normal(pool.embeddings.shape)
    before = sel.state_dict()
    for bad in (moved[:, :5], moved[:39], np.where(np.arange(6) == 0, np.nan, moved)):
        with pytest.raises(ValueError, match="embeddings"):
            sel.set_embeddings(bad)
    assert sel.pool is pool and sel.state_dict()["pool_fingerprint"] == before["pool_fingerprint"]
    sel.set_embeddings(moved, embedder="moved")
    assert sel.pool.embedder == "moved" and sel.pool.ids == pool.ids and sel.step == 4
    twin = make(name, rollwise.PromptPool(moved), 4)
    twin.load_state_dict({**before, "pool_fingerprint": twin.pool.fingerprint()})
    np.testing.assert_allclose(sel.predict(), twin.predict(), atol=1e-6)
    np.testing.assert_array_equal(sel.select(), twin.select())
    sel.save(tmp_path / "s.pt")
    rollwise.load_selector(tmp_path / "s.pt", sel.pool)
    with pytest.raises(ValueError, match="different prompt pool"):
        rollwise.load_selector(tmp_path / "s.pt", pool)
