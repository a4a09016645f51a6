"""The daemon's events: everything cartd learns, in one stable JSON form.

The same event goes to the target's journal (`events.jsonl`), to control-socket subscribers
(`cartd events`, the TUI) and to the log. Each is a frozen dataclass; `to_json()` gives a flat
JSON object with `time` (UTC, ISO 8601 with microseconds and a Z), `type`, and `target` or `link`;
`event_from_json()` reads it back. Addresses and bug check values are written as "0x..." strings
(64-bit values do not survive JSON readers that use doubles); counts are numbers.

Adding a field is compatible; renaming or removing one is not: readers of old journals and
scripts rely on these names (docs/control-protocol.md lists them).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

# Fields written as hex strings; everything else is written as it is.
_HEX_FIELDS = frozenset(
    {"kernel_base", "base", "pc", "exception_code", "code", "parameters", "address"}
)


def utc_now() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventFormatError(ValueError):
    """A JSON object that is not a cartd event (unknown type, missing or mistyped field)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    type: ClassVar[str] = ""
    time: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": self.time, "type": self.type}
        for item in dataclasses.fields(self):
            if item.name == "time":
                continue
            value = getattr(self, item.name)
            if item.name in _HEX_FIELDS:
                value = _to_hex(value)
            elif isinstance(value, tuple):
                value = list(value)  # what reading the JSON gives, so the two compare equal
            out[item.name] = value
        return out


def _to_hex(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}"
    if isinstance(value, list | tuple):
        return [_to_hex(item) for item in value]
    return value


def _from_hex(value: object) -> object:
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    if isinstance(value, list):
        return [_from_hex(item) for item in value]
    return value


# --- links ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkUp(Event):
    type: ClassVar[str] = "link_up"
    link: str  # stable name, e.g. serial:/dev/serial/by-id/usb-FTDI_...-if00-port0
    device: str  # what was opened
    baud: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDown(Event):
    type: ClassVar[str] = "link_down"
    link: str
    device: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProbed(Event):
    """A candidate link was looked at and is (or is not) carrying KD."""

    type: ClassVar[str] = "link_probed"
    link: str
    device: str
    result: str  # "kd", "silent", "not_kd", "error"
    detail: str = ""
    baud: int | None = None


# --- targets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetConnected(Event):
    type: ClassVar[str] = "target_connected"
    target: str
    link: str
    build: int
    kernel_base: int
    machine: str  # "x64", "x86", "arm64" or the raw machine type in hex
    processors: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugPrint(Event):
    type: ClassVar[str] = "debug_print"
    target: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleLoaded(Event):
    type: ClassVar[str] = "module_loaded"
    target: str
    name: str  # file name, e.g. "Ntfs.sys" ("*" when everything is unloaded at shutdown)
    base: int
    size: int
    path: str = ""  # as the kernel reported it, e.g. "\\SystemRoot\\System32\\drivers\\Ntfs.sys"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleUnloaded(Event):
    type: ClassVar[str] = "module_unloaded"
    target: str
    name: str  # file name, e.g. "Ntfs.sys" ("*" when everything is unloaded at shutdown)
    base: int
    size: int
    path: str = ""  # as the kernel reported it, e.g. "\\SystemRoot\\System32\\drivers\\Ntfs.sys"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped(Event):
    type: ClassVar[str] = "stopped"
    target: str
    reason: str  # cartd.kd.stops.StopReason value
    processor: int
    pc: int
    exception_code: int | None
    first_chance: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Bugcheck(Event):
    type: ClassVar[str] = "bugcheck"
    target: str
    code: int
    name: str
    parameters: tuple[int, int, int, int]
    # What the four parameters mean and what parameter 1 says happened, from the bug check
    # reference (cartd.kd.bugcheck_codes); empty where it has no text for the code (or, for
    # `cause`, for the code and parameter 1). Journals written before these fields existed read
    # back with the defaults.
    parameter_meanings: tuple[str, ...] = ()
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Running(Event):
    type: ClassVar[str] = "running"
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRebooted(Event):
    type: ClassVar[str] = "target_rebooted"
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Prompt(Event):
    """The target asked for a line (DbgPrompt); `answer` is what cartd sent back."""

    type: ClassVar[str] = "prompt"
    target: str
    prompt: str
    answer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolNoise(Event):
    """Running totals of line noise, sent when they change (at most once a second)."""

    type: ClassVar[str] = "protocol_noise"
    link: str
    counters: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerChanged(Event):
    """Who drives the target: the daemon's session ("cartd") or a remote debugger attached
    through the relay, named by its SSH user and peer when known."""

    type: ClassVar[str] = "owner_changed"
    target: str
    owner: str  # "cartd" (the daemon's session) or who took it
    previous: str
    reason: str = ""
    peer: str = ""  # the remote debugger's address: "tcp 127.0.0.1:53122" or "unix socket"
    user: str = ""  # its local user (the SSH user of a tunnel), when known


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteRefused(Event):
    """A remote debugger was turned away from the relay (the target has an owner)."""

    type: ClassVar[str] = "remote_refused"
    target: str
    peer: str
    user: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureError(Event):
    """Records could not be written (disk full, read-only directory): what is affected."""

    type: ClassVar[str] = "capture_error"
    target: str
    path: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureResumed(Event):
    type: ClassVar[str] = "capture_resumed"
    target: str
    path: str


# --- crash dumps ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DumpStarted(Event):
    """cartd began (or resumed) reading a dump of a stopped target."""

    type: ClassVar[str] = "dump_started"
    target: str
    path: str  # the final .dmp path; it appears only when complete
    kind: str  # "triage" or "full"
    pages: int  # pages it means to read
    bytes: int
    estimate_seconds: float | None  # at the link's speed so far, None before there is one
    resumed_pages: int = 0  # already read before an interruption


@dataclass(frozen=True, slots=True, kw_only=True)
class DumpProgress(Event):
    """Sent at least once a second while a dump is read."""

    type: ClassVar[str] = "dump_progress"
    target: str
    path: str
    pages_done: int
    pages: int
    bytes_done: int
    rate: float  # bytes a second, over the last seconds
    eta_seconds: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DumpWritten(Event):
    type: ClassVar[str] = "dump_written"
    target: str
    path: str
    dump_type: str  # "full" (DumpType 1) or "bitmap" (DumpType 5: only the pages read)
    pages: int
    size: int  # bytes of the file
    seconds: float
    missing_pages: int = 0  # asked for but unreadable, or not reached before it stopped


@dataclass(frozen=True, slots=True, kw_only=True)
class DumpStopped(Event):
    """A dump stopped before it had everything: why, and whether what was read is kept (as a
    valid bitmap dump at `path`, or to resume later)."""

    type: ClassVar[str] = "dump_stopped"
    target: str
    path: str
    reason: str
    resumable: bool


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        LinkUp,
        LinkDown,
        LinkProbed,
        TargetConnected,
        DebugPrint,
        ModuleLoaded,
        ModuleUnloaded,
        Stopped,
        Bugcheck,
        Running,
        TargetRebooted,
        Prompt,
        ProtocolNoise,
        OwnerChanged,
        RemoteRefused,
        CaptureError,
        CaptureResumed,
        DumpStarted,
        DumpProgress,
        DumpWritten,
        DumpStopped,
    )
}


def _tuple_fields(cls: type[Event]) -> frozenset[str]:
    hints = typing.get_type_hints(cls)
    return frozenset(
        item.name
        for item in dataclasses.fields(cls)
        if typing.get_origin(hints[item.name]) is tuple
    )


# JSON has lists only; fields typed as tuples are read back as tuples, so an event read from a
# journal equals the one that was written.
_TUPLE_FIELDS: dict[type[Event], frozenset[str]] = {
    cls: _tuple_fields(cls) for cls in EVENT_TYPES.values()
}


def event_from_json(data: object) -> Event:
    """Rebuild an event from its JSON object; unknown extra fields are ignored (a newer
    writer may add some), missing ones are an error."""
    if not isinstance(data, dict):
        raise EventFormatError("an event is a JSON object")
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventFormatError(f"unknown event type {kind!r}")
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.name not in data:
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise EventFormatError(f"{kind} event without {item.name!r}")
            continue
        value = data[item.name]
        if item.name in _HEX_FIELDS:
            value = _from_hex(value)
        if item.name in _TUPLE_FIELDS[cls] and isinstance(value, list):
            value = tuple(value)
        values[item.name] = value
    try:
        return cls(**values)
    except TypeError as error:
        raise EventFormatError(f"{kind} event: {error}") from error


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB"


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def event_subject(event: Event) -> str:
    """The target or link an event is about."""
    return str(getattr(event, "target", None) or getattr(event, "link", ""))


def describe(event: Event) -> str:
    """One line for people: what `cartd events` and the daemon's log print."""
    data = event.to_json()
    match event:
        case LinkUp():
            rate = f" at {event.baud} baud" if event.baud else ""
            return f"link up: {event.device}{rate}"
        case LinkDown():
            return f"link down: {event.device} ({event.reason})"
        case LinkProbed():
            return f"probed {event.device}: {event.result} ({event.detail})"
        case TargetConnected():
            return (
                f"connected: Windows build {event.build} {event.machine}, "
                f"{event.processors} processors, kernel at {data['kernel_base']}"
            )
        case DebugPrint():
            return event.text.strip("\n")
        case ModuleLoaded():
            return f"module loaded: {event.name} at {data['base']} ({event.size:#x} bytes)"
        case ModuleUnloaded():
            return f"module unloaded: {event.name} at {data['base']}"
        case Stopped():
            code = f" exception {data['exception_code']}" if event.exception_code else ""
            chance = "" if event.first_chance else " (second chance)"
            return (
                f"stopped: {event.reason.replace('_', ' ')}{code}{chance} on processor "
                f"{event.processor} at {data['pc']}"
            )
        case Bugcheck():
            return f"BUGCHECK {event.code:#010x} {event.name} ({', '.join(data['parameters'])})"
        case Running():
            return "running"
        case TargetRebooted():
            return "the target rebooted"
        case Prompt():
            return f"prompt {event.prompt!r} answered with {event.answer!r}"
        case ProtocolNoise():
            totals = ", ".join(f"{kind} {count}" for kind, count in sorted(event.counters.items()))
            return f"line noise so far: {totals}"
        case OwnerChanged():
            because = f": {event.reason}" if event.reason else ""
            return f"owner: {event.owner} (was {event.previous or 'nobody'}){because}"
        case RemoteRefused():
            who = event.user or "unknown user"
            return f"remote debugger {who} ({event.peer}) refused: {event.reason}"
        case CaptureError():
            return f"RECORDING PAUSED: {event.error}"
        case CaptureResumed():
            return f"recording resumed: {event.path}"
        case DumpStarted():
            again = f", {event.resumed_pages} read before" if event.resumed_pages else ""
            estimate = (
                f", about {format_duration(event.estimate_seconds)}"
                if event.estimate_seconds is not None
                else ""
            )
            return (
                f"{event.kind} dump started: {event.pages} pages ({_mib(event.bytes)}){again}"
                f"{estimate} -> {event.path}"
            )
        case DumpProgress():
            eta = (
                f", {format_duration(event.eta_seconds)} left"
                if event.eta_seconds is not None
                else ""
            )
            return (
                f"dump {event.pages_done}/{event.pages} pages, {_mib(event.bytes_done)} at "
                f"{event.rate / 1024:.1f} KiB/s{eta}"
            )
        case DumpWritten():
            missing = f", {event.missing_pages} pages missing" if event.missing_pages else ""
            return (
                f"dump written: {event.path} ({event.dump_type}, {event.pages} pages, "
                f"{_mib(event.size)}, {format_duration(event.seconds)}{missing})"
            )
        case DumpStopped():
            kept = "resumable" if event.resumable else "what was read is kept"
            return f"DUMP STOPPED: {event.reason} ({kept}): {event.path}"
    return event.type
