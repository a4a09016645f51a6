"""Reading a capture file: UDP datagrams from a pcap/pcapng, byte chunks from cartd's serial one.

`CaptureReader` opens a pcap or pcapng file (gzip-compressed too) with scapy, a maintained
reader of both formats, and yields one record per frame that `cartd decode` can use:

- `UdpDatagram` for a UDP packet over IPv4 or IPv6 on any link layer scapy dissects (Ethernet,
  Linux cooked, raw IP, loopback): time, source and destination address, the UDP payload;
- `SerialChunk` for a frame on a LINKTYPE_USER0 interface, which is how cartd's own
  `wire.pcapng` stores the bytes of a serial KD link, with the direction from the packet's
  `epb_flags` (cartd.capture.wire).

Every other frame (ARP, TCP, IP fragments, unknown link types) is counted in `ReaderStats`,
not yielded. A file that cannot be read raises `CaptureError`, whose message is meant for the
person who gave us the file: missing, empty, not a capture, or cut short.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Self

# scapy is used only in this module, behind typed records. Its readers' records and packet
# fields are loosely typed (named tuples, dynamic fields), so they are handled as Any here.
from scapy.config import conf
from scapy.error import Scapy_Exception
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import RawPcapNgReader, RawPcapReader

from cartd.capture.wire import EPB_FLAGS_INBOUND, EPB_FLAGS_OUTBOUND, LINKTYPE_USER0
from cartd.kd.kdnet.handshake import PeerAddress

# scapy's readers stop at the first damaged record with a logged warning and a silent end of
# iteration. The warning would be noise next to our own message, so the logger is quietened
# while a file is read, and truncation is detected from the reader's position instead.
_SCAPY_LOGGER = logging.getLogger("scapy.runtime")

# scapy cuts every record to this many bytes (its MTU constant, 0xFFFF). A shorter record than
# the header's capture length, below this bound, means the file ended inside the record.
_SCAPY_RECORD_LIMIT = 0xFFFF

# The capture formats' magic numbers, to say what a file that is not a capture looks like.
_CAPTURE_MAGICS = (
    b"\xa1\xb2\xc3\xd4",  # pcap, big endian
    b"\xd4\xc3\xb2\xa1",  # pcap, little endian
    b"\xa1\xb2\x3c\x4d",  # pcap with nanoseconds, big endian
    b"\x4d\x3c\xb2\xa1",  # pcap with nanoseconds, little endian
    b"\x0a\x0d\x0d\x0a",  # pcapng Section Header Block
    b"\x1f\x8b",  # gzip (scapy reads a compressed capture transparently)
)

_NANOSECONDS = 1_000_000_000
_UDP_HEADER_SIZE = 8


class CaptureError(Exception):
    """The file cannot be read as a capture: the user's file, not a cartd bug. The message
    names the file and says what is wrong with it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpDatagram:
    """One UDP datagram. `frame` counts every frame of the file from 1, as Wireshark does."""

    frame: int
    time_ns: int  # nanoseconds since the Unix epoch, UTC
    src: PeerAddress
    dst: PeerAddress
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialChunk:
    """One chunk of a serial KD link as cartd's `wire.pcapng` recorded it."""

    frame: int
    time_ns: int
    from_target: bool | None  # None: the frame carries no direction flag
    data: bytes


CaptureRecord = UdpDatagram | SerialChunk


@dataclass(slots=True)
class ReaderStats:
    """What the reader saw besides the records it yielded."""

    frames: int = 0
    udp_datagrams: int = 0
    serial_chunks: int = 0
    other_frames: int = 0  # not UDP and not a USER0 serial chunk
    ip_fragments: int = 0  # UDP in a fragmented IP packet: KDNET never fragments (kdnet.md 6)


def _describe_start(head: bytes) -> str:
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        text = head.decode("ascii").strip()[:24]
        return f"it starts with the text {text!r}"
    return f"it starts with the bytes {head[:8].hex(' ')}"


def _check_file(path: Path) -> None:
    """The errors a person can fix before scapy sees the file, in plain words."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if path.is_dir():
        raise CaptureError(f"{path}: is a directory, not a capture file")
    if size == 0:
        raise CaptureError(f"{path}: the file is empty (0 bytes), not a capture")
    try:
        with path.open("rb") as file:
            head = file.read(32)
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not head.startswith(_CAPTURE_MAGICS):
        raise CaptureError(
            f"{path}: not a pcap or pcapng capture ({_describe_start(head)}); "
            "save the capture as pcap or pcapng"
        )


class CaptureReader:
    """Iterate over the usable records of one capture file. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stats = ReaderStats()
        _check_file(path)
        try:
            with self._quiet_scapy():
                # RawPcapReader picks the pcapng reader by itself when the magic says so.
                self._reader: Any = RawPcapReader(str(path))
        except (Scapy_Exception, EOFError, OSError, ValueError) as exc:
            raise CaptureError(
                f"{path}: not a readable pcap or pcapng capture: the file header is damaged "
                f"or cut short ({exc})"
            ) from None
        self._is_pcapng = isinstance(self._reader, RawPcapNgReader)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    @property
    def format_name(self) -> str:
        return "pcapng" if self._is_pcapng else "pcap"

    @staticmethod
    @contextlib.contextmanager
    def _quiet_scapy() -> Iterator[None]:
        level = _SCAPY_LOGGER.level
        _SCAPY_LOGGER.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            _SCAPY_LOGGER.setLevel(level)

    def records(self) -> Iterator[CaptureRecord]:
        """Every UDP datagram and serial chunk in file order. Raises `CaptureError` when the
        file turns out to be cut short or damaged after the records already yielded."""
        stream: BinaryIO = self._reader.f
        while True:
            position = stream.tell()
            try:
                with self._quiet_scapy():
                    data, metadata = self._reader._read_packet()
            except (EOFError, Scapy_Exception, OSError, ValueError):
                self._check_clean_end(stream, position)
                return
            self.stats.frames += 1
            if not self._is_pcapng and len(data) < min(metadata.caplen, _SCAPY_RECORD_LIMIT):
                self._truncated(len(data), metadata.caplen)
            record = self._record(data, metadata)
            if record is not None:
                yield record

    def _truncated(self, have: int, want: int) -> None:
        raise CaptureError(
            f"{self.path}: the capture is truncated: frame {self.stats.frames} has {have} of "
            f"its {want} bytes (the file was cut short, for example by a full disk or an "
            "interrupted copy)"
        )

    def _check_clean_end(self, stream: BinaryIO, position: int) -> None:
        """scapy ends iteration the same way at the end of the file and at a damaged record;
        whatever is left after the last whole record tells them apart."""
        try:
            stream.seek(position)
            leftover = len(stream.read())
        except (EOFError, OSError):  # a gzip stream that ends early
            leftover = -1
        if leftover == 0:
            return
        if leftover < 0:
            what = "its compressed (gzip) data ends early"
        else:
            what = f"it ends with {leftover} bytes that are not a whole record"
        raise CaptureError(
            f"{self.path}: the capture is truncated or damaged after frame "
            f"{self.stats.frames}: {what}"
        )

    def _time_ns(self, metadata: Any) -> int:
        if self._is_pcapng:
            if metadata.tshigh is None:  # a Simple Packet Block has no timestamp
                return 0
            ticks = int(metadata.tshigh) << 32 | int(metadata.tslow)
            return ticks * _NANOSECONDS // int(metadata.tsresol)
        fraction = int(metadata.usec) if self._reader.nano else int(metadata.usec) * 1000
        return int(metadata.sec) * _NANOSECONDS + fraction

    def _record(self, data: bytes, metadata: Any) -> CaptureRecord | None:
        linktype = int(metadata.linktype if self._is_pcapng else self._reader.linktype)
        frame = self.stats.frames
        if linktype == LINKTYPE_USER0:
            self.stats.serial_chunks += 1
            # Classic pcap has no direction; pcapng has it only if epb_flags was written.
            flags = getattr(metadata, "direction", None)
            from_target = {EPB_FLAGS_INBOUND: True, EPB_FLAGS_OUTBOUND: False}.get(int(flags or 0))
            return SerialChunk(
                frame=frame, time_ns=self._time_ns(metadata), from_target=from_target, data=data
            )
        datagram = self._udp(data, linktype)
        if datagram is None:
            return None
        src, dst, payload = datagram
        self.stats.udp_datagrams += 1
        return UdpDatagram(
            frame=frame, time_ns=self._time_ns(metadata), src=src, dst=dst, payload=payload
        )

    def _udp(self, data: bytes, linktype: int) -> tuple[PeerAddress, PeerAddress, bytes] | None:
        layer = conf.l2types.num2layer.get(linktype)
        if layer is None:
            self.stats.other_frames += 1
            return None
        with self._quiet_scapy():
            packet = layer(data)
        udp = packet.getlayer(UDP)
        ip = packet.getlayer(IP) or packet.getlayer(IPv6)
        if udp is None or ip is None:
            self.stats.other_frames += 1
            return None
        if isinstance(ip, IP) and (ip.frag or ip.flags.MF):
            self.stats.ip_fragments += 1
            return None
        # Each scapy layer keeps the bytes it was dissected from (for UDP: the IP payload, cut
        # to the IP length). Slicing those by the UDP length gives the payload exactly, even
        # when scapy dissected it as some other protocol or an Ethernet trailer follows.
        original = bytes(udp.original)
        length = (
            int(udp.len)
            if udp.len is not None and int(udp.len) >= _UDP_HEADER_SIZE
            else len(original)
        )
        payload = original[_UDP_HEADER_SIZE:length]
        return (str(ip.src), int(udp.sport)), (str(ip.dst), int(udp.dport)), payload
