"""GRESO (arXiv 2506.02177): skip prompts whose recent groups all came back equal.

A prompt's history predicts its next group: one that was all-correct ("easy") or all-wrong
("hard") the last few times it was seen is likely to be so again. GRESO walks the pool in epochs
like uniform sampling and skips each prompt with probability ``1 - max(p**count, floor)``, where
``count`` is the number of consecutive most recent observations of the prompt that were of one
kind (easy or hard) and ``p`` is ``p_easy`` or ``p_hard`` for that kind. After every observation
each ``p`` moves by ``step`` toward the share of zero-variance groups it is meant to leave:
down (skip more) when the observed share of easy (hard) groups exceeds ``target / 3``
(``2 target / 3``), up otherwise, clipped to ``[p_min, p_max]``. It knows nothing of a prompt
before trying it: a never-seen prompt is never skipped.

With dynamic sampling GRESO sizes its rounds from the observed keep rate
(:class:`~rollwise.dynamic_sampling.DynamicSampler` ``sizing="keep-rate"``), as its authors do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rollwise.selectors.base import Selector, as_numpy, check_prepared
from rollwise.threads import DEFAULT_SELECTOR_THREADS
from rollwise.validation import check_number

EASY, HARD = 1, -1


class GRESOSelector(Selector):
    """GRESO's probabilistic skipping of prompts with zero-variance histories.

    Args:
        pool: the prompts.
        batch_size: prompts per step.
        seed: seeds the epoch order and the skip draws.
        target: the share of zero-variance groups the skipping aims to leave (easy a third of
            it, hard two thirds).
        p_init: the starting ``p_easy`` and ``p_hard``.
        step: how far each ``p`` moves per observation.
        p_min, p_max: the range of each ``p``.
        floor: a prompt is kept with probability at least this (its skip probability is at most
            ``1 - floor``).
        easy_threshold, hard_threshold: a group is easy when its mean reward is at least
            ``easy_threshold``, hard when at most ``hard_threshold``.
        threads: torch/BLAS threads of the selector's calls (a machine setting).
    """

    name = "greso"
    walks_order = True
    dynamic_sizing = "keep-rate"  # GRESO sizes its generation batch from the observed keep rate

    def __init__(self, pool, batch_size: int, seed: int = 0, target: float = 0.25,
                 p_init: float = 0.5, step: float = 0.01, p_min: float = 0.05,
                 p_max: float = 0.95, floor: float = 0.01, easy_threshold: float = 0.98,
                 hard_threshold: float = 0.11,
                 threads: int | None = DEFAULT_SELECTOR_THREADS) -> None:
        super().__init__(pool, batch_size, seed, threads)
        check_number("target", target, 0.0, 1.0)
        check_number("p_min", p_min, 0.0, 1.0)
        check_number("p_max", p_max, p_min, 1.0)
        check_number("p_init", p_init, p_min, p_max)
        check_number("step", step, 0.0, 1.0)
        check_number("floor", floor, 0.0, 1.0)
        check_number("easy_threshold", easy_threshold, 0.0, 1.0)
        check_number("hard_threshold", hard_threshold, 0.0, easy_threshold, closed="left")
        self.target, self.p_init, self.p_step = float(target), float(p_init), float(step)
        self.p_min, self.p_max, self.floor = float(p_min), float(p_max), float(floor)
        self.easy_threshold, self.hard_threshold = float(easy_threshold), float(hard_threshold)
        n = len(pool)
        self.p_easy = self.p_hard = self.p_init
        self.kind = np.zeros(n, dtype=np.int64)  # EASY, HARD or 0: the last observation's kind
        self.count = np.zeros(n, dtype=np.int64)  # consecutive latest observations of that kind
        self.last_rate = np.full(n, np.nan)  # the last observed mean reward
        self._order = np.empty(0, dtype=np.int64)
        self._cursor = 0
        self.skipped = 0  # prompts skipped so far (for logs)

    def hyper_params(self) -> dict[str, Any]:
        return {"target": self.target, "p_init": self.p_init, "step": self.p_step,
                "p_min": self.p_min, "p_max": self.p_max, "floor": self.floor,
                "easy_threshold": self.easy_threshold, "hard_threshold": self.hard_threshold}

    def skip_probability(self, indices: Any = None) -> np.ndarray:
        """Each prompt's current probability of being skipped: ``1 - max(p**count, floor)``
        with ``p`` that of the kind of its latest groups (0 for a prompt whose latest group was
        informative, or never seen)."""
        idx = self._check_indices(indices, "indices", allow_repeats=True)
        kind = self.kind if idx is None else self.kind[idx]
        count = self.count if idx is None else self.count[idx]
        p = np.where(kind == EASY, self.p_easy, self.p_hard)
        keep = np.maximum(p ** count.astype(np.float64), self.floor)
        return np.where(kind == 0, 0.0, 1.0 - keep)

    # ---- selection -------------------------------------------------------------------------
    def _select(self, candidates: np.ndarray | None, size: int,
                group_size: int | None) -> np.ndarray:
        skip = self.skip_probability(None)
        if candidates is not None:  # one pass in random order, skipping; the rest unskipped
            order = self.rng.permutation(candidates)
            kept = order[self.rng.random(order.size) >= skip[order]]
            self.skipped += int(order.size - kept.size)
            if kept.size >= size:
                return kept[:size]
            return np.concatenate([kept, order[~np.isin(order, kept)][: size - kept.size]])
        chosen: list[int] = []
        seen = 0  # prompts walked past in this call; after two passes, nothing is skipped
        n = len(self.pool)
        while len(chosen) < size:
            if self._cursor >= self._order.size:
                self._order, self._cursor = self.rng.permutation(n), 0
            i = int(self._order[self._cursor])
            self._cursor += 1
            seen += 1
            if i in chosen:
                continue
            if seen <= 2 * n and self.rng.random() < skip[i]:
                self.skipped += 1
                continue
            chosen.append(i)
        return np.asarray(chosen, dtype=np.int64)

    # ---- learning --------------------------------------------------------------------------
    def _observe(self, indices: np.ndarray, successes: np.ndarray, counts: np.ndarray) -> None:
        rate = successes / counts
        kind = np.where(rate >= self.easy_threshold, EASY,
                        np.where(rate <= self.hard_threshold, HARD, 0))
        same = (kind != 0) & (kind == self.kind[indices])
        self.count[indices] = np.where(kind == 0, 0, np.where(same, self.count[indices] + 1, 1))
        self.kind[indices] = kind
        self.last_rate[indices] = rate
        easy, hard = float(np.mean(kind == EASY)), float(np.mean(kind == HARD))
        self.p_easy = self._moved(self.p_easy, easy, self.target / 3.0)
        self.p_hard = self._moved(self.p_hard, hard, 2.0 * self.target / 3.0)

    def _moved(self, p: float, share: float, target: float) -> float:
        p = p - self.p_step if share > target else p + self.p_step
        return float(np.clip(p, self.p_min, self.p_max))

    def _predict(self, indices: np.ndarray | None) -> np.ndarray:
        rate = self.last_rate if indices is None else self.last_rate[indices]
        seen = self.last_rate[np.isfinite(self.last_rate)]
        return np.where(np.isfinite(rate), rate, seen.mean() if seen.size else 0.5)

    # ---- state -----------------------------------------------------------------------------
    def _model_state(self) -> dict[str, Any]:
        return {"p": np.array([self.p_easy, self.p_hard]), "kind": self.kind,
                "count": self.count, "last_rate": self.last_rate, "order": self._order,
                "cursor": self._cursor, "skipped": self.skipped}

    def _prepare_model_state(self, model: dict[str, Any]):
        n = len(self.pool)
        p = as_numpy(model["p"], np.float64)
        kind, count = as_numpy(model["kind"], np.int64), as_numpy(model["count"], np.int64)
        last_rate, order = as_numpy(model["last_rate"], np.float64), as_numpy(model["order"], np.int64)
        try:
            cursor, skipped = int(model["cursor"]), int(model["skipped"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"state['model']: cursor/skipped are not numbers: {err}") from err
        check_prepared(p.shape == (2,) and bool(np.all((p >= 0) & (p <= 1))), "p out of range")
        check_prepared(kind.shape == (n,) and bool(np.all(np.isin(kind, (EASY, HARD, 0)))),
                       "kind does not match the pool")
        check_prepared(count.shape == (n,) and bool(np.all(count >= 0)), "count does not match the pool")
        check_prepared(last_rate.shape == (n,), "last_rate does not match the pool")
        check_prepared(order.ndim == 1 and bool(np.all((order >= 0) & (order < n))),
                       "order is not a permutation of this pool")
        check_prepared(0 <= cursor <= order.size and skipped >= 0, "cursor out of range")

        def commit() -> None:
            self.p_easy, self.p_hard = float(p[0]), float(p[1])
            self.kind, self.count, self.last_rate = kind, count, last_rate
            self._order, self._cursor, self.skipped = order, cursor, skipped

        return commit
