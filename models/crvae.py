"""CR-VAE: consistency-regularised VAE (Sinha & Dieng, NeurIPS 2021).

Per image x with one random augmentation t(x):

    -ELBO_beta(x) - ELBO_beta(t(x)) + gamma * KL(q(z|t(x)) || q(z|x))

-ELBO_beta(.) = NLL(.|z) + beta * KL(q(z|.) || N(0, I)) as in ``vae.py``; gradients flow through
both posteriors of the consistency term, and gamma is not multiplied by beta. Here x is the
*clean* (un-augmented) image and t(x) the loop's single augmented view, as in the paper, so
``n_views() == 1`` and each step encodes and decodes 2 images per view of the batch.

gamma default 1: the released code's 1e-3 mixes per-pixel means with summed KLs and has no
meaning on this (per-sample sum) scale (docs/design.md §2); sweep gamma over 0.01-10.
"""
from __future__ import annotations

import torch

from models.base import Hyperparameter, Method, NetSpec, full_precision, mean_terms, non_negative, register
from models.likelihoods import LIKELIHOOD_SCALE, kl_gaussians, reparameterise
from models.networks import build_networks
from models.vae import vae_objective


@full_precision
def crvae_objective(x: torch.Tensor, out_x: torch.Tensor, mu_x: torch.Tensor, logvar_x: torch.Tensor,
                    tx: torch.Tensor, out_tx: torch.Tensor, mu_tx: torch.Tensor, logvar_tx: torch.Tensor,
                    likelihood: str, scale: float, beta: float = 1.0, gamma: float = 1.0) -> dict[str, torch.Tensor]:
    """CR-VAE loss per image.

    x, tx: (N, C, H, W) an image and its augmentation; out_x, out_tx: decoder outputs at
    samples of q(z|x), q(z|t(x)); mu_*, logvar_*: (N, d) their posteriors. Returns (N,) terms
    {'loss', 'nll_x', 'kl_x', 'nll_tx', 'kl_tx', 'kl_consistency'}.
    """
    ex = vae_objective(x, out_x, mu_x, logvar_x, likelihood, scale, beta)
    et = vae_objective(tx, out_tx, mu_tx, logvar_tx, likelihood, scale, beta)
    consistency = kl_gaussians(mu_tx, logvar_tx, mu_x, logvar_x)
    return {
        "loss": ex["loss"] + et["loss"] + gamma * consistency,
        "nll_x": ex["nll"],
        "kl_x": ex["kl"],
        "nll_tx": et["nll"],
        "kl_tx": et["kl"],
        "kl_consistency": consistency,
    }


@register
class CRVAE(Method):
    """CR-VAE: beta-ELBO of a clean image and of its augmentation + gamma * KL(q(z|t(x)) || q(z|x))."""

    name = "crvae"
    display = "CR-VAE"
    family = "generative"
    hyperparameters = {
        "likelihood_scale": LIKELIHOOD_SCALE,
        "beta": Hyperparameter(1.0, "weight of each ELBO's KL to N(0, I) (>= 0)", non_negative),
        "gamma": Hyperparameter(1.0, "weight of the consistency KL(q(z|t(x)) || q(z|x)) (>= 0; sweep 0.01-10)",
                                non_negative),
    }

    def __init__(self, net: NetSpec, hp: dict):
        super().__init__(net, hp)
        self.encoder, self.decoder = build_networks(net)

    def n_views(self) -> int:
        return 1  # t(x); x is the clean image

    @classmethod
    def passes_per_image(cls, hp: dict) -> float:
        return 4.0  # x and t(x), each encoded and decoded: twice a VAE's step

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        n = clean.shape[0]
        both = torch.cat([clean, views[:, 0]])  # one pass over x and t(x)
        mu, logvar = self.encoder(both)
        out = self.decoder(reparameterise(mu, logvar))
        terms = crvae_objective(clean, out[:n], mu[:n], logvar[:n], views[:, 0], out[n:], mu[n:], logvar[n:],
                                self.net.likelihood, self.hp["likelihood_scale"],
                                float(self.hp["beta"]), float(self.hp["gamma"]))
        return mean_terms(terms)
