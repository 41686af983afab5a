"""Objectives and methods against independent computations (torch.distributions, explicit loops)."""
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from models import METHODS, NetSpec
from models.crvae import crvae_objective
from models.likelihoods import (
    OFFICIAL_LIKELIHOOD_SCALE,
    gaussian_entropy,
    kl_gaussians,
    kl_standard_normal,
    reconstruction_nll,
    reparameterise,
)
from models.simvae import log_p_y, log_p_z_given_y, posterior_entropy, simvae_objective
from models.vae import vae_objective

LOG_2PI = math.log(2 * math.pi)
SCALE = 3.7  # a likelihood scale != 1, so a misplaced scale shows


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def posterior(*shape, seed=0):
    g = gen(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) * 0.7


def images(*shape, likelihood, seed=1):
    g = gen(seed)
    x = torch.rand(*shape, generator=g)
    if likelihood == "bernoulli":
        x = (x > 0.5).float()
    return x, torch.randn(*shape, generator=g)


def reference_nll(out, x, likelihood, scale):
    """-log p(x|z) summed over (C, H, W) with torch.distributions."""
    if likelihood == "bernoulli":
        return -scale * Bernoulli(logits=out).log_prob(x).sum((-3, -2, -1))
    return -Normal(out, scale**-0.5).log_prob(x).sum((-3, -2, -1))


# -- likelihoods.py ----------------------------------------------------------------------------

def test_gaussian_entropy_matches_torch_distributions():
    mu, logvar = posterior(4, 3, 6)
    expected = Normal(mu, (0.5 * logvar).exp()).entropy().sum(-1)
    torch.testing.assert_close(gaussian_entropy(logvar), expected)


def test_kl_standard_normal_matches_torch_distributions():
    mu, logvar = posterior(5, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_standard_normal(mu, logvar), expected)


def test_kl_gaussians_matches_torch_distributions_and_is_directed():
    mu_q, lv_q = posterior(5, 7, seed=0)
    mu_p, lv_p = posterior(5, 7, seed=1)
    q, p = Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())
    torch.testing.assert_close(kl_gaussians(mu_q, lv_q, mu_p, lv_p), kl_divergence(q, p).sum(-1))
    assert not torch.allclose(kl_gaussians(mu_q, lv_q, mu_p, lv_p), kl_divergence(p, q).sum(-1))
    torch.testing.assert_close(kl_gaussians(mu_q, lv_q, mu_q, lv_q), torch.zeros(5), atol=1e-6, rtol=0)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("scale", [1.0, SCALE, OFFICIAL_LIKELIHOOD_SCALE])
def test_reconstruction_nll_matches_torch_distributions(likelihood, scale):
    x, out = images(2, 3, 2, 5, 4, likelihood=likelihood)  # leading (B, J) dims are kept
    nll = reconstruction_nll(out, x, likelihood, scale)
    assert nll.shape == (2, 3)
    torch.testing.assert_close(nll, reference_nll(out, x, likelihood, scale), rtol=1e-5, atol=1e-3)


def test_official_likelihood_scale_is_exp_4_6():
    assert OFFICIAL_LIKELIHOOD_SCALE == pytest.approx(99.484, abs=1e-3)


def test_reconstruction_nll_rejects_unknown_likelihood():
    with pytest.raises(ValueError, match="unknown likelihood"):
        reconstruction_nll(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "laplace", 1.0)


def test_reparameterise_uses_the_given_generator_and_passes_gradients():
    mu, logvar = posterior(3, 4)
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    z = reparameterise(mu, logvar, generator=gen(5))
    eps = torch.randn(3, 4, generator=gen(5))
    torch.testing.assert_close(z, mu + (0.5 * logvar).exp() * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(3, 4))
    torch.testing.assert_close(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)


# -- VAE / beta-VAE ------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_objective_is_nll_plus_kl(likelihood):
    x, out = images(4, 1, 3, 3, likelihood=likelihood)
    mu, logvar = posterior(4, 5)
    terms = vae_objective(x, out, mu, logvar, likelihood, SCALE)
    nll = reference_nll(out, x, likelihood, SCALE)
    kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(terms["nll"], nll, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["loss"], nll + kl, rtol=1e-5, atol=1e-4)


def test_beta_scales_only_the_kl():
    x, out = images(4, 1, 3, 3, likelihood="gaussian")
    mu, logvar = posterior(4, 5)
    base = vae_objective(x, out, mu, logvar, "gaussian", SCALE, beta=0.0)
    for beta in (0.25, 4.0):
        terms = vae_objective(x, out, mu, logvar, "gaussian", SCALE, beta=beta)
        torch.testing.assert_close(terms["loss"] - base["loss"], beta * base["kl"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(terms["nll"], base["nll"])


# -- CR-VAE --------------------------------------------------------------------------------------

def crvae_inputs(likelihood="gaussian"):
    x, out_x = images(3, 1, 4, 4, likelihood=likelihood, seed=1)
    tx, out_tx = images(3, 1, 4, 4, likelihood=likelihood, seed=2)
    mu_x, lv_x = posterior(3, 6, seed=3)
    mu_t, lv_t = posterior(3, 6, seed=4)
    return x, out_x, mu_x, lv_x, tx, out_tx, mu_t, lv_t


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_crvae_objective_places_beta_and_gamma(likelihood):
    x, out_x, mu_x, lv_x, tx, out_tx, mu_t, lv_t = crvae_inputs(likelihood)
    beta, gamma = 2.5, 0.3
    terms = crvae_objective(x, out_x, mu_x, lv_x, tx, out_tx, mu_t, lv_t, likelihood, SCALE, beta, gamma)
    q_x, q_t = Normal(mu_x, (0.5 * lv_x).exp()), Normal(mu_t, (0.5 * lv_t).exp())
    prior = Normal(0.0, 1.0)
    elbo_x = -reference_nll(out_x, x, likelihood, SCALE) - beta * kl_divergence(q_x, prior).sum(-1)
    elbo_t = -reference_nll(out_tx, tx, likelihood, SCALE) - beta * kl_divergence(q_t, prior).sum(-1)
    consistency = kl_divergence(q_t, q_x).sum(-1)  # KL(q(z|t(x)) || q(z|x)), gamma not times beta
    torch.testing.assert_close(terms["loss"], -elbo_x - elbo_t + gamma * consistency, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(terms["kl_consistency"], consistency)
    torch.testing.assert_close(terms["nll_tx"], reference_nll(out_tx, tx, likelihood, SCALE), rtol=1e-5, atol=1e-3)


def test_crvae_consistency_gradients_reach_both_posteriors():
    x, out_x, mu_x, lv_x, tx, out_tx, mu_t, lv_t = crvae_inputs()
    params = [t.requires_grad_(True) for t in (mu_x, lv_x, mu_t, lv_t)]
    with_gamma = crvae_objective(x, out_x, mu_x, lv_x, tx, out_tx, mu_t, lv_t, "gaussian", SCALE, 0.0, 1.0)
    without = crvae_objective(x, out_x, mu_x, lv_x, tx, out_tx, mu_t, lv_t, "gaussian", SCALE, 0.0, 0.0)
    grads = torch.autograd.grad((with_gamma["loss"] - without["loss"]).sum(), params)
    for g in grads:  # beta = 0: only the consistency term depends on the posteriors
        assert g.abs().min() > 0
    # analytic d KL(q_t || q_x) / d mu_x = (mu_x - mu_t) / sigma_x^2
    torch.testing.assert_close(grads[0], (mu_x - mu_t).detach() / lv_x.detach().exp())


# -- SimVAE --------------------------------------------------------------------------------------

def simvae_reference(x, out, mu, logvar, z, likelihood, scale, sigma2, prior):
    """Explicit loops over images and views, with torch.distributions densities."""
    B, J, d = z.shape
    nll, ent, lpz, lpy = (torch.zeros(B) for _ in range(4))
    for b in range(B):
        y = sum(z[b, j] for j in range(J)) / J
        for j in range(J):
            nll[b] += reference_nll(out[b, j], x[b, j], likelihood, scale)
            ent[b] += Normal(mu[b, j], (0.5 * logvar[b, j]).exp()).entropy().sum()
            # log N(z_j; y, sigma2 I) without its normaliser
            lpz[b] += Normal(y, math.sqrt(sigma2)).log_prob(z[b, j]).sum() + 0.5 * d * (LOG_2PI + math.log(sigma2))
        if prior == "gaussian":  # log N(y; 0, I) without its normaliser
            lpy[b] = Normal(0.0, 1.0).log_prob(y).sum() + 0.5 * d * LOG_2PI
    return {"loss": nll - ent - lpz - lpy, "nll": nll, "entropy": ent, "log_p_z_given_y": lpz, "log_p_y": lpy}


def simvae_inputs(B, J, d, likelihood):
    x, out = images(B, J, 1, 3, 4, likelihood=likelihood, seed=7)
    mu, logvar = posterior(B, J, d, seed=8)
    z = reparameterise(mu, logvar, generator=gen(9))
    return x, out, mu, logvar, z


@pytest.mark.parametrize("J", [2, 5])
@pytest.mark.parametrize("prior", ["gaussian", "uniform"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_simvae_objective_matches_explicit_loops(J, prior, likelihood):
    x, out, mu, logvar, z = simvae_inputs(3, J, 4, likelihood)
    sigma2 = 0.15
    terms = simvae_objective(x, out, mu, logvar, z, likelihood, SCALE, sigma2, prior)
    expected = simvae_reference(x, out, mu, logvar, z, likelihood, SCALE, sigma2, prior)
    assert set(terms) == set(expected)
    for key in expected:
        assert terms[key].shape == (3,)
        torch.testing.assert_close(terms[key], expected[key], rtol=1e-5, atol=1e-3, msg=key)


def test_log_p_z_given_y_scales_with_inverse_sigma2_and_ignores_a_common_shift():
    z = posterior(2, 3, 4)[0]
    torch.testing.assert_close(log_p_z_given_y(z, 0.1), 10 * log_p_z_given_y(z, 1.0))
    torch.testing.assert_close(log_p_z_given_y(z + 5.0, 0.1), log_p_z_given_y(z, 0.1), rtol=1e-4, atol=1e-4)
    same = z[:, :1].expand(2, 3, 4)
    torch.testing.assert_close(log_p_z_given_y(same, 0.1), torch.zeros(2))
    torch.testing.assert_close(log_p_y(z[:, 0], "uniform"), torch.zeros(2))


def test_simvae_official_entropy_differs_by_a_constant_only():
    mu, logvar = posterior(2, 3, 4)
    logvar.requires_grad_(True)
    true, official = posterior_entropy(logvar, "true"), posterior_entropy(logvar, "official")
    torch.testing.assert_close(true - official, torch.full((2, 3), 0.5 * 4 * LOG_2PI))
    g_true, = torch.autograd.grad(true.sum(), logvar)
    g_off, = torch.autograd.grad(official.sum(), logvar)
    torch.testing.assert_close(g_true, g_off)
    with pytest.raises(ValueError):
        posterior_entropy(logvar, "approx")
    with pytest.raises(ValueError):
        log_p_y(mu[:, 0], "laplace")


def test_simvae_official_head_entropy_is_the_official_newest_line():
    """The official code's newest revision (alicebizeul/simvae c7368de, BaseVAE.recon_and_entropy)
    computes ``entropy = 0.5 * torch.sum(2*math.pi*log_var_z)`` over the (B*J, d) batch and
    subtracts it from the loss; 'official_head' is that, per sample."""
    mu, logvar = posterior(2, 3, 4)
    log_var_z = logvar.reshape(6, 4)  # the official code's (B*J, d) posterior batch
    official = 0.5 * torch.sum(2 * math.pi * log_var_z)
    torch.testing.assert_close(posterior_entropy(logvar, "official_head").sum(), official)
    torch.testing.assert_close(posterior_entropy(logvar, "official_head"), math.pi * logvar.sum(-1))
    # its logvar gradient is pi per dimension, against 0.5 for the true entropy and 'official'
    lv = logvar.clone().requires_grad_(True)
    for kind, slope in (("true", 0.5), ("official", 0.5), ("official_head", math.pi)):
        g, = torch.autograd.grad(posterior_entropy(lv, kind).sum(), lv)
        torch.testing.assert_close(g, torch.full_like(lv, slope))
    # in the SimVAE loss only the entropy term changes
    x, out = images(2, 3, 1, 4, 4, likelihood="bernoulli")
    z = mu + 0.1
    true = simvae_objective(x, out, mu, logvar, z, "bernoulli", SCALE, 0.15, entropy="true")
    head = simvae_objective(x, out, mu, logvar, z, "bernoulli", SCALE, 0.15, entropy="official_head")
    torch.testing.assert_close(head["entropy"], math.pi * logvar.sum((1, 2)))
    torch.testing.assert_close(head["loss"] - true["loss"], true["entropy"] - head["entropy"])
    METHODS["simvae"].validate({"entropy": "official_head"})


# -- Methods -------------------------------------------------------------------------------------

NETS = {
    "mlp": NetSpec((1, 28, 28), "mlp", 10, "bernoulli"),
    "resnet32": NetSpec((3, 32, 32), "resnet", 16, "gaussian", width=1 / 16),
    "resnet64": NetSpec((3, 64, 64), "resnet", 16, "gaussian", width=1 / 16),
}
EXTRA_HP = {"simvae": {"J": 3}}


def make(method, net_key, **hp):
    torch.manual_seed(0)
    return METHODS[method](NETS[net_key], {**EXTRA_HP.get(method, {}), **hp})


def batch(m, n_images=2, seed=0):
    g = gen(seed)
    c, h, w = m.net.image_shape
    views = torch.rand(n_images, m.n_views(), c, h, w, generator=g)
    clean = torch.rand(n_images, c, h, w, generator=g)
    if m.net.likelihood == "bernoulli":
        views, clean = (views > 0.5).float(), (clean > 0.5).float()
    return views, clean


@pytest.mark.parametrize("net_key", list(NETS))
@pytest.mark.parametrize("method", ["vae", "betavae", "crvae", "simvae"])
def test_method_loss_is_a_finite_scalar_with_detached_terms(method, net_key):
    m = make(method, net_key)
    terms = m.loss(*batch(m))
    loss = terms.pop("loss")
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    assert terms, "methods log their terms"
    for key, value in terms.items():
        assert value.shape == () and torch.isfinite(value) and not value.requires_grad, key
    loss.backward()
    grads = [p.grad for p in m.encoder.parameters()] + [p.grad for p in m.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_vae_method_matches_the_objective_on_the_same_noise():
    m = make("betavae", "mlp", beta=2.0)
    views, clean = batch(m, n_images=3)
    torch.manual_seed(1)
    terms = m.loss(views, clean)
    torch.manual_seed(1)
    x = views[:, 0]
    mu, logvar = m.encoder(x)
    z = reparameterise(mu, logvar)
    nll = reference_nll(m.decoder(z), x, "bernoulli", OFFICIAL_LIKELIHOOD_SCALE)
    kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(terms["loss"], (nll + 2.0 * kl).mean(), rtol=1e-5, atol=1e-2)


def test_crvae_method_uses_clean_image_as_x_and_the_view_as_t_x():
    m = make("crvae", "mlp", beta=0.5, gamma=2.0)
    assert m.n_views() == 1
    views, clean = batch(m, n_images=3)
    torch.manual_seed(1)
    terms = m.loss(views, clean)
    torch.manual_seed(1)
    mu, logvar = m.encoder(torch.cat([clean, views[:, 0]]))
    out = m.decoder(reparameterise(mu, logvar))
    expected = crvae_objective(clean, out[:3], mu[:3], logvar[:3], views[:, 0], out[3:], mu[3:], logvar[3:],
                               "bernoulli", OFFICIAL_LIKELIHOOD_SCALE, 0.5, 2.0)
    for key, value in expected.items():
        torch.testing.assert_close(terms[key], value.mean(), rtol=1e-5, atol=1e-2, msg=key)


@pytest.mark.parametrize("prior", ["gaussian", "uniform"])
def test_simvae_method_groups_views_by_image(prior):
    m = make("simvae", "mlp", J=4, sigma2=0.3, prior=prior, likelihood_scale=2.0)
    assert m.n_views() == 4
    views, clean = batch(m, n_images=3)
    torch.manual_seed(1)
    terms = m.loss(views, clean)
    torch.manual_seed(1)
    mu, logvar = m.encoder(views.flatten(0, 1))
    z = reparameterise(mu, logvar)
    out = m.decoder(z)
    per_view = lambda t: t.view(3, 4, *t.shape[1:])  # noqa: E731
    expected = simvae_reference(views, per_view(out), per_view(mu), per_view(logvar), per_view(z),
                                "bernoulli", 2.0, 0.3, prior)
    for key, value in expected.items():
        torch.testing.assert_close(terms[key], value.mean(), rtol=1e-5, atol=1e-2, msg=key)


def test_vae_with_several_views_treats_each_as_a_sample():
    m = make("vae", "mlp", J=3)
    assert m.n_views() == 3
    assert m.loss(*batch(m))["loss"].shape == ()


def test_defaults_are_filled_in():
    net = NETS["mlp"]
    assert METHODS["simvae"](net, {}).n_views() == 10
    assert METHODS["simvae"](net, {}).hp["sigma2"] == 0.15
    assert METHODS["betavae"](net, {}).hp["beta"] == 4.0
    assert METHODS["vae"](net, {}).n_views() == 1
    assert METHODS["vae"](net, {}).hp["likelihood_scale"] == pytest.approx(math.exp(4.6))
    assert METHODS["crvae"](net, {}).hp["gamma"] == 1.0


@pytest.mark.parametrize("net_key", ["mlp", "resnet32"])
def test_random_encoder_is_untrained_and_has_no_decoder(net_key):
    m = make("random", net_key)
    assert not m.trainable and m.decoder is None
    assert m.hyperparameters["refresh_bn"].kind is bool and m.hp["refresh_bn"] is False
    views, clean = batch(m)
    loss = m.loss(views, clean)["loss"]
    assert loss.shape == () and float(loss) == 0.0 and not loss.requires_grad
    m.eval()
    assert m.represent(clean).shape == (2, m.net.latent_dim)
    assert m.reconstruct(clean) is None


def test_generative_reconstructions_are_images():
    m = make("vae", "resnet32").eval()
    rec = m.reconstruct(torch.rand(2, 3, 32, 32))
    assert rec.shape == (2, 3, 32, 32) and rec.min() >= 0 and rec.max() <= 1


@pytest.mark.parametrize(
    "method, hp",
    [
        ("simvae", {"J": 1}),
        ("simvae", {"sigma2": 0.0}),
        ("simvae", {"sigma2": -0.1}),
        ("simvae", {"prior": "laplace"}),
        ("simvae", {"entropy": "approx"}),
        ("simvae", {"likelihood_scale": 0.0}),
        ("vae", {"J": 0}),
        ("vae", {"likelihood_scale": float("inf")}),
        ("betavae", {"beta": -1.0}),
        ("crvae", {"gamma": -0.01}),
        ("crvae", {"beta": -1.0}),
    ],
)
def test_validate_rejects_invalid_hyperparameters(method, hp):
    key = next(iter(hp))
    with pytest.raises(ValueError, match=f"{method}: {key}="):
        METHODS[method].validate(hp)


@pytest.mark.parametrize(
    "method, hp",
    [
        ("simvae", {"J": 2, "sigma2": 1e-3, "prior": "uniform", "entropy": "official"}),
        ("betavae", {"beta": 0.0}),
        ("crvae", {"gamma": 0.0, "beta": 16.0}),
        ("random", {"refresh_bn": True}),
    ],
)
def test_validate_accepts_valid_hyperparameters(method, hp):
    METHODS[method].validate(hp)


@pytest.mark.parametrize("method", ["vae", "crvae", "simvae"])
def test_a_few_adam_steps_reduce_the_loss(method):
    m = make(method, "mlp", likelihood_scale=1.0)
    # learnable binary images: image i is lit on rows r with r % 4 == i
    rows = torch.arange(28).view(1, 1, 28, 1)
    clean = (rows % 4 == torch.arange(4).view(4, 1, 1, 1)).float().expand(4, 1, 28, 28)
    views = clean.unsqueeze(1).expand(4, m.n_views(), 1, 28, 28)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(15):
        loss = m.loss(views, clean)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("arch", ["mlp", "resnet32"])
def test_simvae_loss_under_bf16_autocast_on_gpu(arch):
    """The training step's CUDA path: the loss under bf16 autocast is finite, its terms are
    float32 (likelihoods.py computes them in float32) and near the fp32 loss (the samples z may
    differ: eps is drawn in the autocast dtype)."""
    m = make("simvae", arch, J=4).cuda()
    shape = (1, 28, 28) if arch == "mlp" else (3, 32, 32)
    clean = torch.rand(8, *shape, generator=gen(5)).cuda()
    if arch == "mlp":
        clean = (clean > 0.5).float()
    views = clean.unsqueeze(1).expand(8, 4, *shape)
    torch.manual_seed(0)
    fp32 = m.loss(views, clean)
    torch.manual_seed(0)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        bf16 = m.loss(views, clean)
    assert bf16["loss"].dtype == torch.float32 and torch.isfinite(bf16["loss"])
    assert float(bf16["loss"]) == pytest.approx(float(fp32["loss"]), rel=0.25)
    bf16["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
