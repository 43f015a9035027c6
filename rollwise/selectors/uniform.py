"""Uniform sampling without replacement, epoch by epoch: the baseline every strategy must beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from rollwise.selectors.base import Selector, as_numpy, check_prepared
from rollwise.threads import DEFAULT_SELECTOR_THREADS


class UniformSelector(Selector):
    """Walks through a fresh random permutation of the pool each epoch.

    With ``candidates`` it draws uniformly among them. ``predict`` returns the mean success rate
    observed so far (0.5 before any observation): uniform has no per-prompt model.
    """

    name = "uniform"
    walks_order = True

    def __init__(self, pool, batch_size: int, seed: int = 0,
                 threads: int | None = DEFAULT_SELECTOR_THREADS) -> None:
        super().__init__(pool, batch_size, seed, threads)
        self._order = np.empty(0, dtype=np.int64)
        self._cursor = 0
        self._sum = 0.0
        self._count = 0

    def _select(self, candidates: np.ndarray | None, size: int,
                group_size: int | None) -> np.ndarray:
        if candidates is not None:
            return self.rng.choice(candidates, size=size, replace=False)
        taken = self._order[self._cursor : self._cursor + size]
        self._cursor += taken.size
        if taken.size < size:  # epoch ends: start a new permutation, skip repeats
            fresh = self.rng.permutation(len(self.pool))
            fresh = fresh[~np.isin(fresh, taken)]
            need = size - taken.size
            taken = np.concatenate([taken, fresh[:need]])
            self._order, self._cursor = fresh, need
        return taken

    def _observe(self, indices: np.ndarray, successes: np.ndarray, counts: np.ndarray) -> None:
        self._sum += float(successes.sum())
        self._count += int(counts.sum())

    def _predict(self, indices: np.ndarray | None) -> np.ndarray:
        n = len(self.pool) if indices is None else indices.size
        mean = self._sum / self._count if self._count else 0.5
        return np.full(n, mean)

    def _model_state(self) -> dict[str, Any]:
        return {"order": self._order, "cursor": self._cursor, "sum": self._sum, "count": self._count}

    def _prepare_model_state(self, model: dict[str, Any]):
        order = as_numpy(model["order"], np.int64)
        try:  # convert everything before committing anything
            cursor, total, count = int(model["cursor"]), float(model["sum"]), int(model["count"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"state['model']: cursor/sum/count are not numbers: {err}") from err
        check_prepared(order.ndim == 1 and np.all((order >= 0) & (order < len(self.pool))),
                       "order is not a permutation of this pool")
        check_prepared(0 <= cursor <= order.size, "cursor out of range")
        check_prepared(count >= 0 and np.isfinite(total), "sum/count out of range")

        def commit() -> None:
            self._order, self._cursor = order, cursor
            self._sum, self._count = total, count

        return commit
