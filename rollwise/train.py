"""Real GRPO with TRL and a rollwise selector: the engine behind ``rollwise train``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rollwise.strategies import selector_names
from rollwise.threads import check_threads, model_threads

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """One GRPO run. Sizes default to a CPU-sized run of SmolLM2-135M-Instruct."""

    model: str = "smollm2"
    task: str = "arithmetic"
    text_field: str | None = None  # a task file's problem field (None: prompt/problem/question/text)
    answer_field: str | None = None  # a task file's reference-answer field (None: answer)
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
    save_optimizer: bool = False  # optimizer/scheduler/RNG state in checkpoints (exact --resume)
    resume: bool = False
    report_to: str = "none"
    threads: int | None = None  # torch threads for the policy; None: one less than the cores
    hyper: dict[str, Any] = field(default_factory=dict)
    max_rollouts: int | None = None  # stop before this many completions (rescue's included); None: steps only
    # hard-prompt rescue (P²O): None (off) or "p2o"
    rescue: str | None = None
    rescue_every: int = 10  # optimiser steps between template evolutions
    rescue_guided: int = 1  # template-guided rollouts per hard prompt's group
    rescue_reflection: Any = "policy"  # "policy", an http(s) URL, or (Python API) a str -> str callable
    rescue_max_metric_calls: int = 200  # GEPA rollout budget per evolution
    rescue_max_hard: int = 16  # hard prompts given to GEPA per evolution (the oldest)
    rescue_seed_template: str | None = None  # None: the task's instruction after the problem
    rescue_window: int = 2  # failed groups in a row that make a prompt hard
    rescue_threshold: float = 0.5  # a reward at least this is a success

    def validate(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO needs groups), got "
                             f"{self.num_generations}")
        for name in ("steps", "prompts_per_step", "max_new_tokens", "eval_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_threads(self.threads)
        if self.strategy not in selector_names():
            raise ValueError(f"unknown strategy {self.strategy!r} for training; choose from "
                             f"{selector_names()}")
        if self.eval_prompts < 0 or (self.eval_prompts and self.eval_generations < 2):
            raise ValueError("eval_prompts must be >= 0 and eval_generations >= 2")
        if not (self.temperature > 0 and self.learning_rate > 0):
            raise ValueError("temperature and learning_rate must be > 0")
        budget = self.max_rollouts
        per_step = self.prompts_per_step * self.num_generations
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)
                                   or budget < per_step):
            raise ValueError(f"max_rollouts must be None or an int >= one step's rollouts "
                             f"(prompts_per_step x num_generations = {per_step}), got {budget!r}")
        self._validate_rescue()

    def _validate_rescue(self) -> None:
        if self.rescue is None:
            return
        if self.rescue != "p2o":
            raise ValueError(f"unknown rescue mode {self.rescue!r}; choose 'p2o' or None (off)")
        for name, low in (("rescue_every", 1), ("rescue_max_metric_calls", 1), ("rescue_max_hard", 1),
                          ("rescue_window", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        guided = self.rescue_guided
        if isinstance(guided, bool) or not isinstance(guided, int) or not 1 <= guided < self.num_generations:
            raise ValueError(f"rescue_guided must be an int in 1..num_generations-1 = 1.."
                             f"{self.num_generations - 1} (every group keeps a bare rollout), got {guided!r}")
        if self.rescue_max_hard > self.rescue_max_metric_calls:
            raise ValueError(f"rescue_max_hard={self.rescue_max_hard} exceeds rescue_max_metric_calls="
                             f"{self.rescue_max_metric_calls}: GEPA could not even score the seed template")
        if not 0 < self.rescue_threshold <= 1:
            raise ValueError(f"rescue_threshold must lie in (0, 1], got {self.rescue_threshold!r}")
        reflection = self.rescue_reflection
        if not callable(reflection) and not (isinstance(reflection, str) and (
                reflection == "policy" or reflection.startswith(("http://", "https://")))):
            raise ValueError(f"rescue_reflection must be 'policy', an http(s) URL or a callable, "
                             f"got {reflection!r}")
        template = self.rescue_seed_template
        if template is not None and (not isinstance(template, str) or not template.strip()):
            raise ValueError("rescue_seed_template must be a non-empty string or None")

    def as_record(self) -> dict[str, Any]:
        """The settings as JSON values (a reflection callable is recorded by its name)."""
        record = asdict(self)
        if callable(self.rescue_reflection):
            record["rescue_reflection"] = f"callable:{type(self.rescue_reflection).__name__}"
        return record


def run(settings: TrainSettings) -> dict[str, Any]:
    """Train; returns (and writes to ``output_dir/rollwise_run.json``) the run's log."""
    settings.validate()
    from rollwise.models import resolve_model
    from rollwise.tasks import get_task, reward_function

    # a missing or unreadable task file fails before the model is converted
    task = get_task(settings.task, text_field=settings.text_field, answer_field=settings.answer_field)
    model_path = resolve_model(settings.model)  # errors before anything heavy starts
    if any(not r["answer"] for r in task.train):
        raise ValueError(f"task {settings.task!r}: some prompts lack answers")
    columns = ("id", "prompt", "answer", "level", "question")
    train_rows = [{k: r[k] for k in columns} for r in task.train]
    held = [task.heldout[i] for i in spread(len(task.heldout), settings.eval_prompts)]
    eval_rows = [{k: r[k] for k in columns} for r in held]
    return run_grpo(settings, model_path, train_rows, eval_rows, reward_function(task), verify=task.verify)


def spread(n: int, m: int) -> list[int]:
    """``min(n, m)`` indices spread evenly over ``range(n)`` (first and last included), so a
    held-out subset of rows sorted by level covers every level. (A stride of ``n // m`` took the
    first m rows whenever m > n / 2: 60 of 100 arithmetic rows were levels 0-2 only.)"""
    if m <= 0 or n <= 0:
        return []
    if m >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (m - 1)) for i in range(m)}) if m > 1 else [0]


def run_grpo(
    settings: TrainSettings,
    model_path: str,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    reward_funcs: Any,
    pool_texts: list[str] | None = None,
    final_model_dir: str | None = None,
    verify: Callable[[str, str], float] | None = None,
    **config_overrides: Any,
) -> dict[str, Any]:
    """The GRPO engine behind :func:`run`, for any rows and reward functions.

    Rows need ``id`` and ``prompt`` plus whatever columns the reward functions read; the pool is
    embedded from ``pool_texts`` (default: the rows' ``question``). ``config_overrides`` go to
    ``GRPOConfig`` (e.g. ``epsilon_high``), so callers change TRL settings without copying this.
    With ``settings.rescue`` on, rows also need ``question`` and ``answer`` (GEPA scores templates
    with ``verify(completion, answer)``, default :func:`rollwise.tasks.verify_number`).
    """
    settings.validate()
    import torch
    from datasets import Dataset
    from trl import GRPOConfig

    from rollwise._io import atomic_write_json
    from rollwise.integrations.trl import RolloutBudget, RollwiseGRPOTrainer
    from rollwise.pool import PromptPool
    from rollwise.selectors import make_selector

    if settings.rescue is not None:
        missing = sorted({c for row in train_rows for c in ("question", "answer") if c not in row})
        if missing:
            raise ValueError(f"train_rows: rescue needs the columns {missing} in every row")
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    texts = list(pool_texts) if pool_texts is not None else train_ds["question"]
    if len(texts) != len(train_ds):
        raise ValueError(f"pool_texts has {len(texts)} entries but there are {len(train_ds)} rows")
    if not torch.cuda.is_available():  # the selector bounds its own calls (rollwise.threads)
        torch.set_num_threads(settings.threads or model_threads())
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
        # a 135M policy's Adam state is twice its weights: keep it only when asked
        save_only_model=not settings.save_optimizer,
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=settings.eval_steps,
        seed=settings.seed,
        report_to=settings.report_to,
        bf16=use_gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not use_gpu,
        dataloader_num_workers=0,
    )
    config = GRPOConfig(**{**config_args, **config_overrides})
    common = dict(model=model_path, reward_funcs=reward_funcs, args=config, train_dataset=train_ds,
                  eval_dataset=eval_ds, selector=selector)
    rescue = None
    if settings.rescue is None:
        trainer = RollwiseGRPOTrainer(**common)
    else:
        trainer, rescue = _rescue_trainer(settings, common, train_rows, verify)
    budget = None
    if settings.max_rollouts is not None:  # after the rescue callback: it sees a step's GEPA cost
        budget = RolloutBudget(trainer, settings.max_rollouts)
        trainer.add_callback(budget)
    t0 = time.perf_counter()
    if eval_ds is not None:
        start_eval = trainer.evaluate()  # accuracy of the starting model, same protocol
        log.info("held-out reward before training: %s", start_eval.get("eval_reward"))
    else:
        start_eval = {}
    resume = settings.resume and any(Path(settings.output_dir).glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    if eval_ds is not None and trainer.state.global_step % settings.eval_steps:
        trainer.evaluate()  # stopped off the evaluation grid (rollout budget): score the final policy too
    result = {
        "settings": settings.as_record(),
        "model_path": model_path,
        "initial_eval": start_eval,
        "log_history": trainer.state.log_history,
        # every completion generated for training, template evolution included
        "rollouts": trainer.total_rollouts,
        "selections": trainer.selection_log,  # per generation batch: chosen rows, predictions, ...
        "evaluations": trainer.evaluation_log,  # per evaluation: reward and truncation per level
        "steps": trainer.state.global_step,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    if budget is not None:
        result["budget_stopped_at"] = budget.stopped_at
    if rescue is not None:
        result["rescue"] = {"training_rollouts": trainer.rollouts_spent, **rescue.summary()}
    atomic_write_json(os.path.join(settings.output_dir, "rollwise_run.json"), result,
                      make_parents=True)
    if final_model_dir is not None:
        trainer.save_model(final_model_dir)
    # what `rollwise allocate --selector ... --pool ...` needs: the selector and its pool
    trainer.selector.save(os.path.join(settings.output_dir, "rollwise_selector.pt"))
    trainer.selector.pool.write_jsonl(os.path.join(settings.output_dir, "rollwise_pool.jsonl"))
    return result


def _rescue_trainer(settings: TrainSettings, common: dict[str, Any], train_rows: list[dict[str, Any]],
                    verify: Callable[[str, str], float] | None) -> tuple[Any, Any]:
    """A RescueGRPOTrainer with its hard-prompt bank, and the callback that evolves its template."""
    from rollwise.rescue import HardPromptBank, RescueCallback, RescueGRPOTrainer
    from rollwise.tasks import verify_number

    bank = HardPromptBank(window=settings.rescue_window, success_threshold=settings.rescue_threshold)
    # no template until the first evolution scores one on the current policy; templates wrap the
    # bare question in training as in evolution
    trainer = RescueGRPOTrainer(**common, bank=bank, guided_per_group=settings.rescue_guided,
                                problems={row["id"]: row["question"] for row in train_rows})
    rescue = RescueCallback(trainer, train_rows, verify or verify_number, settings.rescue_reflection,
                            every=settings.rescue_every, max_metric_calls=settings.rescue_max_metric_calls,
                            max_hard=settings.rescue_max_hard, seed_template=settings.rescue_seed_template,
                            max_new_tokens=settings.max_new_tokens, seed=settings.seed)
    trainer.add_callback(rescue)
    return trainer, rescue
