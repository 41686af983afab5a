"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations") with the NT-Xent loss, generalised to J >= 2 views per image.

Objective (``nt_xent``). The B*J views of a batch are projected, L2-normalised and compared by
cosine similarity s_ia = z_i . z_a. For anchor view i with positives P(i) (the other J - 1
views of the same image) and candidates A(i) = every view but i itself:

    l_i = -(1 / |P(i)|) * sum_{p in P(i)} log[ exp(s_ip / tau) / sum_{a in A(i)} exp(s_ia / tau) ]

and the loss is the mean of l_i over all B*J anchors. This is the "L_out" multi-positive form of
SupCon (Khosla et al. 2020): every positive appears in the denominator together with all
negatives, and the positives' log-probabilities are averaged. For J = 2 it is exactly NT-Xent
(one positive, 2B - 2 negatives, self excluded, mean over the 2B anchors). Its minimum is
log(J - 1), not 0: the positives share each other's denominators.

The representation evaluated is the encoder mean ``mu`` (before the projection head), as in the
paper's protocol (Bizeul et al. section 4.3.2). Defaults: tau = 0.5 (SimCLR's CIFAR setting;
docs/design.md §2 sweeps 0.05-1), a 2-layer head d -> 512 -> 128, Linear-BN-ReLU-Linear (SimCLR's head;
hidden 512 rather than the encoder's width, modest so CPU runs stay quick). The encoder comes
from ``networks.build_encoder``, shaped by the network spec (the run config's ``width`` / ``resnet_stages``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from models.base import Hyperparameter, Method, NetSpec, at_least, full_precision, positive, register
from models.networks import build_encoder, projection_head


@full_precision
def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-positive NT-Xent (SupCon L_out) of projections z (B, J, D); returns a scalar.

    Views of the same image (same index along dim 0) are positives; all other views of the
    batch are negatives; each view's similarity to itself is excluded.
    """
    B, J, D = z.shape
    z = F.normalize(z.reshape(B * J, D), dim=1)
    self_mask = torch.eye(B * J, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits.log_softmax(dim=1)  # softmax over all a != i
    image = torch.arange(B, device=z.device).repeat_interleave(J)
    positive = (image[:, None] == image[None, :]) & ~self_mask
    # masked_fill (not a product) so the -inf on the diagonal never meets a zero.
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / (J - 1)
    return -per_anchor.mean()


@full_precision
def positive_similarity(z: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between distinct views of the same image; z (B, J, D), J >= 2."""
    B, J, _ = z.shape
    z = F.normalize(z, dim=2)
    gram = z @ z.transpose(1, 2)  # (B, J, J)
    return (gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)).mean() / (J * (J - 1))


@register
class SimCLR(Method):
    """SimCLR: encoder -> mu -> 2-layer projection head -> multi-positive NT-Xent."""

    name = "simclr"
    display = "SimCLR"
    family = "discriminative"
    hyperparameters = {
        "J": Hyperparameter(2, "views per image (J > 2: multi-positive NT-Xent)", at_least(2), int),
        "temperature": Hyperparameter(0.5, "NT-Xent temperature tau", positive),
        "proj_hidden": Hyperparameter(512, "projection head hidden width", at_least(1), int),
        "proj_dim": Hyperparameter(128, "projection head output dim", at_least(1), int),
    }

    def __init__(self, net: NetSpec, hp: dict[str, Any]):
        super().__init__(net, hp)
        self.encoder = build_encoder(net)  # no decoder
        self.head = projection_head(net.latent_dim, int(self.hp["proj_hidden"]), int(self.hp["proj_dim"]))

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        B, J = views.shape[:2]
        mu, _ = self.encoder(views.flatten(0, 1))  # one pass over all B*J views
        z = self.head(mu).reshape(B, J, -1)
        loss = nt_xent(z, float(self.hp["temperature"]))
        return {
            "loss": loss,
            "nt_xent": loss.detach(),
            "pos_sim": positive_similarity(z.detach()),
        }
