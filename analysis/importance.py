"""Which hyperparameters mattered, and how the search went: ``python analysis/importance.py --space NAME``.

The sweep's Optuna study is the source: sweeps/run.py keeps every searched sweep's study in the
Optuna storage beside the MLflow store (``sqlite:///<home>/optuna.db``, the study named after the
sweep; the parent run's tags ``optuna_storage`` and ``optuna_study`` say where). Its COMPLETE
trials carry the selection metric (the mean MLP-probe test accuracy across datasets, what the
searcher learns), its PRUNED trials the validation curves ASHA stopped. A sweep without a study
(a grid, or one run before studies were kept) gets an in-memory study built from its MLflow
records by the same rule (one trial per config; its value the mean over datasets of the mean
acc_mlp over seeds; ASHA-stopped configs PRUNED), so every space can be read the same way.

Importances are computed by Optuna's own evaluators, when two or more parameters were searched
(one parameter has nothing to be weighed against; its figure is analysis/ablation.py's):
fANOVA (the share of the variance of the objective a random-forest surrogate attributes to each
parameter) and PED-ANOVA (how differently each parameter is distributed in the top trials than
in all). The optimisation history (each completed trial's value and the best so far, trials in
the order proposed) and the intermediate values (the per-epoch validation kNN accuracy of every
trial, dashed where ASHA stopped it) are drawn from the study in the house style
(sweeps/figures.py), as the sweep's own figures are. Writes
results/figures/{importance,history,intermediate}_<sweep>.{png,pdf} and
results/tables/importance_<sweep>.csv, and logs the figures under ``figures/`` of the sweep's
MLflow parent run (--no-mlflow to skip). ``optuna-dashboard <storage URL>`` browses the same
study: every sweep keeps one (a grid's is written by the driver, sweeps/search.py's GridStudy).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.records import (CONFIG, AnalysisError, Records, add_source_args, load_from_args,
                              main_guard, method_name, paper_scores, present, results_dir)
from sweeps.figures import house_style, integer_axis, learning_curves, new_figure, param_label, percent_axis, save
from sweeps.schema import Tag, first_line, point_words

SELECTION = "mean MLP-probe test accuracy across datasets (%)"
SELECTION_AXIS = "mean MLP-probe test accuracy\nacross datasets (%)"
EVALUATORS = ("fANOVA", "PED-ANOVA")


@dataclass
class Importance:
    study: Any  # optuna.Study
    source: str  # where the study came from
    importances: dict[str, dict[str, float]]  # evaluator -> {param: normalised importance}
    notes: dict[str, str] = field(default_factory=dict)  # evaluator -> why it has no values
    figures: list[Path] = field(default_factory=list)
    table: Path | None = None


# -- the study ------------------------------------------------------------------------------------


def completed(study) -> list:
    import optuna

    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def load_study(storage: str, name: str):
    """The study ``name`` in the Optuna storage ``storage``, read only: nothing is created or
    written there (a SQLite file is opened read only, and one that is not there is an error; no
    table is created in a database that lacks Optuna's). AnalysisError when it is not there."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage
    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///"):])
        if not path.is_file():
            raise AnalysisError(f"no Optuna storage at {path} (nothing is created there)")
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    try:
        rdb = optuna.storages.RDBStorage(url, skip_table_creation=True)
        known = [s.study_name for s in rdb.get_all_studies()]
    except Exception as e:  # noqa: BLE001 -- not a database, or not Optuna's
        raise AnalysisError(f"{storage} is not an Optuna storage this can read: {first_line(e)}") from None
    if name not in known:
        raise AnalysisError(f"no Optuna study {name!r} in {storage}; studies: {', '.join(known) or 'none'}")
    return optuna.load_study(study_name=name, storage=rdb)


def _distribution(values: list[Any]):
    """An Optuna distribution covering the observed values of one parameter (None: constant)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distinct = sorted({repr(v): v for v in values}.values(), key=repr)
    if len(distinct) < 2:
        return None
    numbers = [v for v in distinct if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(distinct):
        lo, hi = min(numbers), max(numbers)
        log = lo > 0 and hi / lo >= 50
        if all(isinstance(v, int) for v in numbers):
            return IntDistribution(int(lo), int(hi), log=log)
        return FloatDistribution(float(lo), float(hi), log=log)
    return CategoricalDistribution(distinct)


def study_from_records(records: Records, metric: str = "acc_mlp"):
    """An in-memory study of the sweep's configs (see the module docstring): one trial per trial
    id, in start order, its params the searched config keys that vary."""
    import optuna
    from optuna.trial import TrialState, create_trial

    df = records.df
    searched = [k for k in records.searched() if CONFIG + k in df.columns]
    if not searched:
        raise AnalysisError(f"{records.source}: no searched parameters recorded")
    _, scored = paper_scores(records.eligible(metric), ["trial_id"], metric, records.datasets)
    score = dict(zip(scored["trial_id"], scored["mean"]))
    trials = []
    for trial_id, runs in df.sort_values("start_time", kind="stable").groupby("trial_id", sort=False):
        first = runs.iloc[0]
        params = {k: first[CONFIG + k] for k in searched if present(first[CONFIG + k])}
        if (runs["status"] == "FAILED").any():
            state, value = TrialState.FAIL, None
        elif trial_id in score:
            state, value = TrialState.COMPLETE, float(score[trial_id])
        elif runs["stopped_early"].any():
            state, value = TrialState.PRUNED, None
        else:
            continue  # unfinished
        trials.append((str(trial_id), params, state, value))
    dists = {k: _distribution([p[k] for _, p, _, _ in trials if k in p]) for k in searched}
    dists = {k: d for k, d in dists.items() if d is not None}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", study_name=f"{records.space} (from MLflow records)")
    for trial_id, params, state, value in trials:
        kept = {k: v for k, v in params.items() if k in dists}
        study.add_trial(create_trial(state=state, value=value, params=kept,
                                     distributions={k: dists[k] for k in kept}, user_attrs={"trial_id": trial_id}))
    return study


def study_of_sweep(records: Records, storage: str | None = None, name: str | None = None) -> tuple[Any, str]:
    """(study, where it came from): --storage/--study (only the study of the sweep analysed: the
    latest of ``records``' sweeps), else the parent run's tags, else built from the records."""
    sweep = max(records.sweeps, key=lambda s: s.start_time, default=None)
    if storage or name:
        if not (storage and name):
            raise AnalysisError("--optuna-storage and --study go together")
        study = load_study(storage, name)
        owner = study.user_attrs.get("mlflow_parent_run_id")
        if sweep is None or owner != sweep.run_id:
            whose = f"sweep {study.user_attrs.get('sweep')} (parent run {owner})" if owner else "no sweep of this tool"
            raise AnalysisError(f"--study {name} is the study of {whose}, not of the sweep analysed here "
                                f"({sweep.name if sweep else 'none'}); pick that sweep with --sweep")
        return study, f"Optuna study {name} in {storage}"
    if records.uri and not records.from_files and sweep is not None:
        from mlflow.tracking import MlflowClient

        tags = MlflowClient(tracking_uri=records.uri).get_run(sweep.run_id).data.tags
        if tags.get(Tag.OPTUNA_STORAGE) and tags.get(Tag.OPTUNA_STUDY):
            return (load_study(tags[Tag.OPTUNA_STORAGE], tags[Tag.OPTUNA_STUDY]),
                    f"Optuna study {tags[Tag.OPTUNA_STUDY]} in {tags[Tag.OPTUNA_STORAGE]}")
    return study_from_records(records), f"a study built from {records.source}"


# -- importances ------------------------------------------------------------------------------------


def evaluator(name: str, n_complete: int, seed: int = 0):
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if name == "fANOVA":
        return FanovaImportanceEvaluator(seed=seed)
    # PED-ANOVA compares the top trials with all of them: at least two top trials.
    return PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 2.0 / max(n_complete, 1))))


def compute_importances(study, seed: int = 0) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """{evaluator: {param: importance (normalised to sum 1)}} by Optuna's evaluators, and the
    reason for any evaluator that could not run."""
    import optuna

    n = len(completed(study))
    if n < 2:
        raise AnalysisError(f"parameter importance needs at least 2 completed trials; the study has {n}")
    out, notes = {}, {}
    for name in EVALUATORS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning
                imp = optuna.importance.get_param_importances(study, evaluator=evaluator(name, n, seed))
        except (RuntimeError, ValueError, ZeroDivisionError) as e:
            notes[name] = first_line(e)
            continue
        if not imp or not all(math.isfinite(v) for v in imp.values()):
            notes[name] = "no finite importances (too few distinct trials)"
            continue
        out[name] = {k: float(v) for k, v in sorted(imp.items(), key=lambda kv: -kv[1])}
    if not out:
        raise AnalysisError("no importance evaluator could run: " + "; ".join(f"{k}: {v}" for k, v in notes.items()))
    return out, notes


def ranking(imp: Importance) -> list[str]:
    """Parameters by importance: fANOVA's order (PED-ANOVA's when fANOVA could not run)."""
    first = imp.importances.get("fANOVA") or next(iter(imp.importances.values()))
    return list(first)


# -- figures ---------------------------------------------------------------------------------------


def plot_importances(imp: dict[str, dict[str, float]], title: str, subtitle: str, stem: Path) -> list[Path]:
    """One panel per evaluator: horizontal bars, the most important parameter on top."""
    params = list(next(iter(imp.values())))
    with house_style() as plt:
        fig, axes = new_figure(plt, title, subtitle, size=(3.6 * len(imp) + 1.4, 0.5 * len(params) + 2.0),
                               ncols=len(imp))
        axes = axes if isinstance(axes, list) else [axes]
        for i, (ax, (name, values)) in enumerate(zip(axes, imp.items())):
            ys = list(reversed(params))
            xs = [100 * values.get(p, 0.0) for p in ys]
            ax.barh([param_label(p) for p in ys], xs, color="tab:blue" if name == "fANOVA" else "tab:orange")
            for y, x in enumerate(xs):
                ax.text(x + 1, y, f"{x:.0f}%", va="center", fontsize=9)
            ax.set_xlim(0, 115)
            ax.set_xlabel(f"{name}: importance (% of the total)")
            ax.grid(axis="y", visible=False)
            if i:
                ax.set_title("")
        return save(fig, stem)


def _trial_label(trial, keys: list[str]) -> str:
    return point_words(trial.params, keys) or f"trial {trial.number}"


def plot_history(study, title: str, subtitle: str, stem: Path) -> list[Path]:
    """The optimisation history from the study: each completed trial's value (the selection
    metric, in percent) in the order the trials were created, and the best so far."""
    import optuna

    done = sorted(completed(study), key=lambda t: t.number)
    with house_style() as plt:
        fig, ax = new_figure(plt, title, subtitle)
        xs, ys = [t.number for t in done], [100 * t.value for t in done]
        ax.plot(xs, ys, "o", color="tab:blue", label="completed trial")
        best = [max(ys[:i + 1]) for i in range(len(ys))]
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
        pruned = [t.number for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.PRUNED]
        if pruned:
            ax.plot(pruned, [min(ys)] * len(pruned), "x", color="0.5", label="stopped early by ASHA (no value)")
        ax.set_xlabel("trial (in the order the searcher proposed them)")
        ax.set_ylabel(SELECTION_AXIS)
        integer_axis(ax)
        percent_axis(ax, ys)
        ax.legend()
        return save(fig, stem)


def plot_intermediate(study, title: str, subtitle: str, stem: Path) -> list[Path]:
    """Each trial's validation kNN accuracy per epoch as the study holds it, drawn as the sweep
    draws its learning curves (``sweeps.figures.learning_curves``: dashed where ASHA stopped a
    trial); [] when the study has none (a study built from records)."""
    import optuna

    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    keys = sorted({k for t in trials for k in t.params})
    outcome = {optuna.trial.TrialState.COMPLETE: "completed", optuna.trial.TrialState.PRUNED: "stopped_early",
               optuna.trial.TrialState.FAIL: "failed"}
    numeric = len(keys) == 1 and all(isinstance(t.params.get(keys[0]), (int, float)) for t in trials)
    return learning_curves({t.number: sorted(t.intermediate_values.items()) for t in trials},
                           {t.number: _trial_label(t, keys) for t in trials},
                           {t.number: outcome.get(t.state, "unfinished") for t in trials}, title, subtitle, stem,
                           {t.number: t.params[keys[0]] for t in trials} if numeric else None, ("png", "pdf"))


def write_table(imp: dict[str, dict[str, float]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = list(next(iter(imp.values())))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["param", *imp])
        for p in params:
            w.writerow([p, *(f"{v.get(p, math.nan):.6g}" for v in imp.values())])
    return path


def searched_params(study) -> list[str]:
    return sorted({k for t in completed(study) for k in t.params})


def make_importance(records: Records, out: Path | None = None, storage: str | None = None,
                    study_name: str | None = None, seed: int = 0, study=None) -> Importance:
    """The importances and the figures of one sweep (``records``' sweep). Importances only when
    two or more parameters were searched (one parameter has nothing to be weighed against: its
    figure is the ablation); the history and the validation curves always."""
    source = "the given study"
    if study is None:
        study, source = study_of_sweep(records, storage, study_name)
    params = searched_params(study)
    result = Importance(study, source, {})
    if len(params) >= 2:
        result.importances, result.notes = compute_importances(study, seed)
    else:
        result.notes["importance"] = (f"one parameter searched ({', '.join(params) or 'none'}): nothing to weigh "
                                      f"it against; its effect is the ablation (analysis/ablation.py)")
    folder, label = results_dir(out), records.label
    methods = ", ".join(method_name(m) for m in records.methods)
    caption = records.caption()
    n = len(completed(study))
    if result.importances:
        result.figures += plot_importances(
            result.importances, f"{methods}: which hyperparameters mattered for Acc-MP across datasets",
            f"{caption}; {n} completed trials", folder / "figures" / f"importance_{label}")
    if n:
        result.figures += plot_history(study, f"{methods}: the search, trial by trial", caption,
                                       folder / "figures" / f"history_{label}")
    result.figures += plot_intermediate(study, f"{methods}: validation kNN accuracy per epoch, per trial", caption,
                                        folder / "figures" / f"intermediate_{label}")
    if result.importances:
        result.table = write_table(result.importances, folder / "tables" / f"importance_{label}.csv")
    return result


# -- CLI ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis/importance.py", description=__doc__.split("\n\n")[0],
                                epilog="Examples: --space simvae_sigma2 | --space moco_temperature --sweep NAME | "
                                       "--space simvae_sigma2 --optuna-storage sqlite:///runs/optuna.db --study NAME")
    p.add_argument("--space", required=True, help="the sweep's space")
    p.add_argument("--study", help="the Optuna study (default: the sweep's, from its parent run)")
    p.add_argument("--optuna-storage", dest="optuna_storage",
                   help="the Optuna storage URL of --study (default: the parent run's optuna_storage tag)")
    p.add_argument("--seed", type=int, default=0, help="seed of fANOVA's random forest (default 0)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the figures to the parent run")
    add_source_args(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records = load_from_args(args, args.space)
    from sweeps.schema import fmt_value

    imp = make_importance(records, args.out, args.optuna_storage, args.study, args.seed)
    print(f"{records.space}: parameter importance for the {SELECTION.replace(' (%)', '')} from {imp.source} "
          f"({len(completed(imp.study))} completed trials of {len(imp.study.trials)})")
    names = list(imp.importances)
    if names:
        print(f"  {'param':<20}" + "".join(f"{n:>12}" for n in names))
        for p in ranking(imp):
            print(f"  {p:<20}" + "".join(f"{100 * imp.importances[n].get(p, math.nan):>11.1f}%" for n in names))
    for name, why in imp.notes.items():
        print(f"  {name}: not computed ({why})")
    if completed(imp.study):
        best = imp.study.best_trial
        print(f"  best trial: {100 * best.value:.2f}% at "
              + ", ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items()))
    print("wrote " + ", ".join(str(f) for f in [*imp.figures, *([imp.table] if imp.table else [])]))
    if not args.no_mlflow:
        from analysis.ablation import log_figures

        log_figures(records, imp.figures)
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard("importance.py", run, argv)


if __name__ == "__main__":
    sys.exit(main())
