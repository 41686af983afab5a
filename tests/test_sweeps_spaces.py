"""sweeps.spaces: every registered space expands and validates; overrides, selection file,
conditional parameters and the selection searcher's bookkeeping (no Ray cluster needed)."""
from __future__ import annotations

import json
from dataclasses import replace

import optuna
import pytest

from models import METHODS
from sweeps import spaces
from sweeps.spaces import (PROFILES, SPACES, Categorical, Grid, LogUniform, SpaceError, Switch,
                           Uniform, expand, run_configs, sample_points)
from trainables.config import resolve_config


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("name", list(SPACES))
def test_every_space_expands_and_validates(name, profile):
    plan = expand(name, profile)
    assert plan.datasets == PROFILES[profile].datasets
    assert plan.n_trials >= 1
    # Every config the validation samples is accepted by the trainable's own resolver, and
    # every searched key lands in the run config (helpers excepted).
    for point in sample_points(plan):
        for cfg in run_configs(plan, point):
            resolved = resolve_config(cfg)
            for k, v in point.items():
                if k not in plan.helpers:
                    assert resolved[k] == pytest.approx(v) if isinstance(v, float) else resolved[k] == v
    text = spaces.describe(plan)
    for k in plan.params:
        assert k in text


def test_required_spaces_exist():
    required = {"simvae_J", "simvae_sigma2", "simvae_lr", "simvae_likelihood", "vae_lr", "betavae_beta",
                "crvae_gamma", "simclr_temperature", "moco_temperature", "vicreg_coeffs", "table1"}
    assert required <= set(SPACES)
    for m, cls in METHODS.items():
        if cls.trainable:
            assert f"{m}_lr" in SPACES


def test_listing_has_one_line_per_space():
    lines = spaces.listing().splitlines()
    assert len(lines) == len(SPACES)
    assert all(line.split()[0] in SPACES for line in lines)


def test_quick_profile_and_overrides():
    plan = expand("simvae_J", "quick", datasets=["digits"], epochs=3, seeds=[1, 2],
                  sets={"train_size": 100, "sigma2": 0.3})
    assert plan.searcher == "grid" and plan.n_trials == 3 and plan.num_samples == 1
    assert plan.asha is None  # a grid trains every point to its full budget
    assert replace(plan, asha=None) == plan
    asha = expand("simvae_J", "quick", datasets=["digits"], epochs=6, early_stopping=True).asha
    assert asha == {"time_attr": "epoch", "grace_period": 2, "reduction_factor": 3, "max_t": 6}
    assert expand("simvae_J", "laptop", epochs=3, early_stopping=True).asha["grace_period"] == 3  # capped
    cfgs = run_configs(plan, {"J": 8})
    assert [(c["dataset"], c["seed"]) for c in cfgs] == [("digits", 1), ("digits", 2)]
    assert all(c["J"] == 8 and c["sigma2"] == 0.3 and c["epochs"] == 3 and c["train_size"] == 100
               for c in cfgs)
    assert expand("simvae_J", "paper").params["J"].values[0] == 2  # paper: a finer grid up to 20
    assert max(expand("simvae_J", "paper").params["J"].values) == 20


@pytest.mark.parametrize("kwargs, fragment", [
    ({"sets": {"lr": -1.0}}, "lr=-1.0 is invalid"),
    ({"sets": {"no_such_key": 1}}, "unknown key no_such_key"),
    ({"datasets": ["nope"]}, "unknown dataset 'nope'"),
    ({"sets": {"sigma2": 0.1}}, "searched by space simvae_sigma2"),
    ({"num_samples": 0}, "--num-samples"),
])
def test_bad_overrides_raise_one_line(kwargs, fragment):
    with pytest.raises(SpaceError) as e:
        expand("simvae_sigma2", "quick", **kwargs)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_unknown_space_and_profile():
    with pytest.raises(SpaceError, match="unknown space 'nope'"):
        expand("nope")
    with pytest.raises(SpaceError, match="unknown profile"):
        expand("vae_lr", "huge")


def test_bounds_are_validated(monkeypatch):
    # A searched range that leaves the valid region fails at its bound, before anything runs.
    bad = spaces.Space("bad_beta", "test", ("betavae",), {"beta": Uniform(-1.0, 2.0)})
    monkeypatch.setitem(SPACES, "bad_beta", bad)
    with pytest.raises(SpaceError, match=r"beta=-1.0 is invalid.*\[at beta=-1.0\]"):
        expand("bad_beta", "quick")
    inverted = spaces.Space("bad_range", "test", ("vae",), {"lr": LogUniform(1e-2, 1e-4)})
    monkeypatch.setitem(SPACES, "bad_range", inverted)
    with pytest.raises(SpaceError, match="0 < low < high"):
        expand("bad_range", "quick")


def test_table1_reads_the_selection_file(tmp_path):
    plan = expand("table1", "quick", selection=None)
    assert "defaults" in plan.selection_source or "selection file" in plan.selection_source
    f = tmp_path / "selection.yaml"
    f.write_text("simvae:\n  config: {J: 4, sigma2: 0.3, lr: 0.002, epochs: 999}\n  acc_mlp_mean: 0.9\n"
                 "betavae:\n  config: {beta: 2.0}\n")
    plan = expand("table1", "quick", selection=f)
    assert plan.seeds == (0, 1, 2) and plan.asha is None
    assert plan.method_configs["simvae"] == {"J": 4, "sigma2": 0.3, "lr": 0.002}  # budget keys dropped
    cfgs = run_configs(plan, {"method": "simvae"})
    assert len(cfgs) == len(plan.datasets) * 3
    assert all(c["J"] == 4 and c["epochs"] == PROFILES["quick"].budget["epochs"] for c in cfgs)
    assert run_configs(plan, {"method": "betavae"})[0]["beta"] == 2.0
    assert "official defaults for" in plan.selection_source
    with pytest.raises(SpaceError, match="does not exist"):
        expand("table1", "quick", selection=tmp_path / "missing.yaml")


def test_conditional_and_tied_parameters_by_define_by_run():
    from sweeps.search import DefineByRun

    plan = expand("vicreg_coeffs", "quick")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    fn = DefineByRun(plan.params)
    seen = set()
    for _ in range(12):
        trial = study.ask()
        constants = fn(trial)
        point = {**trial.params, **constants}
        seen.add(point["tie_mu"])
        if point["tie_mu"]:
            assert "mu_var" not in trial.params and point["mu_var"] == point["lambda_inv"]
        else:
            assert 5.0 <= trial.params["mu_var"] <= 50.0
        cfg = run_configs(plan, point)[0]
        assert "tie_mu" not in cfg and resolve_config(cfg)["mu_var"] == point["mu_var"]
        study.tell(trial, 0.5)
    assert seen == {True, False}
    # Validation walks both branches of the switch.
    assert {p["tie_mu"] for p in sample_points(plan)} == {True, False}


def test_sample_points_cover_bounds_and_choices():
    params = {"sigma2": LogUniform(0.01, 0.5), "prior": Categorical(("gaussian", "uniform")),
              "J": Switch("prior", (("gaussian", Categorical((2, 3))), ("uniform", Categorical((5,)))))}
    plan = replace(expand("simvae_sigma2", "quick"), params=params)
    pts = sample_points(plan)
    assert {p["sigma2"] for p in pts} == {0.01, 0.5}
    assert {p["prior"] for p in pts} == {"gaussian", "uniform"}
    assert {(p["prior"], p["J"]) for p in pts} == {("gaussian", 2), ("gaussian", 3), ("uniform", 5)}
    grid = replace(plan, params={"J": Grid((2, 4)), "sigma2": Grid((0.1, 0.2))}, searcher="grid")
    assert len(sample_points(grid)) == 4


def test_tpe_is_seeded_through_its_sampler():
    from sweeps.search import selection_search

    plan = expand("simvae_sigma2", "quick", num_samples=8)

    def draws():
        s = selection_search(plan)
        return [s.suggest(f"t{i}")["sigma2"] for i in range(4)]

    a, b = draws(), draws()
    assert a == b and all(1e-3 <= v <= 1.0 for v in a)
    assert len(set(a)) == 4
    other = replace(plan, search_seed=1)
    assert selection_search(other).suggest("t0")["sigma2"] != a[0]


def test_selection_search_learns_mlp_mean_and_prunes_stopped_trials():
    from sweeps.schema import ASHA_METRIC, SELECTION_METRIC
    from sweeps.search import selection_search

    search = selection_search(expand("simvae_sigma2", "quick", num_samples=8))
    for t in ("a", "b", "c"):
        search.suggest(t)
    for t, vals in (("a", [0.3, 0.5]), ("b", [0.2]), ("c", [0.4])):
        for epoch, v in enumerate(vals, 1):
            search.on_trial_result(t, {ASHA_METRIC: v, "epoch": epoch})
        search.on_trial_result(t, {ASHA_METRIC: vals[-1], "epoch": len(vals)})  # a restored duplicate
    search.on_trial_complete("a", {ASHA_METRIC: 0.5, SELECTION_METRIC: 0.8, "epoch": 2})  # full budget
    search.on_trial_complete("b", {ASHA_METRIC: 0.2, "epoch": 1})  # stopped by ASHA
    search.on_trial_complete("c", error=True)
    trials = {t.number: t for t in search._ot_study.get_trials()}
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].value == 0.8
    assert trials[0].intermediate_values == {1: 0.3, 2: 0.5}
    assert trials[1].state == optuna.trial.TrialState.PRUNED and trials[1].intermediate_values == {1: 0.2}
    assert trials[2].state == optuna.trial.TrialState.FAIL




def test_the_search_hears_the_epoch_that_stops_a_trial():
    """Tune hands the result that stops a trial -- ASHA's rung, or the last epoch reported with the
    final evaluation -- to on_trial_complete only: the study's curve still ends at that epoch."""
    from sweeps.schema import ASHA_METRIC, SELECTION_METRIC
    from sweeps.search import selection_search

    search = selection_search(expand("simvae_sigma2", "quick", num_samples=8))
    for t in ("done", "stopped"):
        search.suggest(t)
    for epoch in (1, 2, 3):
        search.on_trial_result("done", {ASHA_METRIC: 0.1 * epoch, "epoch": epoch})
    search.on_trial_complete("done", {ASHA_METRIC: 0.4, SELECTION_METRIC: 0.8, "epoch": 4, "done": True})
    for epoch in (1, 2, 3):
        search.on_trial_result("stopped", {ASHA_METRIC: 0.05 * epoch, "epoch": epoch})
    search.on_trial_complete("stopped", {ASHA_METRIC: 0.2, "epoch": 4, "done": True})  # ASHA's rung at epoch 4
    done, stopped = search._ot_study.get_trials()
    assert done.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4} and done.value == 0.8
    assert stopped.intermediate_values == {1: 0.05, 2: 0.1, 3: 0.15, 4: 0.2}
    assert stopped.state == optuna.trial.TrialState.PRUNED


class _Trial:
    """What GridStudy reads of a Tune trial."""

    def __init__(self, trial_id, **config):
        self.trial_id, self.config, self.last_result = trial_id, config, None


def test_a_grid_sweep_keeps_an_optuna_study_too(tmp_path):
    """A grid has no searcher: the driver records the grid points as an Optuna study (the
    grid values as parameters, every epoch's validation accuracy, the verdict), continued by a
    resumed sweep, so optuna-dashboard and importance.py read every sweep alike."""
    import pickle

    from sweeps.schema import ASHA_METRIC, SELECTION_METRIC
    from sweeps.search import GridStudy

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = GridStudy(url, "simvae_J-quick-x", {"J": [2, 4, 8]}, {"space": "simvae_J"})
    trials = {J: _Trial(f"t{J}", J=J, method="simvae") for J in (8, 4, 2)}
    for J, t in trials.items():
        study.on_trial_start(0, [], t)
    for epoch in (1, 2):
        for t in trials.values():
            study.on_trial_result(0, [], t, {ASHA_METRIC: 0.1 * epoch, "epoch": epoch})
    trials[8].last_result = {ASHA_METRIC: 0.3, SELECTION_METRIC: 0.9, "epoch": 3, "done": True}
    study.on_trial_complete(0, [], trials[8])
    study.on_trial_error(0, [], trials[2])
    resumed = pickle.loads(pickle.dumps(study))  # Tune restores its callbacks from the experiment
    resumed.on_trial_start(0, [], trials[4])  # a restored trial: the same Optuna trial
    resumed.on_trial_result(0, [], trials[4], {ASHA_METRIC: 0.2, "epoch": 2})  # reported twice: kept once
    trials[4].last_result = {ASHA_METRIC: 0.25, "epoch": 3, "done": True}  # stopped (--early-stopping)
    resumed.on_trial_complete(0, [], trials[4])
    got = {t.params["J"]: t for t in optuna.load_study(study_name="simvae_J-quick-x", storage=url).get_trials()}
    assert sorted(got) == [2, 4, 8]
    assert got[8].state == optuna.trial.TrialState.COMPLETE and got[8].value == 0.9
    assert got[8].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}  # the last epoch too
    assert got[4].state == optuna.trial.TrialState.PRUNED and got[4].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.25}
    assert got[2].state == optuna.trial.TrialState.FAIL
    assert {t.user_attrs["tune_trial_id"] for t in got.values()} == {"t2", "t4", "t8"}


@pytest.mark.parametrize("space, profile, overrides, changes", [
    ("simvae_J", "quick", {}, {}),
    ("simvae_J", "quick", {"seeds": [0, 1, 2]}, {}),  # more seeds than the space's: still its full budget
    ("simvae_J", "quick", {"num_samples": 2, "max_concurrent": 1}, {}),  # how many and how fast, not how much
    ("simvae_J", "laptop", {"epochs": 1, "datasets": ["mnist"], "seeds": [0]},
     {"datasets": "datasets mnist (laptop: mnist, fashionmnist)", "epochs": "epochs 1 (laptop: 20)"}),
    ("simvae_J", "quick", {"datasets": ["shapes", "digits"]}, {}),  # the profile's datasets, another order
    ("simvae_J", "quick", {"sets": {"train_size": 96}}, {"train_size": "train_size 96 (quick: the dataset's)"}),
    ("vae_lr", "quick", {"epochs": 40}, {"epochs": "epochs 40 (quick: 20)"}),
    ("table1", "quick", {"seeds": [0]}, {"seeds": "1 seed (table1: 3)"}),
    ("simvae_J", "quick", {"sets": {"probe_epochs": 3, "eval_every": 2}}, {"probe_epochs": "probe_epochs 3 (quick: 20)"}),
])
def test_a_sweep_knows_whether_it_ran_at_its_profiles_full_budget(space, profile, overrides, changes):
    from sweeps.spaces import budget_words

    plan = expand(space, profile, **overrides)
    assert plan.budget_changes() == changes
    assert budget_words(plan.budget_changes()) == ("full budget" if not changes else
                                                    "custom budget: " + "; ".join(changes.values()))


def test_every_trainable_registered_method_has_a_learning_rate_space():
    trainable = [m for m, cls in METHODS.items() if cls.trainable]
    assert trainable and all(f"{m}_lr" in SPACES and SPACES[f"{m}_lr"].methods == (m,) for m in trainable)
    assert "random_lr" not in SPACES
    assert SPACES["table1"].methods == tuple(METHODS)  # every method, in the registry's order


@pytest.mark.parametrize("name", ["simvae_J", "vicreg_coeffs", "table1", "moco_temperature"])
def test_the_plan_round_trips_through_json(name):
    plan = expand(name, "quick", sets={"train_size": 100}, seeds=[0, 3])
    back = spaces.Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan
    assert sample_points(back) == sample_points(plan)


def test_precedence_is_the_one_stated_order(tmp_path):
    """Later wins: selection < profile budget < space fixed < command line < the searched point,
    then (in resolve_config) those user values over the dataset budget over the defaults."""
    sel = tmp_path / "selection.yaml"
    sel.write_text("betavae:\n  config: {beta: 9.0, likelihood_scale: 9.0, adam_eps: 0.001, batch_size: 64, "
                   "epochs: 99}\n")
    spaces.register(spaces.Space("precedence_test", "test only", ("betavae",), {"lr": Grid((0.01,))},
                                 fixed={"beta": 2.0, "likelihood_scale": 3.0}, selection=True))
    try:
        plan = expand("precedence_test", "quick", epochs=3, sets={"likelihood_scale": 5.0},
                      datasets=["digits"], selection=str(sel))
        (user,) = run_configs(plan, {"lr": 0.01})
    finally:
        SPACES.pop("precedence_test")
    assert user["adam_eps"] == 0.001  # only the selection sets it
    # The quick profile's step size over the selection's: images_per_step replaces batch_size
    # (one setting, two spellings), so they never meet as a conflict.
    assert user["images_per_step"] == 16 and "batch_size" not in user
    assert user["beta"] == 2.0  # the space's fixed value over the selection
    assert user["likelihood_scale"] == 5.0  # --set over the space's fixed value
    assert user["epochs"] == 3  # --epochs over the profile (and the selection never sets budgets)
    assert user["lr"] == 0.01  # the point
    cfg = resolve_config(user)
    assert cfg["lr"] == 0.01 and cfg["epochs"] == 3  # the user's over the dataset budget (1e-3, 20)
    assert resolve_config({"method": "betavae", "dataset": "digits"})["lr"] == 1e-3  # budget over COMMON
    assert resolve_config({"method": "betavae", "dataset": "mnist"})["lr"] == 8e-5
    assert resolve_config({"method": "betavae", "dataset": "digits"})["adam_eps"] == 1e-4  # COMMON default


def test_a_grid_trains_every_point_to_its_full_budget_unless_asked():
    assert expand("simvae_J", "quick").asha is None  # an ablation keeps every grid point
    assert expand("simvae_J", "quick", early_stopping=True).asha is not None  # --early-stopping opts in
    assert expand("simvae_sigma2", "quick").asha is not None  # a searched space stops weak trials early
    assert expand("simvae_sigma2", "quick", early_stopping=False).asha is None


@pytest.mark.parametrize("name, profile, sets, first, last", [
    ("table1", "quick", {}, "simvae", None),   # J = 10 views per image: the longest trial
    ("simvae_J", "quick", {}, 8, 2),
    ("simvae_J", "paper", {}, 20, 2),
    ("simvae_J", "laptop", {"images_per_step": 16}, 8, 2),
])
def test_a_grid_launches_its_costliest_trial_first(name, profile, sets, first, last):
    """With fewer slots than trials, the longest trial must not start last (it would then run
    alone while the other cores idle): one grid's values launch in decreasing cost, ties in the
    space's order, and the untrained baselines last."""
    plan = expand(name, profile, sets=sets)
    order = spaces.launch_order(plan)
    (param,) = plan.params
    assert sorted(map(repr, order)) == sorted(map(repr, plan.params[param].values))
    costs = [spaces.trial_cost(plan, {param: v}) for v in order]
    assert costs == sorted(costs, reverse=True)
    assert order[0] == first
    if last is not None:
        assert order[-1] == last
    if param == "method":
        untrained = [m for m in order if not METHODS[m].trainable]
        assert order[-len(untrained):] == untrained == [m for m in plan.params[param].values if m in untrained]
        assert spaces.trial_cost(plan, {param: "simvae"}) == 10 * spaces.trial_cost(plan, {param: "vae"})
        # CR-VAE encodes and decodes x and t(x): twice a VAE's step, though its J is 1 (its
        # laptop trial took 30 min against the VAE's 14); SimCLR's two views are not decoded.
        assert spaces.trial_cost(plan, {param: "crvae"}) == 2 * spaces.trial_cost(plan, {param: "vae"})
        assert spaces.trial_cost(plan, {param: "simclr"}) == spaces.trial_cost(plan, {param: "vae"})
        assert order[:2] == ["simvae", "crvae"]
    # Tune receives exactly that order.
    from sweeps import search
    assert search.param_space(plan, order)[param]["grid_search"] == order


def test_searched_spaces_and_multi_grids_keep_the_searchers_order():
    assert spaces.launch_order(expand("simvae_sigma2", "quick")) is None
    plan = replace(expand("simvae_J", "quick"), params={"J": Grid((2, 4)), "sigma2": Grid((0.1, 1.0))})
    assert spaces.launch_order(plan) is None


@pytest.mark.parametrize("layers, expected", [
    (({"batch_size": 64}, {"images_per_step": 16}), {"images_per_step": 16}),  # profile over selection
    (({"images_per_step": 16}, {"batch_size": 64}), {"batch_size": 64}),  # --set over profile
    (({"images_per_step": 16, "lr": 1.0}, {"lr": 2.0}), {"images_per_step": 16, "lr": 2.0}),  # untouched
    (({"batch_size": 64}, {}, {"batch_size": 32, "images_per_step": 8}), {"batch_size": 32, "images_per_step": 8}),
])
def test_a_layer_that_sets_the_step_size_replaces_both_spellings(layers, expected):
    assert spaces.layered(*layers) == expected


@pytest.mark.parametrize("profile", ["quick", "laptop", "paper"])
@pytest.mark.parametrize("step", [{"batch_size": 64}, {"images_per_step": 8}])
def test_a_selected_step_size_never_conflicts_with_a_profile(tmp_path, profile, step):
    """A selection written under one profile (say batch_size 64) used by table1 under another
    (which counts images per step): the profile's step size wins, the run resolves."""
    sel = tmp_path / "selection.yaml"
    sel.write_text("simvae:\n  config: {J: 4, %s: %d}\n" % next(iter(step.items())))
    plan = expand("table1", profile, selection=str(sel))
    (cfg, *_) = run_configs(plan, {"method": "simvae"})
    resolved = resolve_config(cfg)
    budget = {**PROFILES[profile].budget}
    if any(k in budget for k in spaces.STEP_KEYS):
        assert {k: cfg.get(k) for k in spaces.STEP_KEYS if k in cfg} == {k: budget[k] for k in spaces.STEP_KEYS
                                                                          if k in budget}
    else:
        assert {k: cfg[k] for k in step} == step
    assert resolved["batch_size"] == resolved["J"] * (resolved["images_per_step"] or resolved["batch_size"] // 4)
