"""Features for the evaluators: batched encoding, train-statistics z-scoring, eval mode."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 24  # ~64 MB of float32 per distance block / evaluation chunk


@torch.no_grad()
def encode(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1024) -> Tensor:
    """Apply ``fn`` (images (n, C, H, W) -> features (n, d)) in batches; (N, d) float32 on
    x's device."""
    out = [fn(x[s : s + batch_size]).float() for s in range(0, len(x), batch_size)]
    return torch.cat(out).to(x.device)


def standardise(train: Tensor, *others: Tensor, rel_floor: float = 1e-6) -> tuple[Tensor, ...]:
    """Z-score ``train`` and ``others`` (each (n, d)) with the per-dimension mean and std of
    ``train`` (computed in float64).

    A dimension is *dead* when its train std is at most ``rel_floor`` times the larger of the
    largest std and the dimension's own |mean| (constant on train, up to float32 rounding).
    Dead dimensions map to 0 on every split: the train set says nothing about them, and
    dividing another split's deviation by a near-zero std would blow it up (a pixel that is
    always 0 on train but 1 in a test image became 1e8 with a floored std)."""
    mean, std = _mean_std(train)
    scale = torch.maximum(std.max().expand_as(mean), mean.abs()) if len(mean) else mean
    dead = std <= rel_floor * scale
    inv = torch.where(dead, torch.zeros_like(std), 1.0 / torch.where(dead, torch.ones_like(std), std))
    mean, inv = mean.float(), inv.float()
    return tuple((t.float() - mean) * inv for t in (train, *others))


def _mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-column mean and population std of x (n, d) in float64, two passes over row chunks
    (a 50,000 x 3072 pixel matrix is never copied whole in float64); float32 on MPS, which has
    no float64."""
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    rows = max(1, CHUNK_ELEMENTS // max(1, x.shape[1]))
    mean = sum(x[s : s + rows].to(dtype).sum(0) for s in range(0, len(x), rows)) / len(x)
    sq = sum((x[s : s + rows].to(dtype) - mean).pow(2).sum(0) for s in range(0, len(x), rows))
    return mean, (sq / len(x)).sqrt()


def in_eval_mode(method: Any, fn: Callable[[], Any]) -> Any:
    """Run fn with method in eval mode, restoring its previous mode afterwards."""
    was_training = method.training
    method.eval()
    try:
        return fn()
    finally:
        method.train(was_training)
