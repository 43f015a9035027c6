"""DAPO dynamic sampling (DS), plain and predictive.

DS rolls out prompts, drops every group whose k rewards are all equal (zero advantage, no
gradient) and keeps rolling out more prompts until ``batch_size`` informative groups are kept.
Every rollout it spends counts as cost, the dropped ones included.

Plain DS (DAPO, verl's ``algorithm.filter_groups``) rolls out a full generation batch every
round whatever the prompts. Predictive DS (:class:`DynamicSampler` with ``sizing="predicted"``)
asks the selector for each round's prompts after it has observed the previous round, valued by
their chance of an informative group, and rolls out just enough of them that the batch fills
with probability at least ``fill_confidence`` given those chances: the same full batch of
informative groups for fewer rollouts and rounds, as far as the predictions are right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rollwise.validation import check_int, check_number

if TYPE_CHECKING:  # the selectors import this module; only their protocol is used here
    from rollwise.selectors.base import Selector

SIZINGS = ("full", "keep-rate", "predicted")
MAX_TOP_UPS = 4  # selection calls per predictive round (the first sized optimistically)
KEEP_RATE_MARGIN = 1.25  # GRESO's margin on the observed keep rate
MIN_KEEP_RATE = 0.05  # a step that kept nothing does not ask for an unbounded round
CALIBRATION_STEPS = 8  # predicted sizing: the steps whose rounds calibrate the chances
CALIBRATION_ODDS = (0.05, 20.0)  # the calibration's odds factor stays in this range


def informative_mask(rewards: np.ndarray) -> np.ndarray:
    """True for groups (rows) whose rewards are not all equal."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be 2-D (groups, k), got shape {r.shape}")
    return r.max(axis=1) > r.min(axis=1)


def informative_probability(mean: Any, k: int, concentration: Any = np.inf,
                            contamination: float = 0.0) -> np.ndarray:
    """Probability that a group of ``k`` Bernoulli rollouts is informative (not all equal):
    ``1 - p^k - (1 - p)^k``, in expectation over ``p ~ Beta(mean c, (1 - mean) c)``.

    Args:
        mean: predicted success rates in [0, 1].
        k: rollouts per group (``num_generations``).
        concentration: the Beta's ``c`` per prompt or one for all; ``inf``: ``p = mean`` exactly.
        contamination: the share of predictions no better than a random prompt's
            (:meth:`rollwise.calibration.BetaBinomialCalibration.fit_contamination`); each
            chance is mixed with the mean chance over ``mean`` in that proportion.
    """
    check_int("k", k, 1)
    check_number("contamination", contamination, 0.0, 1.0)
    m = np.clip(np.asarray(mean, dtype=np.float64), 0.0, 1.0)
    c = np.broadcast_to(np.asarray(concentration, dtype=np.float64), m.shape)
    if np.any(~(c > 0)):
        raise ValueError("concentration must be > 0")
    point = 1.0 - m**k - (1.0 - m) ** k
    out = point.copy()
    finite = np.isfinite(c) & (m > 0) & (m < 1)
    if finite.any():
        a, b = m[finite] * c[finite], (1.0 - m[finite]) * c[finite]
        # E[p^k] = B(a + k, b) / B(a, b) under Beta(a, b)
        from scipy.special import betaln  # here: the CLI imports this module for its names

        ones = np.exp(betaln(a + k, b) - betaln(a, b))
        zeros = np.exp(betaln(a, b + k) - betaln(a, b))
        out[finite] = 1.0 - ones - zeros
    if contamination and out.size:
        out = (1.0 - contamination) * out + contamination * out.mean()
    return np.clip(out, 0.0, 1.0)


def _prefix_distributions(chances: Any):
    """For each prefix of ``chances``, the distribution of its number of informative groups
    (Poisson-binomial): yields ``(prefix length, dist)`` with ``dist[j] = P(exactly j)``."""
    q = np.clip(np.asarray(chances, dtype=np.float64).ravel(), 0.0, 1.0)
    dist = np.zeros(q.size + 1)
    dist[0] = 1.0
    for j, p in enumerate(q):
        dist[1 : j + 2] = dist[1 : j + 2] * (1.0 - p) + dist[: j + 1] * p
        dist[0] *= 1.0 - p
        yield j + 1, dist[: j + 2]


def fill_probability(chances: Any, need: int) -> float:
    """Probability that prompts with these chances give at least ``need`` informative groups."""
    if need <= 0:
        return 1.0
    last = 0.0
    for m, dist in _prefix_distributions(chances):
        last = float(dist[need:].sum()) if need <= m else 0.0
    return last


def prompts_to_fill(chances: Any, need: int, confidence: float) -> int | None:
    """The shortest prefix of ``chances`` whose prompts give ``need`` informative groups with
    probability at least ``confidence``; None if the whole sequence does not."""
    if need <= 0:
        return 0
    for m, dist in _prefix_distributions(chances):
        if m >= need and dist[need:].sum() >= confidence:
            return m
    return None


class DynamicSamplingBuffer:
    """Accumulates informative groups until a batch is full.

    >>> buf = DynamicSamplingBuffer(batch_size=4)
    >>> while buf.needed:                      # prompts still to roll out
    ...     idx = sampler.select()[: buf.needed]
    ...     buf.add(idx, rollout(idx))
    >>> indices, rewards = buf.pop()

    Informative groups beyond the batch are ``surplus``: dropped (but paid for), or with
    ``keep_surplus`` kept at the front of the next batch (generated by the policy before the
    last update: one step stale).
    """

    def __init__(self, batch_size: int, max_rounds: int = 20, keep_surplus: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        self.batch_size, self.max_rounds = int(batch_size), int(max_rounds)
        self.keep_surplus = bool(keep_surplus)
        self.rollouts_spent = 0  # lifetime total, dropped groups included
        self._carry: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        self._reset()

    def _reset(self) -> None:
        self._idx, self._rew = self._carry
        self._carry = ([], [])
        self._kept = sum(i.size for i in self._idx)
        self.carried = self._kept  # surplus of the previous batch at the front of this one
        self.rounds = 0
        self.surplus = 0

    @property
    def needed(self) -> int:
        """How many more informative groups the batch lacks (0 when full or out of rounds)."""
        if self.rounds >= self.max_rounds:
            return 0
        return max(0, self.batch_size - self._kept)

    @property
    def kept(self) -> int:
        return self._kept

    def add(self, indices: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        """Count the rollouts, keep the informative groups; returns the mask of groups kept in
        this batch."""
        idx = np.asarray(indices, dtype=np.int64)
        rew = np.asarray(rewards, dtype=np.float64)
        if rew.ndim != 2 or rew.shape[0] != idx.size:
            raise ValueError(f"rewards must have shape ({idx.size}, k), got {rew.shape}")
        informative = informative_mask(rew)
        room = self.batch_size - self._kept
        keep = informative & (np.cumsum(informative) <= room)
        extra = informative & ~keep
        self.surplus += int(extra.sum())
        if self.keep_surplus and extra.any():
            self._carry[0].append(idx[extra])
            self._carry[1].append(rew[extra])
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
        rew = (np.concatenate([r.reshape(-1, k) for r in self._rew]) if idx.size
               else np.empty((0, k)))
        self._reset()
        return idx, rew


@dataclass
class RoundPlan:
    """One generation round's prompts and, where the selector predicts them, their chances of an
    informative group."""

    indices: np.ndarray
    chances: np.ndarray | None = None  # as the sizing used them (calibrated)

    @property
    def predicted_keep(self) -> float:
        """The mean chance over the round's prompts (NaN without predictions)."""
        if self.chances is None or not self.chances.size:
            return float("nan")
        return float(np.mean(self.chances))


class ChanceCalibration:
    """Corrects predicted chances of an informative group by what recent rounds gave.

    A predictor that is right about which prompts are likelier informative can still be off in
    level (GPS under-predicts while the policy moves, so rounds come out oversized and their
    surplus is paid for). The correction multiplies every chance's odds by one factor ``s``,
    chosen so that the calibrated chances of the last ``steps`` steps' rolled-out prompts sum
    to the informative groups those rounds gave, with ``prior`` pseudo-prompts at the mean
    chance that were exactly right (so a few rounds move ``s`` only a little). Odds keep every
    chance inside (0, 1), and the order of the prompts is unchanged.

    Args:
        steps: how many recent steps' rounds the factor is fitted to.
        prior: pseudo-prompts pulling ``s`` toward 1.
    """

    def __init__(self, steps: int = CALIBRATION_STEPS, prior: float = 32.0) -> None:
        check_int("steps", steps, 1)
        check_number("prior", prior, 0.0)
        self.steps, self.prior = int(steps), float(prior)
        self.factor = 1.0
        self._history: list[list[tuple[np.ndarray, int]]] = [[]]  # per step: (chances, informative)

    def __call__(self, chances: np.ndarray) -> np.ndarray:
        """The calibrated chances."""
        return _scale_odds(np.asarray(chances, dtype=np.float64), self.factor)

    def uncalibrated(self, calibrated: np.ndarray) -> np.ndarray:
        """The raw chances that the current factor turned into ``calibrated``."""
        return _scale_odds(np.asarray(calibrated, dtype=np.float64), 1.0 / self.factor)

    def state(self) -> dict[str, Any]:
        """A JSON-ready copy (a trainer saves it in its checkpoints)."""
        return {"factor": self.factor,
                "history": [[[c.tolist(), n] for c, n in step] for step in self._history]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.factor = float(state["factor"])
        self._history = [[(np.asarray(c, dtype=np.float64), int(n)) for c, n in step]
                         for step in state["history"]] or [[]]

    def observe(self, chances: np.ndarray, informative: int) -> None:
        """One round: its prompts' raw (uncalibrated) chances and its informative groups."""
        self._history[-1].append((np.asarray(chances, dtype=np.float64).copy(), int(informative)))

    def end_step(self) -> None:
        """Refit the factor to the recent steps and start the next step's rounds."""
        rounds = [r for step in self._history for r in step]
        self._history = self._history[-(self.steps - 1):] + [[]] if self.steps > 1 else [[]]
        if not rounds:
            return
        q = np.concatenate([c for c, _ in rounds])
        got = float(sum(n for _, n in rounds))
        if not q.size:
            return
        mean = float(q.mean())

        def excess(log_s: float) -> float:  # calibrated minus realised, increasing in log_s
            s = math.exp(log_s)
            return (float(_scale_odds(q, s).sum()) + self.prior * float(_scale_odds(mean, s))
                    - got - self.prior * mean)

        lo, hi = (math.log(x) for x in CALIBRATION_ODDS)
        if excess(lo) >= 0:
            self.factor = CALIBRATION_ODDS[0]
        elif excess(hi) <= 0:
            self.factor = CALIBRATION_ODDS[1]
        else:
            from scipy.optimize import brentq  # here: the CLI imports this module for its names

            self.factor = math.exp(brentq(excess, lo, hi, xtol=1e-4))


def _scale_odds(q: Any, s: float) -> Any:
    q = np.clip(q, 0.0, 1.0)
    return s * q / (1.0 - q + s * q)


@dataclass
class StepRecord:
    """What one dynamic-sampling step spent and got (logged per step)."""

    rounds: int = 0
    rollouts: int = 0
    prompts: list[int] = field(default_factory=list)  # prompts rolled out per round
    informative: int = 0  # informative groups generated (kept + surplus)
    kept: int = 0  # informative groups in the batch (carried ones included)
    carried: int = 0  # of them, surplus kept from the previous step
    surplus: int = 0  # informative groups beyond the batch
    filled: int = 0  # zero-advantage groups that completed the batch after the last round
    predicted: float = 0.0  # sum of the rolled-out prompts' predicted chances
    predicted_prompts: int = 0  # prompts with a predicted chance

    @property
    def realised_keep_rate(self) -> float:
        n = sum(self.prompts)
        return self.informative / n if n else float("nan")

    @property
    def predicted_keep_rate(self) -> float:
        return self.predicted / self.predicted_prompts if self.predicted_prompts else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "rollouts": self.rollouts, "prompts": list(self.prompts),
                "informative": self.informative, "kept": self.kept, "carried": self.carried,
                "surplus": self.surplus, "filled": self.filled,
                "predicted_keep_rate": _finite(self.predicted_keep_rate),
                "realised_keep_rate": _finite(self.realised_keep_rate)}


def _finite(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 4)


class DynamicSampler:
    """Plans dynamic sampling's rounds for a selector: which prompts, how many.

    Each round the selector chooses among the prompts not yet rolled out this step, after it has
    observed every earlier round (the caller observes between rounds), with ``group_size`` so
    that a predictive selector values prompts by their chance of an informative group. How many:

    * ``"full"``: ``batch_size`` prompts every round, DAPO's generation batch (whatever the
      predictions);
    * ``"keep-rate"``: ``need / rate x 1.25`` prompts, ``rate`` the share of informative groups
      of the previous step (GRESO's sizing; a full batch before any step);
    * ``"predicted"``: the fewest prompts whose predicted chances give the ``need`` missing
      groups with probability at least ``fill_confidence`` (Poisson-binomial). The first call
      is sized on the best chances among the allowed prompts; if the chosen prompts' own
      chances fall short, more are chosen, up to ``MAX_TOP_UPS`` calls.

    Every round holds at most ``max_round_prompts`` prompts (memory) and a multiple of
    ``round_multiple`` (the processes that share a round: each generates an equal slice).

    Args:
        selector: any rollwise selector; ``"predicted"`` needs one with
            :meth:`~rollwise.selectors.base.Selector.predictive` (gps, mopps, the oracle).
        group_size: rollouts per prompt (``num_generations``).
        sizing: one of :data:`SIZINGS`; default the selector's own rule where its method has
            one (GRESO: ``"keep-rate"``), else ``"predicted"`` where the selector predicts each
            prompt, else ``"full"``.
        fill_confidence: the probability of a full batch each predicted round aims at.
        max_round_prompts: prompts per round at most (default 4 x the batch).
        round_multiple: every round's size is a multiple of this.
        calibrate: ``"predicted"`` sizing corrects the chances by what the recent rounds gave
            (:class:`ChanceCalibration`); False trusts the selector's chances as they are.
    """

    def __init__(self, selector: Selector, group_size: int, sizing: str | None = None,
                 fill_confidence: float = 0.9, max_round_prompts: int | None = None,
                 round_multiple: int = 1, calibrate: bool = True) -> None:
        check_int("group_size", group_size, 1)
        check_number("fill_confidence", fill_confidence, 0.0, 1.0, closed="neither")
        check_int("round_multiple", round_multiple, 1)
        if max_round_prompts is not None:
            check_int("max_round_prompts", max_round_prompts, round_multiple)
        self.selector, self.group_size = selector, int(group_size)
        self.batch_size = selector.batch_size
        predicts = has_predictive(selector)
        if sizing is None:
            sizing = selector.dynamic_sizing or ("predicted" if predicts else "full")
        if sizing not in SIZINGS:
            raise ValueError(f"sizing must be one of {list(SIZINGS)}, got {sizing!r}")
        if sizing == "predicted" and not predicts:
            raise ValueError(f"sizing='predicted' needs a selector that predicts each prompt "
                             f"(gps, mopps); the {selector.strategy!r} selector does not: use "
                             f"'full' or 'keep-rate'")
        self.sizing, self.fill_confidence = sizing, float(fill_confidence)
        cap = 4 * self.batch_size if max_round_prompts is None else int(max_round_prompts)
        self.round_multiple = int(round_multiple)
        self.max_round_prompts = max(self.round_multiple, cap - cap % self.round_multiple)
        self.keep_rate: float | None = None  # the previous step's, for "keep-rate"
        self.calibration = (ChanceCalibration(prior=float(self.batch_size))
                            if calibrate and sizing == "predicted" else None)
        self.record = StepRecord()
        self._used = np.empty(0, dtype=np.int64)

    def begin_step(self) -> None:
        """Start a step: no prompt rolled out yet."""
        self.record = StepRecord()
        self._used = np.empty(0, dtype=np.int64)

    def left(self, candidates: np.ndarray | None = None) -> int:
        """Prompts that this step's next round could still roll out (none: the step must end
        with what it has)."""
        n = len(self.selector.pool) if candidates is None else len(candidates)
        free = n - (self._used.size if candidates is None
                    else int(np.isin(candidates, self._used).sum()))
        return free - free % self.round_multiple

    def plan(self, need: int, candidates: np.ndarray | None = None,
             minimum: int = 0) -> RoundPlan:
        """The next round's prompts for ``need`` missing informative groups, among
        ``candidates`` (default: the pool) less this step's earlier rounds; at least
        ``minimum`` prompts where that many are left (a caller's last round, whose dropped
        groups must be able to complete the batch)."""
        check_int("need", need, 1)
        check_int("minimum", minimum, 0)
        allowed = np.arange(len(self.selector.pool)) if candidates is None else np.asarray(
            candidates, dtype=np.int64)
        free = np.setdiff1d(allowed, self._used)
        cap = min(self.max_round_prompts, free.size - free.size % self.round_multiple)
        if cap < 1:
            raise ValueError(f"dynamic sampling: {free.size} prompts left to roll out this step, "
                             f"fewer than a round of {self.round_multiple}")
        floor = min(cap, self._multiple(minimum)) if minimum else 0
        if self.sizing == "predicted":
            plan = self._plan_predicted(need, candidates, free, cap)
            if plan.indices.size < floor:
                rest = np.setdiff1d(free, plan.indices)
                extra = self.selector.select(rest, size=floor - plan.indices.size,
                                             group_size=self.group_size)
                indices = np.concatenate([plan.indices, extra])
                raw = self.selector.informative_chance(indices, self.group_size)
                plan = RoundPlan(indices, raw if self.calibration is None
                                 else self.calibration(raw))
        else:
            if self.sizing == "full" or self.keep_rate is None:
                size = self.batch_size
            else:
                size = math.ceil(need / max(self.keep_rate, MIN_KEEP_RATE) * KEEP_RATE_MARGIN)
            size = min(cap, max(floor, self._multiple(size)))
            plan = RoundPlan(self._choose(candidates, free, size))
        self._used = np.union1d(self._used, plan.indices)
        return plan

    def record_round(self, plan: RoundPlan, informative: int, kept: int, surplus: int) -> None:
        """Count one generated round: its informative groups, how many the batch kept, how many
        were surplus."""
        rec = self.record
        rec.rounds += 1
        rec.prompts.append(int(plan.indices.size))
        rec.rollouts += int(plan.indices.size) * self.group_size
        rec.informative += int(informative)
        rec.kept += int(kept)
        rec.surplus += int(surplus)
        if plan.chances is not None:
            rec.predicted += float(np.sum(plan.chances))
            rec.predicted_prompts += int(plan.chances.size)
            if self.calibration is not None:  # the factor is fixed within a step: undo it
                self.calibration.observe(self.calibration.uncalibrated(plan.chances), informative)

    def end_step(self, filled: int = 0, carried: int = 0) -> StepRecord:
        """Close the step (``filled`` zero-advantage groups completed it, ``carried`` of its
        groups came from the previous step's surplus); updates the keep rate."""
        rec = self.record
        rec.filled, rec.carried = int(filled), int(carried)
        rec.kept += int(carried)
        rate = rec.realised_keep_rate
        if math.isfinite(rate):
            self.keep_rate = rate
        if self.calibration is not None:
            self.calibration.end_step()
        return rec

    # -- internals ------------------------------------------------------------------------
    def _multiple(self, n: int) -> int:
        m = self.round_multiple
        return max(m, -(-int(n) // m) * m)

    def _choose(self, candidates: np.ndarray | None, free: np.ndarray, size: int) -> np.ndarray:
        """``size`` prompts among ``free``: as the selector chooses among the caller's
        candidates in a step's first round, and every round for a selector that walks its own
        order over the whole pool (so that uniform's epochs keep their stream), then any repeat of this step's
        earlier rounds replaced among the rest."""
        k = self.group_size
        if self._used.size == 0 or (candidates is None and self.selector.walks_order):
            idx = self.selector.select(candidates, size=size, group_size=k)
        else:
            idx = self.selector.select(free, size=size, group_size=k)
        repeat = np.isin(idx, self._used)
        if repeat.any():
            rest = np.setdiff1d(free, idx)
            extra = self.selector.select(rest, size=int(repeat.sum()), group_size=k)
            idx = np.concatenate([idx[~repeat], extra])
        return idx

    def _plan_predicted(self, need: int, candidates: np.ndarray | None, free: np.ndarray,
                        cap: int) -> RoundPlan:
        k = self.group_size
        raw = self.selector.informative_chance(free, k)
        calibrated = raw if self.calibration is None else self.calibration(raw)
        chance = dict(zip(free.tolist(), calibrated, strict=True))

        chosen = np.empty(0, dtype=np.int64)
        for _ in range(MAX_TOP_UPS):
            q_chosen = np.array([chance[i] for i in chosen.tolist()])
            rest = np.setdiff1d(free, chosen)
            best = np.sort(np.array([chance[i] for i in rest.tolist()]))[::-1]
            m = prompts_to_fill(np.concatenate([q_chosen, best]), need, self.fill_confidence)
            total = cap if m is None else min(cap, self._multiple(max(m, chosen.size + 1)))
            size = min(total - chosen.size, rest.size)
            if size < 1:
                break
            idx = (self._choose(candidates, free, size) if not chosen.size
                   else self.selector.select(rest, size=size, group_size=k))
            chosen = np.concatenate([chosen, idx])
            q = np.array([chance[i] for i in chosen.tolist()])
            if chosen.size >= cap or fill_probability(q, need) >= self.fill_confidence:
                break
        return RoundPlan(chosen, np.array([chance[i] for i in chosen.tolist()]))


def has_predictive(selector: Selector) -> bool:
    """Whether the selector predicts each prompt's rate (its :meth:`predictive` works)."""
    try:
        selector.predictive(np.arange(1))
    except TypeError:
        return False
    return True
