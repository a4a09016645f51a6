"""SessionRecorder: what the daemon sees, with real files (no mocks).

Write failures here come from a state "directory" that is really a file, which stops `mkdir` for
root too; the disk-full and read-only-mount variants are in test_capture_disk_errors.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from time import monotonic
from typing import Any

import pytest
from pcapng import FileScanner, blocks  # type: ignore[import-untyped]

from cartd.capture.journal import read_journal
from cartd.capture.recorder import SessionRecorder
from cartd.events import (
    CaptureError,
    CaptureResumed,
    DebugPrint,
    Event,
    Running,
    TargetConnected,
)

TARGET = "19041-fffff80312345000"


def connected() -> TargetConnected:
    return TargetConnected(
        target=TARGET,
        link="serial:/dev/ttyUSB0",
        build=19041,
        kernel_base=0xFFFFF803_12345000,
        machine="x64",
        processors=4,
    )


def packets(path: Path) -> list[Any]:
    with open(path, "rb") as capture:
        return [b for b in FileScanner(capture) if isinstance(b, blocks.EnhancedPacket)]


def open_recorder(state: Path, **options: Any) -> tuple[SessionRecorder, list[Event]]:
    options.setdefault("fsync_interval", 0.5)
    options.setdefault("wire_description", "kd-serial /dev/ttyUSB0 115200 8N1")
    return SessionRecorder.open(state, TARGET, **options)


def test_a_session_from_open_to_close(tmp_path: Path) -> None:
    recorder, published = open_recorder(tmp_path)
    assert published == []
    session = recorder.session_dir
    assert session.parent == tmp_path / "targets" / TARGET / "sessions"
    assert sorted(p.name for p in session.iterdir()) == [
        "console.log",
        "events.jsonl",
        "wire.pcapng.partial",
    ]

    recorded: list[Event] = [
        connected(),
        DebugPrint(time="2026-12-01T07:14:19.000001Z", target=TARGET, text="Hello "),
        DebugPrint(time="2026-12-01T07:14:19.000002Z", target=TARGET, text="world\nbye"),
        Running(target=TARGET),
    ]
    for event in recorded:
        assert recorder.record(event) == []
    assert recorder.record_wire(b"\x30\x30\x30\x30", from_target=True, time=1764573259.5) == []
    assert recorder.record_wire(b"\x69\x69\x69\x69", from_target=False, time=1764573259.6) == []
    assert recorder.write_identity({"build": 19041, "kernel_base": "0xfffff80312345000"}) == []
    assert recorder.flush() == []
    assert recorder.close() == []

    assert recorder.closed and not recorder.failed
    assert sorted(p.name for p in session.iterdir()) == [
        "console.log",
        "events.jsonl",
        "wire.pcapng",
    ]
    assert read_journal(session / "events.jsonl") == recorded
    assert (session / "console.log").read_text().splitlines() == [
        "2026-12-01T07:14:19.000001Z Hello world",
        "2026-12-01T07:14:19.000002Z bye",
    ]
    wire = packets(session / "wire.pcapng")
    assert [(p.packet_data, p.options["epb_flags"].inout) for p in wire] == [
        (b"0000", "inbound"),
        (b"iiii", "outbound"),
    ]
    identity = json.loads((tmp_path / "targets" / TARGET / "identity.json").read_text())
    assert identity == {"build": 19041, "kernel_base": "0xfffff80312345000"}


def test_the_timer_says_when_a_batch_is_due(tmp_path: Path) -> None:
    recorder, _ = open_recorder(tmp_path, fsync_interval=0.25)
    assert recorder.get_timer() is None
    before = monotonic()
    recorder.record(Running(target=TARGET))
    after = monotonic()
    first_deadline = recorder.get_timer()
    assert first_deadline is not None
    assert before + 0.25 <= first_deadline <= after + 0.25
    recorder.record_wire(b"x", from_target=True, time=1764573259.0)
    assert recorder.get_timer() == first_deadline  # the batch's first record sets it
    recorder.flush()
    assert recorder.get_timer() is None
    recorder.close()
    assert recorder.get_timer() is None


def test_a_full_batch_is_written_without_waiting_for_the_timer(tmp_path: Path) -> None:
    recorder, _ = open_recorder(tmp_path, backlog_events=3)
    journal = recorder.session_dir / "events.jsonl"
    for _ in range(7):
        assert recorder.record(Running(target=TARGET)) == []
    assert len(read_journal(journal)) == 6
    recorder.close()
    assert len(read_journal(journal)) == 7


def test_an_unusable_state_dir_pauses_capture_then_resumes_in_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("a file where the state directory should be")

    recorder, published = open_recorder(state, retry_interval=0)

    assert recorder.failed
    [error] = published
    assert isinstance(error, CaptureError)
    assert error.target == TARGET
    assert error.error.startswith("Not a directory: ")
    # Nothing recorded yet; the wire capture's header is what waits.
    assert re.search(
        r"\(capture paused; waiting in memory: \d+ bytes of wire capture; "
        r"at most 10000 events are kept\)$",
        error.error,
    )
    assert error.path.startswith(str(state))

    # The daemon publishes what it gets back, which includes recording it.
    recorded: list[Event] = [error, connected()]
    recorded += [DebugPrint(target=TARGET, text=f"line {n}\n") for n in range(20)]
    for event in recorded:
        assert recorder.record(event) == []
    assert recorder.record_wire(b"abc", from_target=True, time=1764573259.0) == []
    assert recorder.write_identity({"build": 19041}) == []
    assert recorder.flush() == []  # still failing: no second CaptureError
    assert recorder.get_timer() is not None

    state.unlink()  # someone fixes the state directory
    published = recorder.flush()

    assert [type(event) for event in published] == [CaptureResumed]
    assert published[0].path == str(recorder.session_dir)
    assert not recorder.failed
    recorder.record(published[0])
    assert recorder.close() == []
    assert read_journal(recorder.session_dir / "events.jsonl") == [*recorded, published[0]]
    assert len((recorder.session_dir / "console.log").read_text().splitlines()) == 20
    assert [p.packet_data for p in packets(recorder.session_dir / "wire.pcapng")] == [b"abc"]
    assert json.loads((state / "targets" / TARGET / "identity.json").read_text()) == {
        "build": 19041
    }


def test_a_full_backlog_counts_what_it_drops(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("in the way")
    recorder, _ = open_recorder(state, retry_interval=0, backlog_events=5, backlog_wire_bytes=1000)
    events = [DebugPrint(target=TARGET, text=f"{n}\n") for n in range(8)]
    for event in events:
        recorder.record(event)
    # The capture's header waits in the backlog too: the first chunk fits, the second does not.
    recorder.record_wire(b"1" * 600, from_target=True, time=1764573259.0)
    recorder.record_wire(b"2" * 600, from_target=False, time=1764573259.1)

    state.unlink()
    published = recorder.flush()

    dropped, resumed = published
    assert isinstance(dropped, CaptureError)
    assert dropped.error.startswith("3 events and 600 bytes of wire traffic were dropped")
    assert isinstance(resumed, CaptureResumed)
    recorder.close()
    assert read_journal(recorder.session_dir / "events.jsonl") == events[:5]
    assert [p.packet_data for p in packets(recorder.session_dir / "wire.pcapng")] == [b"1" * 600]


def test_retries_wait_for_the_retry_interval_but_close_always_tries(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("in the way")
    recorder, _ = open_recorder(state, retry_interval=3600)
    retry_at = recorder.get_timer()
    assert retry_at is not None and retry_at > monotonic() + 3000
    recorder.record(Running(target=TARGET))
    state.unlink()
    assert recorder.flush() == []  # not due yet
    assert recorder.failed

    published = recorder.close()

    assert [type(event) for event in published] == [CaptureResumed]
    assert len(read_journal(recorder.session_dir / "events.jsonl")) == 1


def test_closing_while_writing_is_impossible_reports_the_loss(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("in the way")
    recorder, _ = open_recorder(state, retry_interval=0)
    for _ in range(4):
        recorder.record(Running(target=TARGET))

    [lost] = recorder.close()

    assert isinstance(lost, CaptureError)
    assert re.search(r"\(session closed; lost: 4 events, \d+ bytes of wire capture\)$", lost.error)
    assert recorder.closed
    assert recorder.close() == []
    assert recorder.flush() == []
    with pytest.raises(RuntimeError):
        recorder.record(Running(target=TARGET))
    with pytest.raises(RuntimeError):
        recorder.record_wire(b"x", from_target=True, time=0.0)
    with pytest.raises(RuntimeError):
        recorder.write_identity({})


def test_an_identity_json_cannot_hold_is_the_callers_mistake(tmp_path: Path) -> None:
    recorder, _ = open_recorder(tmp_path)
    with pytest.raises(TypeError):
        recorder.write_identity({"kernel_base": b"bytes are not JSON"})
    recorder.close()


def test_two_sessions_of_one_target_in_the_same_second(tmp_path: Path) -> None:
    first, _ = open_recorder(tmp_path)
    first.close()
    second, _ = open_recorder(tmp_path)
    second.close()
    assert first.session_dir != second.session_dir
    assert first.session_dir.parent == second.session_dir.parent
