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
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

EXPERIMENT_PREFIX = "ssl-sweeps/"
SWEEP_FILE = "sweep.json"
TRIALS_FILE = "trials.csv"
RESULT_FILE = "result.json"
RESULT_SCHEMA = 1
SELECTION_FILE = Path("results") / "selection.yaml"


class Tag:
    """Tag names on MLflow runs (children unless marked)."""

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
    CLOSED_BY = "closed_by"


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


# -- result.json --------------------------------------------------------------------------------


def run_folder(trial_dir: Path, dataset: str, seed: int) -> Path:
    """Where one run of a trial keeps its result.json."""
    return Path(trial_dir) / "runs" / f"{dataset}-s{seed}"


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_result(folder: Path, run: dict[str, Any], config: dict[str, Any], resolved: dict[str, Any],
                 metrics: dict[str, Any]) -> Path:
    """Write ``folder/result.json`` atomically; returns its path. ``run`` holds the identity and
    outcome (space, sweep, trial_id, method, dataset, seed, config_hash, status, stopped_early,
    epochs_trained); ``metrics`` the final metrics (non-finite values become null)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"schema": RESULT_SCHEMA, "run": {k: _plain(v) for k, v in run.items()},
              "config": {k: _plain(v) for k, v in config.items()},
              "resolved": {k: _plain(v) for k, v in resolved.items()},
              "metrics": {k: _plain(v) for k, v in metrics.items()
                          if isinstance(v, (int, float, bool, str)) or v is None}}
    path = folder / RESULT_FILE
    tmp = folder / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def write_run_result(trial_dir: Path, run, identity: dict[str, Any], status: str, stopped_early: bool,
                     metrics: dict[str, Any], error: str = "") -> Path:
    """result.json of one ``trainables.train.Run`` of a trial: ``identity`` (space, sweep, trial,
    config hash, ...) plus the run's own method, dataset, seed, epochs and outcome."""
    cfg = run.cfg
    record = {**identity, "method": cfg["method"], "dataset": cfg["dataset"], "seed": cfg["seed"],
              "status": status, "stopped_early": stopped_early, "epochs_trained": run.epoch, "error": error}
    return write_result(run_folder(trial_dir, cfg["dataset"], cfg["seed"]), record, run.user_config, cfg, metrics)


def read_result(path: Path) -> dict[str, Any]:
    """One result.json; ValueError (one line) when it is not one."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(record, dict) or record.get("schema") != RESULT_SCHEMA or not isinstance(record.get("run"), dict):
        raise ValueError(f"{path} is not a result.json of schema {RESULT_SCHEMA}")
    return record


def find_results(sweep_folder: Path) -> list[Path]:
    """Every result.json under one sweep's experiment folder (sorted)."""
    return sorted(Path(sweep_folder).glob(f"*/runs/*/{RESULT_FILE}"))


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
        raise SelectionError(f"cannot read the selection file {path}: {str(e).splitlines()[0]}") from None
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(SELECTION_HEADER + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))
    os.replace(tmp, path)
    return replaced, kept
