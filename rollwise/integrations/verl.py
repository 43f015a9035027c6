"""rollwise inside verl 0.9.1's v1 trainer, through two of verl's own extension points.

Configuration (Hydra overrides; the full recipe is in ``docs/verl.md``)::

    trainer.use_v1=True
    data.custom_cls.path=pkg://rollwise.integrations.verl data.custom_cls.name=RollwiseDataset
    data.dataloader_num_workers=0
    trainer.v1.sampler.custom_sampler.path=pkg://rollwise.integrations.verl
    trainer.v1.sampler.custom_sampler.name=RollwiseReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.strategy=gps   # + embedder, seed, hyper, ... (HubConfig)

Both classes live in the trainer process (verl's ``TaskRunner`` Ray actor, the driver): verl builds
the replay buffer in ``PPOTrainer.__init__`` and the datasets in ``_init_dataloader``. The buffer
creates a :class:`SelectionHub` (the selector plus the bookkeeping below); the training dataset,
built next, binds to it and builds the rollwise :class:`~rollwise.PromptPool` from its own rows
(pool index i = dataset row i, pool id = the stable prompt id). Nothing runs on the workers and
nothing is sent over the network that verl does not send already.

Data flow of one step:

1. **Choose (before any rollout).** The trainer asks its ``StatefulDataLoader`` for prompts
   (``_next_train_batch``: ``train_batch_size`` prompts per step, one at a time under DAPO or the
   async trainers, plus refills). The loader's sampler still yields row positions, but
   :meth:`RollwiseDataset.__getitems__` ignores them and serves the rows the selector chose:
   ``selector.select()`` fills a queue of ``batch_size`` prompts, served in order; a new
   selection is made when the queue runs out, or earlier (dropping what is left of the queue)
   once ``min_observe_groups`` (default ``batch_size``) new groups have been scored. Each served
   row carries its prompt id in the ``rollwise_id`` field, which verl copies into every
   trajectory of the group.
   Prompts still in flight (served, rewards not yet seen) are excluded from the candidates, so
   async mode does not pick the same prompt again before it has been scored.
2. **Roll out and score.** verl as usual: agent loop workers generate ``rollout.n`` rollouts per
   prompt, rule-based rewards are computed in the agent loop, and trajectories land in
   TransferQueue under keys ``{uid}_{session_id}_{index}`` with ``rm_scores`` and ``rollwise_id``.
3. **Observe.** :class:`RollwiseReplayBuffer` (a subclass of verl's ``ReplayBuffer``, or of
   ``ReplayBufferAsync`` for the async trainers) reads the rewards of every finished group exactly
   once, whatever happens to it: groups sampled for training (``_materialize_batch``), groups
   evicted by DAPO filtering, staleness or failure, and surplus groups (``_clear_groups``), and,
   just before each selection, groups that have finished but are still waiting in the buffer.
   Rewards are grouped per uid (one reward per rollout: the last output of each ``session_id``),
   mapped to the pool by ``rollwise_id`` (never by position) and queued; the queue is applied with
   ``selector.observe`` right before the next selection, so one call carries about a batch of
   groups (GPS's window counts calls) even when verl refills one prompt at a time. Groups of any
   size share a call (a failed group with 3 of 4 rollouts, per-prompt budgets; nothing is
   padded); a prompt seen twice goes in two calls. Calls and their rows are ordered by pool
   index, not by arrival, so a resumed run repeats them exactly.

Per-prompt rollout budgets (``sampler_kwargs.budget_objective``, with ``rollout_n``): each
selection's ``batch_size x rollout.n`` rollouts are split among its prompts by the selector's
predictions (:mod:`rollwise.budgets`), and each served row carries its count in
``__rollout_n__``, which verl 0.9.1's v1 agent loop reads per prompt
(``AgentLoopManagerTQ._run_prompt``); GRPO's advantages group by uid, so groups of unequal size
are normalised within themselves.

What the selector sees: in the sync trainer, every group of step t before it chooses step t+1
(no lag). Under DAPO, refills within a step come from the step's selection while it lasts; a
refill that needs a new selection sees the groups evicted so far. In the async trainers
(``colocate_async``/``separate_async``) a selection sees every group that has *finished* by
then, trained or not; groups still generating are not seen yet (rewards of step t may arrive
after step t+1 was chosen), and their prompts are not candidates.

Checkpoints: with ``dataloader_num_workers=0`` verl's ``data.pt`` is the ``StatefulDataLoader``
state, which includes ``dataset.state_dict()``; :class:`RollwiseDataset` returns the hub's state
there (selector, queue, unapplied observations, in-flight prompts). On resume the loader restores
it at the first fetch, so a resumed run makes the same selections.

Rewards must lie in [0, 1] or ``success_threshold`` maps them to {0, 1}. A colocated reward model
(``reward.reward_model.enable=True`` without its own resource pool) scores groups only after the
buffer has sampled them; rollwise then stops at the first step with an explicit error (verl
refuses DAPO filtering in that setup for the same reason).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from rollwise.feedback.hub import HubConfig, SelectionHub, observation_batches
from rollwise.pool import PromptPool

try:
    import torch.utils.data
    import transfer_queue as tq
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
    from verl.utils.dataset.rl_dataset import RLHFDataset
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("rollwise.integrations.verl needs verl 0.9.1: pip install 'rollwise[verl]'") from err

log = logging.getLogger(__name__)

ID_FIELD = "rollwise_id"
ROLLOUT_N_FIELD = "__rollout_n__"  # read by verl's AgentLoopManagerTQ._run_prompt
TRAIN = "train"
_CANONICAL = "rollwise.integrations.verl"


def _canonical_module() -> Any:
    """This module as imported by name (verl may load it a second time from a file path)."""
    mod = sys.modules.get(_CANONICAL)
    return mod if mod is not None else importlib.import_module(_CANONICAL)


_CURRENT: dict[str, SelectionHub] = {}


def current_hub() -> SelectionHub | None:
    """The hub of the replay buffer built last in this process (verl builds one per trainer)."""
    return _canonical_module()._CURRENT.get("hub")


def _set_current_hub(hub: SelectionHub | None) -> None:
    reg = _canonical_module()._CURRENT
    if hub is None:
        reg.pop("hub", None)
    else:
        reg["hub"] = hub


# ---- the dataset: step 1 ---------------------------------------------------------------------
def _lookup(row: Mapping[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _prompt_text(prompt: Any) -> str:
    """The user turns of a chat prompt (the system prompt is shared and only blurs embeddings)."""
    if isinstance(prompt, str):
        return prompt
    messages = [m for m in prompt if isinstance(m, Mapping)]
    user = [m for m in messages if m.get("role") == "user"] or messages

    def content(m: Mapping[str, Any]) -> str:
        c = m.get("content", "")
        if isinstance(c, str):
            return c
        return " ".join(str(p.get("text", "")) for p in c if isinstance(p, Mapping))

    return "\n".join(content(m) for m in user)


def _file_list(files: Any) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str | os.PathLike):
        files = [files]
    return [os.path.expanduser(os.fspath(f)) for f in files]


class RollwiseDataset(RLHFDataset):
    """verl's ``RLHFDataset`` whose training rows are chosen by the rollwise selector.

    verl builds this class for the training and the validation files (``data.custom_cls``); the
    instance over ``data.train_files`` binds to the current :class:`SelectionHub` and serves
    selected rows, any other instance behaves exactly like ``RLHFDataset``. Needs
    ``data.dataloader_num_workers=0`` so that rows are fetched in the trainer process, when the
    trainer asks for them (workers would prefetch with a stale selector).
    """

    def __init__(self, data_files, tokenizer, config, processor=None, max_samples: int = -1):
        super().__init__(data_files, tokenizer, config, processor=processor, max_samples=max_samples)
        self._hub: SelectionHub | None = None
        files = _file_list(data_files)
        train_files = _file_list(config.get("train_files"))
        val_files = _file_list(config.get("val_files"))
        if files != train_files:
            return  # validation (or any other) split: plain RLHFDataset
        hub = current_hub()
        if hub is not None and hub.bound and files == val_files:
            return  # train_files == val_files: the second instance is the validation set
        if hub is None:
            raise RuntimeError(
                "RollwiseDataset needs a RollwiseReplayBuffer in the same trainer: set "
                "trainer.use_v1=True, trainer.v1.sampler.custom_sampler.path="
                "pkg://rollwise.integrations.verl and custom_sampler.name=RollwiseReplayBuffer"
            )
        workers = config.get("dataloader_num_workers", 0)
        if workers:
            raise ValueError(
                f"data.dataloader_num_workers={workers}: rollwise chooses prompts in the trainer "
                "process when they are fetched; set data.dataloader_num_workers=0"
            )
        hub.bind(self.build_pool(hub.config), int(config.get("train_batch_size")))
        self._hub = hub

    @property
    def hub(self) -> SelectionHub | None:
        return self._hub

    def build_pool(self, cfg: HubConfig) -> PromptPool:
        """Pool over this dataset's rows: ids from ``id_column``, embeddings of the prompts."""
        df = self.dataframe
        id_root = cfg.id_column.split(".")[0]
        if id_root not in df.column_names:
            raise KeyError(f"id_column {cfg.id_column!r}: the dataset has no column {id_root!r} "
                           f"(columns: {df.column_names})")
        ids = []
        for pos, row in enumerate(df.select_columns([id_root])):
            try:
                value = _lookup(row, cfg.id_column)
            except KeyError:
                raise KeyError(f"row {pos} has no {cfg.id_column!r} (the stable prompt id)") from None
            if value is None:
                raise ValueError(f"row {pos}: {cfg.id_column!r} is empty (the stable prompt id)")
            ids.append(str(value))
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"prompt ids from {cfg.id_column!r} must be unique; {dup!r} repeats")
        if cfg.embedding_column is not None:
            emb = np.asarray(list(df[cfg.embedding_column]), dtype=np.float32)
            return PromptPool(emb, ids=ids)
        if cfg.text_column is not None:
            root = cfg.text_column.split(".")[0]
            texts = [str(_lookup(row, cfg.text_column)) for row in df.select_columns([root])]
        else:
            texts = [_prompt_text(p) for p in list(df[self.prompt_key])]
        return PromptPool.from_texts(texts, ids=ids, embedder=cfg.embedder, cache_dir=cfg.embedding_cache)

    def __getitem__(self, item):
        row = super().__getitem__(item)
        if self._hub is not None:
            row[ID_FIELD] = self._hub.pool.ids[int(item)]
        return row

    def __getitems__(self, indices):
        """The loader's batch fetch: the sampler's positions are replaced by the selector's."""
        if self._hub is None:
            return [self[i] for i in indices]
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError("RollwiseDataset runs in a dataloader worker; "
                               "set data.dataloader_num_workers=0")
        rows = []
        for i, n in self._hub.take_with_rollouts(len(indices)):
            row = self[i]
            if n is not None:  # a per-prompt budget: verl's v1 agent loop reads it per prompt
                row[ROLLOUT_N_FIELD] = n
            rows.append(row)
        return rows

    # StatefulDataLoader (num_workers=0) saves and restores these with verl's data.pt
    def state_dict(self) -> dict[str, Any]:
        return self._hub.state_dict() if self._hub is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._hub is not None and state_dict:
            self._hub.load_state_dict(state_dict)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_hub", None)
        return state


# ---- the replay buffer: step 3 ---------------------------------------------------------------
def _split_key(key: str) -> tuple[str, str, int] | None:
    parts = key.rsplit("_", 2)
    if len(parts) != 3:
        return None
    try:
        return parts[0], parts[1], int(parts[2])
    except ValueError:
        return None


def _rollout_order(rollout: str) -> tuple[int, Any]:
    return (0, int(rollout)) if rollout.isdigit() else (1, rollout)


class RollwiseReplayBuffer(ReplayBuffer):
    """verl's replay buffer that reports every finished group's rewards to the selector.

    Sampling, eviction, DAPO filtering and refills are verl's own (``ReplayBuffer`` for the sync
    trainer; ``trainer_mode`` other than ``sync`` gives a :class:`RollwiseReplayBufferAsync`).
    It adds ``rollwise/*`` metrics to the step's metrics.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        # verl names one class for every trainer mode; the async trainers get the async variant
        mode = kwargs.get("trainer_mode", args[0] if args else "sync")
        target = RollwiseReplayBufferAsync if cls is RollwiseReplayBuffer and mode != "sync" else cls
        return object.__new__(target)

    def __init__(self, trainer_mode: str, trainer_config: Any, max_off_policy_threshold: int | None,
                 max_off_policy_strategy: str, sampler_kwargs: Any, refill_fn: Any = None,
                 **overrides: Any) -> None:
        cfg = HubConfig.from_kwargs(sampler_kwargs)
        metric = cfg.dapo_metric()
        kwargs: dict[str, Any] = dict(filter_groups_metric=metric, poll_interval=float(cfg.poll_interval),
                                      sync_refill_failed_groups=bool(cfg.sync_refill_failed_groups))
        if not isinstance(self, ReplayBufferAsync):  # what verl gives its own sync buffer
            tbs = cfg.train_batch_size
            if (metric is not None or cfg.sync_refill_failed_groups) and tbs is None:
                raise ValueError("DAPO or failed-group refills through RollwiseReplayBuffer need "
                                 "+trainer.v1.sampler.sampler_kwargs.train_batch_size='${data.train_batch_size}'")
            kwargs.update(
                train_batch_size=tbs,
                gen_batch_size=1 if metric is not None or cfg.sync_refill_failed_groups
                else (cfg.gen_batch_size or tbs),
                max_inflight_gen_batches=int((cfg.filter_groups or {}).get("max_inflight_gen_batches", 1))
                if metric is not None else 1,
            )
        kwargs.update(overrides)
        super().__init__(trainer_mode=trainer_mode, trainer_config=trainer_config,
                         max_off_policy_threshold=max_off_policy_threshold,
                         max_off_policy_strategy=max_off_policy_strategy, sampler_kwargs=sampler_kwargs,
                         refill_fn=refill_fn, **kwargs)
        self.rollwise_config = cfg
        self.hub = SelectionHub(cfg)
        self.hub.harvester = self._harvest_finished
        self._batch_stats: list[tuple[float, float, bool]] = []
        self._sampleable = 0  # sampleable groups at verl's latest poll (refill sizing)
        self._refills = {"asked": 0, "dispatched": 0}
        if metric is not None and not isinstance(self, ReplayBufferAsync) and refill_fn is not None:
            self._verl_refill, self.refill_fn = refill_fn, self._sized_refill
        _set_current_hub(self.hub)

    # -- verl's hooks --------------------------------------------------------------------------
    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        self._batch_stats = []
        self._refills = {"asked": 0, "dispatched": 0}
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id == TRAIN and self.hub.bound:
            metrics.update(self.hub.metrics(self._batch_stats))
            if self.hub.group_size is not None:  # refills sized from the predictions
                metrics["rollwise/ds_refill_asked"] = float(self._refills["asked"])
                metrics["rollwise/ds_refill_prompts"] = float(self._refills["dispatched"])
        return batch, metrics

    def _sampleable_terminal_keys(self, partition_id, eviction_reasons):
        keys = super()._sampleable_terminal_keys(partition_id, eviction_reasons)
        if partition_id == TRAIN:
            self._sampleable = len(keys)
        return keys

    def _sized_refill(self, count: int) -> None:
        """verl's sync DAPO refill, sized by the hub (``ds_sizing="predicted"``): verl asks for
        twice the groups it evicted; the hub rolls out as many as the missing groups need given
        the predictions (:meth:`SelectionHub.refill_size`)."""
        size = int(count)
        if self.hub.bound and self.hub.group_size is not None:
            flying = len(self.pending_keys[TRAIN]) + len(self.running_keys[TRAIN])
            slots = max(0, self.max_inflight_gen_batches * self.train_batch_size - flying)
            size = self.hub.refill_size(int(count), self.train_batch_size - self._sampleable,
                                        flying, slots)
        self._refills["asked"] += int(count)
        self._refills["dispatched"] += size
        if size > 0:
            self._verl_refill(size)

    def _materialize_batch(self, partition_id, selected_prompt_uids, partition_snapshot):
        if partition_id == TRAIN and self.hub.bound:
            self._harvest(list(selected_prompt_uids), partition_snapshot)
            self._batch_stats.extend(self.hub.forget(selected_prompt_uids))
        return super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)

    def _clear_groups(self, partition_id, uids):
        if partition_id == TRAIN and uids and self.hub.bound:
            terminal = self.finished_keys[partition_id] | self.failure_keys[partition_id]
            self._harvest(sorted(u for u in uids if u in terminal), self.partitions[partition_id])
        super()._clear_groups(partition_id, uids)
        if partition_id == TRAIN and uids:
            self.hub.forget(uids)

    # -- reading rewards -----------------------------------------------------------------------
    def _harvest_finished(self) -> None:
        """Observe groups that have finished but have not been sampled or evicted yet."""
        listing = tq.kv_list(TRAIN) or {}
        items = listing.get(TRAIN, {}) or {}
        uids = [k for k, tag in items.items()
                if tag.get("is_prompt", False) and tag.get("status") in ("finished", "failure")
                and not self.hub.was_harvested(k)]
        if uids:
            self._harvest(uids, items)

    def _harvest(self, uids: list[str], partition: Mapping[str, Any]) -> None:
        uids = [u for u in uids if not self.hub.was_harvested(u)]
        if not uids:
            return
        wanted = set(uids)
        last: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)  # uid -> session_id -> (index, key)
        for key in partition:
            parsed = _split_key(key)
            if parsed is None or parsed[0] not in wanted:
                continue
            uid, rollout, index = parsed
            if rollout not in last[uid] or index > last[uid][rollout][0]:
                last[uid][rollout] = (index, key)
        keys = [key for u in uids
                for _, (_, key) in sorted(last[u].items(), key=lambda s: _rollout_order(s[0]))]
        values = self._read_rewards(keys) if keys else {}
        for u in uids:
            rollouts = sorted(last[u].items(), key=lambda s: _rollout_order(s[0]))
            if not rollouts:
                self.hub.record_empty(u)
                continue
            ids = {values[key][0] for _, (_, key) in rollouts}
            if len(ids) != 1:
                raise RuntimeError(f"group {u}: its trajectories name different prompts {sorted(ids)}")
            self.hub.record(u, ids.pop(), [values[key][1] for _, (_, key) in rollouts])

    def _read_rewards(self, keys: list[str]) -> dict[str, tuple[str, float]]:
        metric = self.rollwise_config.reward_metric
        reward_field = "rm_scores" if metric is None else "extra_fields"
        hint = ("rollwise needs rewards computed during rollout (rule-based reward, or "
                "reward.reward_model.enable_resource_pool=True) and rows from RollwiseDataset "
                "(data.custom_cls)")
        try:
            data = tq.kv_batch_get(keys=keys, partition_id=TRAIN, select_fields=[ID_FIELD, reward_field])
        except ValueError as err:  # TransferQueue: a requested field is empty for some key
            raise RuntimeError(f"cannot read {ID_FIELD!r} and {reward_field!r} of finished "
                               f"trajectories ({err}); {hint}") from err
        present = set(data.keys())
        if ID_FIELD not in present:
            raise RuntimeError(f"trajectories carry no {ID_FIELD!r} field: the training dataset must be "
                               "RollwiseDataset (data.custom_cls)")
        if reward_field not in present:
            raise RuntimeError(f"trajectories carry no reward when the replay buffer sees them; {hint}")
        ids = [str(getattr(v, "data", v)) for v in data[ID_FIELD]]
        out = {}
        for key, pid, value in zip(keys, ids, data[reward_field], strict=True):
            if metric is None:
                reward = float(value.sum().item())
            else:
                extra = getattr(value, "data", value)
                info = extra.get("reward_extra_info", {}) if isinstance(extra, Mapping) else {}
                if metric not in info:
                    raise RuntimeError(f"trajectory {key} has no reward_extra_info[{metric!r}]")
                reward = float(info[metric])
            out[key] = (pid, reward)
        return out


class RollwiseReplayBufferAsync(RollwiseReplayBuffer, ReplayBufferAsync):
    """:class:`RollwiseReplayBuffer` over verl's ``ReplayBufferAsync`` (colocate/separate async)."""


__all__ = ["ID_FIELD", "HubConfig", "SelectionHub", "RollwiseDataset", "RollwiseReplayBuffer",
           "RollwiseReplayBufferAsync", "observation_batches", "current_hub"]
