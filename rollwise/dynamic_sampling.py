"""DAPO dynamic sampling (DS): a post-rollout filter, not a pre-rollout selector.

DS rolls out prompts, drops every group whose k rewards are all equal (zero advantage, no
gradient) and keeps rolling out more prompts until ``batch_size`` informative groups are kept.
Every rollout it spends counts as cost, the dropped ones included.
"""

from __future__ import annotations

import numpy as np


def informative_mask(rewards: np.ndarray) -> np.ndarray:
    """True for groups (rows) whose rewards are not all equal."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be 2-D (groups, k), got shape {r.shape}")
    return r.max(axis=1) > r.min(axis=1)


class DynamicSamplingBuffer:
    """Accumulates informative groups until a batch is full.

    >>> buf = DynamicSamplingBuffer(batch_size=4)
    >>> while buf.needed:                      # prompts still to roll out
    ...     idx = sampler.select()[: buf.needed]
    ...     buf.add(idx, rollout(idx))
    >>> indices, rewards = buf.pop()
    """

    def __init__(self, batch_size: int, max_rounds: int = 20) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        self.batch_size, self.max_rounds = int(batch_size), int(max_rounds)
        self.rollouts_spent = 0  # lifetime total, dropped groups included
        self._reset()

    def _reset(self) -> None:
        self._idx: list[np.ndarray] = []
        self._rew: list[np.ndarray] = []
        self._kept = 0
        self.rounds = 0

    @property
    def needed(self) -> int:
        """How many more informative groups the batch lacks (0 when full or out of rounds)."""
        if self.rounds >= self.max_rounds:
            return 0
        return max(0, self.batch_size - self._kept)

    def add(self, indices: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        """Count the rollouts, keep the informative groups; returns the keep mask."""
        idx = np.asarray(indices, dtype=np.int64)
        rew = np.asarray(rewards, dtype=np.float64)
        if rew.ndim != 2 or rew.shape[0] != idx.size:
            raise ValueError(f"rewards must have shape ({idx.size}, k), got {rew.shape}")
        keep = informative_mask(rew)
        room = self.batch_size - self._kept
        keep &= np.cumsum(keep) <= room
        self.rollouts_spent += rew.size
        self.rounds += 1
        self._idx.append(idx[keep])
        self._rew.append(rew[keep])
        self._kept += int(keep.sum())
        return keep

    def pop(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept groups (possibly fewer than batch_size after max_rounds); resets the batch."""
        if not self._idx:
            raise ValueError("nothing was added since the last pop")
        idx = np.concatenate(self._idx)
        k = max(r.shape[1] for r in self._rew)
        rew = np.concatenate([r.reshape(-1, k) for r in self._rew]) if idx.size else np.empty((0, k))
        self._reset()
        return idx, rew
