"""Hard-prompt mining: which prompts the policy keeps failing, so a rescue template can be tried.

A prompt is *hard* when its last ``window`` observed groups all failed (every reward below
``success_threshold``), or, before it has been rolled out, when a selector predicts a success
rate below ``predicted_threshold``. A hard prompt that the policy later solves on its own
(a group with a success, rollouts on the bare prompt) is *rescued*.

The bank only remembers what matters: prompts on a failure streak and hard prompts. A success
ends a streak and drops the prompt, so memory stays bounded by ``capacity`` even over a huge
pool; when the bank is full, the oldest-added entry is evicted (hard or not) to admit a new one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rollwise._io import atomic_write_json
from rollwise.validation import check_int, check_number

STATE_VERSION = 1
SOURCES = ("observed", "predicted")


@dataclass
class _Entry:
    rates: list[float] = field(default_factory=list)  # last `window` group success rates, oldest first
    source: str | None = None  # why it is hard: "observed", "predicted" or None (not hard yet)
    predicted: float | None = None  # the selector's rate when mined by prediction


def _check_unit(name: str, value: Any) -> float:
    check_number(name, value, 0.0, 1.0)
    return float(value)


def _check_ids(ids: Any, n: int | None = None) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence | np.ndarray):
        raise TypeError(f"ids must be a sequence of strings, got {type(ids).__name__}")
    out = list(ids)
    bad = [i for i in out if not isinstance(i, str) or not i]
    if bad:
        raise TypeError(f"ids must be non-empty strings, got {bad[0]!r}")
    if len(set(out)) != len(out):
        raise ValueError("ids must be distinct within one call")
    if n is not None and len(out) != n:
        raise ValueError(f"ids has {len(out)} entries for {n} rows")
    return out


class HardPromptBank:
    """Tracks failure streaks per prompt id and the hard prompts they reveal.

    ``observe`` takes the policy's rollouts on the *bare* prompt; rollouts made under a rescue
    template must not be fed here, or a template's success would count as the policy's own.
    Every call validates its arguments first and changes no state when it raises.
    """

    def __init__(self, capacity: int = 10_000, window: int = 2, success_threshold: float = 0.5,
                 predicted_threshold: float = 0.05) -> None:
        self.capacity = int(check_int("capacity", capacity, 1))
        self.window = int(check_int("window", window, 1))
        self.success_threshold = _check_unit("success_threshold", success_threshold)
        self.predicted_threshold = _check_unit("predicted_threshold", predicted_threshold)
        if self.success_threshold == 0.0:
            raise ValueError("success_threshold must be > 0: with 0 every reward is a success")
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._rescued: OrderedDict[str, None] = OrderedDict()  # insertion order = rescue order
        self.evicted = 0  # entries dropped because the bank was full

    # ---- mining ----------------------------------------------------------------------------
    def observe(self, ids: Sequence[str], rewards: Any) -> None:
        """Record one group of rollouts per prompt: ``rewards[i]`` holds the k rewards of ``ids[i]``."""
        rew = self._check_rewards(rewards)
        ids = _check_ids(ids, rew.shape[0])
        rates = (rew >= self.success_threshold).mean(axis=1)
        for pid, rate in zip(ids, rates, strict=True):
            entry = self._entries.get(pid)
            if rate > 0:  # solved on its own: the streak ends
                if entry is not None:
                    if entry.source == "observed":
                        self._rescued.pop(pid, None)
                        self._rescued[pid] = None
                        while len(self._rescued) > self.capacity:
                            self._rescued.popitem(last=False)
                    del self._entries[pid]
                continue
            if entry is None:
                entry = self._admit(pid)
            entry.rates = (entry.rates + [float(rate)])[-self.window:]
            if len(entry.rates) >= self.window:
                entry.source, entry.predicted = "observed", None

    def mine_predicted(self, selector: Any, indices: Any, ids: Sequence[str]) -> list[str]:
        """Mark as hard the prompts ``selector.predict(indices)`` rates below ``predicted_threshold``.

        Only prompts without observed groups in the bank are marked: observations outrank a
        prediction. ``ids[i]`` is the stable id of pool index ``indices[i]``. Returns the ids
        newly marked hard.
        """
        if not callable(getattr(selector, "predict", None)):
            raise TypeError(f"selector must have a predict(indices) method, got {type(selector).__name__}")
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {idx.shape}")
        ids = _check_ids(ids, len(idx))
        pred = np.asarray(selector.predict(idx), dtype=np.float64)
        if pred.shape != (len(ids),) or not np.all(np.isfinite(pred)):
            raise ValueError(f"selector.predict returned shape {pred.shape} or non-finite values "
                             f"for {len(ids)} indices")
        new = []
        for pid, p in zip(ids, pred, strict=True):
            if p >= self.predicted_threshold:
                continue
            entry = self._entries.get(pid)
            if entry is not None and (entry.rates or entry.source is not None):
                continue
            entry = self._admit(pid)
            entry.source, entry.predicted = "predicted", float(p)
            new.append(pid)
        return new

    def mark_rescued(self, pid: str) -> None:
        """Record that the hard prompt ``pid`` was solved without a template (e.g. checked apart)."""
        if not isinstance(pid, str):
            raise TypeError(f"pid must be a string, got {type(pid).__name__}")
        entry = self._entries.get(pid)
        if entry is None or entry.source is None:
            raise ValueError(f"prompt {pid!r} is not hard: only a hard prompt can be rescued")
        del self._entries[pid]
        self._rescued.pop(pid, None)
        self._rescued[pid] = None
        while len(self._rescued) > self.capacity:
            self._rescued.popitem(last=False)

    # ---- queries ---------------------------------------------------------------------------
    def hard_ids(self, source: str | None = None) -> list[str]:
        """Hard prompt ids, oldest-added first; ``source`` keeps only "observed" or "predicted"."""
        if source is not None and source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES} or None, got {source!r}")
        return [pid for pid, e in self._entries.items()
                if e.source is not None and (source is None or e.source == source)]

    def is_hard(self, pid: str) -> bool:
        entry = self._entries.get(pid)
        return entry is not None and entry.source is not None

    def history(self, pid: str) -> list[float]:
        """The success rates of the prompt's last groups (oldest first); [] when not tracked."""
        entry = self._entries.get(pid)
        return list(entry.rates) if entry is not None else []

    @property
    def rescued(self) -> list[str]:
        """Ids of prompts that were hard and later solved without a template, in rescue order."""
        return list(self._rescued)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pid: object) -> bool:
        return pid in self._entries

    # ---- state -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "window": self.window,
                "success_threshold": self.success_threshold,
                "predicted_threshold": self.predicted_threshold}

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (later calls do not change it)."""
        return {"version": STATE_VERSION, "config": self.config(), "evicted": self.evicted,
                "entries": [{"id": pid, **asdict(e)} for pid, e in self._entries.items()],
                "rescued": list(self._rescued)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot; checks it whole first, so a bad state leaves the bank as it was."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = {"version", "config", "evicted", "entries", "rescued"} - set(state)
        if missing:
            raise ValueError(f"state lacks {sorted(missing)}")
        if state["version"] != STATE_VERSION:
            raise ValueError(f"state version {state['version']!r} is not {STATE_VERSION}")
        if state["config"] != self.config():
            raise ValueError(f"state was saved with config {state['config']}, this bank has {self.config()}")
        entries: OrderedDict[str, _Entry] = OrderedDict()
        for raw in state["entries"]:
            if not isinstance(raw, dict) or set(raw) != {"id", "rates", "source", "predicted"}:
                raise ValueError(f"bad bank entry {raw!r}")
            pid, rates, source, predicted = raw["id"], raw["rates"], raw["source"], raw["predicted"]
            if not isinstance(pid, str) or not pid or pid in entries:
                raise ValueError(f"bad or repeated entry id {pid!r}")
            if not isinstance(rates, list) or len(rates) > self.window or \
                    not all(isinstance(r, int | float) and 0 <= r <= 1 for r in rates):
                raise ValueError(f"entry {pid!r} has bad rates {rates!r}")
            if source not in (*SOURCES, None):
                raise ValueError(f"entry {pid!r} has bad source {source!r}")
            finite = isinstance(predicted, int | float) and math.isfinite(predicted)
            if predicted is not None and not finite:
                raise ValueError(f"entry {pid!r} has bad predicted rate {predicted!r}")
            entries[pid] = _Entry([float(r) for r in rates], source,
                                  None if predicted is None else float(predicted))
        if len(entries) > self.capacity:
            raise ValueError(f"state holds {len(entries)} entries, more than capacity {self.capacity}")
        rescued = state["rescued"]
        if not isinstance(rescued, list) or not all(isinstance(r, str) for r in rescued) or \
                len(set(rescued)) != len(rescued) or len(rescued) > self.capacity:
            raise ValueError("state's rescued must be a list of distinct strings within capacity")
        evicted = state["evicted"]
        check_int("state's evicted", evicted, 0)
        self._entries, self._rescued, self.evicted = entries, OrderedDict.fromkeys(rescued), evicted

    def save(self, path: str | Path) -> None:
        """Write the state as JSON, atomically."""
        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> HardPromptBank:
        import json

        state = json.loads(Path(path).read_text(encoding="utf-8"))
        config = state.get("config") if isinstance(state, dict) else None
        if not isinstance(config, dict):
            raise ValueError(f"{str(path)!r} is not a hard-prompt bank state")
        bank = cls(**config)
        bank.load_state_dict(state)
        return bank

    # ---- internals -------------------------------------------------------------------------
    def _admit(self, pid: str) -> _Entry:
        if len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1
        entry = self._entries[pid] = _Entry()
        return entry

    def _check_rewards(self, rewards: Any) -> np.ndarray:
        try:
            rew = np.array(rewards, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as err:
            raise TypeError(f"rewards must be a numeric (n, k) array: {err}") from err
        if rew.ndim != 2 or rew.shape[1] < 1:
            raise ValueError(f"rewards must have shape (n, k) with k >= 1, got {rew.shape}")
        if not np.all(np.isfinite(rew)):
            raise ValueError("rewards must be finite")
        return rew


__all__ = ["HardPromptBank"]
