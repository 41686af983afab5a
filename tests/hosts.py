"""Several hosts on this machine, for the tests that need real machines: the on-premises Ray
cluster (tests/test_cluster_onprem.py) and Slurm (tests/test_slurm.py).

A host is a set of Linux namespaces: its own network namespace with one address on a private
bridge, its own PID namespace (``ray stop`` or a host kill reaches only that host's processes),
its own hostname, its own ``/tmp`` and ``/dev/shm``, and its own ``/root`` -- an overlay of this
machine's ``/root`` whose writes stay with the host (``~/.bashrc``, ``~/ray_bootstrap_*``, the
synced repository). Everything else of the file system is shared, as an NFS mount would be:
the tests put the sweeps' shared storage there. Each host can run an ``sshd`` that takes a key
the test generates (``Hosts.ssh_keys``), on its own address only.

Rules kept here (docs/cluster.md, "Tests"): traffic goes only to loopback and to addresses of
the namespaces made here -- no default route, so nothing else is reachable; every wait is
bounded; ``close()`` removes the namespaces, the bridge, every process of every host and the
folders, and it runs on success and on failure (use ``with Hosts(...) as hosts``).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class HostsUnavailable(RuntimeError):
    """This machine cannot make namespace hosts (not root, no ``ip``/``unshare``/overlay): one line."""


def unavailable_reason() -> str | None:
    """Why namespace hosts cannot be made here, in one line, or None when they can."""
    if os.geteuid() != 0:
        return "namespace hosts need root (ip netns, unshare, mount)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"namespace hosts need {tool} (Debian: iproute2 / util-linux)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "namespace hosts need the overlay file system"
    probe = f"sslp{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def private_tmp(folder: Path, keep: list[Path] = ()) -> str:
    """A shell snippet (for a fresh mount namespace) that puts ``folder`` over /tmp while the
    paths in ``keep`` that live under /tmp -- this checkout, its venv, when CI clones into /tmp --
    stay where they are, bind-mounted into the new /tmp."""
    steps = []
    for path in keep:
        path = Path(path).resolve()
        if path.is_relative_to("/tmp") and path != Path("/tmp"):
            inner = folder / path.relative_to("/tmp")
            steps.append(f"mkdir -p {inner} && mount --bind {path} {inner}")
    return " && ".join([*steps, f"mount --rbind {folder} /tmp"])  # rbind: with the binds inside


def visible_everywhere() -> list[Path]:
    """What every host and the laptop must see at its own path: this checkout and the venv the
    tests run in (used as the hosts' venv)."""
    import sys

    return [Path(__file__).resolve().parent.parent, Path(sys.prefix)]


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no interface or route of this machine uses (MLflow's server
    admits 10.* hosts by default)."""
    used = _run("ip", "-4", "-o", "addr").stdout + _run("ip", "-4", "route").stdout
    taken = [ipaddress.ip_network(tok, strict=False) for tok in used.split() if "/" in tok and tok[0].isdigit()]
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(250) + 1}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise HostsUnavailable("no free /24 in 10.0.0.0/8 for the test hosts")


@dataclass
class Host:
    name: str
    address: str
    netns: str
    folder: Path  # the host's private state: its /root overlay layers, /tmp
    init_pid: int | None = None  # PID (in this machine's namespace) of the host's init

    @property
    def upper_root(self) -> Path:
        """What the host wrote under /root (the overlay's upper layer)."""
        return self.folder / "root-upper"


class Hosts:
    """``names`` hosts on one private bridge, addresses .1, .2, ... of a free 10.x.y.0/24; this
    machine (the "laptop") is .254 on the bridge. ``sshd=True`` starts an sshd on each."""

    def __init__(self, names: list[str], sshd: bool = True, base: Path | None = None):
        self.tag = secrets.token_hex(2)
        self.base = Path(tempfile.mkdtemp(prefix=f"ssl-hosts-{self.tag}-", dir=base or "/var/tmp"))
        self.base.chmod(0o755)  # other users of a host (postgres, slurm, munge) traverse it
        self.names, self.want_sshd = names, sshd
        self.bridge = f"sslbr{self.tag}"
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.laptop_address = str(hosts[253])
        self.hosts = {n: Host(n, str(hosts[i]), f"ssl{self.tag}-{n}", self.base / "hosts" / n)
                      for i, n in enumerate(names)}
        self.ssh_key = self.base / "id_ed25519"
        self._made_netns: list[str] = []
        self._made_veths: list[str] = []
        self._made_bridge = False

    # -- set up and tear down --------------------------------------------------------------
    def __enter__(self) -> "Hosts":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        _run("ip", "addr", "add", f"{self.laptop_address}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        if self.want_sshd:
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ssl-sweeps-test", "-f", str(self.ssh_key))
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.base / "host_key"))
            shutil.copy(self.ssh_key.with_suffix(".pub"), self.base / "authorized_keys")
            (self.base / "authorized_keys").chmod(0o600)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
        for host in self.hosts.values():
            self._make(host)
        if self.want_sshd:
            for host in self.hosts.values():
                self.wait_port(host.address, 22, timeout=30, what=f"sshd on {host.name}")

    def _make(self, host: Host) -> None:
        _run("ip", "netns", "add", host.netns)
        self._made_netns.append(host.netns)
        veth = f"sv{self.tag}{len(self._made_netns)}"
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        self._made_veths.append(veth)
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        _run("ip", "-n", host.netns, "link", "set", "lo", "up")
        for d in ("root-upper", "root-work", "tmp"):
            (host.folder / d).mkdir(parents=True)
        (host.folder / "tmp").chmod(0o1777)
        if self.want_sshd:
            config = host.folder / "sshd_config"
            config.write_text("\n".join([
                f"ListenAddress {host.address}", "Port 22", f"HostKey {self.base / 'host_key'}",
                f"AuthorizedKeysFile {self.base / 'authorized_keys'}", "PermitRootLogin prohibit-password",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
                "PidFile none", "MaxStartups 100:30:200", "MaxSessions 100", "AcceptEnv LANG LC_*", ""]))
            init = ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)]
        else:
            init = ["sleep", "infinity"]
        log = open(host.folder / "init.log", "ab")
        # The host's init: a PID namespace of its own (--fork: the child is its PID 1), its own
        # mounts (/root overlay, /tmp, /dev/shm, /proc) and hostname, then sshd (or a sleeper).
        setup = (f"mount -t overlay overlay -o lowerdir=/root,upperdir={host.folder}/root-upper,"
                 f"workdir={host.folder}/root-work /root && {private_tmp(host.folder / 'tmp', visible_everywhere())} && "
                 f"mount -t tmpfs -o size=8g tmpfs /dev/shm && hostname {host.name} && exec \"$@\"")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--pid", "--fork", "--mount-proc", "--mount",
             "--uts", "--propagation", "private", "sh", "-c", setup, "sh", *init],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        host.init_pid = self._find_init(host, proc)

    def _find_init(self, host: Host, proc: subprocess.Popen, timeout: float = 10) -> int:
        """The PID of the host's PID 1 (the child ``unshare --fork`` made), as this machine sees it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for pid in self.pids(host.name):
                status = Path(f"/proc/{pid}/status")
                try:
                    nspid = [ln for ln in status.read_text().splitlines() if ln.startswith("NSpid:")]
                except OSError:
                    continue
                if nspid and nspid[0].split()[-1] == "1":
                    return pid
            if proc.poll() is not None:
                raise RuntimeError(f"host {host.name} did not start: "
                                   f"{(host.folder / 'init.log').read_text(errors='replace').strip()}")
            time.sleep(0.05)
        raise RuntimeError(f"host {host.name}: no init process after {timeout} s")

    def close(self) -> None:
        """Kill every process of every host, remove the namespaces, the bridge and the folders."""
        for host in self.hosts.values():
            if host.netns in self._made_netns:
                self.kill(host.name)
        for veth in self._made_veths:  # (a namespace's end goes with it, but only once it is freed)
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
        self._made_veths = []
        for ns in self._made_netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made_netns = []
        if self._made_bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            self._made_bridge = False
        shutil.rmtree(self.base, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this object's namespaces, links and folders still exists (after ``close``: none)."""
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        left = [h.netns for h in self.hosts.values() if h.netns in netns.split()]
        left += [name for name in [self.bridge] if f" {name}:" in links or f" {name}@" in links]
        left += [f"link sv{self.tag}*" for _ in [0] if f" sv{self.tag}" in links]
        return left + ([str(self.base)] if self.base.exists() else [])

    # -- using the hosts -------------------------------------------------------------------
    def pids(self, name: str) -> list[int]:
        """Every process of host ``name`` (this machine's PIDs)."""
        out = subprocess.run(["ip", "netns", "pids", self.hosts[name].netns], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def processes(self, name: str) -> list[str]:
        """The command lines of host ``name``'s processes."""
        lines = []
        for pid in self.pids(name):
            try:
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
            except OSError:
                pass
        return lines

    def kill(self, name: str, timeout: float = 15) -> None:
        """Power the host off: SIGKILL its init, which takes every process of its PID namespace
        with it (then anything left in its network namespace)."""
        host = self.hosts[name]
        if host.init_pid:
            try:
                os.kill(host.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + timeout
        while time.time() < deadline:
            left = self.pids(name)
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"host {name}: processes {self.pids(name)} survived SIGKILL for {timeout} s")

    def exec(self, name: str, argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` inside host ``name`` (all its namespaces, as its sshd would)."""
        pid = self.hosts[name].init_pid
        return subprocess.run(["nsenter", "-t", str(pid), "-n", "-p", "-m", "-u", "--", *argv],
                              capture_output=True, text=True, timeout=timeout, **kw)

    def spawn(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` in the background inside host ``name`` (a daemon of that host: slurmd,
        munged), its output appended to ``log``. It is one of the host's processes, so ``kill``
        and ``close`` end it with the host."""
        pid = self.hosts[name].init_pid
        with open(log, "ab") as out:
            return subprocess.Popen(["nsenter", "-t", str(pid), "-n", "-p", "-m", "-u", "--", *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)

    def ssh_command(self, name: str) -> list[str]:
        return ["ssh", "-i", str(self.ssh_key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
                f"root@{self.hosts[name].address}"]

    def ssh(self, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.ssh_command(name), command], capture_output=True, text=True, timeout=timeout)

    @staticmethod
    def wait_port(address: str, port: int, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection((address, port), timeout=2).close()
                return
            except OSError as e:
                if time.time() > deadline:
                    raise TimeoutError(f"{what}: {address}:{port} not answering after {timeout} s ({e})") from None
                time.sleep(0.2)
