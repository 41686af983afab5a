"""sweeps/tracking.py through a real MLflow store: children found again or created, readable run
names (sweeps/mlflow_ui.py), outcome markers (ASHA-stopped, interrupted, failed) from each
verdict's encoding, metrics without float32 noise -- and the Optuna study a searched sweep keeps
beside the store. The slow test serves a sweep's records (sweeps/ledger.py) from a real
``mlflow server`` on a loopback port and reads them back the way the UI does. A sweep's records
as a whole, from open to close: tests/test_ledger.py."""
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

from sweeps import mlflow_ui, schema, spaces, tracking
from sweeps.ledger import SweepLedger
from sweeps.schema import COMPLETED, FAILED, INTERRUPTED, STOPPED_EARLY, Tag

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(ram_dir):
    """One SQLite store for the module (in RAM where possible)."""
    return f"sqlite:///{ram_dir / 'mlflow.db'}"


def quick_plan(space="simvae_J", **kw):
    return spaces.expand(space, "quick", **kw)


def a_sweep(uri: str, plan, name: str = "simvae_J-quick-test"):
    exp = tracking.ensure_experiment(uri, plan.space)
    parent = tracking.create_parent(uri, exp, name, {Tag.SPACE: plan.space, Tag.SWEEP: name,
                                                     Tag.SEARCHED: ",".join(mlflow_ui.searched_keys(plan))},
                                    {"datasets": "mnist"})
    return exp, parent


def child(uri, exp, parent, trial="t1", dataset="mnist", seed=0, **config):
    return tracking.ChildRun(uri, exp, parent, trial, dataset, seed, {Tag.METHOD: "simvae"},
                             {"method": "simvae", "dataset": dataset, "seed": seed, **config})


def test_plain_metrics_drop_float32_noise_only():
    """One rule for every metric a record holds (the driver's rows and JSON line, result.json,
    MLflow): 7 significant digits."""
    f32 = lambda v: float(np.float32(v))  # noqa: E731 -- what torch's .item() gives
    assert schema.plain(f32(0.32)) == 0.32 and repr(f32(0.32)) != "0.32"
    assert schema.plain(np.float32(0.15)) == 0.15 and type(schema.plain(np.float32(0.15))) is float
    assert schema.plain((f32(0.11) + f32(0.29)) / 2) == 0.2  # an aggregate of float32 values
    for v in (1 / 96, f32(1 / 96), 12345.678, 3.14159e-5, -2.5e7, f32(0.987654)):
        assert schema.plain(v) == pytest.approx(v, rel=5e-7)  # 7 significant digits: float32's precision
        assert schema.plain(v) == float(f"{v:.7g}")
    assert schema.plain(7) == 7 and schema.plain(0.0) == 0.0 and schema.plain(True) is True
    assert schema.plain(12345678) == 12345678  # counts are kept whole


def test_run_labels():
    assert mlflow_ui.run_label("mnist", 0, {"J": 8}, ["J"]) == "mnist-s0 J=8"
    assert mlflow_ui.run_label("cifar10", 2, {"sigma2": 0.0123456, "lr": 3e-5}, ["sigma2", "lr"]) == \
        "cifar10-s2 sigma2=0.0123 lr=3e-05"
    assert mlflow_ui.run_label("digits", 1, {"method": "simvae"}, ["method"]) == "digits-s1 simvae"
    assert mlflow_ui.run_label("shapes", 0, {"likelihood_scale": 1000.0, "prior": "uniform"},
                              ["likelihood_scale", "prior"]) == "shapes-s0 likelihood_scale=1000 prior=uniform"


def test_children_named_by_config_and_marked_by_outcome(store):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store)
    exp, parent = a_sweep(store, quick_plan(), "outcomes")
    done = child(store, exp, parent, "t1", J=8)
    assert c.get_run(done.run_id).info.run_name == "mnist-s0 J=8"
    done.log_epoch({"epoch": 1, "loss": float(np.float32(1.1)), "val_acc_knn": float(np.float32(0.32))})
    assert c.get_run(done.run_id).data.metrics["val_acc_knn"] == 0.32  # no float32 noise
    done.end(COMPLETED)
    stopped = child(store, exp, parent, "t2", J=2)
    stopped.end(STOPPED_EARLY)
    failed = child(store, exp, parent, "t3", J=4)
    failed.end(FAILED, error="NonFiniteLoss: loss became nan")
    assert c.get_run(failed.run_id).data.tags[Tag.ERROR] == "NonFiniteLoss: loss became nan"
    cut = child(store, exp, parent, "t4", dataset="cifar10", J=4)
    # Ray stopped the trial, the driver has not said why yet: no suffix until it does
    tracking.close_children(store, exp, parent, "KILLED", trial_id="t4", closed_by="resume")
    assert c.get_run(cut.run_id).info.run_name == "cifar10-s0 J=4"
    assert c.get_run(cut.run_id).data.tags[Tag.OUTCOME] == "stopped"
    running = child(store, exp, parent, "t5", dataset="cifar10", J=8)
    # the driver's Ctrl-C
    assert tracking.close_children(store, exp, parent, INTERRUPTED.status, **INTERRUPTED.tags()) == 1
    names = {r.data.tags[Tag.TRIAL_ID]: (r.info.run_name, r.info.status, r.data.tags[Tag.OUTCOME])
             for r in tracking.find_children(store, exp, parent)}
    assert names == {"t1": ("mnist-s0 J=8", "FINISHED", "completed"),
                     "t2": ("mnist-s0 J=2 (ASHA-stopped)", "FINISHED", "stopped_early"),
                     "t3": ("mnist-s0 J=4 (failed)", "FAILED", "failed"),
                     "t4": ("cifar10-s0 J=4", "KILLED", "stopped"),
                     "t5": ("cifar10-s0 J=8 (interrupted)", "KILLED", "interrupted")}
    # The driver's verdict (sweeps/ledger.py: ASHA stopped t4) reaches the names at the end.
    c.set_tag(cut.run_id, Tag.STOPPED_EARLY, "true")
    c.set_terminated(cut.run_id, status="FINISHED")
    assert tracking.name_children_by_outcome(store, exp, parent) == 1
    assert c.get_run(cut.run_id).info.run_name == "cifar10-s0 J=4 (ASHA-stopped)"
    # --resume reopens an interrupted child: running again, its suffix gone
    again = child(store, exp, parent, "t5", dataset="cifar10", J=8)
    assert again.run_id == running.run_id and again.resumed
    run = c.get_run(running.run_id)
    assert (run.info.run_name, run.info.status, run.data.tags[Tag.OUTCOME]) == ("cifar10-s0 J=8", "RUNNING", "running")


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
    searcher.on_trial_result("t1", {"epoch": 1, schema.ASHA_METRIC: 0.3})
    searcher.on_trial_complete("t1", {"epoch": 2, schema.ASHA_METRIC: 0.4, schema.SELECTION_METRIC: 0.35})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = search.SelectionSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.suggest("t2")
    restored.on_trial_result("t2", {"epoch": 1, schema.ASHA_METRIC: 0.2})
    restored.on_trial_complete("t2", {"epoch": 1, schema.ASHA_METRIC: 0.2})  # ASHA stopped it
    study = optuna.load_study(study_name="sweep-1", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    # the last epoch, reported with the final evaluation, ends the curve (no off-by-one)
    assert study.trials[0].value == 0.35 and study.trials[0].intermediate_values == {1: 0.3, 2: 0.4}
    assert study.user_attrs["space"] == "simvae_sigma2" and study.user_attrs["selection_metric"] == "acc_mlp_mean"
    pickle.dumps(restored)  # Tune pickles the searcher with the experiment state


def _told_before_the_kill(searcher, restored):
    """Optuna recorded the trial COMPLETE; Tune's snapshot (the pickled searcher) is older: the
    resumed trial reports its final result again."""
    searcher.on_trial_complete("t1", {"epoch": 2, schema.SELECTION_METRIC: 0.35})
    restored().on_trial_complete("t1", {"epoch": 2, schema.SELECTION_METRIC: 0.35})
    return ["COMPLETE"]


def _a_report_after_the_end(searcher, restored):
    searcher.on_trial_complete("t1", {"epoch": 2, schema.SELECTION_METRIC: 0.35})
    again = restored()
    again.on_trial_result("t1", {"epoch": 2, schema.ASHA_METRIC: 0.4})
    again.on_trial_complete("t1", {"epoch": 2, schema.SELECTION_METRIC: 0.35})
    return ["COMPLETE"]


def _failed_then_retried(searcher, restored):
    """--retry-failed: the trial failed (told FAIL), then completed."""
    searcher.on_trial_complete("t1", error=True)
    restored().on_trial_complete("t1", {"epoch": 2, schema.SELECTION_METRIC: 0.35})
    return ["FAIL", "COMPLETE"]


def _forgotten_by_tune(searcher, restored):
    """A trial suggested after Tune's last snapshot: Tune forgets it in the kill."""
    searcher.suggest("t2")
    restored()
    return ["RUNNING", "FAIL"]


TOLD = {"told before the kill, again after": _told_before_the_kill, "a report after the end": _a_report_after_the_end,
        "failed, then retried to completion": _failed_then_retried, "a trial Tune forgot": _forgotten_by_tune}


@pytest.mark.parametrize("case", list(TOLD))
def test_the_study_and_tunes_snapshot_are_reconciled(case, tmp_path):
    """After a hard kill Optuna's study can be ahead of Tune's snapshot of the searcher: a
    restored searcher never tells a finished trial again (no 'Cannot tell a COMPLETE trial'), a
    retried trial's new outcome is added as a trial of its own, and the study's running trials
    Tune forgot are failed, not left RUNNING for ever."""
    import optuna

    from sweeps import search

    plan = quick_plan("simvae_sigma2", num_samples=3)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = search.selection_search(plan, storage=url, study_name="sweep-1")
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"epoch": 1, schema.ASHA_METRIC: 0.3})
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's snapshot, taken here

    def restored():
        r = search.SelectionSearch()
        r.restore(str(tmp_path / "searcher.pkl"))
        return r

    expected = TOLD[case](searcher, restored)
    study = optuna.load_study(study_name="sweep-1", storage=url)
    assert [t.state.name for t in study.trials] == expected  # t1 (still running when Tune forgot t2), ...
    if case == "a trial Tune forgot":
        assert study.trials[1].user_attrs[search.SelectionSearch.LOST]
    if case == "failed, then retried to completion":
        assert study.trials[1].user_attrs["retry_of"] == 0 and study.trials[1].value == 0.35
        assert study.trials[1].params == study.trials[0].params


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
        folder = tmp_path / "served"
        folder.mkdir()
        ledger = SweepLedger.create(plan, {"profile": "quick"}, folder, uri, None)
        exp, parent = ledger.experiment_id, ledger.parent_id
        stopped = child(uri, exp, parent, "t1", J=2)
        stopped.log_epoch({"epoch": 1, "val_acc_knn": float(np.float32(0.32))})
        stopped.end(STOPPED_EARLY)
        rows = [{"trial_id": "t9", "status": "completed", "config/J": 4, "acc_mlp_mean": 0.5},
                {"trial_id": "t1", "status": "stopped_early", "config/J": 2}]
        ledger.write_trials(rows)
        ledger.conclude(plan, rows, "summary", complete=False)
        ledger.close("completed")

        def ajax(path, body=None):
            req = urllib.request.Request(f"{uri}/ajax-api/2.0/mlflow/{path}", method="POST" if body else "GET",
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(req, timeout=30).read())

        served = {t["key"]: t["value"] for t in ajax(f"experiments/get?experiment_id={exp}")["experiment"]["tags"]}
        assert served["mlflow.experimentKind"] == "custom_model_development"
        assert "selectedColumns" in json.loads(served[Tag.SAVED_VIEW + mlflow_ui.VIEW_KEY])["state"]
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
