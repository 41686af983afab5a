"""sweeps/tracking.py through a real MLflow store: what a person sees in the UI -- the experiment's
kind, description and saved view, readable run names, outcome markers (ASHA-stopped,
interrupted, failed), the parent's winner and status, metrics without float32 noise -- and the
Optuna study a searched sweep keeps beside the store. The slow test serves the same records from
a real ``mlflow server`` on a loopback port and reads them back the way the UI does."""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from sweeps import spaces, tracking
from sweeps.schema import Tag

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(ram_dir):
    """One SQLite store for the module (in RAM where possible)."""
    return f"sqlite:///{ram_dir / 'mlflow.db'}"


def quick_plan(space="simvae_J", **kw):
    return spaces.expand(space, "quick", **kw)


def a_sweep(uri: str, plan, name: str = "simvae_J-quick-test"):
    exp = tracking.ensure_experiment(uri, plan.space)
    parent = tracking.create_parent(uri, exp, name, {Tag.SPACE: plan.space, Tag.SWEEP: name}, {"datasets": "mnist"},
                                    plan=plan)
    return exp, parent


def child(uri, exp, parent, trial="t1", dataset="mnist", seed=0, **config):
    return tracking.ChildRun(uri, exp, parent, trial, dataset, seed, {Tag.METHOD: "simvae"},
                             {"method": "simvae", "dataset": dataset, "seed": seed, **config})


def test_clean_metric_drops_float32_noise_only():
    f32 = lambda v: float(np.float32(v))  # noqa: E731 -- what torch's .item() gives
    assert tracking.clean_metric(f32(0.32)) == 0.32 and repr(f32(0.32)) != "0.32"
    assert tracking.clean_metric(f32(0.15)) == 0.15
    assert tracking.clean_metric((f32(0.11) + f32(0.29)) / 2) == 0.2  # an aggregate of float32 values
    for v in (1 / 96, f32(1 / 96), 12345.678, 3.14159e-5, -2.5e7, f32(0.987654)):
        assert tracking.clean_metric(v) == pytest.approx(v, rel=2 ** -23)  # never moved beyond float32 precision
    assert tracking.clean_metric(7) == 7.0 and tracking.clean_metric(0.0) == 0.0


def test_run_labels():
    assert tracking.run_label("mnist", 0, {"J": 8}, ["J"]) == "mnist-s0 J=8"
    assert tracking.run_label("cifar10", 2, {"sigma2": 0.0123456, "lr": 3e-5}, ["sigma2", "lr"]) == \
        "cifar10-s2 sigma2=0.0123 lr=3e-05"
    assert tracking.run_label("digits", 1, {"method": "simvae"}, ["method"]) == "digits-s1 simvae"
    assert tracking.run_label("shapes", 0, {"likelihood_scale": 1000.0, "prior": "uniform"},
                              ["likelihood_scale", "prior"]) == "shapes-s0 likelihood_scale=1000 prior=uniform"


def test_experiment_and_parent_describe_the_sweep(store):
    from mlflow.tracking import MlflowClient

    plan = quick_plan()
    exp, parent = a_sweep(store, plan)
    c = MlflowClient(store)
    tags = c.get_experiment(exp).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3: machine learning, not GenAI
    assert tags["mlflow.note.content"].startswith(plan.description)
    assert f"#/experiments/{exp}/runs?workflowType=machine_learning" in tags["mlflow.note.content"]
    view = json.loads(tags[tracking.SAVED_VIEW + tracking.VIEW_KEY])
    state = json.loads(view["state"])
    assert view["name"] == "Sweep results" and isinstance(view["createdAt"], int)
    assert {"params.`J`", "tags.`outcome`", "metrics.`acc_mlp`", "metrics.`best.acc_mlp_mean`"} <= set(state["selectedColumns"])
    run = c.get_run(parent)
    assert run.info.run_name == "simvae_J-quick-test"
    assert run.data.tags[tracking.SEARCHED] == "J" and run.data.tags[tracking.SWEEP_STATUS] == "running"
    assert "Sweep simvae_J-quick-test" in run.data.tags["mlflow.note.content"]
    assert "grid over `J` grid [2, 4, 8]" in run.data.tags["mlflow.note.content"]
    link = tracking.ui_link(store, exp)
    assert link == f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning&viewStateShareKey=sweep-results"
    assert tracking.ui_link("http://head:5000/", "7").startswith("http://head:5000/#/experiments/7/runs?")


def test_children_named_by_config_and_marked_by_outcome(store):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store)
    exp, parent = a_sweep(store, quick_plan(), "outcomes")
    done = child(store, exp, parent, "t1", J=8)
    assert c.get_run(done.run_id).info.run_name == "mnist-s0 J=8"
    done.log_epoch({"epoch": 1, "loss": float(np.float32(1.1)), "val_acc_knn": float(np.float32(0.32))})
    assert c.get_run(done.run_id).data.metrics["val_acc_knn"] == 0.32  # no float32 noise
    done.end("FINISHED", stopped_early="false")
    stopped = child(store, exp, parent, "t2", J=2)
    stopped.end("FINISHED", stopped_early="true")
    failed = child(store, exp, parent, "t3", J=4)
    failed.end("FAILED", error="NonFiniteLoss: loss became nan")
    cut = child(store, exp, parent, "t4", dataset="cifar10", J=4)
    # Ray stopped the trial, the driver has not said why yet: no suffix until it does
    cut.end("KILLED", stopped_by="ray")
    assert c.get_run(cut.run_id).info.run_name == "cifar10-s0 J=4"
    assert c.get_run(cut.run_id).data.tags[tracking.OUTCOME] == "stopped"
    running = child(store, exp, parent, "t5", dataset="cifar10", J=8)
    assert tracking.close_children(store, exp, parent, "KILLED", interrupted="true") == 1  # the driver's Ctrl-C
    names = {r.data.tags[Tag.TRIAL_ID]: (r.info.run_name, r.info.status, r.data.tags[tracking.OUTCOME])
             for r in tracking.find_children(store, exp, parent)}
    assert names == {"t1": ("mnist-s0 J=8", "FINISHED", "completed"),
                     "t2": ("mnist-s0 J=2 (ASHA-stopped)", "FINISHED", "stopped_early"),
                     "t3": ("mnist-s0 J=4 (failed)", "FAILED", "failed"),
                     "t4": ("cifar10-s0 J=4", "KILLED", "stopped"),
                     "t5": ("cifar10-s0 J=8 (interrupted)", "KILLED", "interrupted")}
    # The driver's verdict (sweeps/outcomes.py: ASHA stopped t4) reaches the names at the end.
    c.set_tag(cut.run_id, Tag.STOPPED_EARLY, "true")
    c.set_terminated(cut.run_id, status="FINISHED")
    assert tracking.name_children_by_outcome(store, exp, parent) == 1
    assert c.get_run(cut.run_id).info.run_name == "cifar10-s0 J=4 (ASHA-stopped)"
    # --resume reopens an interrupted child: running again, its suffix gone
    again = child(store, exp, parent, "t5", dataset="cifar10", J=8)
    assert again.run_id == running.run_id and again.resumed
    run = c.get_run(running.run_id)
    assert (run.info.run_name, run.info.status, run.data.tags[tracking.OUTCOME]) == ("cifar10-s0 J=8", "RUNNING", "running")


def test_parent_records_the_winner_and_the_status(store):
    from mlflow.tracking import MlflowClient

    plan = quick_plan()
    exp, parent = a_sweep(store, plan, "winner")
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    trials = [{"trial_id": "a_00000", "status": "completed", "config/J": 2, "acc_mlp_mean": 0.5,
               "digits/acc_mlp": 0.4, "shapes/acc_mlp": 0.6},
              {"trial_id": "a_00001", "status": "completed", "config/J": 8, "acc_mlp_mean": (f32(0.61) + f32(0.79)) / 2,
               "acc_knn_mean": 0.6, "digits/acc_mlp": f32(0.61), "shapes/acc_mlp": f32(0.79),
               "digits/acc_knn": 0.55, "shapes/acc_knn": 0.65},
              {"trial_id": "a_00002", "status": "stopped_early", "config/J": 4, "acc_mlp_mean": 0.99}]
    best = tracking.best_trial(trials)
    assert best["trial_id"] == "a_00001"  # stopped trials never win, whatever their value
    counts = {"completed": 2, "stopped_early": 1, "failed": 0}
    note = tracking.winner_line(best, plan, counts) + tracking.sweep_note(plan, "winner")
    tracking.record_winner(store, parent, best, ["J"], ["digits", "shapes"], counts, note)
    tracking.end_run(store, parent, "FINISHED")
    run = MlflowClient(store).get_run(parent)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["best.trial_id"] == "a_00001" and tags["best.J"] == "8" and json.loads(tags["best.config"]) == {"J": 8}
    assert metrics["best.acc_mlp_mean"] == 0.7 and metrics["best.digits.acc_mlp"] == 0.61
    assert metrics["best.shapes.acc_knn"] == 0.65 and metrics["trials_stopped_early"] == 1
    assert tags["mlflow.note.content"].startswith(
        "**Winner**: trial `a_00001` (J=8): 70.0% mean MLP-probe test accuracy (digits 61.0%, shapes 79.0%)")
    assert tags[tracking.SWEEP_STATUS] == "completed" and run.info.status == "FINISHED"
    tracking.reopen(store, parent)
    tracking.end_run(store, parent, "KILLED")
    assert MlflowClient(store).get_run(parent).data.tags[tracking.SWEEP_STATUS] == "interrupted"


def test_searched_sweep_keeps_its_optuna_study(tmp_path):
    """selection_search with a storage: the study is in the SQLite file under the sweep's name,
    survives the searcher's save/restore (Tune's snapshot, --resume) and records every trial."""
    import optuna

    from sweeps import search

    plan = quick_plan("simvae_sigma2", num_samples=3)
    url = search.optuna_storage_url(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    assert url == f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = search.selection_search(plan, storage=url, study_name="sweep-1", user_attrs={"space": plan.space})
    point = searcher.suggest("t1")
    assert 1e-3 <= point["sigma2"] <= 1.0
    searcher.on_trial_result("t1", {"epoch": 1, search.SEARCH_METRIC: 0.3})
    searcher.on_trial_complete("t1", {"epoch": 2, search.SEARCH_METRIC: 0.4, search.SELECT_METRIC: 0.35})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = search.SelectionSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.suggest("t2")
    restored.on_trial_result("t2", {"epoch": 1, search.SEARCH_METRIC: 0.2})
    restored.on_trial_complete("t2", {"epoch": 1, search.SEARCH_METRIC: 0.2})  # ASHA stopped it
    study = optuna.load_study(study_name="sweep-1", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert study.trials[0].value == 0.35 and study.trials[0].intermediate_values == {1: 0.3}
    assert study.user_attrs["space"] == "simvae_sigma2" and study.user_attrs["selection_metric"] == "acc_mlp_mean"
    pickle.dumps(restored)  # Tune pickles the searcher with the experiment state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_records_through_a_real_mlflow_server(tmp_path):
    """The same records written to and read from ``mlflow server`` on a loopback port, and the
    experiment and runs as the UI's own AJAX API serves them to the browser."""
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--default-artifact-root", str(tmp_path / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("mlflow server did not start")
                time.sleep(1)
        plan = quick_plan()
        exp, parent = a_sweep(uri, plan, "served")
        stopped = child(uri, exp, parent, "t1", J=2)
        stopped.log_epoch({"epoch": 1, "val_acc_knn": float(np.float32(0.32))})
        stopped.end("FINISHED", stopped_early="true")
        tracking.close_children(uri, exp, parent, "KILLED", interrupted="true")
        best = {"trial_id": "t9", "status": "completed", "config/J": 4, "acc_mlp_mean": 0.5}
        tracking.record_winner(uri, parent, best, ["J"], ["mnist"], {"completed": 1})
        tracking.end_run(uri, parent, "FINISHED")

        def ajax(path, body=None):
            req = urllib.request.Request(f"{uri}/ajax-api/2.0/mlflow/{path}", method="POST" if body else "GET",
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(req, timeout=30).read())

        served = {t["key"]: t["value"] for t in ajax(f"experiments/get?experiment_id={exp}")["experiment"]["tags"]}
        assert served["mlflow.experimentKind"] == "custom_model_development"
        assert "selectedColumns" in json.loads(served[tracking.SAVED_VIEW + tracking.VIEW_KEY])["state"]
        runs = ajax("runs/search", {"experiment_ids": [exp], "max_results": 100})["runs"]
        by_name = {r["info"]["run_name"]: r for r in runs}
        assert set(by_name) == {"served", "mnist-s0 J=2 (ASHA-stopped)"}
        kid = {t["key"]: t["value"] for t in by_name["mnist-s0 J=2 (ASHA-stopped)"]["data"]["tags"]}
        assert kid["outcome"] == "stopped_early" and kid["mlflow.parentRunId"] == parent
        metrics = {m["key"]: m["value"] for m in by_name["mnist-s0 J=2 (ASHA-stopped)"]["data"]["metrics"]}
        assert metrics["val_acc_knn"] == 0.32
        ptags = {t["key"]: t["value"] for t in by_name["served"]["data"]["tags"]}
        assert ptags["best.trial_id"] == "t9" and ptags["best.J"] == "4" and ptags["sweep_status"] == "completed"
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
