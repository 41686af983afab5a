"""One sweep trial: the Ray Tune edge of ``trainables.train``.

A trial is one config trained on every dataset and seed of the space (a ``RunGroup``, trained by
``train``; the paper's selection rule is the group's ``aggregate``). ``sweep_trial`` is the Tune
function trainable; ``SweepHooks`` is all it adds: ``tune.report`` every epoch (``epoch``,
``val_acc_knn_mean`` -- ASHA's metric -- and per dataset) with a checkpoint of the whole group when
one is due, one MLflow child run per dataset and seed (``ChildRun``, idempotent across restores
and retries), and one ``result.json`` per run in the trial folder (sweeps/schema.py). The final
report carries ``acc_mlp_mean``, the metric the searcher learns (sweeps/search.py).
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

from sweeps import schema
from sweeps.search import SEARCH_METRIC, SELECT_METRIC
from sweeps.tracking import ChildRun, Tracked, close_children, one_line, tag_node
from trainables.train import Hooks, load_checkpoint, save_checkpoint, train

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


def _require_finite(metrics: dict[str, Any], key: str) -> None:
    v = metrics.get(key)
    if v is None or not math.isfinite(v):
        # ASHA never stops a NaN and Optuna keeps it 'running': error the trial with a reason.
        raise RuntimeError(f"{key} is {v} -- refusing to report a non-finite search metric")


class SweepHooks(Hooks):
    def __init__(self, ctx: TrialContext, configs: list[dict[str, Any]]):
        import ray
        from ray import tune

        self.ctx, self.tune, self.tracked, self.children, self.closed = ctx, tune, Tracked(), {}, False
        self.trial_id = tune.get_context().get_trial_id()
        self.trial_dir = Path(tune.get_context().get_trial_dir())
        self.node_id = ray.get_runtime_context().get_node_id()
        self.config_hash = schema.config_hash(configs[0])
        self.tags = {schema.Tag.SPACE: ctx.plan.space, schema.Tag.PROFILE: ctx.plan.profile,
                     schema.Tag.CONFIG_HASH: self.config_hash, schema.Tag.GIT_COMMIT: ctx.git_commit,
                     schema.Tag.SWEEP: ctx.sweep_name, schema.Tag.METHOD: configs[0]["method"]}
        self.group = None

    def restore(self) -> dict | None:
        ckpt = self.tune.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return load_checkpoint(Path(d) / CHECKPOINT_FILE)

    def started(self, group) -> None:
        self.group = group
        for run in group.runs:
            child = self.tracked.call(f"{run.label}: the child run", ChildRun, self.ctx.tracking_uri,
                                      self.ctx.experiment_id, self.ctx.parent_run_id, self.trial_id,
                                      run.cfg["dataset"], run.cfg["seed"], self.tags, run.cfg)
            if child is not None:
                self.tracked.call(f"{run.label}: node tag", tag_node, child, self.node_id)
            self.children[run.label] = child

    def epoch(self, run, row) -> None:
        if self.children.get(run.label) is not None:
            self.tracked.call(f"{run.label}: epoch {row['epoch']} metrics", self.children[run.label].log_epoch, row)

    def finished(self, run, row) -> None:
        from trainables.artifacts import write_run_files

        folder = schema.run_folder(self.trial_dir, run.cfg["dataset"], run.cfg["seed"])
        files = write_run_files(folder, run.method, run.splits, run.cfg, run.history, row)
        self._write_result(run, "FINISHED", False, {**run.final, "epochs_trained": run.epoch})
        logged = run.history[-1] if run.history else {}
        if self.children.get(run.label) is not None:
            self.tracked.call(f"{run.label}: final metrics and artifacts", self.children[run.label].log_final,
                              {k: v for k, v in run.final.items() if k not in logged}, run.epoch, files)

    def report(self, metrics, state) -> None:
        metrics = {**metrics, **self.tracked.metrics()}
        _require_finite(metrics, SEARCH_METRIC)
        if metrics.get("done"):
            _require_finite(metrics, SELECT_METRIC)
            self.close("FINISHED", stopped_early="false")
            metrics.update(self.tracked.metrics())
        if state is None:
            self.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(state(), Path(d) / CHECKPOINT_FILE)
            self.tune.report(metrics, checkpoint=self.tune.Checkpoint.from_directory(d))

    def close(self, status: str, **tags: str) -> None:
        """End every child (once) and record the runs that did not finish."""
        if self.closed:
            return
        self.closed = True
        for run in self.group.runs if self.group is not None else []:
            if run.final is None:
                last = run.history[-1] if run.history else {}
                self._write_result(run, status, tags.get("stopped_early") == "true", last, tags.get("error", ""))
            child = self.children.get(run.label)
            if child is not None:
                self.tracked.call(f"{run.label}: run end ({status})", child.end, status, **tags)

    def _write_result(self, run, status: str, stopped_early: bool, metrics: dict, error: str = "") -> None:
        identity = {"error": error, "space": self.ctx.plan.space, "profile": self.ctx.plan.profile, "sweep": self.ctx.sweep_name,
                    "parent_run_id": self.ctx.parent_run_id, "trial_id": self.trial_id,
                    "method": run.cfg["method"], "dataset": run.cfg["dataset"], "seed": run.cfg["seed"],
                    "config_hash": self.config_hash, "status": status, "stopped_early": stopped_early,
                    "epochs_trained": run.epoch, "git_commit": self.ctx.git_commit}
        try:
            schema.write_result(schema.run_folder(self.trial_dir, run.cfg["dataset"], run.cfg["seed"]),
                                identity, run.user_config, run.cfg, metrics)
        except OSError as e:
            print(f"sweeps: {run.label}: result.json not written: {one_line(e)}", file=sys.stderr, flush=True)


def sweep_trial(point: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable (``tune.with_parameters(sweep_trial, ctx=...)``)."""
    from sweeps.spaces import run_configs

    torch.set_num_threads(max(1, int(ctx.plan.cpus_per_trial)))
    configs = run_configs(ctx.plan, point)
    hooks = SweepHooks(ctx, configs)
    try:
        train(configs, hooks)
    except SystemExit:  # Ray stops a trial (ASHA) by exiting its thread inside tune.report
        hooks.close("FINISHED", stopped_early="true")
        raise
    except BaseException as e:
        hooks.close("FAILED", error=one_line(e))
        raise


def _close(uri, exp_id, parent_id, trial, status, **tags):
    try:
        close_children(uri, exp_id, parent_id, status, trial_id=trial.trial_id, **tags)
    except Exception as e:  # noqa: BLE001 -- the end-of-sweep sweep closes it instead
        print(f"sweeps: could not close the MLflow runs of {trial.trial_id}: {one_line(e)}", file=sys.stderr)


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
