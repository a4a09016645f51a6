"""What the HOST asks a stopped target, as generator "plans".

A plan yields one DBGKD_MANIPULATE_STATE64 request at a time and is sent back the target's reply
(None for requests that have none); its return value is the request's result. `KdHost` runs
plans one at a time over the wire, so a read larger than one packet, a module-list walk or the
analysis of a stop is a short loop here instead of a chain of callbacks. A failed request is
thrown into the plan as `RequestError`, which it may catch.

Plans do no I/O and keep what they learn (GetVersion, KDBG, planted breakpoints) in the
`TargetFacts` they are given, which the host forgets when the target reboots.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from dataclasses import dataclass, field

from cartd.kd.bugcheck import KI_BUGCHECK_DATA_SIZE, recover_bugcheck
from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.kd.constants import ManipulateApi, NtStatus
from cartd.kd.context import CONTEXT_FULL, Amd64Register, read_register, with_register
from cartd.kd.debugger_data import (
    KDBG_HEADER_SIZE,
    DebuggerData,
    KdbgError,
    pull_debugger_data,
    pull_kdbg_header,
)
from cartd.kd.errors import KdDecodeError
from cartd.kd.events import MemoryRead, MemoryWritten, StateChanged
from cartd.kd.manipulate import (
    ContextEx,
    Continue,
    GetContext,
    GetVersion,
    ManipulateBody,
    ManipulateMessage,
    Msr,
    RawUnion,
    ReadMemory,
    RestoreBreakpoint,
    SetContext,
    WriteBreakpoint,
)
from cartd.kd.modules import (
    LDR_ENTRY_READ_SIZE,
    MAX_MODULES,
    LoadedModule,
    decode_module_name,
    pull_module_entry,
)
from cartd.kd.state_change import ExceptionRecord, StateChangeMessage
from cartd.kd.stops import StopReason, choose_continue_status, classify_stop, needs_pc_skip


class RequestError(Exception):
    """Thrown into a plan when one of its requests fails; becomes RequestFailed."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


Step = Generator[ManipulateMessage, ManipulateMessage | None, object]
Plan = Step


@dataclass(slots=True)
class TargetFacts:
    """What the host has learned about the target since it booted."""

    version: GetVersion | None = None
    debugger_data: DebuggerData | None = None
    planted: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Requests:
    """Builds requests for the stop the target is in (its processor) and the line's limit."""

    processor: int
    processor_level: int
    max_transfer: int

    def message(
        self,
        api: int,
        body: ManipulateBody | None = None,
        data: bytes = b"",
        processor: int | None = None,
    ) -> ManipulateMessage:
        return ManipulateMessage(
            api=api,
            processor_level=self.processor_level,
            processor=self.processor if processor is None else processor,
            return_status=0,
            body=body if body is not None else RawUnion(),
            data=data,
        )


def api_name(api: int | None) -> str:
    if api is None:
        return "reply"
    try:
        return ManipulateApi(api).name
    except ValueError:
        return f"API {api:#06x}"


def exchange(
    message: ManipulateMessage,
) -> Generator[ManipulateMessage, ManipulateMessage | None, ManipulateMessage]:
    """Send one request and return its reply, failing on a bad ReturnStatus."""
    reply = yield message
    assert reply is not None
    if reply.return_status != NtStatus.SUCCESS:
        raise RequestError(
            f"target returned {reply.return_status:#010x} for {api_name(message.api)}",
            reply.return_status,
        )
    return reply


def send_only(message: ManipulateMessage) -> Plan:
    """A request without a reply (Reboot, CauseBugCheck): done once ACKed."""
    yield message
    return None


def raw_request(message: ManipulateMessage) -> Plan:
    """Any request as is; the result is the reply itself, ReturnStatus unchecked."""
    reply = yield message
    return reply


def get_version(requests: Requests, facts: TargetFacts) -> Plan:
    reply = yield from exchange(requests.message(ManipulateApi.GET_VERSION, GetVersion()))
    if not isinstance(reply.body, GetVersion):
        raise RequestError("GetVersion reply has no version body")
    facts.version = reply.body
    return reply.body


def cached_version(
    requests: Requests, facts: TargetFacts
) -> Generator[ManipulateMessage, ManipulateMessage | None, GetVersion]:
    """GetVersion once per boot: the answer does not change until the target reboots."""
    if facts.version is None:
        yield from get_version(requests, facts)
    assert facts.version is not None
    return facts.version


def read(
    requests: Requests,
    api: int,
    address: int,
    size: int,
    *,
    flags: int = 0,
    processor: int | None = None,
) -> Generator[ManipulateMessage, ManipulateMessage | None, MemoryRead]:
    """Read in pieces of at most `max_transfer`; stop at the first short piece (a page
    boundary or an unmapped page) and report what was read."""
    data = bytearray()
    status: int = NtStatus.SUCCESS
    while len(data) < size:
        count = min(size - len(data), requests.max_transfer)
        body = ReadMemory(address=address + len(data), transfer_count=count, actual_bytes=flags)
        reply = yield requests.message(api, body, processor=processor)
        assert reply is not None
        status = reply.return_status
        actual = reply.body.actual_bytes if isinstance(reply.body, ReadMemory) else 0
        chunk = reply.data[: min(actual, count)]
        data += chunk
        if len(chunk) < count:
            break
    return MemoryRead(address=address, requested=size, data=bytes(data), status=status)


def read_exact(
    requests: Requests, address: int, size: int
) -> Generator[ManipulateMessage, ManipulateMessage | None, bytes]:
    result = yield from read(requests, ManipulateApi.READ_VIRTUAL_MEMORY, address, size)
    if not result.complete:
        raise RequestError(f"could read only {len(result.data)} of {size} bytes at {address:#x}")
    return result.data


def write(requests: Requests, api: int, address: int, data: bytes) -> Plan:
    written = 0
    while written < len(data):
        chunk = data[written : written + requests.max_transfer]
        body = ReadMemory(address=address + written, transfer_count=len(chunk), actual_bytes=0)
        reply = yield requests.message(api, body, chunk)
        assert reply is not None
        actual = reply.body.actual_bytes if isinstance(reply.body, ReadMemory) else 0
        written += min(actual, len(chunk))
        if reply.return_status != NtStatus.SUCCESS or actual < len(chunk):
            break
    return MemoryWritten(address=address, requested=len(data), written=written)


def get_context(
    requests: Requests, processor: int | None = None
) -> Generator[ManipulateMessage, ManipulateMessage | None, bytes]:
    message = requests.message(ManipulateApi.GET_CONTEXT, GetContext(), processor=processor)
    reply = yield from exchange(message)
    return reply.data


def get_context_ex(requests: Requests, offset: int, size: int, processor: int | None) -> Plan:
    body = ContextEx(offset=offset, byte_count=size, bytes_copied=0)
    reply = yield from exchange(
        requests.message(ManipulateApi.GET_CONTEXT_EX, body, processor=processor)
    )
    return reply.data


def set_context(requests: Requests, context: bytes, flags: int, processor: int | None) -> Plan:
    body = SetContext(context_flags=flags)
    yield from exchange(requests.message(ManipulateApi.SET_CONTEXT, body, context, processor))
    return None


def write_breakpoint(requests: Requests, facts: TargetFacts, address: int) -> Plan:
    body = WriteBreakpoint(address=address, handle=0)
    reply = yield from exchange(requests.message(ManipulateApi.WRITE_BREAKPOINT, body))
    facts.planted.add(address)
    return reply.body.handle if isinstance(reply.body, WriteBreakpoint) else 0


def restore_breakpoint(requests: Requests, handle: int) -> Plan:
    body = RestoreBreakpoint(handle=handle)
    yield from exchange(requests.message(ManipulateApi.RESTORE_BREAKPOINT, body))
    return None


def msr(requests: Requests, api: int, number: int, value: int) -> Plan:
    reply = yield from exchange(requests.message(api, Msr(msr=number, value=value)))
    return reply.body.value if isinstance(reply.body, Msr) else 0


def resume(
    requests: Requests, facts: TargetFacts, stop: StateChangeMessage, status: int | None
) -> Plan:
    """Leave a stop: step RIP past a hard-coded int3 (spec 4.2), then Continue."""
    if needs_pc_skip(stop, frozenset(facts.planted)):
        context = yield from get_context(requests, stop.processor)
        rip = read_register(context, Amd64Register.RIP)
        stepped = with_register(context, Amd64Register.RIP, rip + 1)
        yield from set_context(requests, stepped, CONTEXT_FULL, stop.processor)
    chosen = choose_continue_status(stop) if status is None else status
    yield requests.message(ManipulateApi.CONTINUE, Continue(status=chosen))
    return chosen


def list_modules(requests: Requests, facts: TargetFacts) -> Plan:
    """Walk PsLoadedModuleList; result: list[LoadedModule] in load order."""
    version = yield from cached_version(requests, facts)
    head = version.ps_loaded_module_list
    if not head:
        raise RequestError("the target reports no PsLoadedModuleList")
    modules: list[LoadedModule] = []
    (link,) = struct.unpack("<Q", (yield from read_exact(requests, head, 8)))
    while link != head:
        if len(modules) >= MAX_MODULES:
            raise RequestError(f"module list longer than {MAX_MODULES} entries: corrupt?")
        raw = yield from read_exact(requests, link, LDR_ENTRY_READ_SIZE)
        entry = pull_module_entry(raw, address=link)
        name = yield from read_exact(requests, entry.name_buffer, entry.name_length)
        modules.append(
            LoadedModule(name=decode_module_name(name), base=entry.base, size=entry.size)
        )
        link = entry.flink
    return modules


def debugger_data(
    requests: Requests, facts: TargetFacts
) -> Generator[ManipulateMessage, ManipulateMessage | None, DebuggerData | None]:
    """Learn KDBG once per boot (spec section 8 steps 1-2). None if the target has none yet
    (a boot debugger reports DebuggerDataList = 0)."""
    if facts.debugger_data is not None:
        return facts.debugger_data
    version = yield from cached_version(requests, facts)
    if not version.debugger_data_list:
        return None
    (flink,) = struct.unpack("<Q", (yield from read_exact(requests, version.debugger_data_list, 8)))
    size = pull_kdbg_header((yield from read_exact(requests, flink, KDBG_HEADER_SIZE)))
    block = yield from read_exact(requests, flink, size)
    facts.debugger_data = pull_debugger_data(block, address=flink)
    return facts.debugger_data


def analyse_stop(
    requests: Requests,
    facts: TargetFacts,
    stop: StateChangeMessage,
    *,
    look_closer: bool,
    break_in_requested: bool,
    fatal_print: BugcheckInfo | None,
) -> Plan:
    """Turn a raw stop into a StateChanged with its reason and, for a bugcheck, its code and
    parameters (KiBugCheckData, else the "Fatal System Error" DbgPrint)."""
    reason = classify_stop(stop)
    bugcheck: BugcheckInfo | None = None
    if reason is StopReason.BREAKPOINT and look_closer:
        try:
            kdbg = yield from debugger_data(requests, facts)
            if kdbg is not None and stop.program_counter == kdbg.breakpoint_with_status:
                context = yield from get_context(requests, stop.processor)
                reason = classify_stop(
                    stop,
                    breakpoint_with_status=kdbg.breakpoint_with_status,
                    status_argument=read_register(context, Amd64Register.RCX),
                )
                if reason.is_bugcheck:
                    bugcheck = yield from bugcheck_data(requests, kdbg, fatal_print)
        except (RequestError, KdbgError, KdDecodeError):
            pass  # report the stop with what is known; the caller may look again
    if reason is StopReason.BREAKPOINT and break_in_requested:
        reason = StopReason.BREAK_IN
    body = stop.body
    return StateChanged(
        message=stop,
        reason=reason,
        first_chance=body.first_chance if isinstance(body, ExceptionRecord) else True,
        bugcheck=bugcheck,
    )


def bugcheck_data(
    requests: Requests, kdbg: DebuggerData, fatal_print: BugcheckInfo | None
) -> Generator[ManipulateMessage, ManipulateMessage | None, BugcheckInfo | None]:
    raw: bytes | None = None
    if kdbg.ki_bugcheck_data:
        result = yield from read(
            requests,
            ManipulateApi.READ_VIRTUAL_MEMORY,
            kdbg.ki_bugcheck_data,
            KI_BUGCHECK_DATA_SIZE,
        )
        raw = result.data
    return recover_bugcheck(kdbg=kdbg, ki_bugcheck_raw=raw, fatal_print=fatal_print)
