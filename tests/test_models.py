"""What the strategies learn: MoPPS posterior arithmetic, uniform's estimate, GPS generalisation."""

from __future__ import annotations

import numpy as np
import pytest
from _support import bernoulli_rewards, make, make_pool
from scipy.special import expit

import rollwise
from rollwise.ppm import PPMConfig, PromptPredictiveModel, gaussian_kl

# ---- MoPPS -----------------------------------------------------------------------------------


def test_mopps_posterior_update_by_hand():
    pool = make_pool(6)
    sel = make("mopps", pool, 2, prior_alpha=2.0, prior_beta=3.0, decay=0.7)
    np.testing.assert_allclose(sel.predict(), 2.0 / 5.0)
    sel.observe([1, 4], [[1, 0, 1], [0, 0, 0]])
    # alpha <- 0.7 alpha + 0.3 alpha0 + s ; beta <- 0.7 beta + 0.3 beta0 + (k - s)
    assert sel.alpha[1] == pytest.approx(0.7 * 2 + 0.3 * 2 + 2)  # 4.0
    assert sel.beta[1] == pytest.approx(0.7 * 3 + 0.3 * 3 + 1)  # 4.0
    assert sel.alpha[4] == pytest.approx(2.0) and sel.beta[4] == pytest.approx(3.0 + 3)
    sel.observe([1], [[1.0, 1.0, 1.0, 0.5]])  # k = 4 this time, one fractional reward
    assert sel.alpha[1] == pytest.approx(0.7 * 4.0 + 0.3 * 2 + 3.5)  # 6.9
    assert sel.beta[1] == pytest.approx(0.7 * 4.0 + 0.3 * 3 + 0.5)  # 4.2
    untouched = [0, 2, 3, 5]
    np.testing.assert_allclose(sel.alpha[untouched], 2.0)
    np.testing.assert_allclose(sel.beta[untouched], 3.0)
    pred = sel.predict()
    assert pred[1] == pytest.approx(6.9 / (6.9 + 4.2))
    assert pred[4] == pytest.approx(2.0 / 8.0)
    np.testing.assert_allclose(sel.predict(np.array([1, 4])), pred[[1, 4]])


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_mopps_decay_extremes(decay):
    sel = make("mopps", make_pool(3), 1, decay=decay)
    sel.observe([0], [[1, 1]])
    sel.observe([0], [[0, 0, 0]])
    if decay == 1.0:  # plain accumulation: Beta(1 + 2, 1 + 3)
        assert (sel.alpha[0], sel.beta[0]) == pytest.approx((3.0, 4.0))
    else:  # prior plus the last observation only: Beta(1 + 0, 1 + 3)
        assert (sel.alpha[0], sel.beta[0]) == pytest.approx((1.0, 4.0))


def test_mopps_thompson_selection_rule():
    """One Beta draw per candidate from the selector's RNG; the B draws nearest the target win."""
    pool = make_pool(30)
    sel = make("mopps", pool, 4, seed=5, target=0.3)
    sel.observe(np.arange(10), np.random.default_rng(0).random((10, 6)))
    cand = np.arange(2, 25)
    twin = np.random.default_rng()
    twin.bit_generator.state = sel.rng.bit_generator.state
    theta = twin.beta(sel.alpha[cand], sel.beta[cand])
    expected = cand[np.argsort(np.abs(theta - 0.3), kind="stable")[:4]]
    np.testing.assert_array_equal(sel.select(cand), expected)


def test_uniform_predicts_the_running_mean():
    sel = make("uniform", make_pool(5), 2)
    np.testing.assert_allclose(sel.predict(), 0.5)
    sel.observe([0, 1], [[1, 1, 0], [0, 0, 0]])
    sel.observe([3], [[1.0, 0.5]])
    np.testing.assert_allclose(sel.predict(), (2 + 0 + 1.5) / 8)


# ---- the PPM ---------------------------------------------------------------------------------


def test_gaussian_kl():
    import torch

    mu = torch.tensor([[0.3, -1.0]])
    lv = torch.tensor([[0.2, -0.5]])
    assert gaussian_kl(mu, lv, mu, lv).item() == pytest.approx(0.0, abs=1e-7)
    # KL(N(0.3, e^0.2) || N(0, 1)) by hand
    expected = 0.5 * (-0.2 + np.exp(0.2) + 0.09 - 1.0)
    assert gaussian_kl(mu[:, :1], lv[:, :1], torch.zeros(1, 1), torch.zeros(1, 1)).item() == (
        pytest.approx(expected, rel=1e-5))


def test_ppm_config_validation():
    PPMConfig().validate()
    for bad in ({"latent_dim": -1}, {"hidden": 0}, {"hidden": 10, "encoder_heads": 4},
                {"mc_samples": 1.5}, {"window": True}, {"lr": float("nan")}, {"kl_weight": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PPMConfig(**bad).validate()


def test_ppm_predict_handles_empty_and_chunked_input():
    import torch

    model = PromptPredictiveModel(6, PPMConfig(hidden=8, encoder_heads=2, latent_dim=3))
    emb = torch.nn.functional.normalize(torch.randn(50, 6), dim=1)
    gen = torch.Generator().manual_seed(0)
    full = model.predict(emb, None, gen)
    chunked = model.predict(emb, None, torch.Generator().manual_seed(0), chunk=7)
    torch.testing.assert_close(full, chunked)
    assert model.predict(emb[:0], None, gen).shape == (0,)
    assert torch.all((full > 0) & (full < 1))


def _synthetic_world(seed: int, n: int = 3000, d: int = 32):
    """Unit embeddings; success rate = sigmoid(linear + nonlinear function of the embedding)."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    w, w2 = rng.standard_normal(d), rng.standard_normal(d)
    w, w2 = w / np.linalg.norm(w), w2 / np.linalg.norm(w2)
    truth = expit(10.0 * emb @ w + 1.5 * np.sin(6.0 * emb @ w2))
    return rollwise.PromptPool(emb), truth


def _train(name, pool, truth, steps, batch, seed):
    sel = rollwise.make_selector(name, pool, batch, seed=seed)
    rng = np.random.default_rng(1000 + seed)
    seen = np.zeros(len(pool), dtype=bool)
    for _ in range(steps):
        idx = sel.select()
        seen[idx] = True
        sel.observe(idx, bernoulli_rewards(rng, truth[idx], k=8))
    return sel, seen


@pytest.mark.parametrize("name", ["gps", "gps-nolatent"])
def test_ppm_generalises_to_prompts_never_observed(name):
    pool, truth = _synthetic_world(seed=3)
    untrained = rollwise.make_selector(name, pool, 64, seed=3).predict()
    before = rollwise.spearman(untrained, truth)
    sel, seen = _train(name, pool, truth, steps=10, batch=64, seed=3)
    never = ~seen
    assert never.sum() > 2000  # most prompts were never rolled out
    after = rollwise.spearman(sel.predict()[never], truth[never])
    assert after > 0.5, f"Spearman on never-observed prompts {after:.3f} (untrained {before:.3f})"
    assert after > before + 0.3


def test_mopps_cannot_generalise_to_prompts_never_observed():
    pool, truth = _synthetic_world(seed=3)
    sel, seen = _train("mopps", pool, truth, steps=10, batch=64, seed=3)
    never = ~seen
    rho = rollwise.spearman(sel.predict()[never], truth[never])
    assert np.isnan(rho) or rho < 0.2
    # where it did observe, its estimates do track the truth
    assert rollwise.spearman(sel.predict()[seen], truth[seen]) > 0.5
