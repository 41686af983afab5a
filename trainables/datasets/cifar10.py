"""CIFAR-10: RGB 32x32 in [0, 1] (Gaussian likelihood; docs/design.md §3), from torchvision's
python batches or a lossless subset npz (:data:`CIFAR_SUBSET`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainables.datasets.registry import PAPER_BUDGET, DatasetInfo, Pool, Pools, cause, register, unavailable

CIFAR_SUBSET = Path("cifar10") / "cifar10_lossless_subset.npz"


@register(DatasetInfo("cifar10", (3, 32, 32), 10, "resnet", 64, "gaussian", (0.6, 1.0), colour=True,
                      display="CIFAR-10", budget=PAPER_BUDGET,
                      description="CIFAR-10, 50k/10k RGB in [0, 1]"))
def load_cifar10(root: Path, download: bool) -> Pools:
    """torchvision's CIFAR10 from ``root/cifar-10-batches-py``. When those files are absent but
    ``root/cifar10/cifar10_lossless_subset.npz`` exists (keys train_x (N, 32, 32, 3) uint8,
    train_y, test_x, test_y: exact pixels of a prefix of CIFAR-10), that subset is used instead
    and nothing is downloaded. Otherwise torchvision downloads the full set."""
    import torchvision

    folder = root / torchvision.datasets.CIFAR10.base_folder
    npz = root / CIFAR_SUBSET
    if not folder.is_dir() and npz.is_file():
        with np.load(npz) as f:
            arrays = (f["train_x"], f["train_y"], f["test_x"], f["test_y"])
    else:
        try:
            tr = torchvision.datasets.CIFAR10(str(root), train=True, download=download)
            te = torchvision.datasets.CIFAR10(str(root), train=False)
        except Exception as err:
            reason = cause(err) if download or folder.is_dir() else ""
            raise unavailable("cifar10", folder, f"put CIFAR-10's python batches (data_batch_1..5, "
                              f"test_batch, batches.meta) in {folder} or the subset npz at {npz}",
                              download, reason) from err
        arrays = (tr.data, tr.targets, te.data, te.targets)

    def images(x) -> torch.Tensor:  # (N, 32, 32, 3) HWC -> (N, 3, 32, 32) uint8
        return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(0, 3, 1, 2)))

    def labels(y) -> torch.Tensor:
        return torch.as_tensor(np.asarray(y), dtype=torch.long)

    train_x, train_y, test_x, test_y = arrays
    return Pools(Pool.in_memory(images(train_x), labels(train_y)),
                 Pool.in_memory(images(test_x), labels(test_y)))
