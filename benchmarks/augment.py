"""Views per second: batched J-view augmentation vs the official per-sample PIL pipeline.

The official SimVAE code augments in DataLoader workers with a per-image torchvision PIL
pipeline, applied J times per image::

    Compose([RandomResizedCrop(size, scale), RandomVerticalFlip(),
             RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),  # colour data only
             ToTensor()])

Both are timed here in one process, in the same run, for 28x28 grey (MNIST settings) and
32x32 colour (CIFAR-10 settings) with J = 10. The batched version takes its natural batch
(256 images x J = 2560 views per call, float images already on the device); the PIL version
starts from PIL images, as a Dataset would hand them over. Images are MNIST / CIFAR-10 from
../shared/data when present, else random uint8.

    python benchmarks/augment.py [--device cpu|cuda] [--threads N] [--repeats 5]

Prints a table, then as its last line one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from trainables.augment import AugmentConfig, augment

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {  # size: (channels, crop scale lower bound, colour jitter)
    28: (1, 0.4, None),
    32: (3, 0.6, (0.8, 0.8, 0.8, 0.2)),
}


def load_images(size: int, n: int) -> tuple[np.ndarray, str]:
    """n uint8 images (n, H, W) or (n, H, W, 3): real data when available, else random."""
    try:
        if size == 28:
            raw = (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
            return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:n].copy(), "MNIST"
        return np.load(DATA / "cifar10" / "cifar10_lossless_subset.npz")["train_x"][:n], "CIFAR-10"
    except OSError:
        shape = (n, size, size) if size == 28 else (n, size, size, 3)
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), "random uint8"


def pil_pipeline(size: int, scale_lo: float, jitter) -> T.Compose:
    steps = [T.RandomResizedCrop(size, scale=(scale_lo, 1.0)), T.RandomVerticalFlip()]
    if jitter is not None:
        steps.append(T.RandomApply([T.ColorJitter(*jitter)], p=0.8))
    return T.Compose(steps + [T.ToTensor()])


def pil_round(images: list, J: int, transform) -> float:
    """Seconds for J views of every PIL image through the per-sample pipeline."""
    start = time.perf_counter()
    views = [transform(img) for img in images for _ in range(J)]
    assert len(views) == len(images) * J
    return time.perf_counter() - start


def batched_round(x: torch.Tensor, J: int, cfg: AugmentConfig, gen: torch.Generator,
                  calls: int) -> float:
    """Seconds per augment() call on a batch already on the device (mean of `calls`)."""
    start = time.perf_counter()
    for _ in range(calls):
        augment(x, J, cfg, gen)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) / calls


def measure(arrays: np.ndarray, n_batch: int, n_pil: int, J: int, cfg: AugmentConfig,
            transform, device: torch.device, repeats: int) -> tuple[float, float]:
    """(batched, PIL) views/s, best of `repeats` rounds. The two alternate round by round so
    that both see the same load on a shared machine."""
    x = torch.from_numpy(arrays[:n_batch]).to(device)
    x = (x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)).float().div(255).contiguous()
    gen = torch.Generator(device=device).manual_seed(0)
    images = [Image.fromarray(a) for a in arrays[:n_pil]]
    batched_round(x, J, cfg, gen, calls=3)  # warm up: allocator, kernels
    pil_round(images[:16], J, transform)
    best_batched = best_pil = float("inf")
    for _ in range(repeats):
        best_batched = min(best_batched, batched_round(x, J, cfg, gen, calls=5))
        best_pil = min(best_pil, pil_round(images, J, transform))
    return n_batch * J / best_batched, n_pil * J / best_pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256, help="images per batched call")
    parser.add_argument("--pil-images", type=int, default=256, help="images for the PIL pipeline")
    parser.add_argument("--J", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    figures, rows = {}, []
    for size, (channels, scale_lo, jitter) in CASES.items():
        arrays, source = load_images(size, max(args.batch, args.pil_images))
        cfg = AugmentConfig(crop_scale=(scale_lo, 1.0), jitter=jitter)
        batched, pil = measure(arrays, args.batch, args.pil_images, args.J, cfg,
                               pil_pipeline(size, scale_lo, jitter), device, args.repeats)
        figures[f"augment_views_per_s_batched_{size}"] = round(batched)
        figures[f"augment_views_per_s_pil_{size}"] = round(pil)
        figures[f"augment_speedup_vs_pil_{size}"] = round(batched / pil, 1)
        rows.append((f"{size}x{size}x{channels}", source, batched, pil, batched / pil))

    print(f"device {device}, torch threads {torch.get_num_threads()}, J = {args.J}, "
          f"batched {args.batch} images/call, PIL {args.pil_images} images/round, "
          f"best of {args.repeats} alternating rounds, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (other processes slow multi-threaded torch badly)")
    print(f"{'images':<10} {'data':<13} {'batched views/s':>16} {'PIL views/s':>12} {'speedup':>8}")
    for name, source, batched, pil, speedup in rows:
        print(f"{name:<10} {source:<13} {batched:>16,.0f} {pil:>12,.0f} {speedup:>7.1f}x")
    figures.update(device=str(device), threads=torch.get_num_threads(), J=args.J,
                   load_avg_1min=round(os.getloadavg()[0], 2))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
