"""Real GRPO with TRL and a rollwise selector: the engine behind ``rollwise train``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rollwise.checkpoints import checkpoint_step, last_whole_checkpoint
from rollwise.dynamic_sampling import SIZINGS
from rollwise.strategies import PRESETS, train_names, train_strategy
from rollwise.threads import model_threads
from rollwise.validation import Interval, OneOf, check_fields, setting

log = logging.getLogger(__name__)


POSITIVE = Interval(int, 1)
LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16's
POSITIVE_RATE = Interval(float, 0, None, closed="neither")


@dataclass
class TrainSettings:
    """One GRPO run. Sizes default to a CPU-sized run of SmolLM2-135M-Instruct. Every field
    declares its help and its constraint (``rollwise train`` options are built from them)."""

    model: str = setting("smollm2", help="'smollm2' (offline SmolLM2-135M-Instruct), a checkpoint "
                                         "dir or a hub id")
    task: str = setting("arithmetic", help="'arithmetic', 'mixed' or a JSON/JSONL/parquet file of problems "
                                           "with answers")
    text_field: str | None = setting(None, help="a task file's problem field; none: the first of "
                                                "prompt, problem, question, text")
    answer_field: str | None = setting(None, help="a task file's reference-answer field; none: answer")
    strategy: str = setting("gps", help="prompt selector; 'ds' is uniform with DAPO's dynamic sampling",
                            constraint=OneOf(train_names))
    dynamic_sampling: bool = setting(False, help="DAPO's dynamic sampling on top of the strategy: drop "
                                                 "groups whose rewards are all equal and generate more "
                                                 "until the step's batch is full (every rollout counted)")
    max_sampling_rounds: int | None = setting(None, help="dynamic sampling: at most this many "
                                                         "generation rounds per step (DAPO's "
                                                         "max_num_gen_batches); none: 10",
                                              constraint=Interval(int, 1, optional=True))
    ds_sizing: str | None = setting(None, help="dynamic sampling: how many prompts each round "
                                               "rolls out: 'full' (DAPO's generation batch), "
                                               "'keep-rate' (GRESO's: the last step's keep rate "
                                               "x 1.25) or 'predicted' (the fewest prompts whose "
                                               "predicted chances fill the batch with probability "
                                               "--ds-fill-confidence); none: the strategy's own "
                                               "(greso: keep-rate, gps and mopps: predicted, ds: "
                                               "full)",
                                    constraint=OneOf(SIZINGS, optional=True))
    ds_fill_confidence: float = setting(0.9, help="dynamic sampling, predicted sizing: the "
                                                  "probability of a full batch each round aims at",
                                        constraint=Interval(float, 0.0, 1.0, closed="neither"))
    ds_max_round_prompts: int | None = setting(None, help="dynamic sampling: prompts per round at "
                                                          "most (memory); none: 4 x "
                                                          "--prompts-per-step",
                                               constraint=Interval(int, 1, optional=True))
    ds_keep_surplus: bool = setting(False, help="dynamic sampling: keep informative groups beyond "
                                                "the batch for the next step (one step stale, no "
                                                "importance correction) instead of dropping them")
    budgets: str | None = setting(None, help="per-prompt rollout budgets (whole groups of "
                                             "--num-generations, up to 4 per prompt, the step's "
                                             "rollouts unchanged) maximising groups, rollouts or "
                                             "variance (docs/budgets.md); needs gps or mopps; none: "
                                             "every prompt one group",
                                  constraint=OneOf(("groups", "rollouts", "variance"), optional=True))
    output_dir: str = setting("runs/train", help="checkpoints, the selector and rollwise_run.json "
                                                 "(the run's log)")
    steps: int = setting(40, help="optimiser steps", constraint=POSITIVE)
    prompts_per_step: int = setting(8, help="prompts the selector chooses per step", constraint=POSITIVE)
    num_generations: int = setting(8, help="rollouts per prompt (GRPO needs groups)",
                                   constraint=Interval(int, 2))
    max_new_tokens: int = setting(48, help="completion length limit (training and evaluation)",
                                  constraint=POSITIVE)
    temperature: float = setting(1.0, help="sampling temperature", constraint=POSITIVE_RATE)
    learning_rate: float = setting(1e-5, help="policy learning rate", constraint=POSITIVE_RATE)
    beta: float = setting(0.0, help="KL coefficient against the starting policy (0: no reference "
                                    "model, as in DAPO)", constraint=Interval(float, 0))
    loss_type: str = setting("dapo", help="TRL's GRPO loss aggregation (dapo: token-level, "
                                          "normalised over the batch's tokens, as in DAPO)",
                             constraint=OneOf(LOSS_TYPES))
    seed: int = setting(0, help="seed of TRL and of the selector", constraint=Interval(int, 0, 2**32 - 1))
    embedder: str = setting("wordllama", help="prompt embedder: wordllama, hashing, policy (the "
                                              "policy's own hidden states at its start; "
                                              "policy@16-body: layer 16 without the first "
                                              "token), "
                                              "hf:<checkpoint>, or sentence-transformers:<model>")
    embed_refresh_steps: int | None = setting(None, help="with --embedder policy: re-embed the pool "
                                                         "from the current policy every this many "
                                                         "steps; none: embed it once, at the start",
                                              constraint=Interval(int, 1, optional=True))
    threads: int | None = setting(None, help="torch threads for the policy on the CPU; none: one less "
                                             "than the cores, so the process's other work and its "
                                             "neighbours keep one",
                                  constraint=Interval(int, 1, optional=True))
    eval_steps: int = setting(10, help="steps between held-out evaluations", constraint=POSITIVE)
    eval_prompts: int = setting(60, help="held-out prompts per evaluation (0: none)",
                                constraint=Interval(int, 0))
    eval_generations: int = setting(4, help="samples per held-out prompt", constraint=Interval(int, 2),
                                    cli=False)
    gradient_checkpointing: bool | None = setting(
        None, help="recompute activations in the backward pass; default: on with a GPU (TRL's "
                   "default), off on a CPU, where the loss then runs each group's prompt once "
                   "(SmolLM2 at 8 x 4 x 32: a 3x faster loss pass)")
    save_steps: int = setting(20, help="steps between checkpoints", constraint=POSITIVE)
    save_optimizer: bool = setting(False, help="also keep the optimizer, scheduler and RNG state in "
                                               "checkpoints (about 3x the size); without it --resume "
                                               "restarts the optimizer")
    resume: bool = setting(False, help="resume from the last checkpoint (the selector's state always "
                                       "comes back)")
    overwrite: bool = setting(False, help="replace an earlier run in --output-dir (its checkpoints, "
                                          "run log and selector); without it (or --resume) such a "
                                          "folder is refused")
    report_to: str = setting("none", help="TRL logging backends (none, tensorboard, wandb, ...)")
    hyper: dict[str, Any] = setting(default_factory=dict, help="the strategy's keyword arguments",
                                    cli=False)
    max_rollouts: int | None = setting(None, help="rollout budget: stop before the run would exceed "
                                                  "it (add-ons' rollouts included); none: steps alone",
                                       constraint=Interval(int, 1, optional=True))

    def validate(self) -> None:
        from rollwise.embed import check_embedder_name
        from rollwise.llm.models import is_policy_embedder

        check_fields(self)
        try:  # the policy's layer and pooling checked as an hf: embedder's, nothing loaded
            if is_policy_embedder(self.embedder):
                check_embedder_name("hf:policy" + self.embedder[len("policy"):])
            else:
                check_embedder_name(self.embedder)
        except ValueError as err:
            raise ValueError(f"embedder: {str(err).replace('hf:policy', 'policy')}") from err
        if self.embed_refresh_steps is not None and not is_policy_embedder(self.embedder):
            raise ValueError(f"embed_refresh_steps: re-embedding from the current policy needs "
                             f"--embedder policy, got {self.embedder!r}")
        if self.budgets is not None and self.uses_dynamic_sampling:
            raise ValueError("budgets: per-prompt budgets and dynamic sampling do not combine "
                             "(--budgets with --dynamic-sampling or --strategy ds)")
        if self.budgets is not None and PRESETS[train_strategy(self.strategy)[0]][0] not in ("gps",
                                                                                      "mopps"):
            raise ValueError(f"budgets: need a strategy with per-prompt predictions (gps or mopps), "
                             f"got {self.strategy!r}")
        if not self.uses_dynamic_sampling:
            given = [name for name in ("max_sampling_rounds", "ds_sizing", "ds_fill_confidence",
                                       "ds_max_round_prompts", "ds_keep_surplus")
                     if getattr(self, name) != type(self).__dataclass_fields__[name].default]
            if given:
                raise ValueError(f"{', '.join(given)}: only with dynamic sampling "
                                 f"(--dynamic-sampling or a '+ds' strategy such as ds, gps+ds)")
        if (self.ds_sizing == "predicted"
                and PRESETS[train_strategy(self.strategy)[0]][0] not in ("gps", "mopps")):
            raise ValueError(f"ds_sizing: 'predicted' needs a strategy that predicts each prompt "
                             f"(gps or mopps), got {self.strategy!r}; use full or keep-rate")
        if (self.ds_max_round_prompts is not None
                and self.ds_max_round_prompts < self.prompts_per_step):
            raise ValueError(f"ds_max_round_prompts: {self.ds_max_round_prompts} is fewer than "
                             f"--prompts-per-step ({self.prompts_per_step}); a round must be able "
                             f"to hold a whole batch")
        backends = [b.strip() for b in str(self.report_to).split(",")]
        known = report_backends()
        if any(b not in known for b in backends):
            raise ValueError(f"report_to: unknown logging backend in {self.report_to!r}; use none, "
                             f"all or a comma-separated list of {sorted(known - {'none', 'all'})}")
        per_step = self.prompts_per_step * self.num_generations
        if self.max_rollouts is not None and self.max_rollouts < per_step:
            raise ValueError(f"max_rollouts must be None or an int >= one step's rollouts "
                             f"(prompts_per_step x num_generations = {per_step}), got "
                             f"{self.max_rollouts!r}")

    @property
    def uses_dynamic_sampling(self) -> bool:
        """Whether the run filters groups with DAPO's dynamic sampling."""
        return self.dynamic_sampling or train_strategy(self.strategy)[1]

    def check_output_dir(self) -> list[Path]:
        """The earlier run's files in ``output_dir`` that this run will replace (with
        ``overwrite``); raise if the folder cannot hold this run's outputs or holds an earlier
        run that neither ``resume`` nor ``overwrite`` allows touching. Reads the folder only."""
        from rollwise._io import check_output_dir

        check_output_dir("--output-dir", self.output_dir)
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --output-dir and --overwrite replaces "
                             "it: give one of them")
        out = Path(self.output_dir)
        earlier = sorted(p for p in out.iterdir() if p.name in RUN_FILES
                         or (p.name.startswith("checkpoint-") and p.is_dir())) if out.is_dir() else []
        card = out / "README.md"  # TRL writes the model card there
        if card.exists() and not earlier:
            raise ValueError(f"--output-dir {str(out)!r} holds a README.md that is not an earlier "
                             "run's model card; the run would replace it with its card: move it "
                             "or choose another folder")
        if earlier and not (self.resume or self.overwrite):
            names = ", ".join(p.name for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
            raise ValueError(f"--output-dir {str(out)!r} holds an earlier run ({names}); pass "
                             "--resume to continue it, --overwrite to replace it, or another folder")
        return earlier if self.overwrite else []

    def as_record(self) -> dict[str, Any]:
        """The settings as JSON values."""
        return asdict(self)


def report_backends() -> set[str]:
    """The logging backends transformers' Trainer takes in ``report_to``."""
    try:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    except ImportError:  # without the trl extra: let TRL's own check speak later
        return {"none", "all"}
    return {"none", "all", *INTEGRATION_TO_CALLBACK}


# what a run leaves in its output folder (besides TRL's checkpoint-N folders)
RUN_FILES = ("rollwise_run.json", "rollwise_selector.pt", "rollwise_pool.jsonl")


def check_resume(settings: TrainSettings, n_rows: int) -> Path | None:
    """With ``resume``, the checkpoint to resume from: the last whole one in ``output_dir``.
    Refused, before the model loads, where there is none, or where another strategy or another
    pool size wrote its selector (reads the small selector file only)."""
    if not settings.resume:
        return None
    last = last_whole_checkpoint(settings.output_dir)
    if last is None:
        raise ValueError(f"--resume: --output-dir {str(settings.output_dir)!r} holds no whole "
                         "checkpoint (checkpoint-N) to resume from; run without --resume to start "
                         "anew (with --overwrite where an earlier run's files are there)")
    import torch

    path = last / "rollwise_selector.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or damaged: one line, not a traceback
        raise ValueError(f"--resume: {str(path)!r} is damaged ({type(err).__name__}); remove "
                         f"{str(last)!r} to resume from the checkpoint before it") from err
    if not isinstance(state, dict):
        raise ValueError(f"--resume: {str(path)!r} is not a selector state")
    strategy = train_strategy(settings.strategy)[0]
    if state.get("strategy") != strategy:
        raise ValueError(f"--resume: the run in --output-dir selected with {state.get('strategy')!r}, "
                         f"not {strategy!r} (--strategy)")
    if int(state.get("pool_size", n_rows)) != n_rows:
        raise ValueError(f"--resume: the run in --output-dir trained on {int(state['pool_size'])} "
                         f"prompts, this task has {n_rows} (--task)")
    return last


def nearest_folder(path: str | os.PathLike) -> Path:
    """``path`` or its nearest existing ancestor (where a new output folder would be made)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_room(settings: TrainSettings, model_path: str) -> None:
    """Refuse, before the model loads, an ``output_dir`` that cannot be written or has too
    little free space for the run's checkpoints (a rough estimate: the model's weight files
    once per checkpoint, three times with ``save_optimizer``, and once more for the log and
    selector slack)."""
    import shutil

    where = nearest_folder(settings.output_dir)
    if not os.access(where, os.W_OK):
        raise PermissionError(f"--output-dir {str(settings.output_dir)!r}: {str(where)!r} is not "
                              "writable")
    weights = sum(f.stat().st_size for f in Path(model_path).glob("*")
                  if f.suffix in (".safetensors", ".bin", ".gguf") and f.is_file()) \
        if os.path.isdir(model_path) else 0
    checkpoints = max(1, settings.steps // settings.save_steps)
    need = weights * (3 if settings.save_optimizer else 1) * checkpoints + weights + 10_000_000
    free = shutil.disk_usage(where).free
    if free < need:
        raise OSError(f"--output-dir {str(settings.output_dir)!r}: {free / 1e9:.2f} GB free where "
                      f"the run's {checkpoints} checkpoint(s) need about {need / 1e9:.2f} GB; free "
                      "space, raise --save-steps or choose another folder")


STORAGE_MESSAGES = ("file write failed", "No space left", "PytorchStreamWriter", "Read-only file system",
                    "Disk quota exceeded")


def storage_error(err: BaseException, folder: str | os.PathLike) -> OSError | None:
    """``err`` as one ``OSError`` naming ``folder`` where it is a failed write: an ``OSError``,
    torch's ``RuntimeError`` from ``torch.save`` (which raises no ``OSError``) or safetensors'
    ``SafetensorError``; None for anything else."""
    text = str(err)
    if isinstance(err, OSError) or type(err).__name__ == "SafetensorError" or (
            isinstance(err, RuntimeError) and any(m in text for m in STORAGE_MESSAGES)):
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        return OSError(f"--output-dir {str(folder)!r}: writing failed ({first[:300]}); free space "
                       "or choose another folder (--resume continues from the last whole "
                       "checkpoint)")
    return None


def remove_earlier_run(paths: Sequence[Path]) -> None:
    """Delete an earlier run's files and checkpoint folders (``check_output_dir``'s list)."""
    import shutil

    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


@runtime_checkable
class TrainerAddon(Protocol):
    """What an add-on hands the engine, the way TRL's own trainers take a config, a subclass and
    ``callbacks=``: its settings check, its trainer class and constructor arguments, its
    callbacks, and its part of the run record (under ``name``). The engine imports no add-on."""

    name: str

    def check(self, settings: TrainSettings) -> None:
        """Raise ``ValueError`` if this add-on cannot run with ``settings`` (before anything heavy)."""

    def prepare(self, settings: TrainSettings, train_rows: list[dict[str, Any]],
                verify: Callable[[str, str], float] | None) -> tuple[type | None, dict[str, Any]]:
        """The trainer class to use (None: the engine's) and extra constructor arguments."""

    def callbacks(self, trainer: Any) -> list[Any]:
        """``TrainerCallback`` objects to add to the built trainer."""

    def summary(self, trainer: Any) -> dict[str, Any]:
        """The add-on's record of the run, stored under ``result[name]``."""


def check_addons(settings: TrainSettings, addons: Sequence[TrainerAddon]) -> list[TrainerAddon]:
    """The add-ons as a list, each checked against ``settings``; names must be unique."""
    addons = list(addons)
    for addon in addons:
        if not isinstance(addon, TrainerAddon):
            raise TypeError(f"addons: {addon!r} is not a TrainerAddon (name, check, prepare, "
                            "callbacks, summary)")
        addon.check(settings)
    names = [a.name for a in addons]
    if len(set(names)) != len(names):
        raise ValueError(f"addons: names must be unique, got {names}")
    return addons


def run(settings: TrainSettings, addons: Sequence[TrainerAddon] = ()) -> dict[str, Any]:
    """Train; returns (and writes to ``output_dir/rollwise_run.json``) the run's log. ``addons``
    (e.g. :class:`rollwise.rescue.P2ORescue`) attach their trainer class and callbacks. A second
    run into the same ``output_dir`` while this one lives is refused (:mod:`rollwise._lock`)."""
    from rollwise._lock import output_lock

    settings.validate()
    settings.check_output_dir()  # an earlier run is refused before anything heavy
    addons = check_addons(settings, addons)
    # under a multi-process launch one run has many processes: the first holds the lock
    lead = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("", "0")
    with output_lock("--output-dir", settings.output_dir) if lead else nullcontext():
        settings.check_output_dir()  # again, now that no other run can change the folder
        return _run(settings, addons)


def _run(settings: TrainSettings, addons: list[TrainerAddon]) -> dict[str, Any]:
    from rollwise.llm.models import resolve_embedder, resolve_model
    from rollwise.llm.tasks import get_task, reward_function

    # a missing or unreadable task file fails before the model is converted
    task = get_task(settings.task, text_field=settings.text_field, answer_field=settings.answer_field)
    if any(not r["answer"] for r in task.train):
        raise ValueError(f"task {settings.task!r}: some prompts lack answers")
    columns = ("id", "prompt", "answer", "level", "question")
    train_rows = [{k: r[k] for k in columns} for r in task.train]
    resume_from = check_resume(settings, len(train_rows))  # before the model loads
    if resume_from is not None and checkpoint_step(resume_from) >= settings.steps:
        finished = Path(settings.output_dir) / "rollwise_run.json"
        if finished.is_file():
            import json

            log.info("--resume: the run in %s already trained %d steps (--steps %d): nothing to do",
                     settings.output_dir, checkpoint_step(resume_from), settings.steps)
            return {**json.loads(finished.read_text()), "already_finished": True}
    model_path = resolve_model(settings.model)  # errors before anything heavy starts
    check_room(settings, model_path)
    try:
        resolve_embedder(settings.embedder, policy=model_path)
    except ValueError as err:
        raise ValueError(f"embedder: {err}") from err
    held = [task.heldout[i] for i in spread(len(task.heldout), settings.eval_prompts)]
    eval_rows = [{k: r[k] for k in columns} for r in held]
    return run_grpo(settings, model_path, train_rows, eval_rows, reward_function(task),
                    verify=task.verify, addons=addons)


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
    addons: Sequence[TrainerAddon] = (),
    **config_overrides: Any,
) -> dict[str, Any]:
    """The GRPO engine behind :func:`run`, for any rows and reward functions.

    Rows need ``id`` and ``prompt`` plus whatever columns the reward functions read; the pool is
    embedded from ``pool_texts`` (default: the rows' ``question``). ``config_overrides`` go to
    ``GRPOConfig`` (e.g. ``epsilon_high``), so callers change TRL settings without copying this.
    ``verify(completion, answer)`` is the task's verifier, handed to the add-ons (see
    :class:`TrainerAddon`); an add-on may need more columns in the rows.
    """
    settings.validate()
    earlier = settings.check_output_dir()
    addons = check_addons(settings, addons)
    import torch
    from datasets import Dataset
    from trl import GRPOConfig

    from rollwise._io import atomic_write_json
    from rollwise.integrations.trl import RolloutBudget, RollwiseGRPOTrainer
    from rollwise.llm.models import SMOLLM2_HUB_ID, resolve_embedder
    from rollwise.pool import PromptPool
    from rollwise.selectors import make_selector

    trainer_class: type = RollwiseGRPOTrainer
    addon_kwargs: dict[str, Any] = {}
    for addon in addons:  # before anything is built: an add-on may refuse the rows
        cls, extra = addon.prepare(settings, train_rows, verify)
        if cls is not None:
            if trainer_class is not RollwiseGRPOTrainer:
                raise ValueError(f"addons: {addon.name!r} and another add-on both bring a trainer class")
            trainer_class = cls
        addon_kwargs.update(extra)
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    texts = list(pool_texts) if pool_texts is not None else train_ds["question"]
    if len(texts) != len(train_ds):
        raise ValueError(f"pool_texts has {len(texts)} entries but there are {len(train_ds)} rows")
    if not torch.cuda.is_available():  # the selector bounds its own calls (rollwise.threads)
        torch.set_num_threads(settings.threads or model_threads())
    embedder = resolve_embedder(settings.embedder, policy=model_path)
    pool = PromptPool.from_texts(texts, ids=train_ds["id"], embedder=embedder)
    name = train_strategy(settings.strategy)[0]
    selector = make_selector(name, pool, settings.prompts_per_step, seed=settings.seed,
                             **settings.hyper)
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
        # off on a CPU by default: the loss's shared prompt pass needs the cache it would drop
        gradient_checkpointing=(use_gpu if settings.gradient_checkpointing is None
                                else settings.gradient_checkpointing),
    )
    config = GRPOConfig(**{**config_args, **config_overrides})
    common = dict(model=model_path, reward_funcs=reward_funcs, args=config, train_dataset=train_ds,
                  eval_dataset=eval_ds, selector=selector, embedder=embedder,
                  dynamic_sampling=settings.uses_dynamic_sampling,
                  budget_objective=settings.budgets,
                  embed_refresh_steps=settings.embed_refresh_steps,
                  base_model=SMOLLM2_HUB_ID if settings.model.lower() == "smollm2" else settings.model)
    if settings.max_sampling_rounds is not None:  # else the trainer's default
        common["max_sampling_rounds"] = settings.max_sampling_rounds
    if settings.uses_dynamic_sampling:
        common.update(ds_sizing=settings.ds_sizing, ds_fill_confidence=settings.ds_fill_confidence,
                      ds_max_round_prompts=settings.ds_max_round_prompts,
                      ds_keep_surplus=settings.ds_keep_surplus)
    trainer = trainer_class(**common, **addon_kwargs)
    for addon in addons:
        for callback in addon.callbacks(trainer):
            trainer.add_callback(callback)
    budget = None
    if settings.max_rollouts is not None:  # after the add-ons' callbacks: it sees what they spent
        budget = RolloutBudget(trainer, settings.max_rollouts)
        trainer.add_callback(budget)
    if earlier:  # --overwrite: the earlier run goes only now, when this one is about to start
        log.info("--overwrite: removing the earlier run in %s", settings.output_dir)
        remove_earlier_run(earlier)
    t0 = time.perf_counter()
    if eval_ds is not None:
        start_eval = trainer.evaluate()  # accuracy of the starting model, same protocol
        log.info("held-out accuracy before training: %.3f (n = %d completions)",
                 trainer.evaluation_log[-1].get("reward", float("nan")),
                 trainer.evaluation_log[-1]["n"])
    else:
        start_eval = {}
    # the last whole checkpoint (run() has refused --resume without one, before the model)
    resume_from = last_whole_checkpoint(settings.output_dir) if settings.resume else None
    try:
        trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))
    except Exception as err:  # a full or failing disk: one line naming the folder
        failed = storage_error(err, settings.output_dir)
        if failed is None:
            raise
        raise failed from err
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
        "embedding_refreshes": trainer.embedding_refreshes,  # with embed_refresh_steps
        "dynamic_sampling": trainer.ds_log,  # per step: rounds, rollouts, keeps, keep rates
        "steps": trainer.state.global_step,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    if budget is not None:
        result["budget_stopped_at"] = budget.stopped_at
    for addon in addons:
        result[addon.name] = addon.summary(trainer)
    atomic_write_json(os.path.join(settings.output_dir, "rollwise_run.json"), result,
                      make_parents=True)
    if final_model_dir is not None:
        trainer.save_model(final_model_dir)
    # what `rollwise allocate --selector ... --pool ...` needs: the selector and its pool
    trainer.selector.save(os.path.join(settings.output_dir, "rollwise_selector.pt"))
    trainer.selector.pool.write_jsonl(os.path.join(settings.output_dir, "rollwise_pool.jsonl"))
    return result
