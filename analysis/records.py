"""Load what a sweep wrote: MLflow child runs (default) or a Ray experiment folder's trials.csv.

Layout read (written by sweeps/run.py, sweeps/trial.py, sweeps/tracking.py): one MLflow
experiment per space, ``ssl-sweeps/<space>``; one parent run per sweep (no ``mlflow.parentRunId``
tag; params ``datasets``, ``seeds``, ``params`` = {searched key: description}, ``fixed.<key>``);
one child run per (trial, dataset, seed) tagged ``mlflow.parentRunId``, ``trial_id``, ``method``,
``dataset``, ``seed``, ``config_hash``, ``profile``, ``stopped_early`` ('true'/'false'), ``error``;
params = the resolved config (JSON-encoded values); final metrics at the last step (MLflow's
latest value per key is the final one).

Every analysis works on a ``Records``: the chosen sweeps (parent runs) of one space and their
children as ``RunRecord``s. Only runs that trained the full budget are *eligible*: status
FINISHED and not ASHA-stopped. The fallback (``trials.csv``) has one row per trial holding
per-dataset means over seeds; each becomes one RunRecord per dataset with ``n_seeds`` = the
sweep's seed count and no per-seed spread (standard errors are then unavailable).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPERIMENT_PREFIX = "ssl-sweeps/"  # as sweeps/tracking.py EXPERIMENT_PREFIX
PARENT_TAG = "mlflow.parentRunId"
# Parameters usually searched on a log scale (DESIGN.md §2); ablation plots use log axes for them.
LOG_SCALE_PARAMS = frozenset({"sigma2", "beta", "gamma", "temperature", "lr", "likelihood_scale"})

# Display order: the paper's Table 1 rows, then its datasets, then the offline quick ones.
METHOD_ORDER = ("random", "simclr", "moco", "vicreg", "vae", "betavae", "crvae", "simvae")
METHOD_NAMES = {"random": "Random", "simclr": "SimCLR", "moco": "MoCo", "vicreg": "VICReg",
                "vae": "VAE", "betavae": "β-VAE", "crvae": "CR-VAE", "simvae": "SimVAE"}
FAMILIES = {"generative": ("simvae", "vae", "betavae", "crvae"),
            "discriminative": ("simclr", "vicreg", "moco"), "random": ("random",)}
DATASET_ORDER = ("mnist", "fashionmnist", "celeba", "cifar10", "digits", "shapes")
DATASET_NAMES = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "celeba": "CelebA",
                 "cifar10": "CIFAR-10", "digits": "Digits", "shapes": "Shapes"}

EXIT_USAGE = 2


class AnalysisError(RuntimeError):
    """Something the user can fix (unknown space, missing store, unlogged metric): one line, exit 2."""


# -- paths and defaults -----------------------------------------------------------------------


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def sweeps_home() -> Path:
    """As sweeps/run.py default_home: $SSL_SWEEPS_HOME or <repo>/runs (absolute)."""
    return Path(os.environ.get("SSL_SWEEPS_HOME", repo_root() / "runs")).expanduser().resolve()


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (made absolute), else sqlite:///<home>/mlflow.db -- run.py's default."""
    from sweeps.tracking import absolute_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    return absolute_uri(env) if env else f"sqlite:///{sweeps_home() / 'mlflow.db'}"


def results_dir(out: str | Path | None = None) -> Path:
    """Where outputs go: --out, else <repo>/results."""
    return Path(out).expanduser().resolve() if out else repo_root() / "results"


def selection_path() -> Path:
    from sweeps.spaces import SELECTION_FILE  # results/selection.yaml, read by the table1 space

    return repo_root() / SELECTION_FILE


def sort_key(order: tuple[str, ...]):
    return lambda name: (order.index(name) if name in order else len(order), name)


# -- records ----------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One child run: one (trial, dataset, seed). ``metrics`` holds final values; ``n_seeds`` is
    how many seed runs it stands for (1, or the seed count of a trials.csv row)."""

    run_id: str
    parent_id: str
    trial_id: str
    method: str
    dataset: str
    seed: int | None
    config_hash: str
    status: str  # FINISHED / FAILED / KILLED / RUNNING
    stopped_early: bool
    start_time: int = 0
    profile: str = ""
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    n_seeds: int = 1

    @property
    def eligible(self) -> bool:
        """Trained the full budget: FINISHED and not stopped early by ASHA."""
        return self.status == "FINISHED" and not self.stopped_early


@dataclass
class Sweep:
    """One parent run (one run.py invocation)."""

    run_id: str
    name: str
    start_time: int
    status: str
    params: dict[str, Any] = field(default_factory=dict)

    def searched(self) -> dict[str, str]:
        """{searched key: description}, e.g. {'J': 'grid [2, 4, 8, 16]'} (from the parent's params)."""
        value = self.params.get("params")
        return value if isinstance(value, dict) else {}


@dataclass
class Records:
    """The runs of the chosen sweeps of one space."""

    space: str
    source: str  # human-readable: the store and experiment, or the trials.csv path
    sweeps: list[Sweep]
    runs: list[RunRecord]
    uri: str | None = None
    experiment_id: str | None = None
    from_csv: bool = False

    @property
    def datasets(self) -> list[str]:
        """Every dataset any run of these sweeps trained on (the sweep's datasets), display order."""
        found = {r.dataset for r in self.runs}
        for s in self.sweeps:
            found.update(d for d in str(s.params.get("datasets", "")).split(",") if d)
        return sorted(found, key=sort_key(DATASET_ORDER))

    @property
    def methods(self) -> list[str]:
        return sorted({r.method for r in self.runs}, key=sort_key(METHOD_ORDER))

    def eligible(self, metric: str | None = None) -> list[RunRecord]:
        """Full-budget runs (with a finite ``metric`` when given)."""
        return [r for r in self.runs if r.eligible and (metric is None or _finite(r.metrics.get(metric)))]

    def searched(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in self.sweeps:
            out.update(s.searched())
        return out

    def metric_names(self) -> list[str]:
        return sorted({k for r in self.runs for k in r.metrics})

    def require_metric(self, metric: str) -> None:
        if not any(_finite(r.metrics.get(metric)) for r in self.runs):
            known = ", ".join(self.metric_names()) or "none"
            raise AnalysisError(f"metric {metric!r} was never logged in {self.source}; logged: {known}")

    def trial_counts(self) -> dict[str, int]:
        """Trials by outcome: completed (full budget), stopped_early (ASHA), failed, unfinished."""
        by_trial: dict[tuple[str, str], list[RunRecord]] = {}
        for r in self.runs:
            by_trial.setdefault((r.parent_id, r.trial_id), []).append(r)
        counts = {"completed": 0, "stopped_early": 0, "failed": 0, "unfinished": 0}
        for runs in by_trial.values():
            counts[trial_outcome(runs)] += 1
        counts["trials"] = len(by_trial)
        return counts


def trial_outcome(runs: list[RunRecord]) -> str:
    if any(r.status == "FAILED" for r in runs):
        return "failed"
    if any(r.stopped_early for r in runs):
        return "stopped_early"
    if all(r.status == "FINISHED" for r in runs):
        return "completed"
    return "unfinished"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def decode(value: str) -> Any:
    """A logged param value: JSON when it parses ('0.15', '4', '"gaussian"', 'null'), else the text."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


# -- MLflow -----------------------------------------------------------------------------------


def _client(uri: str):
    """An MlflowClient for an existing store; a missing SQLite file is an error (never created)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.exists():
            raise AnalysisError(f"no MLflow store at {path} (run a sweep first, or pass --tracking-uri)")
    elif "://" not in uri and not Path(uri).exists():
        raise AnalysisError(f"no MLflow store at {uri}")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def spaces_in_store(uri: str) -> list[str]:
    c = _client(uri)
    return sorted(e.name[len(EXPERIMENT_PREFIX):] for e in c.search_experiments(max_results=1000)
                  if e.name.startswith(EXPERIMENT_PREFIX))


def _search_all(c, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = c.search_runs([experiment_id], "", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_record(run) -> RunRecord:
    tags, info = run.data.tags, run.info
    params = {k: decode(v) for k, v in run.data.params.items()}
    seed = tags.get("seed", params.get("seed"))
    return RunRecord(
        run_id=info.run_id, parent_id=tags.get(PARENT_TAG, ""), trial_id=tags.get("trial_id", info.run_id),
        method=str(tags.get("method", params.get("method", ""))), dataset=str(tags.get("dataset", params.get("dataset", ""))),
        seed=int(seed) if seed not in (None, "") else None,
        config_hash=tags.get("config_hash") or tags.get("trial_id", info.run_id),
        status=info.status, stopped_early=tags.get("stopped_early", "false").lower() == "true",
        start_time=info.start_time or 0, profile=tags.get("profile", ""), error=tags.get("error", ""),
        params=params, metrics=dict(run.data.metrics))


def load_mlflow(space: str, uri: str, parent: str | None = None, all_parents: bool = False) -> Records:
    """Children of the latest sweep of ``space`` (the latest parent with children), of sweep
    ``parent``, or of every sweep (``all_parents``)."""
    c = _client(uri)
    exp = c.get_experiment_by_name(EXPERIMENT_PREFIX + space)
    if exp is None:
        known = ", ".join(spaces_in_store(uri)) or "none"
        raise AnalysisError(f"no experiment {EXPERIMENT_PREFIX}{space} in {uri}; spaces with sweeps: {known}")
    runs = _search_all(c, exp.experiment_id)
    parents = {r.info.run_id: r for r in runs if PARENT_TAG not in r.data.tags}
    children = [_run_record(r) for r in runs if PARENT_TAG in r.data.tags]
    with_children = {r.parent_id for r in children}
    if parent is not None:
        if parent not in parents:
            raise AnalysisError(f"run {parent} is not a sweep (parent run) of {EXPERIMENT_PREFIX}{space}")
        chosen = [parent]
    elif all_parents:
        chosen = [p for p in parents if p in with_children]
    else:
        candidates = [p for p in parents if p in with_children]
        chosen = [max(candidates, key=lambda p: parents[p].info.start_time or 0)] if candidates else []
    if not chosen:
        raise AnalysisError(f"{EXPERIMENT_PREFIX}{space} has no trial runs yet")
    sweeps = [Sweep(p, parents[p].info.run_name or p, parents[p].info.start_time or 0, parents[p].info.status,
                    {k: decode(v) for k, v in parents[p].data.params.items()}) for p in chosen]
    kept = [r for r in children if r.parent_id in set(chosen)]
    names = ", ".join(s.name for s in sweeps)
    return Records(space, f"{uri} experiment {EXPERIMENT_PREFIX}{space} (sweep{'s' if len(sweeps) > 1 else ''} {names})",
                   sweeps, kept, uri=uri, experiment_id=exp.experiment_id)


# -- trials.csv fallback ----------------------------------------------------------------------

CSV_STATUS = {"completed": ("FINISHED", False), "stopped_early": ("FINISHED", True), "failed": ("FAILED", False)}


def find_sweep_folder(space: str, storage: Path) -> Path:
    """The newest Ray experiment folder of ``space`` (sweep.json) that has a trials.csv."""
    folders = []
    for f in storage.glob("*/sweep.json"):
        try:
            info = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if info.get("space") == space and (f.parent / "trials.csv").exists():
            folders.append(f.parent)
    if not folders:
        raise AnalysisError(f"no sweep folder of space {space!r} with a trials.csv under {storage}")
    return max(folders, key=lambda p: (p / "trials.csv").stat().st_mtime)


def _plain(v: Any) -> Any:
    """numpy/pandas scalars to Python; NaN to None."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def load_csv(space: str, storage: Path) -> Records:
    """The newest trials.csv of ``space``: one RunRecord per (trial, dataset) from its
    ``<dataset>/<metric>`` columns (means over the sweep's seeds)."""
    import pandas as pd

    folder = find_sweep_folder(space, storage)
    info = json.loads((folder / "sweep.json").read_text())
    expand = info.get("expand") or {}
    try:
        from sweeps.spaces import SPACES

        default_seeds, methods = SPACES[space].seeds, SPACES[space].methods
    except (ImportError, KeyError):
        default_seeds, methods = (0,), ("",)
    n_seeds = len(expand.get("seeds") or default_seeds)
    frame = pd.read_csv(folder / "trials.csv")
    datasets = sorted({c.split("/", 1)[0] for c in frame.columns if "/" in c and not c.startswith("config/")},
                      key=sort_key(DATASET_ORDER))
    runs = []
    for _, row in frame.iterrows():
        params = {c[len("config/"):]: _plain(v) for c, v in row.items() if c.startswith("config/")}
        params.setdefault("method", methods[0])
        chash = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
        status, stopped = CSV_STATUS.get(str(row["status"]), ("KILLED", False))
        for d in datasets:
            metrics = {c.split("/", 1)[1]: _plain(v) for c, v in row.items() if c.startswith(d + "/")}
            runs.append(RunRecord(
                run_id=f"{row['trial_id']}/{d}", parent_id=info.get("parent_run_id", folder.name),
                trial_id=str(row["trial_id"]), method=str(params["method"]), dataset=d, seed=None,
                config_hash=chash, status=status, stopped_early=stopped, profile=expand.get("profile", ""),
                error=str(_plain(row.get("error")) or ""), params={**params, "dataset": d},
                metrics={k: float(v) for k, v in metrics.items() if _finite(v)}, n_seeds=n_seeds))
    sweep = Sweep(info.get("parent_run_id", folder.name), info.get("name", folder.name), 0,
                  str(info.get("status", "")), {"datasets": ",".join(datasets),
                                                "params": {k[len("config/"):]: "" for k in frame.columns
                                                           if k.startswith("config/")}})
    return Records(space, f"{folder / 'trials.csv'} (fallback: per-dataset means over {n_seeds} seed(s))",
                   [sweep], runs, from_csv=True)


def load(space: str, uri: str | None = None, parent: str | None = None, all_parents: bool = False,
         source: str = "auto", storage: str | Path | None = None) -> Records:
    """Records of ``space`` from MLflow, or -- with ``source='auto'`` when the store or the
    experiment is missing, or ``source='csv'`` -- from the newest trials.csv under ``storage``
    (default <home>/tune)."""
    uri = uri or default_tracking_uri()
    folder = Path(storage).expanduser().resolve() if storage else sweeps_home() / "tune"
    if source == "csv":
        return load_csv(space, folder)
    try:
        return load_mlflow(space, uri, parent=parent, all_parents=all_parents)
    except AnalysisError as e:
        if source == "mlflow" or parent is not None:
            raise
        try:
            return load_csv(space, folder)
        except AnalysisError:
            raise e from None


# -- small shared helpers for the scripts ------------------------------------------------------


def add_source_args(p, space_required: bool = True) -> None:
    """The reading options every script shares."""
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///<home>/mlflow.db with <home> = $SSL_SWEEPS_HOME or <repo>/runs)")
    p.add_argument("--parent", metavar="RUN_ID", help="use this sweep (parent run) instead of the latest")
    p.add_argument("--all-parents", action="store_true", help="pool every sweep of the space, not just the latest")
    p.add_argument("--source", choices=("auto", "mlflow", "csv"), default="auto",
                   help="auto (default): MLflow, else the newest trials.csv of the space; or force one")
    p.add_argument("--storage", help="folder of Ray experiment folders for the csv fallback (default <home>/tune)")
    p.add_argument("--out", help="output folder (default <repo>/results)")


def load_from_args(args, space: str) -> Records:
    return load(space, args.tracking_uri, parent=args.parent, all_parents=args.all_parents,
                source=args.source, storage=args.storage)


def main_guard(prog: str, fn, argv=None) -> int:
    """Run ``fn(argv)``; an AnalysisError becomes one line on stderr and exit 2."""
    import sys

    try:
        return fn(argv) or 0
    except AnalysisError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
