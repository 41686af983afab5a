"""Does bfloat16 train as well as float32? The laptop profile's runs in both precisions, side by side.

    python benchmarks/bf16_parity.py --data-dir ../shared/data                 # SimVAE, VAE, SimCLR
    python benchmarks/bf16_parity.py --data-dir DIR --methods vae --seeds 0 1 2 --jobs 2
    python benchmarks/bf16_parity.py --out FOLDER --report                      # the table so far

Each run is ``python -m trainables`` at the laptop profile's budget (20 epochs, 128 images per
step, 10,000 training / 2,000 test images, lr 1e-3) with ``--set bf16=true`` or ``bf16=false``,
the same seed in both. Runs go ``--jobs`` at a time, each on ``--threads`` threads; a run's
metrics are kept in ``--out`` as it ends, so a stopped benchmark goes on where it was.

Parity per method (the rule of ``trainables.precision.BF16_PARITY``): on every dataset, for
Acc-MP and Acc-KNN, Welch's t-test over seeds gives p > 0.05 and the means differ by at most
1 point. Also printed: each precision's training seconds (the epochs' own times, from the run's
log) and their ratio. Prints the table, then one JSON object of the figures as its last line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("acc_mlp", "acc_knn")
PRECISIONS = ("fp32", "bf16")
P_MIN, DELTA_MAX = 0.05, 0.01  # the parity rule: p > 0.05 and |difference| <= 1 point
EPOCH_TIME = re.compile(r"^epoch \d+/\d+ .*\((\d+(?:\.\d+)?) s,", re.M)


def laptop_budget() -> dict:
    from sweeps.spaces import PROFILES
    budget = dict(PROFILES["laptop"].budget)
    budget.pop("checkpoint_every", None)  # single runs keep no checkpoint
    return budget


def run_one(key: tuple, args, budget: dict) -> dict:
    method, dataset, seed, precision = key
    out = Path(args.out) / f"{method}_{dataset}_s{seed}_{precision}"
    done = out / "parity.json"
    if done.exists():
        return json.loads(done.read_text())
    sets = [f"{k}={v}" for k, v in budget.items() if k != "epochs"]
    sets.append(f"bf16={'true' if precision == 'bf16' else 'false'}")
    cmd = [sys.executable, "-m", "trainables", "--method", method, "--dataset", dataset,
           "--seed", str(seed), "--epochs", str(args.epochs or budget["epochs"]), "--device", args.device,
           "--out", str(out / "run"), "--set", *sets]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - start
    (out / "stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"{method} on {dataset} seed {seed} {precision} failed: {tail[0]}")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    record = {"method": method, "dataset": dataset, "seed": seed, "precision": precision,
              "train_s": round(sum(float(s) for s in EPOCH_TIME.findall(proc.stderr)), 2),
              "eval_s": metrics.get("eval_time_s"), "wall_s": round(wall, 2),
              **{m: metrics[m] for m in METRICS}}
    done.write_text(json.dumps(record))
    print(f"  {method:7s} {dataset:13s} seed {seed} {precision}: Acc-MP {100 * record['acc_mlp']:.1f}  "
          f"Acc-KNN {100 * record['acc_knn']:.1f}  train {record['train_s']:.0f} s  "
          f"eval {record['eval_s']:.0f} s", flush=True)
    return record


def welch(a: list[float], b: list[float]) -> float | None:
    from scipy import stats
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def report(records: list[dict], methods, datasets, seeds) -> dict:
    from analysis.records import standard_error as se
    print(f"\n{'method':8s} {'dataset':13s} {'metric':8s} {'float32':>11s} {'bfloat16':>11s} "
          f"{'diff':>6s} {'p':>6s}  verdict")
    figures = {"methods": {}, "rule": f"p > {P_MIN} and |diff| <= {100 * DELTA_MAX:g} points"}
    for method in methods:
        cells, ok, complete = [], True, True
        train = {p: 0.0 for p in PRECISIONS}
        for dataset in datasets:
            rows = {p: [r for r in records if r["method"] == method and r["dataset"] == dataset
                        and r["precision"] == p and r["seed"] in seeds] for p in PRECISIONS}
            complete &= all(len(rows[p]) == len(seeds) for p in PRECISIONS)
            for p in PRECISIONS:
                train[p] += sum(r["train_s"] for r in rows[p])
            for metric in METRICS:
                a = [r[metric] for r in rows["fp32"]]
                b = [r[metric] for r in rows["bf16"]]
                p = welch(a, b)
                diff = mean(b) - mean(a)
                good = p is not None and p > P_MIN and abs(diff) <= DELTA_MAX
                ok &= good
                cells.append({"dataset": dataset, "metric": metric, "n": [len(a), len(b)],
                              "fp32": round(100 * mean(a), 2), "fp32_se": round(100 * se(a), 2),
                              "bf16": round(100 * mean(b), 2), "bf16_se": round(100 * se(b), 2),
                              "diff": round(100 * diff, 2), "p": None if p is None else round(p, 4)})
                print(f"{method:8s} {dataset:13s} {metric:8s} {100 * mean(a):5.1f}±{100 * se(a):3.1f}  "
                      f"{100 * mean(b):5.1f}±{100 * se(b):3.1f}  {100 * diff:+5.1f} "
                      f"{'  -' if p is None else f'{p:6.3f}'}  {'ok' if good else 'differs'}")
        verdict = ("parity" if ok else "no parity") if complete else "incomplete"
        speedup = train["fp32"] / train["bf16"] if train["bf16"] else None
        figures["methods"][method] = {"verdict": verdict, "cells": cells,
                                      "train_s_fp32": round(train["fp32"], 1),
                                      "train_s_bf16": round(train["bf16"], 1),
                                      "train_speedup_bf16": None if speedup is None else round(speedup, 2)}
        print(f"{method}: {verdict}; training {train['fp32']:.0f} s float32, {train['bf16']:.0f} s bfloat16"
              + (f" ({speedup:.2f}x)" if speedup else ""))
    return figures


DEFAULT_METHODS = ["vae", "simclr", "simvae"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=None,
                        help="default: vae simclr simvae; with --report, the methods of the runs in --out")
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashionmnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the laptop profile's (20)")
    parser.add_argument("--data-dir", default=os.environ.get("SSL_SWEEPS_DATA"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    parser.add_argument("--out", default="bf16_parity", help="folder of the runs' records (default ./bf16_parity)")
    parser.add_argument("--report", action="store_true", help="only print the table of the runs in --out")
    args = parser.parse_args(argv)
    args.out = str(Path(args.out).resolve())
    if args.data_dir:
        args.data_dir = str(Path(args.data_dir).resolve())

    from trainables.precision import native_bf16
    import torch
    device = torch.device(args.device)
    start = time.time()
    if not args.report:
        args.methods = args.methods or DEFAULT_METHODS
        keys = [(m, d, s, p) for m, s, d, p in itertools.product(args.methods, args.seeds, args.datasets, PRECISIONS)]
        budget = laptop_budget()
        print(f"bf16 parity: {len(keys)} runs, {args.jobs} at a time x {args.threads} thread(s), "
              f"device {args.device} (native bf16: {native_bf16(device)}), records in {args.out}", flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda k: run_one(k, args, budget), keys))
    records = [json.loads(p.read_text()) for p in sorted(Path(args.out).glob("*/parity.json"))]
    if args.methods is None:  # --report without --methods: the folder's own methods
        args.methods = list(dict.fromkeys(r["method"] for r in records))
    figures = report(records, args.methods, args.datasets, set(args.seeds))
    figures.update(device=args.device, native_bf16=native_bf16(device), jobs=args.jobs, threads=args.threads,
                   runs=len(records), wall_s=round(time.time() - start, 1),
                   cpu=next((line.split(":", 1)[1].strip() for line in
                             Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), ""))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
