"""Run a named sweep on Ray Tune: ``python sweeps/run.py --space simvae_J --profile quick``.

The space (sweeps/spaces.py) and the profile are expanded into a plan and every config it can
produce is validated before Ray starts. Searched spaces run Optuna TPE (``SelectionSearch``:
it learns the mean MLP-probe accuracy across datasets, see sweeps/search.py); grids run through
Tune's grid search; ASHA stops trials on the across-dataset validation kNN accuracy, one rung
per ``epoch``. MLflow gets one experiment per space, one parent run per sweep and one child per
trial, dataset and seed (sweeps/tracking.py). At the end: a summary table, ``trials.csv`` in the
experiment folder, exit code 0 only if the sweep completed.

Exit codes: 0 completed; 1 the sweep ran but no trial completed, or it crashed; 2 bad input
(nothing created); 130 interrupted (Ctrl-C; resume with the same command plus --resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not from sweeps/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sweeps import outcomes, preflight, schema, search, spaces, tracking  # noqa: E402
from sweeps.preflight import UsageError  # noqa: E402
from sweeps.schema import SWEEP_FILE, TRIALS_FILE  # noqa: E402
from sweeps.search import SELECT_METRIC  # noqa: E402
from sweeps.spaces import SpaceError  # noqa: E402
from sweeps.tracking import TrackingError  # noqa: E402
from trainables.config import ConfigError, parse_pairs  # noqa: E402

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
    p.add_argument("--profile", default="paper", help="paper (default: the paper's datasets and budgets, GPUs), "
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
    p.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial from its last "
                   "checkpoint (node loss on a cluster; a NaN is not retried by default)")
    return p


def expand_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The plan's inputs as plain data (stored in sweep.json beside the expanded plan)."""
    return preflight.plan_inputs(args, _sets(args.set))


def _sets(items: list[str]) -> dict[str, Any]:
    try:
        return parse_pairs(items)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def find_resumable(storage: Path, space: str, profile: str, name: str | None) -> tuple[Path, bool]:
    """(experiment folder, repair): --name, else the newest unfinished sweep of space/profile;
    repair is True for a completed sweep whose records a tracking outage left incomplete (or any
    completed sweep named with --name)."""
    from ray import tune

    if name:
        candidates = [storage / name]
    else:
        candidates = sorted(storage.glob(f"*/{SWEEP_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
        candidates = [p.parent for p in candidates]
    for folder in candidates:
        f = folder / SWEEP_FILE
        if not f.exists():
            continue
        info = json.loads(f.read_text())
        if info["space"] != space:
            if name:
                raise UsageError(f"--resume --name {name}: that sweep is of space {info['space']}, not {space}")
            continue
        if name is None and info["expand"]["profile"] != profile:
            continue
        if info["status"] == "completed":
            if name or info.get("tracking_incomplete"):
                return folder, True
            continue
        if tune.Tuner.can_restore(str(folder)):
            return folder, False
    what = f"no sweep {name}" if name else f"no unfinished {space} sweep (profile {profile})"
    raise UsageError(f"--resume: nothing to resume: {what} under {storage}")


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
            raise UsageError(f"cannot join the Ray cluster at {address}: {tracking._first_line(e)}") from None
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(spaces.listing())
        return EXIT_OK
    home = default_home()
    claimed = None  # the experiment folder this invocation created (removed if it stops at a check)
    owns_ray = False
    try:
        preflight.check_flags(args)
        storage = Path(args.storage).expanduser().resolve() if args.storage else schema.storage_dir(home)
        if args.show:
            print(spaces.describe(spaces.expand(args.show, **expand_kwargs(args))))
            return EXIT_OK
        if not args.space:
            raise UsageError("no space given: --space NAME (see --list)")
        resume_from = None
        if args.resume:
            if args.space not in spaces.SPACES:
                spaces.expand(args.space, args.profile)  # the unknown-space message
            resume_from, repair = find_resumable(storage, args.space, args.profile, args.name)
            preflight.check_trusted(resume_from)
            info = json.loads((resume_from / SWEEP_FILE).read_text())
            plan = spaces.Plan.from_dict(info["plan"])  # the plan as it ran, not today's spaces.py
            uri = info["tracking_uri"]
            tracking.check_reachable(uri)
            optuna_url = info.get("optuna_storage") or search.optuna_storage_url(uri, home)
            if repair:
                return _repair(resume_from, info)
        else:
            plan = spaces.expand(args.space, **expand_kwargs(args))
            uri = tracking.absolute_uri(args.tracking_uri) if args.tracking_uri else tracking.default_tracking_uri(home)
            preflight.check_tracking_uri(uri)
            optuna_url = search.optuna_storage_url(uri, home, args.optuna_storage)
            if args.name and (storage / args.name).exists():  # at once; claim_folder settles races
                raise UsageError(f"--name {args.name}: {storage / args.name} is taken by another sweep (add "
                                 f"--resume to continue it, or choose another name)")
            tracking.check_reachable(uri)
        if plan.searcher == "optuna":
            preflight.check_optuna_storage(optuna_url)
        else:
            optuna_url = None
        preflight.check_data(plan)
        address = args.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            preflight.check_address(address)
        owns_ray = connect_ray(address, args.num_cpus)
        preflight.check_resources(plan, address)
        if not args.allow_cpu:
            preflight.check_gpus_for_paper(plan)
        if resume_from is None:  # the first thing this sweep creates: its folder, exclusively
            claimed = preflight.claim_folder(storage, args.name, plan.space, plan.profile)
    except (SpaceError, TrackingError, UsageError, ConfigError) as e:
        if claimed is not None:
            shutil.rmtree(claimed, ignore_errors=True)
        if owns_ray:
            import ray

            ray.shutdown()
        print(f"run.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    print(spaces.describe(plan), flush=True)
    terminated = _stop_on_sigterm()
    try:
        code = run_sweep(plan, args, storage, uri, resume_from, claimed, optuna_url)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    return EXIT_TERMINATED if terminated.is_set() and code == EXIT_INTERRUPTED else code


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


def _repair(folder: Path, info: dict) -> int:
    closed = outcomes.repair(folder, info)
    info = {k: v for k, v in json.loads((folder / SWEEP_FILE).read_text()).items() if k != "tracking_incomplete"}
    _write_status(folder, info, "completed")
    print(f"repaired the MLflow records of completed sweep {info['name']}: {closed} open child run(s) closed, "
          f"parent run ended, summary logged", flush=True)
    return EXIT_OK


def run_sweep(plan, args, storage: Path, uri: str, resume_from: Path | None, claimed: Path | None = None,
              optuna_url: str | None = None) -> int:
    """Open the sweep's records, run Tune, read back what happened, close the records."""
    started = time.time()
    status, code = "FAILED", EXIT_FAILED
    sweep = None
    try:
        sweep = open_sweep(plan, args, storage, uri, resume_from, claimed, optuna_url)
        make_tuner(plan, args, storage, sweep, resume_from is not None).fit()
        status, code = finish_sweep(plan, sweep, time.time() - started)
    except KeyboardInterrupt:
        status, code = "KILLED", EXIT_INTERRUPTED
        print("interrupted; continue with the same command plus --resume", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 -- reported in one line, the parent run ends FAILED
        status, code = "FAILED", EXIT_FAILED
        print(f"run.py: sweep failed: {tracking._first_line(e)}", file=sys.stderr)
        import traceback

        traceback.print_exc()
    finally:
        if sweep is not None:
            close_sweep(sweep, status)
    return code


@dataclass
class Sweep:
    """One invocation's records: its experiment folder, sweep.json and MLflow parent run."""

    name: str
    folder: Path
    uri: str
    experiment_id: str
    parent_id: str
    commit: str
    info: dict[str, Any]


def open_sweep(plan, args, storage: Path, uri: str, resume_from: Path | None, claimed: Path | None = None,
               optuna_url: str | None = None) -> Sweep:
    """Create (or, resuming, reopen) the MLflow parent run and the experiment folder.
    ``optuna_url``: the study's database (searched sweeps only)."""
    commit = tracking.git_commit(schema.repo_root())
    exp_id = tracking.ensure_experiment(uri, plan.space)
    if resume_from is not None:
        info = json.loads((resume_from / SWEEP_FILE).read_text())
        sweep = Sweep(info["name"], resume_from, uri, exp_id, info["parent_run_id"], commit, info)
        tracking.reopen(uri, sweep.parent_id)
        # After a hard kill children can be left RUNNING: close them now; the trials that
        # resume reopen theirs (found by tags), the rest stay closed.
        tracking.close_children(uri, exp_id, sweep.parent_id, "KILLED", closed_by="resume")
        print(f"resuming {resume_from}", flush=True)
    else:
        folder = claimed or preflight.claim_folder(storage, args.name, plan.space, plan.profile)
        name = folder.name
        T = schema.Tag
        parent_id = tracking.create_parent(
            uri, exp_id, name,
            {T.SPACE: plan.space, T.PROFILE: plan.profile, T.GIT_COMMIT: commit, T.SWEEP: name,
             T.SEARCHER: plan.searcher,
             **({tracking.OPTUNA_STORAGE: optuna_url, tracking.OPTUNA_STUDY: name} if optuna_url else {})},
            {"datasets": ",".join(plan.datasets), "seeds": ",".join(map(str, plan.seeds)),
             "num_samples": plan.num_samples, "searcher": plan.searcher,
             "asha": plan.asha, "params": {k: d.describe() for k, d in plan.params.items()},
             **{f"fixed.{k}": v for k, v in plan.fixed.items()}},
            plan=plan)  # + the sweep's and the experiment's descriptions, the searched keys (run names)
        info = {"name": name, "space": plan.space, "expand": expand_kwargs(args), "plan": plan.to_dict(),
                "tracking_uri": uri, "optuna_storage": optuna_url, "experiment_id": exp_id,
                "parent_run_id": parent_id, "git_commit": commit,
                "created": datetime.now().isoformat(timespec="seconds")}
        sweep = Sweep(name, folder, uri, exp_id, parent_id, commit, info)
    _write_status(sweep.folder, sweep.info, "running")
    print(f"MLflow: {uri}", flush=True)
    print(f"  experiment {schema.EXPERIMENT_PREFIX}{plan.space}, parent run {sweep.parent_id}", flush=True)
    return sweep


def make_tuner(plan, args, storage: Path, sweep: Sweep, resume: bool):
    from ray import tune

    from sweeps import console
    from sweeps.trial import CloseChildren, TrialContext, sweep_trial

    ctx = TrialContext(plan=plan, tracking_uri=sweep.uri, experiment_id=sweep.experiment_id,
                       parent_run_id=sweep.parent_id, sweep_name=sweep.name, git_commit=sweep.commit)
    # quiet_trial: Ray Train's per-checkpoint INFO lines go to the trial folder, not the console.
    trainable = tune.with_resources(tune.with_parameters(console.quiet_trial(sweep_trial), ctx=ctx),
                                    {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    console.route_driver_logs(sweep.folder)  # Tune's driver INFO lines: <experiment folder>/tune.log
    console.quiet_tune_output()  # no Tune console output of its own (verbose=0, RunConfig below)
    if resume:
        tuner = tune.Tuner.restore(str(sweep.folder), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        # Tune restores the callbacks pickled with the experiment, holding the MLflow URI of their
        # day; sweep.uri is today's (a requeued Slurm job's server moves with its head node).
        for callback in tuner._local_tuner.get_run_config().callbacks or []:
            if isinstance(callback, CloseChildren):
                callback.uri = sweep.uri
        return tuner
    return tune.Tuner(trainable, param_space=search.param_space(plan, spaces.launch_order(plan)), tune_config=_tune_config(plan, sweep),
                      run_config=_run_config(plan, args, storage, sweep))


def finish_sweep(plan, sweep: Sweep, wall_s: float) -> tuple[str, int]:
    """Read the trials back, write trials.csv and the summary, log them on the parent run;
    returns (the parent's status, the exit code)."""
    from ray import tune

    # Trial states as saved on disk (Tune snapshots them before it tears the trials down, so
    # a trial cut short by Ctrl-C reads RUNNING there, not TERMINATED).
    analysis_trials = tune.ExperimentAnalysis(str(sweep.folder)).trials
    trials = _trial_table(analysis_trials)
    try:
        outcomes.label(sweep.uri, sweep.experiment_id, sweep.parent_id, trials,
                       {t.trial_id: t.local_path for t in analysis_trials})
    except Exception as e:  # noqa: BLE001 -- the server went away: reported with the other gaps
        print(f"run.py: MLflow: trial outcomes not recorded: {tracking._first_line(e)}", file=sys.stderr)
    unfinished = [t for t in trials if t["status"] not in ("completed", "stopped_early", "failed")]
    unfinished += [None] * max(0, plan.n_trials - len(trials))  # never started
    completed = [t for t in trials if t["status"] == "completed"]
    failed = [t for t in trials if t["status"] == "failed"]
    _write_csv(sweep.folder / TRIALS_FILE, trials)
    summary = _summary(plan, trials, wall_s, sweep.folder, sweep)
    print(summary, flush=True)
    status, code = "FAILED", EXIT_FAILED
    if unfinished:
        status, code = "KILLED", EXIT_INTERRUPTED
        print(f"interrupted: {len(unfinished)} trial(s) unfinished; continue with the same command plus "
              f"--resume", flush=True)
    elif completed:
        # The sweep ran to its end; exit 0 only if no trial failed (the others' results stand).
        status, code = "FINISHED", EXIT_FAILED if failed else EXIT_OK
    else:
        print("no trial completed its budget", file=sys.stderr)
    if failed:
        print(f"failed: {len(failed)} trial(s): "
              + "; ".join(f"trial {t['trial_id']}: {t.get('error', '')}" for t in failed), flush=True)
    driver_gap = None
    try:
        if not unfinished:
            _drop_orphans(sweep.uri, sweep.experiment_id, sweep.parent_id, {t["trial_id"] for t in trials})
        _log_parent(sweep.uri, sweep.parent_id, trials, sweep.folder, summary, plan, sweep)
    except Exception as e:  # noqa: BLE001 -- the server went away: say so below, keep the results
        driver_gap = tracking._first_line(e)
    gaps = _tracking_report(sweep.uri, trials, driver_gap)
    if gaps:
        sweep.info = {**json.loads((sweep.folder / SWEEP_FILE).read_text()), "tracking_incomplete": gaps}
        _write_status(sweep.folder, sweep.info, "running")
        if code == EXIT_OK:
            code = EXIT_FAILED
    return status, code


def close_sweep(sweep: Sweep, status: str) -> None:
    """Close every child still open and the parent run; record the status in sweep.json."""
    child_status = {"FINISHED": "FINISHED", "KILLED": "KILLED"}.get(status, "FAILED")
    try:
        tracking.close_children(sweep.uri, sweep.experiment_id, sweep.parent_id, child_status, closed_by="driver",
                                **({schema.Tag.INTERRUPTED: "true"} if child_status == "KILLED" else {}))
        tracking.end_run(sweep.uri, sweep.parent_id, status)
    except Exception as e:  # noqa: BLE001
        print(f"run.py: could not close MLflow runs: {tracking._first_line(e)}", file=sys.stderr)
    if (sweep.folder / SWEEP_FILE).exists():
        info = json.loads((sweep.folder / SWEEP_FILE).read_text())
        _write_status(sweep.folder, info, {"FINISHED": "completed", "KILLED": "interrupted"}.get(status, "failed"))


def _tracking_report(uri: str, trials: list[dict[str, Any]], driver_gap: str | None) -> dict[str, str]:
    """Print what did not reach MLflow (trials report their failed tracking calls; the driver its
    own end-of-sweep records) and return {trial id or "sweep": what was not logged}. Nothing is
    buffered: the trials' results are in trials.csv, their checkpoints in the experiment folder."""
    gaps = {t["trial_id"]: f"{t['tracking_failures']} record(s) not logged ({t.get('tracking_missed', '')}); "
            f"first error: {t.get('tracking_error', '')}"
            for t in trials if _count(t.get("tracking_failures"))}
    if driver_gap:
        gaps["sweep"] = f"the parent run's summary, trials.csv and orphan cleanup not logged: {driver_gap}"
    if gaps:
        n = len(gaps) - ("sweep" in gaps)
        print(f"MLflow tracking failed ({uri}): {n} trial(s){' and the sweep' if driver_gap else ''} not "
              f"fully logged; nothing was buffered; training went on (results: trials.csv)", flush=True)
        for who, what in gaps.items():
            print(f"  {'trial ' + who if who != 'sweep' else 'sweep'}: {what}", flush=True)
    return gaps


def _count(v) -> int:
    try:
        return int(float(v)) if v is not None and math.isfinite(float(v)) else 0
    except (TypeError, ValueError):
        return 0


def _drop_orphans(uri: str, exp_id: str, parent_id: str, trial_ids: set[str]) -> None:
    """Delete the children of trials that are not in the experiment any more: after a hard kill
    of the driver, trials started since Tune's last snapshot are forgotten and rerun under new
    ids, which would leave two children for one config."""
    c = tracking.client(uri)
    for run in tracking.find_children(uri, exp_id, parent_id):
        if run.data.tags.get("trial_id") not in trial_ids:
            if run.info.status == "RUNNING":
                c.set_terminated(run.info.run_id, status="KILLED")
            c.delete_run(run.info.run_id)
            print(f"MLflow: deleted child run {run.info.run_id} of a trial lost in a hard kill", flush=True)


def _write_status(folder: Path, info: dict, status: str) -> None:
    info = {**info, "status": status, "updated": datetime.now().isoformat(timespec="seconds")}
    tmp = folder / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str))
    os.replace(tmp, folder / SWEEP_FILE)


def _tune_config(plan, sweep: Sweep):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # metric/mode go to the scheduler and the searcher, not TuneConfig (never both).
    scheduler = (ASHAScheduler(metric=search.SEARCH_METRIC, mode="max", **plan.asha) if plan.asha
                 else FIFOScheduler())
    searcher = None
    if plan.searcher == "optuna":  # the study persists beside the MLflow store (optuna-dashboard, importance.py)
        searcher = search.selection_search(
            plan, storage=sweep.info.get("optuna_storage") or search.optuna_storage_url(sweep.uri, default_home()),
            study_name=sweep.name,
            user_attrs={"space": plan.space, "sweep": sweep.name, "mlflow_parent_run_id": sweep.parent_id})
    # reuse_actors: a trial's process (torch imported, threads set) serves the next trial.
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.num_samples,
                           max_concurrent_trials=plan.max_concurrent, reuse_actors=True)


def _run_config(plan, args, storage: Path, sweep: Sweep):
    from ray import tune

    from sweeps import console
    from sweeps.trial import CloseChildren

    # verbose=0: none of Tune's own console output (a 150-column table, a result box per trial, a
    # TensorBoard hint); ConsoleReporter prints one line per report instead (sweeps/console.py).
    return tune.RunConfig(
        name=sweep.name, storage_path=str(storage),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        callbacks=[CloseChildren(sweep.uri, sweep.experiment_id, sweep.parent_id), console.ConsoleReporter(plan)],
        verbose=0,
    )


def _trial_table(trials) -> list[dict[str, Any]]:
    """One row per trial: id, status (completed / stopped_early / failed / Ray's status when
    unfinished), epochs, the point, the search and selection metrics, per-dataset metrics."""
    rows = []
    for trial in trials:
        last = dict(trial.last_result or {})
        if trial.status == "ERROR":
            status = "failed"
        elif trial.status == "TERMINATED":
            status = "completed" if SELECT_METRIC in last else "stopped_early"
        else:
            status = trial.status
        row = {"trial_id": trial.trial_id, "status": status, "epochs": last.get("epoch", 0)}
        row.update({f"config/{k}": v for k, v in sorted(trial.config.items())})
        keep = ("val_acc_knn", "acc_mlp", "acc_knn", "acc_linear", "acc_gmm", "recon_error")
        for k in sorted(last):
            if k in ("val_acc_knn_mean", "acc_mlp_mean", "acc_knn_mean") or k.split("/")[-1] in keep:
                row[k] = last[k]
        if trial.error_file or status == "failed":
            row["error"] = _trial_error(trial)
        for k in ("tracking_failures", "tracking_error", "tracking_missed"):
            if k in last:
                row[k] = last[k]
        rows.append(row)
    return rows


def _trial_error(trial) -> str:
    try:
        text = Path(trial.local_path, "error.txt").read_text().strip().splitlines()
        lines = [ln for ln in text if ln and not ln.startswith(" ")]
        return lines[-1][:300] if lines else ""
    except (OSError, TypeError, AttributeError):
        return "error"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


def _best_learned(trials: list[dict[str, Any]], best: dict[str, Any]) -> list[str]:
    """When the winner is a baseline (the random encoder, the raw pixels: a method that does not
    train), the line that names the best method that learns, so that a reader does not take the
    baseline for a method's result."""
    from models import METHODS

    def learns(t):
        method = METHODS.get(str(t.get("config/method", "")))
        return method is None or method.trainable

    if learns(best):
        return []
    learned = tracking.best_trial([t for t in trials if learns(t)])
    said = f"  ({best['config/method']} is a baseline, not a learned representation"
    if learned is None:
        return [said + "; no learned method completed)"]
    return [said + f"; the best learned method: {learned['config/method']}, "
                   f"mean MLP probe {_fmt(learned[SELECT_METRIC], True)})"]


def _summary(plan, trials: list[dict[str, Any]], wall_s: float, folder: Path, sweep: Sweep | None = None) -> str:
    """The end-of-sweep summary (printed, and summary.txt on the parent run): counts, the winner's
    per-dataset accuracies in percent, where the trials and the MLflow runs are."""
    counts = {s: sum(t["status"] == s for t in trials) for s in ("completed", "stopped_early", "failed")}
    lines = ["", f"== sweep {plan.space} ({plan.profile}){f': {sweep.name}' if sweep else ''} ==",
             f"trials: {len(trials)} run, {counts['completed']} completed, {counts['stopped_early']} stopped "
             f"early by ASHA, {counts['failed']} failed; wall time {wall_s:.0f} s"]
    best = tracking.best_trial(trials)
    if best is not None:
        point = {k[len("config/"):]: v for k, v in best.items() if k.startswith("config/")}
        lines.append(f"best config (mean MLP-probe accuracy across datasets): trial {best['trial_id']}  "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in point.items() if k not in plan.helpers))
        lines.append(f"  {'dataset':<14} {'MLP probe':>9} {'kNN':>8}")
        for d in plan.datasets:
            lines.append(f"  {d:<14} {_fmt(best.get(f'{d}/acc_mlp'), True):>9} {_fmt(best.get(f'{d}/acc_knn'), True):>8}")
        lines.append(f"  {'mean':<14} {_fmt(best[SELECT_METRIC], True):>9} {_fmt(best.get('acc_knn_mean'), True):>8}")
        lines += _best_learned(trials, best)
    else:
        lines.append("no trial completed its full budget: no best config")
    lines.append(f"all trials: {folder / 'trials.csv'}")
    if sweep is not None:
        command = tracking.ui_command(sweep.uri)
        if command:
            lines += ["MLflow UI: serve the store with", f"  {command}", "and open the runs table at"]
        else:
            lines.append("MLflow UI: the runs table at")
        lines.append(f"  {tracking.ui_link(sweep.uri, sweep.experiment_id)}")
    return "\n".join(lines)


def _fmt(v, percent: bool = False) -> str:
    """A value for the summary; ``percent``: an accuracy (a fraction) as e.g. ``93.2%``."""
    if isinstance(v, float) and percent and math.isfinite(v):
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return tracking.fmt_value(v)
    return "-" if v is None else str(v)


def _log_parent(uri: str, parent_id: str, trials: list[dict], folder: Path, summary: str, plan=None,
                sweep: Sweep | None = None) -> None:
    """The end of the sweep on its parent run: counts, the winner (tracking.record_winner), the
    children named by their outcomes, trials.csv and summary.txt."""
    c = tracking.client(uri)
    counts = {s: sum(t["status"] == s for t in trials) for s in ("completed", "stopped_early", "failed")}
    tracking.log_metrics(c, parent_id, {"trials": len(trials)}, 0)
    if plan is not None and sweep is not None:
        best = tracking.best_trial(trials)
        note = tracking.winner_line(best, plan, counts) + tracking.sweep_note(plan, sweep.name)
        tracking.record_winner(uri, parent_id, best, tracking.searched_keys(plan), list(plan.datasets), counts, note)
        tracking.name_children_by_outcome(uri, sweep.experiment_id, parent_id)
    else:
        tracking.log_metrics(c, parent_id, {f"trials_{k}": v for k, v in counts.items()}, 0)
    (folder / "summary.txt").write_text(summary + "\n")
    for f in ("trials.csv", "summary.txt"):
        c.log_artifact(parent_id, str(folder / f))


if __name__ == "__main__":
    sys.exit(main())
