"""The raw-pixel baseline: the image itself as the representation (no network, no training).

Beside the random encoder it shows what a method adds over its input: every evaluation
(probes, kNN, GMM, style probes) runs on ``x.flatten(1)``, the C*H*W pixel intensities in
[0, 1], z-scored with train statistics like every representation (``trainables.evaluate``).
On MNIST, per-pixel z-scoring weights rare border pixels heavily: measured on 10,000 training
and 2,000 test images, kNN (k = 10) scores 0.924 on the unstandardised pixels and 0.881 on the
standardised ones the evaluation uses.

Reconstruction: the representation is the image, so the exact decoder is the identity and
``recon_error`` is 0 by construction -- the floor every learned method's error sits above.
Since ``reconstruct`` answers, the training loop fits no decoder to its frozen representations
(fitting one would only measure how well a network learns the identity).

The evaluation treats wide features as any other, with two limits that bind only here (the
learned representations have d <= 64): the MLP probes' hidden width is min(d, 64) and the GMM
clusters the 64 leading principal components (trainables/evaluate/probes.py, clustering.py).
"""
from __future__ import annotations

import torch

from models.base import Method, NetSpec, register


@register
class Pixels(Method):
    """Pixels: the raw image as the representation (no network, no training)."""

    name = "pixels"
    display = "Pixels"
    family = "baseline"
    trainable = False
    hyperparameters = {}

    def __init__(self, net: NetSpec, hp: dict):
        super().__init__(net, hp)
        self.encoder = None
        self.decoder = None

    def n_views(self) -> int:
        return 1

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Nothing to minimise: a constant zero (no graph), for loops that log every method."""
        return {"loss": views.new_zeros(())}

    @torch.no_grad()
    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """The pixels of x (N, C, H, W) as (N, C*H*W) float32."""
        return x.flatten(1).float()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The identity: the representation holds every pixel."""
        return x.clone()
