"""sweeps/lock.py: one live driver per sweep (a lock file on the storage, its holder named, stale
locks of this host and of others taken over, across hosts by heartbeat), and the first use of a
store by one process at a time. No Ray."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps import lock as lock_module
from sweeps.lock import SweepLock, SweepLocked, boot_id, process_start


def holder(**changes) -> dict:
    """A lock file's content: this process on this host, with ``changes``."""
    return {"host": socket.gethostname(), "boot_id": boot_id(), "pid": os.getpid(),
            "started": process_start(os.getpid()), "token": "theirs", "since": "2026-12-04T10:00:00",
            "command": "sweeps/run.py --space vae_lr", **changes}


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, content: dict | None, age_s: float = 0.0) -> Path:
    path = folder / lock_module.LOCK_FILE
    path.write_text("" if content is None else json.dumps(content))
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return path


# (lock file content, its age in seconds, whether a new driver may take it)
CASES = {
    "this host, its driver alive": (lambda pid: holder(), 0, False),
    "this host, its driver alive, no heartbeat for an hour": (lambda pid: holder(), 3600, False),
    "this host, its driver gone": (lambda pid: holder(pid=pid), 0, True),
    "this host, the pid reused by another process": (lambda pid: holder(started=(process_start(os.getpid()) or 0) + 1),
                                                     0, True),
    "this host before it rebooted": (lambda pid: holder(boot_id="another-boot"), 0, True),
    "another host, heartbeat fresh": (lambda pid: holder(host="other-host", pid=1), 5, False),
    "another host, heartbeat stale": (lambda pid: holder(host="other-host", pid=1), lock_module.STALE_S + 60, True),
    "being written (empty), new": (lambda pid: None, 0, False),
    "left empty by a killed driver": (lambda pid: None, lock_module.BREAK_STALE_S + 60, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_held_lock_is_refused_naming_its_holder_and_a_stale_one_taken_over(case, tmp_path, dead_pid):
    content, age, stale = CASES[case]
    content = content(dead_pid)
    path = write_lock(tmp_path, content, age)
    mine = SweepLock(tmp_path)
    if stale:
        assert mine.acquire() is not None  # says why it took over
        assert mine.held() and json.loads(path.read_text())["pid"] == os.getpid()
        mine.release()
        assert not path.exists()
    else:
        before = path.read_bytes()
        with pytest.raises(SweepLocked) as refused:
            mine.acquire()
        line = str(refused.value)
        assert "\n" not in line and f"{tmp_path.name} is running" in line and str(path) in line
        if content:
            assert f"pid {content['pid']} on host {content['host']}" in line
        assert path.read_bytes() == before  # the holder's lock untouched
        mine.release()
        assert path.exists()  # release gives back only our own lock


def test_the_holder_beats_and_releases(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "HEARTBEAT_S", 0.05)
    mine = SweepLock(tmp_path)
    assert mine.acquire() is None
    path = tmp_path / lock_module.LOCK_FILE
    past = time.time() - 1000
    os.utime(path, (past, past))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5  # touched again
    other = SweepLock(tmp_path)
    with pytest.raises(SweepLocked):
        other.acquire()
    mine.release()
    assert other.acquire() is None
    other.release()


def _race(folder: str, barrier, results) -> None:
    mine = SweepLock(Path(folder))
    barrier.wait()
    try:
        mine.acquire()
        results.put("took")
        time.sleep(1.0)  # hold it while the others try
        mine.release()
    except SweepLocked:
        results.put("refused")


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_of_drivers_racing_for_a_lock_one_wins(stale, tmp_path, dead_pid):
    """Four drivers at once, on a free lock or on the stale lock of a killed driver: exactly one
    takes it (two that break a stale lock at once do not both get it)."""
    if stale:
        write_lock(tmp_path, holder(pid=dead_pid))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["refused", "refused", "refused", "took"]


def _first_use(which: str, url: str, barrier, results) -> None:
    barrier.wait()
    try:
        if which == "mlflow":
            from sweeps import tracking

            results.put(("ok", tracking.ensure_experiment(url, "vae_lr")))
        else:
            from sweeps import search

            search.open_storage(url)
            results.put(("ok", ""))
    except Exception as e:  # noqa: BLE001 -- what the test looks for
        results.put(("failed", f"{type(e).__name__}: {e}"[:300]))


@pytest.mark.parametrize("which", ["mlflow", "optuna"])
def test_sweeps_started_at_once_on_a_new_store_all_get_it(which, tmp_path):
    """Four sweeps starting at the same moment on a store that does not exist yet (MLflow's
    SQLite file, the Optuna study database): each creates or finds the tables and the space's
    experiment; none fails with 'table ... already exists'."""
    url = f"sqlite:///{tmp_path / f'{which}.db'}"
    ctx = multiprocessing.get_context("fork")  # separate processes, as separate drivers are
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(which, url, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [o for o in outcomes if o[0] != "ok"] == []
    assert len({value for _, value in outcomes}) == 1  # one experiment, the same id for all
