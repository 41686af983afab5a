"""A sweep's records, from open to close, in one place.

A sweep keeps two records of the same facts: files in its experiment folder (``sweep.json``: the
plan and the status; ``trials.csv``; ``summary.txt``; one ``result.json`` per run) and MLflow
runs (a parent per sweep, a child per trial, dataset and seed; sweeps/schema.py says what each
holds). Each fact is written to both by one method:

    claim_folder                  the experiment folder, created exclusively: the first record
    SweepLedger.create / resume   sweep.json and the parent run, new or reopened
    SweepLedger.set_status        running / completed / interrupted / failed: sweep.json, and the
                                  parent's sweep_status tag and run status
    SweepLedger.record_verdict    a trial's verdict (schema.Verdict): its result.json files and
                                  its children
    SweepLedger.drop_orphans      trials Tune forgot in a hard kill: their run files and their
                                  children, gone from both
    SweepLedger.conclude          trials.csv (ranked) and summary.txt, and on the parent the winner
                                  and whether its lead decides, the counts, both files and the
                                  learning curves figure
    SweepLedger.close             the end: children still open, then the status
    SweepLedger.repair            --resume of a completed sweep a tracking outage left open
                                  (``find_resumable`` says which sweep, and whether to repair)
    TrialLedger                   one trial's children and result.json files as it trains, and
                                  its own verdict when it completes or fails

A trial thread cannot tell why Ray stopped it (ASHA's verdict and an interrupted sweep look the
same from inside), and what it still wrote after the stop could land after the driver's own
records; so it writes nothing then, and the driver alone records the verdict of a trial Ray
stopped, from Tune's saved trial states once ``fit`` has returned. A sweep only ever changes the
children of its own parent run. Nothing here imports Ray.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sweeps import mlflow_ui, ranking, schema, tracking
from sweeps.spaces import budget_words
from sweeps.preflight import UsageError
from sweeps.schema import (ASHA_METRIC, COMPLETED, FAILED, INTERRUPTED, SELECTION_METRIC, STOPPED_EARLY, SUMMARY_FILE,
                           SWEEP_END, SWEEP_FILE, TRIALS_FILE, Tag, Verdict, first_line, verdict_of_row)

SWEEP_RUN_STATUS = {"running": "RUNNING", **{end: v.status for end, v in SWEEP_END.items()}}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ranked_trials(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """trials.csv's order: the completed trials by the mean MLP-probe accuracy across datasets
    (the paper's rule), best first; then those ASHA stopped (the deepest first, then by the last
    validation accuracy), the failed, and the unfinished."""
    def key(t):
        status = t.get("status")
        if status == COMPLETED.name and _finite(t.get(SELECTION_METRIC)):
            return (0, -t[SELECTION_METRIC], 0.0)
        if status == STOPPED_EARLY.name:
            return (1, -float(t.get("epochs") or 0), -(t.get(ASHA_METRIC) if _finite(t.get(ASHA_METRIC)) else 0.0))
        return (2 if status == FAILED.name else 3, 0.0, 0.0)

    return sorted(rows, key=key)


def ranked_completed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The completed trials with a (finite) selection score, best first."""
    return [t for t in ranked_trials(rows) if t.get("status") == COMPLETED.name and _finite(t.get(SELECTION_METRIC))]


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The winner among trials.csv rows: the completed trial with the best (finite) mean MLP-probe
    accuracy across datasets (the paper's rule); None when no trial completed."""
    done = ranked_completed(rows)
    return done[0] if done else None


def point_of(row: dict[str, Any], keys) -> str:
    """A trials.csv row's searched values in words (``J=8``), else its trial id."""
    return schema.point_words({k[len("config/"):]: v for k, v in row.items() if k.startswith("config/")}, keys) \
        or str(row["trial_id"])


def winner_lead(rows: list[dict[str, Any]], plan) -> ranking.Lead | None:
    """How far the winner leads the runner-up among the completed trials, against the noise
    between seeds (sweeps/ranking.py); None with fewer than two completed trials."""
    keys, se = mlflow_ui.searched_keys(plan), f"{SELECTION_METRIC}_se"
    return ranking.lead([ranking.Score(point_of(t, keys), t[SELECTION_METRIC], t[se] if _finite(t.get(se)) else math.nan,
                                       len(plan.seeds)) for t in ranked_completed(rows)[:2]])


def count_verdicts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Trials that completed, were stopped early by ASHA and failed."""
    return {v.name: sum(t["status"] == v.name for t in rows) for v in (COMPLETED, STOPPED_EARLY, FAILED)}


class SweepLedger:
    """One sweep's records (see the module docstring): its experiment folder and MLflow parent."""

    def __init__(self, folder: Path, info: dict[str, Any], experiment_id: str, commit: str):
        self.folder, self.info, self.experiment_id, self.commit = Path(folder), info, experiment_id, commit

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def uri(self) -> str:
        return self.info["tracking_uri"]

    @property
    def parent_id(self) -> str:
        return self.info["parent_run_id"]

    # -- open -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, plan, expand: dict[str, Any], folder: Path, uri: str, optuna_url: str | None) -> SweepLedger:
        """A new sweep's records in its claimed ``folder``: the experiment described, the parent
        run (tags, the plan as params, its description), sweep.json. ``optuna_url``: a searched
        sweep's study database, where its study is named after the sweep plus a unique id (a
        sweep name used again, after its folder was deleted, starts a study of its own)."""
        commit = tracking.git_commit(schema.repo_root())
        exp_id = tracking.ensure_experiment(uri, plan.space)
        name = Path(folder).name
        mlflow_ui.describe_experiment(tracking.client(uri), exp_id, plan)
        study = f"{name}-{secrets.token_hex(4)}" if optuna_url else None  # one study per sweep, never reused
        tags = {Tag.SPACE: plan.space, Tag.PROFILE: plan.profile, Tag.GIT_COMMIT: commit, Tag.SWEEP: name,
                Tag.BUDGET: budget_words(plan.budget_changes()),
                Tag.SEARCHER: plan.searcher, Tag.NOTE: mlflow_ui.sweep_note(plan, name),
                Tag.SEARCHED: ",".join(mlflow_ui.searched_keys(plan)),
                **({Tag.OPTUNA_STORAGE: optuna_url, Tag.OPTUNA_STUDY: study} if optuna_url else {})}
        params = {"datasets": ",".join(plan.datasets), "seeds": ",".join(map(str, plan.seeds)),
                  "num_samples": plan.num_samples, "searcher": plan.searcher, "asha": plan.asha,
                  "params": {k: d.describe() for k, d in plan.params.items()},
                  **{f"fixed.{k}": v for k, v in plan.fixed.items()}}
        parent_id = tracking.create_parent(uri, exp_id, name, tags, params)
        info = {"name": name, "space": plan.space, "expand": expand, "plan": plan.to_dict(), "tracking_uri": uri,
                "optuna_storage": optuna_url, "optuna_study": study, "experiment_id": exp_id, "parent_run_id": parent_id,
                "git_commit": commit, "created": datetime.now().isoformat(timespec="seconds")}
        ledger = cls(folder, info, exp_id, commit)
        ledger.set_status("running")
        ledger._announce()
        return ledger

    @classmethod
    def resume(cls, folder: Path) -> SweepLedger:
        """An interrupted sweep's records, reopened: the parent runs again; children a hard kill
        left RUNNING are closed (the trials that resume reopen theirs, found by tags)."""
        info = read_info(folder)
        ledger = cls(folder, info, tracking.ensure_experiment(info["tracking_uri"], info["space"]),
                     tracking.git_commit(schema.repo_root()))
        ledger.set_status("running")
        tracking.close_children(ledger.uri, ledger.experiment_id, ledger.parent_id, "KILLED",
                                **{Tag.CLOSED_BY: "resume"})
        print(f"resuming {folder}", flush=True)
        ledger._announce()
        return ledger

    def _announce(self) -> None:
        print(f"MLflow: {self.uri}", flush=True)
        print(f"  experiment {schema.EXPERIMENT_PREFIX}{self.info['space']}, parent run {self.parent_id}", flush=True)

    # -- the status -------------------------------------------------------------------------------
    def set_status(self, status: str, reason: str = "") -> None:
        """How the sweep stands -- running, completed, interrupted or failed (with ``reason``) --
        in sweep.json (``status``, ``error``) and on the parent run (its ``sweep_status`` and
        ``error`` tags and its run status). sweep.json is written even when MLflow cannot be
        (whose error is raised after it)."""
        try:
            c = tracking.client(self.uri)
            c.set_tag(self.parent_id, Tag.SWEEP_STATUS, status)
            if reason:
                c.set_tag(self.parent_id, Tag.ERROR, reason)
            elif Tag.ERROR in c.get_run(self.parent_id).data.tags:
                c.delete_tag(self.parent_id, Tag.ERROR)
            if status == "running":
                c.update_run(self.parent_id, status="RUNNING")
            else:
                c.set_terminated(self.parent_id, status=SWEEP_RUN_STATUS[status])
        finally:
            self._write_info(status=status, error=reason)

    def _write_info(self, **changes: Any) -> None:
        """sweep.json with ``changes`` (a change to None or '' drops the field), stamped with the
        time; written whole or not at all (a full disk keeps the last one)."""
        self.info = {k: v for k, v in {**self.info, **changes}.items() if v not in (None, "") or k not in changes}
        self.info["updated"] = datetime.now().isoformat(timespec="seconds")
        if self.folder.is_dir():
            schema.write_text_atomic(self.folder / SWEEP_FILE, json.dumps(self.info, indent=2, default=str))

    def close(self, status: str, reason: str = "") -> None:
        """The sweep ends ``status`` (completed / interrupted / failed, with ``reason``): children
        still open end with the verdict of that end (and the reason), closed by the driver; then
        the status."""
        verdict, failure = SWEEP_END[status], None
        try:
            tracking.close_children(self.uri, self.experiment_id, self.parent_id, verdict.status,
                                    **{**verdict.tags(), Tag.CLOSED_BY: "driver", **({Tag.ERROR: reason} if reason else {})})
        except Exception as e:  # noqa: BLE001 -- the server went away: say so, keep the files right
            failure = e
        try:
            self.set_status(status, reason)
        except Exception as e:  # noqa: BLE001
            if not schema.disk_full(e):  # a full disk keeps the last sweep.json whole; the sweep said why
                failure = failure or e
        if failure is not None:
            print(f"run.py: could not close MLflow runs: {first_line(failure)}", file=sys.stderr)

    # -- trial verdicts ---------------------------------------------------------------------------
    def _results_by_trial(self) -> dict[str, list[Path]]:
        """Every readable result.json of the sweep, by the trial that wrote it."""
        out: dict[str, list[Path]] = {}
        for path in schema.find_results(self.folder):
            try:
                trial = schema.read_result(path)["run"].get("trial_id")
            except ValueError:
                continue
            if trial:
                out.setdefault(str(trial), []).append(path)
        return out

    def record_verdict(self, trial_id: str, verdict: Verdict, results: list[Path] | None = None,
                       only_open: bool = False, error: str = "", **tags: str) -> int:
        """``verdict`` for one trial, the same in its result.json files (``results``; found when
        not given) and its MLflow children (``only_open``: those still RUNNING); a failed one's
        ``error`` in both, ``tags`` added to the children. A record that already says so is left
        as it is. Returns how many children it ended. The files are written first: an MLflow
        error (raised) leaves them right."""
        error = error if verdict is FAILED else ""
        for path in results if results is not None else self._results_by_trial().get(trial_id, []):
            try:
                schema.relabel_result(path, verdict, error)
            except (OSError, ValueError) as e:
                print(f"sweeps: {path}: not relabelled ({e})", file=sys.stderr)
        c, ended = tracking.client(self.uri), 0
        for run in tracking.find_children(self.uri, self.experiment_id, self.parent_id, trial_id=trial_id,
                                          status="RUNNING" if only_open else None):
            new = {**verdict.tags(), **({Tag.ERROR: error} if error else {}), **tags}
            if run.info.status == verdict.status and all(run.data.tags.get(k) == v for k, v in new.items()) \
                    and (error or Tag.ERROR not in run.data.tags) and run.data.tags.get(Tag.OUTCOME) == verdict.name:
                continue  # it says so already
            for k, v in new.items():
                c.set_tag(run.info.run_id, k, v)
            if not error and Tag.ERROR in run.data.tags:
                c.delete_tag(run.info.run_id, Tag.ERROR)  # an error of an earlier attempt
            tracking.mark_outcome(c, run.info.run_id, run.info.run_name or "", verdict.status, {**run.data.tags, **new},
                                  current=run.data.tags.get(Tag.OUTCOME))
            if run.info.status != verdict.status:
                c.set_terminated(run.info.run_id, status=verdict.status)
                ended += run.info.status == "RUNNING"
        return ended

    def record_verdicts(self, rows: list[dict[str, Any]]) -> None:
        """Every trial's verdict -- its trials.csv row's, from Tune's trial states once Tune has
        returned -- the same in its result.json files and its children: the driver's own verdict
        on a trial Ray stopped (ASHA-stopped, or cut short by the sweep stopping), and the
        trial's own (completed, failed) wherever a record missed it -- a trial that failed
        before it reopened its records (a checkpoint it could not load), a child it could not
        close, a result.json an interruption relabelled before the trial completed."""
        results, failure = self._results_by_trial(), None
        for row in rows:
            verdict = verdict_of_row(row)
            try:
                self.record_verdict(row["trial_id"], verdict, results.get(row["trial_id"], []),
                                    error=str(row.get("error") or "failed"))
            except Exception as e:  # noqa: BLE001 -- MLflow went away: the files are right, say so
                failure = failure or e
        if failure is not None:
            print(f"run.py: MLflow: trial outcomes not recorded: {first_line(failure)}", file=sys.stderr)

    def drop_trials(self, trial_ids: set[str], why: str) -> None:
        """Remove every record of the trials ``trial_ids``: their run folders (result.json and the
        files beside it) from the experiment folder, their children from MLflow. ``why`` ends the
        line said for each."""
        for trial, paths in self._results_by_trial().items():
            if trial in trial_ids:
                for path in paths:
                    schema.remove_run_files(path)
                print(f"removed the run files of trial {trial}, {why}", flush=True)
        c = tracking.client(self.uri)
        for run in tracking.find_children(self.uri, self.experiment_id, self.parent_id):
            if run.data.tags.get(Tag.TRIAL_ID) in trial_ids:
                if run.info.status == "RUNNING":
                    c.set_terminated(run.info.run_id, status="KILLED")
                c.delete_run(run.info.run_id)
                print(f"MLflow: deleted child run {run.info.run_id} of trial {run.data.tags.get(Tag.TRIAL_ID)}, {why}",
                      flush=True)

    def drop_orphans(self, trial_ids: set[str]) -> None:
        """Remove the records of trials that are not in the experiment any more: after a hard kill
        of the driver, trials started since Tune's last snapshot are forgotten and rerun under new
        ids, which would leave two records of one config."""
        recorded = set(self._results_by_trial()) | {
            r.data.tags.get(Tag.TRIAL_ID, "") for r in tracking.find_children(self.uri, self.experiment_id, self.parent_id)}
        self.drop_trials(recorded - set(trial_ids), "lost in a hard kill")

    # -- the end of a sweep that ran ------------------------------------------------------------------
    def write_trials(self, rows: list[dict[str, Any]]) -> None:
        """trials.csv: one row per trial, ranked (``ranked_trials``: ``rank`` 1 is the winner;
        trials that did not complete have none), its status its verdict once it ended, numbers
        as records hold them (``plain``: 0.9345, not the 0.9345000000000001 of a mean)."""
        import pandas as pd

        ranked, done = ranked_trials(rows), len(ranked_completed(rows))
        ranks = [i + 1 if i < done else None for i in range(len(ranked))]
        frame = pd.DataFrame([{k: schema.plain(v) for k, v in t.items()} for t in ranked])
        frame.insert(0, "rank", pd.array(ranks, dtype="Int64"))
        schema.write_text_atomic(self.folder / TRIALS_FILE, frame.to_csv(index=False))

    def conclude(self, plan, rows: list[dict[str, Any]], summary: str, complete: bool,
                 curves: dict[str, list[tuple[int, float]]] | None = None) -> dict[str, str]:
        """summary.txt; when every trial ended (``complete``), the orphans dropped; on the parent
        the winner, the counts, trials.csv, summary.txt and the learning curves (``curves``:
        {trial id: [(epoch, mean validation kNN accuracy)]}, drawn as ``figures/curves.png``).
        Returns what did not reach MLflow ({trial id, or 'sweep': what}, said on the console and
        kept in sweep.json as ``tracking_incomplete``, which --resume repairs); trials.csv holds
        the results meanwhile."""
        schema.write_text_atomic(self.folder / SUMMARY_FILE, summary + "\n")
        driver_gap = None
        try:
            if complete:
                self.drop_orphans({t["trial_id"] for t in rows})
            self._record_winner(plan, rows)
            self._log_curves(plan, rows, curves or {})
        except Exception as e:  # noqa: BLE001 -- the server went away: say so below, keep the results
            driver_gap = first_line(e)
        gaps = self._tracking_gaps(rows, driver_gap)
        if gaps:
            self._write_info(tracking_incomplete=gaps)
        return gaps

    def _record_winner(self, plan, rows: list[dict[str, Any]]) -> None:
        """The winner on the parent run: tags ``best.trial_id``, ``best.<key>`` and ``best.config``
        (the searched point, JSON), ``best.lead`` (the winner's lead over the runner-up against the
        noise, in words) and ``best.decided`` (true / false), metrics ``best.acc_mlp_mean``, ``best.acc_knn_mean`` and
        ``best.<dataset>.<metric>`` (fractions, as every metric), the counts, a Winner line at the
        top of its description; then the children's names, trials.csv and summary.txt. Tags, not
        params: a resumed sweep may record another winner, and MLflow params cannot change."""
        c, parent = tracking.client(self.uri), self.parent_id
        counts, best, lead = count_verdicts(rows), best_trial(rows), winner_lead(rows, plan)
        metrics: dict[str, Any] = {"trials": len(rows), **{f"trials_{k}": v for k, v in counts.items()}}
        if best is None:
            c.set_tag(parent, f"{Tag.BEST}trial_id", "none (no trial completed its budget)")
        else:
            point = {k: best[f"config/{k}"] for k in mlflow_ui.searched_keys(plan) if f"config/{k}" in best}
            c.set_tag(parent, f"{Tag.BEST}trial_id", str(best["trial_id"]))
            c.set_tag(parent, f"{Tag.BEST}config", json.dumps(point, default=str))
            for k, v in point.items():
                c.set_tag(parent, f"{Tag.BEST}{k}", schema.fmt_value(v))
            wanted = [SELECTION_METRIC, "acc_knn_mean"] + [f"{d}/{m}" for d in plan.datasets for m in ("acc_mlp", "acc_knn")]
            metrics.update({Tag.BEST + k.replace("/", "."): best[k] for k in wanted
                            if isinstance(best.get(k), (int, float))})
            if lead is not None:  # how sure the ranking is (sweeps/ranking.py)
                c.set_tag(parent, f"{Tag.BEST}lead", lead.words())
                c.set_tag(parent, f"{Tag.BEST}decided", str(lead.decided).lower())
        tracking.log_metrics(c, parent, metrics, 0)
        c.set_tag(parent, Tag.NOTE, mlflow_ui.winner_line(best, plan, counts, lead)
                  + mlflow_ui.sweep_note(plan, self.name))
        tracking.name_children_by_outcome(self.uri, self.experiment_id, parent)
        for f in (TRIALS_FILE, SUMMARY_FILE):
            c.log_artifact(parent, str(self.folder / f))

    def _log_curves(self, plan, rows: list[dict[str, Any]], curves: dict[str, list[tuple[int, float]]]) -> None:
        """The learning curves of every trial (validation kNN accuracy per epoch) as
        ``figures/curves.png`` on the parent run, drawn as analysis/report.py draws them."""
        import tempfile

        from sweeps import figures

        keys = mlflow_ui.searched_keys(plan)
        config = {t["trial_id"]: {k[len("config/"):]: v for k, v in t.items() if k.startswith("config/")} for t in rows}
        labels = {t["trial_id"]: point_of(t, keys) for t in rows}
        numeric = [k for k in keys if all(_finite(cfg.get(k)) for cfg in config.values())]
        outcomes = {t["trial_id"]: verdict_of_row(t).name for t in rows}
        title = f"{', '.join(figures.method_display(m) for m in plan.methods)}: validation kNN accuracy per epoch"
        caption = figures.sweep_caption(self.name, plan.profile, budget_words(plan.budget_changes()), plan.datasets,
                                        plan.epochs, len(plan.seeds))
        with tempfile.TemporaryDirectory() as tmp:
            for path in figures.learning_curves(curves, labels, outcomes, title, caption, Path(tmp) / "curves",
                                                {t: cfg[numeric[0]] for t, cfg in config.items()}
                                                if len(keys) == 1 and numeric else None):
                tracking.client(self.uri).log_artifact(self.parent_id, str(path), artifact_path="figures")

    def disk_use(self) -> dict[str, int]:
        """Bytes the sweep holds: its experiment folder (``folder``; of which ``checkpoints``) and
        its runs' MLflow artifacts (``artifacts``: figures and files, when they are local)."""
        from urllib.parse import urlparse

        def size(path: Path) -> int:
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0

        use = {"folder": size(self.folder),
               "checkpoints": sum(size(d) for d in self.folder.glob("*/checkpoint_*")), "artifacts": 0}
        try:
            c = tracking.client(self.uri)
            for run in [c.get_run(self.parent_id), *tracking.find_children(self.uri, self.experiment_id,
                                                                           self.parent_id)]:
                where = urlparse(run.info.artifact_uri)
                if where.scheme in ("", "file"):
                    use["artifacts"] += size(Path(where.path))
        except Exception:  # noqa: BLE001 -- a store that went away: the folder's figure stands
            pass
        return use

    def _tracking_gaps(self, rows: list[dict[str, Any]], driver_gap: str | None) -> dict[str, str]:
        """Say what did not reach MLflow (trials report their failed tracking calls; the driver its
        own end-of-sweep records) and return {trial id or "sweep": what was not logged}. Nothing is
        buffered: the trials' results are in trials.csv, their checkpoints in the experiment folder."""
        gaps = {t["trial_id"]: f"{t['tracking_failures']} record(s) not logged ({t.get('tracking_missed', '')}); "
                f"first error: {t.get('tracking_error', '')}"
                for t in rows if _count(t.get("tracking_failures"))}
        if driver_gap:
            gaps["sweep"] = f"the parent run's summary, trials.csv and orphan cleanup not logged: {driver_gap}"
        if gaps:
            n = len(gaps) - ("sweep" in gaps)
            print(f"MLflow tracking failed ({self.uri}): {n} trial(s){' and the sweep' if driver_gap else ''} not "
                  f"fully logged; nothing was buffered; training went on (results: trials.csv)", flush=True)
            for who, what in gaps.items():
                print(f"  {'trial ' + who if who != 'sweep' else 'sweep'}: {what}", flush=True)
        return gaps

    # -- repair -------------------------------------------------------------------------------------
    def repair(self) -> int:
        """--resume of a completed sweep: every child a tracking outage left RUNNING ends with its
        trial's verdict from trials.csv (interrupted for a trial not there), its files relabelled
        alike; trials.csv and summary.txt logged again; the sweep completed. Returns how many
        children were closed."""
        import pandas as pd

        path = self.folder / TRIALS_FILE
        try:
            rows = pd.read_csv(path).to_dict("records") if path.exists() else []
        except pd.errors.EmptyDataError:  # a sweep that ran no trial
            rows = []
        verdicts = {str(r["trial_id"]): verdict_of_row(r) for r in rows}
        open_trials = {r.data.tags.get(Tag.TRIAL_ID, "") for r in
                       tracking.find_children(self.uri, self.experiment_id, self.parent_id, status="RUNNING")}
        results = self._results_by_trial()
        closed = sum(self.record_verdict(t, verdicts.get(t, INTERRUPTED), results.get(t, []), only_open=True,
                                         **{Tag.CLOSED_BY: "repair"}) for t in sorted(open_trials))
        c = tracking.client(self.uri)
        for name in (TRIALS_FILE, SUMMARY_FILE):
            if (self.folder / name).exists():
                c.log_artifact(self.parent_id, str(self.folder / name))
        self.info = {k: v for k, v in self.info.items() if k != "tracking_incomplete"}
        self.set_status("completed")
        tracking.name_children_by_outcome(self.uri, self.experiment_id, self.parent_id)
        return closed

    @classmethod
    def of_folder(cls, folder: Path) -> SweepLedger:
        """The ledger of an existing sweep folder, as sweep.json describes it."""
        info = read_info(folder)
        return cls(folder, info, info["experiment_id"], info.get("git_commit", "unknown"))


def claim_folder(storage: Path, name: str | None, space: str, profile: str) -> Path:
    """Create the sweep's experiment folder exclusively (two sweeps can never share one); a
    default name carries the time and a random suffix."""
    storage.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        chosen = name or f"{space}-{profile}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        folder = storage / chosen
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            if name:
                raise UsageError(f"--name {name}: {folder} is taken by another sweep (add --resume to continue "
                                 f"it, or choose another name)") from None
    raise UsageError(f"could not find a free sweep name under {storage}")


def find_resumable(storage: Path, space: str, profile: str, name: str | None) -> tuple[Path, bool]:
    """(experiment folder, repair) for --resume: --name, else the newest unfinished sweep of
    space/profile (its Tune state restored, or its trials started again when Tune had saved
    none: sweeps/reconcile.py); repair is True for a
    completed sweep whose records a tracking outage left incomplete (or any completed sweep
    named with --name). UsageError when there is nothing to resume, or when the sweep --name
    picks has an unreadable sweep.json; another sweep's unreadable sweep.json is skipped (and
    counted in the message when nothing is found)."""
    if name:
        candidates = [storage / name]
    else:
        found = []
        for folder in (storage.iterdir() if storage.is_dir() else []):
            try:
                found.append((os.lstat(folder / SWEEP_FILE).st_mtime, folder))
            except OSError:
                continue
        candidates = [folder for _, folder in sorted(found, reverse=True)]
    unreadable = []
    for folder in candidates:
        if not os.path.lexists(folder / SWEEP_FILE):
            continue
        try:
            info = read_info(folder)
        except UsageError:
            if name:
                raise
            unreadable.append(folder.name)
            continue
        if info["space"] != space:
            if name:
                raise UsageError(f"--resume --name {name}: that sweep is of space {info['space']}, not {space}")
            continue
        if name is None and info["expand"].get("profile") != profile:
            continue
        if info["status"] == "completed":
            if name or info.get("tracking_incomplete"):
                return folder, True
            continue
        return folder, False
    what = f"no sweep {name}" if name else f"no unfinished {space} sweep (profile {profile})"
    skipped = f" ({len(unreadable)} sweep folder(s) with an unreadable sweep.json skipped: " \
              f"{', '.join(unreadable[:3])})" if unreadable else ""
    raise UsageError(f"--resume: nothing to resume: {what} under {storage}{skipped}")


SWEEP_STATUSES = ("running", "completed", "interrupted", "failed")
# What a sweep.json must hold, and of which type, for a sweep to be resumed or repaired.
SWEEP_FIELDS = {"name": str, "space": str, "expand": dict, "plan": dict, "tracking_uri": str, "experiment_id": str,
                "parent_run_id": str, "status": str}


def read_info(folder: Path) -> dict[str, Any]:
    """A sweep folder's sweep.json, checked: UsageError (one line) when it is not a sweep record
    this code can resume -- unreadable, truncated, empty, a symbolic link, or edited into
    something else (a field missing or of the wrong type, a status or plan it does not know)."""
    from sweeps.spaces import Plan

    path = Path(folder) / SWEEP_FILE
    try:
        info = json.loads(schema.read_text_nofollow(path))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable sweep record ({first_line(e)}); move the folder away, or "
                         f"--resume another sweep with --name") from None
    if not isinstance(info, dict):
        raise UsageError(f"{path}: not a sweep record (a JSON object expected)")
    wrong = [k for k, kind in SWEEP_FIELDS.items() if not isinstance(info.get(k), kind)]
    if wrong:
        raise UsageError(f"{path}: not a sweep record this code can resume: "
                         f"{', '.join(wrong)} missing or of the wrong type")
    if info["status"] not in SWEEP_STATUSES:
        raise UsageError(f"{path}: unknown status {info['status']!r} (one of {', '.join(SWEEP_STATUSES)})")
    if info["name"] != Path(folder).name:
        raise UsageError(f"{path}: names sweep {info['name']!r}, not its folder {Path(folder).name!r}")
    try:
        Plan.from_dict(info["plan"])
    except Exception as e:  # noqa: BLE001 -- any edit that breaks the stored plan
        raise UsageError(f"{path}: its plan cannot be read ({schema.error_line(e)})") from None
    return info


def _count(v) -> int:
    try:
        return int(float(v)) if v is not None and math.isfinite(float(v)) else 0
    except (TypeError, ValueError):
        return 0


class TrialLedger:
    """One trial's records as it trains: per run (dataset, seed) an MLflow child and a
    result.json (with the run's files), opened once, written every epoch and at the end, and
    ended once with the trial's own verdict (completed, or failed with its error). Every MLflow
    call goes through ``tracking.Tracked``, so a tracking failure is counted and training goes
    on; a result.json that cannot be written is said on stderr."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, trial_id: str, trial_dir: Path,
                 identity: dict[str, Any], tags: dict[str, str], node_id: str, node_ip: str = ""):
        self.uri, self.experiment_id, self.parent_id, self.trial_id = uri, experiment_id, parent_id, trial_id
        self.trial_dir, self.identity, self.tags = Path(trial_dir), identity, tags
        self.node_id, self.node_ip = node_id, node_ip
        self.tracked = tracking.Tracked()
        self.children: dict[str, tracking.ChildRun | None] = {}  # None: MLflow could not be reached to make it
        self.ended = False

    def _child(self, run, what: str, method: str, *args, **kwargs) -> None:
        child = self.children.get(run.label)
        if child is not None:
            self.tracked.call(f"{run.label}: {what}", getattr(child, method), *args, **kwargs)

    def _result(self, run, metrics: dict[str, Any], verdict: Verdict | None, error: str = "",
                stop_on_full: bool = True) -> None:
        """The run's result.json, written whole or not at all; one that cannot be written is said
        on stderr, and a full disk fails the trial (``stop_on_full``: nothing more could be kept)."""
        try:
            schema.write_run_result(self.trial_dir, run, self.identity, metrics, verdict, error)
        except OSError as e:
            if stop_on_full and schema.disk_full(e):
                raise
            print(f"sweeps: {run.label}: result.json not written: {schema.error_line(e)}", file=sys.stderr, flush=True)

    def open(self, run) -> None:
        """The run's child (found again after a restore or retry, else created), tagged with its node."""
        child = self.tracked.call(f"{run.label}: the child run", tracking.ChildRun, self.uri, self.experiment_id,
                                  self.parent_id, self.trial_id, run.cfg["dataset"], run.cfg["seed"],
                                  self.tags, run.cfg)
        if child is not None:
            self.tracked.call(f"{run.label}: node tag", tracking.tag_node, child, self.node_id, self.node_ip)
        self.children[run.label] = child

    def epoch(self, run, row: dict[str, Any]) -> None:
        """One epoch: its metrics on the child; result.json follows the run (RUNNING, its last
        epoch) until the run's final record or a verdict replaces it."""
        self._child(run, f"epoch {row['epoch']} metrics", "log_epoch", row)
        self._result(run, row, None)

    def finished(self, run, row: dict[str, Any]) -> None:
        """The run's full evaluation: its files (config, metrics, figures), its result.json, and on
        its child the final metrics not already logged with the last epoch and the files."""
        from trainables.artifacts import write_run_files

        folder = schema.run_folder(self.trial_dir, run.cfg["dataset"], run.cfg["seed"])
        files = write_run_files(folder, run.method, run.splits, run.cfg, run.history, row)
        self._result(run, {**run.final, "epochs_trained": run.epoch}, COMPLETED)
        logged = run.history[-1] if run.history else {}
        self._child(run, "final metrics and artifacts", "log_final",
                    {k: v for k, v in run.final.items() if k not in logged}, run.epoch, files)

    def end(self, runs, verdict: Verdict, error: str = "") -> None:
        """The trial's own verdict, once: every child ends with it (and the error), and every run
        without a final record gets a result.json saying so (its last epoch's metrics)."""
        if self.ended:
            return
        for run in runs:
            if run.final is None:
                self._result(run, run.history[-1] if run.history else {}, verdict, error, stop_on_full=False)
            self._child(run, f"run end ({verdict.status})", "end", verdict, **({Tag.ERROR: error} if error else {}))
        self.ended = True
