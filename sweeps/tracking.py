"""MLflow primitives, written with ``MlflowClient`` against an absolute tracking URI.

One experiment per space (``ssl-sweeps/<space>``); one parent run per sweep; one child run per
(trial, dataset, seed), tagged ``mlflow.parentRunId`` (MLflow has no nesting of its own). The
driver creates the store, the experiment and the parent before any trial starts (several trials
creating a fresh SQLite DB at once race in its migration). Trials create their children
themselves, idempotently: a restored or retried trial finds its child by tags and continues
logging into it (``ChildRun``), so MLflow ends with exactly one child per trial, dataset and seed.

Ray's ``setup_mlflow`` / ``MLflowLoggerCallback`` are not used: the former never ends its run and
makes a new one on every restore, the latter follows ``MLFLOW_EXPERIMENT_ID`` silently.

Who writes what: sweeps/ledger.py (a sweep's records, and a trial's) through these primitives;
what a person sees in the UI (names, descriptions, the saved view) is sweeps/mlflow_ui.py's.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sweeps import mlflow_ui
from sweeps.lock import first_use
from sweeps.schema import EXPERIMENT_PREFIX, Tag, Verdict, error_line, first_line, outcome_of, plain

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
            raise TrackingError(f"MLflow tracking server {uri} does not answer: {first_line(e)}") from None
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
    artifacts next to the DB (the default would be relative to each trial's folder). The first
    use of a store creates its tables: one process at a time (``lock.first_use``), so two sweeps
    started at once on a new store both find it made. MLflow's INFO lines about creating a
    store's tables are not shown."""
    import logging

    quiet = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic.runtime.migration")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return first_use(uri, lambda: _ensure_experiment(uri, space))
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _ensure_experiment(uri: str, space: str) -> str:
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


def create_parent(uri: str, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    """A sweep's parent run, named after the sweep; returns its id."""
    c = client(uri)
    run = c.create_run(experiment_id, run_name=name, tags=tags)
    log_params(c, run.info.run_id, params)
    return run.info.run_id


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(str(k), _param_value(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


def log_metrics(c, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """Finite numbers only (MLflow rejects NaN in some stores; a bool is logged as 0/1), each
    ``plain``: at float32's precision, without the noise of widening it (0.32, not 0.3199999928)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(_metric_name(k), float(plain(v)), now, int(step)) for k, v in sorted(metrics.items())
             if isinstance(v, (int, float)) and math.isfinite(float(v))]
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[i:i + 1000])


def _metric_name(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:6000]


class ChildRun:
    """The child run of one (trial, dataset, seed): found by tags or created, once."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, trial_id: str,
                 dataset: str, seed: int, tags: dict[str, str], config: dict[str, Any]):
        self.uri = uri
        self.client = c = client(uri)
        searched = [k for k in c.get_run(parent_id).data.tags.get(Tag.SEARCHED, "").split(",") if k]
        self.name = mlflow_ui.run_label(dataset, seed, config, searched)
        found = find_children(uri, experiment_id, parent_id, trial_id=trial_id, dataset=dataset, seed=seed)
        if found:
            self.run_id = found[0].info.run_id
            # A trial killed between create_run and log_params (a node lost, a driver killed)
            # left a child without its config: complete it.
            missing = {k: v for k, v in config.items() if str(k) not in found[0].data.params}
            if missing:
                log_params(c, self.run_id, missing)
            if found[0].info.status != "RUNNING":  # running again: no earlier verdict, error or closer holds
                c.update_run(self.run_id, status="RUNNING", name=self.name)  # no outcome suffix
                c.set_tag(self.run_id, Tag.OUTCOME, "running")
                for k, v in {Tag.STOPPED_EARLY: "false", Tag.INTERRUPTED: "false"}.items():
                    c.set_tag(self.run_id, k, v)
                for k in (Tag.ERROR, Tag.CLOSED_BY):
                    if k in found[0].data.tags:
                        c.delete_tag(self.run_id, k)
            history = c.get_metric_history(self.run_id, "loss")
            self.last_step = max((m.step for m in history), default=0)
            self.resumed = True
        else:
            all_tags = {**tags, Tag.PARENT: parent_id, Tag.TRIAL_ID: trial_id,
                        Tag.DATASET: dataset, Tag.SEED: str(seed), Tag.OUTCOME: "running"}
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
        """The final metrics and files, once: a trial that completed just before a hard kill
        resumes from its final checkpoint and reports them again; what the run holds already
        is not logged twice."""
        if self.resumed:
            logged = self.client.get_run(self.run_id).data.metrics
            metrics = {k: v for k, v in metrics.items() if _metric_name(k) not in logged}
            have = {a.path for a in self.client.list_artifacts(self.run_id)}
            files = [f for f in files if Path(f).name not in have]
        log_metrics(self.client, self.run_id, metrics, step)
        for f in files:
            self.client.log_artifact(self.run_id, str(f))

    def end(self, verdict: Verdict, **tags: str) -> None:
        """End the child with the trial's verdict (and more tags: the error, who closed it)."""
        end_run(self.client, self.run_id, self.name, verdict.status, {**verdict.tags(), **tags})


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


def end_run(c, run_id: str, name: str, status: str, tags: dict[str, str], had: dict[str, str] | None = None) -> None:
    """End a child: ``tags`` set, its name and ``outcome`` after its status and tags (those it
    ``had`` and the new ones), its status."""
    for k, v in tags.items():
        c.set_tag(run_id, k, v)
    mark_outcome(c, run_id, name, status, {**(had or {}), **tags})
    c.set_terminated(run_id, status=status)


def close_children(uri: str, experiment_id: str, parent_id: str, status: str,
                   trial_id: str | None = None, **tags: str) -> int:
    """End every child still RUNNING (of one trial, or of the whole sweep) with ``status``;
    returns how many were closed. The driver's backstop for trials Ray stopped or killed."""
    c = client(uri)
    n = 0
    for run in find_children(uri, experiment_id, parent_id, trial_id=trial_id, status="RUNNING"):
        end_run(c, run.info.run_id, run.info.run_name or "", status, tags, had=run.data.tags)
        n += 1
    return n


def mark_outcome(c, run_id: str, name: str, status: str, tags: dict[str, str], current: str | None = None) -> int:
    """Name the run after its outcome (``mnist-s0 J=8 (ASHA-stopped)``) and tag it ``outcome``;
    returns 1 when something changed. ``name`` may already carry an outcome suffix."""
    outcome = outcome_of(status, tags)
    new = mlflow_ui.outcome_name(name, outcome)
    changed = 0
    if new != name:
        c.update_run(run_id, name=new)
        changed = 1
    if outcome != current:
        c.set_tag(run_id, Tag.OUTCOME, outcome)
        changed = 1
    return changed


def name_children_by_outcome(uri: str, experiment_id: str, parent_id: str) -> int:
    """Give every ended child of the sweep the name and ``outcome`` tag of its final status and
    tags (the driver decides ASHA-stopped vs interrupted only once Tune has returned); returns
    how many were changed."""
    c = client(uri)
    n = 0
    for run in find_children(uri, experiment_id, parent_id):
        if run.info.status != "RUNNING":
            n += mark_outcome(c, run.info.run_id, run.info.run_name or "", run.info.status, run.data.tags,
                              current=run.data.tags.get(Tag.OUTCOME))
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
            self.error = self.error or error_line(e)
            self.missed.append(what)
            print(f"sweeps: MLflow: {what} not logged: {error_line(e)}", file=sys.stderr, flush=True)
            return None

    def metrics(self) -> dict[str, Any]:
        if not self.failures:
            return {}
        shown = self.missed[:12] + ([f"... {len(self.missed) - 12} more"] if len(self.missed) > 12 else [])
        return {"tracking_failures": self.failures, "tracking_error": self.error,
                "tracking_missed": "; ".join(shown)}


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


def git_commit(root: Path) -> str:
    """The checkout's commit, tagged on every run ('unknown' outside git)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
