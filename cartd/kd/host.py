"""The KD protocol in HOST role: what a debugger does at its end of the cable.

Theory of operation
-------------------
`KdHost` is sans-I/O (architecture rule 1). Feed it bytes with `receive_data(data, now)`, send
what `data_to_send()` returns, call `handle_timer(now)` when `get_timer()` passes, and read
events with `next_event()`. Requests are queued with typed methods that return a token; the
outcome arrives as `RequestCompleted(token, result)` or `RequestFailed(token, reason)`.

Rules, from spec sections 3, 4 and 8:
1. Every good data packet from the target is ACKed at once with its id less the sync bit.
   Control packets are never ACKed. A repeat of the last packet (same id, same bytes: our
   ACK was lost) is ACKed again but not delivered.
2. A packet with the sync bit means the target reset its ids: the host starts again at
   INITIAL_PACKET_ID and forgets what it cached (TargetRebooted).
3. Only one host data packet is outstanding. Requests go out only while the target is stopped.
   A packet not ACKed in time is sent again unchanged; a request ACKed but never answered was
   probably taken for a duplicate, so the host RESETs and sends it again. After `max_retries`
   the request fails and the host RESETs to resynchronise.
4. The host RESETs before its first request: a stop that arrives before the ids are known is
   ACKed and held, a RESET goes out, and the target answers by sending the stop again.
5. A corrupt data packet is answered with RESEND; every kind of noise is counted and reported.
6. A stop is analysed before it is reported: for a STATUS_BREAKPOINT the host learns KDBG
   (GetVersion, DebuggerDataList) and, when the PC is BreakpointWithStatus, reads RCX to tell a
   break-in from a bugcheck, whose code and parameters come from KiBugCheckData (or, failing
   that, from the "Fatal System Error" DbgPrint).
7. After a Continue the host assumes the target runs, and checks: a second later, and twice
   more a second apart, it sends a RESET unless the target has been heard. A running target
   ignores it; one that is still stopped (the Continue was lost, or taken for a duplicate)
   answers by sending its stop again, which is reported again. A Continue never ACKed at all
   is handled the same way, and so is a break-in that gets no stop: RESETs go with the repeats.

Requests are generator "plans" (`cartd.kd.host_plans`): this module runs them one packet at a
time and owns the transport rules above; the plans own what is asked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from cartd.kd import dump_plans, relay_plans
from cartd.kd import host_plans as plans
from cartd.kd.bugcheck import (
    FatalSystemErrorScanner,
)
from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.kd.constants import (
    BREAKIN_BYTE,
    CONTROL_PACKET_ID,
    MAX_MANIPULATE_DATA,
    PACKET_MAX_SIZE,
    DebugIoApi,
    ManipulateApi,
    PacketType,
)
from cartd.kd.context import CONTEXT_FULL
from cartd.kd.debug_io import get_string_reply_message, pull_debug_io, push_debug_io
from cartd.kd.debugger_data import (
    DebuggerData,
)
from cartd.kd.dialect import SERIAL, KdDialect, PacketOutput
from cartd.kd.errors import KdDecodeError, KdUsageError
from cartd.kd.events import (
    DebugPrint,
    FileIoReceived,
    FileIoRefused,
    HostEvent,
    PromptReceived,
    ProtocolNoise,
    RequestCompleted,
    RequestFailed,
    StateChanged,
    TargetRebooted,
    TargetRunning,
    TraceReceived,
)
from cartd.kd.file_io import no_such_file_reply, pull_file_io
from cartd.kd.framing import (
    BreakInByte,
    DecoderEvent,
    KdPacket,
    NoiseDetected,
    NoiseKind,
    PacketDecoded,
    PacketDecoder,
    decode_datagram_packet,
    encode_control_packet,
    encode_data_packet,
)
from cartd.kd.manipulate import (
    ContextEx,
    GetVersion,
    ManipulateMessage,
    ReadMemory,
    pull_manipulate,
    push_manipulate,
)
from cartd.kd.state_change import StateChangeMessage, pull_state_change

# Requests whose effect is that the target leaves the debugger; they have no reply.
RESUMING_APIS = frozenset(
    {
        ManipulateApi.CONTINUE,
        ManipulateApi.CONTINUE2,
        ManipulateApi.REBOOT,
        ManipulateApi.CAUSE_BUGCHECK,
    }
)


# A request answered by a new state change (from the processor asked for) instead of a reply.
_NO_REPLY_APIS = RESUMING_APIS | {ManipulateApi.SWITCH_PROCESSOR}

# RESETs sent after a Continue until the target is heard (rule 7).
RESUME_PROBES = 3


class TargetState(Enum):
    UNKNOWN = "unknown"  # nothing heard yet
    RUNNING = "running"
    STOPPED = "stopped"  # a stop was reported; requests may be queued
    RESUMING = "resuming"  # a Continue/Reboot is on its way


@dataclass(slots=True)
class _Operation:
    token: int
    plan: plans.Plan
    pending: ManipulateMessage | None = None
    # Internal operations (stop analysis) report through `on_done` instead of events.
    on_done: Callable[[object], None] | None = None
    # A relayed request (`relay_request`): its first packet goes out as the remote debugger
    # wrote it, and a reply passed on unchanged goes back as the target wrote it.
    relay: tuple[ManipulateMessage, bytes] | None = None
    last_reply: tuple[ManipulateMessage, bytes] | None = None


@dataclass(slots=True)
class _InFlight:
    """The one host data packet that waits for its ACK (and maybe its reply)."""

    packet_type: int
    payload: bytes
    packet_id: int
    wire: bytes
    request: ManipulateMessage | None  # None for prompt and FILE_IO replies
    deadline: float
    retries_left: int
    acked: bool = False
    operation: _Operation | None = None

    @property
    def api(self) -> int | None:
        return self.request.api if self.request is not None else None

    @property
    def expects_reply(self) -> bool:
        return self.request is not None and self.request.api not in _NO_REPLY_APIS


@dataclass(slots=True)
class _Tuning:
    ack_timeout: float
    reply_timeout: float
    max_retries: int
    reset_interval: float
    break_in_interval: float
    seconds_per_byte: float
    max_transfer: int


@dataclass(slots=True)
class _Held:
    """A stop received before the packet ids were known (rule 4)."""

    packet: KdPacket
    deadline: float
    resets_left: int


class KdHost:
    """KD HOST role over a byte stream (serial, or KDNET once decrypted)."""

    def __init__(
        self,
        *,
        ack_timeout: float = 1.0,
        reply_timeout: float = 3.0,
        max_retries: int = 5,
        reset_interval: float = 1.0,
        break_in_interval: float = 2.0,
        seconds_per_byte: float = 0.0,
        max_transfer: int | None = None,
        analyse_stops: bool = True,
        dialect: KdDialect = SERIAL,
    ) -> None:
        """`seconds_per_byte` is the line's transmission time per byte (10/baud on serial), so
        deadlines stretch with packet size; `max_transfer` caps one read (the dialect's
        largest by default: 3944 on serial, 1360 under KDNET). `dialect`: SERIAL for a byte
        stream (`receive_data`, `data_to_send`), KDNET for decrypted data-channel datagrams
        (`receive_datagram`, `datagrams_to_send`)."""
        if max_transfer is None:
            max_transfer = dialect.max_transfer
        if not 0 < max_transfer <= MAX_MANIPULATE_DATA:
            raise KdUsageError(f"max_transfer must be 1..{MAX_MANIPULATE_DATA}")
        self.dialect = dialect
        self._tuning = _Tuning(
            ack_timeout=ack_timeout,
            reply_timeout=reply_timeout,
            max_retries=max_retries,
            reset_interval=reset_interval,
            break_in_interval=break_in_interval,
            seconds_per_byte=seconds_per_byte,
            max_transfer=max_transfer,
        )
        self._analyse_stops = analyse_stops
        # True while a remote debugger owns the target through the relay: the target's file
        # requests (KD_FILE_IO) go to it (FileIoReceived) instead of being refused here.
        self.relaying = False
        self._stop_payload = b""
        self._decoder = PacketDecoder()
        self._events: deque[HostEvent] = deque()
        self._output = PacketOutput(dialect)
        self.noise_counters: dict[str, int] = {}

        self._next_id = dialect.host_first_id
        # The last data packet delivered: a packet equal to it (same id, same bytes) is the
        # target sending again because our ACK was lost.
        self._last_target_packet: KdPacket | None = None
        self._repeat_after_reset: KdPacket | None = None
        self._ids_known = False
        self._heard_target = False
        self._connect_deadline: float | None = None
        self._resume_probe_deadline: float | None = None
        self._resume_probes_left = 0
        self._break_in_deadline: float | None = None
        self._held: _Held | None = None

        self.state = TargetState.UNKNOWN
        self._stop: StateChangeMessage | None = None
        self._stop_reported = False
        self._in_flight: _InFlight | None = None
        self._operations: deque[_Operation] = deque()
        # Prompt and FILE_IO replies: the target waits for them, so they go before requests.
        self._replies: deque[tuple[int, bytes]] = deque()
        self._next_token = 1
        self._break_in_requested = False

        self.facts = plans.TargetFacts()
        self._fatal_scanner = FatalSystemErrorScanner()
        self._fatal_print: BugcheckInfo | None = None

    # ------------------------------------------------------------------ I/O surface

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from a serial line, in pieces of any size."""
        if self.dialect.datagrams:
            raise KdUsageError("this host speaks KDNET: use receive_datagram()")
        self._handle_decoder_events(self._decoder.receive_data(data, now), now)
        self._pump(now)

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """One decrypted KDNET data-channel datagram: exactly one KD packet."""
        if not self.dialect.datagrams:
            raise KdUsageError("this host speaks serial KD: use receive_data()")
        decoded = decode_datagram_packet(datagram)
        if isinstance(decoded, KdPacket):
            self._handle_decoder_events([PacketDecoded(decoded)], now)
        else:
            self._handle_decoder_events([decoded], now)
        self._pump(now)

    def data_to_send(self) -> bytes:
        return self._output.take_bytes()

    def datagrams_to_send(self) -> list[bytes]:
        """KDNET: the plaintext of each data-channel datagram to send, in order."""
        return self._output.take_datagrams()

    def next_event(self) -> HostEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [
            self._decoder.get_timer(),
            self._connect_deadline,
            self._resume_probe_deadline,
            self._break_in_deadline,
        ]
        if self._in_flight is not None:
            deadlines.append(self._in_flight.deadline)
        if self._held is not None:
            deadlines.append(self._held.deadline)
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        self._handle_decoder_events(self._decoder.handle_timer(now), now)
        if self._connect_deadline is not None and now >= self._connect_deadline:
            self._send_control(PacketType.KD_RESET)
            self._connect_deadline = now + self._tuning.reset_interval
        if self._resume_probe_deadline is not None and now >= self._resume_probe_deadline:
            # Rule 7: a target that took the Continue for a duplicate is still stopped; it
            # answers this RESET by sending its stop again. A running one ignores it. A few
            # tries, in case the line eats one: a target left stopped serves nothing.
            self._resume_probes_left -= 1
            self._resume_probe_deadline = (
                now + self._tuning.reset_interval if self._resume_probes_left > 0 else None
            )
            self._send_control(PacketType.KD_RESET)
        if self._break_in_deadline is not None and now >= self._break_in_deadline:
            self._count("break_in_repeated")
            self._break_in_deadline = now + self._tuning.break_in_interval
            self._emit(bytes([BREAKIN_BYTE]))
            # As ntoseye does: a target that is in fact stopped ignores break-ins but answers a
            # RESET by sending its stop again; a running one ignores the RESET.
            self._send_control(PacketType.KD_RESET)
        if self._held is not None and now >= self._held.deadline:
            self._held_timeout(now)
        flight = self._in_flight
        if flight is not None and now >= flight.deadline:
            self._flight_timeout(flight, now)
        self._pump(now)

    # ------------------------------------------------------------------ commands

    def connect(self, now: float, *, break_in: bool = False) -> None:
        """Start talking to a target in an unknown state: RESET now and about once a second
        until the target is heard (as WinDbg does); optionally send a break-in first."""
        if break_in:
            self.break_in(now)
        self._send_control(PacketType.KD_RESET)
        self._connect_deadline = now + self._tuning.reset_interval

    def break_in(self, now: float) -> None:
        """Send the break-in byte, and again every `break_in_interval` until a stop arrives (a
        byte lost on the line would otherwise leave the request unanswered). A stopped target
        would remember it as a pending Ctrl-C and stop again after the next continue, so that
        is refused."""
        if self.state in (TargetState.STOPPED, TargetState.RESUMING):
            raise KdUsageError("the target is stopped; break-in is only for a running target")
        self._break_in_requested = True
        self._break_in_deadline = now + self._tuning.break_in_interval
        self._emit(bytes([BREAKIN_BYTE]))

    def answer_prompt(self, text: bytes, now: float) -> None:
        """Answer a PromptReceived (DbgPrompt) with `text` (an empty line is b"")."""
        payload = push_debug_io(get_string_reply_message(text))
        self._replies.append((PacketType.KD_DEBUG_IO, payload))
        self._pump(now)

    @property
    def stop(self) -> StateChangeMessage | None:
        """The stop the target is in, once reported; None while running."""
        return self._stop if self._stop_reported else None

    @property
    def stop_payload(self) -> bytes | None:
        """The STATE_CHANGE64 payload of the stop the target is in, once reported."""
        return self._stop_payload if self._stop_reported else None

    @property
    def version(self) -> GetVersion | None:
        """GetVersion's answer, once asked (cached until the target reboots)."""
        return self.facts.version

    @property
    def debugger_data(self) -> DebuggerData | None:
        """KDDEBUGGER_DATA64, once read (cached until the target reboots)."""
        return self.facts.debugger_data

    @property
    def planted_breakpoints(self) -> frozenset[int]:
        return frozenset(self.facts.planted)

    # Typed requests. Each returns a token; the result comes as RequestCompleted.

    def get_version(self, *, now: float) -> int:
        return self._submit(plans.get_version(self._requests(), self.facts), now)

    def read_virtual_memory(self, address: int, size: int, *, now: float) -> int:
        api = ManipulateApi.READ_VIRTUAL_MEMORY
        return self._submit(plans.read(self._requests(), api, address, size), now)

    def read_physical_memory(self, address: int, size: int, *, caching: int = 0, now: float) -> int:
        """`caching`: 0 default, 1 cached, 2 uncached, 3 write-combined."""
        api = ManipulateApi.READ_PHYSICAL_MEMORY
        return self._submit(plans.read(self._requests(), api, address, size, flags=caching), now)

    def read_control_space(
        self, address: int, size: int, *, processor: int | None = None, now: float
    ) -> int:
        """AMD64 control space: 0 KPCR, 1 KPRCB, 2 KSPECIAL_REGISTERS, 3 KTHREAD."""
        api = ManipulateApi.READ_CONTROL_SPACE
        plan = plans.read(self._requests(), api, address, size, processor=processor)
        return self._submit(plan, now)

    def write_virtual_memory(self, address: int, data: bytes, *, now: float) -> int:
        api = ManipulateApi.WRITE_VIRTUAL_MEMORY
        return self._submit(plans.write(self._requests(), api, address, data), now)

    def write_physical_memory(self, address: int, data: bytes, *, now: float) -> int:
        api = ManipulateApi.WRITE_PHYSICAL_MEMORY
        return self._submit(plans.write(self._requests(), api, address, data), now)

    def get_context(self, *, processor: int | None = None, now: float) -> int:
        return self._submit(plans.get_context(self._requests(), processor), now)

    def get_context_ex(
        self, offset: int, size: int, *, processor: int | None = None, now: float
    ) -> int:
        return self._submit(plans.get_context_ex(self._requests(), offset, size, processor), now)

    def set_context(
        self,
        context: bytes,
        *,
        flags: int = CONTEXT_FULL,
        processor: int | None = None,
        now: float,
    ) -> int:
        plan = plans.set_context(self._requests(), context, flags, processor)
        return self._submit(plan, now)

    def write_breakpoint(self, address: int, *, now: float) -> int:
        return self._submit(plans.write_breakpoint(self._requests(), self.facts, address), now)

    def restore_breakpoint(self, handle: int, *, now: float) -> int:
        return self._submit(plans.restore_breakpoint(self._requests(), handle), now)

    def read_msr(self, msr: int, *, now: float) -> int:
        return self._submit(plans.msr(self._requests(), ManipulateApi.READ_MSR, msr, 0), now)

    def write_msr(self, msr: int, value: int, *, now: float) -> int:
        return self._submit(plans.msr(self._requests(), ManipulateApi.WRITE_MSR, msr, value), now)

    def get_debugger_data(self, *, now: float) -> int:
        """KDDEBUGGER_DATA64 through GetVersion.DebuggerDataList; result: DebuggerData, or None
        when the target has none (a boot debugger before the kernel runs)."""
        return self._submit(plans.debugger_data(self._requests(), self.facts), now)

    def list_modules(self, *, now: float) -> int:
        """Walk PsLoadedModuleList (from GetVersion); result: a list of LoadedModule."""
        return self._submit(plans.list_modules(self._requests(), self.facts), now)

    def dump_facts(self, *, known_bugcheck: BugcheckInfo | None = None, now: float) -> int:
        """What a crash dump's header needs of the stopped target; result: DumpFacts."""
        stop = self._require_stopped()
        plan = dump_plans.dump_facts(
            self._requests(), self.facts, stop, known_bugcheck=known_bugcheck
        )
        return self._submit(plan, now)

    def triage_pages(
        self, dump: dump_plans.DumpFacts, config: dump_plans.TriageConfig, *, now: float
    ) -> int:
        """The pages of a triage dump, most useful first; result: TriageSelection."""
        plan = dump_plans.triage_pages(self._requests(), self.facts, dump, config)
        return self._submit(plan, now)

    def resume(self, *, status: int | None = None, now: float) -> int:
        """Leave the stop the right way: step RIP past a hard-coded int3 (spec 4.2), then
        Continue with `status` or the policy's choice. Result: the status used."""
        stop = self._require_stopped()
        plan = plans.resume(self._requests(), self.facts, stop, status)
        return self._submit(plan, now, resumes=True)

    def reboot(self, *, now: float) -> int:
        message = self._requests().message(ManipulateApi.REBOOT)
        return self._submit(plans.send_only(message), now, resumes=True)

    def cause_bugcheck(self, *, now: float) -> int:
        """DbgKdCauseBugCheckApi: the target bugchecks with MANUALLY_INITIATED_CRASH (0xE2)."""
        message = self._requests().message(ManipulateApi.CAUSE_BUGCHECK)
        return self._submit(plans.send_only(message), now, resumes=True)

    def relay_request(self, payload: bytes, *, now: float) -> int:
        """A remote debugger's STATE_MANIPULATE payload, passed on as it is (a read larger
        than this hop allows is split: `cartd.kd.relay_plans`). Result: the reply payload for
        it, or None for requests that have no reply (Continue, Reboot, SwitchProcessor).
        Raises KdDecodeError for a payload too short to be a request."""
        message = pull_manipulate(payload)
        resumes = message.api in RESUMING_APIS
        plan = relay_plans.relay(message, self._tuning.max_transfer)
        return self._submit(plan, now, resumes=resumes, relay=(message, payload))

    def relay_reply(self, packet_type: int, payload: bytes, *, now: float) -> None:
        """A remote debugger's answer to a prompt (KD_DEBUG_IO) or a file request
        (KD_FILE_IO), passed on as it is."""
        if packet_type not in (PacketType.KD_DEBUG_IO, PacketType.KD_FILE_IO):
            raise KdUsageError(f"packet type {packet_type} is not an answer the target waits for")
        self._replies.append((packet_type, payload))
        self._pump(now)

    def request(self, message: ManipulateMessage, *, now: float) -> int:
        """Send any manipulate request as is; the result is the decoded reply (or None for
        the APIs that have no reply). ReturnStatus is not checked."""
        resumes = message.api in RESUMING_APIS
        return self._submit(plans.raw_request(message), now, resumes=resumes)

    def _requests(self) -> plans.Requests:
        stop = self._require_stopped()
        return plans.Requests(
            processor=stop.processor,
            processor_level=stop.processor_level,
            max_transfer=self._tuning.max_transfer,
        )

    # ------------------------------------------------------------------ request machinery

    def _require_stopped(self) -> StateChangeMessage:
        if self.state is not TargetState.STOPPED or self._stop is None:
            raise KdUsageError(f"the target is {self.state.value}; requests need a stopped target")
        return self._stop

    def _submit(
        self,
        plan: plans.Plan,
        now: float,
        *,
        resumes: bool = False,
        relay: tuple[ManipulateMessage, bytes] | None = None,
    ) -> int:
        """Queue a plan. `resumes`: it ends the stop, so nothing may be queued after it."""
        self._require_stopped()
        if resumes:
            self.state = TargetState.RESUMING
        token = self._next_token
        self._next_token += 1
        operation = _Operation(token, plan, relay=relay)
        if self._start_operation(operation):
            self._operations.append(operation)
        self._pump(now)
        return token

    def _start_operation(self, operation: _Operation) -> bool:
        """Prime a plan; False if it finished without sending anything."""
        try:
            operation.pending = next(operation.plan)
        except StopIteration as done:
            self._finish(operation, done.value)
            return False
        return True

    def _finish(self, operation: _Operation, result: object) -> None:
        if operation.relay is not None and isinstance(result, ManipulateMessage):
            # A relayed reply: the target's own bytes when the plan passed its reply on.
            last = operation.last_reply
            result = last[1] if last is not None and last[0] is result else push_manipulate(result)
        if operation.on_done is not None:
            operation.on_done(result)
        else:
            self._events.append(RequestCompleted(token=operation.token, result=result))

    def _fail(self, operation: _Operation, error: plans.RequestError) -> None:
        """Throw the failure into the plan; it may recover and continue."""
        try:
            operation.pending = operation.plan.throw(error)
        except StopIteration as done:
            self._finish(operation, done.value)
        except plans.RequestError as final:
            if operation.on_done is not None:
                operation.on_done(None)
            else:
                self._events.append(
                    RequestFailed(token=operation.token, reason=final.reason, status=final.status)
                )
        else:
            self._operations.appendleft(operation)

    def _advance(self, operation: _Operation, reply: ManipulateMessage | None) -> None:
        try:
            operation.pending = operation.plan.send(reply)
        except StopIteration as done:
            self._finish(operation, done.value)
        except plans.RequestError as error:
            if operation.on_done is not None:
                operation.on_done(None)
            else:
                self._events.append(
                    RequestFailed(token=operation.token, reason=error.reason, status=error.status)
                )
        else:
            self._operations.appendleft(operation)

    def _pump(self, now: float) -> None:
        """Put the next host data packet on the wire if none is outstanding."""
        if self._in_flight is not None:
            return
        if self._replies:
            packet_type, payload = self._replies.popleft()
            self._send_data(packet_type, payload, None, None, now)
            return
        if self.state not in (TargetState.STOPPED, TargetState.RESUMING) or not self._ids_known:
            return
        while self._operations:
            operation = self._operations.popleft()
            message = operation.pending
            if message is None:
                continue
            operation.pending = None
            relay = operation.relay
            # A relayed request goes out as written; ours, or a piece of a split one, encoded.
            if relay is not None and message is relay[0]:
                payload = relay[1]
            else:
                payload = push_manipulate(message)
            self._send_data(PacketType.KD_STATE_MANIPULATE, payload, message, operation, now)
            return

    def _send_data(
        self,
        packet_type: int,
        payload: bytes,
        request: ManipulateMessage | None,
        operation: _Operation | None,
        now: float,
    ) -> None:
        wire = encode_data_packet(packet_type, self._next_id, payload, trailer=self.dialect.trailer)
        self._in_flight = _InFlight(
            packet_type=packet_type,
            payload=payload,
            packet_id=self._next_id,
            wire=wire,
            request=request,
            deadline=self._ack_deadline(len(wire), now),
            retries_left=self._tuning.max_retries,
            operation=operation,
        )
        self._emit(wire)

    def _ack_deadline(self, size: int, now: float) -> float:
        return now + self._tuning.ack_timeout + size * self._tuning.seconds_per_byte

    def _retransmit(self, flight: _InFlight, now: float) -> None:
        if flight.packet_id != self._next_id:  # ids were reset meanwhile
            flight.packet_id = self._next_id
            flight.wire = encode_data_packet(
                flight.packet_type, flight.packet_id, flight.payload, trailer=self.dialect.trailer
            )
        flight.acked = False
        flight.deadline = self._ack_deadline(len(flight.wire), now)
        self._emit(flight.wire)
        self._count("retransmission")

    def _flight_timeout(self, flight: _InFlight, now: float) -> None:
        flight.retries_left -= 1
        if flight.retries_left > 0:
            if flight.acked:
                # Rule 3: ACKed but never answered: the target took it for a duplicate.
                self._count("reply_timeout")
                self._send_control(PacketType.KD_RESET)
                self._after_reset()
            else:
                self._count("ack_timeout")
            self._retransmit(flight, now)
            return
        self._in_flight = None
        self._send_control(PacketType.KD_RESET)
        self._after_reset()
        operation = flight.operation
        if flight.api in RESUMING_APIS and operation is not None:
            # Rule 7: a target that runs no longer reads the line; assume it runs.
            self._resumed(operation, now)
            return
        if operation is not None:
            self._fail(
                operation,
                plans.RequestError(
                    f"no {'reply' if flight.acked else 'acknowledgement'} to "
                    f"{plans.api_name(flight.api)} after {self._tuning.max_retries} tries"
                ),
            )

    def _flight_acked(self, flight: _InFlight, now: float) -> None:
        self._next_id = self.dialect.next_id(self._next_id)
        flight.acked = True
        if flight.expects_reply:
            flight.deadline = (
                now + self._tuning.reply_timeout + PACKET_MAX_SIZE * self._tuning.seconds_per_byte
            )
            return
        self._in_flight = None
        operation = flight.operation
        if operation is not None and flight.api in RESUMING_APIS:
            self._resumed(operation, now)
        elif operation is not None and flight.request is not None:
            self._advance(operation, None)  # SwitchProcessor: a new stop comes instead

    def _resumed(self, operation: _Operation, now: float) -> None:
        self.state = TargetState.RUNNING
        self._resume_probe_deadline = now + self._tuning.reset_interval
        self._resume_probes_left = RESUME_PROBES
        self._stop = None
        self._stop_reported = False
        self._events.append(TargetRunning())
        self._advance(operation, None)
        # Whatever else was queued was meant for the stop that just ended.
        for stale in self._operations:
            self._fail_final(stale, "the target resumed before this request was sent")
        self._operations.clear()

    def _fail_final(self, operation: _Operation, reason: str) -> None:
        operation.plan.close()
        if operation.on_done is not None:
            operation.on_done(None)
        else:
            self._events.append(RequestFailed(token=operation.token, reason=reason))

    # ------------------------------------------------------------------ incoming packets

    def _handle_decoder_events(self, events: list[DecoderEvent], now: float) -> None:
        resend_sent = False
        for event in events:
            if isinstance(event, PacketDecoded):
                self._on_packet(event.packet, now)
            elif isinstance(event, NoiseDetected):
                self._count(event.kind.value, event.size)
                if event.kind is not NoiseKind.GARBAGE and not resend_sent:
                    # Rule 5: a damaged data packet: ask for it again.
                    self._send_control(PacketType.KD_RESEND)
                    resend_sent = True
            elif isinstance(event, BreakInByte):
                self._count(NoiseKind.GARBAGE.value)

    def _on_packet(self, packet: KdPacket, now: float) -> None:
        self._connect_deadline = None
        self._resume_probe_deadline = None
        if packet.is_control:
            self._on_control(packet, now)
            return
        if packet.packet_type == PacketType.UNUSED:
            # KDNET's first datagram after the handshake; read and ignored (kdnet.md 3.4).
            self._heard_target = True
            return
        first_contact = not self._heard_target
        self._heard_target = True
        self._send_control(PacketType.KD_ACKNOWLEDGE, self.dialect.ack_id(packet.packet_id))
        if packet == self._last_target_packet:
            self._count("duplicate")
            return
        repeat, self._repeat_after_reset = self._repeat_after_reset, None
        if repeat is not None and (packet.packet_type, packet.payload) == (
            repeat.packet_type,
            repeat.payload,
        ):
            self._count("repeated_after_reset")
            self._last_target_packet = packet
            return
        if packet.packet_id & self.dialect.sync_bit:
            self._on_sync(announce=not first_contact)
        self._last_target_packet = packet
        self._dispatch(packet, now)

    def _on_control(self, packet: KdPacket, now: float) -> None:
        flight = self._in_flight
        if packet.packet_type == PacketType.KD_ACKNOWLEDGE:
            if flight is not None and not flight.acked and packet.packet_id == flight.packet_id:
                self._flight_acked(flight, now)
            else:
                self._count("stray_ack")
        elif packet.packet_type == PacketType.KD_RESEND:
            self._count("resend_requested")
            if flight is not None and not flight.acked:
                self._retransmit(flight, now)
        elif packet.packet_type == PacketType.KD_RESET:
            self._after_reset()
            # The target now sends again, with a new id, whatever it was sending when our RESET
            # arrived; if we had already taken that packet, the next one is a repeat of it.
            # (A held stop was never taken: its repetition is the one to deliver.)
            self._repeat_after_reset = self._last_target_packet if self._held is None else None
            self._last_target_packet = None
            self._ids_known = True
            self._held = None  # the target sends the held stop again
            if flight is not None:
                self._retransmit(flight, now)

    def _on_sync(self, *, announce: bool) -> None:
        self._next_id = self.dialect.host_first_id
        self._last_target_packet = None
        self._ids_known = True
        self._held = None
        if announce:
            self.facts = plans.TargetFacts()
            self._abandon_all("the target rebooted")
            self.state = TargetState.RUNNING
            self._stop = None
            self._stop_reported = False
            self._events.append(TargetRebooted())

    def _abandon_all(self, reason: str) -> None:
        flight, self._in_flight = self._in_flight, None
        if flight is not None and flight.operation is not None:
            self._fail_final(flight.operation, reason)
        for operation in self._operations:
            self._fail_final(operation, reason)
        self._operations.clear()

    def _dispatch(self, packet: KdPacket, now: float) -> None:
        kind = packet.packet_type
        try:
            if kind == PacketType.KD_STATE_MANIPULATE:
                self._on_reply(pull_manipulate(packet.payload), packet.payload)
            elif kind == PacketType.KD_STATE_CHANGE64:
                self._on_state_change(packet, now)
            elif kind == PacketType.KD_DEBUG_IO:
                self._on_debug_io(packet.payload, now)
            elif kind == PacketType.KD_FILE_IO:
                request = pull_file_io(packet.payload)
                if self.relaying:
                    self._events.append(FileIoReceived(payload=packet.payload))
                    return
                self._replies.append((PacketType.KD_FILE_IO, no_such_file_reply(request)))
                self._events.append(
                    FileIoRefused(api=request.api, file_name=request.file_name or "")
                )
            elif kind in (PacketType.KD_TRACE_IO, PacketType.KD_CONTROL_REQUEST):
                self._events.append(TraceReceived(packet_type=kind, payload=packet.payload))
            else:
                self._count("unsupported_packet")
        except KdDecodeError:
            self._count("undecodable_packet")

    def _on_debug_io(self, payload: bytes, now: float) -> None:
        message = pull_debug_io(payload)
        if self.state is TargetState.UNKNOWN:
            self.state = TargetState.RUNNING
        if message.api == DebugIoApi.PRINT_STRING:
            self._events.append(
                DebugPrint(data=message.string, processor=message.processor, payload=payload)
            )
            found = self._fatal_scanner.feed(message.string.decode("latin-1"))
            if found is not None:
                self._fatal_print = found
        elif message.api == DebugIoApi.GET_STRING:
            self._events.append(
                PromptReceived(
                    prompt=message.string,
                    max_length=message.length_of_string_read,
                    processor=message.processor,
                    payload=payload,
                )
            )
        else:
            self._count("unsupported_packet")

    def _on_reply(self, reply: ManipulateMessage, payload: bytes) -> None:
        flight = self._in_flight
        if flight is None or flight.request is None or not _answers(flight.request, reply):
            self._count("unexpected_reply")
            return
        if flight.operation is not None and flight.operation.relay is not None:
            flight.operation.last_reply = (reply, payload)
        if not flight.acked:
            # The reply proves the request arrived (rizin's rule).
            self._next_id = self.dialect.next_id(self._next_id)
        self._in_flight = None
        if flight.operation is not None:
            self._advance(flight.operation, reply)

    def _on_state_change(self, packet: KdPacket, now: float) -> None:
        self._break_in_deadline = None
        if not self._ids_known:
            # Rule 4: hold it, RESET; the target answers and sends the stop again.
            self._held = _Held(packet, self._ack_deadline(16, now), self._tuning.max_retries)
            self._send_control(PacketType.KD_RESET)
            return
        stop = pull_state_change(packet.payload)
        if self._stop is not None and stop == self._stop:
            # The target re-sent the stop it is in (it answered a RESET or RESEND): whatever
            # request was on the way was dropped by it, so send that again.
            self._count("stop_repeated")
            flight = self._in_flight
            if flight is not None:
                self._retransmit(flight, now)
            return
        flight = self._in_flight
        if flight is not None and flight.api in RESUMING_APIS and flight.operation is not None:
            # The Continue's ACK was lost but the target ran and stopped again (rule 7): it
            # did take the Continue, so its id is used up.
            self._in_flight = None
            self._next_id = self.dialect.next_id(self._next_id)
            self._resumed(flight.operation, now)
        elif self._stop is not None:
            self._abandon_all("the target reported a new stop")
        self.state = TargetState.STOPPED
        self._stop = stop
        self._stop_payload = packet.payload
        self._stop_reported = False
        fatal_print, self._fatal_print = self._fatal_print, None
        break_in_requested, self._break_in_requested = self._break_in_requested, False
        plan = plans.analyse_stop(
            plans.Requests(stop.processor, stop.processor_level, self._tuning.max_transfer),
            self.facts,
            stop,
            look_closer=self._analyse_stops,
            break_in_requested=break_in_requested,
            fatal_print=fatal_print,
        )
        operation = _Operation(0, plan, on_done=self._analysis_done)
        if self._start_operation(operation):
            self._operations.appendleft(operation)

    def _analysis_done(self, result: object) -> None:
        if isinstance(result, StateChanged):
            self._stop_reported = True
            self._events.append(replace(result, payload=self._stop_payload))

    def _held_timeout(self, now: float) -> None:
        held = self._held
        assert held is not None
        held.resets_left -= 1
        if held.resets_left > 0:
            self._send_control(PacketType.KD_RESET)
            held.deadline = self._ack_deadline(16, now)
            return
        # The target never answered; go on with the stop and guess the initial id.
        self._held = None
        self._ids_known = True
        self._count("reset_unanswered")
        self._on_state_change(held.packet, now)

    # ------------------------------------------------------------------ helpers

    def _send_control(self, packet_type: int, packet_id: int = CONTROL_PACKET_ID) -> None:
        if packet_type == PacketType.KD_RESET:
            packet_id = self.dialect.reset_id(self._next_id)
        self._emit(encode_control_packet(packet_type, packet_id))

    def _emit(self, wire: bytes) -> None:
        self._output.emit(wire)

    def _after_reset(self) -> None:
        """Our RESET went out: on serial both sides start again at the initial id; under
        KDNET the RESET carried our next id, which the target now expects."""
        self._next_id = self.dialect.id_after_reset(
            self._next_id, first_id=self.dialect.host_first_id
        )

    def _count(self, kind: str, amount: int = 1) -> None:
        self.noise_counters[kind] = self.noise_counters.get(kind, 0) + amount
        self._events.append(ProtocolNoise(kind=kind, count=amount))


def _answers(request: ManipulateMessage, reply: ManipulateMessage) -> bool:
    """Does `reply` answer `request`? The ApiNumber must match, and so must the address of a
    memory transfer: kd64 sends the request's own structure back with the outputs filled in,
    so an answer to an earlier read (the target saw that request twice across a RESET) is told
    apart from the answer to this one. That Windows echoes the address is UNCONFIRMED (ReactOS
    does); a reply whose address is 0 is therefore accepted."""
    if request.api != reply.api or request.api in RESUMING_APIS:
        return False
    asked, answered = request.body, reply.body
    if isinstance(asked, ReadMemory) and isinstance(answered, ReadMemory):
        return answered.address in (0, asked.address)
    if isinstance(asked, ContextEx) and isinstance(answered, ContextEx):
        return answered.offset == asked.offset
    return True
