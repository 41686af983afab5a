"""The record schema: what sweeps write and analysis reads, defined once.

Where things live (absolute paths; trials run in their own folders):
    home                 $SSL_SWEEPS_HOME, else <repo>/runs
    storage              <home>/tune: one Ray experiment folder per sweep, holding ``sweep.json``
                         (the expanded plan and the sweep's status), ``trials.csv`` and one folder
                         per trial with a ``runs/<dataset>-s<seed>/result.json`` per run
    tracking URI         $MLFLOW_TRACKING_URI, else sqlite:///<home>/mlflow.db
    selection file       <repo>/results/selection.yaml (written by analysis/select.py, read by
                         the table1 space)

MLflow: one experiment per space, ``ssl-sweeps/<space>``; one parent run per sweep; one child
run per (trial, dataset, seed) carrying the tags in ``Tag``, the run's user config as params
(JSON-encoded values) and its metrics (per epoch at step = epoch; final values last).

``result.json`` (one per run, self-describing): ``{"schema": 1, "run": {identity and outcome},
"config": {the user config}, "resolved": {the resolved config}, "metrics": {final metrics}}``.

What happened to a trial -- its ``Verdict`` -- is written the same way in MLflow (run status,
tags, name suffix) and in result.json (``status``, ``stopped_early``, ``interrupted``): the
table below is the one encoding, and sweeps/ledger.py the one writer. The record helpers
(``plain`` numbers, ``first_line`` / ``error_line`` of an exception, ``write_atomic``) are
trainables/recording.py's, re-exported here for sweeps and analysis.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.recording import (disk_full, error_line, first_line, plain,  # noqa: F401 -- the record helpers
                                  special_filesystem, write_atomic, write_text_atomic)

EXPERIMENT_PREFIX = "ssl-sweeps/"
SWEEP_FILE = "sweep.json"
TRIALS_FILE = "trials.csv"
RESULT_FILE = "result.json"
RESULT_SCHEMA = 1
SELECTION_FILE = Path("results") / "selection.yaml"
SUMMARY_FILE = "summary.txt"

# The metrics a sweep ranks trials by, as a trial reports them (trainables.driver's aggregate:
# the mean over seeds per dataset, then over datasets).
ASHA_METRIC = "val_acc_knn_mean"  # in every report: what ASHA stops on, Optuna's intermediate values
SELECTION_METRIC = "acc_mlp_mean"  # in the final report: the paper's rule; the winner, Optuna's objective


class Tag:
    """Tag names on MLflow runs (children unless marked) and experiments."""

    PARENT = "mlflow.parentRunId"  # MLflow's own: the child's parent run
    NOTE = "mlflow.note.content"  # MLflow's own: the description shown in the UI
    SPACE = "space"  # parent and children
    PROFILE = "profile"  # parent and children
    SWEEP = "sweep"  # parent and children: the sweep's name (its experiment folder)
    GIT_COMMIT = "git_commit"  # parent and children
    SEARCHER = "searcher"  # parent
    CONFIG_HASH = "config_hash"
    TRIAL_ID = "trial_id"
    METHOD = "method"
    DATASET = "dataset"
    SEED = "seed"
    STOPPED_EARLY = "stopped_early"  # 'true' when ASHA stopped the trial
    INTERRUPTED = "interrupted"  # 'true' when the sweep was stopped before the trial ended
    ERROR = "error"
    NODE = "ray_node_id"
    NODES = "ray_node_ids"
    NODE_IP = "ray_node_ip"  # the address of the host running the run now
    NODE_IPS = "ray_node_ips"  # every host it ran on, in order
    CLOSED_BY = "closed_by"  # who ended a run the trial could not: driver, resume, repair
    OUTCOME = "outcome"  # a verdict's name, 'running', or 'stopped' (Ray stopped it; why, the driver says)
    SEARCHED = "searched"  # parent: the searched keys, comma-separated (children are named by them)
    SWEEP_STATUS = "sweep_status"  # parent: running / completed / interrupted / failed
    BUDGET = "budget"  # parent and children: 'full budget', or 'custom budget: ...' (spaces.budget_words)
    BEST = "best."  # parent: the winner's tags (best.trial_id, best.<key>, best.config) and metrics
    OPTUNA_STORAGE = "optuna_storage"  # parent: the Optuna storage URL of a searched sweep's study
    OPTUNA_STUDY = "optuna_study"  # parent: the study's name (the sweep's)
    EXPERIMENT_KIND = "mlflow.experimentKind"  # experiment: MLflow 3's GenAI / machine-learning kind
    SAVED_VIEW = "mlflow.sharedViewState."  # experiment: + key, a saved view of the runs table
    METHODS = "methods"  # experiment: the space's methods, comma-separated


@dataclass(frozen=True)
class Verdict:
    """What happened to a trial, as every record writes it: the run status (MLflow's, and
    result.json's ``status``), the two flags that tell the FINISHED and KILLED cases apart (tags
    in MLflow, fields in result.json) and the suffix of a child's name in the MLflow UI."""

    name: str
    status: str
    stopped_early: bool = False
    interrupted: bool = False
    suffix: str = ""

    def tags(self) -> dict[str, str]:
        return {Tag.STOPPED_EARLY: str(self.stopped_early).lower(), Tag.INTERRUPTED: str(self.interrupted).lower()}


COMPLETED = Verdict("completed", "FINISHED")  # trained its full budget
STOPPED_EARLY = Verdict("stopped_early", "FINISHED", stopped_early=True, suffix="(ASHA-stopped)")  # a valid record
FAILED = Verdict("failed", "FAILED", suffix="(failed)")  # with the error
INTERRUPTED = Verdict("interrupted", "KILLED", interrupted=True, suffix="(interrupted)")  # resume it
VERDICTS = {v.name: v for v in (COMPLETED, STOPPED_EARLY, FAILED, INTERRUPTED)}
# How a sweep ended -> the verdict of a child still open then (its status is the parent run's).
SWEEP_END = {"completed": COMPLETED, "interrupted": INTERRUPTED, "failed": FAILED}


def verdict_of_row(row: dict[str, Any]) -> Verdict:
    """A trials.csv row's verdict: its status, or interrupted for a trial that did not end."""
    return VERDICTS.get(str(row.get("status")), INTERRUPTED)


def ended_verdict(last_result: dict[str, Any] | None) -> Verdict:
    """The verdict of a trial Tune ended without an error: completed when its last report holds
    the selection metric (the final evaluation's), else ASHA stopped it."""
    return COMPLETED if SELECTION_METRIC in (last_result or {}) else STOPPED_EARLY


def outcome_of(status: str, tags: dict[str, str]) -> str:
    """A child's outcome, read back from its MLflow status and tags (the inverse of ``Verdict``):
    a verdict's name, 'running', or 'stopped' -- KILLED by Ray before the driver said why."""
    if status == FAILED.status:
        return FAILED.name
    if status == "FINISHED":
        return (STOPPED_EARLY if tags.get(Tag.STOPPED_EARLY) == "true" else COMPLETED).name
    if status == INTERRUPTED.status:
        return INTERRUPTED.name if tags.get(Tag.INTERRUPTED) == "true" else "stopped"
    return "running"


# Keys that are a profile's budget or a run's placement, never a method's choice: a selection
# entry does not carry them, and table1 takes them from its own profile.
BUDGET_KEYS = frozenset({"method", "dataset", "seed", "epochs", "train_size", "test_size", "eval_every",
                         "checkpoint_every", "probe_epochs", "probe_min_steps", "decoder_epochs", "style_J",
                         "data_dir", "device"})

# Keys that name a run's place in a sweep rather than its config: a config's identity ignores them.
PLACEMENT_KEYS = frozenset({"dataset", "seed", "data_dir", "device"})


class SelectionError(ValueError):
    """The selection file cannot be read or written: one line."""


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def home() -> Path:
    """Where sweeps keep their files: $SSL_SWEEPS_HOME or <repo>/runs (absolute)."""
    return Path(os.environ.get("SSL_SWEEPS_HOME", repo_root() / "runs")).expanduser().resolve()


def storage_dir(root: Path | None = None) -> Path:
    """Ray's experiment folders: <home>/tune."""
    return (root or home()) / "tune"


def absolute_uri(uri: str) -> str:
    """Trials run in their own folders: make a relative SQLite path or file store absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).expanduser().resolve()}"
    if "://" not in uri:
        return str(Path(uri).expanduser().resolve())
    return uri


def default_tracking_uri(root: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI (made absolute), else a SQLite file under ``root`` (default: home)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return absolute_uri(env)
    return f"sqlite:///{((root or home()) / 'mlflow.db').resolve()}"


def selection_path() -> Path:
    return repo_root() / SELECTION_FILE


def config_hash(config: dict[str, Any]) -> str:
    """A config's identity: a short stable hash of its user config (sorted JSON) without the keys
    that place a run (dataset, seed, data folder, device). Every run of one trial has the same
    hash, in MLflow, in result.json and in the analysis."""
    kept = {k: v for k, v in config.items() if k not in PLACEMENT_KEYS}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fmt_value(v: Any) -> str:
    """A config value as run names, the console and reports show it: 3 significant digits for
    floats."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if v != 0 and not 1e-3 <= abs(v) < 1e5:
            return f"{v:.3g}"
        return np.format_float_positional(v, precision=3, unique=False, fractional=False, trim="-")
    return str(v)


def point_words(config: dict[str, Any], keys) -> str:
    """A trial's searched values as people read them: ``J=8``, ``sigma2=0.0123 lr=3e-05``, or the
    method alone (table1: ``simvae``) -- in run names, the console, rankings and figure legends."""
    return " ".join(fmt_value(config[k]) if k == "method" else f"{k}={fmt_value(config[k])}"
                    for k in keys if k in config)


# -- result.json --------------------------------------------------------------------------------


def run_folder(trial_dir: Path, dataset: str, seed: int) -> Path:
    """Where one run of a trial keeps its result.json."""
    return Path(trial_dir) / "runs" / f"{dataset}-s{seed}"


def _json(v: Any) -> Any:
    """A value for JSON: ``plain`` with every digit kept, non-finite floats as null."""
    v = plain(v, rounded=False)
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_result(folder: Path, run: dict[str, Any], config: dict[str, Any], resolved: dict[str, Any],
                 metrics: dict[str, Any]) -> Path:
    """Write ``folder/result.json`` atomically; returns its path. ``run`` holds the identity and
    outcome (space, sweep, trial_id, method, dataset, seed, config_hash, status, stopped_early,
    interrupted, epochs_trained); ``metrics`` the final metrics (non-finite values become null)."""
    record = {"schema": RESULT_SCHEMA, "run": {k: _json(v) for k, v in run.items()},
              "config": {k: _json(v) for k, v in config.items()},
              "resolved": {k: _json(v) for k, v in resolved.items()},
              "metrics": {k: _json(v) for k, v in metrics.items()
                          if isinstance(v, (int, float, bool, str)) or v is None}}
    return write_text_atomic(Path(folder) / RESULT_FILE, json.dumps(record, indent=2, sort_keys=True, default=str))


def verdict_fields(verdict: Verdict | None) -> dict[str, Any]:
    """The outcome fields of a result.json: the verdict's, or a run still RUNNING (None)."""
    if verdict is None:
        return {"status": "RUNNING", "stopped_early": False, "interrupted": False}
    return {"status": verdict.status, "stopped_early": verdict.stopped_early, "interrupted": verdict.interrupted}


def write_run_result(trial_dir: Path, run, identity: dict[str, Any], metrics: dict[str, Any],
                     verdict: Verdict | None = None, error: str = "") -> Path:
    """result.json of one ``trainables.driver.Run`` of a trial: ``identity`` (space, sweep, trial,
    config hash, ...) plus the run's own method, dataset, seed, epochs and outcome (``verdict``;
    None while it runs)."""
    cfg = run.cfg
    record = {**identity, "method": cfg["method"], "dataset": cfg["dataset"], "seed": cfg["seed"],
              **verdict_fields(verdict), "epochs_trained": run.epoch, "error": error}
    return write_result(run_folder(trial_dir, cfg["dataset"], cfg["seed"]), record, run.user_config, cfg, metrics)


def relabel_result(path: Path, verdict: Verdict, error: str = "") -> bool:
    """Give an existing result.json the driver's verdict and a failed run's ``error`` (its
    metrics and identity kept); True when that changed it (one that says so already is not
    written)."""
    record = read_result(path)
    fields = {**verdict_fields(verdict), "error": error if verdict.status == FAILED.status else ""}
    if all(record["run"].get(k, "") == v for k, v in fields.items()):
        return False
    record["run"].update(fields)
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True))
    return True


def remove_run_files(path: Path) -> None:
    """Remove a run's folder of files (its result.json and the files beside it)."""
    shutil.rmtree(Path(path).parent, ignore_errors=True)


def read_text_nofollow(path: Path) -> str:
    """A file's text, opened without following a symbolic link (OSError for a link: a sweep
    folder holds none, and one there could point anywhere)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as f:
        return f.read()


def read_result(path: Path) -> dict[str, Any]:
    """One result.json; ValueError (one line) when it is not one."""
    try:
        record = json.loads(read_text_nofollow(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {first_line(e)}") from None
    if not isinstance(record, dict) or record.get("schema") != RESULT_SCHEMA or not isinstance(record.get("run"), dict):
        raise ValueError(f"{path} is not a result.json of schema {RESULT_SCHEMA}")
    return record


def _subfolders(folder: Path) -> list[Path]:
    """The real folders in ``folder`` (symbolic links are not followed), sorted."""
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def find_results(sweep_folder: Path) -> list[Path]:
    """Every result.json under one sweep's experiment folder (``<trial>/runs/<run>/``, sorted);
    nothing behind a symbolic link is found, so nothing outside the folder is read or relabelled."""
    found = []
    for trial in _subfolders(Path(sweep_folder)):
        runs = trial / "runs"
        if runs.is_symlink():
            continue
        for run in _subfolders(runs):
            path = run / RESULT_FILE
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return found


# -- the selection file -------------------------------------------------------------------------

SELECTION_HEADER = ("# Selected config per method (analysis/select.py): the best mean MLP-probe accuracy across\n"
                    "# datasets over full-budget runs. The table1 space reads each method's `config`.\n")


def read_selection_file(path: Path) -> dict[str, dict[str, Any]]:
    """The whole selection file: {method: entry}; {} when it does not exist. SelectionError
    when it cannot be read or is not a mapping of mappings."""
    import yaml

    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SelectionError(f"cannot read the selection file {path}: {first_line(e)}") from None
    if not isinstance(data, dict):
        raise SelectionError(f"selection file {path}: expected a mapping method -> {{config: {{...}}}}")
    for method, entry in data.items():
        cfg = entry.get("config", entry) if isinstance(entry, dict) else None
        if not isinstance(cfg, dict):
            raise SelectionError(f"selection file {path}: {method} has no 'config' mapping")
    return {str(m): e for m, e in data.items()}


def selected_configs(path: Path) -> dict[str, dict[str, Any]]:
    """method -> the config to run (budget keys dropped: those are the profile's)."""
    out = {}
    for method, entry in read_selection_file(path).items():
        cfg = entry.get("config", entry)
        out[method] = {k: v for k, v in cfg.items() if k not in BUDGET_KEYS}
    return out


def write_selection_file(path: Path, entries: dict[str, dict[str, Any]], order) -> tuple[list[str], list[str]]:
    """Merge ``entries`` into the selection file (other methods' entries kept), methods sorted by
    ``order`` (a key function); returns (replaced, kept) method names."""
    import yaml

    path = Path(path)
    old = read_selection_file(path)
    replaced = sorted(m for m in entries if m in old)
    kept = sorted(m for m in old if m not in entries)
    merged = {**old, **entries}
    merged = {m: merged[m] for m in sorted(merged, key=order)}
    write_text_atomic(path, SELECTION_HEADER + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))
    return replaced, kept
