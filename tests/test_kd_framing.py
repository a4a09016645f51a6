"""KD serial framing: spec section 13 byte vectors, resynchronisation, and the fuzz invariant."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from cartd.kd.constants import PacketType
from cartd.kd.framing import (
    BreakInByte,
    DecoderEvent,
    KdPacket,
    NoiseDetected,
    NoiseKind,
    PacketDecoded,
    PacketDecoder,
    checksum,
    encode_control_packet,
    encode_data_packet,
    encode_packet,
)

ACK_80800001 = bytes.fromhex("69696969 0400 0000 01008080 00000000")
RESET_FROM_HOST = bytes.fromhex("69696969 0600 0000 00000000 00000000")
GET_VERSION_REQUEST = (
    bytes.fromhex("30303030 0200 3800 00008080 77000000")
    + bytes.fromhex("46310000")
    + bytes(52)
    + b"\xaa"
)


def continue_request_wire() -> bytes:
    payload = bytearray(0x38)
    payload[0:4] = bytes.fromhex("36310000")
    payload[0x10:0x14] = bytes.fromhex("02000100")
    return bytes.fromhex("30303030 0200 3800 01008080 6a000000") + bytes(payload) + b"\xaa"


def decode_all(data: bytes, *, byte_by_byte: bool = False) -> list[DecoderEvent]:
    decoder = PacketDecoder()
    events: list[DecoderEvent] = []
    if byte_by_byte:
        for index in range(len(data)):
            events += decoder.receive_data(data[index : index + 1], 0.0)
    else:
        events += decoder.receive_data(data, 0.0)
    events += decoder.handle_timer(100.0)
    return events


def packets(events: list[DecoderEvent]) -> list[KdPacket]:
    return [event.packet for event in events if isinstance(event, PacketDecoded)]


def noise(events: list[DecoderEvent]) -> dict[NoiseKind, int]:
    totals: dict[NoiseKind, int] = {}
    for event in events:
        if isinstance(event, NoiseDetected):
            totals[event.kind] = totals.get(event.kind, 0) + event.size
    return totals


# --- spec section 13 vectors ----------------------------------------------------------------


def test_ack_vector_strips_nothing_itself() -> None:
    assert encode_control_packet(PacketType.KD_ACKNOWLEDGE, 0x80800001) == ACK_80800001


def test_reset_vector() -> None:
    assert encode_control_packet(PacketType.KD_RESET, 0) == RESET_FROM_HOST


def test_get_version_request_vector() -> None:
    payload = bytes.fromhex("46310000") + bytes(52)
    assert checksum(payload) == 0x77
    wire = encode_data_packet(PacketType.KD_STATE_MANIPULATE, 0x80800000, payload)
    assert wire == GET_VERSION_REQUEST
    assert len(wire) == 73


def test_continue_request_vector_decodes() -> None:
    for byte_by_byte in (False, True):
        (packet,) = packets(decode_all(continue_request_wire(), byte_by_byte=byte_by_byte))
        assert packet.packet_type == PacketType.KD_STATE_MANIPULATE
        assert packet.packet_id == 0x80800001
        assert packet.payload[0x10:0x14] == bytes.fromhex("02000100")


def test_read_physical_checksum_vector() -> None:
    payload = bytearray(0x38)
    payload[0:4] = bytes.fromhex("3d310000")
    payload[0x10:0x18] = (0x1000).to_bytes(8, "little")
    payload[0x18:0x1C] = (0x800).to_bytes(4, "little")
    assert checksum(bytes(payload)) == 0x86


# --- decoding -------------------------------------------------------------------------------


def test_control_and_data_packets_whole_and_byte_by_byte() -> None:
    stream = ACK_80800001 + GET_VERSION_REQUEST + RESET_FROM_HOST
    for byte_by_byte in (False, True):
        events = decode_all(stream, byte_by_byte=byte_by_byte)
        decoded = packets(events)
        assert [p.packet_type for p in decoded] == [
            PacketType.KD_ACKNOWLEDGE,
            PacketType.KD_STATE_MANIPULATE,
            PacketType.KD_RESET,
        ]
        assert decoded[0].is_control and not decoded[1].is_control
        assert noise(events) == {}


def test_round_trip_of_encode_packet() -> None:
    original = KdPacket(PacketType.KD_DEBUG_IO, 0x80800001, b"hello\n" * 100)
    (decoded,) = packets(decode_all(encode_packet(original)))
    assert decoded == original


def test_garbage_before_and_between_packets_is_counted() -> None:
    events = decode_all(b"\x01\x02xyz" + ACK_80800001 + b"\xff" * 7 + RESET_FROM_HOST)
    assert len(packets(events)) == 2
    assert noise(events) == {NoiseKind.GARBAGE: 12}


def test_break_in_byte_is_reported_separately() -> None:
    events = decode_all(b"b" + ACK_80800001)
    assert isinstance(events[0], BreakInByte)
    assert len(packets(events)) == 1


def test_bad_checksum_then_recovery() -> None:
    bad = bytearray(GET_VERSION_REQUEST)
    bad[20] ^= 0x01
    events = decode_all(bytes(bad) + GET_VERSION_REQUEST)
    assert len(packets(events)) == 1
    assert NoiseKind.BAD_CHECKSUM in noise(events)


def test_missing_trailer() -> None:
    bad = GET_VERSION_REQUEST[:-1] + b"\x00"
    events = decode_all(bad + ACK_80800001)
    assert [p.packet_type for p in packets(events)] == [PacketType.KD_ACKNOWLEDGE]
    assert NoiseKind.MISSING_TRAILER in noise(events)


def test_oversized_byte_count_is_rejected_at_once() -> None:
    header = bytes.fromhex("30303030 0300 a10f 00008080 00000000")  # ByteCount 4001
    events = decode_all(header + ACK_80800001)
    assert len(packets(events)) == 1
    assert NoiseKind.OVERSIZED in noise(events)


def test_unknown_type_and_malformed_control_are_bad_headers() -> None:
    unknown_type = bytes.fromhex("30303030 2000 0000 00008080 00000000")
    control_with_count = bytes.fromhex("69696969 0400 0100 00008080 00000000")
    events = decode_all(unknown_type + control_with_count + ACK_80800001)
    assert len(packets(events)) == 1
    assert noise(events)[NoiseKind.BAD_HEADER] == 2


def test_dropped_byte_inside_a_packet_still_finds_the_next_one() -> None:
    damaged = GET_VERSION_REQUEST[:30] + GET_VERSION_REQUEST[31:]
    events = decode_all(damaged + GET_VERSION_REQUEST)
    assert len(packets(events)) == 1


def test_truncated_packet_is_declared_after_the_timeout() -> None:
    decoder = PacketDecoder(truncation_timeout=0.5)
    assert decoder.receive_data(GET_VERSION_REQUEST[:40], 10.0) == []
    assert decoder.get_timer() == 10.5
    assert decoder.handle_timer(10.4) == []
    events = decoder.handle_timer(10.5)
    assert NoiseKind.TRUNCATED in noise(events)
    assert decoder.buffered == 0
    assert decoder.get_timer() is None
    (packet,) = packets(decoder.receive_data(GET_VERSION_REQUEST, 11.0))
    assert packet.packet_id == 0x80800000


def test_truncation_keeps_a_complete_packet_hidden_behind_a_bogus_header() -> None:
    # A corrupted byte count swallows the following ACK; once the line goes quiet the decoder
    # must go back and find it.
    bogus = bytes.fromhex("30303030 0300 0008 00008080 00000000")  # claims 2048 bytes
    decoder = PacketDecoder(truncation_timeout=0.5)
    events = decoder.receive_data(bogus + ACK_80800001, 0.0)
    assert packets(events) == []
    events = decoder.handle_timer(1.0)
    assert [p.packet_type for p in packets(events)] == [PacketType.KD_ACKNOWLEDGE]


def test_partial_leader_is_kept_across_reads() -> None:
    decoder = PacketDecoder()
    assert decoder.receive_data(b"zz" + ACK_80800001[:3], 0.0) == [
        NoiseDetected(NoiseKind.GARBAGE, 2)
    ]
    (event,) = decoder.receive_data(ACK_80800001[3:], 0.0)
    assert isinstance(event, PacketDecoded)


def test_five_leader_bytes_resynchronise_on_the_last_four() -> None:
    events = decode_all(b"0" + GET_VERSION_REQUEST)
    assert len(packets(events)) == 1


# --- fuzz -----------------------------------------------------------------------------------

VALID_PACKETS = [ACK_80800001, RESET_FROM_HOST, GET_VERSION_REQUEST, continue_request_wire()]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_and_never_yield_a_corrupt_packet(data: bytes) -> None:
    for byte_by_byte in (False, True):
        for event in decode_all(data, byte_by_byte=byte_by_byte):
            if isinstance(event, PacketDecoded):
                # Anything delivered re-encodes to bytes that occur in the input.
                assert encode_packet(event.packet) in data


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(range(len(VALID_PACKETS))), st.binary(max_size=40)),
        max_size=12,
    )
)
def test_packets_separated_by_clean_garbage_all_arrive(
    pieces: list[tuple[int, bytes]],
) -> None:
    # Garbage without leader bytes cannot fake or hide a packet: every packet arrives.
    stream = b""
    for index, garbage in pieces:
        stream += garbage.replace(b"0", b"x").replace(b"i", b"x") + VALID_PACKETS[index]
    for byte_by_byte in (False, True):
        assert [
            encode_packet(p) for p in packets(decode_all(stream, byte_by_byte=byte_by_byte))
        ] == [VALID_PACKETS[index] for index, _ in pieces]


def test_random_corruption_only_loses_damaged_packets() -> None:
    rng = random.Random(7)
    stream = bytearray()
    intact = 0
    for _ in range(500):
        packet = bytearray(VALID_PACKETS[rng.randrange(len(VALID_PACKETS))])
        if rng.random() < 0.2:
            packet[rng.randrange(len(packet))] ^= 1 << rng.randrange(8)
        else:
            intact += 1
        stream += packet
    received = packets(decode_all(bytes(stream)))
    assert len(received) >= intact
    for packet in received:
        assert encode_packet(packet) in VALID_PACKETS or encode_packet(packet) in stream
