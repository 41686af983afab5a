"""Table 1: methods x datasets, Acc-MP and Acc-KNN as mean ± standard error over seeds.

``python analysis/table.py`` reads the ``table1`` sweep (``--space`` for another; there each
method's best config by the selection rule is used). Per dataset and metric the best method of
each family (generative, discriminative: each method's ``family`` in ``models.METHODS``) is in
bold; the baselines (Random, Pixels: family "baseline") stand alone (never bold). The paper's reported values
(analysis/paper_table1.yaml, the paper's Table 1) sit beside ours with the difference ours −
paper in points; datasets the paper did not use show '—'. Below: per dataset, whether SimVAE differs from the best other method
over seeds (Welch's t-test, unequal variances), then the paper's two claims tested one pair at a
time: SimVAE above each other generative method, and every learned method above the random
encoder (holds: higher and p < 0.05). Writes results/tables/table1_<sweep>.{md,tex,csv}; the
caption names the sweep, its profile, budget and seeds. A space of one method (an ablation such
as simvae_J) is refused with a pointer to analysis/ablation.py.

Standard error = sample standard deviation (ddof = 1) / sqrt(n seeds), as the paper's "mean ±
standard error over 3 seeds"; with one seed it is undefined, the cell shows the mean alone and
the caption says so. The paper's value and Δ columns appear for the datasets the paper reports.
Only runs that trained the full budget count (FINISHED, not stopped early).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from analysis.records import (AnalysisError, Records, add_source_args, dataset_name, dedupe,
                              load_from_args, main_guard, method_family, method_key, method_name,
                              results_dir, summarise)
from analysis.select import score_configs
from models import FAMILIES, METHODS
from sweeps.schema import plain

import pandas as pd  # after the analysis package, which keeps analysis/select.py from shadowing `select`

PAPER_FILE = Path(__file__).resolve().parent / "paper_table1.yaml"
METRICS = ("acc_mlp", "acc_knn")
METRIC_NAMES = {"acc_mlp": "Acc-MP", "acc_knn": "Acc-KNN"}
DASH = "—"


@dataclass(frozen=True)
class Cell:
    """One method on one dataset for one metric: per-seed values (fractions, by seed) and their
    summary (``summarise``: mean, standard error over seeds, n)."""

    values: tuple[float, ...]
    n: int
    mean: float
    se: float


@dataclass
class Welch:
    dataset: str
    metric: str
    other: str  # the best method other than SimVAE
    diff: float  # SimVAE mean − other mean (fraction)
    t: float | None
    p: float | None
    n: tuple[int, int]
    method: str = "simvae"  # the method whose advantage is tested

    @property
    def verdict(self) -> str:
        """'holds' (higher, p < 0.05), 'not significant' (higher, p >= 0.05 or untestable), 'no'."""
        if self.diff <= 0:
            return "no"
        return "holds" if self.p is not None and self.p < 0.05 else "not significant"


@dataclass
class Table:
    records: Records
    methods: list[str]
    datasets: list[str]
    cells: dict[tuple[str, str, str], Cell]  # (method, dataset, metric)
    bold: set[tuple[str, str, str]]
    paper: dict[tuple[str, str, str], float]  # in %
    welch: list[Welch]
    configs: dict[str, str]  # method -> config hash used
    claims: list[Welch]  # the paper's claims, pair by pair


def load_paper(path: Path = PAPER_FILE) -> dict[tuple[str, str, str], float]:
    """(method, dataset, metric) -> the paper's value in %."""
    import yaml

    data = yaml.safe_load(path.read_text())
    out = {}
    for method, per_dataset in data["values"].items():
        for dataset, pair in per_dataset.items():
            for metric, v in zip(data["metrics"], pair):
                out[(method, dataset, metric)] = float(v)
    return out


def runs_per_method(records: Records) -> tuple[pd.DataFrame, dict[str, str]]:
    """Each method's full-budget runs at one config: the only one (table1) or the best-ranked by
    the selection rule (mean acc_mlp across datasets); a method without a complete config uses
    its config with the most runs. Returns (those runs, {method: config hash})."""
    eligible = dedupe(records.eligible())
    scores = score_configs(records, "acc_mlp") if records.has_metric("acc_mlp") else []
    best = {s.method: s.config_hash for s in scores if s.rank == 1}
    used = {}
    for method in records.methods:
        counts = eligible.loc[eligible["method"] == method, "config_hash"].value_counts()
        if len(counts):
            used[method] = best.get(method) or max(sorted(counts.index), key=lambda h: counts[h])
    return eligible[eligible["method"].map(used) == eligible["config_hash"]], used


def cells(records: Records, metrics: Sequence[str]) -> tuple[dict[tuple[str, str, str], Cell], dict[str, str]]:
    """(method, dataset, metric) -> its Cell at each method's chosen config; and the config hashes."""
    runs, used = runs_per_method(records)
    summary = summarise(runs.sort_values("seed", kind="stable"), ["method", "dataset"], metrics)
    return {(r.method, r.dataset, r.metric): Cell(r.values, r.n, r.mean, r.se) for r in summary.itertuples()}, used


def welch_test(a: Cell, b: Cell) -> tuple[float | None, float | None]:
    """Welch's t-test (scipy.stats.ttest_ind, equal_var=False) over seeds; None without two
    values each side or when both spreads are zero."""
    from scipy import stats

    if len(a.values) < 2 or len(b.values) < 2:
        return None, None
    with warnings.catch_warnings():  # identical seeds: scipy warns, the p-value is NaN and reported as such
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a.values, b.values, equal_var=False)
    t, p = float(res.statistic), float(res.pvalue)
    return (t, p) if math.isfinite(p) else (None, None)


def build_table(records: Records, metrics: tuple[str, ...] = METRICS) -> Table:
    table, used = cells(records, metrics)
    if not used:
        raise AnalysisError(f"no full-budget runs in {records.source}")
    methods = sorted(used, key=method_key)
    datasets = records.datasets
    bold = set()
    for d in datasets:
        for metric in metrics:
            for family in FAMILIES:
                present = [m for m in methods if method_family(m) == family and (m, d, metric) in table]
                if family != "baseline" and present:
                    top = max(table[(m, d, metric)].mean for m in present)
                    bold |= {(m, d, metric) for m in present if table[(m, d, metric)].mean == top}
    welch = []
    for d in datasets:
        for metric in metrics:
            if ("simvae", d, metric) not in table:
                continue
            others = [m for m in methods if m != "simvae" and (m, d, metric) in table]
            if not others:
                continue
            other = max(others, key=lambda m: table[(m, d, metric)].mean)
            a, b = table[("simvae", d, metric)], table[(other, d, metric)]
            t, p = welch_test(a, b)
            welch.append(Welch(d, metric, other, a.mean - b.mean, t, p, (len(a.values), len(b.values))))
    return Table(records, methods, datasets, table, bold, load_paper(), welch, used,
                 paper_claims(table, methods, datasets))


def paper_claims(table: dict, methods: list[str], datasets: list[str]) -> list[Welch]:
    """The paper's claims as pairs (method, other) tested per dataset and metric: SimVAE above
    every other generative method, and every learned (trainable) method above the random encoder."""
    pairs = [("simvae", m) for m in methods if m != "simvae" and method_family(m) == "generative"]
    if "random" in methods:
        pairs += [(m, "random") for m in methods if METHODS[m].trainable]
    out = []
    for d in datasets:
        for metric in METRICS:
            for a_name, b_name in pairs:
                if (a_name, d, metric) in table and (b_name, d, metric) in table:
                    a, b = table[(a_name, d, metric)], table[(b_name, d, metric)]
                    t, p = welch_test(a, b)
                    out.append(Welch(d, metric, b_name, a.mean - b.mean, t, p,
                                     (len(a.values), len(b.values)), a_name))
    return out


# -- formatting -------------------------------------------------------------------------------


def _pct(v: float | None, digits: int = 1, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return DASH
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def cell_text(table: Table, key: tuple[str, str, str], digits: int = 1) -> str:
    c = table.cells.get(key)
    if c is None:
        return DASH
    if c.n < 2:  # one seed: no standard error (the caption says so)
        return f"{100 * c.mean:.{digits}f}"
    return f"{100 * c.mean:.{digits}f} ± {_pct(100 * c.se, digits)}"


def with_paper(table: Table, dataset: str) -> bool:
    """The paper reports ``dataset``: its columns get the paper's value and ours − paper."""
    return any((m, dataset, metric) in table.paper for m in table.methods for metric in METRICS)


def rows(table: Table, digits: int = 1) -> list[list[tuple[str, bool]]]:
    """Per method: (text, bold) per column -- per dataset and metric: ours, then the paper's
    value and Δ where the paper reports the dataset."""
    out = []
    for m in table.methods:
        row = [(method_name(m), False)]
        for d in table.datasets:
            for metric in METRICS:
                key = (m, d, metric)
                row.append((cell_text(table, key, digits), key in table.bold))
                if with_paper(table, d):
                    paper, ours = table.paper.get(key), table.cells.get(key)
                    diff = 100 * ours.mean - paper if ours is not None and paper is not None else None
                    row += [(_pct(paper), False), (_pct(diff, digits, signed=True), False)]
        out.append(row)
    return out


def header(table: Table) -> list[str]:
    cols = ["method"]
    for d in table.datasets:
        name = dataset_name(d)
        for metric in METRICS:
            cols += [f"{name} {METRIC_NAMES[metric]}"] + (["paper", "Δ"] if with_paper(table, d) else [])
    return cols


def welch_rows(table: Table) -> list[list[str]]:
    out = []
    for w in table.welch:
        out.append([dataset_name(w.dataset), METRIC_NAMES.get(w.metric, w.metric),
                    method_name(w.other), _pct(100 * w.diff, 2, signed=True),
                    DASH if w.t is None else f"{w.t:.2f}", DASH if w.p is None else f"{w.p:.3g}",
                    f"{w.n[0]} / {w.n[1]}",
                    DASH if w.p is None else ("yes" if w.p < 0.05 else "no")])
    return out


WELCH_HEADER = ["dataset", "metric", "best other", "SimVAE − other (points)", "Welch t", "p", "seeds", "p < 0.05"]
CLAIM_HEADER = ["dataset", "metric", "claim", "difference (points)", "Welch t", "p", "seeds", "verdict"]


def caption(table: Table) -> str:
    fam = "; ".join(f"{f}: {', '.join(method_name(m) for m in METHODS if method_family(m) == f)}"
                    for f in FAMILIES if f != "baseline")
    seeds = sorted({c.n for c in table.cells.values()})
    spread = ("mean ± standard error over seeds" if min(seeds) > 1 else
              "one seed: no standard error" if max(seeds) == 1 else "mean ± standard error over seeds (one seed: mean only)")
    paper = [dataset_name(d) for d in table.datasets if with_paper(table, d)]
    beside = (f" paper: the paper's Table 1 beside ours for {', '.join(paper)}, Δ = ours − paper in points;"
              if paper else " The paper reports none of these datasets.")
    return (f"Acc-MP (MLP probe) and Acc-KNN (%), {spread}; bold: best of its family "
            f"({fam}; the baselines stand alone).{beside} {DASH}: no value. {table.records.caption()}.")


def claim_rows(table: Table) -> list[list[str]]:
    return [[dataset_name(w.dataset), METRIC_NAMES.get(w.metric, w.metric),
             f"{method_name(w.method)} > {method_name(w.other)}", _pct(100 * w.diff, 2, signed=True),
             DASH if w.t is None else f"{w.t:.2f}", DASH if w.p is None else f"{w.p:.3g}",
             f"{w.n[0]} / {w.n[1]}", w.verdict] for w in table.claims]


def to_markdown(table: Table) -> str:
    head = header(table)
    lines = [f"# Table 1 ({table.records.space})", "", caption(table), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows(table):
        lines.append("| " + " | ".join(f"**{t}**" if b else t for t, b in row) + " |")
    seeds = sorted({c.n for c in table.cells.values()})
    lines += ["", f"Seeds per cell: {', '.join(map(str, seeds))}.", "",
              "## SimVAE against the best other method (Welch's t-test over seeds)", "",
              "| " + " | ".join(WELCH_HEADER) + " |", "|" + "---|" * len(WELCH_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in welch_rows(table)]
    if table.claims:
        lines += ["", "## The paper's claims, pair by pair (Welch's t-test over seeds; holds: higher and p < 0.05)", "",
                  "| " + " | ".join(CLAIM_HEADER) + " |", "|" + "---|" * len(CLAIM_HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in claim_rows(table)]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    repl = {"±": "$\\pm$", "β": "$\\beta$", "Δ": "$\\Delta$", "−": "$-$", DASH: "--", "%": "\\%", "_": "\\_",
            "&": "\\&", "<": "$<$"}
    return "".join(repl.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    n = {d: (3 if with_paper(table, d) else 1) * len(METRICS) for d in table.datasets}
    sub = {d: " & ".join(METRIC_NAMES[m] + (" & paper & $\\Delta$" if with_paper(table, d) else "") for m in METRICS)
           for d in table.datasets}
    lines = ["% Table 1 written by analysis/table.py", "\\begin{table}[t]", "\\centering", "\\small",
             "\\begin{tabular}{l" + "".join("|" + "r" * n[d] for d in table.datasets) + "}", "\\toprule",
             " & " + " & ".join(f"\\multicolumn{{{n[d]}}}{{c}}{{{_tex(dataset_name(d))}}}"
                                for d in table.datasets) + " \\\\",
             "method & " + " & ".join(sub[d] for d in table.datasets) + " \\\\", "\\midrule"]
    for row in rows(table):
        lines.append(" & ".join(f"\\textbf{{{_tex(t)}}}" if b else _tex(t) for t, b in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex(caption(table))}}}", "\\label{tab:table1}",
              "\\end{table}", "", "\\begin{table}[t]", "\\centering", "\\small",
              "\\begin{tabular}{lllrrrrl}", "\\toprule", " & ".join(_tex(h) for h in WELCH_HEADER) + " \\\\",
              "\\midrule"]
    lines += [" & ".join(_tex(c) for c in r) + " \\\\" for r in welch_rows(table)]
    lines += ["\\bottomrule", "\\end{tabular}",
              "\\caption{SimVAE against the best other method per dataset: Welch's t-test over seeds.}",
              "\\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table, path: Path) -> None:
    """Long format: one row per method, dataset and metric (values in %)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "dataset", "metric", "mean", "se", "n_seeds", "values", "paper", "diff", "bold", "config_hash"])
        for (m, d, metric), c in sorted(table.cells.items(), key=lambda kv: (method_key(kv[0][0]), kv[0][1:])):
            paper = table.paper.get((m, d, metric))
            w.writerow([m, d, metric, plain(100 * c.mean), plain(100 * c.se) if math.isfinite(c.se) else "", c.n,
                        " ".join(f"{100 * v:.4f}" for v in c.values), "" if paper is None else paper,
                        "" if paper is None else plain(100 * c.mean - paper), (m, d, metric) in table.bold,
                        table.configs.get(m, "")])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis/table.py", description=__doc__.split("\n\n")[0],
                                epilog="Examples: (no flags: the newest complete full-budget table1 sweep) | "
                                       "--space simvae_lr | --sweep NAME")
    p.add_argument("--space", default="table1", help="the sweep's space (default table1)")
    add_source_args(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records = load_from_args(args, args.space)
    if len(records.methods) < 2:
        searched = [k for k in records.searched() if k != "method"]
        raise AnalysisError(f"{records.space} compares one method ({', '.join(map(method_name, records.methods))}) "
                            f"across {', '.join(searched) or 'its configs'}, not methods: its table and figure are "
                            f"analysis/ablation.py --space {records.space} --param {searched[0] if searched else 'KEY'}")
    for metric in METRICS:
        records.require_metric(metric)
    table = build_table(records)
    folder = results_dir(args.out) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"table1_{records.label}"
    md = to_markdown(table)
    (folder / f"{stem}.md").write_text(md)
    (folder / f"{stem}.tex").write_text(to_latex(table))
    to_csv(table, folder / f"{stem}.csv")
    print(md)
    print(f"wrote {folder / stem}.md, .tex, .csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard("table.py", run, argv)


if __name__ == "__main__":
    sys.exit(main())
