"""One line of meaning for one KD packet, for `cartd decode`.

`describe_packet` reads a `KdPacket` with the pull_* decoders of `cartd.kd` and says what it
means in the words of a kernel debugger: ``GetVersion -> build 10586, ...``, ``DbgPrint "..."``,
``ReadVirtualMemory 0xfffff80001234000 240 bytes``. The result carries the same facts as
fields (addresses as hex strings, counts as numbers) for `--json`.

Requests and replies share their structures (DBGKD_MANIPULATE_STATE64, DBGKD_FILE_IO), so the
direction decides which half is shown: a host's request shows its inputs; a target's reply shows
its inputs again (targets echo them) and, after ``->``, its results. A request's output fields
are junk (WinDbg leaves 0x103 in ReturnStatus, spec section 15) and are never shown. A payload
too short for its structure is described as such, never raised: a decoder of captures must get
through anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from cartd.kd.constants import (
    MachineType,
    ManipulateApi,
    NewState,
    NtStatus,
    PacketType,
)
from cartd.kd.context import AMD64_CONTEXT_SIZE, Amd64Register, read_register
from cartd.kd.debug_io import (
    GetString,
    GetStringReply,
    PrintString,
    pull_debug_io_from_host,
    pull_debug_io_from_target,
)
from cartd.kd.errors import KdDecodeError
from cartd.kd.file_io import CloseFile, CreateFile, ReadFile, WriteFile, pull_file_io
from cartd.kd.framing import KdPacket, NoiseDetected
from cartd.kd.manipulate import (
    BreakpointEx,
    BusData,
    ContextEx,
    Continue,
    Continue2,
    FillMemory,
    GetVersion,
    IoSpace,
    IoSpaceExtended,
    ManipulateMessage,
    Msr,
    QueryMemory,
    ReadMemory,
    RestoreBreakpoint,
    SearchMemory,
    SetContext,
    WriteBreakpoint,
    pull_manipulate,
)
from cartd.kd.state_change import (
    UNLOAD_ALL_BASE,
    CommandString,
    ExceptionRecord,
    LoadSymbols,
    StateChangeMessage,
    pull_state_change,
)

FieldValue = str | int | bool
Fields = dict[str, FieldValue]

# Short names of the packet types, as people say them ("an ACK"), used in lines and JSON.
_TYPE_NAMES: dict[int, str] = {
    PacketType.UNUSED: "UNUSED",
    PacketType.KD_STATE_CHANGE32: "STATE_CHANGE32",
    PacketType.KD_STATE_MANIPULATE: "STATE_MANIPULATE",
    PacketType.KD_DEBUG_IO: "DEBUG_IO",
    PacketType.KD_ACKNOWLEDGE: "ACK",
    PacketType.KD_RESEND: "RESEND",
    PacketType.KD_RESET: "RESET",
    PacketType.KD_STATE_CHANGE64: "STATE_CHANGE64",
    PacketType.KD_POLL_BREAKIN: "POLL_BREAKIN",
    PacketType.KD_TRACE_IO: "TRACE_IO",
    PacketType.KD_CONTROL_REQUEST: "CONTROL_REQUEST",
    PacketType.KD_FILE_IO: "FILE_IO",
}
BREAKIN = "BREAKIN"  # the lone 0x62 byte (serial) or 1-byte datagram (KDNET)
NOISE = "NOISE"  # bytes that are no KD packet

_MAJOR_FREE = 0x0F  # DBGKD_GET_VERSION64.MajorVersion of a free build
_MAJOR_CHECKED = 0x0C  # ... of a checked build


def type_name(packet_type: int) -> str:
    return _TYPE_NAMES.get(packet_type, f"TYPE_{packet_type}")


@dataclass(frozen=True, slots=True, kw_only=True)
class KdDescription:
    """What one KD packet (or one piece of line noise) means."""

    type: str  # "STATE_MANIPULATE", "ACK", "BREAKIN", "NOISE", ...
    id: int | None  # KD_PACKET.PacketId; None for break-ins and noise
    api: str | None  # "GetVersion", "PrintString", "LoadSymbols", ...
    text: str  # the one-line meaning
    fields: Mapping[str, FieldValue] = field(default_factory=dict)


# --- Small formatting helpers -----------------------------------------------------------------


def _camel(member: Enum) -> str:
    """READ_VIRTUAL_MEMORY -> ReadVirtualMemory: the Windows name without DbgKd...Api."""
    return "".join(word.capitalize() for word in member.name.split("_"))


def _api_name(api: Enum | int, prefix: str = "Api") -> str:
    return _camel(api) if isinstance(api, Enum) else f"{prefix}{api:#06x}"


def status_name(status: int) -> str:
    """STATUS_NO_SUCH_FILE (0xc000000f), or just the hex of a status cartd does not name."""
    try:
        member = NtStatus(status)
    except ValueError:
        return f"{status:#010x}"
    name = member.name if member.name.startswith("DBG_") else f"STATUS_{member.name}"
    return f"{name} ({status:#010x})"


def _hex(value: int) -> str:
    return f"{value:#x}"


def quote(text: bytes) -> str:
    """Debugger text in double quotes, on one line: printable ASCII as is, quotes and control
    characters escaped. Backslashes stay single, so Windows paths read as they are."""
    out = []
    for byte in text:
        char = chr(byte)
        if char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _text_field(text: bytes) -> str:
    """The same text for JSON, where the encoder does the escaping."""
    return text.decode("latin-1")


# --- STATE_MANIPULATE -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Meaning:
    """Inputs (shown for requests and replies) and results (replies only)."""

    inputs: str
    results: str
    fields: Fields


_Describer = Callable[[ManipulateMessage], _Meaning]


def _read_memory(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, ReadMemory)
    where = _hex(body.address)
    if message.api == ManipulateApi.READ_CONTROL_SPACE:
        where = f"selector {body.address}"
    fields: Fields = {"address": _hex(body.address), "count": body.transfer_count}
    is_write = message.api in (
        ManipulateApi.WRITE_VIRTUAL_MEMORY,
        ManipulateApi.WRITE_PHYSICAL_MEMORY,
        ManipulateApi.WRITE_CONTROL_SPACE,
    )
    verb = "written" if is_write else "read"
    fields[f"bytes_{verb}"] = body.actual_bytes
    return _Meaning(
        f"{where} {body.transfer_count} bytes", f"{body.actual_bytes} bytes {verb}", fields
    )


def _get_context(message: ManipulateMessage) -> _Meaning:
    fields: Fields = {"context_bytes": len(message.data)}
    results = f"{len(message.data)}-byte CONTEXT"
    if len(message.data) >= AMD64_CONTEXT_SIZE:
        rip = read_register(message.data, Amd64Register.RIP)
        rsp = read_register(message.data, Amd64Register.RSP)
        fields |= {"rip": _hex(rip), "rsp": _hex(rsp)}
        results += f", rip {rip:#x} rsp {rsp:#x}"
    return _Meaning("", results, fields)


def _set_context(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, SetContext)
    fields: Fields = {"context_flags": _hex(body.context_flags), "context_bytes": len(message.data)}
    return _Meaning(f"flags {body.context_flags:#x}, {len(message.data)} bytes", "", fields)


def _context_ex(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, ContextEx)
    fields: Fields = {
        "offset": _hex(body.offset),
        "count": body.byte_count,
        "bytes_copied": body.bytes_copied,
    }
    return _Meaning(
        f"offset {body.offset:#x} {body.byte_count} bytes", f"{body.bytes_copied} bytes", fields
    )


def _write_breakpoint(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, WriteBreakpoint)
    fields: Fields = {"address": _hex(body.address), "handle": body.handle}
    return _Meaning(_hex(body.address), f"handle {body.handle}", fields)


def _restore_breakpoint(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, RestoreBreakpoint)
    return _Meaning(f"handle {body.handle}", "", {"handle": body.handle})


def _continue(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, Continue | Continue2)
    fields: Fields = {"continue_status": _hex(body.status)}
    inputs = f"status {status_name(body.status)}"
    if isinstance(body, Continue2):
        fields |= {"trace_flag": body.trace_flag, "dr7": _hex(body.dr7)}
        inputs += f", trace flag {body.trace_flag}, dr7 {body.dr7:#x}"
    return _Meaning(inputs, "", fields)


def _get_version(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, GetVersion)
    try:
        machine = MachineType(body.machine_type).name
    except ValueError:
        machine = f"machine {body.machine_type:#06x}"
    build_kind = {_MAJOR_FREE: "free", _MAJOR_CHECKED: "checked"}.get(body.major_version & 0xFF)
    fields: Fields = {
        "build": body.minor_version,
        "major_version": _hex(body.major_version),
        "kd_protocol": body.protocol_version,
        "kd_secondary_version": body.kd_secondary_version,
        "flags": _hex(body.flags),
        "machine": machine,
        "kernel_base": _hex(body.kern_base),
        "ps_loaded_module_list": _hex(body.ps_loaded_module_list),
        "debugger_data_list": _hex(body.debugger_data_list),
    }
    build = f"build {body.minor_version}" + (f" ({build_kind})" if build_kind else "")
    results = (
        f"{build}, {machine}, kernel base {body.kern_base:#x}, "
        f"PsLoadedModuleList {body.ps_loaded_module_list:#x}, "
        f"KD protocol {body.protocol_version}.{body.kd_secondary_version}"
    )
    return _Meaning("", results, fields)


def _msr(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, Msr)
    fields: Fields = {"msr": _hex(body.msr), "value": _hex(body.value)}
    if message.api == ManipulateApi.WRITE_MSR:
        return _Meaning(f"{body.msr:#x} = {body.value:#x}", "", fields)
    return _Meaning(_hex(body.msr), _hex(body.value), fields)


def _io_space(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, IoSpace | IoSpaceExtended)
    fields: Fields = {
        "address": _hex(body.address),
        "size": body.data_size,
        "value": _hex(body.data_value),
    }
    is_write = message.api in (ManipulateApi.WRITE_IO_SPACE, ManipulateApi.WRITE_IO_SPACE_EXTENDED)
    if is_write:
        return _Meaning(
            f"port {body.address:#x} size {body.data_size} = {body.data_value:#x}", "", fields
        )
    return _Meaning(f"port {body.address:#x} size {body.data_size}", _hex(body.data_value), fields)


def _breakpoint_ex(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, BreakpointEx)
    fields: Fields = {"breakpoints": body.breakpoint_count}
    return _Meaning(f"{body.breakpoint_count} breakpoints", "", fields)


def _search_memory(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, SearchMemory)
    fields: Fields = {
        "address": _hex(body.address),
        "length": body.length,
        "pattern_length": body.pattern_length,
    }
    return _Meaning(
        f"{body.address:#x} length {body.length:#x}, {body.pattern_length}-byte pattern",
        f"found at {body.address:#x}",
        fields,
    )


def _bus_data(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, BusData)
    fields: Fields = {
        "bus_data_type": body.bus_data_type,
        "bus": body.bus_number,
        "slot": body.slot_number,
        "offset": _hex(body.offset),
        "length": body.length,
    }
    inputs = (
        f"type {body.bus_data_type} bus {body.bus_number} slot {body.slot_number} "
        f"offset {body.offset:#x} {body.length} bytes"
    )
    return _Meaning(inputs, f"{body.length} bytes", fields)


def _fill_memory(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, FillMemory)
    fields: Fields = {
        "address": _hex(body.address),
        "length": body.length,
        "pattern_length": body.pattern_length,
    }
    inputs = f"{body.address:#x} {body.length} bytes, {body.pattern_length}-byte pattern"
    return _Meaning(inputs, f"{body.length} bytes filled", fields)


def _query_memory(message: ManipulateMessage) -> _Meaning:
    body = message.body
    assert isinstance(body, QueryMemory)
    fields: Fields = {
        "address": _hex(body.address),
        "address_space": body.address_space,
        "flags": _hex(body.flags),
    }
    return _Meaning(
        _hex(body.address), f"address space {body.address_space}, flags {body.flags:#x}", fields
    )


def _switch_processor(message: ManipulateMessage) -> _Meaning:
    return _Meaning(f"to CPU {message.processor}", "", {})


def _nothing(message: ManipulateMessage) -> _Meaning:
    return _Meaning("", "", {})


_MANIPULATE_DESCRIBERS: dict[int, _Describer] = {
    ManipulateApi.READ_VIRTUAL_MEMORY: _read_memory,
    ManipulateApi.WRITE_VIRTUAL_MEMORY: _read_memory,
    ManipulateApi.READ_PHYSICAL_MEMORY: _read_memory,
    ManipulateApi.WRITE_PHYSICAL_MEMORY: _read_memory,
    ManipulateApi.READ_CONTROL_SPACE: _read_memory,
    ManipulateApi.WRITE_CONTROL_SPACE: _read_memory,
    ManipulateApi.GET_CONTEXT: _get_context,
    ManipulateApi.SET_CONTEXT: _set_context,
    ManipulateApi.GET_CONTEXT_EX: _context_ex,
    ManipulateApi.SET_CONTEXT_EX: _context_ex,
    ManipulateApi.WRITE_BREAKPOINT: _write_breakpoint,
    ManipulateApi.RESTORE_BREAKPOINT: _restore_breakpoint,
    ManipulateApi.CONTINUE: _continue,
    ManipulateApi.CONTINUE2: _continue,
    ManipulateApi.GET_VERSION: _get_version,
    ManipulateApi.READ_MSR: _msr,
    ManipulateApi.WRITE_MSR: _msr,
    ManipulateApi.READ_IO_SPACE: _io_space,
    ManipulateApi.WRITE_IO_SPACE: _io_space,
    ManipulateApi.READ_IO_SPACE_EXTENDED: _io_space,
    ManipulateApi.WRITE_IO_SPACE_EXTENDED: _io_space,
    ManipulateApi.WRITE_BREAKPOINT_EX: _breakpoint_ex,
    ManipulateApi.RESTORE_BREAKPOINT_EX: _breakpoint_ex,
    ManipulateApi.SEARCH_MEMORY: _search_memory,
    ManipulateApi.GET_BUS_DATA: _bus_data,
    ManipulateApi.SET_BUS_DATA: _bus_data,
    ManipulateApi.FILL_MEMORY: _fill_memory,
    ManipulateApi.QUERY_MEMORY: _query_memory,
    ManipulateApi.SWITCH_PROCESSOR: _switch_processor,
}


def _describe_manipulate(packet: KdPacket, from_target: bool | None) -> KdDescription:
    message = pull_manipulate(packet.payload)
    api = _api_name(message.api)
    meaning = _MANIPULATE_DESCRIBERS.get(message.api, _nothing)(message)
    fields: Fields = {"processor": message.processor, **meaning.fields}
    text = f"{api} {meaning.inputs}".rstrip()
    if from_target:
        # A reply: the status is the result when the call failed; otherwise the results are.
        fields["status"] = _hex(message.return_status)
        if message.return_status != NtStatus.SUCCESS:
            text += f" -> {status_name(message.return_status)}"
        elif meaning.results:
            text += f" -> {meaning.results}"
        else:
            text += " -> ok"
        fields["reply"] = True
    else:
        # A request's output fields hold junk (spec section 15): keep only the inputs.
        fields = {"processor": message.processor, **_inputs_only(message.api, meaning.fields)}
        if from_target is False:
            fields["reply"] = False
    return _description(packet, api, text, fields)


# Fields that only a reply fills in; a request carries leftovers there.
_OUTPUT_FIELDS = frozenset(
    {
        "bytes_read",
        "bytes_written",
        "bytes_copied",
        "build",
        "major_version",
        "kd_protocol",
        "kd_secondary_version",
        "flags",
        "machine",
        "kernel_base",
        "ps_loaded_module_list",
        "debugger_data_list",
        "rip",
        "rsp",
        "address_space",
    }
)


# APIs whose "value" field is the target's answer.
_VALUE_OUTPUT_APIS = frozenset(
    {ManipulateApi.READ_MSR, ManipulateApi.READ_IO_SPACE, ManipulateApi.READ_IO_SPACE_EXTENDED}
)


def _inputs_only(api: ManipulateApi | int, fields: Fields) -> Fields:
    inputs = {name: value for name, value in fields.items() if name not in _OUTPUT_FIELDS}
    if api == ManipulateApi.WRITE_BREAKPOINT:
        inputs.pop("handle", None)  # the target's answer, not an input
    if api in _VALUE_OUTPUT_APIS:
        inputs.pop("value", None)
    if api == ManipulateApi.GET_CONTEXT:
        inputs.pop("context_bytes", None)
    return inputs


# --- STATE_CHANGE64 ---------------------------------------------------------------------------


def _describe_state_change(packet: KdPacket) -> KdDescription:
    message: StateChangeMessage = pull_state_change(packet.payload)
    kind = message.kind
    api = _api_name(kind, "NewState") if isinstance(kind, NewState) else f"NewState{kind:#06x}"
    fields: Fields = {
        "processor": message.processor,
        "processors": message.number_processors,
        "thread": _hex(message.thread),
        "pc": _hex(message.program_counter),
    }
    body = message.body
    if isinstance(body, ExceptionRecord):
        chance = "first chance" if body.first_chance else "second chance"
        text = f"Exception {status_name(body.code)} at {body.address:#x}, {chance}"
        fields |= {
            "code": _hex(body.code),
            "address": _hex(body.address),
            "first_chance": body.first_chance,
            "parameters": ",".join(_hex(value) for value in body.parameters),
        }
    elif isinstance(body, LoadSymbols):
        fields |= {
            "path": body.path,
            "base": _hex(body.base_of_dll),
            "size": _hex(body.size_of_image),
            "unload": body.unload,
        }
        if body.unload and body.base_of_dll == UNLOAD_ALL_BASE:
            api, text = "UnloadSymbols", "UnloadSymbols everything (the target is going down)"
        else:
            api = "UnloadSymbols" if body.unload else "LoadSymbols"
            text = (
                f"{api} {quote(body.path.encode('latin-1'))} base {body.base_of_dll:#x} "
                f"size {body.size_of_image:#x}"
            )
    elif isinstance(body, CommandString):
        fields |= {"name": body.name, "command": body.command}
        text = f"CommandString {body.name!r}: {body.command!r}"
    else:
        text = f"state change {api}"
    text += f", CPU {message.processor} of {message.number_processors}"
    return _description(packet, api, text, fields)


# --- DEBUG_IO ---------------------------------------------------------------------------------


def _describe_debug_io(packet: KdPacket, from_target: bool | None) -> KdDescription:
    if from_target is False:
        message = pull_debug_io_from_host(packet.payload)
    else:
        message = pull_debug_io_from_target(packet.payload)
    api = _api_name(message.api)
    body = message.body
    fields: Fields = {"processor": message.processor}
    if isinstance(body, PrintString):
        text = f"DbgPrint {quote(body.text)}"
        fields["string"] = _text_field(body.text)
    elif isinstance(body, GetString):
        text = f"DbgPrompt {quote(body.prompt)} (answer up to {body.max_reply_length} bytes)"
        fields |= {"string": _text_field(body.prompt), "max_reply_length": body.max_reply_length}
    elif isinstance(body, GetStringReply):
        text = f"DbgPrompt answer {quote(body.text)}"
        fields["string"] = _text_field(body.text)
    else:
        text = f"debug I/O {api}, {len(body.data)} bytes"
    return _description(packet, api, text, fields)


# --- FILE_IO ----------------------------------------------------------------------------------


def _describe_file_io(packet: KdPacket, from_target: bool | None) -> KdDescription:
    message = pull_file_io(packet.payload)
    api = _api_name(message.api)
    body = message.body
    fields: Fields = {}
    inputs = ""
    results = f"{len(message.data)} bytes" if message.data else "ok"
    if isinstance(body, CreateFile):
        fields["file_name"] = body.file_name
        inputs = quote(body.file_name.encode("utf-8", "replace")) if body.file_name else ""
        results = f"handle {body.handle:#x}, length {body.length}"
        if from_target is False:
            fields |= {"handle": _hex(body.handle), "length": body.length}
    elif isinstance(body, ReadFile | WriteFile):
        inputs = f"handle {body.handle:#x} offset {body.offset:#x} {body.length} bytes"
        fields |= {"handle": _hex(body.handle), "offset": _hex(body.offset), "length": body.length}
    elif isinstance(body, CloseFile):
        inputs = f"handle {body.handle:#x}"
        fields["handle"] = _hex(body.handle)
    text = f"{api} {inputs}".rstrip()
    # FILE_IO runs the other way round: the target asks, the host answers.
    if from_target is False:
        fields["status"] = _hex(message.status)
        if message.status != NtStatus.SUCCESS:
            text += f" -> {status_name(message.status)}"
        else:
            text += f" -> {results}"
    return _description(packet, api, text, fields)


# --- The rest ---------------------------------------------------------------------------------


def _describe_unused(packet: KdPacket) -> KdDescription:
    # kdnet.md 3.4 item 1: the 4 bytes after the header hold the host's IPv4 address, byte
    # order reversed (01 02 a8 c0 for 192.168.2.1); what the packet is for is UNCONFIRMED.
    fields: Fields = {"data": packet.payload.hex()}
    text = "the target's first KDNET packet"
    if len(packet.payload) == 4:
        host = ipaddress.IPv4Address(packet.payload[::-1])
        fields["host_ip"] = str(host)
        text += f", host address {host}"
    return _description(packet, None, text, fields)


def _description(packet: KdPacket, api: str | None, text: str, fields: Fields) -> KdDescription:
    kind = type_name(packet.packet_type)
    fields = {"payload_bytes": len(packet.payload), **fields} if not packet.is_control else fields
    return KdDescription(type=kind, id=packet.packet_id, api=api, text=text, fields=fields)


def describe_packet(packet: KdPacket, *, from_target: bool | None) -> KdDescription:
    """What `packet` means; `from_target` None when the capture does not say who sent it."""
    kind = type_name(packet.packet_type)
    if packet.is_control:
        return _description(packet, None, f"{kind} id {packet.packet_id:#010x}", {})
    try:
        match packet.packet_type:
            case PacketType.KD_STATE_MANIPULATE:
                return _describe_manipulate(packet, from_target)
            case PacketType.KD_STATE_CHANGE64:
                return _describe_state_change(packet)
            case PacketType.KD_DEBUG_IO:
                return _describe_debug_io(packet, from_target)
            case PacketType.KD_FILE_IO:
                return _describe_file_io(packet, from_target)
            case PacketType.UNUSED:
                return _describe_unused(packet)
    except KdDecodeError as exc:
        return _description(packet, None, f"{kind}, undecodable payload: {exc}", {})
    return _description(packet, None, f"{kind}, {len(packet.payload)} bytes", {})


def describe_breakin() -> KdDescription:
    return KdDescription(
        type=BREAKIN, id=None, api=None, text="break-in (the host asks the target to stop)"
    )


def describe_noise(noise: NoiseDetected) -> KdDescription:
    kind = noise.kind.value.replace("_", " ")
    return KdDescription(
        type=NOISE,
        id=None,
        api=None,
        text=f"not a KD packet: {kind}, {noise.size} byte{'' if noise.size == 1 else 's'}",
        fields={"noise": noise.kind.value, "bytes": noise.size},
    )


__all__ = [
    "BREAKIN",
    "NOISE",
    "KdDescription",
    "describe_breakin",
    "describe_noise",
    "describe_packet",
    "quote",
    "status_name",
    "type_name",
]
