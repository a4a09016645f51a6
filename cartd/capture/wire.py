"""`wire.pcapng`: every byte of a KD link, both directions, timestamped, for Wireshark and friends.

The blocks are built by the `python-pcapng` library (a maintained implementation of the format,
not a hand-rolled one): one Section Header, one Interface Description and one Enhanced Packet
Block per chunk of bytes as the link delivered or sent it. Timestamps are microseconds since the
epoch (pcapng's default resolution, so no `if_tsresol` option is written). The direction is in
each packet's `epb_flags` option (pcapng spec, "Enhanced Packet Block Flags Word", bits 0-1):
inbound = from the target, outbound = to the target.

While the session is live the file is `wire.pcapng.partial`; a clean close fsyncs it and renames
it to `wire.pcapng`, so a `wire.pcapng` is always whole. A crash leaves the `.partial`, which
`cartd.capture.recover` cuts back to its last whole block and renames.
"""

from __future__ import annotations

import io
import ipaddress
import struct
from pathlib import Path

# python-pcapng ships no type information; its objects are used only inside this module.
from pcapng import FileWriter, blocks  # type: ignore[import-untyped]

from cartd.capture.files import AppendOnlyFile, replace_durably

# There is no registered link type for KD over a serial line (or for KDNET payloads), so the
# capture uses the first of the link types reserved for private use (tcpdump.org,
# "LINKTYPE_USER0 147"); the interface's name and description say what the bytes are.
LINKTYPE_USER0 = 147
# KDNET links are recorded as the IPv4 packets that carried the UDP datagrams (LINKTYPE_IPV4,
# raw IPv4 with no link-layer header), so Wireshark dissects IP and UDP (and, with a KDNET
# dissector and the key, the rest).
LINKTYPE_IPV4 = 228

# epb_flags bits 0-1: 00 = direction unknown, 01 = inbound, 10 = outbound.
EPB_FLAGS_INBOUND = 0b01
EPB_FLAGS_OUTBOUND = 0b10

# An interface with no description from the caller still says what its bytes are.
DEFAULT_INTERFACE_NAME = "kd"
_INTERFACE_DESCRIPTIONS = {
    LINKTYPE_USER0: "Windows kernel debugger (KD) traffic as cartd sent and received it; "
    "LINKTYPE_USER0 because no link type is registered for KD",
    LINKTYPE_IPV4: "KDNET datagrams (encrypted KD) as cartd sent and received them",
}

_MICROSECONDS = 1_000_000


class WireWriter:
    """Writes `partial_path` while live; `close()` renames it to `final_path`."""

    def __init__(
        self,
        partial_path: Path,
        final_path: Path,
        description: str | None,
        *,
        link_type: int = LINKTYPE_USER0,
    ) -> None:
        self.final_path = final_path
        self._file = AppendOnlyFile(partial_path)
        self._section = blocks.SectionHeader(options={"shb_userappl": "cartd"})
        self._interface = self._section.new_member(
            blocks.InterfaceDescription,
            link_type=link_type,
            snaplen=0,  # no limit: every byte is kept
            options={
                "if_name": description or DEFAULT_INTERFACE_NAME,
                "if_description": _INTERFACE_DESCRIPTIONS.get(link_type, ""),
            },
        )
        # The library writes to a stream; each block's bytes are taken from this buffer and
        # queued as one record, so a failed flush can never leave half a block in the file.
        self._encoded = io.BytesIO()
        self._writer = FileWriter(self._encoded, self._section)  # writes the SHB and the IDB
        self._queue_encoded()

    @property
    def path(self) -> Path:
        """The file being written (the `.partial` name until a clean close)."""
        return self._file.path

    @property
    def pending_bytes(self) -> int:
        return self._file.pending_bytes

    def append(self, data: bytes, *, from_target: bool, time: float) -> None:
        """Queue one chunk of link traffic; `time` is wall-clock seconds since the epoch."""
        if not data:
            return
        microseconds = round(time * _MICROSECONDS)
        packet = self._section.new_member(
            blocks.EnhancedPacket,
            interface_id=self._interface.interface_id,
            timestamp_high=microseconds >> 32,
            timestamp_low=microseconds & 0xFFFF_FFFF,
            packet_data=bytes(data),
            options={"epb_flags": EPB_FLAGS_INBOUND if from_target else EPB_FLAGS_OUTBOUND},
        )
        self._writer.write_block(packet)
        self._queue_encoded()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Flush, close, and give the finished file its final name."""
        self._file.close()
        replace_durably(self._file.path, self.final_path)

    def abandon(self) -> None:
        """Close without finishing: the `.partial` stays for recovery."""
        self._file.abandon()

    def _queue_encoded(self) -> None:
        self._file.append(self._encoded.getvalue())
        self._encoded.seek(0)
        self._encoded.truncate()


def ipv4_udp_packet(payload: bytes, source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The IPv4 packet that carried a UDP datagram, for a LINKTYPE_IPV4 capture. The UDP
    checksum is left 0, which IPv4 allows; the IP header checksum is computed."""
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,
        64,
        17,
        0,  # IPv4, IHL 5; DF; TTL 64; UDP
        ipaddress.IPv4Address(source[0]).packed,
        ipaddress.IPv4Address(destination[0]).packed,
    )
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:] + udp
