"""Small sweeps end to end on a local Ray (2 CPUs, tiny budgets): Optuna + ASHA, the MLflow
records in the SQLite store, a failing config, and an interrupted sweep resumed."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--profile", "quick", "--epochs", "2", "--num-cpus", "2", "--set", "train_size=96",
        "--set", "test_size=96", "--set", "probe_epochs=3", "--set", "probe_min_steps=50", "--set", "decoder_epochs=1",
        "--set", "style_J=1"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module; main() uses it instead of starting its own."""
    import faults
    import ray
    import ray.cloudpickle

    os.environ.pop("RAY_ADDRESS", None)
    ray.cloudpickle.register_pickle_by_value(faults)  # the workers need not import tests/
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"worker_process_setup_hook": faults.worker_setup})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the module (creating one costs ~10 s of schema migrations); tests
    tell their sweeps apart by parent run."""
    from sweeps import tracking

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    for space in ("vae_lr", "simvae_J"):
        tracking.ensure_experiment(uri, space)
    return uri


@pytest.fixture
def home(tmp_path, monkeypatch, local_ray, tracking_uri):
    monkeypatch.setenv("SSL_SWEEPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return tmp_path / "home"


def runs_of(home: Path, space: str):
    """(client, [the sweep's parent run], its child runs) from the SQLite store."""
    from mlflow.tracking import MlflowClient

    info = json.loads((experiment_folder(home) / "sweep.json").read_text())
    c = MlflowClient(info["tracking_uri"])
    exp = c.get_experiment_by_name(f"ssl-sweeps/{space}")
    assert info["experiment_id"] == exp.experiment_id
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.info.run_id == info["parent_run_id"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["parent_run_id"]]
    assert all("mlflow.parentRunId" not in r.data.tags for r in parents)
    return c, parents, children


def experiment_folder(home: Path) -> Path:
    (folder,) = [p.parent for p in (home / "tune").glob("*/sweep.json")]
    return folder


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_optuna_sweep_records_everything_in_mlflow(home):
    from sweeps.run import main

    code = main(["--space", "vae_lr", "--num-samples", "2", "--datasets", "digits,shapes", *TINY])
    assert code == 0
    folder = experiment_folder(home)
    info = json.loads((folder / "sweep.json").read_text())
    assert info["status"] == "completed"
    trials = read_csv(folder / "trials.csv")
    assert len(trials) == 2
    assert {t["status"] for t in trials} <= {"completed", "stopped_early"}
    completed = [t for t in trials if t["status"] == "completed"]
    assert completed
    for t in completed:  # the selection metric is the mean of the per-dataset MLP accuracies
        per = [float(t["digits/acc_mlp"]), float(t["shapes/acc_mlp"])]
        assert float(t["acc_mlp_mean"]) == pytest.approx(sum(per) / 2)
        assert all(0.0 < a <= 1.0 for a in per)

    c, parents, children = runs_of(home, "vae_lr")
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["space"] == "vae_lr"
    assert parent.data.metrics["trials"] == 2
    assert len(children) == 2 * 2  # one per trial and dataset (one seed)
    assert Counter((r.data.tags["trial_id"], r.data.tags["dataset"]) for r in children).most_common(1)[0][1] == 1
    by_trial = {t["trial_id"]: t for t in trials}
    for r in children:
        tags, params = r.data.tags, r.data.params
        assert r.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["method"] == "vae" and tags["space"] == "vae_lr" and tags["seed"] == "0"
        assert len(tags["config_hash"]) == 12 and tags["git_commit"]
        trial = by_trial[tags["trial_id"]]
        # The full resolved config as params; the searched lr is the trial's.
        assert float(params["lr"]) == pytest.approx(float(trial["config/lr"]))
        assert params["dataset"] == tags["dataset"] and params["epochs"] == "2" and params["train_size"] == "96"
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "loss")]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= 2
        if trial["status"] == "completed":
            assert tags["stopped_early"] == "false" and steps == [1, 2]
            assert 0.0 < r.data.metrics["acc_mlp"] <= 1.0
            assert r.data.metrics["acc_mlp"] == pytest.approx(float(trial[f"{tags['dataset']}/acc_mlp"]))
            names = {a.path for a in c.list_artifacts(r.info.run_id)}
            assert {"config.json", "metrics.json", "learning_curve.png", "recon_grid.png"} <= names
        else:
            assert tags["stopped_early"] == "true" and steps == [1]

    # Every run also wrote a self-describing result.json into its trial folder: the analysis
    # reads the same runs, configs and final metrics from those files as from MLflow.
    from analysis.records import load

    files = load("vae_lr", source="files", parent=folder.name).df.set_index(["trial_id", "dataset"]).sort_index()
    mlflow = load("vae_lr", uri=info["tracking_uri"], parent=parent.info.run_id, source="mlflow").df
    mlflow = mlflow.set_index(["trial_id", "dataset"]).sort_index()
    assert len(files) == 4 and list(files.index) == list(mlflow.index)
    for col in ("config_hash", "status", "stopped_early", "eligible", "seed", "config.lr"):
        assert list(files[col]) == list(mlflow[col]), col
    done = files["eligible"]
    assert done.any()
    assert list(files.loc[done, "acc_mlp"]) == pytest.approx(list(mlflow.loc[done, "acc_mlp"]))


def test_failing_trials_end_failed_and_exit_nonzero(home):
    import faults
    from sweeps import spaces
    from sweeps.run import main

    with faults.registered() as method:  # in this process; the workers register it at start
        spaces.register(spaces.Space("nan_lr", "test only: a VAE that diverges at once", (method,),
                                     {"lr": spaces.LogUniform(1e-4, 1e-3)}))
        try:
            code = main(["--space", "nan_lr", "--num-samples", "2", "--datasets", "digits", *TINY,
                         "--set", "nan_after_steps=0"])
        finally:
            spaces.SPACES.pop("nan_lr")
    assert code == 1
    trials = read_csv(experiment_folder(home) / "trials.csv")
    assert [t["status"] for t in trials] == ["failed", "failed"]
    assert all("NonFiniteLoss" in t["error"] or "loss term" in t["error"] for t in trials)
    _, (parent,), children = runs_of(home, "nan_lr")
    assert parent.info.status == "FAILED"
    assert len(children) == 2 and all(r.info.status == "FAILED" for r in children)
    assert all("NonFiniteLoss" in r.data.tags.get("error", "") for r in children)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_console_is_compact_and_the_mlflow_runs_readable(local_ray, tracking_uri, monkeypatch, capfd):
    """What a person sees: stdout of a quick sweep fits 120 columns -- one line per report, no
    Tune result boxes or tables, no TensorBoard hint, no per-epoch checkpoint lines, ASHA's stops
    said as such -- and in MLflow the children are named by dataset, seed and J, marked by outcome,
    and the parent records the winner. A short home folder: the summary prints paths."""
    import shutil
    import tempfile

    from sweeps.run import main

    short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
    try:
        shutil.copy(tracking_uri[len("sqlite:///"):], short / "mlflow.db")  # a migrated store, a short path
        monkeypatch.setenv("SSL_SWEEPS_HOME", str(short / "h"))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{short / 'mlflow.db'}")
        capfd.readouterr()
        code = main(["--space", "simvae_J", "--datasets", "digits", "--max-concurrent", "2", *TINY,
                     "--epochs", "3", "--set", "batch_size=32", "--early-stopping"])
        captured = capfd.readouterr()
        assert code == 0, captured.err[-3000:]
        lines = [ANSI.sub("", line) for line in captured.out.splitlines()]
        assert max(map(len, lines)) <= 120, [line for line in lines if len(line) > 120]
        text = "\n".join(lines)
        for noise in ("╭", "│", "Trial status", "tensorboard", "TensorBoard", "Checkpoint successfully created",
                      "completed after"):
            assert noise not in text, noise
        assert "Checkpoint successfully created" not in captured.err
        home = short / "h"
        trials = read_csv(experiment_folder(home) / "trials.csv")
        for t in trials:
            mine = [line for line in lines if line.startswith("[") and t["trial_id"] in line]  # progress lines
            J = t["config/J"]
            assert mine and all(f"{t['trial_id']} J={J}" in line for line in mine)
            assert any("epoch 1/3  val kNN " in line for line in mine)
            if t["status"] == "stopped_early":
                assert any(line.endswith("stopped early by ASHA") for line in mine)
            else:
                assert t["status"] == "completed" and any("done  acc MLP " in line for line in mine)
        assert "MLflow UI:" in text and "workflowType=machine_learning" in text
        assert "%" in text.split("best config")[1]  # the summary's accuracies in percent

        c, (parent,), children = runs_of(home, "simvae_J")
        by_trial = {t["trial_id"]: t for t in trials}
        for r in children:
            t = by_trial[r.data.tags["trial_id"]]
            stopped = t["status"] == "stopped_early"
            assert r.info.run_name == f"digits-s0 J={t['config/J']}" + (" (ASHA-stopped)" if stopped else "")
            assert r.data.tags["outcome"] == t["status"]
        best = max((t for t in trials if t["status"] == "completed"), key=lambda t: float(t["acc_mlp_mean"]))
        tags = parent.data.tags
        assert tags["best.trial_id"] == best["trial_id"] and tags["best.J"] == best["config/J"]
        assert tags["sweep_status"] == "completed" and "**Winner**" in tags["mlflow.note.content"]
        assert parent.data.metrics["best.acc_mlp_mean"] == pytest.approx(float(best["acc_mlp_mean"]), rel=1e-6)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_every_trial_writes_its_runs_into_the_storage_folder(home):
    """More trials than run at once: Tune reuses a trial's actor for the next trial, whose
    get_trial_dir() is then a staging folder under /tmp/ray that never reaches the storage (Ray
    2.60). Every trial's run files -- the J=2 trial's too -- must be in its folder of the sweep."""
    from analysis.records import load
    from sweeps.run import main

    code = main(["--space", "simvae_J", "--datasets", "digits", "--max-concurrent", "1", *TINY])
    assert code == 0
    folder = experiment_folder(home)
    trials = read_csv(folder / "trials.csv")
    assert sorted(int(t["config/J"]) for t in trials) == [2, 4, 8]
    for t in trials:
        (trial_dir,) = folder.glob(f"*{t['trial_id']}*")
        run = trial_dir / "runs" / "digits-s0"
        assert {"result.json", "config.json", "metrics.json", "learning_curve.png"} <= {p.name for p in run.iterdir()}
        record = json.loads((run / "result.json").read_text())
        assert record["resolved"]["J"] == int(t["config/J"]) and record["run"]["status"] == "FINISHED"
        assert record["metrics"]["acc_mlp"] == pytest.approx(float(t["digits/acc_mlp"]))
    df = load("simvae_J", source="files", parent=folder.name).df  # a tiny budget: read when named
    assert sorted(df["config.J"]) == [2, 4, 8] and df["eligible"].all()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_finished_grid_sweep_keeps_no_checkpoint_and_a_study_the_dashboard_serves(home, capfd):
    """Disk proportional to need and Optuna's tools on our files: once the quick profile's grid
    sweep has ended no checkpoint is left (a trial keeps its newest while it runs; 130 MB each
    with the quick networks, two kept per trial before), and the whole home stays far under the
    100 MB target (benchmarks/sweep_disk.py measures it); the summary says so and prints commands
    that work as printed; the grid's Optuna study is there for the documented optuna-dashboard
    command, which serves it and exits cleanly; trials.csv is ranked, its numbers plain; the
    parent run holds the learning curves."""
    import urllib.request

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_disk import measure

    from sweeps.run import main

    capfd.readouterr()
    code = main(["--space", "simvae_J", *TINY])
    out = capfd.readouterr().out
    assert code == 0, out[-3000:]
    folder = experiment_folder(home)
    disk = measure(home)
    assert disk["checkpoint_folders"] == 0 and not list(folder.glob("*/checkpoint_*"))
    assert disk["total_mb"] < 100, disk
    flat = " ".join(out.split())
    assert "disk: " in flat and "no checkpoint: each is removed when its trial ends, unless --keep-checkpoints" in flat

    trials = read_csv(folder / "trials.csv")
    scores = [float(t["acc_mlp_mean"]) for t in trials]
    assert [t["rank"] for t in trials] == ["1", "2", "3"] and scores == sorted(scores, reverse=True)
    numbers = [v for t in trials for v in t.values() if re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", v)]
    assert numbers and all(len(re.sub(r"[-.]|e.*|^0\.0*", "", v)) <= 7 for v in numbers), numbers

    lines = out.splitlines()
    for line in lines[lines.index("MLflow UI: serve the store with") + 1:]:
        if line.strip().startswith((".venv", "/")):  # a printed command: its program exists as printed
            program = line.split()[0]
            assert (Path(program) if program.startswith("/") else Path.cwd() / program).exists(), line

    info = json.loads((folder / "sweep.json").read_text())
    assert info["optuna_study"].startswith(info["name"] + "-")
    c, (parent,), children = runs_of(home, "simvae_J")
    for child in children:  # the final metrics at the last epoch's step, beside the curves
        assert [m.step for m in c.get_metric_history(child.info.run_id, "val_acc_knn")] == [1, 2]
        assert [m.step for m in c.get_metric_history(child.info.run_id, "acc_mlp")] == [2]
    assert "figures/curves.png" in {a.path for a in c.list_artifacts(parent.info.run_id, "figures")}
    assert parent.data.tags["budget"].startswith("custom budget: ") and "best.lead" in parent.data.tags
    view = json.loads(json.loads(c.get_experiment(info["experiment_id"]).tags["mlflow.sharedViewState.sweep-results"])
                      ["state"])
    assert {"tags.`outcome`", "tags.`profile`", "tags.`budget`"} <= set(view["selectedColumns"])

    storage = info["optuna_storage"]
    study = optuna_study(storage, info["optuna_study"])  # the sweep's name plus a unique id
    assert sorted(t.params["J"] for t in study.trials) == [2, 4, 8]
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.trials)  # every epoch, the last included
    port = _free_port()
    dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host",
                                  "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
    try:
        deadline, body = time.time() + 90, None
        while time.time() < deadline and dashboard.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(1)
        assert dashboard.poll() is None, dashboard.communicate()[1][-2000:]
        assert info["optuna_study"] in {s["study_name"] for s in body["study_summaries"]}
    finally:
        dashboard.terminate()
        _, err = dashboard.communicate(timeout=30)
    assert "Traceback" not in err, err[-2000:]


def optuna_study(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early with {proc.returncode}")
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_sweep_resumes_without_duplicates(home, signum, code):
    # 3 epochs: ASHA rungs at 1 and 2 stop more trials before their (slow) final evaluation.
    args = ["--space", "simvae_J", "--datasets", "digits", "--max-concurrent", "2", *TINY,
            "--epochs", "3", "--set", "batch_size=32", "--early-stopping"]
    env = {**os.environ, "SSL_SWEEPS_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)  # the subprocess starts its own local Ray
    log = open(home.parent / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "sweeps" / "run.py"), *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        # Interrupt once two of the three trials (J = 2, 4, 8) have written a checkpoint: the
        # third has not started or is running, the first two are running or done.
        def progressed():
            dirs = sorted((home / "tune").glob("*/sweep_trial_*"))
            return sum(any(d.glob("checkpoint_*")) for d in dirs) >= 2

        _wait_for(progressed, 240, proc)
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == code, (home.parent / "driver.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    folder = experiment_folder(home)
    assert json.loads((folder / "sweep.json").read_text())["status"] == "interrupted"
    _, (parent,), before = runs_of(home, "simvae_J")
    assert parent.info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in before)
    # Interrupted is not 'stopped by ASHA': KILLED and tagged as such, never stopped_early.
    interrupted = [r for r in before if r.info.status == "KILLED"]
    assert interrupted and all(r.data.tags.get("interrupted") == "true" for r in interrupted)
    assert all(r.data.tags.get("stopped_early") != "true" for r in interrupted)
    log_text = (home.parent / "driver.log").read_text()
    assert "Traceback" not in log_text and "resume" in log_text
    finished_before = {r.data.tags["trial_id"]: r.info.start_time for r in before if r.info.status == "FINISHED"}

    from sweeps.run import main

    assert main([*args, "--resume"]) == 0
    c, (parent,), children = runs_of(home, "simvae_J")
    assert parent.info.status == "FINISHED"
    keys = Counter((r.data.tags["trial_id"], r.data.tags["dataset"], r.data.tags["seed"]) for r in children)
    assert len(keys) == 3 and set(keys.values()) == {1}  # one child per trial and dataset, no duplicates
    assert all(r.info.status == "FINISHED" for r in children), [(r.info.run_name, r.info.status, r.data.tags)
                                                                  for r in children]
    for r in children:  # finished trials were not rerun; no epoch logged twice
        if r.data.tags["trial_id"] in finished_before:
            assert r.info.start_time == finished_before[r.data.tags["trial_id"]]
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "loss")]
        assert steps == sorted(set(steps))
    trials = read_csv(folder / "trials.csv")
    assert len(trials) == 3 and all(t["status"] in ("completed", "stopped_early") for t in trials)
    # Nothing left to resume.
    from sweeps.run import main as again

    assert again([*args, "--resume"]) == 2


@pytest.mark.slow
def test_hard_killed_driver_resumes_without_duplicates(home):
    """SIGKILL of the driver (no chance to save or close anything): --resume still ends with
    one FINISHED child per trial and dataset (the records of trials Tune forgot are removed, from
    MLflow and from the files alike)."""
    args = ["--space", "simvae_J", "--datasets", "digits", "--max-concurrent", "2", *TINY,
            "--epochs", "3", "--set", "batch_size=32", "--early-stopping"]
    env = {**os.environ, "SSL_SWEEPS_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "sweeps" / "run.py"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: sum(any(d.glob("checkpoint_*")) for d in (home / "tune").glob("*/sweep_trial_*")) >= 2,
                  240, proc)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:  # the local Ray the killed driver started: its whole session
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # The resume as a user runs it, with its own local Ray: its console is the sweep's lines only
    # (no Ray "Restored on ... from checkpoint" line per restored trial).
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), *args, "--resume"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started:" in done.stdout or "done  acc MLP" in done.stdout
    assert "Restored on" not in done.stdout + done.stderr
    _, (parent,), children = runs_of(home, "simvae_J")
    assert parent.info.status == "FINISHED"
    keys = Counter((r.data.tags["trial_id"], r.data.tags["dataset"]) for r in children)
    assert len(keys) == 3 and set(keys.values()) == {1}
    assert all(r.info.status == "FINISHED" for r in children)
    # The files say the same: a trial Tune forgot in the kill left no RUNNING result.json behind.
    from analysis.records import load

    files = load("simvae_J", source="files")
    assert files.trial_counts()["unfinished"] == 0
    assert set(files.df["trial_id"]) == {r.data.tags["trial_id"] for r in children}
