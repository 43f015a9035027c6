"""Drive selectors (and DAPO dynamic sampling, and the oracle) through a world, step by step."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rollwise.budgets import PromptBudgets
from rollwise.dynamic_sampling import DynamicSampler, DynamicSamplingBuffer, informative_mask
from rollwise.metrics import (
    Stopwatch,
    effective_sample_ratio,
    expected_calibration_error,
    reliability_curve,
    spearman,
)
from rollwise.pool import PromptPool
from rollwise.selectors import Selector, make_selector
from rollwise.sim.world import PromptWorld
from rollwise.strategies import BENCH_ONLY, BUDGETED, bench_names, bench_strategy


def known_strategies() -> list[str]:
    return bench_names()


class OracleSelector(Selector):
    """Knows the true success rates and takes the batch closest to ``target``, at no cost.

    Not a deployable strategy: the limit no selector can beat at choosing intermediate prompts.
    """

    name = "oracle"

    def __init__(self, pool: PromptPool, batch_size: int, world: PromptWorld,
                 target: float = 0.5, seed: int = 0) -> None:
        super().__init__(pool, batch_size, seed)
        self.world, self.target = world, target

    def _select(self, candidates, size, group_size):
        cand = np.arange(len(self.pool)) if candidates is None else candidates
        gamma = self.world.gamma(cand)
        value = (-np.abs(gamma - self.target) if group_size is None
                 else 1.0 - gamma**group_size - (1.0 - gamma) ** group_size)
        order = np.argsort(-value, kind="stable")
        return cand[order[:size]]

    def _observe(self, indices, successes, counts) -> None:
        pass

    def _predict(self, indices):
        return self.world.gamma(indices)

    def predictive(self, indices):
        """The true rates, known exactly."""
        idx = self._check_indices(indices, "indices", allow_repeats=True)
        rates = self.world.gamma(np.arange(len(self.pool)) if idx is None else idx)
        return rates, np.full(rates.shape, np.inf), 0.0


@dataclass
class RunSettings:
    steps: int = 150
    batch_size: int = 32
    probe_fraction: float = 0.1  # prompts never offered for selection: Spearman on unseen prompts
    ds_max_rounds: int = 30
    # dynamic sampling (ds, NAME+ds): how rounds are sized (None: "predicted" where the selector
    # predicts each prompt, GRESO's "keep-rate" for greso, else DAPO's "full" batches), the
    # fill probability a predicted round aims at, prompts per round at most (None: 4 batches),
    # and whether surplus informative groups go to the next step
    ds_sizing: str | None = None
    ds_fill_confidence: float = 0.9
    ds_max_round_prompts: int | None = None
    ds_keep_surplus: bool = False
    hyper: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-strategy overrides
    # per-prompt budgets (the *-budget strategies): the step's rollouts stay batch_size x k
    budget_objective: str = "variance"
    budget_k_min: int = 2
    budget_k_max: int | None = None
    budget_step: int = 1  # k: whole groups, as TRL gives them (with budget_k_min=0: prompts dropped)
    # whole groups valued and learned from group by group, as TRL normalises them (else merged)
    budget_separate_groups: bool = False

    def validate(self, pool_size: int) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 <= self.probe_fraction < 1:
            raise ValueError(f"probe_fraction must lie in [0, 1), got {self.probe_fraction}")
        selectable = pool_size - int(round(self.probe_fraction * pool_size))
        if not 1 <= self.batch_size <= selectable:
            raise ValueError(
                f"batch_size must lie in [1, {selectable}] (selectable prompts), got {self.batch_size}"
            )
        PromptBudgets(max(self.batch_size * self.budget_k_min, self.budget_step),
                      k_min=self.budget_k_min, k_max=self.budget_k_max,
                      objective=self.budget_objective, step=self.budget_step)


RELIABILITY_BINS = 10
# what GPS read of its regime at each step (rollwise.regime; NaN for other strategies)
REGIME_KEYS = ("trust", "predicted_share", "repeat_excess", "cooldown")
# dynamic sampling per step (NaN without it; rollwise.dynamic_sampling.StepRecord)
DS_KEYS = ("ds_rounds", "ds_kept", "ds_surplus", "ds_filled", "ds_predicted_keep_rate",
           "ds_realised_keep_rate")


def _esr(rewards: np.ndarray | list[np.ndarray]) -> float:
    """ESR of a batch whose groups may differ in size."""
    if isinstance(rewards, list):
        return float(np.mean([r.max() > r.min() for r in rewards])) if rewards else float("nan")
    return effective_sample_ratio(rewards)


def run_one(
    strategy: str,
    pool: PromptPool,
    make_world: Callable[[int], PromptWorld],
    settings: RunSettings,
    seed: int,
    on_step: Callable[[], None] | None = None,
    chosen: list[np.ndarray] | None = None,
    rewards: list[np.ndarray] | None = None,
    save_selector: str | Path | None = None,
) -> dict[str, list[float]]:
    """Run one strategy for ``settings.steps`` steps on a fresh world; per-step logs. The batch
    trained on at each step is appended to ``chosen`` when given, its rewards (prompts x k) to
    ``rewards``; the final selector is saved
    to ``save_selector`` when given (not for ds and the oracle)."""
    if strategy not in known_strategies():
        raise ValueError(f"unknown strategy {strategy!r}; choose from {known_strategies()}")
    world = make_world(seed)
    n, b = len(pool), settings.batch_size
    split_rng = np.random.default_rng([seed, 7])
    perm = split_rng.permutation(n)
    n_probe = int(round(settings.probe_fraction * n))
    probe, candidates = np.sort(perm[:n_probe]), np.sort(perm[n_probe:])
    roll_rng = np.random.default_rng([seed, 11])  # same rollout stream for every strategy
    hyper = settings.hyper.get(strategy, {})
    buffer = budget = posterior = sampler = None
    name, dynamic = bench_strategy(strategy)
    base, source = BUDGETED.get(name, (name, None))
    if strategy == "oracle-budget":
        base, source = "oracle", "truth"
    if source is not None:
        budget = PromptBudgets(b * world.config.k, k_min=settings.budget_k_min,
                               k_max=settings.budget_k_max, objective=settings.budget_objective,
                               step=settings.budget_step,
                               separate_groups=settings.budget_separate_groups)
    if source == "mopps":
        posterior = make_selector("mopps", pool, b, seed=seed)
    if base == "oracle":
        selector: Selector = OracleSelector(pool, b, world, seed=seed, **hyper)
    else:
        selector = make_selector(base, pool, b, seed=seed, **hyper)
    if dynamic:
        buffer = DynamicSamplingBuffer(b, max_rounds=settings.ds_max_rounds,
                                       keep_surplus=settings.ds_keep_surplus)
        sizing = settings.ds_sizing
        if strategy == "ds":
            sizing = "full"  # DAPO's generation batches
        sampler = DynamicSampler(selector, world.config.k, sizing=sizing,
                                 fill_confidence=settings.ds_fill_confidence,
                                 max_round_prompts=settings.ds_max_round_prompts)
    sw = Stopwatch()
    log: dict[str, list[float]] = {k: [] for k in (
        "rollouts", "accuracy", "esr", "spearman_batch", "spearman_unseen", "ece_unseen",
        "sec_select", "sec_observe", "group_size_cv", *REGIME_KEYS, *DS_KEYS)}
    log["accuracy0"] = [world.heldout_accuracy()]
    spent = 0
    for _ in range(settings.steps):
        sel0, obs0 = sw.seconds.get("select", 0.0), sw.seconds.get("observe", 0.0)
        sizes = None  # per-prompt rollouts, for the budgeted strategies
        if sampler is not None:
            rolled = []
            sampler.begin_step()
            carried = buffer.kept
            while buffer.needed and sampler.left(candidates):
                kept0, surplus0 = buffer.kept, buffer.surplus
                with sw("select"):
                    plan = sampler.plan(buffer.needed, candidates)
                r = world.rollout(plan.indices, roll_rng)
                with sw("observe"):  # the next round chooses after seeing this one
                    selector.observe(plan.indices, r)
                buffer.add(plan.indices, r)
                sampler.record_round(plan, int(informative_mask(r).sum()),
                                     buffer.kept - kept0, buffer.surplus - surplus0)
                rolled.append(r)
                spent += r.size
            idx, r = buffer.pop()
            record = sampler.end_step(carried=carried)
            esr = effective_sample_ratio(np.concatenate(rolled))
            rho_batch = rho_unseen = ece_unseen = float("nan")
            if n_probe and base != "uniform":
                unseen, truth = selector.predict(probe), world.gamma(probe)
                rho_unseen = spearman(unseen, truth)
                ece_unseen = expected_calibration_error(unseen, truth)
            regime = getattr(selector, "last_regime", None) or {}
            for key in REGIME_KEYS:
                log[key].append(float(regime.get(key, np.nan)))
            for key in DS_KEYS:
                value = getattr(record, key.removeprefix("ds_"))
                log[key].append(float(value) if value == value else float("nan"))
        else:
            for key in DS_KEYS:
                log[key].append(float("nan"))
            with sw("select"):
                idx = selector.select(candidates)
            regime = getattr(selector, "last_regime", None) or {}
            for key in REGIME_KEYS:
                log[key].append(float(regime.get(key, np.nan)))
            rho_batch = spearman(selector.predict(idx), world.gamma(idx))
            rho_unseen = ece_unseen = float("nan")
            if n_probe:
                unseen, truth = selector.predict(probe), world.gamma(probe)
                rho_unseen = spearman(unseen, truth)
                ece_unseen = expected_calibration_error(unseen, truth)
            if budget is not None:
                with sw("select"):
                    if source == "truth":
                        mean, conc, cont = world.gamma(idx), np.inf, 0.0
                    else:
                        source_sel = posterior if posterior is not None else selector
                        mean, conc, cont = source_sel.predictive(idx)
                    sizes = budget.split(mean, conc, cont)
                    if not sizes.all():  # prompts given no rollouts are dropped from the step
                        idx, sizes = idx[sizes > 0], sizes[sizes > 0]
            r = world.rollout(idx, roll_rng, sizes)
            spent += int(sizes.sum()) if sizes is not None else r.size
            esr = _esr(r)
            with sw("observe"):
                selector.observe(idx, r)
                if posterior is not None:
                    posterior.observe(idx, r)
        log["group_size_cv"].append(float(np.std(sizes) / np.mean(sizes)) if sizes is not None
                                    else float("nan"))
        if sizes is not None and settings.budget_separate_groups:  # one update term per group
            step = settings.budget_step
            world.learn(np.repeat(idx, sizes // step),
                        [g[j:j + step] for g in r for j in range(0, g.size, step)])
        else:
            world.learn(idx, r)
        if chosen is not None:
            chosen.append(np.asarray(idx).copy())
        if rewards is not None:  # (prompts, k), or a list of groups of unequal size
            rewards.append([g.copy() for g in r] if isinstance(r, list) else np.asarray(r).copy())
        log["rollouts"].append(spent)
        log["accuracy"].append(world.heldout_accuracy())
        log["esr"].append(esr)
        log["spearman_batch"].append(rho_batch)
        log["spearman_unseen"].append(rho_unseen)
        log["ece_unseen"].append(ece_unseen)
        log["sec_select"].append(sw.seconds.get("select", 0.0) - sel0)
        log["sec_observe"].append(sw.seconds.get("observe", 0.0) - obs0)
        if on_step is not None:
            on_step()
    if n_probe and strategy != "ds":  # the final unseen predictions' calibration, raw and calibrated
        unseen, truth = selector.predict(probe), world.gamma(probe)
        curve = reliability_curve(unseen, truth, RELIABILITY_BINS)
        count = np.asarray(curve["count"], dtype=float)
        log["reliability_count"] = count.tolist()
        log["reliability_predicted_sum"] = (np.nan_to_num(curve["mean_predicted"]) * count).tolist()
        log["reliability_true_sum"] = (np.nan_to_num(curve["mean_true"]) * count).tolist()
        log["ece_unseen_calibrated"] = [expected_calibration_error(
            selector.calibration().mean(unseen), truth) if hasattr(selector, "calibration") else np.nan]
    if save_selector is not None and strategy not in BENCH_ONLY and base != "oracle":
        selector.save(save_selector)
    return log


def rollouts_to_reach(rollouts: np.ndarray, accuracy: np.ndarray, target: float) -> float:
    """Rollouts at which the accuracy curve first reaches ``target`` (linear interpolation
    between steps); NaN if never reached."""
    hit = np.flatnonzero(accuracy >= target)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(rollouts[0])
    a0, a1, r0, r1 = accuracy[i - 1], accuracy[i], rollouts[i - 1], rollouts[i]
    return float(r0 + (target - a0) / (a1 - a0) * (r1 - r0)) if a1 > a0 else float(r1)


def summarise(
    logs: dict[str, list[dict[str, list[float]]]], target: float | None = None, at_step: int = 50
) -> dict[str, Any]:
    """Seed-averaged summary per strategy. ``target`` defaults to uniform's final accuracy."""
    with warnings.catch_warnings():  # all-NaN columns (strategies without predictions) are fine
        warnings.simplefilter("ignore", RuntimeWarning)
        return _summarise(logs, target, at_step)


def _summarise(logs, target, at_step) -> dict[str, Any]:
    mean = {s: {k: np.nanmean(np.array([run[k] for run in runs], dtype=float), axis=0)
                for k in runs[0]} for s, runs in logs.items()}
    if target is None:
        if "uniform" not in mean:
            raise ValueError("target is required when uniform is not among the strategies")
        target = float(mean["uniform"]["accuracy"][-1])
    rows = {}
    for s, m in mean.items():
        runs = logs[s]
        reach = rollouts_to_reach(m["rollouts"], m["accuracy"], target)
        finals = np.array([run["accuracy"][-1] for run in runs])
        step = min(at_step, len(m["spearman_unseen"])) - 1
        rows[s] = {
            "rollouts_to_target": reach,
            "final_accuracy": float(finals.mean()),
            "final_accuracy_sd": float(finals.std()),
            "initial_accuracy": float(m["accuracy0"][0]),
            "total_rollouts": float(m["rollouts"][-1]),
            "mean_esr": float(np.nanmean(m["esr"])),
            "spearman_unseen_at_step": float(m["spearman_unseen"][step]),
            "spearman_unseen_final": float(np.nanmean(m["spearman_unseen"][-10:])),
            "spearman_batch_mean": float(np.nanmean(m["spearman_batch"])),
            "ece_unseen_final": float(np.nanmean(m.get("ece_unseen", [np.nan])[-10:])),
            "ece_unseen_calibrated": float(np.nanmean(m.get("ece_unseen_calibrated", [np.nan]))),
            "sec_per_step": float(np.mean(m["sec_select"] + m["sec_observe"])),
        }
    base = rows.get("uniform", {}).get("rollouts_to_target", float("nan"))
    ds = rows.get("ds", {}).get("rollouts_to_target", float("nan"))
    for r in rows.values():
        r["ratio_to_uniform"] = r["rollouts_to_target"] / base if base == base else float("nan")
        r["ratio_to_ds"] = r["rollouts_to_target"] / ds if ds == ds else float("nan")
    return {"target_accuracy": target, "spearman_step": at_step, "strategies": rows,
            "mean_curves": {s: {k: v.tolist() for k, v in m.items()} for s, m in mean.items()}}
