"""What a stop means and how to leave it: classification and the continue policy.

A target stops by sending DBGKD_WAIT_STATE_CHANGE64. The packet alone tells an exception from a
module load; telling a bugcheck from a break-in needs two facts from the target: whether the PC
is KDDEBUGGER_DATA64.BreakpointWithStatus, and the status argument in RCX (spec sections 4.1 and
8). These pure functions take those facts as arguments, so the host core and tests share them.
"""

from __future__ import annotations

from enum import Enum

from cartd.kd.constants import DbgStatus, NewState, NtStatus
from cartd.kd.state_change import ExceptionRecord, LoadSymbols, StateChangeMessage

INT3_OPCODE = 0xCC


class StopReason(Enum):
    BREAKPOINT = "breakpoint"  # an int3 in kernel code (DbgBreakPoint, a driver's __debugbreak)
    BREAK_IN = "break_in"  # DBG_STATUS_CONTROL_C: our break-in byte, or Ctrl-C seen by a print
    SYSRQ = "sysrq"  # DBG_STATUS_SYSRQ
    BUGCHECK_FIRST = "bugcheck_first"  # DBG_STATUS_BUGCHECK_FIRST: KeBugCheck's first break
    BUGCHECK_SECOND = "bugcheck_second"  # DBG_STATUS_BUGCHECK_SECOND: after the dump was written
    FATAL = "fatal"  # DBG_STATUS_FATAL: KeEnterKernelDebugger
    SINGLE_STEP = "single_step"
    EXCEPTION = "exception"  # any other exception, first or second chance
    MODULE_LOAD = "module_load"
    MODULE_UNLOAD = "module_unload"
    COMMAND_STRING = "command_string"
    OTHER = "other"  # a NewState this code does not know

    @property
    def is_bugcheck(self) -> bool:
        return self in (StopReason.BUGCHECK_FIRST, StopReason.BUGCHECK_SECOND)


# Keyed by plain int: RCX is whatever the target put there, not necessarily a DbgStatus.
_STATUS_REASONS: dict[int, StopReason] = {
    DbgStatus.CONTROL_C: StopReason.BREAK_IN,
    DbgStatus.SYSRQ: StopReason.SYSRQ,
    DbgStatus.BUGCHECK_FIRST: StopReason.BUGCHECK_FIRST,
    DbgStatus.BUGCHECK_SECOND: StopReason.BUGCHECK_SECOND,
    DbgStatus.FATAL: StopReason.FATAL,
}


def is_breakpoint_exception(stop: StateChangeMessage) -> bool:
    return isinstance(stop.body, ExceptionRecord) and stop.body.code == NtStatus.BREAKPOINT


def classify_stop(
    stop: StateChangeMessage,
    *,
    breakpoint_with_status: int | None = None,
    status_argument: int | None = None,
) -> StopReason:
    """Classify a stop. `breakpoint_with_status` comes from KDBG and `status_argument` is RCX
    read with GetContext; without them a break at DbgBreakPointWithStatus is a BREAKPOINT."""
    body = stop.body
    if isinstance(body, LoadSymbols):
        return StopReason.MODULE_UNLOAD if body.unload else StopReason.MODULE_LOAD
    if (stop.new_state & 0xFFFF) == NewState.COMMAND_STRING:
        return StopReason.COMMAND_STRING
    if not isinstance(body, ExceptionRecord):
        return StopReason.OTHER
    if body.code == NtStatus.SINGLE_STEP:
        return StopReason.SINGLE_STEP
    if body.code != NtStatus.BREAKPOINT:
        return StopReason.EXCEPTION
    if (
        breakpoint_with_status
        and stop.program_counter == breakpoint_with_status
        and status_argument is not None
    ):
        return _STATUS_REASONS.get(status_argument, StopReason.BREAKPOINT)
    return StopReason.BREAKPOINT


def needs_pc_skip(stop: StateChangeMessage, planted_breakpoints: frozenset[int]) -> bool:
    """True when continuing would execute the same hard-coded int3 again (spec section 4.2):
    a STATUS_BREAKPOINT whose instruction stream starts with 0xCC at a PC we did not plant."""
    if not is_breakpoint_exception(stop):
        return False
    stream = stop.control_report.instruction_stream
    return (
        bool(stream)
        and stream[0] == INT3_OPCODE
        and stop.program_counter not in (planted_breakpoints)
    )


def choose_continue_status(stop: StateChangeMessage) -> int:
    """DBG_CONTINUE for breakpoints, steps, module loads and command strings; for any other
    exception DBG_EXCEPTION_NOT_HANDLED, so Windows runs its own handlers (and bugchecks on a
    second-chance kernel exception) exactly as it would without a debugger."""
    body = stop.body
    if isinstance(body, ExceptionRecord) and body.code not in (
        NtStatus.BREAKPOINT,
        NtStatus.SINGLE_STEP,
    ):
        return NtStatus.DBG_EXCEPTION_NOT_HANDLED
    return NtStatus.DBG_CONTINUE
