"""The disk a sweep holds: what is kept where, at its peak and once it has ended.

    python benchmarks/sweep_disk.py                       # runs simvae_J --profile quick in a fresh home
    python benchmarks/sweep_disk.py --home runs           # measures a home as it is (nothing runs)
    python benchmarks/sweep_disk.py -- --keep-checkpoints # more arguments for sweeps/run.py

Run, it starts the sweep in a new ``$SSL_SWEEPS_HOME`` and samples the home's size every two
seconds (the peak: a running trial's newest checkpoint, one per trial running at once). Then it
splits what the home holds: Tune's checkpoints, the run files (result.json, config, metrics,
figures per run), Tune's own files, the MLflow store (SQLite file and artifacts) and the Optuna
study. Target: the quick ``simvae_J`` sweep under 100 MB once it has ended.

Prints a table, then one JSON line of the figures (bytes as MB).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 100.0


def size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file itself)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def measure(home: Path) -> dict[str, float]:
    """What ``home`` holds, in MB: checkpoints, run files, Tune's own files, MLflow, Optuna, total."""
    home, mb = Path(home), 1e6
    tune = home / "tune"
    checkpoints = sum(size(d) for d in tune.glob("*/*/checkpoint_*"))
    run_files = sum(size(d) for d in tune.glob("*/*/runs"))
    figures = {
        "checkpoints_mb": checkpoints / mb,
        "checkpoint_folders": len(list(tune.glob("*/*/checkpoint_*"))),
        "run_files_mb": run_files / mb,
        "tune_files_mb": (size(tune) - checkpoints - run_files) / mb,
        "mlflow_mb": (size(home / "mlflow.db") + size(home / "artifacts")) / mb,
        "optuna_mb": size(home / "optuna.db") / mb,
        "total_mb": size(home) / mb,
    }
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}


def run_and_sample(home: Path, argv: list[str], every_s: float = 2.0) -> tuple[int, float, float]:
    """Run sweeps/run.py with ``argv`` in ``home``; returns (exit code, wall seconds, peak MB)."""
    env = {**os.environ, "SSL_SWEEPS_HOME": str(home)}
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, size(home))
            done.wait(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.time()
    sampler.start()
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), *argv], env=env, cwd=ROOT)
    done.set()
    sampler.join()
    return proc.returncode, time.time() - t0, max(peak, size(home)) / 1e6


def report(figures: dict) -> None:
    rows = [("checkpoints", "checkpoints_mb", f"{figures['checkpoint_folders']} folder(s) under tune/<sweep>/<trial>/"),
            ("run files", "run_files_mb", "tune/<sweep>/<trial>/runs/<dataset>-s<seed>/"),
            ("Tune's own files", "tune_files_mb", "experiment state, progress.csv, logs"),
            ("MLflow", "mlflow_mb", "mlflow.db and artifacts/"),
            ("Optuna", "optuna_mb", "optuna.db"),
            ("total", "total_mb", "")]
    print(f"{'what':<18}{'MB':>9}  where")
    for name, key, where in rows:
        print(f"{name:<18}{figures[key]:>9.2f}  {where}")
    if "peak_mb" in figures:
        print(f"{'peak while running':<18}{figures['peak_mb']:>9.2f}  sampled every 2 s")
    verdict = "under" if figures["total_mb"] < TARGET_MB else "OVER"
    print(f"target: under {TARGET_MB:.0f} MB once the sweep has ended: {verdict}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, help="measure this sweeps home as it is (nothing runs)")
    p.add_argument("--space", default="simvae_J")
    p.add_argument("--profile", default="quick")
    p.add_argument("extra", nargs="*", help="more arguments for sweeps/run.py (after --)")
    args = p.parse_args()
    if args.home:
        figures = measure(args.home.expanduser().resolve())
    else:
        with tempfile.TemporaryDirectory() as home:
            code, wall, peak = run_and_sample(Path(home), ["--space", args.space, "--profile", args.profile,
                                                           *args.extra])
            if code != 0:
                raise SystemExit(f"the sweep exited {code}")
            figures = {**measure(Path(home)), "peak_mb": round(peak, 2), "sweep_wall_s": round(wall, 1)}
    report(figures)
    print(json.dumps({**figures, "target_mb": TARGET_MB, "under_target": figures["total_mb"] < TARGET_MB}))


if __name__ == "__main__":
    main()
