"""MLflow records of a sweep, written with ``MlflowClient`` against an absolute tracking URI.

One experiment per space (``ssl-sweeps/<space>``); one parent run per sweep; one child run per
(trial, dataset, seed), tagged ``mlflow.parentRunId`` (MLflow has no nesting of its own). The
driver creates the store, the experiment and the parent before any trial starts (several trials
creating a fresh SQLite DB at once race in its migration). Trials create their children
themselves, idempotently: a restored or retried trial finds its child by tags and continues
logging into it, so MLflow ends with exactly one child per trial, dataset and seed. Every run
ends FINISHED, FAILED or KILLED; the driver closes whatever a stopped or crashed trial left open.

Ray's ``setup_mlflow`` / ``MLflowLoggerCallback`` are not used: the former never ends its run and
makes a new one on every restore, the latter follows ``MLFLOW_EXPERIMENT_ID`` silently.

What a person sees in the UI (checked in a browser against MLflow 3.17, README "MLflow UI"):
- the experiment carries a description, the "machine learning" experiment kind and a saved view
  of the runs table with the sweep's columns (``ui_link`` opens it; MLflow 3.17 picks the page
  it opens from the UI's own GenAI / Model training switch, which that link sets);
- children are named ``<dataset>-s<seed> <searched key>=<value>`` (``run_label``) and renamed
  with their outcome when it is known (``(ASHA-stopped)``, ``(interrupted)``, ``(failed)``;
  tag ``outcome``); the parent is named after the sweep and, at the end, records the winner
  (``record_winner``: tags ``best.*``, metrics ``best.*``) and ``sweep_status``;
- metric values are logged at float32 precision without the digits of widening float32 to
  float64 (``clean_metric``).
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from sweeps.schema import EXPERIMENT_PREFIX, Tag, absolute_uri, default_tracking_uri  # noqa: F401
# Short HTTP timeouts: an unreachable server must fail fast with one line, not retry for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# No "🏃 View run ... at: URL" line per run MLflow ends against a server: the summary gives the link.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class TrackingError(RuntimeError):
    """The tracking store cannot be used: one line."""


def check_reachable(uri: str) -> None:
    """Fail fast, creating nothing: a server must answer, a SQLite file's folder be writable."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as e:
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({e.strerror or e})") from None
        try:
            client(uri).search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 -- any failure here means the server is unusable
            raise TrackingError(f"MLflow tracking server {uri} does not answer: {_first_line(e)}") from None
    elif parsed.scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent
        probe = folder
        while not probe.exists():
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise TrackingError(f"cannot create the MLflow store {uri}: {probe} is not writable")


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, space: str) -> str:
    """Create (or find) the space's experiment; returns its id. SQLite stores keep their
    artifacts next to the DB (the default would be relative to each trial's folder). MLflow's
    INFO lines about creating a store's tables are not shown."""
    import logging

    quiet = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic.runtime.migration")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        return _ensure_experiment(uri, space)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _ensure_experiment(uri: str, space: str) -> str:
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    c = client(uri)
    name = EXPERIMENT_PREFIX + space
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return c.create_experiment(name, artifact_location=location)


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def create_parent(uri: str, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, Any],
                  plan=None) -> str:
    """The sweep's parent run, named after the sweep. With the sweep's ``plan``
    (sweeps.spaces.Plan) it also gets a description of the sweep and the searched keys its
    children are named by, and the experiment its description, kind and saved view."""
    c = client(uri)
    if plan is not None:
        describe_experiment(c, experiment_id, plan)
        tags = {**tags, NOTE: sweep_note(plan, name), SEARCHED: ",".join(searched_keys(plan)),
                SWEEP_STATUS: "running"}
    run = c.create_run(experiment_id, run_name=name, tags=tags)
    log_params(c, run.info.run_id, params)
    return run.info.run_id


def reopen(uri: str, run_id: str) -> None:
    """A resumed sweep continues its parent run."""
    c = client(uri)
    c.update_run(run_id, status="RUNNING")
    c.set_tag(run_id, SWEEP_STATUS, "running")


# The parent run's status -> the sweep's status in words (as in sweep.json).
SWEEP_STATUS_OF = {"FINISHED": "completed", "KILLED": "interrupted", "FAILED": "failed"}


def end_run(uri: str, run_id: str, status: str) -> None:
    """End the parent run, its ``sweep_status`` tag saying how the sweep ended."""
    c = client(uri)
    c.set_tag(run_id, SWEEP_STATUS, SWEEP_STATUS_OF.get(status, status.lower()))
    c.set_terminated(run_id, status=status)


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(str(k), _param_value(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


def log_metrics(c, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """Finite numbers only (MLflow rejects NaN in some stores; a bool is logged as 0/1)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(_metric_name(k), clean_metric(v), now, int(step)) for k, v in sorted(metrics.items())
             if isinstance(v, (int, float)) and math.isfinite(float(v))]
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[i:i + 1000])


def clean_metric(v: float) -> float:
    """``v`` without float32 noise: the shortest decimal (up to 9 significant digits) within one
    float32 step (2**-23, relative) of ``v``.

    torch computes in float32: widened to float64, an accuracy of 0.32 reads 0.3199999928474426,
    and a mean of such values 0.19999999552965164 where 0.2 was meant; MLflow shows every digit.
    Nothing finer than float32's precision was ever computed, so the shortest decimal within it
    is the value (0.32, 0.2); an exact 1/96 keeps 0.010416667. Unlike rounding every value to a
    fixed 6 digits this never moves a value by more than 1.2e-7 of itself (1/96 at 6 digits
    moves by 3e-6) and never adds digits. Integers (counts, epochs) are kept as they are."""
    if isinstance(v, (bool, int, np.integer)):
        return float(v)
    f = float(v)
    if f == 0.0 or not math.isfinite(f):
        return f
    for digits in range(1, 10):
        short = float(f"{f:.{digits}g}")
        if abs(short - f) <= 2.0 ** -23 * abs(f):
            return short
    return f


def _metric_name(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:6000]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class ChildRun:
    """The child run of one (trial, dataset, seed): found by tags or created, once."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, trial_id: str,
                 dataset: str, seed: int, tags: dict[str, str], config: dict[str, Any]):
        self.uri = uri
        self.client = c = client(uri)
        searched = [k for k in c.get_run(parent_id).data.tags.get(SEARCHED, "").split(",") if k]
        self.name = run_label(dataset, seed, config, searched)
        found = find_children(uri, experiment_id, parent_id, trial_id=trial_id, dataset=dataset, seed=seed)
        if found:
            self.run_id = found[0].info.run_id
            # A trial killed between create_run and log_params (a node lost, a driver killed)
            # left a child without its config: complete it.
            missing = {k: v for k, v in config.items() if str(k) not in found[0].data.params}
            if missing:
                log_params(c, self.run_id, missing)
            if found[0].info.status != "RUNNING":
                c.update_run(self.run_id, status="RUNNING", name=self.name)  # no outcome suffix
                c.set_tag(self.run_id, OUTCOME, "running")
            history = c.get_metric_history(self.run_id, "loss")
            self.last_step = max((m.step for m in history), default=0)
            self.resumed = True
        else:
            all_tags = {**tags, Tag.PARENT: parent_id, Tag.TRIAL_ID: trial_id,
                        Tag.DATASET: dataset, Tag.SEED: str(seed), OUTCOME: "running"}
            run = c.create_run(experiment_id, run_name=self.name, tags=all_tags)
            self.run_id = run.info.run_id
            log_params(c, self.run_id, config)
            self.last_step = 0
            self.resumed = False

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Per-epoch metrics at step = epoch; epochs already logged before a restore are skipped
        (the resumed run recomputes them exactly)."""
        if row["epoch"] > self.last_step:
            log_metrics(self.client, self.run_id, {k: v for k, v in row.items() if k != "epoch"}, row["epoch"])
            self.last_step = row["epoch"]

    def log_final(self, metrics: dict[str, Any], step: int, files: list[Path]) -> None:
        log_metrics(self.client, self.run_id, metrics, step)
        for f in files:
            self.client.log_artifact(self.run_id, str(f))

    def end(self, status: str, **tags: str) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)
        mark_outcome(self.client, self.run_id, self.name, status, tags)
        self.client.set_terminated(self.run_id, status=status)


def find_children(uri: str, experiment_id: str, parent_id: str, *, trial_id: str | None = None,
                  dataset: str | None = None, seed: int | None = None, status: str | None = None) -> list:
    """Child runs of ``parent_id`` matching the given tags (oldest first)."""
    filters = [f"tags.`{Tag.PARENT}` = '{parent_id}'"]
    if trial_id is not None:
        filters.append(f"tags.{Tag.TRIAL_ID} = '{trial_id}'")
    if dataset is not None:
        filters.append(f"tags.{Tag.DATASET} = '{dataset}'")
    if seed is not None:
        filters.append(f"tags.{Tag.SEED} = '{seed}'")
    if status is not None:
        filters.append(f"attributes.status = '{status}'")
    c = client(uri)
    runs, token = [], None
    while True:
        page = c.search_runs([experiment_id], " and ".join(filters), max_results=1000,
                             order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def close_children(uri: str, experiment_id: str, parent_id: str, status: str,
                   trial_id: str | None = None, **tags: str) -> int:
    """End every child still RUNNING (of one trial, or of the whole sweep) with ``status``;
    returns how many were closed. The driver's backstop for trials Ray stopped or killed."""
    c = client(uri)
    n = 0
    for run in find_children(uri, experiment_id, parent_id, trial_id=trial_id, status="RUNNING"):
        for k, v in tags.items():
            c.set_tag(run.info.run_id, k, v)
        mark_outcome(c, run.info.run_id, run.info.run_name or "", status, {**run.data.tags, **tags})
        c.set_terminated(run.info.run_id, status=status)
        n += 1
    return n


def name_children_by_outcome(uri: str, experiment_id: str, parent_id: str) -> int:
    """Give every ended child of the sweep the name and ``outcome`` tag of its final status and
    tags (the driver decides ASHA-stopped vs interrupted only once Tune has returned, see
    sweeps/outcomes.py); returns how many were changed."""
    c = client(uri)
    n = 0
    for run in find_children(uri, experiment_id, parent_id):
        if run.info.status != "RUNNING":
            n += mark_outcome(c, run.info.run_id, run.info.run_name or "", run.info.status, run.data.tags,
                              current=run.data.tags.get(OUTCOME))
    return n


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
            self.error = self.error or one_line(e)
            self.missed.append(what)
            print(f"sweeps: MLflow: {what} not logged: {one_line(e)}", file=sys.stderr, flush=True)
            return None

    def metrics(self) -> dict[str, Any]:
        if not self.failures:
            return {}
        shown = self.missed[:12] + ([f"... {len(self.missed) - 12} more"] if len(self.missed) > 12 else [])
        return {"tracking_failures": self.failures, "tracking_error": self.error,
                "tracking_missed": "; ".join(shown)}


def one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]


def tag_node(child: ChildRun, node_id: str, node_ip: str = "") -> None:
    """Tag the child run with the Ray node running it now (``ray_node_id``, and its host's address
    ``ray_node_ip``) and every node and address it ran on (``ray_node_ids``, ``ray_node_ips``, in
    order: a retried trial moves to a surviving node)."""
    tags = child.client.get_run(child.run_id).data.tags
    for now, current_key, seen_key in ((node_id, Tag.NODE, Tag.NODES), (node_ip, Tag.NODE_IP, Tag.NODE_IPS)):
        if not now:
            continue
        seen = [n for n in tags.get(seen_key, "").split(",") if n]
        if not seen or seen[-1] != now:
            seen.append(now)
        child.client.set_tag(child.run_id, current_key, now)
        child.client.set_tag(child.run_id, seen_key, ",".join(seen))


class TrialRecords:
    """The MLflow children of one trial, one per run (dataset, seed), each opened once, logged
    per epoch and at the end, and closed once; every call through ``Tracked``, so a tracking
    failure is recorded and training goes on."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, trial_id: str, tags: dict[str, str],
                 node_id: str, node_ip: str = ""):
        self.uri, self.experiment_id, self.parent_id, self.trial_id = uri, experiment_id, parent_id, trial_id
        self.tags, self.node_id, self.node_ip = tags, node_id, node_ip
        self.tracked = Tracked()
        self.children: dict[str, ChildRun | None] = {}  # None: MLflow could not be reached to make it

    def open(self, run) -> None:
        child = self.tracked.call(f"{run.label}: the child run", ChildRun, self.uri, self.experiment_id,
                                  self.parent_id, self.trial_id, run.cfg["dataset"], run.cfg["seed"],
                                  self.tags, run.cfg)
        if child is not None:
            self.tracked.call(f"{run.label}: node tag", tag_node, child, self.node_id, self.node_ip)
        self.children[run.label] = child

    def _call(self, run, what: str, method: str, *args, **kwargs) -> None:
        child = self.children.get(run.label)
        if child is not None:
            self.tracked.call(f"{run.label}: {what}", getattr(child, method), *args, **kwargs)

    def epoch(self, run, row: dict[str, Any]) -> None:
        self._call(run, f"epoch {row['epoch']} metrics", "log_epoch", row)

    def final(self, run, files: list[Path]) -> None:
        """The final metrics not already logged with the last epoch, and the artifacts."""
        logged = run.history[-1] if run.history else {}
        self._call(run, "final metrics and artifacts", "log_final",
                   {k: v for k, v in run.final.items() if k not in logged}, run.epoch, files)

    def end(self, run, status: str, **tags: str) -> None:
        self._call(run, f"run end ({status})", "end", status, **tags)


# -- what a person sees in the MLflow UI ---------------------------------------------------------

NOTE = Tag.NOTE  # mlflow.note.content: a run's or an experiment's description (Markdown)
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3: "custom_model_development" = machine learning
ML_KIND = "custom_model_development"
SAVED_VIEW = "mlflow.sharedViewState."  # + key: a saved view of the runs table (MLflow 3.17's format)
VIEW_KEY = "sweep-results"
VIEW_NAME = "Sweep results"
# The UI's own route parameters: the "Model training" side of its GenAI / Model training switch
# (MLflow 3.17 opens an experiment on GenAI traces otherwise) and the saved view.
UI_QUERY = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
OUTCOME = "outcome"  # child: running / completed / stopped_early / failed / interrupted / stopped
SEARCHED = "searched"  # parent: the searched keys, comma-separated (children are named by them)
SWEEP_STATUS = "sweep_status"  # parent: running / completed / interrupted / failed
BEST = "best."  # parent: the winner's tags (best.trial_id, best.<key>, best.config) and metrics
OPTUNA_STORAGE = "optuna_storage"  # parent: the Optuna storage URL of a searched sweep's study
OPTUNA_STUDY = "optuna_study"  # parent: the study's name (the sweep's)
SUFFIX = {"stopped_early": "(ASHA-stopped)", "interrupted": "(interrupted)", "failed": "(failed)"}
_SUFFIX_RE = re.compile(r"\s+\((?:ASHA-stopped|interrupted|failed)\)$")


def fmt_value(v: Any) -> str:
    """A config value as a person reads it in a run name: 3 significant digits for floats."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if v != 0 and not 1e-3 <= abs(v) < 1e5:
            return f"{v:.3g}"
        return np.format_float_positional(v, precision=3, unique=False, fractional=False, trim="-")
    return str(v)


def run_label(dataset: str, seed: int, config: dict[str, Any], searched: list[str]) -> str:
    """A child's name: ``<dataset>-s<seed>`` and the trial's searched values, e.g. ``mnist-s0 J=8``
    (table1's method grid: ``mnist-s0 simvae``)."""
    parts = [f"{dataset}-s{seed}"]
    for k in searched:
        if k in config:
            parts.append(fmt_value(config[k]) if k == "method" else f"{k}={fmt_value(config[k])}")
    return " ".join(parts)


def outcome_of(status: str, tags: dict[str, str]) -> str:
    """A child's outcome from its status and tags (sweeps/outcomes.py sets them at the end)."""
    if status == "FAILED":
        return "failed"
    if status == "FINISHED":
        return "stopped_early" if tags.get(Tag.STOPPED_EARLY) == "true" else "completed"
    if status == "KILLED":
        # Ray stopped the trial; until the driver says why (ASHA or the sweep stopping): "stopped".
        return "interrupted" if tags.get("interrupted") == "true" else "stopped"
    return "running"


def mark_outcome(c, run_id: str, name: str, status: str, tags: dict[str, str], current: str | None = None) -> int:
    """Name the run after its outcome (``mnist-s0 J=8 (ASHA-stopped)``) and tag it ``outcome``;
    returns 1 when something changed. ``name`` may already carry an outcome suffix."""
    outcome = outcome_of(status, tags)
    base = _SUFFIX_RE.sub("", name)
    new = f"{base} {SUFFIX[outcome]}" if outcome in SUFFIX else base
    changed = 0
    if new != name and base:
        c.update_run(run_id, name=new)
        changed = 1
    if outcome != current:
        c.set_tag(run_id, OUTCOME, outcome)
        changed = 1
    return changed


def searched_keys(plan) -> list[str]:
    """The keys a trial's point sets (helpers that only steer a switch excluded)."""
    return [k for k in plan.params if k not in plan.helpers]


def _search_words(plan) -> str:
    parts = []
    for k, d in plan.params.items():
        if k not in plan.helpers:
            parts.append(f"`{k}` {d.describe()}")
    how = "grid" if plan.searcher == "grid" else f"Optuna TPE (seed {plan.search_seed})"
    return f"{how} over {', '.join(parts) or 'nothing'}: {plan.n_trials} trial{'s' if plan.n_trials != 1 else ''}"


def experiment_note(plan, experiment_id: str) -> str:
    """The experiment's description (Markdown on its page; the list shows the raw text, so it
    starts with plain words), ending with a link to the runs table in the sweep view."""
    return (f"{plan.description} (space {plan.space}).\n\n"
            f"One parent run per sweep, named after the sweep; it records the winner. One child run per "
            f"trial, dataset and seed, named `<dataset>-s<seed> <searched key>=<value>`. Selection: the "
            f"mean MLP-probe test accuracy across datasets (`acc_mlp_mean`). Written by ssl-sweeps "
            f"(`sweeps/run.py --space {plan.space}`).\n\n"
            f"[Open the runs table (Model training, view \"{VIEW_NAME}\")](#/experiments/{experiment_id}/runs?{UI_QUERY})")


def sweep_note(plan, name: str) -> str:
    """The parent run's description: what the sweep is (the winner is added when it ends)."""
    asha = (f"ASHA on the mean validation kNN accuracy (grace period {plan.asha['grace_period']}, "
            f"reduction factor {plan.asha['reduction_factor']})" if plan.asha else "no early stopping")
    return (f"**Sweep {name}** of space `{plan.space}` (profile {plan.profile}): {plan.description}.\n\n"
            f"- search: {_search_words(plan)}, at most {plan.max_concurrent} at once; {asha}\n"
            f"- each trial trains {', '.join(plan.methods)} on {', '.join(plan.datasets)} x seed(s) "
            f"{', '.join(map(str, plan.seeds))} for {plan.epochs} epochs (one child run each)\n"
            f"- winner: the completed trial with the best mean MLP-probe test accuracy across datasets\n")


def saved_view(plan) -> dict[str, Any]:
    """The runs table as a sweep wants it: the searched params, the outcome and the headline
    metrics as columns. MLflow 3.17's saved-view envelope (``{name, createdAt, updatedAt,
    state}``, ``state`` a JSON string of the table's UI state); the UI lists it under Views."""
    cols = (["attributes.`Duration`", f"tags.`{OUTCOME}`"]
            + [f"params.`{k}`" for k in searched_keys(plan)]
            + [f"metrics.`{m}`" for m in ("acc_mlp", "acc_knn", "val_acc_knn", f"{BEST}acc_mlp_mean")])
    # columnWidths apply to the columns listed in columnOrder (the run name: wide enough for
    # "fashionmnist-s2 temperature=0.123 (ASHA-stopped)"); the others keep the UI's order.
    state = {"selectedColumns": cols, "columnOrder": ["attributes.`Run Name`"],
             "columnWidths": {"attributes.`Run Name`": 360}}
    now = int(time.time() * 1000)
    return {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}


def describe_experiment(c, experiment_id: str, plan) -> None:
    """The experiment's description, its kind (machine learning, not GenAI) and the saved view."""
    c.set_experiment_tag(experiment_id, NOTE, experiment_note(plan, experiment_id))
    c.set_experiment_tag(experiment_id, EXPERIMENT_KIND, ML_KIND)
    c.set_experiment_tag(experiment_id, Tag.SPACE, plan.space)
    c.set_experiment_tag(experiment_id, "methods", ",".join(plan.methods))
    c.set_experiment_tag(experiment_id, SAVED_VIEW + VIEW_KEY, json.dumps(saved_view(plan)))


def ui_link(uri: str, experiment_id: str, port: int = 5000) -> str:
    """Where a person opens the experiment's runs table (the saved view, Model training side)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    return f"{base}/#/experiments/{experiment_id}/runs?{UI_QUERY}"


def ui_command(uri: str, port: int = 5000) -> str | None:
    """The command that serves the UI on a SQLite store (None for a tracking server)."""
    if uri.startswith(("http://", "https://")):
        return None
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}"


def record_winner(uri: str, parent_id: str, best: dict[str, Any] | None, searched: list[str],
                  datasets: list[str], counts: dict[str, int], note: str | None = None) -> None:
    """The winner on the parent run: tags ``best.trial_id``, ``best.<key>`` and ``best.config``
    (the searched point, JSON), metrics ``best.acc_mlp_mean``, ``best.acc_knn_mean`` and
    ``best.<dataset>.<metric>`` (fractions, as every metric), and a Winner line appended to the
    parent's description. ``best`` is a trials.csv row (None: no trial completed). Tags, not
    params: a resumed sweep may record another winner, and MLflow params cannot change."""
    c = client(uri)
    metrics: dict[str, Any] = {f"trials_{k}": v for k, v in counts.items()}
    if best is None:
        c.set_tag(parent_id, f"{BEST}trial_id", "none (no trial completed its budget)")
    else:
        point = {k: best[f"config/{k}"] for k in searched if f"config/{k}" in best}
        c.set_tag(parent_id, f"{BEST}trial_id", str(best["trial_id"]))
        c.set_tag(parent_id, f"{BEST}config", json.dumps(point, default=str))
        for k, v in point.items():
            c.set_tag(parent_id, f"{BEST}{k}", fmt_value(v))
        for key in ("acc_mlp_mean", "acc_knn_mean"):
            if isinstance(best.get(key), (int, float)):
                metrics[f"{BEST}{key}"] = best[key]
        for d in datasets:
            for m in ("acc_mlp", "acc_knn"):
                if isinstance(best.get(f"{d}/{m}"), (int, float)):
                    metrics[f"{BEST}{d}.{m}"] = best[f"{d}/{m}"]
    log_metrics(c, parent_id, metrics, 0)
    if note:
        c.set_tag(parent_id, NOTE, note)


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The winner among trials.csv rows: the completed trial with the best (finite) mean MLP-probe
    accuracy across datasets (the paper's rule); None when no trial completed."""
    from sweeps.search import SELECT_METRIC

    done = [t for t in trials if t.get("status") == "completed" and isinstance(t.get(SELECT_METRIC), (int, float))
            and math.isfinite(t[SELECT_METRIC])]
    return max(done, key=lambda t: t[SELECT_METRIC]) if done else None


def winner_line(best: dict[str, Any] | None, plan, counts: dict[str, int]) -> str:
    """The Markdown paragraph the parent's description starts with once the sweep has ended (the
    UI shows the first lines of a description)."""
    tally = (f"Trials: {counts.get('completed', 0)} completed, {counts.get('stopped_early', 0)} stopped early "
             f"by ASHA, {counts.get('failed', 0)} failed.")
    if best is None:
        return f"**No winner**: no trial completed its budget. {tally}\n\n"
    point = ", ".join(f"{k}={fmt_value(best[f'config/{k}'])}" for k in searched_keys(plan) if f"config/{k}" in best)
    per = ", ".join(f"{d} {100 * best[f'{d}/acc_mlp']:.1f}%" for d in plan.datasets
                    if isinstance(best.get(f"{d}/acc_mlp"), (int, float)))
    knn = best.get("acc_knn_mean")
    return (f"**Winner**: trial `{best['trial_id']}` ({point}): {100 * best['acc_mlp_mean']:.1f}% mean MLP-probe "
            f"test accuracy ({per})" + (f", kNN {100 * knn:.1f}%" if isinstance(knn, (int, float)) else "")
            + f". {tally}\n\n")
