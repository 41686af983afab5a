"""The pixels baseline (models/pixels.py): the raw image as the representation, through the same
evaluation as every method. The slow check measures raw-pixel kNN on real MNIST (../shared/data,
skipped when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import METHODS, NetSpec
from trainables.datasets import load_dataset
from trainables.evaluate import knn_accuracy, standardise
from trainables.driver import Hooks, train

TINY = {"dataset": "digits", "train_size": 300, "test_size": 200, "epochs": 3, "probe_epochs": 5,
        "probe_min_steps": 100, "style_J": 2, "device": "cpu", "seed": 3}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_registered_as_an_untrained_baseline_beside_random():
    cls = METHODS["pixels"]
    assert cls.family == "baseline" and not cls.trainable and cls.display == "Pixels"
    order = list(METHODS)
    assert order.index("pixels") == order.index("random") + 1  # Table 1's baseline rows
    assert cls.hyperparameters == {}


def test_represents_and_reconstructs_the_image_itself():
    m = METHODS["pixels"](NetSpec((3, 8, 8), "resnet", 64, "gaussian"), {})
    x = torch.rand(5, 3, 8, 8)
    assert m.n_views() == 1 and not list(m.parameters())
    torch.testing.assert_close(m.represent(x), x.reshape(5, 192))
    assert m.represent(x.double()).dtype == torch.float32
    torch.testing.assert_close(m.reconstruct(x), x)
    assert float(m.loss(x.unsqueeze(1), x)["loss"]) == 0.0


class Log(Hooks):
    def __init__(self):
        self.lines, self.rows = [], []

    def log(self, message):
        self.lines.append(message)

    def finished(self, run, row):
        self.rows.append(row)


def test_a_run_is_the_evaluation_of_the_standardised_pixels():
    log = Log()
    group = train({**TINY, "method": "pixels"}, log)
    run, final = group.runs[0], group.runs[0].final
    assert run.epoch == run.epochs and run.opt is None  # evaluated straight away, never trained
    assert not any("decoder on frozen" in line for line in log.lines)  # the identity needs no decoder
    assert final["recon_error"] == 0.0
    for key in ("acc_mlp", "acc_linear", "acc_knn", "acc_gmm", "style_aug_mean", "style_aug_scale_r2"):
        assert key in final and 0 <= final[key] <= 1
    assert final["acc_mlp"] > 0.8 and final["acc_knn"] > 0.8  # digits pixels: far above chance (0.1)
    s = run.splits
    tr, te = standardise(s.train.x.flatten(1), s.test.x.flatten(1))
    assert final["acc_knn"] == pytest.approx(knn_accuracy(tr, s.train.y, te, s.test.y, k=10))
    assert log.rows and log.rows[0]["done"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason=f"no MNIST under {SHARED}")
def test_raw_pixel_knn_on_mnist_10k():
    """The issue's figure: raw-pixel kNN (k = 10) on 10,000 MNIST training images is ~0.92-0.93
    (binarised MNIST, 2,000 test images: 0.924 unstandardised, 0.881 train-standardised)."""
    s = load_dataset("mnist", SHARED, train_size=10_000, test_size=2_000, download=False)
    tr, te = s.train.x.flatten(1), s.test.x.flatten(1)
    raw = knn_accuracy(tr, s.train.y, te, s.test.y, k=10)
    assert 0.91 <= raw <= 0.94
    z_tr, z_te = standardise(tr, te)
    assert z_te.abs().max() < 1e3  # dead border pixels do not blow up
    assert 0.86 <= knn_accuracy(z_tr, s.train.y, z_te, s.test.y, k=10) <= 0.90
