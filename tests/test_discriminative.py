"""Discriminative baselines (SimCLR, VICReg, MoCo v2): each objective against an independent
computation with explicit loops, MoCo's queue and momentum encoder, and the Method contract
on tiny MLP and ResNet inputs."""
from __future__ import annotations

import math
from collections import deque

import pytest
import torch
import torch.nn.functional as F

from models.base import METHODS, NetSpec
from models.moco import MoCo, enqueue, info_nce, moco_logits, momentum_update
from models.simclr import SimCLR, nt_xent, positive_similarity
from models.vicreg import VICReg, covariance_loss, invariance_loss, variance_loss, vicreg_terms
from trainables.config import resolve_config

MLP = NetSpec(image_shape=(1, 28, 28), arch="mlp", latent_dim=6, likelihood="bernoulli")
RESNET = NetSpec(image_shape=(3, 32, 32), arch="resnet", latent_dim=8, likelihood="gaussian")
SMALL_RESNET = NetSpec(image_shape=(3, 32, 32), arch="resnet", latent_dim=8, likelihood="gaussian",
                       width=0.125, resnet_stages=2)  # channels 8-16: quick on CPU
SMALL_HEAD = {"proj_hidden": 32, "proj_dim": 16}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------- SimCLR
def textbook_nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent for two views a, b (B, D): 2B x 2B similarities, self masked out,
    each view's label the other view of its image, cross-entropy averaged over 2B anchors."""
    B = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))
    labels = torch.cat([torch.arange(B) + B, torch.arange(B)])
    return F.cross_entropy(sim, labels)


def loop_multi_positive_nt_xent(z: torch.Tensor, tau: float) -> float:
    """-(1/|P(i)|) sum_p log[exp(s_ip/tau) / sum_{a != i} exp(s_ia/tau)], mean over anchors,
    with explicit loops over anchors, positives and candidates."""
    B, J, _ = z.shape
    z = F.normalize(z, dim=2)
    total = 0.0
    for b in range(B):
        for j in range(J):
            anchor = z[b, j]
            denominator = sum(
                math.exp(float(anchor @ z[b2, j2]) / tau)
                for b2 in range(B)
                for j2 in range(J)
                if (b2, j2) != (b, j)
            )
            total += -sum(
                math.log(math.exp(float(anchor @ z[b, p]) / tau) / denominator) for p in range(J) if p != j
            ) / (J - 1)
    return total / (B * J)


def test_nt_xent_two_views_matches_textbook_nt_xent():
    z = torch.randn(7, 2, 5, generator=generator(1), dtype=torch.float64)
    for tau in (0.1, 0.5, 1.0):
        expected = textbook_nt_xent(z[:, 0], z[:, 1], tau)
        torch.testing.assert_close(nt_xent(z, tau), expected)


@pytest.mark.parametrize("J", [2, 3, 4])
def test_nt_xent_matches_loops_over_anchors_and_negatives(J):
    z = torch.randn(5, J, 4, generator=generator(J), dtype=torch.float64)
    tau = 0.3
    assert nt_xent(z, tau).item() == pytest.approx(loop_multi_positive_nt_xent(z, tau), rel=1e-10)


def test_nt_xent_reaches_its_minimum_log_j_minus_1_when_views_agree():
    # Each of the J - 1 positives is in every positive's denominator, so the L_out form is
    # bounded below by log(J - 1) (0 for J = 2), reached when views of an image coincide and
    # images are far apart.
    for J in (2, 3, 4):
        aligned = torch.eye(4, dtype=torch.float64)[:, None, :].expand(4, J, 4)  # orthogonal images
        random = torch.randn(4, J, 4, generator=generator(J), dtype=torch.float64)
        assert nt_xent(aligned, 0.05).item() == pytest.approx(math.log(J - 1), abs=1e-6)
        assert nt_xent(random, 0.05).item() > math.log(J - 1) + 0.5


def test_nt_xent_gradient_is_finite_despite_masked_diagonal():
    z = torch.randn(4, 3, 5, generator=generator(3), requires_grad=True)
    nt_xent(z, 0.2).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_positive_similarity_matches_loop():
    z = torch.randn(3, 4, 5, generator=generator(4), dtype=torch.float64)
    zn = F.normalize(z, dim=2)
    pairs = [float(zn[b, i] @ zn[b, j]) for b in range(3) for i in range(4) for j in range(4) if i != j]
    assert positive_similarity(z).item() == pytest.approx(sum(pairs) / len(pairs), rel=1e-12)


# --------------------------------------------------------------------------------- VICReg
def loop_covariance_loss(z: torch.Tensor) -> float:
    """sum_{i != j} Cov_ij^2 / D with the unbiased covariance built by loops over dims."""
    n, d = z.shape
    means = [sum(float(z[k, i]) for k in range(n)) / n for i in range(d)]
    total = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                cov = sum((float(z[k, i]) - means[i]) * (float(z[k, j]) - means[j]) for k in range(n)) / (n - 1)
                total += cov**2
    return total / d


def loop_variance_loss(z: torch.Tensor, eps: float = 1e-4) -> float:
    n, d = z.shape
    total = 0.0
    for i in range(d):
        col = [float(z[k, i]) for k in range(n)]
        mean = sum(col) / n
        var = sum((c - mean) ** 2 for c in col) / (n - 1)
        total += max(0.0, 1.0 - math.sqrt(var + eps))
    return total / d


def test_covariance_loss_matches_loops_over_dims():
    z = torch.randn(9, 5, generator=generator(5), dtype=torch.float64)
    z[:, 1] += 0.8 * z[:, 0]  # a correlated pair, so off-diagonal terms matter
    assert covariance_loss(z).item() == pytest.approx(loop_covariance_loss(z), rel=1e-10)


def test_covariance_loss_is_zero_for_uncorrelated_dims():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert covariance_loss(z).item() == pytest.approx(0.0, abs=1e-15)


def test_variance_loss_hinges_on_std_with_eps():
    z = torch.zeros(6, 3, dtype=torch.float64)  # dim 0 constant: std = sqrt(1e-4) = 0.01
    z[:, 1] = torch.tensor([-4.0, 4.0, -4.0, 4.0, -4.0, 4.0])  # std > 1: no penalty
    z[:, 2] = torch.tensor([-0.3, 0.3, -0.3, 0.3, -0.3, 0.3], dtype=torch.float64)  # std = 0.3 * sqrt(6/5)
    std2 = math.sqrt(0.09 * 6 / 5 + 1e-4)
    expected = ((1 - 0.01) + 0.0 + (1 - std2)) / 3
    assert variance_loss(z).item() == pytest.approx(expected, rel=1e-12)
    assert variance_loss(z).item() == pytest.approx(loop_variance_loss(z), rel=1e-12)


def test_invariance_loss_is_mean_squared_error():
    a = torch.randn(4, 3, generator=generator(6), dtype=torch.float64)
    b = torch.randn(4, 3, generator=generator(7), dtype=torch.float64)
    expected = sum(float(a[n, d] - b[n, d]) ** 2 for n in range(4) for d in range(3)) / 12
    assert invariance_loss(a, b).item() == pytest.approx(expected, rel=1e-12)


def test_vicreg_terms_two_views_are_the_original():
    z = torch.randn(8, 2, 4, generator=generator(8), dtype=torch.float64)
    a, b = z[:, 0], z[:, 1]
    terms = vicreg_terms(z)
    assert terms["invariance"].item() == pytest.approx(F.mse_loss(a, b).item(), rel=1e-12)
    assert terms["variance"].item() == pytest.approx((loop_variance_loss(a) + loop_variance_loss(b)) / 2, rel=1e-10)
    assert terms["covariance"].item() == pytest.approx(loop_covariance_loss(a) + loop_covariance_loss(b), rel=1e-10)


def test_vicreg_terms_many_views_average_pairs_and_branches():
    J = 4
    z = torch.randn(6, J, 3, generator=generator(9), dtype=torch.float64)
    pairs = [(i, j) for i in range(J) for j in range(i + 1, J)]
    inv = sum(F.mse_loss(z[:, i], z[:, j]).item() for i, j in pairs) / len(pairs)
    var = sum(loop_variance_loss(z[:, j]) for j in range(J)) / J
    cov = 2 * sum(loop_covariance_loss(z[:, j]) for j in range(J)) / J
    terms = vicreg_terms(z)
    assert terms["invariance"].item() == pytest.approx(inv, rel=1e-10)
    assert terms["variance"].item() == pytest.approx(var, rel=1e-10)
    assert terms["covariance"].item() == pytest.approx(cov, rel=1e-10)


def test_vicreg_method_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    method = VICReg(MLP, {"lambda_inv": 3.0, "mu_var": 5.0, "nu_cov": 0.5, "J": 3, **SMALL_HEAD})
    out = method.loss(torch.rand(5, 3, 1, 28, 28), torch.rand(5, 1, 28, 28))
    expected = 3.0 * out["invariance"] + 5.0 * out["variance"] + 0.5 * out["covariance"]
    torch.testing.assert_close(out["loss"].detach(), expected)


# ----------------------------------------------------------------------------------- MoCo
def test_info_nce_matches_loop_over_queries_and_negatives():
    q = F.normalize(torch.randn(5, 4, generator=generator(10), dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(5, 4, generator=generator(11), dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(7, 4, generator=generator(12), dtype=torch.float64), dim=1)
    tau = 0.2
    expected = 0.0
    for n in range(5):
        positive = math.exp(float(q[n] @ k[n]) / tau)
        negatives = sum(math.exp(float(q[n] @ queue[m]) / tau) for m in range(7))
        expected += -math.log(positive / (positive + negatives)) / 5
    logits = moco_logits(q, k, queue, tau)
    assert logits.shape == (5, 8)
    assert info_nce(logits).item() == pytest.approx(expected, rel=1e-10)


def test_queue_is_a_fifo_that_evicts_the_oldest_keys():
    K, D = 5, 2
    queue, ptr = torch.zeros(K, D), torch.zeros((), dtype=torch.long)
    reference = deque(maxlen=K)  # the K newest keys
    counter = 0
    for n in (2, 2, 2, 3, 1, 4):  # 14 keys through 5 slots, wrapping several times
        keys = torch.arange(counter, counter + n, dtype=torch.float32)[:, None].expand(n, D)
        enqueue(queue, ptr, keys)
        reference.extend(range(counter, counter + n))
        counter += n
        assert int(ptr) == counter % K
        # key c was written to slot c mod K: the oldest slot is always the next one overwritten
        slots = [float(max((c for c in range(counter) if c % K == s), default=0)) for s in range(K)]
        assert queue[:, 0].tolist() == slots
        if counter >= K:  # full: exactly the K newest keys remain
            assert sorted(queue[:, 0].tolist()) == sorted(map(float, reference))


def test_queue_keeps_only_newest_keys_when_a_step_brings_more_than_k():
    queue, ptr = torch.zeros(5, 1), torch.tensor(3)
    enqueue(queue, ptr, torch.arange(7.0)[:, None])  # keys 0..6 from slot 3: 0, 1 overwritten
    assert int(ptr) == (3 + 7) % 5
    assert queue[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # key i in slot (3 + i) % 5


def small_moco(net: NetSpec = MLP, **hp) -> MoCo:
    return MoCo(net, {"queue_size": 32, **SMALL_HEAD, **hp})


def test_momentum_update_moves_key_params_at_rate_one_minus_m():
    torch.manual_seed(0)
    m = 0.9
    method = small_moco(momentum=m)
    with torch.no_grad():  # stand-in for an optimiser step on the query network
        for p in method._query_parameters():
            p.add_(torch.randn_like(p))
    key_before = [p.clone() for p in method._key_parameters()]
    query = [p.clone() for p in method._query_parameters()]
    method.after_step()
    for k_new, k_old, q in zip(method._key_parameters(), key_before, query, strict=True):
        torch.testing.assert_close(k_new, m * k_old + (1 - m) * q)
    # Repeated with a fixed query network the gap shrinks by exactly m per step.
    gap = sum((k - q).norm() ** 2 for k, q in zip(method._key_parameters(), query)).sqrt()
    for _ in range(3):
        method.after_step()
    gap3 = sum((k - q).norm() ** 2 for k, q in zip(method._key_parameters(), query)).sqrt()
    assert gap3.item() == pytest.approx(m**3 * gap.item(), rel=1e-4)


def test_momentum_update_pure_function():
    key, query = [torch.tensor([1.0, -2.0])], [torch.tensor([3.0, 4.0])]
    momentum_update(key, query, 0.75)
    torch.testing.assert_close(key[0], torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * -2 + 0.25 * 4]))


def test_key_network_gets_no_gradients_and_is_not_optimised():
    torch.manual_seed(0)
    method = small_moco()
    method.train()
    method.loss(torch.rand(6, 2, 1, 28, 28), torch.rand(6, 1, 28, 28))["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method._key_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())
    optimised = {id(p) for p in method.parameters() if p.requires_grad}
    assert not optimised & {id(p) for p in method._key_parameters()}
    assert optimised == {id(p) for p in method._query_parameters()}


def test_moco_loss_uses_queue_before_enqueueing_this_steps_keys():
    torch.manual_seed(0)
    method = small_moco(temperature=0.15)
    views = torch.rand(4, 2, 1, 28, 28)
    queue_before = method.queue.clone()
    with torch.no_grad():  # independent forward pass (the MLP networks have no BatchNorm)
        q = F.normalize(method.head(method.encoder(views[:, 0])[0]), dim=1)
        k = F.normalize(method.key_head(method.key_encoder(views[:, 1])[0]), dim=1)
    method.eval()
    out = method.loss(views, views[:, 0])
    torch.testing.assert_close(out["loss"], info_nce(moco_logits(q, k, queue_before, 0.15)))
    torch.testing.assert_close(method.queue, queue_before)  # no enqueue outside training
    method.train()
    method.loss(views, views[:, 0])
    torch.testing.assert_close(method.queue[:4], k)  # this step's keys, in order
    torch.testing.assert_close(method.queue[4:], queue_before[4:])
    assert int(method.queue_ptr) == 4


def test_moco_queue_starts_with_random_unit_keys():
    method = small_moco()
    assert method.queue.shape == (32, 16)
    torch.testing.assert_close(method.queue.norm(dim=1), torch.ones(32))
    assert method.queue.std() > 0.1


def test_moco_many_views_and_symmetric_pairs_enqueue_every_key():
    torch.manual_seed(0)
    views = torch.rand(3, 3, 1, 28, 28)
    asym, sym = small_moco(J=3), small_moco(J=3, symmetric=1)
    sym.load_state_dict(asym.state_dict())
    with torch.no_grad():
        q = [F.normalize(asym.head(asym.encoder(views[:, j])[0]), dim=1) for j in range(3)]
        k = [F.normalize(asym.key_head(asym.key_encoder(views[:, j])[0]), dim=1) for j in range(3)]
    queue, tau = asym.queue.clone(), 0.2

    def pair_loss(i, j):
        return info_nce(moco_logits(q[i], k[j], queue, tau))

    # Query view 0 against keys of views 1 and 2; symmetric: all six ordered pairs.
    expected_asym = (pair_loss(0, 1) + pair_loss(0, 2)) / 2
    expected_sym = sum(pair_loss(i, j) for i in range(3) for j in range(3) if i != j) / 6
    torch.testing.assert_close(asym.loss(views, views[:, 0])["loss"].detach(), expected_asym)
    torch.testing.assert_close(sym.loss(views, views[:, 0])["loss"].detach(), expected_sym)
    assert int(asym.queue_ptr) == 3 * 2  # keys from views 1, 2
    assert int(sym.queue_ptr) == 3 * 3  # keys from every view


def test_shuffle_bn_emulation_computes_keys_on_shuffled_sub_batches():
    torch.manual_seed(0)
    method = small_moco(SMALL_RESNET, bn_splits=2)
    method.train()
    assert method.bn_splits == 2 and small_moco().bn_splits == 1  # MLP nets have no BN
    x = torch.rand(4, 2, 3, 32, 32)
    torch.manual_seed(123)
    keys = method._keys(x)
    torch.manual_seed(123)
    flat = x.flatten(0, 1)
    perm = torch.randperm(8)
    with torch.no_grad():
        chunks = [method.key_head(method.key_encoder(c)[0]) for c in flat[perm].chunk(2)]
        single = method.key_head(method.key_encoder(flat)[0])
    expected = torch.empty(8, 16)
    expected[perm] = torch.cat(chunks)
    torch.testing.assert_close(keys, F.normalize(expected, dim=1).reshape(4, 2, 16))
    # Per-chunk BatchNorm statistics really differ from one pass over the whole batch.
    assert not torch.allclose(keys, F.normalize(single, dim=1).reshape(4, 2, 16), atol=1e-4)


# ------------------------------------------------------------------------ Method contract
@pytest.mark.parametrize("name", ["simclr", "vicreg", "moco"])
@pytest.mark.parametrize(("net", "extra"), [(MLP, {}), (SMALL_RESNET, {})], ids=["mlp", "resnet"])
@pytest.mark.parametrize("J", [2, 3])
def test_loss_is_a_finite_scalar_with_detached_terms(name, net, extra, J):
    torch.manual_seed(0)
    hp = {"J": J, **SMALL_HEAD, **extra}
    if name == "moco":
        hp["queue_size"] = 32
    method = METHODS[name](net, hp)
    method.train()
    assert method.family == "discriminative" and method.n_views() == J
    B = 4
    views = torch.rand(B, J, *net.image_shape)
    out = method.loss(views, views[:, 0])
    assert out["loss"].shape == () and torch.isfinite(out["loss"]) and out["loss"].requires_grad
    assert len(out) > 1
    for key, value in out.items():
        if key != "loss":
            assert value.shape == () and torch.isfinite(value) and not value.requires_grad, key
    out["loss"].backward()
    method.after_step()
    method.eval()
    assert method.represent(views[:, 0]).shape == (B, net.latent_dim)
    assert method.reconstruct(views[:, 0]) is None


def test_defaults_are_filled_and_match_the_design():
    simclr, vicreg, moco = SimCLR(MLP, {}), VICReg(MLP, {}), MoCo(MLP, {})
    assert simclr.n_views() == vicreg.n_views() == moco.n_views() == 2
    assert (vicreg.hp["lambda_inv"], vicreg.hp["mu_var"], vicreg.hp["nu_cov"]) == (25.0, 25.0, 1.0)
    assert (moco.hp["queue_size"], moco.hp["momentum"], moco.hp["temperature"]) == (4096, 0.99, 0.2)
    assert moco.queue.shape == (4096, 128)


@pytest.mark.parametrize(
    ("name", "hp"),
    [
        ("simclr", {"temperature": 0.0}),
        ("simclr", {"temperature": -0.5}),
        ("simclr", {"J": 1}),
        ("vicreg", {"lambda_inv": -1.0}),
        ("vicreg", {"mu_var": -0.1}),
        ("vicreg", {"nu_cov": -2.0}),
        ("vicreg", {"J": 1}),
        ("moco", {"temperature": 0.0}),
        ("moco", {"momentum": 1.0}),
        ("moco", {"momentum": -0.1}),
        ("moco", {"queue_size": 0}),
        ("moco", {"queue_size": -8}),
        ("moco", {"J": 1}),
        ("moco", {"symmetric": 2}),
        ("moco", {"bn_splits": 1}),
    ],
)
def test_validate_rejects_invalid_hyperparameters(name, hp):
    cls = METHODS[name]
    with pytest.raises(ValueError, match=f"^{name}: {next(iter(hp))}="):
        cls.validate(hp)
    with pytest.raises(ValueError, match=f"^{next(iter(hp))}="):  # a run's config: checked once, at resolve_config
        resolve_config({"method": name, "dataset": "digits", **hp})


@pytest.mark.parametrize("name", ["simclr", "vicreg", "moco"])
def test_validate_accepts_defaults_and_boundary_values(name):
    cls = METHODS[name]
    cls.validate({k: s.default for k, s in cls.hyperparameters.items()})
    if name == "moco":
        cls.validate({"momentum": 0.0, "queue_size": 1})
    if name == "vicreg":
        cls.validate({"lambda_inv": 0.0, "mu_var": 0.0, "nu_cov": 0.0})
