"""Recovering the bugcheck a stopped target is in: which stop is a bugcheck, and code + parameters.

Spec section 4.1 describes what a debugged Windows kernel does on a bugcheck: it prints
"*** Fatal System Error: 0x%08lx (0x%p,0x%p,0x%p,0x%p)" through DbgPrint, then stops with
STATUS_BREAKPOINT at KDDEBUGGER_DATA64.BreakpointWithStatus with a DBG_STATUS_* value in the
first-argument register (RCX on x64, EAX on x86). The code and parameters sit in KiBugCheckData,
five ULONG_PTRs whose address KDBG holds (spec section 9, offset 0x88).

The host's steps, each a function here (none of them performs I/O; the session does the reads):

1. Feed every DbgPrint text to a FatalSystemErrorScanner; remember what it returns.
2. On a STATE_CHANGE exception, ``is_breakpoint_with_status_stop()`` says whether the status
   register is worth a GetContext; ``is_bugcheck_break()`` then classifies the stop.
3. For a bugcheck break read ``ki_bugcheck_data_size()`` bytes at ``bugcheck_data_address()``.
4. ``recover_bugcheck()`` picks the best source: KiBugCheckData first, the DbgPrint second.
"""

from __future__ import annotations

import re
import struct
from enum import IntEnum
from typing import Final

from cartd.kd.bugcheck_codes import BUGCHECK_CODE_MASK, BugcheckInfo
from cartd.kd.constants import DbgStatus, NtStatus
from cartd.kd.debugger_data import DebuggerData

__all__ = [
    "FATAL_SCAN_WINDOW",
    "KI_BUGCHECK_DATA_ENTRIES",
    "KI_BUGCHECK_DATA_SIZE",
    "BugcheckBreak",
    "BugcheckInfo",
    "FatalSystemErrorScanner",
    "KiBugcheckDataError",
    "bugcheck_data_address",
    "guess_pointer_size",
    "is_breakpoint_with_status_stop",
    "is_bugcheck_break",
    "ki_bugcheck_data_size",
    "parse_fatal_system_error",
    "pull_ki_bugcheck_data",
    "recover_bugcheck",
]

# --- The "*** Fatal System Error" DbgPrint (spec 4.1 step 2) -------------------------------------

# The kernel's format is "\n*** Fatal System Error: 0x%08lx\n" + 23 spaces +
# "(0x%p,0x%p,0x%p,0x%p)\n\n"; %p is 16 hex digits on x64 and 8 on x86. We accept any whitespace
# (including line breaks, since the text may come in two prints), any case, and a missing "0x",
# because a serial log is the last place to be strict; the asterisks are not needed to recognise
# the record, so they are not required. Digit counts stay bounded (8 for the ULONG code, 16 for a
# ULONG_PTR) so that a match is a real record, and the pattern has no nested or adjacent
# unbounded repeats, so matching stays linear on hostile text.
_HEX_PARAMETER = r"\s*(?:0x)?([0-9a-f]{1,16})\s*"
_FATAL_SYSTEM_ERROR = re.compile(
    r"fatal\s+system\s+error\s*(?::\s*)?(?:0x)?([0-9a-f]{1,8})\s*"
    r"\(" + ",".join([_HEX_PARAMETER] * 4) + r"\)",
    re.IGNORECASE,
)

# The canonical x64 record is about 140 characters. The scanner keeps this much unmatched tail
# between prints: room for a record with generous whitespace, while a target that prints
# megabytes of noise costs constant memory.
FATAL_SCAN_WINDOW: Final = 1024


def _last_record(text: str) -> re.Match[str] | None:
    matches = list(_FATAL_SYSTEM_ERROR.finditer(text))
    return matches[-1] if matches else None


def _info_from_match(match: re.Match[str]) -> BugcheckInfo:
    code, p1, p2, p3, p4 = (int(group, 16) for group in match.groups())
    return BugcheckInfo(code=code & BUGCHECK_CODE_MASK, parameters=(p1, p2, p3, p4))


def parse_fatal_system_error(text: str) -> BugcheckInfo | None:
    """The bugcheck announced in ``text``, or None if it holds no complete record.

    When the text holds several records the last one wins: it is the bugcheck the target is now
    stopped in. Never raises on any text.
    """
    last = _last_record(text)
    return None if last is None else _info_from_match(last)


class FatalSystemErrorScanner:
    """Finds the Fatal System Error record in a stream of DbgPrint texts.

    The record may be split over two prints (KD's 512-byte DbgPrint limit, or a kernel that
    prints the two lines separately), so text is kept between feeds, at most FATAL_SCAN_WINDOW
    characters of it.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> BugcheckInfo | None:
        """Add one print's text; return a record completed by it (the last one, if several)."""
        buffer = self._pending + text
        last = _last_record(buffer)
        if last is not None:
            # Text after a record may be the start of the next one; text before is spent.
            buffer = buffer[last.end() :]
        self._pending = buffer[-FATAL_SCAN_WINDOW:]
        return None if last is None else _info_from_match(last)

    @property
    def buffered_chars(self) -> int:
        """Characters kept for a record that may still be completed (at most FATAL_SCAN_WINDOW)."""
        return len(self._pending)

    def reset(self) -> None:
        """Forget partial text, e.g. when the link to the target was re-established."""
        self._pending = ""


# --- KiBugCheckData (spec 4.1 step 4) ------------------------------------------------------------

# KiBugCheckData is ULONG_PTR[5]: the code (a ULONG in the low half of [0]) and 4 parameters.
KI_BUGCHECK_DATA_ENTRIES: Final = 5
KI_BUGCHECK_DATA_SIZE: Final = KI_BUGCHECK_DATA_ENTRIES * 8  # 40 bytes on x64
_POINTER_FORMATS: Final = {4: "<5I", 8: "<5Q"}


class KiBugcheckDataError(ValueError):
    """The bytes given as KiBugCheckData cannot be decoded (too short, or a bad pointer size)."""


def ki_bugcheck_data_size(pointer_size: int = 8) -> int:
    """Bytes to read at KiBugCheckData: 40 on x64, 20 on x86."""
    if pointer_size not in _POINTER_FORMATS:
        raise KiBugcheckDataError(f"pointer size must be 4 or 8, not {pointer_size}")
    return KI_BUGCHECK_DATA_ENTRIES * pointer_size


def pull_ki_bugcheck_data(raw: bytes, *, pointer_size: int = 8) -> BugcheckInfo:
    """Decode the 5 ULONG_PTRs of KiBugCheckData; bytes past them are ignored.

    A zero code is returned as such: it means no bugcheck has been recorded yet.
    """
    needed = ki_bugcheck_data_size(pointer_size)
    if len(raw) < needed:
        raise KiBugcheckDataError(
            f"KiBugCheckData needs {needed} bytes with {pointer_size}-byte pointers, got {len(raw)}"
        )
    code, p1, p2, p3, p4 = struct.unpack_from(_POINTER_FORMATS[pointer_size], raw)
    return BugcheckInfo(code=code & BUGCHECK_CODE_MASK, parameters=(p1, p2, p3, p4))


def bugcheck_data_address(kdbg: DebuggerData) -> int | None:
    """Where to read KiBugCheckData (KDBG+0x88 holds the array's address); None if unknown."""
    return kdbg.ki_bugcheck_data or None


def guess_pointer_size(kdbg: DebuggerData | None) -> int:
    """4 when KDBG says the kernel is 32-bit, else 8.

    GetVersion's PTR64 flag cannot be trusted (spec section 15: a real x64 boot debugger left it
    clear), and a caller that knows MachineType should pass the size itself. A 32-bit kernel's
    KernBase, stored in a 64-bit field, has its upper half either zero or sign-extension ones;
    an x64 kernel image lies in the upper canonical half but far below 0xFFFFFFFF'00000000, so
    the upper half tells them apart. (The boot debugger's small winload KernBase never reaches
    here: before the kernel runs there is no KDBG, spec section 15.)
    """
    if kdbg is None or kdbg.kern_base == 0:
        return 8
    return 4 if _fits_32_bits(kdbg.kern_base) else 8


def _fits_32_bits(value: int) -> bool:
    return value >> 32 in (0, 0xFFFF_FFFF)


# --- Classifying the stop (spec 4.1 step 3, section 8) -------------------------------------------


class BugcheckBreak(IntEnum):
    """Which bugcheck stop DbgBreakPointWithStatus reported (value: its DBG_STATUS_* argument)."""

    FIRST = DbgStatus.BUGCHECK_FIRST  # DBG_STATUS_BUGCHECK_FIRST: KeBugCheck2, before the dump
    # DBG_STATUS_BUGCHECK_SECOND: after the blue screen (ReactOS; on Windows UNCONFIRMED)
    SECOND = DbgStatus.BUGCHECK_SECOND
    FATAL = DbgStatus.FATAL  # DBG_STATUS_FATAL: KeEnterKernelDebugger


def _same_address(a: int, b: int) -> bool:
    """Equal addresses, allowing for a 32-bit kernel's sign- vs zero-extension.

    On x86 the state change and KDBG both widen 32-bit addresses to 64 bits, and they need not
    do it the same way: the state change sign-extends (spec section 4), while a KDBG initialised
    by casting a pointer through ULONG_PTR is zero-extended. The lenient compare only applies to
    values whose upper half is all zeros or all ones, which no x64 kernel address is.
    """
    if a == b:
        return True
    return _fits_32_bits(a) and _fits_32_bits(b) and (a ^ b) & 0xFFFF_FFFF == 0


def is_breakpoint_with_status_stop(
    exception_code: int, program_counter: int, kdbg: DebuggerData | None
) -> bool:
    """Whether an exception stop is DbgBreakPointWithStatus, so its status register matters.

    Without KDBG (or with BreakpointWithStatus unknown) the answer is False: any driver can
    execute an int3 with 3 in RCX, so only the address identifies the kernel's own break.
    """
    if (exception_code & 0xFFFF_FFFF) != NtStatus.BREAKPOINT:
        return False
    if kdbg is None or kdbg.breakpoint_with_status == 0:
        return False
    return _same_address(program_counter, kdbg.breakpoint_with_status)


def is_bugcheck_break(
    exception_code: int,
    program_counter: int,
    kdbg: DebuggerData | None,
    rcx: int | None,
) -> BugcheckBreak | None:
    """Classify a STATUS_BREAKPOINT stop at BreakpointWithStatus by its status (RCX, or EAX on
    x86); None for any other stop, and when the status register has not been read yet."""
    if rcx is None or not is_breakpoint_with_status_stop(exception_code, program_counter, kdbg):
        return None
    # The status is a ULONG argument: only the low 32 bits of the register carry it.
    status = rcx & 0xFFFF_FFFF
    try:
        return BugcheckBreak(status)
    except ValueError:
        return None  # CONTROL_C, SYSRQ, DEBUG_CONTROL, WORKER, or something unknown


# --- Choosing the source -------------------------------------------------------------------------


def recover_bugcheck(
    *,
    kdbg: DebuggerData | None,
    ki_bugcheck_raw: bytes | None,
    fatal_print: BugcheckInfo | None,
    pointer_size: int | None = None,
) -> BugcheckInfo | None:
    """The bugcheck to record, from the best source available.

    Rules:
    1. KiBugCheckData wins when it was read in full and holds a nonzero code: it is what the
       kernel itself will put in its dump header, and it is never cut by a lost print.
    2. Otherwise the Fatal System Error print, if one was seen (the kernel skips it for 0xE2,
       MANUALLY_INITIATED_CRASH, so its absence proves nothing).
    3. Otherwise None.
    Short or undecodable ``ki_bugcheck_raw`` counts as absent rather than raising: recovering
    something is better than recovering nothing while the target sits stopped.
    ``pointer_size`` defaults to guess_pointer_size(kdbg).
    """
    if ki_bugcheck_raw is not None:
        size = guess_pointer_size(kdbg) if pointer_size is None else pointer_size
        try:
            from_memory = pull_ki_bugcheck_data(ki_bugcheck_raw, pointer_size=size)
        except KiBugcheckDataError:
            from_memory = None
        if from_memory is not None and from_memory.code != 0:
            return from_memory
    return fatal_print
