"""Which precision a run trains in: bfloat16 autocast for the networks, or float32 throughout.

``bf16`` (a common config key) is ``auto`` (the default), ``true`` or ``false``. ``auto`` turns
bfloat16 on only where both hold:
- the device computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
  AMX (x86) or the BF16 extension (Arm) -- detected from the CPU's flags, never assumed (a CPU
  without them emulates bfloat16 and runs slower than float32);
- the method is in ``BF16_PARITY`` for that kind of device: its accuracy in bfloat16 was measured
  equal to float32's there (``benchmarks/bf16_parity.py``; the table is in docs/results.md).
``true`` forces bfloat16 (a user's experiment), ``false`` float32.

Under bfloat16 only the networks' layers run in bfloat16; the objectives (losses, the prior,
log-variances, similarities) stay float32 (``models.base.full_precision``, the Gaussian head).
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

MODES = ("auto", "true", "false")

# Per kind of device, the methods whose bfloat16 training matched float32's accuracy on the laptop
# profile (MNIST and FashionMNIST, 3 seeds, Welch p > 0.05 and |difference| <= 1 point in Acc-MP and
# Acc-KNN; benchmarks/bf16_parity.py, the table in docs/results.md). A method joins with its table.
# Measured on a CPU with AVX512-BF16 (2026-12-04): SimVAE, SimCLR, VICReg and CR-VAE hold (|diff| <=
# 0.6 points, p >= 0.15); the VAE does not (MNIST Acc-MP 87.3 -> 85.8, p = 0.013), nor MoCo (MNIST
# Acc-MP 42.9 -> 45.4: p = 0.5, but over the 1-point bound; it hardly learns MNIST at this budget).
# CUDA has none: its parity was not measured, and on an H200 the MLP nets' steps are bound by kernel
# launches, where bfloat16 is slower than TF32 (0.89-0.96x for SimVAE; docs/results.md).
BF16_PARITY: dict[str, frozenset[str]] = {
    "cpu": frozenset({"simvae", "simclr", "vicreg", "crvae"}),
    "cuda": frozenset(),
}

# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FEATURES = ("bf16",)


def bf16_mode(value) -> str:
    """A config value as one of ``MODES`` (booleans and yes/no words too); ValueError otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return "true"
    if word in ("0", "false", "no", "off"):
        return "false"
    if word == "auto":
        return "auto"
    raise ValueError(value)


bf16_mode.__name__ = "auto/true/false"  # what a config error calls the expected kind


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from /proc/cpuinfo; empty where
    there is no such file."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


@functools.lru_cache(maxsize=None)
def native_bf16_cpu() -> bool:
    flags = cpu_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return any(f in flags for f in ARM_BF16_FEATURES)
    return any(f in flags for f in X86_BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Does ``device`` compute bfloat16 natively?"""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return native_bf16_cpu()
    return False


def use_bf16(mode: str, device: torch.device, method: str) -> bool:
    """The precision a run trains in: True for bfloat16 autocast (see the module's rule)."""
    if mode == "true":
        return True
    if mode == "false":
        return False
    return method in BF16_PARITY.get(device.type, frozenset()) and native_bf16(device)


def autocast(device: torch.device, bf16: bool):
    """The context a training step's forward runs in (None: float32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else None
