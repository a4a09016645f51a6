"""`cartd decode` on cartd's own serial `wire.pcapng` (LINKTYPE_USER0): no key needed.

The capture is written by `WireWriter` exactly as the daemon writes it, with KD packets built by
the framing encoders in both directions, cut into chunks at awkward places, with line noise, a
break-in byte and a packet whose tail never arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cartd.capture.wire import WireWriter
from cartd.decode.decoder import CaptureDecoder
from cartd.decode.serial import SerialRecord
from cartd.kd.constants import BREAKIN_BYTE, PacketType
from cartd.kd.debug_io import print_string_message, push_debug_io
from cartd.kd.framing import (
    BreakInByte,
    KdPacket,
    NoiseDetected,
    NoiseKind,
    encode_control_packet,
    encode_data_packet,
)
from cartd.kd.manipulate import (
    GetVersion,
    get_version_request,
    push_manipulate,
    read_virtual_memory_request,
    reply_to,
)
from cartd.kd.state_change import LoadSymbols, StateChangeMessage, push_state_change

ROOT = Path(__file__).resolve().parents[1]
T0 = 1764573259.0  # 2025-12-01T07:14:19Z

HELLO = b"Hello from the simulated target\n"
KERNEL_BASE = 0xFFFFF80012340000
READ_ADDRESS = 0xFFFFF78000000000
NOISE = b"\x00\x01\x02junk!\xfe\xff"


def target_packets() -> list[bytes]:
    load = StateChangeMessage(
        new_state=0x3031,
        body=LoadSymbols.for_image(
            r"\SystemRoot\system32\ntoskrnl.exe", base_of_dll=KERNEL_BASE, size_of_image=0xA00000
        ),
    )
    version = reply_to(
        get_version_request(),
        return_status=0,
        body=GetVersion(
            major_version=0x0F,
            minor_version=19041,
            protocol_version=6,
            machine_type=0x8664,
            kern_base=KERNEL_BASE,
        ),
    )
    return [
        encode_data_packet(
            PacketType.KD_DEBUG_IO, 0x80800000, push_debug_io(print_string_message(HELLO))
        ),
        encode_data_packet(PacketType.KD_STATE_CHANGE64, 0x80800001, push_state_change(load)),
        encode_control_packet(PacketType.KD_ACKNOWLEDGE, 0x80800000),
        encode_data_packet(PacketType.KD_STATE_MANIPULATE, 0x80800000, push_manipulate(version)),
    ]


def host_packets() -> list[bytes]:
    return [
        encode_control_packet(PacketType.KD_ACKNOWLEDGE, 0x80800000),
        encode_control_packet(PacketType.KD_ACKNOWLEDGE, 0x80800001),
        encode_data_packet(
            PacketType.KD_STATE_MANIPULATE, 0x80800000, push_manipulate(get_version_request())
        ),
        encode_control_packet(PacketType.KD_ACKNOWLEDGE, 0x80800000),
        encode_data_packet(
            PacketType.KD_STATE_MANIPULATE,
            0x80800001,
            push_manipulate(read_virtual_memory_request(READ_ADDRESS, 240)),
        ),
    ]


def write_wire(directory: Path) -> Path:
    """Both directions interleaved, every packet split in two chunks, garbage before the
    target's first packet, a host break-in byte, and a target packet cut short at the end."""
    writer = WireWriter(directory / "wire.pcapng.partial", directory / "wire.pcapng", "kd-test")
    # Ten bytes of line noise, none of them a leader byte or a break-in byte.
    chunks: list[tuple[bytes, bool]] = [(NOISE, True), (bytes([BREAKIN_BYTE]), False)]
    for from_target, packets in ((True, target_packets()), (False, host_packets())):
        for packet in packets:
            cut = len(packet) // 3 or 1
            chunks += [(packet[:cut], from_target), (packet[cut:], from_target)]
    # Interleave the two directions the way a real link does: by time, not by direction.
    target_chunks = [chunk for chunk in chunks if chunk[1]]
    host_chunks = [chunk for chunk in chunks if not chunk[1]]
    ordered = []
    while target_chunks or host_chunks:
        ordered += target_chunks[:2] + host_chunks[:2]
        del target_chunks[:2], host_chunks[:2]
    half_packet = target_packets()[0][:20]  # the target died mid-packet
    for number, (data, from_target) in enumerate([*ordered, (half_packet, True)], start=1):
        writer.append(data, from_target=from_target, time=T0 + number / 1000)
    writer.close()
    return directory / "wire.pcapng"


def decode_records(path: Path) -> tuple[list[SerialRecord], CaptureDecoder]:
    decoder = CaptureDecoder(path, None)
    records = [record for record in decoder.records() if isinstance(record, SerialRecord)]
    return records, decoder


def test_serial_capture_decodes_both_directions(tmp_path: Path) -> None:
    records, decoder = decode_records(write_wire(tmp_path))
    from_target = [r.event for r in records if r.from_target is True]
    from_host = [r.event for r in records if r.from_target is False]
    assert [type(event) for event in from_target] == [
        NoiseDetected,
        KdPacket,
        KdPacket,
        KdPacket,
        KdPacket,
        NoiseDetected,
    ]
    assert [
        (event.packet_type, event.packet_id) for event in from_target if isinstance(event, KdPacket)
    ] == [
        (PacketType.KD_DEBUG_IO, 0x80800000),
        (PacketType.KD_STATE_CHANGE64, 0x80800001),
        (PacketType.KD_ACKNOWLEDGE, 0x80800000),
        (PacketType.KD_STATE_MANIPULATE, 0x80800000),
    ]
    first, last = from_target[0], from_target[-1]
    assert isinstance(first, NoiseDetected) and first.kind is NoiseKind.GARBAGE
    assert isinstance(last, NoiseDetected) and last.kind is NoiseKind.TRUNCATED
    assert isinstance(from_host[0], BreakInByte)
    assert [
        (event.packet_type, event.is_control) for event in from_host if isinstance(event, KdPacket)
    ] == [
        (PacketType.KD_ACKNOWLEDGE, True),
        (PacketType.KD_ACKNOWLEDGE, True),
        (PacketType.KD_STATE_MANIPULATE, False),
        (PacketType.KD_ACKNOWLEDGE, True),
        (PacketType.KD_STATE_MANIPULATE, False),
    ]
    summary = decoder.summary.to_json()
    assert summary["kd_data_packets"] == {"STATE_MANIPULATE": 3, "DEBUG_IO": 1, "STATE_CHANGE64": 1}
    assert summary["kd_control_packets"] == {"ACK": 4}
    assert summary["kd_breakins"] == 1
    assert summary["serial"] == {
        "chunks": 2 + 2 * 9 + 1,
        "bytes": {
            "target->host": sum(map(len, target_packets())) + 10 + 20,
            "host->target": sum(map(len, host_packets())) + 1,
        },
        "noise_bytes": {"garbage": 10, "truncated": 20},
    }
    assert "datagrams" not in summary  # no KDNET in a serial capture


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cartd", "decode", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_serial_capture_text_through_the_cli(tmp_path: Path) -> None:
    result = run_cli(write_wire(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2025-12-01T07:14:19.001000Z  target->host  serial   -      NOISE")
    assert "not a KD packet: garbage, 10 bytes" in lines[0]
    text = result.stdout
    assert 'DEBUG_IO         id 0x80800000  DbgPrint "Hello from the simulated target\\n"' in text
    assert (
        'LoadSymbols "\\SystemRoot\\system32\\ntoskrnl.exe" base 0xfffff80012340000 size 0xa00000'
        in text
    )
    assert "host->target  serial   -      BREAKIN" in text
    assert "host->target  serial   -      STATE_MANIPULATE id 0x80800000  GetVersion\n" in text
    assert "GetVersion -> build 19041 (free), AMD64, kernel base 0xfffff80012340000" in text
    assert "ReadVirtualMemory 0xfffff78000000000 240 bytes" in text
    assert "ACK              id 0x80800001" in text
    assert "not a KD packet: truncated, 20 bytes" in text
    assert "  serial: 21 chunks" in text
    assert "  KD data packets: 5 (STATE_MANIPULATE 3, DEBUG_IO 1, STATE_CHANGE64 1)" in text


def test_serial_capture_json_through_the_cli(tmp_path: Path) -> None:
    result = run_cli(write_wire(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    objects: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    *records, last = objects
    assert set(last) == {"summary"}
    assert {record["channel"] for record in records} == {"serial"}
    assert {record["direction"] for record in records} == {"target->host", "host->target"}
    [print_string] = [r for r in records if r["kd"]["type"] == "DEBUG_IO"]
    assert print_string["kd"]["string"] == HELLO.decode()
    assert print_string["kd"]["api"] == "PrintString"
    # The time of the chunk that completed the packet: frame 5 (noise, half, break-in, ACK).
    assert print_string["time"] == "2025-12-01T07:14:19.005000Z"
    assert print_string["frame"] == 5
    assert print_string["sequence"] is None
    [load] = [r for r in records if r["kd"]["type"] == "STATE_CHANGE64"]
    assert load["kd"]["path"] == r"\SystemRoot\system32\ntoskrnl.exe"
    assert load["kd"]["base"] == hex(KERNEL_BASE)
    reads = [r["kd"] for r in records if r["kd"].get("api") == "ReadVirtualMemory"]
    assert reads == [
        {
            "type": "STATE_MANIPULATE",
            "id": 0x80800001,
            "api": "ReadVirtualMemory",
            "text": "ReadVirtualMemory 0xfffff78000000000 240 bytes",
            "payload_bytes": 56,
            "processor": 0,
            "address": "0xfffff78000000000",
            "count": 240,
            "reply": False,
        }
    ]
    assert [r["status"] for r in records].count("noise") == 2
