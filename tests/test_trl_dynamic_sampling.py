"""DAPO's dynamic sampling in RollwiseGRPOTrainer: real GRPO steps with a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from rollwise import PromptPool, make_selector  # noqa: E402
from rollwise.integrations.trl import RollwiseGRPOTrainer  # noqa: E402

SOLVED, UNSOLVED = {"q0", "q1", "q2", "q3"}, {"q4", "q5", "q6", "q7"}  # the rest: mixed groups


class ByPrompt:
    """Reward 1 on the always-solved prompts, 0 on the never-solved ones, and 0, 1, 0, 1, ...
    within a call elsewhere (so those groups of two are informative)."""

    __name__ = "by_prompt"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, completions, id, **kwargs):  # noqa: A002 - TRL passes dataset columns
        self.calls.append(list(id))
        return [1.0 if pid in SOLVED else 0.0 if pid in UNSOLVED else float(j % 2)
                for j, pid in enumerate(id)]


def _ds_trainer(tiny, out, steps, selector="uniform", rounds=10, reward=None, **config):
    path, ds = tiny
    pool = PromptPool.from_texts(ds["prompt"], ids=ds["id"], embedder="hashing")
    sel = make_selector(selector, pool, batch_size=3, seed=0,
                        **({"grad_steps": 1} if selector.startswith("gps") else {}))
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=6, max_steps=steps, logging_steps=1, save_steps=100,
                      report_to="none", use_cpu=True, seed=0, learning_rate=1e-3, **config)
    reward = reward or ByPrompt()
    trainer = RollwiseGRPOTrainer(model=path, reward_funcs=reward, args=args, train_dataset=ds,
                                  selector=sel, dynamic_sampling=True, max_sampling_rounds=rounds)
    return trainer, reward


def _batches(trainer):
    """Record every generation batch the trainer hands to the optimiser."""
    seen = []
    inner = trainer._generate_and_score_completions

    def spy(inputs):
        out = inner(inputs)
        seen.append(out)
        return out

    trainer._generate_and_score_completions = spy
    return seen


def test_every_trained_group_is_informative_and_every_rollout_counted(tiny, tmp_path):
    trainer, reward = _ds_trainer(tiny, tmp_path, steps=3)
    batches = _batches(trainer)
    trainer.train()
    ids = tiny[1]["id"]
    rounds = len(reward.calls)
    assert rounds > 3  # a third of the pool is informative: one round rarely fills a batch
    assert len(trainer.selection_log) == rounds
    assert trainer.rollouts_spent == rounds * 3 * 2  # dropped groups cost as much as kept ones
    for out in batches:
        adv = out["advantages"].reshape(3, 2)
        assert adv.shape == (3, 2) and bool((adv.abs().sum(dim=1) > 0).all())
        assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    kept_rounds = [h["rollwise/ds_rounds"] for h in trainer.state.log_history if "rollwise/ds_rounds" in h]
    assert sum(kept_rounds) == rounds and len(kept_rounds) == 3
    logged = [h["rollwise/rollouts"] for h in trainer.state.log_history if "rollwise/rollouts" in h]
    assert logged == [6 * sum(kept_rounds[: i + 1]) for i in range(3)]  # cumulative, every round
    filled = [h["rollwise/ds_filled"] for h in trainer.state.log_history if "rollwise/ds_filled" in h]
    assert filled == [0.0, 0.0, 0.0]
    # the selector observed every round, kept groups and dropped ones alike
    chosen = [ids[i] for rec in trainer.selection_log for i in rec["indices"] for _ in range(2)]
    assert chosen == [pid for call in reward.calls for pid in call]


def test_rounds_cap_fills_the_batch_with_zero_advantage_groups(tiny, tmp_path):
    """When no group is informative, the batch is filled from the last round's dropped groups
    (zero advantage, no gradient) after max_sampling_rounds, and the run goes on."""
    path, ds = tiny
    flat = ByPrompt()
    SOLVED_ALL = set(ds["id"])

    def always_one(completions, id, **kwargs):  # noqa: A002
        flat.calls.append(list(id))
        return [1.0 if pid in SOLVED_ALL else 0.0 for pid in id]

    trainer, _ = _ds_trainer(tiny, tmp_path, steps=2, rounds=2, reward=always_one)
    batches = _batches(trainer)
    trainer.train()
    assert len(flat.calls) == 4 and trainer.rollouts_spent == 4 * 6
    assert all(bool((out["advantages"] == 0).all()) for out in batches)
    filled = [h["rollwise/ds_filled"] for h in trainer.state.log_history if "rollwise/ds_filled" in h]
    assert filled == [3.0, 3.0]


def test_merged_groups_keep_their_tokens(tiny, tmp_path):
    """Groups from rounds padded to different lengths merge into one batch with each row's
    prompt and completion tokens unchanged (prompts padded left, completions right)."""
    trainer, _ = _ds_trainer(tiny, tmp_path, steps=1)
    pad_id = trainer._tokenizer.pad_token_id

    def output(prompt_lens, completion_lens, base):
        rows = len(prompt_lens)
        p_len, c_len = max(prompt_lens), max(completion_lens)
        out = {"prompt_ids": torch.full((rows, p_len), pad_id),
               "prompt_mask": torch.zeros(rows, p_len, dtype=torch.long),
               "completion_ids": torch.full((rows, c_len), pad_id),
               "completion_mask": torch.zeros(rows, c_len, dtype=torch.long),
               "advantages": torch.arange(rows, dtype=torch.float32) + base, "num_items_in_batch": None,
               "old_per_token_logps": None}
        for r, (pl, cl) in enumerate(zip(prompt_lens, completion_lens, strict=True)):
            out["prompt_ids"][r, p_len - pl:] = base + r
            out["prompt_mask"][r, p_len - pl:] = 1
            out["completion_ids"][r, :cl] = base + 50 + r
            out["completion_mask"][r, :cl] = 1
        return out

    a = output([2, 2, 3, 3, 1, 1], [4, 4, 2, 2, 1, 1], base=10)
    b = output([5, 5, 1, 1, 2, 2], [1, 1, 6, 6, 3, 3], base=30)
    merged = trainer._merge_groups([(a, [1]), (b, [0]), (b, [2])])
    assert merged["prompt_ids"].shape == (6, 5) and merged["completion_ids"].shape == (6, 6)
    assert merged["old_per_token_logps"] is None
    np.testing.assert_array_equal(merged["advantages"].numpy(), [12, 13, 30, 31, 34, 35])
    expect = [(a, 2), (a, 3), (b, 0), (b, 1), (b, 4), (b, 5)]
    for r, (src, s) in enumerate(expect):
        for ids, mask, side in (("prompt_ids", "prompt_mask", "left"),
                                ("completion_ids", "completion_mask", "right")):
            got = merged[ids][r][merged[mask][r].bool()]
            want = src[ids][s][src[mask][s].bool()]
            assert torch.equal(got, want)
            m = merged[mask][r]
            # padding on the stated side only
            nz = m.nonzero().flatten()
            assert (nz[-1] == len(m) - 1) if side == "left" else (nz[0] == 0)
    assert int(merged["num_items_in_batch"]) == 2 + 2 + 1 + 1 + 3 + 3


def test_ds_by_name_and_with_gps(tiny, tmp_path):
    """selector='ds' is uniform with the filter; any selector takes the filter."""
    path, ds = tiny
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=4, max_steps=1, report_to="none", use_cpu=True, seed=0)
    trainer = RollwiseGRPOTrainer(model=path, reward_funcs=ByPrompt(), args=args, train_dataset=ds,
                                  selector="ds", embedder="hashing")
    assert trainer.selector.strategy == "uniform" and trainer.dynamic_sampling
    gps, reward = _ds_trainer(tiny, tmp_path / "gps", steps=2, selector="gps")
    gps.train()
    assert gps.selector.step == len(reward.calls) >= 2
    with pytest.raises(ValueError, match="max_sampling_rounds"):
        RollwiseGRPOTrainer(model=path, reward_funcs=ByPrompt(), args=args, train_dataset=ds,
                            selector="ds", embedder="hashing", max_sampling_rounds=0)
    with pytest.raises(TypeError, match="dynamic_sampling"):
        RollwiseGRPOTrainer(model=path, reward_funcs=ByPrompt(), args=args, train_dataset=ds,
                            selector="uniform", embedder="hashing", dynamic_sampling="yes")


def test_train_settings_strategy_ds(tmp_path):
    from rollwise.cli import build_parser
    from rollwise.cli.train import train_settings
    from rollwise.llm.engine import TrainSettings

    TrainSettings(strategy="ds").validate()
    TrainSettings(strategy="gps", dynamic_sampling=True).validate()
    with pytest.raises(ValueError, match="max_sampling_rounds"):
        TrainSettings(strategy="ds", max_sampling_rounds=0).validate()
    with pytest.raises(ValueError, match="only with dynamic sampling"):
        TrainSettings(strategy="gps", max_sampling_rounds=3).validate()
    parser = build_parser()
    args = parser.parse_args(["train", "--strategy", "gps", "--dynamic-sampling",
                              "--max-sampling-rounds", "3"])
    s = train_settings(args)
    assert s.strategy == "gps" and s.dynamic_sampling and s.max_sampling_rounds == 3
    s = train_settings(parser.parse_args(["train", "--strategy", "gps+ds", "--ds-sizing",
                                          "keep-rate", "--ds-fill-confidence", "0.8",
                                          "--ds-max-round-prompts", "16", "--ds-keep-surplus"]))
    s.validate()
    assert (s.ds_sizing, s.ds_fill_confidence, s.ds_max_round_prompts, s.ds_keep_surplus) == (
        "keep-rate", 0.8, 16, True)
    for bad, match in (({"strategy": "gps", "ds_keep_surplus": True}, "ds_keep_surplus"),
                       ({"strategy": "ds", "ds_sizing": "predicted"}, "ds_sizing"),
                       ({"strategy": "greso+ds", "ds_sizing": "predicted"}, "ds_sizing"),
                       ({"strategy": "gps+ds", "ds_fill_confidence": 0.0}, "ds_fill_confidence"),
                       ({"strategy": "gps+ds", "ds_max_round_prompts": 4}, "ds_max_round_prompts"),
                       ({"strategy": "gps+ds", "ds_sizing": "half"}, "ds_sizing")):
        with pytest.raises(ValueError, match=match):
            TrainSettings(**bad).validate()


def _two_processes(tmp_path, strategy: str, resume: str | None = None, run: str = "out"
                   ) -> list[dict]:
    """Run tests/_ds_worker.py on two CPU processes (torchrun, gloo); each rank's record."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from _support import save_tiny_llama

    model = tmp_path / "tiny"
    if not model.exists():
        save_tiny_llama(model)
    out = tmp_path / run
    out.mkdir()
    worker = Path(__file__).with_name("_ds_worker.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           str(worker), str(model), str(out), strategy, *([resume] if resume else [])],
                          capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_gps_one_selection_per_step(tmp_path):
    """GPS on two processes: the main process selects and broadcasts, so both generate slices of
    one batch; the union of their trained rows is exactly the chosen prompts x num_generations;
    only the main process's selector observes."""
    ranks = _two_processes(tmp_path, "gps")
    assert ranks[0]["selections"] == ranks[1]["selections"] and len(ranks[0]["selections"]) == 2
    for step, chosen in enumerate(ranks[0]["selections"]):
        rows = ranks[0]["trained"][step] + ranks[1]["trained"][step]
        assert sorted(rows) == sorted(f"{i} + {i} =" for i in chosen for _ in range(2))
        assert ranks[0]["trained"][step] == [f"{i} + {i} =" for i in chosen[:2] for _ in range(2)]
    assert ranks[0]["selector_observations"] == 2 and ranks[1]["selector_observations"] == 0


def test_two_processes_resume_makes_the_uninterrupted_selections(tmp_path):
    """GPS on two processes, checkpoint after step 1; a new two-process run resumed from it
    (every process loads the main process's selector) chooses step 2 as the first run did."""
    full = _two_processes(tmp_path, "gps+save")
    assert (tmp_path / "out" / "checkpoint-1" / "rollwise_selector.pt").exists()
    resumed = _two_processes(tmp_path, "gps+save", resume=str(tmp_path / "out" / "checkpoint-1"),
                             run="resumed")
    assert resumed[0]["selections"][-1] == resumed[1]["selections"][-1] == full[0]["selections"][1]
    assert resumed[0]["trained"][-1] + resumed[1]["trained"][-1] == \
        full[0]["trained"][1] + full[1]["trained"][1]


def test_two_processes_share_one_budget_split_per_step(tmp_path):
    """Per-prompt budgets on two processes: the main process splits and broadcasts, so both
    generate slices of one batch in which each kept prompt fills its groups back to back."""
    ranks = _two_processes(tmp_path, "mopps+budget")
    assert ranks[0]["selections"] == ranks[1]["selections"] and ranks[0]["groups"] == ranks[1]["groups"]
    for step, (kept, groups) in enumerate(zip(ranks[0]["selections"], ranks[0]["groups"], strict=True)):
        assert sum(groups) == 4 and min(groups) >= 1 and len(kept) == len(groups)
        rows = ranks[0]["trained"][step] + ranks[1]["trained"][step]
        assert rows == [f"{i} + {i} =" for i, g in zip(kept, groups, strict=True) for _ in range(2 * g)]
    assert any(max(g) > 1 for g in ranks[0]["groups"])  # some prompt got more than one group
    assert ranks[0]["selector_observations"] == 2 and ranks[1]["selector_observations"] == 0


def test_two_processes_select_alike_and_train_on_their_own_informative_groups(tmp_path):
    """torchrun, two CPU processes over gloo: every process makes the same selections and rounds;
    each trains on informative groups of its own slice of each round only."""
    ranks = _two_processes(tmp_path, "uniform+ds")
    assert all(r["processes"] == 2 for r in ranks)
    assert ranks[0]["selections"] == ranks[1]["selections"] and ranks[0]["rollouts"] == ranks[1]["rollouts"]
    selections = ranks[0]["selections"]
    assert ranks[0]["rollouts"] == len(selections) * 4 * 2
    for rank, record in enumerate(ranks):
        mine = {i for sel in selections for i in sel[2 * rank: 2 * rank + 2]}  # this rank's slices
        assert len(record["trained"]) == 2
        for batch in record["trained"]:
            assert len(batch) == 2
            for text in batch:
                i = int(text.split(" + ")[0])
                assert i >= 8 and i in mine  # informative (mixed rewards) and from its own slice


def test_two_processes_share_each_predicted_round(tmp_path):
    """GPS-planned rounds on two processes: the main process plans and broadcasts, so both see
    the same rounds, each a multiple of two prompts, no prompt twice in a step; each process
    trains on informative groups of its own slices only."""
    ranks = _two_processes(tmp_path, "gps+ds")
    assert ranks[0]["selections"] == ranks[1]["selections"] and ranks[0]["ds_log"] == ranks[1]["ds_log"]
    rounds = iter(ranks[0]["selections"])
    for step in ranks[0]["ds_log"]:
        chosen = [next(rounds) for _ in range(step["rounds"])]
        assert [len(c) for c in chosen] == step["prompts"] and all(len(c) % 2 == 0 for c in chosen)
        flat = [i for c in chosen for i in c]
        assert len(flat) == len(set(flat))
    for rank, record in enumerate(ranks):
        half = [c[len(c) // 2 * rank: len(c) // 2 * (rank + 1)] for c in ranks[0]["selections"]]
        mine = {i for h in half for i in h}
        for batch, step in zip(record["trained"], ranks[0]["ds_log"], strict=True):
            rows = [int(t.split(" + ")[0]) for t in batch]
            assert len(rows) == 2 and set(rows) <= mine
            if not step["filled"]:  # informative (mixed rewards) unless the rounds ran out
                assert min(rows) >= 8
    assert sum(step["filled"] for step in ranks[0]["ds_log"]) < 2  # slices dealt by chance


def _predictive_trainer(tiny, out, steps=1, selector="mopps", **ds):
    path, ds_ = tiny
    pool = PromptPool.from_texts(ds_["prompt"], ids=ds_["id"], embedder="hashing")
    sel = make_selector(selector, pool, batch_size=3, seed=0)
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=4, max_steps=steps, logging_steps=1, save_steps=100,
                      report_to="none", use_cpu=True, seed=0, learning_rate=1e-3)
    reward = ByPrompt()
    trainer = RollwiseGRPOTrainer(model=path, reward_funcs=reward, args=args, train_dataset=ds_,
                                  selector=sel, dynamic_sampling=True, **ds)
    return trainer, reward


def test_round_is_sized_from_the_predictions(tiny, tmp_path):
    """With predicted sizing the first round rolls out the fewest prompts whose predicted chances
    of an informative group fill the batch with probability ds_fill_confidence: a different
    count for each confidence, neither of them DAPO's batch of 3."""
    from rollwise.dynamic_sampling import prompts_to_fill

    sizes = {}
    for q in (0.3, 0.7):
        trainer, _ = _predictive_trainer(tiny, tmp_path / str(q), ds_fill_confidence=q)
        chances = np.sort(trainer.selector.informative_chance(np.arange(12), 2))[::-1]
        expect = prompts_to_fill(chances, 3, q)
        assert expect is not None
        trainer.train()
        sizes[q] = len(trainer.selection_log[0]["indices"])
        assert sizes[q] == expect, (q, chances)
        assert trainer.ds_log[0]["prompts"][0] == expect
        predicted = trainer.ds_log[0]["predicted_keep_rate"]
        assert predicted is not None and 0 < predicted < 1
    assert sizes[0.3] < sizes[0.7] and 3 not in sizes.values()
    full, _ = _predictive_trainer(tiny, tmp_path / "full", ds_sizing="full")
    full.train()
    assert all(len(rec["indices"]) == 3 for rec in full.selection_log)


def test_each_round_is_chosen_after_the_previous_one_is_observed(tiny, tmp_path):
    """Every round's plan is made after the selector has observed every earlier round (round 2
    of a step uses round 1's outcomes), and a step never rolls a prompt out twice."""
    trainer, reward = _predictive_trainer(tiny, tmp_path, steps=3, selector="gps",
                                          ds_fill_confidence=0.5)
    plan = trainer.sampler.plan
    seen = []

    def spy(need, candidates=None, minimum=0):
        seen.append((trainer.selector.step, len(reward.calls)))
        return plan(need, candidates, minimum)

    trainer.sampler.plan = spy
    trainer.train()
    assert len(seen) == len(reward.calls) > 3
    assert all(observed == rounds_before for observed, rounds_before in seen)
    rounds = iter(rec["indices"] for rec in trainer.selection_log)
    for step in trainer.ds_log:
        flat = [i for _ in range(step["rounds"]) for i in next(rounds)]
        assert len(flat) == len(set(flat))
        assert step["kept"] + step["filled"] == 3


def test_surplus_is_dropped_or_kept_for_the_next_step(tiny, tmp_path):
    """Surplus informative groups are counted; with ds_keep_surplus the next step starts with
    them (carried), and its batch is still full."""
    logs = {}
    for keep in (False, True):
        trainer, _ = _predictive_trainer(tiny, tmp_path / str(keep), steps=4, selector="uniform",
                                         ds_sizing="full", ds_keep_surplus=keep)
        batches = _batches(trainer)
        trainer.train()
        logs[keep] = trainer.ds_log
        for out in batches:
            assert out["advantages"].shape == (6,)
            assert bool((out["advantages"].reshape(3, 2).abs().sum(dim=1) > 0).all())
    assert all(s["carried"] == 0 for s in logs[False])
    kept = logs[True]
    assert any(s["carried"] > 0 for s in kept)
    for before, after in zip(kept, kept[1:], strict=False):
        assert after["carried"] == min(before["surplus"], 3)
    metrics = [h for h in trainer.state.log_history if "rollwise/ds_surplus" in h]
    assert [m["rollwise/ds_carried"] for m in metrics] == [float(s["carried"]) for s in kept]


def test_ds_options_refused_with_their_names(tiny, tmp_path):
    path, ds = tiny
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=4, max_steps=1, report_to="none", use_cpu=True)
    common = dict(model=path, reward_funcs=ByPrompt(), args=args, train_dataset=ds,
                  embedder="hashing")
    for kwargs, match in (({"selector": "ds", "ds_sizing": "most"}, "ds_sizing"),
                          ({"selector": "ds", "ds_fill_confidence": 1.0}, "ds_fill_confidence"),
                          ({"selector": "ds", "ds_max_round_prompts": 0}, "ds_max_round_prompts"),
                          ({"selector": "ds", "ds_keep_surplus": 1}, "ds_keep_surplus"),
                          ({"selector": "uniform", "ds_keep_surplus": True}, "ds_keep_surplus"),
                          ({"selector": "ds", "ds_sizing": "predicted"}, "ds_sizing")):
        with pytest.raises((ValueError, TypeError), match=match):
            RollwiseGRPOTrainer(**common, **kwargs)
    trainer = RollwiseGRPOTrainer(**common, selector="greso+ds")
    assert trainer.sampler.sizing == "keep-rate" and trainer.selector.strategy == "greso"
    assert RollwiseGRPOTrainer(**common, selector="gps+ds").sampler.sizing == "predicted"
