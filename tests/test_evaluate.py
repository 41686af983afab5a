"""Evaluation (the trainables/evaluate/ package) against independent computations: scikit-learn's
KNeighborsClassifier, GaussianMixture, clustering metrics and LinearRegression,
torch.optim.Adam, and explicit loops over permutations, epochs and images."""
from __future__ import annotations

import itertools
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier

from trainables.evaluate import (
    adam_update_,
    encode,
    evaluate,
    fit_probes,
    gmm_clustering,
    hungarian_accuracy,
    knn_accuracy,
    knn_best,
    knn_predictions,
    linear_probe,
    mlp_probe,
    recon_error,
    standardise,
    style_probes,
    validation_knn,
)

FAST = dict(epochs=10, batch_size=64, min_steps=1500, seed=0)  # probe budget for small test sets (lr 3e-4)
# Regression weights must travel O(1) and Adam moves ~lr per step: 10x the default lr keeps
# the tests that need converged regressors short. The default lr is exercised above.
QUICK = dict(epochs=10, batch_size=64, min_steps=600, lr=3e-3, seed=0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(n: int, C: int, d: int, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (n, d) around C random centres (spread ``sep``) with unit noise; labels (n,)."""
    g = gen(seed)
    centres = torch.randn(C, d, generator=g) * sep
    y = torch.randint(0, C, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def three_splits(n=(400, 200, 200), C=4, d=8, sep=4.0, seed=0):
    """Train / val / test blobs sharing one set of centres."""
    x, y = blobs(sum(n), C, d, sep, seed)
    a, b = n[0], n[0] + n[1]
    return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]


# -- features -------------------------------------------------------------------------------
def test_encode_batches_equal_one_pass():
    W = torch.randn(48, 5, generator=gen(0))
    x = torch.rand(23, 3, 4, 4, generator=gen(1))
    fn = lambda v: v.flatten(1) @ W  # noqa: E731
    out = encode(fn, x, batch_size=7)
    assert out.shape == (23, 5) and out.dtype == torch.float32
    torch.testing.assert_close(out, fn(x))


def test_standardise_uses_train_statistics():
    g = gen(0)
    train = torch.randn(500, 4, generator=g) * torch.tensor([3.0, 0.1, 50.0, 0.0]) + 5
    other = torch.randn(100, 4, generator=g) * 2
    s_train, s_other = standardise(train, other)
    mean, std = train.mean(0), train.std(0, correction=0)
    torch.testing.assert_close(s_train[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(s_train[:, :3].std(0, correction=0), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(s_other[:, :3], (other[:, :3] - mean[:3]) / std[:3])
    # a constant (dead) train dimension maps to 0 on train, and stays finite elsewhere
    assert torch.all(s_train[:, 3] == 0) and torch.isfinite(s_other).all()


@pytest.mark.parametrize("d,hidden", [(10, 10), (64, 64), (784, 64)])
def test_probe_width_is_d_capped_at_64(d, hidden, monkeypatch):
    """The official probe's width d for every learned representation (d <= 64); the pixels
    baseline's 784-d input gets 64 hidden units."""
    import trainables.evaluate.probes as probes

    widths = []
    real = probes.ProbeBank
    monkeypatch.setattr(probes, "ProbeBank", lambda T, d_, h, *a: widths.append(h) or real(T, d_, h, *a))
    f, y = torch.randn(40, d, generator=gen(0)), torch.randint(0, 3, (40,), generator=gen(1))
    mlp_probe(f, y, f, y, f, y, 3, epochs=1, min_steps=1, seed=0)
    linear_probe(f, y, f, y, f, y, 3, epochs=1, min_steps=1, seed=0)
    assert widths == [hidden, None]


def test_a_feature_constant_on_train_does_not_blow_up():
    """A pixel that is 0 on every training image but lit in a test image (MNIST's borders): the
    floored-std z-score made it ~1e8; a dead dimension now maps to 0 on every split."""
    g = gen(3)
    train = torch.cat([torch.rand(300, 3, generator=g), torch.zeros(300, 1), torch.full((300, 1), 0.3)], 1)
    test = torch.cat([torch.rand(50, 3, generator=g), torch.ones(50, 1), torch.full((50, 1), 0.7)], 1)
    s_train, s_test = standardise(train, test)
    assert torch.all(s_train[:, 3:] == 0) and torch.all(s_test[:, 3:] == 0)
    assert s_test.abs().max() < 10
    mean, std = train[:, :3].mean(0), train[:, :3].std(0, correction=0)
    torch.testing.assert_close(s_test[:, :3], (test[:, :3] - mean) / std)
    # a real but tiny spread is kept (it is not float32 rounding of a constant)
    tiny = train.clone()
    tiny[:, 3] = torch.randn(300, generator=g) * 1e-4
    assert standardise(tiny)[0][:, 3].std(correction=0) == pytest.approx(1.0, rel=1e-4)
    # a probe is unaffected by a dead dimension that is huge off the train split
    tr, ytr, va, yva, te, yte = three_splits(seed=4)
    dead = lambda f, v: torch.cat([f, torch.full((len(f), 1), v)], 1)  # noqa: E731
    s = standardise(tr, va, te)
    plain = mlp_probe(s[0], ytr, s[1], yva, s[2], yte, 4, **QUICK)
    s = standardise(dead(tr, 0.0), dead(va, 1.0), dead(te, 1.0))
    assert mlp_probe(s[0], ytr, s[1], yva, s[2], yte, 4, **QUICK) == pytest.approx(plain, abs=1 / len(yte))


# -- kNN --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 4, 7, 20])
def test_knn_matches_sklearn_including_vote_ties(k):
    g = gen(k)
    train_f, test_f = torch.randn(400, 5, generator=g, dtype=torch.float64), torch.randn(300, 5, generator=g, dtype=torch.float64)
    train_y, test_y = torch.randint(0, 6, (400,), generator=g), torch.randint(0, 6, (300,), generator=g)
    ref = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(train_f.numpy(), train_y.numpy())
    expected = ref.predict(test_f.numpy())
    pred = knn_predictions(train_f, train_y, test_f, [k], 6)[0]
    np.testing.assert_array_equal(pred.numpy(), expected)
    assert knn_accuracy(train_f, train_y, test_f, test_y, k=k) == pytest.approx((expected == test_y.numpy()).mean())
    if k == 4:  # vote ties really occurred, so the tie-break (smallest label) was exercised
        nearest = ref.kneighbors(test_f.numpy(), return_distance=False)
        counts = np.stack([np.bincount(r, minlength=6) for r in train_y.numpy()[nearest]])
        assert ((counts == counts.max(1, keepdims=True)).sum(1) > 1).sum() > 20


def test_knn_best_chooses_k_on_validation_not_test():
    ks = list(range(1, 21))
    for seed in range(50):
        tr_f, tr_y, va_f, va_y, te_f, te_y = three_splits((300, 150, 150), C=3, d=4, sep=1.0, seed=seed)

        def sk_acc(f, y):
            return np.array([
                KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(tr_f.numpy(), tr_y.numpy()).score(f.numpy(), y.numpy())
                for k in ks
            ])

        val_acc, test_acc = sk_acc(va_f, va_y), sk_acc(te_f, te_y)
        k_val = ks[int(np.argmax(val_acc))]  # first maximum: the smallest k
        if test_acc[k_val - 1] < test_acc.max():  # selecting on test would report more
            break
    else:
        pytest.fail("no seed where validation and test disagree on k")
    acc, k = knn_best(tr_f, tr_y, va_f, va_y, te_f, te_y, ks=ks)
    assert k == k_val
    assert acc == pytest.approx(test_acc[k_val - 1]) and acc < test_acc.max()


# -- probes -----------------------------------------------------------------------------------
def test_adam_update_matches_torch_optim():
    g = gen(0)
    p = torch.randn(50, generator=g)
    q = p.clone().requires_grad_()
    opt = torch.optim.Adam([q], lr=1e-2)
    m, v = torch.zeros(50), torch.zeros(50)
    for step in range(1, 8):
        grad = torch.randn(50, generator=g) * step
        adam_update_(p, grad, m, v, step, lr=1e-2)
        q.grad = grad.clone()
        opt.step()
        torch.testing.assert_close(p, q.detach(), atol=1e-7, rtol=1e-6)


def test_mlp_and_linear_probes_separate_blobs():
    tr, ytr, va, yva, te, yte = three_splits()
    tr, va, te = standardise(tr, va, te)
    assert mlp_probe(tr, ytr, va, yva, te, yte, 4, **FAST) > 0.95
    assert linear_probe(tr, ytr, va, yva, te, yte, 4, **FAST) > 0.95


def test_mlp_probe_near_chance_on_random_labels():
    g = gen(3)
    f = torch.randn(1200, 8, generator=g)
    y = torch.randint(0, 4, (1200,), generator=g)
    acc = mlp_probe(f[:600], y[:600], f[600:800], y[600:800], f[800:], y[800:], 4, **FAST)
    assert abs(acc - 0.25) < 0.08


def test_probe_reports_test_accuracy_at_best_validation_epoch():
    """Noisy labels make noisy curves; the reported value must be the test accuracy at the
    earliest epoch with the best validation accuracy, not the best test accuracy."""
    for seed in range(20):
        x, y = blobs(600, 3, 4, 1.0, seed)
        args = (x[:300], y[:300], x[300:400], y[300:400], x[400:], y[400:])
        res = fit_probes(*(a if a.dim() == 2 else a[:, None] for a in args), [3], epochs=12, batch_size=64, min_steps=0, seed=seed)
        if res.test_at_best[0] < res.test[:, 0].max():
            break
    else:
        pytest.fail("no seed where the best validation epoch is not the best test epoch")
    val, test = res.val[:, 0].tolist(), res.test[:, 0].tolist()
    best = next(e for e, v in enumerate(val) if v == max(val))  # explicit: earliest maximum
    assert len(val) == 12 and int(res.best_epoch[0]) == best
    assert res.test_at_best[0].item() == test[best]
    reported = mlp_probe(*args, 3, epochs=12, batch_size=64, min_steps=0, seed=seed)
    assert reported == pytest.approx(test[best]) and reported < max(test)


def test_probe_is_deterministic_and_leaves_global_rng_alone():
    splits = three_splits(seed=1)
    state = torch.random.get_rng_state()
    budget = dict(epochs=5, batch_size=64)
    a = fit_probes(*(s if s.dim() == 2 else s[:, None] for s in splits), [4], **budget, min_steps=0, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = fit_probes(*(s if s.dim() == 2 else s[:, None] for s in splits), [4], **budget, min_steps=0, seed=5)
    c = fit_probes(*(s if s.dim() == 2 else s[:, None] for s in splits), [4], **budget, min_steps=0, seed=6)
    assert torch.equal(a.val, b.val) and torch.equal(a.test, b.test)
    assert not torch.equal(a.val, c.val)


def test_probes_in_a_bank_train_independently():
    """Probe 0 sees the same data in both banks; only probe 1's targets differ. Its whole
    validation/test curve must not change (Adam is elementwise, the loss a sum)."""
    g = gen(2)
    f = torch.randn(500, 6, generator=g)
    a = (f[:, 0] > 0).long() + (f[:, 1] > 0).long()  # 3 classes
    b, c = f[:, 2] * f[:, 3], torch.randn(500, generator=g)
    runs = []
    for other in (b, c):
        t = torch.stack([a.float(), other], 1)
        runs.append(fit_probes(f[:300], t[:300], f[300:400], t[300:400], f[400:], t[400:], [3, 0], **QUICK))
    assert torch.equal(runs[0].val[:, 0], runs[1].val[:, 0])
    assert torch.equal(runs[0].test[:, 0], runs[1].test[:, 0])
    assert runs[0].test_at_best[1] > 0.5 > runs[1].test_at_best[1]  # the product is learnt, noise not


def test_linear_regression_probe_reaches_least_squares_r2():
    g = gen(4)
    x = torch.randn(1500, 5, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 2.0 * torch.randn(1500, generator=g) + 7
    res = fit_probes(x[:1000], y[:1000], x[1000:1250], y[1000:1250], x[1250:], y[1250:], [0],
                     linear=True, **QUICK)
    ls = LinearRegression().fit(x[:1000].numpy(), y[:1000].numpy()).score(x[1250:].numpy(), y[1250:].numpy())
    assert res.test_at_best[0].item() == pytest.approx(ls, abs=0.01)


def test_standardise_rescues_tiny_features():
    tr, ytr, va, yva, te, yte = three_splits(seed=2)
    s_tr, s_va, s_te = standardise(tr, va, te)
    unscaled = mlp_probe(s_tr, ytr, s_va, yva, s_te, yte, 4, **QUICK)
    s_tr, s_va, s_te = standardise(tr * 1e-6, va * 1e-6, te * 1e-6)
    tiny = mlp_probe(s_tr, ytr, s_va, yva, s_te, yte, 4, **QUICK)
    assert unscaled > 0.95 and abs(tiny - unscaled) <= 1 / len(yte)
    raw_tiny = mlp_probe(tr * 1e-6, ytr, va * 1e-6, yva, te * 1e-6, yte, 4, **QUICK)
    assert raw_tiny < 0.6  # what standardising prevents: a probe that cannot move its logits


# -- clustering and reconstruction --------------------------------------------------------------
def brute_force_matching(labels: np.ndarray, clusters: np.ndarray, C: int) -> float:
    return max(np.mean(np.array(perm)[clusters] == labels) for perm in itertools.permutations(range(C)))


def test_hungarian_accuracy_equals_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    clusters = np.where(rng.random(300) < 0.6, (labels + 2) % 5, rng.integers(0, 5, 300))
    assert hungarian_accuracy(labels, clusters) == pytest.approx(brute_force_matching(labels, clusters, 5))


def test_gmm_clustering_on_permuted_blobs():
    x, clusters = blobs(400, 4, 3, 20.0, seed=5)
    labels = torch.tensor([2, 0, 3, 1])[clusters]  # class ids unrelated to cluster ids
    out = gmm_clustering(x, labels, 4, seed=0)
    assert out == {"acc_gmm": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}


def test_gmm_clustering_matches_sklearn_on_overlapping_blobs():
    x, y = blobs(400, 4, 3, 1.5, seed=6)
    out = gmm_clustering(x, y, 4, seed=3)
    pred = GaussianMixture(4, covariance_type="full", random_state=3).fit_predict(x.double().numpy())
    assert out["acc_gmm"] == pytest.approx(brute_force_matching(y.numpy(), pred, 4))
    assert out["nmi"] == pytest.approx(normalized_mutual_info_score(y.numpy(), pred))
    assert out["ari"] == pytest.approx(adjusted_rand_score(y.numpy(), pred))
    assert 0.3 < out["acc_gmm"] < 1.0


def test_gmm_clusters_wide_features_on_their_leading_principal_components():
    """Beyond 64 dims (the pixels baseline) the GMM sees the 64 leading principal components:
    blobs in 6 dims, rotated into 400 dims with small noise, are still found, and the result
    is sklearn's PCA(64, randomized) + GaussianMixture."""
    from sklearn.decomposition import PCA

    x, y = blobs(600, 3, 6, 12.0, seed=8)
    rotation, _ = torch.linalg.qr(torch.randn(400, 400, generator=gen(9)))
    wide = x @ rotation[:6] + 0.1 * torch.randn(600, 400, generator=gen(10))
    out = gmm_clustering(wide, y, 3, seed=1)
    z = PCA(64, svd_solver="randomized", random_state=1).fit_transform(wide.numpy()).astype(np.float64)
    pred = GaussianMixture(3, covariance_type="full", random_state=1).fit_predict(z)
    assert out["acc_gmm"] == pytest.approx(brute_force_matching(y.numpy(), pred, 3))
    assert out["acc_gmm"] > 0.95


class StandIn(torch.nn.Module):
    """A tiny 'method': a fixed linear encoder; reconstruct is an affine map of x (or None)."""

    def __init__(self, D: int, d: int, rows: list[int] | None = None, decoder: bool = True, scale: float = 1.0):
        super().__init__()
        self.encoder = torch.nn.Linear(D, d)
        self.rows, self.has_decoder, self.scale = rows, decoder, scale

    @torch.no_grad()
    def represent(self, x):
        flat = x.flatten(1)
        return (flat[:, self.rows] if self.rows is not None else self.encoder(flat)) * self.scale

    @torch.no_grad()
    def reconstruct(self, x):
        return (0.5 * x + 0.1).clamp(0, 1) if self.has_decoder else None


def test_recon_error_is_mean_per_image_sum_of_squares():
    x = torch.rand(10, 2, 3, 3, generator=gen(0))
    method = StandIn(18, 2)
    expected = np.mean([float(((method.reconstruct(x[i : i + 1]) - x[i : i + 1]) ** 2).sum()) for i in range(10)])
    assert recon_error(method, x, batch_size=3) == pytest.approx(expected, rel=1e-6)
    assert recon_error(StandIn(18, 2, decoder=False), x) is None


# -- style probes ------------------------------------------------------------------------------
def stamp_augment(x, J, cfg, generator):
    """A stand-in for trainables.augment.augment: each view is its image with the view's
    'scale' written into pixel 0 and its 'flip' into pixel 1."""
    B = len(x)
    scale = torch.rand(B, J, generator=generator) * 0.6 + 0.4
    flip = (torch.rand(B, J, generator=generator) < 0.5).float()
    views = x[:, None].repeat(1, J, 1, 1, 1)
    views[:, :, 0, 0, 0], views[:, :, 0, 0, 1] = scale, flip
    return views, {"scale": scale, "flip": flip}


def style_splits(n=(200, 100, 100), seed=0):
    """Images (N, 1, 4, 4): pixels 0-1 zero (the augmentation stamps them), pixel 2 a
    continuous 'size', pixel 3 a categorical 'colour' in {2, 5, 7}, pixels 4-15 noise."""
    g = gen(seed)

    def part(m):
        x = torch.zeros(m, 1, 4, 4)
        size, colour = torch.rand(m, generator=g), torch.tensor([2, 5, 7])[torch.randint(0, 3, (m,), generator=g)]
        x.view(m, 16)[:, 2], x.view(m, 16)[:, 3] = size, colour / 7
        x.view(m, 16)[:, 4:] = torch.rand(m, 12, generator=g)
        return NS(x=x, y=torch.randint(0, 3, (m,), generator=g), style={"size": size, "colour": colour})

    return NS(train=part(n[0]), val=part(n[1]), test=part(n[2]),
              style_kinds={"size": "continuous", "colour": "categorical"}, info=NS(num_classes=3, likelihood="bernoulli"))


# style_probes reads its settings from the run config; lr and batch_size are not config keys
STYLE_CFG = {"seed": QUICK["seed"], "probe_epochs": QUICK["epochs"], "probe_min_steps": QUICK["min_steps"],
             "knn_k": 10, "style_J": 2}
STYLE_PROBE = dict(lr=QUICK["lr"], batch_size=QUICK["batch_size"], augment_fn=stamp_augment)


def test_style_probes_recover_factors_that_are_in_the_features():
    method = StandIn(16, 4, rows=[0, 1, 2, 3], scale=1e-6)
    method.train()
    out = style_probes(method, style_splits(), None, STYLE_CFG, **STYLE_PROBE)
    assert method.training  # mode restored
    assert set(out) == {"style_aug_scale_r2", "style_aug_flip_acc", "style_aug_mean",
                        "style_size_r2", "style_colour_acc", "style_factor_mean"}
    assert out["style_aug_scale_r2"] > 0.95 and out["style_aug_flip_acc"] > 0.97
    assert out["style_size_r2"] > 0.95 and out["style_colour_acc"] > 0.97
    assert out["style_aug_mean"] > 0.9 and out["style_factor_mean"] > 0.9


def test_style_probes_find_nothing_in_unrelated_features():
    out = style_probes(StandIn(16, 4, rows=[4, 5, 6, 7]), style_splits(), None, STYLE_CFG, **STYLE_PROBE)
    assert abs(out["style_aug_scale_r2"]) < 0.1 and abs(out["style_size_r2"]) < 0.15
    assert abs(out["style_aug_flip_acc"] - 0.5) < 0.08
    assert abs(out["style_aug_mean"]) < 0.15 and abs(out["style_factor_mean"]) < 0.3


# -- entry points --------------------------------------------------------------------------------
def test_validation_knn_is_deterministic_and_matches_sklearn():
    splits = style_splits((300, 100, 50), seed=1)
    method = StandIn(16, 3)
    method.train()
    a = validation_knn(method, splits, {"knn_k": 5}, max_train=120)
    assert method.training  # mode restored
    assert validation_knn(method, splits, {"knn_k": 5}, max_train=120) == a
    ref = torch.randperm(300, generator=gen(0))[:120]
    f_ref, f_val = method.represent(splits.train.x[ref]).numpy(), method.represent(splits.val.x).numpy()
    mean, std = f_ref.mean(0), f_ref.std(0)
    knn = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit((f_ref - mean) / std, splits.train.y[ref].numpy())
    assert a == pytest.approx(knn.score((f_val - mean) / std, splits.val.y.numpy()))


@pytest.mark.parametrize("decoder", [True, False])
def test_evaluate_end_to_end_with_the_real_augmentation(decoder, capsys):
    from trainables.augment import AugmentConfig

    splits = style_splits((200, 100, 100), seed=2)
    method = StandIn(16, 4, decoder=decoder)
    method.train()
    with torch.no_grad():  # probes must still train when the caller holds no_grad
        # exactly the config keys evaluate reads
        cfg = {"seed": 0, "probe_epochs": 5, "probe_min_steps": 100, "knn_k": 5, "style_J": 2}
        out = evaluate(method, splits, AugmentConfig(), cfg)
    assert method.training and capsys.readouterr().out == ""
    expected = {"acc_mlp", "acc_linear", "acc_knn", "acc_knn_best", "knn_best_k", "acc_gmm", "nmi", "ari",
                "style_aug_scale_r2", "style_aug_ratio_r2", "style_aug_center_x_r2", "style_aug_center_y_r2",
                "style_aug_flip_acc", "style_aug_mean", "style_size_r2", "style_colour_acc", "style_factor_mean"}
    assert set(out) == expected | ({"recon_error"} if decoder else set())
    assert all(type(v) is float and np.isfinite(v) for v in out.values())
    assert all(0 <= out[k] <= 1 for k in ("acc_mlp", "acc_linear", "acc_knn", "acc_knn_best", "acc_gmm"))
    assert 1 <= out["knn_best_k"] <= 20
    x = splits.test.x
    if decoder:
        assert out["recon_error"] == pytest.approx(float(((method.reconstruct(x) - x) ** 2).sum() / len(x)), rel=1e-5)
    # the headline kNN is the fixed-k accuracy on train-standardised features
    tr, te = standardise(method.represent(splits.train.x), method.represent(x))
    assert out["acc_knn"] == pytest.approx(knn_accuracy(tr, splits.train.y, te, splits.test.y, k=5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_standardise_knn_and_probes_on_gpu():
    tr, ytr, va, yva, te, yte = three_splits(seed=7)
    cpu = standardise(tr, va, te)
    gpu = standardise(tr.cuda(), va.cuda(), te.cuda())
    assert all(g.device.type == "cuda" for g in gpu)
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, atol=1e-5, rtol=1e-5)
    ytr_g, yva_g, yte_g = ytr.cuda(), yva.cuda(), yte.cuda()
    assert knn_accuracy(gpu[0], ytr_g, gpu[2], yte_g, k=10) == pytest.approx(
        knn_accuracy(cpu[0], ytr, cpu[2], yte, k=10), abs=2 / len(yte))
    assert mlp_probe(gpu[0], ytr_g, gpu[1], yva_g, gpu[2], yte_g, 4, **QUICK) > 0.9


@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("classes", [[4], [3, 5, 0, 0], [0, 0], [2, 6]])
def test_manual_probe_gradient_is_autograds(linear, classes):
    """ProbeBank.train_step writes the gradient of _bank_loss out by hand: one Adam step from
    it equals one from autograd's gradient (classifiers with masked logits, regressors, both)."""
    from trainables.evaluate import probes
    from trainables.evaluate.probes import _bank_loss

    g = torch.Generator().manual_seed(3)
    B, d, T = 37, 6, len(classes)
    out_dim = max([1, *classes])
    Tc = sum(c > 0 for c in classes)
    x = torch.randn(B, d, generator=g)
    labels = torch.stack([torch.randint(0, c, (B,), generator=g) for c in classes if c], 1) if Tc else \
        torch.zeros(B, 0, dtype=torch.long)
    values = torch.randn(B, T - Tc, generator=g)
    counts = torch.tensor([c for c in classes if c])
    mask = None
    if Tc and bool((counts < out_dim).any()):
        mask = torch.zeros(Tc, out_dim).masked_fill_(torch.arange(out_dim) >= counts[:, None], float("-inf"))
    banks = [probes.ProbeBank(T, d, None if linear else 5, out_dim, torch.Generator().manual_seed(1), torch.device("cpu"))
             for _ in range(2)]
    for _ in range(3):  # a few steps, so Adam's moments and the moved weights are compared too
        _bank_loss(banks[0](x), labels, values, mask).backward()
        banks[0].adam_step(1e-2)
        banks[1].train_step(x, labels, values, mask, 1e-2)
        torch.testing.assert_close(banks[1].flat.detach(), banks[0].flat.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(banks[1].m, banks[0].m, rtol=1e-5, atol=1e-7)
    assert not torch.equal(banks[1].flat, probes.ProbeBank(T, d, None if linear else 5, out_dim,
                                                           torch.Generator().manual_seed(1), torch.device("cpu")).flat)
