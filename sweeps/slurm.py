"""Run a sweep in a Slurm allocation: ``python sweeps/slurm.py --nodes 2 --time 4:00:00 --space vae_lr ...``.

One command submits one job for one sweep (docs/cluster.md, "Slurm"). The job
(sweeps/cluster/slurm_job.sh) starts Ray's head on the allocation's first node and a worker on
every other (``srun``, one task per node), waits until every node has joined, runs sweeps/run.py
on the head against that cluster with the sweep's storage and records on the shared folder, and
stops Ray at the end whatever happened. It is requeue-safe: the SIGTERM Slurm sends before the
time limit (``--signal=B:TERM@SECONDS``), or ``scancel --batch --signal=TERM JOB``, stops the
driver gracefully (exit 143, records closed), the job requeues itself, and its next run resumes
the same sweep (``--resume --name``): no run lost, doubled or left RUNNING.

Every flag this command does not know is sweeps/run.py's. They are checked here, with the sweep's
plan, before anything is submitted: bad input is one line and exit 2. Exit 1: sbatch refused.

``python sweeps/slurm.py _job ...`` is the job script's side (waiting for the nodes and MLflow,
the driver's arguments); people do not call it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repo root, not from sweeps/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sweeps import preflight, schema, spaces  # noqa: E402
from sweeps.ledger import read_info  # noqa: E402
from sweeps.preflight import UsageError  # noqa: E402
from sweeps.schema import SWEEP_FILE  # noqa: E402
from sweeps.spaces import SpaceError  # noqa: E402
from trainables.config import ConfigError  # noqa: E402

JOB_SCRIPT = schema.repo_root() / "sweeps" / "cluster" / "slurm_job.sh"
JOB_PREFIX = "ssl-"  # Slurm job name: ssl-<sweep name>
# run.py flags that make no sense inside the job: it makes its own Ray cluster and runs one sweep.
NOT_IN_A_JOB = {"--address": "the job starts its own Ray cluster", "--num-cpus": "Ray's CPUs are --cpus-per-task",
                "--list": "nothing to submit", "--show": "nothing to submit (run sweeps/run.py --show)"}
TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|(\d+-\d+)|UNLIMITED|INFINITE", re.I)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweeps/slurm.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Submit a sweep as one Slurm job: Ray on every node of the allocation, the driver on the\n"
                    "first, requeued (and resumed) when Slurm stops it with SIGTERM.",
        epilog="Every other flag is sweeps/run.py's (--space, --profile, --name, ...; see sweeps/run.py --help).\n"
               "Example: sweeps/slurm.py --nodes 2 --cpus-per-task 8 --gpus-per-node 1 --time 8:00:00\n"
               "         --partition gpu --space simvae_sigma2 --profile paper --name sigma2-a --max-failures 3\n"
               "Stop it and let it continue later: scancel --batch --signal=TERM JOBID (the job requeues).")
    p.add_argument("--nodes", type=int, default=1, help="nodes of the allocation: Ray's head and driver on "
                   "the first, which takes trials too, a Ray worker on each other (default 1)")
    p.add_argument("--cpus-per-task", type=int, default=1, help="CPUs on each node, all Ray's (one task per "
                   "node; default 1)")
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs on each node, all Ray's (default 0)")
    p.add_argument("--time", help="time limit (Slurm's format, e.g. 8:00:00 or 2-00:00:00; default: the "
                   "partition's)")
    p.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    p.add_argument("--account", help="Slurm account to charge")
    p.add_argument("--stop-seconds", type=int, default=300, help="SIGTERM this long before the time limit, "
                   "for the graceful stop (default 300)")
    p.add_argument("--join-timeout", type=int, default=300, help="seconds the job waits for every node to "
                   "join Ray before it gives up (default 300)")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="one more sbatch option, e.g. --sbatch=--qos=long (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch command; submit nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_job"]:
        return job_main(argv[1:])
    args, rest = build_parser().parse_known_args(argv)
    try:
        job = prepare(args, rest)
    except (UsageError, SpaceError, ConfigError) as e:
        print(f"slurm.py: error: {e}", file=sys.stderr)
        return 2
    command, env = job["command"], {**os.environ, **job["env"]}
    if args.dry_run:
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in job["env"].items()))
        print(shlex.join(command))
        return 0
    job["folder"].mkdir(mode=0o700, parents=True, exist_ok=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        print(f"slurm.py: sbatch refused the job: {done.stderr.strip() or done.stdout.strip()}", file=sys.stderr)
        return 1
    job_id = done.stdout.strip().split(";")[0]
    log = job["folder"] / f"slurm-{job_id}.log"
    print(f"submitted job {job_id} ({JOB_PREFIX}{job['name']}): sweep {job['name']} on {args.nodes} node(s)\n"
          f"  log:      {log}\n"
          f"  follow:   tail -f {log}   (Ray's start, the nodes joining, the sweep's progress, its summary)\n"
          f"  queue:    squeue -j {job_id}\n"
          f"  MLflow:   the log's \"MLflow serving http://ADDR:PORT\" line, once the job runs; from your laptop:\n"
          f"            ssh -N -L 5000:ADDR:PORT YOU@THIS_LOGIN_NODE, then http://127.0.0.1:5000\n"
          f"  stop now, continue later: scancel --batch --signal=TERM {job_id}   (the job requeues itself)", flush=True)
    return 0


def prepare(args: argparse.Namespace, rest: list[str]) -> dict:
    """Check everything a person can get wrong before anything is submitted; returns the sweep's
    name, its job folder, the sbatch command and the environment the job reads."""
    from sweeps import run

    for flag in rest:
        if flag.split("=", 1)[0] in NOT_IN_A_JOB:
            raise UsageError(f"{flag.split('=', 1)[0]}: not for a Slurm job ({NOT_IN_A_JOB[flag.split('=', 1)[0]]})")
    parser = run.build_parser()

    def refuse(message: str):
        raise UsageError(f"{message} (see sweeps/slurm.py --help and sweeps/run.py --help)")

    parser.error = refuse
    sweep = parser.parse_args(rest)
    for flag, value, least in (("--nodes", args.nodes, 1), ("--cpus-per-task", args.cpus_per_task, 1),
                               ("--gpus-per-node", args.gpus_per_node, 0), ("--stop-seconds", args.stop_seconds, 0),
                               ("--join-timeout", args.join_timeout, 1)):
        if value < least:
            raise UsageError(f"{flag} {value}: must be >= {least}")
    if args.time is not None and not TIME.fullmatch(args.time):
        raise UsageError(f"--time {args.time!r}: Slurm's format is MINUTES, HH:MM:SS or DAYS-HH:MM:SS")
    if not sweep.space:
        raise UsageError("no space given: --space NAME (see sweeps/run.py --list)")
    preflight.check_flags(sweep)
    home = schema.home()
    storage = Path(sweep.storage).expanduser().resolve() if sweep.storage else schema.storage_dir(home)
    if sweep.resume:
        if not sweep.name:
            raise UsageError("--resume: add --name NAME, the sweep to continue (a job resumes one named sweep)")
        if not (storage / sweep.name / SWEEP_FILE).exists():
            raise UsageError(f"--resume --name {sweep.name}: no such sweep under {storage}")
        plan = spaces.Plan.from_dict(read_info(storage / sweep.name)["plan"])
    else:
        plan = spaces.expand(sweep.space, **run.expand_kwargs(sweep))
        if sweep.name and (storage / sweep.name).exists():
            raise UsageError(f"--name {sweep.name}: {storage / sweep.name} is taken by another sweep (add --resume "
                             f"to continue it, or choose another name)")
    if plan.cpus_per_trial > args.cpus_per_task or plan.gpus_per_trial > args.gpus_per_node:
        raise UsageError(f"a trial needs {plan.cpus_per_trial:g} CPU(s) and {plan.gpus_per_trial:g} GPU(s); a node "
                         f"has --cpus-per-task {args.cpus_per_task} and --gpus-per-node {args.gpus_per_node}")
    if plan.profile == "paper" and args.gpus_per_node == 0 and not sweep.allow_cpu:
        raise UsageError("--profile paper on nodes without GPUs: add --gpus-per-node N (or --allow-cpu, at the cost "
                         "sweeps/run.py estimates)")
    name = sweep.name or f"{plan.space}-{plan.profile}-{datetime.now():%Y%m%d-%H%M%S}"
    pending = "" if args.dry_run else _queued(name)
    if pending:
        raise UsageError(f"sweep {name} has a job in the queue already: {pending} (squeue -n {JOB_PREFIX}{name})")
    folder = home / "slurm" / name
    own_mlflow = not (sweep.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    run_args = list(rest) + ([] if sweep.name else ["--name", name])
    options = [f"--job-name={JOB_PREFIX}{name}", f"--nodes={args.nodes}", "--ntasks-per-node=1",
               f"--cpus-per-task={args.cpus_per_task}",
               *([f"--gpus-per-node={args.gpus_per_node}"] if args.gpus_per_node else []),
               *([f"--time={args.time}"] if args.time else []),
               *([f"--partition={args.partition}"] if args.partition else []),
               *([f"--account={args.account}"] if args.account else []),
               "--requeue", f"--signal=B:TERM@{args.stop_seconds}", "--open-mode=append",
               # (run.py's relative paths, --storage or --data-dir, mean there what they mean here)
               f"--output={folder}/slurm-%j.log", f"--chdir={Path.cwd()}", "--export=ALL",
               *args.sbatch]
    env = {"SSL_SWEEPS_REPO": str(schema.repo_root()), "SSL_SWEEPS_PYTHON": sys.executable,
           "SSL_SWEEPS_HOME": str(home), "SSL_SWEEPS_SLURM_DIR": str(folder),
           "SSL_SWEEPS_SLURM_CPUS": str(args.cpus_per_task), "SSL_SWEEPS_SLURM_GPUS": str(args.gpus_per_node),
           "SSL_SWEEPS_SLURM_JOIN_TIMEOUT": str(args.join_timeout), "SSL_SWEEPS_SLURM_MLFLOW": str(int(own_mlflow))}
    return {"name": name, "folder": folder, "env": env,
            "command": ["sbatch" if args.dry_run else _tool("sbatch"), "--parsable", *options, str(JOB_SCRIPT),
                        *run_args]}


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"{name} not found: run this on a Slurm login node (Debian/Ubuntu: apt-get install "
                         f"slurm-client)")
    return found


def _queued(name: str) -> str:
    """Job ids of this sweep's jobs still in the queue (two jobs on one sweep would collide)."""
    done = subprocess.run([_tool("squeue"), "-h", "-n", f"{JOB_PREFIX}{name}", "-o", "%i"], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        raise UsageError(f"squeue: {done.stderr.strip() or 'failed'} (is Slurm reachable from here?)")
    return " ".join(done.stdout.split())


# -- inside the job (sweeps/cluster/slurm_job.sh) ----------------------------------------------------
def job_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="sweeps/slurm.py _job", description="the job script's helpers")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("wait-nodes", help="wait until N nodes have joined the Ray cluster at ADDRESS")
    w.add_argument("--address", required=True)
    w.add_argument("--nodes", type=int, required=True)
    w.add_argument("--timeout", type=float, required=True)
    m = sub.add_parser("wait-mlflow", help="wait until the MLflow server at URI answers")
    m.add_argument("--uri", required=True)
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--timeout", type=float, required=True)
    d = sub.add_parser("driver-args", help="sweeps/run.py's arguments for this run of the job, NUL-separated")
    d.add_argument("--mlflow", help="the job's MLflow server (its address changes with the head node)")
    d.add_argument("run_args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.what == "wait-nodes":
        return wait_nodes(a.address, a.nodes, a.timeout)
    if a.what == "wait-mlflow":
        return wait_mlflow(a.uri, a.pid, a.timeout)
    run_args = a.run_args[1:] if a.run_args[:1] == ["--"] else a.run_args
    sys.stdout.write("".join(f"{x}\0" for x in driver_args(run_args, a.mlflow)))
    return 0


def _say(text: str) -> None:
    """A line of the job's log, as slurm_job.sh's ``say`` writes them."""
    print(f"[{datetime.now():%H:%M:%S}] slurm job {os.environ.get('SLURM_JOB_ID', '?')}: {text}", flush=True)


def wait_nodes(address: str, nodes: int, timeout: float) -> int:
    """Wait (at most ``timeout`` s) until ``nodes`` Ray nodes are alive; one line either way."""
    import logging

    import ray

    started, deadline = time.time(), time.time() + timeout
    while True:  # the head's GCS first (ray.init on a closed port retries for minutes)
        try:
            preflight.check_address(address, timeout=2)
            break
        except UsageError as e:
            if time.time() > deadline:
                _say(f"ray: no Ray head at {address} after {timeout:.0f} s ({e})")
                return 1
            time.sleep(1)
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        while True:
            alive = [n for n in ray.nodes() if n["Alive"]]
            if len(alive) >= nodes or time.time() > deadline:
                break
            time.sleep(1)
    finally:
        ray.shutdown()
    names = "; ".join(f"{n['NodeManagerHostname']} {n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
                      f"{n['Resources'].get('GPU', 0):g} GPU" for n in alive)
    if len(alive) < nodes:
        _say(f"ray: only {len(alive)} of {nodes} nodes joined after {timeout:.0f} s ({names})")
        return 1
    _say(f"ray: all {nodes} nodes joined after {time.time() - started:.0f} s ({names})")
    return 0


def wait_mlflow(uri: str, pid: int, timeout: float) -> int:
    """Wait until the MLflow server answers (its first start creates the tables: up to a minute)."""
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=3).read()
            return 0
        except OSError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                _say(f"mlflow: the server exited before answering on {uri}")
                return 1
            time.sleep(1)
    _say(f"mlflow: no answer on {uri} after {timeout:.0f} s")
    return 1


def driver_args(run_args: list[str], mlflow: str | None) -> list[str]:
    """run.py's arguments for this run of the job: the submitted ones (with --name), plus
    ``--resume`` when the sweep's folder holds its sweep.json (a requeued or resubmitted job), plus
    ``--tracking-uri`` of the job's MLflow server. sweep.json records the tracking URI, and a
    requeued job's head (where its MLflow server listens) may be another node: the address this
    job recorded there in an earlier run is replaced by today's; the store is the same file."""
    from sweeps import run

    sweep = run.build_parser().parse_args(run_args)
    storage = Path(sweep.storage).expanduser().resolve() if sweep.storage else schema.storage_dir(schema.home())
    folder = storage / sweep.name
    jobdir = schema.home() / "slurm" / sweep.name
    out = list(run_args) + (["--tracking-uri", mlflow] if mlflow else [])
    if (folder / SWEEP_FILE).exists():
        out += [] if sweep.resume else ["--resume"]
        previous = jobdir / "mlflow_uri"
        if mlflow and previous.exists():
            info = read_info(folder)
            if info.get("tracking_uri") == previous.read_text().strip() != mlflow:
                schema.write_text_atomic(folder / SWEEP_FILE, json.dumps({**info, "tracking_uri": mlflow}, indent=2,
                                                                          default=str))
    elif folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # claimed by a driver stopped before it began: start afresh under the same name
    if mlflow:
        (jobdir / "mlflow_uri").write_text(mlflow + "\n")
    return out


if __name__ == "__main__":
    sys.exit(main())
