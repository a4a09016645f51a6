"""The HOST and TARGET roles against each other, byte for byte, on a fake clock.

These tests drive `KdHost` and `KdTarget` directly (no simulator) to pin down the packet-id
rules of spec section 3: ACKs, duplicates, RESET before the first request, the sync bit,
retransmission deadlines, give-up rules, break-in, prompts and FILE_IO.
"""

from __future__ import annotations

import pytest

from cartd.kd.constants import (
    INITIAL_PACKET_ID,
    SYNC_PACKET_ID,
    FileIoApi,
    ManipulateApi,
    NewState,
    NtStatus,
    PacketType,
)
from cartd.kd.errors import KdUsageError
from cartd.kd.events import (
    DebugPrint,
    FileIoRefused,
    HostEvent,
    PromptReceived,
    ProtocolNoise,
    RequestCompleted,
    RequestFailed,
    StateChanged,
    TargetRebooted,
    TargetRunning,
)
from cartd.kd.file_io import CreateFile, FileIoMessage
from cartd.kd.framing import PacketDecoded, PacketDecoder, encode_control_packet
from cartd.kd.host import KdHost, TargetState
from cartd.kd.manipulate import GetVersion, ManipulateMessage, ReadMemory, reply_to
from cartd.kd.state_change import ExceptionRecord, StateChangeMessage
from cartd.kd.stops import StopReason
from cartd.kd.target import (
    FileIoAnswered,
    KdTarget,
    ManipulateReceived,
    Outgoing,
    PacketAbandoned,
    PacketDelivered,
    PromptAnswered,
)

MEMORY_BASE = 0xFFFFF80000000000
MEMORY = bytes((i * 7 + 3) & 0xFF for i in range(0x10000))


def breakpoint_stop(pc: int = MEMORY_BASE + 0x100) -> StateChangeMessage:
    return StateChangeMessage(
        new_state=NewState.EXCEPTION,
        processor=0,
        number_processors=1,
        program_counter=pc,
        body=ExceptionRecord(code=NtStatus.BREAKPOINT, address=pc, parameters=(0,)),
    )


class Bench:
    """A host and a bare KD target on one fake clock, with a tiny memory-serving kernel."""

    def __init__(self, host: KdHost | None = None, target: KdTarget | None = None) -> None:
        self.host = host or KdHost(analyse_stops=False)
        self.target = target or KdTarget()
        self.now = 0.0
        self.events: list[HostEvent] = []
        self.target_events: list[object] = []
        self.to_target: list[bytes] = []  # every host write, for assertions
        self.drop_next_to_target = 0
        self.drop_next_to_host = 0

    def flush(self) -> bool:
        moved = False
        data = self.host.data_to_send()
        if data:
            self.to_target.append(data)
            if self.drop_next_to_target:
                self.drop_next_to_target -= 1
            else:
                self.target.receive_data(data, self.now)
            moved = True
        data = self.target.data_to_send()
        if data:
            if self.drop_next_to_host:
                self.drop_next_to_host -= 1
            else:
                self.host.receive_data(data, self.now)
            moved = True
        while (event := self.host.next_event()) is not None:
            if not isinstance(event, ProtocolNoise):
                self.events.append(event)
        while (target_event := self.target.next_event()) is not None:
            self.target_events.append(target_event)
            if isinstance(target_event, ManipulateReceived):
                self.serve(target_event.message)
            moved = True
        return moved

    def serve(self, request: ManipulateMessage) -> None:
        if request.api == ManipulateApi.CONTINUE:
            self.target.resume()
            return
        if request.api == ManipulateApi.GET_VERSION:
            reply = reply_to(request, return_status=0, body=GetVersion(minor_version=22621))
        else:
            assert isinstance(request.body, ReadMemory)
            offset = request.body.address - MEMORY_BASE
            data = MEMORY[offset : offset + min(request.body.transfer_count, 3944)]
            status = 0 if len(data) == request.body.transfer_count else NtStatus.UNSUCCESSFUL
            reply = reply_to(
                request,
                return_status=status,
                body=ReadMemory(
                    address=request.body.address,
                    transfer_count=request.body.transfer_count,
                    actual_bytes=len(data),
                ),
                data=data,
            )
        self.target.reply(reply, self.now)

    def settle(self) -> None:
        while self.flush():
            pass

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            self.settle()
            deadlines = [
                d for d in (self.host.get_timer(), self.target.get_timer()) if d is not None
            ]
            if not deadlines or min(deadlines) > end:
                break
            self.now = max(self.now, min(deadlines))
            self.host.handle_timer(self.now)
            self.target.handle_timer(self.now)
        self.now = end

    def take(self, kind: type) -> list:  # type: ignore[type-arg]
        taken = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return taken

    def stop_target(self) -> StateChanged:
        assert self.target.send_state_change(breakpoint_stop(), self.now)
        self.settle()
        (stop,) = self.take(StateChanged)
        return stop


def test_prints_are_acked_and_delivered_in_order() -> None:
    bench = Bench()
    for index in range(5):
        bench.target.send_debug_print(f"line {index}\n".encode(), bench.now)
    bench.settle()
    assert [e.text for e in bench.take(DebugPrint)] == [f"line {i}\n" for i in range(5)]
    assert bench.target.idle
    assert bench.host.state is TargetState.RUNNING


def test_first_packet_carries_sync_bit_and_ack_strips_it() -> None:
    target = KdTarget()
    target.send_debug_print(b"hello\n", 0.0)
    wire = target.data_to_send()
    (decoded,) = PacketDecoder().receive_data(wire, 0.0)
    assert isinstance(decoded, PacketDecoded)
    assert decoded.packet.packet_id == INITIAL_PACKET_ID | SYNC_PACKET_ID
    host = KdHost()
    host.receive_data(wire, 0.0)
    assert host.data_to_send() == encode_control_packet(
        PacketType.KD_ACKNOWLEDGE, INITIAL_PACKET_ID
    )


def test_lost_ack_makes_target_resend_and_host_ignores_the_duplicate() -> None:
    bench = Bench()
    bench.target.send_debug_print(b"once\n", bench.now)
    bench.drop_next_to_target = 1  # the host's ACK is lost on the line
    bench.advance(5.0)
    assert [e.text for e in bench.take(DebugPrint)] == ["once\n"]
    assert bench.host.noise_counters["duplicate"] == 1
    assert bench.target.noise_counters["retransmission"] == 1


def test_host_resets_before_its_first_request_when_ids_are_unknown() -> None:
    # A target that already talked to a previous debugger (ids past the sync bit) ...
    bench = Bench()
    bench.target.send_debug_print(b"before the daemon restarted\n", bench.now)
    bench.settle()
    # ... meets a freshly started host.
    bench.host = KdHost(analyse_stops=False)
    bench.to_target.clear()
    bench.target.send_state_change(breakpoint_stop(), bench.now)
    bench.settle()
    reset = encode_control_packet(PacketType.KD_RESET, 0)
    assert reset in b"".join(bench.to_target)
    stops = bench.take(StateChanged)
    assert len(stops) == 1  # the held stop and its repetition are one stop
    version = bench.host.get_version(now=bench.now)
    bench.settle()
    (done,) = bench.take(RequestCompleted)
    assert done.token == version
    assert isinstance(done.result, GetVersion)
    assert done.result.minor_version == 22621


def test_connect_repeats_reset_until_the_target_is_heard() -> None:
    bench = Bench()
    bench.host.connect(bench.now)
    bench.settle()
    bench.advance(3.5)  # a running, silent target: resets at 0, 1, 2 and 3 s
    reset = encode_control_packet(PacketType.KD_RESET, 0)
    assert b"".join(bench.to_target).count(reset) == 4
    bench.target.send_debug_print(b"alive\n", bench.now)
    bench.advance(3.0)
    assert b"".join(bench.to_target).count(reset) == 4  # heard: no more resets


def test_exact_retransmission_deadlines_and_failure_after_max_retries() -> None:
    host = KdHost(ack_timeout=1.0, max_retries=3, analyse_stops=False)
    bench = Bench(host=host)
    bench.stop_target()
    bench.to_target.clear()
    bench.now = 10.0
    token = host.read_virtual_memory(MEMORY_BASE, 16, now=10.0)
    request = host.data_to_send()
    assert host.get_timer() == 11.0
    host.handle_timer(10.999)
    assert host.data_to_send() == b""
    host.handle_timer(11.0)
    assert host.data_to_send() == request  # same bytes, same id
    assert host.get_timer() == 12.0
    host.handle_timer(12.0)
    assert host.data_to_send() == request
    assert host.get_timer() == 13.0
    host.handle_timer(13.0)
    reset = encode_control_packet(PacketType.KD_RESET, 0)
    assert host.data_to_send() == reset
    events = []
    while (event := host.next_event()) is not None:
        events.append(event)
    failures = [e for e in events if isinstance(e, RequestFailed)]
    assert [f.token for f in failures] == [token]
    assert "no acknowledgement" in failures[0].reason
    assert host.get_timer() is None


def test_deadlines_stretch_with_packet_size_on_a_slow_line() -> None:
    seconds_per_byte = 10 / 115200
    host = KdHost(ack_timeout=1.0, seconds_per_byte=seconds_per_byte, analyse_stops=False)
    bench = Bench(host=host)
    bench.stop_target()
    host.read_virtual_memory(MEMORY_BASE, 16, now=bench.now)
    wire = host.data_to_send()
    assert host.get_timer() == pytest.approx(bench.now + 1.0 + len(wire) * seconds_per_byte)


def test_ack_without_reply_leads_to_reset_and_a_second_try() -> None:
    bench = Bench(host=KdHost(ack_timeout=1.0, reply_timeout=2.0, analyse_stops=False))
    bench.stop_target()
    token = bench.host.read_virtual_memory(MEMORY_BASE + 0x40, 32, now=bench.now)
    bench.flush()  # request out, ACK back ...
    bench.drop_next_to_host = 1  # ... but the reply is lost, and the target gives up on it
    bench.advance(60.0)
    (done,) = bench.take(RequestCompleted)
    assert done.token == token
    assert done.result.data == MEMORY[0x40:0x60]


def test_large_read_is_split_and_partial_read_reported() -> None:
    bench = Bench(host=KdHost(max_transfer=1000, analyse_stops=False))
    bench.stop_target()
    token = bench.host.read_virtual_memory(MEMORY_BASE + 0x10, 3500, now=bench.now)
    bench.settle()
    (done,) = bench.take(RequestCompleted)
    assert done.token == token and done.result.complete
    assert done.result.data == MEMORY[0x10 : 0x10 + 3500]
    reads = [e for e in bench.target_events if isinstance(e, ManipulateReceived)]
    assert [r.message.body.transfer_count for r in reads] == [1000, 1000, 1000, 500]
    # Running off the end of "memory" gives a partial read, reported as such.
    bench.host.read_virtual_memory(MEMORY_BASE + len(MEMORY) - 100, 300, now=bench.now)
    bench.settle()
    (partial,) = bench.take(RequestCompleted)
    assert not partial.result.complete
    assert partial.result.data == MEMORY[-100:]
    assert partial.result.status == NtStatus.UNSUCCESSFUL


def test_requests_need_a_stopped_target() -> None:
    host = KdHost()
    with pytest.raises(KdUsageError):
        host.get_version(now=0.0)
    bench = Bench()
    bench.stop_target()
    with pytest.raises(KdUsageError):
        bench.host.break_in(bench.now)


def test_resume_continues_and_target_runs() -> None:
    bench = Bench()
    bench.stop_target()
    token = bench.host.resume(now=bench.now)
    bench.settle()
    assert [type(e) for e in bench.events] == [TargetRunning, RequestCompleted]
    assert bench.events[1].token == token
    assert bench.host.state is TargetState.RUNNING
    assert bench.target.idle


def test_unacknowledged_continue_is_assumed_to_have_run() -> None:
    bench = Bench(host=KdHost(ack_timeout=1.0, max_retries=2, analyse_stops=False))
    bench.stop_target()
    bench.host.resume(now=bench.now)
    bench.drop_next_to_host = 1  # the target's ACK of the Continue is lost
    bench.advance(10.0)
    assert bench.take(TargetRunning)
    assert bench.host.state is TargetState.RUNNING


def test_sync_bit_after_contact_is_a_reboot() -> None:
    bench = Bench()
    bench.target.send_debug_print(b"first boot\n", bench.now)
    bench.settle()
    bench.target.reboot()
    bench.target.send_debug_print(b"second boot\n", bench.now)
    bench.settle()
    assert [type(e) for e in bench.events] == [DebugPrint, TargetRebooted, DebugPrint]


def test_prompt_is_answered_by_the_caller() -> None:
    bench = Bench()
    bench.target.send_prompt(
        b"Break, Ignore, terminate Process or terminate Thread (bipt)? ", 80, bench.now
    )
    bench.settle()
    (prompt,) = bench.take(PromptReceived)
    assert prompt.prompt.startswith(b"Break, Ignore")
    assert prompt.max_length == 80
    bench.host.answer_prompt(b"i", bench.now)
    bench.settle()
    answers = [e for e in bench.target_events if isinstance(e, PromptAnswered)]
    assert [a.text for a in answers] == [b"i"]
    assert bench.target.idle


def test_file_io_is_refused_with_no_such_file() -> None:
    bench = Bench()
    request = FileIoMessage(
        api=FileIoApi.CREATE_FILE, body=CreateFile(file_name="\\??\\C:\\windows\\kdfiles\\x.sys")
    )
    bench.target.send_file_io(request, bench.now)
    bench.settle()
    (refused,) = bench.take(FileIoRefused)
    assert refused.file_name.endswith("x.sys")
    answers = [e for e in bench.target_events if isinstance(e, FileIoAnswered)]
    assert answers[0].message.status == NtStatus.NO_SUCH_FILE


def test_target_gives_up_on_prints_but_never_on_an_exception() -> None:
    target = KdTarget(ack_timeout=1.0)
    target.send_debug_print(b"nobody listens\n", 0.0)
    now = 0.0
    sent = 0
    while target.get_timer() is not None:
        sent += target.data_to_send().count(b"0000")
        now = target.get_timer() or now
        target.handle_timer(now)
    assert sent == 5  # the boot retry count (spec 3.1)
    abandoned = [e for e in iter(target.next_event, None) if isinstance(e, PacketAbandoned)]
    assert [e.kind for e in abandoned] == [Outgoing.PRINT]
    assert not target.debugger_present
    assert not target.send_debug_print(b"dropped\n", now)
    target.receive_data(b"b", now)  # a break-in brings the debugger back
    assert target.debugger_present
    target.send_state_change(breakpoint_stop(), now)
    for _ in range(100):  # an exception is sent again for ever
        target.handle_timer(target.get_timer() or now)
    assert target.get_timer() is not None


def test_break_in_byte_reaches_a_running_target_only_as_a_break_in() -> None:
    bench = Bench()
    bench.host.break_in(bench.now)
    bench.settle()
    assert bench.target_events and type(bench.target_events[0]).__name__ == "BreakInRequested"


def test_reply_before_ack_counts_as_ack() -> None:
    bench = Bench()
    bench.stop_target()
    bench.host.get_version(now=bench.now)
    bench.target.receive_data(bench.host.data_to_send(), bench.now)
    while (event := bench.target.next_event()) is not None:
        if isinstance(event, ManipulateReceived):
            bench.serve(event.message)
    wire = bench.target.data_to_send()
    ack, reply = wire[:16], wire[16:]
    bench.host.receive_data(reply, bench.now)  # the reply overtakes the ACK
    bench.host.receive_data(ack, bench.now)
    events = list(iter(bench.host.next_event, None))
    assert any(isinstance(e, RequestCompleted) for e in events)
    assert bench.host.noise_counters.get("stray_ack") == 1


def test_breakpoint_stop_reason_without_analysis() -> None:
    bench = Bench()
    stop = bench.stop_target()
    assert stop.reason is StopReason.BREAKPOINT
    assert stop.first_chance
    delivered = [e for e in bench.target_events if isinstance(e, PacketDelivered)]
    assert delivered[-1].kind is Outgoing.EXCEPTION
