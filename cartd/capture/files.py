"""Durable file primitives shared by the capture writers: append-only files and atomic replaces.

Architecture rule 5 ("nothing is lost") in three small tools:

- `AppendOnlyFile`: records are buffered in memory by `append()` (cheap, no system call) and
  written and fsynced together by `flush()`, one batch at a time. A flush that fails (disk full,
  read-only remount, quota) cuts the file back to what the last good flush left and keeps the
  batch in memory, so the file never ends in half a record and the batch can be retried.
- `replace_durably()`: rename and fsync the directory, so the new name survives a power cut.
- `write_file_atomically()`: temporary file in the same directory, fsync, rename, fsync directory.

Every function raises `OSError` to its caller; deciding what a failure means is the recorder's job.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

# A temporary file written next to its final name (same directory, so the rename is atomic).
TEMPORARY_SUFFIX = ".tmp"


class AppendOnlyFile:
    """A file that only grows, in whole records; see the module docstring.

    The file is opened (and created) by the first `flush()`, so an object can collect records
    before its directory exists, for example while the state directory is unwritable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # Length of the file after the last flush that succeeded: never a torn record.
        self._durable_size = 0
        # A write failed and cutting the file back failed too: cut it before writing again.
        self._tail_may_be_torn = False

    @property
    def pending_records(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def append(self, record: bytes) -> None:
        self._pending.append(record)
        self._pending_bytes += len(record)

    def flush(self) -> None:
        """Write every pending record and fsync; on `OSError` the file is as it was before."""
        fd = self._open()
        if self._tail_may_be_torn:
            os.ftruncate(fd, self._durable_size)
            os.fsync(fd)
            self._tail_may_be_torn = False
        if not self._pending:
            return
        batch = b"".join(self._pending)
        try:
            _write_all(fd, batch)
            os.fsync(fd)
        except OSError:
            self._cut_back(fd)
            raise
        self._durable_size += len(batch)
        self._pending.clear()
        self._pending_bytes = 0

    def close(self) -> None:
        """Flush, then close; the descriptor is closed even when the flush fails."""
        try:
            self.flush()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close without writing what is pending (it is dropped). Never raises."""
        self._pending.clear()
        self._pending_bytes = 0
        if self._fd is not None:
            # The data that matters was fsynced by flush(); a failing close() changes nothing.
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                self._durable_size = os.fstat(fd).st_size
                # The new name must survive a power cut as well as the data written under it.
                fsync_directory(self.path.parent)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _cut_back(self, fd: int) -> None:
        """After a failed write: drop whatever part of the batch reached the file."""
        try:
            os.ftruncate(fd, self._durable_size)
        except OSError:
            # Typically a read-only remount; the next flush (or recovery on restart) cuts it.
            self._tail_may_be_torn = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories_durably(path: Path) -> None:
    """`mkdir -p`, fsyncing the parent of every directory it creates."""
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not directory.is_dir():  # else another writer made it meanwhile: fine
                # "Not a directory" says what is wrong more plainly than "File exists".
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)
                ) from None
        fsync_directory(directory.parent)


def replace_durably(source: Path, destination: Path) -> None:
    """Rename `source` over `destination` and make the rename itself durable."""
    os.replace(source, destination)
    fsync_directory(destination.parent)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a mixture."""
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    os.close(fd)
    try:
        replace_durably(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
