"""benchmarks/bf16_parity.py's verdict, which decides what joins trainables.precision.BF16_PARITY:
parity only when every dataset and metric has all its seeds in both precisions, Welch p > 0.05
and a difference of at most 1 point."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bf16_parity  # noqa: E402

SEEDS = {0, 1, 2}
FP32 = {"mnist": [0.870, 0.875, 0.880], "fashionmnist": [0.730, 0.732, 0.728]}


def records(shift: dict[str, float] | None = None, spread: float = 1.0, drop: tuple | None = None) -> list[dict]:
    out = []
    for dataset, values in FP32.items():
        mean = sum(values) / 3
        for seed, v in enumerate(values):
            for precision in ("fp32", "bf16"):
                if drop == (dataset, seed, precision):
                    continue
                w = v if precision == "fp32" else mean + spread * (v - mean) + (shift or {}).get(dataset, 0.0)
                out.append({"method": "vae", "dataset": dataset, "seed": seed, "precision": precision,
                            "train_s": 10.0 if precision == "fp32" else 4.0, "acc_mlp": w, "acc_knn": w})
    return out


def verdict(recs):
    return bf16_parity.report(recs, ["vae"], list(FP32), SEEDS)["methods"]["vae"]


def test_equal_accuracies_are_parity_and_the_speedup_is_the_training_time_ratio():
    got = verdict(records(spread=-1.0))  # the same mean, the seeds mirrored: p = 1
    assert got["verdict"] == "parity" and got["train_speedup_bf16"] == 2.5
    assert {c["p"] for c in got["cells"]} == {1.0} and {c["diff"] for c in got["cells"]} == {0.0}


@pytest.mark.parametrize("shift, why", [
    ({"mnist": -0.03}, "a significant drop on one dataset"),
    ({"fashionmnist": 0.03}, "a significant gain counts too: the rule is equality"),
])
def test_a_significant_difference_is_no_parity(shift, why):
    assert verdict(records(shift))["verdict"] == "no parity", why


def test_a_difference_over_one_point_is_no_parity_even_when_not_significant():
    got = verdict(records({"mnist": -0.015}, spread=8.0))  # noisy seeds: p > 0.05, but 1.5 points
    cell = next(c for c in got["cells"] if c["dataset"] == "mnist" and c["metric"] == "acc_mlp")
    assert cell["p"] > 0.05 and cell["diff"] == pytest.approx(-1.5)
    assert got["verdict"] == "no parity"


def test_a_missing_run_leaves_the_method_incomplete():
    assert verdict(records(spread=-1.0, drop=("fashionmnist", 2, "bf16")))["verdict"] == "incomplete"
