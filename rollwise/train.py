"""Real GRPO with TRL and a rollwise selector: the engine behind ``rollwise train``."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """One GRPO run. Sizes default to a CPU-sized run of SmolLM2-135M-Instruct."""

    model: str = "smollm2"
    task: str = "arithmetic"
    strategy: str = "gps"
    output_dir: str = "runs/train"
    steps: int = 40
    prompts_per_step: int = 8
    num_generations: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    learning_rate: float = 1e-5
    beta: float = 0.0  # KL coefficient (0: no reference model, as in DAPO)
    loss_type: str = "dapo"
    seed: int = 0
    embedder: str = "wordllama"
    eval_steps: int = 10
    eval_prompts: int = 60  # held-out prompts scored at each evaluation (0: no evaluation)
    eval_generations: int = 4
    save_steps: int = 20
    resume: bool = False
    report_to: str = "none"
    hyper: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        from rollwise.sim.runner import known_strategies

        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO needs groups), got "
                             f"{self.num_generations}")
        for name in ("steps", "prompts_per_step", "max_new_tokens", "eval_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.strategy not in known_strategies() or self.strategy in ("ds", "oracle"):
            raise ValueError(f"unknown strategy {self.strategy!r} for training; choose from "
                             f"{[s for s in known_strategies() if s not in ('ds', 'oracle')]}")
        if self.eval_prompts < 0 or (self.eval_prompts and self.eval_generations < 2):
            raise ValueError("eval_prompts must be >= 0 and eval_generations >= 2")
        if not (self.temperature > 0 and self.learning_rate > 0):
            raise ValueError("temperature and learning_rate must be > 0")


def run(settings: TrainSettings) -> dict[str, Any]:
    """Train; returns (and writes to ``output_dir/rollwise_run.json``) the run's log."""
    settings.validate()
    from rollwise.models import resolve_model
    from rollwise.tasks import get_task, reward_function

    model_path = resolve_model(settings.model)  # errors before anything heavy starts
    task = get_task(settings.task)
    if any(not r["answer"] for r in task.train):
        raise ValueError(f"task {settings.task!r}: some prompts lack answers")
    columns = ("id", "prompt", "answer", "level", "question")
    train_rows = [{k: r[k] for k in columns} for r in task.train]
    # evenly spaced held-out rows, so every difficulty level is evaluated
    stride = max(1, len(task.heldout) // max(1, settings.eval_prompts))
    held = task.heldout[::stride][: settings.eval_prompts]
    eval_rows = [{k: r[k] for k in columns} for r in held]
    return run_grpo(settings, model_path, train_rows, eval_rows, reward_function(task))


def run_grpo(
    settings: TrainSettings,
    model_path: str,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    reward_funcs: Any,
    pool_texts: list[str] | None = None,
    final_model_dir: str | None = None,
    **config_overrides: Any,
) -> dict[str, Any]:
    """The GRPO engine behind :func:`run`, for any rows and reward functions.

    Rows need ``id`` and ``prompt`` plus whatever columns the reward functions read; the pool is
    embedded from ``pool_texts`` (default: the rows' ``question``). ``config_overrides`` go to
    ``GRPOConfig`` (e.g. ``epsilon_high``), so callers change TRL settings without copying this.
    """
    settings.validate()
    import torch
    from datasets import Dataset
    from trl import GRPOConfig

    from rollwise._io import atomic_write_json
    from rollwise.integrations.trl import RollwiseGRPOTrainer
    from rollwise.pool import PromptPool
    from rollwise.selectors import make_selector

    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    texts = list(pool_texts) if pool_texts is not None else train_ds["question"]
    if len(texts) != len(train_ds):
        raise ValueError(f"pool_texts has {len(texts)} entries but there are {len(train_ds)} rows")
    pool = PromptPool.from_texts(texts, ids=train_ds["id"], embedder=settings.embedder)
    selector = make_selector(settings.strategy, pool, settings.prompts_per_step,
                             seed=settings.seed, **settings.hyper)
    per_step = settings.prompts_per_step * settings.num_generations
    use_gpu = torch.cuda.is_available()
    config_args: dict[str, Any] = dict(
        output_dir=settings.output_dir,
        per_device_train_batch_size=per_step,
        gradient_accumulation_steps=1,
        num_generations=settings.num_generations,
        num_generations_eval=settings.eval_generations,
        per_device_eval_batch_size=max(settings.eval_generations, 32 // settings.eval_generations
                                       * settings.eval_generations),
        max_completion_length=settings.max_new_tokens,
        temperature=settings.temperature,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        loss_type=settings.loss_type,
        max_steps=settings.steps,
        logging_steps=1,
        save_steps=settings.save_steps,
        save_strategy="steps",
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=settings.eval_steps,
        seed=settings.seed,
        report_to=settings.report_to,
        bf16=use_gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not use_gpu,
        dataloader_num_workers=0,
    )
    config = GRPOConfig(**{**config_args, **config_overrides})
    trainer = RollwiseGRPOTrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        selector=selector,
    )
    t0 = time.perf_counter()
    if eval_ds is not None:
        start_eval = trainer.evaluate()  # accuracy of the starting model, same protocol
        log.info("held-out reward before training: %s", start_eval.get("eval_reward"))
    else:
        start_eval = {}
    resume = settings.resume and any(Path(settings.output_dir).glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    result = {
        "settings": asdict(settings),
        "model_path": model_path,
        "initial_eval": start_eval,
        "log_history": trainer.state.log_history,
        "rollouts": trainer.rollouts_spent,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(os.path.join(settings.output_dir, "rollwise_run.json"), result)
    if final_model_dir is not None:
        trainer.save_model(final_model_dir)
    trainer.selector.save(os.path.join(settings.output_dir, "rollwise_selector.pt"))
    return result
