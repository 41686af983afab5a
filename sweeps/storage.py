"""The sweep's storage as Ray Tune writes it: every file whole or not at all.

Tune copies each checkpoint, its experiment state and each trial's logs into the storage folder
with ``pyarrow.fs.copy_files``, which writes the destination in place: a full disk, or a driver
killed mid-copy, leaves a truncated file under its real name -- a checkpoint that cannot be
loaded, an experiment state that cannot be parsed. ``atomic_filesystem()`` is the local file
system for ``RunConfig(storage_filesystem=...)`` in which every file opened for writing is a
temporary file beside its destination, renamed over it once it is written and synced: a write
that fails (ENOSPC) removes it and raises, so the file keeps its previous content or does not
exist. A process killed mid-write leaves only the temporary file (``.<name>.<random>.tmp``),
which ``remove_leftovers`` clears when the sweep resumes. Renames are atomic on a local file
system and on NFS, where a cluster's storage lives.

Ray runs this in its workers too (a trial persists its own checkpoints): the class is pickled by
reference and imported there from this module.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pyarrow
import pyarrow.fs

TMP_SUFFIX = ".tmp"


class AtomicFile(io.RawIOBase):
    """A file written to a temporary name, renamed to ``path`` when closed after no failure."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)  # as pyarrow's local file system does
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=TMP_SUFFIX)
        os.fchmod(fd, 0o644)  # as a file made under the usual umask (mkstemp's is 0600)
        self.file = os.fdopen(fd, "wb")
        self.failed = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except BaseException:
            self._discard()  # now: pyarrow does not close a stream whose write failed
            raise

    def _discard(self) -> None:
        if not self.failed:
            self.failed = True
            try:
                self.file.close()  # flushing what is buffered may fail the same way: discarded anyway
            except OSError:
                pass
            finally:
                os.unlink(self.tmp)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.failed:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                os.replace(self.tmp, self.path)
        except BaseException:
            self._discard()
            raise
        finally:
            super().close()


class AtomicLocalHandler(pyarrow.fs.FileSystemHandler):
    """pyarrow's local file system, with every output stream an ``AtomicFile``."""

    def __init__(self):
        self.local = pyarrow.fs.LocalFileSystem()

    def __reduce__(self):
        return AtomicLocalHandler, ()

    def __eq__(self, other) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "local-atomic"

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the root folder")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        with self.local.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while chunk := source.read(1 << 24):
                target.write(chunk)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pyarrow.PythonFile(AtomicFile(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path)


def atomic_filesystem() -> pyarrow.fs.PyFileSystem:
    """The local file system in which every file is written whole or not at all."""
    return pyarrow.fs.PyFileSystem(AtomicLocalHandler())


def remove_leftovers(folder: Path) -> int:
    """Remove the temporary files killed writers left under ``folder`` (``AtomicFile``'s and
    ``write_atomic``'s, both ending ``.tmp``; symbolic links are not followed). Returns how many."""
    n = 0
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if name.endswith(TMP_SUFFIX) and not path.is_symlink():
                path.unlink()
                n += 1
    return n
