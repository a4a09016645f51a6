"""DBGKD_MANIPULATE_STATE64: the requests a host sends a stopped target, and the target's replies.

A manipulate payload is a 0x38-byte header followed by variable data (memory read or written, a
CONTEXT, a search pattern). The header is the same struct in both directions (spec section 5):
the host fills in ApiNumber and the inputs of the 0x28-byte union, the target answers with the
same ApiNumber, a ReturnStatus and the outputs. So one message class serves both roles, and the
union member is chosen by ApiNumber alone.

Decoding never trusts output fields in requests: WinDbg leaves junk there (ReturnStatus 0x103,
non-zero ActualBytesRead; spec section 15), so every field is decoded as the number it is and
nothing is rejected for its value. A payload shorter than the header is the only decode error.
Unknown or unmodelled ApiNumbers keep their union as raw bytes, so a reply can still be built.

Union bytes that no field covers (the tail of a small union member, alignment padding) are
dropped on decode and written as zeros, so ``push_manipulate(pull_manipulate(b)) == b`` holds for
the payloads cartd and real peers build, not for arbitrary junk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Self

from cartd.kd.constants import (
    MANIPULATE_HEADER_SIZE,
    MAX_MANIPULATE_DATA,
    ManipulateApi,
    NtStatus,
)
from cartd.kd.context import Amd64Register, read_register
from cartd.kd.errors import KdDecodeError, KdUsageError

_HEADER = struct.Struct("<IHHI4x")  # ApiNumber, ProcessorLevel, Processor, ReturnStatus, pad
UNION_OFFSET = 0x10
UNION_SIZE = MANIPULATE_HEADER_SIZE - UNION_OFFSET  # 0x28, the size of DBGKD_GET_VERSION64

# DBGKD_CONTINUE2 asks the target to keep its current "symbol range" (used for stepping over
# calls) when CurrentSymbolStart is 1 (RX-KD64 amd64/kdx64.c), which is what a host that does not
# step wants.
KEEP_SYMBOL_RANGE = 1

# ReadPhysicalMemory's ActualBytesRead carries the caching type on input (spec section 5.2).
PHYSICAL_CACHING_DEFAULT = 0
PHYSICAL_CACHING_CACHED = 1
PHYSICAL_CACHING_UNCACHED = 2
PHYSICAL_CACHING_WRITE_COMBINED = 3


def _pack_union(layout: struct.Struct, *values: int | bytes) -> bytes:
    try:
        packed = layout.pack(*values)
    except struct.error as exc:
        raise KdUsageError(f"a union field does not fit its wire type: {exc}") from exc
    return packed.ljust(UNION_SIZE, b"\0")


# --- Union members (offsets below are relative to the start of the 0x38-byte message) ----------

_READ_MEMORY = struct.Struct("<QII")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadMemory:
    """DBGKD_READ_MEMORY64 / DBGKD_WRITE_MEMORY64, also used for physical and control space.

    TargetBaseAddress @0x10, TransferCount @0x14, ActualBytesRead/Written @0x1C. For
    ReadControlSpace the address is an `Amd64ControlSpace` selector; for physical reads and writes
    ``actual_bytes`` carries the caching type on input (PHYSICAL_CACHING_*).
    """

    address: int
    transfer_count: int
    actual_bytes: int = 0

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        address, count, actual = _READ_MEMORY.unpack_from(union)
        return cls(address=address, transfer_count=count, actual_bytes=actual)

    def to_union(self) -> bytes:
        return _pack_union(_READ_MEMORY, self.address, self.transfer_count, self.actual_bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetContext:
    """DBGKD_GET_CONTEXT: nothing but an unused u32; the CONTEXT comes back as data."""

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls()

    def to_union(self) -> bytes:
        return bytes(UNION_SIZE)


_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True, kw_only=True)
class SetContext:
    """DBGKD_SET_CONTEXT: ContextFlags @0x10; the CONTEXT itself is the data."""

    context_flags: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls(context_flags=_U32.unpack_from(union)[0])

    def to_union(self) -> bytes:
        return _pack_union(_U32, self.context_flags)


_CONTEXT_EX = struct.Struct("<III")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextEx:
    """DBGKD_CONTEXT_EX (GetContextEx/SetContextEx): Offset @0x10, ByteCount @0x14,
    BytesCopied @0x18; the data is the CONTEXT slice."""

    offset: int
    byte_count: int
    bytes_copied: int = 0

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        offset, count, copied = _CONTEXT_EX.unpack_from(union)
        return cls(offset=offset, byte_count=count, bytes_copied=copied)

    def to_union(self) -> bytes:
        return _pack_union(_CONTEXT_EX, self.offset, self.byte_count, self.bytes_copied)


_WRITE_BREAKPOINT = struct.Struct("<QI")


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteBreakpoint:
    """DBGKD_WRITE_BREAKPOINT64: BreakPointAddress @0x10 in, BreakPointHandle @0x18 out."""

    address: int
    handle: int = 0

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        address, handle = _WRITE_BREAKPOINT.unpack_from(union)
        return cls(address=address, handle=handle)

    def to_union(self) -> bytes:
        return _pack_union(_WRITE_BREAKPOINT, self.address, self.handle)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreBreakpoint:
    """DBGKD_RESTORE_BREAKPOINT: BreakPointHandle @0x10."""

    handle: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls(handle=_U32.unpack_from(union)[0])

    def to_union(self) -> bytes:
        return _pack_union(_U32, self.handle)


@dataclass(frozen=True, slots=True, kw_only=True)
class Continue:
    """DBGKD_CONTINUE: ContinueStatus @0x10; only its sign matters to the target."""

    status: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls(status=_U32.unpack_from(union)[0])

    def to_union(self) -> bytes:
        return _pack_union(_U32, self.status)


# DBGKD_CONTINUE2 is packed to 4, so the AMD64 CONTROL_SET's u64 Dr7 sits at 0x18, not 0x20.
_CONTINUE2 = struct.Struct("<IIQQQ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Continue2:
    """DBGKD_CONTINUE2 with the AMD64 CONTROL_SET: ContinueStatus @0x10, TraceFlag @0x14,
    Dr7 @0x18, CurrentSymbolStart @0x20, CurrentSymbolEnd @0x28."""

    status: int
    trace_flag: int
    dr7: int
    symbol_start: int
    symbol_end: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        status, trace, dr7, start, end = _CONTINUE2.unpack_from(union)
        return cls(status=status, trace_flag=trace, dr7=dr7, symbol_start=start, symbol_end=end)

    def to_union(self) -> bytes:
        return _pack_union(
            _CONTINUE2, self.status, self.trace_flag, self.dr7, self.symbol_start, self.symbol_end
        )


_GET_VERSION = struct.Struct("<HHBBHHBBBBHQQQ")


@dataclass(frozen=True, slots=True, kw_only=True)
class GetVersion:
    """DBGKD_GET_VERSION64, the whole union (spec section 5.2 table). Every field is an output,
    so a request carries zeros (or junk)."""

    major_version: int = 0  # 0x10: 0x0F free / 0x0C checked; high byte 0 = NT (not always)
    minor_version: int = 0  # 0x12: NT build number
    protocol_version: int = 0  # 0x14: 6 = DBGKD_64BIT_PROTOCOL_VERSION2
    kd_secondary_version: int = 0  # 0x15: 2 on AMD64
    flags: int = 0  # 0x16: VersionFlags
    machine_type: int = 0  # 0x18: MachineType
    max_packet_type: int = 0  # 0x1A
    max_state_change: int = 0  # 0x1B
    max_manipulate: int = 0  # 0x1C
    simulation: int = 0  # 0x1D: 0 none, 1 EXDI
    unused: int = 0  # 0x1E
    kern_base: int = 0  # 0x20
    ps_loaded_module_list: int = 0  # 0x28
    debugger_data_list: int = 0  # 0x30: 0 before the kernel runs (spec section 15)

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        (
            major,
            minor,
            protocol,
            secondary,
            flags,
            machine,
            max_packet,
            max_state,
            max_manipulate,
            simulation,
            unused,
            kern_base,
            module_list,
            data_list,
        ) = _GET_VERSION.unpack_from(union)
        return cls(
            major_version=major,
            minor_version=minor,
            protocol_version=protocol,
            kd_secondary_version=secondary,
            flags=flags,
            machine_type=machine,
            max_packet_type=max_packet,
            max_state_change=max_state,
            max_manipulate=max_manipulate,
            simulation=simulation,
            unused=unused,
            kern_base=kern_base,
            ps_loaded_module_list=module_list,
            debugger_data_list=data_list,
        )

    def to_union(self) -> bytes:
        return _pack_union(
            _GET_VERSION,
            self.major_version,
            self.minor_version,
            self.protocol_version,
            self.kd_secondary_version,
            self.flags,
            self.machine_type,
            self.max_packet_type,
            self.max_state_change,
            self.max_manipulate,
            self.simulation,
            self.unused,
            self.kern_base,
            self.ps_loaded_module_list,
            self.debugger_data_list,
        )


_MSR = struct.Struct("<III")


@dataclass(frozen=True, slots=True, kw_only=True)
class Msr:
    """DBGKD_READ_WRITE_MSR: Msr @0x10, DataValueLow @0x14, DataValueHigh @0x18, joined into
    one 64-bit ``value``."""

    msr: int
    value: int = 0

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        msr, low, high = _MSR.unpack_from(union)
        return cls(msr=msr, value=low | high << 32)

    def to_union(self) -> bytes:
        if not 0 <= self.value <= 0xFFFF_FFFF_FFFF_FFFF:
            raise KdUsageError(f"MSR value {self.value:#x} is not a u64")
        return _pack_union(_MSR, self.msr, self.value & 0xFFFF_FFFF, self.value >> 32)


_IO_SPACE = struct.Struct("<QII")


@dataclass(frozen=True, slots=True, kw_only=True)
class IoSpace:
    """DBGKD_READ_WRITE_IO64: IoAddress @0x10, DataSize @0x18, DataValue @0x1C."""

    address: int
    data_size: int
    data_value: int = 0

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        address, size, value = _IO_SPACE.unpack_from(union)
        return cls(address=address, data_size=size, data_value=value)

    def to_union(self) -> bytes:
        return _pack_union(_IO_SPACE, self.address, self.data_size, self.data_value)


_IO_SPACE_EXTENDED = struct.Struct("<IIIIQI")


@dataclass(frozen=True, slots=True, kw_only=True)
class IoSpaceExtended:
    """DBGKD_READ_WRITE_IO_EXTENDED64: DataSize, InterfaceType, BusNumber, AddressSpace
    (u32 @0x10..0x1C), IoAddress u64 @0x20, DataValue u32 @0x28."""

    data_size: int
    interface_type: int
    bus_number: int
    address_space: int
    address: int
    data_value: int = 0

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        size, interface, bus, space, address, value = _IO_SPACE_EXTENDED.unpack_from(union)
        return cls(
            data_size=size,
            interface_type=interface,
            bus_number=bus,
            address_space=space,
            address=address,
            data_value=value,
        )

    def to_union(self) -> bytes:
        return _pack_union(
            _IO_SPACE_EXTENDED,
            self.data_size,
            self.interface_type,
            self.bus_number,
            self.address_space,
            self.address,
            self.data_value,
        )


_BREAKPOINT_EX = struct.Struct("<II")


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakpointEx:
    """DBGKD_BREAKPOINTEX (Write/RestoreBreakPointEx): BreakPointCount @0x10,
    ContinueStatus @0x14; the breakpoints follow as data."""

    breakpoint_count: int
    continue_status: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        count, status = _BREAKPOINT_EX.unpack_from(union)
        return cls(breakpoint_count=count, continue_status=status)

    def to_union(self) -> bytes:
        return _pack_union(_BREAKPOINT_EX, self.breakpoint_count, self.continue_status)


_SEARCH_MEMORY = struct.Struct("<QQI")


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchMemory:
    """DBGKD_SEARCH_MEMORY: SearchAddress (FoundAddress in the reply) @0x10,
    SearchLength @0x18, PatternLength @0x20; the pattern follows as data."""

    address: int
    length: int
    pattern_length: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        address, length, pattern_length = _SEARCH_MEMORY.unpack_from(union)
        return cls(address=address, length=length, pattern_length=pattern_length)

    def to_union(self) -> bytes:
        return _pack_union(_SEARCH_MEMORY, self.address, self.length, self.pattern_length)


_BUS_DATA = struct.Struct("<IIIII")


@dataclass(frozen=True, slots=True, kw_only=True)
class BusData:
    """DBGKD_GET_SET_BUS_DATA: BusDataType, BusNumber, SlotNumber, Offset, Length (u32 each)."""

    bus_data_type: int
    bus_number: int
    slot_number: int
    offset: int
    length: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        data_type, bus, slot, offset, length = _BUS_DATA.unpack_from(union)
        return cls(
            bus_data_type=data_type,
            bus_number=bus,
            slot_number=slot,
            offset=offset,
            length=length,
        )

    def to_union(self) -> bytes:
        return _pack_union(
            _BUS_DATA,
            self.bus_data_type,
            self.bus_number,
            self.slot_number,
            self.offset,
            self.length,
        )


_FILL_MEMORY = struct.Struct("<QIHH")


@dataclass(frozen=True, slots=True, kw_only=True)
class FillMemory:
    """DBGKD_FILL_MEMORY: Address u64, Length u32, Flags u16 (1 virtual, 2 physical),
    PatternLength u16; the pattern follows as data."""

    address: int
    length: int
    flags: int
    pattern_length: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        address, length, flags, pattern_length = _FILL_MEMORY.unpack_from(union)
        return cls(address=address, length=length, flags=flags, pattern_length=pattern_length)

    def to_union(self) -> bytes:
        return _pack_union(_FILL_MEMORY, self.address, self.length, self.flags, self.pattern_length)


_QUERY_MEMORY = struct.Struct("<QQII")


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryMemory:
    """DBGKD_QUERY_MEMORY: Address u64, Reserved u64, AddressSpace u32, Flags u32."""

    address: int
    reserved: int = 0
    address_space: int = 0
    flags: int = 0

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        address, reserved, space, flags = _QUERY_MEMORY.unpack_from(union)
        return cls(address=address, reserved=reserved, address_space=space, flags=flags)

    def to_union(self) -> bytes:
        return _pack_union(
            _QUERY_MEMORY, self.address, self.reserved, self.address_space, self.flags
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RawUnion:
    """The 0x28 union bytes of an API cartd does not model (Reboot, CauseBugCheck,
    SwitchProcessor, obsolete and unknown ApiNumbers), kept exactly."""

    data: bytes = bytes(UNION_SIZE)

    def __post_init__(self) -> None:
        if len(self.data) != UNION_SIZE:
            raise KdUsageError(f"a raw union is {UNION_SIZE} bytes, got {len(self.data)}")

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls(data=bytes(union))

    def to_union(self) -> bytes:
        return self.data


ManipulateBody = (
    ReadMemory
    | GetContext
    | SetContext
    | ContextEx
    | WriteBreakpoint
    | RestoreBreakpoint
    | Continue
    | Continue2
    | GetVersion
    | Msr
    | IoSpace
    | IoSpaceExtended
    | BreakpointEx
    | SearchMemory
    | BusData
    | FillMemory
    | QueryMemory
    | RawUnion
)

# Which union member each ApiNumber uses (spec section 5.1). Anything absent is a RawUnion.
_BODY_TYPES: dict[int, type[ManipulateBody]] = {
    ManipulateApi.READ_VIRTUAL_MEMORY: ReadMemory,
    ManipulateApi.WRITE_VIRTUAL_MEMORY: ReadMemory,
    ManipulateApi.GET_CONTEXT: GetContext,
    ManipulateApi.SET_CONTEXT: SetContext,
    ManipulateApi.WRITE_BREAKPOINT: WriteBreakpoint,
    ManipulateApi.RESTORE_BREAKPOINT: RestoreBreakpoint,
    ManipulateApi.CONTINUE: Continue,
    ManipulateApi.READ_CONTROL_SPACE: ReadMemory,
    ManipulateApi.WRITE_CONTROL_SPACE: ReadMemory,
    ManipulateApi.READ_IO_SPACE: IoSpace,
    ManipulateApi.WRITE_IO_SPACE: IoSpace,
    ManipulateApi.CONTINUE2: Continue2,
    ManipulateApi.READ_PHYSICAL_MEMORY: ReadMemory,
    ManipulateApi.WRITE_PHYSICAL_MEMORY: ReadMemory,
    ManipulateApi.READ_IO_SPACE_EXTENDED: IoSpaceExtended,
    ManipulateApi.WRITE_IO_SPACE_EXTENDED: IoSpaceExtended,
    ManipulateApi.GET_VERSION: GetVersion,
    ManipulateApi.WRITE_BREAKPOINT_EX: BreakpointEx,
    ManipulateApi.RESTORE_BREAKPOINT_EX: BreakpointEx,
    ManipulateApi.READ_MSR: Msr,
    ManipulateApi.WRITE_MSR: Msr,
    ManipulateApi.SEARCH_MEMORY: SearchMemory,
    ManipulateApi.GET_BUS_DATA: BusData,
    ManipulateApi.SET_BUS_DATA: BusData,
    ManipulateApi.FILL_MEMORY: FillMemory,
    ManipulateApi.QUERY_MEMORY: QueryMemory,
    ManipulateApi.GET_CONTEXT_EX: ContextEx,
    ManipulateApi.SET_CONTEXT_EX: ContextEx,
}


def body_type_for(api: int) -> type[ManipulateBody]:
    """The union member an ApiNumber carries (RawUnion for everything cartd does not model)."""
    return _BODY_TYPES.get(api, RawUnion)


def _known_api(api: int) -> ManipulateApi | int:
    try:
        return ManipulateApi(api)
    except ValueError:
        return api


# --- The message --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ManipulateMessage:
    """One DBGKD_MANIPULATE_STATE64 payload, request or reply.

    ``api`` is a ManipulateApi member when known, else the plain number. ``body`` is the union
    member ``body_type_for(api)``. ``data`` is everything after the 0x38-byte header.
    """

    api: ManipulateApi | int
    processor_level: int = 0
    processor: int = 0
    return_status: int = 0
    body: ManipulateBody
    data: bytes = b""


def pull_manipulate(payload: bytes) -> ManipulateMessage:
    """Decode a STATE_MANIPULATE payload; only a payload shorter than 0x38 bytes is an error."""
    if len(payload) < MANIPULATE_HEADER_SIZE:
        raise KdDecodeError(
            f"manipulate payload needs {MANIPULATE_HEADER_SIZE} bytes, got {len(payload)}"
        )
    payload = bytes(payload)
    api, level, processor, status = _HEADER.unpack_from(payload)
    body = body_type_for(api).from_union(payload[UNION_OFFSET:MANIPULATE_HEADER_SIZE])
    return ManipulateMessage(
        api=_known_api(api),
        processor_level=level,
        processor=processor,
        return_status=status,
        body=body,
        data=payload[MANIPULATE_HEADER_SIZE:],
    )


def push_manipulate(message: ManipulateMessage) -> bytes:
    """Encode a message; the body must be the union member its ApiNumber uses."""
    expected = body_type_for(message.api)
    if type(message.body) is not expected:
        raise KdUsageError(
            f"ApiNumber {message.api:#x} carries {expected.__name__}, "
            f"not {type(message.body).__name__}"
        )
    try:
        header = _HEADER.pack(
            message.api, message.processor_level, message.processor, message.return_status
        )
    except struct.error as exc:
        raise KdUsageError(f"manipulate header field does not fit: {exc}") from exc
    return header + message.body.to_union() + bytes(message.data)


# --- Target side: replies -----------------------------------------------------------------------


def reply_to(
    request: ManipulateMessage,
    *,
    return_status: int,
    body: ManipulateBody | None = None,
    data: bytes = b"",
) -> ManipulateMessage:
    """The target's reply to ``request``: same ApiNumber and processor, the given status,
    ``body`` (default: the request's union as received) and ``data``."""
    return replace(
        request,
        return_status=return_status,
        body=request.body if body is None else body,
        data=data,
    )


def read_memory_reply(
    request: ManipulateMessage, data: bytes, *, return_status: int = NtStatus.SUCCESS
) -> ManipulateMessage:
    """Reply to a Read{Virtual,Physical}Memory or ReadControlSpace request with ``data``;
    ActualBytesRead becomes ``len(data)`` (a short read says so with UNSUCCESSFUL, spec 5)."""
    if not isinstance(request.body, ReadMemory):
        raise KdUsageError(f"ApiNumber {request.api:#x} is not a memory read")
    body = replace(request.body, actual_bytes=len(data))
    return reply_to(request, return_status=return_status, body=body, data=data)


# --- Host side: requests ------------------------------------------------------------------------


def _request(
    api: ManipulateApi, body: ManipulateBody, processor: int, data: bytes = b""
) -> ManipulateMessage:
    return ManipulateMessage(api=api, processor=processor, body=body, data=data)


def _check_outgoing_data(data: bytes) -> None:
    if len(data) > MAX_MANIPULATE_DATA:
        raise KdUsageError(
            f"{len(data)} bytes do not fit one packet (at most {MAX_MANIPULATE_DATA}); split them"
        )


def get_version_request(processor: int = 0) -> ManipulateMessage:
    return _request(ManipulateApi.GET_VERSION, GetVersion(), processor)


def read_virtual_memory_request(address: int, count: int, processor: int = 0) -> ManipulateMessage:
    """Read ``count`` bytes; the target clamps to MAX_MANIPULATE_DATA and may answer short."""
    body = ReadMemory(address=address, transfer_count=count)
    return _request(ManipulateApi.READ_VIRTUAL_MEMORY, body, processor)


def write_virtual_memory_request(
    address: int, data: bytes, processor: int = 0
) -> ManipulateMessage:
    _check_outgoing_data(data)
    body = ReadMemory(address=address, transfer_count=len(data))
    return _request(ManipulateApi.WRITE_VIRTUAL_MEMORY, body, processor, data)


def read_physical_memory_request(
    address: int, count: int, processor: int = 0, *, caching: int = PHYSICAL_CACHING_DEFAULT
) -> ManipulateMessage:
    body = ReadMemory(address=address, transfer_count=count, actual_bytes=caching)
    return _request(ManipulateApi.READ_PHYSICAL_MEMORY, body, processor)


def write_physical_memory_request(
    address: int, data: bytes, processor: int = 0, *, caching: int = PHYSICAL_CACHING_DEFAULT
) -> ManipulateMessage:
    _check_outgoing_data(data)
    body = ReadMemory(address=address, transfer_count=len(data), actual_bytes=caching)
    return _request(ManipulateApi.WRITE_PHYSICAL_MEMORY, body, processor, data)


def read_control_space_request(address: int, count: int, processor: int = 0) -> ManipulateMessage:
    """``address`` is an Amd64ControlSpace selector on x64 (2 = KSPECIAL_REGISTERS)."""
    body = ReadMemory(address=address, transfer_count=count)
    return _request(ManipulateApi.READ_CONTROL_SPACE, body, processor)


def write_control_space_request(address: int, data: bytes, processor: int = 0) -> ManipulateMessage:
    _check_outgoing_data(data)
    body = ReadMemory(address=address, transfer_count=len(data))
    return _request(ManipulateApi.WRITE_CONTROL_SPACE, body, processor, data)


def get_context_request(processor: int = 0) -> ManipulateMessage:
    return _request(ManipulateApi.GET_CONTEXT, GetContext(), processor)


def set_context_request(
    context: bytes, processor: int = 0, *, context_flags: int | None = None
) -> ManipulateMessage:
    """Send a whole CONTEXT back; ContextFlags defaults to the one inside ``context``. Targets
    refuse it unless a GetContext was done during the same stop (spec 5.1)."""
    _check_outgoing_data(context)
    if context_flags is None:
        if len(context) < Amd64Register.CONTEXT_FLAGS + 4:
            raise KdUsageError(f"a {len(context)}-byte CONTEXT has no ContextFlags")
        context_flags = read_register(context, Amd64Register.CONTEXT_FLAGS)
    body = SetContext(context_flags=context_flags)
    return _request(ManipulateApi.SET_CONTEXT, body, processor, context)


def get_context_ex_request(offset: int, count: int, processor: int = 0) -> ManipulateMessage:
    """Read ``count`` bytes of the CONTEXT from ``offset``; older targets refuse it (spec 15)."""
    body = ContextEx(offset=offset, byte_count=count)
    return _request(ManipulateApi.GET_CONTEXT_EX, body, processor)


def set_context_ex_request(offset: int, data: bytes, processor: int = 0) -> ManipulateMessage:
    _check_outgoing_data(data)
    body = ContextEx(offset=offset, byte_count=len(data))
    return _request(ManipulateApi.SET_CONTEXT_EX, body, processor, data)


def write_breakpoint_request(address: int, processor: int = 0) -> ManipulateMessage:
    return _request(ManipulateApi.WRITE_BREAKPOINT, WriteBreakpoint(address=address), processor)


def restore_breakpoint_request(handle: int, processor: int = 0) -> ManipulateMessage:
    return _request(ManipulateApi.RESTORE_BREAKPOINT, RestoreBreakpoint(handle=handle), processor)


def continue_request(status: int = NtStatus.DBG_CONTINUE, processor: int = 0) -> ManipulateMessage:
    """DbgKdContinueApi; the target resumes without a reply."""
    return _request(ManipulateApi.CONTINUE, Continue(status=status), processor)


def continue2_request(
    status: int = NtStatus.DBG_CONTINUE,
    processor: int = 0,
    *,
    trace_flag: int = 0,
    dr7: int = 0,
    symbol_start: int = KEEP_SYMBOL_RANGE,
    symbol_end: int = 0,
) -> ManipulateMessage:
    """DbgKdContinueApi2. Careful: a target loads ``dr7`` into every CPU and sets or clears
    the trap flag from ``trace_flag`` (spec 5.2), so the defaults mean "no hardware
    breakpoints, no single step"."""
    body = Continue2(
        status=status,
        trace_flag=trace_flag,
        dr7=dr7,
        symbol_start=symbol_start,
        symbol_end=symbol_end,
    )
    return _request(ManipulateApi.CONTINUE2, body, processor)


def reboot_request(processor: int = 0) -> ManipulateMessage:
    """The target reboots without a reply."""
    return _request(ManipulateApi.REBOOT, RawUnion(), processor)


def cause_bugcheck_request(processor: int = 0) -> ManipulateMessage:
    """The target bugchecks with MANUALLY_INITIATED_CRASH (0xE2)."""
    return _request(ManipulateApi.CAUSE_BUGCHECK, RawUnion(), processor)


def switch_processor_request(processor: int) -> ManipulateMessage:
    """The target re-reports its stop from CPU ``processor``."""
    return _request(ManipulateApi.SWITCH_PROCESSOR, RawUnion(), processor)


def read_msr_request(msr: int, processor: int = 0) -> ManipulateMessage:
    return _request(ManipulateApi.READ_MSR, Msr(msr=msr), processor)


def write_msr_request(msr: int, value: int, processor: int = 0) -> ManipulateMessage:
    return _request(ManipulateApi.WRITE_MSR, Msr(msr=msr, value=value), processor)
