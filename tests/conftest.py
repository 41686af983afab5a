"""Shared test settings. One intra-op thread: the models in tests are tiny, and on a 2-core
machine extra threads cost more in synchronisation than they gain (5-8x slower measured)."""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_flush_to_zero():
    """Each test starts as a fresh process does: a test that trained in-process set the thread's
    flush-to-zero flag (trainables.driver.flush_denormals), under which float("1e-320") parses
    as 0.0 -- a subnormal input would then read as zero."""
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def ram_dir(tmp_path_factory):
    """A scratch folder in RAM where possible: SQLite's fsync per MLflow call makes a store on
    disk ~5x slower."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else \
        tmp_path_factory.mktemp("store")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)``: a folder under the test's tmp_path with a tmpfs of ``size`` ("1m", "1g")
    of the test's own mounted on it (a disk that fills), unmounted after the test; skips when
    not root (mounting needs it)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(size: str):
        disk = tmp_path / f"disk{len(mounted) or ''}"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
        mounted.append(disk)
        return disk

    try:
        yield mount
    finally:
        for disk in mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)
