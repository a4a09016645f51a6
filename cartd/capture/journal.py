"""`events.jsonl`: every event of a session, one JSON object a line, append-only.

A line is `json.dumps(event.to_json(), separators=(",", ":"))` and a newline; JSON's default
ASCII escaping keeps every line valid UTF-8 whatever text a target sends. Lines are buffered and
written, then fsynced, a batch at a time by `flush()` (see `AppendOnlyFile`), so a crash loses at
most the batch in flight and leaves at most one torn line at the very end.

`scan_journal()` reads a journal back and reports what it could not use (a torn last line, a
corrupt line, an event type this version does not know) instead of failing; it never yields an
event it could not fully decode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cartd.capture.files import AppendOnlyFile
from cartd.events import Event, event_from_json

# How much of an unusable line a problem report quotes.
_PREVIEW_CHARS = 80


def encode_event(event: Event) -> bytes:
    return json.dumps(event.to_json(), separators=(",", ":")).encode("utf-8") + b"\n"


class JournalWriter:
    def __init__(self, path: Path) -> None:
        self._file = AppendOnlyFile(path)

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def pending_events(self) -> int:
        return self._file.pending_records

    def append(self, event: Event) -> None:
        self._file.append(encode_event(event))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def abandon(self) -> None:
        self._file.abandon()


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalProblem:
    """A line of a journal that yielded no event."""

    line_number: int  # counting from 1
    reason: str
    preview: str  # the start of the line, for a human


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalContents:
    events: list[Event]
    problems: list[JournalProblem]


def scan_journal(path: Path) -> JournalContents:
    """Every event of the journal at `path`, in order, and the lines that gave none."""
    events: list[Event] = []
    problems: list[JournalProblem] = []
    with open(path, "rb") as journal:
        for line_number, line in enumerate(journal, start=1):
            event, reason = decode_line(line)
            if event is not None:
                events.append(event)
            else:
                preview = line[:_PREVIEW_CHARS].decode("utf-8", errors="replace")
                problems.append(
                    JournalProblem(line_number=line_number, reason=reason, preview=preview)
                )
    return JournalContents(events=events, problems=problems)


def read_journal(path: Path) -> list[Event]:
    """The events of a journal; unusable lines are skipped (`scan_journal()` lists them)."""
    return scan_journal(path).events


def decode_line(line: bytes) -> tuple[Event | None, str]:
    """The event on one journal line (with or without its newline), or None and why not."""
    try:
        data = json.loads(line)
    except ValueError:
        if not line.endswith(b"\n"):
            return None, f"torn last line ({len(line)} bytes without a newline)"
        return None, "not JSON"
    try:
        return event_from_json(data), ""
    except ValueError as error:  # EventFormatError, or a malformed "0x..." number
        return None, str(error)
