"""What a person sees of a sweep in the MLflow UI (checked in a browser against MLflow 3.17).

- the experiment carries a description, the "machine learning" experiment kind and a saved view
  of the runs table with the sweep's columns (``ui_link`` opens it; MLflow 3.17 picks the page
  it opens from the UI's own GenAI / Model training switch, which that link sets);
- children are named ``<dataset>-s<seed> <searched key>=<value>`` (``run_label``) and renamed
  with their outcome when it is known (``outcome_name``: the verdict's suffix, ``(ASHA-stopped)``,
  ``(interrupted)``, ``(failed)``); the parent is named after the sweep, described by
  ``sweep_note`` and, once it has ended, ``winner_line``.

Text and settings only; sweeps/ledger.py writes them (through sweeps/tracking.py).
"""
from __future__ import annotations

import json
import re
import time
from typing import Any

from sweeps.ranking import percents
from sweeps.schema import SELECTION_METRIC, VERDICTS, Tag, fmt_value, point_words

ML_KIND = "custom_model_development"  # MLflow 3's experiment kind "machine learning"
VIEW_KEY = "sweep-results"
VIEW_NAME = "Sweep results"
# The UI's own route parameters: the "Model training" side of its GenAI / Model training switch
# (MLflow 3.17 opens an experiment on GenAI traces otherwise) and the saved view.
UI_QUERY = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
_SUFFIX_RE = re.compile(r"\s+(?:" + "|".join(re.escape(v.suffix) for v in VERDICTS.values() if v.suffix) + r")$")


def run_label(dataset: str, seed: int, config: dict[str, Any], searched: list[str]) -> str:
    """A child's name: ``<dataset>-s<seed>`` and the trial's searched values, e.g. ``mnist-s0 J=8``
    (table1's method grid: ``mnist-s0 simvae``)."""
    return " ".join(filter(None, (f"{dataset}-s{seed}", point_words(config, searched))))


def outcome_name(name: str, outcome: str) -> str:
    """``name`` with the suffix of ``outcome`` (a verdict's name, 'running' or 'stopped': none),
    in place of any suffix it had."""
    base = _SUFFIX_RE.sub("", name)
    suffix = VERDICTS[outcome].suffix if outcome in VERDICTS else ""
    if not base:
        return name
    return f"{base} {suffix}" if suffix else base


def searched_keys(plan) -> list[str]:
    """The keys a trial's point sets (helpers that only steer a switch excluded)."""
    return [k for k in plan.params if k not in plan.helpers]


def _search_words(plan) -> str:
    parts = [f"`{k}` {plan.params[k].describe()}" for k in searched_keys(plan)]
    how = "grid" if plan.searcher == "grid" else f"Optuna TPE (seed {plan.search_seed})"
    return f"{how} over {', '.join(parts) or 'nothing'}: {plan.n_trials} trial{'s' if plan.n_trials != 1 else ''}"


def experiment_note(plan, experiment_id: str) -> str:
    """The experiment's description (Markdown on its page; the list shows the raw text, so it
    starts with plain words), ending with a link to the runs table in the sweep view."""
    return (f"{plan.description} (space {plan.space}).\n\n"
            f"One parent run per sweep, named after the sweep; it records the winner. One child run per "
            f"trial, dataset and seed, named `<dataset>-s<seed> <searched key>=<value>`. Selection: the "
            f"mean MLP-probe test accuracy across datasets (`{SELECTION_METRIC}`). Written by ssl-sweeps "
            f"(`sweeps/run.py --space {plan.space}`).\n\n"
            f"[Open the runs table (Model training, view \"{VIEW_NAME}\")](#/experiments/{experiment_id}/runs?{UI_QUERY})")


def sweep_note(plan, name: str) -> str:
    """The parent run's description: what the sweep is (the winner is added when it ends)."""
    asha = (f"ASHA on the mean validation kNN accuracy (grace period {plan.asha['grace_period']}, "
            f"reduction factor {plan.asha['reduction_factor']})" if plan.asha else "no early stopping")
    return (f"**Sweep {name}** of space `{plan.space}` (profile {plan.profile}): {plan.description}.\n\n"
            f"- search: {_search_words(plan)}, at most {plan.max_concurrent} at once; {asha}\n"
            f"- each trial trains {', '.join(plan.methods)} on {', '.join(plan.datasets)} x seed(s) "
            f"{', '.join(map(str, plan.seeds))} for {plan.epochs} epochs (one child run each)\n"
            f"- winner: the completed trial with the best mean MLP-probe test accuracy across datasets\n")


def winner_line(best: dict[str, Any] | None, plan, counts: dict[str, int], lead=None) -> str:
    """The Markdown paragraph the parent's description starts with once the sweep has ended (the
    UI shows the first lines of a description); ``lead`` (sweeps/ranking.py) says whether the
    winner's lead over the runner-up decides the ranking."""
    tally = (f"Trials: {counts.get('completed', 0)} completed, {counts.get('stopped_early', 0)} stopped early "
             f"by ASHA, {counts.get('failed', 0)} failed.")
    if best is None:
        return f"**No winner**: no trial completed its budget. {tally}\n\n"
    point = ", ".join(f"{k}={fmt_value(best[f'config/{k}'])}" for k in searched_keys(plan) if f"config/{k}" in best)
    per = ", ".join(f"{d} {100 * best[f'{d}/acc_mlp']:.1f}%" for d in plan.datasets
                    if isinstance(best.get(f"{d}/acc_mlp"), (int, float)))
    knn = best.get("acc_knn_mean")
    decided = "" if lead is None else f" {'Decided' if lead.decided else '**Not decided**'}: {lead.words()}."
    score = percents([best[SELECTION_METRIC]] + ([lead.runner.mean] if lead is not None else []))[0]
    return (f"**Winner**: trial `{best['trial_id']}` ({point}): {score} mean MLP-probe "
            f"test accuracy ({per})" + (f", kNN {100 * knn:.1f}%" if isinstance(knn, (int, float)) else "")
            + f".{decided} {tally}\n\n")


def saved_view(plan) -> dict[str, Any]:
    """The runs table as a sweep wants it: the outcome (completed / stopped_early / failed /
    interrupted: what MLflow's status icons do not tell apart), the profile and budget, the
    searched params and the headline metrics as columns. MLflow 3.17's saved-view envelope
    (``{name, createdAt, updatedAt, state}``, ``state`` a JSON string of the table's UI state);
    the UI lists it under Views."""
    cols = (["attributes.`Duration`", f"tags.`{Tag.OUTCOME}`", f"tags.`{Tag.PROFILE}`", f"tags.`{Tag.BUDGET}`"]
            + [f"params.`{k}`" for k in searched_keys(plan)]
            + [f"metrics.`{m}`" for m in ("acc_mlp", "acc_knn", "val_acc_knn", f"{Tag.BEST}{SELECTION_METRIC}")])
    # columnWidths apply to the columns listed in columnOrder (the run name: wide enough for
    # "fashionmnist-s2 temperature=0.123 (ASHA-stopped)"); the others keep the UI's order.
    state = {"selectedColumns": cols, "columnOrder": ["attributes.`Run Name`"],
             "columnWidths": {"attributes.`Run Name`": 360}}
    now = int(time.time() * 1000)
    return {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}


def describe_experiment(c, experiment_id: str, plan) -> None:
    """The experiment's description, its kind (machine learning, not GenAI) and the saved view."""
    c.set_experiment_tag(experiment_id, Tag.NOTE, experiment_note(plan, experiment_id))
    c.set_experiment_tag(experiment_id, Tag.EXPERIMENT_KIND, ML_KIND)
    c.set_experiment_tag(experiment_id, Tag.SPACE, plan.space)
    c.set_experiment_tag(experiment_id, Tag.METHODS, ",".join(plan.methods))
    c.set_experiment_tag(experiment_id, Tag.SAVED_VIEW + VIEW_KEY, json.dumps(saved_view(plan)))


def ui_link(uri: str, experiment_id: str, port: int = 5000) -> str:
    """Where a person opens the experiment's runs table (the saved view, Model training side)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    return f"{base}/#/experiments/{experiment_id}/runs?{UI_QUERY}"


def tool(name: str) -> str:
    """A command installed beside the running Python (the venv's ``mlflow``, ``optuna-dashboard``)
    as a person can type it from here: relative when under the current folder
    (``.venv/bin/mlflow``), else absolute; the bare name when there is none."""
    import os
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / name
    if not exe.exists():
        return name
    try:
        return os.path.relpath(exe) if not os.path.relpath(exe).startswith("..") else str(exe)
    except ValueError:  # another drive
        return str(exe)


def ui_command(uri: str, port: int = 5000) -> str | None:
    """The command that serves the UI on a SQLite store (None for a tracking server)."""
    if uri.startswith(("http://", "https://")):
        return None
    return f"{tool('mlflow')} ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}"


def dashboard_command(storage: str, port: int = 8080) -> str:
    """The command that serves Optuna's dashboard on a sweep's study storage."""
    return f"{tool('optuna-dashboard')} {storage} --host 127.0.0.1 --port {port}"
