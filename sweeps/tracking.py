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
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sweeps.schema import EXPERIMENT_PREFIX, Tag, absolute_uri, default_tracking_uri  # noqa: F401
# Short HTTP timeouts: an unreachable server must fail fast with one line, not retry for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


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
    artifacts next to the DB (the default would be relative to each trial's folder)."""
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


def create_parent(uri: str, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    c = client(uri)
    run = c.create_run(experiment_id, run_name=name, tags=tags)
    log_params(c, run.info.run_id, params)
    return run.info.run_id


def reopen(uri: str, run_id: str) -> None:
    """A resumed sweep continues its parent run."""
    client(uri).update_run(run_id, status="RUNNING")


def end_run(uri: str, run_id: str, status: str) -> None:
    client(uri).set_terminated(run_id, status=status)


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(str(k), _param_value(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


def log_metrics(c, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """Finite numbers only (MLflow rejects NaN in some stores; a bool is logged as 0/1)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(_metric_name(k), float(v), now, int(step)) for k, v in sorted(metrics.items())
             if isinstance(v, (int, float)) and math.isfinite(float(v))]
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[i:i + 1000])


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
        found = find_children(uri, experiment_id, parent_id, trial_id=trial_id, dataset=dataset, seed=seed)
        if found:
            self.run_id = found[0].info.run_id
            # A trial killed between create_run and log_params (a node lost, a driver killed)
            # left a child without its config: complete it.
            missing = {k: v for k, v in config.items() if str(k) not in found[0].data.params}
            if missing:
                log_params(c, self.run_id, missing)
            if found[0].info.status != "RUNNING":
                c.update_run(self.run_id, status="RUNNING")
            history = c.get_metric_history(self.run_id, "loss")
            self.last_step = max((m.step for m in history), default=0)
            self.resumed = True
        else:
            all_tags = {**tags, Tag.PARENT: parent_id, Tag.TRIAL_ID: trial_id,
                        Tag.DATASET: dataset, Tag.SEED: str(seed)}
            run = c.create_run(experiment_id, run_name=f"{trial_id}-{dataset}-s{seed}", tags=all_tags)
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
        c.set_terminated(run.info.run_id, status=status)
        n += 1
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


def tag_node(child: ChildRun, node_id: str) -> None:
    """Tag the child run with the Ray node running it now (``ray_node_id``) and every node it
    ran on (``ray_node_ids``, in order: a retried trial moves to a surviving node)."""
    seen = child.client.get_run(child.run_id).data.tags.get(Tag.NODES, "")
    nodes = [n for n in seen.split(",") if n]
    if not nodes or nodes[-1] != node_id:
        nodes.append(node_id)
    child.client.set_tag(child.run_id, Tag.NODE, node_id)
    child.client.set_tag(child.run_id, Tag.NODES, ",".join(nodes))


class TrialRecords:
    """The MLflow children of one trial, one per run (dataset, seed), each opened once, logged
    per epoch and at the end, and closed once; every call through ``Tracked``, so a tracking
    failure is recorded and training goes on."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, trial_id: str, tags: dict[str, str],
                 node_id: str):
        self.uri, self.experiment_id, self.parent_id, self.trial_id = uri, experiment_id, parent_id, trial_id
        self.tags, self.node_id = tags, node_id
        self.tracked = Tracked()
        self.children: dict[str, ChildRun | None] = {}  # None: MLflow could not be reached to make it

    def open(self, run) -> None:
        child = self.tracked.call(f"{run.label}: the child run", ChildRun, self.uri, self.experiment_id,
                                  self.parent_id, self.trial_id, run.cfg["dataset"], run.cfg["seed"],
                                  self.tags, run.cfg)
        if child is not None:
            self.tracked.call(f"{run.label}: node tag", tag_node, child, self.node_id)
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
