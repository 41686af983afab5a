"""Resuming a sweep that a kill may have left inconsistent: what Tune's last snapshot says, read
before Tune restores it, and brought into line with what the disk holds.

A sweep keeps three views of its trials, written at different moments: Tune's experiment state
(snapshotted every >= 10 s, docs/design.md §5), Optuna's study (written at once, on every tell)
and the records (result.json and MLflow, written as each trial goes). A hard kill of the driver
can leave Tune's snapshot behind the other two. What each part does about it:

- this module, before Tune restores anything: reads the snapshot (``read_snapshot``: one line,
  exit 2, when it cannot be read; none at all when the driver was killed before Tune saved one,
  and the sweep then runs afresh in its folder, its records so far removed and its study's
  running trials failed), says which trials will run again, and gives each of them the
  checkpoint folder the snapshot names when Tune has since deleted it (``prepare``: an empty
  folder; Tune refuses to restore from a missing one, and the trial takes its newest checkpoint
  from its own folder anyway);
- the trial (sweeps/trial.py): resumes from the newest checkpoint in its folder that loads, which
  is newer than the snapshot's when it trained on, or finished, after the snapshot: a trial that
  completed after it resumes from its final checkpoint and reports that result at once, without
  training or evaluating again;
- the searcher (sweeps/search.py): never tells Optuna twice about one trial, and fails the study's
  trials Tune forgot;
- the ledger (sweeps/ledger.py): the verdicts, the same in every record, once Tune has returned.

This module reads Tune's own files (pickled state: call it only on a folder that passed
``preflight.check_trusted``), so it imports Ray Tune, lazily.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sweeps.preflight import UsageError
from sweeps.schema import first_line, read_text_nofollow

STATE_GLOB = "experiment_state-*.json"
FINISHED = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class SnapshotTrial:
    """One trial as Tune's last snapshot saw it."""

    trial_id: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    folder: Path  # the trial's folder in the sweep
    checkpoint: Path | None  # the checkpoint Tune would restore it from

    def runs_again(self, retry_failed: bool) -> bool:
        return self.status not in FINISHED or (retry_failed and self.status == "ERROR")


def read_snapshot(folder: Path) -> list[SnapshotTrial] | None:
    """The trials of Tune's newest experiment state in ``folder`` (the file Tune restores from);
    None when Tune saved none (the driver was killed in the sweep's first seconds: the sweep runs
    afresh in its folder, on its study); UsageError (one line) when it cannot be read."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    states = sorted(p for p in Path(folder).glob(STATE_GLOB) if not p.is_symlink())
    if not states:
        return None
    path = states[-1]  # Tune takes the newest by name
    try:
        state = json.loads(read_text_nofollow(path))
        trials = []
        for trial_json, metadata_json in state["trial_data"]:
            trial = json.loads(trial_json)
            manager = _TrainingRunMetadata.from_json_state(metadata_json).checkpoint_manager
            latest = manager.latest_checkpoint_result if manager is not None else None
            trial_folder = Path(folder) / trial["relative_logdir"]
            checkpoint = trial_folder / Path(latest.checkpoint.path).name if latest is not None else None
            trials.append(SnapshotTrial(trial["trial_id"], trial["status"], trial_folder, checkpoint))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"--resume: Tune's experiment state {path} cannot be read ({first_line(e)}); the sweep "
                         f"cannot be resumed from it") from None
    return trials


def prepare(trials: list[SnapshotTrial], retry_failed: bool) -> list[str]:
    """Give every trial that will run again the checkpoint folder the snapshot names, when it
    is gone (an empty one: the trial resumes from its newest checkpoint that loads, see the
    module docstring). Returns the ids of the trials given one."""
    given = []
    for t in trials:
        if t.runs_again(retry_failed) and t.checkpoint is not None and not t.checkpoint.exists():
            t.checkpoint.mkdir(parents=True)
            given.append(t.trial_id)
    return given


def checkpoint_folders(trial_folder: Path) -> list[Path]:
    """A trial's checkpoint folders in its sweep folder, newest first (symbolic links left out)."""
    return sorted((p for p in Path(trial_folder).glob("checkpoint_*") if p.is_dir() and not p.is_symlink()),
                  reverse=True)


def forget_checkpoints(trial: SnapshotTrial) -> None:
    """Empty every checkpoint folder of ``trial`` (the folders stay: Tune restores from the one
    it names), so that it starts from scratch (--accept-changes)."""
    for folder in checkpoint_folders(trial.folder):
        for item in folder.iterdir():
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()
