"""What running under Ray Tune costs, and what ASHA saves.

1. Overhead: one config (SimVAE, J=4, on ``digits``) trained epoch by epoch (a) directly, with
   ``trainables.driver.Run`` in this process (before and after (b)), and (b) as a sweep trial under Ray Tune
   (``sweeps.trial.sweep_trial``: Tune reports, a checkpoint every epoch, MLflow logging), in the
   same run, one CPU thread each. Throughput is training views per second of wall time per
   epoch (Tune's ``time_this_iter_s``; the first epoch is warm-up). Target: overhead <= 10%.
2. Early stopping: a searched space (``--space``, default ``simvae_sigma2``) on the quick
   profile with ASHA, and the same search (same TPE seed) without early stopping, for each of
   ``--search-seeds``. Compute is epochs trained (x datasets) plus wall time; the best config of
   each, whether both lie in the same region (within half a decade for log-uniform parameters)
   and how far ASHA's best is below the full search's. Target: ASHA <= 1/3 of the compute.

Prints figures; the last line is one JSON object.

    python benchmarks/sweep_overhead.py [--epochs 6] [--space vae_lr] [--search-seeds 0,1,2] [--skip-asha] [--skip-overhead]
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


def _searched(space_name: str) -> dict:
    from sweeps import spaces

    return dict(spaces.SPACES[space_name].params)


def _distance(a: dict, b: dict, params: dict) -> float:
    """How far two configs lie apart: the largest log10 distance over log-uniform parameters,
    the largest distance in units of the range over uniform ones, inf where a categorical differs."""
    from sweeps.distributions import LogUniform, Uniform

    d = 0.0
    for name, dist in params.items():
        x, y = a[name], b[name]
        if isinstance(dist, LogUniform):
            d = max(d, abs(math.log10(float(x)) - math.log10(float(y))))
        elif isinstance(dist, Uniform):
            d = max(d, abs(float(x) - float(y)) / (dist.high - dist.low))
        elif str(x) != str(y):
            d = math.inf
    return d


def early_stopping(space: str, num_samples: int, epochs: int | None, seed: int) -> dict:
    """One search seed: the same TPE search with ASHA and without early stopping."""
    params = _searched(space)
    common = ["--space", space, "--profile", "quick", "--num-samples", str(num_samples), "--search-seed", str(seed)]
    if epochs is not None:
        common += ["--epochs", str(epochs)]
    results = {}
    for label, extra in (("asha", []), ("no_early_stopping", ["--no-early-stopping"])):
        trials, wall = sweep(common + extra + ["--name", f"{space}-{label}-seed{seed}"])
        n_datasets = 2
        epochs_trained = sum(int(float(t["epochs"])) for t in trials) * n_datasets
        done = [t for t in trials if t["status"] == "completed" and t.get("acc_mlp_mean")]
        best = max(done, key=lambda t: float(t["acc_mlp_mean"]))
        results[label] = {"wall_s": wall, "epochs_trained": epochs_trained,
                          "stopped_early": sum(t["status"] == "stopped_early" for t in trials),
                          "best": {k: best[f"config/{k}"] for k in params},
                          "best_acc_mlp_mean": float(best["acc_mlp_mean"])}
        print(f"seed {seed}, {label}: {epochs_trained} dataset-epochs, {wall:.0f} s wall, "
              f"{results[label]['stopped_early']} stopped early; best {results[label]['best']} "
              f"(acc_mlp_mean {results[label]['best_acc_mlp_mean']:.3f})")
    a, f = results["asha"], results["no_early_stopping"]
    results["compute_ratio"] = a["epochs_trained"] / f["epochs_trained"]
    results["wall_ratio"] = a["wall_s"] / f["wall_s"]
    results["best_distance"] = _distance(a["best"], f["best"], params)
    results["same_region"] = results["best_distance"] <= 0.5
    results["acc_gap"] = f["best_acc_mlp_mean"] - a["best_acc_mlp_mean"]
    print(f"seed {seed}: ASHA used {100 * results['compute_ratio']:.0f}% of the epochs and "
          f"{100 * results['wall_ratio']:.0f}% of the wall time; the two bests {results['best_distance']:.2f} "
          f"apart ({'same' if results['same_region'] else 'different'} region), ASHA's best "
          f"{100 * results['acc_gap']:.1f} points below the full search's")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6, help="epochs of the overhead run")
    p.add_argument("--space", default="simvae_sigma2", help="the searched space of the ASHA comparison (quick profile)")
    p.add_argument("--num-samples", type=int, default=6, help="configs of each search")
    p.add_argument("--asha-epochs", type=int, default=None,
                   help="epochs per trial in the ASHA comparison (default: the quick profile's budget)")
    p.add_argument("--search-seeds", default="0", help="comma-separated TPE seeds, one pair of searches each")
    p.add_argument("--skip-asha", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--grace-period", type=int, help="ASHA's first rung for the comparison (default: the quick profile's)")
    p.add_argument("--reduction-factor", type=int, help="ASHA's reduction factor (default: the quick profile's)")
    a = p.parse_args()
    import dataclasses

    import ray

    from sweeps import spaces

    # A trial setting tried for the quick profile, in this process only (the sweeps run here).
    quick = spaces.PROFILES["quick"]
    spaces.PROFILES["quick"] = dataclasses.replace(
        quick, grace_period=a.grace_period or quick.grace_period,
        reduction_factor=a.reduction_factor or quick.reduction_factor)
    asha = {"grace_period": spaces.PROFILES["quick"].grace_period,
            "reduction_factor": spaces.PROFILES["quick"].reduction_factor}
    print(f"ASHA on the quick profile: grace period {asha['grace_period']}, reduction factor {asha['reduction_factor']}")

    home = Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    os.environ["SSL_SWEEPS_HOME"] = str(home)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        result = {} if a.skip_overhead else {"overhead": overhead(a.epochs, home)}
        if not a.skip_asha:
            result["early_stopping"] = [early_stopping(a.space, a.num_samples, a.asha_epochs, int(seed))
                                        for seed in a.search_seeds.split(",")]
    finally:
        ray.shutdown()
    summary = {}
    if "overhead" in result:
        summary = {"overhead": round(result["overhead"]["overhead"], 4),
                   "direct_views_per_s": round(result["overhead"]["direct_views_per_s"], 1),
                   "tune_views_per_s": round(result["overhead"]["tune_views_per_s"], 1)}
    if "early_stopping" in result:
        seeds = result["early_stopping"]
        ratios = [r["compute_ratio"] for r in seeds]
        summary.update({"space": a.space, "search_seeds": len(seeds), **asha,
                        "compute_ratio_mean": round(statistics.mean(ratios), 3),
                        "compute_ratio_max": round(max(ratios), 3),
                        "wall_ratio_mean": round(statistics.mean(r["wall_ratio"] for r in seeds), 3),
                        "same_region": sum(r["same_region"] for r in seeds),
                        "acc_gap_max": round(max(r["acc_gap"] for r in seeds), 4),
                        "per_seed": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                                      if k in ("compute_ratio", "wall_ratio", "best_distance", "same_region", "acc_gap")}
                                     for r in seeds]})
        print(f"over {len(seeds)} search seed(s): ASHA used {100 * summary['compute_ratio_mean']:.0f}% of the "
              f"full search's epochs on average (at most {100 * summary['compute_ratio_max']:.0f}%); the same "
              f"region in {summary['same_region']} of {len(seeds)}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
