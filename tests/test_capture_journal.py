"""events.jsonl: every event type survives the journal; unusable lines are reported, not yielded."""

from __future__ import annotations

import json
from pathlib import Path

from cartd.capture.journal import JournalWriter, encode_event, read_journal, scan_journal
from cartd.events import (
    EVENT_TYPES,
    Bugcheck,
    CaptureError,
    CaptureResumed,
    DebugPrint,
    DumpProgress,
    DumpStarted,
    DumpStopped,
    DumpWritten,
    Event,
    LinkDown,
    LinkProbed,
    LinkUp,
    ModuleLoaded,
    ModuleUnloaded,
    OwnerChanged,
    Prompt,
    ProtocolNoise,
    RemoteRefused,
    Running,
    Stopped,
    TargetConnected,
    TargetRebooted,
)

DUMP = "/var/lib/cartd/targets/t1/dumps/20261201T031500Z-0x9f.dmp"
TARGET = "19041-fffff80312345000"
LINK = "serial:/dev/serial/by-id/usb-FTDI_FT232R_A10K1234-if00-port0"
KERNEL_BASE = 0xFFFFF803_12345000  # above 2**53: must not pass through a double


def one_of_each() -> list[Event]:
    return [
        LinkUp(link=LINK, device="/dev/ttyUSB0", baud=115200),
        LinkDown(link=LINK, device="/dev/ttyUSB0", reason="device unplugged"),
        LinkProbed(link=LINK, device="/dev/ttyUSB0", result="kd", detail="", baud=None),
        TargetConnected(
            target=TARGET,
            link=LINK,
            build=19041,
            kernel_base=KERNEL_BASE,
            machine="x64",
            processors=8,
        ),
        DebugPrint(target=TARGET, text='Ünïcode "quoted" \\ tab\there\r\nsecond line\n'),
        ModuleLoaded(target=TARGET, name="Ntfs.sys", base=0xFFFFF803_20000000, size=0x2F0000),
        ModuleUnloaded(target=TARGET, name="Ntfs.sys", base=0xFFFFF803_20000000, size=0x2F0000),
        Stopped(
            target=TARGET,
            reason="breakpoint",
            processor=3,
            pc=0xFFFFF803_1240A1B0,
            exception_code=0x80000003,
            first_chance=True,
        ),
        Bugcheck(
            target=TARGET,
            code=0x9F,
            name="DRIVER_POWER_STATE_FAILURE",
            parameters=(3, 0xFFFFB10A_12345678, 0xFFFFF803_1AE0F0A0, 0xFFFFB10A_87654321),
            parameter_meanings=("Type of violation", "Physical device object", "", "The IRP"),
            cause="A device object blocked a power IRP for too long",
        ),
        Running(target=TARGET),
        TargetRebooted(target=TARGET),
        Prompt(target=TARGET, prompt="Break repeatedly, break Once, Ignore?", answer="i"),
        ProtocolNoise(link=LINK, counters={"bad_checksum": 3, "resends": 1}),
        OwnerChanged(
            target=TARGET,
            owner="alice (tcp 127.0.0.1:53122)",
            previous="cartd",
            reason="a remote debugger attached through the KD relay",
            peer="tcp 127.0.0.1:53122",
            user="alice",
        ),
        RemoteRefused(
            target=TARGET,
            peer="unix socket, pid 4242",
            user="bob",
            reason="db-07 is owned by alice (tcp 127.0.0.1:53122) since 03:12:09",
        ),
        CaptureError(target=TARGET, path="/var/lib/cartd/x", error="No space left on device"),
        CaptureResumed(target=TARGET, path="/var/lib/cartd/x"),
        DumpStarted(
            target=TARGET,
            path=DUMP,
            kind="triage",
            pages=812,
            bytes=812 * 4096,
            estimate_seconds=310.5,
            resumed_pages=12,
        ),
        DumpProgress(
            target=TARGET,
            path=DUMP,
            pages_done=400,
            pages=812,
            bytes_done=400 * 4096,
            rate=10_800.0,
            eta_seconds=None,
        ),
        DumpWritten(
            target=TARGET,
            path=DUMP,
            dump_type="bitmap",
            pages=810,
            size=0x3000 + 810 * 4096,
            seconds=322.0,
            missing_pages=2,
        ),
        DumpStopped(target=TARGET, path=DUMP, reason="the link went down", resumable=True),
    ]


def test_the_samples_cover_every_event_type() -> None:
    """A new event type needs a sample here, so the round trip below keeps covering all."""
    assert {event.type for event in one_of_each()} == set(EVENT_TYPES)


def test_every_event_type_round_trips_through_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    written = one_of_each()
    writer = JournalWriter(path)
    for event in written:
        writer.append(event)
    writer.close()

    assert read_journal(path) == written
    contents = scan_journal(path)
    assert contents.problems == []


def test_a_line_is_compact_ascii_json_with_one_newline() -> None:
    line = encode_event(DebugPrint(time="2026-12-01T07:14:19.000001Z", target="t", text="é\n"))
    assert line == (
        b'{"time":"2026-12-01T07:14:19.000001Z","type":"debug_print",'
        b'"target":"t","text":"\\u00e9\\n"}\n'
    )
    line.decode("ascii")  # valid UTF-8 whatever the target printed


def test_nothing_reaches_the_file_before_flush(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = JournalWriter(path)
    writer.flush()  # creates the (empty) file
    event = Running(target=TARGET)
    writer.append(event)
    assert path.read_bytes() == b""
    assert writer.pending_events == 1
    writer.flush()
    assert writer.pending_events == 0
    assert read_journal(path) == [event]
    writer.close()


def test_unusable_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = [Running(target=TARGET), TargetRebooted(target=TARGET)]
    unknown = json.dumps({"time": "2026-12-01T07:14:19.000000Z", "type": "from_the_future"})
    path.write_bytes(
        encode_event(good[0])
        + b"this is not json\n"
        + unknown.encode()
        + b"\n"
        + b'{"time":"x","type":"running"}\n'  # no target
        + encode_event(good[1])
        + encode_event(Running(target=TARGET))[:25]  # torn by a crash
    )

    contents = scan_journal(path)

    assert contents.events == good
    assert [(p.line_number, p.reason) for p in contents.problems] == [
        (2, "not JSON"),
        (3, "unknown event type 'from_the_future'"),
        (4, "running event without 'target'"),
        (6, "torn last line (25 bytes without a newline)"),
    ]
    assert contents.problems[0].preview == "this is not json\n"


def test_a_last_line_missing_only_its_newline_is_still_an_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    event = Running(target=TARGET)
    path.write_bytes(encode_event(event)[:-1])
    assert scan_journal(path).events == [event]
    assert scan_journal(path).problems == []
