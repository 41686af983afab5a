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


# -- every record agrees with trials.csv -------------------------------------------------------------------


def _kill(c, run_id: str, **tags: str) -> None:
    for k, v in tags.items():
        c.set_tag(run_id, k, v)
    c.set_terminated(run_id, status="KILLED")


def _relabel(paths: list[Path], **fields) -> None:
    for p in paths:
        record = json.loads(p.read_text())
        record["run"].update(fields)
        p.write_text(json.dumps(record))


def _failed_on_a_truncated_checkpoint(c, kids, paths):
    """Interrupted, then resumed: the resume closed its children KILLED, and the trial failed
    loading its checkpoint before it reopened any record."""
    for run_id in kids:
        _kill(c, run_id, **{Tag.INTERRUPTED: "true", Tag.CLOSED_BY: "resume"})
    _relabel(paths, status="KILLED", interrupted=True)
    return {"status": "failed", "error": "CheckpointError: cannot load checkpoint runs.pt: truncated"}


def _completed_after_an_interruption(c, kids, paths):
    """The interruption relabelled it (Tune's snapshot said RUNNING), then it completed."""
    for run_id in kids:
        c.set_tag(run_id, Tag.INTERRUPTED, "true")
        c.set_terminated(run_id, status="FINISHED")
    _relabel(paths, status="KILLED", interrupted=True)
    return {"status": "completed", "acc_mlp_mean": 0.5}


def _failed_then_retried_to_completion(c, kids, paths):
    """--retry-failed: the first attempt's error is no longer the run's."""
    for run_id in kids:
        c.set_tag(run_id, Tag.ERROR, "NonFiniteLoss: loss became nan")
        c.set_terminated(run_id, status="FINISHED")
    _relabel(paths, status="FINISHED", error="NonFiniteLoss: loss became nan")
    return {"status": "completed", "acc_mlp_mean": 0.5}


def _stopped_by_asha(c, kids, paths):
    for run_id in kids:
        _kill(c, run_id)
    return {"status": "stopped_early"}


def _cut_short_by_ctrl_c(c, kids, paths):
    return {"status": "RUNNING"}


AGREE = {"failed on a truncated checkpoint": _failed_on_a_truncated_checkpoint,
         "completed after an interruption relabelled it": _completed_after_an_interruption,
         "failed, then retried to completion": _failed_then_retried_to_completion,
         "stopped by ASHA": _stopped_by_asha, "cut short by Ctrl-C": _cut_short_by_ctrl_c}


@pytest.mark.parametrize("case", list(AGREE))
def test_result_json_mlflow_and_trials_csv_agree_on_every_verdict(case, store, tmp_path):
    """Whatever the trial's records said when Tune returned, the driver's verdicts leave its
    result.json files and its children saying what trials.csv says -- and the analysis reads the
    same outcome from either."""
    from mlflow.tracking import MlflowClient

    from analysis.records import load_files, load_mlflow
    from sweeps.schema import VERDICTS, verdict_of_row

    ledger, _ = a_ledger(store, tmp_path, "agree")
    paths = a_trial(ledger, "g_00000")
    c = MlflowClient(store)
    kids = [r.info.run_id for r in children(ledger).values()]
    row = {"trial_id": "g_00000", **AGREE[case](c, kids, paths)}
    ledger.record_verdicts([row])
    verdict = verdict_of_row(row)
    error = row.get("error", "") if verdict is FAILED else ""
    for kid in children(ledger).values():
        assert kid.info.status == verdict.status
        assert (kid.data.tags[Tag.STOPPED_EARLY], kid.data.tags[Tag.INTERRUPTED], kid.data.tags[Tag.OUTCOME]) == \
            (str(verdict.stopped_early).lower(), str(verdict.interrupted).lower(), verdict.name)
        assert kid.data.tags.get(Tag.ERROR, "") == error
        assert kid.info.run_name.endswith(verdict.suffix)
    for p in paths:
        run = result(p)
        assert (run["status"], run["stopped_early"], run["interrupted"], run["error"]) == \
            (verdict.status, verdict.stopped_early, verdict.interrupted, error)
    files = load_files("simvae_J", tmp_path, named="agree").df.set_index(["trial_id", "dataset"]).sort_index()
    mlflow = load_mlflow("simvae_J", store, parent=ledger.parent_id).df.set_index(["trial_id", "dataset"]).sort_index()
    for col in ("status", "stopped_early", "eligible"):
        assert list(files[col]) == list(mlflow[col]), col
    assert set(VERDICTS) >= {verdict.name}


def test_a_repaired_parent_says_completed(store, tmp_path):
    """A tracking outage at the end left the parent RUNNING with sweep_status=running while
    sweep.json says completed: the repair brings the tag along with the status."""
    from mlflow.tracking import MlflowClient

    ledger, _ = a_ledger(store, tmp_path, "repaired")
    ledger.write_trials([])
    ledger._write_info(status="completed", tracking_incomplete={"sweep": "the parent's summary not logged"})
    SweepLedger.of_folder(ledger.folder).repair()
    run = MlflowClient(store).get_run(ledger.parent_id)
    assert (run.info.status, run.data.tags[Tag.SWEEP_STATUS]) == ("FINISHED", "completed")


def test_a_failed_sweep_says_why_in_both(store, tmp_path):
    """A sweep that ends failed (a full disk) closes its open children FAILED with the reason, and
    the parent says it too; a sweep resumed from there no longer carries it."""
    from mlflow.tracking import MlflowClient

    ledger, _ = a_ledger(store, tmp_path, "full")
    a_trial(ledger, "f_00000", datasets=("digits",))
    ledger.close("failed", "no space left on device under /storage")
    (kid,) = children(ledger).values()
    assert (kid.info.status, kid.data.tags[Tag.ERROR]) == ("FAILED", "no space left on device under /storage")
    c = MlflowClient(store)
    run = c.get_run(ledger.parent_id)
    assert (run.info.status, run.data.tags[Tag.SWEEP_STATUS], run.data.tags[Tag.ERROR]) == \
        ("FAILED", "failed", "no space left on device under /storage")
    assert json.loads((ledger.folder / "sweep.json").read_text())["error"] == "no space left on device under /storage"
    ledger.set_status("running")
    assert Tag.ERROR not in c.get_run(ledger.parent_id).data.tags
    assert "error" not in json.loads((ledger.folder / "sweep.json").read_text())


# -- a sweep name identifies one study -----------------------------------------------------------------------


def test_a_sweep_name_used_again_starts_a_study_of_its_own(store, tmp_path):
    """A sweep's folder deleted and its name used again: the new sweep's Optuna study is its own
    (the name carries a unique id), empty, and the parent run names it; a study of that name
    already in the storage is refused rather than continued."""
    import shutil

    from mlflow.tracking import MlflowClient

    from sweeps import search

    optuna_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    plan = spaces.expand("vae_lr", "quick", num_samples=4)
    studies = []
    for attempt in range(2):
        folder = tmp_path / "reused"
        folder.mkdir()
        ledger = SweepLedger.create(plan, {"profile": "quick"}, folder, store, optuna_url)
        name = ledger.info["optuna_study"]
        assert name.startswith("reused-") and name != "reused"
        assert MlflowClient(store).get_run(ledger.parent_id).data.tags[Tag.OPTUNA_STUDY] == name
        searcher = search.selection_search(plan, storage=optuna_url, study_name=name,
                                           user_attrs={"sweep": "reused", "mlflow_parent_run_id": ledger.parent_id})
        assert searcher._ot_study.trials == []  # nothing of the earlier sweep of this name
        for value in (0.4, 0.6):  # the sweep ran two trials
            trial = searcher._ot_study.ask({"lr": __import__("optuna").distributions.FloatDistribution(1e-4, 1e-2)})
            searcher._ot_study.tell(trial, value)
        studies.append(name)
        with pytest.raises(RuntimeError, match="already in"):
            search.selection_search(plan, storage=optuna_url, study_name=name)
        shutil.rmtree(folder)
    assert studies[0] != studies[1]
