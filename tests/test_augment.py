"""Batched J-view augmentation (trainables/augment.py) against independent references:
torchvision's functional ops, an explicit numpy bilinear sampler, and torchvision's
RandomResizedCrop parameter sampler."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF

from trainables.augment import (
    BRIGHTNESS, CONTRAST, HUE, SATURATION, AugmentConfig, augment, colour_jitter_, crop_and_flip,
    sample_order,
)

COLOUR = (0.8, 0.8, 0.8, 0.2)
IDENTITY_CROP = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images in [0, 1] (B, C, size, size), with no symmetry."""
    g = gen(seed)
    coarse = torch.rand(b, c, size // 4, size // 4, generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.7 * x + 0.3 * torch.rand(b, c, size, size, generator=g)).clamp(0, 1)


# -- shapes, variety, determinism ----------------------------------------------------------


@pytest.mark.parametrize("c,size,jitter", [(1, 28, None), (3, 32, COLOUR), (3, 64, COLOUR)])
def test_shapes_dtypes_and_range(c, size, jitter):
    x = images(6, c, size)
    views, params = augment(x, 5, AugmentConfig(jitter=jitter), gen())
    assert views.shape == (6, 5, c, size, size) and views.dtype == torch.float32
    assert views.is_contiguous()
    assert 0 <= views.min() and views.max() <= 1
    expected = {"scale", "ratio", "center_x", "center_y", "flip"}
    if jitter:
        expected |= {"jitter", "brightness", "contrast", "saturation", "hue"}
    assert set(params) == expected
    for value in params.values():
        assert value.shape == (6, 5) and value.dtype == torch.float32


def test_float64_input_keeps_dtype():
    views, _ = augment(images(2, 1, 28).double(), 3, AugmentConfig(), gen())
    assert views.dtype == torch.float64


@pytest.mark.parametrize("c,jitter", [(1, None), (3, COLOUR)])
def test_views_and_parameters_differ_across_views_and_images(c, jitter):
    x = images(8, c, 32)
    views, params = augment(x, 6, AugmentConfig(jitter=jitter), gen(1))
    for i in range(8):  # all J views of one image are pairwise different
        flat = views[i].flatten(1)
        dist = torch.cdist(flat, flat) + torch.eye(6) * 1e9
        assert dist.min() > 1e-3
    for name in ("scale", "ratio", "center_x", "center_y"):
        p = params[name]
        assert (p.std(dim=1) > 0).all(), name  # across views of each image
        assert (p.std(dim=0) > 0).all(), name  # across images for each view slot
    assert 0 < params["flip"].mean() < 1


def test_seed_reproduces_exactly_and_other_seed_differs():
    x = images(4, 3, 32)
    cfg = AugmentConfig(crop_scale=(0.6, 1.0), jitter=COLOUR)
    a, pa = augment(x, 5, cfg, gen(7))
    b, pb = augment(x, 5, cfg, gen(7))
    c, pc = augment(x, 5, cfg, gen(8))
    assert torch.equal(a, b) and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert (a - c).abs().max() > 0.1 and not torch.equal(pa["scale"], pc["scale"])


def test_cpu_chunking_does_not_change_the_result(monkeypatch):
    import trainables.augment as module

    x = images(7, 3, 32)  # 7 images: chunks of 3 leave a ragged last chunk
    cfg = AugmentConfig(crop_scale=(0.6, 1.0), jitter=COLOUR)
    whole, p_whole = augment(x, 4, cfg, gen(5))
    monkeypatch.setattr(module, "CPU_CHUNK_BYTES", 3 * 4 * 3 * 32 * 32 * 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # chunking is for single-threaded CPU work
    try:
        assert len(module.chunks(7, 4 * 3 * 32 * 32 * 4, x.device)) == 3
        chunked, p_chunked = augment(x, 4, cfg, gen(5))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(whole, chunked)
    assert all(torch.equal(p_whole[k], p_chunked[k]) for k in p_whole)


# -- crops and flips -------------------------------------------------------------------------


@pytest.mark.parametrize("scale,ratio,shape", [
    ((0.4, 1.0), (3 / 4, 4 / 3), (28, 28)),
    ((0.6, 1.0), (3 / 4, 4 / 3), (32, 32)),
    ((0.9, 1.0), (1 / 4, 4.0), (32, 32)),  # most candidates do not fit: exercises the fallback
    ((0.08, 1.0), (3 / 4, 4 / 3), (24, 40)),  # non-square image
])
def test_crop_parameters_stay_within_bounds(scale, ratio, shape):
    x = torch.rand(64, 1, *shape)
    _, p = augment(x, 64, AugmentConfig(crop_scale=scale, crop_ratio=ratio), gen(3))
    eps = 1e-5
    assert p["scale"].min() >= scale[0] - eps and p["scale"].max() <= scale[1] + eps
    assert p["ratio"].min() >= ratio[0] - eps and p["ratio"].max() <= ratio[1] + eps
    # the crop lies inside the image: |centre| + half-extent <= 1 in [-1, 1] coordinates
    height, width = shape
    frac_w = torch.sqrt(p["scale"] * p["ratio"] * height / width)
    frac_h = torch.sqrt(p["scale"] / p["ratio"] * width / height)
    assert (frac_w <= 1 + eps).all() and (frac_h <= 1 + eps).all()
    assert (p["center_x"].abs() + frac_w <= 1 + eps).all()
    assert (p["center_y"].abs() + frac_h <= 1 + eps).all()
    # and the draws cover the range rather than sitting on a bound
    assert p["scale"].max() - p["scale"].min() > 0.5 * (scale[1] - scale[0])


def test_crop_distribution_matches_torchvision_sampler():
    """Accepted (scale, log ratio) follow RandomResizedCrop's rejection sampling; a large image
    makes torchvision's integer rounding negligible."""
    scale, ratio = (0.4, 1.0), (3 / 4, 4 / 3)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        img = torch.empty(1, 1000, 1000)
        tv = np.array([RandomResizedCrop.get_params(img, list(scale), list(ratio))[2:]
                       for _ in range(4000)], dtype=float)  # (h, w)
    tv_scale = tv[:, 0] * tv[:, 1] / 1e6
    tv_log_ratio = np.log(tv[:, 1] / tv[:, 0])
    _, p = augment(torch.rand(100, 1, 28, 28), 200, AugmentConfig(scale, ratio), gen(5))
    assert abs(p["scale"].mean().item() - tv_scale.mean()) < 0.015
    assert abs(p["scale"].std().item() - tv_scale.std()) < 0.015
    assert abs(p["ratio"].log().mean().item() - tv_log_ratio.mean()) < 0.02
    assert abs(p["ratio"].log().std().item() - tv_log_ratio.std()) < 0.015


@pytest.mark.parametrize("axis,dim", [("vertical", -2), ("horizontal", -1)])
def test_flip_with_full_image_crop_equals_torch_flip(axis, dim):
    x = images(3, 3, 32)
    views, p = augment(x, 4, AugmentConfig(**IDENTITY_CROP, flip_p=1.0, flip_axis=axis), gen())
    assert (p["flip"] == 1).all() and (p["scale"] == 1).all()
    expected = torch.flip(x, dims=[dim]).unsqueeze(1).expand_as(views)
    torch.testing.assert_close(views, expected, atol=1e-5, rtol=0)
    assert (views - x.unsqueeze(1)).abs().max() > 0.1  # the image is not symmetric


def test_no_flip_full_crop_is_identity_for_grey_without_jitter():
    x = images(3, 1, 28)
    views, p = augment(x, 4, AugmentConfig(**IDENTITY_CROP, flip_p=0.0), gen())
    assert (p["flip"] == 0).all()
    torch.testing.assert_close(views, x.unsqueeze(1).expand_as(views), atol=1e-6, rtol=0)


def test_integer_crop_matches_torchvision_resized_crop():
    """A crop of known pixel box equals torchvision's resized_crop (bilinear upsampling, so
    antialiasing is inactive) and F.interpolate on the sliced region."""
    x = images(1, 3, 32)
    H = W = 32
    top, left, h, w = 5, 8, 20, 16
    frac_w, frac_h = torch.tensor([w / W]), torch.tensor([h / H])
    cx = torch.tensor([2 * (left + w / 2) / W - 1])
    cy = torch.tensor([2 * (top + h / 2) / H - 1])
    out = crop_and_flip(x, 1, frac_w, frac_h, cx, cy, torch.zeros(1), "vertical")[0, 0]
    ref_tv = TF.resized_crop(x[0], top, left, h, w, [H, W],
                             interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    ref_interp = F.interpolate(x[:, :, top:top + h, left:left + w], size=(H, W),
                               mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, ref_tv, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, ref_interp, atol=1e-5, rtol=0)


def bilinear_reference(img: np.ndarray, scale, ratio, cx, cy, flip, axis) -> np.ndarray:
    """Explicit per-pixel sampler for one view: img (C, H, W) -> (C, H, W). Output pixel centre
    (u, v) in [-1, 1] reads the input at centre + half-extent * (u, v), flipped on the axis,
    kept within the crop's edge pixel centres (as resizing a cropped image does)."""
    C, H, W = img.shape
    half_w = math.sqrt(scale * ratio * H / W)
    half_h = math.sqrt(scale / ratio * W / H)
    sx = -1.0 if (flip and axis == "horizontal") else 1.0
    sy = -1.0 if (flip and axis == "vertical") else 1.0
    out = np.zeros_like(img)
    for i in range(H):
        for j in range(W):
            u, v = (2 * j + 1) / W - 1, (2 * i + 1) / H - 1
            px = ((cx + sx * half_w * u + 1) * W - 1) / 2
            py = ((cy + sy * half_h * v + 1) * H - 1) / 2
            px = min(max(px, (cx - half_w + 1) * W / 2), (cx + half_w + 1) * W / 2 - 1)
            py = min(max(py, (cy - half_h + 1) * H / 2), (cy + half_h + 1) * H / 2 - 1)
            x0, y0 = math.floor(px), math.floor(py)
            ax, ay = px - x0, py - y0
            for yy, wy in ((y0, 1 - ay), (y0 + 1, ay)):
                for xx, wx in ((x0, 1 - ax), (x0 + 1, ax)):
                    out[:, i, j] += wy * wx * img[:, min(max(yy, 0), H - 1), min(max(xx, 0), W - 1)]
    return out


@pytest.mark.parametrize("axis", ["vertical", "horizontal"])
def test_reported_parameters_are_the_ones_applied(axis):
    x = images(2, 1, 16)
    cfg = AugmentConfig(crop_scale=(0.3, 1.0), crop_ratio=(0.5, 2.0), flip_axis=axis)
    views, p = augment(x, 3, cfg, gen(11))
    for i in range(2):
        for j in range(3):
            ref = bilinear_reference(x[i].numpy().astype(np.float64), p["scale"][i, j].item(),
                                     p["ratio"][i, j].item(), p["center_x"][i, j].item(),
                                     p["center_y"][i, j].item(), p["flip"][i, j].item(), axis)
            np.testing.assert_allclose(views[i, j].numpy(), ref, atol=1e-5)


# -- colour jitter ---------------------------------------------------------------------------


def test_colour_jitter_changes_colour_images_and_probability():
    x = images(64, 3, 32)
    cfg = AugmentConfig(**IDENTITY_CROP, flip_p=0.0, jitter=COLOUR)
    views, p = augment(x, 10, cfg, gen(2))
    jit = p["jitter"].bool()
    assert abs(jit.float().mean().item() - 0.8) < 0.04  # 640 draws, p = 0.8
    diff = (views - x.unsqueeze(1)).abs().flatten(2).amax(dim=2)  # (B, J)
    assert (diff[jit] > 0.02).float().mean() > 0.95
    assert (diff[~jit] < 1e-6).all()  # skipped views are exactly the crop
    identity = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    for name, value in identity.items():
        assert (p[name][~jit] == value).all()
        assert p[name][jit].std() > 0.05
    assert p["brightness"][jit].min() >= 0.2 and p["brightness"][jit].max() <= 1.8
    assert p["hue"][jit].abs().max() <= 0.2


def test_jitter_needs_rgb():
    with pytest.raises(ValueError, match="RGB"):
        augment(torch.rand(2, 1, 28, 28), 2, AugmentConfig(jitter=COLOUR), gen())


@pytest.mark.parametrize("name,strengths,reference", [
    ("brightness", (0.8, 0, 0, 0), TF.adjust_brightness),
    ("contrast", (0, 0.8, 0, 0), TF.adjust_contrast),
    ("saturation", (0, 0, 0.8, 0), TF.adjust_saturation),
    ("hue", (0, 0, 0, 0.5), TF.adjust_hue),
])
def test_single_jitter_factor_matches_torchvision(name, strengths, reference):
    x = images(4, 3, 32)
    cfg = AugmentConfig(**IDENTITY_CROP, flip_p=0.0, jitter=strengths, jitter_p=1.0)
    views, p = augment(x, 3, cfg, gen(4))
    for i in range(4):
        for j in range(3):
            expected = reference(x[i], p[name][i, j].item())
            torch.testing.assert_close(views[i, j], expected, atol=2e-5, rtol=0)


def test_full_jitter_in_random_order_matches_sequential_torchvision():
    g = gen(9)
    y = images(24, 3, 16, seed=3)
    factors = torch.stack([0.2 + 1.6 * torch.rand(24, generator=g) for _ in range(3)]
                          + [0.4 * torch.rand(24, generator=g) - 0.2], dim=1)
    order = torch.rand(24, 4, generator=g).argsort(dim=1)
    apply = torch.rand(24, generator=g) < 0.7
    ops = {BRIGHTNESS: TF.adjust_brightness, CONTRAST: TF.adjust_contrast,
           SATURATION: TF.adjust_saturation, HUE: TF.adjust_hue}
    expected = []
    for n in range(24):
        img = y[n]
        if apply[n]:
            for op in order[n].tolist():
                img = ops[op](img, factors[n, op].item())
        expected.append(img)
    out = colour_jitter_(y.clone(), factors, order, apply)
    torch.testing.assert_close(out, torch.stack(expected), atol=3e-5, rtol=0)
    assert torch.equal(out[~apply], y[~apply])


def test_jitter_order_is_a_uniform_random_permutation():
    order = sample_order(torch.rand(24_000, 4, generator=gen(6)))
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(24_000, 4))
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(dim=1)
    counts = torch.bincount(codes, minlength=256)
    counts = counts[counts > 0]
    assert len(counts) == 24  # every permutation occurs ...
    assert (counts - 1000).abs().max() < 150  # ... about equally often (sd ~31)


# -- configuration ---------------------------------------------------------------------------


def test_for_dataset_duck_types_dataset_info():
    grey = AugmentConfig.for_dataset(SimpleNamespace(crop_scale=(0.4, 1.0),
                                                     crop_ratio=(0.75, 4 / 3), colour=False))
    colour = AugmentConfig.for_dataset(SimpleNamespace(crop_scale=[0.6, 1.0],
                                                       crop_ratio=[0.75, 4 / 3], colour=True))
    assert grey.jitter is None and grey.crop_scale == (0.4, 1.0) and grey.flip_axis == "vertical"
    assert colour.jitter == COLOUR and colour.crop_scale == (0.6, 1.0) and colour.jitter_p == 0.8


@pytest.mark.parametrize("kwargs", [
    dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.5, 1.2)), dict(crop_ratio=(2.0, 1.0)),
    dict(flip_p=1.5), dict(flip_axis="diagonal"), dict(jitter=(0.8, 0.8, 0.8, 0.7)),
    dict(jitter_p=-0.1),
])
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_generator_device():
    x = images(8, 3, 32).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    views, p = augment(x, 4, AugmentConfig(jitter=COLOUR), g)
    assert views.device == x.device and all(v.device == x.device for v in p.values())
    again, _ = augment(x, 4, AugmentConfig(jitter=COLOUR), torch.Generator("cuda").manual_seed(0))
    assert torch.equal(views, again)


# -- the official pipeline (augment=official) ------------------------------------------------
# The official code (alicebizeul/simvae, src/data/data_loader.py, TransformsSimCLR) runs, per view
# and on PIL images: [Resize(256) (CIFAR-10)] -> ColorJitter(0.8, 0.8, 0.8, 0.2) (colour data,
# always) -> RandomResizedCrop(size, scale=[lo, 1.0], ratio=[0.75, 1.3]) -> RandomVerticalFlip
# -> ToTensor -> [ThresholdTransform(0.5): x > 0.5 (MNIST)].

from trainables.augment import (CROP_TRIES, OFFICIAL_CROP_RATIO, official_crop_boxes,  # noqa: E402
                                resize_matrix)


def official_cfg(name: str, colour: bool, scale=(0.4, 1.0)) -> AugmentConfig:
    return AugmentConfig.for_dataset(SimpleNamespace(name=name, crop_scale=scale, crop_ratio=(0.75, 4 / 3),
                                                     colour=colour), "official")


def get_params_reference(u_scale, u_ratio, u_top, u_left, scale, ratio, height, width):
    """torchvision's RandomResizedCrop.get_params, line by line, with its random draws replaced
    by the given uniforms (uniform_(a, b) = a + (b - a) u; randint(0, n) = floor(u n))."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for t in range(CROP_TRIES):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * float(u_scale[t]))
        aspect_ratio = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(u_ratio[t])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(float(u_top) * (height - h + 1)), int(float(u_left) * (width - w + 1)), h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("scale,ratio,height,width", [
    ((0.4, 1.0), (0.75, 1.3), 28, 28),
    ((0.6, 1.0), (0.75, 1.3), 256, 256),
    ((0.9, 1.0), (3.0, 4.0), 20, 30),  # rarely fits: the centred fallback with the ratio clamped
    ((0.9, 1.0), (0.2, 0.25), 30, 20),
])
def test_official_crop_boxes_follow_get_params_arithmetic(scale, ratio, height, width):
    g = gen(21)
    n = 300
    u = torch.rand(2 * CROP_TRIES + 2, n, generator=g)
    top, left, h, w = official_crop_boxes(u[:CROP_TRIES], u[CROP_TRIES:2 * CROP_TRIES], u[-2], u[-1], scale, ratio,
                                          height, width)
    ours = torch.stack([top, left, h, w], 1).tolist()
    ref = [list(get_params_reference(u[:CROP_TRIES, i], u[CROP_TRIES:2 * CROP_TRIES, i], u[-2, i], u[-1, i],
                                     scale, ratio, height, width)) for i in range(n)]
    assert ours == ref


def test_official_crop_distribution_matches_torchvision_sampler():
    n = 20_000
    u = torch.rand(2 * CROP_TRIES + 2, n, generator=gen(22))
    _, _, h, w = official_crop_boxes(u[:CROP_TRIES], u[CROP_TRIES:2 * CROP_TRIES], u[-2], u[-1], (0.4, 1.0),
                                     OFFICIAL_CROP_RATIO, 28, 28)
    torch.manual_seed(0)
    img = torch.zeros(1, 28, 28)
    tv = torch.tensor([RandomResizedCrop.get_params(img, [0.4, 1.0], list(OFFICIAL_CROP_RATIO))[2:] for _ in range(n)])
    for ours, theirs in ((h, tv[:, 0]), (w, tv[:, 1])):
        p, q = torch.bincount(ours, minlength=29) / n, torch.bincount(theirs, minlength=29) / n
        assert 0.5 * (p - q).abs().sum() < 0.03  # total variation (sampling noise ~0.01)
    assert w.max() == 28 and (w.float() / h.float()).max() <= 1.3 + 1 / 11  # ratio 1.3 reached, up to rounding


@pytest.mark.parametrize("size,box,out", [
    (28, (5, 8, 20, 16), 28),  # upscaling a 28x28 crop: plain bilinear
    (256, (30, 17, 200, 181), 32),  # downscaling a 256-pixel canvas crop: antialiased
    (64, (0, 0, 64, 64), 64),  # the whole image: identity
])
def test_resize_matrix_is_torchvision_resized_crop(size, box, out):
    """PIL's (and torchvision's antialiased tensor) bilinear resized_crop, as matrices."""
    x = images(1, 3, size)
    top, left, h, w = box
    ry = resize_matrix(torch.tensor([top]), torch.tensor([h]), out, size)[0]
    rx = resize_matrix(torch.tensor([left]), torch.tensor([w]), out, size)[0]
    ref = TF.resized_crop(x[0], top, left, h, w, [out, out], interpolation=TF.InterpolationMode.BILINEAR,
                          antialias=True)
    torch.testing.assert_close(ry @ x[0] @ rx.T, ref, atol=2e-6, rtol=0)
    # and PIL itself on 8-bit images (two 8-bit passes: within 1/255 plus rounding)
    x8 = (x[0] * 255).round().to(torch.uint8)
    pil = TF.resized_crop(TF.to_pil_image(x8), top, left, h, w, [out, out],
                          interpolation=TF.InterpolationMode.BILINEAR)
    assert (ry @ (x8.float() / 255) @ rx.T - TF.to_tensor(pil)).abs().max() <= 1.5 / 255


def official_view_with_pil(img8: torch.Tensor, p: dict, i: int, j: int, size_c: int, out: int,
                           threshold: float | None) -> torch.Tensor:
    """One view by the official transforms on a PIL image, at the crop box and flip that
    ``augment`` reports (square images): resized_crop (RandomResizedCrop's body) -> vflip ->
    ToTensor -> threshold."""
    w = round(math.sqrt(p["scale"][i, j].item() * p["ratio"][i, j].item()) * size_c)
    h = round(math.sqrt(p["scale"][i, j].item() / p["ratio"][i, j].item()) * size_c)
    left = round((p["center_x"][i, j].item() + 1) * size_c / 2 - w / 2)
    top = round((p["center_y"][i, j].item() + 1) * size_c / 2 - h / 2)
    pil = TF.resized_crop(TF.to_pil_image(img8), top, left, h, w, [out, out],
                          interpolation=TF.InterpolationMode.BILINEAR)
    if p["flip"][i, j]:
        pil = TF.vflip(pil)
    view = TF.to_tensor(pil)
    return (view > threshold).float() if threshold is not None else view


def test_official_mnist_views_match_the_official_transforms_and_are_binary():
    x = (images(6, 1, 28, seed=4) > 0.5).float()  # binarised, as the project's MNIST
    cfg = official_cfg("mnist", colour=False)
    assert cfg.threshold == 0.5 and cfg.crop_ratio == (0.75, 1.3) and cfg.jitter is None
    views, p = augment(x, 4, cfg, gen(23))
    assert set(views.unique().tolist()) <= {0.0, 1.0}
    mismatch = []
    for i in range(6):
        for j in range(4):
            ref = official_view_with_pil((x[i] * 255).to(torch.uint8), p, i, j, 28, 28, 0.5)
            mismatch.append((views[i, j] != ref).float().mean().item())
    # PIL rounds its two 8-bit passes; a pixel exactly at the threshold may go either way
    assert np.mean(mismatch) < 0.005 and max(mismatch) < 0.02
    # the project's pipeline binarises before augmentation, so many view pixels are not binary
    project, _ = augment(x, 4, AugmentConfig(), gen(23))
    assert ((project > 0) & (project < 1)).float().mean() > 0.05


def test_official_grey_views_match_the_official_transforms():
    x = images(4, 1, 28, seed=5)
    x8 = (x * 255).round().to(torch.uint8)
    views, p = augment(x8.float() / 255, 3, official_cfg("fashionmnist", colour=False), gen(24))
    for i in range(4):
        for j in range(3):
            ref = official_view_with_pil(x8[i], p, i, j, 28, 28, None)
            assert (views[i, j] - ref).abs().max() <= 1.5 / 255


@pytest.mark.parametrize("name,resize,size", [("cifar10", 256, 32), ("celeba", None, 64)])
@pytest.mark.parametrize("strengths,op", [((0, 0.8, 0, 0), "contrast"), ((0, 0, 0, 0.2), "hue"),
                                          ((0.8, 0, 0, 0), "brightness")])
def test_official_colour_jitter_comes_first_on_the_whole_image(name, resize, size, strengths, op):
    """Jitter (always applied) on the whole, resized image, then the crop: contrast blends
    towards the mean of the whole canvas, not of the crop."""
    cfg = official_cfg(name, colour=True, scale=(0.6, 1.0))
    assert cfg.jitter_p == 1.0 and cfg.resize == resize and cfg.crop_ratio == (0.75, 1.3)
    cfg = AugmentConfig(**{**cfg.__dict__, "jitter": strengths})
    x = images(3, 3, size, seed=6)
    views, p = augment(x, 2, cfg, gen(25))
    assert (p["jitter"] == 1).all()
    canvas_size = resize or size
    canvas = TF.resize(x, [canvas_size, canvas_size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    adjust = {"contrast": TF.adjust_contrast, "hue": TF.adjust_hue, "brightness": TF.adjust_brightness}[op]
    for i in range(3):
        for j in range(2):
            jittered = adjust(canvas[i], p[op][i, j].item())
            w = round(math.sqrt(p["scale"][i, j].item() * p["ratio"][i, j].item()) * canvas_size)
            h = round(math.sqrt(p["scale"][i, j].item() / p["ratio"][i, j].item()) * canvas_size)
            left = round((p["center_x"][i, j].item() + 1) * canvas_size / 2 - w / 2)
            top = round((p["center_y"][i, j].item() + 1) * canvas_size / 2 - h / 2)
            ref = TF.resized_crop(jittered, top, left, h, w, [size, size],
                                  interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            if p["flip"][i, j]:
                ref = TF.vflip(ref)
            torch.testing.assert_close(views[i, j], ref, atol=5e-5, rtol=0)


def test_official_with_a_whole_image_crop_equals_the_project_pipeline_with_jitter_always():
    """Jitter then flip (official) or flip then jitter (project) are the same when the crop is
    the whole image; both pipelines draw the same uniforms, so the views agree."""
    x = images(8, 3, 32)
    common = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter=COLOUR, jitter_p=1.0)
    project, pp = augment(x, 3, AugmentConfig(**common), gen(28))
    official, po = augment(x, 3, AugmentConfig(**common, pipeline="official"), gen(28))
    torch.testing.assert_close(official, project, atol=2e-6, rtol=0)
    assert all(torch.equal(pp[k], po[k]) for k in ("flip", "brightness", "contrast", "saturation", "hue"))


def test_official_pipeline_is_seeded_and_per_view():
    x = images(4, 3, 32)
    cfg = official_cfg("cifar10", colour=True, scale=(0.6, 1.0))
    a, pa = augment(x, 3, cfg, gen(26))
    b, _ = augment(x, 3, cfg, gen(26))
    assert torch.equal(a, b)
    assert len(torch.unique(pa["scale"])) > 6 and len(torch.unique(pa["brightness"])) == 12
    assert (a[:, 0] - a[:, 1]).abs().amax(dim=(1, 2, 3)).min() > 0.01


def test_for_dataset_official_and_project():
    info = SimpleNamespace(name="mnist", crop_scale=(0.4, 1.0), crop_ratio=(0.75, 4 / 3), colour=False)
    assert AugmentConfig.for_dataset(info) == AugmentConfig.for_dataset(info, "project") == AugmentConfig()
    assert official_cfg("cifar10", True).resize == 256 and official_cfg("mnist", False).resize is None
    assert official_cfg("fashionmnist", False).threshold is None
    with pytest.raises(ValueError, match="augment"):
        AugmentConfig.for_dataset(info, "kornia")
    with pytest.raises(ValueError):
        AugmentConfig(threshold=0.5)  # a step of the official pipeline only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_official_pipeline_on_gpu_matches_cpu():
    x = images(8, 3, 32)
    cfg = official_cfg("cifar10", colour=True, scale=(0.6, 1.0))
    cpu, p_cpu = augment(x, 4, cfg, gen(27))
    g = torch.Generator(device="cuda").manual_seed(27)
    gpu, p_gpu = augment(x.cuda(), 4, cfg, g)
    assert gpu.device.type == "cuda" and p_gpu["scale"].device.type == "cuda"
    assert gpu.shape == cpu.shape and 0 <= gpu.min() and gpu.max() <= 1
