"""SimVAE: variational inference in the SSL Model (Bizeul, Schölkopf, Allen; docs/design.md §1-2).

Generative model: content y ~ p(y); z_j ~ p(z|y) = N(y, sigma^2 I) for j = 1..J; x_j ~ p(x|z_j).
With J augmented views x_1..x_J of an image and z_j ~ q(z|x_j) (reparameterised), the loss per
image (the negative ELBO_SSL, up to constants) is

    sum_j [ NLL(x_j | z_j) - H(q(z|x_j)) ] - log p(z_1..J | y) - log p(y),
    log p(z_1..J | y) = -sum_j ||z_j - z_bar||^2 / (2 sigma^2),   y := z_bar = mean_j z_j,
    log p(y) = -||z_bar||^2 / 2  ('gaussian')   or   0  ('uniform'),

averaged over images. Dropped constants (they carry no gradient with sigma^2 fixed): the
Gaussian normalisers -J d/2 log(2 pi sigma^2) and -d/2 log(2 pi). Defaults: J = 10 (the paper's
choice; the official code's ``--n_augments`` defaults to 2), sigma^2 = 0.15 and likelihood scale
exp(4.6) (the official code's).

Entropy of q(z|x_j), per view (``entropy``):
  'true'           H(q) = 0.5 sum_d (log 2pi + 1 + logvar_d).
  'official'       0.5 sum_d (logvar_d + 1): the first revisions of the official code
                   (alicebizeul/simvae, src/model/models.py, ``recon_and_entropy``, commits
                   f7fbb57 / acb592a): the true entropy less 0.5 d log 2pi, so the gradients are
                   identical and only the logged value differs.
  'official_head'  pi sum_d logvar_d: the newest revision of that line (c7368de),
                   ``0.5 * torch.sum(2*math.pi*log_var_z)``, which runs (the previous revision's
                   ``0.5 torch.sum(...)`` was a syntax error). Its logvar gradient is pi per
                   dimension instead of 0.5: the entropy pushes the posterior variances up 2 pi
                   times harder than the ELBO does.
"""
from __future__ import annotations

import math

import torch

from models.base import (Hyperparameter, Method, NetSpec, at_least, full_precision, mean_terms, one_of, positive,
                         register)
from models.likelihoods import LIKELIHOOD_SCALE, gaussian_entropy, reconstruction_nll, reparameterise
from models.networks import build_networks

PRIORS = ("gaussian", "uniform")
ENTROPIES = ("true", "official", "official_head")


def log_p_z_given_y(z: torch.Tensor, sigma2: float) -> torch.Tensor:
    """-sum_j ||z_j - z_bar||^2 / (2 sigma^2) with z_bar = mean_j z_j.  (B, J, d) -> (B,)."""
    z = z.float()
    return -(z - z.mean(1, keepdim=True)).pow(2).sum((1, 2)) / (2.0 * sigma2)


def log_p_y(z_bar: torch.Tensor, prior: str) -> torch.Tensor:
    """log p(y) at y = z_bar, up to a constant: -||z_bar||^2 / 2 ('gaussian') or 0 ('uniform').
    (B, d) -> (B,)."""
    if prior == "gaussian":
        return -0.5 * z_bar.float().pow(2).sum(-1)
    if prior == "uniform":
        return z_bar.new_zeros(z_bar.shape[:-1], dtype=torch.float32)
    raise ValueError(f"unknown prior {prior!r}; expected one of {', '.join(PRIORS)}")


def posterior_entropy(logvar: torch.Tensor, kind: str = "true") -> torch.Tensor:
    """Entropy term of q(z|x) per sample, (..., d) -> (...): 'true' 0.5 sum_d (log 2pi + 1 +
    logvar_d); 'official' 0.5 sum_d (logvar_d + 1) (the true value less 0.5 d log 2pi, same
    gradient); 'official_head' pi sum_d logvar_d (the official code's newest revision; gradient
    pi instead of 0.5 per dimension). See the module docstring."""
    if kind == "true":
        return gaussian_entropy(logvar)
    if kind == "official":
        return 0.5 * (logvar.float() + 1.0).sum(-1)
    if kind == "official_head":
        return 0.5 * (2 * math.pi * logvar.float()).sum(-1)
    raise ValueError(f"unknown entropy {kind!r}; expected one of {', '.join(ENTROPIES)}")


@full_precision
def simvae_objective(x: torch.Tensor, out: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor,
                     likelihood: str, scale: float, sigma2: float, prior: str = "gaussian",
                     entropy: str = "true") -> dict[str, torch.Tensor]:
    """SimVAE loss per image.

    x, out: (B, J, C, H, W) the J views of each image and the decoder outputs at z;
    mu, logvar, z: (B, J, d) posteriors of the views and their reparameterised samples.
    Returns (B,) terms {'loss', 'nll', 'entropy', 'log_p_z_given_y', 'log_p_y'} with nll and
    entropy summed over the J views and loss = nll - entropy - log_p_z_given_y - log_p_y.
    """
    nll = reconstruction_nll(out, x, likelihood, scale).sum(1)
    ent = posterior_entropy(logvar, entropy).sum(1)
    lpz = log_p_z_given_y(z, sigma2)
    lpy = log_p_y(z.float().mean(1), prior)
    return {"loss": nll - ent - lpz - lpy, "nll": nll, "entropy": ent, "log_p_z_given_y": lpz, "log_p_y": lpy}


@register
class SimVAE(Method):
    """SimVAE: ELBO of the SSL Model over J augmented views per image."""

    name = "simvae"
    display = "SimVAE"
    family = "generative"
    hyperparameters = {
        "likelihood_scale": LIKELIHOOD_SCALE,
        "J": Hyperparameter(10, "augmented views per image (>= 2; 10 is the paper's choice, the official code "
                                "defaults to 2)", at_least(2), int),
        "sigma2": Hyperparameter(0.15, "variance sigma^2 of p(z|y) (> 0; official 0.15)", positive),
        "prior": Hyperparameter("gaussian", "p(y): 'gaussian' (N(0, I)) or 'uniform'", one_of(*PRIORS), str),
        "entropy": Hyperparameter("true", "'true' Gaussian entropy; 'official': the official code's first "
                                  "revision, 0.5 sum(logvar + 1) (same gradient as 'true'); 'official_head': its "
                                  "newest, pi sum(logvar) (2 pi times the logvar gradient)",
                                  one_of(*ENTROPIES), str),
    }

    def __init__(self, net: NetSpec, hp: dict):
        super().__init__(net, hp)
        self.encoder, self.decoder = build_networks(net)

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        b, j = views.shape[:2]
        if j < 2:
            raise ValueError(f"simvae needs >= 2 views per image, got {j}")
        mu, logvar = self.encoder(views.flatten(0, 1))
        z = reparameterise(mu, logvar)
        out = self.decoder(z)
        out, mu, logvar, z = (t.view(b, j, *t.shape[1:]) for t in (out, mu, logvar, z))  # (B, J, ...)
        terms = simvae_objective(views, out, mu, logvar, z,
                                 self.net.likelihood, self.hp["likelihood_scale"], float(self.hp["sigma2"]),
                                 self.hp["prior"], self.hp["entropy"])
        return mean_terms(terms)
