"""Shapes, sizes and wiring of models/networks.py."""
import dataclasses

import pytest
import torch
from torch import nn

from models.base import NetSpec
from models.networks import (
    LOGVAR_RANGE,
    ConvDecoder,
    GaussianHead,
    MLPDecoder,
    MLPEncoder,
    ResNetEncoder,
    build_decoder,
    build_encoder,
    build_networks,
    encoder_feature_dim,
    projection_head,
)

SMALL = 1 / 16  # ResNet width for fast CPU tests: channels 4-8-16-32


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear_dims(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_mlp_encoder_is_the_official_784_2000_500_500_2d_net():
    enc = MLPEncoder((1, 28, 28), 10)
    assert linear_dims(enc) == [(784, 2000), (2000, 500), (500, 500), (500, 20)]
    relus = [m for m in enc.body.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3  # after each hidden layer, none after the head
    mu, logvar = enc(torch.rand(5, 1, 28, 28))
    assert mu.shape == logvar.shape == (5, 10)


def test_mlp_decoder_is_the_official_d_500_500_2000_784_net():
    dec = MLPDecoder((1, 28, 28), 10)
    assert linear_dims(dec) == [(10, 500), (500, 500), (500, 2000), (2000, 784)]
    assert dec(torch.randn(3, 10)).shape == (3, 1, 28, 28)


def test_mlp_handles_any_image_shape():
    enc, dec = MLPEncoder((3, 8, 6), 4), MLPDecoder((3, 8, 6), 4)
    mu, _ = enc(torch.rand(2, 3, 8, 6))
    assert linear_dims(enc)[0] == (144, 2000)
    assert dec(mu).shape == (2, 3, 8, 6)


def test_gaussian_head_splits_mu_then_logvar_and_clamps_logvar():
    head = GaussianHead(3, 2)
    h = torch.randn(4, 3)
    raw = head.linear(h)
    mu, logvar = head(h)
    torch.testing.assert_close(mu, raw[:, :2])
    torch.testing.assert_close(logvar, raw[:, 2:])  # in range: untouched
    with torch.no_grad():
        head.linear.bias[2:] = torch.tensor([1e4, -1e4])
    _, logvar = head(torch.zeros(1, 3))
    assert logvar.tolist() == [[LOGVAR_RANGE[1], LOGVAR_RANGE[0]]]


def test_resnet18_full_width_has_about_11m_parameters():
    enc = ResNetEncoder((3, 32, 32), 64)
    assert encoder_feature_dim(enc) == 512
    body = n_params(enc.body)
    assert 11.0e6 < body < 11.3e6  # torchvision resnet18 minus its fc and 7x7 stem: 11.17M
    assert n_params(enc) == body + 512 * 128 + 128


def test_resnet_width_and_stages_options():
    enc = ResNetEncoder((3, 32, 32), 64, width=0.5, stages=3)  # roughly the official net
    assert encoder_feature_dim(enc) == 128
    assert 0.5e6 < n_params(enc) < 1.0e6
    assert encoder_feature_dim(ResNetEncoder((3, 32, 32), 8, width=SMALL)) == 32
    with pytest.raises(ValueError):
        ResNetEncoder((3, 32, 32), 8, stages=5)


@pytest.mark.parametrize("size", [32, 64])
def test_resnet_encoder_shapes_and_final_4x4_map(size):
    enc = ResNetEncoder((3, size, size), 16, width=SMALL)
    x = torch.rand(2, 3, size, size)
    before_pool = enc.body[:-2](x)
    assert before_pool.shape == (2, 32, 4, 4)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (2, 16)
    assert enc.features(x).shape == (2, 32)


@pytest.mark.parametrize("size", [32, 64])
def test_conv_decoder_output_shape(size):
    dec = ConvDecoder((3, size, size), 16, width=SMALL)
    ups = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == {32: 3, 64: 4}[size]
    assert dec(torch.randn(2, 16)).shape == (2, 3, size, size)


def test_conv_decoder_rejects_sizes_it_cannot_reach():
    with pytest.raises(ValueError, match="4\\*2\\^k"):
        ConvDecoder((1, 28, 28), 8)


@pytest.mark.parametrize(
    "spec, enc_type, dec_type",
    [
        (NetSpec((1, 28, 28), "mlp", 10, "bernoulli"), MLPEncoder, MLPDecoder),
        (NetSpec((3, 32, 32), "resnet", 64, "gaussian"), ResNetEncoder, ConvDecoder),
    ],
)
def test_build_networks_by_arch(spec, enc_type, dec_type):
    spec = dataclasses.replace(spec, width=SMALL)
    enc, dec = build_networks(spec)
    assert isinstance(enc, enc_type) and isinstance(dec, dec_type)
    x = torch.rand(2, *spec.image_shape)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (2, spec.latent_dim)
    assert dec(mu).shape == x.shape
    assert isinstance(build_encoder(spec), enc_type) and isinstance(build_decoder(spec), dec_type)


def test_build_networks_rejects_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        build_networks(NetSpec((1, 28, 28), "vit", 10, "bernoulli"))


def test_netspec_width_and_stages_shape_the_resnet():
    full = build_encoder(NetSpec((3, 32, 32), "resnet", 64, "gaussian"))
    small = build_encoder(NetSpec((3, 32, 32), "resnet", 64, "gaussian", width=0.5, resnet_stages=3))
    n_full = sum(p.numel() for p in full.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert full.feature_dim == 512 and small.feature_dim == 128
    assert n_small < n_full / 8


def test_projection_head_layers_and_shapes():
    head = projection_head(64, 128, 32)
    assert linear_dims(head) == [(64, 128), (128, 32)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == 1
    assert head(torch.randn(5, 64)).shape == (5, 32)
    expander = projection_head(16, 64, 64, layers=3, batch_norm=False)
    assert linear_dims(expander) == [(16, 64), (64, 64), (64, 64)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in expander)
    assert linear_dims(projection_head(8, 99, 4, layers=1)) == [(8, 4)]
