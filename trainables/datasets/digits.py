"""digits: scikit-learn's 8x8 digits upsampled to 28x28, grey in [0, 1] (offline; no files)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.datasets.registry import GREY10, OFFLINE_BUDGET, DatasetInfo, Pool, Pools, register, stratified_order

DIGITS_TEST, DIGITS_SEED = 500, 0


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, ...]:
    """scikit-learn's load_digits (1,797 8x8 images, 0..16) scaled to [0, 1], bilinearly
    upsampled to (N, 1, 28, 28), split 1,297 / 500 stratified with a fixed seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().div(16.0).unsqueeze(1)
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.from_numpy(d.target).long()
    order = stratified_order(y, DIGITS_SEED)
    tr, te = order[DIGITS_TEST:].sort().values, order[:DIGITS_TEST].sort().values
    return x[tr], y[tr], x[te], y[te]


@register(DatasetInfo("digits", (1, 28, 28), **GREY10, offline=True, display="Digits", budget=OFFLINE_BUDGET,
                      description="scikit-learn 8x8 digits upsampled to 28x28, 1,297/500, grey in [0, 1]"))
def load_digits(root: Path, download: bool) -> Pools:
    train_x, train_y, test_x, test_y = _digits_arrays()
    return Pools(Pool.in_memory(train_x, train_y), Pool.in_memory(test_x, test_y))
