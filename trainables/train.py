"""The one-config training run: config -> metrics.

``train(config, hooks)`` trains one method on one dataset and evaluates it. It knows nothing
about Ray or MLflow: progress, checkpoints and resumption go through a small ``Hooks`` object.
``ConsoleHooks`` (standalone: print progress, checkpoint to a file) and ``tune_trainable``
(Ray Tune: ``tune.report`` with checkpoints) are the two edges it runs under.

Per epoch, the run reports the mean of every loss term, the wall time and throughput, and, after
epoch 1 and every ``eval_every`` epochs, ``val_acc_knn`` -- the cheap validation metric ASHA stops on (the last
value is carried between checks so every report holds it). The last epoch's report also holds
the full evaluation (``acc_mlp``, ``acc_knn``, ...) and ``done=True``.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models import METHODS, NetSpec
from trainables.augment import AugmentConfig, augment
from trainables.config import resolve_config
from trainables.datasets import Splits, load_dataset
from trainables.evaluate import encode, evaluate, validation_knn

CHECKPOINT_FILE = "state.pt"


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the message names the epoch and the term."""


class Hooks:
    """Where a run sends progress and checkpoints. The default does nothing."""

    def restore(self) -> dict | None:
        """A checkpoint dict to resume from, or None to start fresh."""
        return None

    def report(self, metrics: dict[str, Any], state: Callable[[], dict] | None) -> None:
        """Called once per epoch. ``state`` (when not None) builds the checkpoint to save."""

    def log(self, message: str) -> None:
        """A human-readable progress line."""

    def finished(self, method, splits: Splits, cfg: dict, history: list[dict], metrics: dict) -> None:
        """Called once after the final evaluation, before the last report: the place to write
        artifacts (reconstruction grid, learning curve) from the trained ``method``."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_method(cfg: dict[str, Any], splits: Splits, device: torch.device):
    info = splits.info
    net = NetSpec(tuple(info.image_shape), info.arch, info.latent_dim, info.likelihood)
    return METHODS[cfg["method"]](net, cfg).to(device)


def train_frozen_decoder(method, splits: Splits, cfg: dict, device: torch.device, log=print) -> float:
    """Train a decoder on the method's frozen representations of clean training images with the
    dataset's reconstruction loss (the paper does this for discriminative baselines), attach it
    as ``method.decoder`` and return its final mean training loss per image."""
    from models.likelihoods import reconstruction_nll
    from models.networks import build_decoder

    method.eval()
    decoder = build_decoder(method.net, width=cfg.get("width", 1.0)).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    x = splits.train.x
    feats = encode(method.represent, x)
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 17)
    bs = 128
    last = float("nan")
    for epoch in range(cfg["decoder_epochs"]):
        perm = torch.randperm(len(x), generator=gen, device=device)
        total = torch.zeros((), device=device)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
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


class Run:
    """One method on one dataset under one config, advanced an epoch at a time.

    ``train`` drives a single Run; a sweep trial may drive several (one per dataset and seed)
    in lockstep. Each Run owns its random state (initialisation, augmentation, the samples its
    loss draws), swapped in around its own work, so Runs interleaved in one process give the
    same results as Runs executed alone, and a checkpoint restores them exactly.
    """

    def __init__(self, config: dict[str, Any], log: Callable[[str], None] | None = None):
        self.log = log or (lambda message: None)
        self.cfg = cfg = resolve_config(config)
        self.device = device = pick_device(cfg["device"])
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        outer = _global_rng()
        seed_everything(cfg["seed"])
        self.splits = load_dataset(cfg["dataset"], cfg["data_dir"], train_size=cfg["train_size"],
                                   test_size=cfg["test_size"], device=device)
        self.method = build_method(cfg, self.splits, device)
        self.aug_cfg = AugmentConfig.for_dataset(self.splits.info)
        self.gen = torch.Generator(device=device).manual_seed(cfg["seed"])
        params = [p for p in self.method.parameters() if p.requires_grad]
        self.opt = (torch.optim.Adam(params, lr=cfg["lr"], eps=cfg["adam_eps"])
                    if self.method.trainable and params else None)
        self.J = self.method.n_views()
        self.images_per_step = max(1, cfg["batch_size"] // self.J)
        self.epochs = cfg["epochs"]
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.val_acc_knn: float | None = None
        self.final: dict[str, Any] | None = None
        self._rng = _global_rng()  # this run's global-RNG stream, continued across epochs
        _set_global_rng(outer)
        if not self.method.trainable:
            if cfg.get("refresh_bn"):
                _refresh_batchnorm(self.method, self.splits, device)
            self.epoch = self.epochs  # nothing to train: evaluate straight away
        self.log(f"{cfg['method']} on {cfg['dataset']}: {len(self.splits.train.x)} train images, "
                 f"J={self.J}, {self.images_per_step} images ({self.images_per_step * self.J} views) "
                 f"per step, {self.epochs} epochs, device {device}")

    @property
    def trained(self) -> bool:
        return self.epoch >= self.epochs

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.method.state_dict(),
            "optimizer": self.opt.state_dict() if self.opt is not None else None,
            "rng": {"global": self._rng, "aug": self.gen.get_state()},
            "epoch": self.epoch,
            "history": list(self.history),
            "val_acc_knn": self.val_acc_knn,
            "final": self.final,
            "config": self.cfg,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["model"], strict=False)
        if self.opt is not None and state.get("optimizer") is not None:
            self.opt.load_state_dict(state["optimizer"])
        self._rng = state["rng"]["global"]
        self.gen.set_state(state["rng"]["aug"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.val_acc_knn, self.final = state.get("val_acc_knn"), state.get("final")

    # -- training ---------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, Any]:
        """One pass over the training images; returns the epoch's row (mean loss terms,
        val_acc_knn, epoch_time_s, views_per_s). Raises NonFiniteLoss on a NaN/inf term."""
        cfg, method, x = self.cfg, self.method, self.splits.train.x
        epoch = self.epoch + 1
        t0 = time.perf_counter()
        outer = _global_rng()
        _set_global_rng(self._rng)
        try:
            method.train()
            ips = self.images_per_step
            perm = torch.randperm(len(x), generator=self.gen, device=self.device)
            steps = max(1, len(x) // ips)  # the last incomplete batch is dropped
            sums: dict[str, torch.Tensor] = {}
            autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                        if cfg["bf16"] and self.device.type == "cuda" else contextlib.nullcontext())
            for step in range(steps):
                clean = x[perm[step * ips:(step + 1) * ips]]
                views, _ = augment(clean, self.J, self.aug_cfg, self.gen)
                with autocast:
                    terms = method.loss(views, clean)
                if cfg["fail_at_epoch"] is not None and epoch >= cfg["fail_at_epoch"]:
                    terms["loss"] = terms["loss"] * float("nan")  # testing hook: a diverging trial
                self.opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                self.opt.step()
                method.after_step()
                for k, v in terms.items():  # accumulate on the device: no host sync per step
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v.clone()
            means = {k: float(v) / steps for k, v in sums.items()}  # one host sync per epoch
            for k, v in means.items():
                if not math.isfinite(v):
                    raise NonFiniteLoss(f"{cfg['method']} on {cfg['dataset']}: loss term '{k}' "
                                        f"became {v} at epoch {epoch}")
            if epoch % cfg["eval_every"] == 0 or epoch in (1, self.epochs):
                method.eval()
                self.val_acc_knn = validation_knn(method, self.splits, k=cfg["knn_k"])
        finally:
            self._rng = _global_rng()
            _set_global_rng(outer)
        dt = time.perf_counter() - t0
        row = {"epoch": epoch, **means,
               "val_acc_knn": self.val_acc_knn if self.val_acc_knn is not None else 0.0,
               "epoch_time_s": dt, "views_per_s": steps * ips * self.J / dt}
        self.epoch = epoch
        self.history.append(row)
        return row

    def finish(self) -> dict[str, Any]:
        """The full evaluation of the trained method (decoder on frozen representations first,
        for non-generative methods). Idempotent: a restored finished run is not re-evaluated."""
        if self.final is not None:
            return self.final
        outer = _global_rng()
        _set_global_rng(self._rng)
        try:
            method, cfg = self.method, self.cfg
            method.eval()
            if not method.generative:
                train_frozen_decoder(method, self.splits, cfg, self.device, log=self.log)
            t0 = time.perf_counter()
            metrics = evaluate(method, self.splits, self.aug_cfg, seed=cfg["seed"],
                               probe_epochs=cfg["probe_epochs"], probe_min_steps=cfg["probe_min_steps"],
                               knn_k=cfg["knn_k"],
                               style_J=cfg["style_J"])
            metrics["val_acc_knn"] = validation_knn(method, self.splits, k=cfg["knn_k"])
            metrics["eval_time_s"] = time.perf_counter() - t0
        finally:
            self._rng = _global_rng()
            _set_global_rng(outer)
        self.val_acc_knn = metrics["val_acc_knn"]
        self.log(f"evaluation took {metrics['eval_time_s']:.1f} s")
        self.final = metrics
        return metrics

    def final_row(self) -> dict[str, Any]:
        """The last epoch's row merged with the final metrics, flagged done."""
        row = dict(self.history[-1]) if self.history else {"epoch": self.epochs}
        row.update(self.final or {})
        row["done"] = True
        return row


def _global_rng() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(config: dict[str, Any], hooks: Hooks | None = None) -> dict[str, Any]:
    """Train ``config['method']`` on ``config['dataset']`` and evaluate it; return the final
    metrics (plus ``history``, the per-epoch rows)."""
    hooks = hooks or Hooks()
    run = Run(config, log=hooks.log)
    state = hooks.restore()
    if state is not None:
        run.load_state_dict(state)
        hooks.log(f"resumed from epoch {run.epoch}")
    while not run.trained:
        row = run.train_epoch()
        hooks.log(_progress_line(row, run.epochs))
        if run.trained:
            break  # the last epoch is reported together with the final evaluation
        due = run.epoch % run.cfg["checkpoint_every"] == 0
        hooks.report(row, run.state_dict if due else None)
    final = run.finish()
    last = run.final_row()
    hooks.finished(run.method, run.splits, run.cfg, run.history, last)
    hooks.report(last, run.state_dict)
    return {**final, "epochs_trained": run.epoch, "history": run.history}


def _refresh_batchnorm(method, splits, device) -> None:
    """Run the untrained encoder in train mode over the training images so BatchNorm layers hold
    the data's statistics instead of their initial (0, 1)."""
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in method.modules())
    if not has_bn:
        return
    method.train()
    for m in method.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
    with torch.no_grad():
        for i in range(0, len(splits.train.x), 512):
            method.encoder(splits.train.x[i:i + 512])
    method.eval()


def _progress_line(row: dict, epochs: int) -> str:
    terms = "  ".join(f"{k} {v:.4g}" for k, v in row.items()
                      if k not in ("epoch", "epoch_time_s", "views_per_s", "val_acc_knn"))
    return (f"epoch {row['epoch']}/{epochs}  {terms}  val_acc_knn {row['val_acc_knn']:.3f}  "
            f"({row['epoch_time_s']:.1f} s, {row['views_per_s']:.0f} views/s)")


class ConsoleHooks(Hooks):
    """Standalone runs: progress to stderr; checkpoints to ``checkpoint`` (a file), written
    atomically, and resumed from when it exists."""

    def __init__(self, checkpoint: str | Path | None = None, stream=None):
        import sys

        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.stream = stream or sys.stderr

    def restore(self) -> dict | None:
        if self.checkpoint and self.checkpoint.exists():
            return torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        return None

    def report(self, metrics, state) -> None:
        if state is not None and self.checkpoint is not None:
            save_checkpoint(state(), self.checkpoint)

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a killed run never leaves half a checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class TuneHooks(Hooks):
    """Ray Tune: ``tune.report`` every epoch, with a checkpoint directory when one is due;
    ``tune.get_checkpoint`` to resume after a restore or a retry."""

    def restore(self) -> dict | None:
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)

    def report(self, metrics, state) -> None:
        from ray import tune

        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool, str))}
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state(), Path(d) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def tune_trainable(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable: the same run, reporting through ``tune.report``. A
    NaN loss raises, so the trial errors with the reason."""
    train(config, TuneHooks())
