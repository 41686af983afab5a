"""Training speed per method against the machine's own matmul peak, float32 and bfloat16 side by
side in one run.

    python benchmarks/train_step.py [--dataset digits] [--methods simvae,vae,simclr] [--net mlp|resnet]

For each method and precision it times the step training runs (``trainables.driver.train_step``:
augmentation, forward, backward, the optimiser update) at the laptop profile's budget (128 images
per step, J views each: SimVAE J=10 is 1,280 views), counts the step's floating-point work from
its layers' shapes (a forward hook on every Linear and Conv2d: 2 x output elements x inputs per
output; x3 with the backward pass where the layer learns) and reports achieved GFLOPS against
the peak a large matmul reaches in the same run, in the same precision and threads (float32 as
TF32 on a GPU, as training runs it; the peak is measured before and after the steps, the higher
counts). It also times, alone on the same batches, the augmentation and the optimiser update,
to say what keeps a step below the peak. ``--net resnet`` uses the colour datasets' ResNet-18 on synthetic 32x32
images (speed does not depend on the pixels).

Prints a table and, last, one JSON object of the figures (``step_ms_<method>_<precision>``,
``gflops_<method>_<precision>``, ``peak_share_<method>_<precision>``, ``bf16_speedup_<method>``,
``train_views_per_s_<method>_<precision>``, ``augment_share_<method>_<precision>``,
``optimizer_share_<method>_<precision>``, ``peak_gflops_<precision>``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn

from models import METHODS
from trainables.augment import AugmentConfig, augment
from trainables.config import resolve_config
from trainables.datasets import DATASETS
from trainables.driver import build_method, optimiser, prepare_device, train_step
from trainables.precision import autocast, native_bf16

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str, n: int = 2048, seconds: float = 1.5) -> float:
    """GFLOPS of an n x n x n matmul in ``precision`` (the best of a few timed batches)."""
    a = torch.randn(n, n, device=device, dtype=DTYPES[precision])
    b = torch.randn(n, n, device=device, dtype=DTYPES[precision])
    for _ in range(2):
        a @ b
    _sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        _sync(device)
        best = max(best, 3 * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


class FlopCounter:
    """Floating-point operations of the Linear and Conv2d layers during a step (forward hooks)."""

    def __init__(self, module: nn.Module):
        self.flops = 0
        self.handles = [m.register_forward_hook(self._hook) for m in module.modules()
                        if isinstance(m, (nn.Linear, nn.Conv2d))]

    def _hook(self, module, inputs, output):
        if isinstance(module, nn.Linear):
            per_output = module.in_features
        else:
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        forward = 2 * output.numel() * per_output
        learns = torch.is_grad_enabled() and module.weight.requires_grad
        self.flops += forward * (3 if learns else 1)  # backward: the input's and the weight's gradients

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def setup(method: str, args, device: torch.device):
    """The method, its optimiser and a few batches, built as a run builds them."""
    info = DATASETS[args.dataset]
    cfg = {"method": method, "dataset": args.dataset, "device": str(device), "images_per_step": args.images_per_step,
           "bf16": False}
    if method == "simvae":
        cfg["J"] = args.J
    cfg = resolve_config(cfg)
    torch.manual_seed(0)
    m = build_method(cfg, info, device)
    opt = optimiser(m, cfg)
    if opt is None:
        return None
    J = m.n_views()
    c, h, w = info.image_shape
    g = torch.Generator(device=device).manual_seed(0)
    batches = [torch.rand(args.images_per_step, c, h, w, device=device, generator=g) for _ in range(args.steps)]
    return m, opt, J, AugmentConfig.for_dataset(info, cfg["augment"]), g, batches


def bench(method: str, precision: str, args, device: torch.device) -> dict | None:
    built = setup(method, args, device)
    if built is None:
        return None
    m, opt, J, aug_cfg, g, batches = built
    ac = (lambda: autocast(device, precision == "bf16"))  # noqa: E731
    m.train()
    for clean in batches[: args.warmup]:
        train_step(m, opt, clean, J, aug_cfg, g, ac())
    counter = FlopCounter(m)
    train_step(m, opt, batches[0], J, aug_cfg, g, ac())
    counter.close()
    flops = counter.flops
    _sync(device)
    t0 = time.perf_counter()
    for clean in batches:
        train_step(m, opt, clean, J, aug_cfg, g, ac())
    _sync(device)
    t_step = (time.perf_counter() - t0) / len(batches)
    t0 = time.perf_counter()
    for clean in batches:
        augment(clean, J, aug_cfg, g)
    _sync(device)
    t_aug = (time.perf_counter() - t0) / len(batches)
    t0 = time.perf_counter()
    for _ in batches:  # the update alone, on the gradients the last step left
        opt.step()
    _sync(device)
    t_opt = (time.perf_counter() - t0) / len(batches)
    views = args.images_per_step * J
    return {"J": J, "views": views, "step_ms": 1000 * t_step, "views_per_s": views / t_step,
            "gflop_per_step": flops / 1e9, "gflops": flops / t_step / 1e9,
            "augment_share": t_aug / t_step, "optimizer_share": t_opt / t_step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="digits (MLP, default) or cifar10 (ResNet); no files are read")
    p.add_argument("--net", choices=("mlp", "resnet"), default="mlp", help="the network family (picks the dataset)")
    p.add_argument("--methods", default="simvae,vae,simclr")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--images-per-step", type=int, default=128, help="images per step (the laptop profile's 128)")
    p.add_argument("--J", type=int, default=10, help="SimVAE's views per image")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all cores)")
    args = p.parse_args()
    args.dataset = args.dataset or ("digits" if args.net == "mlp" else "cifar10")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as training does (trainables.driver.flush_denormals)
    device = torch.device(args.device)
    prepare_device(device)  # as a run does: float32 as TF32 on a GPU, for the steps and the peak alike
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]

    figures: dict = {"dataset": args.dataset, "device": str(device), "threads": args.threads,
                     "native_bf16": native_bf16(device), "images_per_step": args.images_per_step}
    print(f"{args.dataset} on {device}, {args.threads} threads, native bfloat16: {figures['native_bf16']}")
    tf32 = " (TF32)" if device.type == "cuda" else ""
    for precision in precisions:
        peak = matmul_peak(device, precision)
        figures[f"peak_gflops_{precision}"] = round(peak, 1)
        print(f"matmul peak {precision}{tf32 if precision == 'fp32' else ''}: {peak:.0f} GFLOPS")
    print(f"{'method':<8} {'prec':<5} {'J':>3} {'views':>6} {'step ms':>9} {'views/s':>9} {'GFLOP':>7} "
          f"{'GFLOPS':>7} {'of peak':>8} {'augment':>8} {'optim':>6}")
    for method in [s.strip() for s in args.methods.split(",") if s.strip()]:
        if not METHODS[method].trainable:
            continue
        for precision in precisions:
            r = bench(method, precision, args, device)
            if r is None:
                continue
            share = r["gflops"] / figures[f"peak_gflops_{precision}"]
            print(f"{method:<8} {precision:<5} {r['J']:>3} {r['views']:>6} {r['step_ms']:>9.1f} {r['views_per_s']:>9.0f} "
                  f"{r['gflop_per_step']:>7.1f} {r['gflops']:>7.0f} {100 * share:>7.1f}% "
                  f"{100 * r['augment_share']:>7.1f}% {100 * r['optimizer_share']:>5.1f}%")
            key = f"{method}_{precision}"
            figures[f"step_ms_{key}"] = round(r["step_ms"], 2)
            figures[f"train_views_per_s_{key}"] = round(r["views_per_s"], 1)
            figures[f"gflops_{key}"] = round(r["gflops"], 1)
            figures[f"peak_share_{key}"] = round(share, 3)
            figures[f"augment_share_{key}"] = round(r["augment_share"], 3)
            figures[f"optimizer_share_{key}"] = round(r["optimizer_share"], 3)
        if f"step_ms_{method}_fp32" in figures and f"step_ms_{method}_bf16" in figures:
            figures[f"bf16_speedup_{method}"] = round(figures[f"step_ms_{method}_fp32"] / figures[f"step_ms_{method}_bf16"], 2)
    # The peak once more, after the steps: a CPU that had not yet reached its clock (or a GPU
    # its boost) at the start would otherwise put a step above its "peak". The higher one counts.
    for precision in precisions:
        again = matmul_peak(device, precision)
        figures[f"peak_gflops_{precision}_after"] = round(again, 1)
        if again > figures[f"peak_gflops_{precision}"]:
            print(f"matmul peak {precision} after the steps: {again:.0f} GFLOPS (higher: the shares use it)")
            figures[f"peak_gflops_{precision}"] = round(again, 1)
            for key in [k for k in figures if k.startswith("gflops_") and k.endswith(f"_{precision}")]:
                figures["peak_share_" + key[len("gflops_"):]] = round(figures[key] / again, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
