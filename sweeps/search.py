"""Search-space types and the searcher, in one place.

Each distribution is plain data that knows how to become an Optuna suggestion (``suggest``, for
the define-by-run space the searcher samples), a Tune grid (``Grid.to_tune``), the points the
sweep validates before it starts (``first`` / ``corners``), a line of ``--show`` (``describe``)
and a record in ``sweep.json`` (``to_dict`` / ``from_dict``).

``SelectionSearch`` is Optuna TPE that learns the paper's rule: a trial that trained its full
budget is told to Optuna as COMPLETE with ``acc_mlp_mean`` (the mean MLP-probe accuracy across
datasets); a trial ASHA stopped is told as PRUNED, with its validation curve as intermediate
values -- TPE ranks pruned trials below every complete one (deepest rung first, then by their last
validation value), i.e. exactly ASHA's verdict, and never mixes a truncated kNN value with a final
MLP accuracy on one scale. It overrides ``OptunaSearch`` internals (``_ot_trials``,
``_ot_study``, ``_completed_trials``), so pyproject.toml pins ray[tune] to the 2.60 series.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.optuna.optuna_search import OptunaTrialState

SEARCH_METRIC = "val_acc_knn_mean"  # ASHA's metric; in every report
SELECT_METRIC = "acc_mlp_mean"  # the paper's selection rule; in the final report


class _Dist:
    """What every distribution answers (the defaults suit the plain ones)."""

    def resolve(self, drawn: dict[str, Any]) -> "_Dist":
        """The distribution in force given the values drawn so far (a Switch picks its case)."""
        return self

    def first(self, drawn: dict[str, Any]) -> Any:
        """A value to validate the space with (its first corner)."""
        return self.corners()[0]

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class LogUniform(_Dist):
    """Continuous, uniform in log space on [low, high]."""

    low: float
    high: float

    def corners(self) -> list:
        return [self.low, self.high]

    def check(self) -> str | None:
        if not (0 < self.low < self.high and math.isfinite(self.high)):
            return f"log-uniform bounds must satisfy 0 < low < high (got {self.low}, {self.high})"
        return None

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_float(name, self.low, self.high, log=True)


@dataclass(frozen=True)
class Uniform(_Dist):
    """Continuous, uniform on [low, high]."""

    low: float
    high: float

    def corners(self) -> list:
        return [self.low, self.high]

    def check(self) -> str | None:
        if not (self.low < self.high and math.isfinite(self.low) and math.isfinite(self.high)):
            return f"uniform bounds must satisfy low < high (got {self.low}, {self.high})"
        return None

    def describe(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class IntUniform(_Dist):
    """Integer in [low, high] (inclusive), optionally log-spaced."""

    low: int
    high: int
    log: bool = False

    def corners(self) -> list:
        return [self.low, self.high]

    def check(self) -> str | None:
        if not self.low < self.high or (self.log and self.low < 1):
            return f"integer bounds must satisfy {'1 <= ' if self.log else ''}low < high (got {self.low}, {self.high})"
        return None

    def describe(self) -> str:
        return f"integer{' log' if self.log else ''} [{self.low}, {self.high}]"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_int(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Categorical(_Dist):
    """One of ``choices``."""

    choices: tuple

    def corners(self) -> list:
        return list(self.choices)

    def check(self) -> str | None:
        return None if len(self.choices) >= 1 else "categorical needs at least one choice"

    def describe(self) -> str:
        return f"one of {list(self.choices)}"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class Same(_Dist):
    """Tied: takes the value sampled for ``key`` (e.g. VICReg's mu = lambda)."""

    key: str

    def corners(self) -> list:
        return []

    def first(self, drawn: dict[str, Any]) -> Any:
        return drawn[self.key]

    def check(self) -> str | None:
        return None

    def describe(self) -> str:
        return f"same as {self.key}"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return drawn[self.key]


@dataclass(frozen=True)
class Switch(_Dist):
    """Conditional: the distribution of this key depends on the value drawn for ``on``
    (``cases`` maps that value to a distribution). Drawn by define-by-run after ``on``."""

    on: str
    cases: tuple[tuple[Any, Any], ...]  # ((value of `on`, distribution), ...)

    def resolve(self, drawn: dict[str, Any]) -> _Dist:
        return dict(self.cases).get(drawn.get(self.on), self.cases[0][1]).resolve(drawn)

    def first(self, drawn: dict[str, Any]) -> Any:
        return self.resolve(drawn).first(drawn)

    def corners(self) -> list:
        return [c for _, d in self.cases for c in d.corners()]

    def check(self) -> str | None:
        return None if self.cases else "a switch needs at least one case"

    def describe(self) -> str:
        return "; ".join(f"if {self.on}={v!r}: {d.describe()}" for v, d in self.cases)

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return self.resolve(drawn).suggest(trial, name, drawn)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Switch", "on": self.on, "cases": [[v, d.to_dict()] for v, d in self.cases]}


@dataclass(frozen=True)
class Grid(_Dist):
    """Every value, each its own trial (Tune's grid search)."""

    values: tuple

    def corners(self) -> list:
        return list(self.values)

    def check(self) -> str | None:
        return None if len(self.values) >= 1 else "a grid needs at least one value"

    def describe(self) -> str:
        return f"grid {list(self.values)}"

    def to_tune(self):
        from ray import tune

        return tune.grid_search(list(self.values))


Dist = LogUniform | Uniform | IntUniform | Categorical | Same | Switch | Grid
_TYPES = {cls.__name__: cls for cls in (LogUniform, Uniform, IntUniform, Categorical, Same, Switch, Grid)}


def dist_from_dict(d: dict[str, Any]) -> Dist:
    """The inverse of ``to_dict`` (sweep.json stores the expanded plan)."""
    d = dict(d)
    cls = _TYPES[d.pop("type")]
    if cls is Switch:
        return Switch(d["on"], tuple((v, dist_from_dict(c)) for v, c in d["cases"]))
    for key in ("choices", "values"):
        if key in d:
            d[key] = tuple(d[key])
    return cls(**d)


# -- the searcher -------------------------------------------------------------------------------


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
    (in every report, and ASHA's) stays ``val_acc_knn_mean``."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        seen = self.__dict__.setdefault("_reported_steps", {}).setdefault(trial_id, set())
        if step not in seen:  # a restored trial reports some epochs twice
            self._ot_trials[trial_id].report(float(result[self.metric]), step)
            seen.add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        value = (result or {}).get(SELECT_METRIC)
        if error:
            self._ot_study.tell(ot_trial, None, state=OptunaTrialState.FAIL)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            self._ot_study.tell(ot_trial, float(value), state=OptunaTrialState.COMPLETE)
        else:
            self._ot_study.tell(ot_trial, None, state=OptunaTrialState.PRUNED)
        self._completed_trials.add(trial_id)


def selection_search(plan, metric: str = SEARCH_METRIC, mode: str = "max", storage: str | None = None,
                     study_name: str | None = None, user_attrs: dict[str, Any] | None = None):
    """SelectionSearch over the plan's define-by-run space; TPE seeded through its sampler
    (OptunaSearch's own seed is ignored when a sampler is given). With ``storage`` (an Optuna
    storage URL, e.g. ``optuna_storage_url``) the study is kept there under ``study_name`` --
    the sweep's name -- for ``optuna-dashboard`` and analysis/importance.py; ``user_attrs``
    (space, MLflow parent run, ...) are recorded on it. A resumed sweep's searcher is restored
    from Tune's snapshot and reconnects to the same study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no per-study INFO lines on the console
    startup = min(10, max(2, plan.num_samples // 3))  # random draws before TPE models the rest
    sampler = optuna.samplers.TPESampler(seed=plan.search_seed, n_startup_trials=startup)
    if storage and storage.startswith("sqlite:///"):
        from pathlib import Path

        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    rdb = optuna.storages.RDBStorage(storage) if storage else None
    searcher = SelectionSearch(space=DefineByRun(plan.params), metric=metric, mode=mode, sampler=sampler,
                               storage=rdb, study_name=study_name)
    if rdb is not None:
        for k, v in {"selection_metric": SELECT_METRIC, "pruned_by": f"ASHA on {SEARCH_METRIC}",
                     **(user_attrs or {})}.items():
            searcher._ot_study.set_user_attr(k, v)
    return searcher


OPTUNA_STORAGE_ENV = "SSL_SWEEPS_OPTUNA_STORAGE"  # a cluster's shared study database (docs/cluster.md)


def optuna_storage_url(tracking_uri: str, home, explicit: str | None = None) -> str:
    """Where a searched sweep keeps its Optuna study (one study per sweep, named after it):
    ``explicit`` (``--optuna-storage``), else ``$SSL_SWEEPS_OPTUNA_STORAGE`` (a cluster's
    PostgreSQL, set on its head), else ``optuna.db`` beside a SQLite MLflow store, else (a
    tracking server) ``<home>/optuna.db``. Creates nothing."""
    import os
    from pathlib import Path

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
        from ray import tune

        (name,) = grids
        assert sorted(map(repr, order)) == sorted(map(repr, grids[name].values)), "order must permute the grid"
        return {name: tune.grid_search(list(order))}
    return {k: d.to_tune() for k, d in grids.items()}
