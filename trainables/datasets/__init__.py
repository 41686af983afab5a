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
# The package's public names (re-exported; see __all__).
from trainables.datasets.registry import (DATASETS, MIN_VAL, OFFLINE_BUDGET, PAPER_BUDGET, SPLIT_SEED,  # noqa: F401
                                          TEST_SEED, VAL_FRACTION, DatasetError, DatasetInfo, DatasetUnavailable, Pool,
                                          Pools, Split, Splits, UnknownDataset, carve_validation,
                                          dataset_sizes, default_data_dir, get_info, limit_test, load_dataset, register,
                                          stratified_order)

# The loaders, in display order (importing a module registers its datasets).
from trainables.datasets import mnist  # noqa: E402,F401  mnist, fashionmnist
from trainables.datasets import celeba  # noqa: E402,F401
from trainables.datasets import cifar10  # noqa: E402,F401
from trainables.datasets import digits  # noqa: E402,F401
from trainables.datasets import shapes  # noqa: E402,F401

from trainables.datasets.celeba import (BALANCED_RANGE, CELEBA_CONTENT, CELEBA_CROP, CELEBA_HAIR,  # noqa: E402
                                        CELEBA_SIZE, celeba_balanced, celeba_hair_colour, load_celeba)
from trainables.datasets.cifar10 import CIFAR_SUBSET, load_cifar10  # noqa: E402
from trainables.datasets.digits import load_digits  # noqa: E402
from trainables.datasets.mnist import IDX_FILES, load_fashionmnist, load_mnist, read_idx  # noqa: E402
from trainables.datasets.shapes import (PLUS_ARM, PLUS_HALF_WIDTH, SHAPE_FACTORS, SHAPE_NAMES,  # noqa: E402
                                        SQUARE_HALF, TRIANGLE_CIRCUMRADIUS, generate_shapes,
                                        load_shapes, render_shapes, shape_sdf)

__all__ = [
    "DATASETS", "DatasetInfo", "DatasetUnavailable", "UnknownDataset", "Split", "Splits", "Pool",
    "Pools", "register", "get_info", "load_dataset", "default_data_dir", "stratified_order",
    "carve_validation", "limit_test", "VAL_FRACTION", "MIN_VAL", "SPLIT_SEED", "TEST_SEED",
    "PAPER_BUDGET", "OFFLINE_BUDGET",
    "IDX_FILES", "read_idx", "load_mnist", "load_fashionmnist",
    "CELEBA_CROP", "CELEBA_SIZE", "CELEBA_CONTENT", "CELEBA_HAIR", "BALANCED_RANGE",
    "celeba_balanced", "celeba_hair_colour", "load_celeba",
    "CIFAR_SUBSET", "load_cifar10",
    "load_digits",
    "SHAPE_NAMES", "SHAPE_FACTORS", "SQUARE_HALF", "TRIANGLE_CIRCUMRADIUS", "PLUS_ARM",
    "PLUS_HALF_WIDTH", "shape_sdf", "render_shapes", "generate_shapes", "load_shapes",
]
