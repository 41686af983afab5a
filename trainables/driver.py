"""The training driver: configs -> trained, evaluated runs. No Ray, no MLflow.

The unit of experiment is a ``RunGroup``: one config trained on every dataset and seed it is
given (one ``Run`` each), advanced an epoch at a time in lockstep and scored by the paper's
rule (``aggregate``: the mean over seeds per dataset, then the mean over datasets, every dataset
weighing the same). ``train(configs, hooks)`` drives a group; the CLI is a group of one, a sweep
trial (sweeps/trial.py) a group of datasets x seeds. Progress, checkpoints and records go
through a ``Hooks`` object, the only thing that differs between those edges. Evaluation (the
probes, kNN, clustering, style, the decoder trained on frozen representations) is
trainables/evaluate/'s.

What ``train`` hands its hooks:
    epoch(run, row)      every run's row of every epoch: mean loss terms, ``val_acc_knn`` (after
                         epoch 1 and every ``eval_every`` epochs; the last value is carried
                         between checks), ``epoch_time_s``, ``views_per_s``
    report(metrics, state)
                         once per lockstep epoch: ``epoch``, ``<dataset>/val_acc_knn`` and
                         ``val_acc_knn_mean``; ``state`` builds the group's checkpoint when one is
                         due. The last report holds the aggregated final evaluation
                         (``acc_mlp_mean``, ``<dataset>/acc_mlp``, ...; ``acc_mlp_mean_se``, its
                         standard error, with two or more seeds) and ``done=True``.
    finished(run, row)   each run's final row (its last epoch merged with its full evaluation),
                         before the last report: the place for artifacts and result records.
"""
from __future__ import annotations

import contextlib
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from models import METHODS, NetSpec
from trainables.augment import AugmentConfig, augment
from trainables.config import EPOCH_DERIVED, method_hyperparameters, resolve_config
from trainables.datasets import DatasetInfo, Splits, load_dataset
from trainables.evaluate import evaluate, train_frozen_decoder, validation_knn
from trainables.precision import autocast as precision_autocast
from trainables.precision import use_bf16
from trainables.recording import first_line, plain_row, write_atomic

CHECKPOINT_FORMAT = 1
# Keys a run may change when it resumes from a checkpoint: where it runs and how long it trains,
# with every key whose default follows the length (the schedule of evaluations and checkpoints,
# the frozen decoder's cap, used only after training). Every other key of the resolved config is
# the checkpoint's identity.
RESUMABLE_KEYS = frozenset({"epochs", "device", "data_dir", "bf16", *EPOCH_DERIVED})
VALIDATION_METRIC = "val_acc_knn"  # every run's cheap per-epoch metric; a group reports its mean as val_acc_knn_mean


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the message names the epoch and the term."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: one line."""


def pick_device(name: str) -> torch.device:
    """The torch device of a config's ``device``; ConfigError when it is not on this machine."""
    from trainables.config import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device={name}: no such CUDA GPU on this machine "
                          f"({torch.cuda.device_count()} visible); use device=cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}: MPS is not available on this machine; use device=cpu or auto")
    return device


def flush_denormals() -> None:
    """Flush denormal floats to zero on the calling thread (the CPU's FTZ/DAZ flags; a per-thread
    setting, so it is set where training and evaluation run). Late in training some activations
    and gradients fall below 1.2e-38, where the CPU computes far slower: on 2 cores a quick
    SimVAE trial's epochs went from 8 s to 15-20 s after epoch 7 (benchmarks/denormals.py). Values
    that small are zero for every purpose here (GPUs compute them at full speed)."""
    torch.set_flush_denormal(True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def net_spec(cfg: dict[str, Any], info: DatasetInfo) -> NetSpec:
    """What the networks need: the dataset's shapes plus the config's network options."""
    return NetSpec(tuple(info.image_shape), info.arch, info.latent_dim, info.likelihood,
                   width=cfg["width"], resnet_stages=cfg["resnet_stages"])


def build_method(cfg: dict[str, Any], info: DatasetInfo, device: torch.device):
    """The method of a resolved config for a dataset, given only its own hyperparameters."""
    return METHODS[cfg["method"]](net_spec(cfg, info), method_hyperparameters(cfg)).to(device)


def optimiser(method, cfg: dict[str, Any]) -> torch.optim.Optimizer | None:
    """Adam over the parameters that learn (a momentum encoder's do not); None for a method that
    does not train."""
    params = [p for p in method.parameters() if p.requires_grad]
    if not (method.trainable and params):
        return None
    # fused: one pass over each parameter (the same update to float32 rounding); on a small CPU step
    # the default multi-tensor Adam costs ~10x more, a third of a SimVAE step (benchmarks/train_step.py).
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.Adam(params, lr=cfg["lr"], eps=cfg["adam_eps"], fused=fused or None)


def train_step(method, opt, clean: torch.Tensor, J: int, aug_cfg: AugmentConfig, gen: torch.Generator,
               autocast=None) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch of clean images: augment J views of each, the loss, the
    update. Returns the loss terms (on the device; no host sync). What a run trains with, and
    what the sweep's CPU-hour estimate times (sweeps/preflight.py)."""
    views, _ = augment(clean, J, aug_cfg, gen)
    with autocast or contextlib.nullcontext():
        terms = method.loss(views, clean)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    method.after_step()
    return terms


# -- random state -------------------------------------------------------------------------------


def prepare_device(device: torch.device) -> None:
    """How float32 runs on ``device``: on a GPU, matmuls and convolutions in TF32 (tensor cores;
    float32 storage and accumulation), as training always has; nothing to set on a CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _global_rng() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Run:
    """One method on one dataset under one config, advanced an epoch at a time.

    Each Run owns its random state (initialisation, augmentation, the samples its loss draws),
    swapped in around its own work (``own_rng``), so Runs interleaved in one process give the
    same results as Runs executed alone, and a checkpoint restores them exactly.
    """

    def __init__(self, config: dict[str, Any], log: Callable[[str], None] | None = None):
        self.log = log or (lambda message: None)
        self.user_config = dict(config)
        self.cfg = cfg = resolve_config(config)
        self.device = device = pick_device(cfg["device"])
        prepare_device(device)
        outer = _global_rng()
        seed_everything(cfg["seed"])
        self._rng = _global_rng()  # this run's global-RNG stream, continued across epochs
        _set_global_rng(outer)
        with self.own_rng():
            self.splits = load_dataset(cfg["dataset"], cfg["data_dir"], train_size=cfg["train_size"],
                                       test_size=cfg["test_size"], device=device)
            check_fits_data(cfg, self.splits)
            self.method = build_method(cfg, self.splits.info, device)
        self.aug_cfg = AugmentConfig.for_dataset(self.splits.info, cfg["augment"])
        self.gen = torch.Generator(device=device).manual_seed(cfg["seed"])
        self.opt = optimiser(self.method, cfg)
        self.bf16 = use_bf16(cfg["bf16"], device, cfg["method"])  # trainables/precision.py
        self.J = self.method.n_views()
        self.images_per_step = max(1, cfg["batch_size"] // self.J)
        self.epochs = cfg["epochs"]
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.val_acc_knn: float | None = None
        self.final: dict[str, Any] | None = None
        if not self.method.trainable:
            if cfg.get("refresh_bn"):
                with self.own_rng():
                    _refresh_batchnorm(self.method, self.splits, device)
            self.epoch = self.epochs  # nothing to train: evaluate straight away

    def describe(self) -> str:
        cfg = self.cfg
        return (f"{cfg['method']} on {cfg['dataset']}: {len(self.splits.train.x)} train images, J={self.J}, "
                f"{self.images_per_step} images ({self.images_per_step * self.J} views) per step, "
                f"{self.epochs} epochs, device {self.device}{', bfloat16' if self.bf16 else ''}")

    @property
    def label(self) -> str:
        return f"{self.cfg['dataset']}/seed {self.cfg['seed']}"

    @property
    def trained(self) -> bool:
        return self.epoch >= self.epochs

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Swap this run's global RNG stream in for the block (and back out, continued)."""
        outer = _global_rng()
        _set_global_rng(self._rng)
        try:
            yield
        finally:
            self._rng = _global_rng()
            _set_global_rng(outer)

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors, plain containers and numbers only (loadable with ``weights_only=True``)."""
        return {
            "model": self.method.state_dict(),
            "optimizer": self.opt.state_dict() if self.opt is not None else None,
            "rng": {"global": self._rng, "aug": self.gen.get_state(), "aug_device": self.gen.device.type},
            "epoch": self.epoch,
            "history": [plain_row(r) for r in self.history],
            "val_acc_knn": self.val_acc_knn,
            "final": plain_row(self.final) if self.final is not None else None,
            "config": {k: v for k, v in self.cfg.items()},
        }

    def identity(self) -> dict[str, Any]:
        """What a checkpoint of this run must match: the resolved config less RESUMABLE_KEYS."""
        return {k: v for k, v in self.cfg.items() if k not in RESUMABLE_KEYS}

    def check_state(self, state: dict[str, Any]) -> None:
        """CheckpointError (one line) unless ``state`` is this run's, at most this run's budget."""
        theirs = {k: v for k, v in state.get("config", {}).items() if k not in RESUMABLE_KEYS}
        mine = self.identity()
        first = {"method": 0, "dataset": 1, "seed": 2}
        diff = sorted((k for k in set(theirs) | set(mine) if theirs.get(k, "<unset>") != mine.get(k, "<unset>")),
                      key=lambda k: (first.get(k, 3), k))
        if diff:
            shown = ", ".join(f"{k}={theirs.get(k, '<unset>')!r} there, {mine.get(k, '<unset>')!r} here"
                              for k in diff[:3])
            more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
            raise CheckpointError(f"the checkpoint belongs to another run: {shown}{more}")
        if state["epoch"] > self.epochs:
            raise CheckpointError(f"the checkpoint has trained {state['epoch']} epochs, more than "
                                  f"epochs={self.epochs}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_state(state)
        self.method.load_state_dict(state["model"], strict=False)
        if self.opt is not None and state.get("optimizer") is not None:
            self.opt.load_state_dict(state["optimizer"])
        self._rng = state["rng"]["global"]
        self._restore_augmentation_stream(state)
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.val_acc_knn, self.final = state.get("val_acc_knn"), state.get("final")
        if not self.method.trainable:
            self.epoch = self.epochs
        elif self.epoch < self.epochs:
            self.final = None  # a longer budget: train on, then evaluate the model it returns

    def _restore_augmentation_stream(self, state: dict[str, Any]) -> None:
        """The augmentation generator as the checkpoint left it; on another kind of device (a
        checkpoint written on a GPU, resumed on a CPU or back), whose generator state has another
        format (a CUDA generator's is 16 bytes, a CPU one's 5,056), a new stream seeded by the
        run's seed and epoch: the run trains on, no longer bit-identical to an uninterrupted one."""
        saved, kind = state["rng"]["aug"], state["rng"].get("aug_device")  # no kind: written before it was kept
        if kind in (None, self.gen.device.type):
            try:
                self.gen.set_state(saved)
                return
            except RuntimeError:  # an untagged state of another device kind
                pass
        self.gen.manual_seed(self.cfg["seed"] * 1_000_003 + int(state["epoch"]))
        self.log(f"the checkpoint's augmentation stream belongs to a {kind or 'another'} device: resuming on "
                 f"{self.device.type} with a new stream (seeded by seed and epoch)")

    # -- training ---------------------------------------------------------------------------
    def step(self, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step (``train_step``) on a batch of clean images."""
        autocast = precision_autocast(self.device, self.bf16)
        return train_step(self.method, self.opt, clean, self.J, self.aug_cfg, self.gen, autocast)

    def train_epoch(self) -> dict[str, Any]:
        """One pass over the training images; returns the epoch's row (mean loss terms,
        val_acc_knn, epoch_time_s, views_per_s). Raises NonFiniteLoss on a NaN/inf term."""
        cfg, method, x = self.cfg, self.method, self.splits.train.x
        epoch = self.epoch + 1
        flush_denormals()
        t0 = time.perf_counter()
        with self.own_rng():
            method.train()
            ips = self.images_per_step
            perm = torch.randperm(len(x), generator=self.gen, device=self.device)
            steps = max(1, len(x) // ips)  # the last incomplete batch is dropped
            sums: dict[str, torch.Tensor] = {}
            for i in range(steps):
                terms = self.step(x[perm[i * ips:(i + 1) * ips]])
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
                self.val_acc_knn = validation_knn(method, self.splits, cfg)
        dt = time.perf_counter() - t0
        row = plain_row({"epoch": epoch, **means,
                          "val_acc_knn": self.val_acc_knn if self.val_acc_knn is not None else 0.0,
                          "epoch_time_s": dt, "views_per_s": steps * ips * self.J / dt})
        self.epoch = epoch
        self.history.append(row)
        return row

    def finish(self) -> dict[str, Any]:
        """The full evaluation of the trained method (decoder on frozen representations first,
        for non-generative methods). Idempotent: a restored finished run is not re-evaluated."""
        if self.final is not None:
            return self.final
        method, cfg = self.method, self.cfg
        flush_denormals()
        with self.own_rng():
            method.eval()
            t0 = time.perf_counter()  # the evaluation's cost includes a decoder trained for it
            if method.reconstruct(self.splits.train.x[:1]) is None:  # no decoder of its own
                train_frozen_decoder(method, self.splits, cfg, self.device, log=self.log,
                                     autocast=precision_autocast(self.device, self.bf16))
            metrics = evaluate(method, self.splits, self.aug_cfg, cfg)
            metrics["val_acc_knn"] = validation_knn(method, self.splits, cfg)
            metrics["eval_time_s"] = time.perf_counter() - t0
        self.val_acc_knn = metrics["val_acc_knn"]
        self.log(f"evaluation took {metrics['eval_time_s']:.1f} s")
        self.final = plain_row(metrics)
        return self.final

    def final_row(self) -> dict[str, Any]:
        """The last epoch's row merged with the final metrics, flagged done."""
        row = dict(self.history[-1]) if self.history else {"epoch": self.epochs}
        row.update(self.final or {})
        row["done"] = True
        return row


def check_fits_data(cfg: dict[str, Any], splits: Splits) -> None:
    """ConfigError for settings the loaded data cannot serve (checked before any training)."""
    from trainables.config import ConfigError

    n = len(splits.train)
    if cfg["knn_k"] > n:
        raise ConfigError(f"knn_k={cfg['knn_k']} is larger than the {n} training images of {cfg['dataset']}")


def mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


class RunGroup:
    """One config on several datasets and seeds: a ``Run`` each, trained in lockstep and
    scored by the paper's rule (``aggregate``)."""

    def __init__(self, configs: list[dict[str, Any]], log: Callable[[str], None] | None = None):
        if not configs:
            raise ValueError("a RunGroup needs at least one config")
        self.runs = [Run(cfg, log=log) for cfg in configs]
        self.datasets = tuple(dict.fromkeys(r.cfg["dataset"] for r in self.runs))
        self.checkpoint_every = min(r.cfg["checkpoint_every"] for r in self.runs)

    @property
    def trained(self) -> bool:
        return all(r.trained for r in self.runs)

    @property
    def epoch(self) -> int:
        return max(r.epoch for r in self.runs)

    def train_epoch(self) -> list[dict[str, Any]]:
        """One epoch of every run that has budget left; a run with a shorter budget than the
        others holds its last validation value. Returns one row per run (in order)."""
        rows = []
        for run in self.runs:
            if run.trained:
                rows.append({"val_acc_knn": run.val_acc_knn or 0.0})
            else:
                rows.append(run.train_epoch())
        return rows

    def values(self, rows: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
        """{dataset: the numeric values of ``key`` over its runs' ``rows`` (one row per run)}."""
        return {d: [row[key] for run, row in zip(self.runs, rows) if run.cfg["dataset"] == d and _number(row.get(key))]
                for d in self.datasets}

    def aggregate(self, rows: list[dict[str, Any]], keys) -> dict[str, float]:
        """The paper's rule on ``rows`` (one per run): ``<dataset>/<key>`` the mean over seeds,
        ``<key>_mean`` the mean of the per-dataset means (present only when every dataset has
        the key; every dataset weighs the same, whatever its number of seeds)."""
        out: dict[str, float] = {}
        for key in keys:
            per_dataset = {d: mean(vals) for d, vals in self.values(rows, key).items() if vals}
            out.update({f"{d}/{key}": m for d, m in per_dataset.items()})
            if len(per_dataset) == len(self.datasets):
                out[f"{key}_mean"] = mean(per_dataset.values())
        return out

    def standard_errors(self, rows: list[dict[str, Any]], keys) -> dict[str, float]:
        """``<key>_mean_se``: the standard error over seeds of ``aggregate``'s ``<key>_mean`` --
        sqrt(sum over datasets of (sd over seeds / sqrt(seeds))²) / datasets -- present only when
        every dataset has two or more seeds (how sure a ranking is: sweeps/ranking.py)."""
        out: dict[str, float] = {}
        for key in keys:
            per_dataset = self.values(rows, key).values()
            if all(len(vals) >= 2 for vals in per_dataset):
                ses = [statistics.stdev(vals) / math.sqrt(len(vals)) for vals in per_dataset]
                out[f"{key}_mean_se"] = math.sqrt(sum(s * s for s in ses)) / len(ses)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Every run's full evaluation (idempotent)."""
        return [run.finish() for run in self.runs]

    def final_metrics(self) -> dict[str, Any]:
        """The last report: every final metric aggregated (with its standard error over seeds
        when there are two or more), ``done=True``."""
        finals = [run.final or {} for run in self.runs]
        keys = sorted({k for f in finals for k, v in f.items() if _number(v)})
        return {"epoch": self.epoch, **self.aggregate(finals, keys), **self.standard_errors(finals, keys),
                "done": True}

    def state_dict(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "runs": [r.state_dict() for r in self.runs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not a checkpoint of this version (format {CHECKPOINT_FORMAT})")
        if len(state["runs"]) != len(self.runs):
            raise CheckpointError(f"the checkpoint holds {len(state['runs'])} run(s), this group "
                                  f"{len(self.runs)}")
        for run, s in zip(self.runs, state["runs"]):
            run.check_state(s)  # all or nothing: no run is loaded from a mismatched checkpoint
        for run, s in zip(self.runs, state["runs"]):
            run.load_state_dict(s)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- the driver ---------------------------------------------------------------------------------


class Hooks:
    """Where a group sends progress, records and checkpoints. The default does nothing."""

    def restore(self) -> dict | None:
        """A checkpoint (``RunGroup.state_dict()``) to resume from, or None to start fresh."""
        return None

    def log(self, message: str) -> None:
        """A human-readable progress line."""

    def started(self, group: RunGroup) -> None:
        """The group is built (and restored): the place to open per-run records."""

    def epoch(self, run: Run, row: dict[str, Any]) -> None:
        """One run's row of one epoch."""

    def report(self, metrics: dict[str, Any], state: Callable[[], dict] | None) -> None:
        """Once per lockstep epoch (see the module docstring). ``state`` (when not None)
        builds the checkpoint to save."""

    def finished(self, run: Run, row: dict[str, Any]) -> None:
        """One run's final row, after its full evaluation and before the last report."""


def train(configs: dict[str, Any] | list[dict[str, Any]], hooks: Hooks | None = None) -> RunGroup:
    """Train and evaluate the group of ``configs`` (one config is a group of one); returns the
    finished group (``group.runs[i].final``, ``group.final_metrics()``)."""
    hooks = hooks or Hooks()
    group = RunGroup([configs] if isinstance(configs, dict) else list(configs), log=hooks.log)
    state = hooks.restore()
    if state is not None:
        group.load_state_dict(state)
    for run in group.runs:
        hooks.log(run.describe())
    if state is not None:
        hooks.log(f"resumed from epoch {group.epoch}")
    hooks.started(group)
    while not group.trained:
        before = [r.epoch for r in group.runs]
        rows = group.train_epoch()
        for run, row, was in zip(group.runs, rows, before):
            if run.epoch > was:
                hooks.log(_progress_line(run, row, len(group.runs) > 1))
                hooks.epoch(run, row)
        if group.trained:
            break  # the last epoch is reported together with the final evaluation
        due = group.epoch % group.checkpoint_every == 0
        hooks.report({"epoch": group.epoch, **group.aggregate(rows, [VALIDATION_METRIC])},
                     group.state_dict if due else None)
    for run in group.runs:
        run.finish()
        hooks.finished(run, run.final_row())
    hooks.report(group.final_metrics(), group.state_dict)
    return group


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


def _progress_line(run: Run, row: dict, named: bool) -> str:
    terms = "  ".join(f"{k} {v:.4g}" for k, v in row.items()
                      if k not in ("epoch", "epoch_time_s", "views_per_s", "val_acc_knn"))
    who = f"{run.label}  " if named else ""
    return (f"{who}epoch {row['epoch']}/{run.epochs}  {terms}  val_acc_knn {row['val_acc_knn']:.3f}  "
            f"({row['epoch_time_s']:.1f} s, {row['views_per_s']:.0f} views/s)")


# -- checkpoint files ---------------------------------------------------------------------------


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a killed run never leaves half a checkpoint)."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint file, loaded with ``weights_only=True``: tensors, plain containers and
    numbers only, so a crafted file cannot run code. CheckpointError (one line) otherwise."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unreadable, truncated, or not a weights-only file
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line(e)[:200]}") from None


class ConsoleHooks(Hooks):
    """Standalone runs: progress to stderr; checkpoints to ``checkpoint`` (a file), written
    atomically, and resumed from when it exists."""

    def __init__(self, checkpoint: str | Path | None = None, stream=None):
        import sys

        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.stream = stream or sys.stderr

    def restore(self) -> dict | None:
        if self.checkpoint and self.checkpoint.exists():
            return load_checkpoint(self.checkpoint)
        return None

    def report(self, metrics, state) -> None:
        if state is not None and self.checkpoint is not None:
            save_checkpoint(state(), self.checkpoint)

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)
