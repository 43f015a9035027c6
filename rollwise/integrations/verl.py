"""rollwise inside verl 0.9.1's v1 trainer, through two of verl's own extension points.

Configuration (Hydra overrides; the full recipe is in ``docs/verl.md``)::

    trainer.use_v1=True
    data.custom_cls.path=pkg://rollwise.integrations.verl data.custom_cls.name=RollwiseDataset
    data.dataloader_num_workers=0
    trainer.v1.sampler.custom_sampler.path=pkg://rollwise.integrations.verl
    trainer.v1.sampler.custom_sampler.name=RollwiseReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.strategy=gps   # + embedder, seed, hyper, ... (RollwiseVerlConfig)

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
   groups (GPS's window counts calls) even when verl refills one prompt at a time. ``observe``
   needs the same k in one call, so the queue is split into one call per k (a failed group with
   3 of 4 rollouts goes in a k=3 call; nothing is padded) and a prompt seen twice goes in two
   calls. Calls and their rows are ordered by k and pool index, not by arrival, so a resumed run
   repeats them exactly.

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
import math
import os
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from rollwise.metrics import spearman
from rollwise.pool import PromptPool
from rollwise.selectors import STRATEGIES, Selector, make_selector

try:
    import torch.utils.data
    import transfer_queue as tq
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
    from verl.utils.dataset.rl_dataset import RLHFDataset
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("rollwise.integrations.verl needs verl 0.9.1: pip install 'rollwise[verl]'") from err

log = logging.getLogger(__name__)

ID_FIELD = "rollwise_id"
TRAIN = "train"
STATE_VERSION = 1
_CANONICAL = "rollwise.integrations.verl"


# ---- configuration ---------------------------------------------------------------------------
@dataclass
class RollwiseVerlConfig:
    """``trainer.v1.sampler.sampler_kwargs``: rollwise's settings plus verl pass-throughs.

    rollwise: ``strategy`` (a name in ``rollwise.STRATEGIES``), ``seed``, ``batch_size`` (prompts
    per selection; default ``data.train_batch_size``), ``hyper`` (keyword arguments of the
    strategy), ``embedder`` (``wordllama``, ``hashing``, ``sentence-transformers:<model>``),
    ``embedding_cache`` (directory), ``text_column`` (column or dotted path embedded as text;
    default: the user messages of ``data.prompt_key``), ``embedding_column`` (precomputed vectors
    instead of text), ``id_column`` (stable prompt id, dotted path; default ``extra_info.index``),
    ``success_threshold`` (reward >= threshold counts as success; default: rewards must lie in
    [0, 1]), ``reward_metric`` (read ``reward_extra_info[metric]`` instead of ``rm_scores``),
    ``exclude_in_flight`` and ``in_flight_ttl`` (selection rounds after which an unscored prompt is
    a candidate again), ``min_observe_groups`` (queued groups that trigger an early update and a
    fresh selection; default ``batch_size``; a selection that is due anyway applies whatever is
    queued).

    verl (a custom sampler receives none of these from verl; pass them by interpolation, e.g.
    ``'${algorithm.filter_groups}'``): ``filter_groups`` (DAPO), ``train_batch_size``,
    ``gen_batch_size``, ``sync_refill_failed_groups``, ``poll_interval``.
    """

    strategy: str = "gps"
    seed: int = 0
    batch_size: int | None = None
    hyper: dict[str, Any] = field(default_factory=dict)
    embedder: str = "wordllama"
    embedding_cache: str | None = None
    text_column: str | None = None
    embedding_column: str | None = None
    id_column: str = "extra_info.index"
    success_threshold: float | None = None
    reward_metric: str | None = None
    exclude_in_flight: bool = True
    in_flight_ttl: int = 16
    min_observe_groups: int | None = None
    # verl pass-throughs
    filter_groups: dict[str, Any] | None = None
    train_batch_size: int | None = None
    gen_batch_size: int | None = None
    sync_refill_failed_groups: bool = False
    poll_interval: float = 2.0

    @classmethod
    def from_kwargs(cls, kwargs: Any) -> RollwiseVerlConfig:
        if kwargs is None:
            kwargs = {}
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(kwargs, DictConfig):
                kwargs = OmegaConf.to_container(kwargs, resolve=True)
        except ImportError:  # pragma: no cover - verl always brings omegaconf
            pass
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"sampler_kwargs must be a mapping, got {type(kwargs).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown rollwise sampler_kwargs {unknown}; valid keys: {sorted(names)}")
        cfg = cls(**dict(kwargs))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is unknown; choose from {sorted(STRATEGIES)}")
        if not isinstance(self.hyper, Mapping):
            raise TypeError(f"hyper must be a mapping of hyper-parameters, got {type(self.hyper).__name__}")
        self.hyper = dict(self.hyper)
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.success_threshold is not None and not math.isfinite(float(self.success_threshold)):
            raise ValueError(f"success_threshold must be finite, got {self.success_threshold}")
        if self.min_observe_groups is not None and int(self.min_observe_groups) < 1:
            raise ValueError(f"min_observe_groups must be >= 1, got {self.min_observe_groups}")
        if int(self.in_flight_ttl) < 1:
            raise ValueError(f"in_flight_ttl must be >= 1, got {self.in_flight_ttl}")
        if self.text_column is not None and self.embedding_column is not None:
            raise ValueError("give text_column or embedding_column, not both")
        if self.filter_groups is not None and not isinstance(self.filter_groups, Mapping):
            raise TypeError("filter_groups must be a mapping like algorithm.filter_groups")

    def dapo_metric(self) -> str | None:
        fg = self.filter_groups or {}
        if not fg.get("enable", False):
            return None
        metric = fg.get("metric")
        if not metric:
            raise ValueError("filter_groups.enable is set but filter_groups.metric is empty")
        return str(metric)


# ---- the shared state of one training run ----------------------------------------------------
class SelectionHub:
    """The selector and its bookkeeping, shared by the dataset (select) and the buffer (observe).

    One hub per trainer process: the replay buffer creates it, the training dataset binds to it.
    All methods take a lock, so a buffer polling in another thread stays consistent.
    """

    def __init__(self, config: RollwiseVerlConfig) -> None:
        self.config = config
        self.pool: PromptPool | None = None
        self.selector: Selector | None = None
        self.harvester: Any = None  # set by the replay buffer: reads finished groups from TQ
        self._lock = threading.RLock()
        self._queue: list[int] = []  # chosen, not yet served
        self._pending: list[tuple[int, np.ndarray]] = []  # observed, not yet applied
        self._in_flight: dict[int, list[tuple[int, float]]] = {}  # pool idx -> [(round, predicted)]
        self._harvested: dict[str, tuple[float, float, bool] | None] = {}  # uid -> batch stats
        self._round = 0
        self.counters = {"selections": 0, "served": 0, "groups": 0, "rollouts": 0,
                         "observe_calls": 0, "empty_groups": 0, "unknown_ids": 0}

    # -- binding -------------------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self.selector is not None

    def bind(self, pool: PromptPool, batch_size: int) -> None:
        with self._lock:
            if self.bound:
                raise RuntimeError("this RollwiseReplayBuffer is already bound to a training dataset")
            b = int(self.config.batch_size or batch_size)
            if b > len(pool):
                raise ValueError(f"batch_size={b} prompts per selection but the dataset has only "
                                 f"{len(pool)} prompts")
            self.selector = make_selector(self.config.strategy, pool, b, seed=int(self.config.seed),
                                          **self.config.hyper)
            self.pool = pool
            log.info("rollwise: %s over %d prompts, %d per selection", self.config.strategy,
                     len(pool), b)

    def _require_bound(self) -> Selector:
        if self.selector is None:
            raise RuntimeError("no training dataset is bound: set data.custom_cls to "
                               "pkg://rollwise.integrations.verl / RollwiseDataset")
        return self.selector

    # -- 1. choose -----------------------------------------------------------------------------
    def take(self, count: int) -> list[int]:
        """Pool indices of the next ``count`` prompts to roll out (served in selection order)."""
        with self._lock:
            sel = self._require_bound()
            enough = int(self.config.min_observe_groups or sel.batch_size)
            due = len(self._queue) < count
            if (due or len(self._pending) >= enough) and self.harvester is not None:
                self.harvester()  # groups that finished meanwhile
            if self._pending and (due or len(self._pending) >= enough):
                self._flush()
                self._queue.clear()  # chosen before these rewards were known
            while len(self._queue) < count:
                self._queue.extend(int(i) for i in self._select(sel))
            out, self._queue = self._queue[:count], self._queue[count:]
            predicted = sel.predict(np.asarray(out, dtype=np.int64))
            for i, p in zip(out, predicted, strict=True):
                self._in_flight.setdefault(i, []).append((self._round, float(p)))
            self.counters["served"] += len(out)
            return out

    def _select(self, sel: Selector) -> np.ndarray:
        self._round += 1
        ttl = int(self.config.in_flight_ttl)
        for i in list(self._in_flight):
            kept = [e for e in self._in_flight[i] if e[0] > self._round - 1 - ttl]
            if kept:
                self._in_flight[i] = kept
            else:
                del self._in_flight[i]
        n, b = len(sel.pool), sel.batch_size
        queued = set(self._queue)
        candidates = None
        for busy in ((queued | set(self._in_flight)) if self.config.exclude_in_flight else queued, queued):
            if not busy:
                break
            free = np.setdiff1d(np.arange(n), np.fromiter(busy, dtype=np.int64))
            if free.size >= b:
                candidates = free
                break
        self.counters["selections"] += 1
        return sel.select(candidates)

    # -- 3. observe ----------------------------------------------------------------------------
    def was_harvested(self, uid: str) -> bool:
        return uid in self._harvested

    def record(self, uid: str, prompt_id: str, rewards: Iterable[float]) -> None:
        """The rewards of one finished group (one per rollout); applied before the next selection."""
        with self._lock:
            sel = self._require_bound()
            if uid in self._harvested:
                return
            rew = np.asarray(list(rewards), dtype=np.float64)
            if rew.ndim != 1 or rew.size == 0:
                raise ValueError(f"group {uid}: expected a non-empty list of rewards, got shape {rew.shape}")
            if not np.all(np.isfinite(rew)):
                raise ValueError(f"group {uid} (prompt {prompt_id!r}): rewards contain NaN or inf")
            thr = self.config.success_threshold
            if thr is not None:
                rew = (rew >= float(thr)).astype(np.float64)
            elif rew.min() < 0.0 or rew.max() > 1.0:
                raise ValueError(
                    f"group {uid} (prompt {prompt_id!r}): rewards {rew.tolist()} lie outside [0, 1]; "
                    "set +trainer.v1.sampler.sampler_kwargs.success_threshold=<value> (or reward_metric)"
                )
            try:
                idx = sel.pool.index_of(str(prompt_id))
            except KeyError:
                self.counters["unknown_ids"] += 1
                log.warning("rollwise: prompt id %r is not in the pool; its rewards are ignored", prompt_id)
                self._harvested[uid] = None
                return
            entries = self._in_flight.get(idx)
            predicted = float("nan")
            if entries:
                predicted = entries.pop(0)[1]
                if not entries:
                    del self._in_flight[idx]
            rate = float(rew.mean())
            self._harvested[uid] = (predicted, rate, bool(0.0 < rate < 1.0))
            self._pending.append((idx, rew))
            self.counters["groups"] += 1
            self.counters["rollouts"] += int(rew.size)

    def record_empty(self, uid: str) -> None:
        """A terminal group without a single trajectory: nothing to observe."""
        with self._lock:
            if uid not in self._harvested:
                self._harvested[uid] = None
                self.counters["empty_groups"] += 1

    def forget(self, uids: Iterable[str]) -> list[tuple[float, float, bool]]:
        """The groups left TransferQueue; returns the stats of those that were observed."""
        with self._lock:
            stats = [self._harvested.pop(u, None) for u in uids]
            return [s for s in stats if s is not None]

    def _flush(self) -> None:
        sel = self._require_bound()
        pending, self._pending = self._pending, []
        for idx, rew in observation_batches(pending):
            sel.observe(idx, rew)
            self.counters["observe_calls"] += 1

    # -- metrics -------------------------------------------------------------------------------
    def metrics(self, batch: list[tuple[float, float, bool]]) -> dict[str, float]:
        with self._lock:
            out = {
                "rollwise/observed_groups": float(self.counters["groups"]),
                "rollwise/observed_rollouts": float(self.counters["rollouts"]),
                "rollwise/selections": float(self.counters["selections"]),
            }
            if batch:
                pred = np.array([b[0] for b in batch])
                rate = np.array([b[1] for b in batch])
                out["rollwise/batch_success_rate"] = float(rate.mean())
                out["rollwise/batch_effective_ratio"] = float(np.mean([b[2] for b in batch]))
                known = np.isfinite(pred)
                if known.any():
                    out["rollwise/batch_predicted_rate"] = float(pred[known].mean())
                    rho = spearman(pred[known], rate[known])
                    if rho == rho:
                        out["rollwise/batch_spearman"] = rho
            return out

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            sel = self._require_bound()
            return {
                "version": STATE_VERSION,
                "strategy": self.config.strategy,
                "pool_fingerprint": sel.pool.fingerprint(),
                "selector": sel.state_dict(),
                "queue": list(self._queue),
                "pending": [(int(i), r.tolist()) for i, r in self._pending],
                "in_flight": {int(i): [list(e) for e in v] for i, v in self._in_flight.items()},
                "harvested": {u: (list(s) if s is not None else None) for u, s in self._harvested.items()},
                "round": self._round,
                "counters": dict(self.counters),
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint; observations recorded in this process since start are kept."""
        with self._lock:
            sel = self._require_bound()
            if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
                raise ValueError("not a rollwise verl checkpoint state (missing or unknown version)")
            if state.get("pool_fingerprint") != sel.pool.fingerprint():
                raise ValueError("the checkpoint's selector was built over a different prompt pool "
                                 "(dataset rows, prompt ids or embedder changed)")
            keys = {"selector", "queue", "pending", "in_flight", "harvested", "round", "counters"}
            missing = keys - set(state)
            if missing:
                raise ValueError(f"rollwise checkpoint state is missing {sorted(missing)}")
            n = len(sel.pool)
            queue = [int(i) for i in state["queue"]]
            pending = [(int(i), np.asarray(r, dtype=np.float64)) for i, r in state["pending"]]
            if any(not 0 <= i < n for i in queue) or any(not 0 <= i < n for i, _ in pending):
                raise ValueError("checkpoint state names prompts outside the pool")
            sel.load_state_dict(dict(state["selector"]))  # checks everything before changing anything
            self._queue = queue
            self._pending = pending + self._pending
            in_flight = {int(i): [(int(e[0]), float(e[1])) for e in v] for i, v in state["in_flight"].items()}
            for i, v in self._in_flight.items():
                in_flight.setdefault(i, []).extend(v)
            self._in_flight = in_flight
            harvested = {u: (tuple(s) if s is not None else None) for u, s in state["harvested"].items()}
            harvested.update(self._harvested)
            self._harvested = harvested
            self._round = int(state["round"])
            self.counters.update({k: int(v) for k, v in state["counters"].items() if k in self.counters})


def observation_batches(pending: list[tuple[int, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split ``(pool index, rewards)`` pairs into ``observe`` calls: equal k, distinct indices.

    The split depends on the pairs only, not on the order TransferQueue returned them in (uids
    are random): calls go by decreasing k, a prompt seen again within one k starts another call,
    and every call lists its prompts by pool index. So a resumed run observes bit for bit alike.
    """
    by_k: dict[int, list[tuple[set[int], list[tuple[int, np.ndarray]]]]] = {}
    for idx, rew in sorted(pending, key=lambda p: (p[0], p[1].size, p[1].tolist())):
        rounds = by_k.setdefault(int(rew.size), [])
        for seen, items in rounds:
            if idx not in seen:
                seen.add(idx)
                items.append((idx, rew))
                break
        else:
            rounds.append(({idx}, [(idx, rew)]))
    calls = []
    for k in sorted(by_k, reverse=True):
        for _, items in by_k[k]:
            calls.append((np.array([i for i, _ in items], dtype=np.int64), np.stack([r for _, r in items])))
    return calls


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

    def build_pool(self, cfg: RollwiseVerlConfig) -> PromptPool:
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
        return [self[i] for i in self._hub.take(len(indices))]

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
        cfg = RollwiseVerlConfig.from_kwargs(sampler_kwargs)
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
        _set_current_hub(self.hub)

    # -- verl's hooks --------------------------------------------------------------------------
    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        self._batch_stats = []
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id == TRAIN and self.hub.bound:
            metrics.update(self.hub.metrics(self._batch_stats))
        return batch, metrics

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


__all__ = ["ID_FIELD", "RollwiseVerlConfig", "SelectionHub", "RollwiseDataset", "RollwiseReplayBuffer",
           "RollwiseReplayBufferAsync", "observation_batches", "current_hub"]
