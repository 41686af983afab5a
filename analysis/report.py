"""One self-contained HTML report of a sweep: ``python analysis/report.py --space NAME``.

Sections: the space (description, searched parameters, datasets, seeds, the sweep read with its
profile and budget, and the newer ones not read); the trials (run / completed / stopped early by
ASHA / failed, with each trial's config, outcome and errors); the selection ranking
(analysis/select.py's rule), whether the winner's lead decides it, and the method's entry in
the selection file when that entry comes from this sweep (an entry from another sweep is named,
not shown); the plots -- the ablation of every searched numeric parameter
(analysis/ablation.py) and the validation-kNN learning curves of every trial (mean over
datasets and seeds per epoch, coloured and labelled by config: where ASHA stopped trials); the
hyperparameter importances and the search history (analysis/importance.py: Optuna's fANOVA and
PED-ANOVA evaluators, its optimisation-history and intermediate-values plots). Accuracies in
percent. Images are embedded as base64 PNG, so the file stands alone. Writes
results/report_<sweep>.html (--out to change the folder).
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
                              load_from_args, main_guard, method_name, results_dir, summarise, trials)
from analysis.select import _fmt_config, eligibility_note, hyper_keys, lead_sentence, leads, score_configs
from sweeps import figures, schema
from sweeps.schema import point_words
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
    for method, lead in sorted(leads(scores).items()):
        parts.append(f"<p><b>{esc(method)}</b>: {esc(lead_sentence(lead))}</p>")
    data = schema.read_selection_file(path)
    names = {w.name for w in records.sweeps}
    ours = {m: data[m] for m in records.methods if m in data and names & set(data[m].get("sweeps") or [])}
    others = {m: data[m] for m in records.methods if m in data and m not in ours}
    if ours:
        import yaml

        parts.append("<p>The selection file's entries from this sweep (analysis/select.py):</p><pre>"
                     + esc(yaml.safe_dump(ours, sort_keys=False, allow_unicode=True)) + "</pre>")
    for m, entry in others.items():
        parts.append(f"<p>The selection file's entry for {esc(m)} comes from another sweep "
                     f"({esc(', '.join(entry.get('sweeps') or ['not recorded']))}; {esc(entry.get('profile', '?'))}, "
                     f"{esc(entry.get('budget', 'budget not recorded'))}): not shown beside this ranking.</p>")
    return "\n".join(parts)


def _trial_configs(records: Records, per_trial) -> dict[str, dict]:
    """trial id -> its searched values (the keys that vary between trials)."""
    keys = [k for k in records.searched() if CONFIG + k in per_trial.columns]
    return {t: config_of(row, keys) for t, row in per_trial.set_index("trial_id").iterrows()}


def learning_curves(records: Records, folder: Path) -> Path | None:
    """val_acc_knn per epoch, per trial (mean over its runs), from the MLflow metric histories,
    drawn as the sweep draws them on its parent run (``sweeps.figures.learning_curves``): labelled
    by the trial's searched values, solid when it completed, dashed when ASHA stopped it."""
    df = records.df
    if records.from_files or records.uri is None or df.empty or len(df) > MAX_CURVE_RUNS:
        return None
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=records.uri)
    history = [{"trial_id": t, "step": m.step, "val_acc_knn": m.value}
               for t, run_id in zip(df["trial_id"], df["run_id"]) for m in c.get_metric_history(run_id, "val_acc_knn")]
    if not history:
        return None
    curves = summarise(pd.DataFrame(history), ["trial_id", "step"], "val_acc_knn")
    per_trial = trials(df, ["trial_id"])
    configs = _trial_configs(records, per_trial)
    keys = sorted({k for cfg in configs.values() for k in cfg})
    numeric = len(keys) == 1 and all(isinstance(cfg.get(keys[0]), (int, float)) and not isinstance(cfg.get(keys[0]), bool)
                                     for cfg in configs.values())
    methods = ", ".join(method_name(m) for m in records.methods)
    drawn = figures.learning_curves(
        {t: list(zip(g["step"].astype(int), g["mean"])) for t, g in curves.groupby("trial_id", sort=False)},
        {t: point_words(cfg, keys) or t for t, cfg in configs.items()},
        dict(zip(per_trial["trial_id"], per_trial["outcome"])),
        f"{methods}: validation kNN accuracy per epoch", records.caption(), folder / "curves",
        {t: cfg[keys[0]] for t, cfg in configs.items()} if numeric else None)
    return drawn[0] if drawn else None


def importance_section(records: Records, folder: Path) -> str:
    """analysis/importance.py's figures: parameter importances (fANOVA, PED-ANOVA), the
    optimisation history and the validation curves Optuna recorded."""
    from analysis.importance import completed, make_importance, ranking

    try:
        imp = make_importance(records, folder)
    except AnalysisError as e:
        return f"<p>No hyperparameter importance: {esc(e)}</p>"
    parts = [f"<p>{len(completed(imp.study))} completed trials in the sweep's Optuna study.</p>"]
    if imp.importances:
        rows = [[esc(p), *(f"{100 * imp.importances[n].get(p, math.nan):.1f}" for n in imp.importances)]
                for p in ranking(imp)]
        parts += [f"<p>Importance (% of the total) of each searched parameter for the mean MLP-probe test accuracy "
                  f"across datasets, by Optuna's evaluators; most important first.</p>",
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
    sweeps = table_html(["sweep", "profile", "budget", "status", "started"],
                        [[esc(s.name), esc(s.profile), esc(s.budget), esc(s.status.lower()),
                          datetime.fromtimestamp(s.start_time / 1000).isoformat(timespec="seconds") if s.start_time else "—"]
                         for s in records.sweeps])
    if records.passed:
        sweeps += f"<p>Newer sweeps of this space not read (name one with --sweep): {esc('; '.join(records.passed))}.</p>"
    searched = records.searched()
    seeds = sorted(set(records.df["seed"].dropna().tolist()))
    with tempfile.TemporaryDirectory() as tmp:
        plots = plots_section(records, Path(tmp))
        importance = importance_section(records, Path(tmp))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sweep report: {esc(records.label)}</title>
<style>{STYLE}</style></head><body>
<h1>Sweep report: {esc(records.space)}</h1>
<p>{esc(description)}</p>
<p>{esc(records.caption())}. Generated {datetime.now().isoformat(timespec="seconds")} by analysis/report.py.</p>
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
                                epilog="Examples: --space simvae_J | --space simvae_J --profile laptop | "
                                       "--space simvae_J --sweep NAME")
    p.add_argument("--space", required=True, help="the sweep's space")
    add_source_args(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records = load_from_args(args, args.space)
    text = build_report(records, results_dir(args.out) / "selection.yaml" if args.out else None)
    path = results_dir(args.out) / f"report_{records.label}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path} ({math.ceil(len(text) / 1024)} KiB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard("report.py", run, argv)


if __name__ == "__main__":
    sys.exit(main())
