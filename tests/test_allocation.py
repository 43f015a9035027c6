"""Test-time allocation: budgets, optimality of greedy, the window rule, bad input, out-of-pool
prediction of a trained GPS selector and the ``rollwise allocate`` command end to end."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from _support import TINY_GPS, bernoulli_rewards

import rollwise
from rollwise.allocation import (
    METHODS,
    allocate,
    budget_to_reach,
    compare_allocations,
    expected_pass_at_k,
    saving_vs_uniform,
)
from rollwise.cli import main


def _brute_force_best(rates: np.ndarray, budget: int, floor: int) -> float:
    """Best expected pass@k over every allocation with counts >= floor summing to <= budget."""
    n, best = rates.size, 0.0
    spare = budget - n * floor
    for extra in itertools.product(range(spare + 1), repeat=n):
        if sum(extra) <= spare:
            best = max(best, expected_pass_at_k(rates, np.asarray(extra) + floor))
    return best


# ---- budgets and floors --------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("floor", [0, 1, 3])
def test_counts_respect_budget_and_floor(method, floor):
    rng = np.random.default_rng(floor)
    for n, per in [(1, 4), (7, 3), (50, 5)]:
        pred = rng.uniform(size=n)
        for budget in (n * floor, n * floor + 1, n * per + 3):
            budget = max(budget, n * floor)
            counts = allocate(pred, budget, method, min_per_prompt=floor)
            assert counts.dtype == np.int64 and counts.shape == (n,)
            assert counts.sum() <= budget and counts.min() >= floor
            if method != "greedy":  # uniform and window always spend the whole budget
                assert counts.sum() == budget


def test_uniform_is_even_and_spreads_the_remainder():
    counts = allocate(np.full(10, 0.3), 34, "uniform")
    assert sorted(counts) == [3] * 6 + [4] * 4
    assert counts[:4].sum() < 16  # the extra samples are not all at the front
    # nested: one more sample never takes one away
    prev = allocate(np.full(10, 0.3), 10, "uniform")
    for b in range(11, 60):
        cur = allocate(np.full(10, 0.3), b, "uniform")
        assert np.all(cur >= prev) and cur.sum() == b
        prev = cur


def test_allocations_are_nested_in_the_budget():
    pred = np.random.default_rng(3).uniform(size=12)
    for method in METHODS:
        prev = allocate(pred, 12, method)
        for b in range(13, 120):
            cur = allocate(pred, b, method)
            assert np.all(cur >= prev), method
            prev = cur


# ---- greedy --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_greedy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    rates = rng.choice([0.0, 0.02, 0.1, 0.3, 0.5, 0.8, 0.95, 1.0], size=n)
    floor = int(rng.integers(0, 2))
    for budget in range(n * floor, n * floor + 7):
        got = expected_pass_at_k(rates, allocate(rates, budget, "greedy", min_per_prompt=floor))
        assert got == pytest.approx(_brute_force_best(rates, budget, floor), abs=1e-12)


def test_greedy_at_least_uniform_and_window_under_its_predictions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred = rng.beta(0.5, 0.5, size=int(rng.integers(2, 60)))
        budget = pred.size * int(rng.integers(1, 9)) + int(rng.integers(0, pred.size))
        best = expected_pass_at_k(pred, allocate(pred, budget, "greedy"))
        for other in ("uniform", "window"):
            assert best >= expected_pass_at_k(pred, allocate(pred, budget, other)) - 1e-12


def test_greedy_marginal_gains_and_early_stop():
    # one sample of a sure prompt is enough; a hopeless one gets nothing beyond the floor
    counts = allocate([1.0, 0.0, 0.5], 20, "greedy")
    assert counts[0] == 1 and counts[1] == 1 and counts[2] == 18
    # every marginal gain zero: greedy stops below the budget
    assert allocate([1.0, 0.0], 10, "greedy").tolist() == [1, 1]
    assert allocate([1.0, 0.0], 10, "greedy", min_per_prompt=0).tolist() == [1, 0]
    # the n-th sample of rate g adds g(1-g)^(n-1): after one each, the gains are 0.25, 0.125,
    # 0.0625 for g=0.5 and 0.09 for g=0.1, so the extra samples go 0.5, 0.5, 0.1
    assert allocate([0.5, 0.1], 3, "greedy").tolist() == [2, 1]
    assert allocate([0.5, 0.1], 4, "greedy").tolist() == [3, 1]
    assert allocate([0.5, 0.1], 5, "greedy").tolist() == [3, 2]


# ---- window --------------------------------------------------------------------------------
def test_window_gives_the_middle_band_the_samples():
    pred = np.linspace(0.0, 1.0, 9)  # quartiles: 0.25 and 0.75
    counts = allocate(pred, 9 + 5 * 6 + 2, "window")
    band = (pred >= 0.25) & (pred <= 0.75)
    assert band.sum() == 5
    assert np.all(counts[~band] == 1)
    assert counts[band].min() >= 7 and counts[band].sum() == 9 + 5 * 6 + 2 - 4
    assert counts[4] == 8  # the remainder goes to the prompts predicted closest to 0.5
    # the quantiles are parameters; min_per_prompt=0 leaves prompts outside the band unsampled
    narrow = allocate(pred, 12, "window", min_per_prompt=0, quantiles=(0.5, 0.5))
    assert narrow.tolist() == [0, 0, 0, 0, 12, 0, 0, 0, 0]
    # ties are treated alike: equal predictions are all inside the band
    assert allocate(np.full(6, 0.4), 18, "window").tolist() == [3] * 6


# ---- pass@k, budgets to reach, comparison --------------------------------------------------
def test_expected_pass_at_k_and_budget_to_reach():
    assert expected_pass_at_k([0.5, 0.0, 1.0], [2, 5, 0]) == pytest.approx(0.75 / 3)
    pred = np.random.default_rng(1).uniform(size=30)
    for method in METHODS:
        target = expected_pass_at_k(pred, allocate(pred, 100, method))
        need = budget_to_reach(pred, target, method)
        assert need <= 100
        assert expected_pass_at_k(pred, allocate(pred, need, method)) >= target - 1e-12
        if need > 30:
            assert expected_pass_at_k(pred, allocate(pred, need - 1, method)) < target
    assert budget_to_reach([0.0, 0.5], 0.9, "greedy") is None  # a hopeless prompt caps it at 0.5
    s = saving_vs_uniform(pred, allocate(pred, 120, "greedy"))
    assert s["samples"] == 120 and s["uniform_samples"] >= 120 and s["saved"] >= 0


def test_compare_allocations_on_rates_and_outcomes():
    rng = np.random.default_rng(2)
    truth = rng.beta(0.6, 0.6, size=40)
    pred = np.clip(truth + rng.normal(0, 0.05, size=40), 0, 1)
    res = compare_allocations(pred, truth, [80, 160], seed=3)
    assert set(res["methods"]) == {"uniform", "greedy", "window", "oracle"}
    o, u = res["methods"]["oracle"], res["methods"]["uniform"]
    assert all(a >= b - 1e-12 for a, b in zip(o["expected_pass_at_k"], u["expected_pass_at_k"], strict=True))
    for s in res["savings"]["oracle"]:
        assert s["saving"] >= 0
    assert compare_allocations(pred, truth, [80, 160], seed=3) == res  # seeded
    outcomes = (rng.random((40, 16)) < truth[:, None]).astype(int)
    res2 = compare_allocations(pred, outcomes, [80], methods=("uniform",), oracle=False)
    assert res2["truth"] == "outcomes" and res2["recorded_samples_per_prompt"] == 16
    # uniform with 2 samples: the unbiased estimator of 2 draws without replacement
    c = outcomes.sum(1)
    exact = np.mean(1 - (16 - c) * (15 - c) / (16 * 15))
    assert res2["methods"]["uniform"]["sampled_pass_at_k"][0] == pytest.approx(exact)


# ---- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(pred=[0.5, 0.5], budget=1), ValueError, "budget"),
        (dict(pred=[0.5, 0.5], budget=5, min_per_prompt=3), ValueError, "budget.*min_per_prompt"),
        (dict(pred=[0.5, np.nan], budget=4), ValueError, "pred"),
        (dict(pred=[0.5, 1.2], budget=4), ValueError, "pred"),
        (dict(pred=[-0.1, 0.5], budget=4), ValueError, "pred"),
        (dict(pred=[], budget=4), ValueError, "pred"),
        (dict(pred=[[[0.5]]], budget=4), ValueError, "pred"),
        (dict(pred=np.zeros((0, 2)), budget=4), ValueError, "pred"),
        (dict(pred=[0.5, 0.5], budget=4, concentration=0.0), ValueError, "concentration"),
        (dict(pred=[0.5, 0.5], budget=4, uniform_share=1.5), ValueError, "uniform_share"),
        (dict(pred=[[0.5, 0.5], [0.2, 0.2]], budget=4, concentration=2.0), ValueError, "not both"),
        (dict(pred=["a"], budget=4), TypeError, "pred"),
        (dict(pred=[0.5], budget=-1), ValueError, "budget"),
        (dict(pred=[0.5], budget=2.0), TypeError, "budget"),
        (dict(pred=[0.5], budget=True), TypeError, "budget"),
        (dict(pred=[0.5], budget=2, min_per_prompt=-1), ValueError, "min_per_prompt"),
        (dict(pred=[0.5], budget=2, min_per_prompt=1.5), TypeError, "min_per_prompt"),
        (dict(pred=[0.5], budget=2, method="best"), ValueError, "method"),
        (dict(pred=[0.5], budget=2, method="window", quantiles=(0.8, 0.2)), ValueError, "quantiles"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        allocate(**kwargs)


def test_bad_input_helpers():
    with pytest.raises(ValueError, match="counts"):
        expected_pass_at_k([0.5, 0.5], [1])
    with pytest.raises(ValueError, match="counts"):
        expected_pass_at_k([0.5], [-1])
    with pytest.raises(ValueError, match="rates"):
        expected_pass_at_k([2.0], [1])
    with pytest.raises(ValueError, match="target"):
        budget_to_reach([0.5], 1.5)
    with pytest.raises(ValueError, match="truth"):
        compare_allocations([0.5, 0.5], [0.5], [4])
    with pytest.raises(ValueError, match="truth"):
        compare_allocations([0.5], [[0.5, 1.0]], [4])
    with pytest.raises(ValueError, match="budgets"):
        compare_allocations([0.5, 0.5], [0.5, 0.5], [1])


# ---- a trained selector predicts prompts outside its pool ----------------------------------
EASY = ["add {a} and {b}", "what is {a} plus {b}", "sum {a} + {b}"]
HARD = ["prove that the integral of x^{a} over the manifold M_{b} vanishes",
        "find every prime factorisation of the group of order {a}{b} up to isomorphism",
        "show the sequence s_{a} diverges for every topology on a set of size {b}"]


def _texts(templates, n, seed):
    rng = np.random.default_rng(seed)
    return [templates[i % len(templates)].format(a=int(rng.integers(10, 99)), b=int(rng.integers(10, 99)))
            for i in range(n)]


def _trained(tmp_path, monkeypatch, steps=30):
    monkeypatch.setenv("ROLLWISE_CACHE", str(tmp_path / "cache"))
    texts = _texts(EASY, 20, 0) + _texts(HARD, 20, 1)
    truth = np.r_[np.full(20, 0.9), np.full(20, 0.1)]
    ids = [f"p{i}" for i in range(40)]
    pool = rollwise.PromptPool.from_texts(texts, ids=ids, embedder="hashing")
    sel = rollwise.make_selector("gps", pool, 8, seed=0, **{**TINY_GPS, "hidden": 16, "grad_steps": 4})
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.choice(40, size=8, replace=False)
        sel.observe(idx, bernoulli_rewards(rng, truth[idx], 4))
    return sel, pool, texts, ids


def test_trained_gps_predicts_new_prompts(tmp_path, monkeypatch):
    sel, pool, _, _ = _trained(tmp_path, monkeypatch)
    before = sel.predict()
    new_easy, new_hard = _texts(EASY, 6, 10), _texts(HARD, 6, 11)
    pe = sel.predict_texts(new_easy, embedder="hashing")
    ph = sel.predict_texts(new_hard, embedder="hashing")
    assert pe.shape == (6,) and np.all((pe >= 0) & (pe <= 1))
    assert pe.mean() > ph.mean() + 0.2
    # predicting outside the pool is pure, and agrees with predict() on the pool's own prompts
    np.testing.assert_array_equal(sel.predict(), before)
    np.testing.assert_allclose(sel.predict_embeddings(pool.embeddings * 3.0), before, atol=1e-5)
    with pytest.raises(ValueError, match="embeddings"):
        sel.predict_embeddings(np.ones((2, pool.dim + 1)))
    with pytest.raises(ValueError, match="NaN"):
        sel.predict_embeddings(np.full((1, pool.dim), np.nan))
    with pytest.raises(ValueError, match="zero"):
        sel.predict_embeddings(np.zeros((1, pool.dim)))


# ---- the command line ----------------------------------------------------------------------
def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_allocate_end_to_end(tmp_path, monkeypatch, capsys):
    sel, _, texts, ids = _trained(tmp_path, monkeypatch)
    pool_file, new_file = tmp_path / "pool.jsonl", tmp_path / "new.jsonl"
    _write_jsonl(pool_file, [{"id": i, "prompt": t} for i, t in zip(ids, texts, strict=True)])
    new_texts = _texts(EASY, 5, 20) + _texts(HARD, 5, 21)
    _write_jsonl(new_file, [{"id": f"n{i}", "prompt": t} for i, t in enumerate(new_texts)])
    state = tmp_path / "sel.pt"
    sel.save(state)
    out = tmp_path / "alloc.jsonl"  # its folder must exist: allocate creates none
    base = ["allocate", "--selector", str(state), "--pool", str(pool_file), "--prompts",
            str(new_file), "--embedder", "hashing", "--out", str(out)]

    assert main(base + ["--per-prompt", "4", "--method", "greedy"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"n{i}" for i in range(10)]
    counts = np.array([r["samples"] for r in rows])
    assert counts.sum() <= 40 and counts.min() >= 1
    # by default: greedy under the selector's calibrated Beta rates. The expected counts come from
    # allocate(), itself checked against brute force above: this test checks the command's
    # plumbing (which predictions, calibration and options reach it), not the optimiser
    cal = sel.calibration()
    pred = sel.predict_texts(new_texts, embedder="hashing", calibrated=True)
    np.testing.assert_array_equal(counts, allocate(pred, 40, "greedy", concentration=cal.concentration))
    np.testing.assert_allclose([r["predicted_rate"] for r in rows], pred, atol=1e-6)
    printed = capsys.readouterr().out
    assert "uniform allocation needs" in printed and "saved" in printed and "calibration" in printed
    assert main(base + ["--per-prompt", "4", "--contamination", "fitted"]) == 0
    fitted = np.array([json.loads(line)["samples"] for line in out.read_text().splitlines()])
    np.testing.assert_array_equal(fitted, allocate(pred, 40, "greedy", concentration=cal.concentration,
                                                   contamination=cal.contamination))
    out.unlink()
    assert main(base + ["--per-prompt", "4", "--contamination", "lots"]) == 2
    assert "--contamination" in capsys.readouterr().err and not out.exists()
    # --calibration none: the raw predictions; --uniform-share: the guard
    assert main(base + ["--per-prompt", "4", "--calibration", "none", "--uniform-share", "0.5"]) == 0
    raw = sel.predict_texts(new_texts, embedder="hashing")
    counts = np.array([json.loads(line)["samples"] for line in out.read_text().splitlines()])
    np.testing.assert_array_equal(counts, allocate(raw, 40, "greedy", uniform_share=0.5))
    assert main(base + ["--per-prompt", "4", "--uniform-share", "2"]) == 2
    assert "--uniform-share" in capsys.readouterr().err

    for method in ("window", "uniform"):
        assert main(base + ["--budget", "33", "--method", method]) == 0
        assert sum(json.loads(line)["samples"] for line in out.read_text().splitlines()) == 33
    capsys.readouterr()

    # clear errors: missing files, a budget below the floor, a pool that is not the selector's
    assert main(base[:2] + [str(tmp_path / "nope.pt")] + base[3:] + ["--budget", "20"]) == 2
    assert "--selector" in capsys.readouterr().err
    assert main(base + ["--budget", "5"]) == 2
    assert "--budget" in capsys.readouterr().err
    _write_jsonl(pool_file, [{"id": i, "prompt": t} for i, t in zip(ids[:-1], texts[:-1], strict=True)])
    assert main(base + ["--budget", "20"]) == 2
    err = capsys.readouterr().err
    assert "--pool" in err and "39" in err and "40" in err
    with pytest.raises(SystemExit):  # --budget and --per-prompt are exclusive, one is required
        main(base)


# ---- predictive distributions and the guard ------------------------------------------------
def _brute_force_objective(gain_of_counts, n: int, budget: int, floor: int) -> float:
    best = -np.inf
    for extra in itertools.product(range(budget - n * floor + 1), repeat=n):
        if sum(extra) <= budget - n * floor:
            best = max(best, gain_of_counts(np.asarray(extra) + floor))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_greedy_on_predictive_samples_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    samples = rng.choice([0.0, 0.05, 0.2, 0.5, 0.9, 1.0], size=(4, n))

    def objective(counts):  # expected pass@k averaged over the predictive samples
        return float(np.mean([expected_pass_at_k(s, counts) for s in samples]))

    for budget in range(n, n + 6):
        counts = allocate(samples, budget, "greedy")
        assert counts.sum() <= budget
        assert objective(counts) == pytest.approx(_brute_force_objective(objective, n, budget, 1))


@pytest.mark.parametrize("seed", range(5))
def test_greedy_under_beta_rates_matches_brute_force(seed):
    from scipy.special import betaln

    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 4)), float(rng.choice([0.5, 3.0, 40.0]))
    mu = rng.uniform(0.01, 0.99, size=n)
    a, b = mu * c, (1 - mu) * c

    def objective(counts):  # E[1 - (1 - g)^n] with g ~ Beta(a, b): 1 - B(a, b + n) / B(a, b)
        return float(np.mean(1.0 - np.exp(betaln(a, b + counts) - betaln(a, b))))

    for budget in range(n, n + 6):
        counts = allocate(mu, budget, "greedy", concentration=c)
        assert objective(counts) == pytest.approx(_brute_force_objective(objective, n, budget, 1))


def test_beta_rates_spend_less_on_a_likely_hopeless_prompt():
    """With a wide Beta around a low mean most of the mass is near 0: its later samples are
    expected to pay less than the moderate prompts', unlike under the point prediction."""
    pred = np.array([0.01, 0.3, 0.3, 0.3, 0.9, 0.9])
    sharp = allocate(pred, 48, "greedy")
    wide = allocate(pred, 48, "greedy", concentration=2.0)
    assert wide[0] < sharp[0] and wide[1:4].sum() > sharp[1:4].sum()


def test_the_guard_bounds_a_confidently_wrong_predictor():
    """A third of the prompts predicted hopeless (0) that are in fact the easiest: unguarded
    greedy without a per-prompt floor gives them nothing and falls far below uniform; guarded,
    its pass@k is never below uniform's at share x budget (the stated bound)."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.02, 0.3, size=60)
    pred = truth.copy()
    truth[:20], pred[:20] = 0.6, 0.0
    share = 0.5
    for per_prompt in (2, 4, 8, 16):
        budget = per_prompt * truth.size
        bound = expected_pass_at_k(truth, allocate(pred, int(share * budget), "uniform"))
        guarded = allocate(pred, budget, "greedy", min_per_prompt=0, uniform_share=share)
        assert guarded.sum() <= budget
        assert expected_pass_at_k(truth, guarded) >= bound - 1e-12
        unguarded = allocate(pred, budget, "greedy", min_per_prompt=0)
        assert expected_pass_at_k(truth, unguarded) < bound


def test_guarded_allocations_stay_nested():
    pred = np.random.default_rng(4).uniform(size=9)
    for method in ("greedy", "window"):
        prev = allocate(pred, 9, method, uniform_share=0.3)
        for b in range(10, 90):
            cur = allocate(pred, b, method, uniform_share=0.3)
            assert np.all(cur >= prev) and cur.sum() <= b, (method, b)
            prev = cur


# ---- contamination -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_greedy_under_contamination_matches_brute_force(seed):
    from scipy.special import betaln

    rng = np.random.default_rng(seed)
    n, c, e = int(rng.integers(1, 4)), float(rng.choice([0.5, 3.0, 40.0])), float(rng.uniform(0.05, 0.6))
    mu = rng.uniform(0.01, 0.99, size=n)
    a, b = mu * c, (1 - mu) * c

    def objective(counts):  # each prompt's rate: its own Beta w.p. 1 - e, a random prompt's w.p. e
        counts = np.asarray(counts)
        own = 1.0 - np.exp(betaln(a, b + counts) - betaln(a, b))
        pop = np.array([np.mean(1.0 - np.exp(betaln(a, b + m) - betaln(a, b))) for m in counts])
        return float(np.mean((1 - e) * own + e * pop))

    for budget in range(n, n + 6):
        counts = allocate(mu, budget, "greedy", concentration=c, contamination=e)
        assert objective(counts) == pytest.approx(_brute_force_objective(objective, n, budget, 1))


def test_contamination_reaches_prompts_predicted_hopeless_and_stays_nested():
    """A third of the prompts predicted never solved (0) that are in fact the easiest: greedy on
    the predictions gives them only the floor at any budget; with contamination large budgets
    reach them, and at 16 samples per prompt its pass@k is far above the sharp greedy's (and
    above uniform's)."""
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.02, 0.3, size=60)
    pred = truth.copy()
    truth[:20], pred[:20] = 0.6, 0.0
    sharp = allocate(pred, 16 * 60, "greedy")
    mixed = allocate(pred, 16 * 60, "greedy", contamination=0.2)
    assert sharp[:20].max() == 1 and mixed[:20].min() >= 4
    assert expected_pass_at_k(truth, mixed) > expected_pass_at_k(truth, sharp) + 0.1
    assert expected_pass_at_k(truth, mixed) > expected_pass_at_k(truth, allocate(pred, 16 * 60, "uniform"))
    prev = allocate(pred, 60, "greedy", contamination=0.2)
    for budget in range(61, 200, 7):
        cur = allocate(pred, budget, "greedy", contamination=0.2)
        assert np.all(cur >= prev) and cur.sum() == budget
        prev = cur
    # e = 0 is the rule without contamination; e = 1 trusts no prediction: as even as uniform
    np.testing.assert_array_equal(allocate(pred, 300, "greedy", contamination=0.0),
                                  allocate(pred, 300, "greedy"))
    flat = allocate(pred, 300, "greedy", contamination=1.0)
    assert flat.max() - flat.min() <= 1


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_bad_contamination_is_refused_by_name(value):
    with pytest.raises(ValueError, match="contamination"):
        allocate([0.2, 0.5], 4, "greedy", contamination=value)
