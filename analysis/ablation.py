"""Ablation plot: a final metric against one parameter of a sweep (the paper's Fig. 8 for J).

``python analysis/ablation.py --space simvae_J --param J [--metric acc_mlp]``: one line per
dataset with a standard-error band over seeds, the across-dataset mean in bold black. A grid
(or a parameter with few distinct values) is drawn as lines through the per-config means (seeds
pooled; distinct configs never are); a continuously searched parameter (TPE: every config its own
value) as one point per config (mean over seeds, with s.e. bars) and a quadratic trend in
(log) x. Every value a grid defines is drawn: one without a full-budget run is marked (a red
cross on the axis, 'missing' in the table, and a line saying why). ``--param`` must be a
parameter the sweep varied. Log x axis for log-scale parameters (sigma2, beta, gamma, temperature, lr,
likelihood_scale, a 'log-uniform' search, or values spanning >= 50x). Only runs that trained the
full budget count. J gets a log2 axis (2, 4, 8 evenly spaced). With one dataset there is no
separate mean line; with one seed no error band (the subtitle says so). Writes
results/figures/ablation_<sweep>_<param>[_<metric>].{png,pdf} and the plotted numbers as
results/tables/ablation_<...>.csv, and logs the figures as artifacts (``figures/``) of the
sweep's MLflow parent run (records.choose says which sweep: the newest complete one at its
profile's full budget, or --sweep NAME).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.records import (CONFIG, LOG_SCALE_PARAMS, AnalysisError, Records, add_source_args,
                              config_keys, dataset_name, dedupe, load_from_args, main_guard, method_name,
                              present, results_dir, summarise)
from sweeps.figures import (METRIC_WORDS, house_style, is_percent, metric_label, new_figure, param_label,
                            percent_axis, save, value_axis)
from sweeps.schema import plain

import pandas as pd  # after the analysis package, which keeps analysis/select.py from shadowing `select`

LOG_SPREAD = 50.0  # values spanning this ratio or more get a log axis


@dataclass
class Point:
    """One plotted point: a dataset ('mean' for the across-dataset mean) at one x."""

    dataset: str
    x: Any
    mean: float
    se: float
    n: int  # seed runs (or datasets, for the mean)
    config_hash: str = ""  # the config this point is
    missing: str = ""  # a grid value without a full-budget run: why (else "")


def _key(x: Any) -> Any:
    """Sort key mixing numbers and labels (numbers first, by value)."""
    return (0, float(x), "") if isinstance(x, (int, float)) and not isinstance(x, bool) else (1, 0.0, str(x))


def varied(records: Records) -> list[str]:
    """The parameters the sweep varied: what its parent run says it searched, and any config key
    whose value differs between runs (dataset and seed aside)."""
    df = records.df
    differ = {k for k in config_keys(df) if df[CONFIG + k].map(lambda v: repr(v if present(v) else None)).nunique() > 1}
    return sorted((set(records.searched()) | differ) - {"dataset", "seed"})


def grid_values(records: Records, param: str) -> list[Any]:
    """The values a grid search over ``param`` defines ('grid [2, 4, 8]'), else []."""
    import ast

    desc = records.searched().get(param, "")
    if isinstance(desc, str) and desc.startswith("grid "):
        try:
            values = ast.literal_eval(desc[len("grid "):])
            return list(values) if isinstance(values, (list, tuple)) else []
        except (ValueError, SyntaxError):
            return []
    return []


def param_values(records: Records, param: str, metric: str) -> pd.DataFrame:
    """Every eligible run (latest per config/dataset/seed): columns dataset, config_hash, x (its
    ``param``) and the metric."""
    df = records.df
    swept = varied(records)
    if CONFIG + param not in df.columns:
        raise AnalysisError(f"unknown parameter {param!r} in {records.source}; parameters that vary: "
                            f"{', '.join(swept) or 'none'}")
    if param not in swept:
        raise AnalysisError(f"the sweep did not vary {param!r}: every run has {param}="
                            f"{df[CONFIG + param].iloc[0]!r}, so its runs are not seeds of one value "
                            f"({records.source}); parameters that vary: {', '.join(swept) or 'none'}")
    records.require_metric(metric)
    runs = dedupe(records.eligible(metric))
    x = pd.Series([v if present(v) else None for v in runs[CONFIG + param]], index=runs.index, dtype=object)
    return pd.DataFrame({"dataset": runs["dataset"], "config_hash": runs["config_hash"], "x": x, metric: runs[metric]})


def is_continuous(records: Records, param: str, xs: list[Any]) -> bool:
    """A continuously searched parameter: the sweep says (log-)uniform, else many distinct values."""
    desc = records.searched().get(param, "")
    if isinstance(desc, str) and desc:
        return desc.startswith(("log-uniform", "uniform"))
    numeric = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return len(numeric) == len(xs) and len(set(numeric)) > 8


def use_log_axis(records: Records, param: str, xs: list[Any]) -> bool:
    desc = records.searched().get(param, "")
    numeric = [float(x) for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if len(numeric) != len(xs) or not numeric or min(numeric) <= 0:
        return False
    return (param in LOG_SCALE_PARAMS or (isinstance(desc, str) and "log" in desc)
            or max(numeric) / min(numeric) >= LOG_SPREAD)


def aggregate(rows: pd.DataFrame, metric: str, datasets: list[str], continuous: bool) -> list[Point]:
    """Per dataset: the mean and s.e. over the seeds of each config (distinct configs are never
    pooled, even at one x); then the across-dataset mean of the per-dataset means where every
    dataset has a value (s.e. over datasets)."""
    rows = rows.assign(group=rows["config_hash"])
    first = rows.drop_duplicates(["dataset", "group"])
    first_x = dict(zip(zip(first["dataset"], first["group"]), first["x"]))  # x as the group's first run has it
    per_dataset = summarise(rows, ["dataset", "group"], metric)
    per_dataset = per_dataset.sort_values("dataset", key=lambda s: s.map(datasets.index), kind="stable")
    points, x_of = [], {}
    for r in per_dataset.itertuples():
        x = first_x[(r.dataset, r.group)]
        x_of.setdefault(r.group, x)
        points.append(Point(r.dataset, x, r.mean, r.se, r.n, r.group))
    for r in summarise(per_dataset, "group", "mean").itertuples():
        if r.n == len(datasets):
            points.append(Point("mean", x_of[r.group], r.mean, r.se, r.n, r.group))
    order = datasets + ["mean"]
    return sorted(points, key=lambda p: (order.index(p.dataset), _key(p.x)))


def missing_points(records: Records, param: str, grid: list[Any], points: list[Point],
                   datasets: list[str]) -> list[Point]:
    """A point for every grid value a dataset (or the mean) has no full-budget run at, saying
    why: the outcome of the runs that had that value, or 'not run'."""
    from analysis.records import trials

    df = records.df
    outcome_of: dict[tuple[str, str], set[str]] = {}
    if not df.empty and CONFIG + param in df.columns:
        t = trials(df, ("parent_id", "trial_id", "dataset"))
        for r in t.itertuples():
            x = t.loc[r.Index, CONFIG + param]
            outcome_of.setdefault((r.dataset, repr(_key(x))), set()).add(
                {"stopped_early": "stopped early by ASHA", "failed": "failed",
                 "unfinished": "interrupted / unfinished"}.get(r.outcome, r.outcome))
    have = {(p.dataset, repr(_key(p.x))) for p in points}
    out = []
    for v in grid:
        for d in datasets + ["mean"]:
            if (d, repr(_key(v))) in have:
                continue
            if d == "mean":
                whys = sorted({w for dd in datasets for w in outcome_of.get((dd, repr(_key(v))), set())} - {"completed"})
            else:
                whys = sorted(outcome_of.get((d, repr(_key(v))), set()) - {"completed"})
            out.append(Point(d, v, float("nan"), float("nan"), 0, "", "; ".join(whys) or "not run"))
    return out


def trend(xs: list[float], ys: list[float], log: bool, n: int = 100) -> tuple[list[float], list[float]] | None:
    """A quadratic least-squares trend in (log) x; None with fewer than 3 distinct x."""
    import numpy as np

    u = np.log(xs) if log else np.asarray(xs, dtype=float)
    if len(set(u.tolist())) < 3:
        return None
    coef = np.polyfit(u, ys, 2)
    grid = np.linspace(u.min(), u.max(), n)
    return (np.exp(grid) if log else grid).tolist(), np.polyval(coef, grid).tolist()


def plot(points: list[Point], datasets: list[str], param: str, metric: str, log: bool, continuous: bool,
         title: str, subtitle: str, stem: Path) -> list[Path]:
    """Draw and save PNG + PDF (house style, sweeps/figures.py); returns the paths. One line per
    dataset with its standard-error band where it has two or more seeds, and the mean over
    datasets in black when there are several datasets (with one, the dataset is the mean)."""
    scale = 100.0 if is_percent(metric) else 1.0
    absent = [p for p in points if p.missing]
    points = [p for p in points if not p.missing]
    numeric = all(isinstance(p.x, (int, float)) and not isinstance(p.x, bool) for p in points + absent)
    labels = sorted({p.x for p in points + absent}, key=_key)
    pos = (lambda x: x) if numeric else (lambda x: labels.index(x))
    lines = datasets + (["mean"] if len(datasets) > 1 else [])
    with house_style() as plt:
        fig, ax = new_figure(plt, title, subtitle)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        drawn = []
        for i, d in enumerate(lines):
            ps = sorted([p for p in points if p.dataset == d], key=lambda p: _key(p.x))
            if not ps:
                continue
            is_mean = d == "mean"
            color = "black" if is_mean else colors[i % len(colors)]
            label = "mean over datasets" if is_mean else dataset_name(d)
            x = [pos(p.x) for p in ps]
            y = [scale * p.mean for p in ps]
            se = [scale * p.se if math.isfinite(p.se) else 0.0 for p in ps]
            drawn += y
            bars = None if is_mean or not any(se) else se
            if continuous and numeric:
                ax.errorbar(x, y, yerr=bars, fmt="D" if is_mean else "o", ms=6 if is_mean else 4, color=color,
                            alpha=0.9 if is_mean else 0.6, capsize=2, label=label, zorder=3 if is_mean else 2)
                t = trend(x, y, log)
                if t is not None:
                    ax.plot(*t, color=color, lw=2.5 if is_mean else 1.0, ls="-" if is_mean else "--", zorder=3)
            elif len({_key(p.x) for p in ps}) < len(ps):  # several configs share a value: points, no line
                ax.errorbar(x, y, yerr=bars, fmt="D" if is_mean else "o", ms=6 if is_mean else 4,
                            color=color, capsize=2, label=label + " (one point per config)", zorder=3 if is_mean else 2)
            else:
                # A value without a full-budget run breaks the line: nothing is drawn across it.
                holes = [pos(q.x) for q in absent if q.dataset == d]
                xy = sorted([(a, b, c) for a, b, c in zip(x, y, se)] + [(h, math.nan, math.nan) for h in holes])
                x, y, se = [t[0] for t in xy], [t[1] for t in xy], [t[2] for t in xy]
                ax.plot(x, y, marker="o", color=color, lw=2.6 if is_mean else 1.4, ms=5, label=label,
                        zorder=3 if is_mean else 2)
                if bars is not None:
                    ax.fill_between(x, [a - b for a, b in zip(y, se)], [a + b for a, b in zip(y, se)],
                                    color=color, alpha=0.18, lw=0, label=f"{dataset_name(d)} ± s.e.")
        gone = sorted({p.x for p in absent}, key=_key)
        if gone:  # grid values without a full-budget run: marked on the axis, never silently skipped
            trans = ax.get_xaxis_transform()
            ax.scatter([pos(x) for x in gone], [0.03] * len(gone), marker="x", s=70, color="red", transform=trans,
                       zorder=5, clip_on=False, label="no full-budget run")
            for x in gone:
                ax.axvline(pos(x), color="red", ls=":", lw=1, alpha=0.6)
        if numeric:
            value_axis(ax, param, [p.x for p in points + absent], log)
        else:
            ax.set_xticks(range(len(labels)), [str(v) for v in labels])
        if scale == 100.0:
            percent_axis(ax, drawn)
        ax.set_xlabel(param_label(param))
        ax.set_ylabel(metric_label(metric))
        ax.legend()
        return save(fig, stem)


def write_points(points: list[Point], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "x", "mean", "se", "n", "config_hash", "missing"])
        for p in points:
            w.writerow([p.dataset, p.x, "" if not math.isfinite(p.mean) else plain(p.mean),
                        "" if not math.isfinite(p.se) else plain(p.se), p.n, p.config_hash, p.missing])


@dataclass
class Ablation:
    points: list[Point]
    figures: list[Path]
    table: Path
    continuous: bool
    log: bool
    n_runs: int


def make_ablation(records: Records, param: str, metric: str = "acc_mlp", out: Path | None = None,
                  xscale: str = "auto") -> Ablation:
    """Aggregate, plot and save (no MLflow logging; see ``log_to_parent``)."""
    rows = param_values(records, param, metric)
    if rows.empty:
        raise AnalysisError(f"no full-budget run of {records.source} has {metric}")
    xs = list(rows["x"])
    continuous = is_continuous(records, param, xs)
    log = use_log_axis(records, param, xs) if xscale == "auto" else xscale == "log"
    datasets = [d for d in records.datasets if d in set(rows["dataset"])]
    points = aggregate(rows, metric, datasets, continuous)
    points += missing_points(records, param, grid_values(records, param), points, datasets)
    order = datasets + ["mean"]
    points.sort(key=lambda p: (order.index(p.dataset), _key(p.x)))
    folder = results_dir(out)
    stem = f"ablation_{records.label}_{param}" + ("" if metric == "acc_mlp" else f"_{metric}")
    seeds = sorted({p.n for p in points if p.dataset != "mean" and not p.missing})
    methods = ", ".join(method_name(m) for m in records.methods)
    title = f"{methods}: {METRIC_WORDS.get(metric, metric)} against {param_label(param).split(' (')[0]}"
    spread = ("one seed: no error bands" if seeds == [1] else
              f"bands: ± one standard error over {'/'.join(map(str, seeds))} seeds")
    subtitle = (f"{records.caption()}; full-budget runs, {spread}"
                + ("; dashed: quadratic trend" if continuous else ""))
    figures = plot(points, datasets, param, metric, log, continuous, title, subtitle, folder / "figures" / stem)
    table = folder / "tables" / f"{stem}.csv"
    write_points(points, table)
    return Ablation(points, figures, table, continuous, log, len(rows))


def log_to_parent(records: Records, files: list[Path]) -> str | None:
    """Log ``files`` under figures/ of the parent run of the sweep read (the newest, if pooled)."""
    if records.from_files or records.uri is None or not records.sweeps:
        return None
    from mlflow.tracking import MlflowClient

    run_id = max(records.sweeps, key=lambda s: s.start_time).run_id
    c = MlflowClient(tracking_uri=records.uri)
    for f in files:
        c.log_artifact(run_id, str(f), artifact_path="figures")
    return run_id


def log_figures(records: Records, files: list[Path]) -> None:
    """``log_to_parent``, and a line saying where the figures went."""
    run_id = log_to_parent(records, files)
    if run_id:
        print(f"logged to MLflow parent run {run_id} (artifacts figures/)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis/ablation.py", description=__doc__.split("\n\n")[0],
                                epilog="Examples: --space simvae_J --param J | --space simvae_sigma2 --param sigma2 "
                                       "--metric acc_knn | --space betavae_beta --param beta --xscale log")
    p.add_argument("--space", required=True, help="the sweep's space")
    p.add_argument("--param", required=True, help="the config key on the x axis (e.g. J, sigma2, beta)")
    p.add_argument("--metric", default="acc_mlp", help="any final metric logged by the runs (default acc_mlp)")
    p.add_argument("--xscale", choices=("auto", "log", "linear"), default="auto",
                   help="x axis (auto: log for log-scale parameters, see above)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the figures to the parent run")
    add_source_args(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records = load_from_args(args, args.space)
    ab = make_ablation(records, args.param, args.metric, args.out, args.xscale)
    print(f"{records.space}: {args.metric} vs {args.param} from {ab.n_runs} full-budget seed runs "
          f"({'continuous: points + trend' if ab.continuous else 'lines over values'}"
          f"{', log x' if ab.log else ''})")
    for p in ab.points:
        if p.missing:
            print(f"  {p.dataset:<14} {args.param}={p.x!s:<12} MISSING: no full-budget run ({p.missing})")
        else:
            # n counts seed runs for a dataset; for the mean row it counts datasets (its s.e. is
            # the spread between datasets, not seed noise)
            n = f"{p.n} dataset{'s' * (p.n != 1)}" if p.dataset == "mean" else f"{p.n} seed{'s' * (p.n != 1)}"
            se = f" ± {p.se:.4f}" if math.isfinite(p.se) else ""
            print(f"  {p.dataset:<14} {args.param}={p.x!s:<12} {p.mean:.4f}{se} (n={n})")
    missing = sorted({p.x for p in ab.points if p.missing}, key=_key)
    if missing:
        print(f"warning: {len(missing)} value(s) of {args.param} the sweep defines have no full-budget run: "
              f"{', '.join(map(str, missing))} (marked in the figure)", file=sys.stderr)
    print("wrote " + ", ".join(str(f) for f in [*ab.figures, ab.table]))
    if not args.no_mlflow:
        log_figures(records, ab.figures)
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard("ablation.py", run, argv)


if __name__ == "__main__":
    sys.exit(main())
