"""Content against style (the paper's Fig. 5, middle panel) and SimVAE's style gains.

``python analysis/style.py`` reads the ``table1`` sweep (``--space`` for another; each method at
its best config by the selection rule, as in analysis/table.py) and draws:
- content vs style: per dataset, each method's content accuracy (default ``acc_mlp``) against its
  style-probe score (default ``style_aug_mean``: how well the augmentation parameters of an
  augmented view are predicted from its representation -- information SSL augmentations try to
  remove; ``--style-metric style_factor_mean`` for ground-truth factors/attributes), mean ± s.e.
  over seeds;
- style gains: per dataset, for every per-factor / per-attribute / per-augmentation-parameter
  style score (``style_*`` except the ``*_mean`` summaries), SimVAE's score minus each
  baseline's (points of R² or accuracy, ×100).
Writes results/figures/style_content_vs_style_<sweep>.{png,pdf}, style_gain_<sweep>.{png,pdf}
and the gains as results/tables/style_gain_<sweep>.csv. Only full-budget runs count.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from analysis.records import (AnalysisError, Records, add_source_args, dataset_name, load_from_args,
                              main_guard, method_family, method_name, results_dir)
from analysis.table import Cell, cells
from sweeps.figures import house_style, metric_label, new_figure, save
from sweeps.schema import plain

# By ``models.METHODS`` family; an unregistered method is drawn as a baseline.
FAMILY_COLORS = {"generative": "tab:blue", "discriminative": "tab:orange", "baseline": "tab:gray"}


def style_metrics(records: Records) -> list[str]:
    """Per-factor / per-attribute / per-augmentation-parameter style scores (no summaries)."""
    return [k for k in records.metric_names() if k.startswith("style_") and not k.endswith("_mean")]


@dataclass
class Gain:
    dataset: str
    metric: str
    baseline: str
    gain: float  # SimVAE mean − baseline mean (R² or accuracy, unscaled)
    simvae: float
    other: float


def style_gains(records: Records, table: dict[tuple[str, str, str], Cell] | None = None) -> list[Gain]:
    metrics = style_metrics(records)
    table = table if table is not None else cells(records, metrics)[0]
    methods = sorted({m for m, _, _ in table})
    out = []
    for d in records.datasets:
        for metric in metrics:
            s = table.get(("simvae", d, metric))
            if s is None:
                continue
            for b in methods:
                if b != "simvae" and (b, d, metric) in table:
                    o = table[(b, d, metric)]
                    out.append(Gain(d, metric, b, s.mean - o.mean, s.mean, o.mean))
    return out


def plot_content_vs_style(table, datasets: list[str], content: str, style: str, subtitle: str,
                          stem: Path) -> list[Path]:
    ds = [d for d in datasets if any((m, d, content) in table and (m, d, style) in table for m, _, _ in table)]
    with house_style() as plt:
        fig, axes = new_figure(plt, f"Content against style information: {metric_label(content).split(' (')[0]} "
                                    f"and {style}", subtitle + "; mean ± s.e. over seeds",
                               size=(4.2 * max(1, len(ds)) + 0.6, 4.2), ncols=max(1, len(ds)))
        axes = axes if isinstance(axes, list) else [axes]
        for i, (ax, d) in enumerate(zip(axes, ds)):
            for m in sorted({m for m, dd, _ in table if dd == d}):
                if (m, d, content) not in table or (m, d, style) not in table:
                    continue
                c, s = table[(m, d, content)], table[(m, d, style)]
                se = lambda cell: 100 * cell.se if math.isfinite(cell.se) else 0.0  # noqa: E731
                ax.errorbar(100 * s.mean, 100 * c.mean, xerr=se(s), yerr=se(c), fmt="o", ms=6, capsize=2,
                            color=FAMILY_COLORS[method_family(m) or "baseline"], mec="black" if m == "simvae" else None)
                ax.annotate(method_name(m), (100 * s.mean, 100 * c.mean), textcoords="offset points",
                            xytext=(5, 4), fontsize=8)
            ax.margins(0.15)  # room for the labels
            if i:
                ax.set_title("")
            ax.text(0.02, 0.98, dataset_name(d), transform=ax.transAxes, va="top", fontweight="bold")
            ax.set_xlabel(f"style score: {style} (×100)")
            ax.set_ylabel(metric_label(content))
        handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f) for f, c in FAMILY_COLORS.items()]
        axes[-1].legend(handles=handles, loc="lower right")
        return save(fig, stem)


def plot_gains(gains: list[Gain], datasets: list[str], subtitle: str, stem: Path) -> list[Path]:
    ds = [d for d in datasets if any(g.dataset == d for g in gains)]
    baselines = sorted({g.baseline for g in gains})
    with house_style() as plt:
        import matplotlib.pyplot

        fig, axes = matplotlib.pyplot.subplots(len(ds), 1, figsize=(8, 3.2 * len(ds) + 0.5), layout="constrained",
                                               squeeze=False)
        fig.suptitle("SimVAE's style-probe gain over each method, per factor", x=0.02, ha="left", fontweight="bold")
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (ax, d) in enumerate(zip(axes[:, 0], ds)):
            metrics = sorted({g.metric for g in gains if g.dataset == d})
            width = 0.8 / max(1, len(baselines))
            for j, b in enumerate(baselines):
                vals = {g.metric: g.gain for g in gains if g.dataset == d and g.baseline == b}
                xs = [k + (j - (len(baselines) - 1) / 2) * width for k, m in enumerate(metrics) if m in vals]
                ax.bar(xs, [100 * vals[m] for m in metrics if m in vals], width=width, color=colors[j % len(colors)],
                       label=f"vs {method_name(b)}")
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(range(len(metrics)), [m[len("style_"):] for m in metrics], rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("SimVAE − other (×100)")
            ax.set_title((subtitle + "\n" if i == 0 else "") + dataset_name(d), fontsize=8.5)
            ax.grid(axis="x", visible=False)
            ax.legend(ncol=min(4, len(baselines)))
        return save(fig, stem)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis/style.py", description=__doc__.split("\n\n")[0],
                                epilog="Examples: (no flags: the newest complete full-budget table1 sweep) | "
                                       "--style-metric style_factor_mean")
    p.add_argument("--space", default="table1", help="the sweep's space (default table1)")
    p.add_argument("--content-metric", default="acc_mlp", help="content accuracy (default acc_mlp)")
    p.add_argument("--style-metric", default="style_aug_mean", help="style score on the x axis (default style_aug_mean)")
    add_source_args(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records = load_from_args(args, args.space)
    records.require_metric(args.content_metric)
    records.require_metric(args.style_metric)
    per_metric = style_metrics(records)
    table, _ = cells(records, sorted({args.content_metric, args.style_metric, *per_metric}))
    if not table:
        raise AnalysisError(f"no full-budget runs in {records.source}")
    out, label = results_dir(args.out), records.label
    files = plot_content_vs_style(table, records.datasets, args.content_metric, args.style_metric, records.caption(),
                                  out / "figures" / f"style_content_vs_style_{label}")
    gains = style_gains(records, table)
    if gains:
        files += plot_gains(gains, records.datasets, records.caption(), out / "figures" / f"style_gain_{label}")
        path = out / "tables" / f"style_gain_{label}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["dataset", "metric", "baseline", "gain", "simvae", "baseline_value"])
            w.writerows([g.dataset, g.metric, g.baseline, plain(g.gain), plain(g.simvae), plain(g.other)] for g in gains)
        files.append(path)
    else:
        print("no SimVAE runs with per-factor style scores: no gain chart")
    print(f"{args.content_metric} vs {args.style_metric} for {', '.join(sorted({m for m, _, _ in table}))}")
    for d in records.datasets:
        for m in sorted({m for m, dd, _ in table if dd == d}):
            c, s = table.get((m, d, args.content_metric)), table.get((m, d, args.style_metric))
            if c and s:
                print(f"  {d:<14} {m:<8} content {100 * c.mean:6.2f}  style {100 * s.mean:6.2f}  (n={c.n})")
    print("wrote " + ", ".join(map(str, files)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard("style.py", run, argv)


if __name__ == "__main__":
    sys.exit(main())
