"""analysis/ on a synthetic MLflow store built with MlflowClient in sweeps' exact layout (parent
runs + child runs with those tags, JSON-encoded params, per-epoch and final metrics) with known
values: the selection ranking, means and standard errors, the Table 1 contents, the Welch test,
the ablation aggregates, the result.json fallback (tests/test_analysis_files.py), and that figures
and reports are written.

One store per module (SQLite creation costs ~1-2 s)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent

# -- the synthetic store ------------------------------------------------------------------------

# simvae_J, latest sweep: trial -> (J, {dataset: [acc_mlp per seed 0, 1]}, config_hash)
J_TRIALS = {
    "t1": (2, {"digits": [0.60, 0.62], "shapes": [0.50, 0.54]}, "c00000000002"),
    "t2": (4, {"digits": [0.70, 0.74], "shapes": [0.60, 0.62]}, "c00000000004"),
    "t3": (8, {"digits": [0.80, 0.78], "shapes": [0.70, 0.66]}, "c00000000008"),
    "t4": (16, {"digits": [0.75, 0.77], "shapes": [0.71, 0.69]}, "c00000000016"),
    # the same score as t3 (0.735): a tie, broken by the hash (t3's sorts first)
    "t8": (10, {"digits": [0.79, 0.79], "shapes": [0.68, 0.68]}, "c00000000010"),
    # only one dataset: flagged, never ranked, although its mean is the highest
    "t7": (20, {"digits": [0.95, 0.95]}, "c00000000020"),
}
STOPPED = ("t5", 12, "c00000000012")  # ASHA-stopped, with an (ineligible) high acc_mlp
FAILED = ("t6", 6, "c00000000006")
OLD_SWEEP = {"t0": (3, {"digits": [0.99, 0.99], "shapes": [0.99, 0.99]}, "c00000000003")}

T1_METHODS = ("simvae", "vae", "simclr", "random")
T1_SEEDS = (0, 1, 2)
_rng = np.random.default_rng(7)
_base = {"simvae": 0.80, "vae": 0.74, "simclr": 0.77, "random": 0.40}
# table1: (method, dataset) -> {metric: [per seed]}
T1 = {(m, d): {"acc_mlp": list(np.round(_base[m] + (0.05 if d == "shapes" else 0) + _rng.normal(0, 0.01, 3), 4)),
               "acc_knn": list(np.round(_base[m] - 0.02 + _rng.normal(0, 0.02, 3), 4)),
               "style_aug_mean": list(np.round({"simvae": 0.5, "vae": 0.45, "simclr": 0.2, "random": 0.3}[m]
                                               + _rng.normal(0, 0.01, 3), 4)),
               "style_aug_scale_r2": list(np.round(_rng.uniform(0, 0.6, 3), 4)),
               "style_aug_flip_acc": list(np.round(_rng.uniform(0.5, 0.9, 3), 4))}
      for m in T1_METHODS for d in ("digits", "shapes")}
BETAS = (0.15, 0.4, 1.1, 2.7, 6.0, 14.0)


def beta_acc(beta: float, dataset: str) -> float:
    return round(0.7 - 0.02 * (math.log(beta) - 0.5) ** 2 + (0.03 if dataset == "shapes" else 0.0), 6)


def _config(method, dataset, seed, **extra):
    return {"method": method, "dataset": dataset, "seed": seed, "epochs": 3, "lr": 0.001, "batch_size": 64,
            "latent_dim": 10, "prior": "gaussian", "sigma2": 0.15, "device": None, **extra}


def j_runs():
    """The latest simvae_J sweep's runs, as keyword arguments of ``_child``."""
    for trial, (J, vals, chash) in J_TRIALS.items():
        for d, accs in vals.items():
            for seed, a in enumerate(accs):
                yield dict(trial=trial, method="simvae", dataset=d, seed=seed, chash=chash,
                           config=_config("simvae", d, seed, J=J),
                           final={"acc_mlp": a, "acc_knn": a - 0.05, "recon_error": 20.0 + J})
    trial, J, chash = STOPPED
    for d in ("digits", "shapes"):
        for seed in (0, 1):
            yield dict(trial=trial, method="simvae", dataset=d, seed=seed, chash=chash,
                       config=_config("simvae", d, seed, J=J), final={"acc_mlp": 0.99}, stopped=True, epochs=1)
    trial, J, chash = FAILED
    yield dict(trial=trial, method="simvae", dataset="digits", seed=0, chash=chash,
               config=_config("simvae", "digits", 0, J=J), final={"acc_mlp": 0.97}, status="FAILED",
               error="NonFiniteLoss: loss became nan")


def t1_runs():
    """The table1 sweep's runs, as keyword arguments of ``_child``."""
    for m in T1_METHODS:
        for d in ("digits", "shapes"):
            for seed in T1_SEEDS:
                yield dict(trial=f"tt_{m}", method=m, dataset=d, seed=seed, chash=f"h_{m}", config=_config(m, d, seed),
                           final={k: v[seed] for k, v in T1[(m, d)].items()})
    # a failed extra seed of simclr: must not enter the table
    yield dict(trial="tt_simclr", method="simclr", dataset="digits", seed=3, chash="h_simclr",
               config=_config("simclr", "digits", 3), final={"acc_mlp": 0.0, "acc_knn": 0.0}, status="FAILED",
               error="boom")


def _child(c, exp, parent, trial, method, dataset, seed, chash, config, final, *, status="FINISHED",
           stopped=False, error=None, epochs=3, sweep="sweep"):
    from mlflow.entities import Metric, Param, RunTag

    tags = {"mlflow.parentRunId": parent, "space": "x", "profile": "quick", "config_hash": chash,
            "git_commit": "abc", "sweep": sweep, "method": method, "trial_id": trial, "dataset": dataset,
            "seed": str(seed)}
    run = c.create_run(exp, run_name=f"{trial}-{dataset}-s{seed}", tags=tags)
    now = int(time.time() * 1000)
    metrics = [Metric("val_acc_knn", 0.1 * e, now, e) for e in range(1, epochs + 1)]
    metrics += [Metric("loss", 10.0 / e, now, e) for e in range(1, epochs + 1)]
    metrics += [Metric(k, float(v), now, epochs) for k, v in final.items()]
    params = [Param(k, json.dumps(v)) for k, v in config.items()]
    end_tags = [RunTag("stopped_early", "true" if stopped else "false")]
    if error:
        end_tags.append(RunTag("error", error))
    c.log_batch(run.info.run_id, metrics=metrics, params=params, tags=end_tags)
    c.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def _parent(c, exp, name, space, datasets, seeds, searched, budget="full budget"):
    from mlflow.entities import Param

    run = c.create_run(exp, run_name=name, tags={"space": space, "profile": "quick", "sweep": name, "budget": budget})
    c.log_batch(run.info.run_id, params=[Param("datasets", ",".join(datasets)),
                                         Param("seeds", ",".join(map(str, seeds))),
                                         Param("params", json.dumps(searched)), Param("fixed.epochs", "3")])
    time.sleep(0.01)  # distinct start times: the latest parent is well defined
    return run.info.run_id


def build_store(path: Path) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    c = MlflowClient(uri)
    ids = {}
    exp = c.create_experiment("ssl-sweeps/simvae_J", artifact_location=(path.parent / "artifacts").as_uri())
    old = _parent(c, exp, "simvae_J-old", "simvae_J", ("digits", "shapes"), (0, 1), {"J": "grid [3]"})
    for trial, (J, vals, chash) in OLD_SWEEP.items():
        for d, accs in vals.items():
            for seed, a in enumerate(accs):
                _child(c, exp, old, trial, "simvae", d, seed, chash, _config("simvae", d, seed, J=J), {"acc_mlp": a})
    c.set_terminated(old, "FINISHED")
    parent = ids["simvae_J"] = _parent(c, exp, "simvae_J-new", "simvae_J", ("digits", "shapes"), (0, 1),
                                       {"J": "grid [2, 4, 8, 16]"})
    for run in j_runs():
        _child(c, exp, parent, **run, sweep="simvae_J-new")
    c.set_terminated(parent, "FINISHED")

    exp = c.create_experiment("ssl-sweeps/table1", artifact_location=(path.parent / "artifacts").as_uri())
    parent = ids["table1"] = _parent(c, exp, "table1-quick", "table1", ("digits", "shapes"), T1_SEEDS,
                                     {"method": "grid [...]"})
    for run in t1_runs():
        _child(c, exp, parent, **run, sweep="table1-quick")
    c.set_terminated(parent, "FINISHED")

    exp = c.create_experiment("ssl-sweeps/betavae_beta", artifact_location=(path.parent / "artifacts").as_uri())
    parent = ids["betavae_beta"] = _parent(c, exp, "beta-quick", "betavae_beta", ("digits", "shapes"), (0,),
                                           {"beta": "log-uniform [0.1, 16]"})
    for i, beta in enumerate(BETAS):
        for d in ("digits", "shapes"):
            _child(c, exp, parent, f"b{i}", "betavae", d, 0, f"hb{i}", _config("betavae", d, 0, beta=beta),
                   {"acc_mlp": beta_acc(beta, d)})
    c.set_terminated(parent, "FINISHED")
    return {"uri": uri, "parents": ids}


@pytest.fixture(scope="module")
def store(ram_dir):
    """The synthetic store, in RAM where possible."""
    return build_store(ram_dir / "mlflow.db")


@pytest.fixture
def out(tmp_path):
    return tmp_path / "results"


def src(store, out) -> list[str]:
    return ["--tracking-uri", store["uri"], "--out", str(out)]


# -- records ------------------------------------------------------------------------------------


def test_records_latest_sweep_and_eligibility(store):
    from analysis.records import IDENTITY, load

    rec = load("simvae_J", store["uri"], source="mlflow")
    df = rec.df
    assert [s.name for s in rec.sweeps] == ["simvae_J-new"]
    assert rec.datasets == ["digits", "shapes"]
    assert tuple(df.columns[:len(IDENTITY)]) == IDENTITY
    assert set(df["trial_id"]) == set(J_TRIALS) | {"t5", "t6"}
    assert len(df) == 5 * 2 * 2 + 2 + 4 + 1  # complete trials, t7 (one dataset), t5 (stopped), t6 (failed)
    eligible = set(rec.eligible("acc_mlp")["trial_id"])
    assert eligible == set(J_TRIALS)  # stopped (t5) and failed (t6) excluded
    assert rec.trial_counts() == {"completed": 6, "stopped_early": 1, "failed": 1, "unfinished": 0, "trials": 8}
    (r,) = [r for _, r in df.iterrows() if r["trial_id"] == "t3" and r["dataset"] == "shapes" and r["seed"] == 1]
    assert r["config.J"] == 8 and type(r["config.J"]) is int  # JSON-decoded params, ints kept
    assert r["config.prior"] == "gaussian" and r["config.device"] is None
    assert r["acc_mlp"] == pytest.approx(0.66) and r["sweep"] == "simvae_J-new" and r["config_hash"] == "c00000000008"
    assert r["eligible"] and not r["stopped_early"] and r["status"] == "FINISHED"
    assert df.loc[df["trial_id"] == "t6", "error"].tolist() == ["NonFiniteLoss: loss became nan"]
    assert df.loc[df["trial_id"] == "t5", "stopped_early"].all()
    pooled = load("simvae_J", store["uri"], all_parents=True)
    assert len(pooled.sweeps) == 2 and "t0" in set(pooled.df["trial_id"])


# -- selection ----------------------------------------------------------------------------------


def test_selection_ranking_by_hand(store):
    from analysis.records import load
    from analysis.select import score_configs

    scores = score_configs(load("simvae_J", store["uri"]), "acc_mlp")
    ranked = sorted((s for s in scores if s.rank), key=lambda s: s.rank)
    expected = {}
    for trial, (J, vals, chash) in J_TRIALS.items():
        if len(vals) == 2:
            expected[J] = np.mean([np.mean(vals["digits"]), np.mean(vals["shapes"])])
    assert [s.config["J"] for s in ranked] == [8, 10, 16, 4, 2]  # 8 and 10 tie; hash breaks it
    for s in ranked:
        assert s.score == pytest.approx(expected[s.config["J"]], abs=1e-12)
        assert s.seeds == {"digits": 2, "shapes": 2}
    assert ranked[1].tie and not ranked[0].tie and not ranked[2].tie
    assert ranked[0].means["digits"] == pytest.approx(0.79) and ranked[0].means["shapes"] == pytest.approx(0.68)
    (incomplete,) = [s for s in scores if s.rank is None]
    assert incomplete.config == {"J": 20} and incomplete.missing == ["shapes"] and incomplete.score is None


def test_select_cli_writes_and_merges_the_selection(store, out, capsys):
    from analysis.select import main

    out.mkdir(parents=True)
    sel = out / "selection.yaml"
    sel.write_text(yaml.safe_dump({"vae": {"config": {"lr": 0.0002}}, "simvae": {"config": {"J": 99}}}))
    assert main(["--space", "simvae_J", *src(store, out)]) == 0
    text = capsys.readouterr().out
    assert "stopped early by ASHA -- excluded" in text and "missing shapes" in text and "| 2= |" in text
    data = yaml.safe_load(sel.read_text())
    assert data["vae"] == {"config": {"lr": 0.0002}}  # other methods kept
    assert data["simvae"]["config"] == {"J": 8}
    assert data["simvae"]["score"] == pytest.approx(0.735)
    assert data["simvae"]["datasets"]["shapes"] == {"mean": pytest.approx(0.68), "n_seeds": 2}
    assert (out / "tables" / "selection_simvae_J-new.md").exists()
    # the table1 space reads it
    from sweeps.schema import selected_configs

    assert selected_configs(sel)["simvae"] == {"J": 8}


def test_summarise_by_hand():
    from analysis.records import make_frame, summarise

    vals = {("a", "x"): [0.5, 0.7, 0.9], ("a", "y"): [0.4], ("b", "x"): [0.1, float("nan"), 0.3]}
    df = make_frame(({"run_id": f"{m}{d}{i}", "method": m, "dataset": d, "seed": i, "status": "FINISHED"}, {},
                     {"acc": v, "other": 2 * v}) for (m, d), vs in vals.items() for i, v in enumerate(vs))
    out = summarise(df, ["method", "dataset"], ["acc", "other", "never_logged"])
    assert list(out.columns) == ["method", "dataset", "metric", "mean", "se", "n", "values"]
    got = {(r.method, r.dataset, r.metric): r for r in out.itertuples()}
    assert len(got) == 6  # 3 groups x 2 logged metrics; the NaN run is left out of its group
    for (m, d), vs in vals.items():
        finite = [v for v in vs if not math.isnan(v)]
        r = got[(m, d, "acc")]
        assert r.n == len(finite) and r.values == tuple(finite) and r.mean == pytest.approx(np.mean(finite))
        if len(finite) > 1:
            assert r.se == pytest.approx(np.std(finite, ddof=1) / math.sqrt(len(finite)), abs=1e-15)
        else:
            assert math.isnan(r.se)  # one value: no standard error
        assert got[(m, d, "other")].mean == pytest.approx(2 * np.mean(finite))
    assert summarise(df.iloc[:0], "method", "acc").empty


def test_names_and_order_come_from_the_registries():
    from analysis.records import dataset_key, dataset_name, method_family, method_key, method_name
    from models import METHODS
    from trainables.datasets import DATASETS

    assert sorted(["zeta", *reversed(METHODS), "alpha"], key=method_key) == [*METHODS, "alpha", "zeta"]
    assert sorted(["zeta", *reversed(DATASETS), "alpha"], key=dataset_key) == [*DATASETS, "alpha", "zeta"]
    assert method_name("betavae") == "β-VAE" and method_name("simvae") == "SimVAE" and method_name("new") == "new"
    assert dataset_name("cifar10") == "CIFAR-10" and dataset_name("new") == "new"
    assert method_family("random") == "baseline" and method_family("simclr") == "discriminative"
    assert method_family("simvae") == "generative" and method_family("new") is None


def write_results(tune: Path, name: str, space: str, parent: str, runs, seeds) -> Path:
    """A sweep folder as the sweep driver leaves it: sweep.json and one result.json per run."""
    from sweeps import schema

    folder = tune / name
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"name": name, "space": space, "status": "completed",
                                                   "parent_run_id": parent,
                                                   "expand": {"profile": "quick", "seeds": list(seeds)}}))
    for r in runs:
        run = {"space": space, "sweep": name, "parent_run_id": parent, "trial_id": r["trial"], "method": r["method"],
               "dataset": r["dataset"], "seed": r["seed"], "config_hash": r["chash"],
               "status": r.get("status", "FINISHED"), "stopped_early": r.get("stopped", False),
               "epochs_trained": r.get("epochs", 3), **({"error": r["error"]} if r.get("error") else {})}
        schema.write_result(schema.run_folder(folder / f"sweep_trial_{r['trial']}", r["dataset"], r["seed"]), run,
                            r["config"], {**r["config"], "arch": "mlp", "likelihood": "bernoulli"}, r["final"])
    return folder


def test_result_files_round_trip_and_match_mlflow(store, tmp_path, capsys):
    """result.json files written with schema.write_result give the same frame, selection and
    standard errors as the equivalent MLflow runs."""
    import pandas as pd

    from analysis.ablation import make_ablation
    from analysis.records import IDENTITY, load
    from analysis.select import main, score_configs
    from analysis.table import build_table

    tune = tmp_path / "tune"
    write_results(tune, "simvae_J-new", "simvae_J", store["parents"]["simvae_J"], j_runs(), (0, 1))
    write_results(tune, "table1-quick", "table1", store["parents"]["table1"], t1_runs(), T1_SEEDS)
    absent = f"sqlite:///{tmp_path / 'absent.db'}"
    files = load("simvae_J", absent, storage=tune)  # auto: no store, so the files
    mlflow = load("simvae_J", store["uri"], source="mlflow")
    assert files.from_files and "result.json" in files.source and not (tmp_path / "absent.db").exists()
    assert files.datasets == mlflow.datasets == ["digits", "shapes"]
    assert tuple(files.df.columns[:len(IDENTITY)]) == IDENTITY
    assert files.df["config.arch"].eq("mlp").all()  # config columns from the resolved config
    assert set(files.eligible("acc_mlp")["trial_id"]) == set(J_TRIALS)
    assert files.trial_counts() == mlflow.trial_counts() == {"completed": 6, "stopped_early": 1, "failed": 1,
                                                             "unfinished": 0, "trials": 8}
    cols = [c for c in IDENTITY if c not in ("run_id", "start_time")] + [
        "config.J", "config.prior", "config.device", "config.lr", "acc_mlp", "acc_knn", "recon_error"]
    key = ["trial_id", "dataset", "seed"]
    pd.testing.assert_frame_equal(files.df[cols].sort_values(key).reset_index(drop=True),
                                  mlflow.df[cols].sort_values(key).reset_index(drop=True))

    def selection(records):
        return [(s.method, s.config_hash, s.config, s.score, s.means, s.seeds, s.missing, s.rank, s.tie,
                 s.few_seeds, s.trial_ids) for s in score_configs(records)]

    assert selection(files) == selection(mlflow)
    assert [s.config["J"] for s in sorted((s for s in score_configs(files) if s.rank), key=lambda s: s.rank)] == \
        [8, 10, 16, 4, 2]
    a = make_ablation(files, "J", "acc_mlp", tmp_path / "files")
    b = make_ablation(mlflow, "J", "acc_mlp", tmp_path / "mlflow")
    assert a.points == b.points and all(math.isfinite(p.se) for p in a.points)  # per-seed data: standard errors

    t_files = build_table(load("table1", absent, source="files", storage=tune))
    t_mlflow = build_table(load("table1", store["uri"], source="mlflow"))
    assert t_files.cells == t_mlflow.cells and t_files.bold == t_mlflow.bold and t_files.welch == t_mlflow.welch
    vals = T1[("vae", "shapes")]["acc_knn"]
    assert t_files.cells[("vae", "shapes", "acc_knn")].se == pytest.approx(np.std(vals, ddof=1) / math.sqrt(3))

    for source in ("files", "csv"):  # csv: the old name
        assert main(["--space", "simvae_J", "--source", source, "--storage", str(tune), "--out",
                     str(tmp_path / "out"), "--dry-run"]) == 0
        text = capsys.readouterr().out
        assert "| 2= |" in text and "selected simvae: J=8  score 73.50%" in text and "result.json" in text
    assert main(["--all", "--source", "files", "--storage", str(tune), "--out", str(tmp_path / "out")]) == 2
    assert main(["--space", "simvae_sigma2", "--source", "files", "--storage", str(tune), "--out",
                 str(tmp_path / "out")]) == 2
    assert "no sweep folder of space 'simvae_sigma2'" in capsys.readouterr().err


def test_errors_exit_2(store, out, tmp_path, capsys):
    from analysis.select import main

    assert main(["--space", "nope", *src(store, out), "--source", "mlflow"]) == 2
    assert "no experiment ssl-sweeps/nope" in capsys.readouterr().err
    assert main(["--space", "simvae_J", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}", "--source", "mlflow"]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
    assert main(["--space", "simvae_J", *src(store, out), "--metric", "acc_nope"]) == 2
    err = capsys.readouterr().err
    assert "never logged" in err and len(err.strip().splitlines()) == 1


# -- Table 1 ------------------------------------------------------------------------------------


def _welch_by_hand(a, b):
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, 2 * stats.t.sf(abs(t), df)


def test_table_means_standard_errors_bold_and_welch(store):
    from analysis.records import load
    from analysis.table import build_table

    table = build_table(load("table1", store["uri"]))
    assert table.methods == ["random", "simclr", "vae", "simvae"] and table.datasets == ["digits", "shapes"]
    for (m, d), vals in T1.items():
        for metric in ("acc_mlp", "acc_knn"):
            c = table.cells[(m, d, metric)]
            assert c.n == 3  # the failed 4th simclr seed is not counted
            assert c.mean == pytest.approx(np.mean(vals[metric]), abs=1e-12)
            assert c.se == pytest.approx(np.std(vals[metric], ddof=1) / math.sqrt(3), abs=1e-12)
    for d in ("digits", "shapes"):
        for metric in ("acc_mlp", "acc_knn"):
            gen = max(("simvae", "vae"), key=lambda m: np.mean(T1[(m, d)][metric]))
            assert (gen, d, metric) in table.bold and ({"simvae", "vae"} - {gen}).isdisjoint(
                {m for m, dd, mm in table.bold if (dd, mm) == (d, metric)})
            assert ("simclr", d, metric) in table.bold  # the only discriminative method
            assert ("random", d, metric) not in table.bold
    for w in table.welch:
        other = max(("random", "simclr", "vae"), key=lambda m: np.mean(T1[(m, w.dataset)][w.metric]))
        assert w.other == other
        t, p = _welch_by_hand(T1[("simvae", w.dataset)][w.metric], T1[(other, w.dataset)][w.metric])
        assert w.t == pytest.approx(t, rel=1e-9) and w.p == pytest.approx(p, rel=1e-6)
    # The paper's claims, pair by pair: SimVAE > VAE (the only other generative method here) and
    # every learned method > Random, per dataset and metric, each with its own Welch test.
    pairs = {(w.dataset, w.metric, w.method, w.other) for w in table.claims}
    assert pairs == {(d, metric, a, b) for d in ("digits", "shapes") for metric in ("acc_mlp", "acc_knn")
                     for a, b in (("simvae", "vae"), ("simclr", "random"), ("vae", "random"), ("simvae", "random"))}
    for w in table.claims:
        a, b = T1[(w.method, w.dataset)][w.metric], T1[(w.other, w.dataset)][w.metric]
        t, p = _welch_by_hand(a, b)
        assert w.diff == pytest.approx(np.mean(a) - np.mean(b)) and w.p == pytest.approx(p, rel=1e-6)
        assert w.verdict == ("no" if np.mean(a) <= np.mean(b) else "holds" if p < 0.05 else "not significant")


def test_table_cli_writes_markdown_latex_csv(store, out):
    from analysis.table import main

    assert main(src(store, out)) == 0
    md = (out / "tables" / "table1_table1-quick.md").read_text()
    tex = (out / "tables" / "table1_table1-quick.tex").read_text()
    vals = T1[("simvae", "digits")]["acc_mlp"]
    text = f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals, ddof=1) / math.sqrt(3):.1f}"
    simvae_row = next(line for line in md.splitlines() if line.startswith("| SimVAE"))
    assert text in simvae_row and "paper" not in md.splitlines()[4]  # the paper reports neither digits nor shapes
    assert "The paper reports none of these datasets" in md and "sweep table1-quick: profile quick, full budget" in md
    assert "Welch" in md and "\\textbf{" in tex and "\\pm" in tex and "\\begin{tabular}" in tex
    assert "sqlite" not in md + tex and str(out.parent) not in md + tex  # no local paths in a table
    with open(out / "tables" / "table1_table1-quick.csv") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if (r["method"], r["dataset"], r["metric"]) == ("vae", "shapes", "acc_knn"))
    assert float(row["mean"]) == pytest.approx(100 * np.mean(T1[("vae", "shapes")]["acc_knn"]))


@pytest.mark.parametrize("space, param", [("simvae_J", "J"), ("betavae_beta", "beta")])
def test_a_table_of_one_methods_ablation_points_to_ablation_py(space, param, store, out, capsys):
    """table.py compares methods: on a space of one method (an ablation, a search) it is one bold
    row and an empty Welch table, so it refuses, naming the command that draws that space."""
    from analysis.table import main

    assert main(["--space", space, *src(store, out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"its table and figure are analysis/ablation.py --space {space} --param {param}" in err[0]
    assert not (out / "tables").exists()


def test_table_paper_difference_on_a_paper_dataset():
    from analysis.records import Records, SweepRecord, make_frame
    from analysis.table import build_table, load_paper, rows

    runs = make_frame(({"run_id": f"r{m}{s}", "parent_id": "p", "trial_id": f"t{m}", "method": m, "dataset": "mnist",
                        "seed": s, "config_hash": m, "status": "FINISHED", "start_time": s},
                       {}, {"acc_mlp": a + 0.001 * s, "acc_knn": a})
                      for m, a in (("simvae", 0.970), ("vae", 0.960)) for s in (0, 1, 2))
    table = build_table(Records("table1", "memory", [SweepRecord("p", "p", 0, "FINISHED")], runs))
    simvae = rows(table)[-1]
    assert simvae[0][0] == "SimVAE"
    assert simvae[2][0] == "98.4" and simvae[3][0] == f"{97.1 - 98.4:+.1f}"  # Acc-MP: paper, Δ
    assert simvae[5][0] == "98.5" and simvae[6][0] == f"{97.0 - 98.5:+.1f}"
    assert load_paper()[("betavae", "cifar10", "acc_knn")] == 28.5


def test_paper_values_match_the_design_doc():
    from analysis.table import load_paper
    from models import METHODS

    design = ROOT / "docs" / "design.md"
    if not design.exists():
        pytest.skip("docs/design.md not available")
    names = {cls.display.lower(): name for name, cls in METHODS.items()}
    paper, seen = load_paper(), 0
    for line in design.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].lower() in names and "/" in cells[1]:
            for d, cell in zip(("mnist", "fashionmnist", "celeba", "cifar10"), cells[1:]):
                mp, knn = (float(x) for x in cell.split("/"))
                assert paper[(names[cells[0].lower()], d, "acc_mlp")] == mp
                assert paper[(names[cells[0].lower()], d, "acc_knn")] == knn
                seen += 1
    assert seen == 32


# -- ablation -----------------------------------------------------------------------------------


def test_ablation_grid_points_by_hand_and_logged_to_parent(store, out):
    from mlflow.tracking import MlflowClient

    from analysis.ablation import main

    assert main(["--space", "simvae_J", "--param", "J", *src(store, out)]) == 0
    for ext in ("png", "pdf"):
        f = out / "figures" / f"ablation_simvae_J-new_J.{ext}"
        assert f.exists() and f.stat().st_size > 5000
    with open(out / "tables" / "ablation_simvae_J-new_J.csv") as f:
        rows = {(r["dataset"], int(r["x"])): r for r in csv.DictReader(f)}
    for trial, (J, vals, _) in J_TRIALS.items():
        for d, accs in vals.items():
            r = rows[(d, J)]
            assert float(r["mean"]) == pytest.approx(np.mean(accs)) and int(r["n"]) == 2
            assert float(r["se"]) == pytest.approx(np.std(accs, ddof=1) / math.sqrt(2))
    assert float(rows[("mean", 8)]["mean"]) == pytest.approx(0.735)
    assert ("mean", 20) not in rows  # J=20 has no shapes runs: no across-dataset mean
    assert (("digits", 12) not in rows) and (("digits", 6) not in rows)  # stopped / failed runs
    logged = {a.path for a in MlflowClient(store["uri"]).list_artifacts(store["parents"]["simvae_J"], "figures")}
    assert logged == {"figures/ablation_simvae_J-new_J.png", "figures/ablation_simvae_J-new_J.pdf"}


def test_ablation_continuous_log_parameter(store, out):
    from analysis.ablation import make_ablation, trend
    from analysis.records import load

    ab = make_ablation(load("betavae_beta", store["uri"]), "beta", "acc_mlp", out)
    assert ab.continuous and ab.log and all(f.exists() for f in ab.figures)
    means = [p for p in ab.points if p.dataset == "mean"]
    assert len(means) == len(BETAS)
    for p in means:
        assert p.mean == pytest.approx((beta_acc(p.x, "digits") + beta_acc(p.x, "shapes")) / 2)
    # the data are exactly quadratic in log(beta): the trend recovers its peak at log(beta) = 0.5
    xs, ys = trend([p.x for p in means], [p.mean for p in means], log=True)
    assert math.log(xs[int(np.argmax(ys))]) == pytest.approx(0.5, abs=0.06)


def test_ablation_errors(store, out, capsys):
    from analysis.ablation import main

    assert main(["--space", "simvae_J", "--param", "nope", *src(store, out)]) == 2
    assert "unknown parameter 'nope'" in capsys.readouterr().err
    assert main(["--space", "simvae_J", "--param", "J", "--metric", "nope", *src(store, out)]) == 2
    assert "never logged" in capsys.readouterr().err


# -- style, report, scripts ---------------------------------------------------------------------


def test_style_points_and_gains(store, out):
    from analysis.records import load
    from analysis.style import main, style_gains

    gains = style_gains(load("table1", store["uri"]))
    assert {g.metric for g in gains} == {"style_aug_scale_r2", "style_aug_flip_acc"}  # *_mean excluded
    g = next(g for g in gains if (g.dataset, g.metric, g.baseline) == ("shapes", "style_aug_flip_acc", "simclr"))
    vals = T1[("simvae", "shapes")]["style_aug_flip_acc"], T1[("simclr", "shapes")]["style_aug_flip_acc"]
    assert g.gain == pytest.approx(np.mean(vals[0]) - np.mean(vals[1]), abs=1e-12)
    assert len(gains) == 2 * 2 * 3  # datasets x per-factor metrics x baselines
    assert main(src(store, out)) == 0
    for name in ("style_content_vs_style", "style_gain"):
        stem = out / "figures" / f"{name}_table1-quick"
        assert stem.with_suffix(".png").stat().st_size > 5000 and stem.with_suffix(".pdf").exists()
    assert main([*src(store, out), "--style-metric", "style_nope"]) == 2


def test_report_is_self_contained(store, out):
    from analysis.report import main

    assert main(["--space", "simvae_J", *src(store, out)]) == 0
    page = (out / "report_simvae_J-new.html").read_text()
    # the J ablation, the learning curves and the optimisation history (a study built from the
    # records: no intermediate values; one parameter searched: no importances)
    assert page.count("data:image/png;base64,") == 3
    assert "8 trials run" in page and "<b>1</b> stopped early by ASHA" in page and "NonFiniteLoss" in page
    assert "<td>2=</td>" in page and 'src="http' not in page
    assert "Hyperparameter importance" in page and "one parameter searched (J)" in page
    # the learning curves are labelled by config: every J of the sweep is in the legend
    from analysis.records import load
    from analysis.report import learning_curves

    path = learning_curves(load("simvae_J", store["uri"]), out)
    assert path.exists() and path.stat().st_size > 20000


def test_scripts_have_help():
    for name in ("select", "table", "ablation", "style", "report"):
        res = subprocess.run([sys.executable, str(ROOT / "analysis" / f"{name}.py"), "--help"],
                             capture_output=True, text=True, cwd="/", timeout=60)
        assert res.returncode == 0 and "--tracking-uri" in res.stdout, (name, res.stderr)


def _small_sweep(path: Path, parent_status: str, seeds: tuple[int, ...], interrupted_trial: bool) -> str:
    """A simvae_J sweep of its own store: trial 'b' (J=2) finished on both datasets; trial 'a'
    (J=8) interrupted (KILLED) when asked."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    c = MlflowClient(uri)
    exp = c.create_experiment("ssl-sweeps/simvae_J", artifact_location=(path.parent / "artifacts").as_uri())
    parent = _parent(c, exp, "simvae_J-cut", "simvae_J", ("digits", "shapes"), seeds, {"J": "grid [2, 8]"})
    for d in ("digits", "shapes"):
        for seed in seeds:
            _child(c, exp, parent, "b", "simvae", d, seed, "hb", _config("simvae", d, seed, J=2), {"acc_mlp": 0.23})
            if interrupted_trial:
                _child(c, exp, parent, "a", "simvae", d, seed, "ha", _config("simvae", d, seed, J=8), {},
                       status="KILLED")
    c.set_terminated(parent, parent_status)
    return uri


PREVIOUS = {"simvae": {"config": {"J": 8}, "score": 0.573,
                       "datasets": {"digits": {"mean": 0.6, "n_seeds": 2}, "shapes": {"mean": 0.55, "n_seeds": 2}}}}


def test_select_never_replaces_a_winner_from_an_interrupted_sweep_unless_forced(tmp_path, capsys):
    from analysis.select import main

    uri = _small_sweep(tmp_path / "mlflow.db", "KILLED", (0, 1), interrupted_trial=True)
    out = tmp_path / "results"
    out.mkdir()
    sel = out / "selection.yaml"
    sel.write_text(yaml.safe_dump(PREVIOUS))
    before = sel.read_text()
    # by default only a complete sweep is read: the interrupted one is read when named
    assert main(["--space", "simvae_J", "--tracking-uri", uri, "--out", str(out)]) == 2
    assert "no complete full-budget sweep of simvae_J" in capsys.readouterr().err
    named = ["--space", "simvae_J", "--sweep", "simvae_J-cut", "--tracking-uri", uri, "--out", str(out)]
    assert main(named) == 0
    err = capsys.readouterr().err
    assert "incomplete sweep" in err and "sweep simvae_J-cut is killed" in err and "1 trial(s) unfinished" in err
    assert "not written: simvae" in err and "--force" in err
    assert sel.read_text() == before  # the J=8 winner stands
    assert main([*named, "--force"]) == 0
    assert yaml.safe_load(sel.read_text())["simvae"]["config"] == {"J": 2}
    (backup,) = (out / "selection_history").iterdir()  # the previous selection is recoverable
    assert backup.read_text() == before


def test_select_keeps_an_entry_backed_by_more_seed_runs(tmp_path, capsys):
    from analysis.select import main

    uri = _small_sweep(tmp_path / "mlflow.db", "FINISHED", (0,), interrupted_trial=False)
    out = tmp_path / "results"
    out.mkdir()
    sel = out / "selection.yaml"
    sel.write_text(yaml.safe_dump(PREVIOUS))
    assert main(["--space", "simvae_J", "--tracking-uri", uri, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "incomplete" not in err
    assert "backed by 2 dataset(s) and 2 seed run(s), the entry it would replace by 2 and 4" in err
    assert yaml.safe_load(sel.read_text())["simvae"]["config"] == {"J": 8}


def _on_proc(out: Path, monkeypatch) -> list[str]:
    return ["--selection", "/proc/self/ssl-selection.yaml"]


def _a_write_that_fails(out: Path, monkeypatch) -> list[str]:
    import errno

    from sweeps import schema

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(schema, "write_text_atomic", full)
    return []


UNWRITABLE_SELECTION = {"on a special file system": (_on_proc, "proc file system"),
                        "a write that fails (a full disk)": (_a_write_that_fails, "No space left on device")}


@pytest.mark.parametrize("case", list(UNWRITABLE_SELECTION))
def test_an_unwritable_selection_file_is_one_line_and_leaves_nothing_behind(case, tmp_path, capsys, monkeypatch):
    """The selection file cannot be written: one line, exit 2, the file as it was, and neither a
    temporary file nor a history copy of it left behind."""
    from analysis.select import main

    uri = _small_sweep(tmp_path / "mlflow.db", "FINISHED", (0,), interrupted_trial=False)
    out = tmp_path / "results"
    out.mkdir()
    (out / "selection.yaml").write_text(yaml.safe_dump({"vae": {"config": {"lr": 0.001}}}))
    listing = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    extra, fragment = UNWRITABLE_SELECTION[case]
    capsys.readouterr()
    assert main(["--space", "simvae_J", "--tracking-uri", uri, "--out", str(out), *extra(out, monkeypatch)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "select.py: error: cannot write the selection file" in err[0] and fragment in err[0], err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.parent.name != "tables"} == listing


def _j_grid_sweep(path: Path) -> str:
    """simvae_J over grid [2, 4, 8] with J=4 stopped early by ASHA, and two configs at J=8 that
    differ in lr (distinct configs: never pooled as seeds)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    c = MlflowClient(uri)
    exp = c.create_experiment("ssl-sweeps/simvae_J", artifact_location=(path.parent / "artifacts").as_uri())
    parent = _parent(c, exp, "simvae_J-grid", "simvae_J", ("digits", "shapes"), (0, 1), {"J": "grid [2, 4, 8]"})
    for trial, J, lr, acc, stopped in (("g2", 2, 0.001, 0.5, False), ("g4", 4, 0.001, 0.9, True),
                                       ("g8a", 8, 0.001, 0.6, False), ("g8b", 8, 0.002, 0.8, False)):
        for d in ("digits", "shapes"):
            for seed in (0, 1):
                _child(c, exp, parent, trial, "simvae", d, seed, f"h{trial}", _config("simvae", d, seed, J=J, lr=lr),
                       {"acc_mlp": acc + 0.01 * seed}, stopped=stopped, epochs=1 if stopped else 3)
    c.set_terminated(parent, "FINISHED")
    return uri


def test_ablation_draws_every_grid_point_and_marks_the_missing(tmp_path, capsys):
    from analysis.ablation import main

    uri = _j_grid_sweep(tmp_path / "mlflow.db")
    out = tmp_path / "results"
    assert main(["--space", "simvae_J", "--param", "J", "--tracking-uri", uri, "--out", str(out), "--no-mlflow"]) == 0
    cap = capsys.readouterr()
    with open(out / "tables" / "ablation_simvae_J-grid_J.csv") as f:
        rows = list(csv.DictReader(f))
    gone = [r for r in rows if r["missing"]]
    assert {(r["dataset"], r["x"]) for r in gone} == {("digits", "4"), ("shapes", "4"), ("mean", "4")}
    assert all(r["missing"] == "stopped early by ASHA" and r["n"] == "0" and r["mean"] == "" for r in gone)
    assert "J=4" in cap.out and "MISSING" in cap.out and "no full-budget run: 4" in cap.err
    # J=8: two configs (lr 0.001 and 0.002), two points of 2 seeds each -- never one of 4 "seeds"
    eight = [r for r in rows if r["dataset"] == "digits" and r["x"] == "8"]
    assert sorted(float(r["mean"]) for r in eight) == pytest.approx([0.605, 0.805])
    assert all(r["n"] == "2" for r in eight)
    assert (out / "figures" / "ablation_simvae_J-grid_J.png").stat().st_size > 5000


def test_ablation_of_a_parameter_the_sweep_did_not_vary_is_exit_2(tmp_path, capsys):
    from analysis.ablation import main

    uri = _j_grid_sweep(tmp_path / "mlflow.db")
    out = tmp_path / "results"
    capsys.readouterr()  # the store's creation log
    assert main(["--space", "simvae_J", "--param", "sigma2", "--tracking-uri", uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not vary 'sigma2'" in err[0] and "J" in err[0]
    assert not (out / "figures").exists()  # nothing drawn, nothing logged


@pytest.mark.parametrize("script", ["select", "table", "ablation", "style", "report"])
@pytest.mark.parametrize("store_kind", ["unreachable server", "junk mlflow.db", "sqlite but not mlflow"])
def test_a_bad_store_is_one_line_exit_2_within_seconds(script, store_kind, tmp_path):
    import socket
    import sqlite3

    if store_kind == "unreachable server":
        with socket.socket() as s:  # a free loopback port nobody listens on
            s.bind(("127.0.0.1", 0))
            uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    elif store_kind == "junk mlflow.db":
        (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 100)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        con = sqlite3.connect(tmp_path / "mlflow.db")
        con.execute("create table other (x int)")
        con.commit()
        con.close()
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = {"select": ["--space", "simvae_J"], "ablation": ["--space", "simvae_J", "--param", "J"],
             "report": ["--space", "simvae_J"]}.get(script, [])
    t0 = time.time()
    res = subprocess.run([sys.executable, str(ROOT / "analysis" / f"{script}.py"), *extra, "--tracking-uri", uri,
                          "--source", "mlflow", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd="/", timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{script}.py: error: ") and "Traceback" not in res.stderr, res.stderr
    assert time.time() - t0 < 60


def test_a_corrupt_selection_file_is_one_line_exit_2(store, tmp_path, capsys):
    from analysis.select import main

    out = tmp_path / "results"
    out.mkdir()
    (out / "selection.yaml").write_text("simvae: [unclosed\n  - x: {")
    assert main(["--space", "simvae_J", *src(store, out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "warning" not in ln]
    assert len(err) == 1 and "selection file" in err[0]


@pytest.mark.parametrize("diff, p, verdict", [(0.02, 0.01, "holds"), (0.02, 0.2, "not significant"),
                                             (0.02, None, "not significant"), (0.0, 0.01, "no"), (-0.05, 0.001, "no")])
def test_a_claim_holds_only_when_higher_and_significant(diff, p, verdict):
    from analysis.table import Welch

    assert Welch("mnist", "acc_mlp", "vae", diff, None if p is None else 2.0, p, (3, 3)).verdict == verdict


def test_reading_records_loads_neither_ray_nor_optuna():
    """Ray stays at the edge: the analysis (every script's module) and the named spaces import
    neither Ray nor Optuna -- reading a table costs no cluster library."""
    code = ("import json, sys\n"
            "import analysis.records, analysis.select, analysis.table, analysis.ablation, analysis.style\n"
            "import analysis.report, analysis.importance, sweeps.spaces, sweeps.ledger\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
