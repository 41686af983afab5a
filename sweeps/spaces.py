"""Named search spaces: plain data you can print before anything runs.

A ``Space`` names the method (or methods), the searched parameters, fixed values, seeds, the
number of samples, the ASHA settings and the resources of one trial. A ``Profile`` names the
datasets and the training budget (``paper``: the paper's datasets and budgets; ``quick``: the
built-in offline datasets, minutes on a laptop CPU). ``expand(space, profile, ...)`` merges the
two with the user's overrides into a ``Plan`` -- the fully expanded sweep -- and validates every
config it can produce with ``trainables.config.resolve_config`` (for searched parameters: at the
bounds of each distribution) before Ray starts.

Searched parameters are Optuna distributions (``LogUniform``, ``Uniform``, ``IntUniform``,
``Categorical``; ``Same`` ties one key to another and ``Switch`` makes a key conditional on
another's value, both by define-by-run) or a ``Grid`` (run through Tune's grid search), all
defined in sweeps/distributions.py (plain data: importing this module loads neither Ray nor
Optuna). A space uses either distributions or grids, not both.

Adding a space is one ``register(Space(...))`` call below.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models import METHODS
from sweeps.distributions import (Categorical, Dist, Grid, IntUniform, LogUniform, Same,  # noqa: F401
                                  Switch, Uniform, dist_from_dict)
from sweeps.schema import SelectionError, selected_configs, selection_path
from trainables.datasets import DatasetError, resolve_data_dir

# -- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Datasets and budgets. ``budget`` keys are config keys applied to every run."""

    name: str
    description: str
    datasets: tuple[str, ...]
    budget: dict[str, Any]
    num_samples: int  # default for searched spaces
    grace_period: int  # ASHA's first rung, in epochs
    reduction_factor: int
    max_concurrent: int


DEFAULT_PROFILE = "paper"  # what a sweep runs without --profile
PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "paper", "the paper's datasets and the official budget (400 epochs; GPUs)",
        datasets=("mnist", "fashionmnist", "cifar10", "celeba"),
        budget={"epochs": 400, "eval_every": 10, "checkpoint_every": 10},
        num_samples=32, grace_period=50, reduction_factor=2, max_concurrent=8,
    ),
    "quick": Profile(
        "quick", "built-in offline datasets (digits, shapes), CPU minutes",
        datasets=("digits", "shapes"),
        # The offline datasets' own budget (20 epochs, lr 1e-3, 16 images per step whatever J:
        # the ~1,500 optimiser steps the VAE family needs before it beats a random encoder,
        # measured on digits) with a lighter evaluation, so that evaluating stays a small share
        # of a trial. SimVAE at J = 8 on both datasets trains in about two minutes on one core.
        budget={"epochs": 20, "images_per_step": 16, "eval_every": 1, "checkpoint_every": 1,
                "probe_epochs": 20, "probe_min_steps": 3000, "decoder_epochs": 3, "style_J": 2},
        # ASHA: rungs at 2, 6 and 18 epochs, a third going on from each. Measured on the vae_lr
        # search over 3 search seeds (benchmarks/sweep_overhead.py; docs/results.md): 32-35% of a
        # full search's epochs (grace 4 / factor 2: 33-53%), its best within half a decade of the
        # full search's each time (0.5-3.8 points of Acc-MP below it).
        num_samples=6, grace_period=2, reduction_factor=3, max_concurrent=2,
    ),
    "laptop": Profile(
        "laptop", "real MNIST and FashionMNIST subsets (10,000 train / 2,000 test images), CPU hours",
        datasets=("mnist", "fashionmnist"),
        # Budgets at which the VAE family learns on 10k images (measured: SimVAE J=4 reaches
        # 0.85 Acc-MP on MNIST in 20 epochs at lr 1e-3, 128 images per step): the same images per
        # step for every method and J. The files are fetched once by the driver (torchvision),
        # or found under --data-dir / $SSL_SWEEPS_DATA.
        budget={"epochs": 20, "lr": 1e-3, "images_per_step": 128, "train_size": 10000, "test_size": 2000,
                "eval_every": 1, "checkpoint_every": 1, "probe_min_steps": 3000},
        num_samples=8, grace_period=4, reduction_factor=2, max_concurrent=2,
    ),
}

# -- spaces -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """A named sweep. ``params`` are the searched parameters (or grids); ``by_profile`` replaces
    some of them per profile (e.g. a learning-rate range that suits the quick budget)."""

    name: str
    description: str
    methods: tuple[str, ...]
    params: dict[str, Dist]
    fixed: dict[str, Any] = field(default_factory=dict)
    by_profile: dict[str, dict[str, Dist]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    num_samples: int | None = None  # None: the profile's
    asha: bool = True
    grace_period: int | None = None  # None: the profile's
    reduction_factor: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    selection: bool = False  # table1: each method's config from the selection file
    helpers: tuple[str, ...] = ()  # searched keys that steer a Switch but are not config keys


SPACES: dict[str, Space] = {}


def register(space: Space) -> Space:
    SPACES[space.name] = space
    return space


# Learning-rate ranges: the paper's (3e-5 - 3e-4, official 8e-5) and one around the quick
# budget's default (1e-3) for short CPU runs.
_LR = LogUniform(3e-5, 3e-4)
_LR_QUICK = {"quick": {"lr": LogUniform(1e-4, 3e-3)}, "laptop": {"lr": LogUniform(1e-4, 3e-3)}}

register(Space(
    "simvae_J", "SimVAE: grid over J, the number of augmented views per image (paper Fig. 8)",
    ("simvae",), {"J": Grid((2, 4, 8))},
    by_profile={"paper": {"J": Grid((2, 4, 6, 8, 10, 12, 16, 20))}, "laptop": {"J": Grid((2, 4, 8))}},
))
register(Space(
    "simvae_sigma2", "SimVAE: log-uniform sigma^2 of p(z|y) in 1e-3..1 (TPE)",
    ("simvae",), {"sigma2": LogUniform(1e-3, 1.0)},
))
register(Space(
    "simvae_likelihood", "SimVAE: likelihood scale 1/sigma_x^2 (log-uniform) and the prior p(y) (TPE)",
    ("simvae",), {"likelihood_scale": LogUniform(1.0, 1000.0),
                  "prior": Categorical(("gaussian", "uniform"))},
))
register(Space(
    "betavae_beta", "beta-VAE: log-uniform beta in 0.1..16 (TPE)",
    ("betavae",), {"beta": LogUniform(0.1, 16.0)},
))
register(Space(
    "crvae_gamma", "CR-VAE: log-uniform consistency weight gamma in 0.01..10 (TPE)",
    ("crvae",), {"gamma": LogUniform(0.01, 10.0)},
))
register(Space(
    "simclr_temperature", "SimCLR: log-uniform NT-Xent temperature in 0.05..1 (TPE)",
    ("simclr",), {"temperature": LogUniform(0.05, 1.0)},
))
register(Space(
    "moco_temperature", "MoCo v2: temperature 0.05..0.5, momentum 0.9..0.999, queue size (TPE)",
    ("moco",), {"temperature": LogUniform(0.05, 0.5),
                "momentum": Categorical((0.9, 0.99, 0.995, 0.999)),
                "queue_size": Categorical((1024, 4096, 16384))},
    # A queue longer than the quick training set holds the same images many times over.
    by_profile={"quick": {"queue_size": Categorical((64, 128, 256))}},
))
register(Space(
    "vicreg_coeffs", "VICReg: lambda = mu in 5..50 (tied, nu = 1), or mu searched on its own (TPE)",
    ("vicreg",), {"tie_mu": Categorical((True, False)),
                  "lambda_inv": Uniform(5.0, 50.0),
                  # Conditional: mu copies lambda when tied (the paper's lambda = mu), else its own draw.
                  "mu_var": Switch("tie_mu", ((True, Same("lambda_inv")), (False, Uniform(5.0, 50.0))))},
    fixed={"nu_cov": 1.0}, helpers=("tie_mu",),
))
# A learning-rate space for every registered method that trains.
for _name, _cls in METHODS.items():
    if _cls.trainable:
        register(Space(f"{_name}_lr", f"{_cls.display}: log-uniform learning rate (TPE)", (_name,),
                       {"lr": _LR}, by_profile=_LR_QUICK))
register(Space(
    "table1", "Table 1: every method x every dataset x 3 seeds at each method's selected config",
    tuple(METHODS), {"method": Grid(tuple(METHODS))}, seeds=(0, 1, 2), asha=False, selection=True,
))


# -- expansion: space + profile + overrides -> plan -------------------------------------------


class SpaceError(ValueError):
    """A sweep that cannot run: one line, fit for a CLI to print before exiting with 2."""


@dataclass(frozen=True)
class Plan:
    """The fully expanded sweep: everything a run needs, as plain data."""

    space: str
    description: str
    profile: str
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    fixed: dict[str, Any]  # config values common to every run (profile budget, space, --set)
    method_configs: dict[str, dict[str, Any]]  # per-method values (table1: the selection)
    selection_source: str  # where method_configs came from ('' when unused)
    params: dict[str, Dist]  # searched parameters or grids
    helpers: tuple[str, ...]
    searcher: str  # 'optuna' or 'grid'
    num_samples: int
    asha: dict[str, Any] | None  # grace_period, reduction_factor, max_t (time_attr: epoch)
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int
    search_seed: int = 0

    @property
    def epochs(self) -> int:
        return int(self.fixed["epochs"])

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON): what sweep.json stores, and --resume runs, whatever spaces.py
        says by then."""
        d = asdict(self)
        d["params"] = {k: v.to_dict() for k, v in self.params.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        d = dict(d)
        d["params"] = {k: dist_from_dict(v) for k, v in d["params"].items()}
        for key in ("methods", "datasets", "seeds", "helpers"):
            d[key] = tuple(d[key])
        return cls(**d)

    @property
    def n_trials(self) -> int:
        if self.searcher == "grid":
            return math.prod(len(d.values) for d in self.params.values()) * self.num_samples
        return self.num_samples

    def budget_changes(self) -> dict[str, str]:
        """How this sweep's budget differs from its profile's and its space's (``budget_changes``)."""
        return budget_changes(self.space, self.profile, self.datasets, self.seeds, self.fixed)


# Keys every run of a sweep gets from the plan itself (``run_configs``), and where they come from.
PLACED_BY = {"method": "the space's: choose a --space of that method", "dataset": "use --datasets",
             "seed": "use --seeds"}

# Keys that set how much a run trains and is evaluated, besides a profile's own budget keys;
# when checks and checkpoints happen (eval_every, checkpoint_every) is not how much.
TRAINING_BUDGET_KEYS = frozenset({"epochs", "train_size", "test_size", "batch_size", "images_per_step",
                                  "probe_epochs", "probe_min_steps", "decoder_epochs", "style_J"})


def budget_changes(space: str, profile: str, datasets, seeds, fixed: dict[str, Any]) -> dict[str, str]:
    """How a sweep's budget differs from what its profile and space define, in words per aspect
    ({} for a full-budget sweep): another number of epochs or any other training-budget key
    (``--epochs``, ``--set train_size=...``), other datasets than the profile's, or fewer seeds
    than the space's, e.g. {"epochs": "epochs 1 (laptop: 20)", "seeds": "1 seed (table1: 3)"}.
    An analysis uses a sweep whose budget was changed only when it is named; select.py does not
    take its winners without --force."""
    out: dict[str, str] = {}
    prof, sp = PROFILES.get(profile), SPACES.get(space)
    if prof is None:
        return {"profile": f"profile {profile} (not defined here)"}
    if set(datasets) != set(prof.datasets):
        out["datasets"] = f"datasets {', '.join(datasets)} ({profile}: {', '.join(prof.datasets)})"
    if sp is not None and len(seeds) < len(sp.seeds):
        out["seeds"] = f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({space}: {len(sp.seeds)})"
    for k in sorted((TRAINING_BUDGET_KEYS | set(prof.budget)) - {"eval_every", "checkpoint_every"}):
        if fixed.get(k) != prof.budget.get(k):
            unset = "the dataset's" if k != "epochs" else "-"
            out[k] = f"{k} {fixed.get(k, unset)} ({profile}: {prof.budget.get(k, unset)})"
    return out


def budget_words(changes: dict[str, str]) -> str:
    """'full budget', or 'custom budget: <what differs>' (the ``budget`` tag of a sweep's runs)."""
    return "full budget" if not changes else "custom budget: " + "; ".join(changes.values())


def expand(name: str, profile: str = DEFAULT_PROFILE, *, datasets: list[str] | None = None,
           epochs: int | None = None, num_samples: int | None = None,
           seeds: list[int] | None = None, sets: dict[str, Any] | None = None,
           data_dir: str | None = None, selection: str | Path | None = None,
           cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
           max_concurrent: int | None = None, search_seed: int = 0,
           early_stopping: bool | None = None) -> Plan:
    """Merge space ``name`` with ``profile`` and the overrides, and validate the result.
    Raises SpaceError (one line) for anything that cannot run."""
    if name not in SPACES:
        raise SpaceError(f"unknown space {name!r}; choose one of: {', '.join(SPACES)} (see --list)")
    if profile not in PROFILES:
        raise SpaceError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    space, prof = SPACES[name], PROFILES[profile]
    missing = [m for m in space.methods if m not in METHODS]
    if missing:
        raise SpaceError(f"space {name}: method{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} not available (registered: {', '.join(sorted(METHODS))})")
    sets = dict(sets or {})
    params = {**space.params, **space.by_profile.get(profile, {})}
    clash = sorted(set(sets) & set(params))
    if clash:
        raise SpaceError(f"--set {', '.join(clash)}: searched by space {name}; choose another space "
                         f"or leave it to the search")
    placed = [k for k in PLACED_BY if k in sets]
    if placed:  # run_configs sets these for every run: a --set of them would be silently ignored
        raise SpaceError("--set " + "; ".join(f"{k}: a sweep cannot fix it ({PLACED_BY[k]})" for k in placed))

    fixed = layered(prof.budget, space.fixed)
    if epochs is not None:
        fixed["epochs"] = epochs
    if data_dir is not None:
        try:
            fixed["data_dir"] = resolve_data_dir(data_dir)
        except DatasetError as e:
            raise SpaceError(f"--data-dir: {e}") from None
    fixed = layered(fixed, sets)
    try:
        epochs_budget = int(fixed.get("epochs", 1))
        if epochs_budget != float(fixed.get("epochs", 1)):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise SpaceError(f"epochs={fixed.get('epochs')!r} is not a valid int") from None
    # Validation and checkpoints every `eval_every` epochs must not exceed the budget.
    for k in ("eval_every", "checkpoint_every"):
        if k in fixed and k not in sets and fixed.get(k) is not None:
            fixed[k] = min(int(fixed[k]), epochs_budget)

    method_configs: dict[str, dict[str, Any]] = {}
    source = ""
    if space.selection:
        path = Path(selection) if selection else selection_path()
        if path.exists():
            try:
                chosen = selected_configs(path)
            except SelectionError as e:
                raise SpaceError(str(e)) from None
            method_configs = {m: chosen.get(m, {}) for m in space.methods}
            absent = [m for m in space.methods if m not in chosen]
            source = f"selection file {path}" + (
                f" (official defaults for {', '.join(absent)})" if absent else "")
        elif selection:
            raise SpaceError(f"selection file {path} does not exist")
        else:
            method_configs = {m: {} for m in space.methods}
            source = f"paper/official defaults (no selection file at {path})"

    grids = [k for k, d in params.items() if isinstance(d, Grid)]
    searcher = "grid" if grids else "optuna"
    if grids and len(grids) != len(params):
        raise SpaceError(f"space {name}: mixes grids and distributions")
    for k, d in params.items():
        msg = d.check()
        if msg:
            raise SpaceError(f"space {name}: parameter {k}: {msg}")
    n = num_samples if num_samples is not None else (
        1 if searcher == "grid" else (space.num_samples or prof.num_samples))
    if n < 1:
        raise SpaceError(f"--num-samples must be >= 1 (got {n})")
    seeds_t = tuple(seeds) if seeds else space.seeds
    ds = tuple(datasets) if datasets else prof.datasets
    if len(set(ds)) != len(ds) or not ds:
        raise SpaceError(f"datasets must be distinct and non-empty (got {', '.join(ds)})")

    asha = None
    # An ablation is a grid whose every point must train its full budget: ASHA only on request.
    # A searched space stops weak trials early unless asked not to.
    if early_stopping is None:
        early_stopping = searcher != "grid"
    if space.asha and early_stopping and epochs_budget > 1:
        grace = space.grace_period or prof.grace_period
        asha = {"time_attr": "epoch", "grace_period": min(grace, epochs_budget),
                "reduction_factor": space.reduction_factor or prof.reduction_factor,
                "max_t": epochs_budget}
    plan = Plan(
        space=name, description=space.description, profile=profile, methods=space.methods,
        datasets=ds, seeds=seeds_t, fixed=fixed, method_configs=method_configs,
        selection_source=source, params=params, helpers=space.helpers, searcher=searcher,
        num_samples=n, asha=asha,
        cpus_per_trial=cpus_per_trial if cpus_per_trial is not None else space.cpus_per_trial,
        gpus_per_trial=gpus_per_trial if gpus_per_trial is not None else space.gpus_per_trial,
        max_concurrent=max_concurrent if max_concurrent is not None else prof.max_concurrent,
        search_seed=search_seed,
    )
    if plan.cpus_per_trial <= 0 or plan.gpus_per_trial < 0:
        raise SpaceError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if plan.max_concurrent < 1:
        raise SpaceError("--max-concurrent must be >= 1")
    if len(set(plan.seeds)) != len(plan.seeds) or any(not 0 <= s < 2**32 for s in plan.seeds):
        raise SpaceError(f"seeds must be distinct and between 0 and 2**32 - 1 (got {', '.join(map(str, plan.seeds))})")
    if not 0 <= plan.search_seed < 2**32:
        raise SpaceError(f"the search seed must be between 0 and 2**32 - 1 (got {plan.search_seed})")
    validate(plan)
    return plan


STEP_KEYS = ("batch_size", "images_per_step")  # two spellings of one setting: the step's size


def layered(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge config layers, later over earlier. The step size is one setting with two spellings
    (views: batch_size; images: images_per_step), so a layer that sets either replaces both:
    a profile's images_per_step wins over a selection's batch_size, and --set batch_size over a
    profile's images_per_step, instead of the two meeting as a conflict."""
    out: dict[str, Any] = {}
    for layer in layers:
        if any(k in layer for k in STEP_KEYS):
            for k in STEP_KEYS:
                out.pop(k, None)
        out.update(layer)
    return out


def run_configs(plan: Plan, point: dict[str, Any]) -> list[dict[str, Any]]:
    """The user configs of one trial: one per (dataset, seed), for the searched/grid ``point``,
    layered in the precedence order stated once in trainables/config.py (``plan.fixed`` holds the
    profile's budget < the space's fixed values < the command line, merged by ``expand``).
    Helper keys (they only steer a Switch) are dropped."""
    point = {k: v for k, v in point.items() if k not in plan.helpers}
    method = point.get("method", plan.methods[0])
    base = {**layered(plan.method_configs.get(method, {}), plan.fixed, point), "method": method}
    return [{**base, "dataset": d, "seed": s} for d in plan.datasets for s in plan.seeds]


def trial_cost(plan: Plan, point: dict[str, Any]) -> float:
    """A trial's relative training cost: epochs x network passes per training image
    (``Method.passes_per_image``: a pass per view encoded, another per view decoded), summed over
    its runs (0 for a method that does not train). An epoch covers the same images whatever the
    method, so its compute grows with the passes per image: SimVAE's J = 10 views, each encoded
    and decoded, are 20; CR-VAE's x and t(x) 4; a VAE's 2; SimCLR's two views 2."""
    from trainables.config import resolve_config

    total = 0.0
    for cfg in run_configs(plan, point):
        c = resolve_config(cfg)
        total += c["epochs"] * METHODS[c["method"]].passes_per_image(c)
    return total


def launch_order(plan: Plan) -> list | None:
    """A single grid's values, costliest trial first (longest-processing-time first: with fewer
    slots than trials, the long trial does not start last and run alone while cores idle).
    Ties keep the space's order. None for searched spaces and multi-parameter grids."""
    if plan.searcher != "grid" or len(plan.params) != 1:
        return None
    (name,) = plan.params
    values = list(plan.params[name].values)
    costs = [trial_cost(plan, {name: v}) for v in values]
    return [v for _, _, v in sorted(zip((-c for c in costs), range(len(values)), values))]


def sample_points(plan: Plan) -> list[dict[str, Any]]:
    """Points to validate before anything runs: every grid point, or, for searched spaces,
    each parameter at each of its corners (bounds / choices) with the others at their first."""
    names = list(plan.params)
    if plan.searcher == "grid":
        return [dict(zip(names, vals)) for vals in itertools.product(*(plan.params[k].values for k in names))]

    def fill(point: dict) -> dict:
        out = {}
        for k in names:
            out[k] = point[k] if k in point else plan.params[k].first(out)
        return out

    points = [fill({})]
    for k in names:
        d = plan.params[k]
        if isinstance(d, Switch):
            for value, case in d.cases:
                base = fill({d.on: value})
                for c in (case.corners() or [None]):
                    points.append(fill({d.on: value, k: c}) if c is not None else base)
        else:
            for c in d.corners():
                points.append(fill({k: c}))
    return points


def validate(plan: Plan) -> None:
    """resolve_config on every config the plan can produce (at the bounds for searched
    parameters). Raises SpaceError naming the space and the bad value."""
    from trainables.config import ConfigError, resolve_config

    for point in sample_points(plan):
        for cfg in run_configs(plan, point):
            try:
                resolve_config(cfg)
            except ConfigError as e:
                where = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise SpaceError(f"space {plan.space} ({plan.profile}): {e}"
                                 + (f" [at {where}]" if where else "")) from None


def describe(plan: Plan) -> str:
    """The fully expanded space, for --show and the start of a sweep."""
    lines = [f"space {plan.space}: {plan.description}",
             f"  profile     {plan.profile} ({PROFILES[plan.profile].description})",
             f"  methods     {', '.join(plan.methods)}",
             f"  datasets    {', '.join(plan.datasets)}",
             f"  seeds       {', '.join(map(str, plan.seeds))} (all inside each trial)",
             f"  searcher    {'Tune grid search' if plan.searcher == 'grid' else f'Optuna TPE (seed {plan.search_seed})'}, "
             f"{plan.n_trials} trial{'s' if plan.n_trials != 1 else ''}, at most {plan.max_concurrent} at once",
             "  scheduler   " + (f"ASHA on val_acc_knn_mean per epoch: grace period {plan.asha['grace_period']}, "
                                 f"reduction factor {plan.asha['reduction_factor']}, max {plan.asha['max_t']} epochs"
                                 if plan.asha else "none (every trial trains its full budget)"),
             f"  resources   {plan.cpus_per_trial:g} CPU, {plan.gpus_per_trial:g} GPU per trial"]
    order = launch_order(plan)
    if order is not None and len(order) > 1:
        lines.append(f"  order       costliest first: {', '.join(map(str, order))}")
    lines.append("  searched:")
    for k, d in plan.params.items():
        lines.append(f"    {k:<18} {d.describe()}{'  (helper: not a config key)' if k in plan.helpers else ''}")
    lines.append("  fixed:")
    for k, v in sorted(plan.fixed.items()):
        lines.append(f"    {k:<18} {v!r}")
    if plan.selection_source:
        lines.append(f"  method configs from {plan.selection_source}:")
        for m, c in plan.method_configs.items():
            lines.append(f"    {m:<18} {c if c else '(defaults)'}")
    return "\n".join(lines)


def listing() -> str:
    """--list: one line per space."""
    width = max(map(len, SPACES))
    return "\n".join(f"{n:<{width}}  {s.description}" for n, s in SPACES.items())
