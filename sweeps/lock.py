"""One live driver per sweep, and stores created by one process at a time.

``SweepLock`` is a file in the sweep's experiment folder (``driver.lock``), created exclusively
(``O_CREAT | O_EXCL``: atomic on a local file system and on NFS v3 and later, so it holds
across hosts that share the storage) and held for the sweep's lifetime. It says who holds it --
host, boot id, pid, the process's start time, since when, the command -- and its holder
touches it every ``HEARTBEAT_S`` seconds. Another driver (``--resume`` typed in a second
shell, a job resubmitted on another host) finds it held and stops with one line naming the
holder. A lock is stale, and taken over, when:

- it was taken on this host (same host name and boot id) and its process is gone, or the pid
  now names another process (another start time);
- it was taken on this host before it rebooted (same host name, another boot id);
- it was taken on another host and not touched for ``STALE_S`` seconds, by the storage's own
  clock (a file created there now), so clocks that disagree between hosts do not matter.

A pid says nothing on another host (hosts of one cluster have their own pid namespaces), so a
lock of another host is judged by its heartbeat only. Two drivers that find a lock stale at
once break it under a second, short-lived lock file, and then race for the lock itself as
before: one wins.

``store_lock`` serialises the first use of a store file (an MLflow or Optuna SQLite database,
whose tables a first user creates) across processes: ``fcntl.flock`` on a file beside it.
Nothing here imports Ray.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 10.0  # the holder touches its lock this often
STALE_S = 120.0  # a lock of another host untouched this long is stale
BREAK_STALE_S = 30.0  # a break lock (held for milliseconds) older than this was left by a killed process


class SweepLocked(RuntimeError):
    """The sweep is held by a live driver: one line naming it."""


def boot_id() -> str:
    """This kernel's boot id ('' where the system does not say)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), None when unknown; a pid
    reused by another process has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ')' may hold spaces


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def storage_now(folder: Path) -> float:
    """The time by the clock of the file system holding ``folder`` (a file created there now)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".clock-")
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(name)


def _read(path: Path) -> dict[str, Any] | None:
    """The holder a lock file names; None when it is gone, {} when it cannot be read (a holder
    killed between creating and writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    with os.fdopen(fd) as f:
        try:
            holder = json.loads(f.read())
        except ValueError:
            return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    """'pid 1234 on host h since 2026-12-04T10:00:00' (or what is known of it)."""
    if not holder:
        return "a driver that is starting (its lock file is still empty)"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"


class SweepLock:
    """The lock of one sweep folder (see the module docstring)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        return _read(self.path)

    def stale(self, holder: dict[str, Any]) -> str | None:
        """Why ``holder``'s lock is stale, or None when its driver may be alive."""
        try:
            age = storage_now(self.folder) - os.lstat(self.path).st_mtime
        except FileNotFoundError:
            return "released"
        if not holder:
            return f"an empty lock file {age:.0f} s old" if age > BREAK_STALE_S else None
        if holder.get("host") == socket.gethostname() and holder.get("boot_id") == boot_id():
            pid = holder.get("pid")
            if not isinstance(pid, int) or not process_alive(pid):
                return f"its driver (pid {pid}) is gone"
            if holder.get("started") is not None and process_start(pid) != holder.get("started"):
                return f"pid {pid} is another process now"
            return None
        if holder.get("host") == socket.gethostname():
            return "its host rebooted since"
        if age > STALE_S:
            return f"no heartbeat from host {holder.get('host')} for {age:.0f} s"
        return None

    def acquire(self, what: str = "sweep") -> str | None:
        """Take the lock, or raise SweepLocked naming its live holder. Returns why a stale lock
        was taken over (None when there was none)."""
        took_over = None
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released meanwhile: try again
                why = self.stale(holder)
                if why is None:
                    raise SweepLocked(f"{what} {self.folder.name} is running: {describe(holder)} holds {self.path}; "
                                      f"wait for it to end, or stop that driver first") from None
                self._break(holder)
                took_over = why
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"host": socket.gethostname(), "boot_id": boot_id(), "pid": os.getpid(),
                                    "started": process_start(os.getpid()), "token": self.token,
                                    "since": datetime.now().isoformat(timespec="seconds"),
                                    "command": " ".join(sys.argv)[:300]}))
                f.flush()
                os.fsync(f.fileno())
            self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat", daemon=True)
            self._thread.start()
            return took_over
        raise SweepLocked(f"{what} {self.folder.name}: could not take {self.path} (other drivers keep taking it)")

    def _break(self, seen: dict[str, Any]) -> None:
        """Remove a stale lock, unless another driver took or broke it meanwhile."""
        brk = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(brk, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if storage_now(self.folder) - os.lstat(brk).st_mtime > BREAK_STALE_S:
                    os.unlink(brk)
            time.sleep(0.2)
            return
        try:
            if self.holder() == seen:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(fd)
            os.unlink(brk)

    def held(self) -> bool:
        return (self.holder() or {}).get("token") == self.token

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self.held():
                    return
                os.utime(self.path)
            except OSError:
                pass  # a full or unreachable file system: the next beat tries again

    def release(self) -> None:
        """Give the lock back (only ours: a lock another driver took over stays)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError):
            if self.held():
                os.unlink(self.path)


@contextlib.contextmanager
def store_lock(path: Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (beside a store file such as mlflow.db) while
    the block runs: the first user of a new store creates its tables alone."""
    import fcntl

    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def first_use(url: str, create: Callable[[], T], attempts: int = 4) -> T:
    """``create()`` -- the first use of the store at ``url``, which may create its tables -- such
    that two processes doing it at once both succeed: for a SQLite file under ``store_lock``; for a
    database server (whose 'table exists? create it' is two steps) by trying again."""
    if url.startswith("sqlite:///"):
        with store_lock(Path(url[len("sqlite:///"):].split("?", 1)[0])):
            return create()
    for attempt in range(attempts):
        try:
            return create()
        except Exception:  # noqa: BLE001 -- another process created it meanwhile: once more finds it
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
