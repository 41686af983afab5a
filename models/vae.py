"""VAE (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

Per view x:  NLL(x | z) + beta * KL(q(z|x) || N(0, I)),  z ~ q(z|x) reparameterised,
with NLL summed over pixels and KL over latent dims (beta only means something on that scale;
docs/design.md §2), averaged over the batch. beta = 1 is the VAE.

Like every method, the VAE trains on augmented views (docs/design.md §1): the training loop hands it
(B, J, C, H, W) with J = 1 by default; J > 1 treats each view as an independent sample.
"""
from __future__ import annotations

import torch

from models.base import Hyperparameter, Method, NetSpec, at_least, full_precision, mean_terms, non_negative, register
from models.likelihoods import LIKELIHOOD_SCALE, kl_standard_normal, reconstruction_nll, reparameterise
from models.networks import build_networks


@full_precision
def vae_objective(x: torch.Tensor, out: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  likelihood: str, scale: float, beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Negative beta-ELBO per sample.

    x, out: (N, C, H, W) targets and decoder outputs (logits or means) at z ~ q(z|x);
    mu, logvar: (N, d) posterior parameters. Returns {'loss', 'nll', 'kl'}, each (N,):
    loss = nll + beta * kl.
    """
    nll = reconstruction_nll(out, x, likelihood, scale)
    kl = kl_standard_normal(mu, logvar)
    return {"loss": nll + beta * kl, "nll": nll, "kl": kl}


@register
class VAE(Method):
    """VAE: NLL(x|z) + KL(q(z|x) || N(0,I)) on each augmented view."""

    name = "vae"
    display = "VAE"
    family = "generative"
    hyperparameters = {
        "likelihood_scale": LIKELIHOOD_SCALE,
        "J": Hyperparameter(1, "augmented views per image, each an independent sample (>= 1)", at_least(1), int),
    }

    def __init__(self, net: NetSpec, hp: dict):
        super().__init__(net, hp)
        self.encoder, self.decoder = build_networks(net)

    def kl_weight(self) -> float:
        return 1.0

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        x = views.flatten(0, 1)  # (B*J, C, H, W): every view is a sample
        mu, logvar = self.encoder(x)
        out = self.decoder(reparameterise(mu, logvar))
        terms = vae_objective(x, out, mu, logvar, self.net.likelihood, self.hp["likelihood_scale"], self.kl_weight())
        return mean_terms(terms)


@register
class BetaVAE(VAE):
    """beta-VAE: NLL(x|z) + beta * KL(q(z|x) || N(0,I)) on each augmented view."""

    name = "betavae"
    display = "β-VAE"
    hyperparameters = {
        **VAE.hyperparameters,
        # 4 is the most common value in the beta-VAE literature; the paper's sweep range is 0.1-16.
        "beta": Hyperparameter(4.0, "weight of the KL term (>= 0; 1 is the VAE)", non_negative),
    }

    def kl_weight(self) -> float:
        return float(self.hp["beta"])
