"""Events the HOST core (`cartd.kd.host.KdHost`) hands its caller.

Each is a frozen, slotted, keyword-only dataclass. They describe what the target said or what
became of a request; the session layer turns them into the daemon's journal events.
"""

from __future__ import annotations

from dataclasses import dataclass

from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.kd.state_change import StateChangeMessage
from cartd.kd.stops import StopReason


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugPrint:
    """One DbgPrint packet. Windows sends ANSI text; undecodable bytes are escaped."""

    data: bytes
    processor: int
    payload: bytes = b""  # the KD_DEBUG_IO packet's payload as received (for the relay)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="backslashreplace")


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged:
    """The target stopped. It stays stopped until a resume request completes."""

    message: StateChangeMessage
    reason: StopReason
    first_chance: bool
    # Set for BUGCHECK_FIRST/SECOND: from KiBugCheckData, else from the Fatal System Error print.
    bugcheck: BugcheckInfo | None = None
    payload: bytes = b""  # the STATE_CHANGE64 packet's payload as received (for the relay)

    @property
    def processor(self) -> int:
        return self.message.processor


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRunning:
    """A Continue (or Reboot, CauseBugCheck) was acknowledged: the target runs again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRebooted:
    """A packet carried the sync bit: the target reset its packet ids. It rebooted, or it had
    declared the debugger absent and came back. Cached version and KDBG are forgotten."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptReceived:
    """DbgPrompt: the target waits for a line; answer with `KdHost.answer_prompt`."""

    prompt: bytes
    max_length: int
    processor: int
    payload: bytes = b""  # the KD_DEBUG_IO packet's payload as received (for the relay)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileIoRefused:
    """The target asked for a file (FILE_IO); the host answered STATUS_NO_SUCH_FILE."""

    api: int
    file_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileIoReceived:
    """The target asked for a file while a remote debugger owns it (`KdHost.relaying`): the
    request is for that debugger to answer (`KdHost.relay_reply`)."""

    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceReceived:
    """TRACE_IO or CONTROL_REQUEST data; acknowledged and otherwise ignored."""

    packet_type: int
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolNoise:
    """Something on the line was not a clean exchange. `kind` names a counter in
    `KdHost.noise_counters`; `count` is how much this event adds to it."""

    kind: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCompleted:
    token: int
    result: object


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFailed:
    token: int
    reason: str
    status: int | None = None  # the NTSTATUS the target returned, when it returned one


HostEvent = (
    DebugPrint
    | StateChanged
    | TargetRunning
    | TargetRebooted
    | PromptReceived
    | FileIoRefused
    | FileIoReceived
    | TraceReceived
    | ProtocolNoise
    | RequestCompleted
    | RequestFailed
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryRead:
    """Result of a memory or control-space read. `data` may be shorter than `requested`:
    the target could read only that much (a page boundary, an unmapped page)."""

    address: int
    requested: int
    data: bytes
    status: int

    @property
    def complete(self) -> bool:
        return len(self.data) == self.requested


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryWritten:
    address: int
    requested: int
    written: int
