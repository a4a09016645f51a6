"""The KD core under KDNET's rules (kdnet.md section 3.4): one packet per datagram, no trailer,
target ids 0, 2, 4, ..., host ids from 0x80000000 in steps of 2, exact-id ACKs, a RESET that
carries the next id, break-in as a one-byte datagram. The datagrams here are the plaintext the
KDNET crypto layer carries; the crypto itself is tested elsewhere."""

from __future__ import annotations

import random
import struct

from cartd.kd.constants import ManipulateApi, NewState, NtStatus, PacketType
from cartd.kd.dialect import KDNET
from cartd.kd.events import DebugPrint, HostEvent, ProtocolNoise, RequestCompleted, StateChanged
from cartd.kd.host import KdHost
from cartd.kd.manipulate import GetVersion, ManipulateMessage, ReadMemory, reply_to
from cartd.kd.state_change import ExceptionRecord, StateChangeMessage
from cartd.kd.target import BreakInRequested, KdTarget, ManipulateReceived

MEMORY_BASE = 0xFFFFF80000000000
MEMORY = bytes((i * 13 + 1) & 0xFF for i in range(0x8000))


def header(datagram: bytes) -> tuple[int, int, int, int]:
    """(leader, type, byte count, id); a break-in datagram reads as all -1."""
    if len(datagram) < 16:
        return -1, -1, -1, -1
    leader, packet_type, count, packet_id, _ = struct.unpack_from("<IHHII", datagram)
    return leader, packet_type, count, packet_id


class DatagramBench:
    def __init__(self, *, loss: float = 0.0, seed: int = 0) -> None:
        self.host = KdHost(dialect=KDNET, analyse_stops=False, ack_timeout=0.5)
        self.target = KdTarget(dialect=KDNET, ack_timeout=0.5)
        self.now = 0.0
        self.events: list[HostEvent] = []
        self.target_events: list[object] = []
        self.to_target: list[bytes] = []
        self.to_host: list[bytes] = []
        self._loss = loss
        self._rng = random.Random(seed)
        # Lose every manipulate reply from the target until the host sends a RESET.
        self.drop_replies_until_reset = False

    def _lost(self) -> bool:
        return self._loss > 0 and self._rng.random() < self._loss

    def flush(self) -> bool:
        moved = False
        for datagram in self.host.datagrams_to_send():
            if header(datagram)[1] == PacketType.KD_RESET:
                self.drop_replies_until_reset = False
            self.to_target.append(datagram)
            moved = True
            if not self._lost():
                self.target.receive_datagram(datagram, self.now)
        for datagram in self.target.datagrams_to_send():
            self.to_host.append(datagram)
            moved = True
            if self.drop_replies_until_reset and (
                header(datagram)[1] == PacketType.KD_STATE_MANIPULATE
            ):
                continue
            if not self._lost():
                self.host.receive_datagram(datagram, self.now)
        while (event := self.host.next_event()) is not None:
            if not isinstance(event, ProtocolNoise):
                self.events.append(event)
        while (target_event := self.target.next_event()) is not None:
            self.target_events.append(target_event)
            moved = True
            if isinstance(target_event, ManipulateReceived):
                self.serve(target_event.message)
        return moved

    def serve(self, request: ManipulateMessage) -> None:
        if request.api == ManipulateApi.CONTINUE:
            self.target.resume()
            return
        if request.api == ManipulateApi.GET_VERSION:
            self.target.reply(
                reply_to(request, return_status=0, body=GetVersion(minor_version=26100)), self.now
            )
            return
        assert isinstance(request.body, ReadMemory)
        offset = request.body.address - MEMORY_BASE
        data = MEMORY[offset : offset + request.body.transfer_count]
        body = ReadMemory(
            address=request.body.address,
            transfer_count=request.body.transfer_count,
            actual_bytes=len(data),
        )
        self.target.reply(reply_to(request, return_status=0, body=body, data=data), self.now)

    def run(self, seconds: float = 30.0) -> None:
        end = self.now + seconds
        while self.now <= end:
            if self.flush():
                continue
            deadlines = [d for d in (self.host.get_timer(), self.target.get_timer()) if d]
            if not deadlines:
                return
            self.now = min(deadlines)
            self.host.handle_timer(self.now)
            self.target.handle_timer(self.now)

    def stop(self) -> StateChanged:
        pc = MEMORY_BASE + 0x100
        self.target.send_state_change(
            StateChangeMessage(
                new_state=NewState.EXCEPTION,
                program_counter=pc,
                body=ExceptionRecord(code=NtStatus.BREAKPOINT, address=pc),
            ),
            self.now,
        )
        self.run()
        (stop,) = [e for e in self.events if isinstance(e, StateChanged)]
        self.events.remove(stop)
        return stop


def test_target_ids_count_by_two_and_acks_carry_the_exact_id() -> None:
    bench = DatagramBench()
    for index in range(4):
        bench.target.send_debug_print(f"line {index}\n".encode(), bench.now)
    bench.run()
    assert [e.text for e in bench.events if isinstance(e, DebugPrint)] == [
        f"line {i}\n" for i in range(4)
    ]
    prints = [header(d) for d in bench.to_host if header(d)[1] == PacketType.KD_DEBUG_IO]
    assert [packet_id for *_, packet_id in prints] == [0, 2, 4, 6]
    acks = [header(d)[3] for d in bench.to_target if header(d)[1] == PacketType.KD_ACKNOWLEDGE]
    assert acks[-4:] == [0, 2, 4, 6]
    for datagram in bench.to_host:  # one packet per datagram, no 0xAA trailer
        _, _, count, _ = header(datagram)
        assert len(datagram) == 16 + count


def test_host_ids_start_at_0x80000000_and_count_by_two() -> None:
    bench = DatagramBench()
    bench.host.connect(bench.now)
    bench.stop()
    for _ in range(3):
        bench.host.read_virtual_memory(MEMORY_BASE, 64, now=bench.now)
        bench.run()
    requests = [
        header(d)[3] for d in bench.to_target if header(d)[1] == PacketType.KD_STATE_MANIPULATE
    ]
    assert requests == [0x80000000, 0x80000002, 0x80000004]
    results = [e.result for e in bench.events if isinstance(e, RequestCompleted)]
    assert [r.data for r in results] == [MEMORY[:64]] * 3


def test_a_reset_carries_the_next_id_and_the_target_expects_it() -> None:
    bench = DatagramBench()
    bench.host.connect(bench.now)
    bench.stop()
    resets = [header(d)[3] for d in bench.to_target if header(d)[1] == PacketType.KD_RESET]
    assert set(resets) == {0x80000000}  # connect, and the RESET before the first request
    before = len(resets)
    # The replies to this read are lost after the target has ACKed the request, so the host's
    # id has moved on to 0x80000002; its RESET carries that id, and the retried request uses it.
    bench.drop_replies_until_reset = True
    token = bench.host.read_virtual_memory(MEMORY_BASE + 8, 16, now=bench.now)
    bench.run()
    resets = [header(d)[3] for d in bench.to_target if header(d)[1] == PacketType.KD_RESET]
    assert resets[before:] == [0x80000002]
    requests = [
        header(d)[3] for d in bench.to_target if header(d)[1] == PacketType.KD_STATE_MANIPULATE
    ]
    assert requests[0] == 0x80000000 and set(requests[1:]) == {0x80000002}
    (done,) = [e for e in bench.events if isinstance(e, RequestCompleted) and e.token == token]
    assert done.result.data == MEMORY[8:24]


def test_the_0x800_bit_is_not_a_sync_bit_under_kdnet() -> None:
    bench = DatagramBench()
    for index in range(0x410):  # ids pass 0x800
        bench.target.send_debug_print(b"x%d\n" % index, bench.now)
        bench.run()
    prints = [e for e in bench.events if isinstance(e, DebugPrint)]
    assert len(prints) == 0x410
    assert not [e for e in bench.events if type(e).__name__ == "TargetRebooted"]


def test_break_in_is_a_one_byte_datagram() -> None:
    bench = DatagramBench()
    bench.target.send_debug_print(b"running\n", bench.now)
    bench.run()
    bench.host.break_in(bench.now)
    bench.flush()
    assert bench.to_target[-1] == b"b"
    assert any(isinstance(e, BreakInRequested) for e in bench.target_events)


def test_the_unused_packet_is_ignored() -> None:
    bench = DatagramBench()
    bench.host.receive_datagram(bytes(8) + bytes([1, 2, 168, 192]), bench.now)
    assert bench.host.datagrams_to_send() == []  # not acknowledged
    assert bench.host.next_event() is None  # and not reported: it means nothing to a session


def test_lost_datagrams_are_recovered() -> None:
    bench = DatagramBench(loss=0.05, seed=3)
    bench.host.connect(bench.now)
    bench.stop()
    for offset in range(0, 0x4000, 0x800):
        token = bench.host.read_virtual_memory(MEMORY_BASE + offset, 0x800, now=bench.now)
        bench.run(120)
        (done,) = [e for e in bench.events if isinstance(e, RequestCompleted) and e.token == token]
        assert done.result.data == MEMORY[offset : offset + 0x800]
    reads = [
        header(d)[2] for d in bench.to_target if header(d)[1] == PacketType.KD_STATE_MANIPULATE
    ]
    assert max(reads) == 0x38  # requests carry no data
    replies = [
        header(d)[2] for d in bench.to_host if header(d)[1] == PacketType.KD_STATE_MANIPULATE
    ]
    assert max(replies) <= 0x38 + 1360  # 1360-byte pieces keep datagrams unfragmented
