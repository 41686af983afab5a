"""sweeps/ledger.py through a real MLflow store (SQLite, in RAM) and a real experiment folder: a
sweep's records from open to close -- the experiment and parent described, each trial's verdict
the same in MLflow and in its result.json files, the orphans of a hard kill gone from both, the
winner and the status on the parent and in sweep.json, a repair -- and a trial's own records
(``TrialLedger``). No Ray: the rows stand for what Tune reports."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeps import schema, spaces, tracking
from sweeps.ledger import SweepLedger, TrialLedger, best_trial
from sweeps.schema import COMPLETED, FAILED, Tag


@pytest.fixture(scope="module")
def store(ram_dir):
    """One SQLite store for the module (in RAM where possible)."""
    return f"sqlite:///{ram_dir / 'mlflow.db'}"


def a_ledger(store: str, tmp_path: Path, name: str, space: str = "simvae_J") -> tuple[SweepLedger, object]:
    plan = spaces.expand(space, "quick")
    folder = tmp_path / name
    folder.mkdir()
    return SweepLedger.create(plan, {"profile": "quick"}, folder, store, None), plan


def a_run(dataset: str = "digits", seed: int = 0, J: int = 4, epoch: int = 2):
    """What the records need of a ``trainables.driver.Run``."""
    cfg = {"method": "simvae", "dataset": dataset, "seed": seed, "J": J, "epochs": 3}
    return SimpleNamespace(cfg=cfg, user_config=dict(cfg), epoch=epoch, label=f"{dataset}/seed {seed}",
                           history=[{"epoch": epoch, "loss": 1.5, "val_acc_knn": 0.5}], final=None)


def a_trial(ledger: SweepLedger, trial_id: str, datasets=("digits", "shapes"), J: int = 4) -> list[Path]:
    """A trial that trained two epochs: its children open in MLflow and its result.json files
    RUNNING in its folder of the sweep, as a trial leaves them when Ray stops it."""
    trial = TrialLedger(ledger.uri, ledger.experiment_id, ledger.parent_id, trial_id,
                        ledger.folder / f"sweep_trial_{trial_id}", {"space": "simvae_J", "trial_id": trial_id,
                                                                    "sweep": ledger.name}, {Tag.METHOD: "simvae"}, "node")
    paths = []
    for d in datasets:
        run = a_run(d, J=J)
        trial.open(run)
        trial.epoch(run, run.history[-1])
        paths.append(schema.run_folder(trial.trial_dir, d, 0) / schema.RESULT_FILE)
    return paths


def result(path: Path) -> dict:
    return json.loads(path.read_text())["run"]


def children(ledger: SweepLedger) -> dict[tuple[str, str], object]:
    return {(r.data.tags[Tag.TRIAL_ID], r.data.tags[Tag.DATASET]): r
            for r in tracking.find_children(ledger.uri, ledger.experiment_id, ledger.parent_id)}


def test_a_new_sweep_describes_itself_in_mlflow_and_in_sweep_json(store, tmp_path):
    from mlflow.tracking import MlflowClient

    ledger, plan = a_ledger(store, tmp_path, "simvae_J-quick-test")
    c = MlflowClient(store)
    tags = c.get_experiment(ledger.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3: machine learning, not GenAI
    assert tags["mlflow.note.content"].startswith(plan.description)
    assert f"#/experiments/{ledger.experiment_id}/runs?workflowType=machine_learning" in tags["mlflow.note.content"]
    view = json.loads(tags[Tag.SAVED_VIEW + "sweep-results"])
    state = json.loads(view["state"])
    assert view["name"] == "Sweep results" and isinstance(view["createdAt"], int)
    assert {"params.`J`", "tags.`outcome`", "metrics.`acc_mlp`", "metrics.`best.acc_mlp_mean`"} <= set(state["selectedColumns"])
    run = c.get_run(ledger.parent_id)
    assert run.info.run_name == "simvae_J-quick-test" and run.info.status == "RUNNING"
    assert run.data.tags[Tag.SEARCHED] == "J" and run.data.tags[Tag.SWEEP_STATUS] == "running"
    assert "Sweep simvae_J-quick-test" in run.data.tags["mlflow.note.content"]
    assert "grid over `J` grid [2, 4, 8]" in run.data.tags["mlflow.note.content"]
    info = json.loads((ledger.folder / "sweep.json").read_text())
    assert info["status"] == "running" and info["parent_run_id"] == ledger.parent_id
    assert spaces.Plan.from_dict(info["plan"]) == plan and info["tracking_uri"] == store


def test_a_verdict_is_the_same_in_mlflow_and_in_result_json(store, tmp_path):
    """The driver's verdicts once Tune has returned: an ASHA-stopped trial and one the sweep cut
    short, alike in their children (status, tags, names) and their files -- which the analysis
    then reads the same from either source."""
    from analysis.records import load_files, load_mlflow

    ledger, _ = a_ledger(store, tmp_path, "verdicts")
    stopped, cut = a_trial(ledger, "v_00000", J=2), a_trial(ledger, "v_00001", J=8)
    assert all(result(p)["status"] == "RUNNING" for p in stopped + cut)
    ledger.record_verdicts([{"trial_id": "v_00000", "status": "stopped_early"},
                            {"trial_id": "v_00001", "status": "RUNNING"}])  # Ray's status: never ended
    kids = children(ledger)
    for d in ("digits", "shapes"):
        a, b = kids[("v_00000", d)], kids[("v_00001", d)]
        assert (a.info.status, a.data.tags[Tag.STOPPED_EARLY], a.data.tags[Tag.OUTCOME]) == \
            ("FINISHED", "true", "stopped_early")
        assert a.info.run_name == f"{d}-s0 J=2 (ASHA-stopped)"
        assert (b.info.status, b.data.tags[Tag.INTERRUPTED], b.data.tags[Tag.OUTCOME]) == \
            ("KILLED", "true", "interrupted")
    assert all((result(p)["status"], result(p)["stopped_early"], result(p)["interrupted"]) == ("FINISHED", True, False)
               for p in stopped)
    assert all((result(p)["status"], result(p)["stopped_early"], result(p)["interrupted"]) == ("KILLED", False, True)
               for p in cut)
    files = load_files("simvae_J", tmp_path, ledger.name).df.set_index(["trial_id", "dataset"]).sort_index()
    mlflow = load_mlflow("simvae_J", store, parent=ledger.parent_id).df.set_index(["trial_id", "dataset"]).sort_index()
    for col in ("status", "stopped_early", "eligible"):
        assert list(files[col]) == list(mlflow[col]), col


def test_a_lost_trials_orphan_is_gone_from_mlflow_and_from_the_files(store, tmp_path):
    """After a hard kill Tune forgets a trial started since its last snapshot and reruns its
    config under a new id: the lost trial's children and its run files both go, so neither the
    MLflow records nor the file-based analysis holds two runs of one config, or an unfinished one."""
    from analysis.records import load_files, load_mlflow

    ledger, plan = a_ledger(store, tmp_path, "orphans")
    kept, lost = a_trial(ledger, "o_00000"), a_trial(ledger, "o_00001")
    rows = [{"trial_id": "o_00000", "status": "completed", "config/J": 4, "acc_mlp_mean": 0.5}]
    ledger.conclude(plan, rows, "summary", complete=True)
    assert {t for t, _ in children(ledger)} == {"o_00000"}
    assert all(p.exists() for p in kept) and not any(p.exists() for p in lost)
    assert not any(p.parent.exists() for p in lost)  # the run's files beside result.json too
    assert set(load_files("simvae_J", tmp_path, ledger.name).df["trial_id"]) == {"o_00000"}
    assert set(load_mlflow("simvae_J", store, parent=ledger.parent_id).df["trial_id"]) == {"o_00000"}


def test_the_parent_records_the_winner_and_the_status(store, tmp_path):
    import numpy as np
    from mlflow.tracking import MlflowClient

    ledger, plan = a_ledger(store, tmp_path, "winner")
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    rows = [{"trial_id": "a_00000", "status": "completed", "config/J": 2, "acc_mlp_mean": 0.5,
             "digits/acc_mlp": 0.4, "shapes/acc_mlp": 0.6},
            {"trial_id": "a_00001", "status": "completed", "config/J": 8, "acc_mlp_mean": (f32(0.61) + f32(0.79)) / 2,
             "acc_knn_mean": 0.6, "digits/acc_mlp": f32(0.61), "shapes/acc_mlp": f32(0.79),
             "digits/acc_knn": 0.55, "shapes/acc_knn": 0.65},
            {"trial_id": "a_00002", "status": "stopped_early", "config/J": 4, "acc_mlp_mean": 0.99}]
    assert best_trial(rows)["trial_id"] == "a_00001"  # stopped trials never win, whatever their value
    ledger.write_trials(rows)
    with open(ledger.folder / "trials.csv") as f:  # ranked, the winner first; numbers as records hold them
        ranked = [(r["rank"], r["trial_id"], r["acc_mlp_mean"]) for r in csv.DictReader(f)]
    assert ranked == [("1", "a_00001", "0.7"), ("2", "a_00000", "0.5"), ("", "a_00002", "0.99")]
    assert ledger.conclude(plan, rows, "the summary", complete=True) == {}
    ledger.close("completed")
    c = MlflowClient(store)
    run = c.get_run(ledger.parent_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["best.trial_id"] == "a_00001" and tags["best.J"] == "8" and json.loads(tags["best.config"]) == {"J": 8}
    assert metrics["best.acc_mlp_mean"] == 0.7 and metrics["best.digits.acc_mlp"] == 0.61
    assert metrics["best.shapes.acc_knn"] == 0.65 and metrics["trials_stopped_early"] == 1 and metrics["trials"] == 3
    assert tags["mlflow.note.content"].startswith(
        "**Winner**: trial `a_00001` (J=8): 70.0% mean MLP-probe test accuracy (digits 61.0%, shapes 79.0%)")
    assert tags[Tag.SWEEP_STATUS] == "completed" and run.info.status == "FINISHED"
    assert {a.path for a in c.list_artifacts(ledger.parent_id)} == {"trials.csv", "summary.txt"}
    assert (ledger.folder / "summary.txt").read_text() == "the summary\n"
    assert json.loads((ledger.folder / "sweep.json").read_text())["status"] == "completed"
    ledger.set_status("running")  # --resume reopens the parent
    assert c.get_run(ledger.parent_id).info.status == "RUNNING"
    ledger.close("interrupted")
    run = c.get_run(ledger.parent_id)
    assert (run.data.tags[Tag.SWEEP_STATUS], run.info.status) == ("interrupted", "KILLED")
    assert json.loads((ledger.folder / "sweep.json").read_text())["status"] == "interrupted"


def test_repair_closes_what_an_outage_left_open_in_both_records(store, tmp_path):
    """--resume of a completed sweep whose children a tracking outage left RUNNING: each ends with
    its trial's verdict from trials.csv (interrupted when the trial is not there), its files alike."""
    ledger, plan = a_ledger(store, tmp_path, "repair")
    done, lost = a_trial(ledger, "r_00000", datasets=("digits",)), a_trial(ledger, "r_00009", datasets=("digits",))
    rows = [{"trial_id": "r_00000", "status": "stopped_early", "config/J": 4}]
    ledger.write_trials(rows)
    ledger._write_info(status="completed", tracking_incomplete={"r_00000": "1 record(s) not logged"})
    repaired = SweepLedger.of_folder(ledger.folder)
    assert repaired.repair() == 2
    kids = children(ledger)
    assert kids[("r_00000", "digits")].data.tags[Tag.OUTCOME] == "stopped_early"
    assert kids[("r_00009", "digits")].data.tags[Tag.OUTCOME] == "interrupted"
    assert all(k.data.tags[Tag.CLOSED_BY] == "repair" for k in kids.values())
    assert result(done[0])["stopped_early"] is True and result(lost[0])["interrupted"] is True
    info = json.loads((ledger.folder / "sweep.json").read_text())
    assert info["status"] == "completed" and "tracking_incomplete" not in info


def test_a_trial_records_its_own_end_in_both(store, tmp_path):
    """A trial that fails ends its children FAILED with the error, and its runs' result.json files
    say the same; its end is recorded once."""
    ledger, _ = a_ledger(store, tmp_path, "trial")
    trial = TrialLedger(store, ledger.experiment_id, ledger.parent_id, "t_00000", tmp_path / "trial" / "t",
                        {"trial_id": "t_00000"}, {Tag.METHOD: "simvae"}, "node-a", "10.0.0.1")
    run = a_run()
    trial.open(run)
    trial.epoch(run, run.history[-1])
    path = schema.run_folder(trial.trial_dir, "digits", 0) / schema.RESULT_FILE
    assert result(path)["status"] == "RUNNING" and result(path)["epochs_trained"] == 2
    trial.end([run], FAILED, "NonFiniteLoss: loss term 'loss' became nan at epoch 3")
    trial.end([run], COMPLETED)  # once: a later end changes nothing
    (kid,) = children(ledger).values()
    assert (kid.info.status, kid.data.tags[Tag.OUTCOME], kid.data.tags[Tag.ERROR]) == \
        ("FAILED", "failed", "NonFiniteLoss: loss term 'loss' became nan at epoch 3")
    assert kid.data.tags[Tag.NODE_IP] == "10.0.0.1" and kid.info.run_name == "digits-s0 J=4 (failed)"
    assert (result(path)["status"], result(path)["error"]) == ("FAILED", "NonFiniteLoss: loss term 'loss' became nan at epoch 3")
    assert trial.tracked.metrics() == {}  # every MLflow call went through
