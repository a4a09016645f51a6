"""`SessionRecorder`: everything the daemon records for one target session, behind one object.

The daemon calls it from its event loop, so every call is plain, quick, synchronous file I/O:
`record()` and `record_wire()` only queue in memory; `flush()` writes and fsyncs the batch. The
daemon flushes when `get_timer()` says (at most `fsync_interval` seconds after the first record
of a batch; the same pattern as the KD core's timer) and at shutdown.

Writing can fail at any time (a full disk, a quota, a read-only remount, a state directory that
is not there). No `OSError` ever reaches the daemon and no file is left with a torn record:

1. The first failure pauses capture. What could not be written stays queued in memory, in order,
   up to `backlog_events` events and `backlog_wire_bytes` of wire traffic; beyond that new
   records are counted and dropped. The call returns one `CaptureError` event saying what failed.
2. While paused, `flush()` tries again at most once every `retry_interval` seconds.
3. When a retry succeeds, the backlog is written in order and the call returns `CaptureResumed`
   (after a `CaptureError` counting what was dropped, if anything was).

Every call that can produce events returns them as a list. The daemon publishes them like any
other event, including `record()`ing them: a `CaptureError` recorded while paused waits in the
backlog and lands in the journal, in its place, once writing works again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from time import monotonic
from typing import Any

from cartd.capture.console import ConsoleWriter
from cartd.capture.files import make_directories_durably, write_file_atomically
from cartd.capture.identity import encode_identity
from cartd.capture.journal import JournalWriter
from cartd.capture.layout import (
    CONSOLE_NAME,
    JOURNAL_NAME,
    WIRE_NAME,
    WIRE_PARTIAL_NAME,
    create_session_dir,
    identity_path,
    unused_session_dir,
)
from cartd.capture.wire import LINKTYPE_USER0, WireWriter
from cartd.events import CaptureError, CaptureResumed, DebugPrint, Event

# A full disk rarely frees itself within seconds; retrying more often only burns the card.
DEFAULT_RETRY_INTERVAL = 5.0
# About a minute of heavy DbgPrint traffic: enough to ride out someone freeing space.
DEFAULT_BACKLOG_EVENTS = 10_000
# Minutes of a 115200-baud serial link (about 11 KiB/s).
DEFAULT_BACKLOG_WIRE_BYTES = 8 << 20


class _State(Enum):
    WRITING = "writing"
    FAILED = "failed"  # paused by a write error; retrying
    CLOSED = "closed"


class SessionRecorder:
    """One target session's journal, console log and wire capture (and the target's identity).

    Make one with `SessionRecorder.open()`.
    """

    def __init__(
        self,
        *,
        target_id: str,
        session_dir: Path,
        identity_file: Path,
        wire_description: str | None,
        wire_link_type: int,
        fsync_interval: float,
        retry_interval: float,
        backlog_events: int,
        backlog_wire_bytes: int,
    ) -> None:
        self.target_id = target_id
        self.session_dir = session_dir
        self._identity_file = identity_file
        self._journal = JournalWriter(session_dir / JOURNAL_NAME)
        self._console = ConsoleWriter(session_dir / CONSOLE_NAME)
        self._wire = WireWriter(
            session_dir / WIRE_PARTIAL_NAME,
            session_dir / WIRE_NAME,
            wire_description,
            link_type=wire_link_type,
        )
        self._fsync_interval = fsync_interval
        self._retry_interval = retry_interval
        self._backlog_events = backlog_events
        self._backlog_wire_bytes = backlog_wire_bytes
        self._state = _State.WRITING
        self._session_dir_exists = False
        self._identity_to_write: bytes | None = None
        self._first_pending_at: float | None = None  # monotonic() of the batch's start
        self._retry_at = 0.0
        self._dropped_events = 0
        self._dropped_wire_bytes = 0

    @classmethod
    def open(
        cls,
        state_dir: Path,
        target_id: str,
        *,
        wire_description: str | None,
        fsync_interval: float,
        wire_link_type: int = LINKTYPE_USER0,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        backlog_events: int = DEFAULT_BACKLOG_EVENTS,
        backlog_wire_bytes: int = DEFAULT_BACKLOG_WIRE_BYTES,
    ) -> tuple[SessionRecorder, list[Event]]:
        """Start a new session directory for `target_id` and its three files.

        `wire_description` names the link in the capture (e.g. "kd-serial /dev/ttyUSB0 115200
        8N1"); None gives a generic name. `wire_link_type`: LINKTYPE_USER0 for a serial link's
        bytes, LINKTYPE_IPV4 for a KDNET link's datagrams (given as IPv4 packets). Never raises
        OSError: if nothing can be created the recorder starts paused, and the returned events
        hold the `CaptureError` to publish.
        """
        started = datetime.now(UTC)
        try:
            session_dir = create_session_dir(state_dir, target_id, started)
            failure = None
        except OSError as error:
            session_dir = unused_session_dir(state_dir, target_id, started)
            failure = error
        recorder = cls(
            target_id=target_id,
            session_dir=session_dir,
            identity_file=identity_path(state_dir, target_id),
            wire_description=wire_description,
            wire_link_type=wire_link_type,
            fsync_interval=fsync_interval,
            retry_interval=retry_interval,
            backlog_events=backlog_events,
            backlog_wire_bytes=backlog_wire_bytes,
        )
        now = monotonic()
        if failure is not None:
            return recorder, recorder._pause(_failed_path(failure, session_dir), failure, now)
        recorder._session_dir_exists = True
        # Create the files now, so a directory that cannot hold them is reported at once.
        return recorder, recorder._write(now)

    @property
    def failed(self) -> bool:
        """Capture is paused by a write error (records wait in memory)."""
        return self._state is _State.FAILED

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    def record(self, event: Event) -> list[Event]:
        """Queue `event` for the journal (and, for DebugPrint, its text for the console)."""
        self._refuse_if_closed("record()")
        published: list[Event] = []
        if self._journal.pending_events >= self._backlog_events:
            published = self.flush()  # a full batch: write it now (or retry, if due)
        if self._journal.pending_events >= self._backlog_events:
            self._dropped_events += 1
            return published
        self._journal.append(event)
        if isinstance(event, DebugPrint):
            self._console.append(event.text, event.time)
        self._note_pending()
        return published

    def record_wire(self, data: bytes, *, from_target: bool, time: float) -> list[Event]:
        """Queue a chunk of link traffic; `time` is wall-clock seconds since the epoch."""
        self._refuse_if_closed("record_wire()")
        published: list[Event] = []
        if self._wire.pending_bytes + len(data) > self._backlog_wire_bytes:
            published = self.flush()
        if self._wire.pending_bytes and (
            self._wire.pending_bytes + len(data) > self._backlog_wire_bytes
        ):
            self._dropped_wire_bytes += len(data)
            return published
        self._wire.append(data, from_target=from_target, time=time)
        self._note_pending()
        return published

    def write_identity(self, identity: Mapping[str, Any]) -> list[Event]:
        """Replace the target's identity.json (atomically) with `identity`.

        Raises TypeError if `identity` holds something JSON cannot; a write error pauses capture
        like any other and the identity is written when writing works again."""
        self._refuse_if_closed("write_identity()")
        self._identity_to_write = encode_identity(identity)
        return self.flush()

    def get_timer(self) -> float | None:
        """When (`time.monotonic()`, the clock of asyncio's `loop.time()`) `flush()` is due."""
        if self._state is _State.CLOSED:
            return None
        if self._state is _State.FAILED:
            return self._retry_at
        if self._first_pending_at is None:
            return None
        return self._first_pending_at + self._fsync_interval

    def flush(self) -> list[Event]:
        """Write and fsync what is queued; while paused, retry only when the retry is due."""
        if self._state is _State.CLOSED:
            return []
        now = monotonic()
        if self._state is _State.FAILED and now < self._retry_at:
            return []
        return self._write(now)

    def close(self) -> list[Event]:
        """Write everything (a last try even while paused), close the files, and give the wire
        capture its final name. Calling it again does nothing."""
        if self._state is _State.CLOSED:
            return []
        self._console.finish_line()
        failure = self._write_pending()
        events: list[Event] = []
        if failure is None:
            if self._state is _State.FAILED:
                events.extend(self._resumed())
            events.extend(self._close_files())
        else:
            path, error = failure
            events.append(
                self._capture_error(
                    path,
                    f"{_reason(error)}: {path} (session closed; lost: {self._waiting()})",
                )
            )
            for writer in (self._journal, self._console, self._wire):
                writer.abandon()
        self._state = _State.CLOSED
        return events

    # --- inside -------------------------------------------------------------------------------

    def _refuse_if_closed(self, call: str) -> None:
        if self._state is _State.CLOSED:
            raise RuntimeError(f"{call} on a closed SessionRecorder ({self.session_dir})")

    def _note_pending(self) -> None:
        if self._first_pending_at is None:
            self._first_pending_at = monotonic()

    def _write(self, now: float) -> list[Event]:
        failure = self._write_pending()
        if failure is not None:
            return self._pause(*failure, now)
        self._first_pending_at = None
        if self._state is _State.FAILED:
            self._state = _State.WRITING
            return self._resumed()
        return []

    def _write_pending(self) -> tuple[Path, OSError] | None:
        """Write everything queued, in order; the first error stops it and is returned."""
        if not self._session_dir_exists:
            try:
                make_directories_durably(self.session_dir)
            except OSError as error:
                return _failed_path(error, self.session_dir), error
            self._session_dir_exists = True
        if self._identity_to_write is not None:
            try:
                write_file_atomically(self._identity_file, self._identity_to_write)
            except OSError as error:
                return self._identity_file, error
            self._identity_to_write = None
        for writer in (self._journal, self._console, self._wire):
            try:
                writer.flush()
            except OSError as error:
                return writer.path, error
        return None

    def _pause(self, path: Path, error: OSError, now: float) -> list[Event]:
        self._retry_at = now + self._retry_interval
        if self._state is _State.FAILED:
            return []  # one CaptureError per pause, not one per retry
        self._state = _State.FAILED
        return [
            self._capture_error(
                path,
                f"{_reason(error)}: {path} (capture paused; waiting in memory: {self._waiting()}; "
                f"at most {self._backlog_events} events are kept)",
            )
        ]

    def _waiting(self) -> str:
        """What is queued and not yet on disk, e.g. "12 events, 3 console lines"."""
        counts = (
            (self._journal.pending_events, "event", "events"),
            (self._console.pending_lines, "console line", "console lines"),
            (self._wire.pending_bytes, "byte of wire capture", "bytes of wire capture"),
            (self._dropped_events, "dropped event", "dropped events"),
        )
        parts = [f"{n} {one if n == 1 else many}" for n, one, many in counts if n]
        return ", ".join(parts) or "nothing"

    def _resumed(self) -> list[Event]:
        events: list[Event] = []
        if self._dropped_events or self._dropped_wire_bytes:
            events.append(
                self._capture_error(
                    self.session_dir,
                    f"{self._dropped_events} events and {self._dropped_wire_bytes} bytes of wire "
                    "traffic were dropped while capture was paused (the in-memory backlog was "
                    "full)",
                )
            )
            self._dropped_events = 0
            self._dropped_wire_bytes = 0
        events.append(CaptureResumed(target=self.target_id, path=str(self.session_dir)))
        return events

    def _close_files(self) -> list[Event]:
        events: list[Event] = []
        for writer in (self._journal, self._console, self._wire):
            try:
                writer.close()
            except OSError as error:
                # Everything was fsynced just before; what failed is finishing the file (the
                # wire capture keeps its .partial name, which recovery finishes on restart).
                path = _failed_path(error, writer.path)
                events.append(
                    self._capture_error(path, f"{_reason(error)}: {path} (closing the session)")
                )
        return events

    def _capture_error(self, path: Path, error: str) -> CaptureError:
        return CaptureError(target=self.target_id, path=str(path), error=error)


def _failed_path(error: OSError, default: Path) -> Path:
    """The path the system call named (e.g. which parent directory is missing) if it did."""
    if isinstance(error.filename, str | bytes):
        return Path(os.fsdecode(error.filename))
    return default


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
