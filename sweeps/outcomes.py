"""What happened to each trial, recorded the same way in MLflow and in result.json.

A trial thread cannot tell why Ray stopped it (ASHA's verdict and an interrupted sweep look the
same from inside), and what it still wrote after the stop could land after the driver's own
records; so it writes nothing then, and the driver alone records the verdict, from Tune's saved
trial states once ``fit`` has returned (children still RUNNING, result.json files 'RUNNING'):

    completed       FINISHED, stopped_early=false (the trial closed them itself)
    stopped_early   FINISHED, stopped_early=true   -- ASHA stopped it: a full, valid record
    failed          FAILED with the error
    interrupted     KILLED, interrupted=true       -- the sweep was stopped (Ctrl-C, SIGTERM, a
                    crash): resume it; never ranked as if ASHA had stopped it

A sweep only ever changes the children of its own parent run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from sweeps import schema, tracking

STATUS = {"stopped_early": ("FINISHED", {schema.Tag.STOPPED_EARLY: "true", schema.Tag.INTERRUPTED: "false"}),
          "interrupted": ("KILLED", {schema.Tag.STOPPED_EARLY: "false", schema.Tag.INTERRUPTED: "true"})}


def outcome(row: dict[str, Any]) -> str:
    """completed / stopped_early / failed / interrupted, from a trials.csv row's status."""
    status = row.get("status")
    return status if status in ("completed", "stopped_early", "failed") else "interrupted"


def label(uri: str, experiment_id: str, parent_id: str, rows: list[dict[str, Any]], trial_dirs: dict[str, str]) -> None:
    """Give every stopped or interrupted trial's children and result.json files their verdict."""
    client = tracking.client(uri)
    for row in rows:
        verdict = outcome(row)
        if verdict not in STATUS:
            continue
        status, tags = STATUS[verdict]
        for run in tracking.find_children(uri, experiment_id, parent_id, trial_id=row["trial_id"]):
            for k, v in tags.items():
                client.set_tag(run.info.run_id, k, v)
            if run.info.status != status:
                client.set_terminated(run.info.run_id, status=status)
        folder = trial_dirs.get(row["trial_id"])
        for path in sorted(Path(folder).glob(f"runs/*/{schema.RESULT_FILE}")) if folder else []:
            _relabel(path, status, verdict)
    tracking.name_children_by_outcome(uri, experiment_id, parent_id)


def _relabel(path: Path, status: str, verdict: str) -> None:
    try:
        record = schema.read_result(path)
        record["run"].update(status=status, stopped_early=verdict == "stopped_early",
                             interrupted=verdict == "interrupted")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        print(f"sweeps: {path}: not relabelled ({e})", file=sys.stderr)


def repair(folder: Path, info: dict[str, Any]) -> int:
    """--resume of a completed sweep: close what a tracking outage left open, from the outcomes
    recorded in trials.csv; end the parent run; log the summary again. Returns how many child
    runs were closed."""
    import pandas as pd

    uri, exp_id, parent_id = info["tracking_uri"], info["experiment_id"], info["parent_run_id"]
    rows = pd.read_csv(folder / schema.TRIALS_FILE).to_dict("records") if (folder / schema.TRIALS_FILE).exists() else []
    verdicts = {str(r["trial_id"]): outcome(r) for r in rows}
    client = tracking.client(uri)
    closed = 0
    for run in tracking.find_children(uri, exp_id, parent_id, status="RUNNING"):
        verdict = verdicts.get(run.data.tags.get(schema.Tag.TRIAL_ID, ""), "interrupted")
        status, tags = STATUS.get(verdict, ("FAILED" if verdict == "failed" else "FINISHED", {}))
        for k, v in {**tags, schema.Tag.CLOSED_BY: "repair"}.items():
            client.set_tag(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id, status=status)
        closed += 1
    for name in (schema.TRIALS_FILE, "summary.txt"):
        if (folder / name).exists():
            client.log_artifact(parent_id, str(folder / name))
    client.set_terminated(parent_id, status="FINISHED")
    tracking.name_children_by_outcome(uri, exp_id, parent_id)
    return closed
