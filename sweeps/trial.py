"""One sweep trial: one config, every dataset and seed of the space, in lockstep.

``sweep_trial(point, ctx)`` is the Ray Tune function trainable. It builds one
``trainables.train.Run`` per (dataset, seed), advances them an epoch at a time together and,
after each epoch, reports

    epoch                  ASHA's time attribute (the lockstep epoch)
    val_acc_knn_mean       the mean over datasets and seeds of the cheap validation kNN accuracy:
                           ASHA's metric and the metric every report carries
    <dataset>/val_acc_knn  per dataset (mean over seeds)

and, in the last report (``done=True``), the full evaluation: ``acc_mlp_mean`` (the paper's
selection rule: the MLP-probe accuracy averaged over the space's datasets and seeds -- what the
searcher learns from, see ``SelectionSearch``), ``acc_knn_mean`` and ``<dataset>/<metric>`` for
every final metric. One checkpoint holds every Run's state. MLflow children (one per dataset and
seed) are written from here; ``ChildRun`` makes them idempotent across restores and retries.

``SelectionSearch`` is Optuna TPE that learns the paper's rule: a trial that trained its full
budget is told to Optuna as COMPLETE with ``acc_mlp_mean``; a trial ASHA stopped is told as
PRUNED, with its validation curve as intermediate values -- TPE ranks pruned trials below every
complete one (deepest rung first, then by their last validation value), i.e. exactly ASHA's
verdict, and never mixes a truncated kNN value with a final MLP accuracy on one scale.
"""
from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.optuna.optuna_search import OptunaTrialState

from sweeps.tracking import close_children

SEARCH_METRIC = "val_acc_knn_mean"  # ASHA's metric; in every report
SELECT_METRIC = "acc_mlp_mean"  # the paper's selection rule; in the final report
CHECKPOINT_FILE = "runs.pt"


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its point: the plan and where to log (absolute)."""

    plan: Any  # sweeps.spaces.Plan
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_name: str
    git_commit: str


def mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def aggregate(runs, key_rows: list[dict[str, Any]], datasets: tuple[str, ...], keys) -> dict[str, float]:
    """Per-dataset means over seeds ``<dataset>/<key>`` and the across-dataset mean ``<key>_mean``
    of the per-dataset means (every dataset weighs the same, whatever its number of seeds)."""
    out: dict[str, float] = {}
    for key in keys:
        per_dataset = []
        for d in datasets:
            vals = [row[key] for run, row in zip(runs, key_rows)
                    if run.cfg["dataset"] == d and isinstance(row.get(key), (int, float))]
            if vals:
                out[f"{d}/{key}"] = mean(vals)
                per_dataset.append(out[f"{d}/{key}"])
        if len(per_dataset) == len(datasets):
            out[f"{key}_mean"] = mean(per_dataset)
    return out


def _require_finite(metrics: dict[str, float], key: str) -> None:
    v = metrics.get(key)
    if v is None or not math.isfinite(v):
        # ASHA never stops a NaN and Optuna keeps it 'running': error the trial with a reason.
        raise RuntimeError(f"{key} is {v} -- refusing to report a non-finite search metric")


class Tracked:
    """The MLflow calls of one trial, which must never stop its training: when one fails (the
    tracking server went away) it is counted and named, and the trial goes on. Nothing is
    buffered; every report then carries ``tracking_failures``, ``tracking_error`` (the first
    error) and ``tracking_missed`` (what was not logged), for the driver to report."""

    def __init__(self):
        self.failures = 0
        self.error: str | None = None
        self.missed: list[str] = []

    def call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- any tracking failure: record it, keep training
            self.failures += 1
            self.error = self.error or _one_line(e)
            self.missed.append(what)
            print(f"sweeps: MLflow: {what} not logged: {_one_line(e)}", file=sys.stderr, flush=True)
            return None

    def metrics(self) -> dict[str, Any]:
        if not self.failures:
            return {}
        shown = self.missed[:12] + ([f"... {len(self.missed) - 12} more"] if len(self.missed) > 12 else [])
        return {"tracking_failures": self.failures, "tracking_error": self.error,
                "tracking_missed": "; ".join(shown)}


def tag_node(child, node_id: str) -> None:
    """Tag the child run with the Ray node running it now (``ray_node_id``) and every node it
    ran on (``ray_node_ids``, in order: a retried trial moves to a surviving node)."""
    seen = child.client.get_run(child.run_id).data.tags.get("ray_node_ids", "")
    nodes = [n for n in seen.split(",") if n]
    if not nodes or nodes[-1] != node_id:
        nodes.append(node_id)
    child.client.set_tag(child.run_id, "ray_node_id", node_id)
    child.client.set_tag(child.run_id, "ray_node_ids", ",".join(nodes))


def save_runs(runs, folder: Path) -> None:
    torch.save({"runs": [r.state_dict() for r in runs]}, folder / CHECKPOINT_FILE)


def load_runs(runs, folder: Path) -> None:
    state = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    for run, s in zip(runs, state["runs"], strict=True):
        run.load_state_dict(s)


def sweep_trial(point: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable (``tune.with_parameters(sweep_trial, ctx=...)``)."""
    import ray
    from ray import tune

    from sweeps.spaces import run_configs
    from sweeps.tracking import ChildRun, config_hash
    from trainables.artifacts import write_run_files
    from trainables.train import Run

    plan = ctx.plan
    torch.set_num_threads(max(1, int(plan.cpus_per_trial)))
    trial_id = tune.get_context().get_trial_id()
    configs = run_configs(plan, point)
    chash = config_hash({k: v for k, v in configs[0].items() if k not in ("dataset", "seed")})
    tags = {"space": plan.space, "profile": plan.profile, "config_hash": chash,
            "git_commit": ctx.git_commit, "sweep": ctx.sweep_name}
    children: list[ChildRun | None] = []  # None: MLflow could not be reached to make it
    tracked = Tracked()
    node_id = ray.get_runtime_context().get_node_id()
    closed = False
    try:
        runs = [Run(cfg) for cfg in configs]
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                load_runs(runs, Path(d))
        for run in runs:
            label = f"{run.cfg['dataset']}/seed {run.cfg['seed']}"
            child = tracked.call(f"{label}: the child run", ChildRun, ctx.tracking_uri, ctx.experiment_id,
                                 ctx.parent_run_id, trial_id, run.cfg["dataset"], run.cfg["seed"],
                                 {**tags, "method": run.cfg["method"]}, run.cfg)
            if child is not None:
                tracked.call(f"{label}: node tag", tag_node, child, node_id)
            children.append(child)
        every = min(r.cfg["checkpoint_every"] for r in runs)

        while not all(r.trained for r in runs):
            rows = []
            for run, child in zip(runs, children):
                if run.trained:  # a shorter budget than the others: hold its last value
                    rows.append({"val_acc_knn": run.val_acc_knn or 0.0})
                    continue
                row = run.train_epoch()
                if child is not None:
                    tracked.call(f"{run.cfg['dataset']}/seed {run.cfg['seed']}: epoch {row['epoch']} metrics",
                                 child.log_epoch, row)
                rows.append(row)
            epoch = max(r.epoch for r in runs)
            if all(r.trained for r in runs):
                break  # the last epoch is reported with the final evaluation
            metrics = {"epoch": epoch, **aggregate(runs, rows, plan.datasets, ["val_acc_knn"]),
                       **tracked.metrics()}
            _require_finite(metrics, SEARCH_METRIC)
            if epoch % every == 0:
                with tempfile.TemporaryDirectory() as d:
                    save_runs(runs, Path(d))
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
            else:
                tune.report(metrics)

        finals = []
        for run, child in zip(runs, children):
            final = run.finish()
            row = run.final_row()
            with tempfile.TemporaryDirectory() as d:
                files = write_run_files(Path(d), run.method, run.splits, run.cfg, run.history, row)
                logged = run.history[-1] if run.history else {}
                if child is not None:
                    tracked.call(f"{run.cfg['dataset']}/seed {run.cfg['seed']}: final metrics and artifacts",
                                 child.log_final, {k: v for k, v in final.items() if k not in logged},
                                 run.epoch, files)
            finals.append(final)
        keys = sorted({k for f in finals for k, v in f.items() if isinstance(v, (int, float))})
        metrics = {"epoch": max(r.epoch for r in runs), **aggregate(runs, finals, plan.datasets, keys),
                   "done": True}
        _require_finite(metrics, SEARCH_METRIC)
        _require_finite(metrics, SELECT_METRIC)
        with tempfile.TemporaryDirectory() as d:
            save_runs(runs, Path(d))
            for run, child in zip(runs, children):
                if child is not None:
                    tracked.call(f"{run.cfg['dataset']}/seed {run.cfg['seed']}: run end (FINISHED)",
                                 child.end, "FINISHED", stopped_early="false")
            closed = True
            tune.report({**metrics, **tracked.metrics()}, checkpoint=tune.Checkpoint.from_directory(d))
    except SystemExit:
        # Ray stops a trial (ASHA) by exiting its thread inside tune.report -- also right after
        # the final report, when the children are already closed.
        for child in children if not closed else []:
            if child is not None:
                _quietly(child.end, "FINISHED", stopped_early="true")
        raise
    except BaseException as e:
        for child in children if not closed else []:
            if child is not None:
                _quietly(child.end, "FAILED", error=_one_line(e))
        raise


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]


def _quietly(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 -- the driver's backstop closes what this could not
        pass


def _close(uri, exp_id, parent_id, trial, status, **tags):
    try:
        close_children(uri, exp_id, parent_id, status, trial_id=trial.trial_id, **tags)
    except Exception as e:  # noqa: BLE001 -- the end-of-sweep sweep closes it instead
        print(f"sweeps: could not close the MLflow runs of {trial.trial_id}: {_one_line(e)}",
              file=sys.stderr)


class CloseChildren(Callback):
    """Driver-side backstop: when Ray ends a trial (ASHA stop, error), close any child run the
    trial's thread could not close before its actor went away."""

    def __init__(self, uri: str, exp_id: str, parent_id: str):
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = SELECT_METRIC in (trial.last_result or {})
        _close(self.uri, self.exp_id, self.parent_id, trial, "FINISHED",
               stopped_early="false" if done else "true")

    def on_trial_error(self, iteration, trials, trial, **info):
        _close(self.uri, self.exp_id, self.parent_id, trial, "FAILED")


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


def selection_search(plan, metric: str = SEARCH_METRIC, mode: str = "max") -> SelectionSearch:
    """SelectionSearch over the plan's define-by-run space; TPE seeded through its sampler
    (OptunaSearch's own seed is ignored when a sampler is given)."""
    import optuna

    startup = min(10, max(2, plan.num_samples // 3))  # random draws before TPE models the rest
    sampler = optuna.samplers.TPESampler(seed=plan.search_seed, n_startup_trials=startup)
    return SelectionSearch(space=DefineByRun(plan.params), metric=metric, mode=mode, sampler=sampler)


class DefineByRun:
    """The plan's searched parameters as an Optuna define-by-run function (picklable, so the
    searcher's state survives a restore). ``Same`` copies another key's value; ``Switch`` draws
    its case's distribution under the key's own name (Optuna allows a parameter to be absent or
    differently distributed from one trial to the next)."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    def __call__(self, trial) -> dict[str, Any] | None:
        from sweeps.spaces import Same, Switch

        drawn: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for name, dist in self.params.items():
            if isinstance(dist, Switch):
                dist = dict(dist.cases)[drawn[dist.on]]
            drawn[name] = _suggest(trial, name, dist, drawn)
            if isinstance(dist, Same):
                constants[name] = drawn[name]
        return constants  # Tune merges these with the suggested values


def _suggest(trial, name: str, dist, drawn: dict[str, Any]):
    from sweeps.spaces import Categorical, IntUniform, LogUniform, Same, Uniform

    if isinstance(dist, Same):
        return drawn[dist.key]
    if isinstance(dist, LogUniform):
        return trial.suggest_float(name, dist.low, dist.high, log=True)
    if isinstance(dist, Uniform):
        return trial.suggest_float(name, dist.low, dist.high)
    if isinstance(dist, IntUniform):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, Categorical):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"cannot search a {type(dist).__name__}")
