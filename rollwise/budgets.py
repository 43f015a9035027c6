"""Per-prompt rollout budgets in training: how many rollouts each chosen prompt gets.

GRPO learns only from groups whose rewards differ. A prompt predicted near 0.5 gives a mixed
group with a few rollouts; one predicted at 0.05 needs many before a success shows. Given each
chosen prompt's predictive distribution of its success rate, ``p ~ Beta(m c, (1 - m) c)`` (mean
``m``, concentration ``c``; ``c = inf``: the rate is known), :class:`PromptBudgets` splits a fixed
number of rollouts per step among the prompts to maximise the expected value of the step's
groups under one of three objectives (``k`` rollouts for one prompt):

* ``"rollouts"``: expected rollouts in informative groups, ``k (1 - E[p^k] - E[(1 - p)^k])``.
  Under GRPO's group standard-deviation scaling every rollout of a mixed group carries an
  advantage of unit scale and one of an all-equal group none: this counts the rollouts that
  carry gradient. It ignores what a prompt's diversity is worth: a big group wastes a smaller
  share than a small one, so even equal predictions get unequal groups.
* ``"groups"``: expected informative groups, ``1 - E[p^k] - E[(1 - p)^k]``: a prompt counts
  once whatever its group's size; concave in k, so rollouts spread.
* ``"variance"``: expected sum of squared advantages without std scaling (Dr. GRPO),
  ``E[sum_i (r_i - mean)^2] = (k - 1) E[p (1 - p)]``: linear in k, so rollouts pile on the prompts
  nearest 0.5 up to ``k_max``.

``E[p^k] = B(a + k, b) / B(a, b)``. A prompt given no rollouts (``k_min=0``: it is dropped from
the step) is worth nothing. With ``step=s`` every count is a multiple of s: TRL's GRPOTrainer
normalises advantages in blocks of ``num_generations`` rows, so a prompt there gets whole groups;
with ``separate_groups=True`` each block is valued as a group of its own (``g`` groups of ``s``
are worth ``g`` times one), as TRL trains them, instead of as one group of ``g s``.
With ``contamination=e`` a prompt's value is ``(1 - e) own + e * mean over the batch``: the
prediction for a never-seen prompt is sometimes no better than a random prompt's
(:meth:`rollwise.calibration.BetaBinomialCalibration.fit_contamination`).

The values are not concave in k (``k P(mixed)`` is convex at small p), so a greedy split is not
optimal; the split is an exact dynamic program over prompts and rollouts (a knapsack with one
choice per prompt), ``O(n R (k_max - k_min))`` elementwise work, vectorised over R. Every prompt
gets between ``k_min`` and ``k_max`` rollouts and the counts sum to exactly ``rollouts``; among
allocations of equal value (to 1e-9 relative) the most even one is taken, so under ``groups``
and ``variance`` equal predictions give equal groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betaln

from rollwise.validation import check_int, check_number

OBJECTIVES = ("rollouts", "groups", "variance")
_EDGE = 1e-9  # Beta means kept inside (0, 1)
_EVEN = 1e-9  # relative weight of the tie-break towards even groups


def group_values(mean: Any, concentration: Any, ks: np.ndarray, objective: str) -> np.ndarray:
    """``(n, len(ks))``: the expected value of giving prompt i ``ks[j]`` rollouts."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    m = np.clip(np.asarray(mean, dtype=np.float64), _EDGE, 1.0 - _EDGE)[:, None]
    c = np.broadcast_to(np.asarray(concentration, dtype=np.float64), m.shape[:1])[:, None]
    k = np.asarray(ks, dtype=np.float64)[None, :]
    point = np.isinf(c)
    a, b = np.where(point, 1.0, m * c), np.where(point, 1.0, (1.0 - m) * c)
    if objective == "variance":
        var = np.where(point, m * (1.0 - m), a * b / ((a + b) * (a + b + 1.0)))
        return np.maximum(k - 1.0, 0.0) * var
    with np.errstate(over="ignore", under="ignore"):
        all_right = np.where(point, m ** k, np.exp(betaln(a + k, b) - betaln(a, b)))
        all_wrong = np.where(point, (1.0 - m) ** k, np.exp(betaln(a, b + k) - betaln(a, b)))
    mixed = np.clip(1.0 - all_right - all_wrong, 0.0, 1.0)
    return k * mixed if objective == "rollouts" else mixed


@dataclass(frozen=True)
class PromptBudgets:
    """Split ``rollouts`` per step among the chosen prompts (see the module docstring).

    ``k_max`` defaults to four times the even share (rounded up to a multiple of ``step``),
    capped by what the budget leaves after every other prompt's ``k_min``. ``k_min=0`` lets the
    split drop prompts (fewer prompts, more rollouts each).
    """

    rollouts: int
    k_min: int = 2
    k_max: int | None = None
    objective: str = "variance"  # measured best across the worlds (docs/budgets.md)
    step: int = 1
    separate_groups: bool = False

    def __post_init__(self) -> None:
        check_int("rollouts", self.rollouts, 1)
        check_int("k_min", self.k_min, 0)
        check_int("step", self.step, 1)
        if self.k_max is not None:
            check_int("k_max", self.k_max, max(self.k_min, 1))
        for name in ("rollouts", "k_min", "k_max"):
            value = getattr(self, name)
            if value is not None and value % self.step:
                raise ValueError(f"{name}={value} must be a multiple of step={self.step}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")

    def bounds(self, n: int) -> tuple[int, int]:
        """``(k_min, k_max)`` for a batch of ``n`` prompts; raises if the budget cannot be met."""
        if n * self.k_min > self.rollouts:
            raise ValueError(f"rollouts={self.rollouts} is smaller than {n} prompts x k_min="
                             f"{self.k_min}")
        even = -(-self.rollouts // n)
        k_max = 4 * -(-even // self.step) * self.step if self.k_max is None else self.k_max
        k_max = min(k_max, self.rollouts - (n - 1) * self.k_min)
        if n * k_max < self.rollouts:
            raise ValueError(f"rollouts={self.rollouts} is larger than {n} prompts x k_max={k_max}")
        return self.k_min, k_max

    def split(self, mean: Any, concentration: Any = np.inf, contamination: float = 0.0
              ) -> np.ndarray:
        """Rollouts per prompt (int64, summing to ``rollouts``) for predicted rates ``mean`` with
        Beta ``concentration`` (scalar or per prompt; ``inf``: known rates)."""
        m = np.asarray(mean, dtype=np.float64)
        if m.ndim != 1 or m.size == 0:
            raise ValueError(f"mean must be a non-empty 1-D array, got shape {m.shape}")
        if not np.all(np.isfinite(m)) or m.min() < 0.0 or m.max() > 1.0:
            raise ValueError("mean must lie in [0, 1]")
        c = np.asarray(concentration, dtype=np.float64)
        if c.ndim > 1 or (c.ndim == 1 and c.size != m.size) or np.any(np.isnan(c)) or np.any(c <= 0):
            raise ValueError("concentration must be > 0, a scalar or one per prompt")
        check_number("contamination", contamination, 0.0, 1.0)
        k_min, k_max = self.bounds(m.size)
        ks = np.arange(k_min, k_max + 1, self.step)
        if self.separate_groups:  # g blocks of `step`, each its own group: g times one block
            values = group_values(m, c, np.array([self.step]), self.objective) * (ks // self.step)
        else:
            values = group_values(m, c, ks, self.objective)
        if contamination:
            values = (1.0 - contamination) * values + contamination * values.mean(axis=0)
        scale = max(float(np.abs(values).max()), 1.0)
        values = values - _EVEN * scale * (ks / k_max) ** 2  # ties go to even groups
        return _knapsack(values, ks // self.step, self.rollouts // self.step) * self.step


def _knapsack(values: np.ndarray, ks: np.ndarray, total: int) -> np.ndarray:
    """One ``ks[j]`` per row, summing to ``total``, maximising the sum of ``values[i, j]``
    (exact)."""
    n = values.shape[0]
    best = np.full(total + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((n, total + 1), dtype=np.int64)
    for i in range(n):
        new = np.full(total + 1, -np.inf)
        for j, k in enumerate(ks):
            cand = np.full(total + 1, -np.inf)
            cand[k:] = best[: total + 1 - k] + values[i, j]
            better = cand > new
            new[better], choice[i, better] = cand[better], j
        best = new
    if not np.isfinite(best[total]):
        raise ValueError(f"no split of {total} rollouts over {n} prompts within the bounds")
    out, rest = np.zeros(n, dtype=np.int64), total
    for i in range(n - 1, -1, -1):
        out[i] = ks[choice[i, rest]]
        rest -= out[i]
    return out
