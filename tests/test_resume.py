"""--resume end to end on a local Ray (2 CPUs, tiny budgets; ``pytest -m slow``): a second driver
refused while a sweep runs, which then carries on; a default changed in the code between an
interruption and the resume, found before Ray starts and then reverted or accepted; a disk that
fills mid-sweep, ended in one line with no truncated file, then resumed once space is freed."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from test_sweeps_e2e import TINY, experiment_folder, read_csv, runs_of
from test_sweeps_e2e import home, local_ray, tracking_uri  # noqa: F401 -- the fixtures: one local Ray, one store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--space", "simvae_J", "--datasets", "digits", "--max-concurrent", "2", *TINY, "--epochs", "3",
        "--set", "batch_size=32"]


class Sweep:
    """``sweeps/run.py`` as a user starts it, in its own process group (its local Ray with it)."""

    def __init__(self, args: list[str], home: Path, log: Path):
        env = {**os.environ, "SSL_SWEEPS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "sweeps" / "run.py"), *args], env=env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, predicate, timeout: float = 300) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the sweep exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.5)
        raise AssertionError(f"timed out:\n{self.output()[-3000:]}")

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        """Whatever is left of it: the driver and the local Ray it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def checkpoints(storage: Path) -> int:
    return sum(1 for _ in storage.glob("*/sweep_trial_*/checkpoint_*/runs.pt"))


def one_run_per_trial_all_finished(home: Path, space: str = "simvae_J") -> list[dict]:
    """The records of a completed sweep agree: every trial completed in trials.csv, one FINISHED
    child each, its result.json FINISHED and not marked interrupted."""
    folder = experiment_folder(home)
    trials = read_csv(folder / "trials.csv")
    assert sorted(int(t["config/J"]) for t in trials) == [2, 4, 8] and {t["status"] for t in trials} == {"completed"}
    _, (parent,), children = runs_of(home, space)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_status"] == "completed"
    assert Counter(r.data.tags["trial_id"] for r in children) == Counter({t["trial_id"]: 1 for t in trials})
    for r in children:
        assert (r.info.status, r.data.tags["interrupted"], r.data.tags["outcome"]) == ("FINISHED", "false", "completed")
    from analysis.records import load

    files = load(space, source="files")
    assert files.incomplete() == [] and files.trial_counts()["completed"] == 3
    return trials


@pytest.mark.parametrize("then", ["revert", "accept-changes"])
def test_a_live_sweep_is_not_joined_and_a_code_change_is_found_before_ray_starts(then, home, tmp_path, monkeypatch,
                                                                                   capsys):
    """The documented resume typed in a second shell while the sweep runs is one line naming its
    driver, and the sweep carries on untouched. Interrupted, then a default changed in the code
    (knn_k 10 -> 11): the resume names the key before Ray starts and changes nothing; reverted, the
    resume completes the sweep; accepted (--accept-changes), the unfinished trials run again from
    scratch under the new config."""
    from sweeps.run import main
    from trainables import config

    sweep = Sweep(ARGS, home, tmp_path / "driver.log")
    try:
        sweep.wait_for(lambda: checkpoints(home / "tune") >= 2)
        capsys.readouterr()
        assert main([*ARGS, "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is running" in err[0] and f"pid {sweep.proc.pid} on host" in err[0], err
        sweep.proc.send_signal(signal.SIGINT)
        assert sweep.wait(timeout=180) == 130, sweep.output()[-3000:]
    finally:
        sweep.stop()
    assert "Traceback" not in sweep.output()
    folder = experiment_folder(home)
    assert json.loads((folder / "sweep.json").read_text())["status"] == "interrupted"
    unfinished = {t["trial_id"] for t in read_csv(folder / "trials.csv") if t["status"] not in ("completed",)}
    assert unfinished

    original = config.COMMON["knn_k"]
    monkeypatch.setitem(config.COMMON, "knn_k", config.Key(11, int, "k of the headline kNN accuracy"))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert main([*ARGS, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "knn_k 10 then, 11 now" in err[0] and "--accept-changes" in err[0], err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing changed

    _, _, children = runs_of(home, "simvae_J")
    kept = {r.data.tags["trial_id"]: r.info.run_id for r in children}
    if then == "revert":
        monkeypatch.setitem(config.COMMON, "knn_k", original)  # reverted
        assert main([*ARGS, "--resume"]) == 0
        trials = one_run_per_trial_all_finished(home)
        assert {t["trial_id"] for t in trials} >= set(kept)
        _, _, children = runs_of(home, "simvae_J")
        assert {r.data.tags["trial_id"]: r.info.run_id for r in children if r.data.tags["trial_id"] in kept} == kept
    else:
        assert main([*ARGS, "--resume", "--accept-changes"]) == 0
        out = capsys.readouterr().out
        for trial in unfinished & set(kept):
            assert f"removed the run files of trial {trial}, to run again from scratch" in out
        one_run_per_trial_all_finished(home)
        c, _, children = runs_of(home, "simvae_J")
        for r in children:
            assert [m.step for m in c.get_metric_history(r.info.run_id, "loss")] == [1, 2, 3]
            if r.data.tags["trial_id"] in unfinished:
                assert r.info.run_id != kept.get(r.data.tags["trial_id"])  # a new child: from scratch


@pytest.fixture
def small_disk(tmpfs):
    """A 1 GiB tmpfs of our own as the sweep's storage: room for the sweep's first checkpoints
    (tens of MB each), filled by the test."""
    return tmpfs("1g")


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` but ``leave`` bytes; returns the filler file."""
    filler = disk / "filler"
    chunk = b"\0" * 2**20
    with open(filler, "wb", buffering=0) as f:
        try:
            while (room := shutil.disk_usage(disk).free - leave) > 0:  # the sweep writes meanwhile
                f.write(chunk[:room])
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return filler


@pytest.mark.parametrize("leave", [0, 64 * 1024], ids=["nothing left", "room for small files only"])
def test_a_full_disk_ends_the_sweep_in_one_line_and_leaves_no_truncated_file(leave, home, small_disk, tmp_path):
    """The storage fills mid-sweep: the sweep ends failed with one line saying so (no traceback),
    its MLflow records closed FAILED with the reason, nothing truncated or half-written in the
    storage (every checkpoint loads, every JSON file parses, no temporary file); once space is
    freed, --resume --retry-failed completes it."""
    import torch

    args = [*ARGS, "--storage", str(small_disk)]
    sweep = Sweep(args, home, tmp_path / "driver.log")
    try:
        sweep.wait_for(lambda: checkpoints(small_disk) >= 1)
        filler = fill(small_disk, leave)
        code = sweep.wait(timeout=300)
    finally:
        sweep.stop()
    out = sweep.output()
    errors = [line for line in out.splitlines() if line.startswith("run.py: ")]
    assert code == 1 and len(errors) == 1 and errors[0].startswith("run.py: sweep failed: no space left on device")
    assert "Traceback" not in out and "--- Logging error ---" not in out, out[-3000:]
    (folder,) = [p.parent for p in small_disk.glob("*/sweep.json")]
    _, (parent,), children = runs_of_storage(folder)
    assert parent.info.status == "FAILED" and "no space left" in parent.data.tags["error"]
    assert all(r.info.status != "RUNNING" for r in children)
    assert all("No space left" in r.data.tags.get("error", "") or "no space left" in r.data.tags.get("error", "")
               for r in children if r.info.status == "FAILED")
    for p in folder.rglob("*"):
        assert not p.name.endswith(".tmp"), p
        if p.name == "runs.pt":
            torch.load(p, weights_only=True)  # whole
        elif p.name.startswith("basic-variant-state-"):
            pickle.loads(p.read_bytes())  # whole (Tune pickles it, under a .json name)
        elif p.suffix == ".json":
            assert whole_json(p.read_text()), p

    filler.unlink()
    from sweeps.run import main

    assert main([*args, "--resume", "--retry-failed"]) == 0
    trials = read_csv(folder / "trials.csv")
    assert sorted(int(t["config/J"]) for t in trials) == [2, 4, 8] and {t["status"] for t in trials} == {"completed"}
    _, (parent,), children = runs_of_storage(folder)
    assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
    assert all(r.info.status == "FINISHED" and "error" not in r.data.tags for r in children)


def whole_json(text: str) -> bool:
    """``text`` is one JSON document, or JSON lines (Tune's result.json, empty before a report)."""
    try:
        json.loads(text)
        return True
    except ValueError:
        pass
    try:
        for line in text.splitlines():
            if line.strip():
                json.loads(line)
        return True
    except ValueError:
        return False


def runs_of_storage(folder: Path):
    """(client, [the sweep's parent], its children) of the sweep in ``folder``."""
    from mlflow.tracking import MlflowClient

    info = json.loads((folder / "sweep.json").read_text())
    c = MlflowClient(info["tracking_uri"])
    runs = c.search_runs([info["experiment_id"]], max_results=1000)
    return (c, [r for r in runs if r.info.run_id == info["parent_run_id"]],
            [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["parent_run_id"]])
