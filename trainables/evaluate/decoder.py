"""A decoder for a method without one of its own (SimCLR, VICReg, MoCo, the random encoder, the
raw pixels), trained on its frozen representations of clean training images with the dataset's
reconstruction loss, as the paper does for its discriminative baselines: so that ``recon_error``
and the reconstruction grid exist for every method. Part of the evaluation, and counted in its
time (``eval_time_s``).

It trains only as long as the reconstruction error needs: an epoch that lowers the held-out
(validation) error by less than ``DECODER_TOL`` of it ends the training, ``decoder_epochs`` caps it.
Measured on SimCLR's MNIST representations (10,000 images): test NLL/image 202, 187, 180, 170, 164
after 1, 3, 5, 10, 20 epochs at the former 1e-3 (20 epochs were the default), 172 after 5 epochs at
3e-3: the last few percent of a number no table reports (table.py ranks by accuracy; the
reconstruction error and grid are per-run figures) cost three quarters of the decoder's time.

A run that trains in bfloat16 trains its decoder so too (the layers under the run's autocast, the
loss, the validation NLL and the parameters float32): a laptop SimCLR run's whole evaluation went
from 21.9 to 17.8 s (6 runs each, benchmarks/bf16_parity.py; docs/results.md)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from trainables.evaluate.features import encode

DECODER_LR = 3e-3  # Adam
DECODER_TOL = 0.02  # stop once an epoch improves the validation NLL by less than 2% of it
DECODER_BATCH = 128  # images per step
DECODER_SEED_OFFSET = 17  # its shuffling draws from seed + 17: apart from the run's other streams


def train_frozen_decoder(method: Any, splits: Any, cfg: dict[str, Any], device: torch.device,
                         log: Callable[[str], None] = print, autocast=None) -> float:
    """Train a decoder on ``method``'s frozen representations of the clean training images until
    the validation NLL stops improving (or for ``cfg["decoder_epochs"]`` epochs at most), attach it
    as ``method.decoder`` and return its validation NLL per image. ``autocast``: the context its
    forward passes train in (the run's bfloat16 autocast; None: float32)."""
    from models.likelihoods import reconstruction_nll
    from models.networks import build_decoder

    method.eval()
    decoder = build_decoder(method.net).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=DECODER_LR, fused=device.type in ("cpu", "cuda") or None)
    likelihood = method.net.likelihood
    x, x_val = splits.train.x, splits.val.x
    feats, feats_val = encode(method.represent, x), encode(method.represent, x_val)
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] + DECODER_SEED_OFFSET)

    def val_nll() -> float:
        decoder.eval()
        with torch.no_grad():
            total = sum(reconstruction_nll(decoder(feats_val[i:i + DECODER_BATCH]), x_val[i:i + DECODER_BATCH],
                                           likelihood, 1.0).sum() for i in range(0, len(x_val), DECODER_BATCH))
        decoder.train()
        return float(total) / len(x_val)

    nll, epochs = float("inf"), 0
    while epochs < cfg["decoder_epochs"]:
        perm = torch.randperm(len(x), generator=gen, device=device)
        for i in range(0, len(x), DECODER_BATCH):
            idx = perm[i:i + DECODER_BATCH]
            with autocast or contextlib.nullcontext():
                out = decoder(feats[idx])
            loss = reconstruction_nll(out.float(), x[idx], likelihood, 1.0).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epochs += 1
        previous, nll = nll, val_nll()
        if previous - nll < DECODER_TOL * nll:
            break
    decoder.eval()
    method.decoder = decoder
    log(f"decoder on frozen representations: {epochs} of at most {cfg['decoder_epochs']} epochs, "
        f"validation NLL/image {nll:.2f}")
    return nll
