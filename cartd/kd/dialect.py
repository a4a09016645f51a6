"""The two ways KD packets travel: the serial byte stream and KDNET datagrams.

The packets themselves are the same; what differs is framing and the packet-id rules
(kd-serial-and-dumps.md section 3, kdnet.md section 3.4):

- framing: serial is a byte stream with leaders to hunt and 0xAA after each data packet; KDNET
  carries one packet per datagram, without the trailer.
- host ids: serial 0x80800000, toggling bit 0; KDNET 0x80000000, adding 2 per new packet.
- target ids: serial's first after boot carries the sync bit 0x800, then they toggle; KDNET's
  go 0, 2, 4, ...
- ACK id: serial acknowledges the id less the sync bit; KDNET the exact id.
- RESET: serial's carries id 0 and both sides restart at their initial ids; KDNET's carries the
  id its sender uses next, which the receiver then expects.
- break-in: serial sends one 0x62 byte; KDNET a datagram holding that one byte.
- largest read: 3944 bytes on serial (4000 - 0x38); 1360 under KDNET (a 1416-byte KD payload
  keeps the datagram unfragmented).

Under KDNET the 0x800 bit is an ordinary id bit (kdnet.md 3.4: do not read it as SYNC); a
target reboot is seen by the handshake instead (a poke without a connected host).
"""

from __future__ import annotations

from dataclasses import dataclass

from cartd.kd.constants import INITIAL_PACKET_ID, MAX_MANIPULATE_DATA, SYNC_PACKET_ID

# kdnet.md section 6: 1416 bytes of KD payload fit one unfragmented datagram; less the
# 0x38-byte manipulate header that leaves 1360 bytes of memory per request.
KDNET_MAX_TRANSFER = 1360
KDNET_HOST_FIRST_ID = 0x80000000
KDNET_ID_STEP = 2


@dataclass(frozen=True, slots=True)
class KdDialect:
    name: str
    host_first_id: int
    target_first_id: int
    sync_bit: int  # 0 where the protocol has no sync bit
    trailer: bool
    max_transfer: int
    datagrams: bool  # one packet per datagram (KDNET) rather than a byte stream

    def next_id(self, packet_id: int) -> int:
        """The id of the next new packet after `packet_id` was acknowledged."""
        if self.datagrams:
            return (packet_id + KDNET_ID_STEP) & 0xFFFFFFFF
        return (packet_id ^ 1) & ~self.sync_bit

    def ack_id(self, packet_id: int) -> int:
        return packet_id & ~self.sync_bit

    def reset_id(self, next_id: int) -> int:
        """The id a RESET carries: 0 on serial (targets ignore it); under KDNET the id the
        sender will use next, which the receiver takes as the next one to expect."""
        return next_id if self.datagrams else 0

    def id_after_reset(self, next_id: int, *, first_id: int) -> int:
        """The sender's next id once a RESET exchange is done."""
        return next_id if self.datagrams else first_id


SERIAL = KdDialect(
    name="serial",
    host_first_id=INITIAL_PACKET_ID,
    target_first_id=INITIAL_PACKET_ID | SYNC_PACKET_ID,
    sync_bit=SYNC_PACKET_ID,
    trailer=True,
    max_transfer=MAX_MANIPULATE_DATA,
    datagrams=False,
)
KDNET = KdDialect(
    name="kdnet",
    host_first_id=KDNET_HOST_FIRST_ID,
    target_first_id=0,
    sync_bit=0,
    trailer=False,
    max_transfer=KDNET_MAX_TRANSFER,
    datagrams=True,
)


class PacketOutput:
    """What a role has to send, kept the dialect's way: one byte stream on serial, a list of
    datagrams (one packet, or the break-in byte, each) under KDNET."""

    def __init__(self, dialect: KdDialect) -> None:
        self._datagrams_mode = dialect.datagrams
        self._stream = bytearray()
        self._datagrams: list[bytes] = []

    def emit(self, wire: bytes) -> None:
        if self._datagrams_mode:
            self._datagrams.append(wire)
        else:
            self._stream += wire

    def take_bytes(self) -> bytes:
        out = bytes(self._stream)
        self._stream.clear()
        return out

    def take_datagrams(self) -> list[bytes]:
        out, self._datagrams = self._datagrams, []
        return out
