"""wire.pcapng: read back by python-pcapng's own reader (and by tshark, where installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pcapng import FileScanner, blocks  # type: ignore[import-untyped]

from cartd.capture.wire import LINKTYPE_USER0, WireWriter

DESCRIPTION = "kd-serial /dev/ttyUSB0 115200 8N1"

# (bytes, from the target?, wall-clock time): the microsecond digits must survive exactly.
TRAFFIC = [
    (b"\x30\x30\x30\x30\x02\x00\x38\x00", True, 1764573259.123456),
    (b"\x69\x69\x69\x69\x04\x00", False, 1764573259.123457),
    (b"\x00" * 3000, True, 1764573259.999999),
    (b"\x62", False, 1764573260.000001),
]


def write_capture(directory: Path, description: str | None = DESCRIPTION) -> Path:
    writer = WireWriter(directory / "wire.pcapng.partial", directory / "wire.pcapng", description)
    for data, from_target, time in TRAFFIC:
        writer.append(data, from_target=from_target, time=time)
    writer.close()
    return directory / "wire.pcapng"


def read_blocks(path: Path) -> list[Any]:
    with open(path, "rb") as capture:
        return list(FileScanner(capture))


def microseconds(packet: Any) -> int:
    return int(packet.timestamp_high) << 32 | int(packet.timestamp_low)


def test_one_section_one_interface_one_packet_per_chunk(tmp_path: Path) -> None:
    path = write_capture(tmp_path)

    section, interface, *packets = read_blocks(path)

    assert isinstance(section, blocks.SectionHeader)
    assert section.options["shb_userappl"] == "cartd"
    assert isinstance(interface, blocks.InterfaceDescription)
    assert interface.link_type == LINKTYPE_USER0 == 147
    assert interface.options["if_name"] == DESCRIPTION
    assert "no link type is registered for KD" in interface.options["if_description"]
    assert all(isinstance(packet, blocks.EnhancedPacket) for packet in packets)
    assert [packet.packet_data for packet in packets] == [data for data, _, _ in TRAFFIC]
    assert [microseconds(packet) for packet in packets] == [
        1764573259123456,
        1764573259123457,
        1764573259999999,
        1764573260000001,
    ]
    assert [packet.options["epb_flags"].inout for packet in packets] == [
        "inbound",
        "outbound",
        "inbound",
        "outbound",
    ]


def test_the_live_file_is_partial_and_readable_after_each_flush(tmp_path: Path) -> None:
    partial = tmp_path / "wire.pcapng.partial"
    writer = WireWriter(partial, tmp_path / "wire.pcapng", DESCRIPTION)
    writer.flush()
    assert len(read_blocks(partial)) == 2  # section and interface, no packets yet
    writer.append(b"abc", from_target=True, time=1764573259.5)
    assert len(read_blocks(partial)) == 2  # queued, not written
    writer.flush()
    assert [block.packet_data for block in read_blocks(partial)[2:]] == [b"abc"]
    assert not (tmp_path / "wire.pcapng").exists()

    writer.close()

    assert not partial.exists()
    assert len(read_blocks(tmp_path / "wire.pcapng")) == 3


def test_an_interface_without_a_description_still_has_a_name(tmp_path: Path) -> None:
    _, interface, *_ = read_blocks(write_capture(tmp_path, description=None))
    assert interface.options["if_name"] == "kd"


def test_empty_chunks_are_not_packets(tmp_path: Path) -> None:
    writer = WireWriter(tmp_path / "wire.pcapng.partial", tmp_path / "wire.pcapng", None)
    writer.append(b"", from_target=True, time=1764573259.0)
    writer.close()
    assert len(read_blocks(tmp_path / "wire.pcapng")) == 2


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (optional)")
def test_tshark_reads_directions_and_times(tmp_path: Path) -> None:
    path = write_capture(tmp_path)
    fields = ("frame.time_epoch", "frame.len", "frame.p2p_dir")
    command = ["tshark", "-r", str(path), "-T", "fields"]
    for name in fields:
        command += ["-e", name]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == [
        "1764573259.123456000",
        "1764573259.123457000",
        "1764573259.999999000",
        "1764573260.000001000",
    ]
    assert [int(row[1]) for row in rows] == [len(data) for data, _, _ in TRAFFIC]
    # Wireshark reads the epb_flags direction as "received" (1) or "sent" (0).
    assert [row[2] for row in rows] == ["1", "0", "1", "0"]


@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos is not installed")
def test_capinfos_sees_a_user0_capture(tmp_path: Path) -> None:
    path = write_capture(tmp_path)
    result = subprocess.run(
        ["capinfos", "-c", "-E", "-t", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "pcapng" in result.stdout
    assert "USER 0" in result.stdout
    assert f"Number of packets:   {len(TRAFFIC)}" in result.stdout
