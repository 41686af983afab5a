"""sweeps/storage.py and the record writers on a full disk (a small tmpfs of our own, as root):
every file written whole or not at all -- Tune's copies into the storage through the atomic file
system, the records through ``write_atomic`` -- so a full disk leaves the previous file, or none,
and no temporary file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs
import pytest

from sweeps.storage import atomic_filesystem, remove_leftovers


@pytest.fixture
def full_disk(tmpfs):
    """A 1 MiB tmpfs of the test's own."""
    return tmpfs("1m")


def _tune_copies_a_checkpoint(disk: Path, src: Path) -> Path:
    """What Ray Tune does with a trial's checkpoint: copy its folder into the storage."""
    (src / "runs.pt").write_bytes(os.urandom(3 * 2**20))
    pyarrow.fs.copy_files(str(src), str(disk / "checkpoint_000001"), source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=atomic_filesystem(), chunk_size=64 * 2**20)
    return disk / "checkpoint_000001" / "runs.pt"


def _a_result_json(disk: Path, src: Path) -> Path:
    from sweeps import schema

    return schema.write_result(disk / "run", {"trial_id": "t1", "note": "x" * 3 * 2**20}, {}, {}, {})


def _a_figure(disk: Path, src: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from trainables.artifacts import save_figure

    fig, ax = plt.subplots(figsize=(40, 40), dpi=100)
    ax.imshow(np.random.default_rng(0).random((2000, 2000)))
    save_figure(fig, disk / "learning_curve.png")
    return disk / "learning_curve.png"


def _trials_csv(disk: Path, src: Path) -> Path:
    from sweeps.ledger import SweepLedger

    ledger = SweepLedger(disk, {"name": "s"}, "0", "commit")
    ledger.write_trials([{"trial_id": f"t{i}", "note": "x" * 1000} for i in range(3000)])
    return disk / "trials.csv"


WRITERS = {"Tune copying a checkpoint": _tune_copies_a_checkpoint, "a result.json": _a_result_json,
           "a figure": _a_figure, "trials.csv": _trials_csv}


@pytest.mark.parametrize("previous", [False, True], ids=["new file", "file there before"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_leaves_no_truncated_file(writer, previous, full_disk, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    target = {"Tune copying a checkpoint": full_disk / "checkpoint_000001" / "runs.pt",
              "a result.json": full_disk / "run" / "result.json", "a figure": full_disk / "learning_curve.png",
              "trials.csv": full_disk / "trials.csv"}[writer]
    if previous:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"the previous, whole file")
    with pytest.raises(OSError) as raised:
        WRITERS[writer](full_disk, src)
    from sweeps.schema import disk_full

    assert disk_full(raised.value), raised.value
    if previous:
        assert target.read_bytes() == b"the previous, whole file"
    else:
        assert not target.exists()
    assert [p.name for p in full_disk.rglob("*") if p.is_file() and p != target] == []  # no temporary file


def test_what_a_killed_writer_left_is_cleared(tmp_path):
    (tmp_path / "t" / "checkpoint_000002").mkdir(parents=True)
    (tmp_path / "t" / "checkpoint_000002" / ".runs.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "t" / "result.json.4242-1.tmp").write_text("{")
    (tmp_path / "t" / "result.json").write_text(json.dumps({}))
    assert remove_leftovers(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["result.json"]
