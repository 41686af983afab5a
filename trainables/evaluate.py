"""Evaluation of frozen representations (DESIGN.md §4).

Everything is computed on encoder means (``method.represent``) of clean images: fit on the
train split, select on the validation split, score on the test split. Features are z-scored
with train statistics first (``standardise``), so a random encoder's tiny features or a
discriminative method's huge ones do not break the probes.

Metrics returned by ``evaluate`` (all plain floats; accuracies are fractions in [0, 1]):
    acc_mlp       MLP probe Linear(d, d)-ReLU-Linear(d, C), Adam lr 3e-4 (the official probe);
                  test accuracy at the epoch with the best validation accuracy
    acc_linear    the same with a single Linear(d, C)
    acc_knn       kNN, Euclidean, majority vote, fixed k (the headline)
    acc_knn_best  kNN with k in 1..20 chosen on validation; knn_best_k is that k
    acc_gmm, nmi, ari   GaussianMixture (full covariance, components = classes) on test
                  features; Hungarian-matched accuracy, NMI, ARI
    recon_error   mean over test images of the per-image SUM of squared errors over all
                  pixels and channels, intensities in [0, 1] (omitted without a decoder)
    style_aug_*   augmentation parameters of augmented test views predicted from their
                  representations (R^2 for continuous ones, accuracy for flip / jitter)
    style_<f>_*   ground-truth style factors / attributes (R^2 or accuracy)
    style_aug_mean, style_factor_mean   means of the normalised style scores (see
                  ``normalised_score``: R^2, or accuracy rescaled so the majority-class
                  predictor scores 0 and a perfect one 1)

Probes (``fit_probes``): Adam lr 3e-4 (the official probe's), minibatches of 256, 100 epochs
(official: 200) but never fewer than 5000 optimiser steps -- at lr 3e-4 a probe needs
thousands of steps however small its data. Several probes (the style targets) train together
as one bank of independent networks, one optimiser step for all.

Tie-breaks are scikit-learn's: a kNN vote tie goes to the smallest class label; the probe and
kNN-k selections take the earliest epoch / smallest k among equal validation scores.
Neighbours at exactly equal distances are ordered by ``torch.topk`` (implementation-defined).
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PROBE_EPOCHS = 100  # official: 200; halved for cost (MNIST-size: ~1-2 points below 200 epochs)
PROBE_BATCH = 256  # probe minibatch
PROBE_MIN_STEPS = 5000  # at lr 3e-4 a probe needs thousands of steps, however small the data
PROBE_LR = 3e-4  # official probe learning rate
STYLE_MAX_IMAGES = 5000  # images per split augmented for the augmentation-style probe
CATEGORICAL_AUG_PARAMS = ("flip", "jitter")  # applied / not applied; the rest are continuous
_CHUNK_ELEMENTS = 1 << 24  # ~64 MB of float32 per distance block / evaluation chunk


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def encode(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1024) -> Tensor:
    """Apply ``fn`` (images (n, C, H, W) -> features (n, d)) in batches; (N, d) float32 on
    x's device."""
    out = [fn(x[s : s + batch_size]).float() for s in range(0, len(x), batch_size)]
    return torch.cat(out).to(x.device)


def standardise(train: Tensor, *others: Tensor, rel_floor: float = 1e-8) -> tuple[Tensor, ...]:
    """Z-score ``train`` and ``others`` (each (n, d)) with the per-dimension mean and std of
    ``train``. A std below ``rel_floor`` times the largest one is floored there, so a dead
    (constant) dimension maps to ~0 instead of dividing by zero."""
    train = train.float()
    mean = train.mean(0)
    std = train.std(0, correction=0)
    std = std.clamp_min(rel_floor * std.max().clamp_min(torch.finfo(std.dtype).tiny))
    return tuple((t.float() - mean) / std for t in (train, *others))


# --------------------------------------------------------------------------------------------
# kNN
# --------------------------------------------------------------------------------------------
def knn_predictions(
    train_f: Tensor, train_y: Tensor, query_f: Tensor, ks: Sequence[int], num_classes: int
) -> Tensor:
    """Majority-vote kNN predictions (len(ks), n_query) for every k in ``ks`` from ONE
    top-max(k) search, in query chunks so a distance block stays ~64 MB. Neighbours are ranked
    by squared Euclidean distance less the query's own norm, |t|^2 - 2 q.t (same order, one
    matmul). Vote ties go to the smallest label (torch.argmax returns the first maximum), as in
    scikit-learn's KNeighborsClassifier."""
    ks_t = torch.as_tensor(list(ks), device=query_f.device)
    kmax = int(max(ks))
    if kmax > len(train_f) or min(ks) < 1:
        raise ValueError(f"k must be in 1..{len(train_f)} (train size), got {list(ks)}")
    train_sq = (train_f * train_f).sum(1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(train_f)))
    preds = []
    for s in range(0, len(query_f), chunk):
        rank = torch.addmm(train_sq, query_f[s : s + chunk], train_f.T, alpha=-2)  # (c, N_train)
        nearest = rank.topk(kmax, dim=1, largest=False, sorted=True).indices  # (c, kmax)
        votes = F.one_hot(train_y[nearest], num_classes).cumsum(1)  # (c, kmax, C): votes of the k nearest
        preds.append(votes[:, ks_t - 1].argmax(-1))  # (c, len(ks))
    return torch.cat(preds).T


def knn_accuracies(
    train_f: Tensor, train_y: Tensor, query_f: Tensor, query_y: Tensor, ks: Sequence[int],
    num_classes: int | None = None,
) -> Tensor:
    """Accuracy (len(ks),) of the kNN vote on (query_f, query_y) for every k in ks."""
    num_classes = num_classes or int(max(train_y.max(), query_y.max())) + 1
    return (knn_predictions(train_f, train_y, query_f, ks, num_classes) == query_y).float().mean(1)


def knn_accuracy(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    k: int = 20,
    num_classes: int | None = None,
) -> float:
    """Test accuracy of the k-nearest-neighbour majority vote (Euclidean)."""
    return knn_accuracies(train_f, train_y, test_f, test_y, [k], num_classes)[0].item()


def knn_best(
    train_f: Tensor,
    train_y: Tensor,
    val_f: Tensor,
    val_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    ks: Sequence[int] = range(1, 21),
    num_classes: int | None = None,
) -> tuple[float, int]:
    """kNN with k chosen on validation (smallest k among equal validation accuracies).
    Returns (test accuracy at that k, k). The official code took the best k on test."""
    _, acc, k = _knn_fixed_and_best(train_f, train_y, val_f, val_y, test_f, test_y, ks, ks[0], num_classes)
    return acc, k


def _knn_fixed_and_best(
    train_f, train_y, val_f, val_y, test_f, test_y, ks: Sequence[int], fixed_k: int, num_classes: int | None
) -> tuple[float, float, int]:
    """(test accuracy at fixed_k, test accuracy at the k in ks best on validation, that k),
    from one neighbour search per split."""
    ks = list(ks)
    num_classes = num_classes or int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    val_acc = knn_accuracies(train_f, train_y, val_f, val_y, ks, num_classes)
    test_acc = knn_accuracies(train_f, train_y, test_f, test_y, [*ks, fixed_k], num_classes)
    best = int(val_acc.argmax())  # first maximum: the smallest k
    return test_acc[-1].item(), test_acc[best].item(), ks[best]


# --------------------------------------------------------------------------------------------
# Probes: a bank of T independent MLPs (or linear maps) trained together
# --------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """Per-epoch scores of T probes. Scores are accuracy (classification) or R^2 (regression).

    val, test:   (epochs, T) score after each epoch
    best_epoch:  (T,) epoch index with the best validation score (earliest on ties)
    test_at_best: (T,) test score at best_epoch -- what is reported
    """

    val: Tensor
    test: Tensor
    best_epoch: Tensor
    test_at_best: Tensor


def _uniform(shape: tuple[int, ...], bound: float, g: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * bound


def adam_update_(
    p: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: int, lr: float,
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
) -> None:
    """One step of torch.optim.Adam (no weight decay, no amsgrad) on p in place; m and v are
    its moment buffers and ``step`` counts from 1. Written out because the probes are tiny:
    torch.optim's per-step Python overhead (~130 us) cost more than the probe's arithmetic."""
    b1, b2 = betas
    m.lerp_(grad, 1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (v.sqrt() / math.sqrt(1 - b2**step)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - b1**step))


class ProbeBank:
    """T independent probes, each Linear(d, h)-ReLU-Linear(h, O) (``hidden=None``: one
    Linear(d, O)), with nn.Linear's default init U(+-1/sqrt(fan_in)) drawn from ``g``.

    All weights live in ONE flat leaf tensor, so a training step is a handful of kernels: the
    probes share their input, so every first layer together is one (d, T*h) matmul, and the
    second layers are one batched matmul over the T probes."""

    def __init__(self, T: int, d: int, hidden: int | None, out: int, g: torch.Generator, device: torch.device):
        self.T, self.out, self.linear = T, out, hidden is None
        if hidden is None:
            parts = [
                _uniform((T, d, out), d**-0.5, g).permute(1, 0, 2).reshape(d, T * out),
                _uniform((T, out), d**-0.5, g).reshape(T * out),
            ]
        else:
            parts = [
                _uniform((T, d, hidden), d**-0.5, g).permute(1, 0, 2).reshape(d, T * hidden),
                _uniform((T, hidden), d**-0.5, g).reshape(T * hidden),
                _uniform((T, hidden, out), hidden**-0.5, g),
                _uniform((T, out), hidden**-0.5, g),
            ]
        self.shapes = [q.shape for q in parts]
        self.flat = torch.cat([q.flatten() for q in parts]).to(device).requires_grad_()
        self.m, self.v, self.step = torch.zeros_like(self.flat), torch.zeros_like(self.flat), 0

    def __call__(self, x: Tensor) -> Tensor:
        """x (B, d) -> outputs (B, T, O) of every probe."""
        sizes = [math.prod(s) for s in self.shapes]
        params = [q.view(s) for q, s in zip(self.flat.split(sizes), self.shapes)]
        if self.linear:
            w, b = params
            return torch.addmm(b, x, w).view(len(x), self.T, self.out)
        w1, b1, w2, b2 = params
        hid = torch.relu(torch.addmm(b1, x, w1)).view(len(x), self.T, -1)  # (B, T, h)
        return torch.einsum("bth,tho->bto", hid, w2) + b2

    @torch.no_grad()
    def adam_step(self, lr: float) -> None:
        """Apply Adam to the gradient accumulated in ``flat`` and clear it."""
        self.step += 1
        adam_update_(self.flat, self.flat.grad, self.m, self.v, self.step, lr)
        self.flat.grad = None


def _bank_loss(out: Tensor, labels: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """Sum over probes of each probe's batch-mean loss. The first Tc probes classify
    (cross-entropy against labels (B, Tc)), the other Tr regress their first output onto
    values (B, Tr) (MSE). out (B, T, O); mask (Tc, O) is -inf on logits beyond a probe's
    classes (None when every classifier uses all O outputs)."""
    B, Tc = labels.shape
    loss = None
    if Tc:
        logits = out[:, :Tc] if mask is None else out[:, :Tc] + mask
        loss = F.cross_entropy(logits.reshape(B * Tc, -1), labels.reshape(-1), reduction="sum") / B
    if values.shape[1]:
        mse = ((out[:, Tc:, 0] - values) ** 2).sum() / B
        loss = mse if loss is None else loss + mse
    return loss


@torch.no_grad()
def _bank_scores(bank: ProbeBank, f: Tensor, labels: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """Scores (T,) of every probe on features f (n, d): accuracy for the Tc classifiers,
    R^2 = 1 - SSE/SST for the regressors (scikit-learn's r2_score: SST about this split's own
    mean). Evaluated in row chunks so (chunk, T, O) outputs stay small."""
    Tc = labels.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // (bank.T * bank.out))
    correct = f.new_zeros(Tc)
    sse = f.new_zeros(values.shape[1])
    for s in range(0, len(f), chunk):
        out = bank(f[s : s + chunk])
        logits = out[:, :Tc] if mask is None else out[:, :Tc] + mask
        correct += (logits.argmax(-1) == labels[s : s + chunk]).sum(0)
        sse += ((out[:, Tc:, 0] - values[s : s + chunk]) ** 2).sum(0)
    sst = ((values - values.mean(0)) ** 2).sum(0)
    return torch.cat([correct / len(f), 1 - sse / sst.clamp_min(torch.finfo(sst.dtype).tiny)])


@contextmanager
def _single_cpu_thread(device: torch.device):
    """Run tiny-op loops on one intra-op thread on CPU: their ops are far too small to gain
    from threads, and on a loaded machine the thread handshakes made each step 2-18x slower
    (measured). The previous thread count is restored."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.enable_grad()  # callers may hold no_grad (e.g. around evaluate)
def fit_probes(
    train_f: Tensor,
    train_t: Tensor,
    val_f: Tensor,
    val_t: Tensor,
    test_f: Tensor,
    test_t: Tensor,
    classes: Sequence[int],
    *,
    hidden: int | None = None,
    linear: bool = False,
    epochs: int = PROBE_EPOCHS,
    lr: float = PROBE_LR,
    batch_size: int = PROBE_BATCH,
    min_steps: int = PROBE_MIN_STEPS,
    seed: int = 0,
) -> ProbeResult:
    """Train T independent probes at once on features (n, d) -> targets (n, T).

    ``classes[t]`` is the number of classes of target t (labels 0..C-1, any dtype), or 0 for a
    continuous target (regressed with MSE on its train-standardised value; R^2 is invariant to
    that rescaling). Each probe is Linear(d, hidden)-ReLU-Linear(hidden, out) (hidden defaults
    to d; ``linear=True``: one Linear), trained with Adam (lr 3e-4) on shuffled minibatches for
    ``epochs`` epochs, or more when that is fewer than ``min_steps`` optimiser steps (small
    datasets). Adam is elementwise and the loss is a sum of per-probe losses, so every probe
    trains exactly as it would alone. Validation and test are scored after each epoch; the
    reported test score is the one at the best validation epoch (earliest on ties).
    Deterministic for ``seed`` (initialisation and shuffling use their own generator)."""
    device = train_f.device
    n, d = train_f.shape
    classes = [int(c) for c in classes]
    T, out_dim = len(classes), max([1, *classes])
    # Classifiers first, regressors after, so the loss slices instead of gathering.
    order = sorted(range(T), key=lambda i: classes[i] == 0)
    Tc = sum(c > 0 for c in classes)
    counts = torch.tensor([classes[i] for i in order[:Tc]], device=device)
    mask = None
    if Tc and bool((counts < out_dim).any()):
        mask = torch.zeros(Tc, out_dim, device=device)
        mask.masked_fill_(torch.arange(out_dim, device=device) >= counts[:, None], float("-inf"))

    def split(t: Tensor) -> tuple[Tensor, Tensor]:  # (n, T) -> labels (n, Tc), values (n, Tr)
        t = t.reshape(len(t), T)[:, order]
        return t[:, :Tc].long(), t[:, Tc:].float()

    (tr_lab, tr_val), (va_lab, va_val), (te_lab, te_val) = split(train_t), split(val_t), split(test_t)
    if tr_val.shape[1]:  # regression targets in train-standardised units: a sane scale for lr
        mu, sd = tr_val.mean(0), tr_val.std(0, correction=0).clamp_min(1e-12)
        tr_val, va_val, te_val = ((v - mu) / sd for v in (tr_val, va_val, te_val))

    g = torch.Generator().manual_seed(seed)
    bank = ProbeBank(T, d, None if linear else (hidden or d), out_dim, g, device)
    train_f = train_f.detach().float()
    epochs = max(epochs, math.ceil(min_steps / math.ceil(n / batch_size)))
    val_scores, test_scores = [], []
    with _single_cpu_thread(device):
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g).to(device)
            f_ep, lab_ep, val_ep = train_f[perm], tr_lab[perm], tr_val[perm]  # gather once, then slice
            for s in range(0, n, batch_size):
                e = s + batch_size
                _bank_loss(bank(f_ep[s:e]), lab_ep[s:e], val_ep[s:e], mask).backward()
                bank.adam_step(lr)
            val_scores.append(_bank_scores(bank, val_f, va_lab, va_val, mask))
            test_scores.append(_bank_scores(bank, test_f, te_lab, te_val, mask))
    back = torch.argsort(torch.tensor(order, device=device))  # internal column order -> caller's
    val, test = torch.stack(val_scores)[:, back], torch.stack(test_scores)[:, back]  # (epochs, T)
    best = val.argmax(0)  # first maximum: the earliest epoch
    return ProbeResult(val, test, best, test.gather(0, best[None]).squeeze(0))


def mlp_probe(
    train_f: Tensor,
    train_y: Tensor,
    val_f: Tensor,
    val_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    num_classes: int,
    *,
    hidden: int | None = None,
    epochs: int = PROBE_EPOCHS,
    lr: float = PROBE_LR,
    batch_size: int = PROBE_BATCH,
    min_steps: int = PROBE_MIN_STEPS,
    seed: int = 0,
    linear: bool = False,
) -> float:
    """The official MLP probe Linear(d, d)-ReLU-Linear(d, C) (``linear=True``: Linear(d, C)),
    Adam lr 3e-4. Returns the TEST accuracy at the epoch with the best VALIDATION accuracy
    (the official code reported the best test epoch). Features should be standardised."""
    res = fit_probes(
        train_f, train_y[:, None], val_f, val_y[:, None], test_f, test_y[:, None], [num_classes],
        hidden=hidden, linear=linear, epochs=epochs, lr=lr, batch_size=batch_size, min_steps=min_steps,
        seed=seed,
    )
    return res.test_at_best[0].item()


def linear_probe(
    train_f: Tensor,
    train_y: Tensor,
    val_f: Tensor,
    val_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    num_classes: int,
    **kwargs: Any,
) -> float:
    """Linear probe: ``mlp_probe`` with a single Linear(d, C) (softmax regression, no weight
    decay; early stopping on validation is its only regularisation)."""
    return mlp_probe(train_f, train_y, val_f, val_y, test_f, test_y, num_classes, linear=True, **kwargs)


# --------------------------------------------------------------------------------------------
# Clustering and reconstruction
# --------------------------------------------------------------------------------------------
def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Clustering accuracy under the best one-to-one cluster->class matching."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    cm = contingency_matrix(labels, clusters)  # (classes present, clusters used)
    rows, cols = linear_sum_assignment(cm, maximize=True)
    return float(cm[rows, cols].sum() / len(labels))


def gmm_clustering(features: Tensor, labels: Tensor, num_classes: int, seed: int = 0) -> dict[str, float]:
    """Fit a full-covariance GaussianMixture with ``num_classes`` components (scikit-learn,
    k-means initialisation, one init) to (standardised) features (n, d); score its hard
    assignments against ``labels``: {'acc_gmm' (Hungarian), 'nmi', 'ari'}."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.mixture import GaussianMixture

    x = features.detach().double().cpu().numpy()
    y = labels.detach().cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clusters = GaussianMixture(num_classes, covariance_type="full", random_state=seed).fit_predict(x)
    return {
        "acc_gmm": hungarian_accuracy(y, clusters),
        "nmi": float(normalized_mutual_info_score(y, clusters)),
        "ari": float(adjusted_rand_score(y, clusters)),
    }


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
# Style probes
# --------------------------------------------------------------------------------------------
def normalised_score(score: float, kind: str, baseline: float = 0.0) -> float:
    """Map a probe score to "fraction of the way from a trivial predictor to a perfect one":
    R^2 as it is (the mean predictor scores 0); accuracy as (acc - b) / (1 - b) with b the
    test accuracy of always predicting the train majority class (flip at p = 0.5: 2 acc - 1)."""
    if kind == "continuous":
        return score
    return (score - baseline) / max(1.0 - baseline, 1e-12)


def _majority_baseline(train_labels: Tensor, test_labels: Tensor) -> float:
    majority = torch.bincount(train_labels.long()).argmax()
    return (test_labels.long() == majority).float().mean().item()


def _probe_targets(
    feats: tuple[Tensor, Tensor, Tensor],
    targets: dict[str, tuple[Tensor, Tensor, Tensor]],
    kinds: dict[str, str],
    prefix: str,
    mean_key: str,
    **probe: Any,
) -> dict[str, float]:
    """Fit one MLP probe per target (all in one bank) on train-standardised features and
    return {'<prefix>_<name>_r2' | '<prefix>_<name>_acc': score, mean_key: mean normalised
    score}. Constant targets (nothing to predict) are skipped."""
    columns, classes, names = [], [], []
    for name, (tr, va, te) in targets.items():
        if kinds[name] == "continuous":
            if tr.float().std() == 0:
                continue
            columns.append((tr.float(), va.float(), te.float()))
            classes.append(0)
        else:  # categorical: remap arbitrary label values to 0..C-1
            values, inverse = torch.unique(torch.cat([tr, va, te]), return_inverse=True)
            if len(torch.unique(tr)) < 2:
                continue
            a, b = len(tr), len(tr) + len(va)
            columns.append((inverse[:a].float(), inverse[a:b].float(), inverse[b:].float()))
            classes.append(len(values))
        names.append(name)
    if not names:
        return {}
    train_f, val_f, test_f = standardise(*feats)
    t_train, t_val, t_test = (torch.stack([c[i] for c in columns], 1) for i in range(3))
    res = fit_probes(train_f, t_train, val_f, t_val, test_f, t_test, classes, **probe)
    out, normalised = {}, []
    for j, name in enumerate(names):
        score = res.test_at_best[j].item()
        if classes[j] == 0:
            out[f"{prefix}_{name}_r2"] = score
            normalised.append(normalised_score(score, "continuous"))
        else:
            out[f"{prefix}_{name}_acc"] = score
            base = _majority_baseline(t_train[:, j], t_test[:, j])
            normalised.append(normalised_score(score, "categorical", base))
    out[mean_key] = float(np.mean(normalised))
    return out


@torch.no_grad()
def augmented_views(
    represent: Callable[[Tensor], Tensor],
    x: Tensor,
    J: int,
    augment_cfg: Any,
    generator: torch.Generator,
    augment_fn: Callable,
    batch_size: int = 256,
) -> tuple[Tensor, dict[str, Tensor]]:
    """J augmented views of each image in x (N, C, H, W): their representations (N*J, d) and
    augmentation parameters {name: (N*J,)}, in image-major order."""
    feats, params = [], {}
    for s in range(0, len(x), batch_size):
        views, p = augment_fn(x[s : s + batch_size], J, augment_cfg, generator)
        feats.append(encode(represent, views.flatten(0, 1)))
        for name, v in p.items():
            params.setdefault(name, []).append(torch.as_tensor(v).reshape(-1))
    return torch.cat(feats), {name: torch.cat(v) for name, v in params.items()}


def style_probes(
    represent: Callable[[Tensor], Tensor],
    splits: Any,
    augment_cfg: Any,
    *,
    J: int = 4,
    seed: int = 0,
    max_images: int = STYLE_MAX_IMAGES,
    epochs: int = PROBE_EPOCHS,
    lr: float = PROBE_LR,
    batch_size: int = PROBE_BATCH,
    min_steps: int = PROBE_MIN_STEPS,
    augment_fn: Callable | None = None,
    clean_features: tuple[Tensor, Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """How much style the representation keeps (DESIGN.md §4), scored with MLP probes (the
    ``mlp_probe`` recipe) fit on train, selected on validation, scored on test.

    (a) Augmentation parameters: J augmented views of each of up to ``max_images`` images per
        split (a seeded random subset; augment_fn defaults to trainables.augment.augment, with
        a generator seeded by ``seed``); each view's parameters are predicted from its
        representation: 'style_aug_<param>_r2' for continuous ones (scale, ratio, center_x,
        center_y, colour factors), 'style_aug_<param>_acc' for 'flip' / 'jitter';
        'style_aug_mean' is their mean normalised score (``normalised_score``).
    (b) Ground-truth style of clean images, all images of each split (splits.<split>.style,
        kinds in splits.style_kinds; features from ``clean_features`` (train, val, test,
        unstandardised) when already encoded): 'style_<name>_r2' / 'style_<name>_acc' and
        'style_factor_mean'. Absent when the dataset has no style labels.
    Parameters or factors that are constant on the train split are skipped. epochs, lr,
    batch_size, min_steps and seed go to ``fit_probes``."""
    probe = dict(epochs=epochs, lr=lr, batch_size=batch_size, min_steps=min_steps, seed=seed)
    if augment_fn is None:
        from trainables.augment import augment as augment_fn

    parts = (splits.train, splits.val, splits.test)
    device = splits.train.x.device
    out: dict[str, float] = {}

    # (a) augmentation parameters of augmented views
    pick = torch.Generator().manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    views = []
    for p in parts:
        subset = torch.randperm(len(p.x), generator=pick)[:max_images].to(device)  # splits may be ordered
        views.append(augmented_views(represent, p.x[subset], J, augment_cfg, gen, augment_fn))
    names = list(views[0][1])
    aug_targets = {n: tuple(v[1][n].to(device) for v in views) for n in names}
    aug_kinds = {n: "categorical" if n in CATEGORICAL_AUG_PARAMS else "continuous" for n in names}
    feats = tuple(v[0] for v in views)
    out.update(_probe_targets(feats, aug_targets, aug_kinds, "style_aug", "style_aug_mean", **probe))

    # (b) ground-truth style factors of clean images
    style_names = list(getattr(splits.train, "style", None) or {})
    if style_names:
        clean = clean_features or tuple(encode(represent, p.x) for p in parts)
        targets = {n: tuple(p.style[n].to(device) for p in parts) for n in style_names}
        kinds = {n: splits.style_kinds[n] for n in style_names}
        out.update(_probe_targets(clean, targets, kinds, "style", "style_factor_mean", **probe))
    return out


# --------------------------------------------------------------------------------------------
# Entry points used by the training loop
# --------------------------------------------------------------------------------------------
def _in_eval_mode(method: Any, fn: Callable[[], Any]) -> Any:
    """Run fn with method in eval mode, restoring its previous mode afterwards."""
    was_training = method.training
    method.eval()
    try:
        return fn()
    finally:
        method.train(was_training)


def evaluate(
    method: Any,
    splits: Any,
    augment_cfg: Any,
    *,
    seed: int = 0,
    probe_epochs: int | None = None,
    knn_k: int = 20,
    style_J: int = 4,
    probe_min_steps: int = PROBE_MIN_STEPS,
    augment_fn: Callable | None = None,
) -> dict[str, float]:
    """The full evaluation (DESIGN.md §4) of a trained method; see the module docstring for
    the keys. Every probe trains ``probe_epochs`` epochs (default PROBE_EPOCHS) and at least
    ``probe_min_steps`` steps. The method is put in eval mode (its mode is restored
    afterwards). Prints nothing."""

    def run() -> dict[str, float]:
        parts = (splits.train, splits.val, splits.test)
        raw = tuple(encode(method.represent, p.x) for p in parts)
        tr, va, te = standardise(*raw)
        (ytr, yva, yte), C = (p.y for p in parts), int(splits.info.num_classes)
        probe = dict(epochs=probe_epochs or PROBE_EPOCHS, min_steps=probe_min_steps, seed=seed)
        out = {
            "acc_mlp": mlp_probe(tr, ytr, va, yva, te, yte, C, **probe),
            "acc_linear": linear_probe(tr, ytr, va, yva, te, yte, C, **probe),
        }
        out["acc_knn"], out["acc_knn_best"], out["knn_best_k"] = _knn_fixed_and_best(
            tr, ytr, va, yva, te, yte, range(1, min(20, len(tr)) + 1), min(knn_k, len(tr)), C
        )
        out.update(gmm_clustering(te, yte, C, seed=seed))
        rec = recon_error(method, splits.test.x)
        if rec is not None:
            out["recon_error"] = rec
        out.update(
            style_probes(
                method.represent, splits, augment_cfg, J=style_J, **probe,
                augment_fn=augment_fn, clean_features=raw,
            )
        )
        return {key: float(v) for key, v in out.items()}

    return _in_eval_mode(method, run)


def validation_knn(
    method: Any, splits: Any, *, k: int = 20, max_train: int = 5000, max_val: int | None = None
) -> float:
    """The cheap per-epoch metric ASHA stops on: kNN accuracy on the validation split (its
    first ``max_val`` images) with a fixed random subset of ``max_train`` train images
    (generator seed 0, the same every call) as reference; features standardised with the
    reference's statistics, as in ``evaluate``."""

    def run() -> float:
        train, val = splits.train, splits.val
        ref = torch.randperm(len(train.x), generator=torch.Generator().manual_seed(0))[:max_train]
        ref = ref.to(train.x.device)
        nval = len(val.x) if max_val is None else min(max_val, len(val.x))
        ref_f, val_f = standardise(encode(method.represent, train.x[ref]), encode(method.represent, val.x[:nval]))
        return knn_accuracy(
            ref_f, train.y[ref], val_f, val.y[:nval], k=min(k, len(ref)), num_classes=int(splits.info.num_classes)
        )

    return _in_eval_mode(method, run)


__all__ = [
    "ProbeResult",
    "encode",
    "standardise",
    "knn_predictions",
    "knn_accuracies",
    "knn_accuracy",
    "knn_best",
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
]
