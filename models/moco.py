"""MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
Learning"; Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning").

Query network: encoder -> mu -> 2-layer MLP head (d -> proj_hidden -> proj_dim, MoCo v2's head).
Key network: a copy of both whose parameters follow the query's by an exponential moving
average, theta_k <- m * theta_k + (1 - m) * theta_q, applied in ``after_step`` (after each
optimiser step). Key parameters have ``requires_grad = False``: the training loop builds its
optimiser over ``[p for p in method.parameters() if p.requires_grad]``, so they are never
optimised, and keys are computed under ``torch.no_grad``.

Objective (``moco_logits`` + ``info_nce``): for an L2-normalised query q, its key k+ (another
view of the same image, from the key network) and the queue of K past keys,
    l = -log[ exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k in queue} exp(q.k / tau)) ].
Views: the query is view 0 and every other view j = 1..J-1 gives a key (J = 2: the original
MoCo v2); the loss is the mean over those J-1 (query, key) pairs. ``symmetric = 1`` instead
uses every ordered pair of distinct views (J = 2: the symmetrised loss of MoCo's CIFAR demo,
averaged rather than summed). All keys computed in a step are enqueued after the logits,
under no_grad, and only in training mode.

Queue: a (K, proj_dim) buffer initialised with random unit vectors (as the original), with a
pointer buffer; writes wrap around modulo K, so K need not be a multiple of the keys per step.
If a step brings more than K keys only its newest K are kept. K >= 1 is the only requirement.

BatchNorm shortcut guard (MoCo's "shuffle BN"): with batch statistics shared by a query and its
key the network can find the positive through BN rather than content. On one device we emulate
per-GPU BN: queries are computed in ``bn_splits`` sub-batches of images in order, keys on a
random permutation of the key views split into ``bn_splits`` sub-batches and then un-shuffled,
so a query and its key take BN statistics from different random subsets. This is applied only
when the networks contain BatchNorm (the ResNet encoder); the MLP encoder and the MoCo v2 head
have none, and for them a single pass is used.

Defaults (docs/design.md §2's small-data values): K = 4096, m = 0.99, tau = 0.2, head 512 -> 128.
"""
from __future__ import annotations

import copy
from itertools import chain
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from models.base import Hyperparameter, Method, NetSpec, at_least, full_precision, one_of, positive, register
from models.networks import build_encoder, projection_head


@full_precision
def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits (N, 1 + K): column 0 is q_n . k_n, then q_n . queue_k; all divided by tau.

    q, k (N, D) and queue (K, D) are L2-normalised.
    """
    positive_logit = (q * k).sum(dim=1, keepdim=True)
    return torch.cat([positive_logit, q @ queue.T], dim=1) / temperature


@full_precision
def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (N, 1 + K) with the positive at index 0."""
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """FIFO write of keys (n, D) into queue (K, D) at ptr (a 0-d long tensor), in place.

    Key i goes to slot (ptr + i) mod K, so the oldest entries are overwritten first; when
    n > K only the newest K keys survive. ptr becomes (ptr + n) mod K. No host sync.
    """
    size, n = queue.shape[0], keys.shape[0]
    first = max(n - size, 0)  # keys that a later key of this same step would overwrite
    slots = (ptr + torch.arange(first, n, device=queue.device)) % size
    queue.index_copy_(0, slots, keys[first:].to(queue.dtype))
    ptr.copy_((ptr + n) % size)


@torch.no_grad()
def momentum_update(key_params: Iterable[torch.Tensor], query_params: Iterable[torch.Tensor], m: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q for each pair, in place."""
    for theta_k, theta_q in zip(key_params, query_params, strict=True):
        theta_k.mul_(m).add_(theta_q.detach(), alpha=1.0 - m)


def has_batchnorm(*modules: nn.Module) -> bool:
    """Whether any of the modules contains a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for mod in modules for m in mod.modules())


def momentum_in_unit_interval(v) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


@register
class MoCo(Method):
    """MoCo v2: query encoder + head, momentum key encoder + head, FIFO queue, InfoNCE."""

    name = "moco"
    display = "MoCo"
    family = "discriminative"
    hyperparameters = {
        "J": Hyperparameter(2, "views per image: query view 0, keys from views 1..J-1", at_least(2), int),
        "temperature": Hyperparameter(0.2, "InfoNCE temperature tau", positive),
        "momentum": Hyperparameter(0.99, "key-encoder EMA momentum m", momentum_in_unit_interval),
        "queue_size": Hyperparameter(4096, "number K of queued negative keys", at_least(1), int),
        "symmetric": Hyperparameter(0, "1: loss over every ordered view pair", one_of(0, 1), int),
        "bn_splits": Hyperparameter(2, "sub-batches for shuffle-BN emulation", at_least(2), int),
        "proj_hidden": Hyperparameter(512, "projection head hidden width", at_least(1), int),
        "proj_dim": Hyperparameter(128, "projection head output dim", at_least(1), int),
    }

    def __init__(self, net: NetSpec, hp: dict[str, Any]):
        super().__init__(net, hp)
        hp = self.hp
        self.encoder = build_encoder(net)  # no decoder
        # MoCo v2's head is Linear-ReLU-Linear, without BatchNorm.
        self.head = projection_head(net.latent_dim, int(hp["proj_hidden"]), int(hp["proj_dim"]), batch_norm=False)
        self.key_encoder = copy.deepcopy(self.encoder)
        self.key_head = copy.deepcopy(self.head)
        for p in self._key_parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(int(hp["queue_size"]), int(hp["proj_dim"])), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.bn_splits = int(hp["bn_splits"]) if has_batchnorm(self.encoder, self.head) else 1

    def _key_parameters(self) -> Iterable[torch.Tensor]:
        return chain(self.key_encoder.parameters(), self.key_head.parameters())

    def _query_parameters(self) -> Iterable[torch.Tensor]:
        return chain(self.encoder.parameters(), self.head.parameters())

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised query projections of x (B, V, C, H, W) -> (B, V, D); BN per image chunk."""
        V = x.shape[1]
        out = []
        for chunk in x.chunk(self.bn_splits, dim=0):
            mu, _ = self.encoder(chunk.flatten(0, 1))
            out.append(self.head(mu).reshape(chunk.shape[0], V, -1))
        return F.normalize(torch.cat(out), dim=2)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised key projections of x (B, V, C, H, W) -> (B, V, D), computed on a shuffled
        batch in ``bn_splits`` chunks and un-shuffled (shuffle-BN emulation)."""
        B, V = x.shape[:2]
        flat = x.flatten(0, 1)
        if self.bn_splits > 1:
            perm = torch.randperm(flat.shape[0], device=flat.device)
            flat = flat[perm]
        out = []
        for chunk in flat.chunk(self.bn_splits, dim=0):
            mu, _ = self.key_encoder(chunk)
            out.append(self.key_head(mu))
        k = torch.cat(out)
        if self.bn_splits > 1:
            k = k[torch.argsort(perm)]
        return F.normalize(k, dim=1).reshape(B, V, -1)

    def loss(self, views: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        J = views.shape[1]
        tau = float(self.hp["temperature"])
        if int(self.hp["symmetric"]):
            q, k = self._queries(views), self._keys(views)
            pairs = [(i, j) for i in range(J) for j in range(J) if i != j]
        else:
            q, k = self._queries(views[:, :1]), self._keys(views[:, 1:])
            pairs = [(0, j) for j in range(J - 1)]  # query view 0 against key views 1..J-1
        queue = self.queue.clone()  # autograd keeps it for dL/dq; enqueue below writes in place
        logits = [moco_logits(q[:, i], k[:, j], queue, tau) for i, j in pairs]
        loss = torch.stack([info_nce(lg) for lg in logits]).mean()
        all_logits = torch.cat(logits).detach()
        if self.training:
            enqueue(self.queue, self.queue_ptr, k.flatten(0, 1))
        return {
            "loss": loss,
            "info_nce": loss.detach(),
            "pos_sim": all_logits[:, 0].mean() * tau,
            "top1": (all_logits.argmax(dim=1) == 0).float().mean(),
        }

    def after_step(self) -> None:
        """EMA of the query network into the key network (MoCo's momentum update)."""
        momentum_update(self._key_parameters(), self._query_parameters(), float(self.hp["momentum"]))
