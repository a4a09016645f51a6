"""The counts at the end of `cartd decode`: datagrams by kind, KD packets by type, failures.

`Summary` is filled record by record (`add_kdnet`, `add_serial`) and rendered once, as text
lines or as the ``{"summary": {...}}`` object of `--json`. The JSON keys are stable names that
tests and scripts rely on; the text says the same in sentences.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cartd.decode.describe import type_name
from cartd.decode.kdnet import ControlKind, KdnetRecord, Outcome
from cartd.decode.reader import ReaderStats, SerialChunk
from cartd.decode.serial import SerialRecord
from cartd.kd.constants import PacketType
from cartd.kd.framing import BreakInByte, KdPacket, NoiseDetected
from cartd.kd.kdnet.datagram import Channel, Direction

TARGET_TO_HOST = "target->host"
HOST_TO_TARGET = "host->target"


def direction_name(direction: Direction | None) -> str | None:
    if direction is None:
        return None
    return TARGET_TO_HOST if direction is Direction.TARGET_TO_HOST else HOST_TO_TARGET


def serial_direction_name(from_target: bool | None) -> str | None:
    if from_target is None:
        return None
    return TARGET_TO_HOST if from_target else HOST_TO_TARGET


@dataclass(slots=True)
class Summary:
    """Counts over one capture."""

    # KDNET datagrams (UDP payloads that start with "MDBG").
    datagrams: int = 0
    authenticated: int = 0
    versions: Counter[int] = field(default_factory=Counter)  # of authenticated datagrams
    pokes: int = 0
    pokes_without_host: int = 0
    keepalives: int = 0
    responses: int = 0
    poke_requests: int = 0
    unknown_control: int = 0
    data: Counter[str] = field(default_factory=Counter)  # authenticated, by direction
    replays: int = 0
    authentication_failures: int = 0
    undecryptable: int = 0
    malformed: int = 0
    sessions: int = 0
    conversations: int = 0
    # KD packets, from KDNET data datagrams and serial streams alike.
    kd_data_packets: Counter[str] = field(default_factory=Counter)
    kd_control_packets: Counter[str] = field(default_factory=Counter)
    kd_unused: int = 0
    kd_breakins: int = 0
    kd_malformed: int = 0  # a KDNET body that is no KD packet
    # Serial captures.
    serial_chunks: int = 0
    serial_bytes: Counter[str] = field(default_factory=Counter)  # by direction
    serial_noise: Counter[str] = field(default_factory=Counter)  # bytes, by noise kind
    # The file.
    frames: int = 0
    other_udp: int = 0  # UDP datagrams that are not KDNET
    other_frames: int = 0  # not UDP, not serial
    ip_fragments: int = 0

    # ------------------------------------------------------------------ counting

    def add_kdnet(self, record: KdnetRecord) -> None:
        self.datagrams += 1
        match record.outcome:
            case Outcome.AUTHENTICATION_FAILED:
                self.authentication_failures += 1
                return
            case Outcome.UNDECRYPTABLE:
                self.undecryptable += 1
                return
            case Outcome.MALFORMED:
                self.malformed += 1
                return
            case Outcome.REPLAY:
                # Authenticated, but its KD packet was already counted the first time.
                self.replays += 1
                self.authenticated += 1
                self.versions[record.version or 0] += 1
                return
        self.authenticated += 1
        self.versions[record.version or 0] += 1
        if record.channel is Channel.DATA:
            self.data[direction_name(record.direction) or "unknown"] += 1
            if record.kd is not None:
                self._add_kd(record.kd)
            return
        match record.control:
            case ControlKind.POKE:
                self.pokes += 1
                if record.keepalive:
                    self.keepalives += 1
                else:
                    self.pokes_without_host += 1
            case ControlKind.RESPONSE:
                self.responses += 1
            case ControlKind.POKE_REQUEST:
                self.poke_requests += 1
            case _:
                self.unknown_control += 1

    def add_serial_chunk(self, chunk: SerialChunk) -> None:
        self.serial_chunks += 1
        self.serial_bytes[serial_direction_name(chunk.from_target) or "unknown"] += len(chunk.data)

    def add_serial(self, record: SerialRecord) -> None:
        if isinstance(record.event, NoiseDetected):
            self.serial_noise[record.event.kind.value] += record.event.size
        else:
            self._add_kd(record.event)

    def _add_kd(self, event: KdPacket | NoiseDetected | BreakInByte) -> None:
        if isinstance(event, BreakInByte):
            self.kd_breakins += 1
        elif isinstance(event, NoiseDetected):
            self.kd_malformed += 1
        elif event.packet_type == PacketType.UNUSED:
            self.kd_unused += 1
        elif event.is_control:
            self.kd_control_packets[type_name(event.packet_type)] += 1
        else:
            self.kd_data_packets[type_name(event.packet_type)] += 1

    def add_reader_stats(self, stats: ReaderStats, *, other_udp: int) -> None:
        self.frames = stats.frames
        self.other_frames = stats.other_frames
        self.ip_fragments = stats.ip_fragments
        self.other_udp = other_udp

    # ------------------------------------------------------------------ judgement

    @property
    def key_probably_wrong(self) -> bool:
        """KDNET traffic that the key authenticates not once, though some was checked."""
        return self.datagrams > 0 and self.authenticated == 0 and self.authentication_failures > 0

    def notes(self) -> list[str]:
        """What the numbers mean, for a person."""
        notes = []
        if self.key_probably_wrong:
            notes.append(
                f"nothing authenticated: all {self.authentication_failures} datagrams that "
                "could be checked failed authentication, so the key is probably wrong"
            )
        elif self.undecryptable:
            notes.append(
                f"{self.undecryptable} data datagrams are undecryptable: the handshake "
                "(the host's response) that set their data key is not in the capture"
            )
        if self.authentication_failures and not self.key_probably_wrong:
            notes.append(
                f"{self.authentication_failures} datagrams failed authentication: damaged, "
                "forged, or under a handshake that is not in the capture"
            )
        return notes

    # ------------------------------------------------------------------ rendering

    def to_json(self) -> dict[str, object]:
        summary: dict[str, object] = {"frames": self.frames}
        if self.datagrams:
            summary |= {
                "datagrams": self.datagrams,
                "authenticated": self.authenticated,
                "versions": {str(version): n for version, n in sorted(self.versions.items())},
                "control": {
                    "pokes": self.pokes,
                    "pokes_without_host": self.pokes_without_host,
                    "keepalives": self.keepalives,
                    "responses": self.responses,
                    "poke_requests": self.poke_requests,
                    "unknown": self.unknown_control,
                },
                "data": dict(sorted(self.data.items(), reverse=True)),
                "replays": self.replays,
                "authentication_failures": self.authentication_failures,
                "undecryptable": self.undecryptable,
                "malformed": self.malformed,
                "sessions": self.sessions,
                "conversations": self.conversations,
            }
        if self.serial_chunks:
            summary["serial"] = {
                "chunks": self.serial_chunks,
                "bytes": dict(sorted(self.serial_bytes.items(), reverse=True)),
                "noise_bytes": dict(sorted(self.serial_noise.items())),
            }
        summary |= {
            "kd_data_packets": dict(self.kd_data_packets.most_common()),
            "kd_control_packets": dict(self.kd_control_packets.most_common()),
            "kd_unused": self.kd_unused,
            "kd_breakins": self.kd_breakins,
            "kd_malformed": self.kd_malformed,
            "other_udp": self.other_udp,
            "other_frames": self.other_frames,
            "ip_fragments": self.ip_fragments,
            "notes": self.notes(),
        }
        return summary

    def text_lines(self) -> list[str]:
        lines = [f"Summary of {self.frames} frames"]
        if self.datagrams:
            versions = ", ".join(f"version {v}" for v in sorted(self.versions)) or "none"
            lines += [
                f"  KDNET datagrams: {self.datagrams}, {self.authenticated} authenticated "
                f"(protocol {versions}); conversations {self.conversations}, "
                f"sessions {self.sessions}",
                f"  control: {self.pokes} pokes ({self.pokes_without_host} without a host, "
                f"{self.keepalives} keepalives), {self.responses} responses, "
                f"{self.poke_requests} poke requests, {self.unknown_control} unknown",
                f"  data: {sum(self.data.values())} datagrams ({_counts(self.data)}), "
                f"{self.replays} replays",
                f"  authentication failures: {self.authentication_failures}",
                f"  undecryptable (no data key): {self.undecryptable}",
                f"  malformed: {self.malformed}",
            ]
        if self.serial_chunks:
            lines.append(
                f"  serial: {self.serial_chunks} chunks, bytes {_counts(self.serial_bytes)}, "
                f"noise bytes {_counts(self.serial_noise)}"
            )
        lines += [
            f"  KD data packets: {sum(self.kd_data_packets.values())} "
            f"({_counts(self.kd_data_packets)})",
            f"  KD control packets: {sum(self.kd_control_packets.values())} "
            f"({_counts(self.kd_control_packets)})",
            f"  KD other: {self.kd_unused} UNUSED, {self.kd_breakins} break-ins, "
            f"{self.kd_malformed} malformed",
        ]
        if self.other_udp or self.other_frames or self.ip_fragments:
            lines.append(
                f"  ignored: {self.other_udp} other UDP datagrams, {self.other_frames} other "
                f"frames, {self.ip_fragments} IP fragments"
            )
        lines += [f"Note: {note}" for note in self.notes()]
        return lines


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common()) or "none"
