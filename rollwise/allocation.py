"""Test-time compute allocation: how many samples each prompt gets, from predicted success rates.

A prompt with success rate g that is sampled n times is solved (at least one correct sample) with
probability ``1 - (1 - g)^n``; the mean of that over prompts is the expected pass@k of an
allocation. Given predicted rates (e.g. from a trained GPS selector's ``predict_texts``) and a
total budget, :func:`allocate` decides the per-prompt sample counts:

* ``uniform``: the baseline. Every prompt gets ``budget // n``; the remainder goes, one sample
  each, to a fixed and evenly spread subset of prompts (prompt i ranked by the fractional part of
  ``i * 0.618...``), so the extra samples neither pile up at the start of an ordered file nor
  change place as the budget grows.
* ``greedy``: maximises the expected pass@k under the predictions. The n-th sample of a prompt
  with rate g adds ``g * (1 - g)^(n - 1)`` expected solves; these gains shrink with n, so giving
  each next sample to the largest gain (a heap) is exactly optimal for the predicted rates.
* ``window``: our reading of the quantile window in the GPS paper's test-time experiment (the
  paper does not spell the rule out): prompts predicted hopeless or easy get few samples, a middle
  band of predicted rates gets the rest. The rule implemented here: with ``(lower, upper) =
  quantiles`` (default ``(0.25, 0.75)``), the band is every prompt whose predicted rate lies
  between the ``lower`` quantile and the ``upper`` quantile of the predictions (both taken as
  prediction values, so ties are treated alike and the band is never empty). Prompts outside the
  band get ``min_per_prompt`` samples; the band shares the rest evenly, the remainder going to the
  band prompts predicted closest to 0.5. The default quantiles are this package's choice, not
  constants taken from the paper.

Uncertain predictions. ``greedy`` can also maximise the expected pass@k under a predictive
*distribution* of each prompt's rate, so that samples go where they are expected to pay given
how uncertain the predictions are: with ``concentration=c`` each rate is ``Beta(p c, (1 - p) c)``
around its prediction ``p`` (the n-th sample then adds
``E[g (1 - g)^(n - 1)] = B(a + 1, b + n - 1) / B(a, b)``; the form
:class:`rollwise.calibration.BetaBinomialCalibration` fits), or ``pred`` is a 2-D array of
predictive samples (S, n) and the gains are averaged over them. Either way the gains still shrink
with n, so the heap stays exactly optimal for that objective. ``window`` and ``uniform`` use the
mean prediction.

Predictions that are sometimes no better than a guess. With ``contamination=e`` each prompt's
rate comes, with probability ``1 - e``, from its own predictive distribution (any of the three
above) and, with probability ``e``, from that of a prompt drawn at random among those being
allocated: the n-th sample then adds ``(1 - e) own_i(n) + e * mean_j own_j(n)``. A prompt
predicted always or never solved keeps a share of the population's gains instead of none, so
large budgets still reach it; the gains still shrink with n and the heap stays optimal.
:meth:`rollwise.calibration.BetaBinomialCalibration.fit_contamination` estimates ``e`` from the
selector's first observations of prompts, its only out-of-sample evidence about prompts it has
never seen.

A guard against confidently wrong predictions: with ``uniform_share=s`` the method allocates
only the rest of the budget, and ``u = floor(s * budget)`` samples (at most what the floor leaves)
are added exactly as uniform allocation spends a budget of ``u``. Every prompt then has at least
what uniform allocation at budget ``u`` gives it, so the expected pass@k is never below
uniform's at ``s * budget``, whatever the predictions: to match uniform's pass@k the guarded
allocation needs at most about ``1 / s`` times uniform's samples. Both parts grow with the
budget, so allocations stay nested.

Every method gives each prompt at least ``min_per_prompt`` samples; ``uniform`` and ``window``
spend the whole budget, ``greedy`` stops early only when every remaining marginal gain is zero
(all predictions exactly 0 or 1), so its counts may sum to less than the budget.

Allocations are nested in the budget (one more sample never takes one away from a prompt), so
pass@k grows with the budget and :func:`budget_to_reach` can bisect over integer budgets: that
is how "samples saved at equal pass@k" is measured (:func:`saving_vs_uniform`,
:func:`compare_allocations`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rollwise.validation import check_int, check_number

METHODS = ("greedy", "window", "uniform")
DEFAULT_QUANTILES = (0.25, 0.75)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_TOL = 1e-12  # pass@k comparisons: different summation orders of equal allocations
_BETA_EDGE = 1e-9  # Beta means are kept inside (0, 1)


# ---- validation ----------------------------------------------------------------------------
def _check_rates(values: Any, arg: str) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{arg} must be a 1-D array of rates in [0, 1]: {err}") from err
    if arr.ndim != 1:
        raise ValueError(f"{arg} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{arg} is empty: there are no prompts to allocate samples to")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"{arg} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{arg} contains NaN or inf (prompt {int(np.flatnonzero(~np.isfinite(arr))[0])})")
    if arr.min() < 0.0 or arr.max() > 1.0:
        bad = int(np.flatnonzero((arr < 0) | (arr > 1))[0])
        raise ValueError(f"{arg} must lie in [0, 1]; prompt {bad} has {arr[bad]!r}")
    return arr


def _check_counts(counts: Any, n: int) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"counts must be 1-D with one entry per prompt ({n}), got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"counts must hold integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError("counts must be >= 0")
    return arr.astype(np.int64)


def _check_quantiles(quantiles: Any) -> tuple[float, float]:
    try:
        lower, upper = (float(q) for q in quantiles)
    except (TypeError, ValueError):
        raise TypeError(f"quantiles must be two numbers (lower, upper), got {quantiles!r}") from None
    if not (0.0 <= lower <= upper <= 1.0):
        raise ValueError(f"quantiles must satisfy 0 <= lower <= upper <= 1, got ({lower}, {upper})")
    return lower, upper


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


# ---- allocation ----------------------------------------------------------------------------
def allocate(
    pred: Any,
    budget: int,
    method: str = "greedy",
    min_per_prompt: int = 1,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    concentration: float | None = None,
    uniform_share: float = 0.0,
    contamination: float = 0.0,
) -> np.ndarray:
    """Per-prompt sample counts (int64, one per prompt) summing to at most ``budget``.

    ``pred`` holds predicted success rates in [0, 1], or predictive samples of them, shape
    (S, n prompts); ``method`` is ``greedy`` (maximum expected pass@k under the predictions, or
    under ``Beta(p c, (1 - p) c)`` rates with ``concentration=c``), ``window`` (the quantile
    window; ``quantiles=(lower, upper)``) or ``uniform``. Each prompt gets at least
    ``min_per_prompt`` samples, so ``budget`` must be at least ``n * min_per_prompt``;
    ``uniform_share`` of the budget is spread as uniform allocation spreads it (the guard);
    ``contamination`` mixes each prompt's predictive distribution with the population's (greedy).
    See the module docstring for the rules.
    """
    method = _check_method(method)
    samples = _check_samples(pred, "pred")
    g = samples.mean(axis=0)
    budget = int(check_int("budget", budget, 0))
    floor = int(check_int("min_per_prompt", min_per_prompt, 0))
    lower, upper = _check_quantiles(quantiles)
    check_number("uniform_share", uniform_share, 0.0, 1.0)
    check_number("contamination", contamination, 0.0, 1.0)
    if concentration is not None:
        check_number("concentration", concentration, 0.0, None, closed="neither")
        if samples.shape[0] > 1:
            raise ValueError("give predictive samples or a concentration, not both")
    n = g.size
    if budget < n * floor:
        raise ValueError(
            f"budget={budget} is smaller than len(pred) * min_per_prompt = {n} * {floor} = {n * floor}"
        )
    if method == "uniform":
        return _uniform(n, budget)
    guard = min(int(uniform_share * budget), budget - n * floor)
    rest = budget - guard
    if method == "greedy":
        counts = _greedy(_next_gain(samples, concentration, contamination), n, rest, floor)
    else:
        counts = _window(g, rest, floor, lower, upper)
    return counts + _uniform(n, guard) if guard else counts


def _check_samples(pred: Any, arg: str) -> np.ndarray:
    """Rates (n,) or predictive samples (S, n), as a (S, n) float array of rates."""
    arr = np.asarray(pred) if not isinstance(pred, np.ndarray) else pred
    if getattr(arr, "ndim", 1) == 2:
        if arr.shape[0] == 0:
            raise ValueError(f"{arg}: no predictive samples (shape {arr.shape})")
        return np.stack([_check_rates(row, arg) for row in arr])
    return _check_rates(pred, arg)[None, :]


def _next_gain(samples: np.ndarray, concentration: float | None, contamination: float = 0.0):
    """``gain(i, c)``: the expected solves the (c + 1)-th sample of prompt i adds."""
    if concentration is None:
        if samples.shape[0] == 1:
            g = samples[0]
            own = lambda i, c: float(g[i] * (1.0 - g[i]) ** c)  # noqa: E731
            every = lambda c: g * (1.0 - g) ** c  # noqa: E731
        else:
            own = lambda i, c: float(np.mean(samples[:, i] * (1.0 - samples[:, i]) ** c))  # noqa: E731
            every = lambda c: np.mean(samples * (1.0 - samples) ** c, axis=0)  # noqa: E731
    else:
        from scipy.special import betaln  # here: the command line lists methods without scipy

        mu = np.clip(samples[0], _BETA_EDGE, 1.0 - _BETA_EDGE)
        a, b = mu * concentration, (1.0 - mu) * concentration
        base = betaln(a, b)
        own = lambda i, c: float(np.exp(betaln(a[i] + 1.0, b[i] + c) - base[i]))  # noqa: E731
        every = lambda c: np.exp(betaln(a + 1.0, b + c) - base)  # noqa: E731
    if not contamination:
        return own
    population: dict[int, float] = {}  # c -> mean over prompts of their own gain

    def mixed(i: int, c: int) -> float:
        if c not in population:
            population[c] = float(np.mean(every(c)))
        return (1.0 - contamination) * own(i, c) + contamination * population[c]

    return mixed


def _spread_order(n: int) -> np.ndarray:
    """A fixed order of prompts whose every prefix is spread evenly over the index range."""
    return np.argsort(np.mod(np.arange(n) * _GOLDEN, 1.0), kind="stable")


def _uniform(n: int, budget: int) -> np.ndarray:
    counts = np.full(n, budget // n, dtype=np.int64)
    counts[_spread_order(n)[: budget % n]] += 1
    return counts


def _greedy(gain, n: int, budget: int, floor: int) -> np.ndarray:
    counts = np.full(n, floor, dtype=np.int64)
    spare = budget - floor * n
    # (negated gain of the next sample, prompt index): ties go to the lower index
    heap = [(-v, i) for i in range(n) if (v := gain(i, floor)) > 0.0]
    heapq.heapify(heap)
    while spare > 0 and heap:
        _, i = heapq.heappop(heap)
        counts[i] += 1
        spare -= 1
        v = gain(i, int(counts[i]))
        if v > 0.0:
            heapq.heappush(heap, (-v, i))
    return counts


def _window(g: np.ndarray, budget: int, floor: int, lower: float, upper: float) -> np.ndarray:
    lo = np.quantile(g, lower, method="lower")
    hi = np.quantile(g, upper, method="higher")
    band = np.flatnonzero((g >= lo) & (g <= hi))
    counts = np.full(g.size, floor, dtype=np.int64)
    spare = budget - floor * g.size
    counts[band] += spare // band.size
    closest = band[np.argsort(np.abs(g[band] - 0.5), kind="stable")]
    counts[closest[: spare % band.size]] += 1
    return counts


# ---- evaluation ----------------------------------------------------------------------------
def expected_pass_at_k(rates: Any, counts: Any) -> float:
    """Mean over prompts of ``1 - (1 - rate)^count``: the expected fraction solved at least once."""
    g = _check_rates(rates, "rates")
    n = _check_counts(counts, g.size)
    return float(np.mean(1.0 - (1.0 - g) ** n))


def budget_to_reach(
    pred: Any,
    target: float,
    method: str = "greedy",
    *,
    rates: Any = None,
    min_per_prompt: int = 1,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    max_budget: int | None = None,
    concentration: float | None = None,
    uniform_share: float = 0.0,
    contamination: float = 0.0,
) -> int | None:
    """Smallest total budget at which ``allocate(pred, budget, method)`` reaches an expected
    pass@k of ``target``, measured under ``rates`` (default: the predictions themselves).

    Exponential search then bisection over integer budgets from ``len(pred) * min_per_prompt``
    up to ``max_budget`` (default ``64 * len(pred) * max(1, min_per_prompt)``); ``None`` when
    ``target`` is not reached by then. Relies on allocations being nested in the budget
    (``concentration``, ``uniform_share`` and ``contamination`` as in :func:`allocate`; ``pred``
    may be samples).
    """
    method = _check_method(method)
    samples = _check_samples(pred, "pred")
    g = samples.mean(axis=0)
    truth = g if rates is None else _check_rates(rates, "rates")
    if truth.size != g.size:
        raise ValueError(f"rates has {truth.size} entries but pred has {g.size}")
    check_number("target", target, 0.0, 1.0)
    floor = int(check_int("min_per_prompt", min_per_prompt, 0))
    _check_quantiles(quantiles)
    lo = g.size * floor
    cap = 64 * g.size * max(1, floor) if max_budget is None else int(check_int("max_budget", max_budget, 0))
    if cap < lo:
        raise ValueError(f"max_budget={cap} is smaller than len(pred) * min_per_prompt = {lo}")

    def reached(budget: int) -> bool:
        counts = allocate(samples if samples.shape[0] > 1 else g, budget, method, floor,
                          quantiles=quantiles, concentration=concentration, uniform_share=uniform_share,
                          contamination=contamination)
        return expected_pass_at_k(truth, counts) >= float(target) - _TOL

    if reached(lo):
        return lo
    step = max(1, g.size)
    hi = min(lo + step, cap)
    while not reached(hi):  # invariant: lo not reached
        if hi == cap:
            return None
        lo, step = hi, step * 2
        hi = min(lo + step, cap)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return hi


def saving_vs_uniform(
    pred: Any,
    counts: Any,
    *,
    rates: Any = None,
    min_per_prompt: int = 1,
    max_budget: int | None = None,
) -> dict[str, Any]:
    """How many samples uniform allocation needs for the expected pass@k that ``counts`` reach.

    Measured under ``rates`` (default: the predictions). ``uniform_samples`` is ``None`` when
    uniform allocation does not reach it within ``max_budget``; ``saved`` is then ``None`` too.
    """
    g = _check_rates(pred, "pred")
    n = _check_counts(counts, g.size)
    truth = g if rates is None else _check_rates(rates, "rates")
    if truth.size != g.size:
        raise ValueError(f"rates has {truth.size} entries but pred has {g.size}")
    p = expected_pass_at_k(truth, n)
    floor = min(int(check_int("min_per_prompt", min_per_prompt, 0)), int(n.min()))
    need = budget_to_reach(g, p, "uniform", rates=truth, min_per_prompt=floor, max_budget=max_budget)
    used = int(n.sum())
    return {
        "pass_at_k": p,
        "samples": used,
        "uniform_samples": need,
        "saved": None if need is None else need - used,
        "saved_fraction": None if need is None else (need - used) / need if need else 0.0,
    }


# ---- comparison on known rates or recorded outcomes ----------------------------------------
def _truth(truth: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    arr = np.asarray(truth)
    if arr.ndim == 1:
        rates = _check_rates(arr, "truth")
        outcomes = None
    elif arr.ndim == 2:
        if arr.shape[1] == 0:
            raise ValueError("truth: the outcome matrix has no samples (shape (n, 0))")
        if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"truth must be numeric, got dtype {arr.dtype}")
        outcomes = arr.astype(np.float64)
        if not np.all((outcomes == 0.0) | (outcomes == 1.0)):
            raise ValueError("truth: a 2-D outcome matrix must hold 0/1 (incorrect/correct) samples")
        rates = outcomes.mean(axis=1)
    else:
        raise ValueError(f"truth must be rates (n,) or 0/1 outcomes (n, m), got shape {arr.shape}")
    if rates.size != n:
        raise ValueError(f"truth has {rates.size} prompts but pred has {n}")
    return rates, outcomes


def _sampled_pass(counts: np.ndarray, first_success: np.ndarray | None,
                  outcomes: np.ndarray | None) -> tuple[float, int]:
    """Realised pass@k: Bernoulli draws (common random numbers), or the unbiased estimator of
    drawing ``count`` of the recorded outcomes without replacement (counts capped at m)."""
    if outcomes is None:
        return float(np.mean(first_success <= counts)), 0
    m = outcomes.shape[1]
    c = outcomes.sum(axis=1)
    use = np.minimum(counts, m)
    solved = np.empty(counts.size)
    for i, (k, ci) in enumerate(zip(use, c, strict=True)):
        wrong = m - ci
        solved[i] = 1.0 if k > wrong else 1.0 - np.prod((wrong - np.arange(k)) / (m - np.arange(k)))
    return float(solved.mean()), int(np.sum(counts > m))


def compare_allocations(
    pred: Any,
    truth: Any,
    budgets: Sequence[int],
    seed: int = 0,
    *,
    methods: Sequence[str] = ("uniform", "greedy", "window"),
    oracle: bool = True,
    min_per_prompt: int = 1,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    concentration: float | None = None,
    uniform_share: float = 0.0,
    contamination: float = 0.0,
) -> dict[str, Any]:
    """Compare allocation methods driven by predictions ``pred`` against the truth.

    ``truth`` is either the true per-prompt success rates (n,) or a 0/1 matrix (n, m) of recorded
    outcomes (e.g. m real samples per prompt from an LLM; rates are their means). For each total
    budget in ``budgets`` and each method (plus ``oracle``: greedy on the true rates, the upper
    bound), the result holds the allocation's

    * ``expected_pass_at_k``: under the true rates;
    * ``predicted_pass_at_k``: under the predictions (what the allocator believed);
    * ``sampled_pass_at_k``: realised. With true rates: seeded Bernoulli draws, the same draws for
      every method and budget (prompt i is solved with n samples iff its first success, a
      geometric draw, comes within n). With outcomes: the unbiased estimator of drawing n of the
      m recorded samples without replacement; counts above m are capped (``capped_prompts``).

    ``savings[method]`` gives, per budget, the smallest budget at which the method reaches
    uniform's expected pass@k at that budget, and the fraction of samples saved.
    ``concentration``, ``uniform_share`` and ``contamination`` go to every method's
    :func:`allocate` (not the oracle's); ``pred`` may be predictive samples (S, n), summarised by
    their mean where a method needs one rate.
    """
    samples = _check_samples(pred, "pred")
    g = samples.mean(axis=0)
    src = samples if samples.shape[0] > 1 else g
    extra = {"concentration": concentration, "uniform_share": uniform_share,
             "contamination": contamination}
    rates, outcomes = _truth(truth, g.size)
    floor = int(check_int("min_per_prompt", min_per_prompt, 0))
    _check_quantiles(quantiles)
    for m in methods:
        _check_method(m)
    if isinstance(budgets, int | np.integer) or len(budgets) == 0:
        raise ValueError("budgets must be a non-empty sequence of total budgets")
    budgets = [int(check_int("budgets", b, g.size * floor)) for b in budgets]
    seed = int(check_int("seed", seed, 0))
    first = None
    if outcomes is None:
        rng = np.random.default_rng(seed)
        first = np.full(g.size, np.inf)
        live = rates > 0
        first[live] = rng.geometric(rates[live])
    names = list(dict.fromkeys(methods)) + (["oracle"] if oracle else [])

    def plan(name: str, budget: int) -> np.ndarray:
        if name == "oracle":
            return allocate(rates, budget, "greedy", floor)
        return allocate(src, budget, name, floor, quantiles=quantiles, **extra)

    table: dict[str, dict[str, list]] = {}
    for name in names:
        rows: dict[str, list] = {k: [] for k in (
            "total_samples", "expected_pass_at_k", "predicted_pass_at_k", "sampled_pass_at_k",
            "max_per_prompt", "capped_prompts")}
        for b in budgets:
            counts = plan(name, b)
            sampled, capped = _sampled_pass(counts, first, outcomes)
            rows["total_samples"].append(int(counts.sum()))
            rows["expected_pass_at_k"].append(expected_pass_at_k(rates, counts))
            rows["predicted_pass_at_k"].append(expected_pass_at_k(g, counts))
            rows["sampled_pass_at_k"].append(sampled)
            rows["max_per_prompt"].append(int(counts.max()))
            rows["capped_prompts"].append(capped)
        table[name] = rows
    savings: dict[str, list[dict[str, Any]]] = {}
    uniform = [expected_pass_at_k(rates, allocate(g, b, "uniform", floor)) for b in budgets]
    for name in names:
        if name == "uniform":
            continue
        source, method = (rates, "greedy") if name == "oracle" else (src, name)
        kw = {} if name == "oracle" else extra
        out = []
        for b, target in zip(budgets, uniform, strict=True):
            need = budget_to_reach(source, target, method, rates=rates, min_per_prompt=floor,
                                   quantiles=quantiles, **kw)
            out.append({"budget": b, "uniform_pass_at_k": target, "budget_to_match": need,
                        "saving": None if need is None else 1.0 - need / b})
        savings[name] = out
    return {
        "n_prompts": int(g.size),
        "truth": "rates" if outcomes is None else "outcomes",
        "recorded_samples_per_prompt": None if outcomes is None else int(outcomes.shape[1]),
        "seed": seed,
        "min_per_prompt": floor,
        "quantiles": list(_check_quantiles(quantiles)),
        "budgets": budgets,
        "methods": table,
        "savings": savings,
    }


__all__ = ["METHODS", "allocate", "expected_pass_at_k", "budget_to_reach", "saving_vs_uniform",
           "compare_allocations"]
