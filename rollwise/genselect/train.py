"""DAPO training of a generative selector on synthesised selection tasks, through TRL.

DAPO here is TRL's GRPOTrainer with ``loss_type="dapo"`` (token-level loss normalised over the
batch's active tokens), clip-higher (``epsilon`` low, ``epsilon_high`` high) and no KL term
(``beta=0``). DAPO's dynamic sampling (drop all-equal groups after paying for them) is replaced by
rollwise selection: a selector over the pool of selection prompts chooses which tasks get
rollouts, preferring those whose success rate it predicts to be informative. The run itself is
:func:`rollwise.llm.engine.run_grpo`, the engine of ``rollwise train``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rollwise.llm.engine import TrainSettings
from rollwise.validation import Interval, redeclare, setting

FINAL_MODEL_DIR = "final"


@dataclass
class GenSelectTrainSettings(TrainSettings):
    """One DAPO run on selection tasks; CPU-sized defaults for SmolLM2-135M-Instruct.

    ``task`` is unused (the tasks come from ``tasks``, a JSONL file written by ``synthesize``).
    ``prefix`` starts the reply inside the prompt (``"Selected:"`` makes the format reachable for
    a small model; ``""`` lets a model reason before its choice line).
    """

    tasks: str = setting("", help="selection tasks from 'genselect synthesize' (JSONL)", required=True)
    heldout_tasks: str | None = setting(None, help="selection tasks for TRL's evaluation")
    output_dir: str = redeclare(TrainSettings, "output_dir", "runs/genselect")
    strategy: str = redeclare(TrainSettings, "strategy", "mopps")
    steps: int = redeclare(TrainSettings, "steps", 40)
    prompts_per_step: int = redeclare(TrainSettings, "prompts_per_step", 4)
    num_generations: int = redeclare(TrainSettings, "num_generations", 8)
    max_new_tokens: int = redeclare(TrainSettings, "max_new_tokens", 8)
    learning_rate: float = redeclare(TrainSettings, "learning_rate", 2e-5)
    epsilon: float = setting(0.2, help="DAPO's lower clipping range",
                             constraint=Interval(float, 0, None, closed="neither"))
    epsilon_high: float = setting(0.28, help="DAPO's upper clipping range (clip-higher)",
                                  constraint=Interval(float, 0, None, closed="neither"))
    mask_truncated_completions: bool = setting(False, help="no loss on completions cut off by "
                                                          "--max-new-tokens (DAPO)")
    prefix: str = setting("Selected:", help="reply prefix inside the prompt")
    eval_prompts: int = redeclare(TrainSettings, "eval_prompts", 0)
    save_steps: int = redeclare(TrainSettings, "save_steps", 1000)

    def validate(self) -> None:
        super().validate()
        if not self.tasks:
            raise ValueError("tasks: pass the JSONL file of selection tasks (rollwise genselect "
                             "synthesize --out FILE)")
        if not 0 < self.epsilon <= self.epsilon_high:
            raise ValueError(f"need 0 < epsilon <= epsilon_high, got epsilon={self.epsilon}, "
                             f"epsilon_high={self.epsilon_high}")
        if self.loss_type != "dapo":
            raise ValueError(f"loss_type must be 'dapo' for GenSelect training, got {self.loss_type!r}")


def _rows(tasks: list[dict[str, Any]], tokenizer: Any, prefix: str) -> list[dict[str, Any]]:
    from rollwise.genselect.synthesis import render_prompt

    return [{"id": t["id"], "prompt": render_prompt(tokenizer, t["text"], prefix),
             "correct": [int(c) for c in t["correct"]], "n_candidates": int(t["n_candidates"])}
            for t in tasks]


def train(settings: GenSelectTrainSettings) -> dict[str, Any]:
    """Train; returns the run log (also in ``output_dir/rollwise_run.json``). The trained model
    and tokenizer are saved to ``output_dir/final``."""
    settings.validate()
    from transformers import AutoTokenizer

    from rollwise.genselect.reward import reward_function
    from rollwise.genselect.synthesis import read_tasks
    from rollwise.llm.engine import run_grpo
    from rollwise.llm.models import resolve_model

    model_path = resolve_model(settings.model)
    tasks = read_tasks(settings.tasks)
    if len(tasks) < settings.prompts_per_step:
        raise ValueError(f"tasks: {len(tasks)} selection tasks, fewer than prompts_per_step="
                         f"{settings.prompts_per_step}")
    held = read_tasks(settings.heldout_tasks) if settings.heldout_tasks and settings.eval_prompts else []
    if held:
        stride = max(1, len(held) // settings.eval_prompts)
        held = held[::stride][: settings.eval_prompts]
    # TRL renders chat prompts without a reply prefix, so prompts go in as rendered strings
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    final = os.path.join(settings.output_dir, FINAL_MODEL_DIR)
    prefix = settings.prefix
    result = run_grpo(
        settings, model_path, _rows(tasks, tokenizer, prefix), _rows(held, tokenizer, prefix),
        reward_function(prefix), pool_texts=[t["text"] for t in tasks], final_model_dir=final,
        epsilon=settings.epsilon, epsilon_high=settings.epsilon_high,
        mask_truncated_completions=settings.mask_truncated_completions,
    )
    result["final_model"] = final
    return result
