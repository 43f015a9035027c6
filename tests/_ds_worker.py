"""One process of a multi-process GRPO run (started by torchrun from a test).

argv: MODEL_DIR OUT_DIR STRATEGY [CHECKPOINT] (uniform+ds: dynamic sampling over uniform prompts;
gps+ds: dynamic sampling with rounds chosen and sized by GPS; gps: GPS without the filter;
gps+save: GPS saving a checkpoint every step; mopps+budget: MoPPS with per-prompt budgets in
whole groups; CHECKPOINT: resume from it). Every process
writes OUT_DIR/rank<R>.json: the selections (and groups), the prompts of the groups it trained
on per step, and its selector's step count and observations."""

from __future__ import annotations

import json
import sys

import torch
from datasets import Dataset
from trl import GRPOConfig

from rollwise import PromptPool, make_selector
from rollwise.integrations.trl import RollwiseGRPOTrainer

torch.set_num_threads(1)
SOLVED, UNSOLVED = {f"q{i}" for i in range(4)}, {f"q{i}" for i in range(4, 8)}


def reward(completions, id, **kwargs):  # noqa: A002 - TRL passes dataset columns
    return [1.0 if pid in SOLVED else 0.0 if pid in UNSOLVED else float(j % 2)
            for j, pid in enumerate(id)]


def main() -> None:
    model, out, strategy = sys.argv[1], sys.argv[2], sys.argv[3]
    ds = Dataset.from_list([{"id": f"q{i}", "prompt": f"{i} + {i} ="} for i in range(16)])
    pool = PromptPool.from_texts(ds["prompt"], ids=ds["id"], embedder="hashing")
    args = GRPOConfig(output_dir=out, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, max_steps=2, logging_steps=1,
                      save_strategy="steps" if "save" in strategy else "no", save_steps=1,
                      save_only_model=True,  # as rollwise train by default (see docs/trl.md)
                      report_to="none", use_cpu=True, seed=0, learning_rate=1e-3)
    ds_on = strategy.endswith("+ds")
    name = strategy.split("+")[0]
    selector = make_selector(name, pool, 4, seed=0, **({"grad_steps": 1} if name == "gps" else {}))
    budgets = {"budget_objective": "rollouts", "budget_max_groups": 3} if "budget" in strategy else {}
    trainer = RollwiseGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                                  selector=selector, dynamic_sampling=ds_on, max_sampling_rounds=8,
                                  **budgets)
    trained: list[list[str]] = []
    inner = trainer._merge_groups

    def spy(groups):
        merged = inner(groups)
        trained.append([trainer._tokenizer.decode(merged["prompt_ids"][r][merged["prompt_mask"][r].bool()])
                        for r in range(0, merged["prompt_ids"].shape[0], 2)])
        return merged

    def rows(batch):
        return [trainer._tokenizer.decode(batch["prompt_ids"][r][batch["prompt_mask"][r].bool()])
                for r in range(batch["prompt_ids"].shape[0])]

    generate = trainer._generate_and_score_completions

    def record(inputs):
        batch = generate(inputs)
        if not ds_on:
            trained.append(rows(batch))
        return batch

    trainer._merge_groups = spy
    trainer._generate_and_score_completions = record
    trainer.train(resume_from_checkpoint=sys.argv[4] if len(sys.argv) > 4 else None)
    rank = trainer.accelerator.process_index
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"processes": trainer.accelerator.num_processes,
                   "selections": [r["indices"] for r in trainer.selection_log],
                   "groups": [r.get("groups") for r in trainer.selection_log],
                   "rollouts": trainer.rollouts_spent, "trained": trained,
                   "ds_log": trainer.ds_log,
                   "selector_observations": int(trainer.selector.step)}, f)


if __name__ == "__main__":
    main()
