"""Training throughput per method: views/s of a full optimiser step (augmentation, forward,
backward, update) and the share of that step spent augmenting.

    python benchmarks/train_step.py [--dataset digits] [--methods simvae,vae,...] [--device cpu]

The augmentation share is measured in the same run: the same number of augmentation calls on the
same batches, timed alone, divided by the full step time. Target: at most 10% of a SimVAE step.
Prints a table and, as the last line, one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from models import METHODS
from trainables.augment import augment
from trainables.driver import Run

# The full step is Run.step itself (augmentation, forward, backward, update): what training runs.


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(method: str, args) -> dict:
    cfg = {"method": method, "dataset": args.dataset, "device": args.device, "epochs": 1,
           "batch_size": args.batch_size, "train_size": args.train_size, "bf16": args.bf16}
    if args.data_dir:
        cfg["data_dir"] = args.data_dir
    if "J" in METHODS[method].hyperparameters and METHODS[method].hyperparameters["J"].default >= 2:
        cfg["J"] = args.J if method == "simvae" else METHODS[method].hyperparameters["J"].default
    run = Run(cfg)
    if run.opt is None:
        return {}
    x, dev = run.splits.train.x, run.device
    ips, J = run.images_per_step, run.J
    batches = [x[torch.randint(0, len(x), (ips,), device=dev)] for _ in range(args.steps)]
    run.method.train()
    for clean in batches[: args.warmup]:
        run.step(clean)
    _sync(dev)
    t0 = time.perf_counter()
    for clean in batches:
        run.step(clean)
    _sync(dev)
    t_step = time.perf_counter() - t0
    t0 = time.perf_counter()
    for clean in batches:
        augment(clean, J, run.aug_cfg, run.gen)
    _sync(dev)
    t_aug = time.perf_counter() - t0
    views = args.steps * ips * J
    return {"views_per_s": views / t_step, "step_ms": 1000 * t_step / args.steps,
            "augment_share": t_aug / t_step, "J": J, "views_per_step": ips * J}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--methods", default=",".join(m for m in sorted(METHODS) if METHODS[m].trainable))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128, help="views per step")
    p.add_argument("--J", type=int, default=10, help="SimVAE's views per image")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()

    figures = {}
    print(f"{'method':<10} {'J':>3} {'views/step':>10} {'step ms':>9} {'views/s':>10} {'augment %':>10}")
    for method in args.methods.split(","):
        r = bench_method(method, args)
        if not r:
            continue
        print(f"{method:<10} {r['J']:>3} {r['views_per_step']:>10} {r['step_ms']:>9.2f} "
              f"{r['views_per_s']:>10.0f} {100 * r['augment_share']:>9.1f}%")
        figures[f"train_views_per_s_{method}"] = round(r["views_per_s"], 1)
        figures[f"augment_share_{method}"] = round(r["augment_share"], 4)
    figures["dataset"] = args.dataset
    figures["device"] = args.device
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
