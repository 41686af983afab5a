"""Fault tolerance on a local multi-node Ray cluster (run on their own: ``pytest -m fault``).

One module-scoped cluster (``ray.cluster_utils.Cluster``, every node on this machine: a head with no CPUs, as
in cluster.yaml, and two 1-CPU worker nodes, so two trials run at once on two nodes) and one
MLflow tracking server started here as a subprocess on a loopback port (SQLite backend). Every
sweep runs ``sweeps/run.py`` as a separate driver process joining the cluster with --address and
logging to the server with --tracking-uri, so the tests can kill nodes, the driver or the server
underneath it. Shows:

- trials spread across nodes, all logging to the one server;
- a worker node killed mid-trial: the trial is retried on the surviving node from its last
  checkpoint (its first report there is past epoch 1) and finishes; MLflow holds one FINISHED
  child for it;
- the driver killed with SIGKILL mid-sweep: ``--resume`` completes it; every config of the
  space has exactly one completed trial and one FINISHED MLflow child, none RUNNING;
- a trial whose loss turns NaN (tests/faults.py) ends ERROR with the reason in trials.csv and
  its MLflow child, Optuna is told (FAIL), the others complete; exit code 1 naming the trial;
- the MLflow server stopped mid-sweep: trials keep training and complete; the sweep names the
  trials whose MLflow records are incomplete and exits 1 (nothing is buffered).

Each test prints a ``FAULT`` line with its reliability figures (``pytest -m fault -s``).
Tiny budgets: the quick profile on ``digits`` with 150 training images, a few epochs.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.fault, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TINY = ["--profile", "quick", "--datasets", "digits", "--no-early-stopping",
        "--set", "train_size=150", "--set", "test_size=100", "--set", "probe_epochs=2",
        "--set", "probe_min_steps=20", "--set", "decoder_epochs=1", "--set", "style_J=1"]
# The driver: run.py's main, plus a test-only method whose loss turns NaN after a number of
# steps (tests/faults.py, registered here and in every Ray worker) and a space searching it, so
# one sweep holds trials that diverge at epoch 2 (150 images, 32 per step: 4 steps an epoch) and
# trials that never do.
DRIVER = """
import sys
sys.path.insert(0, "tests")
import faults, ray, ray.cloudpickle
from sweeps import spaces
faults.register()
spaces.register(spaces.Space(
    "fault_nan", "test only: some trials diverge at epoch 2", (faults.NAME,),
    {"lr": spaces.LogUniform(5e-4, 2e-3), "nan_after_steps": spaces.Categorical((4, 10**6))}))
ray.cloudpickle.register_pickle_by_value(faults)
ray.init(address=sys.argv[sys.argv.index("--address") + 1],
         runtime_env={"worker_process_setup_hook": faults.worker_setup})
from sweeps.run import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1:<port> (SQLite backend, local artifact folder)."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        log = open(self.folder / "mlflow-server.log", "a")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.alive():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not start: {(self.folder / 'mlflow-server.log').read_text()[-2000:]}")

    def alive(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server's whole process group (it forks workers)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


class LocalCluster:
    """A head with 0 CPUs (trials never run there, as in cluster.yaml) and 1-CPU workers."""

    def __init__(self):
        from ray.cluster_utils import Cluster

        # Fast failure detection: a killed node is declared dead in ~3 s, not ~30 s.
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                               "health_check_initial_delay_ms": 0}})

    @property
    def address(self) -> str:
        return self.cluster.address

    def ensure_workers(self, n: int = 2) -> None:
        while len(self.cluster.worker_nodes) < n:
            self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()

    def worker(self, node_id: str):
        (node,) = [n for n in self.cluster.worker_nodes if n.node_id == node_id]
        return node

    def kill(self, node) -> None:
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def cluster():
    os.environ.pop("RAY_ADDRESS", None)
    c = LocalCluster()
    try:
        c.ensure_workers(2)
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def env(cluster, server, tmp_path):
    """Two live workers and a live server (a previous test may have killed either)."""
    cluster.ensure_workers(2)
    if not server.alive():
        server.start()
    e = {**os.environ, "SSL_SWEEPS_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        e.pop(k, None)
    return e


class Driver:
    """``sweeps/run.py`` (through DRIVER) in its own process, output in a log file."""

    def __init__(self, args: list[str], env: dict, cluster: LocalCluster, server: MlflowServer, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *args, "--address", cluster.address, "--tracking-uri", server.uri],
            cwd=ROOT, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"driver timed out:\n{self.output()[-4000:]}") from None

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def wait_for(predicate, driver: Driver, timeout: float = 150, poll: float = 0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if driver.proc.poll() is not None:
            raise AssertionError(f"driver exited ({driver.proc.returncode}) before the fault:\n"
                                 f"{driver.output()[-4000:]}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting:\n{driver.output()[-4000:]}")


def experiment(home: Path) -> Path:
    (folder,) = [p.parent for p in (home / "tune").glob("*/sweep.json")]
    return folder


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def mlflow_runs(server: MlflowServer, space: str, parent_id: str | None = None):
    """(client, parent runs, child runs) of the space's experiment (deleted runs excluded)."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(server.uri)
    exp = c.get_experiment_by_name(f"ssl-sweeps/{space}")
    if exp is None:
        return c, [], []
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags
               and (parent_id is None or r.info.run_id == parent_id)]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}]
    return c, parents, children


def progressed_children(server, space, min_step: int = 1):
    """Child runs RUNNING that have logged epoch >= min_step, and FINISHED ones."""
    try:
        c, _, children = mlflow_runs(server, space)
    except Exception:  # noqa: BLE001 -- the server is busy or the experiment not made yet
        return [], []
    running = [r for r in children if r.info.status == "RUNNING"
               and r.data.metrics.get("loss") is not None
               and max((m.step for m in c.get_metric_history(r.info.run_id, "loss")), default=0) >= min_step]
    finished = [r for r in children if r.info.status == "FINISHED"]
    return running, finished


def result_rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def trial_dir(folder: Path, trial_id: str) -> Path:
    (d,) = [d for d in folder.glob("sweep_trial_*") if (d / "result.json").exists()
            and any(r.get("trial_id") == trial_id for r in result_rows(d)[:1])]
    return d


def test_trials_spread_across_nodes_and_a_killed_node_resumes_from_checkpoint(cluster, server, env, tmp_path):
    home = Path(env["SSL_SWEEPS_HOME"])
    args = ["--space", "vae_lr", "--num-samples", "2", "--epochs", "5", "--max-failures", "2",
            "--search-seed", "1", *TINY]
    driver = Driver(args, env, cluster, server, tmp_path / "driver.log")
    try:
        # Both trials running (one per worker, each 1 CPU), one past its first checkpoint.
        def both_running():
            running, _ = progressed_children(server, "vae_lr", min_step=1)
            nodes = {r.data.tags.get("ray_node_id") for r in running}
            return running if len(running) == 2 and len(nodes) == 2 else None

        running = wait_for(both_running, driver)
        victim = running[0]
        victim_trial, victim_node = victim.data.tags["trial_id"], victim.data.tags["ray_node_id"]
        survivor_node = ({r.data.tags["ray_node_id"] for r in running} - {victim_node}).pop()
        cluster.kill(cluster.worker(victim_node))
        code = driver.wait()
    finally:
        driver.kill()
    out = driver.output()
    assert code == 0, out[-4000:]
    folder = experiment(home)
    trials = read_csv(folder / "trials.csv")
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials)

    info = json.loads((folder / "sweep.json").read_text())
    c, (parent,), children = mlflow_runs(server, "vae_lr", info["parent_run_id"])
    assert parent.info.status == "FINISHED"
    # Spread: the two trials ran on two different nodes, and both logged to this one server.
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    (killed,) = [r for r in children if r.data.tags["trial_id"] == victim_trial]
    assert killed.data.tags["ray_node_ids"].split(",") == [victim_node, survivor_node]
    steps = [m.step for m in c.get_metric_history(killed.info.run_id, "loss")]
    assert steps == [1, 2, 3, 4, 5]  # every epoch logged once, into the one child
    assert 0.0 < killed.data.metrics["acc_mlp"] <= 1.0

    # Retried from its checkpoint: the first report of the new process is past epoch 1.
    rows = result_rows(trial_dir(folder, victim_trial))
    pids = list(dict.fromkeys(r["pid"] for r in rows))
    assert len(pids) == 2, pids
    first_after = next(r for r in rows if r["pid"] == pids[1])
    last_before = [r for r in rows if r["pid"] == pids[0]][-1]
    assert first_after["epoch"] > 1 and first_after["epoch"] <= last_before["epoch"] + 1
    assert rows[-1]["epoch"] == 5 and rows[-1].get("done")
    print(f"\nFAULT node-kill: trials=2 nodes_killed=1 drivers_killed=0 trials_retried=1 "
          f"(resumed at epoch {first_after['epoch']}, killed after epoch {last_before['epoch']}) "
          f"runs_lost=0 duplicated={len(children) - 2}")


def test_driver_killed_mid_sweep_resumes_without_loss_or_duplicates(cluster, server, env, tmp_path):
    home = Path(env["SSL_SWEEPS_HOME"])
    args = ["--space", "simvae_J", "--epochs", "3", "--max-concurrent", "2", *TINY, "--set", "train_size=100"]
    driver = Driver(args, env, cluster, server, tmp_path / "driver.log")
    try:
        # SIGKILL once one trial has finished and another is mid-training.
        wait_for(lambda: all(progressed_children(server, "simvae_J")), driver)
        os.kill(driver.proc.pid, signal.SIGKILL)
        driver.proc.wait(timeout=30)
    finally:
        driver.kill()
    folder = experiment(home)
    info = json.loads((folder / "sweep.json").read_text())
    assert info["status"] == "running"  # killed: nothing had a chance to mark it
    _, _, before = mlflow_runs(server, "simvae_J", info["parent_run_id"])
    assert any(r.info.status == "RUNNING" for r in before)

    resumed = Driver([*args, "--resume"], env, cluster, server, tmp_path / "resume.log")
    try:
        code = resumed.wait()
    finally:
        resumed.kill()
    assert code == 0, resumed.output()[-4000:]
    trials = read_csv(folder / "trials.csv")
    assert sorted(int(t["config/J"]) for t in trials) == [2, 4, 8]  # every config, once
    assert all(t["status"] == "completed" for t in trials)

    c, (parent,), children = mlflow_runs(server, "simvae_J", info["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children)
    by_trial = Counter(r.data.tags["trial_id"] for r in children)
    assert set(by_trial) == {t["trial_id"] for t in trials} and set(by_trial.values()) == {1}
    assert sorted(int(r.data.params["J"]) for r in children) == [2, 4, 8]
    for r in children:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "loss")]
        assert steps == [1, 2, 3], (r.data.tags["trial_id"], steps)
    deleted = resumed.output().count("deleted child run")
    print(f"\nFAULT driver-kill: trials=3 nodes_killed=0 drivers_killed=1 "
          f"trials_unfinished_at_kill={sum(r.info.status == 'RUNNING' for r in before)} "
          f"orphan_runs_deleted={deleted} runs_lost=0 duplicated={len(children) - len(trials)}")


def test_a_nan_trial_errors_with_its_reason_and_the_rest_completes(cluster, server, env, tmp_path):
    home = Path(env["SSL_SWEEPS_HOME"])
    # search seed 3: TPE's random start draws nan_after_steps 4 for some trials, 10**6 for others
    # 150 images at 32 a step: 4 steps an epoch, so the loss turns NaN at step 5, in epoch 2
    args = ["--space", "fault_nan", "--num-samples", "4", "--epochs", "3", "--search-seed", "3", *TINY,
            "--set", "images_per_step=32"]
    driver = Driver(args, env, cluster, server, tmp_path / "driver.log")
    try:
        code = driver.wait()
    finally:
        driver.kill()
    out = driver.output()
    folder = experiment(home)
    trials = read_csv(folder / "trials.csv")
    failing = {t["trial_id"] for t in trials if t["config/nan_after_steps"] == "4"}
    assert 0 < len(failing) < len(trials), trials  # the seed gives both kinds
    for t in trials:
        if t["trial_id"] in failing:
            assert t["status"] == "failed" and "NonFiniteLoss" in t["error"] and "epoch 2" in t["error"]
        else:
            assert t["status"] == "completed" and 0.0 < float(t["acc_mlp_mean"]) <= 1.0
    # Exit 1: the sweep completed the others but not every trial; the summary names the failed.
    assert code == 1, out[-4000:]
    assert all(tid in out for tid in failing) and "failed" in out

    info = json.loads((folder / "sweep.json").read_text())
    c, (parent,), children = mlflow_runs(server, "fault_nan", info["parent_run_id"])
    assert len(children) == len(trials)
    for r in children:
        if r.data.tags["trial_id"] in failing:
            assert r.info.status == "FAILED" and "NonFiniteLoss" in r.data.tags["error"]
            assert [m.step for m in c.get_metric_history(r.info.run_id, "loss")] == [1]
        else:
            assert r.info.status == "FINISHED" and "error" not in r.data.tags
    # The searcher was told: Optuna's study (saved with the experiment) has them FAIL.
    (state_file,) = folder.glob("searcher-state-*.pkl")
    study = pickle.loads(state_file.read_bytes())["_ot_study"]
    states = Counter(t.state.name for t in study.trials)
    assert states == {"FAIL": len(failing), "COMPLETE": len(trials) - len(failing)}, states
    print(f"\nFAULT nan: trials={len(trials)} failed={len(failing)} completed={len(trials) - len(failing)} "
          f"optuna={dict(states)} runs_lost=0 duplicated={len(children) - len(trials)}")


def test_mlflow_server_lost_mid_sweep_trials_keep_training(cluster, server, env, tmp_path):
    home = Path(env["SSL_SWEEPS_HOME"])
    args = ["--space", "vae_lr", "--num-samples", "2", "--epochs", "4", "--search-seed", "2", *TINY]
    driver = Driver(args, env, cluster, server, tmp_path / "driver.log")
    try:
        wait_for(lambda: len(progressed_children(server, "vae_lr", min_step=1)[0]) == 2, driver)
        server.stop()
        code = driver.wait()
    finally:
        driver.kill()
    out = driver.output()
    folder = experiment(home)
    trials = read_csv(folder / "trials.csv")
    # Training was not interrupted: both trials completed their budget with final metrics.
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials), out[-4000:]
    assert all(0.0 < float(t["acc_mlp_mean"]) <= 1.0 for t in trials)
    # Reported, not silent: a line names the server, the trials and what was not logged.
    assert code == 1, out[-4000:]
    assert "MLflow tracking failed" in out and server.uri in out
    assert all(f"trial {t['trial_id']}" in out for t in trials)
    assert "not logged" in out
    assert json.loads((folder / "sweep.json").read_text())["tracking_incomplete"]
    server.start()  # what did reach the server is there; the rest is stated above
    info = json.loads((folder / "sweep.json").read_text())
    _, parents, children = mlflow_runs(server, "vae_lr", info["parent_run_id"])
    assert len(parents) == 1 and len(children) == 2  # no duplicates
    print(f"\nFAULT mlflow-down: trials=2 completed=2 tracking_incomplete="
          f"{len(json.loads((folder / 'sweep.json').read_text())['tracking_incomplete'])} duplicated=0")


# -- a hard kill of the driver at any moment resumes ------------------------------------------------------


def optuna_states(home: Path) -> Counter:
    """The states of the trials in the sweep's Optuna study database (read only; empty when
    there is none yet)."""
    import sqlite3

    db = home / "optuna.db"
    if not db.exists():
        return Counter()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return Counter(state for (state,) in con.execute("SELECT state FROM trials"))
        finally:
            con.close()
    except sqlite3.Error:
        return Counter()


def tune_statuses(folder: Path) -> list[str]:
    """Trial statuses in Tune's newest experiment state (plain JSON fields)."""
    states = sorted(folder.glob("experiment_state-*.json"))
    try:
        return [json.loads(t)["status"] for t, _ in json.loads(states[-1].read_text())["trial_data"]] if states else []
    except (OSError, ValueError, KeyError):
        return []


TUNE_STATE = ("experiment_state-*.json", "searcher-state-*.pkl", "basic-variant-state-*.json")


class SnapshotKeeper:
    """Copies Tune's state files aside while ``keep()`` says so: after the kill, ``roll_back``
    puts the last copy back, as if the driver had died before Tune snapshotted what followed."""

    def __init__(self, folder: Path, backup: Path):
        self.folder, self.backup = folder, backup
        backup.mkdir()

    def keep(self) -> None:
        for pattern in TUNE_STATE:
            for f in self.folder.glob(pattern):
                try:
                    (self.backup / f.name).write_bytes(f.read_bytes())
                except OSError:
                    pass

    def roll_back(self) -> None:
        for f in self.backup.iterdir():
            (self.folder / f.name).write_bytes(f.read_bytes())


KILL_POINTS = ["before Tune saved its state", "mid-epoch", "right after a trial completed", "between trials",
               "during the close"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_driver_killed_at_any_moment_resumes_to_completion(point, cluster, server, env, tmp_path):
    """SIGKILL of the driver of a searched sweep (two trials, one at a time) at a moment in its
    life, then the same command plus --resume: it completes (restored from Tune's state, or run
    afresh in its folder when Tune had not yet saved its state to the storage), every config is
    run once and only once, and Tune's trials, Optuna's study, MLflow and the result.json files
    agree. 'Right after
    a trial completed': Optuna has recorded it COMPLETE but Tune's snapshot still has it running
    (its older snapshot is put back after the kill, as when the driver dies before Tune's next)."""
    home = Path(env["SSL_SWEEPS_HOME"])
    args = ["--space", "vae_lr", "--num-samples", "2", "--epochs", "2", "--max-concurrent", "1",
            "--search-seed", "4", *TINY]
    driver = Driver(args, env, cluster, server, tmp_path / "driver.log")
    keeper = None
    try:
        def folder():
            found = [p.parent for p in (home / "tune").glob("*/sweep.json")]
            return found[0] if found else None

        def moment():
            nonlocal keeper
            f = folder()
            if f is None:
                return False
            done = optuna_states(home)["COMPLETE"]
            if point == "before Tune saved its state":  # the sweep's records made, Tune's state not yet synced
                return (f / "sweep.json").exists() and not list(f.glob("experiment_state-*.json"))
            if point == "mid-epoch":
                running, _ = progressed_children(server, "vae_lr", min_step=1)
                return bool(running) and done == 0
            if point == "right after a trial completed":
                keeper = keeper or SnapshotKeeper(f, tmp_path / "snapshot")
                if done == 0:
                    keeper.keep()
                return done >= 1
            if point == "between trials":  # the first trial told COMPLETE, the second starting (its window is
                return done == 1  # a second or two: no slower check here), Tune's snapshot as it is
            return (f / "trials.csv").exists()  # during the close: the verdicts recorded, the rest not yet

        wait_for(moment, driver, timeout=300, poll=0.05)
        os.kill(driver.proc.pid, signal.SIGKILL)
        driver.proc.wait(timeout=30)
    finally:
        driver.kill()
    f = folder()
    saved = bool(tune_statuses(f))  # Tune had synced its state to the storage (else: the sweep runs afresh)
    if keeper is not None:
        keeper.roll_back()
        assert "TERMINATED" not in tune_statuses(f)  # Tune's snapshot is older than Optuna's COMPLETE
        assert optuna_states(home)["COMPLETE"] == 1

    resumed = Driver([*args, "--resume"], env, cluster, server, tmp_path / "resume.log")
    try:
        code = resumed.wait(timeout=400)
    finally:
        resumed.kill()
    out = resumed.output()
    assert code == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    trials = read_csv(f / "trials.csv")
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}
    ids = {t["trial_id"] for t in trials}
    states = optuna_states(home)
    assert states["COMPLETE"] == 2 and states["RUNNING"] == 0, states  # each config told once
    info = json.loads((f / "sweep.json").read_text())
    assert info["status"] == "completed"
    _, (parent,), children = mlflow_runs(server, "vae_lr", info["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_status"] == "completed"
    assert Counter(r.data.tags["trial_id"] for r in children) == Counter({i: 1 for i in ids})  # once each
    assert all(r.info.status == "FINISHED" and r.data.tags["interrupted"] == "false" for r in children)
    from sweeps.schema import find_results, read_result

    runs = [read_result(p)["run"] for p in find_results(f)]
    assert sorted(r["trial_id"] for r in runs) == sorted(ids)
    assert all((r["status"], r["interrupted"]) == ("FINISHED", False) for r in runs)
    print(f"\nFAULT kill {point}: tune_state_saved={saved} trials=2 drivers_killed=1 optuna={dict(states)} runs_lost=0 "
          f"duplicated={len(children) - 2}")
