"""MNIST and FashionMNIST: torchvision's IDX files (docs/design.md §3).

    mnist         grey 28x28, binarised at 0.5 (pixel > 127 -> 1; Bernoulli likelihood)
    fashionmnist  grey 28x28 in [0, 1] (Bernoulli likelihood, not binarised)

Both read the same four IDX files (:data:`IDX_FILES`), in torchvision's layout
``root/<MNIST|FashionMNIST>/raw``; FashionMNIST is also found in the folders of
:data:`FASHION_MNIST_SYSTEM_DIRS` (plain or gzipped files).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from trainables.datasets.registry import GREY10, PAPER_BUDGET, DatasetInfo, Pool, Pools, cause, register, unavailable

# Debian's package `dataset-fashion-mnist` installs the four canonical gz files here.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

IDX_FILES = {  # torchvision's raw names (train, test) for MNIST-like datasets
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST format), plain or gzip-compressed: magic
    0x0000 08 <ndim>, then ndim big-endian uint32 sizes, then the bytes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {arr.size} bytes")
    return arr.reshape(dims)


def _idx_pools_from_folder(folder: Path) -> tuple[torch.Tensor, ...] | None:
    """(train_x, train_y, test_x, test_y) from the four IDX files in ``folder`` (each plain or
    .gz), or None when any is missing."""
    arrays = []
    for images, labels in IDX_FILES.values():
        for stem in (images, labels):
            path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
            if path is None:
                return None
            arrays.append(torch.from_numpy(read_idx(path).copy()))
    return tuple(arrays)


def _load_mnist_like(cls, name: str, root: Path, download: bool, binarise: bool,
                     extra_dirs: tuple[Path, ...] = ()) -> Pools:
    """torchvision's ``cls`` (MNIST / FashionMNIST) from ``root``; else the IDX files in
    ``extra_dirs``; else a torchvision download. Images uint8 (N, 1, 28, 28)."""
    raw = root / cls.__name__ / "raw"
    arrays = None
    if all((raw / stem).is_file() for pair in IDX_FILES.values() for stem in pair):
        try:
            tr, te = cls(str(root), train=True), cls(str(root), train=False)
        except Exception as err:  # corrupt files: say so in one line
            raise unavailable(name, raw, f"replace the IDX files in {raw}", False, cause(err)) from err
        arrays = (tr.data, tr.targets, te.data, te.targets)
    for folder in extra_dirs:
        if arrays is None:
            arrays = _idx_pools_from_folder(folder)
    reason = ""
    if arrays is None and download:
        try:
            tr, te = cls(str(root), train=True, download=True), cls(str(root), train=False)
            arrays = (tr.data, tr.targets, te.data, te.targets)
        except Exception as err:
            reason = cause(err)
    if arrays is None:
        where = " or ".join(str(p) for p in (raw, *extra_dirs))
        raise unavailable(name, where, f"put the four {cls.__name__} IDX files "
                          f"({', '.join(IDX_FILES['train'] + IDX_FILES['test'])}) in {raw}",
                          download, reason)
    train_x, train_y, test_x, test_y = arrays

    def images(x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (N, 1, 28, 28) uint8
        return (x > 127).to(torch.uint8) * 255 if binarise else x

    return Pools(Pool.in_memory(images(train_x), train_y), Pool.in_memory(images(test_x), test_y))


@register(DatasetInfo("mnist", (1, 28, 28), **GREY10, display="MNIST", budget=PAPER_BUDGET,
                      description="MNIST digits, 60k/10k, binarised at 0.5"))
def load_mnist(root: Path, download: bool) -> Pools:
    import torchvision

    return _load_mnist_like(torchvision.datasets.MNIST, "mnist", root, download, binarise=True)


@register(DatasetInfo("fashionmnist", (1, 28, 28), **GREY10, display="FashionMNIST", budget=PAPER_BUDGET,
                      description="Fashion-MNIST, 60k/10k, grey in [0, 1]"))
def load_fashionmnist(root: Path, download: bool) -> Pools:
    """Also found where Debian's ``dataset-fashion-mnist`` installs it
    (:data:`FASHION_MNIST_SYSTEM_DIRS`, read at call time: patch it on this module) when
    ``root`` lacks torchvision's files."""
    import torchvision

    return _load_mnist_like(torchvision.datasets.FashionMNIST, "fashionmnist", root, download,
                            binarise=False, extra_dirs=FASHION_MNIST_SYSTEM_DIRS)
