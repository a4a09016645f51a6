"""Recovery after a crash: real files cut at every byte of their last record, then repaired."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pcapng import FileScanner, blocks  # type: ignore[import-untyped]

from cartd.capture.journal import JournalWriter, read_journal, scan_journal
from cartd.capture.layout import create_session_dir, identity_path
from cartd.capture.recover import (
    complete_blocks_length,
    recover_console,
    recover_journal,
    recover_session_dir,
    recover_state_dir,
)
from cartd.capture.wire import WireWriter
from cartd.events import DebugPrint, Event, Running

TARGET = "t"
STARTED = datetime(2026, 12, 1, 7, 14, 19, tzinfo=UTC)


def journal_bytes(tmp_path: Path, events: list[Event]) -> bytes:
    path = tmp_path / "whole.jsonl"
    writer = JournalWriter(path)
    for event in events:
        writer.append(event)
    writer.close()
    return path.read_bytes()


def sample_events(count: int) -> list[Event]:
    return [DebugPrint(target=TARGET, text=f"line {n} ünïcode\n") for n in range(count)]


def test_a_journal_cut_anywhere_in_its_last_line(tmp_path: Path) -> None:
    events = sample_events(5)
    whole = journal_bytes(tmp_path, events)
    last_line_start = whole.rindex(b"\n", 0, len(whole) - 1) + 1
    path = tmp_path / "events.jsonl"

    for cut in range(last_line_start, len(whole) + 1):
        path.write_bytes(whole[:cut])

        note = recover_journal(path)

        if cut in (last_line_start, len(whole)):
            assert note is None, cut  # nothing torn
        else:
            assert note is not None, cut
        expected = events if cut >= len(whole) - 1 else events[:-1]
        assert path.read_bytes() == whole[: len(whole) if expected == events else last_line_start]
        assert scan_journal(path).problems == [], cut
        assert read_journal(path) == expected, cut


def test_a_journal_with_zeros_after_its_last_line_loses_only_the_zeros(tmp_path: Path) -> None:
    """What a power cut can leave: the file grew but its last blocks were never written."""
    whole = journal_bytes(tmp_path, sample_events(3))
    path = tmp_path / "events.jsonl"
    path.write_bytes(whole + b"\x00" * 700 + b"\n" + b"\x00" * 300)

    note = recover_journal(path)

    assert note is not None and "cut 1001 bytes" in note.note
    assert path.read_bytes() == whole


def test_a_journal_that_is_all_torn_becomes_empty(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"time":"2026-12-01T07:14:19.0')
    assert recover_journal(path) is not None
    assert path.read_bytes() == b""


def test_a_console_cut_anywhere_in_its_last_line(tmp_path: Path) -> None:
    whole = b"2026-12-01T07:14:19.000001Z first\n2026-12-01T07:14:19.000002Z second\n"
    last_line_start = whole.index(b"\n") + 1
    path = tmp_path / "console.log"
    for cut in range(last_line_start, len(whole) + 1):
        path.write_bytes(whole[:cut])
        note = recover_console(path)
        assert (note is None) == (cut in (last_line_start, len(whole))), cut
        expected = whole if cut == len(whole) else whole[:last_line_start]
        assert path.read_bytes() == expected, cut


def write_partial_capture(directory: Path, packets: int) -> tuple[bytes, list[int]]:
    """A live capture's bytes, and the file length after the header and after each packet."""
    partial = directory / "wire.pcapng.partial"
    writer = WireWriter(partial, directory / "wire.pcapng", "kd-serial /dev/ttyUSB0 115200 8N1")
    writer.flush()
    boundaries = [partial.stat().st_size]
    for n in range(packets):
        writer.append(bytes([n]) * (n + 1), from_target=n % 2 == 0, time=1764573259.0 + n)
        writer.flush()
        boundaries.append(partial.stat().st_size)
    writer.abandon()  # as a crash would: no close, no rename
    return partial.read_bytes(), boundaries


def read_packets(path: Path) -> list[Any]:
    with open(path, "rb") as capture:
        return [b for b in FileScanner(capture) if isinstance(b, blocks.EnhancedPacket)]


def test_a_capture_cut_anywhere_in_its_last_block(tmp_path: Path) -> None:
    whole, boundaries = write_partial_capture(tmp_path, packets=4)
    last_block_start = boundaries[-2]
    session = create_session_dir(tmp_path / "state", TARGET, STARTED)
    partial = session / "wire.pcapng.partial"
    final = session / "wire.pcapng"

    for cut in range(last_block_start, len(whole) + 1):
        final.unlink(missing_ok=True)
        partial.write_bytes(whole[:cut])

        notes = recover_session_dir(session)

        assert [note.path for note in notes] == [final], cut
        assert not partial.exists()
        kept = len(whole) if cut == len(whole) else last_block_start
        assert final.read_bytes() == whole[:kept], cut
        assert len(read_packets(final)) == (4 if cut == len(whole) else 3), cut


def test_a_capture_cut_inside_its_header(tmp_path: Path) -> None:
    whole, boundaries = write_partial_capture(tmp_path, packets=1)
    header_end = boundaries[0]
    with open(tmp_path / "wire.pcapng.partial", "rb") as capture:
        section, interface = list(FileScanner(capture))[:2]
    assert isinstance(section, blocks.SectionHeader)
    assert isinstance(interface, blocks.InterfaceDescription)
    path = tmp_path / "cut.pcapng"
    lengths = set()
    for cut in range(header_end + 1):
        path.write_bytes(whole[:cut])
        lengths.add(complete_blocks_length(path))
    section_length = min(lengths - {0})
    assert lengths == {0, section_length, header_end}

    session = create_session_dir(tmp_path / "state", TARGET, STARTED)
    (session / "wire.pcapng.partial").write_bytes(whole[: section_length - 1])
    notes = recover_session_dir(session)
    assert "removed" in notes[0].note
    assert list(session.iterdir()) == []

    (session / "wire.pcapng.partial").write_bytes(whole[: section_length + 5])
    recover_session_dir(session)
    with open(session / "wire.pcapng", "rb") as capture:
        assert len(list(FileScanner(capture))) == 1  # a valid capture with no interface yet


def test_recovering_a_state_dir_finishes_everything_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    whole, _ = write_partial_capture(tmp_path, packets=2)
    journal = journal_bytes(tmp_path, [Running(target=TARGET)])
    sessions = [create_session_dir(state, name, STARTED) for name in ("a", "b")]
    for session in sessions:
        (session / "wire.pcapng.partial").write_bytes(whole[:-3])
        (session / "events.jsonl").write_bytes(journal + journal[:10])
        (session / "console.log").write_bytes(b"2026-12-01T07:14:19.000001Z torn")
    identity = identity_path(state, "a")
    identity.write_text('{"build": 1}\n')
    leftover = identity.with_name("identity.json.tmp")
    leftover.write_text('{"bui')

    notes = recover_state_dir(state)

    assert len(notes) == 1 + 3 * len(sessions)
    assert not leftover.exists()
    assert identity.read_text() == '{"build": 1}\n'
    for session in sessions:
        assert sorted(path.name for path in session.iterdir()) == [
            "console.log",
            "events.jsonl",
            "wire.pcapng",
        ]
        assert (session / "events.jsonl").read_bytes() == journal
        assert (session / "console.log").read_bytes() == b""
        assert len(read_packets(session / "wire.pcapng")) == 1
    assert recover_state_dir(state) == []


def test_a_partial_next_to_a_finished_capture_is_left_alone(tmp_path: Path) -> None:
    whole, _ = write_partial_capture(tmp_path, packets=1)
    session = create_session_dir(tmp_path / "state", TARGET, STARTED)
    (session / "wire.pcapng").write_bytes(whole)
    (session / "wire.pcapng.partial").write_bytes(whole[:-1])
    notes = recover_session_dir(session)
    assert "left as it is" in notes[0].note
    assert (session / "wire.pcapng").read_bytes() == whole
    assert (session / "wire.pcapng.partial").read_bytes() == whole[:-1]


def test_an_empty_state_dir_needs_nothing(tmp_path: Path) -> None:
    assert recover_state_dir(tmp_path / "missing") == []


@pytest.mark.parametrize("count", [1, 50])
def test_recovery_reads_backwards_across_chunks(tmp_path: Path, count: int) -> None:
    """A last line longer than the read-back chunk is still found whole."""
    events: list[Event] = [DebugPrint(target=TARGET, text="x" * 100_000) for _ in range(count)]
    whole = journal_bytes(tmp_path, events)
    path = tmp_path / "events.jsonl"
    path.write_bytes(whole + whole[:70_000])
    assert recover_journal(path) is not None
    assert path.read_bytes() == whole
