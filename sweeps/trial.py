"""One sweep trial: the Ray Tune edge of ``trainables.driver``.

A trial is one config trained on every dataset and seed of the space (a ``RunGroup``, trained by
``train``; the paper's selection rule is the group's ``aggregate``). ``sweep_trial`` is the Tune
function trainable; ``SweepHooks`` is all it adds: ``tune.report`` every epoch (``epoch``,
``val_acc_knn_mean`` -- ASHA's metric -- and per dataset) with a checkpoint of the whole group when
one is due, and the trial's records -- one MLflow child and one ``result.json`` per dataset and
seed -- through its ``TrialLedger`` (sweeps/ledger.py). The final report carries
``acc_mlp_mean``, the metric the searcher learns (sweeps/search.py).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray.tune import Callback

from sweeps import schema
from sweeps.ledger import TrialLedger
from sweeps.reconcile import checkpoint_folders
from sweeps.schema import ASHA_METRIC, COMPLETED, FAILED, SELECTION_METRIC, Verdict, ended_verdict, error_line
from sweeps.spaces import budget_words
from sweeps.tracking import close_children
from trainables.driver import CheckpointError, Hooks, load_checkpoint, save_checkpoint, train

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


def trial_folder() -> Path:
    """This trial's folder in the sweep's storage (``--storage``: a local folder, or a mount every
    node shares). Not Tune's ``get_trial_dir()``: in Ray 2.60 that is a node-local staging folder
    (/tmp/ray/session_*/artifacts/...) which reaches the storage only by luck -- for a trial
    started in a reused actor (``reuse_actors``, whenever a sweep has more trials than run at
    once) or on another node it never does, and the run files written there were lost."""
    from ray import tune

    return Path(tune.get_context().get_storage().trial_fs_path)


def _require_finite(metrics: dict[str, Any], key: str) -> None:
    v = metrics.get(key)
    if v is None or not math.isfinite(v):
        # ASHA never stops a NaN and Optuna keeps it 'running': error the trial with a reason.
        raise RuntimeError(f"{key} is {v} -- refusing to report a non-finite search metric")


class SweepHooks(Hooks):
    """Tune reports and checkpoints for one trial; its records through a ``TrialLedger``."""

    def __init__(self, ctx: TrialContext, configs: list[dict[str, Any]]):
        import ray
        from ray import tune

        self.tune, self.group = tune, None
        T, trial_id = schema.Tag, tune.get_context().get_trial_id()
        identity = {"space": ctx.plan.space, "profile": ctx.plan.profile, "sweep": ctx.sweep_name,
                    "parent_run_id": ctx.parent_run_id, "trial_id": trial_id,
                    "config_hash": schema.config_hash(configs[0]), "git_commit": ctx.git_commit}
        tags = {T.SPACE: ctx.plan.space, T.PROFILE: ctx.plan.profile, T.CONFIG_HASH: identity["config_hash"],
                T.BUDGET: budget_words(ctx.plan.budget_changes()),
                T.GIT_COMMIT: ctx.git_commit, T.SWEEP: ctx.sweep_name, T.METHOD: configs[0]["method"]}
        self.ledger = TrialLedger(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, trial_id, trial_folder(),
                                  identity, tags, ray.get_runtime_context().get_node_id(),
                                  ray.util.get_node_ip_address())

    def restore(self) -> dict | None:
        """The newest checkpoint of this trial that loads, or None to start afresh: Tune's, or a
        newer one in the trial's folder that Tune's last snapshot did not know of when the driver
        was killed (a trial that completed after it resumes from its final checkpoint and reports
        that result at once). A checkpoint a kill left half-written is passed over."""
        given = self.tune.get_checkpoint()
        candidates = [d / CHECKPOINT_FILE for d in checkpoint_folders(trial_folder())]
        if given is not None:
            candidates.append(Path(given.path) / CHECKPOINT_FILE)
        newest_first = sorted({p for p in candidates if p.is_file() and not p.is_symlink()},
                              key=lambda p: p.stat().st_mtime, reverse=True)
        for path in newest_first:
            try:
                return load_checkpoint(path)
            except CheckpointError as e:
                print(f"sweeps: {e}; trying an older checkpoint", file=sys.stderr, flush=True)
        return None

    def started(self, group) -> None:
        self.group = group
        for run in group.runs:
            self.ledger.open(run)

    def epoch(self, run, row) -> None:
        self.ledger.epoch(run, row)

    def finished(self, run, row) -> None:
        self.ledger.finished(run, row)

    def report(self, metrics, state) -> None:
        _require_finite(metrics, ASHA_METRIC)
        if metrics.get("done"):
            _require_finite(metrics, SELECTION_METRIC)
            self.end(COMPLETED)  # before the last report: Ray may end us there
        metrics = {**metrics, **self.ledger.tracked.metrics()}
        if state is None:
            self.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(final_checkpoint(state()) if metrics.get("done") else state(), Path(d) / CHECKPOINT_FILE)
            self.tune.report(metrics, checkpoint=self.tune.Checkpoint.from_directory(d))

    def end(self, verdict: Verdict, error: str = "") -> None:
        """The trial's own verdict on its records (once)."""
        self.ledger.end(self.group.runs if self.group is not None else [], verdict, error)


def final_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of a trial that trained and evaluated every run: without the optimiser's
    state (two thirds of an Adam-trained model's checkpoint), which only training on needs. A
    sweep's trial never trains on once it reported its final evaluation; the checkpoint is
    there for a driver that dies before Tune has recorded the trial's end (the trial then
    re-reports its results without training or evaluating again), and for --keep-checkpoints."""
    return {**state, "runs": [{**run, "optimizer": None} for run in state["runs"]]}


def sweep_trial(point: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable (``tune.with_parameters(sweep_trial, ctx=...)``)."""
    from sweeps.console import exit_outside_finalizers
    from sweeps.spaces import run_configs

    exit_outside_finalizers()  # a cluster's workers run no setup hook of ours
    torch.set_num_threads(max(1, int(ctx.plan.cpus_per_trial)))
    configs = run_configs(ctx.plan, point)
    hooks = SweepHooks(ctx, configs)
    try:
        train(configs, hooks)
    except SystemExit:  # Ray stops a trial (ASHA, or the sweep stopping) by exiting its thread:
        raise  # its records are left to the driver, which alone knows which (sweeps/ledger.py)
    except BaseException as e:
        hooks.end(FAILED, error_line(e))
        raise


def checkpoint_folders(trial_dir: str | Path) -> list[Path]:
    """Tune's checkpoint folders of one trial (``checkpoint_000012``)."""
    return sorted(Path(trial_dir).glob("checkpoint_*"))


def drop_checkpoints(trial_dir: str | Path) -> None:
    """Remove a trial's checkpoint folders (a trial that ended never resumes from them)."""
    for folder in checkpoint_folders(trial_dir):
        shutil.rmtree(folder, ignore_errors=True)


def state_saved_at(experiment_dir: str | Path) -> float:
    """When Tune last saved the experiment's state (its ``experiment_state-*.json``; 0 if never)."""
    return max((f.stat().st_mtime for f in Path(experiment_dir).glob("experiment_state-*.json")), default=0.0)


class DropCheckpoints(Callback):
    """Driver-side: a trial that ended -- completed, stopped early by ASHA, or failed -- never
    resumes (--resume continues unfinished trials only), so its checkpoint folders are removed
    (``keep``: --keep-checkpoints leaves them) -- once Tune has saved the experiment's state
    with the trial ended: a driver killed before that save resumes the trial from its
    checkpoint, which must still be there. Tune saves its state every ten seconds or more, so
    a checkpoint goes within a few steps of its trial's end; sweeps/run.py's ``finish_sweep``
    removes what is left once the sweep's state is final. A trial keeps one checkpoint while it
    runs (``CheckpointConfig(num_to_keep=1)``), so the disk a sweep holds is about one
    checkpoint per running trial, not two per trial ever run. Only plain data between calls
    (Tune pickles its callbacks with the experiment)."""

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.ended: dict[str, float | None] = {}  # trial folder -> when its end was seen in Tune's state

    def _ended(self, trial) -> None:
        if not self.keep and trial.path:
            self.ended[str(trial.path)] = None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_step_end(self, iteration, trials, **info):
        """Tune saves its state within a step, before this call: a save after the step that first
        saw a trial TERMINATED or ERROR holds it so."""
        if not self.ended:
            return
        now, status = time.time(), {str(t.path): t.status for t in trials if t.path}
        for path, seen in list(self.ended.items()):
            if seen is None and status.get(path) in ("TERMINATED", "ERROR"):
                self.ended[path] = now
        saved = state_saved_at(Path(next(iter(self.ended))).parent)
        for path, seen in list(self.ended.items()):
            if seen is not None and seen < saved:
                drop_checkpoints(path)
                del self.ended[path]


class CloseChildren(Callback):
    """Driver-side backstop: when Ray ends a trial (ASHA stop, error), close any child run the
    trial's thread could not close before its actor went away (MLflow only: the thread may still
    be writing its result.json files, whose verdict the driver records once Tune has returned)."""

    def __init__(self, uri: str, exp_id: str, parent_id: str):
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id

    def _close(self, trial, verdict: Verdict) -> None:
        try:
            close_children(self.uri, self.exp_id, self.parent_id, verdict.status, trial_id=trial.trial_id,
                           **verdict.tags())
        except Exception as e:  # noqa: BLE001 -- the end-of-sweep close does it instead
            print(f"sweeps: could not close the MLflow runs of {trial.trial_id}: {error_line(e)}", file=sys.stderr)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, ended_verdict(trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, FAILED)


class StopOnFullDisk(Callback):
    """Driver-side: the first trial that fails on a full disk stops the sweep, as Ctrl-C does
    (Tune saves what it can and returns): every other trial would fail the same way. The driver
    then ends the sweep failed, saying so in one line (sweeps/run.py)."""

    def __init__(self):
        self.stopping = False

    def on_trial_error(self, iteration, trials, trial, **info):
        from sweeps.console import error_file_line

        if not self.stopping and schema.disk_full(error_file_line(trial) or ""):
            self.stopping = True
            # The failed trials' errors are recorded (error.txt, trials.csv): Ray need not print
            # each again, with its traceback, as the stop leaves their results unread.
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            signal.raise_signal(signal.SIGINT)
