"""Batched J-view augmentation: every view of every image draws its own parameters.

The SimCLR-protocol pipeline of the official SimVAE code, applied per view::

    RandomResizedCrop(size, scale, ratio) -> random flip (vertical in the official code)
    -> RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8)   (colour data only)

but run on a whole batch on the batch's device. torchvision transforms on a batched tensor draw
ONE parameter set for the whole batch (docs/design.md §3), hence this module:

- crops and flips of all B*J views are one ``grid_sample`` call on an affine grid (bilinear,
  ``align_corners=False``, output size = input size). A crop is continuous (sub-pixel), not
  snapped to integer pixels as torchvision does; for an integer-pixel crop it equals
  ``F.interpolate`` of the sliced region exactly (the crop is never downsampled, so
  torchvision's antialiasing never applies).
- colour jitter follows torchvision's tensor semantics (``adjust_brightness/contrast/
  saturation/hue``, each a blend clamped to [0, 1]) with per-view factors and a per-view random
  order of the four operations, as ``ColorJitter`` draws one. Hue is shifted in HSV exactly as
  ``torchvision.transforms.functional.adjust_hue`` (RGB -> HSV, h += shift mod 1, HSV -> RGB),
  not by a YIQ rotation.

Every random number comes from the ``torch.Generator`` passed in, so a seed reproduces the
output bit for bit on a given device. The parameters really applied come back with the views
(the style probe predicts them from representations).

``AugmentConfig(pipeline="official")`` (the run config's ``augment=official``) is instead the
official code's own order and arithmetic (alicebizeul/simvae, src/data/data_loader.py,
``TransformsSimCLR``)::

    [Resize(256) (CIFAR-10)] -> ColorJitter(0.8, 0.8, 0.8, 0.2) always (colour data)
    -> RandomResizedCrop(size, scale, ratio=(0.75, 1.3)) -> RandomVerticalFlip
    -> [ThresholdTransform(0.5) (MNIST)]

with torchvision's integer-pixel crop boxes and PIL's resampling (bilinear, antialiased when the
crop is downscaled, as from the 256-pixel CIFAR canvas), each view a pair of per-view resampling
matrices applied by one batched matmul (``official_augment``). Jitter is applied to the whole
(resized) image before the crop, so contrast blends towards the mean of the whole image.

Shapes: x (B, C, H, W) floats in [0, 1] -> views (B, J, C, H, W), params {name: (B, J)}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CROP_TRIES = 10  # torchvision's RandomResizedCrop rejection-sampling budget
CPU_CHUNK_BYTES = 3 * 2**20  # views made at once on one CPU thread: fits the caches (chunks())
GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale (ITU-R 601-2 luma)
# ColorJitter operations, in the index order torchvision's ColorJitter uses for fn_idx
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
PIPELINES = ("project", "official")  # the run config's ``augment`` values
COLOUR_JITTER = (0.8, 0.8, 0.8, 0.2)  # SimCLR's ColorJitter strengths (both pipelines)
# The official code's per-dataset steps (TransformsSimCLR): its aspect-ratio range, the canvas
# CIFAR-10 is resized to before jitter and crop, and MNIST's threshold after augmentation.
OFFICIAL_CROP_RATIO = (0.75, 1.3)
OFFICIAL_RESIZE = {"cifar10": 256}
OFFICIAL_THRESHOLD = {"mnist": 0.5}


@dataclass(frozen=True)
class AugmentConfig:
    """Per-view augmentation settings (official SimVAE / SimCLR defaults, docs/design.md §3).

    crop_scale: area fraction range of RandomResizedCrop (0.4-1 MNIST/FashionMNIST, 0.6-1
        CIFAR-10/CelebA); crop_ratio: width/height range in pixels (3/4-4/3).
    flip_p, flip_axis: flip probability; 'vertical' (up-down, what the official code does) or
        'horizontal'.
    jitter: ColorJitter (brightness, contrast, saturation, hue) strengths, None for no jitter
        (grey data); applied with probability jitter_p (SimCLR's RandomApply, 0.8).
    pipeline: 'project' (crop, flip, then jitter; continuous crops) or 'official' (the
        official code's order and integer-pixel arithmetic; see the module docstring).
    resize: official pipeline only: the square canvas (pixels) the image is resized to before
        jitter and crop (256 for CIFAR-10), None for none.
    threshold: official pipeline only: views are binarised at this level after augmentation
        (0.5 for MNIST), None for none.
    """

    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    flip_axis: str = "vertical"
    jitter: tuple[float, float, float, float] | None = None
    jitter_p: float = 0.8
    pipeline: str = "project"
    resize: int | None = None
    threshold: float | None = None

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        if not 0 <= self.flip_p <= 1:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if self.flip_axis not in ("vertical", "horizontal"):
            raise ValueError("flip_axis must be 'vertical' or 'horizontal', "
                             f"got {self.flip_axis!r}")
        if self.jitter is not None:
            if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
                raise ValueError("jitter must be (brightness, contrast, saturation, hue) >= 0 "
                                 f"with hue <= 0.5, got {self.jitter}")
        if not 0 <= self.jitter_p <= 1:
            raise ValueError(f"jitter_p must be in [0, 1], got {self.jitter_p}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, got {self.pipeline!r}")
        if self.pipeline != "official" and (self.resize is not None or self.threshold is not None):
            raise ValueError("resize and threshold belong to the official pipeline")
        if self.resize is not None and self.resize < 1:
            raise ValueError(f"resize must be a size in pixels >= 1, got {self.resize}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    @classmethod
    def for_dataset(cls, info, pipeline: str = "project") -> "AugmentConfig":
        """The settings for a dataset; ``info`` needs ``crop_scale``, ``crop_ratio`` and
        ``colour`` (a trainables.datasets.DatasetInfo; ``name`` too for the official pipeline's
        per-dataset steps). ``pipeline`` is the run config's ``augment``: 'project' (the
        project's documented pipeline) or 'official' (the official code's: jitter always and
        first, aspect ratio 0.75-1.3, CIFAR-10 resized to 256 first, MNIST thresholded last)."""
        if pipeline not in PIPELINES:
            raise ValueError(f"augment must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
        jitter = COLOUR_JITTER if info.colour else None
        if pipeline == "official":
            name = getattr(info, "name", None)
            return cls(crop_scale=tuple(info.crop_scale), crop_ratio=OFFICIAL_CROP_RATIO, jitter=jitter,
                       jitter_p=1.0, pipeline="official", resize=OFFICIAL_RESIZE.get(name),
                       threshold=OFFICIAL_THRESHOLD.get(name))
        return cls(crop_scale=tuple(info.crop_scale), crop_ratio=tuple(info.crop_ratio), jitter=jitter)


# ---------------------------------------------------------------------------------------------
# parameter sampling: u are uniforms in [0, 1) from the caller's generator, one row per view


def sample_crop(u_scale, u_ratio, u_cx, u_cy, cfg: AugmentConfig, height: int, width: int):
    """RandomResizedCrop parameters for N views, vectorised.

    u_scale, u_ratio (CROP_TRIES, N): candidates s ~ U(crop_scale), log r ~ U(log crop_ratio),
    crop w = sqrt(s r H W), h = sqrt(s H W / r) pixels (not rounded to whole pixels). As
    torchvision, the first candidate that fits the image is kept; where none of the tries fits
    (rare: 1e-8 of views with the default bounds on square images) torchvision's fallback
    ratio is used with the largest scale that fits, capped at the upper bound, so scale and
    ratio stay within their bounds unless no crop within the bounds fits the image at all.
    The crop centre is uniform over positions that keep the crop inside the image.

    Returns, each (N,): frac_w, frac_h, the crop's width and height as fractions of the
    image's (= its half-extents in [-1, 1] coordinates); centres cx, cy in [-1, 1]
    (affine_grid coordinates: 0 = image centre, x rightwards, y downwards); and the scale
    (area fraction) and ratio (width / height in pixels) really applied.
    """
    aspect = height / width
    s_lo, s_hi = cfg.crop_scale
    lr_lo, lr_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    s = s_lo + (s_hi - s_lo) * u_scale
    log_r = lr_lo + (lr_hi - lr_lo) * u_ratio
    # crop fits iff w <= W and h <= H  <=>  s W/H <= r <= W/(s H)  (aspect = H/W)
    log_s, log_aspect = torch.log(s), math.log(aspect)
    fits = (log_r >= log_s - log_aspect) & (log_r <= -log_s - log_aspect)
    first = fits.to(torch.uint8).argmax(dim=0, keepdim=True)  # first fitting try
    s = s.gather(0, first)[0]
    r = torch.exp(log_r.gather(0, first)[0])
    # no try fits: torchvision's fallback, the largest crop with the in-bounds ratio nearest
    # the image's own (here uncentred, and its scale capped at the upper bound)
    r_fallback = min(max(1 / aspect, cfg.crop_ratio[0]), cfg.crop_ratio[1])
    s_fallback = min(s_hi, r_fallback * aspect, 1 / (r_fallback * aspect))
    any_fit = fits.any(dim=0)
    s = torch.where(any_fit, s, torch.full_like(s, s_fallback))
    r = torch.where(any_fit, r, torch.full_like(r, r_fallback))
    # fractions of the image; clamp guards the float rounding of exact full-size crops
    frac_w = torch.sqrt(s * r * aspect).clamp(max=1.0)
    frac_h = torch.sqrt(s / (r * aspect)).clamp(max=1.0)
    cx = (2 * u_cx - 1) * (1 - frac_w)
    cy = (2 * u_cy - 1) * (1 - frac_h)
    return frac_w, frac_h, cx, cy, frac_w * frac_h, frac_w / (frac_h * aspect)


def sampling_coords(centre, half, flip, size: int, dtype) -> torch.Tensor:
    """Input coordinates (N, size) in [-1, 1] read by the output pixels of N crops along one
    axis: output pixel centre u_k = (2k + 1)/size - 1 reads centre + (-1)^flip half u_k, as
    affine_grid(align_corners=False) with a diagonal theta does. Samples are kept within the
    crop's edge pixel centres (half a pixel = 1/size inside its box): an upsampled crop's
    border rows would otherwise blend in pixels from outside the crop, which cropping then
    resizing (torchvision, F.interpolate) never does."""
    u = (2 * torch.arange(size, device=centre.device, dtype=dtype) + 1) / size - 1
    centre, half = centre.to(dtype).unsqueeze(1), half.to(dtype).unsqueeze(1)
    coords = centre + (half * (1 - 2 * flip.to(dtype).unsqueeze(1))) * u
    inner = half - 1 / size
    return torch.minimum(torch.maximum(coords, centre - inner), centre + inner)


def crop_and_flip(x: torch.Tensor, J: int, frac_w, frac_h, cx, cy, flip, axis: str,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Resized crops + flips of J views per image in one grid_sample call (bilinear,
    align_corners=False, output size = input size).

    x (B, C, H, W); per-view (B*J,) crop half-extents frac_w/h (fractions of the image),
    centres cx, cy in [-1, 1] and flip in {0., 1.} about `axis`. Returns (B, J, C, H, W),
    written into `out` when given.
    The grid is affine_grid's for the diagonal theta [[+-frac_w, 0, cx], [0, +-frac_h, cy]],
    built from its two separable axes (affine_grid's generic matmul costs several times the
    sampling on CPU). The J grids of one image are stacked along the grid's height, so the
    input is never copied J times.
    """
    B, C, H, W = x.shape
    no_flip = torch.zeros_like(flip)
    flip_x, flip_y = (flip, no_flip) if axis == "horizontal" else (no_flip, flip)
    grid = torch.empty(B * J, H, W, 2, dtype=x.dtype, device=x.device)
    grid[..., 0] = sampling_coords(cx, frac_w, flip_x, W, x.dtype).unsqueeze(1)
    grid[..., 1] = sampling_coords(cy, frac_h, flip_y, H, x.dtype).unsqueeze(2)
    sampled = F.grid_sample(x, grid.view(B, J * H, W, 2), mode="bilinear",
                            padding_mode="border", align_corners=False)  # (B, C, J*H, W)
    sampled = sampled.view(B, C, J, H, W).transpose(1, 2)
    return sampled.contiguous() if out is None else out.copy_(sampled)


# ---------------------------------------------------------------------------------------------
# colour jitter on views y (n, 3, H, W). Written for a memory-bound CPU: in-place arithmetic
# on float tensors only (elementwise kernels on bool masks and torch.where run ~10x slower
# than float arithmetic on CPU), per-view coefficients prepared once per batch.


@dataclass(frozen=True)
class JitterPlan:
    """Per-view ColorJitter coefficients for N views, ready to apply chunk by chunk.

    blend (6, N, 3): for each of the six blend stages (three before the hue step, three after)
    the (factor f, saturation weight (1 - f), contrast weight (1 - f)) of each view; identity
    stages are (1, 0, 0). hue (N,): shift in turns. apply (N,): 1. where jittered, else 0.
    """

    blend: torch.Tensor
    hue: torch.Tensor
    apply: torch.Tensor

    def __getitem__(self, views: slice) -> "JitterPlan":
        return JitterPlan(self.blend[:, views], self.hue[views], self.apply[views])


def jitter_plan(factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor) -> JitterPlan:
    """Plan ColorJitter for N views: factors (N, 4) = (brightness, contrast, saturation, hue
    shift), order (N, 4) a per-view permutation of BRIGHTNESS..HUE (ColorJitter draws one),
    apply (N,) bool. Hue is the costly step, so it runs once for all views: the blends before
    it are three masked stages (stage j active for views whose hue comes later than j), the
    blends after it three more."""
    hue_pos = (order == HUE).to(torch.int64).argmax(dim=1)  # (N,)
    before = [(j, hue_pos > j) for j in range(3)]
    after = [(j, hue_pos < j) for j in range(1, 4)]
    stages = []
    for j, active in before + after:
        op = order[:, j]
        on = (active & (op != HUE) & apply).to(factors.dtype)
        f = 1 + on * (factors.gather(1, op.unsqueeze(1))[:, 0] - 1)
        stages.append(torch.stack([f, (1 - f) * (op == SATURATION), (1 - f) * (op == CONTRAST)],
                                  dim=1))
    return JitterPlan(torch.stack(stages), factors[:, HUE] * apply, apply.to(factors.dtype))


def blend_(y: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """One ColorJitter step for all views, in place: y <- clamp(f y + (1 - f) m, 0, 1), with
    m = 0 (brightness), the view's mean luma (contrast) or its per-pixel luma (saturation), as
    torchvision's _blend. coef (n, 3) = (f, saturation weight, contrast weight) per view;
    luma uses torchvision's rgb_to_grayscale weights."""
    f, w_pixel, w_mean = (c.view(-1, 1, 1, 1) for c in coef.to(y.dtype).unbind(dim=1))
    lum = y[:, 0:1] * GREY_WEIGHTS[0]
    lum.add_(y[:, 1:2], alpha=GREY_WEIGHTS[1]).add_(y[:, 2:3], alpha=GREY_WEIGHTS[2])
    bias = w_mean * lum.mean(dim=(-2, -1), keepdim=True)
    lum.mul_(w_pixel).add_(bias)
    return y.mul_(f).add_(lum).clamp_(0, 1)


def shift_hue(y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_hue for every view: RGB -> HSV, h <- (h + shift[n]) mod 1, -> RGB.

    y (n, 3, H, W), shift (n,) in turns; returns a new tensor. With value v = max, chroma
    c = max - min and hue h6 = 6h in [0, 6), HSV -> RGB has the closed form
    rgb = min + c * clamp((|h6 - 3| - 1, 2 - |h6 - 2|, 2 - |h6 - 4|), 0, 1).
    """
    r, g, b = y[:, 0:1], y[:, 1:2], y[:, 2:3]
    v = y.amax(dim=1, keepdim=True)
    low = y.amin(dim=1, keepdim=True)
    c = v - low
    # sextant as torchvision: red wins ties over green, green over blue; selected with 0/1
    # floats from sign() (v - r >= 0), since bool kernels are slow on CPU
    r_not_max = torch.sign(v - r)
    g_not_max = torch.sign(v - g)
    h_gb = (b - r).add_(c, alpha=2)  # 6h c when green is the max
    h_gb.lerp_((r - g).add_(c, alpha=4), g_not_max)  # ... blue
    h6 = torch.lerp(g - b, h_gb, r_not_max)  # ... red
    h6.div_(c.clamp(min=torch.finfo(y.dtype).tiny))  # c = 0: grey, any hue gives rgb = v
    h6.add_(6 * shift.to(y.dtype).view(-1, 1, 1, 1))
    h6.sub_(torch.floor(h6 * (1 / 6)).mul_(6))  # mod 6 (torch.remainder is slower)
    out = torch.empty_like(y)
    for ch, (centre, offset, sign) in enumerate([(3, 1, 1), (2, 2, -1), (4, 2, -1)]):
        torch.sub(h6, centre, out=out[:, ch:ch + 1]).abs_().sub_(offset).mul_(sign)
    return out.clamp_(0, 1).mul_(c).add_(low)


def apply_jitter_(y: torch.Tensor, plan: JitterPlan) -> torch.Tensor:
    """Planned ColorJitter on views y (n, 3, H, W), in place. Views not jittered stay exact:
    their blends are identities and the hue step is skipped for them by a 0/1 lerp."""
    for j in range(3):
        blend_(y, plan.blend[j])
    y.lerp_(shift_hue(y, plan.hue), plan.apply.to(y.dtype).view(-1, 1, 1, 1))
    for j in range(3, 6):
        blend_(y, plan.blend[j])
    return y


def colour_jitter_(y: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                   apply: torch.Tensor) -> torch.Tensor:
    """ColorJitter with per-view factors (N, 4), order (N, 4) on the views where apply (N,)
    is True, in place on y (N, 3, H, W); see jitter_plan."""
    return apply_jitter_(y, jitter_plan(factors, order, apply))


def sample_jitter(u_factors: torch.Tensor, strengths) -> torch.Tensor:
    """Per-view ColorJitter factors (N, 4) from uniforms (N, 4): brightness, contrast and
    saturation ~ U(max(0, 1 - s), 1 + s), hue shift ~ U(-s_hue, s_hue) (torchvision)."""
    bounds = [(max(0.0, 1 - s), 1 + s) for s in strengths[:3]] + [(-strengths[3], strengths[3])]
    # Python-scalar bounds: no host-to-device copy (a sync on accelerators)
    return torch.stack([lo + (hi - lo) * u_factors[:, i] for i, (lo, hi) in enumerate(bounds)],
                       dim=1)


def sample_order(u_keys: torch.Tensor) -> torch.Tensor:
    """Per-view order of the four ColorJitter operations (N, 4) from uniforms (N, 4): the
    argsort of i.i.d. keys is a uniformly random permutation, as ColorJitter's randperm(4)."""
    return u_keys.argsort(dim=1)


# ---------------------------------------------------------------------------------------------


def augment(x: torch.Tensor, J: int, cfg: AugmentConfig, generator: torch.Generator
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """J augmented views of each image in x, every view with its own random parameters.

    ``cfg.pipeline`` 'official' hands the draws to ``official_augment`` (the official code's
    order and arithmetic); the returns are the same.

    x (B, C, H, W) floats in [0, 1] on the generator's device. Returns views (B, J, C, H, W)
    (same dtype/device as x) and params {name: (B, J) float32}: 'scale' (crop area fraction),
    'ratio' (crop width/height), 'center_x', 'center_y' (crop centre in [-1, 1], 0 = image
    centre, y downwards; in the unflipped image), 'flip' (0./1.), and when cfg.jitter is set
    'jitter' (0./1.), 'brightness', 'contrast', 'saturation' (factors, 1 when not jittered) and
    'hue' (shift in turns, 0 when not jittered).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if J < 1:
        raise ValueError(f"J must be >= 1, got {J}")
    B, C, H, W = x.shape
    if cfg.jitter is not None and C != 3:
        raise ValueError(f"colour jitter needs RGB images (C = 3), got C = {C}")
    N = B * J
    n_jit = 9 if cfg.jitter is not None else 0  # apply?, 4 factors, 4 order keys
    u = torch.rand(2 * CROP_TRIES + 3 + n_jit, N, generator=generator, device=x.device)
    if cfg.pipeline == "official":
        return official_augment(x, J, cfg, u)
    T = CROP_TRIES
    frac_w, frac_h, cx, cy, scale, ratio = sample_crop(
        u[:T], u[T:2 * T], u[2 * T], u[2 * T + 1], cfg, H, W)
    flip = (u[2 * T + 2] < cfg.flip_p).float()
    params = {"scale": scale, "ratio": ratio, "center_x": cx, "center_y": cy, "flip": flip}
    if cfg.jitter is not None:
        plan, jitter_params = sample_jitter_plan(u[2 * T + 3:], cfg)
        params.update(jitter_params)

    # all parameters are drawn above, so the chunking below never changes the result
    views = torch.empty(B, J, C, H, W, dtype=x.dtype, device=x.device)
    for b in chunks(B, J * C * H * W * x.element_size(), x.device):
        v = slice(b.start * J, b.stop * J)
        out = crop_and_flip(x[b], J, frac_w[v], frac_h[v], cx[v], cy[v], flip[v],
                            cfg.flip_axis, out=views[b])
        if cfg.jitter is not None:
            apply_jitter_(out.view(-1, C, H, W), plan[v])
    return views, {k: p.reshape(B, J) for k, p in params.items()}


def sample_jitter_plan(u_j: torch.Tensor, cfg: AugmentConfig) -> tuple[JitterPlan, dict[str, torch.Tensor]]:
    """ColorJitter for N views from uniforms u_j (9, N): applied where u_j[0] < jitter_p,
    factors from u_j[1:5], order from u_j[5:9]. Returns the plan and the parameters reported
    ('jitter' 0./1., the factors: 1 (hue 0) where not applied), each (N,)."""
    jit = u_j[0] < cfg.jitter_p
    factors = sample_jitter(u_j[1:5].T, cfg.jitter)
    factors = torch.cat([torch.where(jit.unsqueeze(1), factors[:, :HUE], 1.0),
                         torch.where(jit.unsqueeze(1), factors[:, HUE:], 0.0)], dim=1)
    plan = jitter_plan(factors, sample_order(u_j[5:9].T), jit)
    return plan, dict(jitter=jit.float(), brightness=factors[:, BRIGHTNESS], contrast=factors[:, CONTRAST],
                      saturation=factors[:, SATURATION], hue=factors[:, HUE])


# ---------------------------------------------------------------------------------------------
# the official pipeline: torchvision's integer crop boxes, PIL's resampling, jitter first


def official_crop_boxes(u_scale, u_ratio, u_top, u_left, scale: tuple[float, float],
                        ratio: tuple[float, float], height: int, width: int):
    """torchvision's ``RandomResizedCrop.get_params`` for N views, vectorised, on an image of
    height x width pixels: integer boxes (top, left, h, w), each (N,) int64.

    u_scale, u_ratio (CROP_TRIES, N) are the candidates' uniforms: area fraction
    s = lo + (hi - lo) u, aspect r = exp(log lo + (log hi - log lo) u), w = round(sqrt(s r A)),
    h = round(sqrt(s A / r)) (round half to even, as Python's round); the first candidate with
    0 < w <= width and 0 < h <= height is kept, and its top-left corner is uniform over the
    integer positions (top = floor(u_top (height - h + 1))). When no candidate fits, torchvision's
    fallback: the centred crop of the whole image, its aspect clamped into the ratio range.
    """
    area = height * width
    dtype = torch.float32 if u_scale.device.type == "mps" else torch.float64  # MPS has no float64
    s = scale[0] + (scale[1] - scale[0]) * u_scale.to(dtype)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + (hi - lo) * u_ratio.to(dtype))
    w = torch.round(torch.sqrt(area * s * r))
    h = torch.round(torch.sqrt(area * s / r))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=0, keepdim=True)
    w, h = w.gather(0, first)[0].long(), h.gather(0, first)[0].long()
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    any_fit = fits.any(dim=0)
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    h = torch.where(any_fit, h, torch.full_like(h, fh))
    top = torch.floor(u_top.to(dtype) * (height - h + 1)).long().clamp(max=height - h)
    left = torch.floor(u_left.to(dtype) * (width - w + 1)).long().clamp(max=width - w)
    top = torch.where(any_fit, top, (height - h) // 2)
    left = torch.where(any_fit, left, (width - w) // 2)
    return top, left, h, w


def resize_matrix(start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int,
                  dtype=torch.float32) -> torch.Tensor:
    """PIL's bilinear resampling of the pixels [start, start + length) of an axis of in_size
    pixels onto out_size pixels, as matrices (N, out_size, in_size), one per view (start,
    length (N,) integers).

    PIL (``ImagingResample``, what torchvision's resized_crop and Resize do on PIL images, and
    on tensors with antialias=True): with s = length / out_size and support f = max(s, 1),
    output pixel k reads input pixel i of the crop with weight tri((i + 0.5 - (k + 0.5) s) / f),
    tri(t) = max(0, 1 - |t|), normalised over the crop's pixels -- plain bilinear when
    upscaling (f = 1), an antialiasing triangle filter when downscaling."""
    start = start.to(dtype).view(-1, 1, 1)
    length = length.to(dtype).view(-1, 1, 1)
    s = length / out_size
    support = s.clamp(min=1.0)
    k = torch.arange(out_size, device=start.device, dtype=dtype).view(1, -1, 1)
    i = torch.arange(in_size, device=start.device, dtype=dtype).view(1, 1, -1) - start  # crop pixel index
    weight = (1 - ((i + 0.5 - (k + 0.5) * s) / support).abs()).clamp(min=0)
    weight = weight * ((i >= 0) & (i < length)).to(dtype)
    return weight / weight.sum(dim=2, keepdim=True)


def official_augment(x: torch.Tensor, J: int, cfg: AugmentConfig, u: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official pipeline (module docstring) on x (B, C, H, W) from the uniforms u
    (2 CROP_TRIES + 3 [+ 9 with jitter], B*J) that ``augment`` draws; same returns as
    ``augment``. Crop parameters are reported for the box on the (resized) canvas, converted to
    ``augment``'s conventions (area fraction, width/height in pixels, centre in [-1, 1])."""
    B, C, H, W = x.shape
    T = CROP_TRIES
    Hc, Wc = (cfg.resize, cfg.resize) if cfg.resize else (H, W)
    top, left, h, w = official_crop_boxes(u[:T], u[T:2 * T], u[2 * T + 1], u[2 * T], cfg.crop_scale,
                                          cfg.crop_ratio, Hc, Wc)
    flip = (u[2 * T + 2] < cfg.flip_p).float()
    hf, wf = h.float(), w.float()
    params = {"scale": hf * wf / (Hc * Wc), "ratio": (wf / Wc * W) / (hf / Hc * H),
              "center_x": (2 * left + wf) / Wc - 1, "center_y": (2 * top + hf) / Hc - 1, "flip": flip}
    # crop + resize (+ flip) as per-view matrices: view = Ry @ canvas @ Rx^T
    ry = resize_matrix(top, h, H, Hc, x.dtype)  # (N, H, Hc)
    rx = resize_matrix(left, w, W, Wc, x.dtype)  # (N, W, Wc)
    vertical = cfg.flip_axis == "vertical"
    flipped = (flip > 0).view(-1, 1, 1)
    if vertical:
        ry = torch.where(flipped, ry.flip(1), ry)
    else:
        rx = torch.where(flipped, rx.flip(1), rx)
    if cfg.resize:  # the canvas: the image resized to Hc x Wc (PIL bilinear)
        zero = torch.zeros(1, dtype=torch.long, device=x.device)
        uy = resize_matrix(zero, zero + H, Hc, H, x.dtype)[0]  # (Hc, H)
        ux = resize_matrix(zero, zero + W, Wc, W, x.dtype)[0]  # (Wc, W)
    plan = None
    if cfg.jitter is not None:
        plan, jitter_params = sample_jitter_plan(u[2 * T + 3:], cfg)
        params.update(jitter_params)

    views = torch.empty(B, J, C, H, W, dtype=x.dtype, device=x.device)
    per_image = J * C * Hc * Wc * x.element_size() if plan is not None else J * C * H * W * x.element_size()
    for b in chunks(B, per_image, x.device):
        v = slice(b.start * J, b.stop * J)
        nb = b.stop - b.start
        ry_b, rx_b = ry[v].view(nb, J, 1, H, Hc), rx[v].view(nb, J, 1, W, Wc)
        if plan is None:  # no jitter: fold the canvas resize into the matrices, read x directly
            if cfg.resize:
                ry_b, rx_b = ry_b @ uy, rx_b @ ux
            src = x[b].unsqueeze(1)  # (nb, 1, C, H, W)
        else:  # jitter on each view's own copy of the whole canvas, before the crop
            canvas = uy @ x[b] @ ux.T if cfg.resize else x[b]
            src = canvas.unsqueeze(1).expand(nb, J, C, Hc, Wc).reshape(nb * J, C, Hc, Wc).clone()
            apply_jitter_(src, plan[v])
            src = src.view(nb, J, C, Hc, Wc)
        torch.matmul(ry_b @ src, rx_b.transpose(-1, -2), out=views[b])
    views.clamp_(0, 1)  # convex weights: only float rounding leaves [0, 1]
    if cfg.threshold is not None:
        # PIL hands ToTensor 8-bit views: binarise the value rounded to a multiple of 1/255
        views = ((views * 255).round_() > cfg.threshold * 255).to(x.dtype)
    return views, {k: p.reshape(B, J).float() for k, p in params.items()}


def chunks(n_images: int, bytes_per_image: int, device: torch.device) -> list[slice]:
    """Image ranges processed together. Single-threaded on CPU (Ray trials with one CPU) every
    step is memory-bound, so views are made CPU_CHUNK_BYTES at a time, which keeps the
    intermediates in cache (2x faster on 2560 colour views). With several intra-op threads
    each small op of a chunk pays a thread-pool barrier, which on a busy machine costs far
    more than the cache gain (2 threads on 2 shared cores: 1.2 s chunked vs 0.11 s whole);
    accelerators and multi-threaded CPUs take the whole batch in one go."""
    if device.type != "cpu" or torch.get_num_threads() > 1:
        return [slice(0, n_images)]
    step = max(1, CPU_CHUNK_BYTES // bytes_per_image)
    return [slice(i, min(i + step, n_images)) for i in range(0, n_images, step)]
