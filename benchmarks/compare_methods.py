"""Every method on one dataset under one budget: content and style figures side by side.

    python benchmarks/compare_methods.py --dataset digits [--epochs 30] [--methods simvae,vae,...]
    python benchmarks/compare_methods.py --dataset mnist --data-dir ../shared/data --set train_size=10000

Each method trains with its defaults except the keys given with --set (applied to every method
that has them) and --J (the views per image for methods that take J). Prints a table (content:
acc_mlp, acc_knn, acc_linear; style: the augmentation-parameter probe and, where the dataset has
them, the ground-truth style factors; the wall time) and, last, one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from models import METHODS
from trainables.config import COMMON, parse_pairs
from trainables.driver import ConsoleHooks, train

COLUMNS = ("acc_mlp", "acc_knn", "acc_linear", "recon_error", "style_aug_mean", "style_factor_mean")


def run_method(method: str, args) -> dict:
    hps = METHODS[method].hyperparameters
    cfg = {"method": method, "dataset": args.dataset, "seed": args.seed}
    if args.epochs:
        cfg["epochs"] = args.epochs
    if args.data_dir:
        cfg["data_dir"] = str(Path(args.data_dir).resolve())
    for k, v in parse_pairs(args.set).items():
        if k in COMMON or k in hps:
            cfg[k] = v
    if "J" in hps and args.J and (hps["J"].default >= 2 or method == "simvae"):
        cfg["J"] = args.J
    t0 = time.perf_counter()
    metrics = dict(train(cfg, ConsoleHooks()).runs[0].final)
    metrics["wall_s"] = time.perf_counter() - t0
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--methods", default=",".join(sorted(METHODS)))
    p.add_argument("--epochs", type=int)
    p.add_argument("--J", type=int, help="views per image for methods with J (default: each method's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    results = {}
    for method in args.methods.split(","):
        print(f"training {method} on {args.dataset}", file=sys.stderr, flush=True)
        results[method] = run_method(method, args)

    print(f"\n{args.dataset}: " + ", ".join(f"{k}={v}" for k, v in parse_pairs(args.set).items()))
    print(f"{'method':<9}" + "".join(f"{c:>18}" for c in COLUMNS) + f"{'wall s':>9}")
    for method, m in results.items():
        cells = "".join(f"{m[c]:>18.3f}" if c in m else f"{'—':>18}" for c in COLUMNS)
        print(f"{method:<9}{cells}{m['wall_s']:>9.0f}")
    factors = sorted({k for m in results.values() for k in m if k.startswith("style_")
                      and not k.startswith("style_aug") and not k.endswith("_mean")})
    if factors:
        print("\nstyle factors (R² or normalised accuracy):")
        print(f"{'method':<9}" + "".join(f"{f[6:]:>16}" for f in factors))
        for method, m in results.items():
            print(f"{method:<9}" + "".join(f"{m.get(f, float('nan')):>16.3f}" for f in factors))
    print(json.dumps({"dataset": args.dataset, **{f"{meth}/{k}": round(v, 4) for meth, m in results.items()
                                                  for k, v in m.items() if isinstance(v, float)}}))


if __name__ == "__main__":
    main()
