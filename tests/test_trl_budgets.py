"""Per-prompt rollout budgets in TRL's GRPOTrainer: whole groups per prompt, real GRPO steps with a
tiny random model on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")

from trl import GRPOConfig  # noqa: E402

from rollwise import PromptPool, make_selector  # noqa: E402
from rollwise.integrations.trl import RollwiseGRPOTrainer  # noqa: E402

G, B = 2, 3  # num_generations, prompts per generation batch


class Recorder:
    __name__ = "recorder"

    def __init__(self):
        self.calls = []

    def __call__(self, completions, id, **kwargs):  # noqa: A002 - TRL passes dataset columns
        rewards = [float(len(c) % 2) for c in completions]
        self.calls.append((list(id), rewards))
        return rewards


def _trainer(tiny, out, steps, strategy="mopps", **kwargs):
    path, ds = tiny
    pool = PromptPool.from_texts(ds["prompt"], ids=ds["id"], embedder="hashing")
    selector = make_selector(strategy, pool, batch_size=B, seed=0)
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=B * G, num_generations=G,
                      max_completion_length=6, max_steps=steps, logging_steps=1, save_steps=100,
                      report_to="none", use_cpu=True, seed=0, learning_rate=1e-3)
    recorder = Recorder()
    trainer = RollwiseGRPOTrainer(model=path, reward_funcs=recorder, args=args, train_dataset=ds,
                                  selector=selector, **kwargs)
    return trainer, recorder


def test_budgets_give_prompts_whole_groups_and_observe_them_merged(tiny, tmp_path):
    trainer, recorder = _trainer(tiny, tmp_path, steps=4, budget_objective="rollouts",
                                 budget_max_groups=3)
    selects, observes = [], []
    select, observe = trainer.selector.select, trainer.selector.observe
    trainer.selector.select = lambda *a, **k: selects.append(select(*a, **k)) or selects[-1]
    trainer.selector.observe = lambda idx, rew: (observes.append((np.asarray(idx).copy(),
                                                                  [np.asarray(r) for r in rew])),
                                                 observe(idx, rew))
    trainer.train()
    ids = tiny[1]["id"]
    assert len(selects) == len(observes) == len(recorder.calls) == 4
    uneven = 0
    for chosen, (obs_idx, obs_rew), (scored, rewards), log in zip(
            selects, observes, recorder.calls, trainer.selection_log, strict=True):
        groups = np.array(log["groups"])
        assert groups.sum() <= B and groups.min() >= 1 and groups.max() <= 3
        assert set(obs_idx.tolist()) <= set(chosen.tolist()) and obs_idx.tolist() == log["indices"]
        # the generation batch keeps its size: each kept prompt fills its groups back to back
        assert len(scored) == B * G
        assert scored == [ids[i] for i, g in zip(obs_idx, groups, strict=True) for _ in range(g * G)]
        # the selector sees each prompt once, its groups merged
        start = 0
        for rew, g in zip(obs_rew, groups, strict=True):
            assert rew.tolist() == rewards[start : start + g * G]
            start += g * G
        uneven += int(groups.max() > 1)
    assert uneven > 0, "the budgets never gave a prompt more than one group"
    assert trainer.rollouts_spent == 4 * B * G
    prompts = [h["rollwise/prompts"] for h in trainer.state.log_history if "rollwise/prompts" in h]
    assert len(prompts) == 4 and min(prompts) < B


def test_budgets_with_gps_warn_that_they_concentrate_the_step(tiny, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="rollwise.integrations.trl"):
        _trainer(tiny, tmp_path / "mopps", steps=1, budget_objective="variance")
    assert not [r for r in caplog.records if "budget_objective" in r.getMessage()]
    with caplog.at_level("WARNING", logger="rollwise.integrations.trl"):
        _trainer(tiny, tmp_path / "gps", steps=1, strategy="gps", budget_objective="variance")
    assert any("budget_objective with GPS" in r.getMessage() and "docs/budgets.md" in r.getMessage()
               for r in caplog.records)


def test_budgets_are_refused_where_they_cannot_work(tiny, tmp_path):
    with pytest.raises(ValueError, match="budget_objective.*uniform"):
        _trainer(tiny, tmp_path, steps=1, strategy="uniform", budget_objective="groups")
    with pytest.raises(ValueError, match="budget_objective"):
        _trainer(tiny, tmp_path, steps=1, budget_objective="nope")
    with pytest.raises(ValueError, match="dynamic_sampling"):
        _trainer(tiny, tmp_path, steps=1, budget_objective="groups", dynamic_sampling=True)
    with pytest.raises(ValueError, match="budget_max_groups"):
        _trainer(tiny, tmp_path, steps=1, budget_objective="groups", budget_max_groups=0)
