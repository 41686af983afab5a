"""How well a sweep uses the machine: evaluation's share of each trial, and the cores kept busy.

    python benchmarks/sweep_efficiency.py                          # runs simvae_J --profile quick, then measures it
    python benchmarks/sweep_efficiency.py --space table1 --profile quick
    python benchmarks/sweep_efficiency.py --space table1 --profile laptop --home DIR -- --data-dir DIR  # records kept
    python benchmarks/sweep_efficiency.py --folder ~/ssl-sweeps/tune/simvae_J-quick-...   # a finished sweep

A trial trains its runs (one per dataset x seed) in lockstep, then evaluates each. From the
sweep folder: a trial's wall time is Tune's ``time_total_s`` at its last report, its start that
report's timestamp minus it; its evaluation time is the sum of its runs' ``eval_time_s``
(result.json). Figures:

- evaluation share = evaluation seconds / trial wall seconds, for trials whose method trains
  (target: <= 15% on quick; an untrained baseline's trial is all evaluation);
- cores busy = sum of trial wall seconds x CPUs per trial / (the sweep's wall seconds x the
  CPUs Ray had) (target: >= 80% on quick). The sweep's wall is the driver command's when this
  script ran it (Ray's start and the final records included), else first start to last report.

Prints one line per trial, the totals, and last one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import tempfile
import time
from pathlib import Path


def last_rows(folder: Path) -> dict[str, dict]:
    """Each trial folder's last progress.csv row."""
    out = {}
    for progress in sorted(folder.glob("*/progress.csv")):
        with open(progress) as f:
            rows = list(csv.DictReader(f))
        if rows:
            out[progress.parent.name] = rows[-1]
    return out


def _note(trial: dict) -> str:
    if not trial["runs"]:  # a sweep run before ssl-sweeps wrote every trial's files to the storage
        return "  (no run files: not counted)"
    return "" if trial["trains"] else "  (no training)"


def measure(folder: Path, cpus: float, command_wall: float | None) -> dict:
    from models import METHODS
    from sweeps.schema import read_result

    plan = json.loads((folder / "sweep.json").read_text())
    cpus_per_trial = float(plan.get("plan", plan).get("cpus_per_trial", 1.0))
    trials = []
    for name, row in last_rows(folder).items():
        wall = float(row["time_total_s"])
        end = float(row["timestamp"])
        evals, method = [], ""
        for result in sorted((folder / name / "runs").glob("*/result.json")):
            record = read_result(result)
            method = record.get("config", {}).get("method", method)
            if "eval_time_s" in record.get("metrics", {}):
                evals.append(float(record["metrics"]["eval_time_s"]))
        point = name.split("_", 4)[-1].rsplit("_", 2)[0]
        trials.append({"trial": row["trial_id"], "point": point, "start": end - wall, "end": end,
                       "wall_s": wall, "eval_s": sum(evals), "runs": len(evals),
                       "trains": bool(method) and METHODS[method].trainable})
    if not trials:
        raise SystemExit(f"{folder}: no trial reported anything")
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    sweep_wall = command_wall if command_wall is not None else span
    busy = sum(t["wall_s"] for t in trials) * cpus_per_trial / (sweep_wall * cpus)
    t0 = min(t["start"] for t in trials)
    print(f"{'trial':<12}{'point':<22}{'start s':>8}{'wall s':>8}{'eval s':>8}{'eval %':>8}")
    for t in sorted(trials, key=lambda t: t["start"]):
        print(f"{t['trial']:<12}{t['point'][:21]:<22}{t['start'] - t0:>8.0f}{t['wall_s']:>8.0f}"
              f"{t['eval_s']:>8.1f}{100 * t['eval_s'] / t['wall_s']:>7.1f}%{_note(t)}")
    # A method that does not train (random, pixels) is all evaluation: its share says nothing.
    shares = [t["eval_s"] / t["wall_s"] for t in trials if t["trains"] and t["runs"]] or [float("nan")]
    figures = {
        "folder": str(folder), "trials": len(trials), "cpus": cpus, "cpus_per_trial": cpus_per_trial,
        "sweep_wall_s": round(sweep_wall, 1), "trials_span_s": round(span, 1),
        "trial_wall_s_sum": round(sum(t["wall_s"] for t in trials), 1),
        "eval_share_max": round(max(shares), 3),
        "eval_share_total": round(sum(t["eval_s"] for t in trials) / sum(t["wall_s"] for t in trials), 3),
        "cores_busy": round(busy, 3),
    }
    print(f"\nsweep wall {sweep_wall:.0f} s ({'driver command' if command_wall is not None else 'first start to last report'}),"
          f" trials span {span:.0f} s, {cpus:g} CPUs")
    print(f"evaluation share: at most {100 * figures['eval_share_max']:.1f}% of a trial that trains "
          f"({100 * figures['eval_share_total']:.1f}% of all trial time); target <= 15%")
    print(f"cores busy: {100 * busy:.1f}% of the sweep's wall time; target >= 80%")
    print(json.dumps(figures))
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", type=Path, help="measure this finished sweep folder (nothing runs)")
    p.add_argument("--space", default="simvae_J")
    p.add_argument("--profile", default="quick")
    p.add_argument("--cpus", type=float, help="CPUs Ray had (default: this machine's)")
    p.add_argument("--home", type=Path, help="keep the sweep's records here (its SSL_SWEEPS_HOME, for the "
                   "analysis scripts afterwards; default: a temporary folder, removed at the end)")
    p.add_argument("extra", nargs="*", help="more arguments for sweeps/run.py (after --)")
    args = p.parse_args()
    cpus = args.cpus or float(os.cpu_count() or 1)
    if args.folder:
        measure(args.folder.expanduser().resolve(), cpus, None)
        return
    home_dir = args.home.expanduser().resolve() if args.home else None
    if home_dir and home_dir.exists() and (not home_dir.is_dir() or any(home_dir.iterdir())):
        raise SystemExit(f"--home {args.home}: not an empty folder (the measured sweep must be the only one in it)")
    with contextlib.nullcontext(str(home_dir)) if home_dir else tempfile.TemporaryDirectory() as home:
        os.environ["SSL_SWEEPS_HOME"] = home
        from sweeps.run import main as run_sweep

        t0 = time.time()
        code = run_sweep(["--space", args.space, "--profile", args.profile, *args.extra])
        wall = time.time() - t0
        if code != 0:
            raise SystemExit(f"the sweep exited {code}")
        (folder,) = [q.parent for q in (Path(home) / "tune").glob("*/sweep.json")]
        measure(folder, cpus, wall)


if __name__ == "__main__":
    main()
