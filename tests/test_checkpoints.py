"""Disk proportional to need: a trial's checkpoint goes once it has ended and Tune's saved state
says so (a driver killed before that save resumes the trial from it), never while it runs, never
with --keep-checkpoints; the checkpoint written with the final evaluation holds no optimiser
state."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sweeps.trial import DropCheckpoints, final_checkpoint


@dataclass
class FakeTrial:
    path: str
    status: str = "RUNNING"


def _experiment(tmp_path: Path, n: int) -> list[FakeTrial]:
    trials = []
    for i in range(n):
        folder = tmp_path / f"sweep_trial_{i}"
        (folder / "checkpoint_000003").mkdir(parents=True)
        (folder / "checkpoint_000003" / "checkpoint.pt").write_bytes(b"x" * 100)
        (folder / "result.json").write_text("{}")
        trials.append(FakeTrial(str(folder)))
    return trials


def _save_state(tmp_path: Path, at: float) -> None:
    state = tmp_path / "experiment_state-2026-01-01_00-00-00.json"
    state.write_text("{}")
    os.utime(state, (at, at))


@pytest.mark.parametrize("status", ["TERMINATED", "ERROR"])
def test_an_ended_trials_checkpoint_goes_only_after_tune_saved_its_end(tmp_path, status):
    trials = _experiment(tmp_path, 2)
    ended, running = trials
    cb = DropCheckpoints()
    _save_state(tmp_path, time.time())
    (cb.on_trial_error if status == "ERROR" else cb.on_trial_complete)(0, trials, ended)
    cb.on_step_end(0, trials)  # Tune has not yet marked it ended: nothing goes
    ended.status = status
    cb.on_step_end(1, trials)  # marked, but the state on disk predates it: a resume needs the checkpoint
    assert list(Path(ended.path).glob("checkpoint_*"))
    _save_state(tmp_path, time.time() + 5)
    cb.on_step_end(2, trials)
    assert not list(Path(ended.path).glob("checkpoint_*")) and (Path(ended.path) / "result.json").exists()
    assert list(Path(running.path).glob("checkpoint_*"))  # a running trial keeps its own
    assert cb.ended == {}


def test_keep_checkpoints_keeps_every_trials_last(tmp_path):
    trials = _experiment(tmp_path, 1)
    cb = DropCheckpoints(keep=True)
    cb.on_trial_complete(0, trials, trials[0])
    trials[0].status = "TERMINATED"
    cb.on_step_end(0, trials)
    _save_state(tmp_path, time.time() + 5)
    cb.on_step_end(1, trials)
    assert list(Path(trials[0].path).glob("checkpoint_*"))


def test_the_final_checkpoint_drops_the_optimiser_state_only():
    state = {"format": 1, "runs": [{"model": {"w": 1}, "optimizer": {"state": 2}, "epoch": 3}] * 2}
    final = final_checkpoint(state)
    assert [r["optimizer"] for r in final["runs"]] == [None, None]
    assert [(r["model"], r["epoch"]) for r in final["runs"]] == [({"w": 1}, 3)] * 2
    assert state["runs"][0]["optimizer"] == {"state": 2}  # the live state is untouched
