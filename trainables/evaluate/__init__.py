"""Evaluation of frozen representations (docs/design.md §4).

Everything is computed on encoder means (``method.represent``) of clean images: fit on the
train split, select on the validation split, score on the test split. Features are z-scored
with train statistics first (``standardise``), so a random encoder's tiny features or a
discriminative method's huge ones do not break the probes; a dimension constant on train maps
to 0 everywhere.

Settings come from the resolved run config (``cfg``), the one source of their defaults:
``seed``, ``probe_epochs``, ``probe_min_steps``, ``knn_k``, ``style_J``. The functions below the
entry points take them as required arguments.

Metrics returned by ``evaluate`` (all plain floats; accuracies are fractions in [0, 1]):
    acc_mlp       MLP probe Linear(d, h)-ReLU-Linear(h, C), h = min(d, 64), Adam lr 3e-4 (the
                  official probe, h = d, for every learned representation; see ``probes``);
                  test accuracy at the epoch with the best validation accuracy
    acc_linear    the same with a single Linear(d, C)
    acc_knn       kNN, Euclidean, majority vote, k = cfg["knn_k"] (the headline)
    acc_knn_best  kNN with k in 1..KNN_BEST_MAX_K (20) chosen on validation; knn_best_k is that k
    acc_gmm, nmi, ari   GaussianMixture (full covariance, components = classes) on test
                  features (beyond 64 dims, their 64 leading principal components: see
                  ``clustering``); Hungarian-matched accuracy, NMI, ARI
    recon_error   mean over test images of the per-image SUM of squared errors over all
                  pixels and channels, intensities in [0, 1] (omitted without a decoder)
    style_aug_*   augmentation parameters of augmented test views predicted from their
                  representations (R^2 for continuous ones, accuracy for flip / jitter)
    style_<f>_*   ground-truth style factors / attributes (R^2 or accuracy)
    style_aug_mean, style_factor_mean   means of the normalised style scores (see
                  ``normalised_score``: R^2, or accuracy rescaled so the majority-class
                  predictor scores 0 and a perfect one 1)

Modules: ``features`` (encode, standardise), ``knn``, ``probes`` (the probe bank and its
budget), ``clustering`` (GMM), ``style`` (style probes), ``decoder`` (the decoder trained on
frozen representations for a method without one, before ``evaluate``).

Tie-breaks are scikit-learn's: a kNN vote tie goes to the smallest class label; the probe and
kNN-k selections take the earliest epoch / smallest k among equal validation scores.
Neighbours at exactly equal distances are ordered by ``torch.topk`` (implementation-defined).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from trainables.evaluate.clustering import gmm_clustering, hungarian_accuracy
from trainables.evaluate.decoder import train_frozen_decoder
from trainables.evaluate.features import encode, in_eval_mode, standardise
from trainables.evaluate.knn import (KNN_BEST_MAX_K, knn_accuracies, knn_accuracy, knn_best, knn_fixed_and_best,
                                     knn_predictions)
from trainables.evaluate.probes import (PROBE_BATCH, PROBE_LR, PROBE_MAX_HIDDEN, ProbeBank, ProbeResult, adam_update_,
                                        fit_probes, linear_probe, mlp_probe)
from trainables.evaluate.style import (CATEGORICAL_AUG_PARAMS, STYLE_MAX_IMAGES, augmented_views, normalised_score,
                                       style_probes)


@torch.no_grad()
def recon_error(method: Any, x: Tensor, batch_size: int = 512) -> float | None:
    """Mean over images of the per-image SUM of squared errors over all pixels and channels
    (intensities in [0, 1]) between x (N, C, H, W) and ``method.reconstruct(x)``; None when the
    method has no decoder (reconstruct returns None)."""
    total = x.new_zeros((), dtype=torch.float64)
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size].float()
        rec = method.reconstruct(xb)
        if rec is None:
            return None
        total += ((rec.float() - xb) ** 2).sum().double()
    return (total / len(x)).item()


# --------------------------------------------------------------------------------------------
# Entry points used by the training loop
# --------------------------------------------------------------------------------------------
def evaluate(
    method: Any, splits: Any, augment_cfg: Any, cfg: dict[str, Any], *, augment_fn: Callable | None = None
) -> dict[str, float]:
    """The full evaluation (docs/design.md §4) of a trained method; see the module docstring
    for the keys. ``cfg`` is the resolved run config; read: ``seed``, ``probe_epochs`` and
    ``probe_min_steps`` (every probe trains that many epochs, and at least that many steps),
    ``knn_k`` (acc_knn) and ``style_J`` (style probes). ``augment_fn`` replaces
    trainables.augment.augment for the style probes. The method is put in eval mode (its mode
    is restored afterwards). Prints nothing."""
    seed = cfg["seed"]
    probe = dict(epochs=cfg["probe_epochs"], min_steps=cfg["probe_min_steps"], seed=seed)

    def run() -> dict[str, float]:
        parts = (splits.train, splits.val, splits.test)
        raw = tuple(encode(method.represent, p.x) for p in parts)
        tr, va, te = standardise(*raw)
        (ytr, yva, yte), C = (p.y for p in parts), int(splits.info.num_classes)
        out = {
            "acc_mlp": mlp_probe(tr, ytr, va, yva, te, yte, C, **probe),
            "acc_linear": linear_probe(tr, ytr, va, yva, te, yte, C, **probe),
        }
        out["acc_knn"], out["acc_knn_best"], out["knn_best_k"] = knn_fixed_and_best(
            tr, ytr, va, yva, te, yte, range(1, min(KNN_BEST_MAX_K, len(tr)) + 1), min(cfg["knn_k"], len(tr)), C
        )
        out.update(gmm_clustering(te, yte, C, seed=seed))
        rec = recon_error(method, splits.test.x)
        if rec is not None:
            out["recon_error"] = rec
        out.update(style_probes(method, splits, augment_cfg, cfg, augment_fn=augment_fn, clean_features=raw))
        return {key: float(v) for key, v in out.items()}

    return in_eval_mode(method, run)


def validation_knn(
    method: Any, splits: Any, cfg: dict[str, Any], *, max_train: int = 5000, max_val: int | None = None
) -> float:
    """The cheap per-epoch metric ASHA stops on: kNN accuracy (k = ``cfg["knn_k"]``) on the
    validation split (its first ``max_val`` images) with a fixed random subset of
    ``max_train`` train images (generator seed 0, the same every call) as reference; features
    standardised with the reference's statistics, as in ``evaluate``."""

    def run() -> float:
        train, val = splits.train, splits.val
        ref = torch.randperm(len(train.x), generator=torch.Generator().manual_seed(0))[:max_train]
        ref = ref.to(train.x.device)
        nval = len(val.x) if max_val is None else min(max_val, len(val.x))
        ref_f, val_f = standardise(encode(method.represent, train.x[ref]), encode(method.represent, val.x[:nval]))
        return knn_accuracy(
            ref_f, train.y[ref], val_f, val.y[:nval], k=min(cfg["knn_k"], len(ref)),
            num_classes=int(splits.info.num_classes),
        )

    return in_eval_mode(method, run)


__all__ = [
    "ProbeResult",
    "ProbeBank",
    "encode",
    "standardise",
    "knn_predictions",
    "knn_accuracies",
    "knn_accuracy",
    "knn_best",
    "knn_fixed_and_best",
    "adam_update_",
    "fit_probes",
    "mlp_probe",
    "linear_probe",
    "hungarian_accuracy",
    "gmm_clustering",
    "recon_error",
    "normalised_score",
    "augmented_views",
    "style_probes",
    "evaluate",
    "validation_knn",
    "train_frozen_decoder",
    "KNN_BEST_MAX_K",
    "PROBE_BATCH",
    "PROBE_LR",
    "PROBE_MAX_HIDDEN",
    "STYLE_MAX_IMAGES",
    "CATEGORICAL_AUG_PARAMS",
]
