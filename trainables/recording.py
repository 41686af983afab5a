"""How results are recorded, wherever they land (metric rows, checkpoints, result.json, MLflow,
sweep.json): a number as a plain Python value at float32's precision, an exception as one line,
a file written whole or not at all.

Defined once, here at the bottom of the import chain, because the training driver needs them for
its own rows and checkpoints; sweeps and analysis reach them through sweeps/schema.py, the
record schema.
"""
from __future__ import annotations

import errno
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable

SIGNIFICANT_DIGITS = 7  # float32's precision: the digits past it are the binary expansion's noise


def plain(v: Any, rounded: bool = True) -> Any:
    """A value as a record holds it: numpy / 0-d tensor scalars as Python numbers, finite floats
    to 7 significant digits -- torch computes in float32, whose 0.93 widens to 0.9300000071525574
    and whose mean of 0.61 and 0.79 to 0.7000000178813934; nothing finer was ever computed, so
    0.93 and 0.7 are the values. Integers, bools, strings and non-finite floats stay as they are;
    ``rounded=False`` keeps every digit (a config's values: its identity)."""
    v = v.item() if hasattr(v, "item") else v
    if rounded and isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.{SIGNIFICANT_DIGITS}g}")
    return v


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """``plain`` on every value of a row (checkpoints hold plain values only)."""
    return {k: plain(v) for k, v in row.items()}


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def error_line(e: BaseException) -> str:
    """An exception as one line with its type, as trials record it: ``NonFiniteLoss: ...``."""
    return f"{type(e).__name__}: {first_line(e)}"[:500]


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a full quota


def disk_full(e: BaseException | str) -> bool:
    """``e`` (an exception, or the line that reports one) says the disk or the quota is full."""
    if isinstance(e, OSError) and e.errno in NO_SPACE:
        return True
    return any(os.strerror(n) in str(e) for n in NO_SPACE)


def write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a file beside it (named for this
    process and thread, so concurrent writers never share one), which then replaces ``path``. A
    process killed mid-write leaves the old file, never half a new one. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """``write_atomic`` of a text file."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


# File systems that hold no files a run could write (the kernel's views and pseudo file systems):
# root passes os.access there, and a write fails only once the run has trained.
SPECIAL_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore",
    "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "binfmt_misc", "efivarfs", "selinuxfs", "nsfs",
    "rpc_pipefs", "autofs"})


def filesystem_type(path: Path) -> str | None:
    """The type of the file system that holds ``path`` (or would: its nearest existing folder),
    from /proc/self/mountinfo; None where the system does not say."""
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    real = os.path.realpath(p)
    best, kind = "", None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        mount = fields[4].encode().decode("unicode_escape")  # spaces are written \040
        fstype = fields[fields.index("-", 6) + 1]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def special_filesystem(path: Path) -> str | None:
    """Why ``path`` cannot hold a run's files -- it is on a special file system (/proc, /sys,
    /dev, ...) -- or None."""
    kind = filesystem_type(path)
    return f"{path} is on a {kind} file system, which holds no files" if kind in SPECIAL_FILESYSTEMS else None
