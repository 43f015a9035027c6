"""Per-prompt rollout budgets: exact optimum of each objective, bounds and budget kept exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _support import make, make_pool
from scipy import stats

from rollwise.budgets import OBJECTIVES, PromptBudgets, group_values


def brute_force(values: np.ndarray, ks: np.ndarray, total: int) -> float:
    best = -np.inf
    for combo in itertools.product(range(len(ks)), repeat=values.shape[0]):
        if sum(ks[j] for j in combo) == total:
            best = max(best, sum(values[i, j] for i, j in enumerate(combo)))
    return best


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("seed", range(6))
def test_split_is_the_exact_optimum_within_bounds(objective, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5))
    k_min, k_max = 2, int(rng.integers(4, 9))
    total = int(rng.integers(n * k_min, n * k_max + 1))
    mean = rng.beta(0.5, 0.5, n)
    conc = rng.choice([2.0, 10.0, np.inf], n)
    budget = PromptBudgets(total, k_min=k_min, k_max=k_max, objective=objective)
    ks = budget.split(mean, conc)
    assert ks.dtype == np.int64 and ks.sum() == total
    assert ks.min() >= k_min and ks.max() <= k_max
    grid = np.arange(k_min, k_max + 1)
    values = group_values(mean, conc, grid, objective)
    got = sum(values[i, k - k_min] for i, k in enumerate(ks))
    assert got == pytest.approx(brute_force(values, grid, total), rel=1e-7, abs=1e-9)


def test_hand_computed_case():
    """Known rates 0.5 and 0.05, 12 rollouts, 2 to 10 each, expected rollouts in mixed groups:
    (k, 12 - k) = (2, 10): 2 * 0.5 + 10 * (1 - 0.95^10) = 1 + 4.0126 = 5.013; (4, 8): 3.5 + 2.697
    = 6.197; (6, 6): 5.8125 + 1.588 = 7.400; (8, 4): 7.969 + 0.742 = 8.711; (10, 2): 9.980 + 0.19 =
    10.170: the prompt at 0.5 takes the most it may."""
    ks = PromptBudgets(12, k_min=2, k_max=10, objective="rollouts").split([0.5, 0.05])
    assert ks.tolist() == [10, 2]
    # expected informative groups: (3, 9) 0.75 + 0.370 = 1.120; (4, 8) 0.875 + 0.337 = 1.212;
    # (5, 7) 0.9375 + 0.302 = 1.239; (6, 6) 0.969 + 0.265 = 1.234; (7, 5) 0.984 + 0.226 = 1.211:
    # the sparse prompt gets more
    assert PromptBudgets(12, k_min=2, k_max=10, objective="groups").split([0.5, 0.05]).tolist() == [5, 7]


def test_sparse_prompts_get_more_once_the_others_are_sure_to_mix():
    """With 4 rollouts each, a prompt at 0.5 gains more from a fifth (0.0625) than one at 0.1
    (0.066 for a fifth, but it loses 0.125 from the fourth): equal groups. With 8 each, the prompt
    at 0.5 mixes with probability 0.992 and the one at 0.1 with 0.57: rollouts move to it."""
    mean = [0.5] * 4 + [0.1] * 4
    assert PromptBudgets(32, objective="groups").split(mean).tolist() == [4] * 8
    ks = PromptBudgets(64, objective="groups").split(mean)
    assert ks.sum() == 64 and ks[4:].min() > ks[:4].max()


def test_equal_predictions_give_equal_groups():
    for objective in ("groups", "variance"):
        assert PromptBudgets(32, objective=objective).split(np.full(8, 0.3), 5.0).tolist() == [4] * 8
    # counting rollouts, big groups waste less than small ones: equal prompts get unequal groups
    ks = PromptBudgets(32, objective="rollouts").split(np.full(8, 0.3), 5.0)
    assert ks.sum() == 32 and ks.max() > 4


def test_beta_expectations_match_their_closed_form():
    # Beta(1, 1): E[p^k] = 1 / (k + 1), so P(mixed) = 1 - 2 / (k + 1)
    ks = np.arange(1, 9)
    mixed = group_values([0.5], [2.0], ks, "groups")[0]
    assert np.allclose(mixed, 1 - 2 / (ks + 1))
    a, b = 2.0, 6.0
    var = group_values([a / (a + b)], [a + b], np.array([5]), "variance")[0, 0]
    assert var == pytest.approx(4 * (stats.beta(a, b).mean() - stats.beta(a, b).moment(2)))
    known = group_values([0.2], [np.inf], np.array([3]), "rollouts")[0, 0]
    assert known == pytest.approx(3 * (1 - 0.2**3 - 0.8**3))


def test_contamination_gives_hopeless_predictions_a_share():
    mean = [0.5, 0.5, 0.0, 0.0]
    budget = PromptBudgets(16, k_min=2, k_max=8, objective="groups")
    assert budget.split(mean, 20.0).tolist() == [6, 6, 2, 2]
    assert budget.split(mean, 20.0, contamination=0.5).tolist() == [5, 5, 3, 3]


def test_whole_groups_and_dropped_prompts():
    """step=4: counts in whole groups of 4 (TRL); k_min=0: a prompt may get none. Expected
    informative groups (one group per prompt, sizes merged): (8, 8, 0, 0) 0.992 x 2 = 1.984 beats
    (4, 4, 4, 4) 0.875 x 2 = 1.75 and (8, 4, 4, 0) 0.992 + 0.875 = 1.867."""
    budget = PromptBudgets(16, k_min=0, k_max=8, step=4, objective="groups")
    assert budget.split([0.5, 0.5, 0.0, 0.0], 20.0).tolist() == [8, 8, 0, 0]
    assert budget.bounds(4) == (0, 8)
    assert PromptBudgets(32, k_min=4, step=4).bounds(4) == (4, 20)  # 32 - 3 x 4 caps 4 x 8
    for objective in OBJECTIVES:  # no value for no rollouts
        assert group_values([0.3], [5.0], np.array([0]), objective)[0, 0] == 0.0


def test_separate_groups_are_valued_group_by_group():
    """TRL normalises each block of num_generations rows on its own: g groups of 4 are worth g
    times one. Equal predictions then keep one group per prompt (merged, `variance` would pile
    all on two prompts: (16 - 1) x 2 > (4 - 1) x 8 groups' worth); unequal ones go to the prompts
    whose one group is worth most."""
    kw = dict(rollouts=32, k_min=0, k_max=16, step=4, objective="variance")
    assert PromptBudgets(**kw, separate_groups=True).split(np.full(8, 0.3), 5.0).tolist() == [4] * 8
    assert PromptBudgets(**kw).split(np.full(8, 0.3), 5.0).tolist().count(0) == 6
    mean = [0.5, 0.45, 0.1, 0.1, 0.05, 0.05, 0.02, 0.02]
    ks = PromptBudgets(**kw, separate_groups=True).split(mean, 20.0)
    assert ks.tolist() == [16, 16, 0, 0, 0, 0, 0, 0]
    values = group_values(np.asarray(mean), 20.0, np.array([4]), "variance")[:, 0]
    assert values[0] > values[1] > values[2]  # the two prompts nearest 0.5 are worth most


def test_default_k_max_is_four_even_shares_within_the_budget():
    assert PromptBudgets(32).bounds(8) == (2, 16)
    assert PromptBudgets(8).bounds(4) == (2, 2)
    assert PromptBudgets(10, k_min=2).bounds(2) == (2, 8)


@pytest.mark.parametrize("kwargs, arg", [
    ({"rollouts": 0}, "rollouts"), ({"rollouts": 8, "k_min": -1}, "k_min"),
    ({"rollouts": 10, "step": 4}, "multiple of step"),
    ({"rollouts": 8, "k_min": 2, "step": 4}, "k_min"),
    ({"rollouts": 8, "k_min": 3, "k_max": 2}, "k_max"), ({"rollouts": 8, "objective": "x"}, "objective"),
])
def test_bad_budgets_are_refused(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        PromptBudgets(**kwargs)


def test_bad_splits_are_refused():
    b = PromptBudgets(8)
    with pytest.raises(ValueError, match="rollouts=8"):
        b.split(np.full(5, 0.5))  # 5 x k_min = 10 > 8
    with pytest.raises(ValueError, match="k_max"):
        PromptBudgets(40, k_max=4).split(np.full(5, 0.5))
    for mean in ([], [[0.5]], [1.5], [np.nan]):
        with pytest.raises(ValueError, match="mean"):
            b.split(mean)
    with pytest.raises(ValueError, match="concentration"):
        b.split([0.5, 0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match="contamination"):
        b.split([0.5, 0.5], contamination=2.0)


def test_selectors_give_their_predictive_distributions():
    pool = make_pool(20)
    mopps = make("mopps", pool, 4, seed=0)
    mopps.observe([1, 2], [[1.0, 1.0], [0.0, 1.0, 0.0]])
    mean, conc, cont = mopps.predictive([1, 2, 3])
    assert np.allclose(mean, mopps.predict([1, 2, 3]))
    assert np.allclose(conc, (mopps.alpha + mopps.beta)[[1, 2, 3]])
    assert cont == 0.0
    gps = make("gps", pool, 4, seed=0)
    gps.observe(gps.select(), np.ones((4, 4)) * [[1], [0], [1], [0]])
    mean, conc, cont = gps.predictive([0, 5])
    cal = gps.calibration()
    assert np.allclose(mean, cal.mean(gps.predict([0, 5]))) and np.all(conc == cal.concentration)
    with pytest.raises(TypeError, match="uniform"):
        make("uniform", pool, 4).predictive([0])


def test_bench_flag_offers_every_objective():
    import argparse

    from rollwise.cli.bench import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p, demo=False)
    action = next(a for a in p._actions if a.dest == "budget_objective")
    assert sorted(action.choices) == sorted(OBJECTIVES)
