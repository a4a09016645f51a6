"""KDNET handshake: poke and response bodies, and the two roles talking to each other in memory.

The roles run on a fake clock: time only moves when a test says so, and timers are checked as
exact deadlines.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kdnet_vectors import PACKET0_POKE, PACKET1_RESPONSE, WINDBG_HOST, WINDBG_TARGET

from cartd.kd.errors import KdUsageError
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import (
    KDNET_VERSION_4,
    KDNET_VERSION_5,
    Channel,
    Direction,
    DropReason,
    KdnetDatagram,
    KdnetDecodeError,
    pull_datagram,
)
from cartd.kd.kdnet.events import (
    DatagramDropped,
    DataReceived,
    KdnetEvent,
    KeepaliveReceived,
    SessionReason,
    SessionStarted,
)
from cartd.kd.kdnet.handshake import (
    EMPTY_ADDRESS,
    HandshakeKind,
    PeerAddress,
    Poke,
    PokeAddress,
    Response,
    handshake_kind,
    next_nonce,
    pull_poke,
    pull_response,
    push_poke,
    push_response,
)
from cartd.kd.kdnet.host import KdnetHost, PokeReplayGuard, counter_is_newer
from cartd.kd.kdnet.keys import derive_data_key, parse_key
from cartd.kd.kdnet.target import KdnetTarget

KEY = parse_key("2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p")
HOST = ("10.0.0.1", 50000)
TARGET = ("10.0.0.2", 50000)
OTHER_HOST = ("10.0.0.9", 50000)
POKE_BODY = PACKET0_POKE.plaintext[8:]
RESPONSE_BODY = PACKET1_RESPONSE.plaintext[8:330]
ACK = bytes.fromhex("69696969 0400 0000 00000080 00000000")
BREAK_IN = b"b"


def counting_bytes(start: int) -> Callable[[int], bytes]:
    """A deterministic random source: 0x00.., 0x01.., ... per call, from `start`."""
    counter = itertools.count(start)

    def random_bytes(size: int) -> bytes:
        return bytes([next(counter) % 256]) * size

    return random_bytes


def new_target(
    now: float = 0.0, *, version: int = KDNET_VERSION_5, poke_interval: float = 3.0
) -> KdnetTarget:
    return KdnetTarget(
        KEY,
        address=TARGET,
        host=HOST,
        now=now,
        version=version,
        poke_interval=poke_interval,
        random_bytes=counting_bytes(0x40),
    )


def new_host() -> KdnetHost:
    return KdnetHost(KEY, random_bytes=counting_bytes(0x80))


def events(endpoint: KdnetHost | KdnetTarget) -> list[KdnetEvent]:
    found = []
    while (event := endpoint.next_event()) is not None:
        found.append(event)
    return found


def deliver(
    sender: KdnetHost | KdnetTarget,
    receivers: dict[PeerAddress, KdnetHost | KdnetTarget],
    source: PeerAddress,
    now: float,
) -> list[bytes]:
    sent = []
    for datagram, destination in sender.datagrams_to_send():
        sent.append(datagram)
        if destination in receivers:
            receivers[destination].receive_datagram(datagram, source, now)
    return sent


def pump(host: KdnetHost, target: KdnetTarget, now: float) -> int:
    """Move datagrams both ways until both are quiet; how many moved."""
    moved = 0
    while True:
        step = len(deliver(target, {HOST: host}, TARGET, now))
        step += len(deliver(host, {TARGET: target}, HOST, now))
        if not step:
            return moved
        moved += step


def connect(now: float = 0.0) -> tuple[KdnetHost, KdnetTarget, float]:
    host, target = new_host(), new_target(now)
    now = target.get_timer()
    target.handle_timer(now)
    pump(host, target, now)
    assert host.connected and target.connected
    events(host), events(target)
    return host, target, now


# --- Bodies -------------------------------------------------------------------------------------


def test_poke_vector() -> None:
    poke = pull_poke(POKE_BODY)
    assert poke.format_version == 1
    assert poke.nonce == bytes.fromhex(
        "c19792dfac7aa1dfe007010018000b00240005000000070088f7570043a12600"
    )
    assert poke.counter == 0x97C1
    assert poke.boot_id == poke.nonce[2:]
    assert poke.target.to_peer() == WINDBG_TARGET
    assert poke.configured_host.to_peer() == WINDBG_HOST
    assert poke.connected_host == EMPTY_ADDRESS
    assert poke.connected_host.is_empty
    assert push_poke(poke) == POKE_BODY
    assert handshake_kind(POKE_BODY) is HandshakeKind.POKE


def test_response_vector() -> None:
    response = pull_response(RESPONSE_BODY)
    assert response.client_nonce == pull_poke(POKE_BODY).nonce
    assert response.host_nonce == bytes.fromhex(
        "41b4fa1b2ddd14ee3eeb8db987c0c7257ce62eef126ab74ef212136c100c540b"
    )
    assert push_response(response) == RESPONSE_BODY
    assert handshake_kind(RESPONSE_BODY) is HandshakeKind.RESPONSE


@pytest.mark.parametrize(
    "body",
    [
        b"",
        POKE_BODY[:-1],
        POKE_BODY + b"\0",
        POKE_BODY[:1] + b"\x02" + POKE_BODY[2:],
        RESPONSE_BODY,
        bytes(344),
    ],
)
def test_a_body_that_is_not_a_poke_is_a_bad_handshake(body: bytes) -> None:
    with pytest.raises(KdnetDecodeError) as caught:
        pull_poke(body)
    assert caught.value.reason is DropReason.BAD_HANDSHAKE


def test_a_body_that_is_not_a_response_is_a_bad_handshake() -> None:
    for body in (RESPONSE_BODY[:-1], POKE_BODY, b"\x01\x02"):
        with pytest.raises(KdnetDecodeError):
            pull_response(body)
    assert handshake_kind(b"") is None
    assert handshake_kind(b"\x01\x07") is None


def test_building_bodies_checks_the_caller() -> None:
    with pytest.raises(KdUsageError):
        push_response(Response(client_nonce=bytes(31), host_nonce=bytes(32)))
    with pytest.raises(KdUsageError):
        push_poke(
            Poke(
                nonce=bytes(32),
                target=EMPTY_ADDRESS,
                configured_host=EMPTY_ADDRESS,
                format_version=256,
            )
        )
    with pytest.raises(KdUsageError):
        PokeAddress.from_peer(("debug-host.example", 50000))


def test_addresses() -> None:
    v4 = PokeAddress.from_peer(("192.168.2.1", 51111))
    assert v4.ip == ipaddress.IPv6Address("::ffff:192.168.2.1")
    assert v4.to_peer() == ("192.168.2.1", 51111)
    v6 = PokeAddress.from_peer(("fe80::1", 50000))
    assert v6.to_peer() == ("fe80::1", 50000)
    assert PokeAddress(ip=ipaddress.IPv6Address("::"), port=0).is_empty
    assert not v4.is_empty


def test_nonce_counter_wraps() -> None:
    nonce = b"\xff\xff" + bytes(range(30))
    assert next_nonce(nonce) == b"\0\0" + bytes(range(30))
    assert counter_is_newer(0, 0xFFFF)
    assert counter_is_newer(5, 4)
    assert not counter_is_newer(4, 4)
    assert not counter_is_newer(3, 4)
    assert not counter_is_newer(0x8004, 4)


def poke_with(nonce: bytes) -> Poke:
    return Poke(nonce=nonce, target=EMPTY_ADDRESS, configured_host=EMPTY_ADDRESS)


def test_poke_replay_guard() -> None:
    guard = PokeReplayGuard(boots_remembered=2)
    boot_a = b"\x01\x00" + b"A" * 30
    boot_b = b"\x07\x00" + b"B" * 30
    assert guard.accept(poke_with(boot_a))
    assert not guard.accept(poke_with(boot_a))  # the same poke again
    assert guard.accept(poke_with(next_nonce(boot_a)))
    assert guard.accept(poke_with(boot_b))  # a reboot
    assert not guard.accept(poke_with(next_nonce(next_nonce(boot_a))))  # an earlier boot
    assert guard.accept(poke_with(next_nonce(boot_b)))


# --- The roles in memory ------------------------------------------------------------------------


def test_target_pokes_every_three_seconds_until_answered() -> None:
    target = new_target(100.0)
    assert target.get_timer() == 103.0
    target.handle_timer(102.9)
    assert target.datagrams_to_send() == []
    pokes = []
    for expected_time in (103.0, 106.0, 109.0):
        assert target.get_timer() == expected_time
        target.handle_timer(expected_time)
        [(datagram, destination)] = target.datagrams_to_send()
        assert destination == HOST
        assert len(datagram) == 374
        pokes.append(pull_datagram(datagram, KEY))
    assert [datagram.sequence for datagram in pokes] == [3, 6, 9]
    bodies = [pull_poke(datagram.body) for datagram in pokes]
    assert [poke.counter for poke in bodies] == [0x4040, 0x4041, 0x4042]
    assert all(poke.connected_host.is_empty for poke in bodies)
    assert bodies[0].target == PokeAddress.from_peer(TARGET)
    assert bodies[0].configured_host == PokeAddress.from_peer(HOST)
    assert all(datagram.version == 5 for datagram in pokes)


def test_handshake_then_data_both_ways() -> None:
    host, target = new_host(), new_target()
    assert host.get_timer() is None
    now = target.get_timer()
    target.handle_timer(now)
    [(poke, _)] = target.datagrams_to_send()
    host.receive_datagram(poke, TARGET, now)
    [(response, destination)] = host.datagrams_to_send()
    assert destination == TARGET and len(response) == 358
    assert events(host) == [
        SessionStarted(peer=TARGET, version=5, reason=SessionReason.FIRST_CONTACT)
    ]
    answered = pull_datagram(response, KEY)
    assert answered.direction is Direction.HOST_TO_TARGET
    assert answered.sequence == pull_datagram(poke, KEY).sequence
    assert answered.padding == 6
    assert answered.body[34:66] == bytes([0x80]) * 32  # the host's random bytes
    target.receive_datagram(response, HOST, now)
    assert events(target) == [
        SessionStarted(peer=HOST, version=5, reason=SessionReason.FIRST_CONTACT)
    ]
    assert target.connected_host == HOST and host.peer == TARGET

    unused = bytes(8) + bytes([10, 0, 0, 1])
    target.send_data(unused)
    host.send_data(BREAK_IN)
    target.send_data(ACK)
    host.send_data(ACK)
    pump(host, target, now + 0.1)
    assert events(host) == [
        DataReceived(body=unused, sequence=1),
        DataReceived(body=ACK, sequence=2),
    ]
    assert events(target) == [
        DataReceived(body=BREAK_IN, sequence=1),
        DataReceived(body=ACK, sequence=2),
    ]
    assert host.drop_counters == target.drop_counters == {}


def test_both_sides_derive_the_same_data_key() -> None:
    host, target = new_host(), new_target()
    target.handle_timer(target.get_timer())
    [(poke, _)] = target.datagrams_to_send()
    host.receive_datagram(poke, TARGET, 3.0)
    [(response, _)] = host.datagrams_to_send()
    data_key = derive_data_key(KEY, pull_datagram(response, KEY).body)
    target.receive_datagram(response, HOST, 3.0)
    target.send_data(ACK)
    host.send_data(ACK)
    [(from_target, _)] = target.datagrams_to_send()
    [(from_host, _)] = host.datagrams_to_send()
    assert pull_datagram(from_target, KEY, data_key=data_key).body == ACK
    assert pull_datagram(from_host, KEY, data_key=data_key).body == ACK


def test_keepalive_pokes_are_not_answered() -> None:
    host, target, now = connect()
    for _ in range(3):
        now = target.get_timer()
        target.handle_timer(now)
        [(poke, destination)] = target.datagrams_to_send()
        assert destination == HOST
        assert pull_poke(pull_datagram(poke, KEY).body).connected_host.to_peer() == HOST
        host.receive_datagram(poke, TARGET, now)
        assert host.datagrams_to_send() == []
    assert events(host) == [
        KeepaliveReceived(peer=TARGET, uptime=6),
        KeepaliveReceived(peer=TARGET, uptime=9),
        KeepaliveReceived(peer=TARGET, uptime=12),
    ]
    assert host.drop_counters == {}


def test_a_rebooted_target_starts_a_new_session() -> None:
    host, target, now = connect()
    target.send_data(ACK)
    host.send_data(ACK)
    pump(host, target, now)
    events(host), events(target)
    target.send_data(b"stale")
    [(stale, _)] = target.datagrams_to_send()

    target.reboot(now + 10.0)
    assert not target.connected
    now = target.get_timer()
    assert now == 16.0
    target.handle_timer(now)
    [(poke, _)] = target.datagrams_to_send()
    assert pull_poke(pull_datagram(poke, KEY).body).connected_host.is_empty
    host.receive_datagram(poke, TARGET, now)
    assert events(host) == [SessionStarted(peer=TARGET, version=5, reason=SessionReason.ROLLOVER)]
    pump(host, target, now)
    assert events(target) == [
        SessionStarted(peer=HOST, version=5, reason=SessionReason.FIRST_CONTACT)
    ]
    # Under the new key, the data sequences start again at 1 on both sides...
    target.send_data(ACK)
    host.send_data(ACK)
    pump(host, target, now)
    assert events(host) == [DataReceived(body=ACK, sequence=1)]
    assert events(target) == [DataReceived(body=ACK, sequence=1)]
    # ... and a datagram of the old session no longer authenticates.
    host.receive_datagram(stale, TARGET, now)
    assert events(host) == [
        DatagramDropped(reason=DropReason.AUTHENTICATION_FAILED, peer=TARGET, size=len(stale))
    ]


def test_a_restarted_target_on_a_new_port_is_a_rollover_too() -> None:
    host, _, now = connect()
    moved = KdnetTarget(KEY, address=TARGET, host=HOST, now=now, random_bytes=counting_bytes(9))
    now = moved.get_timer()
    moved.handle_timer(now)
    [(poke, _)] = moved.datagrams_to_send()
    new_port = (TARGET[0], 50001)
    host.receive_datagram(poke, new_port, now)
    assert events(host) == [SessionStarted(peer=new_port, version=5, reason=SessionReason.ROLLOVER)]
    assert host.datagrams_to_send()[0][1] == new_port


def test_replayed_pokes_are_dropped() -> None:
    host, target = new_host(), new_target()
    target.handle_timer(3.0)
    [(first_poke, _)] = target.datagrams_to_send()
    host.receive_datagram(first_poke, TARGET, 3.0)
    pump(host, target, 3.0)
    events(host)
    # An attacker (or a capture played back) sends the pre-session poke again: it must not
    # roll the session over.
    host.receive_datagram(first_poke, TARGET, 4.0)
    assert host.datagrams_to_send() == []
    assert events(host) == [DatagramDropped(reason=DropReason.REPLAY, peer=TARGET, size=374)]
    # After a reboot, the old boot's pokes are replays too.
    target.reboot(5.0)
    target.handle_timer(8.0)
    pump(host, target, 8.0)
    assert [type(event) for event in events(host)] == [SessionStarted]
    host.receive_datagram(first_poke, TARGET, 9.0)
    assert host.drop_counters == {DropReason.REPLAY: 2}


def test_pokes_from_another_target_are_ignored_during_a_session() -> None:
    host, _, now = connect()
    intruder = new_target(now)
    intruder.handle_timer(intruder.get_timer())
    [(poke, _)] = intruder.datagrams_to_send()
    host.receive_datagram(poke, ("10.0.0.3", 50000), now + 3)
    assert host.datagrams_to_send() == []
    assert host.peer == TARGET
    assert host.drop_counters == {DropReason.OTHER_TARGET: 1}


def test_a_target_connected_elsewhere_is_taken_over() -> None:
    _, target, now = connect()
    fresh = KdnetHost(KEY, random_bytes=counting_bytes(0x20))
    now = target.get_timer()
    target.handle_timer(now)
    [(poke, _)] = target.datagrams_to_send()
    fresh.receive_datagram(poke, TARGET, now)
    assert events(fresh) == [SessionStarted(peer=TARGET, version=5, reason=SessionReason.TAKEOVER)]
    [(response, _)] = fresh.datagrams_to_send()
    target.receive_datagram(response, OTHER_HOST, now)
    assert events(target) == [
        SessionStarted(peer=OTHER_HOST, version=5, reason=SessionReason.TAKEOVER)
    ]
    assert target.connected_host == OTHER_HOST
    # The first host is no longer heard by the target.
    target.send_data(ACK)
    [(_, destination)] = target.datagrams_to_send()
    assert destination == OTHER_HOST


def test_host_triggered_poke() -> None:
    host, target = new_host(), new_target(0.0)
    host.request_poke(TARGET, 0.5, repeat=True)
    [(request, destination)] = host.datagrams_to_send()
    assert destination == TARGET
    assert len(request) == 38
    decoded = pull_datagram(request, KEY)
    assert decoded.channel is Channel.CONTROL
    assert decoded.direction is Direction.HOST_TO_TARGET
    assert decoded.body == b"" and decoded.padding == 8
    assert host.get_timer() == 1.0
    host.handle_timer(1.0)
    assert len(host.datagrams_to_send()) == 1
    assert host.get_timer() == 1.5

    target.receive_datagram(request, HOST, 1.2)
    [(poke, destination)] = target.datagrams_to_send()
    assert destination == HOST
    assert pull_datagram(poke, KEY).sequence == 0  # the seconds counter has not ticked yet
    host.receive_datagram(poke, TARGET, 1.2)
    pump(host, target, 1.2)
    assert host.connected and target.connected
    assert host.get_timer() is None  # connected: no more requests
    host.handle_timer(1.5)
    assert host.datagrams_to_send() == []


def test_host_stops_poke_requests_on_demand() -> None:
    host = new_host()
    host.request_poke(TARGET, 0.0, repeat=True)
    host.stop_poke_requests()
    assert host.get_timer() is None


def test_data_from_a_target_bound_elsewhere_gets_a_poke_request() -> None:
    _, target, now = connect()
    fresh = new_host()
    target.send_data(ACK)
    target.send_data(ACK)
    [(first, _), (second, _)] = target.datagrams_to_send()
    fresh.receive_datagram(first, TARGET, now)
    fresh.receive_datagram(second, TARGET, now + 0.1)  # within the interval: no second request
    [(request, destination)] = fresh.datagrams_to_send()
    assert destination == TARGET
    assert pull_datagram(request, KEY).body == b""
    assert fresh.drop_counters == {DropReason.NO_DATA_KEY: 2}
    # The target answers at once, the fresh host takes it over.
    target.receive_datagram(request, OTHER_HOST, now + 0.2)
    deliver(target, {OTHER_HOST: fresh}, TARGET, now + 0.2)
    assert [event.reason for event in events(fresh) if isinstance(event, SessionStarted)] == [
        SessionReason.TAKEOVER
    ]


def test_target_response_checks() -> None:
    host, target = new_host(), new_target()
    target.handle_timer(3.0)
    [(poke, _)] = target.datagrams_to_send()
    host.receive_datagram(poke, TARGET, 3.0)
    [(response, _)] = host.datagrams_to_send()
    target.receive_datagram(response, HOST, 3.0)
    target.receive_datagram(response, HOST, 3.1)  # the same response again
    # A response to a poke the target never sent.
    other = DatagramCodec(KEY, local_direction=Direction.HOST_TO_TARGET, version=5)
    body = push_response(Response(client_nonce=bytes(32), host_nonce=bytes(32)))
    target.receive_datagram(other.encode_control(body, sequence=3), HOST, 3.2)
    # A control body that is neither a response nor a poke request.
    target.receive_datagram(other.encode_control(b"\x01\x07junk", sequence=3), HOST, 3.3)
    # A poke sent to a target.
    target.receive_datagram(poke, HOST, 3.4)
    assert target.drop_counters == {
        DropReason.REPLAY: 1,
        DropReason.STALE_RESPONSE: 1,
        DropReason.BAD_HANDSHAKE: 1,
        DropReason.WRONG_DIRECTION: 1,
    }
    assert [type(event) for event in events(target)] == [SessionStarted] + [DatagramDropped] * 4


def test_target_accepts_a_response_to_any_recent_poke() -> None:
    host, target = new_host(), new_target()
    sent = []
    for now in (3.0, 6.0, 9.0, 12.0, 15.0):
        target.handle_timer(now)
        [(poke, _)] = target.datagrams_to_send()
        sent.append(poke)
    host.receive_datagram(sent[0], TARGET, 15.0)  # five pokes ago: too old
    [(too_old, _)] = host.datagrams_to_send()
    target.receive_datagram(too_old, HOST, 15.0)
    assert target.drop_counters == {DropReason.STALE_RESPONSE: 1}
    host.receive_datagram(sent[1], TARGET, 15.0)  # four pokes ago: still accepted
    [(recent, _)] = host.datagrams_to_send()
    target.receive_datagram(recent, HOST, 15.0)
    assert target.connected


def test_data_from_a_stranger_is_dropped() -> None:
    host, target, now = connect()
    target.send_data(ACK)
    [(datagram, _)] = target.datagrams_to_send()
    host.receive_datagram(datagram, ("10.0.0.3", 50000), now)
    assert host.drop_counters == {DropReason.WRONG_PEER: 1}
    host.receive_datagram(datagram, TARGET, now)  # the real one still counts: no replay state
    assert events(host)[-1] == DataReceived(body=ACK, sequence=1)
    host.send_data(ACK)
    [(datagram, _)] = host.datagrams_to_send()
    target.receive_datagram(datagram, OTHER_HOST, now)
    assert target.drop_counters == {DropReason.WRONG_PEER: 1}


def test_replayed_data_is_dropped_by_both_roles() -> None:
    host, target, now = connect()
    target.send_data(ACK)
    host.send_data(ACK)
    [(from_target, _)] = target.datagrams_to_send()
    [(from_host, _)] = host.datagrams_to_send()
    for _ in range(2):
        host.receive_datagram(from_target, TARGET, now)
        target.receive_datagram(from_host, HOST, now)
    assert host.drop_counters == target.drop_counters == {DropReason.REPLAY: 1}


def test_misuse_raises_usage_errors() -> None:
    with pytest.raises(KdUsageError):
        new_host().send_data(ACK)
    with pytest.raises(KdUsageError):
        new_target().send_data(ACK)
    with pytest.raises(KdUsageError):
        new_target(poke_interval=0.0)
    with pytest.raises(KdUsageError):
        KdnetHost(KEY, random_bytes=lambda size: b"short").receive_datagram(
            pull_and_reseal_first_poke(), TARGET, 0.0
        )


def pull_and_reseal_first_poke() -> bytes:
    target = new_target()
    target.handle_timer(target.get_timer())
    [(poke, _)] = target.datagrams_to_send()
    return poke


def test_host_speaks_the_targets_version() -> None:
    host = new_host()
    target = new_target(version=KDNET_VERSION_4)
    target.handle_timer(3.0)
    pump(host, target, 3.0)
    assert host.version == 4
    host.send_data(ACK)
    [(datagram, _)] = host.datagrams_to_send()
    assert datagram[4] == 4


# --- Fuzz: arbitrary input never raises ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=5))
def test_arbitrary_datagrams_never_raise(datagrams: list[bytes]) -> None:
    host, target, now = connect()
    fresh_host, fresh_target = new_host(), new_target()
    for data in datagrams:
        for endpoint in (host, target, fresh_host, fresh_target):
            endpoint.receive_datagram(data, OTHER_HOST, now)
            endpoint.receive_datagram(data, TARGET, now)
            endpoint.receive_datagram(data, HOST, now)
    for endpoint in (host, target, fresh_host, fresh_target):
        assert all(isinstance(event, DatagramDropped) for event in events(endpoint))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=2**56 - 1), st.booleans())
def test_authenticated_control_junk_never_raises(body: bytes, sequence: int, to_host: bool) -> None:
    """Well-formed, authenticated control datagrams with arbitrary bodies reach the handshake
    code of both roles; it drops what it does not understand."""
    host, target, now = connect()
    direction = Direction.TARGET_TO_HOST if to_host else Direction.HOST_TO_TARGET
    codec = DatagramCodec(KEY, local_direction=direction, version=5)
    for prefix in (b"", b"\x01\x01", b"\x01\x02"):
        datagram = codec.encode_control(prefix + body, sequence=sequence)
        assert isinstance(pull_datagram(datagram, KEY), KdnetDatagram)
        (host if to_host else target).receive_datagram(datagram, TARGET if to_host else HOST, now)
