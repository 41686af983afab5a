"""What a person reads on a console: sweeps/console.py's progress lines (one per report, at most
120 columns, accuracies in percent, ASHA's stops and failures said as such, a line while the
final evaluation runs), the end-of-sweep summary in percent, and ``python -m trainables --help``
with the defaults that apply per dataset. The lines of a real sweep: tests/test_sweeps_e2e.py."""
from __future__ import annotations

import inspect
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeps import console, spaces

ROOT = Path(__file__).resolve().parents[1]


def trial(trial_id="a1b2c_00001", tmp=None, **config):
    return SimpleNamespace(trial_id=trial_id, config=config, status="RUNNING", last_result={},
                           local_path=str(tmp) if tmp else None)


def reporter(plan, **kw):
    out = io.StringIO()
    rep = console.ConsoleReporter(plan, out=out, **kw)
    rep.setup()
    return rep, out


def test_one_compact_line_per_report(tmp_path):
    plan = spaces.expand("simvae_J", "quick", epochs=3)
    rep, out = reporter(plan, heartbeat_s=0.0)
    done, stopped, failed = trial("a1b2c_00000", J=2), trial("a1b2c_00001", J=8), trial("a1b2c_00002", tmp_path, J=4)
    for t in (done, stopped, failed):
        rep.on_trial_start(0, [], t)
    rep.on_trial_result(0, [], done, {"epoch": 1, "val_acc_knn_mean": 0.4123})
    rep.on_trial_result(0, [], stopped, {"epoch": 2, "val_acc_knn_mean": 0.25, "done": True})  # ASHA: STOP
    rep.on_trial_result(0, [], done, {"epoch": 2, "val_acc_knn_mean": 0.45})
    rep.on_step_end(0, [done])  # the last epoch and the final evaluation are running
    rep.on_trial_result(0, [], done, {"epoch": 3, "done": True, "val_acc_knn_mean": 0.46, "acc_mlp_mean": 0.6,
                                      "digits/acc_mlp": 0.5, "shapes/acc_mlp": 0.7, "acc_knn_mean": 0.55})
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n  File x\n"
                                        "NonFiniteLoss: simvae on digits: loss term 'loss' became nan at epoch 1\n")
    failed.last_result = {"epoch": 1}
    rep.on_trial_error(0, [], failed)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 120 for line in lines)
    body = [line.split("] ", 1)[1] for line in lines]
    assert body[:3] == [f"{t} {'J=' + j:<8} started: 2 runs (digits, shapes), 3 epochs"
                        for t, j in (("a1b2c_00000", "2"), ("a1b2c_00001", "8"), ("a1b2c_00002", "4"))]
    assert body[3] == "a1b2c_00000 J=2      epoch 1/3  val kNN 41.2%"
    assert body[4] == "a1b2c_00001 J=8      epoch 2/3  val kNN 25.0%  stopped early by ASHA"
    assert body[5] == "a1b2c_00000 J=2      epoch 2/3  val kNN 45.0%  (next: the last epoch, then the final evaluation)"
    assert body[6].startswith("a1b2c_00000 J=2      last epoch + final evaluation running (")
    assert body[7] == "a1b2c_00000 J=2      done  acc MLP 60.0% (digits 50.0, shapes 70.0)  kNN 55.0%"
    full = "a1b2c_00002 J=4      FAILED after epoch 1: NonFiniteLoss: simvae on digits: loss term 'loss' became nan at epoch 1"
    assert full.startswith(body[8][:-1]) and body[8].endswith("…") and len(lines[8]) == 120  # shortened to 120


def test_long_configs_are_shortened():
    plan = spaces.expand("moco_temperature", "quick")
    rep, out = reporter(plan)
    rep.on_trial_result(0, [], trial(temperature=0.0123456789, momentum=0.999, queue_size=256),
                        {"epoch": 1, "val_acc_knn_mean": 0.5})
    (line,) = out.getvalue().splitlines()
    assert "temperature=0.0123 momentum=0.999 queue… epoch" in line and line.endswith("epoch 1/20  val kNN 50.0%")


def test_quiet_trial_keeps_the_trainable_as_tune_sees_it():
    from sweeps.trial import sweep_trial

    wrapped = console.quiet_trial(sweep_trial)
    assert wrapped.__name__ == "sweep_trial"  # trial folders are named after it
    assert list(inspect.signature(wrapped).parameters) == ["point", "ctx"]


def test_summary_reads_in_percent():
    plan = spaces.expand("simvae_J", "quick")
    rows = [{"trial_id": "x_00000", "status": "completed", "config/J": 4, "acc_mlp_mean": 0.6, "acc_knn_mean": 0.55,
             "digits/acc_mlp": 0.5, "shapes/acc_mlp": 0.7, "digits/acc_knn": 0.45, "shapes/acc_knn": 0.65},
            {"trial_id": "x_00001", "status": "stopped_early", "config/J": 8}]
    text = console.summary(plan, rows, 61.2, Path("/runs/tune/s"))
    assert "1 completed, 1 stopped early by ASHA, 0 failed; wall time 61 s" in text
    assert "trial x_00000  J=4" in text
    assert [line.split() for line in text.splitlines() if line.startswith("  digits")] == [["digits", "50.0%", "45.0%"]]
    assert [line.split() for line in text.splitlines() if line.startswith("  mean")] == [["mean", "60.0%", "55.0%"]]


def test_help_shows_the_defaults_that_apply_per_dataset():
    from trainables.config import hyperparameter_help

    text = hyperparameter_help()
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  ")}
    header = rows["dataset"]
    assert dict(zip(header[1:], rows["digits"][1:])) == {"epochs": "20", "lr": "0.001", "batch_size": "16",
                                                        "images_per_step": "16",
                                                        "eval_every": "1", "checkpoint_every": "1",
                                                        "decoder_epochs": "10"}
    assert dict(zip(header[1:], rows["mnist"][1:]))["epochs"] == "400"
    assert "  epochs = per dataset  training epochs" in text and "  batch_size = per dataset" in text
    assert "  seed = 0  seed" in text and "likelihood_scale = 99.4843  " in text  # no 17-digit defaults


@pytest.mark.parametrize("command", [
    ["sweeps/run.py"], ["-m", "trainables"], ["analysis/select.py"], ["analysis/table.py"], ["analysis/ablation.py"],
    ["analysis/style.py"], ["analysis/report.py"], ["analysis/importance.py"],
], ids=lambda c: c[-1])
def test_help_fits_a_120_column_console(command):
    """Every user command's --help reads at 120 columns: no line wider (argparse wraps what it
    formats; the epilogs and descriptions we format ourselves must wrap too)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "COLUMNS": "120"}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    wide = [line for line in res.stdout.splitlines() if len(line) > 120]
    assert res.stdout.count("\n") > 5 and not wide, wide


@pytest.mark.parametrize("baseline", ["random", "pixels"])
def test_summary_names_the_best_learned_method_when_a_baseline_wins(baseline):
    plan = spaces.expand("table1", "quick")
    row = {"status": "completed", "digits/acc_mlp": 0.9, "shapes/acc_mlp": 0.9}
    rows = [{**row, "trial_id": "t_0", "config/method": baseline, "acc_mlp_mean": 0.97},
            {**row, "trial_id": "t_1", "config/method": "simvae", "acc_mlp_mean": 0.886},
            {**row, "trial_id": "t_2", "config/method": "vae", "acc_mlp_mean": 0.65}]
    text = console.summary(plan, rows, 61.2, Path("/runs/tune/s"))
    assert f"trial t_0  method={baseline}" in text
    assert f"({baseline} is a baseline, not a learned representation; the best learned method: simvae, " \
           "mean MLP probe 88.6%)" in text
    learned_wins = console.summary(plan, [{**rows[0], "acc_mlp_mean": 0.5}, *rows[1:]], 61.2, Path("/runs/tune/s"))
    assert "baseline" not in learned_wins and "trial t_1  method=simvae" in learned_wins


def test_every_console_entry_point_names_a_command():
    """pyproject.toml's [project.scripts] (ssl-sweep, ssl-train, ssl-select, ...): each names the
    ``main`` of a command the README runs with python, and that main takes argv."""
    import importlib

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"ssl-sweep", "ssl-train", "ssl-select", "ssl-table"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        main = getattr(importlib.import_module(module), attr)
        assert attr == "main" and list(inspect.signature(main).parameters) == ["argv"], name


# A process whose SIGTERM handler exits by raising SystemExit, as a Ray worker's does, and whose
# signal lands in a finalizer: {where} raises it there, as the handler would.
_LOST_EXIT = """
import gc, signal, sys, time, weakref
from sweeps.console import exit_outside_finalizers

def handler(signum, frame):
    raise SystemExit(3)

signal.signal(signal.SIGTERM, handler)
exit_outside_finalizers()
exit_outside_finalizers()  # twice: installed once

class Obj:
    pass

{where}
gc.collect()
print("carried on", flush=True)
start = time.monotonic()
while time.monotonic() - start < 20:
    time.sleep(0.01)
print("the exit was lost", flush=True)
"""

_FINALIZERS = {
    "weakref callback": "o = Obj(); r = weakref.ref(o, lambda ref: handler(15, None)); del o",
    "__del__": "Obj.__del__ = lambda self: handler(15, None); o = Obj(); del o",
    "WeakSet removal": ("s = weakref.WeakSet(); s._remove = lambda item: handler(15, None)\n"
                        "o = Obj(); r = weakref.ref(o, s._remove); del o"),
    "garbage collection": "a = Obj(); b = Obj(); a.b, b.a = b, a; a.__class__.__del__ = lambda self: handler(15, None)\n"
                          "del a, b",
}


def _python(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("where", list(_FINALIZERS), ids=list(_FINALIZERS))
def test_an_exit_that_lands_in_a_finalizer_is_delivered_again_quietly(where):
    """Ray's SIGTERM landing in a finalizer printed "Exception ignored in: ..." with a traceback on
    the console of an interrupted sweep, and the worker carried on: the exit now happens, with the
    handler's code, and prints nothing."""
    proc = _python(_LOST_EXIT.format(where=_FINALIZERS[where]))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "the exit was lost" not in proc.stdout
    assert proc.stderr == ""


def test_other_exceptions_in_finalizers_are_still_printed():
    proc = _python(_LOST_EXIT.replace("raise SystemExit(3)", "raise ValueError('a real bug')").format(
        where=_FINALIZERS["weakref callback"]).replace("< 20", "< 0.2"))
    assert proc.returncode == 0
    assert "Exception ignored in" in proc.stderr and "ValueError: a real bug" in proc.stderr
    assert proc.stdout == "carried on\nthe exit was lost\n"
