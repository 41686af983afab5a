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


def standardise(train: Tensor, *others: Tensor, rel_floor: float = 1e-8) -> tuple[Tensor, ...]:
    """Z-score ``train`` and ``others`` (each (n, d)) with the per-dimension mean and std of
    ``train``. A std below ``rel_floor`` times the largest one is floored there, so a dead
    (constant) dimension maps to ~0 instead of dividing by zero."""
    train = train.float()
    mean = train.mean(0)
    std = train.std(0, correction=0)
    std = std.clamp_min(rel_floor * std.max().clamp_min(torch.finfo(std.dtype).tiny))
    return tuple((t.float() - mean) / std for t in (train, *others))


def in_eval_mode(method: Any, fn: Callable[[], Any]) -> Any:
    """Run fn with method in eval mode, restoring its previous mode afterwards."""
    was_training = method.training
    method.eval()
    try:
        return fn()
    finally:
        method.train(was_training)
