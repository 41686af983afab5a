"""Probabilistic terms shared by the generative objectives (docs/design.md §2).

Pure functions of tensors. Each returns *per-sample sums*: over the latent dimension (the last
axis) for Gaussian terms, over pixels (the last three axes, C, H, W) for reconstruction terms,
so a (B, J, ...) input gives a (B, J) result. Terms are computed in float32 even under autocast.

The likelihood scale
--------------------
``likelihood_scale`` (the config key of every generative method) is 1 / sigma_x^2:

- 'gaussian': p(x|z) = N(x; decoder(z), sigma_x^2 I), and the NLL is exact,
  ``scale * 0.5 * ||x - out||^2 + 0.5 * D * log(2 pi / scale)`` with D = C*H*W pixels.
- 'bernoulli': a tempered Bernoulli, ``scale * BCE_with_logits(out, x)`` summed over pixels.

The official code divides every reconstruction term by sigma_x^2 = exp(log_var_x) with
log_var_x = -4.6 for every dataset, MNIST's BCE included, so the official default is
``scale = exp(4.6) ~= 99.48`` (``OFFICIAL_LIKELIHOOD_SCALE``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.base import Hyperparameter, finite_positive

LOG_2PI = math.log(2 * math.pi)
OFFICIAL_LIKELIHOOD_SCALE = math.exp(4.6)  # 1 / sigma_x^2 with the official log sigma_x^2 = -4.6
LIKELIHOODS = ("bernoulli", "gaussian")


# The shared declaration of every generative method's ``likelihood_scale``.
LIKELIHOOD_SCALE = Hyperparameter(
    OFFICIAL_LIKELIHOOD_SCALE,
    "1/sigma_x^2: Gaussian NLL precision, or the BCE multiplier (official: exp(4.6) ~ 99.5)",
    finite_positive,
)


def gaussian_entropy(logvar: torch.Tensor) -> torch.Tensor:
    """H(N(mu, diag exp(logvar))) = 0.5 * sum_d (log 2pi + 1 + logvar_d).  (..., d) -> (...)."""
    return 0.5 * (LOG_2PI + 1.0 + logvar.float()).sum(-1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 0.5 * sum_d (mu^2 + sigma^2 - 1 - logvar).
    (..., d) -> (...)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def kl_gaussians(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) for diagonal Gaussians, summed over the last axis:
    0.5 * sum_d (logvar_p - logvar_q + (sigma_q^2 + (mu_q - mu_p)^2) / sigma_p^2 - 1)."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * (-logvar_p).exp() - 1.0).sum(-1)


def reconstruction_nll(out: torch.Tensor, x: torch.Tensor, likelihood: str, scale: float) -> torch.Tensor:
    """-log p(x | z) summed over pixels: (..., C, H, W) -> (...).

    ``out`` is the decoder's raw output (Bernoulli logits or Gaussian means), ``x`` the target
    in [0, 1], ``scale`` = 1 / sigma_x^2 (see the module docstring).
    """
    out, x = out.float(), x.float()
    if likelihood == "bernoulli":
        return scale * F.binary_cross_entropy_with_logits(out, x, reduction="none").sum((-3, -2, -1))
    if likelihood == "gaussian":
        n_pixels = math.prod(x.shape[-3:])
        sq = (x - out).pow(2).sum((-3, -2, -1))
        return 0.5 * scale * sq + 0.5 * n_pixels * (LOG_2PI - math.log(scale))
    raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {', '.join(LIKELIHOODS)}")


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (drawn from ``generator`` if given)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


__all__ = [
    "LOG_2PI",
    "OFFICIAL_LIKELIHOOD_SCALE",
    "LIKELIHOODS",
    "LIKELIHOOD_SCALE",
    "gaussian_entropy",
    "kl_standard_normal",
    "kl_gaussians",
    "reconstruction_nll",
    "reparameterise",
]
