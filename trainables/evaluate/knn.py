"""k-nearest-neighbour accuracy (Euclidean, majority vote) on frozen features.

Tie-breaks are scikit-learn's: a vote tie goes to the smallest class label; the k selected on
validation is the smallest among equal validation accuracies. Neighbours at exactly equal
distances are ordered by ``torch.topk`` (implementation-defined).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.evaluate.features import CHUNK_ELEMENTS

KNN_BEST_MAX_K = 20  # acc_knn_best searches k in 1..KNN_BEST_MAX_K


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
    chunk = max(1, CHUNK_ELEMENTS // max(1, len(train_f)))
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
    k: int,
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
    ks: Sequence[int] = range(1, KNN_BEST_MAX_K + 1),
    num_classes: int | None = None,
) -> tuple[float, int]:
    """kNN with k chosen on validation (smallest k among equal validation accuracies).
    Returns (test accuracy at that k, k). The official code took the best k on test."""
    _, acc, k = knn_fixed_and_best(train_f, train_y, val_f, val_y, test_f, test_y, ks, ks[0], num_classes)
    return acc, k


def knn_fixed_and_best(
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
