"""One-config runs: the keys a user types, their defaults, and validation at the edge.

A config is a flat dict of plain values. ``resolve_config`` fills it with defaults, coerces types
and checks every key once; a bad value raises ``ConfigError`` whose message is one line a person
can act on (CLIs print it and exit 2). Every default is declared once: a common key's in
``COMMON`` below, a method hyperparameter's in its ``Hyperparameter`` (models/), a dataset's
budget in its ``DatasetInfo``; the checks are models.base's. Runs are built from the resolved
config, so a method receives all its hyperparameters resolved (``method_hyperparameters``).

Precedence -- the one order every run's config is built in (later wins):

    1. the common keys' defaults (``COMMON``) and the method's hyperparameter defaults
    2. the dataset's budget (``DATASETS[name].budget``: epochs, lr, batch_size or images_per_step)
    3. the user's config. A sweep builds that itself, in ``sweeps.spaces.run_configs``, from
       (later wins) the selected method config (table1's selection file) < the profile's budget
       < the space's fixed values < the command line (--epochs, --data-dir, --set) < the point
       the searcher drew.

Key names are shared across methods: method, dataset, epochs, seed, lr, batch_size (views per
optimiser step), J, sigma2, beta, gamma, temperature, likelihood_scale, train_size, test_size,
eval_every, data_dir. Method-specific keys come from each method's ``hyperparameters``; a method
is built with its own keys only (``method_hyperparameters``).
"""
from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from models import METHODS
from models.base import at_least, finite_positive, positive
from models.networks import RESNET_STAGES
from trainables.datasets import DATASETS
from trainables.precision import bf16_mode


class ConfigError(ValueError):
    """A config that cannot be run: one line, fit for a CLI to print before exiting with 2."""


@dataclass(frozen=True)
class Key:
    default: Any
    kind: type
    help: str
    check: Callable[[Any], str | None] | None = None
    optional: bool = False  # None is allowed


def _seed(v):
    return None if 0 <= v < 2**32 else "must be between 0 and 2**32 - 1"


def _device(v):
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) else "must be auto, cpu, cuda, cuda:N or mps"


# Keys every run understands, whatever the method.
COMMON: dict[str, Key] = {
    "method": Key(None, str, "method to train (see --help for the list)"),
    "dataset": Key(None, str, "dataset to train on (see --help for the list)"),
    "epochs": Key(30, int, "training epochs", at_least(1)),
    "seed": Key(0, int, "seed for initialisation, augmentation and probes", _seed),
    "lr": Key(1e-3, float, "Adam learning rate", finite_positive),
    "adam_eps": Key(1e-4, float, "Adam epsilon (official code: 1e-4)", finite_positive),
    "batch_size": Key(128, int, "views per optimiser step (images per step = batch_size // J)", at_least(1)),
    "images_per_step": Key(None, int, "images per optimiser step; when set, batch_size = images_per_step * J "
                           "(the same images per step for every J and method)", at_least(1), optional=True),
    "train_size": Key(None, int, "limit the training images (stratified)", at_least(1), optional=True),
    "test_size": Key(None, int, "limit the test images (stratified)", at_least(1), optional=True),
    "eval_every": Key(None, int, "epochs between validation kNN checks (default: epochs/20)", at_least(1), optional=True),
    "checkpoint_every": Key(None, int, "epochs between checkpoints (default: eval_every)", at_least(1), optional=True),
    "data_dir": Key(None, str, "dataset folder (default $SSL_SWEEPS_DATA or ~/.cache/ssl-sweeps/data)", optional=True),
    "device": Key("auto", str, "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...", _device),
    "bf16": Key("auto", bf16_mode, "bfloat16 autocast of the networks (objectives stay float32): auto = where the "
                "device computes bfloat16 natively and the method's parity was measured; true; false"),
    "width": Key(1.0, float, "ResNet width multiplier (colour datasets only)", positive),
    "resnet_stages": Key(4, int, "ResNet stages: 4 = ResNet-18; width=0.5 resnet_stages=3 ~ the official net",
                         lambda v: None if v in RESNET_STAGES else
                         f"must be {RESNET_STAGES[0]}-{RESNET_STAGES[-1]}"),
    "probe_epochs": Key(100, int, "epochs of the MLP / linear / style probes", at_least(1)),
    "probe_min_steps": Key(5000, int, "at least this many probe optimiser steps (small datasets)", at_least(1)),
    "knn_k": Key(10, int, "k of the headline kNN accuracy", at_least(1)),
    "style_J": Key(4, int, "augmented views per test image for the augmentation-style probe", at_least(1)),
    "augment": Key("project", str, "augmentation: 'project' (README) or 'official' (the official code's order, ratio 0.75-1.3, jitter always, MNIST views thresholded)", lambda v: None if v in ("project", "official") else "must be 'project' or 'official'"),
    "decoder_epochs": Key(None, int, "most epochs of the decoder trained on frozen representations (non-generative methods; it stops sooner when an epoch improves its validation error by < 2%; default: min(epochs, 10))", at_least(1), optional=True),
}

def _coerce(key: str, value: Any, kind: type, optional: bool) -> Any:
    """Turn a CLI string (or a YAML/JSON value) into ``kind``; ConfigError if impossible."""
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required")
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if value not in (0, 1):  # True, False, 0 or 1; not 0.5 or 7
                raise ValueError
            return bool(value)
        if isinstance(value, bool) and kind in (int, float, str):  # true is not the number 1 (epochs=true
            raise ValueError  # would train 1 epoch); a kind of its own (bf16_mode) reads booleans itself
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, str):
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                return int(f)
            return int(value)
        if kind is float:
            return float(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a valid {kind.__name__}") from None


FLOAT32_TINY = 1.1754944e-38  # float32's smallest normal number
FLOAT32_MAX = 3.4028235e38


def float32_problem(v: float) -> str | None:
    """Why a float value cannot be computed with -- not finite, or outside float32's normal range,
    where torch would turn it into 0 (a subnormal: flushed, see trainables.driver.flush_denormals)
    or inf -- or None."""
    if not math.isfinite(v):
        return "must be a finite number"
    if v != 0 and abs(v) < FLOAT32_TINY:
        return f"too small to compute with (below float32's smallest normal number, {FLOAT32_TINY:.3g}: it would be 0)"
    if abs(v) > FLOAT32_MAX:
        return f"too large to compute with (above float32's largest number, {FLOAT32_MAX:.3g}: it would be inf)"
    return None


def method_keys(method: str) -> dict[str, Key]:
    """The method's own hyperparameters as config keys."""
    cls = METHODS[method]
    return {
        name: Key(hp.default, hp.kind, hp.help, hp.check, optional=hp.default is None)
        for name, hp in cls.hyperparameters.items()
    }


# Keys whose default follows ``epochs`` (set in resolve_config unless given): a run that resumes
# with another ``epochs`` resumes with them too (trainables.driver.RESUMABLE_KEYS).
EPOCH_DERIVED = ("eval_every", "checkpoint_every", "decoder_epochs")


def resolve_config(user: dict[str, Any]) -> dict[str, Any]:
    """Fill ``user`` with defaults, coerce types and validate. Returns a new flat dict."""
    method = user.get("method")
    dataset = user.get("dataset")
    if method is None:
        raise ConfigError(f"no method given; choose one of: {', '.join(sorted(METHODS))}")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(sorted(METHODS))}")
    if dataset is None:
        raise ConfigError(f"no dataset given; choose one of: {', '.join(DATASETS)}")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")

    keys = {**COMMON, **method_keys(method)}
    unknown = sorted(k for k in user if k not in keys)
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for method {method}; "
            f"known: {', '.join(sorted(keys))}"
        )

    cfg: dict[str, Any] = {k: spec.default for k, spec in keys.items()}
    cfg.update(DATASETS[dataset].budget)
    cfg.update(user)
    for k, spec in keys.items():
        cfg[k] = _coerce(k, cfg[k], spec.kind, spec.optional)
        if spec.kind is float and cfg[k] is not None:
            msg = float32_problem(cfg[k])
            if msg:
                raise ConfigError(f"{k}={cfg[k]!r} is invalid: {msg}")
        if cfg[k] is not None and spec.check is not None:
            msg = spec.check(cfg[k])
            if msg:
                raise ConfigError(f"{k}={cfg[k]!r} is invalid: {msg}")

    if cfg["eval_every"] is None:
        cfg["eval_every"] = max(1, cfg["epochs"] // 20)
    if cfg["checkpoint_every"] is None:
        cfg["checkpoint_every"] = cfg["eval_every"]
    if cfg["decoder_epochs"] is None:
        cfg["decoder_epochs"] = min(cfg["epochs"], 10)

    J = int(cfg.get("J", 1) or 1)
    given = [k for k in ("batch_size", "images_per_step") if user.get(k) is not None]
    if len(given) == 2:
        raise ConfigError("batch_size and images_per_step both set: set one (batch_size counts views, "
                          "images_per_step images)")
    if given == ["batch_size"]:
        cfg["images_per_step"] = None  # the user's batch size wins over a budget's images per step
    if cfg["images_per_step"] is not None:
        cfg["batch_size"] = cfg["images_per_step"] * J
    if cfg["batch_size"] < J:
        raise ConfigError(
            f"batch_size={cfg['batch_size']} is smaller than J={J}: batch_size counts views, "
            f"so it must hold at least one image's J views"
        )
    return cfg


def method_hyperparameters(cfg: dict[str, Any]) -> dict[str, Any]:
    """The method's own keys of a resolved config: what the method is built with."""
    return {k: cfg[k] for k in METHODS[cfg["method"]].hyperparameters}


def parse_value(text: str) -> Any:
    """A KEY=VALUE value as typed: int, float, true/false, none/null, else the string.
    (``resolve_config`` coerces to each key's type; this only keeps plain data plain.)"""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_pairs(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` strings (both CLIs' --set, the benchmarks) to a dict; ConfigError for an
    item without '=' or with an empty key."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


HELP_WIDTH = 100  # columns of the help text formatted here (python -m trainables --help)


def hyperparameter_help() -> str:
    """Human-readable listing of methods, datasets and every key with the default that applies:
    per dataset where a dataset's budget (or a default derived from it) sets it."""
    def show(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else repr(v)

    lines = ["methods and their hyperparameters (set with --set KEY=VALUE; the same default on every dataset):"]
    for name in sorted(METHODS):
        cls = METHODS[name]
        doc = (cls.__doc__ or "").strip().splitlines()
        lines.append(f"  {name}: {doc[0] if doc else ''}")
        for key, hp in cls.hyperparameters.items():
            lines.append(f"      {key} = {show(hp.default)}  {hp.help}")
    # The defaults as they apply: each dataset's config resolved with nothing set.
    table_keys = list(dict.fromkeys([k for info in DATASETS.values() for k in info.budget] + list(EPOCH_DERIVED)))
    method = "vae" if "vae" in METHODS else next(iter(METHODS))
    resolved = {}
    for d in DATASETS:
        try:
            resolved[d] = resolve_config({"method": method, "dataset": d})
        except ConfigError:  # a dataset whose defaults do not resolve alone: listed without its row
            continue
    per_dataset = {k for k in table_keys if any(cfg[k] != COMMON[k].default for cfg in resolved.values())}
    lines += ["", "datasets, and the defaults that apply to each (a flag or --set KEY=VALUE wins):"]
    table = range(len(lines), len(lines) + 1 + len(resolved))  # the table's rows: never wrapped
    lines.append(f"  {'dataset':<14}" + "".join(f"{k:>{max(len(k), 8) + 2}}" for k in table_keys))
    for d, cfg in resolved.items():
        lines.append(f"  {d:<14}" + "".join(f"{show(cfg[k]):>{max(len(k), 8) + 2}}" for k in table_keys))
    lines.append("  (batch_size counts views: images per step = batch_size // J; images_per_step, where set,")
    lines.append("   fixes batch_size = images_per_step * J. Unless set: eval_every =")
    lines.append("   epochs // 20, checkpoint_every = eval_every, decoder_epochs = min(epochs, 10).)")
    for name, info in DATASETS.items():
        lines.append(f"  {name}: {getattr(info, 'description', '')}")
    lines.append("")
    lines.append("common keys (any method; 'per dataset': see the table above):")
    for key, spec in COMMON.items():
        if key in ("method", "dataset"):
            continue
        default = "per dataset" if key in per_dataset else show(spec.default)
        lines.append(f"  {key} = {default}  {spec.help}")
    # Prose lines wrap at HELP_WIDTH (argparse leaves an epilog as it is), continued under the text.
    return "\n".join(line if i in table or len(line) <= HELP_WIDTH else
                     textwrap.fill(line, HELP_WIDTH, subsequent_indent=" " * (len(line) - len(line.lstrip()) + 4),
                                   break_on_hyphens=False)
                     for i, line in enumerate(lines))
