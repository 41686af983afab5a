"""The searcher: Optuna TPE inside Ray Tune, learning the paper's selection rule.

``SelectionSearch`` is Optuna TPE that learns the paper's rule: a trial that trained its full
budget is told to Optuna as COMPLETE with ``acc_mlp_mean`` (the mean MLP-probe accuracy across
datasets); a trial ASHA stopped is told as PRUNED, with its validation curve as intermediate
values -- TPE ranks pruned trials below every complete one (deepest rung first, then by their last
validation value), i.e. exactly ASHA's verdict, and never mixes a truncated kNN value with a final
MLP accuracy on one scale. It overrides ``OptunaSearch`` internals (``_ot_trials``,
``_ot_study``, ``_completed_trials``), so pyproject.toml pins ray[tune] to the 2.60 series.

The distributions it draws from are plain data in sweeps/distributions.py; this module is the
Ray edge of a search (it imports Ray Tune), used by sweeps/run.py only.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.optuna.optuna_search import OptunaTrialState

from sweeps.distributions import Grid, Same
from sweeps.lock import first_use
from sweeps.schema import ASHA_METRIC, SELECTION_METRIC, first_line, plain


class DefineByRun:
    """The plan's searched parameters as an Optuna define-by-run function (picklable, so the
    searcher's state survives a restore). ``Same`` copies another key's value; ``Switch`` draws
    its case's distribution under the key's own name (Optuna allows a parameter to be absent or
    differently distributed from one trial to the next)."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    def __call__(self, trial) -> dict[str, Any] | None:
        drawn: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for name, dist in self.params.items():
            in_force = dist.resolve(drawn)
            drawn[name] = in_force.suggest(trial, name, drawn)
            if isinstance(in_force, Same):
                constants[name] = drawn[name]
        return constants  # Tune merges these with the suggested values


class SelectionSearch(OptunaSearch):
    """OptunaSearch whose study learns ``acc_mlp_mean`` from trials that trained their full
    budget and sees ASHA-stopped trials as PRUNED (see the module docstring). Tune's metric
    (in every report, and ASHA's) stays ``val_acc_knn_mean``.

    The study is written at once, Tune's snapshot of this searcher every >= 10 s: after a hard
    kill of the driver the study can be ahead (sweeps/reconcile.py). So a trial is told once --
    an Optuna trial already finished is not told again, or given intermediate values; when a
    retried trial ends otherwise than it was told (failed, then completed), the new outcome is
    added as a trial of its own -- and a restored searcher fails the study's running trials Tune
    forgot (``reconcile``)."""

    LOST = "lost"  # user attribute of an Optuna trial Tune forgot in a hard kill

    def _running(self, trial_id: str) -> bool:
        """Tune's trial has an Optuna trial still RUNNING in the study."""
        ot_trial = self._ot_trials.get(trial_id)
        return ot_trial is not None and \
            self._ot_study._storage.get_trial(ot_trial._trial_id).state == OptunaTrialState.RUNNING

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or not self._running(trial_id):
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        seen = self.__dict__.setdefault("_reported_steps", {}).setdefault(trial_id, set())
        if step not in seen:  # a restored trial reports some epochs twice
            self._ot_trials[trial_id].report(plain(result[self.metric]), step)
            seen.add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and isinstance(result.get(self.metric), (int, float)):
            # Tune hands the result that stops a trial (ASHA's rung, or the last epoch reported with
            # the final evaluation) to on_trial_complete only: it is the curve's last epoch.
            self.on_trial_result(trial_id, result)
        value = (result or {}).get(SELECTION_METRIC)
        if error:
            self._tell(trial_id, OptunaTrialState.FAIL)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            self._tell(trial_id, OptunaTrialState.COMPLETE, plain(value))
        else:
            self._tell(trial_id, OptunaTrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def _tell(self, trial_id: str, state, value: float | None = None) -> None:
        import optuna

        ot_trial = self._ot_trials[trial_id]
        told = self._ot_study._storage.get_trial(ot_trial._trial_id)
        if told.state == OptunaTrialState.RUNNING:
            self._ot_study.tell(ot_trial, value, state=state)
        elif told.state != state:  # told before, otherwise: the new outcome as a trial of its own
            self._ot_study.add_trial(optuna.trial.create_trial(
                state=state, value=value, params=told.params, distributions=told.distributions,
                intermediate_values=told.intermediate_values,
                user_attrs={**told.user_attrs, "ray_trial_id": trial_id, "retry_of": told.number}))

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.reconcile()

    def reconcile(self) -> list[int]:
        """Fail the study's RUNNING trials that Tune's restored state does not know: started
        after its last snapshot and forgotten in a hard kill (their configs run again under new
        trials), they would stay RUNNING for ever. Returns their numbers."""
        known = {t._trial_id for t in self._ot_trials.values()}
        storage, lost = self._ot_study._storage, []
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(OptunaTrialState.RUNNING,)):
            if frozen._trial_id not in known:
                storage.set_trial_user_attr(frozen._trial_id, self.LOST, "forgotten by Tune in a hard kill")
                storage.set_trial_state_values(frozen._trial_id, OptunaTrialState.FAIL)
                lost.append(frozen.number)
        return lost


def selection_search(plan, metric: str = ASHA_METRIC, mode: str = "max", storage: str | None = None,
                     study_name: str | None = None, user_attrs: dict[str, Any] | None = None,
                     existing: bool = False):
    """SelectionSearch over the plan's define-by-run space; TPE seeded through its sampler
    (OptunaSearch's own seed is ignored when a sampler is given). With ``storage`` (an Optuna
    storage URL, e.g. ``optuna_storage_url``) the study is kept there under ``study_name`` --
    the sweep's own, unique (``SweepLedger.create``): a new sweep never continues another's
    study, and a study of that name already there is an error -- for ``optuna-dashboard`` and
    analysis/importance.py; ``user_attrs`` (space, sweep, MLflow parent run, ...) are recorded on
    it. A resumed sweep's searcher is restored from Tune's snapshot and reconnects to the same
    study. ``existing``: the sweep's own study is there already (a sweep resumed when Tune had
    saved no state of it: its searcher starts afresh on it, failing the trials left RUNNING)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no per-study INFO lines on the console
    startup = min(10, max(2, plan.num_samples // 3))  # random draws before TPE models the rest
    sampler = optuna.samplers.TPESampler(seed=plan.search_seed, n_startup_trials=startup)
    rdb = open_storage(storage) if storage else None
    if rdb is not None and not existing and study_name in {s.study_name for s in rdb.get_all_studies()}:
        raise RuntimeError(f"an Optuna study named {study_name} is already in {storage}: a new sweep never "
                           f"continues another sweep's study")
    searcher = SelectionSearch(space=DefineByRun(plan.params), metric=metric, mode=mode, sampler=sampler,
                               storage=rdb, study_name=study_name)
    if rdb is not None:
        for k, v in {"selection_metric": SELECTION_METRIC, "pruned_by": f"ASHA on {ASHA_METRIC}",
                     **(user_attrs or {})}.items():
            searcher._ot_study.set_user_attr(k, v)
        if existing:
            searcher.reconcile()
    return searcher


def open_storage(url: str):
    """Optuna's storage at ``url``, its tables created on first use (by one process at a time:
    two sweeps starting on a new store both get it)."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return first_use(url, lambda: optuna.storages.RDBStorage(url))


class GridStudy(Callback):
    """A grid sweep's Optuna study, written by the driver as Tune reports (a grid has no searcher
    of its own): one Optuna trial per Tune trial with the grid point as its parameters, the
    per-epoch ``val_acc_knn_mean`` as intermediate values, and the verdict -- COMPLETE with
    ``acc_mlp_mean``, PRUNED when ASHA stopped it (``--early-stopping``), FAIL. So every sweep
    keeps a study beside the MLflow store, named after the sweep, that ``optuna-dashboard`` and
    analysis/importance.py read alike. Only plain data is kept between calls (Tune pickles its
    callbacks with the experiment, and a resumed sweep continues the same study: each Optuna
    trial carries its Tune trial id)."""

    def __init__(self, storage: str, study_name: str, grid: dict[str, Any], user_attrs: dict[str, Any]):
        self.storage, self.study_name, self.grid, self.user_attrs = storage, study_name, grid, user_attrs
        self._study = None
        self._numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number

    def __getstate__(self):
        return {**self.__dict__, "_study": None, "_numbers": {}}

    def study(self):
        import optuna

        if self._study is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._study = optuna.create_study(storage=open_storage(self.storage), study_name=self.study_name,
                                              direction="maximize", load_if_exists=True)
            for k, v in {"selection_metric": SELECTION_METRIC, "searcher": "grid", **self.user_attrs}.items():
                self._study.set_user_attr(k, v)
            self._numbers = {t.user_attrs["tune_trial_id"]: t.number for t in self._study.get_trials(deepcopy=False)
                             if "tune_trial_id" in t.user_attrs}
        return self._study

    def _number(self, trial) -> int:
        """The Optuna trial of a Tune trial, asked for with the grid point the first time."""
        from optuna.distributions import CategoricalDistribution

        study = self.study()
        if trial.trial_id not in self._numbers:
            point = {k: trial.config[k] for k in self.grid if k in trial.config}
            study.enqueue_trial(point, user_attrs={"tune_trial_id": trial.trial_id})  # ask() takes it, point and all
            ot = study.ask({k: CategoricalDistribution(tuple(self.grid[k])) for k in point})
            self._numbers[trial.trial_id] = ot.number
        return self._numbers[trial.trial_id]

    def _frozen(self, number: int):
        return self.study().get_trials(deepcopy=False)[number]  # a study's trials, by number

    def _report(self, trial, result: dict) -> int:
        """The result's validation accuracy at its epoch (once per epoch: a restored trial
        reports some twice); returns the Optuna trial's number."""
        import optuna

        number = self._number(trial)
        step, value = int(result.get("epoch", 0)), result.get(ASHA_METRIC)
        frozen = self._frozen(number)
        if (isinstance(value, (int, float)) and math.isfinite(value) and step not in frozen.intermediate_values
                and not frozen.state.is_finished()):
            optuna.Trial(self.study(), frozen._trial_id).report(plain(value), step)
        return number

    def on_trial_start(self, iteration, trials, trial, **info):
        self._safely(self._number, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._safely(self._report, trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._safely(self._end, trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._safely(self._end, trial, error=True)

    def _end(self, trial, error: bool) -> None:
        import optuna

        State = optuna.trial.TrialState
        last = trial.last_result or {}
        number = self._report(trial, last)
        value = last.get(SELECTION_METRIC)
        if error:
            self._tell(number, None, State.FAIL)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            self._tell(number, plain(value), State.COMPLETE)
        else:
            self._tell(number, None, State.PRUNED)

    def _safely(self, fn, *args, **kwargs) -> None:
        """The study is a view of the sweep for Optuna's tools: a failure to write it is said once
        and never stops the sweep (MLflow and the files hold the records)."""
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            if not getattr(self, "_warned", False):
                print(f"sweeps: the Optuna study {self.study_name} is not updated: {first_line(e)}",
                      file=sys.stderr, flush=True)
                self._warned = True

    def _tell(self, number: int, value, state) -> None:
        if not self._frozen(number).state.is_finished():
            self.study().tell(number, value, state=state)


OPTUNA_STORAGE_ENV = "SSL_SWEEPS_OPTUNA_STORAGE"  # a cluster's shared study database (docs/cluster.md)


def optuna_storage_url(tracking_uri: str, home, explicit: str | None = None) -> str:
    """Where a searched sweep keeps its Optuna study (one study per sweep, named after it):
    ``explicit`` (``--optuna-storage``), else ``$SSL_SWEEPS_OPTUNA_STORAGE`` (a cluster's
    PostgreSQL, set on its head), else ``optuna.db`` beside a SQLite MLflow store, else (a
    tracking server) ``<home>/optuna.db``. Creates nothing."""
    chosen = explicit or os.environ.get(OPTUNA_STORAGE_ENV)
    if chosen:
        return chosen
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri[len("sqlite:///"):]).parent
    else:
        folder = Path(home)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def param_space(plan, order: list | None = None) -> dict[str, Any]:
    """Tune's param_space: the grids (a searched space belongs to the searcher, define-by-run).
    ``order``: the values of a single grid in the order to launch them (Tune starts a grid's
    trials in list order)."""
    grids = {k: d for k, d in plan.params.items() if isinstance(d, Grid)}
    if order is not None and len(grids) == 1:
        (name,) = grids
        assert sorted(map(repr, order)) == sorted(map(repr, grids[name].values)), "order must permute the grid"
        return {name: tune.grid_search(list(order))}
    return {k: tune.grid_search(list(d.values)) for k, d in grids.items()}
