"""The dataset registry: name -> loader, each giving train / validation / test splits.

``load_dataset(name, ...)`` returns a :class:`Splits` (train / val / test images as one float32
tensor each, on the training device); the split rules are in :mod:`trainables.datasets.registry`.
``DATASETS`` maps each name to its :class:`DatasetInfo` (shape, architecture, likelihood,
augmentation crop, display name, default training budget) in display order: the paper's
Table 1 columns, then the offline datasets.

Preprocessing (docs/design.md §3), one module per loader:
    mnist         grey 28x28, binarised at 0.5 (pixel > 127 -> 1; Bernoulli likelihood)
    fashionmnist  grey 28x28 in [0, 1] (Bernoulli likelihood, not binarised)
    celeba        RGB 64x64 in [0, 1]: aligned faces, centre crop 148 then resize to 64
                  (bilinear, antialiased), the usual protocol; content label "Male"
    cifar10       RGB 32x32 in [0, 1] (Gaussian likelihood)
    digits        scikit-learn's 8x8 digits upsampled to 28x28, grey in [0, 1] (offline)
    shapes        procedurally rendered 28x28 grey shapes in [0, 1] (offline)

Files are looked for under ``data_dir`` (default :func:`default_data_dir`) in torchvision's
layout and downloaded there by torchvision when missing and ``download`` is true; a dataset
that can be neither found nor downloaded raises :class:`DatasetUnavailable` with a one-line
message saying where to put the files.

Adding a dataset is one module here holding a loader ``f(root: Path, download: bool) -> Pools``
decorated with ``@register(DatasetInfo(...))``, plus one import line below (its position is the
dataset's display order). Module-level settings a loader reads (e.g.
``mnist.FASHION_MNIST_SYSTEM_DIRS``) live on, and are patched on, the loader's own module.
"""
# The package's public names: the registry and its split rules (see __all__). A loader's own
# constants and helpers stay on its module (``trainables.datasets.shapes.SHAPE_NAMES``, ...).
from trainables.datasets.registry import (DATASETS, MIN_VAL, OFFLINE_BUDGET, PAPER_BUDGET, SPLIT_SEED,  # noqa: F401
                                          TEST_SEED, VAL_FRACTION, DatasetError, DatasetInfo, DatasetUnavailable, Pool,
                                          Pools, Split, Splits, UnknownDataset, carve_validation,
                                          dataset_sizes, default_data_dir, get_info, limit_test, load_dataset, register,
                                          resolve_data_dir, stratified_order)

# The loaders, in display order (importing a module registers its datasets).
from trainables.datasets import mnist  # noqa: E402,F401  mnist, fashionmnist
from trainables.datasets import celeba  # noqa: E402,F401
from trainables.datasets import cifar10  # noqa: E402,F401
from trainables.datasets import digits  # noqa: E402,F401
from trainables.datasets import shapes  # noqa: E402,F401

__all__ = [
    "DATASETS", "DatasetInfo", "DatasetError", "DatasetUnavailable", "UnknownDataset", "Split", "Splits", "Pool",
    "Pools", "register", "get_info", "load_dataset", "dataset_sizes", "default_data_dir", "resolve_data_dir",
    "stratified_order",
    "carve_validation", "limit_test", "VAL_FRACTION", "MIN_VAL", "SPLIT_SEED", "TEST_SEED",
    "PAPER_BUDGET", "OFFLINE_BUDGET",
]
