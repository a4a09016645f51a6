"""KD serial framing: building packets, and a streaming decoder that survives a noisy line.

Theory of operation
-------------------
A KD packet is a 16-byte header (leader, type, byte count, id, checksum), then for data packets
the payload and one trailing 0xAA (spec section 1). Control packets (ACK, RESEND, RESET) have no
payload and no trailer.

The decoder hunts for four identical leader bytes ("0000" or "iiii"), reads the header, and
accepts a packet only if every check passes: a known type, a byte count of at most 4000, the
trailer, and the checksum (a plain byte sum modulo 2**32). Control packets must carry a zero
byte count and checksum, so that a corrupted header is never taken for a RESET.

Numbered rules:
1. Anything that fails a check is reported as a `NoiseDetected` event with its kind and size,
   never raised (architecture rule 2).
2. After a failed candidate the decoder drops only the first leader byte and hunts again from the
   next byte, so a real packet that starts inside the bad one (after a dropped byte, say) is
   still found.
3. A packet that stops arriving half way is declared truncated once no byte has come for
   `truncation_timeout` seconds (`get_timer()` / `handle_timer(now)`); its bytes are hunted
   again like rule 2.
4. A lone break-in byte (0x62) seen while hunting is reported as `BreakInByte`: a target treats
   it as Ctrl-C, a host counts it as noise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from cartd.kd.constants import (
    BREAKIN_BYTE,
    CONTROL_LEADER_BYTE,
    CONTROL_PACKET_LEADER,
    CONTROL_PACKET_TYPES,
    DATA_LEADER_BYTE,
    DATA_PACKET_LEADER,
    DATA_PACKET_TYPES,
    PACKET_HEADER_SIZE,
    PACKET_MAX_SIZE,
    PACKET_TRAILING_BYTE,
    PacketType,
)
from cartd.kd.errors import KdUsageError

_HEADER = struct.Struct("<IHHII")  # leader, type, byte count, id, checksum
_DATA_LEADER = bytes([DATA_LEADER_BYTE]) * 4
_CONTROL_LEADER = bytes([CONTROL_LEADER_BYTE]) * 4

# How long a half-received packet may wait for its next byte before it is declared truncated.
# At 115200 baud bytes arrive every 87 us; one second covers USB-serial latency and scheduler
# hiccups on a small board while still recovering quickly from a lost tail.
DEFAULT_TRUNCATION_TIMEOUT = 1.0


def checksum(payload: bytes) -> int:
    """KD checksum: the sum of every payload byte modulo 2**32 (never truncated to 16 bits)."""
    return sum(payload) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class KdPacket:
    """One decoded packet. `payload` is empty for control packets."""

    packet_type: int
    packet_id: int
    payload: bytes = b""
    is_control: bool = False


def encode_data_packet(
    packet_type: int, packet_id: int, payload: bytes, *, trailer: bool = True
) -> bytes:
    """A data packet; `trailer=False` for KDNET, which carries one packet per datagram and
    drops the 0xAA (kdnet.md section 3.4)."""
    if len(payload) > PACKET_MAX_SIZE:
        raise KdUsageError(f"payload of {len(payload)} bytes exceeds {PACKET_MAX_SIZE}")
    header = _HEADER.pack(
        DATA_PACKET_LEADER, packet_type, len(payload), packet_id, checksum(payload)
    )
    return header + payload + (bytes([PACKET_TRAILING_BYTE]) if trailer else b"")


def encode_control_packet(packet_type: int, packet_id: int) -> bytes:
    if packet_type not in CONTROL_PACKET_TYPES:
        raise KdUsageError(f"packet type {packet_type} is not a control packet type")
    return _HEADER.pack(CONTROL_PACKET_LEADER, packet_type, 0, packet_id, 0)


def encode_packet(packet: KdPacket) -> bytes:
    if packet.is_control:
        return encode_control_packet(packet.packet_type, packet.packet_id)
    return encode_data_packet(packet.packet_type, packet.packet_id, packet.payload)


class NoiseKind(Enum):
    GARBAGE = "garbage"  # bytes outside any packet
    BAD_HEADER = "bad_header"  # leader followed by an unknown type or a malformed control packet
    OVERSIZED = "oversized"  # byte count above 4000
    MISSING_TRAILER = "missing_trailer"  # no 0xAA after the payload
    BAD_CHECKSUM = "bad_checksum"
    TRUNCATED = "truncated"  # the line went quiet half way through a packet


@dataclass(frozen=True, slots=True)
class PacketDecoded:
    packet: KdPacket


@dataclass(frozen=True, slots=True)
class NoiseDetected:
    kind: NoiseKind
    size: int  # bytes discarded (for a rejected candidate: the one leader byte dropped)


@dataclass(frozen=True, slots=True)
class BreakInByte:
    pass


DecoderEvent = PacketDecoded | NoiseDetected | BreakInByte


class PacketDecoder:
    """Streaming KD packet decoder for one direction of a byte stream."""

    def __init__(self, *, truncation_timeout: float = DEFAULT_TRUNCATION_TIMEOUT) -> None:
        self._buffer = bytearray()
        self._truncation_timeout = truncation_timeout
        self._last_data_time: float | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes, now: float) -> list[DecoderEvent]:
        if data:
            self._buffer += data
            self._last_data_time = now
        return self._decode()

    def get_timer(self) -> float | None:
        """When a partial packet will be declared truncated, or None if nothing waits."""
        if not self._buffer or self._last_data_time is None:
            return None
        return self._last_data_time + self._truncation_timeout

    def handle_timer(self, now: float) -> list[DecoderEvent]:
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        events: list[DecoderEvent] = []
        # Rule 3: the candidate at the front will never complete; drop its first byte and hunt
        # again. A trailing partial leader that is all that remains is garbage too.
        while self._buffer:
            events.append(NoiseDetected(NoiseKind.TRUNCATED, 1))
            del self._buffer[0]
            events.extend(self._decode())
        self._last_data_time = None
        return _merge_noise(events)

    def _decode(self) -> list[DecoderEvent]:
        events: list[DecoderEvent] = []
        while True:
            if not self._hunt_leader(events):
                break
            outcome = self._try_packet(events)
            if outcome is None:  # need more bytes
                break
        return _merge_noise(events)

    def _hunt_leader(self, events: list[DecoderEvent]) -> bool:
        """Discard bytes until the buffer starts with a leader; False if none is complete yet."""
        buffer = self._buffer
        starts = [i for i in (buffer.find(_DATA_LEADER), buffer.find(_CONTROL_LEADER)) if i >= 0]
        if starts:
            start = min(starts)
        else:
            # Keep a trailing run of up to three identical leader bytes: the rest of the leader
            # may be in the next read.
            start = len(buffer)
            if buffer and buffer[-1] in (DATA_LEADER_BYTE, CONTROL_LEADER_BYTE):
                while start > 0 and len(buffer) - start < 3 and buffer[start - 1] == buffer[-1]:
                    start -= 1
        if start:
            self._report_garbage(buffer[:start], events)
            del buffer[:start]
        return bool(starts)

    def _report_garbage(self, garbage: bytes | bytearray, events: list[DecoderEvent]) -> None:
        breakins = garbage.count(BREAKIN_BYTE)
        events.extend(BreakInByte() for _ in range(breakins))
        if len(garbage) > breakins:
            events.append(NoiseDetected(NoiseKind.GARBAGE, len(garbage) - breakins))

    def _reject_candidate(self, kind: NoiseKind, events: list[DecoderEvent]) -> bool:
        events.append(NoiseDetected(kind, 1))
        del self._buffer[0]
        return True

    def _try_packet(self, events: list[DecoderEvent]) -> bool | None:
        """Decode the packet at the front of the buffer. None: incomplete; True: consumed
        something (a packet or one rejected leader byte)."""
        buffer = self._buffer
        if len(buffer) < PACKET_HEADER_SIZE:
            return None
        leader, packet_type, byte_count, packet_id, packet_checksum = _HEADER.unpack_from(buffer)
        if leader == CONTROL_PACKET_LEADER:
            if packet_type not in CONTROL_PACKET_TYPES or byte_count or packet_checksum:
                return self._reject_candidate(NoiseKind.BAD_HEADER, events)
            del buffer[:PACKET_HEADER_SIZE]
            events.append(PacketDecoded(KdPacket(PacketType(packet_type), packet_id, b"", True)))
            return True
        if packet_type not in DATA_PACKET_TYPES:
            return self._reject_candidate(NoiseKind.BAD_HEADER, events)
        if byte_count > PACKET_MAX_SIZE:
            return self._reject_candidate(NoiseKind.OVERSIZED, events)
        end = PACKET_HEADER_SIZE + byte_count
        if len(buffer) < end + 1:
            return None
        if buffer[end] != PACKET_TRAILING_BYTE:
            return self._reject_candidate(NoiseKind.MISSING_TRAILER, events)
        payload = bytes(buffer[PACKET_HEADER_SIZE:end])
        if checksum(payload) != packet_checksum:
            return self._reject_candidate(NoiseKind.BAD_CHECKSUM, events)
        del buffer[: end + 1]
        events.append(PacketDecoded(KdPacket(PacketType(packet_type), packet_id, payload)))
        return True


def _merge_noise(events: list[DecoderEvent]) -> list[DecoderEvent]:
    """Fold runs of same-kind noise into one event, so a burst of garbage is one report."""
    merged: list[DecoderEvent] = []
    for event in events:
        previous = merged[-1] if merged else None
        if (
            isinstance(event, NoiseDetected)
            and isinstance(previous, NoiseDetected)
            and previous.kind is event.kind
        ):
            merged[-1] = NoiseDetected(event.kind, previous.size + event.size)
        else:
            merged.append(event)
    return merged


# KDNET's first data datagram from a target is a 12-byte "UNUSED" packet: leader 0, type 0,
# length 0 and the host's IPv4 address, no checksum (kdnet.md section 3.4; meaning UNCONFIRMED).
UNUSED_PACKET_SIZE = 12


def decode_datagram_packet(datagram: bytes) -> KdPacket | NoiseDetected:
    """The one KD packet in a KDNET data-channel datagram (already decrypted), or why not.
    The datagram's edges are the packet's: no leader hunting, no trailer, the byte count must
    match exactly."""
    if len(datagram) == UNUSED_PACKET_SIZE and datagram[:8] == bytes(8):
        return KdPacket(PacketType.UNUSED, 0, datagram[8:], False)
    if len(datagram) < PACKET_HEADER_SIZE:
        return NoiseDetected(NoiseKind.TRUNCATED, len(datagram))
    leader, packet_type, byte_count, packet_id, packet_checksum = _HEADER.unpack_from(datagram)
    if leader == CONTROL_PACKET_LEADER:
        if packet_type not in CONTROL_PACKET_TYPES or byte_count or len(datagram) != 16:
            return NoiseDetected(NoiseKind.BAD_HEADER, len(datagram))
        return KdPacket(PacketType(packet_type), packet_id, b"", True)
    if leader != DATA_PACKET_LEADER or packet_type not in DATA_PACKET_TYPES:
        return NoiseDetected(NoiseKind.BAD_HEADER, len(datagram))
    if byte_count > PACKET_MAX_SIZE:
        return NoiseDetected(NoiseKind.OVERSIZED, len(datagram))
    if len(datagram) != PACKET_HEADER_SIZE + byte_count:
        return NoiseDetected(NoiseKind.TRUNCATED, len(datagram))
    payload = bytes(datagram[PACKET_HEADER_SIZE:])
    if checksum(payload) != packet_checksum:
        return NoiseDetected(NoiseKind.BAD_CHECKSUM, len(datagram))
    return KdPacket(PacketType(packet_type), packet_id, payload, False)
