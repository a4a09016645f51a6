"""DBGKD_WAIT_STATE_CHANGE64: how a target says "I have stopped, and why".

A state change payload is a 0xF0-byte header (spec section 4) and, for some kinds, a tail: the
image path after a LoadSymbols, "name NUL command NUL" after a CommandString, trace data after an
exception on ReactOS. The header is a fixed part (NewState, processor, thread, PC), a 0xA0-byte
union chosen by NewState, and the AMD64 control report (debug registers and the 16 bytes at PC).

Robustness, because a stopped target waits for us and must never be left hanging on a decode
error: any payload of at least 0x20 bytes decodes (older or odd targets send a short header; the
missing bytes read as zeros), an unknown NewState keeps its union as raw bytes, and the
DbgKdAlternateStateChange flag is ignored when choosing the union but kept in ``new_state``.
Bytes past what a structure accounts for are kept in ``StateChangeMessage.extra``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from cartd.kd.constants import ALTERNATE_STATE_CHANGE_FLAG, PACKET_MAX_SIZE, NewState
from cartd.kd.errors import KdDecodeError, KdUsageError

STATE_CHANGE_SIZE = 0xF0  # sizeof(DBGKD_ANY_WAIT_STATE_CHANGE), what every x64 target sends
# The fixed part before the union: the least a payload must hold to be a state change at all.
STATE_CHANGE_MIN_SIZE = 0x20
UNION_OFFSET = 0x20
UNION_SIZE = 0xA0
CONTROL_REPORT_OFFSET = 0xC0
CONTROL_REPORT_SIZE = 0x30
INSTRUCTION_STREAM_SIZE = 16  # DBGKD_MAXSTREAM
EXCEPTION_MAXIMUM_PARAMETERS = 15
# A LoadSymbols path must fit in one packet behind the header.
MAX_PATH_NAME_LENGTH = PACKET_MAX_SIZE - STATE_CHANGE_SIZE
# BaseOfDll of the LoadSymbols that says "everything is unloaded, the system is going down"
# (spec section 7: DbgUnLoadImageSymbols(NULL, MAXULONG_PTR, 0)).
UNLOAD_ALL_BASE = 0xFFFF_FFFF_FFFF_FFFF

# AMD64_DBGKD_CONTROL_REPORT.ReportFlags bits.
REPORT_INCLUDES_SEGS = 0x0001  # REPORT_INCLUDES_SEGS: SegCs..SegFs are valid
REPORT_STANDARD_CS = 0x0002  # REPORT_STANDARD_CS: CS is the standard kernel/user selector

_HEADER = struct.Struct("<IHHI4xQQ")  # NewState, level, processor, count, pad, thread, PC
_EXCEPTION = struct.Struct("<IIQQI4x15QI4x")  # DBGKM_EXCEPTION64, the whole 0xA0 union
_LOAD_SYMBOLS = struct.Struct("<I4xQQIIB")  # DBGKD_LOAD_SYMBOLS64 up to UnloadSymbols
_COMMAND_STRING = struct.Struct("<I")  # Flags; Reserved1 and Reserved2[7] are not kept
_CONTROL_REPORT = struct.Struct("<QQIHH16sHHHH")  # AMD64_DBGKD_CONTROL_REPORT


def _pack(layout: struct.Struct, *values: int | bytes) -> bytes:
    try:
        return layout.pack(*values)
    except struct.error as exc:
        raise KdUsageError(f"a state change field does not fit its wire type: {exc}") from exc


def _encode_ansi(text: str, what: str) -> bytes:
    try:
        encoded = text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise KdUsageError(f"{what} {text!r} is not a single-byte string") from exc
    if b"\0" in encoded:
        raise KdUsageError(f"{what} {text!r} contains a NUL")
    return encoded


# --- Union members ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExceptionRecord:
    """DBGKM_EXCEPTION64: EXCEPTION_RECORD64 and FirstChance.

    ``parameters`` holds the first NumberParameters entries of ExceptionInformation; a
    NumberParameters over 15 is clamped, so junk never stops a decode.
    """

    code: int  # 0x20 ExceptionCode, e.g. 0x80000003 STATUS_BREAKPOINT
    flags: int = 0  # 0x24 ExceptionFlags
    record: int = 0  # 0x28 ExceptionRecord (address of a chained record)
    address: int  # 0x30 ExceptionAddress
    parameters: tuple[int, ...] = ()  # 0x38 NumberParameters, 0x40 ExceptionInformation[15]
    first_chance: bool = True  # 0xB8 FirstChance

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        code, flags, record, address, count, *information, first_chance = _EXCEPTION.unpack_from(
            union
        )
        return cls(
            code=code,
            flags=flags,
            record=record,
            address=address,
            parameters=tuple(information[: min(count, EXCEPTION_MAXIMUM_PARAMETERS)]),
            first_chance=first_chance != 0,
        )

    def to_union(self) -> bytes:
        count = len(self.parameters)
        if count > EXCEPTION_MAXIMUM_PARAMETERS:
            raise KdUsageError(f"an exception has at most 15 parameters, not {count}")
        information = (*self.parameters, *(0,) * (EXCEPTION_MAXIMUM_PARAMETERS - count))
        return _pack(
            _EXCEPTION,
            self.code,
            self.flags,
            self.record,
            self.address,
            count,
            *information,
            int(self.first_chance),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSymbols:
    """DBGKD_LOAD_SYMBOLS64 and the image path from the payload tail.

    ``path_name_length`` is the wire PathNameLength: the number of tail bytes that hold the path,
    NUL included (0 when there is no path). ``path`` is those bytes up to the first NUL, decoded
    as latin-1 so that any byte decodes. Use `LoadSymbols.for_image` and
    `LoadSymbols.unload_all` to build one with a consistent length.
    """

    path_name_length: int  # 0x20 PathNameLength
    base_of_dll: int  # 0x28 BaseOfDll
    process_id: int = 0  # 0x30 ProcessId
    checksum: int = 0  # 0x38 CheckSum
    size_of_image: int = 0  # 0x3C SizeOfImage
    unload: bool = False  # 0x40 UnloadSymbols
    path: str = ""

    @classmethod
    def for_image(
        cls,
        path: str,
        *,
        base_of_dll: int,
        size_of_image: int,
        checksum: int = 0,
        process_id: int = 0,
        unload: bool = False,
    ) -> Self:
        """A load (or unload) report for one image, PathNameLength counting the NUL."""
        return cls(
            path_name_length=len(_encode_ansi(path, "path")) + 1,
            base_of_dll=base_of_dll,
            process_id=process_id,
            checksum=checksum,
            size_of_image=size_of_image,
            unload=unload,
            path=path,
        )

    @classmethod
    def unload_all(cls) -> Self:
        """The report a target sends before it reboots or shuts down (spec sections 7, 15)."""
        return cls(path_name_length=0, base_of_dll=UNLOAD_ALL_BASE, unload=True)

    @classmethod
    def from_union_and_tail(cls, union: bytes, tail: bytes) -> tuple[Self, bytes]:
        """The body, and the tail bytes after the path region."""
        length, base, process_id, checksum, size, unload = _LOAD_SYMBOLS.unpack_from(union)
        region = tail[:length]
        body = cls(
            path_name_length=length,
            base_of_dll=base,
            process_id=process_id,
            checksum=checksum,
            size_of_image=size,
            unload=unload != 0,
            path=region.split(b"\0", 1)[0].decode("latin-1"),
        )
        return body, tail[length:]

    def to_union(self) -> bytes:
        fixed = _pack(
            _LOAD_SYMBOLS,
            self.path_name_length,
            self.base_of_dll,
            self.process_id,
            self.checksum,
            self.size_of_image,
            int(self.unload),
        )
        return fixed.ljust(UNION_SIZE, b"\0")

    def to_tail(self) -> bytes:
        """The path region: the path, a NUL, and NULs up to PathNameLength."""
        encoded = _encode_ansi(self.path, "path")
        if self.path_name_length == 0 and not encoded:
            return b""
        if not len(encoded) < self.path_name_length <= MAX_PATH_NAME_LENGTH:
            raise KdUsageError(
                f"PathNameLength {self.path_name_length} cannot hold {self.path!r} and its NUL"
                f" (or exceeds {MAX_PATH_NAME_LENGTH})"
            )
        return encoded.ljust(self.path_name_length, b"\0")


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandString:
    """DBGKD_COMMAND_STRING: Flags, and "name NUL command NUL" from the payload tail.

    A tail without NULs decodes anyway: what is there becomes the name, then the command.
    """

    flags: int = 0  # 0x20 Flags
    name: str
    command: str

    @classmethod
    def from_union_and_tail(cls, union: bytes, tail: bytes) -> tuple[Self, bytes]:
        """The body, and the tail bytes after the command's NUL."""
        (flags,) = _COMMAND_STRING.unpack_from(union)
        name, _, rest = tail.partition(b"\0")
        command, _, extra = rest.partition(b"\0")
        body = cls(flags=flags, name=name.decode("latin-1"), command=command.decode("latin-1"))
        return body, extra

    def to_union(self) -> bytes:
        return _pack(_COMMAND_STRING, self.flags).ljust(UNION_SIZE, b"\0")

    def to_tail(self) -> bytes:
        name = _encode_ansi(self.name, "command string name")
        command = _encode_ansi(self.command, "command string")
        return name + b"\0" + command + b"\0"


@dataclass(frozen=True, slots=True, kw_only=True)
class RawStateUnion:
    """The 0xA0 union bytes of a NewState cartd does not know, kept exactly."""

    data: bytes = bytes(UNION_SIZE)

    def __post_init__(self) -> None:
        if len(self.data) != UNION_SIZE:
            raise KdUsageError(f"a raw state union is {UNION_SIZE} bytes, got {len(self.data)}")

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls(data=bytes(union))

    def to_union(self) -> bytes:
        return self.data


StateChangeBody = ExceptionRecord | LoadSymbols | CommandString | RawStateUnion


def body_type_for(new_state: int) -> type[StateChangeBody]:
    """The union member a NewState carries, the alternate-source flag ignored."""
    kind = new_state & ~ALTERNATE_STATE_CHANGE_FLAG
    if kind == NewState.EXCEPTION:
        return ExceptionRecord
    if kind == NewState.LOAD_SYMBOLS:
        return LoadSymbols
    if kind == NewState.COMMAND_STRING:
        return CommandString
    return RawStateUnion


# --- Control report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Amd64ControlReport:
    """AMD64_DBGKD_CONTROL_REPORT at 0xC0 (spec section 4).

    ``instruction_stream`` is the 16 bytes at PC with the debugger's breakpoints removed; a 0xCC
    first byte under STATUS_BREAKPOINT is a hard-coded int3 the host must step over (spec 4.2).
    """

    dr6: int = 0  # 0xC0
    dr7: int = 0  # 0xC8
    eflags: int = 0  # 0xD0 (u32)
    instruction_count: int = 0  # 0xD4 (u16): how many stream bytes are valid
    report_flags: int = 0  # 0xD6 (u16): REPORT_INCLUDES_SEGS | REPORT_STANDARD_CS
    instruction_stream: bytes = bytes(INSTRUCTION_STREAM_SIZE)  # 0xD8
    seg_cs: int = 0  # 0xE8
    seg_ds: int = 0  # 0xEA
    seg_es: int = 0  # 0xEC
    seg_fs: int = 0  # 0xEE

    def __post_init__(self) -> None:
        if len(self.instruction_stream) != INSTRUCTION_STREAM_SIZE:
            raise KdUsageError(
                f"InstructionStream is {INSTRUCTION_STREAM_SIZE} bytes, "
                f"got {len(self.instruction_stream)}; pad it and set instruction_count"
            )


def pull_amd64_control_report(raw: bytes) -> Amd64ControlReport:
    """Decode the 0x30 report bytes (offset 0 here is offset 0xC0 in the state change)."""
    if len(raw) < CONTROL_REPORT_SIZE:
        raise KdDecodeError(f"control report needs {CONTROL_REPORT_SIZE} bytes, got {len(raw)}")
    dr6, dr7, eflags, count, flags, stream, cs, ds, es, fs = _CONTROL_REPORT.unpack_from(raw)
    return Amd64ControlReport(
        dr6=dr6,
        dr7=dr7,
        eflags=eflags,
        instruction_count=count,
        report_flags=flags,
        instruction_stream=stream,
        seg_cs=cs,
        seg_ds=ds,
        seg_es=es,
        seg_fs=fs,
    )


def push_amd64_control_report(report: Amd64ControlReport) -> bytes:
    return _pack(
        _CONTROL_REPORT,
        report.dr6,
        report.dr7,
        report.eflags,
        report.instruction_count,
        report.report_flags,
        report.instruction_stream,
        report.seg_cs,
        report.seg_ds,
        report.seg_es,
        report.seg_fs,
    )


# --- The message --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChangeMessage:
    """One STATE_CHANGE64 payload.

    ``new_state`` is the raw wire value (a NewState member when it is exactly one), alternate
    flag included; ``body`` is the union member ``body_type_for(new_state)``. ``extra`` holds the
    payload bytes after the header and after the body's own tail (path, command strings).
    """

    new_state: NewState | int
    processor_level: int = 0  # 0x04
    processor: int = 0  # 0x06: use it in the requests that follow
    number_processors: int = 1  # 0x08
    thread: int = 0  # 0x10: KTHREAD address
    program_counter: int = 0  # 0x18
    body: StateChangeBody
    control_report: Amd64ControlReport = Amd64ControlReport()
    extra: bytes = b""

    @property
    def kind(self) -> NewState | int:
        """NewState without the alternate-source flag."""
        return _known_state(self.new_state & ~ALTERNATE_STATE_CHANGE_FLAG)

    @property
    def is_alternate(self) -> bool:
        """Whether the report came from an "alternate source" (DbgKdAlternateStateChange)."""
        return bool(self.new_state & ALTERNATE_STATE_CHANGE_FLAG)


def _known_state(value: int) -> NewState | int:
    try:
        return NewState(value)
    except ValueError:
        return value


def pull_state_change(payload: bytes) -> StateChangeMessage:
    """Decode a STATE_CHANGE64 payload of any length from 0x20 bytes on."""
    if len(payload) < STATE_CHANGE_MIN_SIZE:
        raise KdDecodeError(
            f"state change payload needs {STATE_CHANGE_MIN_SIZE} bytes, got {len(payload)}"
        )
    payload = bytes(payload)
    header = payload[:STATE_CHANGE_SIZE].ljust(STATE_CHANGE_SIZE, b"\0")
    tail = payload[STATE_CHANGE_SIZE:]
    new_state, level, processor, count, thread, pc = _HEADER.unpack_from(header)
    union = header[UNION_OFFSET:CONTROL_REPORT_OFFSET]
    body_type = body_type_for(new_state)
    body: StateChangeBody
    if body_type is LoadSymbols:
        body, extra = LoadSymbols.from_union_and_tail(union, tail)
    elif body_type is CommandString:
        body, extra = CommandString.from_union_and_tail(union, tail)
    elif body_type is ExceptionRecord:
        body, extra = ExceptionRecord.from_union(union), tail
    else:
        body, extra = RawStateUnion.from_union(union), tail
    return StateChangeMessage(
        new_state=_known_state(new_state),
        processor_level=level,
        processor=processor,
        number_processors=count,
        thread=thread,
        program_counter=pc,
        body=body,
        control_report=pull_amd64_control_report(header[CONTROL_REPORT_OFFSET:]),
        extra=extra,
    )


def push_state_change(message: StateChangeMessage) -> bytes:
    """Encode exactly 0xF0 header bytes, the body's tail (path or command strings), then extra."""
    expected = body_type_for(message.new_state)
    if type(message.body) is not expected:
        raise KdUsageError(
            f"NewState {message.new_state:#x} carries {expected.__name__}, "
            f"not {type(message.body).__name__}"
        )
    header = _pack(
        _HEADER,
        message.new_state,
        message.processor_level,
        message.processor,
        message.number_processors,
        message.thread,
        message.program_counter,
    )
    body = message.body
    body_tail = body.to_tail() if isinstance(body, LoadSymbols | CommandString) else b""
    return (
        header
        + body.to_union()
        + push_amd64_control_report(message.control_report)
        + body_tail
        + bytes(message.extra)
    )
