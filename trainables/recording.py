"""How results are recorded, wherever they land (metric rows, checkpoints, result.json, MLflow,
sweep.json): a number as a plain Python value at float32's precision, an exception as one line,
a file written whole or not at all.

Defined once, here at the bottom of the import chain, because the training driver needs them for
its own rows and checkpoints; sweeps and analysis reach them through sweeps/schema.py, the
record schema.
"""
from __future__ import annotations

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
