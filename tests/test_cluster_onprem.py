"""The on-premises cluster, launched for real: three hosts made of network namespaces (a head and
two workers, each with its own address, sshd, processes, /tmp and home; tests/hosts.py), the real
``ray up -y cluster.onprem.yaml`` with only its EDIT lines filled in, PostgreSQL and the MLflow
server on the head (sweeps/cluster/head_services.sh), a tiny searched sweep submitted with
``ray job submit`` (the driver on the head), one worker host powered off mid-trial, and
``ray down -y``. Marked ``cluster``; ``.ci/run`` runs it after the README's test command.

Checks: trials ran on both workers (the runs' ``ray_node_ip`` tags name both addresses); the
MLflow children (one per trial x dataset x seed) and the Optuna study are in the head's
PostgreSQL and complete; the trial of the killed host resumed from its checkpoint on the other
worker, with no run lost, duplicated or left RUNNING, and the job ended SUCCEEDED; the analysis
reads the sweep back from the PostgreSQL-backed MLflow; ``ray down`` leaves no Ray process on
any host; and everything the test made is gone afterwards.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hosts import Hosts, private_tmp, unavailable_reason, visible_everywhere

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "cluster.onprem.yaml"
WORKERS = ("w1", "w2")

# The sweep the test submits, as docs/cluster.md shows it (a tiny searched one: its Optuna study
# lives in PostgreSQL; every trial trains its whole budget so the counts are exact).
SWEEP = ("python ~/ssl-sweeps/sweeps/run.py --space vae_lr --profile quick --datasets digits --seeds 0 "
         "--epochs 6 --num-samples 3 --no-early-stopping --max-concurrent 2 --max-failures 3 "
         "--name onprem-test")


def fill(config: str, values: dict[str, str]) -> str:
    """The config with its EDIT values replaced, each exactly once (a renamed line fails here)."""
    for pattern, value in values.items():
        config, n = re.subn(pattern, lambda m: m.group(1) + value, config, count=1)
        assert n == 1, f"cluster.onprem.yaml: no line matches {pattern!r}"
    return config


def test_fill_names_every_edit_line():
    """Every value a user must edit is one the test fills (the README's commands are the test's)."""
    text = CONFIG.read_text()
    edits = [ln for ln in text.splitlines() if "# EDIT" in ln and not ln.lstrip().startswith("#")]
    assert len(edits) == 4, edits  # head_ip, worker_ips, ssh_user, ssh_private_key
    filled = fill(text, _values("10.9.9.1", ["10.9.9.2", "10.9.9.3"], Path("/k"), Path("/s"), Path("/d")))
    assert "10.0.0." not in filled and "ubuntu" not in filled and "/mnt/ssl-sweeps" not in filled


def _values(head: str, workers: list[str], key: Path, shared: Path, db: Path) -> dict[str, str]:
    return {
        r"(head_ip: )\S+": head,
        r"(worker_ips: )\[[^\]]*\]": "[" + ", ".join(workers) + "]",
        r"(ssh_user: )\S+": "root",
        r"(ssh_private_key: )\S+": str(key),
        r"(SSL_SWEEPS_HOME=)\S+": str(shared),
        r"(SSL_SWEEPS_VENV=)\S+": sys.prefix,  # the venv this test runs in, seen by every host
        r"(SSL_SWEEPS_RAY_CPUS=)": "1",  # two 1-CPU workers share this machine's cores
        r"(SSL_SWEEPS_DB_DIR=)": str(db),
    }


# -- the launch ---------------------------------------------------------------------------------
class Laptop:
    """Commands as the user types them on their own machine: `ray up`, `ray exec`, `ray down`,
    ssh, the analysis scripts -- from the repository root, with this venv's tools on PATH, in a
    /tmp and HOME of the test's own (Ray's launcher keeps SSH control sockets in /tmp)."""

    def __init__(self, base: Path):
        self.tmp, self.home = base / "laptop" / "tmp", base / "laptop" / "home"
        self.tmp.mkdir(parents=True)
        self.home.mkdir(parents=True)
        self.env = {**os.environ, "PATH": f"{sys.prefix}/bin:{os.environ['PATH']}", "HOME": str(self.home),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)

    def argv(self, argv: list[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f'{private_tmp(self.tmp, visible_everywhere())} && exec "$@"', "sh", *argv]

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv), cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def ray_exec(laptop: Laptop, config: Path, command: str, timeout: float = 120) -> str:
    done = laptop.run(["ray", "exec", str(config), command], timeout=timeout)
    assert done.returncode == 0, f"ray exec {command!r}: {plain(done.stdout)[-2000:]} {plain(done.stderr)[-2000:]}"
    return plain(done.stdout)


def wait_for(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


@pytest.mark.cluster
def test_a_sweep_across_hosts_survives_a_host_power_off():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    for tool in ("sshd", "rsync", "psql"):
        assert shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists(), f"{tool} is not installed (.ci/run installs it)"
    from mlflow.tracking import MlflowClient

    t_start = time.time()
    timeline: dict[str, float] = {}
    with Hosts(["head", *WORKERS]) as hosts:
        head, workers = hosts.hosts["head"].address, [hosts.hosts[w].address for w in WORKERS]
        shared = hosts.base / "shared"
        shared.mkdir()
        config = hosts.base / "cluster.onprem.yaml"
        config.write_text(fill(CONFIG.read_text(), _values(head, workers, hosts.ssh_key, shared, hosts.base / "db")))
        laptop = Laptop(hosts.base)

        # ray up: the head set up (repository, venv, PostgreSQL, MLflow, token) and started; the
        # autoscaler on the head then sets up and starts both workers over SSH.
        t0 = time.time()
        up = laptop.run(["ray", "up", "-y", str(config)], timeout=900)
        assert up.returncode == 0, plain(up.stdout)[-3000:] + plain(up.stderr)[-3000:]
        timeline["ray up (head ready)"] = time.time() - t0
        out = plain(up.stdout)
        assert "PostgreSQL started" in out and f"MLflow serving http://{head}:5000" in out, out[-3000:]

        def both_workers_joined():
            status = ray_exec(laptop, config, "ray status")
            m = re.search(r"([\d.]+)/([\d.]+) CPU", status)
            return m and float(m.group(2)) == 2.0  # two 1-CPU workers (the head takes no trials)

        wait_for("both workers in the cluster", both_workers_joined, timeout=300, every=3)
        timeline["workers joined"] = time.time() - t0
        for name in ("head", *WORKERS):  # the repository reached every host (its own copy) ...
            assert (hosts.hosts[name].upper_root / "ssl-sweeps" / "sweeps" / "run.py").exists(), name
            env = hosts.ssh(name, "source ~/.ssl-sweeps.env && echo $SSL_SWEEPS_HOME $SSL_SWEEPS_DATA "
                                  "$MLFLOW_TRACKING_URI && command -v ray")
            # ... and every host's defaults are the shared ones
            assert env.stdout.split() == [str(shared), str(shared / "data"), f"http://{head}:5000",
                                          f"{sys.prefix}/bin/ray"], (name, env.stdout, env.stderr)

        # The sweep, submitted as docs/cluster.md shows: the driver runs on the head.
        t1 = time.time()
        ray_exec(laptop, config, f"ray job submit --no-wait --submission-id onprem-test -- {SWEEP}")
        client = MlflowClient(tracking_uri=f"http://{head}:5000")

        def children():
            exp = client.get_experiment_by_name("ssl-sweeps/vae_lr")
            if exp is None:
                return []
            return [r for r in client.search_runs([exp.experiment_id], "tags.sweep = 'onprem-test'")
                    if "mlflow.parentRunId" in r.data.tags]

        def epochs_done(run) -> int:
            history = client.get_metric_history(run.info.run_id, "val_acc_knn")
            return max((m.step for m in history), default=0)

        def victim():  # a trial mid-training on a worker, past its second checkpoint
            for run in children():
                if run.info.status == "RUNNING" and run.data.tags.get("ray_node_ip") in workers \
                        and 2 <= epochs_done(run) <= 4:
                    return run
            return None

        run = wait_for("a trial at epoch 2-4 on a worker", victim, timeout=600, every=0.5)
        victim_ip = run.data.tags["ray_node_ip"]
        victim_name = WORKERS[workers.index(victim_ip)]
        survivor_ip = [w for w in workers if w != victim_ip][0]
        killed_at_epoch = epochs_done(run)
        t_kill = time.time()
        hosts.kill(victim_name)  # power off: every process of that host, at once
        timeline["host killed"] = t_kill - t0

        def job_status():
            out = ray_exec(laptop, config, "ray job status onprem-test")
            m = re.search(r"Job 'onprem-test' (succeeded|failed|stopped)", out)
            return m and m.group(1)

        assert wait_for("the job's end", job_status, timeout=900, every=5) == "succeeded", \
            ray_exec(laptop, config, "ray job logs onprem-test | tail -n 60")
        timeline["sweep done"] = time.time() - t0
        logs = ray_exec(laptop, config, "ray job logs onprem-test")
        assert "3 completed" in logs and "0 failed" in logs, logs[-3000:]

        # MLflow: one child per trial x dataset x seed, all FINISHED, none lost or doubled.
        runs = children()
        assert len(runs) == 3, [(r.info.run_name, r.info.status) for r in runs]
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert len({r.data.tags["trial_id"] for r in runs}) == 3
        first_hosts = {r.data.tags["ray_node_ips"].split(",")[0] for r in runs}
        assert first_hosts == set(workers), first_hosts  # trials ran on both workers
        moved = client.get_run(run.info.run_id)
        assert moved.data.tags["ray_node_ips"].split(",") == [victim_ip, survivor_ip]
        assert moved.data.tags["ray_node_ip"] == survivor_ip
        # ... and resumed there from its checkpoint, not from epoch 1: Tune's own per-report log
        # of the trial (result.json in its folder on the shared storage) says where each epoch ran.
        trial_id = moved.data.tags["trial_id"]
        (trial_dir,) = (shared / "tune" / "onprem-test").glob(f"sweep_trial_{trial_id}_*")
        reports = [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines() if ln.strip()]
        on_survivor = [r for r in reports if r["node_ip"] == survivor_ip]
        assert on_survivor and on_survivor[0]["epoch"] > 1, [(r["epoch"], r["node_ip"]) for r in reports]
        assert on_survivor[0]["epoch"] >= killed_at_epoch, (killed_at_epoch, on_survivor[0]["epoch"])
        assert [r["epoch"] for r in on_survivor] == list(range(on_survivor[0]["epoch"], 7))
        history = client.get_metric_history(run.info.run_id, "val_acc_knn")
        assert sorted(m.step for m in history) == list(range(1, 7))  # each epoch once in MLflow
        timeline["recovery (kill -> first epoch on the other worker)"] = on_survivor[0]["timestamp"] - t_kill

        # The records live in the head's PostgreSQL: MLflow's runs and the Optuna study.
        parent = runs[0].data.tags["mlflow.parentRunId"]

        def sql(db: str, query: str) -> str:
            done = hosts.ssh("head", f"psql postgresql://sslsweeps@127.0.0.1:5433/{db} -tAc \"{query}\"")
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        assert sql("mlflow", "SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId' "
                             f"AND value = '{parent}'") == "3"
        assert sql("mlflow", f"SELECT status FROM runs WHERE run_uuid = '{parent}'") == "FINISHED"
        # The sweep's study is its name plus a unique id (a name reused later starts a new one).
        study = json.loads((shared / "tune" / "onprem-test" / "sweep.json").read_text())["optuna_study"]
        assert study.startswith("onprem-test-"), study
        assert sql("optuna", "SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE "
                             f"study_name = '{study}' AND state = 'COMPLETE'") == "3"
        assert not list(shared.rglob("*.db")), "no SQLite store on the shared folder"

        # The analysis reads the sweep back through an SSH tunnel to the head's MLflow.
        port = _free_port()
        tunnel = subprocess.Popen(
            laptop.argv([*hosts.ssh_command("head")[:-1], "-N", "-L", f"127.0.0.1:{port}:{head}:5000",
                         f"root@{head}"]), env=laptop.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            hosts.wait_port("127.0.0.1", port, timeout=30, what="the SSH tunnel to MLflow")
            select = subprocess.run(
                [sys.executable, "analysis/select.py", "--space", "vae_lr", "--tracking-uri", f"http://127.0.0.1:{port}",
                 "--source", "mlflow", "--sweep", "onprem-test", "--dry-run"], cwd=REPO, env=laptop.env, capture_output=True, text=True,
                timeout=120)
        finally:
            tunnel.terminate()
            tunnel.wait(timeout=10)
        assert select.returncode == 0, select.stderr
        best = max(runs, key=lambda r: r.data.metrics["acc_mlp"])
        # (--sweep: a sweep at a custom budget -- one dataset, one seed -- is read only when named;
        # its score is then that run's acc_mlp)
        assert f"score {100 * best.data.metrics['acc_mlp']:.2f}%" in select.stdout, select.stdout

        # ray down: Ray stops on the head at once; the surviving worker's raylet follows when it
        # gives up on the vanished head (Ray's 60 s GCS reconnect timeout).
        t2 = time.time()
        down = laptop.run(["ray", "down", "-y", str(config)], timeout=300)
        assert down.returncode == 0, plain(down.stdout)[-2000:] + plain(down.stderr)[-2000:]
        timeline["ray down (the command)"] = time.time() - t2

        def ray_left():
            return [f"{name}: {p[:160]}" for name in hosts.hosts for p in hosts.processes(name) if _is_ray(p)]

        try:
            wait_for("no Ray process on any host after ray down", lambda: not ray_left(), timeout=180, every=2)
        except TimeoutError as e:
            raise AssertionError(f"{e}: {ray_left()}") from None
        timeline["ray down (no Ray process left)"] = time.time() - t2
        timeline["sweep (submit -> done)"] = timeline["sweep done"] - (t1 - t0)
    assert not hosts.leftovers(), hosts.leftovers()
    timeline["test wall time"] = time.time() - t_start
    print("\ncluster test timeline (s): " + json.dumps({k: round(v, 1) for k, v in timeline.items()}))


def _is_ray(cmdline: str) -> bool:
    return any(k in cmdline for k in ("raylet", "gcs_server", "ray::", "ray/dashboard", "ray/autoscaler",
                                      "default_worker.py", "log_monitor.py", "ray_client_server"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
