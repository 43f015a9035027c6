"""The Prompt Predictive Model (PPM) of GPS: a generative model of every prompt's success rate.

A global latent z_t summarises the optimisation state at step t (how capable the policy is,
where it is improving). Three small networks share it:

* posterior encoder q_phi(z_t | H_t): a Transformer over the set of (embedding, success rate)
  pairs of step t's batch, pooled into a diagonal Gaussian;
* history-conditioned prior p_eta(z_t | H_{t-1}): the same architecture over step t-1's batch
  (a standard normal for the first step), which is what we can use *before* step t's rollouts;
* decoder p_psi(gamma | tau, z): an MLP on [embedding, z] giving the success probability.

Training maximises the ELBO ``E_q[log p(r | tau, z)] - KL(q(z_t | H_t) || p(z_t | H_{t-1}))`` on
a window of recent batches. The likelihood is Binomial in the success count (k * rate), which for
fractional rewards is k times the Bernoulli cross-entropy at the mean reward, so continuous
rewards in [0, 1] are handled by the same formula. Prediction for step t+1 averages the decoder
over Monte-Carlo samples from the prior given the latest batch.

With ``latent_dim=0`` the model degenerates to a deterministic MLP embedding -> rate (the
``gps-nolatent`` ablation) trained on the same likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rollwise.threads import run_in_workers
from rollwise.validation import Interval, check_fields, setting


@dataclass
class PPMConfig:
    """Sizes and optimisation settings of the PPM; defaults keep a step far below 0.1 s on CPU."""

    latent_dim: int = setting(8, help="d_z; 0 disables the latent (no encoders, no KL)",
                              constraint=Interval(int, 0))
    hidden: int = setting(64, help="width of encoders and decoder", constraint=Interval(int, 1))
    encoder_layers: int = setting(1, help="Transformer layers of each set encoder",
                                  constraint=Interval(int, 1))
    encoder_heads: int = setting(4, help="attention heads (must divide hidden)",
                                 constraint=Interval(int, 1))
    decoder_layers: int = setting(2, help="hidden layers of the decoder MLP",
                                  constraint=Interval(int, 1))
    mc_samples: int = setting(8, help="M, z samples averaged at prediction time",
                              constraint=Interval(int, 1))
    window: int = setting(8, help="recent batches trained on after each observation",
                          constraint=Interval(int, 1))
    grad_steps: int = setting(8, help="optimiser steps per observation", constraint=Interval(int, 0))
    lr: float = setting(3e-3, help="Adam learning rate", constraint=Interval(float, 0))
    kl_weight: float = setting(1.0, help="weight of the KL term of the ELBO",
                               constraint=Interval(float, 0))
    encoder_set_size: int = setting(64, help="encoders read a random subset of a larger batch (0: all)",
                                    constraint=Interval(int, 0))

    def validate(self) -> None:
        check_fields(self)
        if self.hidden % self.encoder_heads:
            raise ValueError(
                f"hidden ({self.hidden}) must be divisible by encoder_heads ({self.encoder_heads})"
            )

    @classmethod
    def from_any(cls, value: PPMConfig | Mapping[str, Any] | None) -> PPMConfig:
        """A validated config from a config, a mapping of its fields, or None (the defaults)."""
        if value is None:
            cfg = cls()
        elif isinstance(value, cls):
            cfg = cls(**asdict(value))  # a copy: the selector owns its config
        elif isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise TypeError(f"unknown PPM setting(s): {sorted(unknown)}; valid: "
                                f"{[f.name for f in fields(cls)]}")
            cfg = cls(**value)
        else:
            raise TypeError(f"ppm must be a PPMConfig, a mapping or None, got {type(value).__name__}")
        cfg.validate()
        return cfg

    def as_dict(self) -> dict:
        return asdict(self)


class SetEncoder(nn.Module):
    """Permutation-invariant map from a set of (embedding, rate) pairs to a diagonal Gaussian."""

    def __init__(self, dim: int, cfg: PPMConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(dim + 1, cfg.hidden)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.encoder_heads, dim_feedforward=2 * cfg.hidden, dropout=0.0,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, enable_nested_tensor=False)
        self.out = nn.Linear(cfg.hidden, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (S, n, dim + 1) sets padded to n; mask: (S, n) True on real elements."""
        h = self.encoder(self.inp(x), src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        mu, logvar = self.out(pooled).chunk(2, dim=-1)
        return mu, logvar.clamp(-8.0, 4.0)


class Decoder(nn.Module):
    """MLP on [embedding, z] -> success logit; the first layer is split so that a whole pool is
    projected once and combined with each z sample cheaply."""

    def __init__(self, dim: int, cfg: PPMConfig) -> None:
        super().__init__()
        self.emb_proj = nn.Linear(dim, cfg.hidden)
        self.z_proj = nn.Linear(cfg.latent_dim, cfg.hidden, bias=False) if cfg.latent_dim else None
        layers: list[nn.Module] = []
        for _ in range(cfg.decoder_layers - 1):
            layers += [nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden)]
        layers += [nn.ReLU(), nn.Linear(cfg.hidden, 1)]
        self.head = nn.Sequential(*layers)

    def forward(self, emb: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """emb: (..., n, dim); z: (..., d_z) broadcast over n, or None. Returns logits (..., n)."""
        h = self.emb_proj(emb)
        if self.z_proj is not None and z is not None:
            h = h + self.z_proj(z).unsqueeze(-2)
        return self.head(h).squeeze(-1)

    def head_inplace(self, h: torch.Tensor) -> torch.Tensor:
        """``head(h)`` without autograd, the activations applied in place: the same numbers,
        fewer (M, rows, hidden) buffers written (prediction over a large pool)."""
        for layer in self.head:
            if isinstance(layer, nn.ReLU):
                h = h.relu_()
            else:
                h = F.linear(h, layer.weight, layer.bias)
        return h.squeeze(-1)


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) summed over the last dimension."""
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0
    ).sum(-1)


class PromptPredictiveModel(nn.Module):
    """Posterior encoder, history-conditioned prior and shared decoder (see module docstring)."""

    def __init__(self, dim: int, cfg: PPMConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.latent = cfg.latent_dim > 0
        self.decoder = Decoder(dim, cfg)
        if self.latent:
            self.posterior = SetEncoder(dim, cfg)
            self.prior = SetEncoder(dim, cfg)

    def elbo_loss(
        self,
        sets: torch.Tensor,
        mask: torch.Tensor,
        counts: torch.Tensor,
        has_prev: torch.Tensor,
        generator: torch.Generator,
        enc_sets: torch.Tensor | None = None,
        enc_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Negative ELBO per rollout over a window.

        sets: (W + 1, n, dim + 1) batches t0 .. tW with their observed rates in the last column;
        batches 1..W are fitted, batch j - 1 conditions the prior of batch j. has_prev: (W,) bool,
        False where batch j's predecessor is missing (then the prior is N(0, I)).
        counts: (W + 1, n) rollouts per element (k), zero on padding.
        enc_sets / enc_mask: what the encoders read (default: ``sets``), e.g. a subset of each
        batch: the latent summarises a batch, the likelihood still covers every element.
        """
        x, k = sets[1:], counts[1:]
        emb, rate = x[..., :-1], x[..., -1]
        if enc_sets is None:
            enc_sets, enc_mask = sets, mask
        if self.latent:
            mu_q, lv_q = self.posterior(enc_sets[1:], enc_mask[1:])
            mu_p, lv_p = self.prior(enc_sets[:-1], enc_mask[:-1])
            keep = has_prev.unsqueeze(-1)
            mu_p = torch.where(keep, mu_p, torch.zeros_like(mu_p))
            lv_p = torch.where(keep, lv_p, torch.zeros_like(lv_p))
            # drawn by the (CPU) generator, then moved: the same numbers on any device
            eps = torch.randn(mu_q.shape, generator=generator).to(mu_q.device)
            z = mu_q + (0.5 * lv_q).exp() * eps
            kl = gaussian_kl(mu_q, lv_q, mu_p, lv_p).sum()
        else:
            z, kl = None, torch.zeros((), device=sets.device)
        logits = self.decoder(emb, z)
        nll = (k * F.binary_cross_entropy_with_logits(logits, rate, reduction="none")).sum()
        return (nll + self.cfg.kl_weight * kl) / k.sum().clamp_min(1.0)

    @torch.no_grad()
    def predict(
        self,
        emb: torch.Tensor,
        last_set: torch.Tensor | None,
        generator: torch.Generator,
        chunk: int = 1024,
        workers: int = 1,
    ) -> torch.Tensor:
        """Mean over M prior samples of the decoder's success probability for each row of emb.

        ``generator`` is a CPU generator on any device (the draws are moved), so a model gives
        the same samples on the CPU and on a GPU.

        Rows go through in chunks so that the (M, chunk, hidden) activations stay in cache
        (about 3x faster than one pass over a 40k pool on a CPU core; 1024 rows measured
        fastest with in-place activations). ``workers`` > 1 splits the chunks into that many
        contiguous parts computed at once on threads of their own
        (:func:`rollwise.threads.run_in_workers`): the same numbers, chunk by chunk."""
        if not self.latent:
            return torch.sigmoid(self.decoder(emb, None))
        d_z, dev = self.cfg.latent_dim, emb.device
        if last_set is None:
            mu, lv = torch.zeros(1, d_z, device=dev), torch.zeros(1, d_z, device=dev)
        else:
            mask = torch.ones(1, last_set.shape[0], dtype=torch.bool, device=dev)
            mu, lv = self.prior(last_set.unsqueeze(0), mask)
        eps = torch.randn(self.cfg.mc_samples, d_z, generator=generator).to(dev)
        z = mu + (0.5 * lv).exp() * eps  # (M, d_z)
        zh = self.decoder.z_proj(z)  # (M, hidden)
        out = torch.empty(emb.shape[0], device=dev)

        def fill(starts: range) -> None:
            for lo in starts:
                h = self.decoder.emb_proj(emb[lo : lo + chunk])  # (n, hidden)
                p = self.decoder.head_inplace(h.unsqueeze(0) + zh.unsqueeze(1)).sigmoid_()
                out[lo : lo + chunk] = p.mean(0)

        starts = range(0, emb.shape[0], chunk)
        parts = max(1, min(int(workers), len(starts)))
        bounds = [len(starts) * i // parts for i in range(parts + 1)]
        run_in_workers([partial(fill, starts[bounds[i] : bounds[i + 1]]) for i in range(parts)])
        return out
