"""What a crash dump of a stopped target needs, learned from the target as plans.

Theory of operation
-------------------
A dump is made in two halves: these plans decide and learn, sans-I/O like every plan in
`cartd.kd.host_plans` (they yield one DBGKD_MANIPULATE_STATE64 request at a time), and
`cartd.capture.dump_file` writes. Three plans:

1. `dump_facts` reads what DUMP_HEADER64 holds (spec section 10): kernel CR3, PFN database,
   list heads, KDBG, the physical memory runs, the stopped processor's CONTEXT, the bugcheck,
   KUSER_SHARED_DATA's product type, suite mask and clocks, and GetVersion's numbers.
2. `translate` turns a virtual address into a physical one by reading the target's own page
   tables with ReadPhysicalMemory, and says which table pages it used, so a dump can carry them.
   A `PageTableCache` keeps the tables read during one stop.
3. `triage_pages` chooses the physical pages of a triage dump, in priority order, each with a
   reason, within a page budget: what lets a debugger show the bugcheck, the stacks and the
   module list (the tiers are listed in `TriageTier`).

Rules:
1. KDBG, CR3 and the physical memory runs are essential: without them a dump cannot be opened,
   so the plan fails with RequestError. Every other fact the target cannot give gets the default
   documented on its field, and its name goes into `DumpFacts.defaulted`.
2. A RequestError without a status means the link failed, not the target: it always ends the
   plan, since going on would spend minutes timing out request after request. A target that
   answers "unsuccessful" costs only the fact it was asked for.
3. Only pages inside the physical memory runs are selected, table pages included: reading
   device memory can change the device.
4. Page-table pages are listed before the first page that needs them, so every prefix of a
   triage list is a dump a debugger can translate: a cut by the budget, or by a lost link
   half-way through reading, still leaves a usable dump.
5. Bytes from the target that do not decode become RequestError: a plan never raises anything
   the host does not expect.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Final, TypeVar

from cartd.kd.bugcheck import KI_BUGCHECK_DATA_SIZE
from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.kd.constants import KUSER_SHARED_DATA_ADDRESS, MachineType, ManipulateApi
from cartd.kd.context import (
    AMD64_CONTEXT_SIZE,
    Amd64ControlSpace,
    Amd64Register,
    KSpecialRegister,
    read_register,
)
from cartd.kd.debugger_data import (
    PHYSICAL_MEMORY_DESCRIPTOR_HEADER_SIZE,
    PHYSICAL_MEMORY_RUN_SIZE,
    DebuggerData,
    KdbgError,
    KdbgOffset,
    PhysicalMemoryDescriptor,
    pull_physical_memory_descriptor,
    pull_physical_memory_run_count,
)
from cartd.kd.errors import KdDecodeError, KdUsageError
from cartd.kd.host_plans import (
    RequestError,
    Requests,
    TargetFacts,
    bugcheck_data,
    cached_version,
    debugger_data,
    get_context,
    read,
)
from cartd.kd.manipulate import ManipulateMessage
from cartd.kd.modules import (
    LDR_ENTRY_READ_SIZE,
    LDR_ENTRY_SIZE,
    MAX_MODULES,
    MAX_NAME_BYTES,
    LdrEntry,
    decode_module_name,
    pull_module_entry,
)
from cartd.kd.paging import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_SIZE,
    WALK_ORDER,
    MappedPage,
    decode_entry,
    is_canonical,
    pfn_of,
    pml4_address,
    table_index,
)
from cartd.kd.state_change import ExceptionRecord, StateChangeMessage

_T = TypeVar("_T")
# A plan step that returns a _T (the shape of every plan in cartd.kd.host_plans).
Ask = Generator[ManipulateMessage, ManipulateMessage | None, _T]

# --- Constants ------------------------------------------------------------------------------------

# DUMP_HEADER64.BugCheckCode of a dump taken while no bugcheck is recorded (spec section 10: QDMP
# uses LIVE_SYSTEM_DUMP for a non-crash snapshot).
LIVE_SYSTEM_DUMP: Final = 0x161
# ProductType when KUSER_SHARED_DATA cannot be read: NtProductWinNt (VER_NT_WORKSTATION).
DEFAULT_PRODUCT_TYPE: Final = 1
DEFAULT_SUITE_MASK: Final = 0
EXCEPTION_RECORD64_SIZE: Final = 0x98  # DUMP_HEADER64.Exception (spec section 10)
# What ReadControlSpace(2) must return for CR3: KSPECIAL_REGISTERS up to Cr3's end.
_CR3_READ_SIZE: Final = KSpecialRegister.CR3 + 8


class KuserSharedDataOffset(IntEnum):
    """KUSER_SHARED_DATA fields a dump header uses (x64, at KUSER_SHARED_DATA_ADDRESS)."""

    INTERRUPT_TIME = 0x008  # InterruptTime (KSYSTEM_TIME): 100 ns units since boot
    SYSTEM_TIME = 0x014  # SystemTime (KSYSTEM_TIME): a FILETIME
    NT_PRODUCT_TYPE = 0x264  # NtProductType (u32; spec section 9)
    SUITE_MASK = 0x2D0  # SuiteMask (u32; spec section 9)


_KUSER_READ_SIZE: Final = KuserSharedDataOffset.SUITE_MASK + 4


class KdbgPrintOffset(IntEnum):
    """KDDEBUGGER_DATA64 fields of the DbgPrint buffer next to KdPrintCircularBuffer (0x1E0).
    The order is RX-WDX's, between 0x1E0 and NtBuildLab (0x208); spec section 9's table does not
    list these three: UNCONFIRMED."""

    CIRCULAR_BUFFER = 0x1E0  # KdPrintCircularBuffer (the buffer's address)
    CIRCULAR_BUFFER_END = 0x1E8  # KdPrintCircularBufferEnd (one past its last byte)
    WRITE_POINTER = 0x1F0  # KdPrintWritePointer (address of the variable)
    ROLLOVER_COUNT = 0x1F8  # KdPrintRolloverCount (address of the variable)


# KPCR.Prcb: the KPRCB is embedded in the KPCR at this offset on x64 (Windows 7 to 11 public
# symbols; fake_nt.c asserts it), so KiProcessorBlock[n] - 0x180 is processor n's KPCR.
KPCR_PRCB_OFFSET: Final = 0x180

# Stand-ins when KDBG is too short to give a size (fields it lacks read as 0): one page holds
# what debuggers read first (KPRCB.CurrentThread..., KTHREAD's stack fields, EPROCESS's
# DirectoryTableBase). UNCONFIRMED that one page is enough for every build's extensions.
DEFAULT_STRUCTURE_SIZE: Final = PAGE_SIZE

# A stack top more than this far above RSP is not RSP's stack (RSP is on a DPC or interrupt
# stack): x64 kernel stacks are 24 KiB, large (GUI) stacks 72 KiB, so 256 KiB is generous.
_PLAUSIBLE_STACK_BYTES: Final = 256 << 10
# Any range read from target data is clipped to this (the largest PE image the simulator and
# sane kernels have); a corrupt size must not turn into a walk over gigabytes.
MAX_RANGE_BYTES: Final = 256 << 20
# A debug directory has a handful of entries; more means the header is corrupt.
_MAX_DEBUG_ENTRIES: Final = 16

# PE/COFF (Microsoft "PE Format"): only what a header walk needs.
_DOS_SIGNATURE: Final = b"MZ"  # IMAGE_DOS_SIGNATURE
_NT_SIGNATURE: Final = b"PE\0\0"  # IMAGE_NT_SIGNATURE
_E_LFANEW: Final = 0x3C  # IMAGE_DOS_HEADER.e_lfanew
_FILE_HEADER_SIZE: Final = 20  # sizeof(IMAGE_FILE_HEADER)
_OPTIONAL_MAGIC_PE32_PLUS: Final = 0x20B  # IMAGE_NT_OPTIONAL_HDR64_MAGIC
_OPTIONAL_SIZE_OF_IMAGE: Final = 56  # IMAGE_OPTIONAL_HEADER64.SizeOfImage (SizeOfHeaders next)
_OPTIONAL_DIRECTORY_COUNT: Final = 108  # IMAGE_OPTIONAL_HEADER64.NumberOfRvaAndSizes
_OPTIONAL_DIRECTORIES: Final = 112  # IMAGE_OPTIONAL_HEADER64.DataDirectory
_DIRECTORY_EXCEPTION: Final = 3  # IMAGE_DIRECTORY_ENTRY_EXCEPTION (.pdata)
_DIRECTORY_DEBUG: Final = 6  # IMAGE_DIRECTORY_ENTRY_DEBUG
_SECTION_HEADER_SIZE: Final = 40  # sizeof(IMAGE_SECTION_HEADER)
_MAX_SECTIONS: Final = 96  # the PE format's limit
_SCN_MEM_DISCARDABLE: Final = 0x02000000  # IMAGE_SCN_MEM_DISCARDABLE: unmapped after boot
_DEBUG_DIRECTORY_SIZE: Final = 28  # sizeof(IMAGE_DEBUG_DIRECTORY)
_DEBUG_TYPE_CODEVIEW: Final = 2  # IMAGE_DEBUG_TYPE_CODEVIEW: the PDB name, GUID and age
_KERNEL_HALF: Final = 0xFFFF800000000000  # first canonical kernel address


# --- Dump facts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DumpFacts:
    """What DUMP_HEADER64 needs from a stopped target (spec sections 9 and 10).

    Fields marked "essential" are always real; the others fall back to the default named in
    their comment when the target cannot give them, and are then listed in ``defaulted``.
    """

    directory_table_base: int  # essential: KSPECIAL_REGISTERS.Cr3, low 12 bits (PCID) masked
    pfn_database: int  # *(KDBG.MmPfnDatabase), the PFN array itself; default 0
    ps_loaded_module_list: int  # address of the list head (KDBG, else GetVersion)
    ps_active_process_head: int  # address of the list head (KDBG +0x50); default 0
    kd_debugger_data_block: int  # essential: KDBG's virtual address
    kern_base: int  # KDBG.KernBase (GetVersion.KernBase if KDBG has none)
    machine_image_type: int  # GetVersion.MachineType; default 0x8664 (AMD64)
    number_processors: int  # from the stop; default 1
    processor: int  # the stopped processor, whose CONTEXT `context` is
    physical_memory: PhysicalMemoryDescriptor  # essential: MmPhysicalMemoryBlock's runs
    context: bytes  # GetContext of `processor` (0x4D0 bytes on x64); default b"" (writer: zeros)
    bugcheck: BugcheckInfo | None  # KiBugCheckData, else what the stop analysis found; None
    exception: ExceptionRecord | None  # the stop's exception; None for other stops
    product_type: int  # KUSER_SHARED_DATA.NtProductType; default DEFAULT_PRODUCT_TYPE
    suite_mask: int  # KUSER_SHARED_DATA.SuiteMask; default 0
    system_time: int  # KUSER_SHARED_DATA.SystemTime, a FILETIME; default 0
    interrupt_time: int  # KUSER_SHARED_DATA.InterruptTime (100 ns since boot); default 0
    major_version: int  # GetVersion.MajorVersion (0xF free build, 0xC checked)
    minor_version: int  # GetVersion.MinorVersion: the build number
    kd_secondary_version: int  # GetVersion.KdSecondaryVersion
    defaulted: tuple[str, ...] = ()  # names of the fields that hold a default

    @property
    def bugcheck_code(self) -> int:
        """DUMP_HEADER64.BugCheckCode: the bugcheck's, else LIVE_SYSTEM_DUMP (0x161)."""
        return self.bugcheck.code if self.bugcheck is not None else LIVE_SYSTEM_DUMP

    @property
    def bugcheck_parameters(self) -> tuple[int, int, int, int]:
        """DUMP_HEADER64.BugCheckParameter1..4; zeros without a bugcheck."""
        return self.bugcheck.parameters if self.bugcheck is not None else (0, 0, 0, 0)

    @property
    def system_up_time(self) -> int:
        """DUMP_HEADER64.SystemUpTime: InterruptTime, time since boot in 100 ns units (which
        clock Windows' own writer uses is UNCONFIRMED)."""
        return self.interrupt_time

    @property
    def exception_record(self) -> bytes:
        """DUMP_HEADER64.Exception: the stop's EXCEPTION_RECORD64 (0x98 bytes), zeros when the
        stop was not an exception."""
        if self.exception is None:
            return bytes(EXCEPTION_RECORD64_SIZE)
        # DBGKM_EXCEPTION64 is the EXCEPTION_RECORD64 followed by FirstChance.
        return self.exception.to_union()[:EXCEPTION_RECORD64_SIZE]


def dump_facts(
    requests: Requests,
    facts: TargetFacts,
    stop: StateChangeMessage,
    *,
    known_bugcheck: BugcheckInfo | None = None,
) -> Ask[DumpFacts]:
    """Read the dump header's facts from the target stopped in ``stop``.

    ``known_bugcheck`` is what the stop analysis reported (StateChanged.bugcheck); it is used
    when KiBugCheckData holds no code. Fails with RequestError when KDBG, CR3 or the physical
    memory runs cannot be read (rule 1).
    """
    defaulted: list[str] = []
    version = yield from cached_version(requests, facts)
    kdbg = yield from _essential_kdbg(requests, facts)
    cr3 = yield from _kernel_cr3(requests)
    physical_memory = yield from _physical_memory(requests, kdbg)

    pfn_database = 0
    if kdbg.mm_pfn_database:
        raw = yield from _read_optional(requests, kdbg.mm_pfn_database, 8)
        if raw is not None:
            (pfn_database,) = struct.unpack("<Q", raw)
    if not pfn_database:
        defaulted.append("pfn_database")
    if not kdbg.ps_active_process_head:
        defaulted.append("ps_active_process_head")

    try:
        context = yield from get_context(requests)
    except RequestError as error:
        if error.status is None:
            raise  # rule 2
        context = b""
        defaulted.append("context")

    bugcheck = yield from bugcheck_data(requests, kdbg, known_bugcheck)
    if bugcheck is None:
        defaulted.append("bugcheck")

    kuser = yield from read(
        requests, ManipulateApi.READ_VIRTUAL_MEMORY, KUSER_SHARED_DATA_ADDRESS, _KUSER_READ_SIZE
    )
    product_type = _u32_at(kuser.data, KuserSharedDataOffset.NT_PRODUCT_TYPE)
    suite_mask = _u32_at(kuser.data, KuserSharedDataOffset.SUITE_MASK)
    system_time = _ksystem_time_at(kuser.data, KuserSharedDataOffset.SYSTEM_TIME)
    interrupt_time = _ksystem_time_at(kuser.data, KuserSharedDataOffset.INTERRUPT_TIME)
    for name, value in (
        ("product_type", product_type),
        ("suite_mask", suite_mask),
        ("system_time", system_time),
        ("interrupt_time", interrupt_time),
    ):
        if value is None:
            defaulted.append(name)

    machine_type = version.machine_type
    if not machine_type:
        machine_type = MachineType.AMD64
        defaulted.append("machine_image_type")
    number_processors = stop.number_processors
    if number_processors < 1:
        number_processors = 1
        defaulted.append("number_processors")
    body = stop.body
    return DumpFacts(
        directory_table_base=cr3,
        pfn_database=pfn_database,
        ps_loaded_module_list=kdbg.ps_loaded_module_list or version.ps_loaded_module_list,
        ps_active_process_head=kdbg.ps_active_process_head,
        kd_debugger_data_block=kdbg.address,
        kern_base=kdbg.kern_base or version.kern_base,
        machine_image_type=machine_type,
        number_processors=number_processors,
        processor=requests.processor,
        physical_memory=physical_memory,
        context=context,
        bugcheck=bugcheck,
        exception=body if isinstance(body, ExceptionRecord) else None,
        product_type=DEFAULT_PRODUCT_TYPE if product_type is None else product_type,
        suite_mask=DEFAULT_SUITE_MASK if suite_mask is None else suite_mask,
        system_time=system_time or 0,
        interrupt_time=interrupt_time or 0,
        major_version=version.major_version,
        minor_version=version.minor_version,
        kd_secondary_version=version.kd_secondary_version,
        defaulted=tuple(defaulted),
    )


def _essential_kdbg(requests: Requests, facts: TargetFacts) -> Ask[DebuggerData]:
    try:
        kdbg = yield from debugger_data(requests, facts)
    except KdbgError as exc:
        raise RequestError(f"dump: KDDEBUGGER_DATA64 is unreadable: {exc}") from exc
    if kdbg is None:
        raise RequestError(
            "dump: the target has no KDDEBUGGER_DATA64 (GetVersion.DebuggerDataList is 0, as "
            "under a boot debugger before the kernel runs)"
        )
    return kdbg


def _kernel_cr3(requests: Requests) -> Ask[int]:
    """KSPECIAL_REGISTERS.Cr3 of the stopped processor: the kernel's page-table root."""
    result = yield from read(
        requests,
        ManipulateApi.READ_CONTROL_SPACE,
        Amd64ControlSpace.KSPECIAL_REGISTERS,
        _CR3_READ_SIZE,
    )
    if not result.complete:
        raise RequestError(
            f"dump: cannot read CR3: ReadControlSpace(2) returned {len(result.data)} of "
            f"{_CR3_READ_SIZE} bytes (status {result.status:#010x})",
            result.status,
        )
    cr3 = pml4_address(read_register(result.data, KSpecialRegister.CR3))
    if not cr3:
        raise RequestError("dump: KSPECIAL_REGISTERS.Cr3 is 0: no page tables to dump")
    return cr3


def _physical_memory(requests: Requests, kdbg: DebuggerData) -> Ask[PhysicalMemoryDescriptor]:
    """KDBG.MmPhysicalMemoryBlock -> PHYSICAL_MEMORY_DESCRIPTOR (spec section 9)."""
    if not kdbg.mm_physical_memory_block:
        raise RequestError("dump: KDBG.MmPhysicalMemoryBlock is 0: the RAM runs are unknown")
    raw = yield from _read_required(
        requests, kdbg.mm_physical_memory_block, 8, "MmPhysicalMemoryBlock"
    )
    (address,) = struct.unpack("<Q", raw)
    if not address:
        raise RequestError("dump: MmPhysicalMemoryBlock is NULL: the RAM runs are unknown")
    what = "PHYSICAL_MEMORY_DESCRIPTOR"
    header = yield from _read_required(
        requests, address, PHYSICAL_MEMORY_DESCRIPTOR_HEADER_SIZE, what
    )
    try:
        count = pull_physical_memory_run_count(header)
        size = PHYSICAL_MEMORY_DESCRIPTOR_HEADER_SIZE + PHYSICAL_MEMORY_RUN_SIZE * count
        raw = yield from _read_required(requests, address, size, what)
        descriptor = pull_physical_memory_descriptor(raw)
    except ValueError as exc:
        raise RequestError(f"dump: {what} at {address:#x}: {exc}") from exc
    if not descriptor.runs:
        raise RequestError(f"dump: {what} at {address:#x} lists no RAM runs")
    return descriptor


def _read_required(requests: Requests, address: int, size: int, what: str) -> Ask[bytes]:
    result = yield from read(requests, ManipulateApi.READ_VIRTUAL_MEMORY, address, size)
    if not result.complete:
        raise RequestError(
            f"dump: cannot read {what} at {address:#x}: got {len(result.data)} of {size} bytes",
            result.status,
        )
    return result.data


def _read_optional(requests: Requests, address: int, size: int) -> Ask[bytes | None]:
    """Virtual bytes, or None if the target could not read all of them (rule 2: a failed
    link still raises)."""
    result = yield from read(requests, ManipulateApi.READ_VIRTUAL_MEMORY, address, size)
    return result.data if result.complete else None


def _read_pointer(requests: Requests, address: int) -> Ask[int]:
    """A u64 at ``address``; 0 when it cannot be read."""
    raw = yield from _read_optional(requests, address, 8)
    return struct.unpack("<Q", raw)[0] if raw is not None else 0


def _u32_at(raw: bytes, offset: int) -> int | None:
    if offset + 4 > len(raw):
        return None
    value: int = struct.unpack_from("<I", raw, offset)[0]
    return value


def _ksystem_time_at(raw: bytes, offset: int) -> int | None:
    """A KSYSTEM_TIME (LowPart, High1Time, High2Time). On x64 LowPart and High1Time are one
    atomic u64, which is how KeQueryInterruptTime reads it; High2Time only serves 32-bit
    readers."""
    if offset + 8 > len(raw):
        return None
    value: int = struct.unpack_from("<Q", raw, offset)[0]
    return value


def _kdbg_u16(kdbg: DebuggerData, offset: int) -> int:
    """A u16 field of KDBG, 0 when the block is too short to hold it."""
    if offset + 2 > len(kdbg.raw):
        return 0
    value: int = struct.unpack_from("<H", kdbg.raw, offset)[0]
    return value


# --- Translation ----------------------------------------------------------------------------------


class RamMap:
    """Which page frame numbers are RAM, from the physical memory runs."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, descriptor: PhysicalMemoryDescriptor) -> None:
        runs = sorted(descriptor.runs, key=lambda run: run.base_page)
        self._starts = [run.base_page for run in runs]
        self._ends = [run.base_page + run.page_count for run in runs]

    def __contains__(self, pfn: object) -> bool:
        if not isinstance(pfn, int):
            return False
        index = bisect.bisect_right(self._starts, pfn) - 1
        return index >= 0 and pfn < self._ends[index]


class PageTableCache:
    """The page-table pages read during one stop, whole, by page frame number.

    Tables are read a page at a time with ReadPhysicalMemory: a dump includes every table page
    it walks anyway, so the writer may take its bytes from `pages` instead of reading them
    again. Make a new cache for each stop: a running target changes its tables. With ``ram``,
    a table outside the RAM runs (a corrupt entry) reads as not present instead of being read.
    """

    __slots__ = ("_pages", "_ram", "reads")

    def __init__(self, ram: RamMap | None = None) -> None:
        self._pages: dict[int, bytes] = {}
        self._ram = ram
        self.reads = 0  # table pages read from the target

    @property
    def pages(self) -> Mapping[int, bytes]:
        """Page frame number -> the table page's bytes as read (short if the read was)."""
        return MappingProxyType(self._pages)

    def entry(self, requests: Requests, table: int, index: int) -> Ask[int]:
        """Entry ``index`` of the table at physical address ``table``; 0 if unreadable."""
        pfn = pfn_of(table)
        page = self._pages.get(pfn)
        if page is None:
            if self._ram is not None and pfn not in self._ram:
                page = b""
            else:
                result = yield from read(
                    requests, ManipulateApi.READ_PHYSICAL_MEMORY, pfn << PAGE_SHIFT, PAGE_SIZE
                )
                page = result.data
                self.reads += 1
            self._pages[pfn] = page
        offset = index * PTE_SIZE
        if offset + PTE_SIZE > len(page):
            return 0
        value: int = struct.unpack_from("<Q", page, offset)[0]
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualTranslation:
    """Where a virtual address lands in the target's page tables."""

    va: int
    physical_address: int | None  # None: not mapped (or not canonical)
    page_size: int  # 4 KiB, 2 MiB or 1 GiB; 0 when not mapped
    table_pfns: tuple[int, ...]  # PML4, PDPT, PD, PT pages, as far as the walk went

    @property
    def pfn(self) -> int | None:
        return None if self.physical_address is None else pfn_of(self.physical_address)


def translate(
    requests: Requests, cache: PageTableCache, cr3: int, va: int
) -> Ask[VirtualTranslation]:
    """Translate ``va`` through the tables rooted at ``cr3`` with physical reads only."""
    if not is_canonical(va):
        return VirtualTranslation(va=va, physical_address=None, page_size=0, table_pfns=())
    table = pml4_address(cr3)
    touched: list[int] = []
    for level in WALK_ORDER:
        touched.append(pfn_of(table))
        entry = yield from cache.entry(requests, table, table_index(va, level))
        step = decode_entry(entry, level, va)
        if step is None:
            break
        if isinstance(step, MappedPage):
            return VirtualTranslation(
                va=va,
                physical_address=step.physical_address,
                page_size=step.page_size,
                table_pfns=tuple(touched),
            )
        table = step.table
    return VirtualTranslation(va=va, physical_address=None, page_size=0, table_pfns=tuple(touched))


# --- Triage selection -----------------------------------------------------------------------------


class TriageTier(Enum):
    """Groups of pages a triage dump may hold; `TriageConfig.tiers` orders them by priority."""

    # Page tables' root, KDBG, KiBugCheckData, SavedContext, KUSER_SHARED_DATA, the list heads,
    # KiProcessorBlock and, per processor (the stopped one first): KPCR/KPRCB, current thread,
    # kernel stack from RSP up, code page at RIP; then the pages bugcheck parameters point into.
    CORE = "core"
    # The kernel's and `TriageConfig.detailed_modules`' full headers, debug directory and
    # CodeView record (what finds their PDBs).
    KERNEL_IMAGES = "kernel images"
    # Every KLDR_DATA_TABLE_ENTRY, its two names, and each module's first (header) page.
    MODULE_LIST = "module list"
    # KdPrintCircularBuffer and its write pointer and rollover count.
    DBGPRINT = "dbgprint buffer"
    # The EPROCESS of each processor's current thread (KTHREAD.ApcState.Process).
    PROCESSES = "processes"
    # Debug directory and CodeView record of every other module.
    MODULE_DEBUG_INFO = "module debug info"
    # The exception directory (.pdata) of the detailed images: unwinding without image files.
    KERNEL_UNWIND = "kernel unwind data"
    # Every non-discardable section of the detailed images (.text, .rdata, .data ...).
    KERNEL_SECTIONS = "kernel sections"


DEFAULT_TIERS: Final = tuple(TriageTier)
# 1024 pages = 4 MiB: about 6.5 minutes at 115200 baud (~10.5 KB/s, spec section 11), seconds
# over KDNET. Enough for every tier but the kernel's sections on a real machine.
DEFAULT_TRIAGE_MAX_PAGES: Final = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class TriageConfig:
    """How much a triage dump may hold and what comes first."""

    max_pages: int | None = DEFAULT_TRIAGE_MAX_PAGES  # None: no budget
    tiers: tuple[TriageTier, ...] = DEFAULT_TIERS  # in priority order; absent tiers are skipped
    # Images treated like the kernel (KERNEL_IMAGES, KERNEL_UNWIND, KERNEL_SECTIONS), matched
    # case-insensitively against BaseDllName; the kernel itself (at KernBase) always is.
    detailed_modules: tuple[str, ...] = ("hal.dll",)
    # A stack is read from RSP's page up to the thread's InitialStack (KDBG gives its offset),
    # at most max_stack_pages; if InitialStack is unknown or is not above RSP within 256 KiB
    # (RSP on a DPC or interrupt stack), fallback_stack_pages from RSP's page instead.
    max_stack_pages: int = 24
    fallback_stack_pages: int = 6  # KERNEL_STACK_SIZE (24 KiB) on x64
    max_dbgprint_pages: int = 64

    def __post_init__(self) -> None:
        if self.max_pages is not None and self.max_pages < 1:
            raise KdUsageError(f"max_pages must be at least 1 (or None), not {self.max_pages}")
        if len(set(self.tiers)) != len(self.tiers):
            raise KdUsageError("a tier is listed twice")
        for name in ("max_stack_pages", "fallback_stack_pages", "max_dbgprint_pages"):
            if getattr(self, name) < 1:
                raise KdUsageError(f"{name} must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class TriagePage:
    pfn: int
    reason: str  # for progress display, e.g. "processor 0 stack", "PT for KDBG"
    tier: TriageTier


@dataclass(frozen=True, slots=True, kw_only=True)
class TriageSelection:
    """The pages of a triage dump, in the order to read them (rule 4), and what was left out."""

    pages: tuple[TriagePage, ...]
    max_pages: int | None
    budget_exhausted: bool  # the budget cut the list, in the tier before tiers_not_reached
    tiers_not_reached: tuple[TriageTier, ...]  # configured tiers after the cut
    page_table_pages: int  # of `pages`, those that are page tables
    unmapped_pages: int  # virtual pages asked for that the tables do not map
    outside_ram_pages: int  # pages mapped to frames outside the RAM runs (never read)
    shared_pages: int  # virtual pages whose frame an earlier item had already selected
    pages_by_tier: tuple[tuple[TriageTier, int], ...]
    notes: tuple[str, ...]  # what the target could not give, tier by tier

    @property
    def pfns(self) -> tuple[int, ...]:
        return tuple(page.pfn for page in self.pages)


def pages_for_bytes(max_bytes: int) -> int:
    """The page budget of "triage up to ``max_bytes``" (whole pages, rounded down):
    ``TriageConfig(max_pages=pages_for_bytes(8 << 20))``."""
    pages = max_bytes // PAGE_SIZE
    if pages < 1:
        raise KdUsageError(f"a triage dump needs at least one page, not {max_bytes} bytes")
    return pages


class _BudgetExhausted(Exception):
    """The next page would not fit the budget; carried up to `triage_pages`."""


@dataclass(slots=True)
class _Processor:
    number: int
    prcb: int  # 0: unknown
    thread: int  # 0: unknown
    rsp: int | None
    rip: int | None
    initial_stack: int  # 0: unknown


@dataclass(frozen=True, slots=True)
class _Module:
    entry: int
    base: int
    size: int
    name: str
    names: tuple[tuple[int, int], ...]  # (buffer, bytes) of BaseDllName and FullDllName


@dataclass(frozen=True, slots=True)
class _Section:
    name: str
    rva: int
    size: int
    characteristics: int


@dataclass(frozen=True, slots=True)
class _ImageLayout:
    size_of_headers: int
    size_of_image: int
    sections: tuple[_Section, ...]
    exception_directory: tuple[int, int]  # (RVA, size); size 0: none
    debug_directory: tuple[int, int]


def triage_pages(
    requests: Requests,
    facts: TargetFacts,
    dump: DumpFacts,
    config: TriageConfig | None = None,
    cache: PageTableCache | None = None,
) -> Ask[TriageSelection]:
    """Choose the physical pages of a triage dump of the target stopped as ``dump`` says.

    Reads what it needs to find things (virtual reads of pointers and headers, physical reads
    of page tables through ``cache``), never the chosen pages themselves: the dump writer does.
    """
    kdbg = yield from _essential_kdbg(requests, facts)
    config = TriageConfig() if config is None else config
    if cache is None:
        cache = PageTableCache(RamMap(dump.physical_memory))
    state = _Triage(requests, kdbg, dump, config, cache)
    tiers = config.tiers
    not_reached: tuple[TriageTier, ...] = ()
    exhausted = False
    for index, tier in enumerate(tiers):
        try:
            yield from state.run(tier)
        except _BudgetExhausted:
            exhausted = True
            not_reached = tiers[index + 1 :]
            break
        except (KdDecodeError, KdbgError, struct.error) as exc:
            raise RequestError(
                f"triage: undecodable target data in tier {tier.value}: {exc}"
            ) from exc
    return state.selection(exhausted=exhausted, not_reached=not_reached)


class _Triage:
    """The selection being built, and what was learned on the way (shared by the tiers)."""

    def __init__(
        self,
        requests: Requests,
        kdbg: DebuggerData,
        dump: DumpFacts,
        config: TriageConfig,
        cache: PageTableCache,
    ) -> None:
        self.requests = requests
        self.kdbg = kdbg
        self.dump = dump
        self.config = config
        self.cache = cache
        self.ram = RamMap(dump.physical_memory)
        self.pages: list[TriagePage] = []
        self.selected: set[int] = set()
        self.notes: list[str] = []
        self.page_table_pages = 0
        self.unmapped_pages = 0
        self.outside_ram_pages = 0
        self.shared_pages = 0
        self._processors: list[_Processor] | None = None
        self._modules: list[_Module] | None = None
        self._layouts: dict[int, _ImageLayout | None] = {}
        self._handlers: dict[TriageTier, Callable[[], Ask[None]]] = {
            TriageTier.CORE: self._core,
            TriageTier.KERNEL_IMAGES: self._kernel_images,
            TriageTier.MODULE_LIST: self._module_list,
            TriageTier.DBGPRINT: self._dbgprint,
            TriageTier.PROCESSES: self._processes,
            TriageTier.MODULE_DEBUG_INFO: self._module_debug_info,
            TriageTier.KERNEL_UNWIND: self._kernel_unwind,
            TriageTier.KERNEL_SECTIONS: self._kernel_sections,
        }
        self._tier = TriageTier.CORE

    def run(self, tier: TriageTier) -> Ask[None]:
        self._tier = tier
        yield from self._handlers[tier]()

    def selection(self, *, exhausted: bool, not_reached: tuple[TriageTier, ...]) -> TriageSelection:
        counts = {tier: 0 for tier in self.config.tiers}
        for page in self.pages:
            counts[page.tier] += 1
        return TriageSelection(
            pages=tuple(self.pages),
            max_pages=self.config.max_pages,
            budget_exhausted=exhausted,
            tiers_not_reached=not_reached,
            page_table_pages=self.page_table_pages,
            unmapped_pages=self.unmapped_pages,
            outside_ram_pages=self.outside_ram_pages,
            shared_pages=self.shared_pages,
            pages_by_tier=tuple(counts.items()),
            notes=tuple(self.notes),
        )

    def note(self, text: str) -> None:
        self.notes.append(f"{self._tier.value}: {text}")

    # --- selecting pages --------------------------------------------------------------------------

    def _take(self, wanted: list[tuple[int, str]], tables: int) -> None:
        """Select ``wanted`` (the first ``tables`` of them page tables) all or none."""
        budget = self.config.max_pages
        if budget is not None and len(self.pages) + len(wanted) > budget:
            raise _BudgetExhausted
        for pfn, reason in wanted:
            self.selected.add(pfn)
            self.pages.append(TriagePage(pfn=pfn, reason=reason, tier=self._tier))
        self.page_table_pages += tables

    def add_table_root(self, pfn: int) -> None:
        """The PML4 page: first, since every other page needs it."""
        if pfn in self.selected:
            return
        if pfn not in self.ram:
            self.outside_ram_pages += 1
            return
        self._take([(pfn, "PML4 (DirectoryTableBase)")], tables=1)

    def add_range(self, va: int, size: int, reason: str) -> Ask[None]:
        """Every page of [va, va + size), each after the table pages that translate it."""
        if size <= 0:
            return
        if size > MAX_RANGE_BYTES:
            self.note(f"{reason}: {size:#x} bytes is implausible; only {MAX_RANGE_BYTES:#x} taken")
            size = MAX_RANGE_BYTES
        first = va & ~(PAGE_SIZE - 1)
        for page_va in range(first, va + size, PAGE_SIZE):
            translation = yield from translate(
                self.requests, self.cache, self.dump.directory_table_base, page_va
            )
            wanted: list[tuple[int, str]] = []
            # A self-mapped table is its own PDPT (and so on): a walk can meet a page twice.
            group: set[int] = set()
            for level, pfn in zip(WALK_ORDER, translation.table_pfns, strict=False):
                if pfn in self.selected or pfn in group:
                    continue
                if pfn not in self.ram:
                    self.outside_ram_pages += 1
                    continue
                group.add(pfn)
                wanted.append((pfn, f"{level.name} for {reason}"))
            tables = len(wanted)
            data = translation.pfn
            if data is None:
                self.unmapped_pages += 1
            elif data not in self.ram:
                self.outside_ram_pages += 1
            elif data in self.selected or data in group:
                self.shared_pages += 1
            else:
                wanted.append((data, reason))
            if wanted:
                self._take(wanted, tables)

    # --- what the tiers need to know --------------------------------------------------------------

    def processors(self) -> Ask[list[_Processor]]:
        """Each processor's KPRCB, current thread, RSP/RIP and stack top; the stopped one
        first."""
        if self._processors is not None:
            return self._processors
        requests, kdbg, dump = self.requests, self.kdbg, self.dump
        count = dump.number_processors
        prcbs = [0] * count
        if kdbg.ki_processor_block:
            raw = yield from _read_optional(requests, kdbg.ki_processor_block, 8 * count)
            if raw is not None:
                prcbs = list(struct.unpack(f"<{count}Q", raw))
            else:
                self.note("KiProcessorBlock is unreadable: no KPCR/KPRCB pages")
        else:
            self.note("KDBG.KiProcessorBlock is 0: no KPCR/KPRCB pages")
        current_thread = _kdbg_u16(kdbg, KdbgOffset.OFFSET_PRCB_CURRENT_THREAD)
        initial_stack = _kdbg_u16(kdbg, KdbgOffset.OFFSET_KTHREAD_INITIAL_STACK)
        kernel_stack = _kdbg_u16(kdbg, KdbgOffset.OFFSET_KTHREAD_KERNEL_STACK)
        order = [dump.processor, *(n for n in range(count) if n != dump.processor)]
        processors = []
        for number in order:
            prcb = prcbs[number] if number < count else 0
            thread = 0
            if prcb and current_thread:
                thread = yield from _read_pointer(requests, prcb + current_thread)
            if not thread:
                thread = yield from self._control_space_pointer(Amd64ControlSpace.KTHREAD, number)
            if number == dump.processor:
                context = dump.context
            else:
                context = yield from self._context_of(number)
            rsp = _register_or_none(context, Amd64Register.RSP)
            rip = _register_or_none(context, Amd64Register.RIP)
            top = 0
            if thread and initial_stack:
                top = yield from _read_pointer(requests, thread + initial_stack)
            if rsp is None and thread and kernel_stack:
                # No CONTEXT: the thread's saved stack pointer is the next best start.
                rsp = (yield from _read_pointer(requests, thread + kernel_stack)) or None
            if rsp is None:
                self.note(f"processor {number}: no CONTEXT and no saved RSP: no stack pages")
            processors.append(
                _Processor(
                    number=number,
                    prcb=prcb,
                    thread=thread,
                    rsp=rsp,
                    rip=rip,
                    initial_stack=top,
                )
            )
        self._processors = processors
        return processors

    def _context_of(self, number: int) -> Ask[bytes]:
        try:
            context = yield from get_context(self.requests, number)
        except RequestError as error:
            if error.status is None:
                raise  # rule 2
            return b""
        return context

    def _control_space_pointer(self, selector: int, number: int) -> Ask[int]:
        result = yield from read(
            self.requests, ManipulateApi.READ_CONTROL_SPACE, selector, 8, processor=number
        )
        return struct.unpack("<Q", result.data)[0] if result.complete else 0

    def modules(self) -> Ask[list[_Module]]:
        """PsLoadedModuleList in load order, with entry and name-buffer addresses."""
        if self._modules is not None:
            return self._modules
        modules: list[_Module] = []
        head = self.dump.ps_loaded_module_list
        link = 0
        if head:
            link = yield from _read_pointer(self.requests, head)
        seen: set[int] = set()
        while link and link != head:
            if len(modules) >= MAX_MODULES or link in seen:
                self.note(f"the module list does not come back to its head after {len(modules)}")
                break
            seen.add(link)
            raw = yield from _read_optional(self.requests, link, LDR_ENTRY_READ_SIZE)
            if raw is None:
                self.note(f"module entry at {link:#x} is unreadable: the list walk stops there")
                break
            entry = pull_module_entry(raw, address=link)
            full_length, _, full_buffer = struct.unpack_from("<HH4xQ", raw, LdrEntry.FULL_DLL_NAME)
            name_bytes = yield from _read_optional(
                self.requests, entry.name_buffer, entry.name_length
            )
            name = decode_module_name(name_bytes) if name_bytes else f"module@{entry.base:#x}"
            modules.append(
                _Module(
                    entry=link,
                    base=entry.base,
                    size=entry.size,
                    name=name,
                    names=(
                        (entry.name_buffer, entry.name_length),
                        (full_buffer, min(full_length, MAX_NAME_BYTES)),
                    ),
                )
            )
            link = entry.flink
        if not head:
            self.note("PsLoadedModuleList is unknown")
        self._modules = modules
        return modules

    def detailed_images(self) -> Ask[list[tuple[int, str]]]:
        """(base, name) of the kernel and of the configured detailed modules, in that order."""
        modules = yield from self.modules()
        kernel = self.dump.kern_base
        kernel_name = next((m.name for m in modules if m.base == kernel), "nt")
        images = [(kernel, kernel_name)] if kernel else []
        for wanted in self.config.detailed_modules:
            found = [m for m in modules if m.name.lower() == wanted.lower()]
            if not found:
                self.note(f"{wanted} is not in the module list")
            images += [(m.base, m.name) for m in found if m.base != kernel]
        return images

    def layout(self, base: int, name: str) -> Ask[_ImageLayout | None]:
        if base not in self._layouts:
            raw = yield from read(self.requests, ManipulateApi.READ_VIRTUAL_MEMORY, base, PAGE_SIZE)
            layout = _pull_image_layout(raw.data)
            if layout is None:
                self.note(f"{name}: no readable PE32+ header at {base:#x}")
            self._layouts[base] = layout
        return self._layouts[base]

    def debug_records(self, base: int, name: str, layout: _ImageLayout) -> Ask[None]:
        """The debug directory and the CodeView records it points at."""
        rva, size = layout.debug_directory
        if not size:
            self.note(f"{name}: no debug directory")
            return
        yield from self.add_range(base + rva, size, f"{name} debug directory")
        count = min(size // _DEBUG_DIRECTORY_SIZE, _MAX_DEBUG_ENTRIES)
        raw = yield from _read_optional(self.requests, base + rva, count * _DEBUG_DIRECTORY_SIZE)
        if raw is None:
            self.note(f"{name}: debug directory unreadable")
            return
        for index in range(count):
            kind, data_size, data_rva = struct.unpack_from(
                "<III", raw, index * _DEBUG_DIRECTORY_SIZE + 12
            )
            if kind == _DEBUG_TYPE_CODEVIEW and data_rva and data_size:
                yield from self.add_range(base + data_rva, data_size, f"{name} CodeView record")

    # --- tiers ---------------------------------------------------------------------------------

    def _core(self) -> Ask[None]:
        kdbg, dump = self.kdbg, self.dump
        self.add_table_root(pfn_of(dump.directory_table_base))
        yield from self.add_range(kdbg.address, kdbg.size, "KDBG")
        if kdbg.ki_bugcheck_data:
            yield from self.add_range(
                kdbg.ki_bugcheck_data, KI_BUGCHECK_DATA_SIZE, "KiBugCheckData"
            )
        else:
            self.note("KDBG.KiBugcheckData is 0")
        if kdbg.saved_context:
            yield from self.add_range(kdbg.saved_context, AMD64_CONTEXT_SIZE, "SavedContext")
        yield from self.add_range(KUSER_SHARED_DATA_ADDRESS, PAGE_SIZE, "KUSER_SHARED_DATA")
        for head, label in (
            (dump.ps_loaded_module_list, "PsLoadedModuleList"),
            (dump.ps_active_process_head, "PsActiveProcessHead"),
        ):
            if head:
                yield from self.add_range(head, 16, label)
        processors = yield from self.processors()
        if kdbg.ki_processor_block:
            yield from self.add_range(
                kdbg.ki_processor_block, 8 * dump.number_processors, "KiProcessorBlock"
            )
        prcb_size = _kdbg_u16(kdbg, KdbgOffset.SIZE_PRCB) or DEFAULT_STRUCTURE_SIZE
        thread_size = _kdbg_u16(kdbg, KdbgOffset.SIZE_ETHREAD) or DEFAULT_STRUCTURE_SIZE
        for processor in processors:
            label = f"processor {processor.number}"
            if processor.prcb:
                yield from self.add_range(
                    processor.prcb - KPCR_PRCB_OFFSET,
                    KPCR_PRCB_OFFSET + prcb_size,
                    f"{label} KPCR/KPRCB",
                )
            if processor.thread:
                yield from self.add_range(processor.thread, thread_size, f"{label} thread")
            else:
                self.note(f"{label}: current thread unknown")
            if processor.rsp is not None:
                start, size, how = self._stack_range(processor)
                yield from self.add_range(start, size, f"{label} stack{how}")
            if processor.rip is not None:
                yield from self.add_range(processor.rip, 1, f"{label} code at RIP")
        if dump.bugcheck is not None:
            for index, value in enumerate(dump.bugcheck.parameters, start=1):
                if value >= _KERNEL_HALF and is_canonical(value):
                    yield from self.add_range(value, 1, f"bugcheck parameter {index}")

    def _stack_range(self, processor: _Processor) -> tuple[int, int, str]:
        assert processor.rsp is not None
        start = processor.rsp & ~(PAGE_SIZE - 1)
        top = processor.initial_stack
        if top and 0 < top - processor.rsp <= _PLAUSIBLE_STACK_BYTES:
            size = min(top - start, self.config.max_stack_pages * PAGE_SIZE)
            return start, size, ""
        self.note(
            f"processor {processor.number}: InitialStack {top:#x} does not bound RSP "
            f"{processor.rsp:#x}; took {self.config.fallback_stack_pages} pages from RSP"
        )
        return start, self.config.fallback_stack_pages * PAGE_SIZE, " (from RSP)"

    def _kernel_images(self) -> Ask[None]:
        for base, name in (yield from self.detailed_images()):
            layout = yield from self.layout(base, name)
            if layout is None:
                yield from self.add_range(base, PAGE_SIZE, f"{name} header")
                continue
            yield from self.add_range(base, layout.size_of_headers, f"{name} headers")
            yield from self.debug_records(base, name, layout)

    def _module_list(self) -> Ask[None]:
        for module in (yield from self.modules()):
            yield from self.add_range(module.entry, LDR_ENTRY_SIZE, f"{module.name} module entry")
            for buffer, length in module.names:
                if buffer:
                    yield from self.add_range(buffer, length, f"{module.name} module name")
            yield from self.add_range(module.base, PAGE_SIZE, f"{module.name} header")

    def _dbgprint(self) -> Ask[None]:
        kdbg = self.kdbg
        buffer = kdbg.field_u64(KdbgPrintOffset.CIRCULAR_BUFFER)
        if not buffer:
            self.note("KDBG.KdPrintCircularBuffer is 0: no DbgPrint buffer")
            return
        end = kdbg.field_u64(KdbgPrintOffset.CIRCULAR_BUFFER_END)
        limit = self.config.max_dbgprint_pages * PAGE_SIZE
        if not buffer < end <= buffer + limit:
            self.note(f"KdPrintCircularBufferEnd {end:#x} is unusable; took {limit:#x} bytes")
            end = buffer + limit
        yield from self.add_range(buffer, end - buffer, "DbgPrint buffer")
        for offset, label in (
            (KdbgPrintOffset.WRITE_POINTER, "KdPrintWritePointer"),
            (KdbgPrintOffset.ROLLOVER_COUNT, "KdPrintRolloverCount"),
        ):
            address = kdbg.field_u64(offset)
            if address:
                yield from self.add_range(address, 8, label)

    def _processes(self) -> Ask[None]:
        offset = _kdbg_u16(self.kdbg, KdbgOffset.OFFSET_KTHREAD_APC_PROCESS)
        if not offset:
            self.note("KDBG.OffsetKThreadApcProcess is 0: processes unknown")
            return
        size = _kdbg_u16(self.kdbg, KdbgOffset.SIZE_EPROCESS) or DEFAULT_STRUCTURE_SIZE
        seen: set[int] = set()
        for processor in (yield from self.processors()):
            if not processor.thread:
                continue
            process = yield from _read_pointer(self.requests, processor.thread + offset)
            if process and process not in seen:
                seen.add(process)
                label = f"processor {processor.number} process"
                yield from self.add_range(process, size, label)

    def _module_debug_info(self) -> Ask[None]:
        detailed = {base for base, _ in (yield from self.detailed_images())}
        for module in (yield from self.modules()):
            if module.base in detailed:
                continue
            layout = yield from self.layout(module.base, module.name)
            if layout is not None:
                yield from self.debug_records(module.base, module.name, layout)

    def _kernel_unwind(self) -> Ask[None]:
        for base, name in (yield from self.detailed_images()):
            layout = yield from self.layout(base, name)
            if layout is None:
                continue
            rva, size = layout.exception_directory
            if size:
                yield from self.add_range(base + rva, size, f"{name} exception directory")
            else:
                self.note(f"{name}: no exception directory")

    def _kernel_sections(self) -> Ask[None]:
        for base, name in (yield from self.detailed_images()):
            layout = yield from self.layout(base, name)
            if layout is None:
                continue
            for section in layout.sections:
                if section.characteristics & _SCN_MEM_DISCARDABLE:
                    continue
                yield from self.add_range(
                    base + section.rva, section.size, f"{name} {section.name}"
                )


def _register_or_none(context: bytes, register: Amd64Register) -> int | None:
    if len(context) < register + 8:
        return None
    return read_register(context, register)


def _pull_image_layout(header: bytes) -> _ImageLayout | None:
    """Headers, sections and the two directories of a mapped PE32+ image; None if ``header``
    (its first bytes) is not one. Only the bytes given are trusted: a table that runs past
    them is cut."""
    if len(header) < _E_LFANEW + 4 or header[:2] != _DOS_SIGNATURE:
        return None
    (nt,) = struct.unpack_from("<I", header, _E_LFANEW)
    optional = nt + 4 + _FILE_HEADER_SIZE
    if optional + _OPTIONAL_DIRECTORIES > len(header) or header[nt : nt + 4] != _NT_SIGNATURE:
        return None
    (section_count,) = struct.unpack_from("<H", header, nt + 6)
    (optional_size,) = struct.unpack_from("<H", header, nt + 20)
    (magic,) = struct.unpack_from("<H", header, optional)
    if magic != _OPTIONAL_MAGIC_PE32_PLUS:
        return None
    size_of_image, size_of_headers = struct.unpack_from(
        "<II", header, optional + _OPTIONAL_SIZE_OF_IMAGE
    )
    if not 0 < size_of_headers <= min(size_of_image, MAX_RANGE_BYTES):
        size_of_headers = PAGE_SIZE
    (directory_count,) = struct.unpack_from("<I", header, optional + _OPTIONAL_DIRECTORY_COUNT)
    directory_count = min(directory_count, (optional_size - _OPTIONAL_DIRECTORIES) // 8)

    def directory(index: int) -> tuple[int, int]:
        offset = optional + _OPTIONAL_DIRECTORIES + 8 * index
        if index >= directory_count or offset + 8 > len(header):
            return 0, 0
        rva, size = struct.unpack_from("<II", header, offset)
        return (rva, size) if rva + size <= size_of_image else (0, 0)

    sections = []
    table = optional + optional_size
    for index in range(min(section_count, _MAX_SECTIONS)):
        offset = table + index * _SECTION_HEADER_SIZE
        if offset + _SECTION_HEADER_SIZE > len(header):
            break
        raw_name, virtual_size, rva, raw_size = struct.unpack_from("<8sIII", header, offset)
        (characteristics,) = struct.unpack_from("<I", header, offset + 36)
        size = min(virtual_size or raw_size, max(size_of_image - rva, 0))
        name = raw_name.rstrip(b"\0").decode("ascii", "replace") or f"section {index}"
        sections.append(_Section(name, rva, size, characteristics))
    return _ImageLayout(
        size_of_headers=size_of_headers,
        size_of_image=size_of_image,
        sections=tuple(sections),
        exception_directory=directory(_DIRECTORY_EXCEPTION),
        debug_directory=directory(_DIRECTORY_DEBUG),
    )
