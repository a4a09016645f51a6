"""The simulated kernel's answers to a debugger: what KdpSendWaitContinue does on Windows.

While the target is stopped, every DBGKD_MANIPULATE_STATE64 request is handed to
`DebuggerApi.handle`, which reads or changes the simulated machine and returns either a reply to
send or a `Resume` telling the target to leave the debugger. The rules follow ReactOS' kd64
(spec section 5): reads are clamped to 3944 bytes and may be partial (STATUS_UNSUCCESSFUL with
the bytes that could be read), SetContext is refused unless GetContext was done during this
stop, unimplemented APIs answer STATUS_UNSUCCESSFUL, Continue/Reboot/CauseBugCheck have no reply.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from cartd.kd.constants import (
    KD_PROTOCOL_VERSION,
    KD_SECONDARY_VERSION_AMD64_CONTEXT,
    MAX_MANIPULATE_DATA,
    MachineType,
    ManipulateApi,
    NtStatus,
    PacketType,
    VersionFlags,
)
from cartd.kd.context import AMD64_CONTEXT_SIZE, Amd64ControlSpace
from cartd.kd.manipulate import (
    ContextEx,
    Continue,
    Continue2,
    GetVersion,
    ManipulateMessage,
    Msr,
    ReadMemory,
    RestoreBreakpoint,
    WriteBreakpoint,
    read_memory_reply,
    reply_to,
)
from cartd.sim.machine import SimulatedMachine

INT3 = b"\xcc"
# WinDbg and ntoseye probe breakpoint handles 1..32 (fake-nt README); slots beyond are refused.
BREAKPOINT_SLOTS = 32
# Windows' kernel reports MaxManipulate 0x59 (spec section 15); the value only informs the host.
MAX_MANIPULATE_REPORTED = 0x59


class ResumeKind(Enum):
    CONTINUE = "continue"
    REBOOT = "reboot"
    BUGCHECK = "bugcheck"  # DbgKdCauseBugCheckApi
    SWITCH_PROCESSOR = "switch_processor"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    kind: ResumeKind
    status: int = NtStatus.DBG_CONTINUE
    processor: int = 0


@dataclass(slots=True)
class _Breakpoint:
    address: int
    original: bytes


class DebuggerApi:
    """Serves manipulate requests against one simulated machine."""

    def __init__(
        self, machine: SimulatedMachine, *, max_transfer: int = MAX_MANIPULATE_DATA
    ) -> None:
        """`max_transfer` clamps memory transfers as the target's transport does: 3944 bytes on
        serial, 1360 under KDNET (kdnet.md section 6: replies stay in one unfragmented
        datagram)."""
        self.machine = machine
        self._max_transfer = max_transfer
        self._breakpoints: dict[int, _Breakpoint] = {}
        self._context_sent = False

    def new_stop(self) -> None:
        """A new stop begins: SetContext needs a fresh GetContext (KdpContextSent)."""
        self._context_sent = False

    @property
    def planted_addresses(self) -> frozenset[int]:
        return frozenset(bp.address for bp in self._breakpoints.values())

    def original_byte(self, address: int) -> int:
        """The byte a planted breakpoint replaced (for the control report's instruction
        stream, which shows code as it was before the debugger changed it)."""
        for planted in self._breakpoints.values():
            if planted.address == address:
                return planted.original[0]
        return self.machine.space.read_virtual(address, 1)[0]

    def handle(self, request: ManipulateMessage) -> ManipulateMessage | Resume:
        api = request.api
        handler = _HANDLERS.get(api) if isinstance(api, ManipulateApi) else None
        if handler is None:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        return handler(self, request)

    # ------------------------------------------------------------------ memory

    def _read_memory(self, request: ManipulateMessage) -> ManipulateMessage:
        body = request.body
        assert isinstance(body, ReadMemory)
        count = min(body.transfer_count, self._max_transfer)
        machine = self.machine
        if request.api == ManipulateApi.READ_VIRTUAL_MEMORY:
            data = machine.space.read_virtual(body.address, count)
        elif request.api == ManipulateApi.READ_PHYSICAL_MEMORY:
            data = machine.physical.read(body.address, count)
        else:
            data = self._read_control_space(request.processor, body.address, count)
        status = NtStatus.SUCCESS if len(data) == count else NtStatus.UNSUCCESSFUL
        return read_memory_reply(request, data, return_status=status)

    def _read_control_space(self, processor: int, address: int, count: int) -> bytes:
        machine = self.machine
        if processor >= machine.processors:
            return b""
        pointers = {
            Amd64ControlSpace.KPCR: machine.kpcr_address(processor),
            Amd64ControlSpace.KPRCB: machine.kprcb_address(processor),
            Amd64ControlSpace.KTHREAD: machine.current_thread(processor),
        }
        if address == Amd64ControlSpace.KSPECIAL_REGISTERS:
            return bytes(machine.special_registers(processor)[:count])
        if address in pointers:
            return struct.pack("<Q", pointers[Amd64ControlSpace(address)])[:count]
        return b""

    def _write_memory(self, request: ManipulateMessage) -> ManipulateMessage:
        body = request.body
        assert isinstance(body, ReadMemory)
        data = request.data[: min(body.transfer_count, self._max_transfer)]
        machine = self.machine
        if request.api == ManipulateApi.WRITE_VIRTUAL_MEMORY:
            written = machine.space.write_virtual(body.address, data)
        elif request.api == ManipulateApi.WRITE_PHYSICAL_MEMORY:
            written = machine.physical.write(body.address, data)
        else:
            written = self._write_control_space(request.processor, body.address, data)
        status = NtStatus.SUCCESS if written == len(data) else NtStatus.UNSUCCESSFUL
        return reply_to(
            request,
            return_status=status,
            body=ReadMemory(
                address=body.address, transfer_count=body.transfer_count, actual_bytes=written
            ),
        )

    def _write_control_space(self, processor: int, address: int, data: bytes) -> int:
        # AMD64 accepts only KSPECIAL_REGISTERS (spec 5.1, DbgKdWriteControlSpaceApi).
        if address != Amd64ControlSpace.KSPECIAL_REGISTERS or processor >= self.machine.processors:
            return 0
        registers = self.machine.special_registers(processor)
        size = min(len(data), len(registers))
        registers[:size] = data[:size]
        return size

    # ------------------------------------------------------------------ registers

    def _get_context(self, request: ManipulateMessage) -> ManipulateMessage:
        if request.processor >= self.machine.processors:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        self._context_sent = True
        return reply_to(
            request,
            return_status=NtStatus.SUCCESS,
            data=bytes(self.machine.context(request.processor)),
        )

    def _set_context(self, request: ManipulateMessage) -> ManipulateMessage:
        if not self._context_sent or request.processor >= self.machine.processors:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        context = self.machine.context(request.processor)
        size = min(len(request.data), AMD64_CONTEXT_SIZE)
        context[:size] = request.data[:size]
        return reply_to(request, return_status=NtStatus.SUCCESS, body=request.body)

    def _context_ex(self, request: ManipulateMessage) -> ManipulateMessage:
        body = request.body
        assert isinstance(body, ContextEx)
        if request.processor >= self.machine.processors or body.offset > AMD64_CONTEXT_SIZE:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        context = self.machine.context(request.processor)
        end = min(
            body.offset + body.byte_count, AMD64_CONTEXT_SIZE, body.offset + self._max_transfer
        )
        if request.api == ManipulateApi.GET_CONTEXT_EX:
            self._context_sent = True
            chunk = bytes(context[body.offset : end])
            reply_body = ContextEx(
                offset=body.offset, byte_count=body.byte_count, bytes_copied=len(chunk)
            )
            return reply_to(request, return_status=NtStatus.SUCCESS, body=reply_body, data=chunk)
        if not self._context_sent:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        chunk = request.data[: end - body.offset]
        context[body.offset : body.offset + len(chunk)] = chunk
        reply_body = ContextEx(
            offset=body.offset, byte_count=body.byte_count, bytes_copied=len(chunk)
        )
        return reply_to(request, return_status=NtStatus.SUCCESS, body=reply_body)

    def _msr(self, request: ManipulateMessage) -> ManipulateMessage:
        body = request.body
        assert isinstance(body, Msr)
        if request.api == ManipulateApi.READ_MSR:
            value = self.machine.read_msr(body.msr)
            if value is None:
                return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
            return reply_to(
                request, return_status=NtStatus.SUCCESS, body=Msr(msr=body.msr, value=value)
            )
        ok = self.machine.write_msr(body.msr, body.value)
        status = NtStatus.SUCCESS if ok else NtStatus.UNSUCCESSFUL
        return reply_to(request, return_status=status, body=body)

    # ------------------------------------------------------------------ breakpoints

    def _write_breakpoint(self, request: ManipulateMessage) -> ManipulateMessage:
        body = request.body
        assert isinstance(body, WriteBreakpoint)
        free = [h for h in range(1, BREAKPOINT_SLOTS + 1) if h not in self._breakpoints]
        original = self.machine.space.read_virtual(body.address, 1)
        if not free or len(original) != 1:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        if self.machine.space.write_virtual(body.address, INT3) != 1:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        handle = free[0]
        self._breakpoints[handle] = _Breakpoint(body.address, original)
        return reply_to(
            request,
            return_status=NtStatus.SUCCESS,
            body=WriteBreakpoint(address=body.address, handle=handle),
        )

    def _restore_breakpoint(self, request: ManipulateMessage) -> ManipulateMessage:
        body = request.body
        assert isinstance(body, RestoreBreakpoint)
        planted = self._breakpoints.pop(body.handle, None)
        if planted is None:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL, body=body)
        self.machine.space.write_virtual(planted.address, planted.original)
        return reply_to(request, return_status=NtStatus.SUCCESS, body=body)

    # ------------------------------------------------------------------ control

    def _get_version(self, request: ManipulateMessage) -> ManipulateMessage:
        machine = self.machine
        flags = VersionFlags.DATA | VersionFlags.PTR64
        if machine.processors > 1:
            flags |= VersionFlags.MP
        version = GetVersion(
            major_version=0x000F,
            minor_version=machine.build_number,
            protocol_version=KD_PROTOCOL_VERSION,
            kd_secondary_version=KD_SECONDARY_VERSION_AMD64_CONTEXT,
            flags=int(flags),
            machine_type=MachineType.AMD64,
            max_packet_type=PacketType.MAX,
            max_state_change=3,
            max_manipulate=MAX_MANIPULATE_REPORTED,
            kern_base=machine.kernel_base,
            ps_loaded_module_list=machine.ps_loaded_module_list,
            debugger_data_list=machine.debugger_data_list,
        )
        return reply_to(request, return_status=NtStatus.SUCCESS, body=version)

    def _continue(self, request: ManipulateMessage) -> Resume:
        body = request.body
        status = body.status if isinstance(body, Continue | Continue2) else NtStatus.DBG_CONTINUE
        if isinstance(body, Continue2) and status < 0x80000000:
            # Continue2 loads Dr7 into every processor (ReactOS KdpGetStateChange).
            self.machine.set_kernel_dr7(body.dr7)
        return Resume(kind=ResumeKind.CONTINUE, status=status)

    def _reboot(self, request: ManipulateMessage) -> Resume:
        return Resume(kind=ResumeKind.REBOOT)

    def _cause_bugcheck(self, request: ManipulateMessage) -> Resume:
        return Resume(kind=ResumeKind.BUGCHECK)

    def _switch_processor(self, request: ManipulateMessage) -> ManipulateMessage | Resume:
        if request.processor >= self.machine.processors:
            return reply_to(request, return_status=NtStatus.UNSUCCESSFUL)
        return Resume(kind=ResumeKind.SWITCH_PROCESSOR, processor=request.processor)


_Handler = Callable[[DebuggerApi, ManipulateMessage], ManipulateMessage | Resume]
_HANDLERS: dict[ManipulateApi, _Handler] = {
    ManipulateApi.READ_VIRTUAL_MEMORY: DebuggerApi._read_memory,
    ManipulateApi.READ_PHYSICAL_MEMORY: DebuggerApi._read_memory,
    ManipulateApi.READ_CONTROL_SPACE: DebuggerApi._read_memory,
    ManipulateApi.WRITE_VIRTUAL_MEMORY: DebuggerApi._write_memory,
    ManipulateApi.WRITE_PHYSICAL_MEMORY: DebuggerApi._write_memory,
    ManipulateApi.WRITE_CONTROL_SPACE: DebuggerApi._write_memory,
    ManipulateApi.GET_CONTEXT: DebuggerApi._get_context,
    ManipulateApi.SET_CONTEXT: DebuggerApi._set_context,
    ManipulateApi.GET_CONTEXT_EX: DebuggerApi._context_ex,
    ManipulateApi.SET_CONTEXT_EX: DebuggerApi._context_ex,
    ManipulateApi.READ_MSR: DebuggerApi._msr,
    ManipulateApi.WRITE_MSR: DebuggerApi._msr,
    ManipulateApi.WRITE_BREAKPOINT: DebuggerApi._write_breakpoint,
    ManipulateApi.RESTORE_BREAKPOINT: DebuggerApi._restore_breakpoint,
    ManipulateApi.GET_VERSION: DebuggerApi._get_version,
    ManipulateApi.CONTINUE: DebuggerApi._continue,
    ManipulateApi.CONTINUE2: DebuggerApi._continue,
    ManipulateApi.REBOOT: DebuggerApi._reboot,
    ManipulateApi.CAUSE_BUGCHECK: DebuggerApi._cause_bugcheck,
    ManipulateApi.SWITCH_PROCESSOR: DebuggerApi._switch_processor,
}
