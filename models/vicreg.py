"""VICReg (Bardes, Ponce, LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization
for Self-Supervised Learning"), generalised to J >= 2 views per image.

Each term is a small pure function of embeddings z (N, D) (after the expander):
    invariance_loss(a, b) = mean_{n,d} (a_nd - b_nd)^2                       (MSE)
    variance_loss(z)      = mean_d relu(1 - sqrt(Var_n z_nd + 1e-4))         (unbiased Var)
    covariance_loss(z)    = sum_{i != j} Cov(z)_ij^2 / D                     (unbiased Cov)

Original (J = 2, branches a, b):
    lambda * inv(a, b) + mu * [var(a) + var(b)] / 2 + nu * [cov(a) + cov(b)]
(variance averaged over the branches, covariance summed, as the authors' code and docs/design.md §2.)

J > 2 (``vicreg_terms``), with branches z_1..z_J:
    invariance  = mean over the J(J-1)/2 unordered view pairs of inv(z_i, z_j)
    variance    = mean over the J branches of var(z_j)
    covariance  = 2 * mean over the J branches of cov(z_j)
Each reduces exactly to the original for J = 2, and none grows with J, so the balance set by
lambda, mu, nu does not drift as J changes.

Defaults lambda_inv = mu_var = 25, nu_cov = 1 (the paper's). The expander is 3 linear layers
d -> 512 -> 512 -> 512 with BatchNorm + ReLU between (the paper uses 8192 wide; 512 keeps CPU
runs quick). The representation evaluated is the encoder mean ``mu`` (before the expander).
"""
from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F

from models.base import Hyperparameter, Method, NetSpec, at_least, full_precision, non_negative, register
from models.networks import build_encoder, projection_head

VARIANCE_EPS = 1e-4


def invariance_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error between embeddings a, b (N, D) of two views of the same images."""
    return F.mse_loss(a, b)


def variance_loss(z: torch.Tensor, eps: float = VARIANCE_EPS) -> torch.Tensor:
    """Hinge on the per-dimension standard deviation of z (N, D): mean_d relu(1 - std_d)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances of z (N, D), divided by D."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    off_diagonal = cov - torch.diag_embed(cov.diagonal())
    return off_diagonal.pow(2).sum() / d


@full_precision
def vicreg_terms(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unweighted invariance, variance, covariance terms of embeddings z (B, J, D), J >= 2,
    in the J-view form documented above."""
    branches = z.unbind(dim=1)
    return {
        "invariance": torch.stack([invariance_loss(a, b) for a, b in combinations(branches, 2)]).mean(),
        "variance": torch.stack([variance_loss(zj) for zj in branches]).mean(),
        "covariance": 2.0 * torch.stack([covariance_loss(zj) for zj in branches]).mean(),
    }


@register
class VICReg(Method):
    """VICReg: encoder -> mu -> expander -> invariance + variance + covariance."""

    name = "vicreg"
    display = "VICReg"
    family = "discriminative"
    hyperparameters = {
        "J": Hyperparameter(2, "views per image (J > 2: the pairwise/branch-mean form)", at_least(2), int),
        "lambda_inv": Hyperparameter(25.0, "invariance weight lambda", non_negative),
        "mu_var": Hyperparameter(25.0, "variance weight mu", non_negative),
        "nu_cov": Hyperparameter(1.0, "covariance weight nu", non_negative),
        "proj_hidden": Hyperparameter(512, "expander hidden width", at_least(1), int),
        "proj_dim": Hyperparameter(512, "expander output dim", at_least(1), int),
    }

    def __init__(self, net: NetSpec, hp: dict[str, Any]):
        super().__init__(net, hp)
        self.encoder = build_encoder(net)  # no decoder
        # The expander: Linear-BN-ReLU, Linear-BN-ReLU, Linear.
        self.head = projection_head(net.latent_dim, int(self.hp["proj_hidden"]), int(self.hp["proj_dim"]), layers=3)

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        B, J = views.shape[:2]
        mu, _ = self.encoder(views.flatten(0, 1))  # one pass over all B*J views
        z = self.head(mu).reshape(B, J, -1)
        terms = vicreg_terms(z)
        hp = self.hp
        loss = (
            float(hp["lambda_inv"]) * terms["invariance"]
            + float(hp["mu_var"]) * terms["variance"]
            + float(hp["nu_cov"]) * terms["covariance"]
        )
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
