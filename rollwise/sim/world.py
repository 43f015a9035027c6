"""A simulated RLVR prompt world: true success rates that move as the policy learns.

Prompt tau of skill s has true success rate ``gamma_t(tau) = sigmoid(a_t[s] - b(tau))``:

* ``b(tau)`` grows linearly with the prompt's difficulty level (scaled to [0, 1] over the pool)
  and has a prompt-specific Gaussian part that the prompt's text cannot predict;
* ``a_t[s]`` is the policy's ability on skill s. A training step on a batch raises it by
  ``learning_rate * mean over the batch of transfer[s, skill(tau)] * signal(tau)``, where the
  signal is ``4 * p(1 - p)`` of the *observed* success fraction p of the k rollouts: a group whose
  rewards are all equal has zero advantage in GRPO and teaches nothing. Skills of one group share
  ``transfer_group`` of their gains, other skills ``transfer_other``; ``forgetting`` pulls each
  ability back toward its start.
* Memorisation (off by default): training on a prompt again teaches less that transfers. The
  n-th repeat of a prompt passes ``1 / (1 + memorisation * n)`` of its signal to the abilities;
  the rest raises that prompt's own logit (``memorisation_rate`` per unit of signal), which no
  held-out prompt shares. A selector that keeps choosing the same few prompts then sees their
  rates climb while held-out accuracy stalls, as a small policy that memorises answers does.
* Rollouts are k Bernoulli(gamma) draws; held-out accuracy is the mean gamma over a held-out set.
* Groups of unequal size (per-prompt rollout budgets, :mod:`rollwise.budgets`) weigh in the
  batch mean by their size, as a token-level GRPO loss (DAPO's, TRL's default here) weighs every
  rollout alike; with equal groups this is the plain batch mean.

Every parameter lives in :class:`WorldConfig`; the defaults were set from the pools' structure
(starting rates spanning ~0.9 on the easiest level to ~0.03 on the hardest, so that a naive pool
wastes most rollouts as real pools do) and a uniform-sampling run that keeps improving over a few
hundred steps, before any selector was compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit


@dataclass
class WorldConfig:
    k: int = 8  # rollouts per prompt
    easiest_logit: float = 2.5  # a_0 - b for the easiest level (before skill offsets and noise)
    hardest_logit: float = -3.5  # the same for the hardest level
    prompt_noise: float = 0.75  # sd of the prompt-specific difficulty (unpredictable from text)
    skill_offset_sd: float = 0.5  # sd of the skills' starting abilities
    learning_rate: float = 0.15  # ability gain per step at a full signal on one skill
    transfer_group: float = 0.3  # share of a gain passed to the other skills of its group
    transfer_other: float = 0.05  # share passed to skills of other groups
    forgetting: float = 0.0  # per-step pull of abilities back toward their start
    memorisation: float = 0.0  # how fast repeats stop transferring (0: every repeat transfers)
    memorisation_rate: float = 1.0  # a repeat's prompt-specific logit gain per unit of signal

    def validate(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an int >= 1, got {self.k!r}")
        if self.easiest_logit <= self.hardest_logit:
            raise ValueError("easiest_logit must be larger than hardest_logit")
        for name in ("prompt_noise", "skill_offset_sd", "learning_rate", "memorisation",
                     "memorisation_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("transfer_group", "transfer_other", "forgetting"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def as_dict(self) -> dict:
        return asdict(self)


class PromptWorld:
    """True success rates of a train pool and a held-out set under a learning policy."""

    def __init__(
        self,
        train_skills: Sequence[str],
        train_levels: np.ndarray,
        heldout_skills: Sequence[str],
        heldout_levels: np.ndarray,
        config: WorldConfig | None = None,
        groups: dict[str, str] | None = None,
        seed: int = 0,
    ) -> None:
        cfg = config or WorldConfig()
        cfg.validate()
        self.config = cfg
        rng = np.random.default_rng(seed)
        self.skills = sorted(set(train_skills) | set(heldout_skills))
        sid = {s: i for i, s in enumerate(self.skills)}
        self.train_skill = np.array([sid[s] for s in train_skills], dtype=np.int64)
        self.heldout_skill = np.array([sid[s] for s in heldout_skills], dtype=np.int64)
        levels = np.concatenate([train_levels, heldout_levels]).astype(np.float64)
        lo, span = levels.min(), np.ptp(levels)
        scale = (lambda x: (x - lo) / span) if span > 0 else (lambda x: np.full(len(x), 0.5))

        def offsets(lv: np.ndarray) -> np.ndarray:  # b(tau)
            base = -cfg.easiest_logit + scale(np.asarray(lv, np.float64)) * (
                cfg.easiest_logit - cfg.hardest_logit)
            return base + cfg.prompt_noise * rng.standard_normal(len(lv))

        self.train_b = offsets(train_levels)
        self.memorised = np.zeros(len(self.train_b))  # prompt-specific logit (memorisation)
        self.times_trained = np.zeros(len(self.train_b), dtype=np.int64)
        self.heldout_b = offsets(heldout_levels)
        self.ability0 = cfg.skill_offset_sd * rng.standard_normal(len(self.skills))
        self.ability = self.ability0.copy()
        grp = [(groups or {}).get(s, "all") for s in self.skills]
        same = np.equal.outer(grp, grp)
        self.transfer = np.where(same, cfg.transfer_group, cfg.transfer_other)
        np.fill_diagonal(self.transfer, 1.0)

    def gamma(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Current true success rates of train prompts (all, or the given indices)."""
        if indices is None:
            return expit(self.ability[self.train_skill] - self.train_b + self.memorised)
        return expit(self.ability[self.train_skill[indices]] - self.train_b[indices]
                     + self.memorised[indices])

    def heldout_gamma(self) -> np.ndarray:
        return expit(self.ability[self.heldout_skill] - self.heldout_b)

    def heldout_accuracy(self) -> float:
        return float(self.heldout_gamma().mean())

    def rollout(self, indices: np.ndarray, rng: np.random.Generator,
                sizes: np.ndarray | None = None) -> np.ndarray | list[np.ndarray]:
        """(B, k) binary rewards: k Bernoulli(gamma) draws per prompt; with ``sizes``, a list of
        groups, ``sizes[i]`` draws for prompt i."""
        g = self.gamma(indices)
        if sizes is None:
            return (rng.random((len(indices), self.config.k)) < g[:, None]).astype(np.float64)
        return [(rng.random(int(k)) < gi).astype(np.float64) for gi, k in zip(g, sizes, strict=True)]

    def learn(self, indices: np.ndarray, rewards: np.ndarray | list[np.ndarray]) -> None:
        """One policy-gradient step on the batch: abilities rise with its reward variance."""
        cfg = self.config
        if cfg.forgetting:
            self.ability -= cfg.forgetting * (self.ability - self.ability0)
        if len(indices) == 0:
            return
        if isinstance(rewards, list):  # groups of unequal size: each weighs by its size
            sizes = np.array([len(r) for r in rewards], dtype=np.float64)
            p = np.array([np.mean(r) for r in rewards], dtype=np.float64)
            weight = sizes * len(sizes) / sizes.sum()
        else:
            p = np.asarray(rewards, dtype=np.float64).mean(axis=1)
            weight = None
        signal = 4.0 * p * (1.0 - p)
        if weight is not None:
            signal = signal * weight
        if cfg.memorisation:
            idx = np.asarray(indices)
            general = 1.0 / (1.0 + cfg.memorisation * self.times_trained[idx])
            self.memorised[idx] += cfg.memorisation_rate * signal * (1.0 - general)
            self.times_trained[idx] += 1
            signal = signal * general
        per_skill = np.bincount(self.train_skill[indices], weights=signal,
                                minlength=len(self.skills)) / len(indices)
        self.ability += cfg.learning_rate * (self.transfer @ per_skill)
