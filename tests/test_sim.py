"""The simulated world, the benchmark runner and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rollwise.cli import main
from rollwise.sim import RunSettings, WorldConfig, build_world, load_prompt_file, run_one, summarise
from rollwise.sim.runner import known_strategies, rollouts_to_reach
from rollwise.sim.world import PromptWorld


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    subjects = ["Algebra", "Geometry", "Number Theory"]
    return [
        {"problem": f"Problem {i}: compute {rng.integers(1, 10**(1 + i % 4))} + {i} in "
                    f"{subjects[i % 3].lower()}", "type": subjects[i % 3],
         "difficulty": float(1 + i % 5), "answer": str(i)}
        for i in range(n)
    ]


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(_rows(300)))
    return path


def _world(**kw) -> PromptWorld:
    skills = ["a", "b"] * 50
    levels = np.tile(np.arange(5.0), 20)
    return PromptWorld(skills, levels, skills[:20], levels[:20], WorldConfig(**kw), seed=3)


def test_world_rates_and_determinism():
    w1, w2 = _world(), _world()
    g = w1.gamma()
    assert g.shape == (100,) and np.all((g > 0) & (g < 1))
    np.testing.assert_array_equal(g, w2.gamma())
    # harder levels have lower rates on average
    levels = np.tile(np.arange(5.0), 20)
    assert g[levels == 0].mean() > g[levels == 4].mean() + 0.3


def test_world_learns_only_from_informative_groups():
    w = _world()
    acc0 = w.heldout_accuracy()
    idx = np.arange(10)
    w.learn(idx, np.ones((10, 8)))  # all solved: zero advantage
    w.learn(idx, np.zeros((10, 8)))  # all failed: zero advantage
    assert w.heldout_accuracy() == acc0
    half = np.tile([1.0, 0.0], (10, 4))
    w.learn(idx, half)
    assert w.heldout_accuracy() > acc0


def test_world_groups_of_unequal_size():
    """Rollouts of given sizes; equal groups given as a list learn as the array does, and a bigger
    group weighs more in the batch, as every rollout does in a token-level GRPO loss."""
    w = _world()
    groups = w.rollout(np.arange(3), np.random.default_rng(0), sizes=np.array([2, 5, 9]))
    assert [g.size for g in groups] == [2, 5, 9] and all(set(g) <= {0.0, 1.0} for g in groups)
    a, b = _world(), _world()
    half = np.tile([1.0, 0.0], (4, 4))
    a.learn(np.arange(4), half)
    b.learn(np.arange(4), [row for row in half])
    np.testing.assert_allclose(a.ability, b.ability, rtol=1e-12)
    # prompt 0 has skill a, prompt 1 skill b; the same rate, the bigger group moves its skill more
    c = _world(transfer_group=0.0, transfer_other=0.0)
    start = c.ability.copy()
    c.learn(np.array([0, 1]), [np.array([1.0, 0.0] * 6), np.array([1.0, 0.0])])
    gain = c.ability - start
    assert gain[0] == pytest.approx(6 * gain[1])


def test_budgeted_runs_spend_the_fixed_rollouts_split_unequally(pool_file):
    pool, _, make_world = build_world(pool_file, embedder="hashing")
    settings = RunSettings(steps=6, batch_size=8, budget_objective="variance",
                           hyper={"gps-budget": {"grad_steps": 1, "warmup_steps": 0}})
    for strategy in ("gps-budget", "uniform-budget", "oracle-budget"):
        log = run_one(strategy, pool, make_world, settings, seed=1)
        assert np.all(np.diff([0, *log["rollouts"]]) == 8 * 8)
        assert np.nanmax(log["group_size_cv"]) > 0, strategy
    assert np.isnan(run_one("gps", pool, make_world, settings, seed=1)["group_size_cv"]).all()
    with pytest.raises(ValueError, match="objective"):
        RunSettings(budget_objective="nope").validate(len(pool))
    # whole groups (TRL's way): counts in multiples of k, a prompt given none dropped from the step
    whole = RunSettings(steps=6, batch_size=8, budget_objective="rollouts", budget_k_min=0,
                        budget_step=8, budget_k_max=32)
    chosen: list = []
    log = run_one("oracle-budget", pool, make_world, whole, seed=1, chosen=chosen)
    assert np.all(np.diff([0, *log["rollouts"]]) == 8 * 8)
    assert any(len(idx) < 8 for idx in chosen)
    # valued and learned group by group (TRL's way): same rollouts; the world learns from blocks
    whole.budget_separate_groups = True
    log = run_one("oracle-budget", pool, make_world, whole, seed=1)
    assert np.all(np.diff([0, *log["rollouts"]]) == 8 * 8) and log["accuracy"][-1] > log["accuracy0"][0]


def test_world_memorisation_repeats_transfer_less():
    """With memorisation, training the same prompts again raises held-out accuracy less than
    training fresh prompts, and raises the repeated prompts' own rates more."""
    half = np.tile([1.0, 0.0], (10, 4))
    repeat, fresh = _world(memorisation=1.0), _world(memorisation=1.0)
    same = np.arange(10)
    for _ in range(4):
        repeat.learn(same, half)
    for j in range(4):
        fresh.learn(same + 10 * j, half)
    assert repeat.heldout_accuracy() < fresh.heldout_accuracy()
    assert repeat.gamma(same).mean() > fresh.gamma(same).mean()
    # without memorisation a repeat transfers like a first visit
    plain = _world()
    for _ in range(4):
        plain.learn(same, half)
    assert plain.heldout_accuracy() > repeat.heldout_accuracy()
    with pytest.raises(ValueError, match="memorisation"):
        WorldConfig(memorisation=-1.0).validate()


def test_world_config_validation():
    with pytest.raises(ValueError, match="k"):
        WorldConfig(k=0).validate()
    with pytest.raises(ValueError, match="transfer_group"):
        WorldConfig(transfer_group=2.0).validate()


def test_load_prompt_file_formats(tmp_path):
    rows = _rows(20)
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ps = load_prompt_file(tmp_path / "p.jsonl")
    assert ps.texts[0] == rows[0]["problem"] and ps.skills[0] == "algebra"
    assert ps.level.tolist() == [r["difficulty"] for r in rows]
    # MATH-500 style: no subject field, subject inside unique_id
    (tmp_path / "t.json").write_text(json.dumps([
        {"problem": "x", "difficulty": 2, "unique_id": "test/counting_and_probability/1.json"}]))
    assert load_prompt_file(tmp_path / "t.json").skills == ["counting_and_probability"]
    with pytest.raises(ValueError, match="text field"):
        (tmp_path / "bad.json").write_text(json.dumps([{"foo": 1}]))
        load_prompt_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not valid"):
        (tmp_path / "broken.json").write_text("[{")
        load_prompt_file(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        load_prompt_file(tmp_path / "missing.json")


@pytest.mark.parametrize("strategy", known_strategies())
def test_run_one_every_strategy(pool_file, strategy):
    pool, _, make_world = build_world(pool_file, embedder="hashing")
    settings = RunSettings(steps=4, batch_size=16, hyper={"gps": {"grad_steps": 1}})
    chosen, rewards = [], []
    log = run_one(strategy, pool, make_world, settings, seed=0, chosen=chosen, rewards=rewards)
    assert len(log["accuracy"]) == 4
    # every trained batch: 16 distinct prompts (dynamic sampling rolls no prompt twice in a
    # step), none of the probes kept unseen for the Spearman
    dynamic = strategy == "ds" or strategy.endswith("+ds")
    n = len(pool)
    probe = set(np.random.default_rng([0, 7]).permutation(n)[: round(0.1 * n)].tolist())
    for idx, r in zip(chosen, rewards, strict=True):
        assert len(idx) == len(r) == 16 and not probe & set(idx.tolist())
        assert len(set(idx.tolist())) == 16
    if dynamic:  # DAPO's filter trains on informative groups only (30 rounds allow it)
        assert all((np.ptp(np.asarray(r), axis=1) > 0).all() for r in rewards)
    assert np.all(np.diff(log["rollouts"]) >= 16 * 8)  # DS may spend more, never less
    if not dynamic:
        assert log["rollouts"][-1] == 4 * 16 * 8
    else:  # every round logged: rounds, and the informative groups the batch kept
        assert all(r >= 1 for r in log["ds_rounds"]) and log["ds_kept"] == [16] * 4
    # what GPS read of its regime, per step; NaN for the strategies that read nothing
    for key in ("trust", "predicted_share", "repeat_excess", "cooldown"):
        assert len(log[key]) == 4
        assert np.isnan(log[key]).all() != strategy.startswith("gps")
    if strategy == "gps":  # the warm-up's 4 steps: every batch random, the full rest
        assert log["predicted_share"] == [0.0] * 4 and log["cooldown"] == [0.25] * 4


def test_gps_beats_uniform_on_effective_samples(pool_file):
    """GPS learns which prompts are informative: its ESR exceeds uniform's on a fresh world."""
    pool, _, make_world = build_world(pool_file, embedder="hashing",
                                      config=WorldConfig(learning_rate=0.0))
    settings = RunSettings(steps=25, batch_size=16)
    esr = {s: np.mean(run_one(s, pool, make_world, settings, seed=5)["esr"][5:])
           for s in ("uniform", "gps", "oracle")}
    assert esr["gps"] > esr["uniform"] + 0.1
    assert esr["oracle"] >= esr["gps"] - 0.05


def test_summarise_and_reach():
    assert rollouts_to_reach(np.array([10, 20, 30]), np.array([0.1, 0.3, 0.5]), 0.4) == 25
    assert np.isnan(rollouts_to_reach(np.array([10, 20]), np.array([0.1, 0.2]), 0.9))
    run = {"rollouts": [1, 2], "accuracy": [0.2, 0.4], "accuracy0": [0.1], "esr": [0.5, 0.5],
           "spearman_batch": [np.nan, np.nan], "spearman_unseen": [np.nan, np.nan],
           "sec_select": [0, 0], "sec_observe": [0, 0]}
    fast = dict(run, accuracy=[0.4, 0.5])
    s = summarise({"uniform": [run], "gps": [fast]})
    assert s["target_accuracy"] == 0.4
    assert s["strategies"]["gps"]["ratio_to_uniform"] == 0.5
    with pytest.raises(ValueError, match="target"):
        summarise({"gps": [fast]})


def test_cli_bench_writes_results(pool_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "--pool", str(pool_file), "--embedder", "hashing", "--strategies",
               "uniform,gps,oracle", "--seeds", "1", "--steps", "3", "--batch-size", "8",
               "--out", str(out), "--quiet"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["strategies"]) == {"uniform", "gps", "oracle"}
    assert (out / "curves.png").stat().st_size > 1000
    assert "rollouts to target" in capsys.readouterr().out


def test_cli_errors(tmp_path, pool_file, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--strategies", "nope"])
    assert "unknown strategy" in capsys.readouterr().err
    assert main(["bench", "--pool", str(tmp_path / "missing.json")]) == 2
    assert "--pool: file" in capsys.readouterr().err
    rc = main(["bench", "--pool", str(pool_file), "--embedder", "hashing", "--batch-size",
               "100000", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "batch_size" in capsys.readouterr().err


def test_default_pool_is_generated_offline():
    pool, train, make_world = build_world(embedder="hashing")
    assert len(pool) > 1000 and len(set(train.skills)) >= 5
    w = make_world(0)
    assert 0.3 < w.heldout_accuracy() < 0.7


def test_heldout_spread_covers_every_level():
    from rollwise.llm.engine import spread

    levels = np.repeat(np.arange(5), 20)  # held-out rows sorted by level, as the task gives them
    for m in (5, 40, 60, 99, 100, 150):
        idx = spread(100, m)
        assert len(idx) == min(m, 100) == len(set(idx))
        assert set(levels[idx]) == set(range(5))
    assert spread(100, 1) == [0] and spread(0, 5) == [] and spread(5, 0) == []


def test_strategy_colours_are_fixed():
    """Known strategies keep their colour; an unknown one gets the same spare colour in every
    process (Python's own str hash would change with PYTHONHASHSEED)."""
    import subprocess
    import sys

    from rollwise.sim.report import _SPARE, strategy_color

    assert strategy_color("gps") == "#d62728" and strategy_color("uniform") == "#4d4d4d"
    code = "from rollwise.sim.report import strategy_color; print(strategy_color('some-new-arm'))"
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}
                           ).stdout.strip() for seed in (1, 2, 3)}
    assert seen == {strategy_color("some-new-arm")} and seen <= set(_SPARE)
