"""What running under Ray Tune costs, and what ASHA saves.

1. Overhead: one config (SimVAE, J=4, on ``digits``) trained epoch by epoch (a) directly, with
   ``trainables.driver.Run`` in this process (before and after (b)), and (b) as a sweep trial under Ray Tune
   (``sweeps.trial.sweep_trial``: Tune reports, a checkpoint every epoch, MLflow logging), in the
   same run, one CPU thread each. Throughput is training views per second of wall time per
   epoch (Tune's ``time_this_iter_s``; the first epoch is warm-up). Target: overhead <= 10%.
2. Early stopping: ``simvae_sigma2`` on the quick profile with ASHA, and the same search (same
   TPE seed) without early stopping. Compute is epochs trained (x datasets) plus wall time; the
   best sigma^2 of each and whether both lie in the same region (within half a decade).

Prints figures; the last line is one JSON object.

    python benchmarks/sweep_overhead.py [--epochs 6] [--num-samples 6] [--skip-asha]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

OVERHEAD_CONFIG = {"method": "simvae", "dataset": "digits", "J": 4, "train_size": 512, "test_size": 256,
                   "eval_every": 1, "checkpoint_every": 1, "batch_size": 64, "probe_epochs": 3,
                   "decoder_epochs": 1, "style_J": 1}


def direct_epoch_times(epochs: int) -> tuple[list[float], int]:
    """Wall seconds of each epoch of Run.train_epoch called directly; views per epoch."""
    import torch

    from trainables.driver import Run

    torch.set_num_threads(1)
    run = Run({**OVERHEAD_CONFIG, "epochs": epochs})
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        run.train_epoch()
        times.append(time.perf_counter() - t0)
    views = (len(run.splits.train.x) // run.images_per_step) * run.images_per_step * run.J
    return times, views


def tune_epoch_times(epochs: int, home: Path) -> list[float]:
    """time_this_iter_s of each report of the same config run as a sweep trial under Tune."""
    from dataclasses import replace

    from ray import tune

    from sweeps import spaces, tracking
    from sweeps.spaces import Grid
    from sweeps.trial import TrialContext, sweep_trial

    fixed = {k: v for k, v in OVERHEAD_CONFIG.items() if k not in ("method", "dataset", "J")}
    plan = spaces.expand("simvae_J", "quick", datasets=["digits"], epochs=epochs, sets=fixed)
    plan = replace(plan, params={"J": Grid((OVERHEAD_CONFIG["J"],))}, asha=None)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "benchmark_overhead")
    parent = tracking.create_parent(uri, exp, "overhead", {"space": "benchmark"}, {})
    ctx = TrialContext(plan=plan, tracking_uri=uri, experiment_id=exp, parent_run_id=parent,
                       sweep_name="overhead", git_commit="benchmark")
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx), {"cpu": 1})
    tuner = tune.Tuner(trainable, param_space={"J": OVERHEAD_CONFIG["J"]},
                       run_config=tune.RunConfig(name="overhead", storage_path=str(home / "tune"), verbose=0))
    grid = tuner.fit()
    df = grid[0].metrics_dataframe
    tracking.end_run(uri, parent, "FINISHED")
    # The last report also carries the final evaluation: leave it out.
    return [float(t) for t in df["time_this_iter_s"].tolist()[:-1]]


def overhead(epochs: int, home: Path) -> dict:
    # Direct runs before and after the Tune run, so a change in the machine's load (it is
    # shared) weighs on both sides alike.
    before, views = direct_epoch_times(epochs)
    under_tune = tune_epoch_times(epochs, home)
    after, _ = direct_epoch_times(epochs)
    direct = before[1:] + after[1:]
    d = statistics.median(direct)
    t = statistics.median(under_tune[1:])
    out = {"views_per_epoch": views, "direct_views_per_s": views / d, "tune_views_per_s": views / t,
           "overhead": 1 - d / t, "direct_epoch_s": direct, "tune_epoch_s": under_tune}
    print(f"throughput direct {out['direct_views_per_s']:.0f} views/s, under Tune "
          f"{out['tune_views_per_s']:.0f} views/s: overhead {100 * out['overhead']:.1f}% (target <= 10%)")
    return out


def sweep(args: list[str]) -> tuple[list[dict], float]:
    from sweeps.run import main

    t0 = time.time()
    code = main(args)
    wall = time.time() - t0
    if code != 0:
        raise SystemExit(f"sweep {' '.join(args)} exited {code}")
    home = Path(os.environ["SSL_SWEEPS_HOME"])
    folder = max((p.parent for p in (home / "tune").glob("*/sweep.json")), key=lambda p: p.stat().st_mtime)
    with open(folder / "trials.csv") as f:
        return list(csv.DictReader(f)), wall


def early_stopping(num_samples: int, epochs: int) -> dict:
    common = ["--space", "simvae_sigma2", "--profile", "quick", "--num-samples", str(num_samples),
              "--epochs", str(epochs), "--search-seed", "0"]
    results = {}
    for label, extra in (("asha", []), ("no_early_stopping", ["--no-early-stopping"])):
        trials, wall = sweep(common + extra)
        n_datasets = 2
        epochs_trained = sum(int(float(t["epochs"])) for t in trials) * n_datasets
        done = [t for t in trials if t["status"] == "completed" and t.get("acc_mlp_mean")]
        best = max(done, key=lambda t: float(t["acc_mlp_mean"]))
        results[label] = {"wall_s": wall, "epochs_trained": epochs_trained,
                          "stopped_early": sum(t["status"] == "stopped_early" for t in trials),
                          "best_sigma2": float(best["config/sigma2"]),
                          "best_acc_mlp_mean": float(best["acc_mlp_mean"]),
                          "sigma2_tried": sorted(float(t["config/sigma2"]) for t in trials)}
        print(f"{label}: {epochs_trained} dataset-epochs, {wall:.0f} s wall, "
              f"{results[label]['stopped_early']} stopped early; best sigma2 {results[label]['best_sigma2']:.3g} "
              f"(acc_mlp_mean {results[label]['best_acc_mlp_mean']:.3f})")
    a, f = results["asha"], results["no_early_stopping"]
    results["compute_ratio"] = a["epochs_trained"] / f["epochs_trained"]
    results["wall_ratio"] = a["wall_s"] / f["wall_s"]
    results["best_log10_distance"] = abs(math.log10(a["best_sigma2"]) - math.log10(f["best_sigma2"]))
    results["same_region"] = results["best_log10_distance"] <= 0.5
    print(f"ASHA used {100 * results['compute_ratio']:.0f}% of the epochs and {100 * results['wall_ratio']:.0f}% "
          f"of the wall time; best sigma2 {results['best_log10_distance']:.2f} decades apart "
          f"({'same' if results['same_region'] else 'different'} region)")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6, help="epochs of the overhead run")
    p.add_argument("--num-samples", type=int, default=6, help="configs of the simvae_sigma2 search")
    p.add_argument("--asha-epochs", type=int, default=5, help="epochs per trial in the ASHA comparison")
    p.add_argument("--skip-asha", action="store_true")
    a = p.parse_args()
    import ray

    home = Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    os.environ["SSL_SWEEPS_HOME"] = str(home)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        result = {"overhead": overhead(a.epochs, home)}
        if not a.skip_asha:
            result["early_stopping"] = early_stopping(a.num_samples, a.asha_epochs)
    finally:
        ray.shutdown()
    summary = {"overhead": round(result["overhead"]["overhead"], 4),
               "direct_views_per_s": round(result["overhead"]["direct_views_per_s"], 1),
               "tune_views_per_s": round(result["overhead"]["tune_views_per_s"], 1)}
    if "early_stopping" in result:
        es = result["early_stopping"]
        summary.update({k: es[k] for k in ("compute_ratio", "wall_ratio", "best_log10_distance", "same_region")})
        summary.update({"asha_best_sigma2": es["asha"]["best_sigma2"],
                        "full_best_sigma2": es["no_early_stopping"]["best_sigma2"]})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
