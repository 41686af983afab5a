"""Everything a sweep checks before it creates anything: flags, names, URIs, the data, the
cluster's resources, a resumed sweep's folder. Each check raises ``UsageError`` with one line a
person can act on (run.py prints it and exits 2, with nothing created; the first thing created is
the experiment folder, claimed by sweeps/ledger.py's ``claim_folder``).
"""
from __future__ import annotations

import math
import os
import re
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sweeps.schema import first_line

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
# Tracking stores MLflow 3.17 serves (the file store raises unless MLFLOW_ALLOW_FILE_STORE).
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
# Databases an Optuna study can live in (through SQLAlchemy; PostgreSQL on a cluster's head).
OPTUNA_SCHEMES = ("sqlite", "postgresql", "mysql")


class UsageError(RuntimeError):
    """Bad input the user can fix: one line, exit 2."""


def check_flags(args) -> None:
    """The numeric and list flags of run.py, before anything else."""
    if not 0 <= args.search_seed < 2**32:
        raise UsageError(f"--search-seed {args.search_seed}: must be between 0 and 2**32 - 1")
    for flag, value in (("--num-cpus", args.num_cpus), ("--max-concurrent", args.max_concurrent),
                        ("--num-samples", args.num_samples), ("--epochs", args.epochs)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be >= 1")
    if args.early_stopping and args.no_early_stopping:
        raise UsageError("--early-stopping and --no-early-stopping: choose one")
    if args.max_failures < 0:
        raise UsageError(f"--max-failures {args.max_failures}: must be >= 0")
    if args.cpus_per_trial is not None and not (math.isfinite(args.cpus_per_trial) and args.cpus_per_trial > 0):
        raise UsageError(f"--cpus-per-trial {args.cpus_per_trial}: must be a finite number > 0")
    if args.gpus_per_trial is not None and not (math.isfinite(args.gpus_per_trial) and args.gpus_per_trial >= 0):
        raise UsageError(f"--gpus-per-trial {args.gpus_per_trial}: must be a finite number >= 0")
    if args.name is not None and not NAME.fullmatch(args.name):
        raise UsageError(f"--name {args.name!r}: a sweep name is one folder name (letters, digits, '.', '_', '-'; "
                         f"no '/' or leading '.')")
    for flag, given in (("--retry-failed", args.retry_failed), ("--accept-changes", args.accept_changes)):
        if given and not args.resume:
            raise UsageError(f"{flag} goes with --resume (it says how to continue a stopped sweep)")
    if args.storage is not None and "://" in args.storage:
        raise UsageError(f"--storage {args.storage}: must be a local or mounted folder (on a cluster, shared "
                         f"storage mounted on every node), not a URI")


def parse_datasets(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UsageError(f"--datasets {text!r}: names no dataset")
    return names


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers") from None
    if not seeds:
        raise UsageError(f"--seeds {text!r}: names no seed")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: a seed is repeated (each seed is one run per dataset)")
    return seeds


def check_tracking_uri(uri: str) -> None:
    scheme = urlparse(uri).scheme
    if not scheme or "://" not in uri:
        raise UsageError(f"--tracking-uri {uri}: not a tracking URI; use sqlite:///PATH/mlflow.db or "
                         f"http://HOST:PORT")
    if scheme.split("+")[0] not in TRACKING_SCHEMES:
        raise UsageError(f"--tracking-uri {uri}: unsupported scheme {scheme!r}; use one of "
                         f"{', '.join(TRACKING_SCHEMES)}")
    check_no_password("--tracking-uri", uri)


def check_no_password(flag: str, uri: str) -> None:
    """A URL with a password is refused: sweep.json and the MLflow parent run record the URL."""
    if urlparse(uri).password:
        raise UsageError(f"{flag}: the URL holds a password, which sweep.json and MLflow would record; put it "
                         f"in ~/.pgpass (PostgreSQL) or the server's environment instead")


def check_optuna_storage(url: str, timeout: int = 5, study: str | None = None) -> None:
    """The Optuna storage of a searched sweep: a database URL whose server answers within
    ``timeout`` seconds; a SQLite file that exists must be a sound SQLite database, Optuna's or
    empty (its folder writable when it does not exist yet). ``study``: a resumed sweep's study,
    which must be there. Creates nothing."""
    scheme = urlparse(url).scheme
    if "://" not in url or scheme.split("+")[0] not in OPTUNA_SCHEMES:
        raise UsageError(f"--optuna-storage {url}: not a database URL; use sqlite:///PATH/optuna.db or "
                         f"postgresql://USER@HOST:PORT/DB")
    check_no_password("--optuna-storage", url)
    if scheme == "sqlite":
        path = Path(url[len("sqlite:///"):])
        if os.path.lexists(path):
            _check_sqlite_optuna(path, study)
            return
        if study is not None:
            raise UsageError(f"--resume: the sweep's Optuna study database {path} is gone (its study {study} was there)")
        probe = path.parent
        while not probe.exists():
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise UsageError(f"--optuna-storage {url}: {probe} is not writable")
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": timeout})
    try:
        with engine.connect() as conn:
            if study is not None:
                found = conn.execute(sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :n"), {"n": study}).first()
                if found is None:
                    raise UsageError(f"--resume: the sweep's Optuna study {study} is not in {url}")
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 -- any failure to connect is the user's URL or server
        raise UsageError(f"--optuna-storage {url}: cannot connect: {first_line(getattr(e, 'orig', None) or e)}") from None
    finally:
        engine.dispose()


def _check_sqlite_optuna(path: Path, study: str | None) -> None:
    """An existing SQLite file of Optuna's (read only): a regular file, a database whose pages
    pass SQLite's quick check, Optuna's tables or none, and ``study`` in it when given."""
    import sqlite3

    if not path.is_file() or path.is_symlink():
        raise UsageError(f"Optuna storage {path} is not a regular file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            studies = {r[0] for r in db.execute("SELECT study_name FROM studies")} if "studies" in tables else set()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise UsageError(f"Optuna storage {path} is not a sound SQLite database ({first_line(e)}); move it away "
                         f"(a new sweep makes a new one) or point --optuna-storage elsewhere") from None
    if check != "ok":
        raise UsageError(f"Optuna storage {path} is damaged (SQLite's quick check: {check[:120]})")
    if tables and not {"studies", "trials", "version_info"} <= tables:
        raise UsageError(f"Optuna storage {path} is another program's database (tables "
                         f"{', '.join(sorted(tables)[:4])}), not Optuna's")
    if study is not None and study not in studies:
        raise UsageError(f"--resume: the sweep's Optuna study {study} is not in {path}")


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail within seconds on an address where no Ray answers: the port must accept a TCP
    connection and speak HTTP/2 (gRPC: Ray's GCS and its client server), which ``ray.init``
    would otherwise retry for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: expected HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.settimeout(timeout)
            # The HTTP/2 client preface and an empty SETTINGS frame; a gRPC server answers with
            # its own SETTINGS frame (frame type 4 in the fourth byte of the header).
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            head = b""
            while len(head) < 9:
                chunk = s.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as e:
        raise UsageError(f"Ray cluster at {address} is unreachable ({e.strerror or e})") from None
    if len(head) < 9 or head[3] != 0x04:
        raise UsageError(f"--address {address}: something answers there, but not Ray (no gRPC); "
                         f"give the head's GCS address (HOST:6379) or ray://HOST:10001")


def check_data(plan, default_profile: bool = False) -> None:
    """Every dataset of the plan can serve the plan's configs: present (downloaded once, here,
    when missing and possible), readable, big enough for train_size / test_size / knn_k. Missing
    data names the profiles whose data is here; ``default_profile`` (no --profile given) says
    first that the plan is the paper profile's."""
    from sweeps.spaces import run_configs, sample_points
    from trainables.config import resolve_config
    from trainables.datasets import DatasetError, DatasetUnavailable, dataset_sizes

    seen = set()
    for cfg in run_configs(plan, sample_points(plan)[0]):
        if cfg["dataset"] in seen:
            continue
        seen.add(cfg["dataset"])
        cfg = resolve_config(cfg)
        try:
            n_train, _, _ = dataset_sizes(cfg["dataset"], cfg["data_dir"], train_size=cfg["train_size"],
                                          test_size=cfg["test_size"])
        except (DatasetUnavailable, DatasetError) as e:
            here = [f"--profile {p} ({prof.description})" for p, prof in _profiles().items()
                    if p != plan.profile and _runs_here(prof.datasets, cfg["data_dir"])]
            instead = f"; profiles whose data is here: {', '.join(here)}" if here else ""
            if default_profile:
                prof = _profiles()[plan.profile]
                raise UsageError(f"no --profile means --profile {plan.profile}: {prof.description}, on "
                                 f"{', '.join(prof.datasets)}; its data is not here: {e}{instead}") from None
            raise UsageError(f"{e}{instead}") from None
        if cfg["knn_k"] > n_train:
            raise UsageError(f"knn_k={cfg['knn_k']} is larger than the {n_train} training images of {cfg['dataset']}")
        if cfg["device"].startswith("cuda") and plan.gpus_per_trial <= 0:
            raise UsageError(f"device={cfg['device']} needs a GPU per trial: add --gpus-per-trial (e.g. 1 or 0.5)")


def _runs_here(datasets, data_dir) -> bool:
    """Every one of ``datasets`` is built in or its files are in ``data_dir`` (nothing downloaded)."""
    from trainables.datasets import DatasetError, DatasetUnavailable, dataset_sizes

    for d in datasets:
        if _offline(d):
            continue
        try:
            dataset_sizes(d, data_dir, download=False)
        except (DatasetUnavailable, DatasetError):
            return False
    return True


def _profiles():
    from sweeps.spaces import PROFILES

    return PROFILES


def _offline(dataset: str) -> bool:
    from trainables.datasets import DATASETS

    return DATASETS[dataset].offline


def check_resources(plan, address: str | None) -> None:
    """Some live node can hold one trial (CPUs and GPUs); else the trials would wait forever."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need_cpu, need_gpu = plan.cpus_per_trial, plan.gpus_per_trial
    if any(r.get("CPU", 0) >= need_cpu and r.get("GPU", 0) >= need_gpu for r in nodes):
        return
    best_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
    best_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
    where = "the cluster's" if address else "this machine's local Ray"
    hint = " (an autoscaling cluster: start its workers first)" if address else ""
    raise UsageError(f"no node of {where} {len(nodes)} can hold a trial of {need_cpu:g} CPU and {need_gpu:g} GPU "
                     f"(the largest has {best_cpu:g} CPU, {best_gpu:g} GPU): lower --cpus-per-trial / "
                     f"--gpus-per-trial{hint}")


def check_gpus_for_paper(plan) -> None:
    """The paper profile (400 epochs on four datasets) on a cluster without GPUs would run for
    weeks: refuse, with an estimate from a throughput measured here, unless --allow-cpu."""
    import ray

    if plan.profile != "paper" or any(n.get("Resources", {}).get("GPU", 0) > 0 for n in ray.nodes() if n.get("Alive")):
        return
    hours, rates = cpu_hours(plan)
    measured = ", ".join(f"{d} {v:,.0f} views/s" for d, v in rates.items())
    raise UsageError(f"the paper profile on a cluster without GPUs: about {hours:,.0f} CPU-hours for its "
                     f"{plan.n_trials} trial(s) (measured here: {measured}); add --allow-cpu to run it anyway, "
                     f"or use --profile laptop (real MNIST/FashionMNIST subsets, CPU hours) or --profile quick "
                     f"(offline datasets, CPU minutes)")


def cpu_hours(plan, steps: int = 2) -> tuple[float, dict[str, float]]:
    """Training CPU-hours of the plan's trials, from a few of the driver's own optimiser steps
    (``trainables.driver.train_step``: augmentation, loss, update) on each dataset's network,
    timed here on random images of its shape (evaluation not counted: a lower bound)."""
    import time

    import torch

    from models import METHODS
    from sweeps.spaces import run_configs, sample_points
    from trainables.augment import AugmentConfig
    from trainables.config import resolve_config
    from trainables.datasets import DATASETS, dataset_sizes
    from trainables.driver import build_method, optimiser, train_step

    seconds, rates, seen = 0.0, {}, set()
    points = sample_points(plan)  # a point whose method trains (table1's first is the random encoder)
    point = next((p for p in points if METHODS[run_configs(plan, p)[0]["method"]].trainable), points[0])
    cpu = torch.device("cpu")
    for cfg in run_configs(plan, point):
        cfg = resolve_config(cfg)
        if cfg["dataset"] in seen:
            continue
        seen.add(cfg["dataset"])
        info = DATASETS[cfg["dataset"]]
        method = build_method(cfg, info, cpu)
        opt = optimiser(method, cfg)
        J = method.n_views()
        images = max(1, cfg["batch_size"] // J)
        clean = torch.rand(images, *info.image_shape)
        aug = AugmentConfig.for_dataset(info, cfg["augment"])
        gen = torch.Generator().manual_seed(0)
        t0 = 0.0
        for i in range(steps + 1):  # the first step warms up, unmeasured
            if i == 1:
                t0 = time.perf_counter()
            if opt is not None:
                train_step(method, opt, clean, J, aug, gen)
        rate = steps * images * J / max(time.perf_counter() - t0, 1e-9)
        rates[cfg["dataset"]] = rate
        n_train, _, _ = dataset_sizes(cfg["dataset"], cfg["data_dir"], train_size=cfg["train_size"],
                                      test_size=cfg["test_size"])
        seconds += cfg["epochs"] * n_train * J * len(plan.seeds) / rate
    return seconds * plan.n_trials / 3600, rates


def check_trusted(folder: Path, contents: bool = True) -> None:
    """The storage trust boundary. Resuming unpickles Ray's experiment state from ``folder``
    (``tuner.pkl``, ``experiment_state-*.json``, ``searcher-state-*.pkl``, each trial's files) and
    writes into it: refuse a folder holding anything -- the folder itself included -- that is a
    symbolic link, owned by another user or writable by group or others (each path checked with
    ``lstat``, never followed), and a storage folder others may write to (they could swap the
    sweep's folder) unless it is sticky, as /tmp is. ``contents=False``: the folder and the storage
    folder only (enough to write the sweep's lock there, before the rest is looked at)."""
    folder = Path(folder)
    uid = os.getuid()
    why = "(Ray's experiment state there is pickled code)"
    parent = folder.parent.lstat()
    if parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not parent.st_mode & stat.S_ISVTX:
        raise UsageError(f"--resume: the storage folder {folder.parent} is writable by other users, who could "
                         f"replace the sweep's folder {why}: chmod go-w {folder.parent}")

    def refuse_unless_ours(p: Path) -> None:
        try:
            st = p.lstat()
        except FileNotFoundError:
            return  # gone since it was listed: nothing to read
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(f"--resume: {p} is a symbolic link; a sweep folder holds none {why}")
        if st.st_uid != uid:
            raise UsageError(f"--resume: {p} is owned by another user; the storage folder must be yours alone {why}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UsageError(f"--resume: {p} is writable by other users; the storage folder must be yours alone "
                             f"{why}: chmod -R go-w {folder}")

    refuse_unless_ours(folder)
    if not contents:
        return

    def walk_error(e: OSError) -> None:
        if not isinstance(e, FileNotFoundError):
            raise UsageError(f"--resume: cannot read {e.filename}: {e.strerror}") from None

    for root, dirs, files in os.walk(folder, onerror=walk_error):  # os.walk never follows a link
        for name in dirs + files:
            refuse_unless_ours(Path(root) / name)


def check_storage(storage: Path) -> None:
    """The folder a new sweep's experiment folder goes under: on a file system that holds files
    (not /proc, /sys, ...) and writable where it exists (created later where it does not)."""
    from sweeps.schema import special_filesystem

    special = special_filesystem(storage)
    if special:
        raise UsageError(f"--storage: {special}")
    probe = Path(storage)
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--storage {storage}: {probe} is not a writable folder")


def check_config_identity(folder: Path, trial_ids: set[str], accept: bool) -> set[str]:
    """The trials ``trial_ids`` (those a resume will run again) whose config resolves today to
    another identity than the one they ran under (the resolved config in their result.json, less
    the keys a run may change when it resumes): a default changed in the code since, so their
    checkpoints are another run's. UsageError (one line: the keys, then and now, and the choice)
    unless ``accept``; returns the changed trials (to run again from scratch)."""
    import json

    from sweeps.schema import find_results, read_result
    from trainables.config import ConfigError, resolve_config
    from trainables.driver import RESUMABLE_KEYS

    changed: dict[str, tuple[Any, Any]] = {}
    trials: set[str] = set()
    for path in find_results(folder):
        try:
            record = read_result(path)
        except ValueError:
            continue
        trial = record["run"].get("trial_id")
        if trial not in trial_ids:
            continue
        try:
            today = json.loads(json.dumps(resolve_config(record["config"]), default=str))
        except ConfigError as e:
            raise UsageError(f"--resume: trial {trial}'s config does not validate any more: {e}") from None
        then = record.get("resolved") or {}
        for key in sorted(set(then) | set(today)):
            if key not in RESUMABLE_KEYS and then.get(key, "<unset>") != today.get(key, "<unset>"):
                changed.setdefault(key, (then.get(key, "<unset>"), today.get(key, "<unset>")))
                trials.add(trial)
    if changed and not accept:
        keys = "; ".join(f"{k} {a!r} then, {b!r} now" for k, (a, b) in list(changed.items())[:3])
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise UsageError(f"--resume: the config of {len(trials)} trial(s) to resume changed since the sweep stopped "
                         f"(a default changed in the code?): {keys}{more}; revert the change, or add --accept-changes "
                         f"to run those trials again from scratch")
    return trials


def plan_inputs(args, sets: dict[str, Any]) -> dict[str, Any]:
    """The plan's inputs as plain data (sweep.json keeps them beside the expanded plan); no
    --profile means the default one (``spaces.DEFAULT_PROFILE``), for run.py and slurm.py alike."""
    from sweeps.spaces import DEFAULT_PROFILE

    return {
        "profile": args.profile or DEFAULT_PROFILE, "datasets": parse_datasets(args.datasets), "epochs": args.epochs,
        "num_samples": args.num_samples, "seeds": parse_seeds(args.seeds), "sets": sets,
        "data_dir": args.data_dir, "selection": args.selection, "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial, "max_concurrent": args.max_concurrent,
        "search_seed": args.search_seed,
        "early_stopping": True if args.early_stopping else False if args.no_early_stopping else None,
    }
