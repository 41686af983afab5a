"""A decoder for a method without one of its own (SimCLR, VICReg, MoCo, the random encoder, the
raw pixels), trained on its frozen representations of clean training images with the dataset's
reconstruction loss, as the paper does for its discriminative baselines: so that ``recon_error``
and the reconstruction grid exist for every method. Part of the evaluation, and counted in its
time (``eval_time_s``)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from trainables.evaluate.features import encode

DECODER_LR = 1e-3  # Adam
DECODER_BATCH = 128  # images per step
DECODER_SEED_OFFSET = 17  # its shuffling draws from seed + 17: apart from the run's other streams


def train_frozen_decoder(method: Any, splits: Any, cfg: dict[str, Any], device: torch.device,
                         log: Callable[[str], None] = print) -> float:
    """Train a decoder on ``method``'s frozen representations of the clean training images for
    ``cfg["decoder_epochs"]`` epochs, attach it as ``method.decoder`` and return its final mean
    training loss per image."""
    from models.likelihoods import reconstruction_nll
    from models.networks import build_decoder

    method.eval()
    decoder = build_decoder(method.net).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=DECODER_LR)
    x = splits.train.x
    feats = encode(method.represent, x)
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] + DECODER_SEED_OFFSET)
    last = float("nan")
    for _ in range(cfg["decoder_epochs"]):
        perm = torch.randperm(len(x), generator=gen, device=device)
        total = torch.zeros((), device=device)
        for i in range(0, len(x), DECODER_BATCH):
            idx = perm[i:i + DECODER_BATCH]
            out = decoder(feats[idx])
            loss = reconstruction_nll(out, x[idx], method.net.likelihood, 1.0).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        last = float(total) / len(x)
    decoder.eval()
    method.decoder = decoder
    log(f"decoder on frozen representations: {cfg['decoder_epochs']} epochs, final NLL/image {last:.2f}")
    return last
