"""Slurm: a sweep submitted with sweeps/slurm.py runs in an allocation, is preempted and requeued.

The fast tests check the submit command offline (its checks, the sbatch command it builds, the
driver's arguments on a requeued run). ``test_a_sweep_survives_preemption_and_requeue`` (marked
``slurm``; ``.ci/run`` runs it) runs Debian's real Slurm on three hosts made of network namespaces
(tests/hosts.py): ``ctl`` is the controller and login node (munged, slurmctld, sshd), ``n1`` and
``n2`` are compute nodes (one slurmd each, 1 CPU). From the login node it submits a tiny searched
sweep over both nodes exactly as docs/cluster.md shows, sends the job the preemption signal
(``scancel --batch --signal=TERM``) once a trial finished and another is mid-training, and checks
that the job requeued itself and its next run completed the same sweep: trials ran on both nodes,
one MLflow child per trial x dataset x seed, none lost, doubled or left RUNNING, the interrupted
trial resumed from its checkpoint; ``squeue`` empty, no Ray or Slurm job process left on any node,
and nothing of the test left afterwards.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps import slurm
from tests.hosts import Hosts, unavailable_reason
from tests.test_cluster_onprem import _is_ray, wait_for

REPO = Path(__file__).resolve().parent.parent
NODES = ("n1", "n2")
NAME = "slurm-test"
# The submit command as docs/cluster.md shows it (a tiny searched sweep: every trial trains its
# whole budget, so the counts are exact; 1 CPU per node, so trials run on both nodes at once).
SWEEP = ["--space", "vae_lr", "--profile", "quick", "--datasets", "digits", "--seeds", "0", "--epochs", "6",
         "--num-samples", "3", "--no-early-stopping", "--max-concurrent", "2", "--name", NAME]
SUBMIT = ["sweeps/slurm.py", "--nodes", "2", "--cpus-per-task", "1", "--time", "30", *SWEEP]
# The queue and the preemption, as the README shows them (JOBID: the submitted job's).
SQUEUE = ["squeue", "-j", "JOBID"]
SCANCEL = ["scancel", "--batch", "--signal=TERM", "JOBID"]
SLURM_TOOLS = ("slurmctld", "slurmd", "slurmstepd", "sbatch", "srun", "scontrol", "squeue", "scancel", "munged")


# -- the submit command, offline ------------------------------------------------------------------
def dry_run(capsys, monkeypatch, home: Path, *argv: str, env: dict | None = None) -> tuple[int, str, str]:
    """sweeps/slurm.py ... --dry-run, in this process: (exit code, stdout, stderr)."""
    for k in [k for k in os.environ if k.startswith(("MLFLOW_", "SSL_SWEEPS_"))]:
        monkeypatch.delenv(k)
    for k, v in {"SSL_SWEEPS_HOME": str(home), **(env or {})}.items():
        monkeypatch.setenv(k, v)
    code = slurm.main([*argv, "--dry-run"])
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_builds_a_requeueable_job_with_run_py_arguments(capsys, monkeypatch, tmp_path):
    code, out, err = dry_run(capsys, monkeypatch, tmp_path, *SUBMIT[1:], "--gpus-per-node", "2", "--cpus-per-task", "4",
                             "--partition", "gpu", "--account", "lab", "--sbatch=--qos=long")
    assert code == 0, err
    env_line, command = out.strip().splitlines()
    argv = command.split()
    assert argv[0] == "sbatch"
    for option in ("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--gpus-per-node=2", "--time=30",
                   "--partition=gpu", "--account=lab", "--requeue", "--signal=B:TERM@300", "--open-mode=append",
                   f"--output={tmp_path}/slurm/{NAME}/slurm-%j.log", f"--job-name=ssl-{NAME}", "--qos=long",
                   f"--chdir={Path.cwd()}"):
        assert option in argv, option
    # run.py's arguments follow the job script unchanged (the name fixed: a requeued job resumes it)
    assert argv[argv.index(str(slurm.JOB_SCRIPT)) + 1:] == SWEEP
    assert f"SSL_SWEEPS_HOME={tmp_path}" in env_line and "SSL_SWEEPS_SLURM_GPUS=2" in env_line
    assert "SSL_SWEEPS_SLURM_CPUS=4" in env_line and "SSL_SWEEPS_SLURM_MLFLOW=1" in env_line
    # a sweep without --name gets one now, so that every run of the job names the same sweep
    code, out, err = dry_run(capsys, monkeypatch, tmp_path, "--space", "vae_lr", "--profile", "quick")
    assert re.search(r" --name vae_lr-quick-\d{8}-\d{6}$", out.strip()), out
    code, out, err = dry_run(capsys, monkeypatch, tmp_path, "--space", "vae_lr", "--gpus-per-node", "1")
    assert code == 0 and re.search(r" --name vae_lr-paper-\d{8}-\d{6}$", out.strip()), err  # run.py's default
    # a tracking server of the user's own: the job starts none
    code, out, err = dry_run(capsys, monkeypatch, tmp_path, "--space", "vae_lr", "--profile", "quick",
                             env={"MLFLOW_TRACKING_URI": "http://x:5000"})
    assert "SSL_SWEEPS_SLURM_MLFLOW=0" in out


@pytest.mark.parametrize("argv, message", [
    (["--space", "vae_lr", "--address", "h:6379"], "--address: not for a Slurm job"),
    (["--space", "vae_lr", "--bogus"], "unrecognized arguments: --bogus"),
    (["--space", "nope", "--profile", "quick"], "nope"),
    (["--profile", "quick"], "no space given"),
    (["--space", "vae_lr", "--profile", "quick", "--nodes", "0"], "--nodes 0: must be >= 1"),
    (["--space", "vae_lr", "--profile", "quick", "--time", "soon"], "--time 'soon'"),
    (["--space", "vae_lr", "--profile", "quick", "--cpus-per-trial", "2"], "a trial needs 2 CPU(s)"),
    (["--space", "vae_lr", "--profile", "paper"], "--profile paper on nodes without GPUs"),
    (["--space", "vae_lr"], "--profile paper on nodes without GPUs"),  # no --profile: paper, as run.py
    (["--space", "vae_lr", "--profile", "quick", "--resume"], "--resume: add --name"),
    (["--space", "vae_lr", "--profile", "quick", "--resume", "--name", "gone"], "no such sweep"),
])
def test_submit_refuses_bad_input_in_one_line(capsys, monkeypatch, tmp_path, argv, message):
    code, out, err = dry_run(capsys, monkeypatch, tmp_path, *argv)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and not out
    assert not (tmp_path / "slurm").exists()  # nothing made


def test_submit_refuses_a_taken_name(capsys, monkeypatch, tmp_path):
    (tmp_path / "tune" / NAME).mkdir(parents=True)
    code, out, err = dry_run(capsys, monkeypatch, tmp_path, *SUBMIT[1:])
    assert code == 2 and "is taken by another sweep" in err, err


def test_help_fits_a_120_column_console(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit):
        slurm.main(["--help"])
    out = capsys.readouterr().out
    assert "--gpus-per-node" in out and not [ln for ln in out.splitlines() if len(ln) > 120]


def _sweep_record(tracking_uri: str) -> dict:
    """An interrupted sweep's sweep.json, whole (the ledger reads nothing less)."""
    from sweeps import spaces

    return {"name": NAME, "space": "vae_lr", "expand": {}, "plan": spaces.expand("vae_lr", "quick").to_dict(),
            "tracking_uri": tracking_uri, "experiment_id": "1", "parent_run_id": "0" * 32, "status": "interrupted"}


def test_a_requeued_run_resumes_the_sweep_at_its_mlflow_server_of_today(tmp_path, monkeypatch):
    """The job's first run starts the sweep; a later run adds --resume, and the tracking URI that
    an earlier run of the job recorded in sweep.json becomes today's (the head may be another node)."""
    monkeypatch.setenv("SSL_SWEEPS_HOME", str(tmp_path))
    jobdir = tmp_path / "slurm" / NAME
    jobdir.mkdir(parents=True)
    args = ["--space", "vae_lr", "--profile", "quick", "--name", NAME]
    assert slurm.driver_args(args, "http://10.0.0.1:4000") == [*args, "--tracking-uri", "http://10.0.0.1:4000"]
    assert (jobdir / "mlflow_uri").read_text().strip() == "http://10.0.0.1:4000"
    folder = tmp_path / "tune" / NAME
    folder.mkdir(parents=True)  # claimed by a driver that was stopped before it began: started afresh
    assert "--resume" not in slurm.driver_args(args, "http://10.0.0.1:4000") and not folder.exists()
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(_sweep_record("http://10.0.0.1:4000")))
    assert slurm.driver_args(args, "http://10.0.0.2:4001") == [*args, "--tracking-uri", "http://10.0.0.2:4001",
                                                               "--resume"]
    assert json.loads((folder / "sweep.json").read_text())["tracking_uri"] == "http://10.0.0.2:4001"
    # a URI this job did not record (the user's own server) is never rewritten
    (folder / "sweep.json").write_text(json.dumps(_sweep_record("http://lab:5000")))
    slurm.driver_args([*args, "--resume"], "http://10.0.0.3:4002")
    assert json.loads((folder / "sweep.json").read_text())["tracking_uri"] == "http://lab:5000"


def documented_commands(path: Path) -> list[list[str]]:
    """The commands of a file's Markdown ``bash`` blocks that mention sweeps/slurm.py, squeue or
    scancel, each split as the shell would (continuation lines joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(ln, comments=True) for ln in lines if re.search(r"sweeps/slurm\.py|squeue|scancel", ln)]


@pytest.mark.parametrize("doc", ["README.md", "docs/cluster.md"])
def test_the_documented_slurm_commands_are_the_tests(doc):
    """The README's Slurm commands (and the walkthrough's test command) are those the test runs."""
    commands = documented_commands(REPO / doc)
    assert [".venv/bin/python", *SUBMIT] in commands, commands
    if doc == "README.md":
        assert sorted(commands) == sorted([[".venv/bin/python", *SUBMIT], SQUEUE, SCANCEL]), commands


def test_job_script_parses():
    assert subprocess.run(["bash", "-n", str(slurm.JOB_SCRIPT)], capture_output=True).returncode == 0


# -- a real Slurm on namespace hosts ----------------------------------------------------------------
class Slurm:
    """munged, slurmctld (host ctl) and one slurmd per compute host, each with its own config,
    state and log files under ``folder``; client commands run on ctl, the login node."""

    def __init__(self, hosts: Hosts, folder: Path, env: dict[str, str], daemons: list[subprocess.Popen]):
        self.hosts, self.folder = hosts, folder
        for sub in ("state", "log", "munge", *(f"spool-{n}" for n in NODES)):
            (folder / sub).mkdir(parents=True)
        (folder / "munge").chmod(0o700)
        key = folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        socket = folder / "munge" / "munge.socket"
        h = hosts.hosts
        self.conf = folder / "slurm.conf"
        self.conf.write_text("\n".join([
            "ClusterName=ssltest", f"SlurmctldHost=ctl({h['ctl'].address})", "SlurmUser=root", "SlurmdUser=root",
            # One munged serves every host: its socket is a file, which network namespaces do not
            # separate. cred_expire: a requeued job may start again after it (default 120 s).
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket},cred_expire=10",
            f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool-%n",
            f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd-%n.pid",
            f"SlurmctldLogFile={folder}/log/slurmctld.log", f"SlurmdLogFile={folder}/log/slurmd-%n.log",
            # No cgroups (the hosts' /sys is their network namespace's own): processes by their tree.
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
            "SwitchType=switch/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SlurmdParameters=config_overrides", "SchedulerType=sched/builtin",
            "SchedulerParameters=sched_interval=5", "ReturnToService=2", "JobRequeue=1", "SlurmdTimeout=30",
            "MessageTimeout=10", "KillWait=10", "InactiveLimit=0", "MinJobAge=600",
            *(f"NodeName={n} NodeAddr={h[n].address} CPUs=1 RealMemory=4000 State=UNKNOWN" for n in NODES),
            f"PartitionName=main Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP", ""]))
        (folder / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")  # loaded by slurmd, never used
        self.env = {**env, "SLURM_CONF": str(self.conf)}
        log = folder / "log"
        self.daemons = daemons  # (their nsenter, which ends when the daemon does)
        self.spawn("ctl", ["munged", "--foreground", "--force", f"--socket={socket}", f"--key-file={key}",
                            f"--pid-file={folder}/munge/munged.pid", f"--log-file={log}/munged.log",
                            f"--seed-file={folder}/munge/seed"], log / "munged.out")
        wait_for("munged's socket", socket.exists, timeout=30, every=0.2)
        self.spawn("ctl", ["slurmctld", "-D", "-i"], log / "slurmctld.out")
        hosts.wait_port(h["ctl"].address, 6817, timeout=60, what="slurmctld")
        for n in NODES:
            self.spawn(n, ["slurmd", "-D", "-N", n], log / f"slurmd-{n}.out")
        wait_for("both nodes idle", lambda: self.run(["sinfo", "-h", "-o", "%T"]).split() == ["idle"],
                 timeout=90, every=1)

    def spawn(self, host: str, argv: list[str], log: Path) -> None:
        self.daemons.append(self.hosts.spawn(host, argv, log, self.env))

    def run(self, argv: list[str], timeout: float = 120, check: bool = True) -> str:
        """A command on the login node, from the repository root, as its user types it."""
        done = self.hosts.exec("ctl", ["sh", "-c", f'cd "{REPO}" && exec "$@"', "sh", *argv], timeout=timeout,
                               env=self.env)
        if check:
            assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        return done.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """scontrol's view of a job: JobState, Restarts, ExitCode, ..."""
        out = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


@pytest.mark.slurm
def test_a_sweep_survives_preemption_and_requeue():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    missing = [t for t in SLURM_TOOLS if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())]
    assert not missing, f"{', '.join(missing)} not installed (Debian: apt-get install slurm-wlm munge; .ci/run does)"
    from mlflow.tracking import MlflowClient

    t_start = time.time()
    timeline: dict[str, float] = {}
    counts: dict[str, dict] = {}  # the sweep's MLflow children by status
    with Hosts(["ctl", *NODES]) as hosts:
        shared = hosts.base / "shared"  # SSL_SWEEPS_HOME: the cluster's shared folder
        shared.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "SSL_SWEEPS_", "SLURM"))}
        env.update(PATH=f"{sys.prefix}/bin:{env['PATH']}", SSL_SWEEPS_HOME=str(shared))
        jobdir = shared / "slurm" / NAME
        daemons: list[subprocess.Popen] = []
        try:
            cluster = Slurm(hosts, hosts.base / "slurm", env, daemons)
            timeline["slurm up (2 nodes idle)"] = time.time() - t_start
            _sweep(hosts, cluster, shared, jobdir, timeline, counts, MlflowClient)
        except BaseException:  # the daemons' logs, then the job's
            for log in sorted((hosts.base / "slurm" / "log").glob("*")) + sorted(jobdir.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-5000:]}")
            raise
    assert not hosts.leftovers(), hosts.leftovers()
    for daemon in daemons:  # munged, slurmctld, the slurmd, mlflow ui: ended with their hosts
        daemon.wait(timeout=30)
    timeline["test wall time"] = time.time() - t_start
    print("\nslurm test timeline (s): " + json.dumps({k: round(v, 1) for k, v in timeline.items()}))
    print("slurm test MLflow child runs: " + json.dumps(counts))


def _sweep(hosts: Hosts, cluster: Slurm, shared: Path, jobdir: Path, timeline: dict, counts: dict, MlflowClient):
    t0 = time.time()
    out = cluster.run([sys.executable, *SUBMIT])
    job_id = re.search(r"submitted job (\d+)", out).group(1)
    log = jobdir / f"slurm-{job_id}.log"
    assert f"tail -f {log}" in out and f"scancel --batch --signal=TERM {job_id}" in out, out

    def logged(text: str, count: int = 1):
        return lambda: log.exists() and log.read_text(errors="replace").count(text) >= count

    wait_for("the job running", lambda: cluster.job(job_id).get("JobState") == "RUNNING", timeout=60)
    timeline["job running (after submit)"] = time.time() - t0
    wait_for("every node in Ray", logged("ray: all 2 nodes joined"), timeout=300)
    timeline["nodes joined"] = time.time() - t0
    wait_for("the MLflow server", logged("MLflow serving"), timeout=180)
    uri = re.search(r"MLflow serving (http://[\d.]+:\d+)", log.read_text()).group(1)
    client = MlflowClient(tracking_uri=uri)
    addresses = [hosts.hosts[n].address for n in NODES]
    # Ray's dashboard listens on the head's loopback only, MLflow on the head's address.
    ray_log = (jobdir / "ray-n1.log").read_text()
    dashboard = re.search(r"view the dashboard at.*\n.*?127\.0\.0\.1:(\d+)", ray_log).group(1)
    listening = [ln.split()[3] for ln in hosts.exec("n1", ["ss", "-ltnH"]).stdout.splitlines()]
    assert [a for a in listening if a.endswith(f":{dashboard}")] == [f"127.0.0.1:{dashboard}"], listening
    assert [a for a in listening if a.endswith(f":{uri.rsplit(':', 1)[1]}")] == [uri.split("//")[1]], listening

    def children(c=client):
        exp = c.get_experiment_by_name("ssl-sweeps/vae_lr")
        if exp is None:
            return []
        return [r for r in c.search_runs([exp.experiment_id], f"tags.sweep = '{NAME}'")
                if "mlflow.parentRunId" in r.data.tags]

    def epochs_done(run, c=client) -> int:
        return max((m.step for m in c.get_metric_history(run.info.run_id, "val_acc_knn")), default=0)

    def mid_sweep():  # a trial done (the driver's progress line), another mid-training past its second checkpoint
        if not re.search(r"\] \w+ lr=\S+ +done ", log.read_text()):
            return None
        return next((r for r in children() if r.info.status == "RUNNING" and 2 <= epochs_done(r) <= 4), None)

    victim = wait_for("a finished trial and one at epoch 2-4", mid_sweep, timeout=900, every=1)
    killed_at_epoch = epochs_done(victim)
    t_kill = time.time()
    cluster.run([job_id if a == "JOBID" else a for a in SCANCEL])  # what Slurm sends before the time limit
    timeline["preemption (scancel --batch --signal=TERM)"] = t_kill - t0

    wait_for("the job requeued", logged("requeueing job"), timeout=300)
    wait_for("the job pending again", lambda: cluster.job(job_id).get("Restarts") == "1", timeout=60)
    timeline["requeued (driver stopped, Ray down)"] = time.time() - t0
    text = log.read_text()
    assert "sweep driver exited with code 143" in text, text[-4000:]
    # Before the next run: the records closed, read straight from the store (its server is down).
    store = MlflowClient(tracking_uri=f"sqlite:///{shared}/mlflow.db")
    before = sorted(r.info.status for r in children(store))
    assert "RUNNING" not in before and "KILLED" in before, before
    parent = store.get_run(victim.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED" and parent.data.tags["sweep_status"] == "interrupted"
    counts["before requeue"] = {"FINISHED": before.count("FINISHED"), "KILLED": before.count("KILLED"),
                                "not started": 3 - len(before)}

    wait_for("the job's second run", logged("run 2 on 2 node(s)"), timeout=300)
    timeline["job running again"] = time.time() - t0
    wait_for("every node in Ray again", logged("ray: all 2 nodes joined", 2), timeout=300)
    timeline["nodes joined again"] = time.time() - t0
    wait_for("the sweep resumed", logged("resuming"), timeout=300)

    # MLflow through an SSH tunnel to the login node, as docs/cluster.md shows (the job log names
    # the head's server; it has moved since the first run's).
    wait_for("the second MLflow server", logged("MLflow serving", 2), timeout=180)
    served = re.findall(r"MLflow serving (http://[\d.]+:\d+)", log.read_text())[-1]
    assert served != uri  # (a new port; on a real cluster perhaps another node)
    _through_tunnel(hosts, served, lambda c: len(children(c)) >= 3, MlflowClient)

    def ended():  # squeue's header line and no job line (a failed squeue is no answer)
        lines = cluster.run([job_id if a == "JOBID" else a for a in SQUEUE], check=False).strip().splitlines()
        return lines[:1] and "JOBID" in lines[0] and len(lines) == 1

    wait_for("the job's end", ended, timeout=900, every=2)
    timeline["sweep done, job ended"] = time.time() - t0
    text = log.read_text()
    assert "sweep driver exited with code 0" in text and "3 completed" in text, text[-4000:]
    # (the driver's own errors; a Ray worker's lines carry a "(sweep_trial pid=...)" prefix)
    assert "could not close" not in text and not re.search(r"^Traceback", text, re.M), text[-4000:]
    state = cluster.job(job_id)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0" and state["Restarts"] == "1", state
    assert not cluster.run(["squeue", "-h"]).strip()

    # Every run exactly once: one FINISHED child per trial (x digits x seed 0), the victim's the same
    # run continued; trials ran on both nodes; the sweep's files agree.
    runs = children(store)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3, [(r.info.run_name, r.info.status) for r in runs]
    assert len({r.data.tags["trial_id"] for r in runs}) == 3
    assert {r.data.tags["ray_node_ips"].split(",")[0] for r in runs} == set(addresses)
    assert store.get_run(parent.info.run_id).info.status == "FINISHED"
    # (artifacts written by the trials straight to the shared folder, readable without the server)
    artifacts = store.get_experiment_by_name("ssl-sweeps/vae_lr").artifact_location
    assert artifacts.removeprefix("file://").startswith(f"{shared}/mlflow-artifacts/"), artifacts
    assert any(Path(artifacts.removeprefix("file://")).rglob("trials.csv"))
    moved = store.get_run(victim.info.run_id)
    assert sorted(m.step for m in store.get_metric_history(moved.info.run_id, "val_acc_knn")) == list(range(1, 7))
    trial_id = moved.data.tags["trial_id"]
    (trial_dir,) = (shared / "tune" / NAME).glob(f"sweep_trial_{trial_id}_*")
    reports = [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines() if ln.strip()]
    resumed = [r["epoch"] for r in reports if r["timestamp"] > t_kill]
    assert resumed and resumed[0] >= killed_at_epoch and resumed == list(range(resumed[0], 7)), \
        [(r["epoch"], r["timestamp"]) for r in reports]  # from its checkpoint, not from epoch 1
    trials = (shared / "tune" / NAME / "trials.csv").read_text().splitlines()
    assert len(trials) == 4 and all(",completed," in f",{ln}," for ln in trials[1:]), trials
    counts["after requeue"] = {"FINISHED": len(runs)}

    # After the job, on the login node: the analysis, and the MLflow UI through an SSH tunnel, on
    # the store in the shared folder (their defaults: $SSL_SWEEPS_HOME/mlflow.db).
    # (--sweep: a sweep at a custom budget -- one dataset, one seed -- is read only when named)
    select = cluster.run([sys.executable, "analysis/select.py", "--space", "vae_lr", "--sweep", NAME, "--dry-run"])
    best = max(runs, key=lambda r: r.data.metrics["acc_mlp"])  # one dataset and seed: the score is its acc_mlp
    assert f"score {100 * best.data.metrics['acc_mlp']:.2f}%" in select, select
    cluster.spawn("ctl", ["sh", "-c", f'cd "{REPO}" && exec "$@"', "sh", f"{sys.prefix}/bin/mlflow", "ui",
                          "--backend-store-uri", f"sqlite:///{shared}/mlflow.db", "--host", "127.0.0.1",
                          "--port", "5000"], cluster.folder / "log" / "mlflow-ui.out")
    wait_for("mlflow ui on the login node", lambda: "127.0.0.1:5000" in hosts.exec("ctl", ["ss", "-ltnH"]).stdout,
             timeout=180)  # (its start takes a while on busy cores; the tunnel would reset till then)
    _through_tunnel(hosts, "127.0.0.1:5000",
                    lambda c: sorted(r.info.status for r in children(c)) == ["FINISHED"] * 3, MlflowClient)
    timeline["analysis and MLflow UI after the job"] = time.time() - t0
    print(f"\n--- the job's log, {log}\n{log.read_text()}")

    # Nothing of the job left on the nodes: no Ray, no slurmstepd.
    def left():
        return [f"{n}: {p[:120]}" for n in NODES for p in cluster.hosts.processes(n)
                if _is_ray(p) or "ray start" in p or "slurmstepd" in p]

    try:
        wait_for("no Ray or job process on the nodes", lambda: not left(), timeout=60)
    except TimeoutError as e:
        raise AssertionError(f"{e}: {left()}") from None


def _through_tunnel(hosts: Hosts, served: str, check, MlflowClient) -> None:
    """``ssh -N -L PORT:SERVED USER@LOGIN`` from "the laptop" (this machine) to the login node; then
    ``check`` on an MLflow client of the tunnel's end."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    head = served.split("//")[-1]
    tunnel = subprocess.Popen([*hosts.ssh_command("ctl")[:-1], "-N", "-L", f"127.0.0.1:{port}:{head}",
                               hosts.ssh_command("ctl")[-1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hosts.wait_port("127.0.0.1", port, timeout=30, what="the SSH tunnel to MLflow")
        assert wait_for("the sweep's runs through the tunnel", lambda: check(MlflowClient(f"http://127.0.0.1:{port}")),
                        timeout=120, every=2)
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)
