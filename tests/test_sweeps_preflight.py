"""run.py refuses bad input before Ray starts and before anything is created: one line on
stderr, exit 2, no traceback, no MLflow store or experiment folder. Also: the experiment folder
is claimed atomically, resumes need a trusted folder, and a completed sweep's records can be
repaired."""
from __future__ import annotations

import http.server
import json
import os
import pickle
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
    # Values of the wrong kind, or that float32 cannot hold, and keys a sweep sets itself.
    "a bool for an int": (["--space", "vae_lr", *QUICK[:-2], "--set", "epochs=true"], "epochs=True is not a valid int"),
    "a bool for a float": (["--space", "vae_lr", *QUICK, "--set", "adam_eps=false"], "adam_eps=False is not a valid float"),
    "a subnormal float": (["--space", "simvae_J", *QUICK, "--set", "sigma2=1e-320"], "sigma2=1e-320 is invalid: too small"),
    "a float beyond float32": (["--space", "simvae_J", *QUICK, "--set", "likelihood_scale=1e39"], "too large"),
    "--set method": (["--space", "vae_lr", *QUICK, "--set", "method=simvae"], "--set method: a sweep cannot fix it"),
    "--set dataset": (["--space", "vae_lr", *QUICK, "--set", "dataset=mnist"], "use --datasets"),
    "--set seed": (["--space", "vae_lr", *QUICK, "--set", "seed=3"], "use --seeds"),
    "storage on a special file system": (["--space", "vae_lr", *QUICK, "--storage", "/proc/self/ssl-sweeps"],
                                         "proc file system"),
    "a data folder that is a symbolic link loop": (["--space", "vae_lr", "--profile", "laptop", "--datasets", "mnist",
                                                    "--data-dir", "{loop}"], "cannot be resolved"),
    "MNIST images whose header gives another shape": (["--space", "vae_lr", "--profile", "laptop", "--datasets",
                                                       "mnist", "--data-dir", "{wrong_shape}"], "not 1x28x28"),
    "--retry-failed without --resume": (["--space", "vae_lr", *QUICK, "--retry-failed"], "goes with --resume"),
    "--accept-changes without --resume": (["--space", "vae_lr", *QUICK, "--accept-changes"], "goes with --resume"),
}


def placeholder(arg: str, tmp_path: Path, not_ray: str) -> str:
    """An argument with its placeholder made real: {tmp}, {not_ray}, {loop} (a symbolic link
    loop), {wrong_shape} (MNIST files whose image header says 14x56: the right byte count)."""
    if "{loop}" in arg:
        (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
        (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
        return str(tmp_path / "loop-a")
    if "{wrong_shape}" in arg:
        import numpy as np

        from test_datasets import write_idx, write_mnist_like
        from trainables.datasets import mnist as mnist_module

        raw = tmp_path / "data" / "MNIST" / "raw"
        arrays = write_mnist_like(raw, np.random.default_rng(0), n_train=30, n_test=10)
        write_idx(raw / mnist_module.IDX_FILES["train"][0], arrays["train"][0].reshape(-1, 14, 56))
        return str(tmp_path / "data")
    return arg.replace("{tmp}", str(tmp_path)).replace("{not_ray}", not_ray)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_refused_before_anything_is_created(name, home, tmp_path, capsys, not_ray):
    argv, fragment = BAD[name]
    argv = [placeholder(a, tmp_path, not_ray) for a in argv]
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


# -- resuming: the sweep's lock, its sweep.json, the storage trust boundary, its Optuna study ----------------


class Evil:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _stopped_sweep(home: Path, space: str = "vae_lr", name: str = "stopped", optuna_db: Path | None = None) -> Path:
    """An interrupted sweep's folder as --resume finds it, without having run: sweep.json, Tune's
    (empty) experiment state and tuner.pkl, one trial folder. Its MLflow parent is real."""
    uri = f"sqlite:///{home / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, space)
    parent = tracking.create_parent(uri, exp, name, {"space": space}, {})
    folder = home / "tune" / name
    (folder / "sweep_trial_t1_0" / "runs" / "digits-s0").mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps({"harmless": True}))
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": [], "runner_data": {}}))
    plan = spaces.expand(space, "quick")
    info = {"name": name, "space": space, "expand": {"profile": "quick"}, "plan": plan.to_dict(), "tracking_uri": uri,
            "optuna_storage": f"sqlite:///{optuna_db or home / 'optuna.db'}", "optuna_study": f"{name}-0000",
            "experiment_id": exp, "parent_run_id": parent, "status": "interrupted"}
    (folder / "sweep.json").write_text(json.dumps(info))
    return folder


def _snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.lstat().st_mtime_ns, p.is_file() and p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def test_resume_of_a_live_sweep_is_refused_naming_its_driver(home, capsys):
    """--resume typed in a second shell while the sweep runs: one line naming the driver that
    holds it, exit 2, and nothing of the sweep touched."""
    from sweeps.lock import SweepLock

    folder = _stopped_sweep(home)
    json_before = (folder / "sweep.json").read_bytes()
    live = SweepLock(folder)
    live.acquire()
    try:
        before = _snapshot(folder)
        capsys.readouterr()
        assert main(["--space", "vae_lr", "--profile", "quick", "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "stopped is running" in err[0] and f"pid {os.getpid()} on host" in err[0], err
        assert _snapshot(folder) == before and (folder / "sweep.json").read_bytes() == json_before
    finally:
        live.release()


def _symlink_tuner_pkl(folder: Path, elsewhere: Path, marker: Path) -> str:
    evil = elsewhere / "tuner.pkl"
    evil.write_bytes(pickle.dumps(Evil(marker)))
    evil.chmod(0o666)
    (folder / "tuner.pkl").unlink()
    (folder / "tuner.pkl").symlink_to(evil)
    return "tuner.pkl is a symbolic link"


def _symlink_trial_folder(folder: Path, elsewhere: Path, marker: Path) -> str:
    foreign = elsewhere / "foreign"
    foreign.mkdir()
    (foreign / "params.pkl").write_bytes(pickle.dumps(Evil(marker)))
    os.chown(foreign, 65534, 65534)
    foreign.chmod(0o777)
    (folder / "sweep_trial_t2_1").symlink_to(foreign)
    return "sweep_trial_t2_1 is a symbolic link"


def _symlink_searcher_state(folder: Path, elsewhere: Path, marker: Path) -> str:
    (elsewhere / "s.pkl").write_bytes(pickle.dumps(Evil(marker)))
    (folder / "searcher-state-2026-01-01_00-00-00.pkl").symlink_to(elsewhere / "s.pkl")
    return "searcher-state-2026-01-01_00-00-00.pkl is a symbolic link"


def _symlink_run_folder(folder: Path, elsewhere: Path, marker: Path) -> str:
    (elsewhere / "run").mkdir()
    (folder / "sweep_trial_t1_0" / "runs" / "shapes-s0").symlink_to(elsewhere / "run")
    return "shapes-s0 is a symbolic link"


def _sweep_folder_a_symlink(folder: Path, elsewhere: Path, marker: Path) -> str:
    moved = elsewhere / folder.name
    folder.rename(moved)
    folder.symlink_to(moved)
    return f"{folder} is a symbolic link"


def _foreign_file(folder: Path, elsewhere: Path, marker: Path) -> str:
    os.chown(folder / "tuner.pkl", 65534, 65534)
    return "tuner.pkl is owned by another user"


def _group_writable_folder(folder: Path, elsewhere: Path, marker: Path) -> str:
    (folder / "sweep_trial_t1_0").chmod(0o775)
    return "sweep_trial_t1_0 is writable by other users"


def _world_writable_file(folder: Path, elsewhere: Path, marker: Path) -> str:
    (folder / "experiment_state-2026-01-01_00-00-00.json").chmod(0o666)
    return "experiment_state-2026-01-01_00-00-00.json is writable by other users"


def _world_writable_storage(folder: Path, elsewhere: Path, marker: Path) -> str:
    folder.parent.chmod(0o777)
    return "the storage folder"


UNTRUSTED = {"tuner.pkl a symlink to a world-writable pickle": _symlink_tuner_pkl,
             "a trial folder a symlink to a foreign world-writable folder": _symlink_trial_folder,
             "the searcher state a symlink": _symlink_searcher_state,
             "a run folder a symlink": _symlink_run_folder,
             "the sweep folder a symlink": _sweep_folder_a_symlink,
             "a file owned by another user": _foreign_file,
             "a folder writable by its group": _group_writable_folder,
             "a file writable by anyone": _world_writable_file,
             "the storage folder writable by anyone, not sticky": _world_writable_storage}


@pytest.mark.parametrize("case", list(UNTRUSTED))
def test_resume_reads_nothing_behind_the_storage_trust_boundary(case, home, tmp_path, capsys):
    """Nothing under a sweep folder that is a symbolic link, another user's or writable by
    others is read, unpickled or written: --resume refuses it, one line, before anything runs."""
    if os.getuid() != 0 and case in ("a trial folder a symlink to a foreign world-writable folder",
                                     "a file owned by another user"):
        pytest.skip("giving a file to another user needs root")
    folder = _stopped_sweep(home)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "pwned"
    fragment = UNTRUSTED[case](folder, elsewhere, marker)
    before = _snapshot(folder.resolve())
    capsys.readouterr()
    try:
        code = main(["--space", "vae_lr", "--profile", "quick", "--resume", "--name", "stopped"])
    finally:
        folder.parent.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0] and err[0].startswith("run.py: error: --resume: "), err
    assert not marker.exists()  # nothing unpickled
    assert _snapshot(folder.resolve()) == before  # nothing written (not even a lock file)


def _truncate(path: Path) -> None:
    path.write_text(path.read_text()[:40])


def _edit(**changes):
    def edit(path: Path) -> None:
        info = json.loads(path.read_text())
        info.update(changes)
        path.write_text(json.dumps({k: v for k, v in info.items() if v is not None}))
    return edit


def _symlink_sweep_json(path: Path) -> None:
    target = path.with_name("elsewhere.json")
    path.rename(target)
    path.symlink_to(target)


MALFORMED = {"truncated": _truncate, "empty": lambda p: p.write_text(""), "not an object": lambda p: p.write_text("[1]"),
             "a field missing": _edit(parent_run_id=None), "a field of the wrong type": _edit(plan="vae_lr"),
             "an unknown status": _edit(status="paused"), "a plan that cannot be read": _edit(plan={"space": "x"}),
             "another sweep's name": _edit(name="elsewhere"), "a symbolic link": _symlink_sweep_json}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_sweep_json_is_one_line_and_blocks_no_other_sweep(case, home, capsys):
    """A truncated, empty or edited sweep.json: naming its sweep is one line and exit 2; a bad
    file of another space (newer, so looked at first) does not stop this space's resume."""
    from sweeps.ledger import find_resumable

    good = _stopped_sweep(home, "vae_lr", "good")
    bad = _stopped_sweep(home, "betavae_lr", "bad")
    past = time.time() - 60
    os.utime(good / "sweep.json", (past, past))
    MALFORMED[case](bad / "sweep.json")
    assert find_resumable(home / "tune", "vae_lr", "quick", None) == (good, False)
    with pytest.raises(preflight.UsageError, match="nothing to resume.*1 sweep folder"):
        find_resumable(home / "tune", "betavae_lr", "quick", None)
    capsys.readouterr()
    assert main(["--space", "betavae_lr", "--profile", "quick", "--resume", "--name", "bad"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.json" in err[0] and "Traceback" not in err[0], err


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _another_programs_database(path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()


def _truncated_optuna_database(path: Path) -> None:
    from sweeps.search import open_storage

    open_storage(f"sqlite:///{path}")
    path.write_bytes(path.read_bytes()[:3000])


CORRUPT_DB = {"random bytes": (_random_bytes, "not a sound SQLite database"),
              "another program's database": (_another_programs_database, "another program's database"),
              "a truncated Optuna database": (_truncated_optuna_database, "Optuna storage")}


@pytest.mark.parametrize("resume", [False, True], ids=["new sweep", "resume"])
@pytest.mark.parametrize("case", list(CORRUPT_DB))
def test_a_corrupt_optuna_database_is_found_before_ray_starts(case, resume, home, tmp_path, capsys):
    db = tmp_path / "optuna.db"
    corrupt, fragment = CORRUPT_DB[case]
    corrupt(db)
    before = db.read_bytes()
    if resume:
        folder = _stopped_sweep(home, optuna_db=db)
        argv = ["--space", "vae_lr", "--profile", "quick", "--resume"]
    else:
        argv = ["--space", "vae_lr", *QUICK, "--optuna-storage", f"sqlite:///{db}"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert db.read_bytes() == before
    if resume:
        assert json.loads((folder / "sweep.json").read_text())["status"] == "interrupted"
        assert not (folder / "driver.lock").exists()
    else:
        assert not (home / "tune").exists() or not any((home / "tune").iterdir())


def _ran_under(folder: Path, trial: str, change) -> None:
    """A run's result.json as a trial writes it, its resolved config as the code then resolved it
    (``change`` applied to today's resolution)."""
    from trainables.config import resolve_config

    user = {"method": "vae", "dataset": "digits", "seed": 0, "epochs": 3, "train_size": 96}
    resolved = resolve_config(user)
    change(resolved, user)
    schema.write_result(schema.run_folder(folder / f"sweep_trial_{trial}", "digits", 0),
                        {"trial_id": trial, "status": "RUNNING"}, user, resolved, {})


IDENTITY = {
    "a common default changed": (lambda r, u: r.update(knn_k=11), "knn_k 11 then, 10 now"),
    "a method's default changed": (lambda r, u: r.update(likelihood_scale=50.0), "likelihood_scale 50.0 then"),
    "a key the code no longer knows": (lambda r, u: u.update(old_key=1), "does not validate any more"),
    "a key only its budget or placement": (lambda r, u: r.update(epochs=99, device="cuda", eval_every=7), None),
}


@pytest.mark.parametrize("accept", [False, True], ids=["refused", "--accept-changes"])
@pytest.mark.parametrize("case", list(IDENTITY))
def test_a_config_that_changed_since_the_interruption_is_found(case, accept, tmp_path):
    """Before Ray starts, the trials a resume runs again are resolved with today's code and
    compared with the config they ran under: a changed key is one line naming it, then and now,
    and the choice (revert, or --accept-changes, which returns them to run from scratch); a
    trial that will not run again, or a key a run may change on resume, is not a change."""
    change, fragment = IDENTITY[case]
    _ran_under(tmp_path, "t1", change)
    _ran_under(tmp_path, "t9", lambda r, u: r.update(knn_k=12))  # finished: not run again
    if fragment is None:
        assert preflight.check_config_identity(tmp_path, {"t1"}, accept) == set()
    elif accept and "validate" not in fragment:
        assert preflight.check_config_identity(tmp_path, {"t1"}, accept) == {"t1"}
    else:
        with pytest.raises(preflight.UsageError) as refused:
            preflight.check_config_identity(tmp_path, {"t1"}, accept)
        line = str(refused.value)
        assert fragment in line and "\n" not in line and "knn_k 12" not in line
        if "validate" not in fragment:
            assert "revert the change, or add --accept-changes" in line
