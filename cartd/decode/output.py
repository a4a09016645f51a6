"""How `cartd decode` shows one record: a text line, or one JSON object for `--json`.

Text lines have fixed columns so that a capture reads like a log::

    2016-01-24T10:36:11.474228Z  target->host  control  #3     poke v4: no host connected; ...
    2016-01-24T10:36:11.476733Z  target->host  data     #2     DEBUG_IO         id 0x00000000  ...
    2016-01-24T10:36:11.478801Z  host->target  data     #2     ACK              id 0x00000000

(time, direction, channel, KDNET sequence number, then the KD packet: type, id, meaning).

JSON objects carry the same facts under stable keys: ``time`` (ISO 8601, UTC), ``frame``,
``src``/``dst``, ``direction`` ("target->host", "host->target" or null), ``channel``
("control", "data", "serial"), ``sequence``, ``status`` and, for KD packets, ``kd`` with
``type``, ``id``, ``api``, ``text`` and the decoded fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cartd.decode.describe import (
    KdDescription,
    describe_breakin,
    describe_noise,
    describe_packet,
)
from cartd.decode.kdnet import KdEvent, KdnetRecord, Outcome
from cartd.decode.kdnet import format_address as address
from cartd.decode.serial import SerialRecord
from cartd.decode.summary import direction_name, serial_direction_name
from cartd.kd.framing import BreakInByte, NoiseDetected
from cartd.kd.kdnet.datagram import Channel, Direction

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIRECTION_WIDTH = len("target->host")
_CHANNEL_WIDTH = len("control")
_TYPE_WIDTH = len("STATE_MANIPULATE")


def iso_time(time_ns: int) -> str:
    """2016-01-24T10:36:11.474228Z: microseconds, exact (no float rounding)."""
    moment = _EPOCH + timedelta(microseconds=time_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def describe_event(event: KdEvent, *, from_target: bool | None) -> KdDescription:
    if isinstance(event, BreakInByte):
        return describe_breakin()
    if isinstance(event, NoiseDetected):
        return describe_noise(event)
    return describe_packet(event, from_target=from_target)


def _kd_text(kd: KdDescription) -> str:
    ident = f"id {kd.id:#010x}" if kd.id is not None else ""
    head = f"{kd.type:<{_TYPE_WIDTH}} {ident}".rstrip()
    # A control packet is all type and id; everything else says what it means.
    if kd.type in ("ACK", "RESEND", "RESET"):
        return head
    return f"{head}  {kd.text}"


def _kd_json(kd: KdDescription) -> dict[str, object]:
    return {"type": kd.type, "id": kd.id, "api": kd.api, "text": kd.text, **kd.fields}


def _line(
    time_ns: int, direction: str | None, channel: str, sequence: int | None, text: str
) -> str:
    number = f"#{sequence}" if sequence is not None else "-"
    return (
        f"{iso_time(time_ns)}  {direction or '?':<{_DIRECTION_WIDTH}}  "
        f"{channel:<{_CHANNEL_WIDTH}}  {number:<6} {text}"
    )


# --- KDNET ------------------------------------------------------------------------------------


def _kdnet_description(record: KdnetRecord) -> KdDescription | None:
    if record.kd is None:
        return None
    from_target = None if record.direction is None else record.direction is Direction.TARGET_TO_HOST
    return describe_event(record.kd, from_target=from_target)


def kdnet_text(record: KdnetRecord) -> str:
    channel = record.channel.name.lower() if record.channel is not None else "?"
    version = f"v{record.version}" if record.version is not None else ""
    kd = _kdnet_description(record)
    match record.outcome:
        case Outcome.DECODED | Outcome.REPLAY if kd is not None:
            text = _kd_text(kd)
        case Outcome.DECODED | Outcome.REPLAY:
            kind = record.control.value.replace("_", " ") if record.control else "datagram"
            text = f"{kind} {version}: {record.note}"
        case Outcome.UNDECRYPTABLE:
            text = f"undecryptable {version}, {record.size} bytes: {record.note}"
        case Outcome.AUTHENTICATION_FAILED:
            text = f"authentication failed {version}, {record.size} bytes: {record.note}"
        case _:
            text = f"malformed, {record.size} bytes: {record.note}"
    if record.outcome is Outcome.REPLAY:
        text += f"  [replay: {record.note}]"
    if record.direction is None:
        text += f"  ({address(record.src)} -> {address(record.dst)})"
    return _line(record.time_ns, direction_name(record.direction), channel, record.sequence, text)


def kdnet_json(record: KdnetRecord) -> dict[str, object]:
    obj: dict[str, object] = {
        "time": iso_time(record.time_ns),
        "frame": record.frame,
        "src": address(record.src),
        "dst": address(record.dst),
        "direction": direction_name(record.direction),
        "channel": record.channel.name.lower() if record.channel is not None else None,
        "version": record.version,
        "sequence": record.sequence,
        "status": record.outcome.value,
        "size": record.size,
    }
    if record.reason is not None:
        obj["reason"] = record.reason.value
    if record.session is not None:
        obj["session"] = record.session
    if record.channel is Channel.CONTROL and record.control is not None:
        control: dict[str, object] = {"kind": record.control.value}
        if record.poke is not None:
            poke = record.poke
            control |= {
                "keepalive": record.keepalive,
                "target": address(poke.target.to_peer()),
                "configured_host": address(poke.configured_host.to_peer()),
                "connected_host": (
                    None if poke.connected_host.is_empty else address(poke.connected_host.to_peer())
                ),
                "nonce_counter": poke.counter,
            }
        obj["control"] = control
    kd = _kdnet_description(record)
    if kd is not None:
        obj["kd"] = _kd_json(kd)
    if record.note:
        obj["note"] = record.note
    return obj


# --- Serial -----------------------------------------------------------------------------------


def serial_text(record: SerialRecord) -> str:
    kd = describe_event(record.event, from_target=record.from_target)
    direction = serial_direction_name(record.from_target)
    return _line(record.time_ns, direction, "serial", None, _kd_text(kd))


def serial_json(record: SerialRecord) -> dict[str, object]:
    kd = describe_event(record.event, from_target=record.from_target)
    return {
        "time": iso_time(record.time_ns),
        "frame": record.frame,
        "direction": serial_direction_name(record.from_target),
        "channel": "serial",
        "sequence": None,
        "status": "noise" if isinstance(record.event, NoiseDetected) else "decoded",
        "kd": _kd_json(kd),
    }
