"""sweeps/run.py as a user calls it: --list, --show, and bad input (exit 2, one line on stderr,
nothing created)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.spaces import SPACES

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "sweeps" / "run.py")


def run_py(*args: str, home: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    e.update({"SSL_SWEEPS_HOME": str(home), **(env or {})})
    # Run from another folder: the script must not depend on the working directory.
    return subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True, env=e,
                          cwd=str(home.parent), timeout=timeout)


def test_list_prints_every_space(tmp_path):
    out = run_py("--list", home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert names == list(SPACES)


def test_show_prints_the_expanded_space(tmp_path):
    out = run_py("--show", "simvae_sigma2", "--profile", "quick", "--num-samples", "5", home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    assert "log-uniform [0.001, 1]" in out.stdout and "digits, shapes" in out.stdout
    assert "5 trials" in out.stdout and "ASHA" in out.stdout
    assert not (tmp_path / "home").exists()


def test_set_takes_several_pairs_like_the_trainables_cli(tmp_path):
    out = run_py("--show", "vae_lr", "--profile", "quick", "--set", "train_size=123", "test_size=45",
                 "--set", "probe_epochs=7", home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    fixed = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines() if len(line.split()) == 2}
    assert (fixed["train_size"], fixed["test_size"], fixed["probe_epochs"]) == ("123", "45", "7")


@pytest.mark.parametrize("args, fragment", [
    (["--space", "nope"], "unknown space 'nope'"),
    (["--show", "nope"], "unknown space 'nope'"),
    (["--space", "vae_lr", "--profile", "quick", "--datasets", "digits,nope"], "unknown dataset 'nope'"),
    (["--space", "vae_lr", "--profile", "quick", "--set", "bogus=1"], "unknown key bogus"),
    (["--space", "betavae_beta", "--profile", "quick", "--set", "lr=-3"], "lr=-3.0 is invalid"),
    (["--space", "vae_lr", "--profile", "quick", "--set", "lr=0.1"], "searched by space vae_lr"),
    (["--space", "vae_lr", "--profile", "quick", "--resume"], "nothing to resume"),
    (["--space", "vae_lr", "--profile", "quick", "--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
    (["--space", "vae_lr", "--profile", "quick", "--address", "127.0.0.1:9"], "unreachable"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    home = tmp_path / "home"
    out = run_py(*args, home=home)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("run.py: error:") and fragment in lines[0], lines[0]
    assert not home.exists()  # no store, experiment folder or half-created experiment
