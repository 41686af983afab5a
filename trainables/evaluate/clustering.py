"""Clustering of frozen features: a GaussianMixture scored against the content labels."""
from __future__ import annotations

import warnings

import numpy as np
from torch import Tensor


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Clustering accuracy under the best one-to-one cluster->class matching."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    cm = contingency_matrix(labels, clusters)  # (classes present, clusters used)
    rows, cols = linear_sum_assignment(cm, maximize=True)
    return float(cm[rows, cols].sum() / len(labels))


def gmm_clustering(features: Tensor, labels: Tensor, num_classes: int, seed: int) -> dict[str, float]:
    """Fit a full-covariance GaussianMixture with ``num_classes`` components (scikit-learn,
    k-means initialisation, one init, ``random_state=seed``) to (standardised) features (n, d);
    score its hard assignments against ``labels``: {'acc_gmm' (Hungarian), 'nmi', 'ari'}."""
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
