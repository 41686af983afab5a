"""Style probes: how much style the representation keeps (docs/design.md §4).

Scored with MLP probes (the ``mlp_probe`` recipe, all targets of one kind in one
:class:`~trainables.evaluate.probes.ProbeBank`): fit on train, selected on validation, scored on
test. Settings come from the run config: ``style_J`` augmented views per image, ``seed``,
``probe_epochs``, ``probe_min_steps``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from trainables.evaluate.features import encode, in_eval_mode, standardise
from trainables.evaluate.probes import PROBE_BATCH, PROBE_LR, fit_probes

STYLE_MAX_IMAGES = 5000  # images per split augmented for the augmentation-style probe
CATEGORICAL_AUG_PARAMS = ("flip", "jitter")  # applied / not applied; the rest are continuous


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
    method: Any,
    splits: Any,
    augment_cfg: Any,
    cfg: dict[str, Any],
    *,
    max_images: int = STYLE_MAX_IMAGES,
    lr: float = PROBE_LR,
    batch_size: int = PROBE_BATCH,
    augment_fn: Callable | None = None,
    clean_features: tuple[Tensor, Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """How much style ``method``'s representation (``method.represent``) keeps, scored with MLP
    probes (the ``mlp_probe`` recipe) fit on train, selected on validation, scored on test.
    Reads ``cfg["style_J"]``, ``cfg["seed"]``, ``cfg["probe_epochs"]`` and
    ``cfg["probe_min_steps"]`` (the resolved run config). The method is put in eval mode (its
    mode is restored afterwards).

    (a) Augmentation parameters: style_J augmented views of each of up to ``max_images`` images
        per split (a seeded random subset; augment_fn defaults to trainables.augment.augment,
        with a generator seeded by ``seed``); each view's parameters are predicted from its
        representation: 'style_aug_<param>_r2' for continuous ones (scale, ratio, center_x,
        center_y, colour factors), 'style_aug_<param>_acc' for 'flip' / 'jitter';
        'style_aug_mean' is their mean normalised score (``normalised_score``).
    (b) Ground-truth style of clean images, all images of each split (splits.<split>.style,
        kinds in splits.style_kinds; features from ``clean_features`` (train, val, test,
        unstandardised) when already encoded): 'style_<name>_r2' / 'style_<name>_acc' and
        'style_factor_mean'. Absent when the dataset has no style labels.
    Parameters or factors that are constant on the train split are skipped. lr and batch_size
    go to ``fit_probes`` with the config's settings."""
    seed = cfg["seed"]
    probe = dict(epochs=cfg["probe_epochs"], lr=lr, batch_size=batch_size, min_steps=cfg["probe_min_steps"],
                 seed=seed)
    if augment_fn is None:
        from trainables.augment import augment as augment_fn

    def run() -> dict[str, float]:
        represent = method.represent
        parts = (splits.train, splits.val, splits.test)
        device = splits.train.x.device
        out: dict[str, float] = {}

        # (a) augmentation parameters of augmented views
        pick = torch.Generator().manual_seed(seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        views = []
        for p in parts:
            subset = torch.randperm(len(p.x), generator=pick)[:max_images].to(device)  # splits may be ordered
            views.append(augmented_views(represent, p.x[subset], cfg["style_J"], augment_cfg, gen, augment_fn))
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

    return in_eval_mode(method, run)
