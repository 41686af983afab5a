"""analysis/importance.py on a real Optuna study (SQLite storage, as sweeps keep it) with a known
dominant parameter: a synthetic objective in which the MoCo temperature moves the selection
metric by 20 points and the momentum and queue size by a fraction of a point. Both Optuna
evaluators (fANOVA, PED-ANOVA) must rank the temperature first; the figures are written and
logged to the sweep's MLflow parent run. The same sweep without a study (a grid, an old sweep)
is read from its MLflow records and ranked the same way."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

SPACE = "moco_temperature"


def objective_value(temperature: float, momentum: float, queue_size: int, rng) -> float:
    return (0.6 + 0.2 * math.log10(temperature / 0.05) + 0.002 * (momentum > 0.99) + 0.001 * (queue_size > 128)
            + rng.normal(0, 0.002))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """An Optuna study of 24 trials (20 complete, 4 pruned by 'ASHA' with validation curves) and
    the MLflow records of the same sweep: a parent tagged with the study, one child per trial."""
    import optuna
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("importance")
    storage = f"sqlite:///{folder / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="moco-sweep", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(0)
    points = []
    for i in range(24):
        t = study.ask()
        p = {"temperature": t.suggest_float("temperature", 0.05, 0.5, log=True),
             "momentum": t.suggest_categorical("momentum", [0.9, 0.99, 0.995, 0.999]),
             "queue_size": t.suggest_categorical("queue_size", [64, 128, 256])}
        value = objective_value(**p, rng=rng)
        for epoch in (1, 2):
            t.report(value - 0.1 / epoch, epoch)
        if i % 6 == 5:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, value)
        points.append((p, None if i % 6 == 5 else value))

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment(f"ssl-sweeps/{SPACE}", artifact_location=(folder / "artifacts").as_uri())
    parents = {}
    for name, tags in (("without-study", {}), ("with-study", {"optuna_storage": storage, "optuna_study": "moco-sweep"})):
        parent = c.create_run(exp, run_name=name, tags={"space": SPACE, "sweep": name, "profile": "quick",
                                                        "budget": "full budget", **tags}).info.run_id
        c.log_batch(parent, params=[Param("datasets", "digits"), Param("seeds", "0"),
                                    Param("params", json.dumps({"temperature": "log-uniform [0.05, 0.5]",
                                                                "momentum": "one of [...]", "queue_size": "one of [...]"}))])
        for i, (p, value) in enumerate(points):
            config = {"method": "moco", "dataset": "digits", "seed": 0, **p}
            run = c.create_run(exp, run_name=f"digits-s0 {i}", tags={
                "mlflow.parentRunId": parent, "trial_id": f"t{i:02d}", "method": "moco", "dataset": "digits",
                "seed": "0", "config_hash": f"h{i:02d}", "sweep": name,
                "stopped_early": "false" if value is not None else "true"})
            now = int(time.time() * 1000)
            c.log_batch(run.info.run_id, params=[Param(k, json.dumps(v)) for k, v in config.items()],
                        metrics=[Metric("acc_mlp", value, now, 2)] if value is not None else [])
            c.set_terminated(run.info.run_id, "FINISHED")
        c.set_terminated(parent, "FINISHED")
        parents[name] = parent
        time.sleep(0.01)  # the study's sweep is the latest
    return {"uri": uri, "storage": storage, "parents": parents}


def first_by_evaluator(table) -> dict[str, str]:
    with open(table) as f:
        rows = list(csv.DictReader(f))
    return {ev: max(rows, key=lambda r: float(r[ev]))["param"] for ev in ("fANOVA", "PED-ANOVA")}


def test_the_dominant_parameter_ranks_first(sweep, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from analysis.importance import main

    out = tmp_path / "results"
    assert main(["--space", SPACE, "--tracking-uri", sweep["uri"], "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"Optuna study moco-sweep in {sweep['storage']}" in text and "20 completed trials of 24" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("  ") and "%" in line]
    assert rows[0][0] == "temperature"  # printed most important first
    assert first_by_evaluator(out / "tables" / "importance_with-study.csv") == {"fANOVA": "temperature",
                                                                             "PED-ANOVA": "temperature"}
    for name in ("importance", "history", "intermediate"):  # the study has the pruned trials' curves
        for ext in ("png", "pdf"):
            f = out / "figures" / f"{name}_with-study.{ext}"
            assert f.exists() and f.stat().st_size > 5000, f
    logged = {a.path for a in MlflowClient(sweep["uri"]).list_artifacts(sweep["parents"]["with-study"], "figures")}
    assert {"figures/importance_with-study.png", "figures/history_with-study.pdf",
            "figures/intermediate_with-study.png"} <= logged


def test_a_sweep_without_a_study_is_read_from_its_records(sweep, tmp_path):
    from analysis.importance import make_importance, ranking
    from analysis.records import load

    records = load(SPACE, sweep["uri"], parent=sweep["parents"]["without-study"])
    imp = make_importance(records, tmp_path)
    assert imp.source.startswith("a study built from")
    assert ranking(imp)[0] == "temperature" and len(imp.study.trials) == 24
    assert sum(t.state.name == "PRUNED" for t in imp.study.trials) == 4
    assert not (tmp_path / "figures" / "intermediate_without-study.png").exists()  # no curves in the records


def test_errors_are_one_line(sweep, tmp_path, capsys):
    from analysis.importance import main

    args = ["--tracking-uri", sweep["uri"], "--out", str(tmp_path)]
    assert main(["--space", SPACE, "--study", "nope", "--optuna-storage", sweep["storage"], *args]) == 2
    assert "no Optuna study 'nope'" in capsys.readouterr().err
    assert main(["--space", SPACE, "--study", "moco-sweep", *args]) == 2
    assert "go together" in capsys.readouterr().err


def _no_database(tmp_path, sweep):
    return f"sqlite:///{tmp_path / 'none.db'}", "moco-sweep", "no Optuna storage"


def _another_programs_database(tmp_path, sweep):
    import sqlite3

    db = sqlite3.connect(tmp_path / "notes.db")
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    return f"sqlite:///{tmp_path / 'notes.db'}", "moco-sweep", "not an Optuna storage"


def _an_empty_file(tmp_path, sweep):
    (tmp_path / "empty.db").write_bytes(b"")
    return f"sqlite:///{tmp_path / 'empty.db'}", "moco-sweep", "not an Optuna storage"


def _another_sweeps_study(tmp_path, sweep):
    import optuna

    study = optuna.create_study(study_name="other-sweep-1a2b", storage=sweep["storage"], direction="maximize")
    study.set_user_attr("sweep", "other-sweep")
    study.set_user_attr("mlflow_parent_run_id", "0123456789abcdef")
    return sweep["storage"], "other-sweep-1a2b", "is the study of sweep other-sweep"


STUDIES = {"no database there": _no_database, "another program's SQLite file": _another_programs_database,
           "an empty file": _an_empty_file, "another sweep's study": _another_sweeps_study}


@pytest.mark.parametrize("case", list(STUDIES))
def test_a_study_is_only_read_and_only_the_sweeps_own(case, sweep, tmp_path, capsys):
    """importance.py reads a study and nothing else: it creates no database where none is, writes
    no table into a file that is not Optuna's, and refuses a --study that is not the analysed
    sweep's (its figures would be logged to this sweep's parent): one line, exit 2."""
    from mlflow.tracking import MlflowClient

    from analysis.importance import main

    storage, study, fragment = STUDIES[case](tmp_path, sweep)
    path = Path(storage[len("sqlite:///"):])
    before = path.read_bytes() if path.exists() else None
    parent = sweep["parents"]["with-study"]
    logged = {a.path for a in MlflowClient(sweep["uri"]).list_artifacts(parent, "figures")}
    capsys.readouterr()
    code = main(["--space", SPACE, "--parent", parent, "--study", study, "--optuna-storage", storage,
                 "--tracking-uri", sweep["uri"], "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert (path.read_bytes() if path.exists() else None) == before  # nothing created or written
    assert {a.path for a in MlflowClient(sweep["uri"]).list_artifacts(parent, "figures")} == logged
