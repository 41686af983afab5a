"""Encoders, decoders and projection heads shared by every method.

Official defaults (docs/design.md §3):
- MNIST / FashionMNIST: MLP encoder 784-2000-500-500 (ReLU) + Gaussian head to 2d, decoder
  d-500-500-2000-784 (ReLU), d = 10.
- CIFAR-10 (32x32) / CelebA (64x64): a ResNet-18-style encoder and a conv decoder, d = 64.

Every encoder maps images (N, C, H, W) to the posterior parameters ``(mu, logvar)``, each
(N, d), through ``features(x)`` (N, feature_dim) followed by a ``GaussianHead``; the
discriminative methods put a ``projection_head`` on top of ``mu``. Decoders map latents (N, d)
to (N, C, H, W) *raw* outputs: Bernoulli logits or Gaussian means, never squashed (the official
code applies a sigmoid to Gaussian means too; we do not, so the Gaussian likelihood is exact).
Initialisation: PyTorch defaults.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.base import NetSpec

# Posterior log-variances are clamped to this range. It never binds in healthy training
# (std 3e-7 .. 2e4) but keeps exp(logvar) finite when a badly tuned trial diverges, so the trial
# fails on its loss value instead of producing inf/NaN inside the KL.
LOGVAR_RANGE = (-30.0, 20.0)


class Float32Linear(nn.Linear):
    """A linear layer that computes in float32 even under bfloat16 autocast (its input cast up, its
    output float32): for the layers at the latent bottleneck -- the Gaussian head, and the first
    layer of whatever reads a latent (decoders, projection heads) -- where d = 10..64 values carry
    the whole representation and bfloat16 would round each to 3 significant digits (at |z| ~ 2 a
    spacing of 0.016: coarser than a trained VAE's posterior noise, whose KL of ~60 nats over 10
    dimensions on MNIST puts its standard deviations near 1e-2..1e-3). A tiny share of a step's
    arithmetic; a plain ``nn.Linear`` in every other respect (its state dict too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class GaussianHead(nn.Module):
    """Linear(in_dim, 2d) -> (mu, logvar), each (N, d); logvar clamped to ``LOGVAR_RANGE``. The
    layer is a ``Float32Linear``: the reparameterisation, KL and entropy need the log-variance's
    precision (exp(logvar) in bfloat16 keeps 3 significant digits), and mu is the representation."""

    def __init__(self, in_dim: int, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.linear = Float32Linear(in_dim, 2 * latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.linear(h).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


def _mlp(dims: list[int], first: type[nn.Linear] = nn.Linear) -> nn.Sequential:
    """Linear layers through ``dims`` with ReLU between them (none after the last); the first one
    of class ``first``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append((first if i == 0 else nn.Linear)(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten (N, C, H, W) -> 2000 -> 500 -> 500 (ReLU) -> GaussianHead(500, d).

    The official MNIST/FashionMNIST encoder (784-2000-500-500-2d); any image shape works.
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int,
                 hidden: tuple[int, ...] = (2000, 500, 500)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.feature_dim = hidden[-1]
        self.body = nn.Sequential(nn.Flatten(), _mlp([math.prod(image_shape), *hidden]), nn.ReLU(inplace=True))
        self.head = GaussianHead(self.feature_dim, latent_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 500): the body's output before the Gaussian head."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


class MLPDecoder(nn.Module):
    """(N, d) -> 500 -> 500 -> 2000 -> C*H*W (ReLU between), reshaped to (N, C, H, W); the first
    layer a ``Float32Linear``."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int,
                 hidden: tuple[int, ...] = (500, 500, 2000)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = _mlp([latent_dim, *hidden, math.prod(image_shape)], first=Float32Linear)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


RESNET_STAGES = (1, 2, 3, 4)  # stages a ResNet encoder may have (4 = ResNet-18)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm, identity or 1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet-18-style encoder: stem, ``stages`` x 2 BasicBlocks, global average pool,
    GaussianHead(feature_dim, d).

    With the defaults (``width=1``, ``stages=4``) this is the full ResNet-18 body (channels
    64-128-256-512, ~11.2M parameters), not the official code's network, which is a half-width,
    three-stage ResNet (channels 32-64-128, ~1M parameters; docs/design.md §3). ``width=0.5,
    stages=3`` gives roughly the official one (it average-pools where the official flattens a
    4x4 map). Small-image stem: 3x3 conv, no max-pool; its stride is H // 32, so 32x32 inputs
    keep full resolution and 64x64 inputs (CelebA) are halved, and with four stages both end on
    a 4x4 map before pooling.
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: float = 1.0,
                 stages: int = 4):
        super().__init__()
        if stages not in RESNET_STAGES:
            raise ValueError(f"stages must be {RESNET_STAGES[0]}-{RESNET_STAGES[-1]}, got {stages}")
        c, h, _ = image_shape
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        widths = [_channels(b, width) for b in (64, 128, 256, 512)][:stages]
        stem_stride = max(1, h // 32)
        layers: list[nn.Module] = [
            nn.Conv2d(c, widths[0], 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.head = GaussianHead(self.feature_dim, latent_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, feature_dim): pooled features before the Gaussian head."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """(N, d) -> Linear -> (512w, 4, 4) -> [ConvTranspose2d(4, stride 2) + BN + ReLU] per
    doubling, halving channels (floor 32w) -> 3x3 conv to C channels: (N, C, H, W) raw outputs.

    Three upsampling stages for 32x32 (CIFAR-10), four for 64x64 (CelebA). BatchNorm as in the
    official ResNet decoder: it keeps the transposed-conv stack well conditioned at the high
    learning rates a sweep visits; the final conv has no BN or activation (outputs are logits or
    Gaussian means). Needs square images with H = 4 * 2^k.
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: float = 1.0):
        super().__init__()
        c, h, w = image_shape
        n_up = int(round(math.log2(h / 4))) if h >= 4 else -1
        if h != w or n_up < 1 or 4 * 2**n_up != h:
            raise ValueError(f"ConvDecoder needs square images of side 4*2^k (8, 16, 32, 64, ...), got {h}x{w}")
        self.image_shape = tuple(image_shape)
        self.c0 = _channels(512, width)
        floor = _channels(32, width)
        self.linear = Float32Linear(latent_dim, self.c0 * 16)
        layers: list[nn.Module] = []
        c_in = self.c0
        for _ in range(n_up):
            c_out = max(floor, c_in // 2)
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, c, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.linear(z).view(-1, self.c0, 4, 4))


def build_encoder(net: NetSpec) -> nn.Module:
    """The encoder for ``net.arch``: 'mlp' or 'resnet' (``net.width`` and ``net.resnet_stages``
    shape the ResNet; the MLP ignores them)."""
    if net.arch == "mlp":
        return MLPEncoder(net.image_shape, net.latent_dim)
    if net.arch == "resnet":
        return ResNetEncoder(net.image_shape, net.latent_dim, width=net.width, stages=net.resnet_stages)
    raise ValueError(f"unknown arch {net.arch!r}; expected 'mlp' or 'resnet'")


def build_decoder(net: NetSpec) -> nn.Module:
    """The decoder for ``net.arch``: MLPDecoder for 'mlp', ConvDecoder for 'resnet'."""
    if net.arch == "mlp":
        return MLPDecoder(net.image_shape, net.latent_dim)
    if net.arch == "resnet":
        return ConvDecoder(net.image_shape, net.latent_dim, width=net.width)
    raise ValueError(f"unknown arch {net.arch!r}; expected 'mlp' or 'resnet'")


def build_networks(net: NetSpec) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) for ``net``."""
    return build_encoder(net), build_decoder(net)


def encoder_feature_dim(encoder: nn.Module) -> int:
    """Width of ``encoder.features(x)`` (before the Gaussian head)."""
    return int(encoder.feature_dim)


def projection_head(in_dim: int, hidden: int, out: int, layers: int = 2, batch_norm: bool = True) -> nn.Sequential:
    """MLP projection head for discriminative SSL: ``layers - 1`` blocks of
    Linear -> [BatchNorm1d] -> ReLU, then Linear(., out). ``layers=2`` with BN is the
    SimCLR v2 / MoCo v2 style head; ``layers=3`` the VICReg expander. The first Linear, which
    reads the latent, is a ``Float32Linear``."""
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    mods: list[nn.Module] = []
    d, linear = in_dim, Float32Linear
    for _ in range(layers - 1):
        mods.append(linear(d, hidden, bias=not batch_norm))
        linear = nn.Linear
        if batch_norm:
            mods.append(nn.BatchNorm1d(hidden))
        mods.append(nn.ReLU(inplace=True))
        d = hidden
    mods.append(linear(d, out))
    return nn.Sequential(*mods)


__all__ = [
    "LOGVAR_RANGE",
    "Float32Linear",
    "GaussianHead",
    "MLPEncoder",
    "MLPDecoder",
    "BasicBlock",
    "ResNetEncoder",
    "ConvDecoder",
    "RESNET_STAGES",
    "build_encoder",
    "build_decoder",
    "build_networks",
    "encoder_feature_dim",
    "projection_head",
]
