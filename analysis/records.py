"""Load what a sweep wrote into one pandas frame of per-run records, and summarise it.

Sources (the layout is sweeps/schema.py's): the MLflow experiment ``ssl-sweeps/<space>`` (default:
one parent run per sweep, one child run per (trial, dataset, seed) with the tags in
``schema.Tag``, the config as JSON-encoded params, the final metrics as each key's latest value),
or, without MLflow, the per-run ``result.json`` files of the sweep's Ray experiment folder.

Which sweep (``choose``): the newest one that completed at its profile's full budget -- never,
unless it is named (``--sweep NAME``), one cut short or run at a changed budget (``--epochs``,
``--set train_size=...``, a subset of the profile's datasets or of the space's seeds), which
answers another question; ``--profile`` narrows the default, ``--all-parents`` pools the
complete sweeps run at the chosen one's setting. Every script says first which sweep it read,
with its profile, budget and seeds, and which newer ones it did not (``Records.describe``);
output files carry the sweep's name (``Records.label``), figures and tables its caption.

The frame (``Records.df``), one row per run:
- identity: run_id, parent_id, sweep, trial_id, method, dataset, seed, config_hash, status,
  stopped_early, eligible, start_time (ms), error;
- config: ``config.<key>`` (object dtype: a JSON null is None, a key the run lacks is NaN);
- final metrics: one float column per metric as logged (acc_mlp, acc_knn, ...; NaN when absent
  or not finite).
Only runs that trained the full budget are *eligible*: status FINISHED and not stopped early by
ASHA. Every mean and standard error of the analysis comes from ``summarise``.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from models import METHODS
from sweeps import schema
from sweeps.schema import Tag
from sweeps.figures import sweep_caption
from sweeps.spaces import PROFILES, SPACES, TRAINING_BUDGET_KEYS, budget_changes, budget_words
from trainables.datasets import DATASETS

# Parameters usually searched on a log scale (docs/design.md §2); ablation plots use log axes for them.
LOG_SCALE_PARAMS = frozenset({"sigma2", "beta", "gamma", "temperature", "lr", "likelihood_scale"})
EXIT_USAGE = 2
CONFIG = "config."  # prefix of the config columns
IDENTITY = ("run_id", "parent_id", "sweep", "trial_id", "method", "dataset", "seed", "config_hash", "status",
            "stopped_early", "eligible", "start_time", "error")
_DEFAULTS = {"run_id": "", "parent_id": "", "sweep": "", "trial_id": "", "method": "", "dataset": "", "seed": None,
             "config_hash": "", "status": "", "stopped_early": False, "start_time": 0, "error": ""}
OUTCOMES = ("completed", "stopped_early", "failed", "unfinished")


class AnalysisError(RuntimeError):
    """Something the user can fix (unknown space, missing store, unlogged metric): one line, exit 2."""


class NoUsableSweep(AnalysisError):
    """The space has sweeps, but none complete at its profile's full budget (``choose``)."""


class NoRecords(AnalysisError):
    """MLflow has no records of the space (no store, no experiment, no trial runs): the analysis
    reads the sweep folders' result.json files instead (``load``)."""


# -- names and display order: the registries ----------------------------------------------------


def _rank(registry: dict, name: str) -> tuple[int, str]:
    names = list(registry)
    return (names.index(name) if name in registry else len(names), str(name))


def method_key(name: str) -> tuple[int, str]:
    """Sort key: ``models.METHODS`` order (the paper's Table 1 rows), unknown methods last by name."""
    return _rank(METHODS, name)


def dataset_key(name: str) -> tuple[int, str]:
    """Sort key: ``trainables.datasets.DATASETS`` order, unknown datasets last by name."""
    return _rank(DATASETS, name)


def method_name(name: str) -> str:
    cls = METHODS.get(name)
    return (cls.display if cls is not None else "") or name


def dataset_name(name: str) -> str:
    return getattr(DATASETS.get(name), "display", "") or name


def method_family(name: str) -> str | None:
    """'baseline', 'discriminative' or 'generative'; None for an unregistered method."""
    cls = METHODS.get(name)
    return cls.family if cls is not None else None


def results_dir(out: str | Path | None = None) -> Path:
    """Where outputs go: --out, else <repo>/results."""
    return Path(out).expanduser().resolve() if out else schema.repo_root() / "results"


# -- the frame -----------------------------------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def present(v: Any) -> bool:
    """A config cell that holds a value (None included), not the NaN of a key the run lacks."""
    return not (isinstance(v, float) and math.isnan(v))


def decode(value: str) -> Any:
    """A logged param value: JSON when it parses ('0.15', '4', '"gaussian"', 'null'), else the text."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def make_frame(runs: Iterable[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]) -> pd.DataFrame:
    """The analysis frame from one (identity, config, metrics) per run (see the module docstring;
    ``eligible`` is computed, absent identity fields get empty defaults)."""
    runs = list(runs)
    df = pd.DataFrame({k: [i.get(k, d) for i, _, _ in runs] for k, d in _DEFAULTS.items()}, dtype=object)
    df = df.astype({"seed": "Int64", "stopped_early": bool, "start_time": "int64"})
    df.insert(IDENTITY.index("eligible"), "eligible", (df["status"] == "FINISHED") & ~df["stopped_early"])
    keys = sorted({k for _, c, _ in runs for k in c})
    config = pd.DataFrame({CONFIG + k: pd.Series([c.get(k, math.nan) for _, c, _ in runs], dtype=object)
                           for k in keys}, index=df.index)
    names = sorted({k for _, _, m in runs for k, v in m.items() if _number(v) or v is None} - set(IDENTITY))
    metrics = pd.DataFrame({k: [float(m[k]) if _number(m.get(k)) and math.isfinite(m[k]) else math.nan
                                for _, _, m in runs] for k in names}, index=df.index, dtype=float)
    return pd.concat([df, config, metrics], axis=1)


def config_of(row: pd.Series, keys: Iterable[str]) -> dict[str, Any]:
    """A run's values of ``keys`` (those it has)."""
    return {k: row[CONFIG + k] for k in keys if CONFIG + k in row.index and present(row[CONFIG + k])}


def config_keys(df: pd.DataFrame) -> list[str]:
    return [c[len(CONFIG):] for c in df.columns if c.startswith(CONFIG)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def standard_error(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof = 1) / sqrt(n); NaN with fewer than two values."""
    k = len(values)
    if k < 2:
        return math.nan
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (k - 1)) / math.sqrt(k)


def summarise(df: pd.DataFrame, by: str | Sequence[str], metrics: str | Sequence[str]) -> pd.DataFrame:
    """Mean, standard error (ddof = 1; NaN with n = 1) and n of each metric per group of ``by``
    over the rows with a finite value. Long format, one row per group and metric: columns
    ``*by, metric, mean, se, n, values`` (``values``: the group's values in row order). Groups in
    order of first appearance; a metric missing from ``df`` gives no rows. The mean is sum / n in
    row order, as the selection rule has always computed it, so scores and ties stay bit-identical."""
    by = [by] if isinstance(by, str) else list(by)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    long = df.reindex(columns=[*by, *metrics]).melt(id_vars=by, value_vars=metrics, var_name="metric",
                                                     value_name="value")
    value = pd.to_numeric(long["value"], errors="coerce").astype(float)
    long = long.assign(value=value)[value.map(math.isfinite)]
    if long.empty:
        return pd.DataFrame(columns=[*by, "metric", "mean", "se", "n", "values"])
    out = (long.groupby([*by, "metric"], sort=False, dropna=False)["value"]
           .agg(lambda s: tuple(map(float, s))).rename("values").reset_index())
    return out.assign(mean=out["values"].map(_mean), se=out["values"].map(standard_error),
                      n=out["values"].map(len))[[*by, "metric", "mean", "se", "n", "values"]]


def paper_scores(runs: pd.DataFrame, by: Sequence[str], metric: str,
                 datasets: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's selection rule on ``runs`` (full-budget runs), per group of ``by``: the mean of
    ``metric`` over seeds per dataset (``summarise``, datasets in ``datasets``' order), then the
    mean of those over datasets, each weighing the same, for the groups with a value on every
    dataset. Returns (per group and dataset, per group: ``mean`` is the score). The same rule the
    trials report as ``acc_mlp_mean`` (trainables.driver's ``aggregate``)."""
    by = list(by)
    per_dataset = summarise(runs, [*by, "dataset"], metric).sort_values(
        "dataset", key=lambda d: d.map(list(datasets).index), kind="stable")
    complete = per_dataset.groupby(by, sort=False)["dataset"].transform("size") == len(datasets)
    return per_dataset, summarise(per_dataset[complete], by, "mean")


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One run per (method, config, dataset, seed): the latest, when pooled sweeps repeat one
    (rows ordered by start time, each key where it first appears)."""
    d = df.sort_values("start_time", kind="stable")
    d = d.assign(_seed=d["seed"].astype(str).where(d["seed"].notna(), d["run_id"]))
    keys = ["method", "config_hash", "dataset", "_seed"]
    last = ~d.duplicated(keys, keep="last")
    order = d.groupby(keys, sort=False, dropna=False).ngroup()
    return d[last].assign(_g=order[last]).sort_values("_g", kind="stable").drop(columns=["_seed", "_g"])


def trials(df: pd.DataFrame, by: Sequence[str] = ("parent_id", "trial_id")) -> pd.DataFrame:
    """One row per trial (order of first appearance): its first run's columns, with ``runs`` (how
    many), ``start_time`` (the earliest), ``error`` (the distinct errors, '; '-joined) and
    ``outcome``: failed (a run failed), stopped_early (ASHA), completed (all FINISHED) or unfinished."""
    by = list(by)
    flags = df.assign(_failed=df["status"] == "FAILED", _finished=df["status"] == "FINISHED")
    agg = flags.groupby(by, sort=False, dropna=False).agg(
        runs=("run_id", "size"), start_time=("start_time", "min"), failed=("_failed", "any"),
        stopped=("stopped_early", "any"), finished=("_finished", "all"),
        error=("error", lambda s: "; ".join(sorted({e for e in s if e}))))
    agg["outcome"] = [("failed" if f else "stopped_early" if s else "completed" if c else "unfinished")
                      for f, s, c in zip(agg["failed"], agg["stopped"], agg["finished"])]
    first = df.drop_duplicates(by).set_index(by).drop(columns=["start_time", "error"])
    return first.join(agg[["runs", "start_time", "error", "outcome"]]).reset_index()


# -- records ----------------------------------------------------------------------------------


@dataclass
class SweepRecord:
    """One sweep as its records describe it: its parent run (one run.py invocation), or its
    folder's sweep.json -- with the profile and budget it ran at."""

    run_id: str
    name: str
    start_time: int
    status: str  # the parent run's (FINISHED when the sweep completed) or sweep.json's
    params: dict[str, Any] = field(default_factory=dict)
    profile: str = ""
    budget: str = ""  # 'full budget' or 'custom budget: ...' (sweeps.spaces.budget_words); '' when unknown

    def searched(self) -> dict[str, str]:
        """{searched key: description}, e.g. {'J': 'grid [2, 4, 8, 16]'} (from the parent's params)."""
        value = self.params.get("params")
        return value if isinstance(value, dict) else {}

    @property
    def datasets(self) -> list[str]:
        return [d for d in str(self.params.get("datasets", "")).split(",") if d]

    @property
    def seeds(self) -> list[str]:
        return [x for x in str(self.params.get("seeds", "")).split(",") if x]

    @property
    def fixed(self) -> dict[str, Any]:
        return {k[len("fixed."):]: v for k, v in self.params.items() if k.startswith("fixed.")}

    @property
    def complete(self) -> bool:
        """The sweep ran to its end (not interrupted, failed or still running)."""
        return self.status in ("FINISHED", "completed")

    @property
    def full(self) -> bool:
        return self.budget == budget_words({})

    def setting(self) -> tuple:
        """What sweeps must share to be pooled (--all-parents): the profile, the datasets and the
        training budget (seeds may differ: pooling adds seeds)."""
        return (self.profile, tuple(sorted(self.datasets)), tuple(sorted(
            (k, repr(v)) for k, v in self.fixed.items() if k in TRAINING_BUDGET_KEYS)))

    def passed_over(self) -> str:
        """Why the analysis does not read this sweep unless it is named."""
        if not self.complete:
            return f"{self.status.lower() or 'not ended'}: not a complete sweep"
        return self.budget or "budget unknown"

    def caption(self, seeds: int | None = None) -> str:
        """One line: the sweep, its profile, budget, datasets, epochs and seeds."""
        return sweep_caption(self.name, self.profile or "?", self.budget or "budget unknown", self.datasets,
                             self.fixed.get("epochs"), len(self.seeds) if seeds is None else seeds)


@dataclass
class Records:
    """The runs of the chosen sweeps of one space: ``df`` as in the module docstring."""

    space: str
    source: str  # human-readable: the store and experiment, or the sweep folder
    sweeps: list[SweepRecord]
    df: pd.DataFrame
    uri: str | None = None
    experiment_id: str | None = None
    from_files: bool = False
    passed: list[str] = field(default_factory=list)  # newer sweeps of the space not read, and why

    @property
    def label(self) -> str:
        """The sweep's name, as output files carry it (pooled sweeps: ``<first>+<n>``)."""
        names = [s.name for s in self.sweeps]
        return names[0] if len(names) == 1 else f"{names[0]}+{len(names) - 1}"

    @property
    def n_seeds(self) -> int:
        """Seed runs per dataset and config (the most any has)."""
        if self.df.empty:
            return 0
        return int(self.df.groupby(["config_hash", "dataset"])["seed"].nunique().max())

    def caption(self) -> str:
        """The sweep(s) read, in one line for a figure's subtitle or a table's caption: name,
        profile, budget, datasets, epochs, seeds."""
        text = self.sweeps[0].caption(self.n_seeds) if self.sweeps else f"space {self.space}"
        return text + (f" (and {len(self.sweeps) - 1} more sweep(s) pooled)" if len(self.sweeps) > 1 else "")

    def describe(self) -> str:
        """What the scripts print first: which sweep they read, and which newer ones they did not."""
        status = "; ".join(f"{s.name} {s.status.lower()}" for s in self.sweeps if not s.complete)
        lines = [f"reading {self.caption()}" + (f" -- {status}" if status else "")
                 + (f"; from its {schema.RESULT_FILE} files" if self.from_files else "")]
        if self.passed:
            lines.append("  not read (newer; name one with --sweep NAME): " + "; ".join(self.passed))
        return "\n".join(lines)

    @property
    def datasets(self) -> list[str]:
        """Every dataset any run of these sweeps trained on (the sweep's datasets), display order."""
        found = set(self.df["dataset"])
        for s in self.sweeps:
            found.update(d for d in str(s.params.get("datasets", "")).split(",") if d)
        return sorted(found, key=dataset_key)

    @property
    def methods(self) -> list[str]:
        return sorted(set(self.df["method"]), key=method_key)

    def metric_names(self) -> list[str]:
        return sorted(c for c in self.df.columns if c not in IDENTITY and not c.startswith(CONFIG))

    def eligible(self, metric: str | None = None) -> pd.DataFrame:
        """Full-budget runs (with a finite ``metric`` when given)."""
        ok = self.df["eligible"]
        if metric is not None:
            ok = ok & (self.df[metric].notna() if metric in self.df.columns else False)
        return self.df[ok]

    def has_metric(self, metric: str) -> bool:
        return metric in self.df.columns and bool(self.df[metric].notna().any())

    def require_metric(self, metric: str) -> None:
        if not self.has_metric(metric):
            known = ", ".join(self.metric_names()) or "none"
            raise AnalysisError(f"metric {metric!r} was never logged in {self.source}; logged: {known}")

    def searched(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in self.sweeps:
            out.update(s.searched())
        return out

    def trial_counts(self) -> dict[str, int]:
        """Trials by outcome: completed (full budget), stopped_early (ASHA), failed, unfinished."""
        outcome = trials(self.df)["outcome"]
        return {**{k: int((outcome == k).sum()) for k in OUTCOMES}, "trials": len(outcome)}

    def incomplete(self) -> list[str]:
        """Why these records are not a whole sweep (empty when they are): a sweep that did not
        run to its end (interrupted, failed, still running) or trials left unfinished."""
        reasons = [f"sweep {w.name} is {w.status.lower()}" for w in self.sweeps
                   if w.status not in ("FINISHED", "completed")]
        unfinished = self.trial_counts()["unfinished"]
        if unfinished:
            reasons.append(f"{unfinished} trial(s) unfinished")
        return reasons


# -- MLflow -----------------------------------------------------------------------------------


def _client(uri: str):
    """An MlflowClient for an existing store; a missing SQLite file is an error (never created)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.exists():
            raise NoRecords(f"no MLflow store at {path} (run a sweep first, or pass --tracking-uri)")
        _check_sqlite_store(path)
    elif "://" not in uri and not Path(uri).exists():
        raise NoRecords(f"no MLflow store at {uri}")
    elif uri.startswith(("http://", "https://")):
        from sweeps.tracking import TrackingError, check_reachable  # short timeouts, one retry

        try:
            check_reachable(uri)
        except TrackingError as e:
            raise AnalysisError(str(e)) from None
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _check_sqlite_store(path: Path) -> None:
    """An SQLite file holding MLflow's tables, else AnalysisError (before MLflow tries to migrate
    or read a file that is not its store)."""
    import sqlite3

    try:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise AnalysisError(f"{path} is not an MLflow store (not an SQLite database)")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        finally:
            con.close()
    except (OSError, sqlite3.Error) as e:
        raise AnalysisError(f"cannot read the MLflow store {path}: {e}") from None
    if not {"experiments", "runs"} <= tables:
        raise AnalysisError(f"{path} is an SQLite database but not an MLflow store (no experiments/runs tables)")


def spaces_in_store(uri: str) -> list[str]:
    c = _client(uri)
    prefix = schema.EXPERIMENT_PREFIX
    return sorted(e.name[len(prefix):] for e in c.search_experiments(max_results=1000) if e.name.startswith(prefix))


def _search_all(c, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = c.search_runs([experiment_id], "", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _child(run, sweep_names: dict[str, str]) -> tuple[dict, dict, dict]:
    """One child run as (identity, config, metrics)."""
    tags, info = run.data.tags, run.info
    params = {k: decode(v) for k, v in run.data.params.items()}
    seed = tags.get(Tag.SEED, params.get("seed"))
    parent = tags.get(Tag.PARENT, "")
    trial = tags.get(Tag.TRIAL_ID, info.run_id)
    return ({"run_id": info.run_id, "parent_id": parent, "sweep": tags.get(Tag.SWEEP) or sweep_names.get(parent, ""),
             "trial_id": trial, "method": str(tags.get(Tag.METHOD, params.get("method", ""))),
             "dataset": str(tags.get(Tag.DATASET, params.get("dataset", ""))),
             "seed": int(seed) if seed not in (None, "") else None, "config_hash": tags.get(Tag.CONFIG_HASH) or trial,
             "status": info.status, "stopped_early": tags.get(Tag.STOPPED_EARLY, "false").lower() == "true",
             "start_time": info.start_time or 0, "error": tags.get(Tag.ERROR, "")},
            params, dict(run.data.metrics))


def load_mlflow(space: str, uri: str, parent: str | None = None, all_parents: bool = False,
                profile: str | None = None) -> Records:
    """Children of one sweep of ``space`` (``choose``: the newest complete full-budget sweep, of
    ``profile`` when given; or ``parent``, a sweep's run id or name), or of every sweep that ran
    at its setting (``all_parents``)."""
    c = _client(uri)
    name = schema.EXPERIMENT_PREFIX + space
    exp = c.get_experiment_by_name(name)
    if exp is None:
        known = ", ".join(spaces_in_store(uri)) or "none"
        raise NoRecords(f"no experiment {name} in {uri}; spaces with sweeps: {known}")
    runs = _search_all(c, exp.experiment_id)
    parents = {r.info.run_id: r for r in runs if Tag.PARENT not in r.data.tags}
    children = [r for r in runs if Tag.PARENT in r.data.tags]
    with_children = {r.data.tags[Tag.PARENT] for r in children}
    sweeps = [_parent_sweep(space, parents[p]) for p in parents if p in with_children]
    if not sweeps:
        raise NoRecords(f"{name} has no trial runs yet")
    chosen, passed = choose(space, sweeps, parent, profile, all_parents)
    names = {s.run_id: s.name for s in chosen}
    df = make_frame(_child(r, names) for r in children if r.data.tags[Tag.PARENT] in names)
    listed = ", ".join(s.name for s in chosen)
    return Records(space, f"{uri} experiment {name} (sweep{'s' if len(chosen) > 1 else ''} {listed})",
                   chosen, df, uri=uri, experiment_id=exp.experiment_id, passed=passed)


def _parent_sweep(space: str, run) -> SweepRecord:
    """A parent run as a SweepRecord; its budget from its ``budget`` tag, or (a sweep recorded
    before the tag existed) from its params as ``sweeps.spaces.budget_changes`` reads them."""
    params = {k: decode(v) for k, v in run.data.params.items()}
    profile = run.data.tags.get(Tag.PROFILE, "")
    sweep = SweepRecord(run.info.run_id, run.info.run_name or run.info.run_id, run.info.start_time or 0,
                        run.info.status, params, profile)
    sweep.budget = run.data.tags.get(Tag.BUDGET) or (budget_words(budget_changes(
        space, profile, sweep.datasets, sweep.seeds, sweep.fixed)) if profile else "")
    return sweep


def choose(space: str, sweeps: list[SweepRecord], named: str | None = None, profile: str | None = None,
           pool: bool = False) -> tuple[list[SweepRecord], list[str]]:
    """The sweeps an analysis reads, and the newer ones it passed over (with why). Named (a run
    id or a sweep name): that sweep, whatever its state or budget. Else the newest sweep that
    completed at its profile's full budget (of ``profile`` when given) -- never a sweep cut short
    or run at a changed budget (``--epochs``, ``--set train_size=...``, a subset of datasets or
    seeds), which would answer another question; with ``pool``, every complete sweep sharing its
    setting (profile, datasets, training budget). AnalysisError when there is none."""
    newest = sorted(sweeps, key=lambda s: -s.start_time)
    if named:
        hit = [s for s in newest if named in (s.run_id, s.name)]
        if not hit:
            known = "; ".join(f"{s.name} ({s.run_id[:8]})" for s in newest[:8])
            raise AnalysisError(f"no sweep {named!r} of {space}; its sweeps, newest first: {known}")
        return ([s for s in newest if s.complete and s.setting() == hit[0].setting()] if pool else hit[:1]), []
    mine = [s for s in newest if profile is None or s.profile == profile]
    usable = [s for s in mine if s.complete and s.full]
    if not usable:
        seen = "; ".join(f"{s.name} ({s.passed_over()})" for s in mine[:6]) or "none"
        at = f" at profile {profile}" if profile else ""
        raise NoUsableSweep(f"no complete full-budget sweep of {space}{at}; its sweeps, newest first: {seen}; "
                            f"name one with --sweep NAME")
    chosen = [s for s in usable if s.setting() == usable[0].setting()] if pool else usable[:1]
    passed = [f"{s.name} ({s.passed_over()})" for s in mine if s.start_time > usable[0].start_time]
    return chosen, passed


# -- result.json fallback -----------------------------------------------------------------------


def sweep_folders(space: str, storage: Path) -> list[Path]:
    """The Ray experiment folders of ``space`` (by their sweep.json) holding result.json files."""
    found = []
    for f in Path(storage).glob(f"*/{schema.SWEEP_FILE}"):
        try:
            info = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("space") == space and schema.find_results(f.parent):
            found.append(f.parent)
    if not found:
        raise AnalysisError(f"no sweep folder of space {space!r} with {schema.RESULT_FILE} files under {storage}")
    return found


def _result_row(path: Path, folder: Path, info: dict[str, Any]) -> tuple[dict, dict, dict]:
    """One result.json as (identity, config, metrics); config = the resolved config."""
    record = schema.read_result(path)
    run, config = record["run"], record.get("resolved") or record.get("config") or {}
    seed = run.get("seed", config.get("seed"))
    return ({"run_id": str(run.get("run_id") or path.parent.relative_to(folder).as_posix()),
             "parent_id": str(run.get("parent_run_id") or info.get("parent_run_id") or folder.name),
             "sweep": str(run.get("sweep") or info.get("name") or folder.name),
             "trial_id": str(run.get("trial_id") or path.parent.parent.parent.name),
             "method": str(run.get("method") or config.get("method", "")),
             "dataset": str(run.get("dataset") or config.get("dataset", "")),
             "seed": int(seed) if seed not in (None, "") else None,
             "config_hash": str(run.get("config_hash") or schema.config_hash(record.get("config") or config)),
             "status": str(run.get("status", "")), "stopped_early": bool(run.get("stopped_early")),
             "start_time": int(run.get("start_time") or path.stat().st_mtime * 1000),
             "error": str(run.get("error") or "")},
            config, record.get("metrics") or {})


def _file_sweep(space: str, folder: Path, info: dict[str, Any]) -> SweepRecord:
    """The sweep as its parent run would describe it: datasets, seeds, fixed keys, searched
    parameters, profile and budget (from sweep.json's plan, or its expand arguments and the
    space's definition)."""
    plan = info.get("plan") if isinstance(info.get("plan"), dict) else {}
    expand = info.get("expand") or {}
    profile, sp = plan.get("profile") or expand.get("profile"), SPACES.get(space)
    params = {**sp.params, **sp.by_profile.get(profile, {})} if sp is not None else {}
    datasets = (plan.get("datasets") or expand.get("datasets")
                or (PROFILES[profile].datasets if profile in PROFILES else ()))
    seeds = plan.get("seeds") or expand.get("seeds") or (sp.seeds if sp is not None else ())
    fixed = plan.get("fixed") or (  # without the plan: the profile's budget and the overrides
        {**PROFILES[profile].budget, **({"epochs": expand["epochs"]} if expand.get("epochs") else {}),
         **(expand.get("sets") or {})} if profile in PROFILES else {})
    try:
        started = int(datetime.fromisoformat(info["created"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        started = int(folder.stat().st_mtime * 1000)
    budget = budget_words(budget_changes(space, profile, datasets, seeds, fixed)) if profile else ""
    return SweepRecord(str(info.get("parent_run_id") or folder.name), str(info.get("name") or folder.name), started,
                       str(info.get("status", "")),
                       {"datasets": ",".join(datasets), "seeds": ",".join(map(str, seeds)),
                        "params": {k: d.describe() for k, d in params.items()},
                        **{f"fixed.{k}": v for k, v in fixed.items()}}, profile or "", budget)


def load_files(space: str, storage: Path, named: str | None = None, profile: str | None = None,
               pool: bool = False) -> Records:
    """The runs of one sweep folder of ``space`` (``choose``, as for MLflow) from its
    result.json files (unreadable ones are skipped and counted in ``source``)."""
    infos = {}
    for folder in sweep_folders(space, storage):
        try:
            infos[folder] = json.loads((folder / schema.SWEEP_FILE).read_text())
        except (OSError, ValueError):
            continue
    sweeps = {folder: _file_sweep(space, folder, info) for folder, info in infos.items()}
    chosen, passed = choose(space, list(sweeps.values()), named, profile, pool)
    rows, bad = [], 0
    for folder, sweep in sweeps.items():
        if sweep not in chosen:
            continue
        for path in schema.find_results(folder):
            try:
                rows.append(_result_row(path, folder, infos[folder]))
            except ValueError:
                bad += 1
    skipped = f", {bad} unreadable skipped" if bad else ""
    where = ", ".join(str(f) for f, s in sweeps.items() if s in chosen)
    return Records(space, f"{where} (fallback: {len(rows)} {schema.RESULT_FILE} files{skipped})",
                   chosen, make_frame(rows), from_files=True, passed=passed)


def load(space: str, uri: str | None = None, parent: str | None = None, all_parents: bool = False,
         source: str = "auto", storage: str | Path | None = None, profile: str | None = None) -> Records:
    """Records of one sweep of ``space`` (``choose`` says which: ``parent`` names one by run id or
    name, ``profile`` narrows the default, ``all_parents`` pools) from MLflow, or -- with
    ``source='auto'`` when the store or the experiment is missing, or ``source='files'`` (alias
    'csv') -- from the result.json files of its sweep folders under ``storage`` (default
    <home>/tune)."""
    uri = uri or schema.default_tracking_uri()
    folder = Path(storage).expanduser().resolve() if storage else schema.storage_dir()
    if source in ("files", "csv"):
        return load_files(space, folder, parent, profile, all_parents)
    try:
        return load_mlflow(space, uri, parent=parent, all_parents=all_parents, profile=profile)
    except NoRecords as e:
        if source == "mlflow":
            raise
        try:
            return load_files(space, folder, parent, profile, all_parents)
        except AnalysisError:
            raise e from None


# -- small shared helpers for the scripts ------------------------------------------------------


def add_source_args(p) -> None:
    """The reading options every script shares."""
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///<home>/mlflow.db with <home> = $SSL_SWEEPS_HOME or <repo>/runs)")
    p.add_argument("--sweep", "--parent", dest="parent", metavar="NAME",
                   help="read this sweep (its name, e.g. simvae_J-quick-20250101-120000-ab12, or its parent run id), "
                        "whatever its state or budget; default: the newest complete sweep at its profile's full budget")
    p.add_argument("--profile", help="the default sweep of this profile only (quick, laptop, paper)")
    p.add_argument("--all-parents", action="store_true", help="pool every complete sweep run at the chosen sweep's "
                   "profile, datasets and budget (more seeds)")
    p.add_argument("--source", choices=("auto", "mlflow", "files", "csv"), default="auto",
                   help="auto (default): MLflow, else the result.json files of the space's newest sweep folder; "
                        "or force one (csv: the old name of files)")
    p.add_argument("--storage", help="folder of Ray experiment folders for the files fallback (default <home>/tune)")
    p.add_argument("--out", help="output folder (default <repo>/results)")


def load_from_args(args, space: str) -> Records:
    """The records the script's flags name, announced on stdout (``Records.describe``)."""
    records = load(space, args.tracking_uri, parent=args.parent, all_parents=args.all_parents,
                   source=args.source, storage=args.storage, profile=args.profile)
    print(records.describe(), flush=True)
    return records


def main_guard(prog: str, fn, argv=None) -> int:
    """Run ``fn(argv)``; an AnalysisError (or an unreadable selection file) becomes one line on
    stderr and exit 2."""
    try:
        return fn(argv) or 0
    except (AnalysisError, schema.SelectionError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 -- the store failed under us: one line, not a traceback
        if not type(e).__module__.startswith(("mlflow", "sqlalchemy", "requests", "urllib3", "sqlite3")):
            raise
        print(f"{prog}: error: the MLflow store failed: {schema.error_line(e)}"[:400], file=sys.stderr)
        return EXIT_USAGE
