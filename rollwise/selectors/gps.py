"""GPS (arXiv 2602.01970): predict every prompt's success rate with the PPM, acquire a diverse
batch of prompts predicted near the target rate."""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from rollwise.acquisition import (
    BatchAcquisition,
    InformativeGroupUtility,
    InterStepExploration,
    IntraBatchDispersion,
    PredictedSignalScale,
    TargetRateUtility,
    centred_unit,
)
from rollwise.calibration import BetaBinomialCalibration
from rollwise.ppm import PPMConfig, PromptPredictiveModel
from rollwise.regime import (
    CoverageFloor,
    PredictorTrust,
    Reading,
    RepeatExcess,
    embedding_clusters,
)
from rollwise.selectors.base import Selector, as_numpy, check_prepared
from rollwise.threads import (
    DEFAULT_PREDICTION_WORKERS,
    DEFAULT_SELECTOR_THREADS,
    limited_threads,
    usable_cores,
)
from rollwise.validation import check_int, check_number


class GPSSelector(Selector):
    """Generalizable Predictive Prompt Selection.

    After each ``observe`` the PPM takes ``grad_steps`` optimiser steps on the ELBO over the last
    ``window`` batches. ``select`` predicts the candidates' success rates (mean over
    ``mc_samples`` latent samples from the prior given the latest batch) and builds the batch with
    :class:`~rollwise.acquisition.BatchAcquisition`: utility ``-(gamma_hat - target)^2`` plus
    ``diversity`` times (intra-batch dispersion + inter-step exploration), that weight multiplied
    by the candidates' mean predicted reward variance ``4 gamma_hat (1 - gamma_hat)`` unless
    ``scale_diversity=False`` (see :class:`~rollwise.acquisition.PredictedSignalScale`).

    Guards (:mod:`rollwise.regime`), for predictors that know less than they claim and policies
    that memorise:

    * ``coverage_floor`` and ``clusters``: the pool is split into ``clusters`` k-means clusters of
      its embeddings; over the last ``window`` batches (the PPM's) and the one being built, each
      cluster keeps at least ``coverage_floor`` times its share of the pool in the selections,
      the deficit drawn at random inside it, unless its recent groups all came back with equal
      rewards and so many that this is evidence (``floor_exempt_p``; None: any 4;
      :class:`~rollwise.regime.CoverageFloor`). No region is written off on stale predictions;
    * ``coverage`` and ``adaptive_trust``: a share of every batch is drawn at random among the
      allowed prompts, so it follows the pool's mass and keeps every region's predictions checked
      against fresh outcomes; the acquisition chooses the rest. With ``adaptive_trust`` that share
      is ``max(coverage, 1 - trust)``, ``trust`` measured from how well the predictions made
      before each of the last ``trust_window`` batches ranked its outcomes
      (:class:`~rollwise.regime.PredictorTrust`, ``trust_z``, ``trust_min_groups``): a fresh or
      misled predictor chooses nothing, one that earns trust chooses up to ``1 - coverage``;
    * ``cooldown``: a chosen prompt rests for ``cooldown`` of a pass, i.e. ``ceil(cooldown *
      N / B)`` steps over N candidates (the pool, or those a caller passes), before it can be
      chosen again; when fewer than a batch are rested, those rested longest are allowed. The
      few prompts predicted near the target can then no longer fill batch after batch (which
      lets a small policy memorise their answers); 0 disables the rule. With ``repeat_control``
      the rest applied is ``cooldown`` times the measured excess of repeats
      (:class:`~rollwise.regime.RepeatExcess` over ``repeat_window`` batches): none where
      repeats teach what first visits teach. With ``repeat_margin`` the rest comes off only as
      far as the evidence shows repeats do not outrun first visits by ``repeat_margin`` or more
      (the gap's upper confidence bound), never for want of repeats to read; ``repeat_probe``
      of each batch is then chosen among the prompts the rest holds back (those predicted
      nearest the target), so that repeats are seen early enough to read. The candidate
      stream (``candidate_ratio``) has its own epochs and no cooldown;
    * ``warmup_steps``: the first steps choose uniformly at random among the allowed prompts
      (the fixed rule that ``adaptive_trust`` replaces);
    * ``centred_diversity``: the diversity terms measure cosine distances between embeddings
      centred on the pool's mean (:func:`~rollwise.acquisition.centred_unit`). Raw cosine
      distances are largest at the embedding's outliers, which on graded pools are the hardest
      settings; after centring, distance measures direction from the pool's middle, so a
      compact region is no longer penalised for being compact. The PPM reads the raw ones.

    ``last_regime`` holds what the last ``select`` read and did (trust, repeat excess, the rest
    applied and the share of the batch chosen by prediction), for logs.

    Parameters beyond the protocol's: ``target`` (gamma*), ``diversity`` (lambda), ``intra`` and
    ``inter`` (which diversity terms are on), ``cooldown``, ``warmup_steps``, ``candidate_ratio``
    (choose from ``ratio * batch_size`` candidates instead of the whole pool, drawn epoch by epoch
    without replacement, as a trainer's dataloader hands MoPPS and GPS their candidate batches:
    every prompt is a candidate once per pass over the pool, so no prompt can be chosen step
    after step), ``calibration_window`` (observe calls whose predictions and outcomes fit
    :meth:`calibration`; selection never uses it) and ``ppm`` (a :class:`PPMConfig` or a mapping
    of its fields; ``make_selector`` also takes its fields by name) and ``device`` (where the PPM
    runs: the CPU by default, e.g. ``"cuda"`` to share a trainer's GPU; like ``threads`` a
    setting of the machine, not saved, so a state saved on a GPU loads on a CPU) and
    ``prediction_workers`` (on the CPU, the prediction over the whole pool is split into this
    many parts computed at once on threads of their own, each with ``threads`` torch threads;
    at most the usable cores; 1 with ``threads=None``; also a setting of the machine: the same
    predictions for any value). The defaults of ``make_selector("gps")``
    (:data:`rollwise.strategies.GPS_DEFAULT`) turn on the cooldown, the warm-up, the coverage
    floor and centred diversity; this class's own defaults are the paper's rule without any
    guard (with the diversity scaled).
    """

    name = "gps"

    def __init__(
        self,
        pool,
        batch_size: int,
        seed: int = 0,
        target: float = 0.5,
        diversity: float = 0.1,
        intra: bool = True,
        inter: bool = True,
        candidate_ratio: float | None = None,
        scale_diversity: bool = True,
        cooldown: float = 0.0,
        warmup_steps: int = 0,
        coverage: float = 0.0,
        coverage_floor: float = 0.0,
        clusters: int = 8,
        floor_exempt_p: float | None = 0.05,
        adaptive_trust: bool = False,
        trust_window: int = 8,
        trust_z: float = 2.0,
        trust_min_groups: int = 16,
        repeat_control: bool = False,
        repeat_window: int = 16,
        repeat_margin: float | None = None,
        repeat_probe: float = 0.0,
        centred_diversity: bool = False,
        ppm: PPMConfig | Mapping[str, Any] | None = None,
        calibration_window: int = 64,
        threads: int | None = DEFAULT_SELECTOR_THREADS,
        device: str | torch.device | None = None,
        prediction_workers: int = DEFAULT_PREDICTION_WORKERS,
    ) -> None:
        super().__init__(pool, batch_size, seed, threads)
        self.device = check_device(device)
        self.prediction_workers = prediction_workers
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target must lie in [0, 1], got {target}")
        if not (np.isfinite(diversity) and diversity >= 0):
            raise ValueError(f"diversity must be a finite number >= 0, got {diversity}")
        if candidate_ratio is not None and not (1.0 <= candidate_ratio < float("inf")):
            raise ValueError(f"candidate_ratio must be a finite number >= 1 (or None), got {candidate_ratio}")
        check_number("cooldown", cooldown, 0.0, 1.0)
        check_int("warmup_steps", warmup_steps, 0)
        check_int("calibration_window", calibration_window, 1)
        check_number("coverage", coverage, 0.0, 1.0)
        check_number("coverage_floor", coverage_floor, 0.0, 1.0)
        if floor_exempt_p is not None:
            check_number("floor_exempt_p", floor_exempt_p, 0.0, 1.0)
        check_int("clusters", clusters, 1)
        check_int("trust_window", trust_window, 1, calibration_window)
        check_int("repeat_window", repeat_window, 1, calibration_window)
        check_number("repeat_margin", repeat_margin, 0.0, 1.0, closed="right", optional=True)
        check_number("repeat_probe", repeat_probe, 0.0, 1.0, closed="left")
        self.cfg = PPMConfig.from_any(ppm)
        self.target, self.diversity = float(target), float(diversity)
        self.intra, self.inter = bool(intra), bool(inter)
        self.candidate_ratio = None if candidate_ratio is None else float(candidate_ratio)
        self.scale_diversity = bool(scale_diversity)
        self.cooldown, self.warmup_steps = float(cooldown), int(warmup_steps)
        self.calibration_window = int(calibration_window)
        self.coverage, self.adaptive_trust = float(coverage), bool(adaptive_trust)
        self.coverage_floor, self.n_clusters = float(coverage_floor), int(clusters)
        self.floor_exempt_p = None if floor_exempt_p is None else float(floor_exempt_p)
        self.repeat_control = bool(repeat_control)
        self.repeat_probe = float(repeat_probe)
        self.trust = PredictorTrust(window=int(trust_window), full_z=float(trust_z),
                                    min_groups=int(trust_min_groups))
        self.repeats = RepeatExcess(window=int(repeat_window),
                                    margin=None if repeat_margin is None else float(repeat_margin))
        self.centred_diversity = bool(centred_diversity)
        self.last_regime: dict[str, float] = {}  # what the last select read and did (for logs)
        self.acquisition = BatchAcquisition(
            TargetRateUtility(self.target),
            IntraBatchDispersion(self.diversity) if self.intra and self.diversity > 0 else None,
            InterStepExploration(self.diversity) if self.inter and self.diversity > 0 else None,
            PredictedSignalScale() if scale_diversity else None,
        )
        self._gen = torch.Generator().manual_seed(self.seed)
        # seeded init without touching the global RNG
        with torch.random.fork_rng(), limited_threads(self.threads):
            torch.manual_seed(self.seed)
            self.model = PromptPredictiveModel(pool.dim, self.cfg).to(self.device)
        self.optimizer = _adam(self.model, self.cfg)
        self._embeddings_changed()  # the coverage clusters, the diversity's and the PPM's inputs
        self._history: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(
            maxlen=self.cfg.window + 1
        )
        self._previous = np.empty(0, dtype=np.int64)  # last selected batch
        self._stream = np.empty(0, dtype=np.int64)  # this epoch's candidates not yet offered
        self._last_chosen = np.full(len(pool), -1, dtype=np.int64)  # step chosen last (-1: never)
        self._cache: tuple[int, np.ndarray] | None = None  # (step, full-pool prediction)
        self.last_loss: float | None = None  # the negative ELBO of the last optimiser step
        # calibration data: per observe call, (predictions made before it, successes, k, whether
        # it was the prompt's first observation)
        self._outcomes: deque[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = deque(
            maxlen=self.calibration_window)
        self._observed = np.zeros(len(pool), dtype=bool)  # prompts observed at least once
        self._calibration: tuple[int, BetaBinomialCalibration] | None = None

    def _embeddings_changed(self) -> None:
        pool = self.pool
        self.floor = (CoverageFloor(embedding_clusters(pool.embeddings, self.n_clusters, self.seed),
                                    floor=self.coverage_floor, window=self.cfg.window,
                                    exempt_p=self.floor_exempt_p)
                      if self.coverage_floor > 0 else None)
        # the embeddings the diversity terms see (the PPM always reads the pool's own)
        self._div_emb = (centred_unit(pool.embeddings) if self.centred_diversity
                         else pool.embeddings)
        self._emb = torch.from_numpy(np.array(pool.embeddings)).to(self.device)
        self._cache = None  # predictions read the old embeddings
        self._calibration = None

    @property
    def prediction_workers(self) -> int:
        """Threads that compute the prediction over the whole pool at once (see the class)."""
        return self._prediction_workers

    @prediction_workers.setter
    def prediction_workers(self, value: int) -> None:
        check_int("prediction_workers", value, 1)
        self._prediction_workers = int(value)

    def _workers(self) -> int:
        if self.threads is None or self.device.type != "cpu":
            return 1
        return min(self._prediction_workers, usable_cores())

    def hyper_params(self) -> dict[str, Any]:
        return {"target": self.target, "diversity": self.diversity, "intra": self.intra,
                "inter": self.inter, "candidate_ratio": self.candidate_ratio,
                "scale_diversity": self.scale_diversity, "cooldown": self.cooldown,
                "warmup_steps": self.warmup_steps, "calibration_window": self.calibration_window,
                "coverage": self.coverage, "coverage_floor": self.coverage_floor,
                "clusters": self.n_clusters, "floor_exempt_p": self.floor_exempt_p,
                "adaptive_trust": self.adaptive_trust,
                "trust_window": self.trust.window, "trust_z": self.trust.full_z,
                "trust_min_groups": self.trust.min_groups, "repeat_control": self.repeat_control,
                "repeat_window": self.repeats.window, "repeat_margin": self.repeats.margin,
                "repeat_probe": self.repeat_probe,
                "centred_diversity": self.centred_diversity, "ppm": self.cfg.as_dict()}

    # ---- selection -------------------------------------------------------------------------
    def _select(self, candidates: np.ndarray | None, size: int,
                group_size: int | None) -> np.ndarray:
        trust, repeats = self.regime()
        # until repeats have been seen next to first visits, rest prompts as if they memorise
        excess = repeats.value if np.isfinite(repeats.statistic) else 1.0
        cooldown = self.cooldown * (excess if self.repeat_control else 1.0)
        probes = np.empty(0, dtype=np.int64)
        if candidates is None and self.candidate_ratio is not None:
            candidates = self._next_candidates(size)  # epoch by epoch already: no pass record
        elif cooldown > 0:
            rested = self._rested(candidates, cooldown, size)
            if self.repeat_control and self.repeat_probe > 0 and self.step >= self.warmup_steps:
                probes = self._probes(candidates, rested, size)
            candidates = np.setdiff1d(rested, probes) if probes.size else rested
        pick = candidates if candidates is not None else np.arange(len(self.pool))
        fill = size - probes.size  # what the usual rule chooses
        if self.step < self.warmup_steps:
            n_cover = fill
        else:
            share = max(self.coverage, 1.0 - trust.value) if self.adaptive_trust else self.coverage
            n_cover = min(fill, int(round(share * size)))
        # the covering part, drawn at random so that it follows the pool's mass (never one region
        # or the embedding's outliers) and keeps every region's predictions checked: first the
        # draws owed to regions under their floor, then as many more as trust asks for
        owed = (self.floor.draw([(h[0], h[1]) for h in self._history], pick, fill,
                                self.rng) if self.floor is not None else np.empty(0, np.int64))
        if owed.size:
            others = np.setdiff1d(pick, owed)
            more = min(max(0, n_cover - owed.size), others.size)
            cover = np.concatenate([owed, np.sort(self.rng.choice(others, size=more, replace=False))
                                    if more else np.empty(0, np.int64)])
            n_cover = cover.size
        else:
            cover = (np.sort(self.rng.choice(pick, size=n_cover, replace=False)) if n_cover
                     else np.empty(0, dtype=np.int64))
        rest = pick if not n_cover else np.setdiff1d(pick, cover, assume_unique=True)
        if n_cover < fill:
            pred, emb = self._predict(rest), self._div_emb[rest]
            prev = self._div_emb[self._previous] if self._previous.size else None
            acquisition = self.acquisition
            if group_size is not None:  # dynamic sampling keeps informative groups: value those
                cal = self.calibration()
                utility = InformativeGroupUtility(group_size, cal.concentration,
                                                  cal.contamination, cal.mean)
                acquisition = replace(acquisition, utility=utility)
            local = acquisition.select(pred, emb, fill - n_cover, prev)
            chosen = np.concatenate([probes, cover, rest[local]])
        else:
            chosen = np.concatenate([probes, cover])
        self.last_regime = {
            "trust": trust.value, "trust_rho": trust.statistic, "trust_groups": trust.n,
            "repeat_excess": repeats.value, "repeat_gap": repeats.statistic,
            "cooldown": cooldown, "predicted_share": 1.0 - n_cover / size,
            "floor_draws": int(owed.size), "repeat_probes": int(probes.size)}
        self._previous = chosen.copy()
        self._last_chosen[chosen] = self.step
        return chosen

    def regime(self) -> tuple[Reading, Reading]:
        """The predictor's trust and the repeats' excess, read from the recent observations
        (:mod:`rollwise.regime`); a pure function of the state."""
        return self.trust(self._outcomes), self.repeats(self._outcomes)

    def _probes(self, candidates: np.ndarray | None, rested: np.ndarray,
                size: int) -> np.ndarray:
        """Up to ``repeat_probe`` of a batch among the prompts the rest holds back, those
        predicted nearest the target: the repeats GPS would make without the rest, observed so
        that the repeat reading has repeats to read (under a rest they are few and late)."""
        allowed = np.arange(len(self.pool)) if candidates is None else candidates
        held = np.setdiff1d(allowed, rested)
        n = min(held.size, int(round(self.repeat_probe * size)))
        if not n:
            return np.empty(0, dtype=np.int64)
        gap = (self._predict(held) - self.target) ** 2
        return np.sort(held[np.argsort(gap, kind="stable")[:n]])

    def _rested(self, candidates: np.ndarray | None, cooldown: float, size: int) -> np.ndarray:
        """The candidates (default: the pool) not chosen in the last ``ceil(cooldown * N / B)``
        steps; when fewer than ``size`` are, every candidate rested at least as long as the
        size-th longest rested one."""
        allowed = np.arange(len(self.pool)) if candidates is None else candidates
        rest = int(np.ceil(cooldown * allowed.size / self.batch_size))
        last = self._last_chosen[allowed]
        fresh = (last < 0) | (self.step - last >= rest)
        if int(fresh.sum()) >= size:
            return allowed[fresh]
        cut = np.sort(last)[size - 1]
        return allowed[last <= cut]

    def _next_candidates(self, size: int) -> np.ndarray:
        n = len(self.pool)
        m = min(n, max(size, int(np.ceil(self.candidate_ratio * size))))
        if self._stream.size < m:  # the epoch's rest, then every other prompt in a fresh order
            fresh = self.rng.permutation(n)
            self._stream = np.concatenate([self._stream, fresh[~np.isin(fresh, self._stream)]])
        out, self._stream = np.sort(self._stream[:m]), self._stream[m:]
        return out

    # ---- prediction ------------------------------------------------------------------------
    def _predict(self, indices: np.ndarray | None) -> np.ndarray:
        # The path depends on the request only, never on the cache: a small subset scored
        # directly can differ from the full pass in the last bit, and predict must be pure.
        if indices is not None and indices.size < len(self.pool) // 4:
            return self._predict_tensor(self._emb[self._index(indices)])
        if self._cache is not None and self._cache[0] == self.step:
            full = self._cache[1]
            return full if indices is None else full[indices]
        full = self._predict_tensor(self._emb)
        self._cache = (self.step, full)
        return full if indices is None else full[indices]

    def calibration(self) -> BetaBinomialCalibration:
        """The calibration of the PPM's predictions, fitted on the groups of the last
        ``calibration_window`` observe calls against the predictions made for them before their
        outcomes were known, the map kept only if it predicts the newest of them better than the
        identity (:meth:`~rollwise.calibration.BetaBinomialCalibration.fit_validated`). Its
        contamination is fitted on the groups that were their prompts' first observations,
        against the pool's current predictions
        (:meth:`~rollwise.calibration.BetaBinomialCalibration.fit_contamination`).

        (First observations alone, the closest match to never-seen prompts, cover too narrow a
        band of predictions once GPS chooses near its target: on the world a map fitted on them
        alone inverted the ranking at one checkpoint. They do say how often a prediction for a
        new prompt is wrong altogether, which is what the contamination is.)"""
        if self._calibration is not None and self._calibration[0] == self.step:
            return self._calibration[1]
        if self._outcomes:
            pred, succ, k, first = (np.concatenate(c) for c in zip(*self._outcomes, strict=True))
            fitted = BetaBinomialCalibration.fit_validated(pred, succ, k)
            if first.any():
                with limited_threads(self.threads):
                    population = self._predict(None)
                fitted = fitted.fit_contamination(pred[first], succ[first], k[first], population)
        else:
            fitted = BetaBinomialCalibration()
        self._calibration = (self.step, fitted)
        return fitted

    def predictive(self, indices: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """The PPM's predictions through :meth:`calibration`: calibrated mean, the calibration's
        concentration (one for every prompt) and contamination."""
        cal = self.calibration()
        mean = cal.mean(self.predict(indices))
        return mean, np.full(mean.shape, cal.concentration), float(cal.contamination)

    def predict_embeddings(self, embeddings: np.ndarray, calibrated: bool = False) -> np.ndarray:
        """Predicted success rates of prompts outside the pool, from their raw embeddings;
        ``calibrated``: mapped through :meth:`calibration` (what allocation should use)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.pool.dim:
            raise ValueError(f"embeddings must have shape (n, {self.pool.dim}), got {emb.shape}")
        if not np.all(np.isfinite(emb)):
            raise ValueError("embeddings contain NaN or inf")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("embeddings contain an all-zero row")
        with limited_threads(self.threads):
            raw = np.clip(self._predict_tensor(torch.from_numpy(emb / norms).to(self.device)),
                          0.0, 1.0)
        return self.calibration().mean(raw) if calibrated else raw

    def predict_texts(self, texts, embedder: Any = "wordllama", cache_dir=None,
                      calibrated: bool = False) -> np.ndarray:
        """Predicted success rates of new prompt texts (embedded with the pool's embedder);
        ``calibrated`` as in :meth:`predict_embeddings`."""
        from rollwise.embed import embed_texts

        if isinstance(texts, str | bytes):
            raise TypeError("texts must be a sequence of prompt strings, not one string "
                            "(wrap a single prompt in a list)")
        return self.predict_embeddings(embed_texts(list(texts), embedder, cache_dir=cache_dir),
                                       calibrated=calibrated)

    def _predict_tensor(self, emb: torch.Tensor) -> np.ndarray:
        # A fixed generator per (seed, step): predict is a pure function of the state.
        gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{self.step}".encode()))
        last = self._last_set()
        self.model.eval()
        return (self.model.predict(emb, last, gen, workers=self._workers())
                .cpu().numpy().astype(np.float64))

    def _set_tensor(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
        idx, rate, _ = batch
        return torch.cat([self._emb[self._index(idx)],
                          torch.from_numpy(rate.astype(np.float32)).to(self.device).unsqueeze(-1)],
                         dim=-1)

    def _index(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(indices).to(self.device)

    def _last_set(self) -> torch.Tensor | None:
        if not self._history:
            return None
        full = self._set_tensor(self._history[-1])
        size = self.cfg.encoder_set_size
        if size and full.shape[0] > size:  # a fixed subset per (seed, step): predict stays pure
            gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{self.step}:enc".encode()))
            full = full[torch.randperm(full.shape[0], generator=gen)[:size].to(self.device)]
        return full

    # ---- learning --------------------------------------------------------------------------
    def _observe(self, indices: np.ndarray, successes: np.ndarray, counts: np.ndarray) -> None:
        k = counts.astype(np.float32)
        # the predictions these outcomes answer, made before the PPM trains on them
        before = np.clip(np.asarray(self._predict(indices), dtype=np.float64), 0.0, 1.0)
        self._outcomes.append((before, successes.copy(), counts.copy(), ~self._observed[indices]))
        self._observed[indices] = True
        self._calibration = None
        self._history.append((indices.copy(), successes / counts, k))
        self._cache = None
        if self.cfg.grad_steps == 0:
            return
        hist = list(self._history)
        fit = hist[-self.cfg.window :]
        first = len(hist) - len(fit)
        prev = hist[first - 1] if first > 0 else None
        batches = [prev if prev is not None else fit[0]] + fit
        n = max(b[0].size for b in batches)
        dim = self.pool.dim
        dev = self.device
        sets = torch.zeros(len(batches), n, dim + 1, device=dev)
        mask = torch.zeros(len(batches), n, dtype=torch.bool, device=dev)
        counts = torch.zeros(len(batches), n, device=dev)
        for j, b in enumerate(batches):
            m = b[0].size
            sets[j, :m] = self._set_tensor(b)
            mask[j, :m] = True
            counts[j, :m] = torch.from_numpy(b[2]).to(dev)
        has_prev = torch.ones(len(fit), dtype=torch.bool, device=dev)
        has_prev[0] = prev is not None
        enc_sets, enc_mask = self._encoder_subsets(sets, mask, [b[0].size for b in batches])
        self.model.train()
        for _ in range(self.cfg.grad_steps):
            self.optimizer.zero_grad()
            loss = self.model.elbo_loss(sets, mask, counts, has_prev, self._gen,
                                        enc_sets, enc_mask)
            loss.backward()
            self.optimizer.step()
        self.last_loss = float(loss.detach())

    def _encoder_subsets(self, sets: torch.Tensor, mask: torch.Tensor, sizes: list[int]):
        """Random subsets of at most ``encoder_set_size`` elements per batch for the encoders:
        their cost grows with the square of the set size, and a few dozen (embedding, rate)
        pairs summarise a batch's optimisation state as well as hundreds."""
        size = self.cfg.encoder_set_size
        if not size or max(sizes) <= size:
            return None, None
        enc = torch.zeros(sets.shape[0], size, sets.shape[2], device=self.device)
        enc_mask = torch.zeros(sets.shape[0], size, dtype=torch.bool, device=self.device)
        for j, m in enumerate(sizes):
            take = torch.randperm(m, generator=self._gen)[:size].to(self.device)
            enc[j, : take.numel()] = sets[j, take]
            enc_mask[j, : take.numel()] = True
        return enc, enc_mask

    # ---- state -----------------------------------------------------------------------------
    def _model_state(self) -> dict[str, Any]:
        return {  # tensors on the CPU: a state saved on a GPU loads anywhere
            "model": _on_cpu(self.model.state_dict()),
            "optimizer": _on_cpu(self.optimizer.state_dict()),
            "generator": self._gen.get_state(),
            "history": [{"indices": i, "rates": r, "k": k} for i, r, k in self._history],
            "previous": self._previous,
            "stream": self._stream,
            "last_chosen": self._last_chosen,
            "outcomes": [{"predicted": p, "successes": s, "k": k, "first": f}
                         for p, s, k, f in self._outcomes],
            "observed": self._observed,
        }

    def _prepare_model_state(self, model: dict[str, Any]):
        check_prepared(isinstance(model, dict), "not a dict")
        for key in ("model", "optimizer", "generator", "history", "previous", "stream",
                    "last_chosen"):
            check_prepared(key in model, f"missing {key!r}")
        n = len(self.pool)
        history = []
        for h in model["history"]:
            idx = as_numpy(h["indices"], np.int64)
            rates, k = as_numpy(h["rates"], np.float64), as_numpy(h["k"], np.float32)
            check_prepared(idx.ndim == 1 and rates.shape == idx.shape and k.shape == idx.shape,
                           "history shapes do not match")
            check_prepared(bool(idx.size == 0 or (idx.min() >= 0 and idx.max() < n)),
                           "history indices out of range")
            history.append((idx, rates, k))
        check_prepared(len(history) <= self.cfg.window + 1, "history longer than the window")
        previous = as_numpy(model["previous"], np.int64)
        check_prepared(bool(previous.size == 0 or (previous.min() >= 0 and previous.max() < n)),
                       "previous batch indices out of range")
        stream = as_numpy(model["stream"], np.int64)
        check_prepared(bool(stream.size == 0 or (stream.min() >= 0 and stream.max() < n)),
                       "candidate stream indices out of range")
        check_prepared(np.unique(stream).size == stream.size, "candidate stream repeats a prompt")
        last_chosen = as_numpy(model["last_chosen"], np.int64)
        check_prepared(last_chosen.shape == (n,), "last_chosen does not match the pool")
        # calibration data (absent from files of earlier versions: start without; records of
        # earlier versions do not say which groups were first observations: none counted)
        outcomes = []
        for o in model.get("outcomes", []):
            arrays = tuple(as_numpy(o[key], dtype) for key, dtype in (
                ("predicted", np.float64), ("successes", np.float64), ("k", np.float64)))
            first = (as_numpy(o["first"], bool) if "first" in o
                     else np.zeros(arrays[0].shape, dtype=bool))
            arrays += (first,)
            check_prepared(all(a.ndim == 1 and a.shape == arrays[0].shape for a in arrays),
                           "calibration record shapes do not match")
            outcomes.append(arrays)
        # earlier versions: every prompt ever chosen counts as observed
        observed = (as_numpy(model["observed"], bool) if "observed" in model
                    else last_chosen >= 0)
        check_prepared(observed.shape == (n,), "observed does not match the pool")
        check_prepared(len(outcomes) <= self.calibration_window, "calibration record longer than its window")
        # Load into fresh copies first: a mismatching tensor raises before anything changes.
        with torch.random.fork_rng():  # its random init is overwritten; keep the global RNG
            fresh = PromptPredictiveModel(self.pool.dim, self.cfg)
        try:
            fresh.load_state_dict(model["model"])
            fresh.to(self.device)
            opt = _adam(fresh, self.cfg)
            opt.load_state_dict(model["optimizer"])  # moves its state to the parameters' device
            gen = torch.Generator()
            gen.set_state(model["generator"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise ValueError(f"state['model'] does not fit this GPS configuration: {err}") from err

        def commit() -> None:
            self.model, self.optimizer, self._gen = fresh, opt, gen
            self._history = deque(history, maxlen=self.cfg.window + 1)
            self._previous = previous
            self._stream = stream
            self._last_chosen = last_chosen
            self._outcomes = deque(outcomes, maxlen=self.calibration_window)
            self._observed = observed
            self._cache = None
            self._calibration = None

        return commit


def _adam(model: PromptPredictiveModel, cfg: PPMConfig) -> torch.optim.Adam:
    # foreach: one kernel per operation over all parameters (the same numbers as the loop)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, foreach=True)


def _on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested dicts and lists) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def check_device(device: Any) -> torch.device:
    """The PPM's device from None (the CPU), a name or a ``torch.device``; a clear error for a
    malformed name or a CUDA device that this machine does not have."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but torch sees no CUDA device on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}, but this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'cpu' or a CUDA device, got {device!r}")
    return dev
