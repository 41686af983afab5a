"""run.py refuses bad input before Ray starts and before anything is created: one line on
stderr, exit 2, no traceback, no MLflow store or experiment folder. Also: the experiment folder
is claimed atomically, resumes need a trusted folder, and a completed sweep's records can be
repaired."""
from __future__ import annotations

import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from sweeps import preflight, schema, spaces, tracking
from sweeps.ledger import claim_folder
from sweeps.run import main

QUICK = ["--profile", "quick", "--datasets", "digits", "--epochs", "1"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_SWEEPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def not_ray():
    """An HTTP server on a loopback port: something answers, but it is not Ray."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


BAD = {
    "train_size larger than the dataset": (["--space", "vae_lr", *QUICK, "--set", "train_size=100000"], "train_size=100000"),
    "device foo": (["--space", "vae_lr", *QUICK, "--set", "device=foo"], "device='foo'"),
    "device cuda without --gpus-per-trial": (["--space", "vae_lr", *QUICK, "--set", "device=cuda"], "--gpus-per-trial"),
    "negative search seed": (["--space", "vae_lr", *QUICK, "--search-seed", "-1"], "--search-seed -1"),
    "tracking uri without a scheme": (["--space", "vae_lr", *QUICK, "--tracking-uri", "junkstore"], "not a tracking URI"),
    "tracking uri of an unknown scheme": (["--space", "vae_lr", *QUICK, "--tracking-uri", "foo://bar"], "unsupported scheme"),
    "epochs not a number": (["--space", "vae_lr", *QUICK[:-2], "--set", "epochs=abc"], "epochs='abc'"),
    "epochs nan": (["--space", "vae_lr", *QUICK[:-2], "--set", "epochs=nan"], "epochs=nan"),
    "storage a URI": (["--space", "vae_lr", *QUICK, "--storage", "s3://bucket/x"], "not a URI"),
    "no datasets": (["--space", "vae_lr", "--profile", "quick", "--datasets", ","], "names no dataset"),
    "max-concurrent 0": (["--space", "vae_lr", *QUICK, "--max-concurrent", "0"], "--max-concurrent 0"),
    "repeated seed": (["--space", "vae_lr", *QUICK, "--seeds", "0,0"], "repeated"),
    "negative num-cpus": (["--space", "vae_lr", *QUICK, "--num-cpus", "-1"], "--num-cpus -1"),
    "a name that escapes the storage folder": (["--space", "vae_lr", *QUICK, "--name", "../../x"], "one folder name"),
    "sigma2 inf": (["--space", "simvae_J", *QUICK, "--set", "sigma2=inf"], "sigma2=inf"),
    "temperature inf": (["--space", "simclr_lr", *QUICK, "--set", "temperature=inf"], "temperature=inf"),
    "beta inf": (["--space", "betavae_lr", *QUICK, "--set", "beta=inf"], "beta=inf"),
    "knn_k larger than the training set": (["--space", "vae_lr", *QUICK, "--set", "train_size=50", "knn_k=60"],
                                           "knn_k=60"),
    "missing data": (["--space", "vae_lr", "--profile", "paper", "--datasets", "mnist", "--data-dir", "{tmp}/none"],
                     "mnist"),
    "an address where Ray is not": (["--space", "vae_lr", *QUICK, "--address", "{not_ray}"], "not Ray"),
    "an address where nobody listens": (["--space", "vae_lr", *QUICK, "--address", "127.0.0.1:9"], "unreachable"),
    "optuna storage not a database": (["--space", "vae_lr", *QUICK, "--optuna-storage", "redis://h/0"],
                                      "not a database URL"),
    "optuna storage where no database answers": (["--space", "vae_lr", *QUICK, "--optuna-storage",
                                                  "postgresql://sweeper@127.0.0.1:9/optuna"], "cannot connect"),
    "a password in the optuna storage URL": (["--space", "vae_lr", *QUICK, "--optuna-storage",
                                              "postgresql://sweeper:s3cret@127.0.0.1:9/optuna"], "holds a password"),
    "a password in the tracking URI": (["--space", "vae_lr", *QUICK, "--tracking-uri",
                                        "postgresql://sweeper:s3cret@127.0.0.1:9/mlflow"], "holds a password"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_refused_before_anything_is_created(name, home, tmp_path, capsys, not_ray):
    argv, fragment = BAD[name]
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{not_ray}", not_ray) for a in argv]
    t0 = time.time()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("run.py: error: "), err
    assert "Traceback" not in err
    assert time.time() - t0 < 30  # seconds, not Ray's minute-long retries
    assert not (home / "mlflow.db").exists()  # no MLflow store, experiment or parent run
    assert not (home / "optuna.db").exists()  # no Optuna study
    assert "s3cret" not in err  # a password is never echoed
    assert not any((home / "tune").glob("*")) if (home / "tune").exists() else True  # no experiment folder


def test_missing_data_names_the_files_data_dir_and_offline_profiles(home, tmp_path, capsys):
    assert main(["--space", "vae_lr", "--profile", "paper", "--datasets", "mnist", "--data-dir",
                 str(tmp_path / "none")]) == 2
    line = capsys.readouterr().err.strip()
    assert "train-images-idx3-ubyte" in line and "--data-dir" in line and "quick" in line


@pytest.mark.parametrize("profile", [[], ["--profile", "paper"], ["--profile", "laptop"]],
                         ids=["no --profile", "paper", "laptop"])
def test_the_first_command_without_data_says_which_profile_it_ran_and_which_run_here(profile, home, tmp_path,
                                                                                     monkeypatch, capsys):
    """The headline command without data: one line that says, once, where the files go; that no
    --profile means the paper profile (when none was given); and the profiles that run here."""
    monkeypatch.setenv("SSL_SWEEPS_DATA", str(tmp_path / "none"))
    assert main(["--space", "simvae_J", *profile]) == 2
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("run.py: error: no --profile means --profile paper: ") is (profile == [])
    assert "400 epochs" in line if not profile else True
    assert "train-images-idx3-ubyte" in line and "profiles whose data is here: --profile quick" in line
    assert line.count("--data-dir") == 1 and line.count("SSL_SWEEPS_DATA") == 1  # said once
    assert not (home / "mlflow.db").exists() and not (home / "optuna.db").exists()


def test_the_experiment_folder_is_claimed_exclusively(tmp_path):
    storage = tmp_path / "tune"
    folder = claim_folder(storage, "clash", "betavae_lr", "quick")
    assert folder.is_dir()
    with pytest.raises(preflight.UsageError, match="clash.*taken by another sweep"):
        claim_folder(storage, "clash", "betavae_lr", "quick")
    names = {claim_folder(storage, None, "vae_lr", "quick").name for _ in range(40)}
    assert len(names) == 40  # default names made in the same second never collide


def test_a_second_sweep_with_a_taken_name_exits_2_at_once(home, capsys):
    (home / "tune" / "clash").mkdir(parents=True)
    assert main(["--space", "betavae_lr", *QUICK, "--name", "clash"]) == 2
    err = capsys.readouterr().err
    assert "clash" in err and "taken by another sweep" in err
    assert not (home / "mlflow.db").exists()


def _completed_sweep(home: Path, space: str = "vae_lr") -> tuple[Path, dict, list[str]]:
    """A completed sweep's folder and records as a tracking outage left them: two children
    RUNNING (one of a completed trial, one of an ASHA-stopped trial)."""
    uri = f"sqlite:///{home / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, space)
    parent = tracking.create_parent(uri, exp, "done", {"space": space}, {})
    c = tracking.client(uri)
    kids = []
    for trial in ("t1", "t2"):
        run = c.create_run(exp, tags={schema.Tag.PARENT: parent, schema.Tag.TRIAL_ID: trial,
                                      schema.Tag.DATASET: "digits", schema.Tag.SEED: "0"})
        kids.append(run.info.run_id)
    folder = home / "tune" / "done"
    folder.mkdir(parents=True)
    (folder / "trials.csv").write_text("trial_id,status\nt1,completed\nt2,stopped_early\n")
    plan = spaces.expand(space, "quick")
    info = {"name": "done", "space": space, "expand": {"profile": "quick"}, "plan": plan.to_dict(),
            "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent, "status": "completed",
            "tracking_incomplete": {"t1": "records not logged"}}
    (folder / "sweep.json").write_text(json.dumps(info))
    return folder, info, kids


def test_resume_of_a_completed_sweep_repairs_its_records(home, capsys):
    folder, info, (k1, k2) = _completed_sweep(home)
    assert main(["--space", "vae_lr", "--profile", "quick", "--resume"]) == 0
    assert "2 open child run(s) closed" in capsys.readouterr().out
    c = tracking.client(info["tracking_uri"])
    r1, r2 = c.get_run(k1), c.get_run(k2)
    assert r1.info.status == "FINISHED" and r2.info.status == "FINISHED"
    assert r2.data.tags[schema.Tag.STOPPED_EARLY] == "true"
    assert c.get_run(info["parent_run_id"]).info.status == "FINISHED"
    assert "tracking_incomplete" not in json.loads((folder / "sweep.json").read_text())


def test_resume_refuses_a_sweep_of_another_space(home, capsys):
    _completed_sweep(home, "vae_lr")
    assert main(["--space", "betavae_lr", "--profile", "quick", "--resume", "--name", "done"]) == 2
    assert "of space vae_lr, not betavae_lr" in capsys.readouterr().err


def test_resume_refuses_a_folder_others_can_write(home, capsys):
    folder, _, _ = _completed_sweep(home)
    os.chmod(folder / "sweep.json", 0o666)
    assert main(["--space", "vae_lr", "--profile", "quick", "--resume", "--name", "done"]) == 2
    err = capsys.readouterr().err
    assert "writable by other users" in err and "sweep.json" in err


@pytest.fixture(scope="module")
def local_ray():
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("flags, fragment", [(["--gpus-per-trial", "1"], "1 GPU"), (["--cpus-per-trial", "64"], "64 CPU")])
def test_infeasible_resources_are_refused_against_the_nodes(local_ray, home, capsys, flags, fragment):
    assert main(["--space", "vae_lr", *QUICK, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "largest has 2 CPU, 0 GPU" in err[0]
    assert not (home / "mlflow.db").exists()
    assert not any((home / "tune").glob("*"))  # the claimed folder was given back


def test_the_paper_profile_without_gpus_is_refused_with_a_cpu_estimate(local_ray, home, capsys):
    t0 = time.time()
    assert main(["--space", "vae_lr", "--profile", "paper", "--datasets", "digits", "--num-samples", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without GPUs" in err[0] and "CPU-hours for its 4 trial(s)" in err[0]
    assert "views/s" in err[0] and "--allow-cpu" in err[0] and "--profile laptop" in err[0] and "quick" in err[0]
    assert time.time() - t0 < 60
    assert not (home / "mlflow.db").exists() and not (home / "tune").exists()


LOOPBACK_SCRIPT = """
import json, ray
import psutil  # Ray ships it (ray/thirdparty_files), on the path once ray is imported
from sweeps.run import connect_ray
assert connect_ray(None, 1)
@ray.remote
def one():
    return 1
assert ray.get(one.remote()) == 1
kids = {p.pid for p in psutil.Process().children(recursive=True)}
addrs = sorted({c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in kids})
print(json.dumps(addrs))
ray.shutdown()
"""


def test_a_local_sweeps_ray_listens_on_loopback_only():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([sys.executable, "-c", LOOPBACK_SCRIPT], capture_output=True, text=True, timeout=180,
                         cwd=Path(__file__).resolve().parents[1], env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    addrs = json.loads(res.stdout.strip().splitlines()[-1])
    assert addrs and all(a in ("127.0.0.1", "::ffff:127.0.0.1") for a in addrs), addrs
