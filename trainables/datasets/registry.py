"""The registry (name -> :class:`DatasetInfo` + loader) and the split rules shared by every dataset.

A loader ``f(root: Path, download: bool) -> Pools`` returns the dataset's own train and test
sets (:class:`Pool` s, on the CPU); :func:`load_dataset` turns them into a :class:`Splits`:
three :class:`Split` s whose images are ONE float32 tensor ``x`` of shape (N, C, H, W) in
[0, 1] on the training device (no DataLoader, no per-step host-to-device copies), with int64
content labels ``y`` (N,) and a dict of style labels (N,) each.

Splits (fixed, independent of the training seed, so every seed sees the same data):
    test        the dataset's own test set; ``test_size`` keeps a stratified subset of it.
    validation  carved from the dataset's training set with a fixed seed, stratified by content
                label. Nothing selects on test: model selection uses validation only.
    train       the rest of the training set, or ``train_size`` images of it.

``train_size`` is the number of images actually trained on; the validation set is carved
separately: ``round(VAL_FRACTION * N)`` images of the N-image training pool when
``train_size`` is None (train = the other N - n_val), else
``min(max(round(VAL_FRACTION * train_size), MIN_VAL), N - train_size)``. Both come from one
fixed stratified order of the pool (every prefix and suffix of it has the pool's class
proportions, to within one image per class): train is a prefix, validation a suffix, so they are
disjoint and nested across sizes (a smaller train_size trains on a subset of a larger one).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

VAL_FRACTION = 0.1  # share of the training pool held out for validation
MIN_VAL = 100  # smallest validation set when train_size limits the training set
SPLIT_SEED = 0  # fixed seed of the train/validation carve (never the training seed)
TEST_SEED = 1  # fixed seed of the stratified test subset when test_size is given

# Training budgets per dataset (DatasetInfo.budget: the run config's defaults for these keys).
# The paper's datasets take the official code's defaults (Adam lr 8e-5, 128 views per step,
# 400 epochs); the built-in offline datasets take budgets that train in CPU minutes, with small
# batches: on ~1,000 images the VAE family needs ~1,500 optimiser steps before its
# representation beats its random initialisation (measured on digits: at 16 images per step
# and 20 epochs, VAE kNN 87% and SimVAE 93% against the random encoder's 83%; at 32 images
# per step and 10 epochs both were below it). They count images per step, the same for every
# J (32 views per step would be 3 images at J = 10: ~1,200 tiny steps an epoch on shapes).
PAPER_BUDGET = {"epochs": 400, "lr": 8e-5, "batch_size": 128}
OFFLINE_BUDGET = {"epochs": 20, "lr": 1e-3, "images_per_step": 16}

# DatasetInfo fields shared by the ten-class 28x28 grey datasets (mnist, fashionmnist, digits).
GREY10 = dict(num_classes=10, arch="mlp", latent_dim=10, likelihood="bernoulli", crop_scale=(0.4, 1.0))


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------
class DatasetUnavailable(RuntimeError):
    """The dataset's files are absent and could not be downloaded. str() is one line naming the
    dataset, the folder searched and how to provide the files."""


class UnknownDataset(ValueError):
    """A dataset name that is not in :data:`DATASETS`."""


class DatasetError(ValueError):
    """The dataset's files are there but cannot serve the run: unreadable, truncated or
    inconsistent files (labels out of range, labels and images of different lengths), or a
    train_size / test_size the dataset does not have. str() is one line."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the system needs to know about a dataset (no data)."""

    name: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    arch: str  # 'mlp' (28x28 grey) or 'resnet' (32x32 / 64x64 colour)
    latent_dim: int  # 10 for the grey datasets, 64 for cifar10 / celeba
    likelihood: str  # 'bernoulli' (grey) or 'gaussian' (colour)
    crop_scale: tuple[float, float]  # random-resized-crop scale: (0.4, 1) grey, (0.6, 1) colour
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    colour: bool = False  # colour jitter applies
    offline: bool = False  # True when no files are needed (digits, shapes)
    description: str = ""
    display: str = field(kw_only=True)  # name in tables and figures, e.g. "CIFAR-10"
    # default training budget {"epochs", "lr", "batch_size"} (PAPER_BUDGET / OFFLINE_BUDGET);
    # copied, so datasets never share one dict; not hashed (a dict is not hashable)
    budget: dict = field(kw_only=True, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", dict(self.budget))


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1], on the requested device
    y: torch.Tensor  # (N,) int64 content labels, same device
    style: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N,) labels

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Splits:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    style_kinds: dict[str, str]  # style name -> 'continuous' or 'categorical'


@dataclass
class Pool:
    """One of a dataset's own sets (train or test) before splitting, on the CPU.

    ``fetch(idx)`` returns the images at int64 indices ``idx`` as (n, C, H, W), either uint8
    in 0..255 or float32 in [0, 1]; it lets a big dataset (CelebA) decode only what is used.
    """

    y: torch.Tensor  # (N,) int64
    fetch: Callable[[torch.Tensor], torch.Tensor]
    style: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def in_memory(cls, x: torch.Tensor, y: torch.Tensor, style: dict | None = None) -> "Pool":
        if len(x) != len(y):
            raise DatasetError(f"{len(x)} images but {len(y)} labels")
        return cls(y=y.long(), fetch=lambda idx: x[idx], style=dict(style or {}))


@dataclass
class Pools:
    train: Pool
    test: Pool
    style_kinds: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
DATASETS: dict[str, DatasetInfo] = {}  # in registration order = display order
_LOADERS: dict[str, Callable[[Path, bool], Pools]] = {}


def register(info: DatasetInfo):
    """Decorator: add a loader ``f(root, download) -> Pools`` under ``info.name``."""

    def add(loader: Callable[[Path, bool], Pools]):
        DATASETS[info.name] = info
        _LOADERS[info.name] = loader
        return loader

    return add


def default_data_dir() -> Path:
    """$SSL_SWEEPS_DATA, else ~/.cache/ssl-sweeps/data; absolute, because Ray trials run with
    the working directory changed to the trial folder."""
    env = os.environ.get("SSL_SWEEPS_DATA")
    return Path(env).expanduser().absolute() if env else Path.home() / ".cache" / "ssl-sweeps" / "data"


def resolve_data_dir(path: str | Path) -> str:
    """A data folder as trials need it: absolute, symbolic links resolved; DatasetError (one
    line) for a symbolic link loop."""
    try:
        return str(Path(path).expanduser().resolve())
    except (RuntimeError, OSError) as e:  # Python raises RuntimeError for a loop
        raise DatasetError(f"data folder {path} cannot be resolved: {cause(e)}") from None


def get_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UnknownDataset(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


# --------------------------------------------------------------------------------------------
# Loading and splitting
# --------------------------------------------------------------------------------------------
def load_dataset(name: str, data_dir: str | Path | None = None, *, train_size: int | None = None,
                 test_size: int | None = None, device: str | torch.device = "cpu",
                 download: bool = True) -> Splits:
    """Load ``name`` as train / val / test :class:`Split` s on ``device`` (see module doc for
    the split rules). Raises UnknownDataset, DatasetUnavailable, or ValueError for sizes that
    the dataset cannot provide."""
    info, pools = _pools(name, data_dir, download)
    train_idx, val_idx = carve_validation(pools.train.y, train_size, name)
    test_idx = limit_test(pools.test.y, test_size, name)
    train, val = _take(pools.train, [train_idx, val_idx], device)
    (test,) = _take(pools.test, [test_idx], device)
    return Splits(info, train, val, test, dict(pools.style_kinds))


def _pools(name: str, data_dir: str | Path | None, download: bool) -> tuple[DatasetInfo, Pools]:
    """The dataset's own train and test pools, checked (labels in range, one per image); every
    failure to read them is one line (DatasetUnavailable, DatasetError)."""
    info = get_info(name)
    root = Path(data_dir).expanduser().absolute() if data_dir is not None else default_data_dir()
    try:
        pools = _LOADERS[name](root, download)
    except (DatasetUnavailable, UnknownDataset):
        raise
    except DatasetError as e:
        raise DatasetError(f"{name} under {root}: {e}") from None
    except (OSError, ValueError, EOFError, RuntimeError, KeyError, zipfile.BadZipFile) as e:  # truncated/corrupt
        raise DatasetError(f"{name}: cannot read its files under {root}: {type(e).__name__}: {cause(e)}"[:400]) from None
    for which, pool in (("train", pools.train), ("test", pools.test)):
        shape = tuple(pool.fetch(torch.zeros(1, dtype=torch.long)).shape[1:]) if len(pool.y) else info.image_shape
        if shape != tuple(info.image_shape):  # a header that gives another shape for the right byte count
            raise DatasetError(f"{name} under {root}: {which} images are {'x'.join(map(str, shape))}, not "
                               f"{'x'.join(map(str, info.image_shape))} (C x H x W): corrupt or foreign image file?")
        if len(pool.y) and (int(pool.y.min()) < 0 or int(pool.y.max()) >= info.num_classes):
            raise DatasetError(f"{name} under {root}: {which} labels outside 0..{info.num_classes - 1} "
                               f"(found {int(pool.y.min())}..{int(pool.y.max())}): corrupt label file?")
    return info, pools


def dataset_sizes(name: str, data_dir: str | Path | None = None, *, train_size: int | None = None,
                  test_size: int | None = None, download: bool = True) -> tuple[int, int, int]:
    """(train, validation, test) image counts ``load_dataset`` would give, from the pools'
    labels (lazy pools decode no image), with the same errors: a pre-flight check, and the one
    download of missing files before many runs read them."""
    _, pools = _pools(name, data_dir, download)
    train_idx, val_idx = carve_validation(pools.train.y, train_size, name)
    return len(train_idx), len(val_idx), len(limit_test(pools.test.y, test_size, name))


def stratified_order(y: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed permutation (N,) of range(N) whose every prefix (and suffix) holds each class in
    the proportion of ``y`` to within one image: shuffle within classes, then sort elements
    by their fractional rank (r + 0.5) / n_class inside their class."""
    n = len(y)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    ys = y[perm]
    counts = torch.bincount(ys)
    by_class = torch.argsort(ys, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[by_class] = torch.arange(n) - starts[ys[by_class]]
    key = (rank.double() + 0.5) / counts[ys].double()
    return perm[torch.argsort(key, stable=True)]


def carve_validation(y: torch.Tensor, train_size: int | None, name: str = "dataset"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted index tensors (train, val) into a training pool with labels ``y`` (N,); fixed
    (SPLIT_SEED), stratified, disjoint. Sizes as in the module docstring."""
    n = len(y)
    if train_size is None:
        n_val = round(VAL_FRACTION * n)
        n_train = n - n_val
    else:
        if int(train_size) < 1 or int(train_size) >= n:
            raise DatasetError(f"{name}: train_size={train_size} must be between 1 and {n - 1} "
                             f"(the training pool has {n} images and validation needs at least one)")
        n_train = int(train_size)
        n_val = min(max(round(VAL_FRACTION * n_train), MIN_VAL), n - n_train)
    order = stratified_order(y, SPLIT_SEED)
    return order[:n_train].sort().values, order[n - n_val:].sort().values


def limit_test(y: torch.Tensor, test_size: int | None, name: str = "dataset") -> torch.Tensor:
    """Sorted indices of the test images kept: all, or a fixed stratified ``test_size`` subset."""
    n = len(y)
    if test_size is None:
        return torch.arange(n)
    if int(test_size) < 1 or int(test_size) > n:
        raise DatasetError(f"{name}: test_size={test_size} must be between 1 and {n} "
                         f"(the test set has {n} images)")
    return stratified_order(y, TEST_SEED)[: int(test_size)].sort().values


def _take(pool: Pool, parts: list[torch.Tensor], device: str | torch.device) -> list[Split]:
    """Fetch the images of several index sets in one go (one decode pass for lazy pools), move
    them to ``device`` as uint8 where possible (4x less to copy), then convert to float32."""
    idx = torch.cat(parts)
    x = pool.fetch(idx).to(device)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    y = pool.y[idx].to(device)
    style = {k: v[idx].to(device) for k, v in pool.style.items()}
    out, start = [], 0
    for part in parts:
        sl = slice(start, start + len(part))
        out.append(Split(x[sl], y[sl], {k: v[sl] for k, v in style.items()}))
        start += len(part)
    return out


# --------------------------------------------------------------------------------------------
# For loaders: one-line errors
# --------------------------------------------------------------------------------------------
def cause(err: BaseException) -> str:
    """The last line of an exception's message (torchvision ends with the cause)."""
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__


def unavailable(name: str, folder: Path | str, how: str, download: bool, reason: str = "") -> DatasetUnavailable:
    """The one-line :class:`DatasetUnavailable` a loader raises: dataset, folder searched,
    whether a download was tried (and why it failed), and ``how`` to provide the files."""
    tried = "download failed (no network?)" if download else "download disabled"
    why = f" ({' '.join(reason.split())[:200]})" if reason else ""
    return DatasetUnavailable(f"{name}: no usable files under {folder} and {tried}{why}; {how} "
                              f"or pass --data-dir (or set SSL_SWEEPS_DATA)")
