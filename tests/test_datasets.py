"""Tests for the trainables/datasets/ package (registry, split rules, one loader per module).

The torchvision loaders run for real on tiny files written here in torchvision's own layouts
(IDX files, CIFAR-10 pickles, CelebA list files + PNG faces); torchvision's md5 integrity lists
for CIFAR-10 / CelebA are pointed at the md5s of those files, so its checks still run. Slow
tests (``-m slow``) load the real data in ../shared/data and skip when it is absent.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from matplotlib.path import Path as MplPath

import trainables.datasets as D
import trainables.datasets.celeba as D_celeba
import trainables.datasets.mnist as D_mnist
import trainables.datasets.shapes as D_shapes
from trainables.datasets import (DATASETS, DatasetInfo, DatasetUnavailable, UnknownDataset,
                                 carve_validation, default_data_dir, load_dataset, stratified_order)
from trainables.datasets.mnist import read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


# --------------------------------------------------------------------------------------------
# helpers: write tiny datasets in torchvision's layouts
# --------------------------------------------------------------------------------------------
def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_idx(path: Path, arr: np.ndarray) -> None:
    """IDX ubyte file (gzip when the name ends in .gz), written from the format spec."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def balanced_labels(n_per_class: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(classes), n_per_class)).astype(np.uint8)


def write_mnist_like(folder: Path, rng: np.random.Generator, n_train=30, n_test=10, gz=False):
    """Random 28x28 uint8 images (all distinct) with balanced labels; returns the arrays."""
    ext = ".gz" if gz else ""
    arrays = {}
    for split, (n, (img_name, lbl_name)) in {"train": (n_train, D_mnist.IDX_FILES["train"]),
                                            "test": (n_test, D_mnist.IDX_FILES["test"])}.items():
        x = rng.integers(0, 256, size=(10 * n, 28, 28), dtype=np.uint8)
        y = balanced_labels(n, 10, rng)
        write_idx(folder / f"{img_name}{ext}", x)
        write_idx(folder / f"{lbl_name}{ext}", y)
        arrays[split] = (x, y)
    return arrays


def source_index(images: np.ndarray) -> dict[bytes, int]:
    return {img.tobytes(): i for i, img in enumerate(images)}


def check_split_against_source(split, src_x, src_y, to_key) -> list[int]:
    """Every loaded image must be one of the source images with the same label; returns the
    source indices (so callers can check disjointness)."""
    lookup = source_index(src_x)
    idx = []
    for img, label in zip(split.x.cpu(), split.y.cpu().tolist()):
        i = lookup[to_key(img)]
        assert src_y[i] == label
        idx.append(i)
    return idx


def write_cifar(root: Path, rng: np.random.Generator, per_batch=20, n_test=50):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in balanced_labels(per_batch // 10, 10, rng)]
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {b} of 5", "data": x, "labels": y}, f)
        xs.append(x), ys.extend(y)
    tx = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    ty = [int(v) for v in balanced_labels(n_test // 10, 10, rng)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": tx, "labels": ty}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_cases_per_batch": per_batch}, f)
    return np.concatenate(xs), np.array(ys), tx, np.array(ty)


def trust_cifar_files(monkeypatch, root: Path) -> None:
    """Point torchvision's CIFAR-10 md5 lists at the files just written (its check still runs)."""
    folder = root / "cifar-10-batches-py"
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{b}", md5(folder / f"data_batch_{b}")]
                                                    for b in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5(folder / "batches.meta")})


CELEBA_PARTITION = [0] * 30 + [1] * 4 + [2] * 6  # official train / valid / test
HAIR_PATTERN = [(), ("Black_Hair",), ("Blond_Hair",), ("Brown_Hair",), ("Gray_Hair",),
                ("Black_Hair", "Blond_Hair")]


def celeba_colour(i: int) -> tuple[int, int, int]:
    return (10 + 5 * i, 220 - 3 * i, (37 * i) % 256)


def write_celeba(root: Path, monkeypatch, rng: np.random.Generator) -> np.ndarray:
    """40 aligned-face-sized (178x218) PNGs, each a solid colour inside the central 148x148
    crop and white outside, and the five list files; returns attr (40, 40) in {0, 1}."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    n = len(CELEBA_PARTITION)
    rates = np.array([0.05, 0.5, 0.9, 0.3])[np.arange(40) % 4]
    attr = (rng.random((n, 40)) < rates).astype(int)
    male = CELEBA_ATTRS.index("Male")
    attr[:, male] = np.arange(n) % 2
    for i in range(n):
        hair = HAIR_PATTERN[i % len(HAIR_PATTERN)]
        for h in D_celeba.CELEBA_HAIR:
            attr[i, CELEBA_ATTRS.index(h)] = int(h in hair)
    names = [f"{i + 1:06d}.png" for i in range(n)]
    for i, fn in enumerate(names):
        img = np.full((218, 178, 3), 255, dtype=np.uint8)
        img[35:35 + 148, 15:15 + 148] = celeba_colour(i)
        Image.fromarray(img).save(folder / "img_align_celeba" / fn)
    rows = [f"{fn} " + " ".join(f"{2 * v - 1:2d}" for v in a) for fn, a in zip(names, attr)]
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(CELEBA_ATTRS)} \n" + "\n".join(rows) + "\n")
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{fn} {p}\n" for fn, p in zip(names, CELEBA_PARTITION)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{fn} {i // 3 + 1}\n" for i, fn in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{fn}    95  71 226 313\n" for fn in names))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        "rightmouth_x rightmouth_y\n" + "".join(f"{fn} 69  109  106  113   77  142   73  152  108  154\n"
                                              for fn in names))
    monkeypatch.setattr(tvd.CelebA, "file_list", [(fid, md5(folder / fname) if (folder / fname).exists() else h, fname)
                                                  for fid, h, fname in tvd.CelebA.file_list])
    return attr


def assert_stratified(y: torch.Tensor, pool_y: torch.Tensor, classes: int, slack: float = 1.0) -> None:
    """Class counts of the subset y are the pool's proportions times len(y), to within slack."""
    got = torch.bincount(y.cpu(), minlength=classes).double()
    want = torch.bincount(pool_y.cpu(), minlength=classes).double() / len(pool_y) * len(y)
    assert (got - want).abs().max() <= slack, (got.tolist(), want.tolist())


def assert_same_splits(a, b) -> None:
    for part in ("train", "val", "test"):
        sa, sb = getattr(a, part), getattr(b, part)
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
        assert sa.style.keys() == sb.style.keys()
        assert all(torch.equal(sa.style[k], sb.style[k]) for k in sa.style)


# --------------------------------------------------------------------------------------------
# registry, errors, split logic
# --------------------------------------------------------------------------------------------
DISPLAY = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "celeba": "CelebA", "cifar10": "CIFAR-10",
           "digits": "Digits", "shapes": "Shapes"}


def test_registry_entries_follow_design():
    # display order: the paper's Table 1 columns, then the offline datasets
    assert list(DATASETS) == ["mnist", "fashionmnist", "celeba", "cifar10", "digits", "shapes"]
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        grey = info.image_shape[0] == 1
        assert info.arch == ("mlp" if grey else "resnet")
        assert info.latent_dim == (10 if grey else 64)
        assert info.likelihood == ("bernoulli" if grey else "gaussian")
        assert info.crop_scale == ((0.4, 1.0) if grey else (0.6, 1.0))
        assert info.colour == (not grey)
        assert info.crop_ratio == (3 / 4, 4 / 3)
        assert info.offline == (name in ("digits", "shapes"))
        assert info.display == DISPLAY[name]
        assert info.budget == ({"epochs": 20, "lr": 1e-3, "images_per_step": 16} if info.offline
                               else {"epochs": 400, "lr": 8e-5, "batch_size": 128})
    assert DATASETS["mnist"].budget is not DATASETS["cifar10"].budget  # no shared (mutable) dict
    assert len({hash(info) for info in DATASETS.values()}) == len(DATASETS)  # still hashable
    assert DATASETS["cifar10"].image_shape == (3, 32, 32)
    assert DATASETS["celeba"].image_shape == (3, 64, 64) and DATASETS["celeba"].num_classes == 2
    assert DATASETS["shapes"].num_classes == 4


def test_unknown_dataset_lists_known_names():
    with pytest.raises(UnknownDataset) as err:
        load_dataset("imagenet")
    assert isinstance(err.value, ValueError)
    assert "imagenet" in str(err.value) and all(n in str(err.value) for n in DATASETS)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_SWEEPS_DATA", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("SSL_SWEEPS_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "ssl-sweeps" / "data"
    assert default_data_dir().is_absolute()


def test_stratified_order_every_prefix_is_stratified():
    y = torch.from_numpy(np.random.default_rng(0).choice(5, size=997, p=[0.4, 0.3, 0.15, 0.1, 0.05]))
    order = stratified_order(y, seed=3)
    assert torch.equal(order.sort().values, torch.arange(len(y)))
    counts = torch.bincount(y).double()
    for k in (1, 10, 50, 123, 500, 996):
        assert_stratified(y[order[:k]], y, 5)
        # the suffix is the complement of a prefix, so stratified too
        got = torch.bincount(y[order[-k:]], minlength=5).double()
        assert (got - counts / len(y) * k).abs().max() <= 1.0
    assert torch.equal(order, stratified_order(y, seed=3))
    assert not torch.equal(order, stratified_order(y, seed=4))


def test_carve_validation_sizes_disjoint_and_seed_free():
    y = torch.arange(1000) % 10
    torch.manual_seed(1)
    tr, va = carve_validation(y, None)
    torch.manual_seed(2)  # the training seed must not move the split
    tr2, va2 = carve_validation(y, None)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert (len(tr), len(va)) == (900, 100)
    assert len(set(tr.tolist()) | set(va.tolist())) == 1000
    tr, va = carve_validation(y, 300)
    assert (len(tr), len(va)) == (300, 100)  # max(10% of 300, MIN_VAL)
    assert torch.equal(torch.bincount(y[tr]), torch.full((10,), 30))
    assert not set(tr.tolist()) & set(va.tolist())
    tr, va = carve_validation(y, 950)
    assert (len(tr), len(va)) == (950, 50)  # capped by what is left
    small_tr, _ = carve_validation(y, 200)
    assert set(small_tr.tolist()) <= set(carve_validation(y, 400)[0].tolist())  # nested
    with pytest.raises(ValueError, match="train_size"):
        carve_validation(y, 1000)


# --------------------------------------------------------------------------------------------
# MNIST / FashionMNIST through torchvision
# --------------------------------------------------------------------------------------------
def test_read_idx_matches_torchvision_reader(tmp_path):
    from torchvision.datasets.mnist import read_image_file

    x = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a-idx3-ubyte", x)
    write_idx(tmp_path / "a-idx3-ubyte.gz", x)
    ref = read_image_file(str(tmp_path / "a-idx3-ubyte")).numpy()
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), ref)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), ref)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(ValueError):
        read_idx(tmp_path / "bad")


def test_mnist_tiny_binarised_stratified_deterministic(tmp_path):
    src = write_mnist_like(tmp_path / "MNIST" / "raw", np.random.default_rng(1))
    (trx, try_), (tex, tey) = src["train"], src["test"]
    s = load_dataset("mnist", tmp_path, download=False)
    assert s.info is DATASETS["mnist"] and s.style_kinds == {}
    assert (len(s.train), len(s.val), len(s.test)) == (270, 30, 100)
    for split in (s.train, s.val, s.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.y.dtype == torch.int64 and split.style == {}
        assert set(split.x.unique().tolist()) == {0.0, 1.0}  # binarised

    def key(img):  # loaded image -> bytes of the source binarised at 0.5 (pixel > 127)
        return (img[0].numpy() > 0.5).tobytes()

    binarised = trx > 127
    tr = check_split_against_source(s.train, binarised, try_, key)
    va = check_split_against_source(s.val, binarised, try_, key)
    te = check_split_against_source(s.test, tex > 127, tey, key)
    assert not set(tr) & set(va) and len(set(tr) | set(va)) == 300 and len(set(te)) == 100
    assert torch.equal(torch.bincount(s.val.y), torch.full((10,), 3))

    small = load_dataset("mnist", tmp_path, train_size=100, test_size=50, download=False)
    assert (len(small.train), len(small.val), len(small.test)) == (100, 100, 50)
    for split, n in ((small.train, 10), (small.val, 10), (small.test, 5)):
        assert torch.equal(torch.bincount(split.y), torch.full((10,), n))
    assert_same_splits(small, load_dataset("mnist", tmp_path, train_size=100, test_size=50, download=False))


def test_fashionmnist_tiny_grey_values(tmp_path, monkeypatch):
    monkeypatch.setattr(D_mnist, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "no-debian",))
    src = write_mnist_like(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(2))
    s = load_dataset("fashionmnist", tmp_path, download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (270, 30, 100)

    def key(img):  # loaded grey values must be exactly source / 255
        return np.round(img[0].numpy() * 255).astype(np.uint8).tobytes()

    (trx, try_), (tex, tey) = src["train"], src["test"]
    check_split_against_source(s.train, trx, try_, key)
    te = check_split_against_source(s.test, tex, tey, key)
    assert te == sorted(te)  # the whole test set in file order
    x = s.test.x[0, 0].numpy()
    assert np.array_equal(x, tex[0].astype(np.float32) / 255)
    assert len(s.train.x.unique()) > 200  # grey, not binarised


def test_fashionmnist_from_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    src = write_mnist_like(debian, np.random.default_rng(3), gz=True)
    monkeypatch.setattr(D_mnist, "FASHION_MNIST_SYSTEM_DIRS", (debian,))
    s = load_dataset("fashionmnist", tmp_path / "empty", download=False)
    (tex, tey) = src["test"]
    assert torch.equal(s.test.x[:, 0], torch.from_numpy(tex).float() / 255)
    assert torch.equal(s.test.y, torch.from_numpy(tey).long())
    # torchvision's layout under data_dir wins over the system folder
    own = write_mnist_like(tmp_path / "root" / "FashionMNIST" / "raw", np.random.default_rng(4))
    s2 = load_dataset("fashionmnist", tmp_path / "root", download=False)
    assert torch.equal(s2.test.x[:, 0], torch.from_numpy(own["test"][0]).float() / 255)


def test_missing_mnist_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("mnist", tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("mnist:") and str(tmp_path / "MNIST" / "raw") in msg
    assert "download disabled" in msg and "--data-dir" in msg

    def no_network(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n")

    monkeypatch.setattr(tvd.MNIST, "download", no_network)
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("mnist", tmp_path, download=True)
    msg = str(err.value)
    assert "\n" not in msg and "download failed" in msg and "Name or service not known" in msg


def test_missing_fashionmnist_names_both_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(D_mnist, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "deb",))
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fashionmnist", tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("fashionmnist:")
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and str(tmp_path / "deb") in msg


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
def test_cifar10_tiny_through_torchvision(tmp_path, monkeypatch):
    trx, try_, tex, tey = write_cifar(tmp_path, np.random.default_rng(5))
    # untouched md5 lists: torchvision's integrity check rejects our files
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert "\n" not in str(err.value) and str(tmp_path / "cifar-10-batches-py") in str(err.value)
    trust_cifar_files(monkeypatch, tmp_path)
    s = load_dataset("cifar10", tmp_path, download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 50)
    assert s.train.x.shape[1:] == (3, 32, 32) and s.train.x.dtype == torch.float32
    assert 0.0 <= s.train.x.min() and s.train.x.max() <= 1.0

    def key(img):  # CIFAR rows are channel-major: R plane, G plane, B plane
        return np.round(img.numpy() * 255).astype(np.uint8).reshape(-1).tobytes()

    tr = check_split_against_source(s.train, trx, try_, key)
    va = check_split_against_source(s.val, trx, try_, key)
    check_split_against_source(s.test, tex, tey, key)
    assert not set(tr) & set(va)
    assert torch.equal(torch.bincount(s.val.y), torch.ones(10, dtype=torch.long))


def test_cifar10_lossless_subset_npz(tmp_path):
    rng = np.random.default_rng(6)
    arrays = dict(train_x=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
                  train_y=np.repeat(np.arange(10), 20), test_x=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
                  test_y=np.repeat(np.arange(10), 3))
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "cifar10_lossless_subset.npz", **arrays)
    s = load_dataset("cifar10", tmp_path, download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (180, 20, 30)
    # HWC uint8 -> CHW float in [0, 1], pixel for pixel
    assert torch.equal(s.test.x, torch.from_numpy(arrays["test_x"]).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(s.test.y, torch.from_numpy(arrays["test_y"]).long())
    assert torch.equal(torch.bincount(s.val.y), torch.full((10,), 2))


# --------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------
def test_celeba_tiny_crop_labels_styles_and_cache(tmp_path, monkeypatch, capsys):
    attr = write_celeba(tmp_path, monkeypatch, np.random.default_rng(7))
    s = load_dataset("celeba", tmp_path, download=False)
    assert "celeba: decoding" in capsys.readouterr().err
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 6)
    assert s.train.x.shape[1:] == (3, 64, 64) and s.train.x.dtype == torch.float32

    # expected style names, computed here from the written table: rate over the official train
    # partition in [0.2, 0.8], Male excluded, hair colours always kept
    train_rows = [i for i, p in enumerate(CELEBA_PARTITION) if p == 0]
    rate = attr[train_rows].mean(0)
    balanced = {n for n, r in zip(CELEBA_ATTRS, rate) if 0.2 <= r <= 0.8 and n != "Male"}
    assert 0 < len(balanced) < 39
    assert set(s.style_kinds) == balanced | set(D_celeba.CELEBA_HAIR) | {"hair_colour"}
    assert set(s.style_kinds.values()) == {"categorical"}

    seen = []
    for split, part in ((s.train, 0), (s.val, 0), (s.test, 2)):
        for k in range(len(split)):
            img = split.x[k]
            # a solid colour: the white frame outside the 148x148 centre crop is gone
            rgb = np.round(img[:, 32, 32].numpy() * 255).astype(int)
            i = next(i for i in range(len(attr)) if np.array_equal(rgb, celeba_colour(i)))
            assert (img - img[:, 32:33, 32:33]).abs().max() <= 1 / 255 + 1e-6
            assert CELEBA_PARTITION[i] == part
            assert split.y[k] == attr[i, CELEBA_ATTRS.index("Male")]
            for name in balanced:
                assert split.style[name][k] == attr[i, CELEBA_ATTRS.index(name)]
            hair = HAIR_PATTERN[i % len(HAIR_PATTERN)]
            want = D_celeba.CELEBA_HAIR.index(hair[0]) if len(hair) == 1 else -1
            assert split.style["hair_colour"][k] == want
            seen.append(i)
    assert len(set(seen)) == len(seen) == 36  # the official 'valid' rows are unused

    # decoded once: the cache serves a second load even with the images gone
    for png in (tmp_path / "celeba" / "img_align_celeba").iterdir():
        png.unlink()
    assert_same_splits(s, load_dataset("celeba", tmp_path, download=False))


def test_missing_celeba_one_line_error(tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("celeba", tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("celeba:") and str(tmp_path / "celeba") in msg
    assert "list_attr_celeba.txt" in msg


# --------------------------------------------------------------------------------------------
# digits and shapes (offline)
# --------------------------------------------------------------------------------------------
def bilinear_upsample_reference(img: np.ndarray, size: int = 28) -> np.ndarray:
    """Separable bilinear resize, pixel-centre convention (align_corners=False), edge clamped."""
    n = img.shape[0]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = src - i0
    rows = img[i0] * (1 - w)[:, None] + img[i1] * w[:, None]
    return rows[:, i0] * (1 - w)[None] + rows[:, i1] * w[None]


def test_digits_offline_upsampled_and_balanced(tmp_path):
    from sklearn.datasets import load_digits

    s = load_dataset("digits", tmp_path / "nothing-here", download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (1167, 130, 500)
    ref = load_digits()
    expected = np.stack([bilinear_upsample_reference(img / 16.0) for img in ref.images])
    used = []
    for split in (s.train, s.val, s.test):
        assert split.x.shape[1:] == (1, 28, 28) and split.x.dtype == torch.float32
        assert split.x.min() >= 0 and split.x.max() <= 1 and split.x.max() > 0.99
        assert_stratified(split.y, torch.from_numpy(ref.target), 10, slack=1.5)
        j = 0  # each split keeps scikit-learn's order: walk the reference forwards
        for img, label in zip(split.x[:, 0].numpy(), split.y.tolist()):
            while not np.allclose(img, expected[j], atol=1e-5):
                j += 1
            assert ref.target[j] == label
            used.append(j)
            j += 1
    assert len(set(used)) == 1797
    assert_same_splits(s, load_dataset("digits"))


def shape_polygon(label: int) -> np.ndarray | None:
    """Canonical outline (shape frame, v down) from the geometry, independently of the SDFs."""
    name = D_shapes.SHAPE_NAMES[label]
    if name == "square":
        h = D_shapes.SQUARE_HALF
        return np.array([(-h, -h), (h, -h), (h, h), (-h, h)])
    if name == "triangle":
        r = D_shapes.TRIANGLE_CIRCUMRADIUS
        return np.array([(0, -r), (r * math.sin(math.radians(120)), -r * math.cos(math.radians(120))),
                         (r * math.sin(math.radians(240)), -r * math.cos(math.radians(240)))])
    if name == "plus":
        a, w = D_shapes.PLUS_ARM, D_shapes.PLUS_HALF_WIDTH
        return np.array([(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a),
                         (-w, w), (-a, w), (-a, -w), (-w, -w)])
    return None  # circle of radius 1


def polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_shapes_render_matches_explicit_geometry():
    x, labels, f = D_shapes.generate_shapes(24, seed=11)
    clipped = 0
    centres = (np.arange(28) + 0.5) / 28 * 2 - 1
    gx, gy = np.meshgrid(centres, centres)  # gx varies along columns, gy down rows
    points = np.stack([gx.ravel(), gy.ravel()], 1)
    for i in range(24):
        lab, img = int(labels[i]), x[i, 0].numpy().ravel()
        cx, cy, s, th, inten = (float(f[k][i]) for k in ("x", "y", "scale", "rotation", "intensity"))
        poly = shape_polygon(lab)
        if poly is None:
            inside = np.hypot(points[:, 0] - cx, points[:, 1] - cy) <= s
            area = math.pi
        else:  # forward map: p = c + s * R(theta) q
            rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
            verts = np.array([cx, cy]) + s * poly @ rot.T
            inside = MplPath(verts).contains_points(points)
            area = polygon_area(poly)
        full, empty = np.isclose(img, inten, atol=1e-6), img == 0
        assert np.all(inside[full]) and not np.any(inside[empty])
        assert (~full & ~empty).sum() < 0.2 * 28 * 28  # only an edge band is anti-aliased
        reach = (max(abs(cx), abs(cy)) + s) if poly is None else np.abs(verts).max()
        if reach > 1 - 1 / 28:  # the border cuts it: area and centroid are the visible part's
            clipped += 1
            continue
        area_px = area * (s * 14) ** 2  # shape frame -> pixels: an image spans 2 units = 28 px
        assert abs(img.sum() / inten - area_px) < 0.06 * area_px
        # the intensity-weighted centroid is the position (every shape is centred on it)
        w = img / img.sum()
        assert abs((w * points[:, 0]).sum() - cx) < 0.03 and abs((w * points[:, 1]).sum() - cy) < 0.03
    assert clipped <= 12  # most shapes lie inside the image, so the checks above ran on them


def test_shapes_dataset_balanced_styles_deterministic():
    s = load_dataset("shapes")
    assert (len(s.train), len(s.val), len(s.test)) == (1800, 200, 1000)
    assert s.style_kinds == {k: "continuous" for k in ("x", "y", "scale", "rotation", "intensity")}
    for split in (s.train, s.val, s.test):
        assert split.x.shape[1:] == (1, 28, 28) and split.x.dtype == torch.float32
        assert split.x.min() >= 0 and split.x.max() <= 1
        counts = torch.bincount(split.y, minlength=4)
        assert torch.equal(counts, torch.full((4,), len(split) // 4))
        for k, (lo, hi) in D_shapes.SHAPE_FACTORS.items():
            v = split.style[k]
            assert v.dtype == torch.float32 and v.shape == (len(split),)
            assert lo <= v.min() and v.max() <= hi and v.std() > 0.2 * (hi - lo)
    # the brightest pixel of each image is its intensity factor (shapes have solid interiors)
    peak = s.test.x.flatten(1).amax(1)
    assert torch.allclose(peak, s.test.style["intensity"], atol=1e-6)
    assert_same_splits(s, load_dataset("shapes"))
    a, b = D_shapes.generate_shapes(50, seed=5), D_shapes.generate_shapes(50, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], D_shapes.generate_shapes(50, seed=6)[0])


def test_offline_loads_are_fast_and_on_device():
    import time

    load_dataset("shapes"), load_dataset("digits")  # warm the in-process caches
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    s = load_dataset("shapes", device=device, train_size=1000, test_size=200)
    d = load_dataset("digits", device=device)
    assert time.perf_counter() - start < 1.0
    for split in (s.train, s.val, s.test, d.train):
        assert split.x.device.type == device and split.y.device.type == device
        assert all(v.device.type == device for v in split.style.values())
    assert (len(s.train), len(s.val), len(s.test)) == (1000, 100, 200)


# --------------------------------------------------------------------------------------------
# slow: the real data in ../shared/data
# --------------------------------------------------------------------------------------------
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.slow
@needs_shared
def test_real_mnist():
    s = load_dataset("mnist", SHARED, download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert (torch.bincount(s.train.y) + torch.bincount(s.val.y)).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(s.test.y).tolist() == MNIST_TEST_COUNTS
    assert_stratified(s.val.y, torch.cat([s.train.y, s.val.y]), 10)
    assert set(s.train.x[:2000].unique().tolist()) == {0.0, 1.0}


@pytest.mark.slow
@needs_shared
def test_real_fashionmnist_and_debian_layout(tmp_path, monkeypatch):
    s = load_dataset("fashionmnist", SHARED, download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert torch.bincount(s.train.y).tolist() == [5400] * 10
    assert torch.bincount(s.val.y).tolist() == [600] * 10
    assert torch.bincount(s.test.y).tolist() == [1000] * 10
    # the same files gzipped as Debian ships them give the same splits
    debian = tmp_path / "fashion-mnist"
    debian.mkdir()
    for f in (SHARED / "FashionMNIST" / "raw").iterdir():
        (debian / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes(), compresslevel=1))
    monkeypatch.setattr(D_mnist, "FASHION_MNIST_SYSTEM_DIRS", (debian,))
    assert_same_splits(s, load_dataset("fashionmnist", tmp_path / "empty", download=False))


@pytest.mark.slow
@needs_shared
def test_real_cifar10_subset():
    with np.load(SHARED / "cifar10" / "cifar10_lossless_subset.npz") as f:
        train_y, test_y, test_x0 = f["train_y"], f["test_y"], f["test_x"][0]
    s = load_dataset("cifar10", SHARED, download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (3600, 400, 1000)
    counts = torch.bincount(s.train.y, minlength=10) + torch.bincount(s.val.y, minlength=10)
    assert counts.tolist() == np.bincount(train_y, minlength=10).tolist()
    assert torch.bincount(s.test.y, minlength=10).tolist() == np.bincount(test_y, minlength=10).tolist()
    assert torch.equal(s.test.x[0], torch.from_numpy(test_x0).permute(2, 0, 1).float() / 255)


def test_every_public_name_of_the_package_exists():
    missing = [name for name in D.__all__ if not hasattr(D, name)]
    assert not missing
