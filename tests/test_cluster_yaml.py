"""cluster.yaml (AWS) and cluster.onprem.yaml (machines you own), checked offline: Ray's own
schema (the autoscaler's ``prepare_config`` fills the provider's defaults from Ray's packaged
defaults.yaml -- no credentials, no network -- and ``validate_config`` applies ray-schema.json,
which rejects unknown keys), plus what the schema cannot see: nothing bound to a public
interface, the project installed, the head's records (PostgreSQL and one MLflow server, started
by sweeps/cluster/head_services.sh) that every node points at, shared storage for Tune, and every
``ray start`` / ``mlflow server`` option spelt as the installed CLIs define it. The on-prem file
is also launched for real by tests/test_cluster_onprem.py."""
from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HEAD_SERVICES = ROOT / "sweeps" / "cluster" / "head_services.sh"
FAKE_ENV = {"$(hostname -I | awk '{print $1}')": "10.0.0.5", "$RAY_HEAD_IP": "10.0.0.5",
            '"$(bash ~/ssl-sweeps/sweeps/cluster/head_services.sh head-ip)"': "10.0.0.5",
            "${SSL_SWEEPS_RAY_CPUS:+--num-cpus=$SSL_SWEEPS_RAY_CPUS}": "",
            '"$SSL_SWEEPS_HOME/mlflow-artifacts"': "/mnt/ssl-sweeps/mlflow-artifacts",
            "$SSL_SWEEPS_HOME": "/mnt/ssl-sweeps", "$HOME": "/home/ubuntu", "~": "/home/ubuntu"}
CONFIGS = ("cluster.yaml", "cluster.onprem.yaml")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _prepare(raw: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    return _prepare(raw)


@pytest.fixture(scope="module", params=CONFIGS)
def each(request) -> dict:
    """Each cluster config, prepared and validated as `ray up` does."""
    return _prepare(yaml.safe_load((ROOT / request.param).read_text()))


def validate(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def commands(config: dict, key: str) -> list[str]:
    return [" ".join(c.split()) for c in config[key]]


def substitute(cmd: str) -> str:
    for k, v in FAKE_ENV.items():
        cmd = cmd.replace(k, v)
    return cmd


def cli_args(cmds: list[str], program: str) -> list[str]:
    """The arguments of the one ``<program> ...`` invocation in ``cmds`` (shell variables
    replaced by plausible values; the invocation ends at a redirection, ``&`` or ``;``)."""
    found = []
    for cmd in cmds:
        for m in re.finditer(rf"(?:^|[;&|(]\s*|nohup\s+){re.escape(program)}\s+([^;&<>|]*)", substitute(cmd)):
            found.append(shlex.split(m.group(1)))
    assert len(found) == 1, f"expected one `{program}` in {cmds}"
    return found[0]


def test_validates_against_rays_schema(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"
    gpu = prepared["available_node_types"]["gpu_worker"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU family
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= prepared["max_workers"]
    assert prepared["available_node_types"]["head"]["resources"] == {"CPU": 0}  # trials on workers


@pytest.mark.parametrize("where", ["top", "node_type", "provider_type"])
def test_a_broken_copy_is_rejected(raw, where):
    """The validation can fail: an unknown key (a typo) or a wrong type is refused."""
    import jsonschema

    broken = copy.deepcopy(raw)
    if where == "top":
        broken["max_worker"] = 4  # typo of max_workers
        match = "max_worker"
    elif where == "node_type":
        broken["available_node_types"]["gpu_worker"]["min_worker"] = 1
        match = "min_worker"
    else:
        broken["max_workers"] = "four"
        match = "four"
    with pytest.raises(jsonschema.ValidationError, match=match):
        validate(broken)


def test_the_on_prem_config_is_a_local_provider_one(each):
    if each["provider"]["type"] != "local":
        pytest.skip("the AWS config")
    assert each["provider"]["head_ip"] and len(each["provider"]["worker_ips"]) == 2
    # Ray's local provider keeps every listed worker: one node type, min = max = the addresses.
    (node_type,) = each["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == 2
    assert each["file_mounts"] == {"~/ssl-sweeps": "."} and ".venv" in each["rsync_exclude"]


def test_nothing_listens_on_a_public_interface(each):
    every = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                           "head_start_ray_commands", "worker_start_ray_commands")
             for c in commands(each, key)] + [HEAD_SERVICES.read_text()]
    assert not any("0.0.0.0" in c for c in every)
    assert "listen_addresses=127.0.0.1" in HEAD_SERVICES.read_text()  # PostgreSQL: the head's loopback
    head = commands(each, "head_start_ray_commands")
    from ray.scripts.scripts import start

    ctx = start.make_context("ray start", cli_args(head, "ray start"))
    assert ctx.params["head"] and ctx.params["dashboard_host"] == "127.0.0.1"
    assert ctx.params["port"] == 6379
    assert ctx.params["num_cpus"] == 0 or each["available_node_types"]["head"]["resources"] == {"CPU": 0}
    worker = start.make_context("ray start", cli_args(commands(each, "worker_start_ray_commands"),
                                                      "ray start"))
    assert worker.params["address"] == "10.0.0.5:6379"  # the head's private IP and GCS port


def test_the_head_keeps_the_records_and_every_node_points_at_them(each):
    """Both configs run head_services.sh on the head: PostgreSQL (MLflow's store and the Optuna
    studies) and one MLflow server on the head's address, whose port the workers' URI names."""
    from mlflow.cli import server

    head = commands(each, "head_setup_commands") + commands(each, "head_start_ray_commands")
    assert sum("sweeps/cluster/head_services.sh start" in c for c in head) == 1
    script = " ".join(HEAD_SERVICES.read_text().replace("\\\n", " ").split())
    args = cli_args([substitute(script.replace('"$ip"', "10.0.0.5").replace('"$MLFLOW_PORT"', "5000")
                               .replace('"$(db_url mlflow)"', "postgresql://sslsweeps@127.0.0.1:5433/mlflow"))],
                    '"${SSL_SWEEPS_VENV:?}/bin/mlflow" server')
    ctx = server.make_context("mlflow server", args)
    assert ctx.params["host"] == "10.0.0.5" and ctx.params["port"] == 5000
    assert ctx.params["backend_store_uri"].startswith("postgresql://") and "@127.0.0.1:" in ctx.params["backend_store_uri"]
    assert ctx.params["artifacts_destination"] == "/mnt/ssl-sweeps/mlflow-artifacts"  # shared storage
    assert re.search(r"MLFLOW_PORT=\$\{SSL_SWEEPS_MLFLOW_PORT:-5000\}", HEAD_SERVICES.read_text())
    (uri,) = [m for c in commands(each, "worker_setup_commands")
              for m in re.findall(r"MLFLOW_TRACKING_URI=(\S+?)\"?(?:\s|$)", substitute(c))]
    assert uri == "http://10.0.0.5:5000"
    assert "SSL_SWEEPS_OPTUNA_STORAGE=$(db_url optuna)" in HEAD_SERVICES.read_text()


def test_setup_installs_the_project_and_its_ray(prepared):
    import ray

    assert prepared["file_mounts"] == {"~/ssl-sweeps": "."}
    assert ".venv" in prepared["rsync_exclude"]
    setup = commands(prepared, "setup_commands")
    install = [c for c in setup if "pip install" in c and "-e ~/ssl-sweeps" in c]
    assert install, setup
    # `ray up` needs the cluster to run the Ray the laptop runs.
    assert f'"ray[default]=={ray.__version__}"' in install[0]
    # merged by prepare_config: the common setup runs on both node types
    assert prepared["head_setup_commands"][: len(setup)] == prepared["setup_commands"]
    assert prepared["worker_setup_commands"][: len(setup)] == prepared["setup_commands"]


def test_tune_storage_is_the_shared_mount(prepared, monkeypatch):
    """Every node exports SSL_SWEEPS_HOME=<the NFS/EFS mount>, so run.py's default storage
    (<home>/tune) is shared and a trial can resume on another node from its checkpoint."""
    from sweeps.run import default_home

    setup = commands(prepared, "setup_commands")
    (home,) = [m for c in setup for m in re.findall(r"export SSL_SWEEPS_HOME=(\S+?)'", c)]
    assert any("mount -t nfs4" in c and "$SSL_SWEEPS_HOME" in c for c in setup)
    monkeypatch.setenv("SSL_SWEEPS_HOME", home)
    assert default_home() == Path(home)
    assert any("RAY_AUTH_MODE=token" in c for c in setup)


def test_every_node_reads_datasets_from_the_shared_folder(each):
    """SSL_SWEEPS_DATA is exported under the shared SSL_SWEEPS_HOME on every node: a trial on a
    worker finds the files the driver checked (and downloaded) on the head."""
    setup = " ".join(commands(each, "setup_commands"))
    assert "SSL_SWEEPS_DATA=$SSL_SWEEPS_HOME/data" in setup
