"""The selector protocol shared by every strategy: select, observe, predict, state_dict, save.

A subclass implements ``_select``, ``_observe``, ``_predict`` and its own model state; the base
class does all argument checking (before any state changes), RNG bookkeeping and persistence.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from rollwise._io import atomic_write
from rollwise.pool import PromptPool
from rollwise.threads import DEFAULT_SELECTOR_THREADS, check_threads, limited_threads
from rollwise.validation import check_int

STATE_VERSION = 1
# the public calls that read or change a selector's state: one thread at a time per selector
SERIALISED = ("select", "informative_chance", "observe", "predict", "predictive",
              "set_embeddings", "state_dict", "load_state_dict", "save")
_LOCK_CREATION = threading.Lock()


def _serialised(method: Any) -> Any:
    """``method`` under the selector's own re-entrant lock, so that calls from several threads
    take turns instead of corrupting the model (a GPS selector observed from 4 threads at once
    crashed or failed most calls)."""

    @functools.wraps(method)
    def call(self: Selector, *args: Any, **kwargs: Any) -> Any:
        lock = self.__dict__.get("_lock")
        if lock is None:
            with _LOCK_CREATION:
                lock = self.__dict__.setdefault("_lock", threading.RLock())
        with lock:
            return method(self, *args, **kwargs)

    call.serialised = True
    return call


def _tensorise(obj: Any) -> Any:
    """Turn numpy arrays into tensors (recursively) so ``torch.load(weights_only=True)`` works."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _tensorise(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_tensorise(v) for v in obj)
    return obj


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=dtype, copy=True)


class Selector(ABC):
    """Chooses which prompts get rollouts next, learns from their rewards.

    ``select`` returns ``batch_size`` distinct pool indices; ``observe(indices, rewards)`` takes a
    ``(B, k)`` reward array in [0, 1], or one reward sequence per prompt where groups differ in
    size (per-prompt rollout budgets); ``predict`` gives current success-rate estimates for any
    prompt. Every call validates its arguments first and changes no state when it raises.
    Selectors are safe to share between threads: the calls of :data:`SERIALISED` take a lock of
    the selector's own (re-entrant), so they run one at a time per selector (an override in a
    subclass is wrapped too).

    ``threads`` bounds the torch and BLAS threads of the selector's own calls (set around each
    call, the caller's settings restored after; None leaves them alone): see
    :mod:`rollwise.threads`. It is a setting of the machine, not of the model: not saved.
    """

    name: ClassVar[str] = "base"
    #: whether the selector walks an order of its own when given no candidates (uniform's and
    #: GRESO's epochs): dynamic sampling then asks it without candidates every round, so that
    #: its stream is the one it would walk without the filter (repeats within a step replaced)
    walks_order: ClassVar[bool] = False
    #: the round sizing its method prescribes under dynamic sampling
    #: (:data:`rollwise.dynamic_sampling.SIZINGS`); None: the sampler's default
    dynamic_sizing: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in SERIALISED:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "serialised", False):
                setattr(cls, name, _serialised(method))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)  # a lock is not copied or pickled: the copy makes its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __init__(self, pool: PromptPool, batch_size: int, seed: int = 0,
                 threads: int | None = DEFAULT_SELECTOR_THREADS) -> None:
        if not isinstance(pool, PromptPool):
            raise TypeError(f"pool must be a PromptPool, got {type(pool).__name__}")
        check_int("batch_size", batch_size, 1)
        if batch_size > len(pool):
            raise ValueError(f"batch_size={batch_size} is larger than the pool ({len(pool)} prompts)")
        check_int("seed", seed, 0, 2**63 - 1)  # what numpy's generators and torch.manual_seed take
        self._threads = check_threads(threads)
        self.pool = pool
        self.batch_size = int(batch_size)
        # the registry name it was built under (``make_selector`` sets it, e.g. "gps-paper"); saved
        # with the state so that ``load_selector`` rebuilds the same strategy
        self.strategy: str = self.name
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.step = 0  # number of observe calls so far

    @property
    def threads(self) -> int | None:
        """torch/BLAS threads of the selector's own calls (None: the process's settings)."""
        return self._threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        self._threads = check_threads(value)

    # ---- public protocol -------------------------------------------------------------------
    def select(self, candidates: np.ndarray | None = None, size: int | None = None,
               group_size: int | None = None) -> np.ndarray:
        """Return distinct pool indices (int64) for the next step.

        Args:
            candidates: pool indices to choose among (default: the whole pool).
            size: how many prompts (default ``batch_size``); a dynamic-sampling round asks for
                as many as it needs (:class:`rollwise.dynamic_sampling.DynamicSampler`).
            group_size: value prompts by the chance that a group of this many rollouts comes
                back informative (rewards not all equal), as dynamic sampling keeps only those,
                rather than by closeness to the selector's target; selectors without a model of
                each prompt ignore it.
        """
        n = self.batch_size if size is None else size
        check_int("size", n, 1)
        if group_size is not None:
            check_int("group_size", group_size, 1)
        cand = self._check_candidates(candidates, n)
        with limited_threads(self.threads):
            return np.asarray(self._select(cand, int(n), group_size), dtype=np.int64)

    def informative_chance(self, indices: Any, group_size: int) -> np.ndarray:
        """Each prompt's predicted probability that a group of ``group_size`` rollouts comes back
        informative, ``E[1 - p^k - (1 - p)^k]`` over the prompt's predictive distribution
        (:meth:`predictive`): what dynamic sampling sizes its rounds by. Only selectors with a
        model of each prompt's rate have one."""
        from rollwise.dynamic_sampling import informative_probability

        check_int("group_size", group_size, 1)
        mean, concentration, contamination = self.predictive(indices)
        return informative_probability(mean, group_size, concentration, contamination)

    def observe(self, indices: Any, rewards: Any) -> None:
        """Record rewards: ``rewards[i]`` holds the rollout rewards of prompt ``indices[i]`` (a
        ``(B, k)`` array, or B sequences of unequal length: groups of unequal size)."""
        idx, successes, counts = self._check_observation(indices, rewards)
        with limited_threads(self.threads):
            self._observe(idx, successes, counts)
        self.step += 1

    def predict(self, indices: Any = None) -> np.ndarray:
        """Predicted current success rate in [0, 1] per prompt (all prompts by default).

        A pure function of the selector's state: it never advances the selection RNG.
        """
        idx = self._check_indices(indices, "indices", allow_repeats=True)
        with limited_threads(self.threads):
            return np.clip(np.asarray(self._predict(idx), dtype=np.float64), 0.0, 1.0)

    def predictive(self, indices: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """Each prompt's predictive distribution of its current success rate, as ``(mean,
        concentration, contamination)`` of a Beta (what :class:`rollwise.budgets.PromptBudgets`
        splits rollouts by). Only selectors with a model of each prompt's rate have one."""
        raise TypeError(f"the {self.strategy!r} selector has no per-prompt predictive "
                        "distribution; per-prompt budgets need gps or mopps predictions")

    def set_embeddings(self, embeddings: Any, embedder: str | None = None) -> None:
        """Replace the pool's embeddings (same prompts, same shape), e.g. re-embedded from the
        current policy: what the selector learned is kept and reads the new embeddings from now
        on. A bad array is refused and leaves the selector as it was."""
        pool = self.pool.with_embeddings(as_numpy(embeddings), embedder=embedder)
        self.pool = pool
        self._embeddings_changed()

    def _embeddings_changed(self) -> None:
        """Rebuild whatever the selector derived from the pool's embeddings (none by default)."""
        return None

    def hyper_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments, enough to rebuild an identical selector."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy,
            "pool_fingerprint": self.pool.fingerprint(),
            "pool_size": len(self.pool),
            "embedder": self.pool.embedder or "",
            "batch_size": self.batch_size,
            "seed": self.seed,
            "hyper": json.dumps(self.hyper_params()),
            "rng": json.dumps(self.rng.bit_generator.state),
            "step": self.step,
            # a snapshot: later observations must not change a state taken earlier
            "model": copy.deepcopy(self._model_state()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state; checks everything first, so a bad state leaves the selector as it was."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = {"version", "strategy", "pool_fingerprint", "rng", "step", "model"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        if state["version"] != STATE_VERSION:
            raise ValueError(f"state version {state['version']} is not supported")
        if state["strategy"] != self.strategy:
            raise ValueError(f"state is for strategy {state['strategy']!r}, not {self.strategy!r}")
        if state["pool_fingerprint"] != self.pool.fingerprint():
            raise ValueError("state was saved against a different prompt pool (fingerprint differs)")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = json.loads(state["rng"])
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"state['rng'] is not a valid generator state: {err}") from err
        step = state["step"]
        check_int("state['step']", step, 0)
        model = state["model"]
        if not isinstance(model, dict):
            raise ValueError(f"state['model'] must be a dict, got {type(model).__name__}")
        try:  # validates, returns a commit closure
            with limited_threads(self.threads):
                apply = self._prepare_model_state(model)
        except (KeyError, TypeError) as err:
            raise ValueError(f"state['model'] is malformed: {err!r}") from err
        apply()
        self.rng = rng
        self.step = int(step)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state atomically (temp file + rename): an interrupted save loses nothing."""
        payload = _tensorise(self.state_dict())
        atomic_write(path, lambda tmp: torch.save(payload, tmp))

    # ---- to implement ----------------------------------------------------------------------
    @abstractmethod
    def _select(self, candidates: np.ndarray | None, size: int,
                group_size: int | None) -> np.ndarray:
        """``size`` distinct indices among ``candidates`` (None: the pool); ``group_size`` as
        in :meth:`select`."""

    @abstractmethod
    def _observe(self, indices: np.ndarray, successes: np.ndarray, counts: np.ndarray) -> None:
        """``successes[i]``: the sum of prompt ``indices[i]``'s rewards over its ``counts[i]``
        rollouts (both float64)."""

    @abstractmethod
    def _predict(self, indices: np.ndarray | None) -> np.ndarray: ...

    def _model_state(self) -> dict[str, Any]:
        return {}

    def _prepare_model_state(self, model: dict[str, Any]) -> Any:
        """Validate ``model`` and return a no-argument function that installs it."""
        return lambda: None

    # ---- validation ------------------------------------------------------------------------
    def _check_indices(self, indices: Any, arg: str, allow_repeats: bool) -> np.ndarray | None:
        if indices is None:
            return None
        arr = _as_array(indices, arg)
        if arr.ndim != 1:
            raise ValueError(f"{arg} must be 1-D, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{arg} must hold integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        n = len(self.pool)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{arg} out of range: pool indices run from 0 to {n - 1}")
        if not allow_repeats and np.unique(arr).size != arr.size:
            raise ValueError(f"{arg} contains repeated indices")
        return arr

    def _check_candidates(self, candidates: Any, size: int | None = None) -> np.ndarray | None:
        n = self.batch_size if size is None else size
        what = "batch_size" if size is None or size == self.batch_size else "size"
        cand = self._check_indices(candidates, "candidates", allow_repeats=False)
        if cand is not None and cand.size < n:
            raise ValueError(f"{what}={n} is larger than the {cand.size} candidates given")
        if cand is None and n > len(self.pool):
            raise ValueError(f"{what}={n} is larger than the pool ({len(self.pool)} prompts)")
        return cand

    def _check_observation(self, indices: Any, rewards: Any
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self._check_indices(indices, "indices", allow_repeats=False)
        if idx is None or idx.size == 0:
            raise ValueError("indices must name at least one prompt")
        groups = _reward_groups(rewards)
        if len(groups) != idx.size:
            raise ValueError(f"rewards must hold one group per index: {idx.size} indices, "
                             f"{len(groups)} groups")
        for rew in groups:
            if rew.size and not np.issubdtype(rew.dtype, np.number) and rew.dtype != bool:
                raise TypeError(f"rewards must be numeric, got dtype {rew.dtype}")
        groups = [rew.astype(np.float64) for rew in groups]
        if any(rew.ndim != 1 or rew.size < 1 for rew in groups):
            raise ValueError("rewards must have shape (len(indices), k) with k >= 1, or hold one "
                             "1-D group of at least one reward per index")
        flat = np.concatenate(groups)
        if not np.all(np.isfinite(flat)):
            raise ValueError("rewards contain NaN or inf")
        if flat.min() < 0.0 or flat.max() > 1.0:
            raise ValueError("rewards must lie in [0, 1]")
        successes = np.array([rew.sum() for rew in groups], dtype=np.float64)
        counts = np.array([rew.size for rew in groups], dtype=np.float64)
        return idx, successes, counts


def _reward_groups(rewards: Any) -> list[np.ndarray]:
    """The rewards as one array per prompt: the rows of a 2-D array, or the items of a sequence
    of groups of unequal size."""
    try:
        arr = np.asarray(rewards)
    except (ValueError, TypeError):  # ragged nested lists
        arr = None
    if arr is not None and arr.dtype != object:
        if arr.ndim != 2:
            raise ValueError(f"rewards must have shape (len(indices), k), got {arr.shape}")
        return list(arr)
    if isinstance(rewards, np.ndarray | list | tuple):
        return [_as_array(rew, "rewards") for rew in rewards]
    raise ValueError("rewards must be a rectangular array or a sequence of reward groups")


def _as_array(x: Any, arg: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists and the like
        raise ValueError(f"{arg} must be a rectangular array: {err}") from err


def check_prepared(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"state['model']: {message}")


for _name in SERIALISED:  # the base class's own public calls
    setattr(Selector, _name, _serialised(getattr(Selector, _name)))
