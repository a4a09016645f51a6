"""Events as structured journald entries (cartd.daemon.journal_fields, docs/journald.md).

Where a journal is running (/run/systemd/journal/socket exists and journalctl is installed), an
entry is sent through systemd-python's `journal.send` and read back with
`journalctl -o json MESSAGE_ID=...`. This machine (a container) has no journal, so the fields are
also checked as `journal_fields()` builds them and as `JournalSink` hands them to the send
function: that is the handler's formatted record, exactly what `journal.send(**fields)` gets.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cartd import events as ev
from cartd.daemon.journal_fields import (
    JOURNAL_SOCKET,
    MESSAGE_IDS,
    JournalSink,
    journal_fields,
)

ROOT = Path(__file__).resolve().parents[1]

BUGCHECK = ev.Bugcheck(
    target="srv12",
    code=0x9F,
    name="DRIVER_POWER_STATE_FAILURE",
    parameters=(3, 0xFFFFA00012345678, 0xFFFFF80000001000, 0xFFFFA00087654321),
)


def test_every_event_type_has_a_fixed_documented_message_id() -> None:
    assert set(MESSAGE_IDS) == set(ev.EVENT_TYPES)
    assert len(set(MESSAGE_IDS.values())) == len(MESSAGE_IDS)
    docs = (ROOT / "docs" / "journald.md").read_text()
    for kind, message_id in MESSAGE_IDS.items():
        assert re.fullmatch(r"[0-9a-f]{32}", message_id), kind
        assert uuid.UUID(message_id).hex == message_id
        assert f"`{kind}`" in docs and message_id in docs, kind


def test_bugcheck_fields() -> None:
    fields = journal_fields(BUGCHECK, level=logging.WARNING, link="serial:/dev/ttyUSB0")
    assert fields == {
        "MESSAGE": "srv12: " + ev.describe(BUGCHECK),
        "MESSAGE_ID": "2c40e5cd86b54151bc01d0a5409465cc",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "cartd",
        "CARTD_EVENT": "bugcheck",
        "CARTD_TIME": BUGCHECK.time,
        "CARTD_TARGET": "srv12",
        "CARTD_LINK": "serial:/dev/ttyUSB0",
        "CARTD_BUGCHECK_CODE": "0x0000009F",
        "CARTD_BUGCHECK_NAME": "DRIVER_POWER_STATE_FAILURE",
        "CARTD_BUGCHECK_P1": "0x0000000000000003",
        "CARTD_BUGCHECK_P2": "0xFFFFA00012345678",
        "CARTD_BUGCHECK_P3": "0xFFFFF80000001000",
        "CARTD_BUGCHECK_P4": "0xFFFFA00087654321",
    }


def test_owner_changed_fields() -> None:
    event = ev.OwnerChanged(target="srv07", owner="alice", previous="cartd", reason="attached")
    fields = journal_fields(event, level=logging.INFO, link="kdnet:50000")
    assert fields["MESSAGE_ID"] == MESSAGE_IDS["owner_changed"]
    assert fields["PRIORITY"] == "6"
    assert fields["CARTD_EVENT"] == "owner_changed"
    assert fields["CARTD_TARGET"] == "srv07"
    assert fields["CARTD_LINK"] == "kdnet:50000"
    assert fields["CARTD_OWNER"] == "alice"
    assert fields["CARTD_PREVIOUS_OWNER"] == "cartd"
    assert "CARTD_BUGCHECK_CODE" not in fields


def test_link_up_fields() -> None:
    event = ev.LinkUp(
        link="serial:/dev/serial/by-id/usb-FTDI_A1-if00-port0", device="/dev/ttyUSB0", baud=115200
    )
    fields = journal_fields(event, level=logging.INFO)
    assert fields["MESSAGE"] == (
        "serial:/dev/serial/by-id/usb-FTDI_A1-if00-port0: link up: /dev/ttyUSB0 at 115200 baud"
    )
    assert fields["MESSAGE_ID"] == MESSAGE_IDS["link_up"]
    assert fields["CARTD_LINK"] == "serial:/dev/serial/by-id/usb-FTDI_A1-if00-port0"
    assert fields["CARTD_DEVICE"] == "/dev/ttyUSB0"
    assert "CARTD_TARGET" not in fields


def test_dump_written_fields() -> None:
    event = ev.DumpWritten(
        target="srv12",
        path="/var/lib/cartd/targets/srv12/dumps/20250101T000000Z-0x9f.dmp",
        dump_type="bitmap",
        pages=100,
        size=1 << 20,
        seconds=12.0,
    )
    fields = journal_fields(event, level=logging.INFO)
    assert fields["MESSAGE_ID"] == MESSAGE_IDS["dump_written"]
    assert fields["PRIORITY"] == "6"
    assert fields["CARTD_DUMP_PATH"] == event.path
    assert fields["CARTD_TARGET"] == "srv12"


def test_field_names_are_valid_journal_fields() -> None:
    """systemd.journal-fields(7): upper case, digits, underscore, not starting with '_'."""
    samples = [BUGCHECK, ev.LinkDown(link="kdnet:50000", device="udp 50000", reason="gone")]
    for event in samples:
        for name in journal_fields(event, level=logging.INFO):
            assert re.fullmatch(r"[A-Z0-9][A-Z0-9_]*", name), name


def test_the_sink_hands_the_fields_to_journal_send_and_keeps_dbgprint_out() -> None:
    sent: list[dict[str, str]] = []
    sink = JournalSink(send=lambda **fields: sent.append(fields), environ={})
    assert sink.enabled and not sink.replaces_stderr
    assert sink.send(BUGCHECK, level=logging.WARNING, link="serial:/dev/ttyS0")
    assert sent == [journal_fields(BUGCHECK, level=logging.WARNING, link="serial:/dev/ttyS0")]
    print_event = ev.DebugPrint(target="srv12", text="hello\n")
    assert not sink.send(print_event, level=logging.DEBUG)
    assert len(sent) == 1
    chatty = JournalSink(send=lambda **fields: sent.append(fields), environ={}, debug_print=True)
    assert chatty.send(print_event, level=logging.DEBUG)
    assert sent[-1]["PRIORITY"] == "7"


def test_without_a_journal_nothing_is_sent(tmp_path: Path) -> None:
    sink = JournalSink(socket_path=tmp_path / "no-journal", environ={})
    assert not sink.enabled
    assert not sink.send(BUGCHECK, level=logging.WARNING)


@pytest.mark.skipif(
    not JOURNAL_SOCKET.exists() or shutil.which("journalctl") is None,
    reason="no journal running here (no /run/systemd/journal/socket)",
)
def test_read_back_with_journalctl() -> None:
    pytest.importorskip("systemd.journal")
    marker = f"journal-test-{uuid.uuid4().hex[:12]}"
    event = ev.Bugcheck(
        target=marker, code=0x9F, name="DRIVER_POWER_STATE_FAILURE", parameters=(1, 2, 3, 4)
    )
    assert JournalSink().send(event, level=logging.WARNING, link="serial:/dev/ttyS0")
    deadline = time.monotonic() + 10
    while True:
        result = subprocess.run(
            [
                "journalctl",
                "-o",
                "json",
                f"MESSAGE_ID={MESSAGE_IDS['bugcheck']}",
                f"CARTD_TARGET={marker}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        entries = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        if entries or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert entries, result.stderr
    entry = entries[-1]
    assert entry["CARTD_EVENT"] == "bugcheck"
    assert entry["CARTD_BUGCHECK_CODE"] == "0x0000009F"
    assert entry["CARTD_BUGCHECK_P4"] == "0x0000000000000004"
    assert entry["PRIORITY"] == "4"
