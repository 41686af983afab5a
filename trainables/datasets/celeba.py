"""CelebA: RGB 64x64 in [0, 1] (Gaussian likelihood; docs/design.md §3): aligned faces, centre
crop 148 then resize to 64 (bilinear, antialiased), the usual protocol; content label "Male";
style labels: the balanced attributes and the hair colour."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from trainables.datasets.registry import PAPER_BUDGET, DatasetInfo, Pool, Pools, cause, register, unavailable
from trainables.recording import write_atomic

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
        write_atomic(cache, lambda tmp: torch.save(out, tmp))
    except OSError:
        pass  # read-only data folder: just no cache
    return out


@register(DatasetInfo("celeba", (3, 64, 64), 2, "resnet", 64, "gaussian", (0.6, 1.0), colour=True,
                      display="CelebA", budget=PAPER_BUDGET,
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
        reason = cause(err) if download or folder.is_dir() else ""
        raise unavailable("celeba", folder, f"put img_align_celeba/ and list_attr_celeba.txt, "
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
