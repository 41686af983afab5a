"""Shared test settings. One intra-op thread: the models in tests are tiny, and on a 2-core
machine extra threads cost more in synchronisation than they gain (5-8x slower measured)."""
import pytest
import torch

torch.set_num_threads(1)


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
