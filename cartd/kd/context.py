"""The AMD64 register blocks a debugger reads and writes: CONTEXT and KSPECIAL_REGISTERS.

GetContext returns a whole 0x4D0-byte CONTEXT and SetContext sends one back, so cartd keeps a
context as the bytes the target sent and reads or replaces single registers in them; everything it
does not understand (most of FltSave, vector state) goes back unchanged. ReadControlSpace(2)
returns a prefix of KSPECIAL_REGISTERS, where CR3 lives. Offsets are from spec section 5.2 (KDMP's
static_asserted CONTEXT, QDMP's WinContext64, ReactOS amd64 ketypes). The simulator builds both
blocks from the same definitions.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from cartd.kd.errors import KdDecodeError, KdUsageError

AMD64_CONTEXT_SIZE = 0x4D0  # sizeof(CONTEXT) on x64; what GetContext returns

# CONTEXT.ContextFlags bits (winnt.h, QDMP win_dump_defs.h). The architecture bit is always set;
# the others say which register groups the block holds.
CONTEXT_AMD64 = 0x00100000  # CONTEXT_AMD64
CONTEXT_CONTROL = CONTEXT_AMD64 | 0x01  # CONTEXT_CONTROL: SegSs, Rsp, SegCs, Rip, EFlags
CONTEXT_INTEGER = CONTEXT_AMD64 | 0x02  # CONTEXT_INTEGER: Rax..R15 except Rsp
CONTEXT_SEGMENTS = CONTEXT_AMD64 | 0x04  # CONTEXT_SEGMENTS: SegDs, SegEs, SegFs, SegGs
CONTEXT_FLOATING_POINT = CONTEXT_AMD64 | 0x08  # CONTEXT_FLOATING_POINT: MxCsr, FltSave
CONTEXT_DEBUG_REGISTERS = CONTEXT_AMD64 | 0x10  # CONTEXT_DEBUG_REGISTERS: Dr0..Dr3, Dr6, Dr7
CONTEXT_FULL = CONTEXT_CONTROL | CONTEXT_INTEGER | CONTEXT_FLOATING_POINT  # CONTEXT_FULL
CONTEXT_ALL = CONTEXT_FULL | CONTEXT_SEGMENTS | CONTEXT_DEBUG_REGISTERS  # CONTEXT_ALL


class Amd64Register(IntEnum):
    """Byte offsets of the registers in an AMD64 CONTEXT (spec section 5.2); u64 unless noted."""

    CONTEXT_FLAGS = 0x30  # ContextFlags (u32)
    MX_CSR = 0x34  # MxCsr (u32)
    SEG_CS = 0x38  # SegCs (u16)
    SEG_DS = 0x3A  # SegDs (u16)
    SEG_ES = 0x3C  # SegEs (u16)
    SEG_FS = 0x3E  # SegFs (u16)
    SEG_GS = 0x40  # SegGs (u16)
    SEG_SS = 0x42  # SegSs (u16)
    EFLAGS = 0x44  # EFlags (u32)
    DR0 = 0x48  # Dr0
    DR1 = 0x50  # Dr1
    DR2 = 0x58  # Dr2
    DR3 = 0x60  # Dr3
    DR6 = 0x68  # Dr6
    DR7 = 0x70  # Dr7
    RAX = 0x78  # Rax
    RCX = 0x80  # Rcx: the DbgBreakPointWithStatus argument on x64 (spec section 4.1)
    RDX = 0x88  # Rdx
    RBX = 0x90  # Rbx
    RSP = 0x98  # Rsp
    RBP = 0xA0  # Rbp
    RSI = 0xA8  # Rsi
    RDI = 0xB0  # Rdi
    R8 = 0xB8  # R8
    R9 = 0xC0  # R9
    R10 = 0xC8  # R10
    R11 = 0xD0  # R11
    R12 = 0xD8  # R12
    R13 = 0xE0  # R13
    R14 = 0xE8  # R14
    R15 = 0xF0  # R15
    RIP = 0xF8  # Rip
    FLT_CONTROL_WORD = 0x100  # FltSave.ControlWord (u16)
    FLT_MX_CSR = 0x118  # FltSave.MxCsr (u32)
    FLT_MX_CSR_MASK = 0x11C  # FltSave.MxCsr_Mask (u32)


_CONTEXT_U16_REGISTERS = frozenset(
    {
        Amd64Register.SEG_CS,
        Amd64Register.SEG_DS,
        Amd64Register.SEG_ES,
        Amd64Register.SEG_FS,
        Amd64Register.SEG_GS,
        Amd64Register.SEG_SS,
        Amd64Register.FLT_CONTROL_WORD,
    }
)
_CONTEXT_U32_REGISTERS = frozenset(
    {
        Amd64Register.CONTEXT_FLAGS,
        Amd64Register.MX_CSR,
        Amd64Register.EFLAGS,
        Amd64Register.FLT_MX_CSR,
        Amd64Register.FLT_MX_CSR_MASK,
    }
)


class KSpecialRegister(IntEnum):
    """Byte offsets in AMD64 KSPECIAL_REGISTERS (spec section 5.2, ReactOS amd64 ketypes.h); u64
    unless noted."""

    CR0 = 0x00  # Cr0
    CR2 = 0x08  # Cr2
    CR3 = 0x10  # Cr3: the kernel page-table root a dump writer needs
    CR4 = 0x18  # Cr4
    KERNEL_DR0 = 0x20  # KernelDr0
    KERNEL_DR1 = 0x28  # KernelDr1
    KERNEL_DR2 = 0x30  # KernelDr2
    KERNEL_DR3 = 0x38  # KernelDr3
    KERNEL_DR6 = 0x40  # KernelDr6
    KERNEL_DR7 = 0x48  # KernelDr7
    GDTR_LIMIT = 0x56  # Gdtr.Limit (u16)
    GDTR_BASE = 0x58  # Gdtr.Base
    IDTR_LIMIT = 0x66  # Idtr.Limit (u16)
    IDTR_BASE = 0x68  # Idtr.Base
    TR = 0x70  # Tr (u16)
    LDTR = 0x72  # Ldtr (u16)
    MX_CSR = 0x74  # MxCsr (u32)
    CR8 = 0xA0  # Cr8
    MSR_GS_BASE = 0xA8  # MsrGsBase
    MSR_GS_SWAP = 0xB0  # MsrGsSwap
    MSR_STAR = 0xB8  # MsrStar
    MSR_LSTAR = 0xC0  # MsrLStar
    MSR_CSTAR = 0xC8  # MsrCStar
    MSR_SYSCALL_MASK = 0xD0  # MsrSyscallMask
    XCR0 = 0xD8  # Xcr0
    MSR_FS_BASE = 0xE0  # MsrFsBase


_SPECIAL_U16_REGISTERS = frozenset(
    {
        KSpecialRegister.GDTR_LIMIT,
        KSpecialRegister.IDTR_LIMIT,
        KSpecialRegister.TR,
        KSpecialRegister.LDTR,
    }
)
_SPECIAL_U32_REGISTERS = frozenset({KSpecialRegister.MX_CSR})

# Windows 10+ KSPECIAL_REGISTERS is 0xF0 bytes (MsrFsBase and padding after Xcr0); a simulated
# target keeps the whole block, of which hosts read a prefix (below).
KSPECIAL_REGISTERS_SIZE = 0xF0

# How much of KSPECIAL_REGISTERS hosts ask ReadControlSpace(2) for: WinDbg asks 0xE0 (spec
# section 15), ntoseye 0xA8 (shared/vectors/fake-nt/README.md). A target answers what it is asked
# for, so a simulator must serve any length up to the larger one.
KSPECIAL_REGISTERS_WINDBG_READ_SIZE = 0xE0
KSPECIAL_REGISTERS_NTOSEYE_READ_SIZE = 0xA8


class Amd64ControlSpace(IntEnum):
    """ReadControlSpace TargetBaseAddress values on AMD64 (RX-KD64 amd64/kdx64.c)."""

    KPCR = 0  # the current processor's KPCR address (8 bytes back)
    KPRCB = 1  # the current processor's KPRCB address (8 bytes back)
    KSPECIAL_REGISTERS = 2  # the KSPECIAL_REGISTERS block itself (the only writable one)
    KTHREAD = 3  # the current thread's KTHREAD address (8 bytes back)


Register = Amd64Register | KSpecialRegister


def _register_format(register: Register) -> str:
    # KSPECIAL_REGISTERS members share values with CONTEXT members, so pick the block's width
    # tables by type first: an IntEnum compares equal to any int, and a lookup in one table of
    # both blocks would mix them up.
    u16: frozenset[Register]
    u32: frozenset[Register]
    if isinstance(register, KSpecialRegister):
        u16, u32 = _SPECIAL_U16_REGISTERS, _SPECIAL_U32_REGISTERS
    else:
        u16, u32 = _CONTEXT_U16_REGISTERS, _CONTEXT_U32_REGISTERS
    if register in u16:
        return "<H"
    if register in u32:
        return "<I"
    return "<Q"


def _checked_format(block: bytes | bytearray, register: Register) -> str:
    fmt = _register_format(register)
    end = register + struct.calcsize(fmt)
    if len(block) < end:
        raise KdDecodeError(
            f"{register.name} needs {end:#x} bytes of register block, got {len(block):#x}"
        )
    return fmt


def read_register(context: bytes | bytearray, register: Register) -> int:
    """One register from a CONTEXT (or KSPECIAL_REGISTERS) block as the target sent it."""
    value: int = struct.unpack_from(_checked_format(context, register), context, register)[0]
    return value


def pack_register(block: bytearray, register: Register, value: int) -> None:
    """Replace one register of a CONTEXT (or KSPECIAL_REGISTERS) block in place."""
    fmt = _checked_format(block, register)
    try:
        struct.pack_into(fmt, block, register, value)
    except struct.error as exc:
        raise KdUsageError(f"{register.name} cannot hold {value:#x}") from exc


def with_register(context: bytes | bytearray, register: Register, value: int) -> bytes:
    """A copy of ``context`` with one register replaced; every other byte is kept."""
    block = bytearray(context)
    pack_register(block, register, value)
    return bytes(block)
