"""`cartd decode` follows several KDNET targets, reboots and rollovers in one capture.

The traffic is built with cartd's own KDNET codec (both ends' `DatagramCodec`s and the
handshake encoders), wrapped in Ethernet/IPv4/UDP and written as pcap and pcapng by scapy: two
targets on two ports, a reboot of the first one with a new handshake, a datagram still in
flight under the old key, a duplicated frame, a damaged frame, a stranger, DNS noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap, wrpcapng

from cartd.decode.decoder import CaptureDecoder
from cartd.decode.kdnet import ControlKind, KdnetRecord, Outcome
from cartd.kd.constants import BREAKIN_BYTE, PacketType
from cartd.kd.debug_io import print_string_message, push_debug_io
from cartd.kd.framing import BreakInByte, KdPacket, encode_control_packet, encode_data_packet
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import Direction, DropReason
from cartd.kd.kdnet.handshake import (
    EMPTY_ADDRESS,
    PeerAddress,
    Poke,
    PokeAddress,
    Response,
    push_poke,
    push_response,
)
from cartd.kd.kdnet.keys import derive_data_key, parse_key
from cartd.kd.state_change import ExceptionRecord, StateChangeMessage, push_state_change

ROOT = Path(__file__).resolve().parents[1]
KEY_TEXT = "s3cr3t.k3y.f0r.t3sts"
KEY = parse_key(KEY_TEXT)
T0 = 1700000000.0

TARGET_1: PeerAddress = ("10.0.0.11", 50000)
HOST_1: PeerAddress = ("10.0.0.1", 50000)
TARGET_2: PeerAddress = ("10.0.0.12", 50001)
HOST_2: PeerAddress = ("10.0.0.1", 50001)
STRANGER: PeerAddress = ("10.0.0.99", 50000)


@dataclass
class Link:
    """One target and its host, each end with its own codec, as on the wire."""

    target: PeerAddress
    host: PeerAddress
    boot: int
    seconds: int = 3
    counter: int = 0
    target_codec: DatagramCodec = field(init=False)
    host_codec: DatagramCodec = field(init=False)

    def __post_init__(self) -> None:
        self.reboot(self.boot)

    def reboot(self, boot: int) -> None:
        self.boot = boot
        self.target_codec = DatagramCodec(KEY, local_direction=Direction.TARGET_TO_HOST, version=5)
        self.host_codec = DatagramCodec(KEY, local_direction=Direction.HOST_TO_TARGET, version=5)

    @property
    def nonce(self) -> bytes:
        return self.counter.to_bytes(2, "little") + bytes([self.boot]) * 30

    def poke(self, *, connected: bool) -> bytes:
        self.seconds += 3
        self.counter += 1
        body = push_poke(
            Poke(
                nonce=self.nonce,
                target=PokeAddress.from_peer(self.target),
                configured_host=PokeAddress.from_peer(self.host),
                connected_host=PokeAddress.from_peer(self.host) if connected else EMPTY_ADDRESS,
            )
        )
        return self.target_codec.encode_control(body, sequence=self.seconds)

    def respond(self) -> bytes:
        body = push_response(Response(client_nonce=self.nonce, host_nonce=bytes([self.boot]) * 32))
        data_key = derive_data_key(KEY, body)
        self.target_codec.install_data_key(data_key)
        self.host_codec.install_data_key(data_key)
        return self.host_codec.encode_control(body, sequence=self.seconds)


def dbgprint(text: bytes, packet_id: int) -> bytes:
    payload = push_debug_io(print_string_message(text))
    return encode_data_packet(PacketType.KD_DEBUG_IO, packet_id, payload, trailer=False)


def ack(packet_id: int) -> bytes:
    return encode_control_packet(PacketType.KD_ACKNOWLEDGE, packet_id)


def breakpoint_stop() -> bytes:
    stop = StateChangeMessage(
        new_state=0x3030,
        program_counter=0xFFFFF80000001000,
        body=ExceptionRecord(code=0x80000003, address=0xFFFFF80000001000),
    )
    return encode_data_packet(
        PacketType.KD_STATE_CHANGE64, 2, push_state_change(stop), trailer=False
    )


Frame = tuple[PeerAddress, PeerAddress, bytes]


def traffic() -> list[Frame]:
    one = Link(TARGET_1, HOST_1, boot=0x11)
    two = Link(TARGET_2, HOST_2, boot=0x22)
    frames: list[Frame] = []

    def target(link: Link, data: bytes) -> None:
        frames.append((link.target, link.host, data))

    def host(link: Link, data: bytes) -> None:
        frames.append((link.host, link.target, data))

    target(one, one.poke(connected=False))  # 1
    host(one, one.respond())  # 2: session 1
    target(one, one.target_codec.encode_data(dbgprint(b"first boot\n", 0)))  # 3
    host(one, one.host_codec.encode_data(ack(0)))  # 4
    target(two, two.poke(connected=False))  # 5
    host(two, two.respond())  # 6: session 2
    target(two, two.target_codec.encode_data(breakpoint_stop()))  # 7
    host(two, two.host_codec.encode_data(ack(2)))  # 8
    host(two, two.host_codec.encode_data(bytes([BREAKIN_BYTE])))  # 9
    frames.append(frames[2])  # 10: frame 3 captured twice
    damaged = bytearray(frames[3][2])
    damaged[10] ^= 0x01
    frames.append((frames[3][0], frames[3][1], bytes(damaged)))  # 11: a flipped bit
    frames.append((("10.0.0.5", 53), ("10.0.0.6", 5353), b"\x12\x34 not kdnet"))  # 12
    in_flight = one.target_codec.encode_data(dbgprint(b"late\n", 2))  # under session 1
    one.reboot(boot=0x33)
    target(one, one.poke(connected=False))  # 13: rebooted, no host
    host(one, one.respond())  # 14: session 3
    target(one, one.target_codec.encode_data(dbgprint(b"second boot\n", 0)))  # 15
    target(one, in_flight)  # 16: the old session's datagram, delivered late
    target(one, one.poke(connected=True))  # 17: keepalive
    frames.append((STRANGER, HOST_1, frames[2][2]))  # 18: no handshake for this pair
    frames.append((TARGET_1, HOST_1, b"MDBG\x09\x00" + bytes(32)))  # 19: version 9
    frames.append((("10.0.0.5", 9), ("10.0.0.6", 9), b""))  # 20: an empty UDP payload
    frames.append((TARGET_1, HOST_1, b"MDBG\x05\x00" + bytes(10)))  # 21: cut short
    return frames


def packets() -> list[Packet]:
    built = []
    for number, (src, dst, payload) in enumerate(traffic()):
        packet = Ether() / IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1])
        packet = packet / Raw(payload)
        packet.time = T0 + number / 100
        built.append(packet)
    return built


Writer = Callable[[str, list[Packet]], None]


@pytest.fixture(params=[wrpcap, wrpcapng], ids=["pcap", "pcapng"])
def capture(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    writer: Writer = request.param
    path = tmp_path / "sessions.cap"
    writer(str(path), packets())
    return path


def decode(path: Path) -> tuple[list[KdnetRecord], CaptureDecoder]:
    decoder = CaptureDecoder(path, KEY)
    records = [record for record in decoder.records() if isinstance(record, KdnetRecord)]
    return records, decoder


def test_every_frame_is_accounted_for(capture: Path) -> None:
    records, decoder = decode(capture)
    assert [record.frame for record in records] == [*range(1, 12), *range(13, 20), 21]
    outcomes = {record.frame: record.outcome for record in records}
    assert outcomes[10] is Outcome.REPLAY
    assert outcomes[11] is Outcome.AUTHENTICATION_FAILED
    assert outcomes[18] is Outcome.UNDECRYPTABLE
    assert outcomes[19] is outcomes[21] is Outcome.MALFORMED
    assert {frame for frame, outcome in outcomes.items() if outcome is Outcome.DECODED} == {
        *range(1, 10),
        *range(13, 18),
    }
    summary = decoder.summary.to_json()
    assert summary["frames"] == 21
    assert summary["datagrams"] == 19
    assert summary["other_udp"] == 2
    assert summary["authenticated"] == 15
    assert summary["versions"] == {"5": 15}
    assert summary["sessions"] == 3
    assert summary["conversations"] == 2
    assert summary["replays"] == 1
    assert summary["authentication_failures"] == 1
    assert summary["undecryptable"] == 1
    assert summary["malformed"] == 2
    assert summary["control"] == {
        "pokes": 4,
        "pokes_without_host": 3,
        "keepalives": 1,
        "responses": 3,
        "poke_requests": 0,
        "unknown": 0,
    }
    assert summary["data"] == {"target->host": 4, "host->target": 3}
    assert summary["kd_data_packets"] == {"DEBUG_IO": 3, "STATE_CHANGE64": 1}
    assert summary["kd_control_packets"] == {"ACK": 2}
    assert summary["kd_breakins"] == 1


def test_sessions_per_target_and_the_rollover(capture: Path) -> None:
    records, _ = decode(capture)
    by_frame = {record.frame: record for record in records}
    # Each data datagram is decrypted by the session of its own conversation.
    assert [by_frame[frame].session for frame in (3, 4, 7, 8, 9, 15, 16)] == [1, 1, 2, 2, 2, 3, 1]
    assert by_frame[2].control is ControlKind.RESPONSE and by_frame[2].session == 1
    assert by_frame[14].session == 3
    # The late datagram of the first boot still decodes under session 1 after the rollover.
    late = by_frame[16].kd
    assert isinstance(late, KdPacket) and late.packet_type == PacketType.KD_DEBUG_IO
    assert isinstance(by_frame[9].kd, BreakInByte)
    assert by_frame[9].direction is Direction.HOST_TO_TARGET
    assert "new boot" in by_frame[13].note
    assert "the target lost its session" in by_frame[13].note
    assert by_frame[13].keepalive is False
    assert by_frame[17].keepalive is True
    assert by_frame[10].reason is None and by_frame[10].sequence == 1
    assert by_frame[11].reason is DropReason.AUTHENTICATION_FAILED
    assert by_frame[11].direction is Direction.HOST_TO_TARGET  # known from the roles
    assert by_frame[18].direction is None and by_frame[18].reason is DropReason.NO_DATA_KEY
    assert by_frame[19].reason is DropReason.BAD_VERSION
    assert by_frame[21].reason is DropReason.TRUNCATED


def test_sessions_through_the_cli(capture: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cartd", "decode", str(capture), "--key", KEY_TEXT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith("2023-11-14T")]) == 19
    text = result.stdout
    assert 'DbgPrint "first boot\\n"' in text and 'DbgPrint "second boot\\n"' in text
    assert "Exception STATUS_BREAKPOINT (0x80000003) at 0xfffff80000001000, first chance" in text
    assert "BREAKIN  break-in" in text
    assert "[replay: sequence 1 is not above 1]" in text
    assert "authentication failed v5, 54 bytes" in text
    assert "(10.0.0.99:50000 -> 10.0.0.1:50000)" in text
    assert "malformed, 38 bytes: bad_version: protocol version 9" in text
    assert "session 3: data key derived" in text
    assert "Note: 1 datagrams failed authentication" in text
    assert KEY_TEXT not in text + result.stderr


def test_json_lines_name_their_session(capture: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cartd", "decode", str(capture), "--key", KEY_TEXT, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    objects: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    by_frame = {obj["frame"]: obj for obj in objects if "frame" in obj}
    assert by_frame[7]["kd"]["api"] == "Exception"
    assert by_frame[7]["kd"]["code"] == "0x80000003"
    assert by_frame[7]["src"] == "10.0.0.12:50001"
    assert by_frame[16]["session"] == 1 and by_frame[15]["session"] == 3
    assert by_frame[10]["status"] == "replay"
    assert by_frame[18]["direction"] is None
    assert objects[-1]["summary"]["sessions"] == 3
