"""One self-contained HTML report of a sweep: ``python analysis/report.py --space NAME``.

Sections: the space (description, searched parameters, datasets, seeds, the sweeps read); the
trials (run / completed / stopped early by ASHA / failed, with each trial's config, outcome and
errors); the selection ranking (analysis/select.py's rule) and the method's entry in the
selection file if there is one; the plots -- the ablation of every searched numeric parameter
(analysis/ablation.py) and the validation-kNN learning curves of every trial (mean over
datasets and seeds per epoch, coloured and labelled by config: where ASHA stopped trials); the
hyperparameter importances and the search history (analysis/importance.py: Optuna's fANOVA and
PED-ANOVA evaluators, its optimisation-history and intermediate-values plots). Accuracies in
percent. Images are embedded as base64 PNG, so the file stands alone. Writes
results/report_<space>.html (--out to change the folder).
"""
from __future__ import annotations

import argparse
import base64
import html
import math
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from analysis.records import (CONFIG, AnalysisError, Records, add_source_args, config_of,
                              load_from_args, main_guard, results_dir, summarise, trials)
from analysis.select import _fmt_config, eligibility_note, hyper_keys, score_configs
from sweeps import schema
from sweeps.spaces import SPACES

import pandas as pd  # after the analysis package, which keeps analysis/select.py from shadowing `select`

MAX_CURVE_RUNS = 400  # metric-history queries are one per run


def esc(x) -> str:
    return html.escape(str(x))


def img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"><figcaption>{esc(alt)}</figcaption></figure>'


def table_html(head: list[str], rows: list[list[str]]) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join(out) + "</tbody></table>"


def trials_section(records: Records) -> str:
    c = records.trial_counts()
    by = ["parent_id", "trial_id"]
    acc = summarise(records.eligible(), by, "acc_mlp")
    acc = dict(zip(zip(acc["parent_id"], acc["trial_id"]), acc["mean"]))
    rows = []
    for _, t in trials(records.df, by).sort_values("start_time", kind="stable").iterrows():
        config = config_of(t, hyper_keys(records, t["method"]))
        mean = acc.get((t["parent_id"], t["trial_id"]))
        rows.append([esc(t["trial_id"]), esc(t["method"]), esc(_fmt_config(config)), esc(t["outcome"]),
                     str(t["runs"]), "—" if mean is None else f"{100 * mean:.2f}", esc(t["error"])])
    summary = (f"<p>{c['trials']} trials run: <b>{c['completed']}</b> completed their budget, "
               f"<b>{c['stopped_early']}</b> stopped early by ASHA, <b>{c['failed']}</b> failed, "
               f"{c['unfinished']} unfinished.</p>")
    return summary + table_html(["trial", "method", "config", "outcome", "runs (dataset × seed)",
                                 "mean acc_mlp over its full-budget runs (%)", "error"], rows)


def selection_section(records: Records, path: Path, metric: str = "acc_mlp") -> str:
    if not records.has_metric(metric):
        return f"<p>No run logged {esc(metric)}: nothing to rank.</p>"
    scores = score_configs(records, metric)
    datasets = records.datasets
    rows = []
    for s in scores:
        rows.append([f"{s.rank}{'=' if s.tie else ''}" if s.rank else "not ranked", esc(s.method),
                     f"{100 * s.score:.2f}" if s.score is not None else "—",
                     *[f"{100 * s.means[d]:.2f} ({s.seeds[d]})" if d in s.means else "missing" for d in datasets],
                     esc(_fmt_config(s.config)), esc(s.config_hash)])
    parts = [f"<p>{esc(eligibility_note(records, metric))}. Score = mean over datasets of the mean {esc(metric)} "
             f"over seeds (%); (n) = seed runs; '=' a tie; a config missing a dataset is never ranked.</p>",
             table_html(["rank", "method", "score", *datasets, "config", "hash"], rows)]
    data = schema.read_selection_file(path)
    mine = {m: data[m] for m in records.methods if m in data}
    if mine:
        import yaml

        parts.append(f"<p>Selection file {esc(path)} (entries of this sweep's methods):</p><pre>"
                     + esc(yaml.safe_dump(mine, sort_keys=False, allow_unicode=True)) + "</pre>")
    return "\n".join(parts)


def _trial_configs(records: Records, per_trial) -> dict[str, dict]:
    """trial id -> its searched values (the keys that vary between trials)."""
    keys = [k for k in records.searched() if CONFIG + k in per_trial.columns]
    return {t: config_of(row, keys) for t, row in per_trial.set_index("trial_id").iterrows()}


def _config_label(config: dict) -> str:
    from sweeps.schema import fmt_value

    return ", ".join(f"{k}={fmt_value(v)}" for k, v in config.items()) or "(defaults)"


def learning_curves(records: Records, folder: Path) -> Path | None:
    """val_acc_knn per epoch, per trial (mean over its runs), from the MLflow metric histories:
    one colour per config, labelled with its searched values (a single numeric parameter is
    coloured along a colour map in its own order, with a colour bar); line style by outcome
    (solid: completed, dashed: stopped early by ASHA, dotted: failed or unfinished)."""
    df = records.df
    if records.from_files or records.uri is None or df.empty or len(df) > MAX_CURVE_RUNS:
        return None
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=records.uri)
    history = [{"trial_id": t, "step": m.step, "val_acc_knn": m.value}
               for t, run_id in zip(df["trial_id"], df["run_id"]) for m in c.get_metric_history(run_id, "val_acc_knn")]
    if not history:
        return None
    curves = summarise(pd.DataFrame(history), ["trial_id", "step"], "val_acc_knn")
    per_trial = trials(df, ["trial_id"])
    outcome = dict(zip(per_trial["trial_id"], per_trial["outcome"]))
    configs = _trial_configs(records, per_trial)
    styles = {"completed": "-", "stopped_early": "--", "failed": ":", "unfinished": ":"}
    keys = sorted({k for cfg in configs.values() for k in cfg})
    numeric = len(keys) == 1 and all(isinstance(cfg.get(keys[0]), (int, float)) and not isinstance(cfg.get(keys[0]), bool)
                                     for cfg in configs.values() if keys[0] in cfg)
    order = sorted(configs, key=lambda t: (configs[t].get(keys[0], 0) if numeric else _config_label(configs[t])))
    fig, ax = plt.subplots(figsize=(7.6, 4.4), dpi=150)
    ax.set_facecolor("white")
    if numeric:
        values = [configs[t][keys[0]] for t in order if keys[0] in configs[t]]
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo >= 10
        norm = (matplotlib.colors.LogNorm if log else matplotlib.colors.Normalize)(vmin=lo, vmax=hi if hi > lo else lo + 1)
        cmap = matplotlib.colormaps["viridis"]
        color = {t: cmap(norm(configs[t][keys[0]])) for t in order if keys[0] in configs[t]}
    else:
        cmap = matplotlib.colormaps["tab10" if len(order) <= 10 else "tab20"]
        color = {t: cmap(i % cmap.N) for i, t in enumerate(order)}
    by_trial = {t: g.sort_values("step") for t, g in curves.groupby("trial_id", sort=False)}
    show_labels = len(order) <= 16
    names = [_config_label(configs[t]) for t in order]
    for t in order:
        if t not in by_trial:
            continue
        curve = by_trial[t]
        label = _config_label(configs[t])
        if names.count(label) > 1:  # configs equal to 3 digits: tell them apart by trial
            label += f" [{t}]"
        label += "" if outcome[t] == "completed" else f" ({outcome[t].replace('_', ' ')})"
        ax.plot(curve["step"].tolist(), [100 * v for v in curve["mean"]], color=color.get(t, "grey"),
                ls=styles[outcome[t]], marker=".", lw=1.6, label=label if show_labels else None)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation kNN accuracy (%), mean over runs")
    ax.set_title(f"{records.space}: learning curves per trial", fontsize=10)
    ax.grid(alpha=0.3)
    if numeric and not show_labels:  # many trials: a colour bar instead of a legend entry each
        sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        bar = fig.colorbar(sm, ax=ax, label=keys[0], pad=0.02)
        bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    if show_labels:
        ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(handles=[Line2D([], [], color="black", ls=ls, label=o.replace("_", " ")) for o, ls in styles.items()
                           if o in set(outcome.values())], frameon=False, fontsize=8)
    fig.tight_layout()
    path = folder / "curves.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def importance_section(records: Records, folder: Path) -> str:
    """analysis/importance.py's figures: parameter importances (fANOVA, PED-ANOVA), the
    optimisation history and the validation curves Optuna recorded."""
    from analysis.importance import completed, make_importance, ranking

    try:
        imp = make_importance(records, folder)
    except AnalysisError as e:
        return f"<p>No hyperparameter importance: {esc(e)}</p>"
    order = ranking(imp)
    rows = [[esc(p), *(f"{100 * imp.importances[n].get(p, math.nan):.1f}" for n in imp.importances)] for p in order]
    parts = [f"<p>From {esc(imp.source)}: {len(completed(imp.study))} completed trials. Importance (% of the "
             f"total) of each searched parameter for the mean MLP-probe test accuracy across datasets, by Optuna's "
             f"evaluators; most important first.</p>",
             table_html(["parameter", *imp.importances], rows)]
    parts += [f"<p>{esc(n)}: not computed ({esc(why)})</p>" for n, why in imp.notes.items()]
    captions = {"importance": "hyperparameter importance (fANOVA, PED-ANOVA)",
                "history": "optimisation history: each completed trial and the best so far",
                "intermediate": "validation kNN accuracy per epoch of every trial (Optuna's intermediate values)"}
    for f in imp.figures:
        if f.suffix == ".png":
            parts.append(img(f, captions.get(f.stem.split("_")[0], f.stem)))
    return "\n".join(parts)


def plots_section(records: Records, folder: Path) -> str:
    from analysis.ablation import make_ablation

    parts = []
    for param in records.searched():
        values = list(records.df[CONFIG + param]) if CONFIG + param in records.df.columns else []
        if param == "method" or not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        try:
            ab = make_ablation(records, param, "acc_mlp", folder / param)
        except AnalysisError as e:
            parts.append(f"<p>No ablation of {esc(param)}: {esc(e)}</p>")
            continue
        parts.append(img(ab.figures[0], f"acc_mlp against {param} (full-budget runs)"))
    curves = learning_curves(records, folder)
    if curves:
        parts.append(img(curves, "validation kNN accuracy per epoch, one line per trial, coloured and labelled "
                                 "by its config (dashed: stopped early by ASHA)"))
    return "\n".join(parts) or "<p>No plots.</p>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto}"""


def build_report(records: Records, selection: Path | None = None) -> str:
    description = SPACES[records.space].description if records.space in SPACES else ""
    sweeps = table_html(["sweep", "parent run", "status", "started"],
                        [[esc(s.name), esc(s.run_id), esc(s.status),
                          datetime.fromtimestamp(s.start_time / 1000).isoformat(timespec="seconds") if s.start_time else "—"]
                         for s in records.sweeps])
    searched = records.searched()
    seeds = sorted(set(records.df["seed"].dropna().tolist()))
    with tempfile.TemporaryDirectory() as tmp:
        plots = plots_section(records, Path(tmp))
        importance = importance_section(records, Path(tmp))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sweep report: {esc(records.space)}</title>
<style>{STYLE}</style></head><body>
<h1>Sweep report: {esc(records.space)}</h1>
<p>{esc(description)}</p>
<p>Source: {esc(records.source)}. Generated {datetime.now().isoformat(timespec="seconds")} by analysis/report.py.</p>
<h2>The space</h2>
<ul><li>methods: {esc(", ".join(records.methods))}</li><li>datasets: {esc(", ".join(records.datasets))}</li>
<li>seeds: {esc(", ".join(map(str, seeds)) or "—")}</li>
<li>searched: {esc("; ".join(f"{k}: {v}" for k, v in searched.items()) or "—")}</li></ul>
{sweeps}
<h2>Trials</h2>
{trials_section(records)}
<h2>Selection</h2>
{selection_section(records, selection or schema.selection_path())}
<h2>Plots</h2>
{plots}
<h2>Hyperparameter importance and search history</h2>
{importance}
</body></html>
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis/report.py", description=__doc__.split("\n\n")[0],
                                epilog="Examples: --space simvae_J | --space simvae_sigma2 --all-parents")
    p.add_argument("--space", required=True, help="the sweep's space")
    add_source_args(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records = load_from_args(args, args.space)
    text = build_report(records, results_dir(args.out) / "selection.yaml" if args.out else None)
    path = results_dir(args.out) / f"report_{args.space}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path} ({math.ceil(len(text) / 1024)} KiB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard("report.py", run, argv)


if __name__ == "__main__":
    sys.exit(main())
