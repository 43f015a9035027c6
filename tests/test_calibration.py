"""Calibration metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from rollwise.metrics import expected_calibration_error, reliability_curve


def test_ece_of_a_hand_computed_case():
    # bins of width 0.5: [0.1, 0.2] -> mean 0.15 vs truth 0.5; [0.9] -> 0.9 vs 0.0
    pred, truth = [0.1, 0.2, 0.9], [0.0, 1.0, 0.0]
    curve = reliability_curve(pred, truth, bins=2)
    assert curve["count"] == [2, 1]
    np.testing.assert_allclose(curve["mean_predicted"], [0.15, 0.9])
    np.testing.assert_allclose(curve["mean_true"], [0.5, 0.0])
    assert expected_calibration_error(pred, truth, bins=2) == pytest.approx((2 * 0.35 + 0.9) / 3)


def test_perfect_and_constant_predictions():
    rates = np.array([0.05, 0.15, 0.55, 0.95])
    assert expected_calibration_error(rates, rates) == pytest.approx(0.0)
    # one bin holds everything: the gap of the means, not the mean of the gaps
    assert expected_calibration_error(np.full(4, 0.3), [0.0, 0.2, 0.4, 0.6], bins=1) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(4, 0.3), [0.0, 0.2, 0.4, 0.6]) == pytest.approx(0.0)
    curve = reliability_curve([1.0, 0.0], [1.0, 0.0], bins=4)  # the edges fall in the end bins
    assert curve["count"] == [1, 0, 0, 1] and np.isnan(curve["mean_true"][1])


@pytest.mark.parametrize(("pred", "truth", "bins"), [
    ([0.1, 1.2], [0.0, 1.0], 10), ([0.1], [0.1, 0.2], 10), ([], [], 10), ([0.5], [0.5], 0),
    ([np.nan], [0.5], 10),
])
def test_bad_input_is_refused(pred, truth, bins):
    with pytest.raises(ValueError):
        expected_calibration_error(pred, truth, bins)


def _overconfident_world(seed: int, n: int):
    """Raw predictions p and true rates sigmoid(0.5 logit(p) + 0.3) (an over-confident
    predictor), the rates spread by a Beta of concentration 8 around that mean."""
    from scipy.special import expit, logit

    rng = np.random.default_rng(seed)
    p = expit(rng.normal(0.0, 3.0, size=n))
    mu = expit(0.5 * logit(p) + 0.3)
    truth = rng.beta(mu * 8.0, (1.0 - mu) * 8.0)
    return p, truth, rng


def test_beta_binomial_fit_recovers_an_overconfident_map():
    from rollwise.calibration import BetaBinomialCalibration

    p, truth, rng = _overconfident_world(0, 3000)
    k = 8
    fitted = BetaBinomialCalibration.fit(p, rng.binomial(k, truth), k)
    assert abs(fitted.slope - 0.5) < 0.1 and abs(fitted.bias - 0.3) < 0.2
    # a map that would invert or flatten the ranking is not allowed
    inverted = BetaBinomialCalibration.fit(p, rng.binomial(k, 1.0 - truth), k)
    assert inverted.slope == pytest.approx(0.25)
    assert 4.0 < fitted.concentration < 16.0 and fitted.groups == 3000
    # on fresh prompts the calibrated rates are far better calibrated than the raw ones
    p2, truth2, _ = _overconfident_world(1, 2000)
    raw, cal = expected_calibration_error(p2, truth2), expected_calibration_error(fitted.mean(p2), truth2)
    assert cal < 0.03 and cal < raw / 2


def test_validated_fit_drops_a_map_learned_from_stale_outcomes():
    """Early outcomes that say the predictions mean nothing, then a predictor that has learned:
    the validated fit keeps the identity, the plain fit does not."""
    from rollwise.calibration import BetaBinomialCalibration

    rng = np.random.default_rng(2)
    p = rng.uniform(0.01, 0.99, size=600)
    truth = np.where(np.arange(600) < 400, 0.5, p)  # the first 400 predictions were noise
    s = rng.binomial(8, truth)
    validated = BetaBinomialCalibration.fit_validated(p, s, 8)
    assert (validated.slope, validated.bias) == (1.0, 0.0)
    assert BetaBinomialCalibration.fit(p, s, 8).slope < 0.8
    p2, truth2, rng2 = _overconfident_world(3, 900)  # a map that holds throughout is kept
    kept = BetaBinomialCalibration.fit_validated(p2, rng2.binomial(8, truth2), 8)
    assert abs(kept.slope - 0.5) < 0.15


def test_calibration_without_data_is_the_identity():
    from rollwise.calibration import BetaBinomialCalibration

    ident = BetaBinomialCalibration.fit([0.3], [1.0], 4)
    np.testing.assert_allclose(ident.mean([0.2, 0.7]), [0.2, 0.7])
    with pytest.raises(ValueError, match="successes"):
        BetaBinomialCalibration.fit([0.3, 0.4], [5.0, 1.0], 4)
    with pytest.raises(ValueError, match="concentration"):
        BetaBinomialCalibration(concentration=0.0)


def test_gps_calibrates_its_predictions_for_unseen_prompts():
    """GPS trained on a fixed pool whose rates follow the embeddings (its raw predictions are
    then already well calibrated): the calibration is fitted on its window of observations,
    keeps the never-seen prompts' predictions calibrated, and survives a save/load.

    (Not "no worse than raw": the map is fitted on the prompts GPS chose, near its target, and
    on never-seen prompts of every rate it cost up to 0.03 of ECE in some seeds of this setup,
    under the default before centred diversity as under today's.)"""
    from scipy.special import expit

    import rollwise

    rng = np.random.default_rng(5)
    emb = rng.standard_normal((700, 8)).astype(np.float32)
    w = rng.standard_normal(8)
    truth = expit(emb @ w / np.sqrt(8) * 2.5 + 1.0)
    pool = rollwise.PromptPool(emb[:500])
    sel = rollwise.make_selector("gps", pool, 16, seed=0, hidden=16, encoder_heads=2)
    for _ in range(40):
        idx = sel.select()
        sel.observe(idx, (rng.random((16, 8)) < truth[idx, None]).astype(float))
    cal = sel.calibration()
    assert cal.groups == 40 * 16  # every group of the window (64 observe calls)
    held, held_truth = emb[500:], truth[500:]
    raw = expected_calibration_error(sel.predict_embeddings(held), held_truth)
    calibrated = expected_calibration_error(sel.predict_embeddings(held, calibrated=True), held_truth)
    assert raw < 0.05 and calibrated < 0.05
    # the calibrated predictions are the fitted map of the raw ones
    np.testing.assert_allclose(sel.predict_embeddings(held, calibrated=True),
                               cal.mean(sel.predict_embeddings(held)))
    # predictions that follow the rates: a minority of first observations look like guesses
    # (against the cap that pure guesses reach in the next test)
    assert cal.contamination < 0.4
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        sel.save(f"{d}/s.pt")
        back = rollwise.load_selector(f"{d}/s.pt", pool)
    assert back.calibration() == cal


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_contamination_fit_recovers_the_share_of_wrong_predictions(share):
    """Outcomes drawn around the predictions, except for a ``share`` of the groups whose rate is
    that of a random prompt: the fitted contamination finds the share."""
    from rollwise.calibration import BetaBinomialCalibration

    rng = np.random.default_rng(3)
    population = rng.beta(0.6, 0.6, size=5000)
    pred = rng.choice(population, size=3000)
    cal = BetaBinomialCalibration(concentration=20.0)
    mu = cal.mean(pred)
    truth = rng.beta(mu * 20.0, (1.0 - mu) * 20.0)
    wrong = rng.random(pred.size) < share
    truth[wrong] = rng.choice(population, size=int(wrong.sum()))
    k = 8
    fitted = cal.fit_contamination(pred, rng.binomial(k, truth), k, population)
    assert abs(fitted.contamination - share) < 0.06
    assert (fitted.slope, fitted.bias, fitted.concentration) == (cal.slope, cal.bias, cal.concentration)
    # too few first observations to say anything: none assumed
    assert cal.fit_contamination(pred[:10], rng.binomial(k, truth[:10]), k, population).contamination == 0.0
    with pytest.raises(ValueError, match="contamination"):
        BetaBinomialCalibration(contamination=1.5)


def test_gps_fits_contamination_on_first_observations_and_saves_the_record(tmp_path):
    import rollwise
    from rollwise.calibration import BetaBinomialCalibration

    rng = np.random.default_rng(2)
    pool = rollwise.PromptPool(rng.standard_normal((300, 8)).astype(np.float32))
    truth = rng.uniform(0.05, 0.95, size=300)  # nothing to learn: new prompts are guesses
    sel = rollwise.make_selector("gps", pool, 16, seed=0, hidden=16, encoder_heads=2)
    for _ in range(30):
        idx = sel.select()
        sel.observe(idx, (rng.random((16, 8)) < truth[idx, None]).astype(float))
    first = np.concatenate([o[3] for o in sel._outcomes])
    assert 32 <= first.sum() < first.size  # repeats and first observations both occur
    # every observed prompt had exactly one first observation, all inside the 64-call record
    assert first.sum() == sel._observed.sum()
    cal = sel.calibration()
    # the contamination is fitted on the first observations only, against the pool's current
    # predictions. (Its value is not asserted: when predictions carry nothing, as here, a
    # prompt's own Beta and a random prompt's are nearly the same distribution and the share is
    # not identified; it came out anywhere from 0 to the cap across seeds. Recovering a known
    # share is the test above.)
    pred, succ, k, flags = (np.concatenate(c) for c in zip(*sel._outcomes, strict=True))
    base = BetaBinomialCalibration.fit_validated(pred, succ, k)
    expected = base.fit_contamination(pred[flags], succ[flags], k[flags], sel.predict())
    assert cal == expected
    assert cal != base.fit_contamination(pred, succ, k, sel.predict())  # not on every group
    sel.save(tmp_path / "s.pt")
    back = rollwise.load_selector(tmp_path / "s.pt", pool)
    assert back.calibration() == cal
    np.testing.assert_array_equal(back._observed, sel._observed)
    # a state written before first observations were recorded loads, counting none as first
    state = sel.state_dict()
    for o in state["model"]["outcomes"]:
        del o["first"]
    del state["model"]["observed"]
    old = rollwise.make_selector("gps", pool, 16, seed=0, hidden=16, encoder_heads=2)
    old.load_state_dict(state)
    assert old.calibration().contamination == 0.0
    assert isinstance(old.calibration(), BetaBinomialCalibration)
    np.testing.assert_array_equal(old._observed, sel._last_chosen >= 0)
