"""Run a named sweep on Ray Tune: ``python sweeps/run.py --space simvae_J --profile quick``.

The command line and Ray: the flags, the checks before anything is created
(sweeps/preflight.py), the Ray connection, the Tuner, and the trial states read back from Tune.
The space (sweeps/spaces.py) and the profile are expanded into a plan and every config it can
produce is validated before Ray starts. Searched spaces run Optuna TPE (``SelectionSearch``:
it learns the mean MLP-probe accuracy across datasets, see sweeps/search.py); grids run through
Tune's grid search; ASHA stops trials on the across-dataset validation kNN accuracy, one rung
per ``epoch``. The sweep's records -- sweep.json, trials.csv, the MLflow parent and children,
every run's result.json -- are its ``SweepLedger``'s (sweeps/ledger.py); what it prints,
sweeps/console.py's.

Exit codes: 0 completed; 1 the sweep ran but a trial failed, no trial completed, MLflow records
are incomplete, or it crashed; 2 bad input (nothing created); 130 interrupted (Ctrl-C; resume
with the same command plus --resume), 143 terminated (SIGTERM; resume likewise).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sweeps import console, preflight, schema, search, spaces, tracking
from sweeps.ledger import SweepLedger, claim_folder, find_resumable, read_info
from sweeps.lock import SweepLock, SweepLocked
from sweeps.preflight import UsageError
from sweeps.schema import COMPLETED, FAILED, INTERRUPTED, ended_verdict, first_line, verdict_of_row
from sweeps.spaces import SpaceError
from sweeps.tracking import TrackingError
from trainables.config import ConfigError, parse_pairs

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

default_home = schema.home


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweeps/run.py", description="Run a named hyperparameter sweep on Ray Tune.",
        epilog="Examples: --list | --show simvae_J --profile quick | --space simvae_J --profile quick "
               "| the same command plus --resume after an interruption.")
    p.add_argument("--list", action="store_true", help="list the named spaces and exit")
    p.add_argument("--show", metavar="NAME", help="print the fully expanded space and exit")
    p.add_argument("--space", help="the space to run (see --list)")
    p.add_argument("--profile", help="paper (default: the paper's datasets and budgets, GPUs), "
                   "laptop (real MNIST/FashionMNIST subsets, CPU hours) or quick (offline datasets, CPU minutes)")
    p.add_argument("--allow-cpu", action="store_true", help="run the paper profile on a cluster without GPUs "
                   "anyway (refused by default, with an estimate of its CPU time)")
    p.add_argument("--datasets", help="comma-separated datasets (override the profile's)")
    p.add_argument("--epochs", type=int, help="training epochs per run (override)")
    p.add_argument("--num-samples", type=int, help="configs the searcher proposes (searched spaces)")
    p.add_argument("--seeds", help="comma-separated seeds, all trained inside each trial")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="fix config keys for every run, e.g. --set train_size=500 lr=1e-3 (repeatable)")
    p.add_argument("--data-dir", help="folder of the paper's datasets (absolute after expansion)")
    p.add_argument("--selection", help="selection file for table1 (default <repo>/results/selection.yaml)")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--early-stopping", action="store_true", help="ASHA on a grid space too (grids, i.e. "
                   "ablations, train every point to its full budget by default)")
    p.add_argument("--no-early-stopping", action="store_true", help="no ASHA: every trial trains its full "
                   "budget (to measure what early stopping saves)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the space's, 1)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default 0)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: the profile's)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all)")
    p.add_argument("--address", help="join an existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage", help="absolute folder of Ray's experiment folders (default: <home>/tune)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                   "else sqlite:///<home>/mlflow.db)")
    p.add_argument("--optuna-storage", help="database of a searched sweep's Optuna study, e.g. "
                   "postgresql://USER@HOST:PORT/DB (default: $SSL_SWEEPS_OPTUNA_STORAGE, else "
                   "sqlite:///<home>/optuna.db beside the MLflow store)")
    p.add_argument("--name", help="experiment folder name (default: <space>-<profile>-<time>); with "
                   "--resume, the sweep to resume")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted sweep of this "
                   "space and profile (or --name)")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run the sweep's failed trials "
                   "again from their last checkpoint (they stay failed otherwise)")
    p.add_argument("--accept-changes", action="store_true", help="with --resume: accept that a trial's config "
                   "changed since the sweep stopped (a default changed in the code): its unfinished trials run "
                   "again from scratch (refused otherwise, naming the keys)")
    p.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial from its last "
                   "checkpoint (node loss on a cluster; a NaN is not retried by default)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the last checkpoint of every trial that "
                   "ended (default: removed as it ends; an unfinished trial keeps its own to resume from)")
    return p


def expand_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The plan's inputs as plain data (stored in sweep.json beside the expanded plan)."""
    return preflight.plan_inputs(args, _sets(args.set))


def _sets(items: list[str]) -> dict[str, Any]:
    try:
        return parse_pairs(items)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def connect_ray(address: str | None, num_cpus: int | None) -> bool:
    """Join ``address`` or start a local Ray; True when this call started (and so owns) it.
    An already-initialised Ray (a test session, a notebook) is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
        except Exception as e:  # noqa: BLE001 -- any failure to join is the user's address
            raise UsageError(f"cannot join the Ray cluster at {address}: {first_line(e)}") from None
    else:
        os.environ.pop("RAY_ADDRESS", None)  # an empty RAY_ADDRESS would be read as a cluster address
        # address="local": a new local Ray, never a cluster someone started on this machine
        # (ray.init() alone joins the one named in /tmp/ray/ray_current_cluster).
        from ray._private import services

        # A local sweep's Ray listens on the loopback interface only: its servers bind to the node
        # address, but ray.init (2.60, pinned) maps a loopback node address back to the machine's
        # IP, so that mapping is switched off while this Ray starts.
        # Ray turns token authentication on for a new local cluster and says so at WARNING level
        # every time: that is the setting we want, not news for the user.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        resolve = services.resolve_ip_for_localhost
        services.resolve_ip_for_localhost = lambda host: host
        try:
            # (A cluster's workers may not have this code to import: the hook is for a local Ray.)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                     _node_ip_address="127.0.0.1",
                     runtime_env={"worker_process_setup_hook": "sweeps.console.quiet_workers"})
        finally:
            services.resolve_ip_for_localhost = resolve
    return True


class Held:
    """What this invocation holds and gives back when it ends: the experiment folder it claimed
    (removed if it stops at a check), the sweep's lock (one live driver per sweep, held until the
    sweep ends) and a local Ray it started."""

    def __init__(self):
        self.claimed: Path | None = None
        self.lock: SweepLock | None = None
        self.owns_ray = False

    def stop_ray(self) -> None:
        if self.owns_ray:
            import ray

            ray.shutdown()
            self.owns_ray = False

    def give_back(self, claimed_too: bool = False) -> None:
        self.stop_ray()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if claimed_too and self.claimed is not None:
            shutil.rmtree(self.claimed, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default_profile = args.profile is None  # said when the default's data is missing (preflight.check_data)
    args.profile = args.profile or spaces.DEFAULT_PROFILE
    if args.list:
        print(spaces.listing())
        return EXIT_OK
    held = Held()
    try:
        try:
            ready = prepare(args, held, default_profile)
        except (SpaceError, TrackingError, UsageError, ConfigError, SweepLocked) as e:
            held.give_back(claimed_too=True)
            print(f"run.py: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(ready, int):  # --show, or a repair: done
            return ready
        plan, storage, uri, optuna_url, resume = ready
        print(spaces.describe(plan), flush=True)
        terminated = _stop_on_sigterm()
        code = run_sweep(plan, args, storage, uri, resume, held.claimed, optuna_url)
        return EXIT_TERMINATED if terminated.is_set() and code == EXIT_INTERRUPTED else code
    finally:
        held.give_back()


def prepare(args, held: Held, default_profile: bool = False):
    """Everything before the sweep runs, in order: the checks (sweeps/preflight.py), a resumed
    sweep found and locked (``Resume``), Ray, and a new sweep's folder claimed and locked -- the
    first thing it creates. Returns (plan, storage, tracking URI, Optuna URL, resume or None), or
    an exit code when there is nothing more to do; raises the one-line errors of bad input.
    ``default_profile``: no --profile was given (said when the default's data is missing)."""
    home = default_home()
    preflight.check_flags(args)
    storage = Path(args.storage).expanduser().resolve() if args.storage else schema.storage_dir(home)
    if args.show:
        print(spaces.describe(spaces.expand(args.show, **expand_kwargs(args))))
        return EXIT_OK
    if not args.space:
        raise UsageError("no space given: --space NAME (see --list)")
    resume = None
    if args.resume:
        held.lock = Resume.lock(args, storage)
        resume = Resume.check(args, held.lock.folder, home)
        if resume.repair:
            return _repair(resume.folder)
        plan, uri, optuna_url = resume.plan, resume.uri, resume.optuna_url
    else:
        plan = spaces.expand(args.space, **expand_kwargs(args))
        uri = schema.absolute_uri(args.tracking_uri) if args.tracking_uri else schema.default_tracking_uri(home)
        preflight.check_tracking_uri(uri)
        optuna_url = search.optuna_storage_url(uri, home, args.optuna_storage)
        if args.name and (storage / args.name).exists():  # at once; claim_folder settles races
            raise UsageError(f"--name {args.name}: {storage / args.name} is taken by another sweep (add "
                             f"--resume to continue it, or choose another name)")
        preflight.check_storage(storage)
        tracking.check_reachable(uri)
    # Every sweep keeps an Optuna study (a search's by its searcher, a grid's by search.GridStudy).
    # A resumed search's study is there, unless it stopped before Tune saved anything (it may not
    # have been made yet then); a grid's is made with its first trial.
    resumed_study = resume.study if resume and not resume.fresh and plan.searcher == "optuna" else None
    preflight.check_optuna_storage(optuna_url, study=resumed_study)
    preflight.check_data(plan, default_profile)
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        preflight.check_address(address)
    held.owns_ray = connect_ray(address, args.num_cpus)
    preflight.check_resources(plan, address)
    if not args.allow_cpu:
        preflight.check_gpus_for_paper(plan)
    if resume is None:  # the first thing this sweep creates: its folder, exclusively, and its lock
        held.claimed = claim_folder(storage, args.name, plan.space, plan.profile)
        held.lock = SweepLock(held.claimed)
        held.lock.acquire()
    return plan, storage, uri, optuna_url, resume


class Resume:
    """What --resume found before anything runs: the sweep, its plan and stores as they ran, Tune's
    last snapshot, the trials to restart from scratch (--accept-changes) and whether it is a
    repair of a completed sweep's records."""

    def __init__(self, folder: Path, info: dict[str, Any], repair: bool):
        self.folder, self.info, self.repair = folder, info, repair
        self.plan = spaces.Plan.from_dict(info["plan"])  # the plan as it ran, not today's spaces.py
        self.uri = info["tracking_uri"]
        self.optuna_url = info.get("optuna_storage") or search.optuna_storage_url(self.uri, default_home())
        self.study = info.get("optuna_study") or info["name"]  # sweeps before study ids: the sweep's name
        self.snapshot: list = []
        self.restart: list[str] = []
        self.retry_failed = False
        self.fresh = False  # Tune saved no state before the sweep stopped: it runs afresh, in its folder

    @staticmethod
    def lock(args, storage: Path) -> SweepLock:
        """The sweep to resume, checked as the storage trust boundary requires and locked: a
        sweep another driver runs is one line naming it."""
        if args.space not in spaces.SPACES:
            spaces.expand(args.space, args.profile)  # the unknown-space message
        folder, _ = find_resumable(storage, args.space, args.profile, args.name)
        preflight.check_trusted(folder, contents=False)  # the folder itself: ours, to hold our lock
        lock = SweepLock(folder)
        took_over = lock.acquire()
        try:
            preflight.check_trusted(folder)  # everything in it, now that no driver changes it
        except UsageError:
            lock.release()
            raise
        if took_over:
            print(f"took over the lock of sweep {folder.name}: {took_over}", flush=True)
        return lock

    @classmethod
    def check(cls, args, folder: Path, home: Path) -> "Resume":
        """Everything a resume checks before Ray starts, under the lock: sweep.json read again,
        the tracking store reachable, Tune's snapshot readable, the configs of the trials that will
        run again unchanged since (or --accept-changes), a line about failed trials."""
        _, repair = find_resumable(folder.parent, args.space, args.profile, folder.name)
        self = cls(folder, read_info(folder), repair)
        tracking.check_reachable(self.uri)
        if repair:
            return self
        from sweeps import reconcile

        self.retry_failed = args.retry_failed
        snapshot = reconcile.read_snapshot(folder)
        if snapshot is None:  # killed before Tune saved anything: nothing to restore, nothing to check
            self.fresh = True
            print(f"sweep {folder.name} stopped before Ray Tune saved its state: its trials start again from "
                  f"scratch", flush=True)
            return self
        self.snapshot = snapshot
        again = {t.trial_id for t in self.snapshot if t.runs_again(self.retry_failed)}
        changed = preflight.check_config_identity(folder, again, args.accept_changes)
        self.restart = sorted(changed)
        failed = [t.trial_id for t in self.snapshot if t.status == "ERROR"]
        if failed and not self.retry_failed:
            print(f"{len(failed)} failed trial(s) stay failed: {', '.join(failed)} (add --retry-failed to run them "
                  f"again from their last checkpoint)", flush=True)
        elif failed:
            print(f"retrying {len(failed)} failed trial(s) from their last checkpoint: {', '.join(failed)}", flush=True)
        return self


def _stop_on_sigterm() -> threading.Event:
    """SIGTERM (``ray job stop``, ``timeout``, Kubernetes) stops the sweep as Ctrl-C does: Tune
    checkpoints and stops the trials, the records are closed, exit 143; a second one skips that."""
    seen = threading.Event()

    def handler(signum, frame):
        seen.set()
        signal.raise_signal(signal.SIGINT)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    return seen


def _repair(folder: Path) -> int:
    ledger = SweepLedger.of_folder(folder)
    closed = ledger.repair()
    print(f"repaired the MLflow records of completed sweep {ledger.name}: {closed} open child run(s) closed, "
          f"parent run ended, summary logged", flush=True)
    return EXIT_OK


def run_sweep(plan, args, storage: Path, uri: str, resume: Resume | None, claimed: Path | None = None,
              optuna_url: str | None = None) -> int:
    """Open the sweep's records (a resumed sweep's reconciled with Tune's snapshot first), run
    Tune, read back what happened, close the records."""
    started = time.time()
    status, code, reason = "failed", EXIT_FAILED, ""
    ledger = None
    try:
        if resume is not None:
            ledger = SweepLedger.resume(resume.folder)
            _reconcile(ledger, resume)
        else:
            folder = claimed or claim_folder(storage, args.name, plan.space, plan.profile)
            try:
                ledger = SweepLedger.create(plan, expand_kwargs(args), folder, uri, optuna_url)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # no sweep began: its name stays free
                raise
        make_tuner(plan, args, storage, ledger, resume).fit()
        status, code = finish_sweep(plan, ledger, time.time() - started, args.keep_checkpoints)
    except KeyboardInterrupt:
        status, code = "interrupted", EXIT_INTERRUPTED
        print("interrupted; continue with the same command plus --resume", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 -- reported in one line, the parent run ends FAILED
        status, code = "failed", EXIT_FAILED
        if schema.disk_full(e):
            reason = (f"no space left on device under {storage}: free some, then continue with the same command "
                      f"plus --resume --retry-failed")
            print(f"run.py: sweep failed: {reason}", file=sys.stderr)
        else:
            print(f"run.py: sweep failed: {first_line(e)}", file=sys.stderr)
            import traceback

            traceback.print_exc()
    finally:
        if ledger is not None:
            ledger.close(status, reason)
    return code


def _reconcile(ledger: SweepLedger, resume: Resume) -> None:
    """Bring Tune's snapshot into line with the disk before Tune restores it (sweeps/reconcile.py),
    and start the trials whose config changed since (--accept-changes) from scratch: their
    checkpoints emptied, their records removed."""
    from sweeps import reconcile
    from sweeps.storage import remove_leftovers

    remove_leftovers(resume.folder)  # temporary files of writers the kill cut short
    if resume.fresh:  # every trial starts again: none of the records so far stands
        ledger.drop_orphans(set())
        return
    reconcile.prepare(resume.snapshot, resume.retry_failed)
    if resume.restart:
        ledger.drop_trials(set(resume.restart), "to run again from scratch (--accept-changes)")
        for trial in resume.snapshot:
            if trial.trial_id in resume.restart:
                reconcile.forget_checkpoints(trial)


def make_tuner(plan, args, storage: Path, ledger: SweepLedger, resume: Resume | None):
    from ray import tune

    from sweeps.trial import CloseChildren, TrialContext, sweep_trial

    ctx = TrialContext(plan=plan, tracking_uri=ledger.uri, experiment_id=ledger.experiment_id,
                       parent_run_id=ledger.parent_id, sweep_name=ledger.name, git_commit=ledger.commit)
    # quiet_trial: Ray Train's per-checkpoint INFO lines go to the trial folder, not the console.
    trainable = tune.with_resources(tune.with_parameters(console.quiet_trial(sweep_trial), ctx=ctx),
                                    {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    console.route_driver_logs(ledger.folder)  # Tune's driver INFO lines: <experiment folder>/tune.log
    console.quiet_tune_output()  # no Tune console output of its own (verbose=0, RunConfig below)
    if resume is not None and not resume.fresh:
        from sweeps.storage import atomic_filesystem

        tuner = tune.Tuner.restore(str(ledger.folder), trainable=trainable, resume_unfinished=True,
                                   resume_errored=resume.retry_failed, restart_errored=False,
                                   storage_filesystem=atomic_filesystem())
        # Tune restores the callbacks pickled with the experiment, holding the MLflow URI of their
        # day; ledger.uri is today's (a requeued Slurm job's server moves with its head node).
        for callback in tuner._local_tuner.get_run_config().callbacks or []:
            if isinstance(callback, CloseChildren):
                callback.uri = ledger.uri
        return tuner
    return tune.Tuner(trainable, param_space=search.param_space(plan, spaces.launch_order(plan)),
                      tune_config=_tune_config(plan, ledger, resumed=resume is not None),
                      run_config=_run_config(plan, args, storage, ledger))


def finish_sweep(plan, ledger: SweepLedger, wall_s: float, keep_checkpoints: bool = False) -> tuple[str, int]:
    """Read the trials back from Tune and record them (verdicts, trials.csv, the summary, the
    winner); the checkpoints of trials that ended go (unless ``keep_checkpoints``); returns (how
    the sweep ended, the exit code)."""
    from ray import tune

    from sweeps.trial import drop_checkpoints

    # Trial states as saved on disk (Tune snapshots them before it tears the trials down, so
    # a trial cut short by Ctrl-C reads RUNNING there, not TERMINATED).
    analysis = tune.ExperimentAnalysis(str(ledger.folder))
    rows = trial_rows(analysis.trials)
    full = [t for t in rows if schema.disk_full(str(t.get("error", "")))]
    if full:  # the trials' records say so; nothing more can be written here
        raise OSError(errno.ENOSPC, f"trial {full[0]['trial_id']}: {full[0]['error']}")
    if not keep_checkpoints:  # what DropCheckpoints left: the state on disk says these trials ended
        for trial in analysis.trials:
            if trial.status in ("TERMINATED", "ERROR") and trial.path:
                drop_checkpoints(trial.path)
    ledger.record_verdicts(rows)
    unfinished = [t for t in rows if verdict_of_row(t) is INTERRUPTED]
    unfinished += [None] * max(0, plan.n_trials - len(rows))  # never started
    completed = [t for t in rows if t["status"] == COMPLETED.name]
    failed = [t for t in rows if t["status"] == FAILED.name]
    ledger.write_trials(rows)
    summary = console.summary(plan, rows, wall_s, ledger.folder, ledger)
    print(summary, flush=True)
    status, code = "failed", EXIT_FAILED
    if unfinished:
        status, code = "interrupted", EXIT_INTERRUPTED
        print(f"interrupted: {len(unfinished)} trial(s) unfinished; continue with the same command plus "
              f"--resume", flush=True)
    elif completed:
        # The sweep ran to its end; exit 0 only if no trial failed (the others' results stand).
        status, code = "completed", EXIT_FAILED if failed else EXIT_OK
    else:
        print("no trial completed its budget", file=sys.stderr)
    if failed:
        print(f"failed: {len(failed)} trial(s): "
              + "; ".join(f"trial {t['trial_id']}: {t.get('error', '')}" for t in failed), flush=True)
    gaps = ledger.conclude(plan, rows, summary, complete=not unfinished, curves=trial_curves(analysis))
    if gaps and code == EXIT_OK:
        code = EXIT_FAILED  # MLflow has not all of it
    return status, code


def _tune_config(plan, ledger: SweepLedger, resumed: bool = False):
    """``resumed``: a sweep that Tune saved no state of runs afresh, its searcher on the
    sweep's own study (which lives on, its trials of before failed: ``SelectionSearch.reconcile``)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # metric/mode go to the scheduler and the searcher, not TuneConfig (never both).
    scheduler = (ASHAScheduler(metric=schema.ASHA_METRIC, mode="max", **plan.asha) if plan.asha
                 else FIFOScheduler())
    searcher = None
    if plan.searcher == "optuna":  # the study persists beside the MLflow store (optuna-dashboard, importance.py)
        searcher = search.selection_search(
            plan, storage=ledger.info.get("optuna_storage") or search.optuna_storage_url(ledger.uri, default_home()),
            study_name=ledger.info.get("optuna_study") or ledger.name, existing=resumed,
            user_attrs={"space": plan.space, "sweep": ledger.name, "mlflow_parent_run_id": ledger.parent_id})
    # reuse_actors: a trial's process (torch imported, threads set) serves the next trial.
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.num_samples,
                           max_concurrent_trials=plan.max_concurrent, reuse_actors=True)


def _run_config(plan, args, storage: Path, ledger: SweepLedger):
    from ray import tune

    from sweeps.storage import atomic_filesystem
    from sweeps.trial import CloseChildren, DropCheckpoints, StopOnFullDisk

    # verbose=0: none of Tune's own console output (a 150-column table, a result box per trial, a
    # TensorBoard hint); ConsoleReporter prints one line per report instead (sweeps/console.py).
    callbacks = [CloseChildren(ledger.uri, ledger.experiment_id, ledger.parent_id),
                 DropCheckpoints(keep=args.keep_checkpoints), console.ConsoleReporter(plan), StopOnFullDisk()]
    study = ledger.info.get("optuna_study")
    if plan.searcher == "grid" and ledger.info.get("optuna_storage") and study:  # a search's study is its searcher's
        callbacks.insert(0, search.GridStudy(ledger.info["optuna_storage"], study,
                                             {k: list(d.values) for k, d in plan.params.items()},
                                             {"space": plan.space, "sweep": ledger.name,
                                              "mlflow_parent_run_id": ledger.parent_id}))
    # One checkpoint per trial while it runs (the newest: what a resume needs); DropCheckpoints
    # removes it once the trial has ended. storage_filesystem: every file Tune writes there
    # (checkpoints, its experiment state) whole or not at all, so a full disk or a kill mid-copy
    # leaves no truncated file (sweeps/storage.py).
    return tune.RunConfig(
        name=ledger.name, storage_path=str(storage), storage_filesystem=atomic_filesystem(),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        callbacks=callbacks, verbose=0,
    )


def trial_curves(analysis) -> dict[str, list[tuple[int, float]]]:
    """{trial id: [(epoch, val_acc_knn_mean)]}: every trial's reports as Tune kept them (the last
    epoch's comes with the final evaluation)."""
    curves = {}
    for frame in analysis.trial_dataframes.values():
        if {"trial_id", "epoch", schema.ASHA_METRIC} <= set(frame.columns) and len(frame):
            points = frame[["epoch", schema.ASHA_METRIC]].dropna().drop_duplicates("epoch", keep="last")
            curves[str(frame["trial_id"].iloc[0])] = [(int(e), float(v)) for e, v in points.itertuples(index=False)]
    return curves


def trial_rows(trials) -> list[dict[str, Any]]:
    """trials.csv from Tune's trials, one row per trial: id, status (its verdict once Tune ended
    it -- completed / stopped_early / failed -- else Ray's status), epochs, the point, the search
    and selection metrics, per-dataset metrics, the error, what did not reach MLflow."""
    rows = []
    for trial in trials:
        last = dict(trial.last_result or {})
        if trial.status == "ERROR":
            status = FAILED.name
        elif trial.status == "TERMINATED":
            status = ended_verdict(last).name
        else:
            status = trial.status
        row = {"trial_id": trial.trial_id, "status": status, "epochs": last.get("epoch", 0)}
        row.update({f"config/{k}": v for k, v in sorted(trial.config.items())})
        keep = ("val_acc_knn", "acc_mlp", "acc_knn", "acc_linear", "acc_gmm", "recon_error")
        scores = (schema.ASHA_METRIC, schema.SELECTION_METRIC, f"{schema.SELECTION_METRIC}_se", "acc_knn_mean")
        for k in sorted(last):
            if k in scores or k.split("/")[-1] in keep:
                row[k] = last[k]
        if trial.error_file or status == FAILED.name:
            line = console.error_file_line(trial)
            row["error"] = "error" if line is None else line[:300]
        for k in ("tracking_failures", "tracking_error", "tracking_missed"):
            if k in last:
                row[k] = last[k]
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
