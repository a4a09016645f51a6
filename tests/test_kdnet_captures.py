"""KDNET against two real Windows captures (shared/vectors/kdnet).

Capture A (windbg-uncut.pcapng, key 8.8.8.8, v4): every datagram authenticates and re-encrypts
byte for byte, its handshake gives the data key of kdnet-vectors.md, every data-channel body is
one KD packet, and a `KdnetTarget` and a `KdnetHost` together reproduce the whole capture.
Capture B (kek-v5.pcap, key 1.2.3.4, v5): the pokes authenticate, the rest is undecryptable
(the response that set its data key is not in the capture) and is counted, never raised.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter

from kdnet_vectors import (
    KEK_HOST,
    KEK_KEY,
    KEK_TARGET,
    KEK_V5,
    PACKET1_RESPONSE,
    SESSION_VECTORS,
    WINDBG_DATA_KEY,
    WINDBG_HOST,
    WINDBG_KEY,
    WINDBG_TARGET,
    WINDBG_UNCUT,
    CapturedDatagram,
    read_capture,
)

from cartd.kd.constants import CONTROL_PACKET_LEADER, DATA_PACKET_LEADER, PacketType
from cartd.kd.framing import checksum
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import (
    Channel,
    Direction,
    DropReason,
    KdnetDatagram,
    KdnetDecodeError,
    pull_datagram,
    push_datagram,
)
from cartd.kd.kdnet.events import (
    DatagramDropped,
    DataReceived,
    KdnetEvent,
    KeepaliveReceived,
    SessionReason,
    SessionStarted,
)
from cartd.kd.kdnet.handshake import EMPTY_ADDRESS, PokeAddress, pull_poke, pull_response, push_poke
from cartd.kd.kdnet.host import KdnetHost
from cartd.kd.kdnet.keys import derive_data_key, parse_key
from cartd.kd.kdnet.target import KdnetTarget

KD_HEADER = struct.Struct("<IHHII")  # leader, type, byte count, id, checksum (kdnet.md 3.4)
UNUSED_PACKET_SIZE = 12  # kdnet.md 3.4 item 1: leader 0, type 0, length 0, host IPv4

# What capture A holds (kdnet.md sections 3 and 5; counted by the tests below).
WINDBG_DATAGRAMS = 955
WINDBG_POKES = 427  # 1 before the handshake + 426 keepalives
WINDBG_RESPONSES = 1
WINDBG_TARGET_DATA = 265
WINDBG_HOST_DATA = 262
WINDBG_KD_DATA_PACKETS = {
    PacketType.KD_STATE_MANIPULATE: 187,
    PacketType.KD_DEBUG_IO: 7,
    PacketType.KD_STATE_CHANGE64: 3,
    PacketType.KD_FILE_IO: 66,
}  # 263 in all, as kdnet.md 3.4 says
WINDBG_KD_CONTROL_PACKETS = {
    PacketType.KD_ACKNOWLEDGE: 259,
    PacketType.KD_RESEND: 2,
    PacketType.KD_RESET: 2,
}  # 263 in all: every data packet ACKed, plus the RESENDs and RESETs of 3.4 and 4
WINDBG_UNUSED_PACKETS = 1

KEK_DATAGRAMS = 704
KEK_POKES = 10  # 5 pokes, each captured twice
KEK_UNDECRYPTABLE = 694


def decrypt_capture_a() -> list[tuple[CapturedDatagram, KdnetDatagram]]:
    """Every datagram of capture A, decrypted statelessly; the data key from its handshake."""
    key = parse_key(WINDBG_KEY)
    data_key: bytes | None = None
    decoded = []
    for item in read_capture(WINDBG_UNCUT):
        datagram = pull_datagram(item.payload, key, data_key=data_key)
        if datagram.channel is Channel.CONTROL and item.src == WINDBG_HOST:
            data_key = derive_data_key(key, datagram.body)
        decoded.append((item, datagram))
    return decoded


# --- Capture A ----------------------------------------------------------------------------------


def test_capture_a_every_datagram_authenticates_and_reencrypts() -> None:
    key = parse_key(WINDBG_KEY)
    decoded = decrypt_capture_a()
    assert len(decoded) == WINDBG_DATAGRAMS
    for item, datagram in decoded:
        assert datagram.version == 4
        expected = (
            Direction.TARGET_TO_HOST if item.src == WINDBG_TARGET else Direction.HOST_TO_TARGET
        )
        assert datagram.direction is expected
        data_key = WINDBG_DATA_KEY if datagram.channel is Channel.DATA else None
        assert push_datagram(datagram, key, data_key=data_key) == item.payload, item.index
        # The capture pads as section 2 says; our own padding reproduces it too.
        smallest = KdnetDatagram(
            version=datagram.version,
            channel=datagram.channel,
            sequence=datagram.sequence,
            direction=datagram.direction,
            body=datagram.body,
        )
        assert push_datagram(smallest, key, data_key=data_key) == item.payload


def test_capture_a_starts_with_the_vectors() -> None:
    capture = read_capture(WINDBG_UNCUT)
    for vector in SESSION_VECTORS:
        item = capture[vector.index]
        assert item.payload == vector.raw, vector.name
        assert (item.src == WINDBG_TARGET) == vector.from_target


def test_capture_a_handshake_gives_the_data_key() -> None:
    key = parse_key(WINDBG_KEY)
    responses = [
        (item, datagram)
        for item, datagram in decrypt_capture_a()
        if datagram.channel is Channel.CONTROL and item.src == WINDBG_HOST
    ]
    assert len(responses) == WINDBG_RESPONSES
    [(item, response)] = responses
    assert item.index == 1
    assert response.body == PACKET1_RESPONSE.plaintext[8:330]
    assert derive_data_key(key, response.body) == WINDBG_DATA_KEY
    poke = pull_datagram(read_capture(WINDBG_UNCUT)[0].payload, key)
    assert pull_response(response.body).client_nonce == pull_poke(poke.body).nonce
    assert response.sequence == poke.sequence == 3


def test_capture_a_per_direction_codecs_accept_everything() -> None:
    """Replay protection passes real traffic: data sequences go 1, 2, 3 ... each way."""
    key = parse_key(WINDBG_KEY)
    host = DatagramCodec(key, local_direction=Direction.HOST_TO_TARGET, version=4)
    target = DatagramCodec(key, local_direction=Direction.TARGET_TO_HOST, version=4)
    sequences: dict[tuple[Channel, Direction], list[int]] = {}
    for item in read_capture(WINDBG_UNCUT):
        receiver = host if item.src == WINDBG_TARGET else target
        datagram = receiver.decode(item.payload)
        assert isinstance(datagram, KdnetDatagram), (item.index, datagram)
        sequences.setdefault((datagram.channel, datagram.direction), []).append(datagram.sequence)
        if datagram.channel is Channel.CONTROL and receiver is target:
            data_key = derive_data_key(key, datagram.body)
            host.install_data_key(data_key)
            target.install_data_key(data_key)
    assert host.drop_counters == target.drop_counters == {}
    assert sequences[Channel.DATA, Direction.TARGET_TO_HOST] == list(range(1, 266))
    assert sequences[Channel.DATA, Direction.HOST_TO_TARGET] == list(range(1, 263))
    # Pokes: the target's seconds counter, +3 per poke (kdnet.md 3.1).
    assert sequences[Channel.CONTROL, Direction.TARGET_TO_HOST] == list(range(3, 1282, 3))
    assert sequences[Channel.CONTROL, Direction.HOST_TO_TARGET] == [3]


def test_capture_a_pokes() -> None:
    key = parse_key(WINDBG_KEY)
    pokes = [
        (item, pull_poke(datagram.body))
        for item, datagram in decrypt_capture_a()
        if datagram.channel is Channel.CONTROL and item.src == WINDBG_TARGET
    ]
    assert len(pokes) == WINDBG_POKES
    _, first = pokes[0]
    assert first.connected_host == EMPTY_ADDRESS
    assert first.connected_host.is_empty
    assert first.nonce.hex().startswith("c197")
    for number, (item, poke) in enumerate(pokes):
        body = pull_datagram(item.payload, key).body
        assert push_poke(poke) == body
        assert poke.target == PokeAddress.from_peer(WINDBG_TARGET)
        assert poke.configured_host.to_peer() == WINDBG_HOST
        assert poke.counter == (first.counter + number) % 2**16
        assert poke.boot_id == first.boot_id
        if number:
            assert poke.connected_host.to_peer() == WINDBG_HOST  # a keepalive (3.3)
    gaps = [later[0].time - earlier[0].time for earlier, later in itertools.pairwise(pokes)]
    # 3.016-3.018 s apart, except right after the handshake, where the target was busy with
    # its first KD exchange for 4.15 s; the seconds counter still went up by exactly 3.
    assert 4.1 < gaps[0] < 4.2
    assert all(3.0 < gap < 3.02 for gap in gaps[1:])


def test_capture_a_data_channel_carries_one_kd_packet_per_datagram() -> None:
    data_types: Counter[PacketType] = Counter()
    control_types: Counter[PacketType] = Counter()
    unused = []
    by_direction: Counter[Direction] = Counter()
    for item, datagram in decrypt_capture_a():
        if datagram.channel is not Channel.DATA:
            continue
        by_direction[datagram.direction] += 1
        body = datagram.body
        if len(body) == UNUSED_PACKET_SIZE:
            unused.append((item, body))
            continue
        leader, packet_type, byte_count, _, packet_checksum = KD_HEADER.unpack_from(body)
        if leader == DATA_PACKET_LEADER:
            # One KD packet, no 0xAA trailer: 16 + ByteCount exactly (3.4).
            assert len(body) == KD_HEADER.size + byte_count
            assert checksum(body[KD_HEADER.size :]) == packet_checksum
            data_types[PacketType(packet_type)] += 1
        else:
            assert leader == CONTROL_PACKET_LEADER, item.index
            assert len(body) == KD_HEADER.size
            assert byte_count == packet_checksum == 0
            control_types[PacketType(packet_type)] += 1
    assert by_direction == {
        Direction.TARGET_TO_HOST: WINDBG_TARGET_DATA,
        Direction.HOST_TO_TARGET: WINDBG_HOST_DATA,
    }
    assert data_types == WINDBG_KD_DATA_PACKETS
    assert control_types == WINDBG_KD_CONTROL_PACKETS
    assert sum(data_types.values()) == sum(control_types.values()) == 263
    assert len(unused) == WINDBG_UNUSED_PACKETS
    [(item, body)] = unused
    assert item.index == 2 and item.src == WINDBG_TARGET
    # Leader 0, type UNUSED, length 0, then the host's IPv4 192.168.2.1 (3.4 item 1).
    assert body == bytes(4) + struct.pack("<HH", PacketType.UNUSED, 0) + bytes([1, 2, 168, 192])


def events_of(endpoint: KdnetHost | KdnetTarget) -> list[KdnetEvent]:
    events = []
    while (event := endpoint.next_event()) is not None:
        events.append(event)
    return events


def test_capture_a_is_what_our_two_roles_send_each_other() -> None:
    """A `KdnetTarget` given the capture's nonce and a `KdnetHost` given its random bytes,
    driven by the capture's clock, send every one of the 955 datagrams byte for byte."""
    key = parse_key(WINDBG_KEY)
    capture = read_capture(WINDBG_UNCUT)
    nonce = pull_poke(pull_datagram(capture[0].payload, key).body).nonce
    host_nonce = pull_response(pull_datagram(capture[1].payload, key).body).host_nonce
    t0 = capture[0].time
    # The first poke says uptime 3: the target booted one poke interval before it.
    target = KdnetTarget(
        key,
        address=WINDBG_TARGET,
        host=WINDBG_HOST,
        now=t0 - 3.0,
        version=4,
        random_bytes=lambda size: nonce,
    )
    host = KdnetHost(key, random_bytes=lambda size: host_nonce)
    sender: KdnetHost | KdnetTarget
    receiver: KdnetHost | KdnetTarget
    for item in capture:
        is_control = item.payload[5] == Channel.CONTROL
        if item.src == WINDBG_TARGET:
            if is_control:
                assert target.get_timer() <= item.time
                target.handle_timer(item.time)
            else:
                target.send_data(pull_datagram(item.payload, key, data_key=WINDBG_DATA_KEY).body)
            sender, receiver = target, host
        else:
            if not is_control:  # the response went out when the host read poke 0
                host.send_data(pull_datagram(item.payload, key, data_key=WINDBG_DATA_KEY).body)
            sender, receiver = host, target
        assert sender.datagrams_to_send() == [(item.payload, item.dst)], item.index
        receiver.receive_datagram(item.payload, item.src, item.time)
    assert host.datagrams_to_send() == target.datagrams_to_send() == []

    host_events = events_of(host)
    target_events = events_of(target)
    assert host_events[0] == SessionStarted(
        peer=WINDBG_TARGET, version=4, reason=SessionReason.FIRST_CONTACT
    )
    assert target_events[0] == SessionStarted(
        peer=WINDBG_HOST, version=4, reason=SessionReason.FIRST_CONTACT
    )
    assert Counter(type(event) for event in host_events) == {
        SessionStarted: 1,
        KeepaliveReceived: WINDBG_POKES - 1,
        DataReceived: WINDBG_TARGET_DATA,
    }
    assert Counter(type(event) for event in target_events) == {
        SessionStarted: 1,
        DataReceived: WINDBG_HOST_DATA,
    }
    assert host.drop_counters == target.drop_counters == {}
    assert target.uptime == 1281


# --- Capture B ----------------------------------------------------------------------------------


def test_capture_b_pokes_authenticate_as_version_5_and_the_rest_is_undecryptable() -> None:
    key = parse_key(KEK_KEY)
    capture = read_capture(KEK_V5)
    assert len(capture) == KEK_DATAGRAMS
    codec = DatagramCodec(key, local_direction=Direction.HOST_TO_TARGET)
    pokes = []
    undecryptable = 0
    for item in capture:
        result = codec.decode(item.payload)
        if isinstance(result, KdnetDatagram):
            assert result.version == 5
            assert result.channel is Channel.CONTROL
            assert item.src == KEK_TARGET
            pokes.append((result, pull_poke(result.body)))
        else:
            assert result is DropReason.NO_DATA_KEY
            undecryptable += 1
            try:
                pull_datagram(item.payload, key)
            except KdnetDecodeError as exc:
                assert exc.reason is DropReason.NO_DATA_KEY
            else:
                raise AssertionError("a data datagram decoded without a data key")
    assert len(pokes) == KEK_POKES
    assert undecryptable == KEK_UNDECRYPTABLE
    assert codec.drop_counters == {DropReason.NO_DATA_KEY: KEK_UNDECRYPTABLE}
    assert [datagram.sequence for datagram, _ in pokes] == [
        2508,
        2508,
        2511,
        2511,
        2514,
        2514,
        2517,
        2517,
        2520,
        2520,
    ]
    for datagram, poke in pokes:
        assert len(datagram.body) == 344
        assert push_poke(poke) == datagram.body
        assert poke.target.to_peer() == KEK_TARGET
        assert poke.configured_host.to_peer() == KEK_HOST
        assert poke.connected_host.to_peer() == KEK_HOST  # already connected: keepalives
    assert len({poke.nonce for _, poke in pokes}) == KEK_POKES // 2


def test_capture_b_through_a_fresh_host() -> None:
    """A host that starts in the middle of capture B takes the session over with the first poke,
    drops the duplicate copies as replays, hears the rest as keepalives, and counts all the data
    (under another data key, or from the other host) without raising."""
    key = parse_key(KEK_KEY)
    host = KdnetHost(key, random_bytes=lambda size: bytes(size))
    for item in read_capture(KEK_V5):
        host.receive_datagram(item.payload, item.src, item.time)
    events = events_of(host)
    assert events[0] == SessionStarted(peer=KEK_TARGET, version=5, reason=SessionReason.TAKEOVER)
    [(response, destination)] = host.datagrams_to_send()
    assert destination == KEK_TARGET
    answered = pull_datagram(response, key)
    assert answered.version == 5 and answered.sequence == 2508
    assert Counter(type(event) for event in events) == {
        SessionStarted: 1,
        KeepaliveReceived: 4,
        DatagramDropped: 5 + 346 + 348,
    }
    assert host.drop_counters == {
        DropReason.REPLAY: 5,  # the second copy of each poke
        DropReason.AUTHENTICATION_FAILED: 346,  # the target's data, under the real host's key
        DropReason.WRONG_PEER: 348,  # the real host's datagrams to the target
    }
