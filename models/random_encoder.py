"""The randomly initialised encoder baseline (the paper's "Random" row).

The untrained encoder of the dataset's architecture (PyTorch default initialisation, seeded by
the training loop); its representation is the encoder mean as for every method. It is never
trained (``trainable = False``) and has no decoder of its own: reconstructions come from a
decoder fitted to its frozen representations, like the discriminative methods'.

``refresh_bn``: if True the training loop runs the encoder in train mode over the training
images before evaluation so BatchNorm layers hold the data's statistics rather than their
initial (0, 1). Only the ResNet has BatchNorm; for the MLP the flag changes nothing.
"""
from __future__ import annotations

import torch

from models.base import Hyperparameter, Method, NetSpec, register
from models.networks import build_encoder


@register
class RandomEncoder(Method):
    """Random: the untrained encoder (no training; optional BatchNorm statistics refresh)."""

    name = "random"
    display = "Random"
    family = "baseline"
    trainable = False
    hyperparameters = {
        "refresh_bn": Hyperparameter(False, "refresh BatchNorm statistics on the training images (ResNet only)",
                                     None, bool),
    }

    def __init__(self, net: NetSpec, hp: dict):
        super().__init__(net, hp)
        self.encoder = build_encoder(net)
        self.decoder = None

    def n_views(self) -> int:
        return 1

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Nothing to minimise: a constant zero (no graph), for loops that log every method."""
        return {"loss": views.new_zeros(())}
