"""Finish, on daemon start, what a crash left half-done in the state directory.

Run it before any `SessionRecorder` opens: it assumes every session it finds is closed.

- `wire.pcapng.partial`: cut back to its last whole block (every pcapng block carries its total
  length at offset 4 and again in its last four bytes) and renamed to `wire.pcapng`.
- `events.jsonl`: trailing lines that are not JSON objects (a torn last line; the zeros a power
  cut can leave after the last fsync) are cut off; a last line that lacks only its newline
  gets one. Afterwards every line in the journal parses.
- `console.log`: a last line without its newline is cut off (console lines are written whole,
  so it is torn; its text is in the journal too).
- `identity.json.tmp`: an atomic write that never finished; `identity.json` is intact.

Each change comes back as a `RecoveryNote` for the daemon to log. Recovery never raises for an
unreadable or unwritable file: the note says what could not be done.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cartd.capture.files import TEMPORARY_SUFFIX, fsync_directory, replace_durably
from cartd.capture.layout import (
    CONSOLE_NAME,
    IDENTITY_NAME,
    JOURNAL_NAME,
    TARGETS,
    WIRE_NAME,
    WIRE_PARTIAL_NAME,
    session_dirs,
)

# pcapng (IETF draft "PCAP Now Generic"): block type of a Section Header Block (the same in both
# byte orders) and the byte-order magic at its offset 8, as it reads in each byte order.
_SECTION_HEADER_TYPE = 0x0A0D0D0A
_BYTE_ORDER_MAGIC = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
_BLOCK_HEAD = 12  # type, total length, and (in a Section Header) the byte-order magic
_SMALLEST_BLOCK = 12  # type, length, trailing length

_READ_BACK_CHUNK = 64 * 1024  # how far back at a time to look for the previous newline
_PREVIEW_BYTES = 60  # how much of cut-off text a note quotes


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryNote:
    path: Path  # the file concerned, under the name it has now
    note: str  # what was done to it, or why nothing could be


def recover_state_dir(state_dir: Path) -> list[RecoveryNote]:
    notes: list[RecoveryNote] = []
    for identity_temporary in sorted(
        (state_dir / TARGETS).glob(f"*/{IDENTITY_NAME}{TEMPORARY_SUFFIX}")
    ):
        notes.extend(_attempt(identity_temporary, _remove_identity_temporary))
    for session in session_dirs(state_dir):
        notes.extend(recover_session_dir(session))
    return notes


def recover_session_dir(session_dir: Path) -> list[RecoveryNote]:
    notes: list[RecoveryNote] = []
    steps = (
        (session_dir / WIRE_PARTIAL_NAME, recover_wire),
        (session_dir / JOURNAL_NAME, recover_journal),
        (session_dir / CONSOLE_NAME, recover_console),
    )
    for path, step in steps:
        if path.is_file():
            notes.extend(_attempt(path, step))
    return notes


def _attempt(path: Path, step: Callable[[Path], RecoveryNote | None]) -> list[RecoveryNote]:
    try:
        note = step(path)
    except OSError as error:
        return [RecoveryNote(path=path, note=f"could not recover: {error.strerror or error}")]
    return [] if note is None else [note]


def _remove_identity_temporary(path: Path) -> RecoveryNote:
    os.unlink(path)
    fsync_directory(path.parent)
    return RecoveryNote(
        path=path, note=f"removed an unfinished write; {IDENTITY_NAME} is the last whole one"
    )


# --- wire.pcapng -----------------------------------------------------------------------------


def complete_blocks_length(path: Path) -> int:
    """Length of the longest start of a pcapng file that consists of whole blocks."""
    with open(path, "rb") as capture:
        size = os.fstat(capture.fileno()).st_size
        byte_order: str | None = None
        offset = 0
        while offset + _BLOCK_HEAD <= size:
            capture.seek(offset)
            head = capture.read(_BLOCK_HEAD)
            if int.from_bytes(head[:4], "little") == _SECTION_HEADER_TYPE:
                byte_order = _BYTE_ORDER_MAGIC.get(head[8:12])
            if byte_order is None:
                break
            (length,) = struct.unpack(byte_order + "I", head[4:8])
            if length < _SMALLEST_BLOCK or length % 4 or offset + length > size:
                break
            capture.seek(offset + length - 4)
            (trailing_length,) = struct.unpack(byte_order + "I", capture.read(4))
            if trailing_length != length:
                break
            offset += length
        return offset


def recover_wire(partial: Path) -> RecoveryNote:
    final = partial.with_name(WIRE_NAME)
    if final.exists():
        return RecoveryNote(path=partial, note=f"left as it is: {final.name} exists as well")
    size = partial.stat().st_size
    whole = complete_blocks_length(partial)
    if whole == 0:
        os.unlink(partial)
        fsync_directory(partial.parent)
        return RecoveryNote(
            path=partial, note=f"removed: not one whole pcapng block in its {size} bytes"
        )
    if whole < size:
        _truncate_durably(partial, whole)
    replace_durably(partial, final)
    cut = f"cut a torn last block ({size - whole} bytes), " if whole < size else ""
    return RecoveryNote(path=final, note=f"{cut}renamed from {partial.name} (not closed cleanly)")


# --- events.jsonl and console.log ------------------------------------------------------------


def recover_journal(path: Path) -> RecoveryNote | None:
    with open(path, "rb") as journal:
        size = os.fstat(journal.fileno()).st_size
        keep = size
        missing_newline = False
        while keep > 0:
            terminated = _byte_at(journal, keep - 1) == b"\n"
            line_end = keep - 1 if terminated else keep
            line_start = _line_start(journal, line_end)
            journal.seek(line_start)
            if _is_json_object(journal.read(line_end - line_start)):
                missing_newline = not terminated
                break
            keep = line_start
        journal.seek(keep)
        cut_text = journal.read(_PREVIEW_BYTES)
    if keep < size:
        _truncate_durably(path, keep)
        return RecoveryNote(
            path=path, note=f"cut {size - keep} bytes of torn or corrupt lines: {cut_text!r}"
        )
    if missing_newline:
        _append_durably(path, b"\n")
        return RecoveryNote(path=path, note="added the newline its last line was missing")
    return None


def recover_console(path: Path) -> RecoveryNote | None:
    with open(path, "rb") as console:
        size = os.fstat(console.fileno()).st_size
        if size == 0 or _byte_at(console, size - 1) == b"\n":
            return None
        keep = _line_start(console, size)
        console.seek(keep)
        cut_text = console.read(_PREVIEW_BYTES)
    _truncate_durably(path, keep)
    return RecoveryNote(path=path, note=f"cut a torn last line ({size - keep} bytes): {cut_text!r}")


def _byte_at(handle: BinaryIO, offset: int) -> bytes:
    handle.seek(offset)
    return handle.read(1)


def _line_start(handle: BinaryIO, end: int) -> int:
    """Offset just after the last newline before `end`, or 0: where the line ending at `end`
    starts. Reads backwards a chunk at a time, so a long journal is not read whole."""
    position = end
    while position > 0:
        chunk_start = max(0, position - _READ_BACK_CHUNK)
        handle.seek(chunk_start)
        newline = handle.read(position - chunk_start).rfind(b"\n")
        if newline >= 0:
            return chunk_start + newline + 1
        position = chunk_start
    return 0


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _truncate_durably(path: Path, length: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
