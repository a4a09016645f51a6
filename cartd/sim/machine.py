"""A simulated x64 Windows machine: RAM, page tables and the kernel data a debugger reads.

Theory of operation
-------------------
`SimulatedMachine(MachineConfig(...))` builds, once, the memory image a KD host explores when it
attaches to a stopped Windows kernel, and then only changes it when told to (a host writes
memory, a script loads a driver or raises a bugcheck). It never runs code.

1. RAM is sparse `PhysicalMemory` with PC-like holes; every structure below lives in it and is
   reached through one 4-level page-table tree (`AddressSpace`, CR3 = ``cr3``), so virtual and
   physical reads of the same byte agree, as on real hardware.
2. The kernel image is either synthesised (a small PE32+ with int3 at DbgBreakPointWithStatus,
   KDBG and the kernel globals in its .data, exports naming them) or, with
   ``MachineConfig.kernel_image``, a real PE file loaded and relocated at the kernel base (the
   fake-nt image of shared/vectors, whose PDB lets an independent host attach). Structures the
   image does not hold (processes, threads, processor blocks, module entries of drivers, the
   physical memory descriptor ...) go into a bump-allocated "nonpaged pool".
3. KDDEBUGGER_DATA64 is linked from KdpDebuggerDataListHead (GetVersion.DebuggerDataList) and
   points at everything else, as spec section 9 describes; per-processor CONTEXT and
   KSPECIAL_REGISTERS are byte buffers outside memory, as the kernel keeps them in its trap frame
   and PRCB while the debugger runs.
4. Every choice is drawn from ``random.Random(seed)`` in a fixed order (layout first, then the
   page allocator and run-time streams from seeds drawn from it), so two machines with the same
   config are byte-identical and a different seed moves the kernel. Never reorder the draws.

The structure layouts are in `cartd.sim.kernel_layout`; those a host reads too (CONTEXT,
KSPECIAL_REGISTERS, KDBG, KLDR_DATA_TABLE_ENTRY) in `cartd.kd`.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cartd.kd.constants import KUSER_SHARED_DATA_ADDRESS, MachineType
from cartd.kd.context import (
    AMD64_CONTEXT_SIZE,
    CONTEXT_ALL,
    KSPECIAL_REGISTERS_SIZE,
    Amd64Register,
    KSpecialRegister,
    pack_register,
    read_register,
)
from cartd.kd.debugger_data import (
    KDBG_TYPICAL_SIZE,
    KdbgError,
    KdbgOffset,
    PhysicalMemoryDescriptor,
    pull_kdbg_header,
    push_debugger_data,
    push_physical_memory_descriptor,
)
from cartd.kd.modules import LDR_ENTRY_SIZE, LdrEntry
from cartd.sim.kernel_layout import (
    EFER_VALUE,
    EPROCESS_SIZE,
    ETHREAD_SIZE,
    FMASK_VALUE,
    KD_DEBUGGER_ENABLED_AND_PRESENT,
    KERNEL_STACK_SIZE,
    KPCR_SIZE,
    KPRCB_SIZE,
    KTHREAD_STATE_RUNNING,
    LDR_FLAGS_LOADED,
    MAX_PROCESSORS,
    NT_PRODUCT_WIN_NT,
    PAT_VALUE,
    PROCESSOR_ARCHITECTURE_AMD64,
    STAR_VALUE,
    SUITE_MASK_WORKSTATION,
    SYSTEM_PROCESS_ID,
    Eprocess,
    Ethread,
    Kpcr,
    Kprcb,
    Kthread,
    KuserSharedData,
    Msr,
    initialize_list_head,
    insert_tail_list,
    push_ksystem_time,
    push_unicode_string,
    read_unicode_string,
    remove_entry_list,
    walk_list,
)
from cartd.sim.memory import (
    HUGE_PAGE_SIZE,
    LARGE_PAGE_SIZE,
    PAGE_SIZE,
    AddressSpace,
    PageAllocator,
    PhysicalMemory,
    canonical,
    page_align_up,
    pc_ram_runs,
    pml4_index,
)
from cartd.sim.pe_image import (
    SECTION_DATA,
    SECTION_RDATA,
    SECTION_TEXT,
    SYNTHETIC_SIZE_OF_HEADERS,
    PeSection,
    build_export_directory,
    build_pe_headers,
    load_pe_file,
)

DEFAULT_BUILD_NUMBER = 22621  # Windows 11 22H2, the build fake-nt imitates
# A kernel base as Windows 10/11 picks them; derived bases fall in the same 32 GiB window at the
# start of PML4 slot 0x1F0, on 2 MiB boundaries (KASLR granularity for the kernel).
TYPICAL_KERNEL_BASE = 0xFFFFF8057A200000
KERNEL_REGION_START = 0xFFFFF80000000000
KERNEL_BASE_SLOTS = 0x4000
KERNEL_IMAGE_ALIGNMENT = 0x10000  # PE ImageBase granularity (64 KiB)
# The last PML4 slot stays free so that drivers placed after any kernel never wrap past 2^64.
_HIGHEST_KERNEL_SLOT_START = 0xFFFFFF8000000000

# The smallest machine leaves room for the kernel, drivers (~8 MiB), page tables and the PFN
# database; the largest keeps the PFN database (48 bytes a page) cheap to reserve.
MIN_MEMORY_SIZE = 64 << 20
MAX_MEMORY_SIZE = 256 << 30
DEFAULT_MEMORY_SIZE = 4 << 30

FREE_BUILD_TAG = 0xF0000000  # NtBuildNumber's top nibble: 0xF free (retail) build, 0xC checked
MM_HIGHEST_USER_ADDRESS = 0x00007FFFFFFEFFFF
MM_SYSTEM_RANGE_START = 0xFFFF800000000000
MM_USER_PROBE_ADDRESS = 0x00007FFFFFFF0000
MMPFN_SIZE = 0x30  # sizeof(MMPFN) on x64
BUGCHECK_DATA_WORDS = 5  # KiBugCheckData[5]: code, then four parameters (spec section 4.1)
FAKE_NT_EXPORT_TABLE = "FakeNtExports"
FAKE_NT_EXPORT_COUNT = 7

# Drivers every simulated machine has loaded at boot, after ntoskrnl.exe (name, path, size).
BOOT_DRIVERS: tuple[tuple[str, str, int], ...] = (
    ("hal.dll", "\\SystemRoot\\system32\\hal.dll", 0xA0000),
    ("kdcom.dll", "\\SystemRoot\\system32\\kdcom.dll", 0xD000),
    ("ACPI.sys", "\\SystemRoot\\System32\\drivers\\ACPI.sys", 0xD4000),
    ("disk.sys", "\\SystemRoot\\System32\\drivers\\disk.sys", 0x24000),
    ("Ntfs.sys", "\\SystemRoot\\System32\\Drivers\\Ntfs.sys", 0x2F9000),
    ("tcpip.sys", "\\SystemRoot\\System32\\drivers\\tcpip.sys", 0x30E000),
)
KERNEL_FULL_NAME = "\\SystemRoot\\system32\\ntoskrnl.exe"
KERNEL_BASE_NAME = "ntoskrnl.exe"

# NtBuildLab strings of public releases; other builds get a generic one.
_BUILD_LABS = {
    7601: "7601.24214.amd64fre.win7sp1_ldr_escrow.180801-1700",
    9600: "9600.19913.amd64fre.winblue_ltsb_escrow.201207-1700",
    10586: "10586.0.amd64fre.th2_release.151029-1700",
    14393: "14393.0.amd64fre.rs1_release.160715-1616",
    17763: "17763.1.amd64fre.rs5_release.180914-1434",
    19041: "19041.1.amd64fre.vb_release.191206-1406",
    22000: "22000.1.amd64fre.co_release.210604-1628",
    22621: "22621.1.amd64fre.ni_release.220506-1250",
    26100: "26100.1.amd64fre.ge_release.240331-1435",
}


class MachineConfigError(ValueError):
    """A `MachineConfig` value the simulator cannot build a machine from."""


class KernelImageError(ValueError):
    """A valid PE file that cannot serve as the kernel (missing exports, no KDBG ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineConfig:
    """What to simulate. Everything not stated here is derived from ``seed``."""

    seed: int = 0
    memory_size_bytes: int = DEFAULT_MEMORY_SIZE
    processors: int = 2
    kernel_base: int | None = None  # None: a seed-dependent 2 MiB-aligned base
    build_number: int = DEFAULT_BUILD_NUMBER
    kernel_image: str | Path | None = None  # a PE32+ kernel to load instead of the built-in one

    def __post_init__(self) -> None:
        size = self.memory_size_bytes
        if size % (1 << 20) or not MIN_MEMORY_SIZE <= size <= MAX_MEMORY_SIZE:
            raise MachineConfigError(
                f"memory_size_bytes {size:#x} must be whole MiB between "
                f"{MIN_MEMORY_SIZE >> 20} MiB and {MAX_MEMORY_SIZE >> 30} GiB"
            )
        if not 1 <= self.processors <= MAX_PROCESSORS:
            raise MachineConfigError(
                f"processors must be 1..{MAX_PROCESSORS}, not {self.processors}"
            )
        if not 1 <= self.build_number <= 0xFFFF:
            raise MachineConfigError(f"build_number {self.build_number} is not a u16")
        base = self.kernel_base
        if base is not None and (
            not MM_SYSTEM_RANGE_START <= base < _HIGHEST_KERNEL_SLOT_START
            or pml4_index(base) == pml4_index(KUSER_SHARED_DATA_ADDRESS)
            or base % KERNEL_IMAGE_ALIGNMENT
        ):
            raise MachineConfigError(
                f"kernel_base {base:#x} must be a 64 KiB-aligned kernel-half address below "
                f"{_HIGHEST_KERNEL_SLOT_START:#x}, outside KUSER_SHARED_DATA's 512 GiB slot"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModule:
    """One PsLoadedModuleList entry, as read back from memory."""

    name: str  # BaseDllName, e.g. "ACPI.sys"
    path: str  # FullDllName, e.g. "\\SystemRoot\\System32\\drivers\\ACPI.sys"
    base: int  # DllBase
    size: int  # SizeOfImage
    entry_point: int
    checksum: int
    timestamp: int
    ldr_entry: int  # address of the KLDR_DATA_TABLE_ENTRY


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorState:
    """One processor: where its kernel structures are, and its registers.

    ``context`` (CONTEXT, 0x4D0 bytes) and ``special_registers`` (KSPECIAL_REGISTERS, 0xF0 bytes)
    are the live buffers GetContext/SetContext and Read/WriteControlSpace(2) serve: change them in
    place. ``msrs`` maps MSR numbers to values (use `SimulatedMachine.read_msr`/`write_msr`).
    """

    number: int
    kpcr: int  # KPCR address (GS base; ReadControlSpace 0)
    kprcb: int  # KPRCB address (KiProcessorBlock[number]; ReadControlSpace 1)
    thread: int  # current KTHREAD (ReadControlSpace 3; DBGKD_WAIT_STATE_CHANGE64.Thread)
    stack_base: int
    stack_limit: int
    context: bytearray
    special_registers: bytearray
    msrs: dict[int, int]

    def register(self, register: Amd64Register) -> int:
        """A CONTEXT field (u16/u32/u64 as the field is)."""
        return read_register(self.context, register)

    def set_register(self, register: Amd64Register, value: int) -> None:
        pack_register(self.context, register, value)

    @property
    def rip(self) -> int:
        return self.register(Amd64Register.RIP)

    @property
    def rsp(self) -> int:
        return self.register(Amd64Register.RSP)


def nt_version(build_number: int) -> tuple[int, int]:
    """(NtMajorVersion, NtMinorVersion) of a build: 10.0 from build 10240, 6.x before."""
    if build_number >= 10240:
        return 10, 0
    for first_build, version in ((9600, (6, 3)), (9200, (6, 2)), (7600, (6, 1)), (6000, (6, 0))):
        if build_number >= first_build:
            return version
    return 5, 2


def build_lab(build_number: int) -> str:
    return _BUILD_LABS.get(build_number, f"{build_number}.1.amd64fre.cartd_sim.000101-0000")


class _KernelPool:
    """Bump allocator for kernel structures that live outside the image ("nonpaged pool").

    Pages are mapped (fresh, NX) as allocations reach them; `allocate_pages` leaves an unmapped
    guard page in front, as Windows does below kernel stacks."""

    def __init__(self, space: AddressSpace, base: int) -> None:
        self._space = space
        self._next = base
        self._mapped_end = base
        self.base = base

    def allocate(self, size: int, alignment: int = 16) -> int:
        address = -(-self._next // alignment) * alignment
        end = address + size
        while self._mapped_end < end:
            self._space.map_new(self._mapped_end, PAGE_SIZE, executable=False)
            self._mapped_end += PAGE_SIZE
        self._next = end
        return address

    def allocate_pages(self, size: int) -> int:
        self._next = self._mapped_end = page_align_up(self._next) + PAGE_SIZE  # the guard page
        return self.allocate(page_align_up(size), PAGE_SIZE)


@dataclass(slots=True, kw_only=True)
class _Kernel:
    """Addresses a kernel builder found or made; the rest of the machine is built from these."""

    base: int
    size: int
    kdbg: int
    kdbg_size: int
    debugger_data_list: int
    ps_loaded_module_list: int
    ps_active_process_head: int
    breakpoint_with_status: int
    idle_address: int  # where idle processors' RIP points
    syscall64: int  # LSTAR
    syscall32: int  # CSTAR
    build_number: int
    nt_ldr_entry: int
    system_process: int = 0
    initial_pcr: int | None = None  # processor 0's KPCR when the image provides it
    initial_thread: int | None = None
    processor_block: int = 0
    ki_bugcheck_data: int = 0
    saved_context: int = 0
    mm_physical_memory_block: int = 0  # the pointer variable
    mm_pfn_database: int = 0  # the pointer variable
    physical_page_variables: tuple[int, int, int] | None = None  # lowest, highest, number
    nt_build_lab: int = 0
    bugcheck_callback_list_head: int = 0


# The built-in kernel's code: (symbol, offset in .text, bytes). The simulator never executes it;
# it is there so that what a host reads at a symbol (the int3 at BreakpointWithStatus first of
# all, spec section 4.2) is what real code would have.
_TEXT_SYMBOLS = {
    "DbgBreakPointWithStatus": 0x00,
    "DbgBreakPoint": 0x10,
    "KeBugCheckEx": 0x20,
    "KiIdleLoop": 0x40,
    "KiSystemCall64": 0x50,
    "KiSystemCall32": 0x60,
    "KiSystemStartup": 0x70,
}


def _rel32(at: int, target: int, length: int = 5) -> bytes:
    return struct.pack("<i", target - (at + length))


def _builtin_text() -> bytes:
    code = bytearray(b"\xcc" * PAGE_SIZE)  # int3 padding between functions, as MSVC leaves it
    code[0x00:0x02] = b"\xcc\xc3"  # DbgBreakPointWithStatus: int3; ret
    code[0x10:0x12] = b"\xcc\xc3"  # DbgBreakPoint: int3; ret
    # KeBugCheckEx: call DbgBreakPoint; jmp KeBugCheckEx (fake_nt.c's "for (;;) DbgBreakPoint()")
    code[0x20:0x27] = b"\xe8" + _rel32(0x20, 0x10) + b"\xeb\xf9"
    code[0x40:0x44] = b"\xf3\x90\xeb\xfc"  # KiIdleLoop: pause; jmp KiIdleLoop
    code[0x50:0x53] = b"\x0f\x01\xf8"  # KiSystemCall64: swapgs
    code[0x60:0x63] = b"\x0f\x01\xf8"  # KiSystemCall32: swapgs
    # KiSystemStartup: call DbgBreakPointWithStatus; jmp KiIdleLoop
    code[0x70:0x75] = b"\xe8" + _rel32(0x70, 0x00)
    code[0x75:0x7A] = b"\xe9" + _rel32(0x75, 0x40)
    return bytes(code)


# The built-in kernel's .data: (symbol, size, alignment), laid out in this order.
_DATA_SYMBOLS: tuple[tuple[str, int, int], ...] = (
    ("KdpDebuggerDataListHead", 0x10, 16),
    ("KdDebuggerDataBlock", KDBG_TYPICAL_SIZE, 16),
    ("PsLoadedModuleList", 0x10, 16),
    ("PsActiveProcessHead", 0x10, 16),
    ("KeBugCheckCallbackListHead", 0x10, 16),
    ("KiBugCheckData", 8 * BUGCHECK_DATA_WORDS, 8),
    ("MmPhysicalMemoryBlock", 8, 8),
    ("MmPfnDatabase", 8, 8),
    ("MmLowestPhysicalPage", 8, 8),
    ("MmHighestPhysicalPage", 8, 8),
    ("MmNumberOfPhysicalPages", 8, 8),
    ("PsInitialSystemProcess", 8, 8),
    ("NtBuildNumber", 4, 4),
    ("KeNumberProcessors", 4, 4),
    ("KiProcessorBlock", 8 * MAX_PROCESSORS, 16),
    ("NtLdrEntry", LDR_ENTRY_SIZE, 16),
    ("NtFullName", 2 * len(KERNEL_FULL_NAME) + 2, 2),
    ("NtBaseName", 2 * len(KERNEL_BASE_NAME) + 2, 2),
    # SavedContext: a real kernel saves the bugcheck CONTEXT in KeBugCheck's frame; ours is here.
    ("KiBugCheckSavedContext", AMD64_CONTEXT_SIZE, 16),
)
_BUILTIN_EXPORTS = (
    "DbgBreakPoint",
    "DbgBreakPointWithStatus",
    "KdDebuggerDataBlock",
    "KdpDebuggerDataListHead",
    "KeBugCheckEx",
    "KeNumberProcessors",
    "KiBugCheckData",
    "KiProcessorBlock",
    "MmPhysicalMemoryBlock",
    "NtBuildLab",
    "NtBuildNumber",
    "PsActiveProcessHead",
    "PsInitialSystemProcess",
    "PsLoadedModuleList",
)


class SimulatedMachine:
    """A stopped x64 Windows machine as a kernel debugger sees it.

    GetVersion facts: `kernel_base`, `ps_loaded_module_list`, `debugger_data_list`,
    `build_number`, `machine_type`, `processors` (the count); also `kdbg_address` and
    `breakpoint_with_status`. Memory: `space` (virtual, through `cr3`) and `physical`, or the
    `read_virtual`/`write_virtual`/`read_physical`/`write_physical` shorthands. Registers:
    `context(n)`, `special_registers(n)` (live byte buffers), `read_msr`/`write_msr`, and
    `processor_states[n]` for everything about processor n. Scripted changes:
    `add_module`/`remove_module`, `set_bugcheck`/`clear_bugcheck`, `reset_for_boot`.
    """

    machine_type = MachineType.AMD64

    config: MachineConfig
    physical: PhysicalMemory
    allocator: PageAllocator
    space: AddressSpace
    cr3: int  # physical address of the PML4, what KSPECIAL_REGISTERS.Cr3 holds
    pte_base: int  # virtual address of the page-table self-map (KDBG.PteBase)
    kernel_base: int
    kernel_size: int  # SizeOfImage of the kernel
    kdbg_address: int  # KdDebuggerDataBlock
    debugger_data_list: int  # KdpDebuggerDataListHead (GetVersion.DebuggerDataList)
    ps_loaded_module_list: int
    ps_active_process_head: int
    breakpoint_with_status: int  # the int3 a bugcheck / break-in reports (KDBG+0x20)
    build_number: int
    processors: int
    kuser_shared_data: int
    system_process: int  # the System EPROCESS
    ki_bugcheck_data: int  # KiBugCheckData[5]
    saved_context: int  # KDBG.SavedContext: a CONTEXT filled by set_bugcheck
    processor_states: tuple[ProcessorState, ...]

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self._boot()

    def reset_for_boot(self) -> None:
        """Rebuild the machine as it is right after boot: scripted modules, bugcheck data,
        register changes and memory writes are gone. The same config (seed) gives the same
        layout again, as a reboot with KASLR pinned would."""
        self._boot()

    def _boot(self) -> None:
        config = self.config
        rng = random.Random(config.seed)
        # The draw order below is part of the determinism contract (module docstring, rule 4).
        derived_base = KERNEL_REGION_START + rng.randrange(KERNEL_BASE_SLOTS) * LARGE_PAGE_SIZE
        kernel_base = config.kernel_base if config.kernel_base is not None else derived_base
        allocator_rng = random.Random(rng.getrandbits(64))
        self._runtime_rng = random.Random(rng.getrandbits(64))
        self._rng = rng

        self.physical = PhysicalMemory(pc_ram_runs(config.memory_size_bytes))
        self.allocator = PageAllocator(self.physical, rng=allocator_rng)
        self.space = AddressSpace(self.physical, self.allocator)
        self.cr3 = self.space.cr3

        # Regions get their own PML4 slots, chosen like Windows 10's randomised regions.
        taken = {
            pml4_index(kernel_base),
            pml4_index(kernel_base) + 1,  # room for drivers after a kernel at a slot's end
            pml4_index(KUSER_SHARED_DATA_ADDRESS),
        }
        free_slots = [index for index in range(0x100, 0x1FF) if index not in taken]
        pool_slot, pfn_slot, self_map_slot = rng.sample(free_slots, 3)
        self.pte_base = self.space.install_self_map(self_map_slot)
        pool_base = canonical(pool_slot << 39) + rng.randrange(256) * HUGE_PAGE_SIZE
        self._pool = _KernelPool(self.space, pool_base)
        self._pfn_database_base = canonical(pfn_slot << 39) + rng.randrange(256) * HUGE_PAGE_SIZE

        if config.kernel_image is None:
            kernel = self._build_builtin_kernel(kernel_base, config.build_number)
        else:
            kernel = self._load_kernel_image(Path(config.kernel_image), kernel_base)
        self._kernel = kernel
        self.kernel_base = kernel.base
        self.kernel_size = kernel.size
        self.kdbg_address = kernel.kdbg
        self.debugger_data_list = kernel.debugger_data_list
        self.ps_loaded_module_list = kernel.ps_loaded_module_list
        self.ps_active_process_head = kernel.ps_active_process_head
        self.breakpoint_with_status = kernel.breakpoint_with_status
        self.build_number = kernel.build_number
        self.processors = config.processors
        self.kuser_shared_data = KUSER_SHARED_DATA_ADDRESS

        self._build_kernel_data(kernel)
        self.system_process = kernel.system_process
        self.ki_bugcheck_data = kernel.ki_bugcheck_data
        self.saved_context = kernel.saved_context
        self.processor_states = self._build_processors(kernel)
        self._write_kuser_shared_data()
        self._write_kdbg(kernel)

        self._module_images: dict[int, int] = {}  # base -> size of driver images we mapped
        # Drivers start at the first 2 MiB boundary at least 2 MiB past the kernel image.
        kernel_end = kernel.base + kernel.size + LARGE_PAGE_SIZE
        self._next_module_base = -(-kernel_end // LARGE_PAGE_SIZE) * LARGE_PAGE_SIZE
        for name, path, size in BOOT_DRIVERS:
            self._load_module(name, path, size, rng)

    # --- memory access ---------------------------------------------------------------------------

    def read_virtual(self, va: int, size: int) -> bytes:
        """Bytes at ``va``, short at the first unmapped page."""
        return self.space.read_virtual(va, size)

    def write_virtual(self, va: int, data: bytes | bytearray) -> int:
        """Write through the page tables (ignoring write protection); returns bytes written."""
        return self.space.write_virtual(va, data)

    def read_physical(self, pa: int, size: int) -> bytes:
        """Bytes at ``pa``, short at the first address that is not RAM."""
        return self.physical.read(pa, size)

    def write_physical(self, pa: int, data: bytes | bytearray) -> int:
        return self.physical.write(pa, data)

    def translate(self, va: int) -> int | None:
        return self.space.translate(va)

    def physical_memory_descriptor(self) -> PhysicalMemoryDescriptor:
        return self.physical.descriptor()

    # --- registers -------------------------------------------------------------------------------

    def context(self, processor: int) -> bytearray:
        """Processor ``processor``'s CONTEXT (0x4D0 bytes), live: GetContext serves it,
        SetContext overwrites it in place."""
        return self.processor_states[processor].context

    def special_registers(self, processor: int) -> bytearray:
        """KSPECIAL_REGISTERS (0xF0 bytes), live: Read/WriteControlSpace(2)."""
        return self.processor_states[processor].special_registers

    def kpcr_address(self, processor: int) -> int:
        """ReadControlSpace(0)."""
        return self.processor_states[processor].kpcr

    def kprcb_address(self, processor: int) -> int:
        """ReadControlSpace(1)."""
        return self.processor_states[processor].kprcb

    def current_thread(self, processor: int) -> int:
        """ReadControlSpace(3), and DBGKD_WAIT_STATE_CHANGE64.Thread."""
        return self.processor_states[processor].thread

    def context_rip(self, processor: int) -> int:
        return self.processor_states[processor].rip

    def set_kernel_dr7(self, dr7: int) -> None:
        """What a successful Continue2 does: Dr7 into every processor's KernelDr7, Dr6 cleared
        (ReactOS KdpGetStateChange, spec section 5.2)."""
        for state in self.processor_states:
            pack_register(state.special_registers, KSpecialRegister.KERNEL_DR7, dr7)
            pack_register(state.special_registers, KSpecialRegister.KERNEL_DR6, 0)

    def read_msr(self, msr: int, processor: int = 0) -> int | None:
        """An MSR of one processor; None for an MSR the simulated CPU does not have (a real one
        raises #GP, which KD turns into an error status)."""
        return self.processor_states[processor].msrs.get(msr)

    def write_msr(self, msr: int, value: int, processor: int = 0) -> bool:
        """Set an existing MSR; False (nothing changed) for an unknown one."""
        msrs = self.processor_states[processor].msrs
        if msr not in msrs or not 0 <= value < 1 << 64:
            return False
        msrs[msr] = value
        return True

    # --- bugcheck --------------------------------------------------------------------------------

    def set_bugcheck(self, code: int, params: Sequence[int], *, processor: int = 0) -> None:
        """Fill KiBugCheckData (code, four parameters) and save ``processor``'s CONTEXT at
        KDBG.SavedContext, as KeBugCheckEx does before it breaks into the debugger."""
        if len(params) > 4:
            raise ValueError(f"a bugcheck has 4 parameters, got {len(params)}")
        words = [code & 0xFFFFFFFF, *params, *([0] * (4 - len(params)))]
        self.space.write_exact(
            self.ki_bugcheck_data, struct.pack("<5Q", *(word % (1 << 64) for word in words))
        )
        self.space.write_exact(self.saved_context, bytes(self.processor_states[processor].context))

    def clear_bugcheck(self) -> None:
        self.space.write_exact(self.ki_bugcheck_data, bytes(8 * BUGCHECK_DATA_WORDS))

    @property
    def bugcheck(self) -> tuple[int, tuple[int, int, int, int]] | None:
        """(code, parameters) from KiBugCheckData, or None while the code is 0."""
        raw = self.space.read_virtual(self.ki_bugcheck_data, 8 * BUGCHECK_DATA_WORDS)
        code, *params = struct.unpack("<5Q", raw)
        if code == 0:
            return None
        return code, (params[0], params[1], params[2], params[3])

    # --- modules ---------------------------------------------------------------------------------

    @property
    def modules(self) -> tuple[LoadedModule, ...]:
        """PsLoadedModuleList as it is in memory now, in load order."""
        space = self.space
        return tuple(
            self._read_module(entry) for entry in walk_list(space, self.ps_loaded_module_list)
        )

    def add_module(
        self, name: str, size: int | None = None, *, path: str | None = None
    ) -> LoadedModule:
        """Load a driver: map a synthetic image and append its entry to PsLoadedModuleList.
        The size defaults to a seed-determined value; the base follows the last driver."""
        if any(module.name.lower() == name.lower() for module in self.modules):
            raise ValueError(f"a module named {name!r} is already loaded")
        if size is None:
            size = self._runtime_rng.randrange(0x10, 0x100) * PAGE_SIZE
        if size < 2 * PAGE_SIZE:
            raise ValueError(f"module size {size:#x} leaves no room after the headers")
        path = path if path is not None else f"\\SystemRoot\\System32\\drivers\\{name}"
        return self._load_module(name, path, page_align_up(size), self._runtime_rng)

    def remove_module(self, module: str | int) -> LoadedModule | None:
        """Unload a module by base name (case-insensitive) or base address: unlink its entry and
        unmap its image. Returns what was unloaded, None if nothing matched. The kernel (first
        entry) cannot be removed."""
        loaded = self.modules
        for index, candidate in enumerate(loaded):
            matches = (
                candidate.name.lower() == module.lower()
                if isinstance(module, str)
                else candidate.base == module
            )
            if not matches:
                continue
            if index == 0:
                raise ValueError(f"{candidate.name} is the kernel and cannot be unloaded")
            remove_entry_list(self.space, candidate.ldr_entry + LdrEntry.IN_LOAD_ORDER_LINKS)
            size = self._module_images.pop(candidate.base, None)
            if size is not None:
                for pa, page_size in self.space.unmap(candidate.base, size):
                    self.allocator.free(pa, page_size)
            return candidate
        return None

    def _read_module(self, entry: int) -> LoadedModule:
        space = self.space
        raw = space.read_virtual(entry, LDR_ENTRY_SIZE)
        (dll_base, entry_point, size) = struct.unpack_from("<QQI", raw, LdrEntry.DLL_BASE)
        return LoadedModule(
            name=read_unicode_string(space, entry + LdrEntry.BASE_DLL_NAME),
            path=read_unicode_string(space, entry + LdrEntry.FULL_DLL_NAME),
            base=dll_base,
            size=size,
            entry_point=entry_point,
            checksum=struct.unpack_from("<I", raw, LdrEntry.CHECK_SUM)[0],
            timestamp=struct.unpack_from("<I", raw, LdrEntry.TIME_DATE_STAMP)[0],
            ldr_entry=entry,
        )

    def _load_module(self, name: str, path: str, size: int, rng: random.Random) -> LoadedModule:
        base = self._next_module_base
        # Drivers follow each other on 64 KiB boundaries with a few pages of slack between them.
        self._next_module_base = page_align_up(base + size + rng.randrange(1, 16) * PAGE_SIZE)
        self._next_module_base = -(-self._next_module_base // 0x10000) * 0x10000
        timestamp = rng.randrange(0x50000000, 0x68000000)
        checksum = rng.randrange(size, 2 * size)
        text = PeSection(
            name=".text",
            virtual_address=PAGE_SIZE,
            virtual_size=size - PAGE_SIZE,
            raw_offset=0,
            raw_size=0,
            characteristics=SECTION_TEXT,
        )
        headers = build_pe_headers(
            image_base=base,
            size_of_image=size,
            entry_point_rva=PAGE_SIZE,
            sections=[text],
            timestamp=timestamp,
            checksum=checksum,
        )
        # DriverEntry: xor eax, eax; ret (STATUS_SUCCESS).
        image = headers + bytes(PAGE_SIZE - len(headers)) + b"\x31\xc0\xc3"
        self._map_image(base, image.ljust(size, b"\0"), [text])
        self._module_images[base] = size
        entry = self._write_ldr_entry(
            dll_base=base,
            entry_point=base + PAGE_SIZE,
            size=size,
            full_name=self._pool_string(path),
            base_name=self._pool_string(name),
            checksum=checksum,
            timestamp=timestamp,
        )
        insert_tail_list(self.space, self.ps_loaded_module_list, entry)
        return self._read_module(entry)

    def _pool_string(self, text: str) -> tuple[int, int]:
        """A NUL-terminated UTF-16 copy of ``text`` in pool: (address, length in bytes)."""
        encoded = text.encode("utf-16-le")
        address = self._pool.allocate(len(encoded) + 2, 8)
        self.space.write_exact(address, encoded + b"\0\0")
        return address, len(encoded)

    def _write_ldr_entry(
        self,
        *,
        dll_base: int,
        entry_point: int,
        size: int,
        full_name: tuple[int, int],
        base_name: tuple[int, int],
        checksum: int,
        timestamp: int,
        entry: int | None = None,
    ) -> int:
        entry = self._pool.allocate(LDR_ENTRY_SIZE) if entry is None else entry
        raw = bytearray(LDR_ENTRY_SIZE)
        struct.pack_into("<QQI", raw, LdrEntry.DLL_BASE, dll_base, entry_point, size)
        raw[LdrEntry.FULL_DLL_NAME : LdrEntry.FULL_DLL_NAME + 16] = push_unicode_string(
            full_name[1], full_name[1] + 2, full_name[0]
        )
        raw[LdrEntry.BASE_DLL_NAME : LdrEntry.BASE_DLL_NAME + 16] = push_unicode_string(
            base_name[1], base_name[1] + 2, base_name[0]
        )
        struct.pack_into("<IH", raw, LdrEntry.FLAGS, LDR_FLAGS_LOADED, 1)
        struct.pack_into("<I", raw, LdrEntry.CHECK_SUM, checksum)
        struct.pack_into("<II", raw, LdrEntry.SIZE_OF_IMAGE_NOT_ROUNDED, size, timestamp)
        self.space.write_exact(entry, bytes(raw))
        return entry

    # --- building: kernel image ------------------------------------------------------------------

    def _map_image(self, base: int, image: bytes, sections: Sequence[PeSection]) -> None:
        """Map an image page by page with its sections' protections (headers and gaps read-only)
        and copy its bytes in."""
        for offset in range(0, len(image), PAGE_SIZE):
            section = next(
                (
                    s
                    for s in sections
                    if s.virtual_address <= offset < s.virtual_address + s.mapped_size
                ),
                None,
            )
            pa = self.allocator.allocate()
            self.space.map(
                base + offset,
                pa,
                PAGE_SIZE,
                writable=section is not None and section.writable,
                executable=section is not None and section.executable,
            )
            self.physical.write(pa, image[offset : offset + PAGE_SIZE])

    def _build_builtin_kernel(self, base: int, build_number: int) -> _Kernel:
        rng = self._rng
        text_rva = PAGE_SIZE
        data_rva = text_rva + PAGE_SIZE
        symbols = {name: text_rva + offset for name, offset in _TEXT_SYMBOLS.items()}
        cursor = data_rva
        for name, size, alignment in _DATA_SYMBOLS:
            cursor = -(-cursor // alignment) * alignment
            symbols[name] = cursor
            cursor += size
        rdata_rva = page_align_up(cursor)
        lab = build_lab(build_number).encode("ascii") + b"\0"
        symbols["NtBuildLab"] = rdata_rva
        export_rva = -(-(rdata_rva + len(lab)) // 4) * 4
        timestamp = rng.randrange(0x60000000, 0x68000000)
        exports = build_export_directory(
            directory_rva=export_rva,
            dll_name=KERNEL_BASE_NAME,
            exports={name: symbols[name] for name in _BUILTIN_EXPORTS},
            timestamp=timestamp,
        )
        rdata = lab + bytes(export_rva - rdata_rva - len(lab)) + exports
        size_of_image = page_align_up(rdata_rva + len(rdata))
        sections = [
            PeSection(
                name=".text",
                virtual_address=text_rva,
                virtual_size=PAGE_SIZE,
                raw_offset=0,
                raw_size=0,
                characteristics=SECTION_TEXT,
            ),
            PeSection(
                name=".data",
                virtual_address=data_rva,
                virtual_size=cursor - data_rva,
                raw_offset=0,
                raw_size=0,
                characteristics=SECTION_DATA,
            ),
            PeSection(
                name=".rdata",
                virtual_address=rdata_rva,
                virtual_size=len(rdata),
                raw_offset=0,
                raw_size=0,
                characteristics=SECTION_RDATA,
            ),
        ]
        headers = build_pe_headers(
            image_base=base,
            size_of_image=size_of_image,
            entry_point_rva=symbols["KiSystemStartup"],
            sections=sections,
            timestamp=timestamp,
            checksum=rng.randrange(0x800000, 0x1000000),
            export_directory=(export_rva, len(exports)),
        )
        image = bytearray(size_of_image)
        image[:SYNTHETIC_SIZE_OF_HEADERS] = headers
        image[text_rva : text_rva + PAGE_SIZE] = _builtin_text()
        image[rdata_rva : rdata_rva + len(rdata)] = rdata
        struct.pack_into(
            "<II",
            image,
            symbols["NtBuildNumber"],
            FREE_BUILD_TAG | build_number,
            self.config.processors,
        )
        for name, text in (("NtFullName", KERNEL_FULL_NAME), ("NtBaseName", KERNEL_BASE_NAME)):
            encoded = text.encode("utf-16-le")
            image[symbols[name] : symbols[name] + len(encoded)] = encoded
        self._map_image(base, bytes(image), sections)

        def at(name: str) -> int:
            return base + symbols[name]

        space = self.space
        for head in ("PsLoadedModuleList", "PsActiveProcessHead", "KeBugCheckCallbackListHead"):
            initialize_list_head(space, at(head))
        kernel = _Kernel(
            base=base,
            size=size_of_image,
            kdbg=at("KdDebuggerDataBlock"),
            kdbg_size=KDBG_TYPICAL_SIZE,
            debugger_data_list=at("KdpDebuggerDataListHead"),
            ps_loaded_module_list=at("PsLoadedModuleList"),
            ps_active_process_head=at("PsActiveProcessHead"),
            breakpoint_with_status=at("DbgBreakPointWithStatus"),
            idle_address=at("KiIdleLoop"),
            syscall64=at("KiSystemCall64"),
            syscall32=at("KiSystemCall32"),
            build_number=build_number,
            nt_ldr_entry=at("NtLdrEntry"),
            processor_block=at("KiProcessorBlock"),
            ki_bugcheck_data=at("KiBugCheckData"),
            saved_context=at("KiBugCheckSavedContext"),
            mm_physical_memory_block=at("MmPhysicalMemoryBlock"),
            mm_pfn_database=at("MmPfnDatabase"),
            physical_page_variables=(
                at("MmLowestPhysicalPage"),
                at("MmHighestPhysicalPage"),
                at("MmNumberOfPhysicalPages"),
            ),
            nt_build_lab=at("NtBuildLab"),
            bugcheck_callback_list_head=at("KeBugCheckCallbackListHead"),
        )
        self._write_ldr_entry(
            dll_base=base,
            entry_point=base + symbols["KiSystemStartup"],
            size=size_of_image,
            full_name=(at("NtFullName"), 2 * len(KERNEL_FULL_NAME)),
            base_name=(at("NtBaseName"), 2 * len(KERNEL_BASE_NAME)),
            checksum=0,
            timestamp=timestamp,
            entry=kernel.nt_ldr_entry,
        )
        insert_tail_list(space, kernel.ps_loaded_module_list, kernel.nt_ldr_entry)
        kernel.system_process = self._create_system_process(kernel)
        space.write_u64(at("PsInitialSystemProcess"), kernel.system_process)
        return kernel

    def _load_kernel_image(self, path: Path, base: int) -> _Kernel:
        image = load_pe_file(path)
        required = (FAKE_NT_EXPORT_TABLE, "PsLoadedModuleList", "DbgBreakPointWithStatus")
        missing = [name for name in required if name not in image.exports]
        if missing:
            raise KernelImageError(
                f"{path}: cannot serve as the kernel: it does not export {', '.join(missing)} "
                f"(see shared/vectors/fake-nt/README.md)"
            )
        mapped = image.load(base)
        self._map_image(base, mapped, image.sections)
        table = image.exports[FAKE_NT_EXPORT_TABLE]
        if table + 8 * FAKE_NT_EXPORT_COUNT > image.size_of_image:
            raise KernelImageError(f"{path}: {FAKE_NT_EXPORT_TABLE} runs past the image")
        pointers = struct.unpack_from(f"<{FAKE_NT_EXPORT_COUNT}Q", mapped, table)
        for index, pointer in enumerate(pointers):
            if not base <= pointer < base + image.size_of_image:
                raise KernelImageError(
                    f"{path}: {FAKE_NT_EXPORT_TABLE}[{index}] = {pointer:#x} is outside the image"
                )
        kdbg, list_head, pcr, thread, process, ldr_entry, _stack = pointers
        space = self.space
        try:
            kdbg_size = pull_kdbg_header(space.read_virtual(kdbg, KdbgOffset.SIZE + 4))
        except KdbgError as exc:
            raise KernelImageError(f"{path}: KdDebuggerDataBlock: {exc}") from None
        if "NtBuildNumber" in image.exports:
            raw_build = space.read_virtual(base + image.exports["NtBuildNumber"], 4)
            build_number = int.from_bytes(raw_build, "little") & 0xFFFF
        else:
            build_number = self.config.build_number

        # What only the loader knows (fake-nt README): the image size in the kernel's module
        # entry, the System process's CR3, and the debugger data list linking KDBG.
        space.write_exact(
            ldr_entry + LdrEntry.SIZE_OF_IMAGE, struct.pack("<I", image.size_of_image)
        )
        space.write_exact(ldr_entry + LdrEntry.CHECK_SUM, struct.pack("<I", image.checksum))
        space.write_exact(ldr_entry + LdrEntry.TIME_DATE_STAMP, struct.pack("<I", image.timestamp))
        space.write_u64(process + Eprocess.DIRECTORY_TABLE_BASE, self.cr3)
        space.write_exact(list_head, struct.pack("<QQ", kdbg, kdbg))
        space.write_exact(kdbg, struct.pack("<QQ", list_head, list_head))

        entry_point = base + image.entry_point_rva
        return _Kernel(
            base=base,
            size=image.size_of_image,
            kdbg=kdbg,
            kdbg_size=kdbg_size,
            debugger_data_list=list_head,
            ps_loaded_module_list=base + image.exports["PsLoadedModuleList"],
            ps_active_process_head=space.read_u64(kdbg + KdbgOffset.PS_ACTIVE_PROCESS_HEAD),
            breakpoint_with_status=base + image.exports["DbgBreakPointWithStatus"],
            idle_address=entry_point,
            syscall64=entry_point,
            syscall32=entry_point,
            build_number=build_number,
            nt_ldr_entry=ldr_entry,
            system_process=process,
            initial_pcr=pcr,
            initial_thread=thread,
            processor_block=space.read_u64(kdbg + KdbgOffset.KI_PROCESSOR_BLOCK),
        )

    # --- building: kernel data -------------------------------------------------------------------

    def _create_system_process(self, kernel: _Kernel) -> int:
        space = self.space
        process = self._pool.allocate(EPROCESS_SIZE, 64)
        space.write_u64(process + Eprocess.DIRECTORY_TABLE_BASE, self.cr3)
        initialize_list_head(space, process + Eprocess.PCB_THREAD_LIST_HEAD)
        initialize_list_head(space, process + Eprocess.THREAD_LIST_HEAD)
        space.write_u64(process + Eprocess.UNIQUE_PROCESS_ID, SYSTEM_PROCESS_ID)
        space.write_exact(process + Eprocess.IMAGE_FILE_NAME, b"System\0")
        insert_tail_list(
            space, kernel.ps_active_process_head, process + Eprocess.ACTIVE_PROCESS_LINKS
        )
        return process

    def _build_kernel_data(self, kernel: _Kernel) -> None:
        """Bugcheck data, the physical memory descriptor and the PFN database; for a loaded image
        in pool, since its KDBG leaves these fields 0."""
        space = self.space
        pool = self._pool
        if not kernel.ki_bugcheck_data:
            kernel.ki_bugcheck_data = pool.allocate(8 * BUGCHECK_DATA_WORDS, 8)
            kernel.saved_context = pool.allocate(AMD64_CONTEXT_SIZE, 16)
            kernel.mm_physical_memory_block = pool.allocate(8, 8)
            kernel.mm_pfn_database = pool.allocate(8, 8)
        descriptor = push_physical_memory_descriptor(self.physical.descriptor())
        descriptor_address = pool.allocate(len(descriptor), 16)
        space.write_exact(descriptor_address, descriptor)
        space.write_u64(kernel.mm_physical_memory_block, descriptor_address)

        # The PFN database: one MMPFN per physical page up to the highest, mapped with 2 MiB
        # pages as Windows maps it. Nothing fills the entries; reserving them keeps the
        # machine's RAM accounting honest and costs nothing until touched.
        highest_pfn = self.physical.end_address // PAGE_SIZE
        pfn_bytes = -(-highest_pfn * MMPFN_SIZE // LARGE_PAGE_SIZE) * LARGE_PAGE_SIZE
        pages_per_large = LARGE_PAGE_SIZE // PAGE_SIZE
        for offset in range(0, pfn_bytes, LARGE_PAGE_SIZE):
            pa = self.allocator.allocate_block(pages_per_large, pages_per_large)
            space.map(
                self._pfn_database_base + offset,
                pa,
                LARGE_PAGE_SIZE,
                executable=False,
                large_pages=True,
            )
        space.write_u64(kernel.mm_pfn_database, self._pfn_database_base)
        if kernel.physical_page_variables is not None:
            lowest, highest, number = kernel.physical_page_variables
            space.write_u64(lowest, self.physical.runs[0].base_page)
            space.write_u64(highest, highest_pfn - 1)
            space.write_u64(number, self.physical.total_pages)

    def _build_processors(self, kernel: _Kernel) -> tuple[ProcessorState, ...]:
        space = self.space
        count = self.config.processors
        if not kernel.processor_block or (count > 1 and kernel.initial_pcr is not None):
            # A loaded image has a KiProcessorBlock sized for its own processors (fake-nt: 2
            # slots); give the machine its own array and point KDBG at it.
            kernel.processor_block = self._pool.allocate(8 * MAX_PROCESSORS, 16)
        states = []
        for number in range(count):
            if number == 0 and kernel.initial_pcr is not None and kernel.initial_thread:
                pcr, thread = kernel.initial_pcr, kernel.initial_thread
                stack_base = space.read_u64(thread + Kthread.STACK_BASE)
                stack_limit = space.read_u64(thread + Kthread.STACK_LIMIT)
                rsp = space.read_u64(thread + Kthread.KERNEL_STACK)
            else:
                pcr = self._pool.allocate_pages(KPCR_SIZE)
                thread, stack_base, stack_limit, rsp = self._create_thread(kernel, number)
            prcb = pcr + Kpcr.PRCB
            gdt = self._pool.allocate_pages(PAGE_SIZE)
            idt = self._pool.allocate_pages(PAGE_SIZE)
            tss = self._pool.allocate(0x68, 16)
            space.write_exact(gdt, _push_gdt(tss))
            pcr_header = struct.pack("<QQQQQ", gdt, tss, 0, pcr, prcb)
            space.write_exact(pcr, pcr_header)
            prcb_header = bytearray(0x28)
            struct.pack_into("<IB", prcb_header, Kprcb.MX_CSR, 0x1F80, number & 0xFF)
            struct.pack_into("<QQ", prcb_header, Kprcb.CURRENT_THREAD, thread, 0)
            struct.pack_into("<Q", prcb_header, Kprcb.IDLE_THREAD, thread)
            struct.pack_into("<I", prcb_header, Kprcb.NUMBER, number)
            space.write_exact(prcb, bytes(prcb_header))
            space.write_u64(kernel.processor_block + 8 * number, prcb)
            msrs = self._initial_msrs(kernel, number, pcr)
            states.append(
                ProcessorState(
                    number=number,
                    kpcr=pcr,
                    kprcb=prcb,
                    thread=thread,
                    stack_base=stack_base,
                    stack_limit=stack_limit,
                    context=self._initial_context(kernel, rsp),
                    special_registers=self._initial_special_registers(gdt, idt, msrs),
                    msrs=msrs,
                )
            )
        return tuple(states)

    def _create_thread(self, kernel: _Kernel, number: int) -> tuple[int, int, int, int]:
        """An ETHREAD of the System process with its own kernel stack: (thread, stack base,
        stack limit, saved RSP)."""
        space = self.space
        process = kernel.system_process
        thread = self._pool.allocate(ETHREAD_SIZE, 64)
        stack_limit = self._pool.allocate_pages(KERNEL_STACK_SIZE)
        stack_base = stack_limit + KERNEL_STACK_SIZE
        rsp = stack_base - 0x100  # where fake_nt.c's KiInitialThread has its KernelStack
        space.write_exact(
            thread + Kthread.INITIAL_STACK, struct.pack("<QQQ", stack_base, stack_limit, stack_base)
        )
        space.write_u64(thread + Kthread.KERNEL_STACK, rsp)
        space.write_u64(thread + Kthread.APC_STATE_PROCESS, process)
        space.write_exact(thread + Kthread.STATE, bytes([KTHREAD_STATE_RUNNING]))
        space.write_exact(thread + Kthread.NEXT_PROCESSOR, struct.pack("<I", number))
        space.write_u64(thread + Kthread.PROCESS, process)
        space.write_exact(
            thread + Ethread.CID, struct.pack("<QQ", SYSTEM_PROCESS_ID, 8 + 4 * number)
        )
        insert_tail_list(
            space, process + Eprocess.PCB_THREAD_LIST_HEAD, thread + Kthread.THREAD_LIST_ENTRY
        )
        insert_tail_list(
            space, process + Eprocess.THREAD_LIST_HEAD, thread + Ethread.THREAD_LIST_ENTRY
        )
        return thread, stack_base, stack_limit, rsp

    def _plausible_register(self) -> int:
        """A value a kernel register might hold: 0, a small count, or a kernel pointer."""
        rng = self._rng
        kind = rng.randrange(4)
        if kind == 0:
            return 0
        if kind == 1:
            return rng.randrange(0x100)
        if kind == 2:
            return self._pool.base + rng.randrange(0x1000) * 0x10
        return self._kernel.base + rng.randrange(self._kernel.size) // 8 * 8

    def _initial_context(self, kernel: _Kernel, rsp: int) -> bytearray:
        context = bytearray(AMD64_CONTEXT_SIZE)

        def put(register: Amd64Register, value: int) -> None:
            pack_register(context, register, value)

        put(Amd64Register.CONTEXT_FLAGS, CONTEXT_ALL)
        put(Amd64Register.MX_CSR, 0x1F80)
        # Kernel selectors of x64 Windows: CS 0x10, SS 0x18, DS/ES/GS 0x2B, FS 0x53 (the TEB
        # selector user mode left loaded).
        for register, selector in (
            (Amd64Register.SEG_CS, 0x10),
            (Amd64Register.SEG_DS, 0x2B),
            (Amd64Register.SEG_ES, 0x2B),
            (Amd64Register.SEG_FS, 0x53),
            (Amd64Register.SEG_GS, 0x2B),
            (Amd64Register.SEG_SS, 0x18),
        ):
            put(register, selector)
        put(Amd64Register.EFLAGS, 0x246)  # IF | ZF | PF | reserved bit 1: idle with interrupts on
        put(Amd64Register.DR6, 0xFFFF0FF0)  # the architectural reset value
        put(Amd64Register.DR7, 0x400)
        for register in (
            Amd64Register.RAX,
            Amd64Register.RCX,
            Amd64Register.RDX,
            Amd64Register.RBX,
            Amd64Register.RSI,
            Amd64Register.RDI,
            Amd64Register.R8,
            Amd64Register.R9,
            Amd64Register.R10,
            Amd64Register.R11,
            Amd64Register.R12,
            Amd64Register.R13,
            Amd64Register.R14,
            Amd64Register.R15,
        ):
            put(register, self._plausible_register())
        put(Amd64Register.RSP, rsp)
        put(Amd64Register.RBP, rsp + 0x80)
        put(Amd64Register.RIP, kernel.idle_address)
        put(Amd64Register.FLT_CONTROL_WORD, 0x27F)  # x87 default control word
        put(Amd64Register.FLT_MX_CSR, 0x1F80)
        put(Amd64Register.FLT_MX_CSR_MASK, 0xFFFF)
        return context

    def _initial_msrs(self, kernel: _Kernel, number: int, pcr: int) -> dict[int, int]:
        apic_base = 0xFEE00000 | 0x800 | (0x100 if number == 0 else 0)  # enabled; BSP flag
        return {
            Msr.TSC: self._rng.randrange(1 << 40, 1 << 44),
            Msr.APIC_BASE: apic_base,
            Msr.FEATURE_CONTROL: 0x5,  # locked, VMX outside SMX
            Msr.SYSENTER_CS: 0,
            Msr.SYSENTER_ESP: 0,
            Msr.SYSENTER_EIP: 0,
            Msr.MISC_ENABLE: 0x850089,
            Msr.DEBUGCTL: 0,
            Msr.PAT: PAT_VALUE,
            Msr.EFER: EFER_VALUE,
            Msr.STAR: STAR_VALUE,
            Msr.LSTAR: kernel.syscall64,
            Msr.CSTAR: kernel.syscall32,
            Msr.FMASK: FMASK_VALUE,
            Msr.FS_BASE: 0,
            Msr.GS_BASE: pcr,
            Msr.KERNEL_GS_BASE: 0,
            Msr.TSC_AUX: number,
        }

    def _initial_special_registers(self, gdt: int, idt: int, msrs: dict[int, int]) -> bytearray:
        block = bytearray(KSPECIAL_REGISTERS_SIZE)
        for register, value in (
            (KSpecialRegister.CR0, 0x80050033),  # PG | AM | WP | NE | ET | MP | PE
            (KSpecialRegister.CR3, self.cr3),
            (KSpecialRegister.CR4, 0x350EF8),  # what Windows 10/11 runs with (SMEP, SMAP, ...)
            (KSpecialRegister.KERNEL_DR6, 0xFFFF0FF0),
            (KSpecialRegister.KERNEL_DR7, 0x400),
            (KSpecialRegister.GDTR_LIMIT, 0x57),
            (KSpecialRegister.GDTR_BASE, gdt),
            (KSpecialRegister.IDTR_LIMIT, 0xFFF),
            (KSpecialRegister.IDTR_BASE, idt),
            (KSpecialRegister.TR, 0x40),
            (KSpecialRegister.MX_CSR, 0x1F80),
            (KSpecialRegister.MSR_GS_BASE, msrs[Msr.GS_BASE]),
            (KSpecialRegister.MSR_GS_SWAP, msrs[Msr.KERNEL_GS_BASE]),
            (KSpecialRegister.MSR_STAR, msrs[Msr.STAR]),
            (KSpecialRegister.MSR_LSTAR, msrs[Msr.LSTAR]),
            (KSpecialRegister.MSR_CSTAR, msrs[Msr.CSTAR]),
            (KSpecialRegister.MSR_SYSCALL_MASK, msrs[Msr.FMASK]),
            (KSpecialRegister.XCR0, 0x7),  # x87 | SSE | AVX state enabled
        ):
            pack_register(block, register, value)
        return block

    def _write_kuser_shared_data(self) -> None:
        rng = self._rng
        page = bytearray(PAGE_SIZE)
        uptime = rng.randrange(10 * 60, 30 * 86400) * 10_000_000  # 100 ns units
        # SystemTime: a FILETIME in 2024..2025, so dumps and logs show a believable date.
        system_time = 133_485_408_000_000_000 + rng.randrange(0, 2 * 365 * 86400) * 10_000_000
        major, minor = nt_version(self.build_number)
        struct.pack_into("<I", page, KuserSharedData.TICK_COUNT_MULTIPLIER, 0x0FA00000)
        page[KuserSharedData.INTERRUPT_TIME : KuserSharedData.INTERRUPT_TIME + 12] = (
            push_ksystem_time(uptime)
        )
        page[KuserSharedData.SYSTEM_TIME : KuserSharedData.SYSTEM_TIME + 12] = push_ksystem_time(
            system_time
        )
        struct.pack_into("<HH", page, KuserSharedData.IMAGE_NUMBER_LOW, 0x8664, 0x8664)
        root = "C:\\Windows".encode("utf-16-le")
        page[KuserSharedData.NT_SYSTEM_ROOT : KuserSharedData.NT_SYSTEM_ROOT + len(root)] = root
        struct.pack_into("<I", page, KuserSharedData.LARGE_PAGE_MINIMUM, LARGE_PAGE_SIZE)
        struct.pack_into(
            "<IIBxH",
            page,
            KuserSharedData.NT_BUILD_NUMBER,
            self.build_number,
            NT_PRODUCT_WIN_NT,
            1,
            PROCESSOR_ARCHITECTURE_AMD64,
        )
        struct.pack_into("<II", page, KuserSharedData.NT_MAJOR_VERSION, major, minor)
        struct.pack_into("<I", page, KuserSharedData.SUITE_MASK, SUITE_MASK_WORKSTATION)
        page[KuserSharedData.KD_DEBUGGER_ENABLED] = KD_DEBUGGER_ENABLED_AND_PRESENT
        struct.pack_into(
            "<I",
            page,
            KuserSharedData.NUMBER_OF_PHYSICAL_PAGES,
            min(self.physical.total_pages, 0xFFFFFFFF),
        )
        # TickCount counts 15.625 ms clock ticks.
        page[KuserSharedData.TICK_COUNT : KuserSharedData.TICK_COUNT + 12] = push_ksystem_time(
            uptime // 156_250
        )
        struct.pack_into("<IB", page, KuserSharedData.ACTIVE_PROCESSOR_COUNT, self.processors, 1)
        pa = self.allocator.allocate()
        self.space.map(KUSER_SHARED_DATA_ADDRESS, pa, PAGE_SIZE, writable=False, executable=False)
        self.physical.write(pa, page)

    def _write_kdbg(self, kernel: _Kernel) -> None:
        """The built-in kernel's KDBG in full; for a loaded image, the fields it leaves 0."""
        space = self.space
        common = {
            KdbgOffset.SAVED_CONTEXT: kernel.saved_context,
            KdbgOffset.KI_BUGCHECK_DATA: kernel.ki_bugcheck_data,
            KdbgOffset.MM_PFN_DATABASE: kernel.mm_pfn_database,
            KdbgOffset.KI_PROCESSOR_BLOCK: kernel.processor_block,
            KdbgOffset.MM_PHYSICAL_MEMORY_BLOCK: kernel.mm_physical_memory_block,
            KdbgOffset.PTE_BASE: self.pte_base,
        }
        if kernel.initial_pcr is not None:
            for offset, value in common.items():
                if offset + 8 <= kernel.kdbg_size:
                    space.write_u64(kernel.kdbg + offset, value)
            return
        assert kernel.physical_page_variables is not None
        lowest, highest, number = kernel.physical_page_variables
        fields = {
            KdbgOffset.LIST_FLINK: kernel.debugger_data_list,
            KdbgOffset.LIST_BLINK: kernel.debugger_data_list,
            KdbgOffset.KERN_BASE: kernel.base,
            KdbgOffset.BREAKPOINT_WITH_STATUS: kernel.breakpoint_with_status,
            KdbgOffset.PS_LOADED_MODULE_LIST: kernel.ps_loaded_module_list,
            KdbgOffset.PS_ACTIVE_PROCESS_HEAD: kernel.ps_active_process_head,
            KdbgOffset.KE_BUGCHECK_CALLBACK_LIST_HEAD: kernel.bugcheck_callback_list_head,
            KdbgOffset.MM_LOWEST_PHYSICAL_PAGE: lowest,
            KdbgOffset.MM_HIGHEST_PHYSICAL_PAGE: highest,
            KdbgOffset.MM_NUMBER_OF_PHYSICAL_PAGES: number,
            KdbgOffset.MM_PAGE_SIZE: PAGE_SIZE,
            KdbgOffset.MM_HIGHEST_USER_ADDRESS: MM_HIGHEST_USER_ADDRESS,
            KdbgOffset.MM_SYSTEM_RANGE_START: MM_SYSTEM_RANGE_START,
            KdbgOffset.NT_BUILD_LAB: kernel.nt_build_lab,
            KdbgOffset.SIZE_EPROCESS: EPROCESS_SIZE,
            KdbgOffset.OFFSET_EPROCESS_DIRECTORY_TABLE_BASE: Eprocess.DIRECTORY_TABLE_BASE,
            KdbgOffset.SIZE_PRCB: KPRCB_SIZE,
            KdbgOffset.OFFSET_PRCB_CURRENT_THREAD: Kprcb.CURRENT_THREAD,
            KdbgOffset.MM_USER_PROBE_ADDRESS: MM_USER_PROBE_ADDRESS,
            KdbgOffset.OFFSET_KTHREAD_NEXT_PROCESSOR: Kthread.NEXT_PROCESSOR,
            KdbgOffset.OFFSET_KTHREAD_TEB: Kthread.TEB,
            KdbgOffset.OFFSET_KTHREAD_KERNEL_STACK: Kthread.KERNEL_STACK,
            KdbgOffset.OFFSET_KTHREAD_INITIAL_STACK: Kthread.INITIAL_STACK,
            KdbgOffset.OFFSET_KTHREAD_APC_PROCESS: Kthread.APC_STATE_PROCESS,
            KdbgOffset.OFFSET_KTHREAD_STATE: Kthread.STATE,
            KdbgOffset.OFFSET_EPROCESS_PEB: Eprocess.PEB,
            KdbgOffset.OFFSET_PRCB_NUMBER: Kprcb.NUMBER,
            KdbgOffset.SIZE_ETHREAD: ETHREAD_SIZE,
            **common,
        }
        space.write_exact(kernel.kdbg, push_debugger_data(fields, size=kernel.kdbg_size))
        space.write_exact(kernel.debugger_data_list, struct.pack("<QQ", kernel.kdbg, kernel.kdbg))


def _push_gdt(tss: int) -> bytes:
    """The GDT of x64 Windows: null, R0 code 0x10, R0 data 0x18, R3 compat code 0x20, R3 data
    0x28, R3 code 0x30, TSS 0x40 (16 bytes), R3 compat TEB 0x50."""
    gdt = bytearray(0x58)
    for selector, descriptor in (
        (0x10, 0x00209B0000000000),
        (0x18, 0x00CF93000000FFFF),
        (0x20, 0x00CFFB000000FFFF),
        (0x28, 0x00CFF3000000FFFF),
        (0x30, 0x0020FB0000000000),
        (0x50, 0x00CFF3000000FFFF),
    ):
        struct.pack_into("<Q", gdt, selector, descriptor)
    limit = 0x67
    low = (
        limit
        | (tss & 0xFFFFFF) << 16
        | 0x89 << 40  # present, 64-bit available TSS
        | ((tss >> 24) & 0xFF) << 56
    )
    struct.pack_into("<QQ", gdt, 0x40, low, tss >> 32)
    return bytes(gdt)
