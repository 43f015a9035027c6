"""The selection hub: a selector fed by groups that finish in any order, framework-free.

A distributed trainer chooses prompts in one place and learns their rewards later, group by group,
in whatever order its workers finish them (refills, evicted groups, async steps). The hub keeps the
selector's side of that consistent: a queue of chosen prompts served in order, observations
queued until the next selection and applied in a canonical order (:func:`observation_batches`),
prompts in flight kept out of the candidates, per-batch metrics, and a checkpoint state that
makes a resumed run choose the same prompts. :mod:`rollwise.integrations.verl` drives it from
verl's dataset and replay buffer; nothing here imports a training framework.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from rollwise.budgets import OBJECTIVES, PromptBudgets
from rollwise.dynamic_sampling import has_predictive, prompts_to_fill
from rollwise.metrics import spearman
from rollwise.pool import PromptPool
from rollwise.selectors import STRATEGIES, Selector, make_selector

log = logging.getLogger(__name__)

STATE_VERSION = 1
DS_SIZINGS = ("verl", "predicted")  # who sizes DAPO's refills: verl's counts, or the predictions


# ---- configuration ---------------------------------------------------------------------------
@dataclass
class HubConfig:
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
    queued), ``budget_objective`` (per-prompt rollout budgets, :mod:`rollwise.budgets`: each
    selection's ``batch_size x rollout_n`` rollouts split among its prompts by the selector's
    predictions; none: every prompt gets ``rollout_n``), ``budget_k_min`` and ``budget_k_max``;
    under DAPO (``filter_groups``), ``ds_sizing`` (``"predicted"``: each refill rolls out just
    enough prompts that the batch fills with probability ``ds_fill_confidence`` given the
    predicted chances of an informative group, and selections value prompts by that chance;
    ``"verl"``: verl's own refill counts; default ``"predicted"`` where the strategy predicts
    each prompt and ``rollout_n`` is given, else ``"verl"``) and ``ds_fill_confidence``.

    verl (a custom sampler receives none of these from verl; pass them by interpolation, e.g.
    ``'${algorithm.filter_groups}'``): ``filter_groups`` (DAPO), ``train_batch_size``,
    ``gen_batch_size``, ``sync_refill_failed_groups``, ``poll_interval``, ``rollout_n``
    (``actor_rollout_ref.rollout.n``; needed for budgets).
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
    budget_objective: str | None = None
    budget_k_min: int = 2
    budget_k_max: int | None = None
    ds_sizing: str | None = None
    ds_fill_confidence: float = 0.9
    # verl pass-throughs
    filter_groups: dict[str, Any] | None = None
    train_batch_size: int | None = None
    gen_batch_size: int | None = None
    sync_refill_failed_groups: bool = False
    poll_interval: float = 2.0
    rollout_n: int | None = None

    @classmethod
    def from_kwargs(cls, kwargs: Any) -> HubConfig:
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
        if self.budget_objective is not None:
            if self.budget_objective not in OBJECTIVES:
                raise ValueError(f"budget_objective must be one of {list(OBJECTIVES)}, got "
                                 f"{self.budget_objective!r}")
            if self.rollout_n is None or int(self.rollout_n) < 1:
                raise ValueError("budget_objective needs rollout_n (pass "
                                 "'${actor_rollout_ref.rollout.n}'), got "
                                 f"{self.rollout_n!r}")
            self.budget(1).bounds(1)  # rollout_n per prompt on average fits the bounds
        if self.ds_sizing not in (None, *DS_SIZINGS):
            raise ValueError(f"ds_sizing must be one of {list(DS_SIZINGS)}, got {self.ds_sizing!r}")
        if not 0.0 < float(self.ds_fill_confidence) < 1.0:
            raise ValueError(f"ds_fill_confidence must lie in (0, 1), got {self.ds_fill_confidence}")
        if self.ds_sizing == "predicted":
            if self.filter_groups is None or not self.filter_groups.get("enable", False):
                raise ValueError("ds_sizing='predicted' sizes DAPO's refills: it needs "
                                 "filter_groups='${algorithm.filter_groups}' with enable=True")
            if self.rollout_n is None or int(self.rollout_n) < 1:
                raise ValueError("ds_sizing='predicted' needs rollout_n (pass "
                                 "'${actor_rollout_ref.rollout.n}'), got "
                                 f"{self.rollout_n!r}")

    def budget(self, batch_size: int) -> PromptBudgets | None:
        """The per-selection rollout budget (None: every prompt gets ``rollout_n``)."""
        if self.budget_objective is None:
            return None
        return PromptBudgets(batch_size * int(self.rollout_n), k_min=int(self.budget_k_min),
                             k_max=self.budget_k_max, objective=self.budget_objective)

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

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.pool: PromptPool | None = None
        self.selector: Selector | None = None
        self.harvester: Any = None  # set by the replay buffer: reads finished groups from TQ
        self._lock = threading.RLock()
        self._queue: list[int] = []  # chosen, not yet served
        self._queue_n: list[int | None] = []  # their rollouts (per-prompt budgets; None: rollout.n)
        self.budget: PromptBudgets | None = None
        self._pending: list[tuple[int, np.ndarray]] = []  # observed, not yet applied
        self._in_flight: dict[int, list[tuple[int, float]]] = {}  # pool idx -> [(round, predicted)]
        self._harvested: dict[str, tuple[float, float, bool] | None] = {}  # uid -> batch stats
        self._round = 0
        self._served: list[int] = []  # the latest prompts served, newest last (refill sizing)
        self.group_size: int | None = None  # DAPO with predicted sizing: rollouts per group
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
            selector = make_selector(self.config.strategy, pool, b, seed=int(self.config.seed),
                                     **self.config.hyper)
            budget = self.config.budget(b)
            if budget is not None:
                try:
                    budget.bounds(b)  # the budget fits the batch
                    selector.predictive(np.arange(min(b, len(pool))))  # it has predictions
                except (TypeError, ValueError) as err:
                    raise ValueError(f"budget_objective: {err}") from err
            cfg = self.config
            sizing = cfg.ds_sizing
            if cfg.dapo_metric() is not None and sizing != "verl":
                predicts = has_predictive(selector)
                if sizing == "predicted" and not predicts:
                    raise ValueError(f"ds_sizing='predicted' needs a strategy that predicts each "
                                     f"prompt (gps, mopps); {cfg.strategy!r} does not: use 'verl'")
                if predicts and cfg.rollout_n is not None:
                    self.group_size = int(cfg.rollout_n)
                elif predicts:
                    log.info("rollwise: DAPO refills keep verl's sizes; pass sampler_kwargs."
                             "rollout_n='${actor_rollout_ref.rollout.n}' to size them from the "
                             "predictions")
            self.selector, self.budget, self.pool = selector, budget, pool
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
        return [i for i, _ in self.take_with_rollouts(count)]

    def take_with_rollouts(self, count: int) -> list[tuple[int, int | None]]:
        """The next ``count`` prompts to roll out, each with its rollouts (None: the trainer's
        own n; set by per-prompt budgets when the selection was made)."""
        with self._lock:
            sel = self._require_bound()
            enough = int(self.config.min_observe_groups or sel.batch_size)
            due = len(self._queue) < count
            if (due or len(self._pending) >= enough) and self.harvester is not None:
                self.harvester()  # groups that finished meanwhile
            if self._pending and (due or len(self._pending) >= enough):
                self._flush()
                self._queue.clear()  # chosen before these rewards were known
                self._queue_n.clear()
            while len(self._queue) < count:
                chosen = self._select(sel)
                self._queue.extend(int(i) for i in chosen)
                if self.budget is None:
                    self._queue_n.extend([None] * len(chosen))
                else:
                    self._queue_n.extend(int(k) for k in self.budget.split(*sel.predictive(chosen)))
            out, self._queue = self._queue[:count], self._queue[count:]
            sizes, self._queue_n = self._queue_n[:count], self._queue_n[count:]
            predicted = sel.predict(np.asarray(out, dtype=np.int64))
            for i, p in zip(out, predicted, strict=True):
                self._in_flight.setdefault(i, []).append((self._round, float(p)))
            self._served = (self._served + out)[-4 * sel.batch_size:]
            self.counters["served"] += len(out)
            return list(zip(out, sizes, strict=True))

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
        return sel.select(candidates, group_size=self.group_size)

    def refill_size(self, asked: int, missing: int, in_flight: int, slots: int) -> int:
        """How many prompts a DAPO refill rolls out (``ds_sizing="predicted"``).

        The fewest whose predicted chances of an informative group, with those of the
        ``in_flight`` prompts (the latest served), give the ``missing`` groups with probability
        ``ds_fill_confidence``: the prompts the queue serves next, then the best of the rest.
        Never fewer than ``missing - in_flight`` (or ``asked`` if that is less), so that if
        every group in flight comes back informative the batch still fills, and never more
        than ``slots`` (verl's cap on prompts in flight) unless that floor needs them.

        Args:
            asked: the count verl's own rule would refill (twice the evicted groups).
            missing: informative groups the batch still lacks.
            in_flight: prompts dispatched whose groups have not finished.
            slots: prompts verl would still let into flight.
        """
        with self._lock:
            sel = self._require_bound()
            floor = min(int(asked), max(0, int(missing) - int(in_flight)))
            k = self.group_size
            if k is None or missing <= 0:
                return max(floor, 0)
            flying = np.asarray(self._served[len(self._served) - int(in_flight):] if in_flight
                                else [], dtype=np.int64)
            queued = np.asarray(self._queue, dtype=np.int64)
            busy = np.union1d(np.union1d(flying, queued), np.fromiter(self._in_flight, np.int64))
            rest = np.setdiff1d(np.arange(len(sel.pool)), busy)
            best = np.sort(sel.informative_chance(rest, k))[::-1] if rest.size else np.empty(0)
            ahead = np.concatenate([sel.informative_chance(queued, k) if queued.size
                                    else np.empty(0), best])
            chances = np.concatenate([sel.informative_chance(flying, k) if flying.size
                                      else np.empty(0), ahead])
            need = prompts_to_fill(chances, int(missing), float(self.config.ds_fill_confidence))
            size = int(slots) if need is None else need - flying.size
            return int(max(floor, min(size, int(slots))))

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
                "queue_n": list(self._queue_n),
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
            queue_n = [None if k is None else int(k)
                        for k in state.get("queue_n", [None] * len(queue))]
            if len(queue_n) != len(queue) or any(k is not None and k < 1 for k in queue_n):
                raise ValueError("checkpoint state: queue_n must give each queued prompt's rollouts")
            sel.load_state_dict(dict(state["selector"]))  # checks everything before changing anything
            self._queue, self._queue_n = queue, queue_n
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


def observation_batches(pending: list[tuple[int, np.ndarray]]) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Split ``(pool index, rewards)`` pairs into ``observe`` calls with distinct indices.

    Groups of any size share a call (a failed group with 3 of 4 rollouts, per-prompt budgets); a
    prompt seen again starts another call. The split depends on the pairs only, not on the order
    TransferQueue returned them in (uids are random): every call lists its prompts by pool index,
    a prompt's groups go to calls in order of (size, rewards). So a resumed run observes bit for
    bit alike.
    """
    rounds: list[tuple[set[int], list[tuple[int, np.ndarray]]]] = []
    for idx, rew in sorted(pending, key=lambda p: (p[0], p[1].size, p[1].tolist())):
        for seen, items in rounds:
            if idx not in seen:
                seen.add(idx)
                items.append((idx, rew))
                break
        else:
            rounds.append(({idx}, [(idx, rew)]))
    return [(np.array([i for i, _ in items], dtype=np.int64), [r for _, r in items])
            for _, items in rounds]
