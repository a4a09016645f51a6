"""Following the serial KD link in cartd's own `wire.pcapng`: byte chunks back into KD packets.

A serial capture is two byte streams (one per direction, from each packet's `epb_flags`), cut
into chunks wherever the link happened to deliver them. Each direction gets its own streaming
`PacketDecoder`, the one the daemon itself uses, fed with the capture's clock: a packet whose
bytes stop arriving is declared truncated after the same timeout as on the live link, and
whatever is still buffered at the end of the file is truncated too. No key is involved.

The decoder reports a dead packet byte by byte as it hunts through it for another leader (one
truncated byte, then the rest as garbage); when that hunt finds no packet, the follower folds
it back into what it was, one truncated packet of so many bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cartd.decode.reader import SerialChunk
from cartd.kd.framing import (
    BreakInByte,
    KdPacket,
    NoiseDetected,
    NoiseKind,
    PacketDecoded,
    PacketDecoder,
)

_NANOSECONDS = 1_000_000_000

DecoderEvent = PacketDecoded | NoiseDetected | BreakInByte


def _fold_truncation(events: list[DecoderEvent]) -> list[DecoderEvent]:
    """The events of a truncation as one `TRUNCATED` noise, unless a packet was found in it.
    A 0x62 byte in the dead packet is data, not a break-in, so it counts as noise too."""
    if not events or any(isinstance(event, PacketDecoded) for event in events):
        return events
    size = sum(event.size if isinstance(event, NoiseDetected) else 1 for event in events)
    return [NoiseDetected(NoiseKind.TRUNCATED, size)]


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialRecord:
    """One KD packet, break-in byte or run of noise found in a serial capture."""

    frame: int  # the chunk whose bytes completed it
    time_ns: int
    from_target: bool | None  # None: the capture does not say
    event: KdPacket | NoiseDetected | BreakInByte


class SerialFollower:
    """Turns the chunks of a serial capture, in file order, into `SerialRecord`s."""

    def __init__(self) -> None:
        self._decoders: dict[bool | None, PacketDecoder] = {}
        self._last: dict[bool | None, tuple[int, int]] = {}  # direction -> (frame, time_ns)

    def feed(self, chunk: SerialChunk) -> list[SerialRecord]:
        direction = chunk.from_target
        decoder = self._decoders.setdefault(direction, PacketDecoder())
        now = chunk.time_ns / _NANOSECONDS
        records = self._records(direction, _fold_truncation(decoder.handle_timer(now)))
        self._last[direction] = (chunk.frame, chunk.time_ns)
        return records + self._records(direction, decoder.receive_data(chunk.data, now))

    def finish(self) -> list[SerialRecord]:
        """The end of the file: a packet still half received will never complete."""
        records: list[SerialRecord] = []
        for direction, decoder in self._decoders.items():
            records += self._records(
                direction, _fold_truncation(decoder.handle_timer(float("inf")))
            )
        return records

    def _records(
        self,
        direction: bool | None,
        events: list[DecoderEvent],
    ) -> list[SerialRecord]:
        frame, time_ns = self._last.get(direction, (0, 0))
        return [
            SerialRecord(
                frame=frame,
                time_ns=time_ns,
                from_target=direction,
                event=event.packet if isinstance(event, PacketDecoded) else event,
            )
            for event in events
        ]
