"""The contract every method implements, and the method registry.

A *method* is a small ``nn.Module`` that owns its networks and turns a batch of augmented
views into a dictionary of loss terms. Everything else -- data, augmentation, the optimiser,
the epoch loop, checkpoints, evaluation -- lives in ``trainables`` and is written once.

Adding a method is one file in ``models/`` (its objective as pure tensor functions plus a thin
``Method`` subclass decorated with ``@register``) and one import line in ``models/__init__.py``.

Shapes used throughout:
    views  (B, J, C, H, W)  J augmented views of each of B images, floats in [0, 1]
    clean  (B, C, H, W)     the un-augmented images the views came from
    x      (N, C, H, W)     any batch of images
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Hyperparameter:
    """One method hyperparameter: its default, a one-line help, and a validity check.

    ``check`` returns an error message (str) when a value is invalid, else None.
    """

    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    kind: type = float


@dataclass(frozen=True)
class NetSpec:
    """What a method needs to know about the data to build its networks."""

    image_shape: tuple[int, int, int]  # (C, H, W)
    arch: str  # 'mlp' or 'resnet'
    latent_dim: int
    likelihood: str  # 'bernoulli' or 'gaussian'
    width: float = 1.0  # ResNet width multiplier (the MLP ignores it)
    resnet_stages: int = 4  # ResNet stages: 4 = ResNet-18 (the MLP ignores it)


class Method(nn.Module):
    """Base class: subclasses set ``name``, ``family``, ``hyperparameters`` and implement
    ``loss``. ``self.encoder(x)`` returns (mu, logvar) of shape (N, d) each; the representation
    evaluated is always ``mu`` (encoder output before any projection head)."""

    name: str = ""
    display: str = ""  # how tables and figures name it (e.g. "SimVAE")
    family: str = "generative"  # 'generative', 'discriminative' or 'baseline'
    trainable: bool = True  # False for the baselines (random encoder, pixels)
    hyperparameters: dict[str, Hyperparameter] = {}

    def __init__(self, net: NetSpec, hp: dict[str, Any]):
        super().__init__()
        self.net = net
        # A run builds its method from its resolved config (trainables.config applies these same
        # declared defaults and checks every value once); a method built by hand from a partial
        # dict (tests, notebooks) gets the declared defaults for the keys it leaves out. A method
        # sees only its own hyperparameters: anything else is a mistake of the caller.
        unknown = sorted(set(hp) - set(self.hyperparameters))
        if unknown:
            raise TypeError(f"{self.name}: not hyperparameters of this method: {', '.join(unknown)}")
        self.hp = {key: spec.default for key, spec in self.hyperparameters.items()}
        self.hp.update(hp)

    # -- what the training loop calls -------------------------------------------------------
    def n_views(self) -> int:
        """Views per image the objective consumes (J). Batch size is counted in views."""
        return int(self.hp.get("J", 1))

    @classmethod
    def passes_per_image(cls, hp: dict[str, Any]) -> float:
        """A training image's compute in a step, in network passes (forward and backward): one
        per view the encoder reads, one more per view a decoder reconstructs (the generative
        family decodes every view it encodes). A relative cost for scheduling (sweeps/spaces.py
        launches the costliest trial first), not a FLOP count; 0 for a method that does not train."""
        if not cls.trainable:
            return 0.0
        return float(hp.get("J", 1)) * (2.0 if cls.family == "generative" else 1.0)

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return {'loss': scalar to minimise, <term>: scalar, ...}. Terms other than 'loss'
        are for logging and must be detached."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step (e.g. a momentum-encoder update)."""

    # -- what evaluation calls ---------------------------------------------------------------
    @torch.no_grad()
    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder means (N, d) of images x; no sampling."""
        mu, _ = self.encoder(x)
        return mu

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor | None:
        """Reconstructions of x in image space ([0, 1]), decoding the posterior mean; None if
        the method has no decoder of its own."""
        decoder = getattr(self, "decoder", None)
        if decoder is None:
            return None
        mu, _ = self.encoder(x)
        out = decoder(mu)
        return torch.sigmoid(out) if self.net.likelihood == "bernoulli" else out.clamp(0, 1)

    @classmethod
    def validate(cls, hp: dict[str, Any]) -> None:
        """Raise ValueError with a one-line message for an invalid hyperparameter value."""
        for key, spec in cls.hyperparameters.items():
            if spec.check is not None and key in hp:
                msg = spec.check(hp[key])
                if msg:
                    raise ValueError(f"{cls.name}: {key}={hp[key]!r} is invalid: {msg}")


METHODS: dict[str, type[Method]] = {}  # in display order (the paper's Table 1 rows)
FAMILIES = ("baseline", "discriminative", "generative")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass to METHODS under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.family not in FAMILIES:
        raise TypeError(f"{cls.__name__}: family {cls.family!r} is not one of {', '.join(FAMILIES)}")
    METHODS[cls.name] = cls
    return cls


def full_precision(objective: Callable) -> Callable:
    """An objective computed in float32 even when the networks run under bfloat16 autocast
    (trainables/precision.py): its floating-point tensor arguments are cast up and autocast is
    off inside, so its matmuls (similarities, covariances), exponentials, logs and sums are float32
    operations. On float32 inputs without autocast it is the objective itself, unchanged."""

    def up(a):
        return a.float() if torch.is_tensor(a) and a.is_floating_point() else a

    @functools.wraps(objective)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in (*args, *kwargs.values()) if torch.is_tensor(a)), "cpu")
        if not torch.is_autocast_enabled(device):
            return objective(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return objective(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper


def mean_terms(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-sample terms, each (N,), to what ``Method.loss`` returns: batch means, with only
    'loss' keeping its graph."""
    return {k: (v.mean() if k == "loss" else v.detach().mean()) for k, v in terms.items()}


# The value checks, one set for every declaration (methods' hyperparameters, trainables.config's
# common keys): each returns an error message, or None for a valid value.
def positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def finite_positive(v) -> str | None:
    return None if (math.isfinite(v) and v > 0) else "must be a finite number > 0"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def at_least(n: int) -> Callable[[Any], str | None]:
    def check(v) -> str | None:
        return None if v >= n else f"must be >= {n}"

    return check


def one_of(*choices) -> Callable[[Any], str | None]:
    def check(v) -> str | None:
        return None if v in choices else f"must be one of {', '.join(map(str, choices))}"

    return check


__all__ = [
    "Hyperparameter",
    "NetSpec",
    "Method",
    "METHODS",
    "register",
    "mean_terms",
    "full_precision",
    "positive",
    "finite_positive",
    "non_negative",
    "at_least",
    "one_of",
]
