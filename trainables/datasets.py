"""The dataset registry: name -> loader, each giving train / validation / test splits.

Every dataset comes back as a :class:`Splits`: three :class:`Split` s whose images are ONE
float32 tensor ``x`` of shape (N, C, H, W) in [0, 1] on the training device (no DataLoader,
no per-step host-to-device copies), with int64 content labels ``y`` (N,) and a dict of style
labels (N,) each.

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

Preprocessing (DESIGN.md section 3):
    mnist         grey 28x28, binarised at 0.5 (pixel > 127 -> 1; Bernoulli likelihood)
    fashionmnist  grey 28x28 in [0, 1] (Bernoulli likelihood, not binarised)
    cifar10       RGB 32x32 in [0, 1] (Gaussian likelihood)
    celeba        RGB 64x64 in [0, 1]: aligned faces, centre crop 148 then resize to 64
                  (bilinear, antialiased), the usual protocol; content label "Male"
    digits        scikit-learn's 8x8 digits upsampled to 28x28, grey in [0, 1] (offline)
    shapes        procedurally rendered 28x28 grey shapes in [0, 1] (offline)

Files are looked for under ``data_dir`` (default :func:`default_data_dir`) in torchvision's
layout and downloaded there by torchvision when missing and ``download`` is true; a dataset
that can be neither found nor downloaded raises :class:`DatasetUnavailable` with a one-line
message saying where to put the files.

Adding a dataset is one loader function ``f(root: Path, download: bool) -> Pools`` decorated
with ``@register(DatasetInfo(...))``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

VAL_FRACTION = 0.1  # share of the training pool held out for validation
MIN_VAL = 100  # smallest validation set when train_size limits the training set
SPLIT_SEED = 0  # fixed seed of the train/validation carve (never the training seed)
TEST_SEED = 1  # fixed seed of the stratified test subset when test_size is given

# Debian's package `dataset-fashion-mnist` installs the four canonical gz files here.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

IDX_FILES = {  # torchvision's raw names (train, test) for MNIST-like datasets
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------
class DatasetUnavailable(RuntimeError):
    """The dataset's files are absent and could not be downloaded. str() is one line naming the
    dataset, the folder searched and how to provide the files."""


class UnknownDataset(ValueError):
    """A dataset name that is not in :data:`DATASETS`."""


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
        return cls(y=y.long(), fetch=lambda idx: x[idx], style=dict(style or {}))


@dataclass
class Pools:
    train: Pool
    test: Pool
    style_kinds: dict[str, str] = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {}
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
    info = get_info(name)
    root = Path(data_dir).expanduser().absolute() if data_dir is not None else default_data_dir()
    pools = _LOADERS[name](root, download)
    train_idx, val_idx = carve_validation(pools.train.y, train_size, name)
    test_idx = limit_test(pools.test.y, test_size, name)
    train, val = _take(pools.train, [train_idx, val_idx], device)
    (test,) = _take(pools.test, [test_idx], device)
    return Splits(info, train, val, test, dict(pools.style_kinds))


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
            raise ValueError(f"{name}: train_size={train_size} must be between 1 and {n - 1} "
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
        raise ValueError(f"{name}: test_size={test_size} must be between 1 and {n} "
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


def _cause(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__  # torchvision ends with the cause


def _unavailable(name: str, folder: Path | str, how: str, download: bool, reason: str = "") -> DatasetUnavailable:
    tried = "download failed (no network?)" if download else "download disabled"
    why = f" ({' '.join(reason.split())[:200]})" if reason else ""
    return DatasetUnavailable(f"{name}: no usable files under {folder} and {tried}{why}; {how} "
                              f"or pass --data-dir (or set SSL_SWEEPS_DATA)")


# --------------------------------------------------------------------------------------------
# MNIST and FashionMNIST (IDX files)
# --------------------------------------------------------------------------------------------
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
            raise _unavailable(name, raw, f"replace the IDX files in {raw}", False, _cause(err)) from err
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
            reason = _cause(err)
    if arrays is None:
        where = " or ".join(str(p) for p in (raw, *extra_dirs))
        raise _unavailable(name, where, f"put the four {cls.__name__} IDX files "
                           f"({', '.join(IDX_FILES['train'] + IDX_FILES['test'])}) in {raw}",
                           download, reason)
    train_x, train_y, test_x, test_y = arrays

    def images(x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (N, 1, 28, 28) uint8
        return (x > 127).to(torch.uint8) * 255 if binarise else x

    return Pools(Pool.in_memory(images(train_x), train_y), Pool.in_memory(images(test_x), test_y))


_GREY = dict(num_classes=10, arch="mlp", latent_dim=10, likelihood="bernoulli", crop_scale=(0.4, 1.0))


@register(DatasetInfo("mnist", (1, 28, 28), **_GREY,
                      description="MNIST digits, 60k/10k, binarised at 0.5"))
def load_mnist(root: Path, download: bool) -> Pools:
    import torchvision

    return _load_mnist_like(torchvision.datasets.MNIST, "mnist", root, download, binarise=True)


@register(DatasetInfo("fashionmnist", (1, 28, 28), **_GREY,
                      description="Fashion-MNIST, 60k/10k, grey in [0, 1]"))
def load_fashionmnist(root: Path, download: bool) -> Pools:
    """Also found where Debian's ``dataset-fashion-mnist`` installs it
    (:data:`FASHION_MNIST_SYSTEM_DIRS`) when ``root`` lacks torchvision's files."""
    import torchvision

    return _load_mnist_like(torchvision.datasets.FashionMNIST, "fashionmnist", root, download,
                            binarise=False, extra_dirs=FASHION_MNIST_SYSTEM_DIRS)


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
CIFAR_SUBSET = Path("cifar10") / "cifar10_lossless_subset.npz"


@register(DatasetInfo("cifar10", (3, 32, 32), 10, "resnet", 64, "gaussian", (0.6, 1.0), colour=True,
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
            reason = _cause(err) if download or folder.is_dir() else ""
            raise _unavailable("cifar10", folder, f"put CIFAR-10's python batches (data_batch_1..5, "
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


# --------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------
CELEBA_CROP, CELEBA_SIZE = 148, 64
CELEBA_CONTENT = "Male"
CELEBA_HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")  # hair_colour classes 0..3
BALANCED_RANGE = (0.2, 0.8)  # positive rate on the official train partition


def celeba_balanced(attr: torch.Tensor, names: list[str]) -> list[str]:
    """Attribute names whose positive rate over ``attr`` (N, 40) in {0, 1} lies in
    BALANCED_RANGE, excluding the content label."""
    rate = attr.double().mean(0)
    lo, hi = BALANCED_RANGE
    return [n for n, r in zip(names, rate.tolist()) if lo <= r <= hi and n != CELEBA_CONTENT]


def celeba_hair_colour(attr: torch.Tensor, names: list[str]) -> torch.Tensor:
    """(N,) int64: index into CELEBA_HAIR when exactly one hair-colour attribute is set, else -1
    (bald, hat, none or several; evaluators must drop label -1)."""
    cols = attr[:, [names.index(n) for n in CELEBA_HAIR]]
    one = cols.sum(1) == 1
    return torch.where(one, cols.argmax(1), torch.full_like(one, -1, dtype=torch.long))


def _celeba_decode(folder: Path, filenames: list[str]) -> torch.Tensor:
    """(n, 3, 64, 64) uint8: each aligned face centre-cropped to 148x148 and resized to 64x64
    (bilinear, antialiased). Decoded once, then cached under ``folder/ssl_sweeps_cache``."""
    import torchvision
    from torchvision.transforms.v2 import functional as TF

    key = hashlib.sha1("\n".join(filenames).encode()).hexdigest()[:16]
    cache = folder / "ssl_sweeps_cache" / f"align{CELEBA_SIZE}_{len(filenames)}_{key}.pt"
    if cache.is_file():
        try:
            x = torch.load(cache)
            if x.shape == (len(filenames), 3, CELEBA_SIZE, CELEBA_SIZE):
                return x
        except Exception:  # a torn cache file: decode again
            pass
    out = torch.empty(len(filenames), 3, CELEBA_SIZE, CELEBA_SIZE, dtype=torch.uint8)
    print(f"celeba: decoding {len(filenames)} images from {folder / 'img_align_celeba'} (once; cached)",
          file=sys.stderr, flush=True)
    chunk = 512
    for start in range(0, len(filenames), chunk):
        crops = []
        for fn in filenames[start:start + chunk]:
            raw = torchvision.io.read_file(str(folder / "img_align_celeba" / fn))
            img = torchvision.io.decode_image(raw, mode=torchvision.io.ImageReadMode.RGB)
            crops.append(TF.center_crop(img, [CELEBA_CROP, CELEBA_CROP]))
        out[start:start + len(crops)] = TF.resize(torch.stack(crops), [CELEBA_SIZE, CELEBA_SIZE], antialias=True)
        done = start + len(crops)
        if done % 20480 < chunk or done == len(filenames):
            print(f"celeba: {done}/{len(filenames)} images", file=sys.stderr, flush=True)
    try:  # atomic: concurrent trials may race to write the same cache
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save(out, tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # read-only data folder: just no cache
    return out


@register(DatasetInfo("celeba", (3, 64, 64), 2, "resnet", 64, "gaussian", (0.6, 1.0), colour=True,
                      description="CelebA aligned faces, centre crop 148 -> 64x64 RGB; content 'Male', "
                                  "style: balanced attributes + hair_colour"))
def load_celeba(root: Path, download: bool) -> Pools:
    """torchvision's CelebA from ``root/celeba`` (img_align_celeba/ and the five list files).
    Pools are the official train (partition 0) and test (partition 2) sets; the official
    'valid' partition is unused (validation is carved from train like every dataset).
    Style labels (all 'categorical'): every attribute whose positive rate over the whole
    official train partition is in BALANCED_RANGE (except Male), the four hair colours, and
    ``hair_colour`` (0..3 as CELEBA_HAIR, -1 when not exactly one is set). Images are decoded
    lazily, only those selected by train_size / test_size."""
    import torchvision

    folder = root / torchvision.datasets.CelebA.base_folder
    try:
        try:
            ds = torchvision.datasets.CelebA(str(root), split="all", target_type="attr")
        except RuntimeError:
            if not download:
                raise
            ds = torchvision.datasets.CelebA(str(root), split="all", target_type="attr", download=True)
    except Exception as err:
        reason = _cause(err) if download or folder.is_dir() else ""
        raise _unavailable("celeba", folder, f"put img_align_celeba/ and list_attr_celeba.txt, "
                           f"list_eval_partition.txt, identity_CelebA.txt, list_bbox_celeba.txt, "
                           f"list_landmarks_align_celeba.txt in {folder}", download, reason) from err
    names = [n for n in ds.attr_names if n]
    attr = ds.attr.long()
    partition = {}
    with open(folder / "list_eval_partition.txt") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                partition[parts[0]] = int(parts[1])
    part = torch.tensor([partition[fn] for fn in ds.filename])
    train_rows = torch.nonzero(part == 0).squeeze(1)
    style_names = celeba_balanced(attr[train_rows], names)
    style_names += [n for n in CELEBA_HAIR if n not in style_names]
    hair = celeba_hair_colour(attr, names)

    def pool(rows: torch.Tensor) -> Pool:
        files = [ds.filename[i] for i in rows.tolist()]
        style = {n: attr[rows, names.index(n)] for n in style_names}
        style["hair_colour"] = hair[rows]
        return Pool(y=attr[rows, names.index(CELEBA_CONTENT)],
                    fetch=lambda idx: _celeba_decode(folder, [files[i] for i in idx.tolist()]),
                    style=style)

    kinds = {n: "categorical" for n in [*style_names, "hair_colour"]}
    return Pools(pool(train_rows), pool(torch.nonzero(part == 2).squeeze(1)), kinds)


# --------------------------------------------------------------------------------------------
# digits (scikit-learn, offline)
# --------------------------------------------------------------------------------------------
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


@register(DatasetInfo("digits", (1, 28, 28), **_GREY, offline=True,
                      description="scikit-learn 8x8 digits upsampled to 28x28, 1,297/500, grey in [0, 1]"))
def load_digits(root: Path, download: bool) -> Pools:
    train_x, train_y, test_x, test_y = _digits_arrays()
    return Pools(Pool.in_memory(train_x, train_y), Pool.in_memory(test_x, test_y))


# --------------------------------------------------------------------------------------------
# shapes (procedural, offline)
# --------------------------------------------------------------------------------------------
SHAPE_NAMES = ("square", "circle", "triangle", "plus")
SHAPES_TRAIN, SHAPES_TEST, SHAPES_SEED = 4000, 1000, 1234
# Style factor ranges. Position and scale are in image coordinates ([-1, 1] spans the image);
# rotation (radians) stays within +-30 degrees so that it is identifiable for every shape but
# the circle (a square or plus repeats every 90 degrees, a triangle every 120).
SHAPE_FACTORS = {
    "x": (-0.3, 0.3),
    "y": (-0.3, 0.3),
    "scale": (0.3, 0.55),
    "rotation": (-math.pi / 6, math.pi / 6),
    "intensity": (0.5, 1.0),
}
# Canonical sizes (shape frame, before scaling): chosen for similar areas and extents <= 1.3.
SQUARE_HALF, TRIANGLE_CIRCUMRADIUS, PLUS_ARM, PLUS_HALF_WIDTH = 0.8, 1.3, 1.0, 0.35


def _box_sdf(u: torch.Tensor, v: torch.Tensor, hu: float, hv: float) -> torch.Tensor:
    """Exact signed distance to an axis-aligned box of half-sizes (hu, hv)."""
    qu, qv = u.abs() - hu, v.abs() - hv
    outside = torch.sqrt(qu.clamp(min=0) ** 2 + qv.clamp(min=0) ** 2)
    return outside + torch.maximum(qu, qv).clamp(max=0)


def shape_sdf(u: torch.Tensor, v: torch.Tensor, shape: int) -> torch.Tensor:
    """Signed distance (negative inside) of points (u, v) in the shape frame to canonical shape
    ``shape`` (an index into SHAPE_NAMES). v points down the image; the triangle is equilateral
    with its centroid at the origin and a vertex pointing up."""
    name = SHAPE_NAMES[shape]
    if name == "square":
        return _box_sdf(u, v, SQUARE_HALF, SQUARE_HALF)
    if name == "circle":
        return torch.sqrt(u ** 2 + v ** 2) - 1.0
    if name == "triangle":  # max over the three edges' outward normals minus the inradius
        c30 = math.sqrt(3) / 2
        edges = torch.maximum(torch.maximum(v, -c30 * u - 0.5 * v), c30 * u - 0.5 * v)
        return edges - TRIANGLE_CIRCUMRADIUS / 2
    if name == "plus":  # union of two bars = min of their distances
        return torch.minimum(_box_sdf(u, v, PLUS_ARM, PLUS_HALF_WIDTH), _box_sdf(u, v, PLUS_HALF_WIDTH, PLUS_ARM))
    raise ValueError(f"unknown shape {shape}")


def render_shapes(labels: torch.Tensor, factors: dict[str, torch.Tensor], size: int = 28) -> torch.Tensor:
    """(N, 1, size, size) float32 in [0, 1]: shape ``labels`` (N,) drawn with the style
    ``factors`` (each (N,)) by mapping every pixel centre into the shape's frame (inverse
    rotation and scaling about its position) and shading by signed distance; a one-pixel
    linear ramp across the edge anti-aliases it. Vectorised over images and pixels (one pass
    per shape class)."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    gy, gx = torch.meshgrid(c, c, indexing="ij")
    px = gx - factors["x"][:, None, None]
    py = gy - factors["y"][:, None, None]
    cos, sin = torch.cos(factors["rotation"])[:, None, None], torch.sin(factors["rotation"])[:, None, None]
    s = factors["scale"][:, None, None]
    u, v = (cos * px + sin * py) / s, (-sin * px + cos * py) / s
    sdf = torch.empty_like(u)
    for k in range(len(SHAPE_NAMES)):
        mask = labels == k
        sdf[mask] = shape_sdf(u[mask], v[mask], k)
    dist_px = sdf * s * (size / 2)  # shape frame -> image units -> pixels
    coverage = (0.5 - dist_px).clamp_(0, 1)
    return (factors["intensity"][:, None, None] * coverage).unsqueeze(1)


def generate_shapes(n: int, seed: int, size: int = 28) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Deterministic for ``seed``: (x (n, 1, size, size), labels (n,) exactly balanced over
    SHAPE_NAMES, factors name -> (n,) float32 drawn uniformly from SHAPE_FACTORS)."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(SHAPE_NAMES))[torch.randperm(n, generator=g)]
    factors = {k: lo + (hi - lo) * torch.rand(n, generator=g) for k, (lo, hi) in SHAPE_FACTORS.items()}
    return render_shapes(labels, factors, size), labels, factors


@functools.lru_cache(maxsize=1)
def _shapes_pools() -> tuple:
    return generate_shapes(SHAPES_TRAIN, SHAPES_SEED), generate_shapes(SHAPES_TEST, SHAPES_SEED + 1)


@register(DatasetInfo("shapes", (1, 28, 28), len(SHAPE_NAMES), "mlp", 10, "bernoulli", (0.4, 1.0), offline=True,
                      description="procedural square/circle/triangle/plus, 4,000/1,000, 28x28 grey; style: "
                                  "x, y, scale, rotation, intensity"))
def load_shapes(root: Path, download: bool) -> Pools:
    (trx, try_, trf), (tex, tey, tef) = _shapes_pools()
    return Pools(Pool.in_memory(trx, try_, trf), Pool.in_memory(tex, tey, tef),
                 {k: "continuous" for k in SHAPE_FACTORS})
