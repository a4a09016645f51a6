"""The KD protocol in TARGET role: what Windows' KDCOM does at its end of the cable.

The simulator drives this; it is equally sans-I/O (`receive_data`, `data_to_send`, `get_timer`,
`handle_timer`, `next_event`).

Theory of operation
-------------------
A real target is single-threaded: it either runs (and reads the line only from the clock tick,
one byte at a time, looking for the break-in byte), or sits in the debugger sending one packet
and waiting for its ACK, or waiting for a packet of one type. The rules, from spec section 3.1:

1. While running and idle the target reads nothing but break-in bytes; every other byte is lost.
2. A data packet goes out with NextPacketIdToSend (the first after boot carries the sync bit)
   and waits for an ACK whose id is that id less the sync bit. RESEND makes it send the packet
   again; RESET resets both ids to INITIAL_PACKET_ID, answers RESET and sends the packet again
   with the new id. A host data packet arriving instead of the ACK, with the id the target
   expects next, means the ACK was lost: the target asks for it again (RESEND) and counts its
   own packet as delivered; any other data packet is ACKed and ignored.
3. A timeout sends the packet again and uses up one retry: 5 until the first exchange
   succeeds, then 20. When they run out the target gives up only on a DbgPrint, a LoadSymbols
   stop or a CreateFile: it declares the debugger absent and resets its ids (sync bit again).
   An exception stop or a prompt is sent again forever: the machine hangs for its debugger.
4. While absent, DbgPrint and LoadSymbols are not sent at all. A valid leader or a break-in byte
   brings the debugger back.
5. A received data packet is ACKed (with its own id) if it decodes; a repeat of an old id, or a
   packet of another type than the one awaited, is then ignored.
6. While stopped (after a state change is ACKed) the target serves requests until it resumes;
   a RESEND or RESET there makes it send its state change again (KdpSendWaitContinue).
7. A break-in byte seen while the target reads packets is remembered as a pending Ctrl-C.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum

from cartd.kd.constants import (
    BREAKIN_BYTE,
    CONTROL_PACKET_ID,
    INITIAL_PACKET_ID,
    DebugIoApi,
    NewState,
    PacketType,
)
from cartd.kd.debug_io import (
    get_string_message,
    print_string_message,
    pull_debug_io,
    push_debug_io,
)
from cartd.kd.dialect import SERIAL, KdDialect, PacketOutput
from cartd.kd.errors import KdDecodeError, KdUsageError
from cartd.kd.file_io import FileIoMessage, pull_file_io, push_file_io
from cartd.kd.framing import (
    BreakInByte,
    DecoderEvent,
    KdPacket,
    NoiseDetected,
    PacketDecoded,
    PacketDecoder,
    decode_datagram_packet,
    encode_control_packet,
    encode_data_packet,
)
from cartd.kd.manipulate import ManipulateMessage, pull_manipulate, push_manipulate
from cartd.kd.state_change import StateChangeMessage, push_state_change

# Retries (spec 3.1, KdpDefaultRetries / KdCompRetryCount): few at boot so that a machine
# without a debugger is not held up, the default once a debugger has answered.
BOOT_RETRIES = 5
DEFAULT_RETRIES = 20


class Outgoing(Enum):
    """What kind of packet the target is sending; decides the give-up rule (rule 3)."""

    PRINT = "print"
    LOAD_SYMBOLS = "load_symbols"
    EXCEPTION = "exception"  # any state change but LoadSymbols
    PROMPT = "prompt"
    FILE_IO = "file_io"
    REPLY = "reply"  # a manipulate reply, or anything else


_GIVES_UP = frozenset({Outgoing.PRINT, Outgoing.LOAD_SYMBOLS, Outgoing.FILE_IO})
_RETRIES_FOREVER = frozenset({Outgoing.EXCEPTION, Outgoing.PROMPT})
# After the ACK, what the target waits for (rule 6 and the prompt/file exchanges).
_AWAITS_AFTER = {
    Outgoing.LOAD_SYMBOLS: PacketType.KD_STATE_MANIPULATE,
    Outgoing.EXCEPTION: PacketType.KD_STATE_MANIPULATE,
    Outgoing.PROMPT: PacketType.KD_DEBUG_IO,
    Outgoing.FILE_IO: PacketType.KD_FILE_IO,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakInRequested:
    """A break-in byte reached the running target: it should stop (DBG_STATUS_CONTROL_C)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ManipulateReceived:
    message: ManipulateMessage
    payload: bytes = b""  # as received (the relay passes it on unchanged)


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptAnswered:
    text: bytes
    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileIoAnswered:
    message: FileIoMessage
    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketDelivered:
    kind: Outgoing


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketAbandoned:
    """Retries ran out and the target gave up (rule 3); the debugger is now absent."""

    kind: Outgoing


TargetEvent = (
    BreakInRequested
    | ManipulateReceived
    | PromptAnswered
    | FileIoAnswered
    | PacketDelivered
    | PacketAbandoned
)


@dataclass(slots=True)
class _Sending:
    kind: Outgoing
    packet_type: int
    payload: bytes
    packet_id: int
    deadline: float
    first_sent: float


class KdTarget:
    """KD TARGET role over a byte stream."""

    def __init__(
        self,
        *,
        ack_timeout: float = 1.0,
        seconds_per_byte: float = 0.0,
        dialect: KdDialect = SERIAL,
    ) -> None:
        """`dialect`: SERIAL for a byte stream (`receive_data`, `data_to_send`), KDNET for
        data-channel datagrams (`receive_datagram`, `datagrams_to_send`)."""
        self.dialect = dialect
        self._ack_timeout = ack_timeout
        self._seconds_per_byte = seconds_per_byte
        self._decoder = PacketDecoder()
        self._output = PacketOutput(dialect)
        self._events: deque[TargetEvent] = deque()
        self._queue: deque[tuple[Outgoing, int, bytes]] = deque()
        self._sending: _Sending | None = None
        self._awaiting: int | None = None  # packet type a receive waits for
        self._last_stop: bytes | None = None
        self._next_id = dialect.target_first_id
        self._expected_id = dialect.host_first_id
        self._retries = BOOT_RETRIES
        self._retries_left = BOOT_RETRIES
        self.debugger_present = True
        self.ctrl_c_pending = False
        self.noise_counters: dict[str, int] = {}

    # ------------------------------------------------------------------ I/O surface

    @property
    def reading(self) -> bool:
        """True while the target reads packets (sending, or waiting in the debugger)."""
        return self._sending is not None or self._awaiting is not None

    @property
    def stopped(self) -> bool:
        return self._awaiting == PacketType.KD_STATE_MANIPULATE

    @property
    def unanswered_since(self) -> float | None:
        """When the packet now on its way was first sent (None when nothing waits for an
        ACK): how long the debugger has not answered."""
        return self._sending.first_sent if self._sending is not None else None

    @property
    def idle(self) -> bool:
        """Running, with nothing queued or on the way."""
        return not self.reading and not self._queue

    def receive_data(self, data: bytes, now: float) -> None:
        if self.dialect.datagrams:
            raise KdUsageError("this target speaks KDNET: use receive_datagram()")
        if not self.reading:
            self._poll_break_in(data)
            return
        self._handle(self._decoder.receive_data(data, now), now)

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """One decrypted KDNET data-channel datagram."""
        if not self.dialect.datagrams:
            raise KdUsageError("this target speaks serial KD: use receive_data()")
        if not self.reading:
            if datagram == bytes([BREAKIN_BYTE]):  # kdnet.md 3.4: break-in is a 1-byte datagram
                self._poll_break_in(datagram)
            return
        if datagram == bytes([BREAKIN_BYTE]):
            self._handle([BreakInByte()], now)
            return
        decoded = decode_datagram_packet(datagram)
        self._handle([PacketDecoded(decoded) if isinstance(decoded, KdPacket) else decoded], now)

    def data_to_send(self) -> bytes:
        return self._output.take_bytes()

    def datagrams_to_send(self) -> list[bytes]:
        return self._output.take_datagrams()

    def next_event(self) -> TargetEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [self._decoder.get_timer() if self.reading else None]
        if self._sending is not None:
            deadlines.append(self._sending.deadline)
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        if self.reading:
            self._handle(self._decoder.handle_timer(now), now)
        sending = self._sending
        if sending is None or now < sending.deadline:
            return
        if sending.kind not in _RETRIES_FOREVER:
            self._retries_left -= 1
        if self._retries_left > 0 or sending.kind in _RETRIES_FOREVER:
            self._count("retransmission")
            self._transmit(sending, now)
            return
        self._sending = None
        if sending.kind in _GIVES_UP:
            self._declare_debugger_absent()
        self._retries_left = self._retries
        self._events.append(PacketAbandoned(kind=sending.kind))
        self._send_next(now)

    # ------------------------------------------------------------------ commands

    def send_debug_print(self, text: bytes, now: float, *, processor: int = 0) -> bool:
        """Queue a DbgPrint; False if it was dropped because the debugger is absent."""
        if not self.debugger_present:
            return False
        payload = push_debug_io(print_string_message(text, processor=processor))
        self._enqueue(Outgoing.PRINT, PacketType.KD_DEBUG_IO, payload, now)
        return True

    def send_state_change(self, message: StateChangeMessage, now: float) -> bool:
        """Stop and report it. After the ACK the target serves requests until `resume()`.
        False if a LoadSymbols report was dropped because the debugger is absent."""
        is_load = (message.new_state & 0xFFFF) == NewState.LOAD_SYMBOLS
        if is_load and not self.debugger_present:
            return False
        kind = Outgoing.LOAD_SYMBOLS if is_load else Outgoing.EXCEPTION
        self._enqueue(kind, PacketType.KD_STATE_CHANGE64, push_state_change(message), now)
        return True

    def send_prompt(self, prompt: bytes, max_length: int, now: float) -> None:
        payload = push_debug_io(get_string_message(prompt, max_length))
        self._enqueue(Outgoing.PROMPT, PacketType.KD_DEBUG_IO, payload, now)

    def send_file_io(self, message: FileIoMessage, now: float) -> None:
        self._enqueue(Outgoing.FILE_IO, PacketType.KD_FILE_IO, push_file_io(message), now)

    def send_packet(self, packet_type: int, payload: bytes, now: float) -> bool:
        """Send a packet another target sent, as it is (cartd's relay toward a remote
        debugger); the rules for its kind are those of the packet itself. False if a DbgPrint
        or LoadSymbols report was dropped because the debugger is absent."""
        kind = _kind_of(packet_type, payload)
        if kind in _GIVES_UP and kind is not Outgoing.FILE_IO and not self.debugger_present:
            return False
        if kind is Outgoing.REPLY and not self.stopped:
            raise KdUsageError("replies are sent only while the target is stopped")
        self._enqueue(kind, packet_type, payload, now)
        return True

    @property
    def queued(self) -> int:
        """Packets waiting behind the one on its way."""
        return len(self._queue)

    def drop_queued_prints(self, keep: int) -> int:
        """Forget the oldest queued DbgPrints beyond `keep` (a debugger that reads slower than
        the target prints); returns how many were dropped."""
        prints = sum(1 for kind, _, _ in self._queue if kind is Outgoing.PRINT)
        excess = prints - keep
        if excess <= 0:
            return 0
        kept: deque[tuple[Outgoing, int, bytes]] = deque()
        dropped = 0
        for item in self._queue:
            if item[0] is Outgoing.PRINT and dropped < excess:
                dropped += 1
                continue
            kept.append(item)
        self._queue = kept
        return dropped

    def reply(self, message: ManipulateMessage, now: float) -> None:
        """Answer a ManipulateReceived while stopped."""
        if not self.stopped:
            raise KdUsageError("replies are sent only while the target is stopped")
        self._enqueue(Outgoing.REPLY, PacketType.KD_STATE_MANIPULATE, push_manipulate(message), now)

    def resume(self) -> None:
        """Leave the debugger (after Continue, Reboot or CauseBugCheck)."""
        if not self.stopped:
            raise KdUsageError("resume() needs a stopped target")
        self._awaiting = None
        self._last_stop = None
        self._go_idle_if_done()

    def restart_ids(self, now: float) -> None:
        """Start the packet ids again (a new KDNET session): the packet on its way, if any, is
        sent again with the new id."""
        self._next_id = self.dialect.target_first_id
        self._expected_id = self.dialect.host_first_id
        if self._sending is not None:
            self._transmit(self._sending, now)

    def take_ctrl_c_pending(self) -> bool:
        pending, self.ctrl_c_pending = self.ctrl_c_pending, False
        return pending

    def reboot(self) -> None:
        """Forget everything, as a freshly booted kernel does: ids start with the sync bit."""
        self._queue.clear()
        self._sending = None
        self._awaiting = None
        self._last_stop = None
        self._next_id = self.dialect.target_first_id
        self._expected_id = self.dialect.host_first_id
        self._retries = self._retries_left = BOOT_RETRIES
        self.debugger_present = True
        self.ctrl_c_pending = False
        self._decoder = PacketDecoder()

    # ------------------------------------------------------------------ sending

    def _enqueue(self, kind: Outgoing, packet_type: int, payload: bytes, now: float) -> None:
        self._queue.append((kind, packet_type, payload))
        if self._sending is None:
            self._send_next(now)

    def _send_next(self, now: float) -> None:
        if self._sending is not None or not self._queue:
            self._go_idle_if_done()
            return
        kind, packet_type, payload = self._queue.popleft()
        if packet_type == PacketType.KD_STATE_CHANGE64:
            self._last_stop = payload
        self._sending = _Sending(kind, packet_type, payload, self._next_id, now, now)
        self._retries_left = self._retries
        self._transmit(self._sending, now)

    def _transmit(self, sending: _Sending, now: float) -> None:
        sending.packet_id = self._next_id
        wire = encode_data_packet(
            sending.packet_type, sending.packet_id, sending.payload, trailer=self.dialect.trailer
        )
        sending.deadline = now + self._ack_timeout + len(wire) * self._seconds_per_byte
        self._emit(wire)

    def _delivered(self, now: float) -> None:
        sending = self._sending
        assert sending is not None
        self._sending = None
        self._next_id = self.dialect.next_id(self._next_id)
        self._retries = self._retries_left = DEFAULT_RETRIES
        if sending.kind in _AWAITS_AFTER:
            self._awaiting = _AWAITS_AFTER[sending.kind]
        self._events.append(PacketDelivered(kind=sending.kind))
        self._send_next(now)

    def _go_idle_if_done(self) -> None:
        if not self.reading:
            # Back to running: the UART is only polled for break-in from now on, and whatever
            # half packet the decoder held is lost like an overrun FIFO.
            self._decoder = PacketDecoder()

    def _declare_debugger_absent(self) -> None:
        self.debugger_present = False
        self._next_id = self.dialect.target_first_id
        self._expected_id = self.dialect.host_first_id
        self._retries = BOOT_RETRIES

    def _resend_stop(self, now: float) -> None:
        """Rule 6: KdpSendWaitContinue sends the state change again."""
        if self._last_stop is None or self._sending is not None:
            return
        self._sending = _Sending(
            Outgoing.EXCEPTION,
            PacketType.KD_STATE_CHANGE64,
            self._last_stop,
            self._next_id,
            now,
            now,
        )
        self._transmit(self._sending, now)

    # ------------------------------------------------------------------ receiving

    def _poll_break_in(self, data: bytes) -> None:
        if BREAKIN_BYTE in data:
            self.debugger_present = True
            self._events.append(BreakInRequested())

    def _handle(self, events: list[DecoderEvent], now: float) -> None:
        for event in events:
            if isinstance(event, PacketDecoded):
                self.debugger_present = True
                if event.packet.is_control:
                    self._on_control(event.packet, now)
                else:
                    self._on_data(event.packet, now)
            elif isinstance(event, BreakInByte):
                self.debugger_present = True
                self.ctrl_c_pending = True
            elif isinstance(event, NoiseDetected):
                self._count(event.kind.value, event.size)
                if event.kind.value != "garbage":
                    self._send_control(PacketType.KD_RESEND)

    def _on_control(self, packet: KdPacket, now: float) -> None:
        sending = self._sending
        if packet.packet_type == PacketType.KD_ACKNOWLEDGE:
            if sending is not None and packet.packet_id == self.dialect.ack_id(sending.packet_id):
                self._delivered(now)
            else:
                self._count("stray_ack")
        elif packet.packet_type == PacketType.KD_RESEND:
            if sending is not None:
                self._transmit(sending, now)
            elif self.stopped:
                self._resend_stop(now)
        elif packet.packet_type == PacketType.KD_RESET:
            if self.dialect.datagrams:
                # kdnet.dll takes the id of a host RESET as the next one it expects (kdnet.md
                # 3.4, seen in capture A); its own ids go on.
                self._expected_id = packet.packet_id
            else:
                self._next_id = self._expected_id = INITIAL_PACKET_ID
            self._send_control(PacketType.KD_RESET)
            if sending is not None:
                self._transmit(sending, now)
            elif self.stopped:
                self._resend_stop(now)

    def _on_data(self, packet: KdPacket, now: float) -> None:
        if self._sending is not None:
            if packet.packet_id == self._expected_id:
                # Rule 2: our ACK was lost; have the host send this again once we listen.
                self._send_control(PacketType.KD_RESEND)
                self._delivered(now)
            else:
                self._send_control(PacketType.KD_ACKNOWLEDGE, packet.packet_id)
            return
        self._send_control(PacketType.KD_ACKNOWLEDGE, packet.packet_id)
        if packet.packet_id != self._expected_id or packet.packet_type != self._awaiting:
            self._count("ignored_packet")
            return
        try:
            event = self._decode_awaited(packet)
        except KdDecodeError:
            self._count("undecodable_packet")
            return
        self._expected_id = self.dialect.next_id(self._expected_id)
        if packet.packet_type != PacketType.KD_STATE_MANIPULATE:
            self._awaiting = None
        self._events.append(event)
        self._go_idle_if_done()

    def _decode_awaited(self, packet: KdPacket) -> TargetEvent:
        payload = packet.payload
        if packet.packet_type == PacketType.KD_STATE_MANIPULATE:
            return ManipulateReceived(message=pull_manipulate(payload), payload=payload)
        if packet.packet_type == PacketType.KD_DEBUG_IO:
            return PromptAnswered(text=pull_debug_io(payload).string_read, payload=payload)
        return FileIoAnswered(message=pull_file_io(payload), payload=payload)

    def _send_control(self, packet_type: int, packet_id: int = CONTROL_PACKET_ID) -> None:
        if packet_type == PacketType.KD_RESET:
            packet_id = self.dialect.reset_id(self._next_id)
        self._emit(encode_control_packet(packet_type, packet_id))

    def _emit(self, wire: bytes) -> None:
        self._output.emit(wire)

    def _count(self, kind: str, amount: int = 1) -> None:
        self.noise_counters[kind] = self.noise_counters.get(kind, 0) + amount


_U32 = struct.Struct("<I")


def _kind_of(packet_type: int, payload: bytes) -> Outgoing:
    """What a packet is, from its type and first field (NewState, or the debug I/O ApiNumber)."""
    first = _U32.unpack_from(payload)[0] if len(payload) >= _U32.size else 0
    if packet_type == PacketType.KD_STATE_CHANGE64:
        is_load = (first & 0xFFFF) == NewState.LOAD_SYMBOLS
        return Outgoing.LOAD_SYMBOLS if is_load else Outgoing.EXCEPTION
    if packet_type == PacketType.KD_DEBUG_IO:
        return Outgoing.PRINT if first == DebugIoApi.PRINT_STRING else Outgoing.PROMPT
    if packet_type == PacketType.KD_FILE_IO:
        return Outgoing.FILE_IO
    return Outgoing.REPLY
