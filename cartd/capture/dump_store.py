"""A crash dump being read from a target: a resumable partial dump, then one atomic finalisation.

Reading a dump can take hours over a serial link, so what has been read must survive a daemon
restart. While the dump NAME.dmp is read, two files sit next to it:

- ``NAME.dmp.partial`` is laid out like a full dump: 0x2000 bytes for the header (left zero until
  `finalize`), then a 4096-byte slot for every page of every physical memory run, back to back, in
  run order (which is PFN order, as runs are ascending). It is created sparse, so slots not yet
  written take no disk; that needs a filesystem with sparse files (ext4, xfs, btrfs, tmpfs).
- ``NAME.dmp.progress`` is UTF-8 JSON::

      {"format": "cartd-dump-progress", "version": 1,
       "header": {<every DumpHeader field; context and exception_record as hex,
                   physical_memory_runs as [[base_page, page_count], ...]>},
       "present": "<base64 of a bitmap, LSB first: bit i = page slot i has been written>"}

  It is replaced atomically (temporary file, fsync, rename, fsync of the directory) and only after
  the partial file has been fsynced, so it never claims a page that is not on disk; pages written
  since the last `flush` are simply read again after a restart.

`finalize` turns the pair into NAME.dmp, which appears only complete: with every page present the
real header (DumpType 1) is written into the partial file, which is fsynced and renamed (no copy);
otherwise a bitmap dump (DumpType 5) of the present pages is written to ``NAME.dmp.tmp``, fsynced
and renamed. Then the partial and progress files are removed.

After a crash, `PartialDump.open` removes what an unfinished atomic write left (``*.tmp``) and
resumes; if NAME.dmp already exists, a finalisation was cut short after its rename, so it removes
the leftovers and raises `DumpAlreadyFinalizedError`. One process writes a partial dump at a time.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import json
import os
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cartd.capture.dump_file import (
    HEADER_SIZE,
    PAGE_SIZE,
    DumpHeader,
    DumpType,
    bitmap_dump_size,
    encode_header,
    encode_summary,
    full_dump_size,
)
from cartd.capture.files import (
    TEMPORARY_SUFFIX,
    fsync_directory,
    replace_durably,
    write_file_atomically,
)

PARTIAL_SUFFIX = ".partial"
PROGRESS_SUFFIX = ".progress"
_PROGRESS_FORMAT = "cartd-dump-progress"
_HEADER_FIELDS = frozenset(field.name for field in dataclasses.fields(DumpHeader))
_BYTES_FIELDS = frozenset({"context", "exception_record"})

# How much a bitmap finalisation copies per read and write: large enough that system calls do not
# dominate, small enough to be nothing next to the daemon's memory.
_COPY_CHUNK = 1 << 20


class DumpProgressError(Exception):
    """A partial dump cannot be resumed: its progress file or data file is missing, unreadable,
    or the two do not match. `discard_partial_dump` removes what is left of it."""


class DumpAlreadyFinalizedError(Exception):
    """The dump was finalized already (a restart found it complete); its leftovers are gone."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FinalizedDump:
    path: Path
    dump_type: DumpType
    pages: int  # pages in the file
    size: int  # bytes, equal to the header's RequiredDumpSpace


def partial_path(dump_path: Path) -> Path:
    return dump_path.with_name(dump_path.name + PARTIAL_SUFFIX)


def progress_path(dump_path: Path) -> Path:
    return dump_path.with_name(dump_path.name + PROGRESS_SUFFIX)


def _temporaries(dump_path: Path) -> tuple[Path, Path]:
    """What an interrupted bitmap finalisation and an interrupted progress write leave."""
    progress = progress_path(dump_path)
    return (
        dump_path.with_name(dump_path.name + TEMPORARY_SUFFIX),
        progress.with_name(progress.name + TEMPORARY_SUFFIX),
    )


def discard_partial_dump(dump_path: Path) -> None:
    """Remove every file of the partial dump for `dump_path` (the finished dump stays)."""
    for path in (partial_path(dump_path), progress_path(dump_path), *_temporaries(dump_path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    fsync_directory(dump_path.parent)


class PartialDump:
    """The partial dump for one NAME.dmp; see the module docstring. Not safe across threads.

    Made by `create` or `open`. After `finalize`, `discard` or `close` it refuses further use.
    """

    def __init__(self, dump_path: Path, header: DumpHeader, fd: int, present: bytearray) -> None:
        self._path = dump_path
        self._header = header
        self._fd: int | None = fd
        self._present = present
        self._pages_present = int.from_bytes(present, "little").bit_count()
        self._unflushed = False
        self._bases = [run.base_page for run in header.physical_memory_runs]
        self._first_slots: list[int] = []
        slot = 0
        for run in header.physical_memory_runs:
            self._first_slots.append(slot)
            slot += run.page_count
        # Its length never changes: fixed fields and a bitmap of fixed length.
        self._progress_size = len(self._encode_progress())

    @classmethod
    def create(cls, dump_path: Path, header: DumpHeader) -> PartialDump:
        """Start a new partial dump; FileExistsError if the dump or any file of it exists."""
        partial = partial_path(dump_path)
        for path in (dump_path, partial, progress_path(dump_path)):
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "the dump already exists", str(path))
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            # Sparse: the pages' slots take disk only once written. open() checks this size.
            os.ftruncate(fd, full_dump_size(header))
            os.fsync(fd)
            dump = cls(dump_path, header, fd, bytearray(-(-header.total_pages // 8)))
            # Also fsyncs the directory, which makes the partial file's name durable.
            write_file_atomically(progress_path(dump_path), dump._encode_progress())
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        return dump

    @classmethod
    def open(cls, dump_path: Path) -> PartialDump:
        """Resume the partial dump for `dump_path` after a restart."""
        progress = progress_path(dump_path)
        if os.path.lexists(dump_path):
            discard_partial_dump(dump_path)
            raise DumpAlreadyFinalizedError(f"{dump_path} is complete; nothing to resume")
        for temporary in _temporaries(dump_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        try:
            text = progress.read_bytes()
        except FileNotFoundError:
            raise DumpProgressError(f"{progress} is missing: the dump cannot be resumed") from None
        header, present = _decode_progress(text, progress)
        partial = partial_path(dump_path)
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DumpProgressError(f"{partial} is missing: the dump cannot be resumed") from None
        size = os.fstat(fd).st_size
        if size != full_dump_size(header):
            os.close(fd)
            raise DumpProgressError(
                f"{partial} is {size} bytes, its progress file says {full_dump_size(header)}"
            )
        return cls(dump_path, header, fd, present)

    @property
    def path(self) -> Path:
        """Where `finalize` puts the dump."""
        return self._path

    @property
    def header(self) -> DumpHeader:
        return self._header

    @property
    def total_pages(self) -> int:
        return self._header.total_pages

    @property
    def pages_present(self) -> int:
        """Pages written so far, flushed or not."""
        return self._pages_present

    @property
    def bytes_present(self) -> int:
        return self._pages_present * PAGE_SIZE

    def has_page(self, pfn: int) -> bool:
        """Whether the page has been written (False for a PFN outside every run)."""
        slot = self._slot(pfn)
        return slot is not None and self._is_present(slot)

    def missing_pages(self) -> Iterator[int]:
        """The PFNs not written yet, ascending: what a resumed dump still has to read."""
        slot = 0
        for run in self._header.physical_memory_runs:
            for pfn in range(run.base_page, run.end_page):
                if not self._is_present(slot):
                    yield pfn
                slot += 1

    def write_page(self, pfn: int, data: bytes) -> None:
        """Store one page; it counts as present at once, and survives a crash after `flush`."""
        fd = self._require_open()
        if len(data) != PAGE_SIZE:
            raise ValueError(f"a page is {PAGE_SIZE} bytes, not {len(data)}")
        slot = self._slot(pfn)
        if slot is None:
            raise ValueError(f"PFN {pfn:#x} is in none of the dump's physical memory runs")
        _pwrite_all(fd, data, HEADER_SIZE + slot * PAGE_SIZE)
        if not self._is_present(slot):
            self._present[slot >> 3] |= 1 << (slot & 7)
            self._pages_present += 1
        self._unflushed = True

    def flush(self) -> None:
        """Make every page written so far durable, then record them in the progress file."""
        fd = self._require_open()
        if not self._unflushed:
            return
        os.fsync(fd)
        write_file_atomically(progress_path(self._path), self._encode_progress())
        self._unflushed = False

    def bytes_needed_to_finish(self, pages_to_read: int | None = None) -> int:
        """Free disk space still needed, beyond what the dump's files take now, to read
        `pages_to_read` more pages (default: every missing one) and then `finalize`.

        Reading every page ends in a full dump: the pages fill the partial file's holes and the
        header is written into it. Anything less ends in a bitmap dump, a new file that exists
        next to the partial one until it is complete. Both count one more progress file, the
        temporary copy each `flush` writes.
        """
        missing = self.total_pages - self._pages_present
        to_read = missing if pages_to_read is None else pages_to_read
        if not 0 <= to_read <= missing:
            raise ValueError(f"{to_read} pages to read, but {missing} are missing")
        if to_read == missing:
            finishing = HEADER_SIZE
        else:
            finishing = bitmap_dump_size(self._header, self._pages_present + to_read)
        return to_read * PAGE_SIZE + finishing + self._progress_size

    def finalize(self) -> FinalizedDump:
        """Write the dump to `path` (full if every page is present, else bitmap) and remove the
        partial files. On OSError nothing is removed and the call can be repeated."""
        self._require_open()
        if self._pages_present == 0:
            # volatility3 refuses a dump without pages ("No Crash segments defined"), so such a
            # file would only look like a dump.
            raise ValueError(
                f"{self._path}: no page has been written, so there is no dump to finalize; "
                "discard() it instead"
            )
        if self._pages_present == self.total_pages:
            finished = self._finalize_full()
        else:
            finished = self._finalize_bitmap()
        self._close_fd()
        discard_partial_dump(self._path)
        return finished

    def discard(self) -> None:
        """Give the dump up: close and remove its partial files."""
        self._close_fd()
        discard_partial_dump(self._path)

    def close(self) -> None:
        """Flush and close, keeping the partial dump to resume later; closes even if the flush
        fails (the pages since the last good flush are then read again after `open`)."""
        try:
            if self._fd is not None:
                self.flush()
        finally:
            self._close_fd()

    def _finalize_full(self) -> FinalizedDump:
        fd = self._require_open()
        size = full_dump_size(self._header)
        _pwrite_all(fd, encode_header(self._header, DumpType.FULL, size), 0)
        os.fsync(fd)
        replace_durably(partial_path(self._path), self._path)
        return FinalizedDump(
            path=self._path, dump_type=DumpType.FULL, pages=self.total_pages, size=size
        )

    def _finalize_bitmap(self) -> FinalizedDump:
        source = self._require_open()
        header = self._header
        size = bitmap_dump_size(header, self._pages_present)
        temporary = _temporaries(self._path)[0]
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            offset = _pwrite_all(fd, encode_header(header, DumpType.BITMAP, size), 0)
            offset = _pwrite_all(fd, encode_summary(header, self._present_pfns()), offset)
            for first_slot, count in self._present_stretches():
                offset = _copy(source, HEADER_SIZE + first_slot * PAGE_SIZE, fd, offset, count)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        os.close(fd)
        replace_durably(temporary, self._path)
        return FinalizedDump(
            path=self._path, dump_type=DumpType.BITMAP, pages=self._pages_present, size=size
        )

    def _present_pfns(self) -> int:
        """The present pages as a PFN bitmap (bit n = PFN n), built a run at a time."""
        slots = int.from_bytes(self._present, "little")
        pfns = 0
        for run, first_slot in zip(
            self._header.physical_memory_runs, self._first_slots, strict=True
        ):
            in_run = (slots >> first_slot) & ((1 << run.page_count) - 1)
            pfns |= in_run << run.base_page
        return pfns

    def _present_stretches(self) -> Iterator[tuple[int, int]]:
        """(first slot, count) of every stretch of present slots, ascending; whole bytes of the
        bitmap are taken at once, so a mostly full or mostly empty dump is quick."""
        start = -1
        for byte_index, byte in enumerate(self._present):
            if byte in (0x00, 0xFF):
                if byte and start < 0:
                    start = byte_index * 8
                elif not byte and start >= 0:
                    yield start, byte_index * 8 - start
                    start = -1
                continue
            for bit in range(8):
                slot = byte_index * 8 + bit
                if byte >> bit & 1:
                    if start < 0:
                        start = slot
                elif start >= 0:
                    yield start, slot - start
                    start = -1
        if start >= 0:
            yield start, self.total_pages - start

    def _slot(self, pfn: int) -> int | None:
        run_index = bisect_right(self._bases, pfn) - 1
        if run_index < 0:
            return None
        run = self._header.physical_memory_runs[run_index]
        if pfn >= run.end_page:
            return None
        return self._first_slots[run_index] + pfn - run.base_page

    def _is_present(self, slot: int) -> bool:
        return bool(self._present[slot >> 3] & (1 << (slot & 7)))

    def _require_open(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self._path}: the partial dump is closed")
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            # Whatever mattered was fsynced; a failing close() changes nothing on disk.
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _encode_progress(self) -> bytes:
        # Tuples (the runs, the bugcheck parameters) become JSON arrays; DumpHeader takes lists.
        header: dict[str, Any] = {}
        for name in sorted(_HEADER_FIELDS):
            value = getattr(self._header, name)
            header[name] = value.hex() if name in _BYTES_FIELDS else value
        document = {
            "format": _PROGRESS_FORMAT,
            "version": 1,
            "header": header,
            "present": base64.b64encode(self._present).decode("ascii"),
        }
        return (json.dumps(document, indent=1) + "\n").encode("utf-8")


def _decode_progress(text: bytes, path: Path) -> tuple[DumpHeader, bytearray]:
    try:
        document = json.loads(text)
        if (document.get("format"), document.get("version")) != (_PROGRESS_FORMAT, 1):
            raise ValueError("not a version 1 cartd dump progress file")
        fields = dict(document["header"])
        if fields.keys() != _HEADER_FIELDS:
            raise ValueError(f"header fields differ: {sorted(fields.keys() ^ _HEADER_FIELDS)}")
        for name in _BYTES_FIELDS:
            fields[name] = bytes.fromhex(fields[name])
        header = DumpHeader(**fields)
        present = bytearray(base64.b64decode(document["present"], validate=True))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DumpProgressError(f"{path} is unreadable: {exc}") from None
    total = header.total_pages
    if len(present) != -(-total // 8) or int.from_bytes(present, "little") >> total:
        raise DumpProgressError(f"{path}: its bitmap does not cover exactly {total} pages")
    return header, present


def _pwrite_all(fd: int, data: bytes, offset: int) -> int:
    """Write all of `data` at `offset`; returns the offset just past it."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return offset


def _copy(source: int, source_offset: int, target: int, target_offset: int, pages: int) -> int:
    """Copy `pages` pages between files at the given offsets; returns the target offset after."""
    remaining = pages * PAGE_SIZE
    while remaining:
        chunk = os.pread(source, min(remaining, _COPY_CHUNK), source_offset)
        if not chunk:
            raise OSError(errno.EIO, "the partial dump ended early")
        target_offset = _pwrite_all(target, chunk, target_offset)
        source_offset += len(chunk)
        remaining -= len(chunk)
    return target_offset
