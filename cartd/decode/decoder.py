"""One capture file in, decoded records and a summary out: the engine behind `cartd decode`.

`CaptureDecoder` joins the pieces: `CaptureReader` yields UDP datagrams and serial chunks,
`KdnetFollower` decrypts the KDNET ones with the key, `SerialFollower` reframes cartd's serial
captures (no key needed), and `Summary` counts everything. Records come out in file order while
the file is read, so a long capture starts printing at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cartd.decode.kdnet import KdnetFollower, KdnetRecord
from cartd.decode.reader import CaptureError, CaptureReader, SerialChunk, UdpDatagram
from cartd.decode.serial import SerialFollower, SerialRecord
from cartd.decode.summary import Summary
from cartd.kd.kdnet.datagram import MAGIC
from cartd.kd.kdnet.keys import KdnetKey

DecodedRecord = KdnetRecord | SerialRecord


class KeyRequiredError(CaptureError):
    """The capture holds KDNET traffic and no key was given."""


class CaptureDecoder:
    """Decode one capture. Iterate `records()` to the end, then read `summary`."""

    def __init__(self, path: Path, key: KdnetKey | None) -> None:
        self.path = path
        self._key = key
        self.summary = Summary()

    def records(self) -> Iterator[DecodedRecord]:
        """Every decoded record in file order. Raises `CaptureError` for a file that is not a
        usable capture (before the first record or, for a damaged tail, after the last good
        one), and `KeyRequiredError` at the first KDNET datagram when there is no key."""
        follower = KdnetFollower(self._key) if self._key is not None else None
        serial = SerialFollower()
        other_udp = 0
        with CaptureReader(self.path) as reader:
            for item in reader.records():
                if isinstance(item, SerialChunk):
                    self.summary.add_serial_chunk(item)
                    yield from self._serial(serial.feed(item))
                    continue
                record = self._kdnet(follower, item)
                if record is None:
                    other_udp += 1
                    continue
                self.summary.add_kdnet(record)
                yield record
            yield from self._serial(serial.finish())
            self.summary.add_reader_stats(reader.stats, other_udp=other_udp)
            if follower is not None:
                self.summary.sessions = follower.sessions
                self.summary.conversations = follower.conversations
        if not self.summary.datagrams and not self.summary.serial_chunks:
            raise CaptureError(self._nothing_found())

    def _kdnet(self, follower: KdnetFollower | None, item: UdpDatagram) -> KdnetRecord | None:
        if follower is not None:
            return follower.feed(item)
        if item.payload.startswith(MAGIC):
            raise KeyRequiredError(
                f"{self.path}: the capture holds KDNET traffic (frame {item.frame}); give its "
                "key with --key w.x.y.z (the target shows it: bcdedit /dbgsettings)"
            )
        return None

    def _serial(self, records: list[SerialRecord]) -> Iterator[SerialRecord]:
        for record in records:
            self.summary.add_serial(record)
            yield record

    def _nothing_found(self) -> str:
        summary = self.summary
        if not summary.frames:
            return f"{self.path}: the capture holds no packets"
        return (
            f"{self.path}: no KDNET traffic and no cartd serial traffic in {summary.frames} "
            f"frames ({summary.other_udp} UDP datagrams, none starting with 'MDBG'; "
            f"{summary.other_frames} other frames)"
        )
