"""KDDEBUGGER_DATA64 ("KDBG") and PHYSICAL_MEMORY_DESCRIPTOR: the kernel's map for debuggers.

The host finds KDBG through GetVersion.DebuggerDataList (spec section 8 step 2) and reads from it
where the kernel keeps the module list, the bugcheck data and the physical memory runs. The
simulator builds the same block. Offsets are x64 and come from spec section 9; the block's size
varies by Windows build, so every reader checks ``Header.Size`` before it trusts a field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

KDBG_OWNER_TAG = 0x4742444B  # 'KDBG' read as a little-endian u32
KDBG_HEADER_SIZE = 0x18  # DBGKD_DEBUG_DATA_HEADER64: LIST_ENTRY64, OwnerTag, Size
# Size of the RS5-era block; the fake-nt image uses 0x368 and newer builds are larger still.
KDBG_TYPICAL_SIZE = 0x380
# Nothing real is larger than a page; a bigger Size means we are reading garbage.
KDBG_MAX_SIZE = 0x1000


class KdbgOffset(IntEnum):
    """Byte offsets of KDDEBUGGER_DATA64 fields on x64 (spec section 9)."""

    LIST_FLINK = 0x000  # Header.List.Flink
    LIST_BLINK = 0x008  # Header.List.Blink
    OWNER_TAG = 0x010  # Header.OwnerTag
    SIZE = 0x014  # Header.Size
    KERN_BASE = 0x018  # KernBase (value)
    BREAKPOINT_WITH_STATUS = 0x020  # BreakpointWithStatus (address of the int3)
    SAVED_CONTEXT = 0x028  # SavedContext (value, valid after a bugcheck)
    TH_CALLBACK_STACK = 0x030  # ThCallbackStack (u16)
    PAE_ENABLED = 0x036  # PaeEnabled (bit 0 of a u16)
    KI_CALL_USER_MODE = 0x038  # KiCallUserMode
    KE_USER_CALLBACK_DISPATCHER = 0x040  # KeUserCallbackDispatcher
    PS_LOADED_MODULE_LIST = 0x048  # PsLoadedModuleList (address of the list head)
    PS_ACTIVE_PROCESS_HEAD = 0x050  # PsActiveProcessHead (address of the list head)
    PSP_CID_TABLE = 0x058  # PspCidTable
    KE_TIME_INCREMENT = 0x078  # KeTimeIncrement
    KE_BUGCHECK_CALLBACK_LIST_HEAD = 0x080  # KeBugCheckCallbackListHead
    KI_BUGCHECK_DATA = 0x088  # KiBugcheckData (address of ULONG_PTR[5])
    OBP_ROOT_DIRECTORY_OBJECT = 0x098  # ObpRootDirectoryObject
    MM_PFN_DATABASE = 0x0C0  # MmPfnDatabase (address of the pointer variable)
    MM_LOWEST_PHYSICAL_PAGE = 0x0E8  # MmLowestPhysicalPage
    MM_HIGHEST_PHYSICAL_PAGE = 0x0F0  # MmHighestPhysicalPage
    MM_NUMBER_OF_PHYSICAL_PAGES = 0x0F8  # MmNumberOfPhysicalPages
    MM_PAGE_SIZE = 0x138  # MmPageSize (value)
    MM_HIGHEST_USER_ADDRESS = 0x1C8  # MmHighestUserAddress
    MM_SYSTEM_RANGE_START = 0x1D0  # MmSystemRangeStart
    MM_USER_PROBE_ADDRESS = 0x1D8  # MmUserProbeAddress (value)
    KD_PRINT_CIRCULAR_BUFFER = 0x1E0  # KdPrintCircularBuffer
    NT_BUILD_LAB = 0x208  # NtBuildLab (address of the string)
    KI_PROCESSOR_BLOCK = 0x218  # KiProcessorBlock (address of KPRCB*[])
    CM_NT_CSD_VERSION = 0x268  # CmNtCSDVersion
    MM_PHYSICAL_MEMORY_BLOCK = 0x270  # MmPhysicalMemoryBlock (address of the pointer variable)
    MM_SESSION_BASE = 0x278  # MmSessionBase
    MM_VIRTUAL_TRANSLATION_BASE = 0x290  # MmVirtualTranslationBase
    OFFSET_KTHREAD_NEXT_PROCESSOR = 0x298  # OffsetKThreadNextProcessor (u16)
    OFFSET_KTHREAD_TEB = 0x29A  # OffsetKThreadTeb (u16)
    OFFSET_KTHREAD_KERNEL_STACK = 0x29C  # OffsetKThreadKernelStack (u16)
    OFFSET_KTHREAD_INITIAL_STACK = 0x29E  # OffsetKThreadInitialStack (u16)
    OFFSET_KTHREAD_APC_PROCESS = 0x2A0  # OffsetKThreadApcProcess (u16)
    OFFSET_KTHREAD_STATE = 0x2A2  # OffsetKThreadState (u16)
    SIZE_EPROCESS = 0x2A8  # SizeEProcess (u16)
    OFFSET_EPROCESS_PEB = 0x2AA  # OffsetEprocessPeb (u16)
    OFFSET_EPROCESS_DIRECTORY_TABLE_BASE = 0x2AE  # OffsetEprocessDirectoryTableBase (u16)
    SIZE_PRCB = 0x2B0  # SizePrcb (u16)
    OFFSET_PRCB_CURRENT_THREAD = 0x2B4  # OffsetPrcbCurrentThread (u16)
    OFFSET_PRCB_PROC_STATE_CONTEXT = 0x2BC  # OffsetPrcbProcStateContext (u16)
    OFFSET_PRCB_NUMBER = 0x2BE  # OffsetPrcbNumber (u16)
    SIZE_ETHREAD = 0x2C0  # SizeEThread (u16)
    KE_LOADER_BLOCK = 0x2D8  # KeLoaderBlock
    OFFSET_PRCB_PROC_STATE_SPECIAL_REG = 0x2F2  # OffsetPrcbProcStateSpecialReg (u16)
    OFFSET_PRCB_CONTEXT = 0x338  # OffsetPrcbContext (u16, Win7+)
    PTE_BASE = 0x360  # PteBase (RS1+)


class KdbgError(ValueError):
    """The bytes read where KDBG should be are not a KDDEBUGGER_DATA64 block."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DebuggerData:
    """The fields of KDDEBUGGER_DATA64 that cartd uses; absent fields (block too short) are 0."""

    address: int  # virtual address of the block itself
    size: int  # Header.Size
    kern_base: int
    breakpoint_with_status: int
    saved_context: int
    ps_loaded_module_list: int
    ps_active_process_head: int
    ki_bugcheck_data: int
    mm_pfn_database: int
    mm_page_size: int
    nt_build_lab: int
    ki_processor_block: int
    mm_physical_memory_block: int
    raw: bytes

    def field_u64(self, offset: int) -> int:
        """Any u64 field by offset, 0 when the block is too short to hold it."""
        return _u64_or_zero(self.raw, offset)


def _u64_or_zero(raw: bytes, offset: int) -> int:
    if offset + 8 > len(raw):
        return 0
    value: int = struct.unpack_from("<Q", raw, offset)[0]
    return value


def pull_kdbg_header(raw: bytes) -> int:
    """Check the 0x18-byte header and return Header.Size."""
    if len(raw) < KDBG_HEADER_SIZE:
        raise KdbgError(f"KDBG header needs {KDBG_HEADER_SIZE} bytes, got {len(raw)}")
    tag, size = struct.unpack_from("<II", raw, KdbgOffset.OWNER_TAG)
    if tag != KDBG_OWNER_TAG:
        raise KdbgError(f"OwnerTag is {tag:#010x}, not 'KDBG' ({KDBG_OWNER_TAG:#010x})")
    if not KDBG_HEADER_SIZE <= size <= KDBG_MAX_SIZE:
        raise KdbgError(f"KDBG Size {size:#x} is implausible")
    return int(size)


def pull_debugger_data(raw: bytes, *, address: int) -> DebuggerData:
    """Decode a KDDEBUGGER_DATA64 block read from ``address`` (at least its header)."""
    size = pull_kdbg_header(raw)
    raw = raw[:size]
    return DebuggerData(
        address=address,
        size=size,
        kern_base=_u64_or_zero(raw, KdbgOffset.KERN_BASE),
        breakpoint_with_status=_u64_or_zero(raw, KdbgOffset.BREAKPOINT_WITH_STATUS),
        saved_context=_u64_or_zero(raw, KdbgOffset.SAVED_CONTEXT),
        ps_loaded_module_list=_u64_or_zero(raw, KdbgOffset.PS_LOADED_MODULE_LIST),
        ps_active_process_head=_u64_or_zero(raw, KdbgOffset.PS_ACTIVE_PROCESS_HEAD),
        ki_bugcheck_data=_u64_or_zero(raw, KdbgOffset.KI_BUGCHECK_DATA),
        mm_pfn_database=_u64_or_zero(raw, KdbgOffset.MM_PFN_DATABASE),
        mm_page_size=_u64_or_zero(raw, KdbgOffset.MM_PAGE_SIZE),
        nt_build_lab=_u64_or_zero(raw, KdbgOffset.NT_BUILD_LAB),
        ki_processor_block=_u64_or_zero(raw, KdbgOffset.KI_PROCESSOR_BLOCK),
        mm_physical_memory_block=_u64_or_zero(raw, KdbgOffset.MM_PHYSICAL_MEMORY_BLOCK),
        raw=bytes(raw),
    )


def push_debugger_data(fields: dict[KdbgOffset, int], *, size: int = KDBG_TYPICAL_SIZE) -> bytes:
    """Build a KDDEBUGGER_DATA64 block; ``fields`` maps offsets to values (u16 where the
    field is a u16, u32 for the header tag/size, u64 otherwise). OwnerTag and Size are set."""
    block = bytearray(size)
    struct.pack_into("<II", block, KdbgOffset.OWNER_TAG, KDBG_OWNER_TAG, size)
    for offset, value in fields.items():
        if offset in (KdbgOffset.OWNER_TAG, KdbgOffset.SIZE):
            raise ValueError(f"{offset.name} is set by push_debugger_data itself")
        fmt = "<H" if offset in _U16_FIELDS else "<Q"
        struct.pack_into(fmt, block, offset, value)
    return bytes(block)


_U16_FIELDS = frozenset(
    {
        KdbgOffset.TH_CALLBACK_STACK,
        KdbgOffset.PAE_ENABLED,
        KdbgOffset.OFFSET_KTHREAD_NEXT_PROCESSOR,
        KdbgOffset.OFFSET_KTHREAD_TEB,
        KdbgOffset.OFFSET_KTHREAD_KERNEL_STACK,
        KdbgOffset.OFFSET_KTHREAD_INITIAL_STACK,
        KdbgOffset.OFFSET_KTHREAD_APC_PROCESS,
        KdbgOffset.OFFSET_KTHREAD_STATE,
        KdbgOffset.SIZE_EPROCESS,
        KdbgOffset.OFFSET_EPROCESS_PEB,
        KdbgOffset.OFFSET_EPROCESS_DIRECTORY_TABLE_BASE,
        KdbgOffset.SIZE_PRCB,
        KdbgOffset.OFFSET_PRCB_CURRENT_THREAD,
        KdbgOffset.OFFSET_PRCB_PROC_STATE_CONTEXT,
        KdbgOffset.OFFSET_PRCB_NUMBER,
        KdbgOffset.SIZE_ETHREAD,
        KdbgOffset.OFFSET_PRCB_PROC_STATE_SPECIAL_REG,
        KdbgOffset.OFFSET_PRCB_CONTEXT,
    }
)


# --- PHYSICAL_MEMORY_DESCRIPTOR (x64) -------------------------------------------------------------
# NumberOfRuns u32 @0, pad, NumberOfPages u64 @8, runs of {BasePage u64, PageCount u64} @0x10.

PHYSICAL_MEMORY_DESCRIPTOR_HEADER_SIZE = 0x10
PHYSICAL_MEMORY_RUN_SIZE = 0x10
# Real machines have a handful of runs; more than this means the pointer led us astray.
MAX_PHYSICAL_MEMORY_RUNS = 256


@dataclass(frozen=True, slots=True)
class PhysicalMemoryRun:
    base_page: int
    page_count: int


@dataclass(frozen=True, slots=True)
class PhysicalMemoryDescriptor:
    number_of_pages: int
    runs: tuple[PhysicalMemoryRun, ...]

    @property
    def byte_size(self) -> int:
        """Bytes a descriptor with this many runs occupies in memory."""
        return PHYSICAL_MEMORY_DESCRIPTOR_HEADER_SIZE + PHYSICAL_MEMORY_RUN_SIZE * len(self.runs)


def pull_physical_memory_run_count(raw: bytes) -> int:
    """Read NumberOfRuns from the first bytes of a descriptor, checking it is plausible."""
    if len(raw) < PHYSICAL_MEMORY_DESCRIPTOR_HEADER_SIZE:
        raise ValueError("physical memory descriptor header is 16 bytes")
    (count,) = struct.unpack_from("<I", raw, 0)
    if count > MAX_PHYSICAL_MEMORY_RUNS:
        raise ValueError(f"NumberOfRuns {count} is implausible")
    return int(count)


def pull_physical_memory_descriptor(raw: bytes) -> PhysicalMemoryDescriptor:
    count = pull_physical_memory_run_count(raw)
    needed = PHYSICAL_MEMORY_DESCRIPTOR_HEADER_SIZE + PHYSICAL_MEMORY_RUN_SIZE * count
    if len(raw) < needed:
        raise ValueError(f"descriptor with {count} runs needs {needed} bytes, got {len(raw)}")
    (pages,) = struct.unpack_from("<Q", raw, 8)
    runs = tuple(
        PhysicalMemoryRun(*struct.unpack_from("<QQ", raw, 0x10 + 0x10 * index))
        for index in range(count)
    )
    return PhysicalMemoryDescriptor(number_of_pages=pages, runs=runs)


def push_physical_memory_descriptor(descriptor: PhysicalMemoryDescriptor) -> bytes:
    out = bytearray(struct.pack("<IIQ", len(descriptor.runs), 0, descriptor.number_of_pages))
    for run in descriptor.runs:
        out += struct.pack("<QQ", run.base_page, run.page_count)
    return bytes(out)
