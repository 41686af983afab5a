"""The one-config run: it trains, reports, checkpoints, resumes exactly and fails loudly."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import faults
from trainables.config import ConfigError
from trainables.driver import ConsoleHooks, Hooks, NonFiniteLoss, Run, RunGroup, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
TINY = {"dataset": "digits", "train_size": 300, "test_size": 200, "epochs": 3, "eval_every": 1,
        "probe_epochs": 5, "probe_min_steps": 100, "device": "cpu", "seed": 3, "lr": 1e-3}


class Recorder(Hooks):
    def __init__(self):
        self.reports, self.checkpoints, self.rows, self.finished_rows = [], [], [], []

    def epoch(self, run, row):
        self.rows.append(dict(row))

    def finished(self, run, row):
        self.finished_rows.append(dict(row))

    def report(self, metrics, state):
        self.reports.append(dict(metrics))
        if state is not None:
            self.checkpoints.append(state())


def _finals(m):
    return {k: v for k, v in m.items() if k not in ("history", "eval_time_s")}


def _final(group: RunGroup) -> dict:
    return _finals(group.runs[0].final)


def test_simvae_trains_reports_every_epoch_and_evaluates():
    rec = Recorder()
    run = train({**TINY, "method": "simvae", "J": 4, "batch_size": 64}, rec).runs[0]
    out = run.final
    assert [r["epoch"] for r in rec.reports] == [1, 2, 3]
    assert all(math.isfinite(r["val_acc_knn_mean"]) and r["digits/val_acc_knn"] == r["val_acc_knn_mean"]
               for r in rec.reports)
    assert [r["epoch"] for r in rec.rows] == [1, 2, 3]
    assert {"nll", "entropy", "val_acc_knn"} <= set(rec.rows[0])
    last = rec.reports[-1]
    assert last["done"] is True and last["acc_mlp_mean"] == last["digits/acc_mlp"] == out["acc_mlp"]
    assert rec.finished_rows[0]["done"] and rec.finished_rows[0]["acc_mlp"] == out["acc_mlp"]
    for key in ("acc_mlp", "acc_linear", "acc_knn", "acc_knn_best", "acc_gmm", "nmi", "ari"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["recon_error"] > 0
    # 10 classes, 200 test images: chance is 0.10 +- 0.02. (After 3 tiny epochs on heavily
    # cropped/flipped 8x8 digits a VAE-family encoder is still far from its final accuracy.)
    assert out["acc_knn"] > 0.15
    # the loss went down
    assert run.history[-1]["loss"] < run.history[0]["loss"]


def test_training_and_evaluation_flush_denormals_on_their_thread():
    """Denormal floats slowed CPU epochs about 2x late in training (benchmarks/denormals.py): the
    thread that trains, and the one that evaluates, computes with flush-to-zero. The flags are
    per thread, so each is checked in a fresh thread that starts with them off."""
    import threading

    import torch

    tiny = 1e-30  # tiny * tiny / 1e10 ~ 1e-70 underflows; tiny * 1e-9 = 1e-39 is denormal unless flushed
    seen = {}

    def product():
        return float(torch.tensor([tiny], dtype=torch.float32).mul(1e-9)[0])

    def in_thread(name, work):
        def go():
            torch.set_flush_denormal(False)
            seen[name + " before"] = product()
            work()
            seen[name] = product()
        t = threading.Thread(target=go)
        t.start()
        t.join()

    run = Run({**TINY, "method": "vae", "epochs": 1})
    in_thread("train", run.train_epoch)
    in_thread("evaluate", run.finish)
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    torch.set_flush_denormal(False)
    assert seen["train before"] == seen["evaluate before"] == pytest.approx(1e-39, rel=1e-3)  # denormal
    assert seen["train"] == seen["evaluate"] == 0.0
    assert run.final is not None and 0.0 <= run.final["acc_mlp"] <= 1.0


def test_evaluation_time_counts_the_decoder_trained_for_it(monkeypatch):
    """A method without a decoder of its own gets one trained on its frozen representations at
    evaluation: that is evaluation cost (eval_time_s), what benchmarks/sweep_efficiency.py adds up."""
    import time

    from trainables import driver

    trained = []

    def slow_decoder(*args, **kwargs):
        time.sleep(0.5)
        trained.append(True)
        return 0.0

    monkeypatch.setattr(driver, "train_frozen_decoder", slow_decoder)
    run = Run({**TINY, "method": "random"})
    final = run.finish()
    assert trained and final["eval_time_s"] >= 0.5


def test_same_config_and_seed_give_identical_final_metrics():
    cfg = {**TINY, "method": "vae", "epochs": 2}
    a, b = train(cfg), train(cfg)
    assert _final(a) == _final(b)
    c = train({**cfg, "seed": 4})
    assert _final(c) != _final(a)


def test_interrupted_run_resumes_exactly(tmp_path):
    cfg = {**TINY, "method": "simvae", "J": 2, "batch_size": 32}
    reference = train(cfg)

    class Interrupt(ConsoleHooks):
        def report(self, metrics, state):
            super().report(metrics, state)
            if metrics["epoch"] == 2:
                raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, Interrupt(ckpt))
    assert load_checkpoint(ckpt)["runs"][0]["epoch"] == 2  # weights_only: plain data and tensors
    resumed = ConsoleHooks(ckpt)
    seen = []
    resumed.log = seen.append
    out = train(cfg, resumed)
    assert any("resumed from epoch 2" in line for line in seen)
    assert [r["epoch"] for r in out.runs[0].history] == [1, 2, 3]
    assert _final(out) == _final(reference)


def test_interleaved_runs_match_runs_alone():
    cfgs = [{**TINY, "method": "vae", "epochs": 2}, {**TINY, "method": "simvae", "J": 2, "epochs": 2}]
    alone = []
    for cfg in cfgs:
        run = Run(cfg)
        while not run.trained:
            run.train_epoch()
        alone.append(_finals(run.finish()))
    runs = [Run(cfg) for cfg in cfgs]
    while not all(r.trained for r in runs):
        for r in runs:
            r.train_epoch()
    assert [_finals(r.finish()) for r in runs] == alone


def test_nan_loss_stops_with_epoch_and_term():
    # 300 images, 100 views (= images for a VAE) per step: 3 steps an epoch; NaN from step 4 on.
    with faults.registered() as method, pytest.raises(
            NonFiniteLoss, match=r"loss term 'loss' became nan at epoch 2"):
        train({**TINY, "method": method, "batch_size": 100, "nan_after_steps": 3})


def test_random_encoder_needs_no_training():
    rec = Recorder()
    out = train({**TINY, "method": "random"}, rec).runs[0].final
    assert len(rec.reports) == 1 and rec.reports[0]["done"]
    assert 0.1 < out["acc_knn"] <= 1.0
    assert out["recon_error"] > 0  # decoder trained on its frozen representations


GROUP_SCRIPT = """
import json, sys
from trainables.driver import Run, RunGroup, train
tiny = {"train_size": 150, "test_size": 100, "epochs": 2, "eval_every": 1, "probe_epochs": 2,
        "probe_min_steps": 20, "decoder_epochs": 1, "style_J": 1, "device": "cpu", "lr": 1e-3,
        "method": "simvae", "J": 2, "batch_size": 32}
configs = [{**tiny, "dataset": d, "seed": s} for d in ("digits", "shapes") for s in (0, 1)]
group = train(configs)
alone = []
for cfg in configs:
    run = Run(cfg)
    while not run.trained:
        run.train_epoch()
    alone.append(run.finish())
drop = ("eval_time_s",)
print(json.dumps({"ray": "ray" in sys.modules,
                  "group": [{k: v for k, v in r.final.items() if k not in drop} for r in group.runs],
                  "alone": [{k: v for k, v in f.items() if k not in drop} for f in alone],
                  "metrics": group.final_metrics()}))
"""


def test_run_group_trains_in_lockstep_without_ray_and_equals_runs_alone():
    res = subprocess.run([sys.executable, "-c", GROUP_SCRIPT], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ray"] is False  # the unit of experiment needs no Ray
    assert out["group"] == out["alone"]
    m, runs = out["metrics"], out["group"]
    # The paper's rule: the mean over seeds per dataset, then the mean over datasets.
    for i, d in enumerate(("digits", "shapes")):
        assert m[f"{d}/acc_mlp"] == pytest.approx((runs[2 * i]["acc_mlp"] + runs[2 * i + 1]["acc_mlp"]) / 2)
    assert m["acc_mlp_mean"] == pytest.approx((m["digits/acc_mlp"] + m["shapes/acc_mlp"]) / 2)
    assert m["done"] is True and m["epoch"] == 2


def test_aggregate_weighs_every_dataset_the_same_whatever_its_seeds():
    group = RunGroup.__new__(RunGroup)  # the rule alone, on hand-made rows
    group.runs = [type("R", (), {"cfg": {"dataset": d}})() for d in ("a", "a", "a", "b")]
    group.datasets = ("a", "b")
    out = group.aggregate([{"x": 0.0}, {"x": 0.3}, {"x": 0.6}, {"x": 1.0}], ["x"])
    assert out == {"a/x": pytest.approx(0.3), "b/x": 1.0, "x_mean": pytest.approx(0.65)}
    assert "x_mean" not in group.aggregate([{"x": 0.1}, {}, {}, {}], ["x"])  # b missing: no mean


def test_bad_config_raises_before_any_work():
    with pytest.raises(ConfigError):
        train({**TINY, "method": "simvae", "J": 1})


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "trainables", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--method", "nope", "--dataset", "digits"], "unknown method"),
        (["--method", "simvae", "--dataset", "nope"], "unknown dataset"),
        (["--method", "simvae", "--dataset", "digits", "--set", "J=1"], "J=1"),
        (["--method", "simvae", "--dataset", "digits", "--set", "sigma2=0"], "sigma2"),
        (["--method", "simvae", "--dataset", "digits", "--set", "bogus=1"], "unknown key bogus"),
        (["--method", "simvae", "--dataset", "digits", "--epochs", "0"], "epochs=0"),
        (["--method", "simvae", "--dataset", "mnist", "--data-dir", "/nonexistent/x", "--set", "train_size=10"], "mnist"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, fragment):
    res = _cli(*args, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and fragment in lines[0], res.stderr


def test_cli_runs_and_prints_json_last(tmp_path):
    res = _cli("--method", "betavae", "--dataset", "shapes", "--epochs", "1", "--out", str(tmp_path / "o"),
               "--set", "train_size=200", "test_size=100", "probe_epochs=5", "probe_min_steps=50", "beta=2")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    assert 0 <= metrics["acc_mlp"] <= 1
    # 100 test images: accuracies are whole percents, printed as such (not float32's 0.8700000047...)
    for key in ("acc_mlp", "acc_linear", "acc_knn", "acc_gmm"):
        assert round(metrics[key] * 100, 9) == int(round(metrics[key] * 100)) and len(repr(metrics[key])) <= 4, key
    floats = [v for v in metrics.values() if isinstance(v, float)]
    assert floats and all(v == float(f"{v:.7g}") for v in floats)
    assert "epoch 1/1" in res.stderr
    for name in ("config.json", "metrics.json", "recon_grid.png", "learning_curve.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    assert json.loads((tmp_path / "o" / "config.json").read_text())["beta"] == 2.0


def test_cli_help_lists_methods_datasets_and_hyperparameters():
    res = _cli("--help", timeout=60)
    assert res.returncode == 0
    for word in ("simvae", "vae", "betavae", "crvae", "random", "digits", "shapes", "mnist",
                 "sigma2 = 0.15", "J = 10"):
        assert word in res.stdout, word


SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "fashionmnist"])
def test_real_data_trains_and_evaluates_through_the_cli(dataset, tmp_path):
    if not (SHARED_DATA / ("MNIST" if dataset == "mnist" else "FashionMNIST") / "raw").is_dir():
        pytest.skip(f"no {dataset} under {SHARED_DATA}")
    # 2,000 images, 15 epochs of 16 images (32 views) per step: ~1,900 optimiser steps
    # (measured on MNIST: acc_knn 0.70, acc_mlp 0.65; the untrained encoder: 0.43 / 0.40).
    res = _cli("--method", "simvae", "--dataset", dataset, "--data-dir", str(SHARED_DATA), "--epochs", "15",
               "--lr", "1e-3", "--batch-size", "32", "--set", "train_size=2000", "test_size=1000", "J=2",
               "likelihood_scale=1", "probe_min_steps=3000", timeout=900)
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    knn, mlp = {"mnist": (0.6, 0.55), "fashionmnist": (0.55, 0.5)}[dataset]  # 10 classes
    assert metrics["acc_knn"] > knn and metrics["acc_mlp"] > mlp


def test_every_default_that_follows_the_epochs_may_change_on_resume():
    """A run resumes with a longer budget (RESUMABLE_KEYS has ``epochs``): any other key whose
    resolved default changes with ``epochs`` must resume with it, or the longer run's checkpoint
    is 'another run's (decoder_epochs = min(epochs, 10) was, found by the GPU check)."""
    from trainables.config import resolve_config
    from trainables.driver import RESUMABLE_KEYS

    for method in ("simvae", "vae", "simclr", "random"):
        base = resolve_config({"method": method, "dataset": "digits", "epochs": 1})
        for epochs in (2, 3, 10, 11, 20, 39, 40, 400):
            longer = resolve_config({"method": method, "dataset": "digits", "epochs": epochs})
            follows = {k for k in base if base[k] != longer.get(k)}
            assert "epochs" in follows and follows <= RESUMABLE_KEYS, (method, epochs, follows - RESUMABLE_KEYS)


@pytest.mark.parametrize("method", ["simvae", "simclr"])
def test_a_checkpoint_trains_on_with_a_longer_budget(method, tmp_path):
    """--epochs 1 then --epochs 2 with the same --checkpoint: the second resumes at epoch 1 and
    trains one more (SimCLR trains a frozen decoder whose cap follows the epochs)."""
    ckpt = tmp_path / "run.pt"
    cfg = {**TINY, "method": method, "epochs": 1}
    first = train(cfg, ConsoleHooks(ckpt))
    assert first.runs[0].epoch == 1
    resumed = ConsoleHooks(ckpt)
    seen = []
    resumed.log = seen.append
    out = train({**cfg, "epochs": 2}, resumed)
    assert any("resumed from epoch 1" in line for line in seen), seen
    assert [r["epoch"] for r in out.runs[0].history] == [1, 2]


@pytest.mark.parametrize("tagged", [True, False], ids=["tagged", "untagged"])
def test_a_checkpoint_from_another_kind_of_device_trains_on(tagged, tmp_path):
    """A GPU run's checkpoint resumed on a CPU (``device`` is resumable): its augmentation
    generator's state is a CUDA one (16 bytes, which a CPU generator refuses -- found by the GPU
    check). The run trains on with a stream seeded by seed and epoch, and says so; a checkpoint
    written before the device kind was kept (untagged) is recognised by the refusal."""
    import torch

    ckpt = tmp_path / "run.pt"
    cfg = {**TINY, "method": "simvae", "J": 2, "epochs": 1}
    train(cfg, ConsoleHooks(ckpt))
    state = load_checkpoint(ckpt)
    rng = state["runs"][0]["rng"]
    assert rng["aug_device"] == "cpu"
    rng["aug"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset
    if tagged:
        rng["aug_device"] = "cuda"
    else:
        del rng["aug_device"]
    torch.save(state, ckpt)
    resumed = ConsoleHooks(ckpt)
    seen = []
    resumed.log = seen.append
    out = train({**cfg, "epochs": 2}, resumed)
    assert any("resumed from epoch 1" in line for line in seen), seen
    assert any(f"belongs to a {'cuda' if tagged else 'another'} device: resuming on cpu" in line for line in seen), seen
    assert [r["epoch"] for r in out.runs[0].history] == [1, 2]
    assert math.isfinite(out.runs[0].final["acc_mlp"])
