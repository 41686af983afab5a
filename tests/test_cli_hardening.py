"""``python -m trainables`` refuses bad input up front: one line on stderr, exit 2, no traceback,
nothing created or overwritten; checkpoints are checked against the run they resume."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_datasets import write_idx, write_mnist_like
from trainables.__main__ import main
from trainables.datasets import mnist as mnist_module
from trainables.driver import ConsoleHooks, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train_size=150", "test_size=100", "probe_epochs=2", "probe_min_steps=20", "decoder_epochs=1",
        "style_J=1", "--device", "cpu"]
UNWRITABLE = Path("/proc/1/ssl-sweeps-test")  # not writable, even by root


class Evil:
    """A pickle that runs a command when loaded without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def mnist_folder(root: Path, corrupt: str) -> Path:
    """MNIST raw files under root with one file corrupted: 'range' (a label of 11), 'length' (one
    label missing) or 'shape' (the training images' header says 14x56)."""
    raw = root / "MNIST" / "raw"
    arrays = write_mnist_like(raw, np.random.default_rng(0), n_train=30, n_test=10)
    if corrupt == "shape":  # a header that says 14x56: the same bytes, another image
        write_idx(raw / mnist_module.IDX_FILES["train"][0], arrays["train"][0].reshape(-1, 14, 56))
        return root
    y = arrays["train"][1].copy()
    if corrupt == "range":
        y[3] = 11
    else:
        y = y[:-1]
    write_idx(raw / mnist_module.IDX_FILES["train"][1], y)
    return root


def truncated_cifar(root: Path) -> Path:
    npz = root / "cifar10" / "cifar10_lossless_subset.npz"
    npz.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(npz, train_x=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), train_y=np.arange(200) % 10,
             test_x=rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), test_y=np.arange(50) % 10)
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    return root


def a_checkpoint(tmp_path: Path, method: str = "vae", epochs: int = 1) -> Path:
    ckpt = tmp_path / "run.pt"
    train({"method": method, "dataset": "digits", "epochs": epochs, "train_size": 150, "test_size": 100,
           "probe_epochs": 2, "probe_min_steps": 20, "decoder_epochs": 1, "style_J": 1, "device": "cpu"},
          ConsoleHooks(ckpt, stream=open(os.devnull, "w")))
    return ckpt


def case(name, tmp_path):
    """(argv, expected fragment of the one error line, paths that must not be created/changed)."""
    digits = ["--method", "vae", "--dataset", "digits", *TINY]
    if name == "train_size too large":
        return [*digits, "--set", "train_size=100000"], "train_size=100000", []
    if name == "test_size too large":
        return [*digits, "--set", "test_size=100000"], "test_size=100000", []
    if name == "device foo":
        return [*digits, "--device", "foo"], "device='foo'", []
    if name == "device cuda without a GPU":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        return [*digits, "--device", "cuda"], "no such CUDA GPU", []
    if name == "negative seed":
        return [*digits, "--seed", "-5"], "seed=-5", []
    if name == "seed too large for torch":
        return [*digits, "--seed", str(2**70)], "seed=", []
    if name == "width inf":
        return [*digits, "--set", "width=inf"], "width=inf", []
    if name == "sigma2 inf":
        return ["--method", "simvae", "--dataset", "digits", *TINY, "--set", "sigma2=inf"], "sigma2=inf", []
    if name == "knn_k larger than the training set":
        return [*digits, "--set", "knn_k=1000"], "knn_k=1000", []
    if name == "out is a file":
        f = tmp_path / "taken"
        f.write_text("mine")
        return [*digits, "--out", str(f)], "is a file", [f]
    if name == "out unwritable":
        return [*digits, "--out", str(UNWRITABLE / "out")], "on a proc file system", []
    if name == "checkpoint is a folder":
        d = tmp_path / "ckdir"
        d.mkdir()
        return [*digits, "--checkpoint", str(d)], "is a folder", [d]
    if name == "checkpoint unwritable":
        return [*digits, "--checkpoint", str(UNWRITABLE / "ck.pt")], "on a proc file system", []
    if name == "checkpoint corrupt":
        f = tmp_path / "bad.pt"
        f.write_bytes(b"not a checkpoint at all")
        return [*digits, "--checkpoint", str(f)], "cannot load checkpoint", [f]
    if name == "checkpoint of another method":
        f = a_checkpoint(tmp_path, "betavae")
        return [*digits, "--checkpoint", str(f)], "belongs to another run: method='betavae' there, 'vae' here", [f]
    if name == "checkpoint longer than the budget":
        f = a_checkpoint(tmp_path, "vae", epochs=2)
        return [*digits, "--checkpoint", str(f), "--epochs", "1"], "trained 2 epochs, more than epochs=1", [f]
    if name == "truncated CIFAR npz":
        root = truncated_cifar(tmp_path / "data")
        return ["--method", "vae", "--dataset", "cifar10", "--data-dir", str(root), *TINY], "cifar10", []
    if name in ("MNIST labels out of range", "MNIST labels of the wrong length"):
        root = mnist_folder(tmp_path / "data", "range" if "range" in name else "length")
        frag = "labels outside 0..9" if "range" in name else "labels"
        return ["--method", "vae", "--dataset", "mnist", "--data-dir", str(root), "--set", "train_size=100",
                "--device", "cpu"], frag, []
    if name == "epochs true":
        return [*digits, "--set", "epochs=true"], "epochs=True is not a valid int", []
    if name == "sigma2 subnormal":
        return ["--method", "simvae", "--dataset", "digits", *TINY, "--set", "sigma2=1e-320"], "too small", []
    if name == "lr beyond float32":
        return [*digits, "--lr", "1e39"], "lr=1e+39 is invalid: too large", []
    if name == "checkpoint on /proc":
        return [*digits, "--checkpoint", "/proc/self/ck.pt"], "on a proc file system", []
    if name == "out on /sys":
        return [*digits, "--out", "/sys/kernel/ssl-out"], "on a sysfs file system", []
    if name == "data folder a symbolic link loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        return [*digits[:4], "--data-dir", str(tmp_path / "a"), *TINY], "cannot be resolved", []
    if name == "MNIST images of another shape, the right byte count":
        root = mnist_folder(tmp_path / "data", "shape")
        return ["--method", "vae", "--dataset", "mnist", "--data-dir", str(root), "--set", "train_size=100",
                "--device", "cpu"], "not 1x28x28", []
    raise KeyError(name)


CASES = ["train_size too large", "test_size too large", "device foo", "device cuda without a GPU", "negative seed",
         "seed too large for torch", "width inf", "sigma2 inf", "knn_k larger than the training set", "out is a file",
         "out unwritable", "checkpoint is a folder", "checkpoint unwritable", "checkpoint corrupt",
         "checkpoint of another method", "checkpoint longer than the budget", "truncated CIFAR npz",
         "MNIST labels out of range", "MNIST labels of the wrong length", "epochs true", "sigma2 subnormal",
         "lr beyond float32", "checkpoint on /proc", "out on /sys", "data folder a symbolic link loop",
         "MNIST images of another shape, the right byte count"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(name, tmp_path, capsys):
    argv, fragment, kept = case(name, tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in kept}
    capsys.readouterr()
    listing = sorted(tmp_path.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("vae on", "betavae on", "simvae on"))]
    assert code == 2, err
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == listing  # nothing created
    for p, (mtime, data) in before.items():
        assert p.stat().st_mtime_ns == mtime and (data is None or p.read_bytes() == data)


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": 1, "runs": [Evil(marker)]}, f)
    res = subprocess.run([sys.executable, "-m", "trainables", "--method", "vae", "--dataset", "digits", *TINY,
                          "--checkpoint", str(evil)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "cannot load checkpoint" in res.stderr, res.stderr
    assert not marker.exists()  # weights_only=True: the pickle's command never ran
    assert "Traceback" not in res.stderr


def test_a_longer_budget_trains_on_and_evaluates_afresh(tmp_path, capsys):
    ckpt = a_checkpoint(tmp_path, "vae", epochs=1)
    first = torch.load(ckpt, weights_only=True)["runs"][0]
    assert first["epoch"] == 1 and first["final"] is not None
    assert main(["--method", "vae", "--dataset", "digits", *TINY, "--epochs", "2", "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr()
    assert "resumed from epoch 1" in out.err and "epoch 2/2" in out.err
    import json

    reported = json.loads(out.out.strip().splitlines()[-1])
    second = torch.load(ckpt, weights_only=True)["runs"][0]
    assert second["epoch"] == 2 and reported["epochs_trained"] == 2
    assert [r["epoch"] for r in second["history"]] == [1, 2]
    # the metrics are the epoch-2 model's, not the stale epoch-1 evaluation
    assert reported["acc_mlp"] == second["final"]["acc_mlp"]
    assert reported != {**first["final"], "epochs_trained": 2}


def test_out_is_replaced_whole_no_stale_file_survives(tmp_path, capsys):
    """A previous run's --out folder (marked, listing its files) is replaced whole."""
    import json

    from trainables.__main__ import OUT_MARK

    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.png").write_text("an earlier run's figure")
    (out / OUT_MARK).write_text(json.dumps({"files": ["stale.png"]}))
    args = ["--method", "random", "--dataset", "digits", *TINY, "--out", str(out)]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "stale.png" not in names and "metrics.json" in names and "config.json" in names
    assert set(json.loads((out / OUT_MARK).read_text())["files"]) == set(names) - {OUT_MARK}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def _a_selection_file(out: Path) -> None:
    (out / "selection.yaml").write_text("vae:\n  config: {lr: 0.001}\n")


def _notes_and_a_subfolder(out: Path) -> None:
    (out / "notes.txt").write_text("what I tried")
    (out / "data").mkdir()
    (out / "data" / "images.npz").write_bytes(b"\0" * 100)


def _a_previous_run_plus_a_note(out: Path) -> None:
    import json

    from trainables.__main__ import OUT_MARK

    (out / "metrics.json").write_text("{}")
    (out / OUT_MARK).write_text(json.dumps({"files": ["metrics.json"]}))
    (out / "notes.txt").write_text("added by hand")


def _a_mark_that_is_not_ours(out: Path) -> None:
    from trainables.__main__ import OUT_MARK

    (out / OUT_MARK).write_text("not a list of files")
    (out / "results.csv").write_text("a,b\n")


FOREIGN = {"a selection file": _a_selection_file, "notes and a subfolder": _notes_and_a_subfolder,
           "a previous run's outputs plus a note": _a_previous_run_plus_a_note,
           "a mark that is not ours": _a_mark_that_is_not_ours}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_out_refuses_a_folder_holding_what_it_did_not_write(case, tmp_path, capsys):
    """--out replaces a folder whole: only an empty one, or one holding a previous run's outputs
    and nothing else, may be; anything else is one line, exit 2, before training, and every file
    there is left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    FOREIGN[case](out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    listing = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    code = main(["--method", "random", "--dataset", "digits", *TINY, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds files that are not a previous run's outputs" in err[0], err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert sorted(tmp_path.rglob("*")) == listing
