"""rollwise inside TRL's GRPOTrainer: a selector chooses every generation batch's prompts.

Data flow (one process or several, same code):

1. TRL's dataloader still yields a *generation batch* (``generation_batch_size`` rows: prompts
   repeated ``num_generations`` times) every ``steps_per_generation * num_iterations`` optimiser
   steps. Its rows are ignored: at that moment :class:`RollwiseGRPOTrainer` asks the selector for
   ``generation_batch_size // num_generations`` prompts, repeats each ``num_generations`` times
   and hands this process its slice (rank-major, exactly the slicing TRL uses after its gather).
   With several processes the main process selects and broadcasts its choice (accelerate's
   ``broadcast_object_list``), so all processes generate one batch by construction; only the
   main process's selector selects and observes, and only it writes the selector to checkpoints
   (every process loads it on resume).
2. TRL generates and scores. Its ``_calculate_rewards`` gathers the rewards of all processes;
   our override reads them (weighted sum over reward functions, as TRL does), groups them per
   prompt and calls ``selector.observe`` before returning.
3. Hence the selector has seen the rewards of generation g before it chooses generation g + 1's
   prompts: there is no lag. Prefetching by the dataloader or accelerate cannot introduce one,
   because the selection happens inside generation, not inside the sampler. With
   ``steps_per_generation > 1`` or ``num_iterations > 1`` one selection feeds several optimiser
   steps (TRL reuses a generation batch); the selector still sees each batch's rewards once.

4. With ``dynamic_sampling=True`` (DAPO's dynamic sampling, which TRL itself lacks) step 1-2 run
   in rounds: each round the selector chooses a full generation batch, TRL generates and scores
   it, the selector observes it, and groups whose rewards are all equal (zero advantage, no
   gradient) are dropped; rounds go on until every process holds a full batch of informative
   groups or ``max_sampling_rounds`` is reached (DAPO's ``max_num_gen_batches``; the rest of the
   batch is then filled with dropped groups, whose advantage is zero). Every generated rollout
   is counted. Every process sees every round's gathered rewards, so each decides the same
   rounds without extra communication; each keeps the informative groups of its own slice.

5. With ``budget_objective`` (per-prompt rollout budgets, :mod:`rollwise.budgets`) the
   generation batch's ``B x num_generations`` rows are split among the B chosen prompts in whole
   groups of ``num_generations`` (TRL normalises advantages per block of that many rows, so each
   group is valued on its own): a prompt gets 0 to ``budget_max_groups`` groups, the batch keeps
   its size, prompts given none are dropped from the step; equal predictions give every prompt
   one group. The selector observes each prompt's groups merged into one group
   of unequal size. Not combined with dynamic sampling.

6. With ``embed_refresh_steps=N`` and an ``hf:`` embedder of the policy (``rollwise train
   --embedder policy``), the main process re-embeds the pool from the current policy after every
   N optimiser steps (before that step's evaluation and checkpoint), at the embedder's layer and
   pooling; the selector keeps what it learned and reads the new embeddings from then on
   (:meth:`rollwise.selectors.Selector.set_embeddings`). Checkpoints keep the embeddings
   (``rollwise_pool_embeddings.npy``), so a resumed run reads the ones it had.

Rewards must lie in [0, 1] (binary verifiers do) or ``success_threshold`` maps them to {0, 1}.
Checkpoints include the selector (``rollwise_selector.pt``), restored on resume the way TRL
restores its own extra state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rollwise._io import atomic_write, atomic_write_json, atomic_write_text
from rollwise.acquisition import centred_unit
from rollwise.metrics import effective_sample_ratio, expected_calibration_error, spearman
from rollwise.selectors import Selector, load_selector
from rollwise.validation import check_int

try:
    from transformers import TrainerCallback
    from trl import GRPOTrainer
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("rollwise.integrations.trl needs TRL: pip install 'rollwise[trl]'") from err

log = logging.getLogger(__name__)

SELECTOR_FILE = "rollwise_selector.pt"
TRAINER_STATE_FILE = "rollwise_trainer_state.json"
EMBEDDINGS_FILE = "rollwise_pool_embeddings.npy"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name, not a path
# a JSON part of a checkpoint: (state getter, state loader, required on resume)
CheckpointPart = tuple[Callable[[], Any], Callable[[Any], None], bool]


class RollwiseGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose training prompts are chosen by a rollwise selector.

    ``selector`` is a strategy name (``"gps"``, ``"mopps"``, ...; see ``rollwise.STRATEGIES``)
    or a ready selector. With a name, the pool is built from ``train_dataset``: the text of
    ``prompt_column`` (default ``"prompt"``: a plain string, or for conversational prompts the
    content of the last user message), ids from an ``id`` column where it has unique ones, the
    batch size from ``generation_batch_size // num_generations`` and the seed from ``args.seed``;
    ``selector_kwargs`` go to :func:`rollwise.make_selector` (e.g. ``{"candidate_ratio": 4}``)
    and ``embedder`` (default ``"wordllama"``) embeds the texts. A ready selector must be built over
    ``train_dataset``
    (pool index i = dataset row i) with that batch size. Everything else is GRPOTrainer's.
    Logged metrics: ``rollwise/esr``, ``rollwise/spearman`` (predicted vs empirical success rate
    on the batch), ``rollwise/rollouts`` (cumulative completions generated for training) and
    ``rollwise/predicted_rate``; with ``dynamic_sampling`` also ``rollwise/ds_rounds`` (generation
    rounds this step), ``rollwise/ds_kept`` (share of generated groups kept) and
    ``rollwise/ds_filled`` (groups the batch lacked when ``max_sampling_rounds`` ran out).

    ``dynamic_sampling=True`` turns on DAPO's dynamic sampling with any selector (see the module
    docstring); ``selector="ds"`` is short for the uniform selector with it.

    ``embed_refresh_steps=N`` (with an ``hf:`` embedder of the policy) re-embeds the pool from the
    current policy after every N steps (module docstring, point 6; ``embedding_refreshes`` holds
    one record per refresh).

    Evaluation generates and scores (``eval_reward``, the held-out accuracy) but by default skips
    TRL's evaluation loss: a GRPO surrogate over the evaluation's own group advantages, not a
    quality measure, whose extra forward pass over every evaluation batch took about 40% of an
    evaluation on a CPU. ``eval_loss=True`` computes it as TRL does. With transformers generation
    (not vLLM), ``share_prefill`` (default) prefills each prompt once for its ``num_generations``
    repeats (:mod:`rollwise.integrations.prefill`): the same completions, about 1.5x faster
    generation on a CPU. ``share_prompt_forward`` (default) does the same in the loss: each
    group's prompt goes through the forward and backward pass once, not once per completion
    (the same log-probabilities and gradients up to float rounding; it needs gradient
    checkpointing off, which drops the cache it relies on, and one process, and falls back to
    TRL's pass otherwise).

    Instrumentation (cheap, always on): ``selection_log`` holds one record per generation batch
    (the chosen rows' ids and ``level`` where the dataset has one, predicted rates, per-prompt
    success rates, this process's mean completion length and truncation rate), and
    ``evaluation_log`` one per evaluation (reward and truncation rate, overall and per level;
    for GPS also ``calibration``: Spearman and ECE of its raw and calibrated predictions for the
    evaluation prompts against their empirical success rates, prompts embedded with ``embedder``,
    so only where the embedder is known: the trainer built the pool, or ``embedder`` was given
    with a ready selector).
    Both are saved in checkpoints. Lengths and the per-level evaluation cover this process's
    completions (all of them on one process); rewards and selections cover every process.
    """

    def __init__(self, *args: Any, selector: Selector | str = "gps",
                 success_threshold: float | None = None, selector_kwargs: dict[str, Any] | None = None,
                 prompt_column: str = "prompt", embedder: Any = None, base_model: str | None = None,
                 dynamic_sampling: bool = False, max_sampling_rounds: int = 10,
                 budget_objective: str | None = None, budget_max_groups: int = 4,
                 eval_loss: bool = False, share_prefill: bool = True,
                 share_prompt_forward: bool = True, embed_refresh_steps: int | None = None,
                 **kwargs: Any) -> None:
        from rollwise.budgets import OBJECTIVES, PromptBudgets
        from rollwise.strategies import train_names, train_strategy

        if isinstance(selector, str):
            if selector not in train_names():
                raise ValueError(f"selector: unknown strategy {selector!r}; choose from "
                                 f"{train_names()} or pass a Selector")
            selector, filtered = train_strategy(selector)
            dynamic_sampling = dynamic_sampling or filtered
        elif not isinstance(selector, Selector):
            raise TypeError(f"selector must be a strategy name or a rollwise Selector, got "
                            f"{type(selector).__name__}")
        if not isinstance(dynamic_sampling, bool):
            raise TypeError(f"dynamic_sampling must be True or False, got {dynamic_sampling!r}")
        check_int("max_sampling_rounds", max_sampling_rounds, 1)
        check_int("budget_max_groups", budget_max_groups, 1)
        if embed_refresh_steps is not None:
            check_int("embed_refresh_steps", embed_refresh_steps, 1)
            spec = embedder if embedder is not None else "wordllama"
            if not (isinstance(spec, str) and spec.startswith("hf:")):
                raise ValueError(f"embed_refresh_steps: re-embedding from the policy needs an "
                                 f"'hf:' embedder of the policy (rollwise train --embedder "
                                 f"policy), got embedder={spec!r}")
        if budget_objective is not None:
            if budget_objective not in OBJECTIVES:
                raise ValueError(f"budget_objective must be one of {list(OBJECTIVES)} or None, "
                                 f"got {budget_objective!r}")
            if dynamic_sampling:
                raise ValueError("budget_objective: per-prompt budgets and dynamic_sampling do "
                                 "not combine; choose one")
        super().__init__(*args, **kwargs)
        if isinstance(selector, str):
            embedder = embedder if embedder is not None else "wordllama"
            selector = self._build_selector(selector, selector_kwargs or {}, prompt_column, embedder)
        n_rows = len(self.train_dataset)
        if len(selector.pool) != n_rows:
            raise ValueError(
                f"selector: its pool has {len(selector.pool)} prompts but train_dataset has "
                f"{n_rows} rows; build the pool from the dataset (row i = pool index i)"
            )
        per_generation = self.args.generation_batch_size // self.num_generations
        if selector.batch_size != per_generation:
            raise ValueError(
                f"selector: batch_size={selector.batch_size} but each generation batch holds "
                f"{per_generation} prompts (generation_batch_size // num_generations)"
            )
        if dynamic_sampling:
            local = self.args.per_device_train_batch_size * self.args.steps_per_generation
            if local % self.num_generations:
                raise ValueError(
                    f"dynamic_sampling: each process's generation batch ({local} rows: "
                    f"per_device_train_batch_size x steps_per_generation) must hold whole groups "
                    f"of num_generations={self.num_generations}")
        self.budgets: PromptBudgets | None = None
        if budget_objective is not None:
            try:
                selector.predictive(np.arange(1))
            except TypeError as err:
                raise ValueError(f"budget_objective: {err}") from err
            n = self.num_generations
            self.budgets = PromptBudgets(per_generation * n, k_min=0, k_max=budget_max_groups * n,
                                         step=n, objective=budget_objective, separate_groups=True)
            if selector.name == "gps":
                log.warning(
                    "budget_objective with GPS: its group values differ only through predicted "
                    "means that it has already pulled together, so the split gives each step's "
                    "groups to the few prompts predicted highest (2 of 8 prompts in every step on "
                    "SmolLM2 chain sums); what it measured: docs/budgets.md")
        self.selector = selector
        self.dynamic_sampling, self.max_sampling_rounds = dynamic_sampling, max_sampling_rounds
        self.eval_loss, self.share_prefill = bool(eval_loss), bool(share_prefill)
        self.share_prompt_forward = bool(share_prompt_forward)
        self._round_rewards: np.ndarray | None = None
        self.success_threshold = success_threshold
        self.rollouts_spent = 0
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
        self.selection_log: list[dict[str, Any]] = []
        self.evaluation_log: list[dict[str, Any]] = []
        self._eval_records: list[tuple[Any, float, bool, str]] | None = None
        self._embedder = embedder  # None for a ready selector built with an unknown embedder
        self.embed_refresh_steps = embed_refresh_steps
        self.embedding_refreshes: list[dict[str, Any]] = []  # one record per re-embedding
        if embed_refresh_steps is not None:
            self._check_refresh(selector)
            self.add_callback(EmbeddingRefresh(self, embed_refresh_steps))
        self.base_model = base_model
        self._lengths: list[int] = []

    def _check_refresh(self, selector: Selector) -> None:
        """``embed_refresh_steps`` can work: the pool has texts and the policy's width."""
        if selector.pool.texts is None:
            raise ValueError("embed_refresh_steps: the selector's pool has no texts to re-embed "
                             "(build it with PromptPool.from_texts or let the trainer build it)")
        width = getattr(self.accelerator.unwrap_model(self.model).config, "hidden_size", None)
        if width != selector.pool.dim:
            raise ValueError(f"embed_refresh_steps: the pool's embeddings have {selector.pool.dim} "
                             f"dimensions but the policy's hidden states {width}; the embedder "
                             f"must be the policy's own (got {self._embedder!r})")

    def _policy_embedder(self):
        from rollwise.embed import PolicyEmbedder, parse_hf_embedder

        _, layer, pooling = parse_hf_embedder(self._embedder)
        return PolicyEmbedder(self.accelerator.unwrap_model(self.model), self.processing_class,
                              layer=layer, pooling=pooling)

    def refresh_embeddings(self) -> None:
        """Re-embed the pool from the current policy and hand the embeddings to the selector
        (main process; its selector is the one that selects). Records the step, the seconds it
        took and how far the embeddings moved: the mean cosine to the previous ones, raw and
        after centring each set on its pool mean (a causal LM's pooled states share a large
        common direction, so the raw cosine stays near 1 while the prompts' relative geometry
        may move), and the mean displacement over the pool's mean distance to its centre."""
        if not self.accelerator.is_main_process:
            return
        t0 = time.perf_counter()
        old = self.selector.pool.embeddings
        emb = self._policy_embedder().encode(list(self.selector.pool.texts))
        step = self.state.global_step
        self.selector.set_embeddings(emb, embedder=f"{self._embedder}|policy at step {step}")
        new = self.selector.pool.embeddings
        spread = float(np.linalg.norm(old - old.mean(0), axis=1).mean())
        record = {"step": step, "seconds": round(time.perf_counter() - t0, 2),
                  "mean_cosine_to_previous": float(np.mean(np.sum(old * new, axis=1))),
                  "mean_centred_cosine_to_previous": float(np.mean(np.sum(
                      centred_unit(old) * centred_unit(new), axis=1))),
                  "displacement_over_spread": float(np.linalg.norm(new - old, axis=1).mean()
                                                    / max(spread, 1e-12))}
        self.embedding_refreshes.append(record)
        log.info("re-embedded the pool from the policy at step %d in %.1f s (mean centred cosine "
                 "to the previous embeddings %.4f)", step, record["seconds"],
                 record["mean_centred_cosine_to_previous"])

    def _build_selector(self, name: str, kwargs: dict[str, Any], column: str,
                        embedder: Any) -> Selector:
        """A selector over ``train_dataset``'s prompts (see the class docstring)."""
        from rollwise.pool import PromptPool
        from rollwise.selectors import make_selector

        ds = self.train_dataset
        if column not in ds.column_names:
            raise ValueError(f"prompt_column: train_dataset has no column {column!r} "
                             f"(columns: {ds.column_names})")
        texts = [prompt_text(p, f"train_dataset[{i}][{column!r}]") for i, p in enumerate(ds[column])]
        ids = None
        if "id" in ds.column_names:
            given = [str(i) for i in ds["id"]]
            ids = given if len(set(given)) == len(given) else None
        pool = PromptPool.from_texts(texts, ids=ids, embedder=embedder)
        batch = self.args.generation_batch_size // self.num_generations
        kwargs = {"seed": self.args.seed, **kwargs}
        return make_selector(name, pool, batch, **kwargs)

    # -- 1. choose the prompts -------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:  # evaluation: the given rows, untouched
            return super()._generate_and_score_completions(inputs)
        if not self.dynamic_sampling:
            return self._generation_round(len(inputs))
        return self._dynamic_sampling(len(inputs))

    def _generation_round(self, local: int) -> dict[str, Any]:
        """Select a generation batch, generate and score this process's slice of it (the
        selector observes the gathered rewards inside)."""
        chosen, predicted, groups = self._choose()
        n = self.num_generations
        blocks = chosen if groups is None else np.repeat(chosen, groups)  # one per TRL group
        rows = [self.train_dataset[int(i)] for i in blocks for _ in range(n)]
        rank = self.accelerator.process_index
        if len(rows) != local * self.accelerator.num_processes:
            raise RuntimeError(
                f"generation batch mismatch: selected {len(rows)} rows for "
                f"{self.accelerator.num_processes} processes x {local} local rows"
            )
        self._pending = (chosen, predicted, groups)
        try:
            return super()._generate_and_score_completions(rows[rank * local : (rank + 1) * local])
        finally:
            self._pending = None

    def _choose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The generation batch's prompts, their predicted rates and, with per-prompt budgets,
        their groups. With several processes the main process's selector chooses and the choice
        is broadcast (accelerate's collectives), so every process generates its slice of one
        batch by construction, whatever the selector's numerics on each process."""

        def pick() -> list[Any]:
            chosen = self.selector.select()
            groups = None
            if self.budgets is not None:
                sizes = self.budgets.split(*self.selector.predictive(chosen))
                groups = sizes // self.num_generations
            return [chosen, self.selector.predict(chosen), groups]

        if self.accelerator.num_processes == 1:
            return tuple(pick())
        from accelerate.utils import broadcast_object_list

        payload: list[Any] = [None, None, None]
        if self.accelerator.is_main_process:
            payload = pick()
        broadcast_object_list(payload, from_process=0)
        groups = None if payload[2] is None else np.asarray(payload[2], dtype=np.int64)
        return (np.asarray(payload[0], dtype=np.int64), np.asarray(payload[1], dtype=np.float64),
                groups)

    def _dynamic_sampling(self, local: int) -> dict[str, Any]:
        """DAPO's dynamic sampling: generation rounds until every process holds ``local // n``
        informative groups of its own slice (or ``max_sampling_rounds``), then one batch of them."""
        n, processes = self.num_generations, self.accelerator.num_processes
        per_process = local // n
        kept: list[list[tuple[dict[str, Any], list[int]]]] = [[] for _ in range(processes)]
        spare: list[tuple[dict[str, Any], list[int]]] = []  # this process's dropped groups, newest last
        rank, rounds, generated = self.accelerator.process_index, 0, 0
        while rounds < self.max_sampling_rounds and min(len(k) for k in kept) < per_process:
            output = self._generation_round(local)
            rounds += 1
            grouped = self._round_rewards.reshape(processes, per_process, n)
            generated += processes * per_process
            for p in range(processes):  # every process decides every process's keeps alike
                informative = grouped[p].max(axis=1) > grouped[p].min(axis=1)
                for g in range(per_process):
                    if informative[g] and len(kept[p]) < per_process:
                        kept[p].append((output, [g]) if p == rank else (None, [g]))
                    elif p == rank:
                        spare.append((output, [g]))
        mine = kept[rank]
        filled = per_process - len(mine)
        mine = mine + spare[len(spare) - filled:] if filled else mine
        metrics = self._metrics["train"]
        metrics["rollwise/ds_rounds"].append(float(rounds))
        metrics["rollwise/ds_kept"].append(sum(map(len, kept)) / generated)
        metrics["rollwise/ds_filled"].append(float(sum(per_process - len(k) for k in kept)))
        if filled:
            log.warning("dynamic sampling: %d of %d groups still lacked after %d rounds; filled with "
                        "zero-advantage groups", filled, per_process, rounds)
        return self._merge_groups(mine)

    def _merge_groups(self, groups: list[tuple[dict[str, Any], list[int]]]) -> dict[str, Any]:
        """One TRL generation batch from groups of several rounds' outputs (each ``(output,
        [group index])``): rows taken in order, prompts re-padded on the left, completions and
        per-token tensors on the right; ``num_items_in_batch`` recounted over all processes."""
        import torch
        from trl.trainer.utils import pad

        n = self.num_generations
        right = {"completion_ids": self._tokenizer.pad_token_id, "completion_mask": 0,
                 "old_per_token_logps": 0.0, "ref_per_token_logps": 0.0,
                 "sampling_per_token_logps": 0.0, "tool_mask": 1, "importance_sampling_ratio": 1.0}
        left = {"prompt_ids": self._tokenizer.pad_token_id, "prompt_mask": 0}
        first = groups[0][0]
        unknown = set(first) - set(right) - set(left) - {"advantages", "num_items_in_batch"}
        if unknown:
            raise NotImplementedError(f"dynamic_sampling supports text prompts only; the generation "
                                      f"batch has {sorted(unknown)}")
        merged: dict[str, Any] = {}
        for key, value in first.items():
            if key == "num_items_in_batch" or value is None:
                merged[key] = value
                continue
            parts = [out[key][g * n : (g + 1) * n] for out, gs in groups for g in gs]
            if key == "advantages":
                merged[key] = torch.cat(parts)
            else:
                side, fill = ("left", left[key]) if key in left else ("right", right[key])
                rows = [row for part in parts for row in part]
                merged[key] = pad(rows, padding_value=fill, padding_side=side).to(value.device)
        loss_mask = merged["completion_mask"]
        if merged.get("tool_mask") is not None:
            loss_mask = loss_mask * merged["tool_mask"]
        merged["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        return merged

    # -- 2. observe the rewards ------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions,
                                                      completion_ids_list)
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1).float().cpu().numpy()
        self._round_rewards = rewards  # what dynamic sampling filters on: the advantage's input
        self._lengths = [len(ids) for ids in completion_ids_list]
        if self._pending is not None and self.model.training:
            self._observe(rewards)
        elif self._eval_records is not None:  # rewards are gathered, inputs are this process's
            start = self.accelerator.process_index * len(inputs)
            local = rewards[start : start + len(inputs)]
            for row, reward, length in zip(inputs, local, self._lengths, strict=True):
                self._eval_records.append((row.get("level"), float(reward),
                                           length >= self.max_completion_length,
                                           prompt_text(row.get("prompt", ""), "eval prompt")))
        return rewards_per_func

    def _generate(self, prompts: list):
        """TRL's generation; with ``share_prefill`` and transformers generation, each run of a
        repeated prompt is prefilled once."""
        batching = getattr(self, "use_transformers_continuous_batching", False)
        if not self.share_prefill or self.use_vllm or batching:
            return super()._generate(prompts)
        from rollwise.integrations.prefill import shared_prefill

        with shared_prefill(self.accelerator.unwrap_model(self.model)):
            return super()._generate(prompts)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False,
                                           compute_aux_loss=False, **extra):
        """TRL's per-token log-probabilities; with ``share_prompt_forward``, a text-only batch whose
        prompts repeat (GRPO's groups, rows in any order) runs each distinct prompt once
        (:func:`~rollwise.integrations.prefill.shared_prompt_logps`)."""
        rows = input_ids.shape[0]
        if (self.share_prompt_forward and not compute_aux_loss
                and all(v is None for v in extra.values())
                and (batch_size is None or batch_size >= rows)
                and self.accelerator.unwrap_model(model) is model):  # not wrapped for processes
            from rollwise.integrations.prefill import shared_prompt_logps

            with self.accelerator.autocast():
                shared = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep,
                                             compute_entropy)
            if shared is not None:
                return shared[0], shared[1], None
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
            compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **extra)

    def _successes(self, rewards: np.ndarray) -> np.ndarray:
        """Rewards as the selector sees them: thresholded to 0/1 when ``success_threshold`` is
        set, else as they are (then they must lie in [0, 1])."""
        if self.success_threshold is not None:
            return (rewards >= self.success_threshold).astype(np.float64)
        if rewards.min() < 0 or rewards.max() > 1:
            raise ValueError(
                "reward functions returned values outside [0, 1]; pass success_threshold= to map "
                "rewards to success/failure for the selector"
            )
        return rewards

    def _observe(self, rewards: np.ndarray) -> None:
        chosen, predicted, groups = self._pending
        n = self.num_generations
        grouped = self._successes(rewards.reshape(-1, n))  # TRL's groups
        if groups is None:
            per_prompt: Any = grouped
        else:  # a prompt's groups merged: one group of its whole budget
            keep = groups > 0
            starts = np.cumsum(groups) - groups
            per_prompt = [grouped[s : s + g].ravel() for s, g in zip(starts[keep], groups[keep],
                                                                     strict=True)]
            chosen, predicted = chosen[keep], predicted[keep]
        if self.accelerator.is_main_process:  # the selector that chooses (see _choose)
            self.selector.observe(chosen, per_prompt)
        self.rollouts_spent += grouped.size
        rates = np.array([np.mean(r) for r in per_prompt])
        metrics = self._metrics["train"]
        metrics["rollwise/esr"].append(effective_sample_ratio(grouped))
        if groups is not None:
            metrics["rollwise/prompts"].append(float(chosen.size))
        rho = spearman(predicted, rates)
        if rho == rho:
            metrics["rollwise/spearman"].append(rho)
        # cumulative: the step's figure is the latest (TRL averages a metric's values per step,
        # and dynamic sampling scores several rounds per step)
        metrics["rollwise/rollouts"] = [float(self.rollouts_spent)]
        metrics["rollwise/predicted_rate"].append(float(np.mean(predicted)))
        # what GPS read of its regime when it chose this batch (rollwise.regime)
        regime = (getattr(self.selector, "last_regime", None)
                  if self.accelerator.is_main_process else None) or {}
        for key in ("trust", "predicted_share", "repeat_excess", "cooldown"):
            if key in regime:
                metrics[f"rollwise/{key}"].append(float(regime[key]))
        self._log_selection(chosen, predicted, rates, regime,
                            None if groups is None else groups[groups > 0])

    def _log_selection(self, chosen: np.ndarray, predicted: np.ndarray, rates: np.ndarray,
                       regime: dict[str, float] | None = None,
                       groups: np.ndarray | None = None) -> None:
        """One ``selection_log`` record for the generation batch just scored."""
        lengths = np.asarray(self._lengths, dtype=np.float64)
        rows = [self.train_dataset[int(i)] for i in chosen]
        self.selection_log.append({
            "step": self.state.global_step,
            "indices": chosen.tolist(),
            "ids": [row.get("id") for row in rows],
            "level": [row.get("level") for row in rows],
            "predicted": np.round(predicted, 4).tolist(),
            "success_rate": np.round(rates, 4).tolist(),
            **({"groups": groups.tolist()} if groups is not None else {}),
            "completion_length": float(lengths.mean()) if lengths.size else None,
            "truncation_rate": (float(np.mean(lengths >= self.max_completion_length))
                                if lengths.size else None),
            **({"regime": {k: (round(float(v), 4) if v == v else None) for k, v in regime.items()}}
               if regime else {}),
        })

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """TRL's evaluation step without its loss unless ``eval_loss``: generation and scoring
        (which log ``eval_reward``) are all an evaluation needs, and they consume the same random
        numbers either way."""
        if self.eval_loss:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        self._prepare_inputs(inputs)
        return None, None, None

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """TRL's evaluation, plus reward and truncation rate per level in ``evaluation_log``."""
        self._eval_records = records = []
        try:
            metrics = super().evaluate(*args, **kwargs)
        finally:
            self._eval_records = None
        record = {"step": self.state.global_step, **summarise_by_level(records)}
        calibration = self._heldout_calibration(records)
        if calibration is not None:
            record["calibration"] = calibration
        self.evaluation_log.append(record)
        return metrics

    def _heldout_calibration(self, records: list[tuple[Any, float, bool, str]]) -> dict[str, Any] | None:
        """How the selector's predictions for the evaluation prompts (never trained on) compare
        with their empirical success rates: Spearman and ECE, raw and calibrated. GPS only; the
        prompts are embedded with ``embedder`` (which must be the pool's)."""
        if (not records or self._embedder is None or not hasattr(self.selector, "predict_texts")
                or not self.accelerator.is_main_process):  # only its selector is trained
            return None
        by_prompt: dict[str, list[float]] = {}
        for _, reward, _, text in records:
            by_prompt.setdefault(text, []).append(reward)
        texts = list(by_prompt)
        try:
            rates = np.array([self._successes(np.asarray(by_prompt[t])).mean() for t in texts])
        except ValueError:  # rewards outside [0, 1] without a threshold: no rates to compare
            return None
        if self.embedding_refreshes:  # the pool reads the policy's current states: so do these
            raw = self.selector.predict_embeddings(self._policy_embedder().encode(texts))
        else:
            raw = self.selector.predict_texts(texts, embedder=self._embedder)
        calibrated = self.selector.calibration().mean(raw)
        return {"prompts": len(texts), "mean_rate": float(rates.mean()),
                "mean_predicted": float(raw.mean()), "spearman": spearman(raw, rates),
                "ece_raw": expected_calibration_error(raw, rates),
                "ece_calibrated": expected_calibration_error(calibrated, rates)}

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """TRL's model card, tagged ``rollwise``; TRL names no base model for a checkpoint
        loaded from a local directory ("a fine-tuned version of [None]"), so the card names
        ``base_model`` (a hub id becomes a link) or the local path instead."""
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        super().create_model_card(model_name=model_name, dataset_name=dataset_name,
                                  tags=[*tags, "rollwise"])
        card = os.path.join(self.args.output_dir, "README.md")
        unnamed = "[None](https://huggingface.co/None)"
        if not self.is_world_process_zero() or not os.path.exists(card):
            return
        with open(card, encoding="utf-8") as f:
            text = f.read()
        if unnamed in text:
            base = self.base_model or getattr(self.model.config, "_name_or_path", None) or "an unnamed model"
            named = f"[{base}](https://huggingface.co/{base})" if _HUB_ID.match(base) else f"`{base}`"
            atomic_write_text(card, text.replace(unnamed, named))

    @property
    def total_rollouts(self) -> int:
        """Every completion generated for this run: training rollouts plus any spent elsewhere
        (subclasses add theirs, e.g. template evolution); what a rollout budget counts."""
        return self.rollouts_spent

    # -- 3. checkpoints --------------------------------------------------------------------
    def _checkpoint_dir(self, trial) -> str:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        return os.path.join(self._get_output_dir(trial=trial), folder)

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        """JSON files saved in every checkpoint next to the selector: ``{file name: (state,
        load_state, required)}``. Subclasses add their own parts (``super()`` first), so their
        state is saved and resumed by the same two hooks."""
        return {TRAINER_STATE_FILE: (self._trainer_state, self._load_trainer_state, False)}

    def _trainer_state(self) -> dict[str, Any]:
        return {"rollouts_spent": self.rollouts_spent, "selection_log": self.selection_log,
                "evaluation_log": self.evaluation_log,
                "embedding_refreshes": self.embedding_refreshes}

    def _load_trainer_state(self, state: dict[str, Any]) -> None:
        self.rollouts_spent = int(state["rollouts_spent"])
        self.selection_log = list(state.get("selection_log", []))
        self.evaluation_log = list(state.get("evaluation_log", []))
        self.embedding_refreshes = list(state.get("embedding_refreshes", []))

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = self._checkpoint_dir(trial)
            self.selector.save(os.path.join(folder, SELECTOR_FILE))
            if self.embedding_refreshes:  # the selector's pool is no longer the one built at start
                atomic_write(os.path.join(folder, EMBEDDINGS_FILE), self._write_embeddings)
            for name, (state, _, _) in self.checkpoint_parts().items():
                atomic_write_json(os.path.join(folder, name), state())
            log.info("saved selector state to %s", folder)

    def _write_embeddings(self, path: str) -> None:
        with open(path, "wb") as f:  # a file object: np.save would append .npy to a path
            np.save(f, self.selector.pool.embeddings)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, SELECTOR_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint {checkpoint!r} has no {SELECTOR_FILE}")
        embeddings = os.path.join(checkpoint, EMBEDDINGS_FILE)
        if os.path.exists(embeddings):  # re-embedded from the policy before this checkpoint
            self.selector.set_embeddings(np.load(embeddings),
                                         embedder=f"{self._embedder}|policy, restored")
        restored = load_selector(path, self.selector.pool)
        self.selector.load_state_dict(restored.state_dict())
        for name, (_, load_state, required) in self.checkpoint_parts().items():
            part = os.path.join(checkpoint, name)
            if not os.path.exists(part):
                if required:
                    raise FileNotFoundError(f"checkpoint {checkpoint!r} has no {name}: it was not "
                                            f"saved by a {type(self).__name__}")
                continue
            with open(part, encoding="utf-8") as f:
                load_state(json.load(f))
        log.info("restored selector state from %s", path)


def prompt_text(prompt: Any, where: str = "prompt") -> str:
    """The text of a TRL prompt: a plain string, or the content of the last user message of a
    conversational prompt (a list of ``{"role", "content"}`` messages)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        users = [m.get("content") for m in prompt if m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return users[-1]
    raise ValueError(f"{where}: expected a string or chat messages with a user message, "
                     f"got {type(prompt).__name__}")


def summarise_by_level(records: list[tuple]) -> dict[str, Any]:
    """Mean reward and truncation rate of ``(level, reward, truncated, ...)`` records, overall and
    per level (levels as strings, sorted; rows without a level are counted overall only)."""
    out: dict[str, Any] = {"n": len(records)}
    if not records:
        return out
    rewards = np.array([r[1] for r in records])
    truncated = np.array([r[2] for r in records], dtype=np.float64)
    out.update(reward=float(rewards.mean()), truncation_rate=float(truncated.mean()), levels={})
    levels = sorted({r[0] for r in records if r[0] is not None}, key=lambda v: (str(type(v)), v))
    for level in levels:
        mask = np.array([r[0] == level for r in records])
        out["levels"][str(level)] = {"n": int(mask.sum()), "reward": float(rewards[mask].mean()),
                                     "truncation_rate": float(truncated[mask].mean())}
    return out


class RolloutBudget(TrainerCallback):
    """Stops a :class:`RollwiseGRPOTrainer` run before its next generation batch would take it past
    ``max_rollouts`` completions (``trainer.total_rollouts``: rollouts spent outside training, such
    as template evolution, included), so runs are compared at equal cost rather than equal steps.

    Checked after each optimiser step; cost added inside a step (e.g. a template evolution at its
    end) can take the run over by that amount, which ``total_rollouts`` then reports. The learning
    rate schedule still follows ``max_steps``.
    """

    def __init__(self, trainer: RollwiseGRPOTrainer, max_rollouts: int) -> None:
        check_int("max_rollouts", max_rollouts, 1)
        self.trainer, self.max_rollouts = trainer, max_rollouts
        self.stopped_at: int | None = None  # the step after which the budget stopped training

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = self.trainer
        per_batch = trainer.selector.batch_size * trainer.num_generations
        if trainer.total_rollouts + per_batch > self.max_rollouts:
            control.should_training_stop = True
            self.stopped_at = state.global_step
            log.info("rollout budget: %d spent, the next batch (%d) would exceed %d; stopping at step %d",
                     trainer.total_rollouts, per_batch, self.max_rollouts, state.global_step)


class EmbeddingRefresh(TrainerCallback):
    """Re-embeds a :class:`RollwiseGRPOTrainer`'s pool from the current policy after every
    ``every`` optimiser steps (at step end: before that step's evaluation and checkpoint, so both
    read the new embeddings). Added by the trainer itself for ``embed_refresh_steps``."""

    def __init__(self, trainer: RollwiseGRPOTrainer, every: int) -> None:
        check_int("every", every, 1)
        self.trainer, self.every = trainer, every

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every == 0:
            self.trainer.refresh_embeddings()
