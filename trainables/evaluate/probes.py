"""Probes on frozen features: a bank of T independent MLPs (or linear maps) trained together.

``fit_probes`` trains with Adam (lr PROBE_LR = 3e-4, the official probe's) on minibatches of
PROBE_BATCH for ``epochs`` epochs (the run config's ``probe_epochs``; the official code used
200, and halving it costs ~1-2 points on MNIST-size data) but never fewer than ``min_steps``
optimiser steps (``probe_min_steps``): at lr 3e-4 a probe needs thousands of steps however
small its data. Several probes (the style targets) train together as one bank of independent
networks, one optimiser step for all. Validation and test are scored after every epoch; the
reported test score is the one at the earliest epoch with the best validation score.

The hidden width is d, the official probe's, capped at PROBE_MAX_HIDDEN = 64: the widest
learned representation here (CIFAR-10 / CelebA, d = 64) keeps the official probe, while the
pixels baseline (d = 784 or more) gets Linear(d, 64)-ReLU-Linear(64, C). Uncapped, its probes
cost ~10x more (MNIST, 10,000 images: 112 s against 11 s per MLP probe on one core; a digits
run's evaluation 7 minutes) for half a point of accuracy (0.946 against 0.941).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.evaluate.features import CHUNK_ELEMENTS

PROBE_BATCH = 256  # probe minibatch
PROBE_LR = 3e-4  # official probe learning rate
PROBE_MAX_HIDDEN = 64  # hidden width min(d, 64): the official d for every learned representation


@dataclass
class ProbeResult:
    """Per-epoch scores of T probes. Scores are accuracy (classification) or R^2 (regression).

    val, test:   (epochs, T) score after each epoch
    best_epoch:  (T,) epoch index with the best validation score (earliest on ties)
    test_at_best: (T,) test score at best_epoch -- what is reported
    """

    val: Tensor
    test: Tensor
    best_epoch: Tensor
    test_at_best: Tensor


def _uniform(shape: tuple[int, ...], bound: float, g: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * bound


def adam_update_(
    p: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: int, lr: float,
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
) -> None:
    """One step of torch.optim.Adam (no weight decay, no amsgrad) on p in place; m and v are
    its moment buffers and ``step`` counts from 1. Written out because the probes are tiny:
    torch.optim's per-step Python overhead (~130 us) cost more than the probe's arithmetic."""
    b1, b2 = betas
    m.lerp_(grad, 1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (v.sqrt() / math.sqrt(1 - b2**step)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - b1**step))


class ProbeBank:
    """T independent probes, each Linear(d, h)-ReLU-Linear(h, O) (``hidden=None``: one
    Linear(d, O)), with nn.Linear's default init U(+-1/sqrt(fan_in)) drawn from ``g``.

    All weights live in ONE flat leaf tensor, so a training step is a handful of kernels: the
    probes share their input, so every first layer together is one (d, T*h) matmul, and the
    second layers are one batched matmul over the T probes."""

    def __init__(self, T: int, d: int, hidden: int | None, out: int, g: torch.Generator, device: torch.device):
        self.T, self.out, self.linear = T, out, hidden is None
        if hidden is None:
            parts = [
                _uniform((T, d, out), d**-0.5, g).permute(1, 0, 2).reshape(d, T * out),
                _uniform((T, out), d**-0.5, g).reshape(T * out),
            ]
        else:
            parts = [
                _uniform((T, d, hidden), d**-0.5, g).permute(1, 0, 2).reshape(d, T * hidden),
                _uniform((T, hidden), d**-0.5, g).reshape(T * hidden),
                _uniform((T, hidden, out), hidden**-0.5, g),
                _uniform((T, out), hidden**-0.5, g),
            ]
        self.shapes = [q.shape for q in parts]
        self.flat = torch.cat([q.flatten() for q in parts]).to(device).requires_grad_()
        self.m, self.v, self.step = torch.zeros_like(self.flat), torch.zeros_like(self.flat), 0

    def __call__(self, x: Tensor) -> Tensor:
        """x (B, d) -> outputs (B, T, O) of every probe."""
        return self._forward(x)[0]

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor | None]:
        """(outputs (B, T, O), the parameter views, the hidden activations (B, T, h) or None)."""
        sizes = [math.prod(s) for s in self.shapes]
        params = [q.view(s) for q, s in zip(self.flat.split(sizes), self.shapes)]
        if self.linear:
            w, b = params
            return torch.addmm(b, x, w).view(len(x), self.T, self.out), params, None
        w1, b1, w2, b2 = params
        hid = torch.relu(torch.addmm(b1, x, w1)).view(len(x), self.T, -1)  # (B, T, h)
        return torch.einsum("bth,tho->bto", hid, w2) + b2, params, hid

    @torch.no_grad()
    def adam_step(self, lr: float) -> None:
        """Apply Adam to the gradient accumulated in ``flat`` and clear it."""
        self.step += 1
        adam_update_(self.flat, self.flat.grad, self.m, self.v, self.step, lr)
        self.flat.grad = None

    @torch.no_grad()
    def train_step(self, x: Tensor, labels: Tensor, values: Tensor, mask: Tensor | None, lr: float) -> None:
        """One Adam step on ``_bank_loss`` with its gradient written out (no autograd graph).
        A probe step is a few tiny matmuls, so autograd's bookkeeping was most of its cost;
        ``test_manual_probe_gradient_is_autograds`` checks this against autograd."""
        B, Tc = labels.shape
        out, params, hid = self._forward(x)
        # d loss / d out: softmax - one-hot for the classifiers, 2 (prediction - value) for the
        # regressors' first output, each over the batch size (a batch mean per probe).
        dout = torch.zeros_like(out)
        if Tc:
            logits = out[:, :Tc] if mask is None else out[:, :Tc] + mask
            dout[:, :Tc] = torch.softmax(logits, -1)
            dout[:, :Tc].scatter_add_(-1, labels[..., None], torch.full_like(labels[..., None], -1, dtype=out.dtype))
        if values.shape[1]:
            dout[:, Tc:, 0] = 2 * (out[:, Tc:, 0] - values)
        dout /= B
        if self.linear:
            grads = [x.T @ dout.view(B, -1), dout.sum(0).view(-1)]
        else:
            dhid = torch.einsum("bto,tho->bth", dout, params[2]).mul_(hid > 0)
            grads = [x.T @ dhid.reshape(B, -1), dhid.sum(0).reshape(-1), torch.einsum("bth,bto->tho", hid, dout),
                     dout.sum(0)]
        self.step += 1
        adam_update_(self.flat, torch.cat([g.reshape(-1) for g in grads]), self.m, self.v, self.step, lr)


def _bank_loss(out: Tensor, labels: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """Sum over probes of each probe's batch-mean loss. The first Tc probes classify
    (cross-entropy against labels (B, Tc)), the other Tr regress their first output onto
    values (B, Tr) (MSE). out (B, T, O); mask (Tc, O) is -inf on logits beyond a probe's
    classes (None when every classifier uses all O outputs)."""
    B, Tc = labels.shape
    loss = None
    if Tc:
        logits = out[:, :Tc] if mask is None else out[:, :Tc] + mask
        loss = F.cross_entropy(logits.reshape(B * Tc, -1), labels.reshape(-1), reduction="sum") / B
    if values.shape[1]:
        mse = ((out[:, Tc:, 0] - values) ** 2).sum() / B
        loss = mse if loss is None else loss + mse
    return loss


@torch.no_grad()
def _bank_scores(bank: ProbeBank, f: Tensor, labels: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """Scores (T,) of every probe on features f (n, d): accuracy for the Tc classifiers,
    R^2 = 1 - SSE/SST for the regressors (scikit-learn's r2_score: SST about this split's own
    mean). Evaluated in row chunks so (chunk, T, O) outputs stay small."""
    Tc = labels.shape[1]
    chunk = max(1, CHUNK_ELEMENTS // (bank.T * bank.out))
    correct = f.new_zeros(Tc)
    sse = f.new_zeros(values.shape[1])
    for s in range(0, len(f), chunk):
        out = bank(f[s : s + chunk])
        logits = out[:, :Tc] if mask is None else out[:, :Tc] + mask
        correct += (logits.argmax(-1) == labels[s : s + chunk]).sum(0)
        sse += ((out[:, Tc:, 0] - values[s : s + chunk]) ** 2).sum(0)
    sst = ((values - values.mean(0)) ** 2).sum(0)
    return torch.cat([correct / len(f), 1 - sse / sst.clamp_min(torch.finfo(sst.dtype).tiny)])


@contextmanager
def _single_cpu_thread(device: torch.device):
    """Run tiny-op loops on one intra-op thread on CPU: their ops are far too small to gain
    from threads, and on a loaded machine the thread handshakes made each step 2-18x slower
    (measured). The previous thread count is restored."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_probes(
    train_f: Tensor,
    train_t: Tensor,
    val_f: Tensor,
    val_t: Tensor,
    test_f: Tensor,
    test_t: Tensor,
    classes: Sequence[int],
    *,
    epochs: int,
    min_steps: int,
    seed: int,
    hidden: int | None = None,
    linear: bool = False,
    lr: float = PROBE_LR,
    batch_size: int = PROBE_BATCH,
) -> ProbeResult:
    """Train T independent probes at once on features (n, d) -> targets (n, T).

    ``classes[t]`` is the number of classes of target t (labels 0..C-1, any dtype), or 0 for a
    continuous target (regressed with MSE on its train-standardised value; R^2 is invariant to
    that rescaling). Each probe is Linear(d, hidden)-ReLU-Linear(hidden, out) (hidden defaults
    to min(d, PROBE_MAX_HIDDEN); ``linear=True``: one Linear), trained with Adam (``lr``) on shuffled minibatches of
    ``batch_size`` for ``epochs`` epochs, or more when that is fewer than ``min_steps``
    optimiser steps (small datasets). Adam is elementwise and the loss is a sum of per-probe losses, so every probe
    trains exactly as it would alone. Validation and test are scored after each epoch; the
    reported test score is the one at the best validation epoch (earliest on ties).
    Deterministic for ``seed`` (initialisation and shuffling use their own generator)."""
    device = train_f.device
    n, d = train_f.shape
    classes = [int(c) for c in classes]
    T, out_dim = len(classes), max([1, *classes])
    # Classifiers first, regressors after, so the loss slices instead of gathering.
    order = sorted(range(T), key=lambda i: classes[i] == 0)
    Tc = sum(c > 0 for c in classes)
    counts = torch.tensor([classes[i] for i in order[:Tc]], device=device)
    mask = None
    if Tc and bool((counts < out_dim).any()):
        mask = torch.zeros(Tc, out_dim, device=device)
        mask.masked_fill_(torch.arange(out_dim, device=device) >= counts[:, None], float("-inf"))

    def split(t: Tensor) -> tuple[Tensor, Tensor]:  # (n, T) -> labels (n, Tc), values (n, Tr)
        t = t.reshape(len(t), T)[:, order]
        return t[:, :Tc].long(), t[:, Tc:].float()

    (tr_lab, tr_val), (va_lab, va_val), (te_lab, te_val) = split(train_t), split(val_t), split(test_t)
    if tr_val.shape[1]:  # regression targets in train-standardised units: a sane scale for lr
        mu, sd = tr_val.mean(0), tr_val.std(0, correction=0).clamp_min(1e-12)
        tr_val, va_val, te_val = ((v - mu) / sd for v in (tr_val, va_val, te_val))

    g = torch.Generator().manual_seed(seed)
    bank = ProbeBank(T, d, None if linear else (hidden or min(d, PROBE_MAX_HIDDEN)), out_dim, g, device)
    train_f = train_f.detach().float()
    epochs = max(epochs, math.ceil(min_steps / math.ceil(n / batch_size)))
    val_scores, test_scores = [], []
    with _single_cpu_thread(device):
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g).to(device)
            f_ep, lab_ep, val_ep = train_f[perm], tr_lab[perm], tr_val[perm]  # gather once, then slice
            for s in range(0, n, batch_size):
                e = s + batch_size
                bank.train_step(f_ep[s:e], lab_ep[s:e], val_ep[s:e], mask, lr)
            val_scores.append(_bank_scores(bank, val_f, va_lab, va_val, mask))
            test_scores.append(_bank_scores(bank, test_f, te_lab, te_val, mask))
    back = torch.argsort(torch.tensor(order, device=device))  # internal column order -> caller's
    val, test = torch.stack(val_scores)[:, back], torch.stack(test_scores)[:, back]  # (epochs, T)
    best = val.argmax(0)  # first maximum: the earliest epoch
    return ProbeResult(val, test, best, test.gather(0, best[None]).squeeze(0))


def mlp_probe(train_f: Tensor, train_y: Tensor, val_f: Tensor, val_y: Tensor, test_f: Tensor, test_y: Tensor,
              num_classes: int, **probe: Any) -> float:
    """The official MLP probe Linear(d, d)-ReLU-Linear(d, C), its width capped at
    PROBE_MAX_HIDDEN (the module docstring) (``linear=True``: Linear(d, C)),
    Adam lr 3e-4. Returns the TEST accuracy at the epoch with the best VALIDATION accuracy
    (the official code reported the best test epoch). Features should be standardised.
    ``probe`` are ``fit_probes``' keyword arguments: epochs, min_steps and seed (required: the
    run config's probe_epochs, probe_min_steps, seed), and optionally hidden, linear, lr,
    batch_size."""
    res = fit_probes(
        train_f, train_y[:, None], val_f, val_y[:, None], test_f, test_y[:, None], [num_classes], **probe
    )
    return res.test_at_best[0].item()


def linear_probe(train_f: Tensor, train_y: Tensor, val_f: Tensor, val_y: Tensor, test_f: Tensor,
                 test_y: Tensor, num_classes: int, **kwargs: Any) -> float:
    """Linear probe: ``mlp_probe`` (same arguments, epochs / min_steps / seed required) with a
    single Linear(d, C) (softmax regression, no weight decay; early stopping on validation is
    its only regularisation)."""
    return mlp_probe(train_f, train_y, val_f, val_y, test_f, test_y, num_classes, linear=True, **kwargs)

