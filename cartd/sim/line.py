"""What a real serial line does to bytes: noise, loss, and a finite speed.

`LineFaults` damages a direction of traffic packet by packet, deterministically from a seed:
bit flips, dropped bytes, duplicated packets, lost packets (a lost ACK is the common case) and
bursts of garbage. `UartPacer` turns a baud rate into the time each write finishes on the wire,
so a pseudo-terminal (which is as fast as memory) behaves like a 115200 8N1 cable: ten bits a
byte, one start and one stop bit.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from cartd.kd.constants import (
    BREAKIN_BYTE,
    CONTROL_PACKET_LEADER,
    DATA_PACKET_LEADER,
    PACKET_HEADER_SIZE,
)

BITS_PER_BYTE = 10  # 8N1: start bit, eight data bits, stop bit


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRates:
    """Probability, per packet, of each kind of damage."""

    bit_flip: float = 0.0
    dropped_byte: float = 0.0
    duplicate: float = 0.0
    lost: float = 0.0
    garbage: float = 0.0

    @classmethod
    def uniform(cls, rate: float) -> FaultRates:
        """`rate` spread evenly over every kind: the `--noise RATE` of `cartd sim`."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"noise rate {rate} is not between 0 and 1")
        each = rate / 5
        return cls(bit_flip=each, dropped_byte=each, duplicate=each, lost=each, garbage=each)

    @property
    def any(self) -> bool:
        return any((self.bit_flip, self.dropped_byte, self.duplicate, self.lost, self.garbage))


def split_packets(data: bytes) -> list[bytes]:
    """Cut a clean stream of KD packets (and break-in bytes) at packet boundaries; whatever
    does not parse stays one piece."""
    pieces: list[bytes] = []
    position = 0
    while position < len(data):
        if data[position] == BREAKIN_BYTE:
            pieces.append(data[position : position + 1])
            position += 1
            continue
        if len(data) - position < PACKET_HEADER_SIZE:
            break
        leader, byte_count = struct.unpack_from("<I2xH", data, position)
        if leader == CONTROL_PACKET_LEADER:
            size = PACKET_HEADER_SIZE
        elif leader == DATA_PACKET_LEADER:
            size = PACKET_HEADER_SIZE + byte_count + 1
        else:
            break
        pieces.append(data[position : position + size])
        position += size
    if position < len(data):
        pieces.append(data[position:])
    return pieces


class LineFaults:
    """Damages one direction of traffic; `counts` says what it did, for tests and reports."""

    def __init__(self, rates: FaultRates, *, seed: int) -> None:
        self.rates = rates
        self._rng = random.Random(seed)
        self.counts: dict[str, int] = {}

    def apply(self, data: bytes) -> bytes:
        if not data or not self.rates.any:
            return data
        out = bytearray()
        for piece in split_packets(data):
            out += self._damage(piece)
        return bytes(out)

    def apply_datagrams(self, datagrams: list[bytes]) -> list[bytes]:
        """KDNET: datagrams are lost or duplicated whole; a damaged one would fail
        authentication and be dropped by the receiver, which is also a loss."""
        if not self.rates.any:
            return datagrams
        out: list[bytes] = []
        damaged = self.rates.bit_flip + self.rates.dropped_byte + self.rates.garbage
        for datagram in datagrams:
            if self._hit(self.rates.lost, "lost") or self._hit(damaged, "damaged"):
                continue
            out.append(datagram)
            if self._hit(self.rates.duplicate, "duplicate"):
                out.append(datagram)
        return out

    def _hit(self, rate: float, kind: str) -> bool:
        if rate and self._rng.random() < rate:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            return True
        return False

    def _damage(self, piece: bytes) -> bytes:
        rng = self._rng
        rates = self.rates
        if self._hit(rates.lost, "lost"):
            return b""
        damaged = bytearray(piece)
        if self._hit(rates.bit_flip, "bit_flip"):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        if len(damaged) > 1 and self._hit(rates.dropped_byte, "dropped_byte"):
            del damaged[rng.randrange(len(damaged))]
        if self._hit(rates.garbage, "garbage"):
            # Garbage never contains the break-in byte: it would make the target stop, and the
            # point of this noise is to test resynchronisation, not to change what the target
            # does. Leader bytes are allowed, so garbage can look like the start of a packet.
            burst = bytes(
                value if value != BREAKIN_BYTE else 0x63
                for value in rng.randbytes(rng.randrange(1, 64))
            )
            damaged[0:0] = burst
        if self._hit(rates.duplicate, "duplicate"):
            damaged += piece
        return bytes(damaged)


class UartPacer:
    """Models a UART's transmitter: bytes leave one after another at `baud`/10 bytes a second."""

    def __init__(self, baud: int) -> None:
        if baud <= 0:
            raise ValueError(f"baud rate must be positive, got {baud}")
        self.baud = baud
        self.seconds_per_byte = BITS_PER_BYTE / baud
        self._busy_until = 0.0

    def finish_time(self, size: int, now: float) -> float:
        """Queue `size` bytes at `now`; return when the last of them has left the wire."""
        start = max(now, self._busy_until)
        self._busy_until = start + size * self.seconds_per_byte
        return self._busy_until
