"""Layouts of the x64 kernel structures the simulator builds, and list/string helpers for them.

Structure offsets are those of shared/vectors/fake-nt/fake_nt.c (which checks them with
static_asserts, loosely Windows 11 22H2): the built-in kernel uses the same ones, so a host sees
one layout whether the simulator serves its own kernel or the fake-nt image, and KDDEBUGGER_DATA64
states them (OffsetKThread*, SizeEProcess ...). KUSER_SHARED_DATA follows the public Windows 10/11
layout, of which spec section 9 confirms ProductType and SuiteMask.

What a host reads too lives in the protocol core and is not repeated here: CONTEXT and
KSPECIAL_REGISTERS in `cartd.kd.context`, KDDEBUGGER_DATA64 in `cartd.kd.debugger_data`,
KLDR_DATA_TABLE_ENTRY in `cartd.kd.modules`.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from cartd.sim.memory import AddressSpace, PageFaultError

# --- LIST_ENTRY / UNICODE_STRING ----------------------------------------------------------------

LIST_ENTRY_SIZE = 0x10  # LIST_ENTRY (x64): Flink, Blink
UNICODE_STRING_SIZE = 0x10  # UNICODE_STRING (x64): Length u16, MaximumLength u16, pad, Buffer u64
# Lists the simulator walks are a handful of entries long; a longer walk means a corrupt (looping)
# list written by a debugger, and must end rather than spin.
MAX_LIST_WALK = 4096


def push_list_entry(flink: int, blink: int) -> bytes:
    return struct.pack("<QQ", flink, blink)


def push_unicode_string(length: int, maximum_length: int, buffer: int) -> bytes:
    return struct.pack("<HHIQ", length, maximum_length, 0, buffer)


def initialize_list_head(space: AddressSpace, head: int) -> None:
    """An empty list: Flink and Blink point at the head itself (InitializeListHead)."""
    space.write_exact(head, push_list_entry(head, head))


def insert_tail_list(space: AddressSpace, head: int, entry: int) -> None:
    """Append ``entry`` before ``head`` (InsertTailList)."""
    last = space.read_u64(head + 8)
    space.write_exact(entry, push_list_entry(head, last))
    space.write_u64(last, entry)  # last.Flink
    space.write_u64(head + 8, entry)  # head.Blink


def remove_entry_list(space: AddressSpace, entry: int) -> None:
    """Unlink ``entry`` (RemoveEntryList) and leave it pointing at itself."""
    flink = space.read_u64(entry)
    blink = space.read_u64(entry + 8)
    space.write_u64(blink, flink)  # blink.Flink
    space.write_u64(flink + 8, blink)  # flink.Blink
    initialize_list_head(space, entry)


def walk_list(space: AddressSpace, head: int) -> list[int]:
    """Addresses of the entries of a circular list, in Flink order, head excluded."""
    entries: list[int] = []
    entry = space.read_u64(head)
    while entry != head:
        if len(entries) >= MAX_LIST_WALK:
            raise ValueError(f"list at {head:#x} does not come back to its head")
        entries.append(entry)
        entry = space.read_u64(entry)
    return entries


def read_unicode_string(space: AddressSpace, address: int) -> str:
    """The text of the UNICODE_STRING at ``address``."""
    raw = space.read_virtual(address, UNICODE_STRING_SIZE)
    if len(raw) != UNICODE_STRING_SIZE:
        raise PageFaultError(address + len(raw))
    length, _, _, buffer = struct.unpack("<HHIQ", raw)
    text = space.read_virtual(buffer, length)
    if len(text) != length:
        raise PageFaultError(buffer + len(text))
    return text.decode("utf-16-le", "replace")


# --- KLDR_DATA_TABLE_ENTRY flags (offsets in cartd.kd.modules) -----------------------------------

# Flags of a loaded kernel module as fake_nt.c's NtLdrEntry has them (LDRP_ENTRY_PROCESSED and
# LDRP_IMAGE_DLL-style bits); hosts only display them.
LDR_FLAGS_LOADED = 0x08004000

# --- EPROCESS / KPROCESS, ETHREAD / KTHREAD -------------------------------------------------------


class Eprocess(IntEnum):
    """EPROCESS offsets, KPROCESS (Pcb) included (fake_nt.c)."""

    DIRECTORY_TABLE_BASE = 0x028  # Pcb.DirectoryTableBase: the process CR3
    PCB_THREAD_LIST_HEAD = 0x030  # Pcb.ThreadListHead (KTHREAD.ThreadListEntry)
    USER_DIRECTORY_TABLE_BASE = 0x388  # Pcb.UserDirectoryTableBase
    UNIQUE_PROCESS_ID = 0x440  # UniqueProcessId
    ACTIVE_PROCESS_LINKS = 0x448  # ActiveProcessLinks (PsActiveProcessHead list)
    PEB = 0x550  # Peb
    IMAGE_FILE_NAME = 0x5A8  # ImageFileName[15]
    THREAD_LIST_HEAD = 0x5E0  # ThreadListHead (ETHREAD.ThreadListEntry)


EPROCESS_SIZE = 0x880
SYSTEM_PROCESS_ID = 4  # the System process is always pid 4


class Kthread(IntEnum):
    """KTHREAD offsets, the Tcb at the start of ETHREAD (fake_nt.c)."""

    INITIAL_STACK = 0x028  # InitialStack
    STACK_LIMIT = 0x030  # StackLimit (lowest address)
    STACK_BASE = 0x038  # StackBase (one past the highest address)
    KERNEL_STACK = 0x058  # KernelStack (saved RSP)
    APC_STATE_PROCESS = 0x0B8  # ApcState.Process
    TEB = 0x0F0  # Teb
    STATE = 0x184  # State (u8)
    NEXT_PROCESSOR = 0x232  # NextProcessor (u32), what KDBG.OffsetKThreadNextProcessor says
    PROCESS = 0x220  # Process
    THREAD_LIST_ENTRY = 0x2F8  # ThreadListEntry (in KPROCESS.ThreadListHead)


class Ethread(IntEnum):
    """ETHREAD offsets beyond the KTHREAD (fake_nt.c)."""

    CID = 0x478  # Cid (UniqueProcess, UniqueThread)
    THREAD_LIST_ENTRY = 0x4E8  # ThreadListEntry (in EPROCESS.ThreadListHead)


ETHREAD_SIZE = 0x8A0
KTHREAD_STATE_RUNNING = 2  # KTHREAD_STATE Running
KERNEL_STACK_SIZE = 0x6000  # KERNEL_STACK_SIZE on x64

# --- KPCR / KPRCB -------------------------------------------------------------------------------


class Kpcr(IntEnum):
    """KPCR offsets (fake_nt.c); GS base points here in kernel mode."""

    GDT_BASE = 0x00  # GdtBase
    TSS_BASE = 0x08  # TssBase
    USER_RSP = 0x10  # UserRsp
    SELF = 0x18  # Self
    CURRENT_PRCB = 0x20  # CurrentPrcb
    PRCB = 0x180  # Prcb (the KPRCB is embedded)


class Kprcb(IntEnum):
    """KPRCB offsets (fake_nt.c)."""

    MX_CSR = 0x00  # MxCsr (u32)
    LEGACY_NUMBER = 0x04  # LegacyNumber (u8)
    CURRENT_THREAD = 0x08  # CurrentThread
    NEXT_THREAD = 0x10  # NextThread
    IDLE_THREAD = 0x18  # IdleThread
    NUMBER = 0x24  # Number (u32)


KPRCB_SIZE = 0x1000
KPCR_SIZE = Kpcr.PRCB + KPRCB_SIZE
# KiProcessorBlock slots in the built-in kernel (MAXIMUM_PROCESSORS is larger on real Windows; a
# simulated machine is limited to this many processors).
MAX_PROCESSORS = 64

# --- Model-specific registers (Intel SDM vol. 4, AMD APM vol. 2) --------------------------------


class Msr(IntEnum):
    TSC = 0x00000010  # IA32_TIME_STAMP_COUNTER
    APIC_BASE = 0x0000001B  # IA32_APIC_BASE
    FEATURE_CONTROL = 0x0000003A  # IA32_FEATURE_CONTROL
    SYSENTER_CS = 0x00000174  # IA32_SYSENTER_CS
    SYSENTER_ESP = 0x00000175  # IA32_SYSENTER_ESP
    SYSENTER_EIP = 0x00000176  # IA32_SYSENTER_EIP
    MISC_ENABLE = 0x000001A0  # IA32_MISC_ENABLE
    DEBUGCTL = 0x000001D9  # IA32_DEBUGCTL
    PAT = 0x00000277  # IA32_PAT
    EFER = 0xC0000080  # IA32_EFER
    STAR = 0xC0000081  # IA32_STAR
    LSTAR = 0xC0000082  # IA32_LSTAR: 64-bit SYSCALL entry (KiSystemCall64)
    CSTAR = 0xC0000083  # IA32_CSTAR: compatibility-mode SYSCALL entry (KiSystemCall32)
    FMASK = 0xC0000084  # IA32_FMASK
    FS_BASE = 0xC0000100  # IA32_FS_BASE
    GS_BASE = 0xC0000101  # IA32_GS_BASE: the KPCR in kernel mode
    KERNEL_GS_BASE = 0xC0000102  # IA32_KERNEL_GS_BASE: swapped in by SWAPGS
    TSC_AUX = 0xC0000103  # IA32_TSC_AUX: Windows puts the processor number here


# EFER: SCE (syscall) | LME | LMA | NXE, the value every x64 Windows runs with.
EFER_VALUE = 0xD01
# STAR: SYSRET CS/SS base 0x23 (user), SYSCALL CS/SS base 0x10 (kernel), as Windows sets it.
STAR_VALUE = 0x0023001000000000
# FMASK: TF | IF | DF | AC | NT cleared on SYSCALL.
FMASK_VALUE = 0x4700
PAT_VALUE = 0x0007010600070106  # the power-on default PAT (WB, WT, UC-, UC twice)

# --- KUSER_SHARED_DATA ----------------------------------------------------------------------------


class KuserSharedData(IntEnum):
    """KUSER_SHARED_DATA offsets (Windows 10/11 x64)."""

    TICK_COUNT_MULTIPLIER = 0x004  # TickCountMultiplier (u32)
    INTERRUPT_TIME = 0x008  # InterruptTime (KSYSTEM_TIME)
    SYSTEM_TIME = 0x014  # SystemTime (KSYSTEM_TIME)
    IMAGE_NUMBER_LOW = 0x02C  # ImageNumberLow (u16)
    IMAGE_NUMBER_HIGH = 0x02E  # ImageNumberHigh (u16)
    NT_SYSTEM_ROOT = 0x030  # NtSystemRoot (WCHAR[260])
    LARGE_PAGE_MINIMUM = 0x244  # LargePageMinimum (u32)
    NT_BUILD_NUMBER = 0x260  # NtBuildNumber (u32)
    NT_PRODUCT_TYPE = 0x264  # NtProductType (u32; spec section 9)
    PRODUCT_TYPE_IS_VALID = 0x268  # ProductTypeIsValid (u8)
    NATIVE_PROCESSOR_ARCHITECTURE = 0x26A  # NativeProcessorArchitecture (u16)
    NT_MAJOR_VERSION = 0x26C  # NtMajorVersion (u32)
    NT_MINOR_VERSION = 0x270  # NtMinorVersion (u32)
    SUITE_MASK = 0x2D0  # SuiteMask (u32; spec section 9)
    KD_DEBUGGER_ENABLED = 0x2D4  # KdDebuggerEnabled (u8)
    NUMBER_OF_PHYSICAL_PAGES = 0x2EC  # NumberOfPhysicalPages (u32)
    TICK_COUNT = 0x320  # TickCount (KSYSTEM_TIME)
    ACTIVE_PROCESSOR_COUNT = 0x3C0  # ActiveProcessorCount (u32)
    ACTIVE_GROUP_COUNT = 0x3C4  # ActiveGroupCount (u8)


NT_PRODUCT_WIN_NT = 1  # VER_NT_WORKSTATION
SUITE_MASK_WORKSTATION = 0x110  # VER_SUITE_SINGLEUSERTS | VER_SUITE_TERMINAL, a client SKU
PROCESSOR_ARCHITECTURE_AMD64 = 9
# Bit 0: a kernel debugger is enabled; bit 1: it is present (not KdDebuggerNotPresent).
KD_DEBUGGER_ENABLED_AND_PRESENT = 0x03


def push_ksystem_time(value: int) -> bytes:
    """KSYSTEM_TIME: LowPart u32, High1Time i32, High2Time i32 (High1 == High2 when consistent)."""
    low = value & 0xFFFFFFFF
    high = (value >> 32) & 0xFFFFFFFF
    return struct.pack("<III", low, high, high)
