"""The simulated machine's memory, page tables, kernel data and PE loader (cartd.sim).

Everything runs on real objects: sparse RAM, page tables walked from physical memory, and the
fake-nt kernel image from shared/vectors when it is present. Where a test checks the machine's
own page walk it uses an independent walker written here from the Intel SDM rules.
"""

from __future__ import annotations

import random
import re
import struct
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartd.kd.context import AMD64_CONTEXT_SIZE, KSPECIAL_REGISTERS_SIZE, KSpecialRegister
from cartd.kd.debugger_data import (
    KDBG_OWNER_TAG,
    DebuggerData,
    KdbgOffset,
    PhysicalMemoryRun,
    pull_debugger_data,
    pull_physical_memory_descriptor,
)
from cartd.kd.modules import LdrEntry
from cartd.sim.kernel_layout import (
    Eprocess,
    Kpcr,
    Kprcb,
    Kthread,
    KuserSharedData,
    Msr,
)
from cartd.sim.machine import (
    BOOT_DRIVERS,
    KernelImageError,
    MachineConfig,
    MachineConfigError,
    SimulatedMachine,
)
from cartd.sim.memory import (
    HUGE_PAGE_SIZE,
    LARGE_PAGE_SIZE,
    PAGE_SIZE,
    AddressSpace,
    OutOfPhysicalMemory,
    PageAllocator,
    PhysicalMemory,
    canonical,
    is_canonical,
    pc_ram_runs,
)
from cartd.sim.pe_image import (
    SECTION_DATA,
    SECTION_TEXT,
    PeFormatError,
    PeSection,
    build_pe_headers,
    load_pe_file,
    parse_pe,
)

GIB = 1 << 30
MIB = 1 << 20
SHARED = Path(__file__).parents[2] / "shared"
FAKE_NT = SHARED / "vectors" / "fake-nt"
FAKE_NT_IMAGE = FAKE_NT / "ntoskrnl.exe"
needs_fake_nt = pytest.mark.skipif(
    not FAKE_NT_IMAGE.is_file(),
    reason=f"fake-nt kernel image not found at {FAKE_NT_IMAGE} (shared/ is a sibling of the repo)",
)
# A non-preferred base for fake-nt (it prefers 0x140000000).
FAKE_NT_BASE = 0xFFFFF8057A200000


def u64(data: bytes | bytearray, offset: int = 0) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


def independent_walk(physical: PhysicalMemory, cr3: int, va: int) -> int | None:
    """x64 4-level translation written from the SDM, reading page tables as physical bytes."""
    if not is_canonical(va):
        return None
    table = cr3
    for shift in (39, 30, 21, 12):
        raw = physical.read(table + 8 * ((va >> shift) & 0x1FF), 8)
        entry = u64(raw)
        if not entry & 1:
            return None
        if shift == 12 or (shift in (30, 21) and entry & 0x80):
            size = 1 << shift
            return (entry & 0x000FFFFFFFFFF000 & ~(size - 1)) | (va & (size - 1))
        table = entry & 0x000FFFFFFFFFF000
    raise AssertionError("unreachable")


def read_kdbg(machine: SimulatedMachine) -> DebuggerData:
    """What a host does (spec section 8): Flink of DebuggerDataList, check the header, read Size."""
    kdbg = u64(machine.read_virtual(machine.debugger_data_list, 8))
    header = machine.read_virtual(kdbg, 0x18)
    size = struct.unpack_from("<I", header, 0x14)[0]
    return pull_debugger_data(machine.read_virtual(kdbg, size), address=kdbg)


def read_unicode(machine: SimulatedMachine, address: int) -> str:
    length, _maximum, _pad, buffer = struct.unpack("<HHIQ", machine.read_virtual(address, 16))
    return machine.read_virtual(buffer, length).decode("utf-16-le")


def walk_modules(machine: SimulatedMachine, head: int) -> list[tuple[str, int, int, int]]:
    """(BaseDllName, DllBase, SizeOfImage, entry address) by following Flinks from the head."""
    out: list[tuple[str, int, int, int]] = []
    entry = u64(machine.read_virtual(head, 8))
    while entry != head:
        assert len(out) < 100, "module list does not come back to its head"
        raw = machine.read_virtual(entry, 0xA0)
        assert len(raw) == 0xA0
        base, _entry_point, size = struct.unpack_from("<QQI", raw, 0x30)
        out.append((read_unicode(machine, entry + 0x58), base, size, entry))
        # Blink of the next entry must point back here.
        following = u64(raw)
        assert u64(machine.read_virtual(following + 8, 8)) == entry
        entry = following
    return out


# --- physical memory ----------------------------------------------------------------------------


def test_pc_layout_has_the_usual_holes() -> None:
    runs = pc_ram_runs(16 * GIB)
    assert runs == (
        PhysicalMemoryRun(0x1, 0x9E),  # [4 KiB, 636 KiB)
        PhysicalMemoryRun(0x100, 0xC0000 - 0x100),  # [1 MiB, 3 GiB)
        PhysicalMemoryRun(0x100000, (13 * GIB) >> 12),  # the rest, remapped above 4 GiB
    )
    small = pc_ram_runs(512 * MIB)
    assert small[-1] == PhysicalMemoryRun(0x100, (512 * MIB >> 12) - 0x100)


def test_sixteen_gib_costs_nothing_until_touched() -> None:
    memory = PhysicalMemory(pc_ram_runs(16 * GIB))
    assert memory.total_pages == (16 * GIB - 0x62000) >> 12
    assert memory.read(10 * GIB, 64 * 1024) == bytes(64 * 1024)
    assert memory.write(12 * GIB, bytes(3 * PAGE_SIZE)) == 3 * PAGE_SIZE  # zeros into fresh pages
    assert memory.allocated_page_count == 0
    assert memory.write(17 * GIB - 2, b"\x01\x02\x03\x04") == 2  # RAM ends at 17 GiB
    assert memory.allocated_page_count == 1
    assert memory.read(17 * GIB - 4, 8) == b"\0\0\x01\x02"
    assert [pfn for pfn, _ in memory.allocated_pages()] == [(17 * GIB >> 12) - 1]


def test_sixteen_gib_machine_touches_few_pages() -> None:
    machine = SimulatedMachine(MachineConfig(seed=3, memory_size_bytes=16 * GIB, processors=4))
    # Page tables, the kernel image, a few pool pages and driver headers: well under a MiB.
    assert machine.physical.allocated_page_count < 200
    assert machine.physical.total_pages * PAGE_SIZE > 15 * GIB


def test_reads_and_writes_stop_at_holes() -> None:
    memory = PhysicalMemory(pc_ram_runs(4 * GIB))
    memory.write(0x9E000, b"\xaa" * PAGE_SIZE)
    assert memory.read(0x9E000, 3 * PAGE_SIZE) == b"\xaa" * PAGE_SIZE  # 0x9F000 is the EBDA
    assert memory.read(0xA0000, 16) == b""
    assert memory.read(0, 16) == b""  # page 0 is not RAM
    assert memory.read(3 * GIB - 8, 64) == bytes(8)  # PCI hole at 3 GiB
    assert memory.read(4 * GIB - 8, 64) == b""
    assert len(memory.read(4 * GIB, 64)) == 64
    assert memory.write(3 * GIB - 4, b"\x11" * 16) == 4
    assert memory.read(3 * GIB - 4, 4) == b"\x11" * 4
    assert memory.ram_bytes_at(0x1000, 0x100000) == 0x9E000
    assert not memory.is_ram(0xA0000) and memory.is_ram(0x100000)


def test_adjacent_runs_read_as_one() -> None:
    memory = PhysicalMemory([PhysicalMemoryRun(1, 4), PhysicalMemoryRun(5, 2)])
    memory.write(0x4FFE, b"abcd")
    assert memory.read(0x1000, 0x7000) == bytes(0x3FFE) + b"abcd" + bytes(0x1FFE)
    assert memory.read(0x1000, 0x8000) == memory.read(0x1000, 0x6000)


def test_bad_runs_are_rejected() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        PhysicalMemory([PhysicalMemoryRun(10, 10), PhysicalMemoryRun(15, 10)])
    with pytest.raises(ValueError, match="no pages"):
        PhysicalMemory([PhysicalMemoryRun(10, 0)])
    with pytest.raises(ValueError, match="negative"):
        PhysicalMemory([PhysicalMemoryRun(1, 1)]).read(-1, 4)


def test_page_allocator_is_deterministic_and_stays_in_ram() -> None:
    def draw(seed: int) -> list[int]:
        memory = PhysicalMemory(pc_ram_runs(4 * GIB))
        allocator = PageAllocator(memory, rng=random.Random(seed))
        pages = [allocator.allocate() for _ in range(500)]
        pages.append(allocator.allocate_block(512, 512))
        return pages

    first = draw(7)
    assert first == draw(7)
    assert first != draw(8)
    assert len(set(first)) == len(first)
    memory = PhysicalMemory(pc_ram_runs(4 * GIB))
    assert all(memory.is_ram(pa) and pa >= MIB and pa % PAGE_SIZE == 0 for pa in first)
    assert first[-1] % LARGE_PAGE_SIZE == 0


def test_page_allocator_runs_out_cleanly() -> None:
    memory = PhysicalMemory([PhysicalMemoryRun(0x100, 4)])
    allocator = PageAllocator(memory)
    pages = [allocator.allocate() for _ in range(4)]
    assert pages == [0x100000, 0x101000, 0x102000, 0x103000]
    with pytest.raises(OutOfPhysicalMemory):
        allocator.allocate()
    allocator.free(0x102000)
    memory.write(0x102000, b"junk")
    assert allocator.allocate() == 0x102000
    assert memory.read(0x102000, 4) == bytes(4)  # a fresh page reads as zeros


# --- page tables --------------------------------------------------------------------------------


def _space(size: int = 4 * GIB) -> AddressSpace:
    memory = PhysicalMemory(pc_ram_runs(size))
    return AddressSpace(memory, PageAllocator(memory))


def test_map_translate_and_partial_virtual_reads() -> None:
    space = _space()
    va = 0xFFFFF80000100000
    frames = space.map_new(va, 2 * PAGE_SIZE)
    assert space.translate(va + 0x123) == frames[0] + 0x123
    assert space.translate(va + PAGE_SIZE) == frames[1]
    assert space.translate(va + 2 * PAGE_SIZE) is None
    assert space.translate(0x0000800000000000) is None  # not canonical
    assert space.write_virtual(va + 2 * PAGE_SIZE - 2, b"wxyz") == 2
    assert space.read_virtual(va + 2 * PAGE_SIZE - 4, 16) == b"\0\0wx"
    assert space.memory.read(frames[1] + PAGE_SIZE - 2, 2) == b"wx"
    with pytest.raises(ValueError, match="already mapped"):
        space.map(va, 0x200000, PAGE_SIZE)
    space.map(va, 0x200000, PAGE_SIZE, replace=True)
    assert space.translate(va) == 0x200000
    assert space.unmap(va, 2 * PAGE_SIZE) == [(0x200000, PAGE_SIZE), (frames[1], PAGE_SIZE)]
    assert space.read_virtual(va, 1) == b""


def test_map_rejects_non_canonical_and_unaligned_ranges() -> None:
    space = _space()
    with pytest.raises(ValueError, match="canonical"):
        space.map(0x00007FFFFFFFF000, 0x100000, 2 * PAGE_SIZE)
    with pytest.raises(ValueError, match="whole pages"):
        space.map(0xFFFFF80000000010, 0x100000, PAGE_SIZE)
    assert canonical(0x1F0 << 39) == 0xFFFFF80000000000


def test_large_pages_are_walked() -> None:
    space = _space(16 * GIB)
    va_2m = 0xFFFFF80040000000
    space.map(va_2m, 0x40000000, 2 * LARGE_PAGE_SIZE, large_pages=True)
    va_1g = 0xFFFFF88000000000
    space.map(va_1g, 5 * GIB, HUGE_PAGE_SIZE, large_pages=True, writable=False)
    low = space.walk(va_2m + 0x12345)
    assert low is not None and low.page_size == LARGE_PAGE_SIZE
    assert low.physical_address == 0x40012345
    huge = space.walk(va_1g + 0x2345678)
    assert huge is not None and huge.page_size == HUGE_PAGE_SIZE and not huge.writable
    assert huge.physical_address == 5 * GIB + 0x2345678
    space.memory.write(5 * GIB + 0x3FFFFFFE, b"hi")
    assert space.read_virtual(va_1g + 0x3FFFFFFE, 8) == b"hi"  # the 1 GiB page ends there
    # A read across the two 2 MiB pages is contiguous because the frames are.
    space.memory.write(0x401FFFFC, b"abcdefgh")
    assert space.read_virtual(va_2m + LARGE_PAGE_SIZE - 4, 8) == b"abcdefgh"
    for va in (va_2m + 0x1FFFFF, va_1g + 0x3FFFFFFF):
        assert independent_walk(space.memory, space.cr3, va) == space.translate(va)


def test_hand_built_large_page_entries_are_honoured() -> None:
    # Page tables written as raw bytes (as Windows' own would be), not through map().
    space = _space()
    memory = space.memory
    pdpt, pd = 0x300000, 0x301000
    va = 0xFFFF800000000000 | (3 << 30) | (5 << 21) | 0x1234  # PML4 0x100, PDPT 3, PD 5
    memory.write(space.cr3 + 8 * 0x100, struct.pack("<Q", pdpt | 0x3))
    memory.write(pdpt + 8 * 3, struct.pack("<Q", pd | 0x3))
    memory.write(pd + 8 * 5, struct.pack("<Q", 0x80000000 | 0x80 | 0x1000 | 0x3))  # PAT bit set
    assert space.translate(va) == 0x80001234
    memory.write(pdpt + 8 * 4, struct.pack("<Q", 0x40000000 | 0x80 | 0x1))  # read-only 1 GiB page
    walked = space.walk(0xFFFF800000000000 | (4 << 30) | 0x7)
    assert walked is not None and walked.physical_address == 0x40000007 and not walked.writable


@cache
def _machine_for_properties() -> SimulatedMachine:
    return SimulatedMachine(MachineConfig(seed=11, memory_size_bytes=8 * GIB, processors=2))


def _mapped_ranges(machine: SimulatedMachine) -> list[tuple[int, int]]:
    ranges = [(module.base, module.size) for module in machine.modules]
    ranges.append((machine.kuser_shared_data, PAGE_SIZE))
    for state in machine.processor_states:
        ranges.append((state.stack_limit, state.stack_base - state.stack_limit))
        ranges.append((state.kpcr, 0x1180))
    pfn_variable = read_kdbg(machine).mm_pfn_database  # MmPfnDatabase: a pointer variable
    ranges.append((u64(machine.read_virtual(pfn_variable, 8)), 2 * LARGE_PAGE_SIZE))
    return ranges


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_virtual_and_physical_reads_agree(data: st.DataObject) -> None:
    machine = _machine_for_properties()
    base, size = data.draw(st.sampled_from(_mapped_ranges(machine)))
    va = base + data.draw(st.integers(0, size - 1))
    length = data.draw(st.integers(1, 3 * PAGE_SIZE))
    pa = independent_walk(machine.physical, machine.cr3, va)
    assert pa is not None
    assert machine.translate(va) == pa
    virtual = machine.read_virtual(va, length)
    assert len(virtual) >= min(length, PAGE_SIZE - (va & 0xFFF))
    # Page by page, the virtual bytes are the physical bytes the walk names.
    done = 0
    while done < len(virtual):
        chunk = min(len(virtual) - done, PAGE_SIZE - ((va + done) & 0xFFF))
        frame = independent_walk(machine.physical, machine.cr3, va + done)
        assert frame is not None
        assert machine.read_physical(frame, chunk) == virtual[done : done + chunk]
        done += chunk
    if len(virtual) < length:  # short only where the next page is unmapped
        assert independent_walk(machine.physical, machine.cr3, va + len(virtual)) is None


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(0, (1 << 64) - 1), st.integers(0xFFFF800000000000, (1 << 64) - 1)))
def test_translation_matches_an_independent_walk_anywhere(va: int) -> None:
    machine = _machine_for_properties()
    assert machine.translate(va) == independent_walk(machine.physical, machine.cr3, va)


def test_page_table_self_map_shows_the_ptes() -> None:
    machine = SimulatedMachine(MachineConfig(seed=4))
    kdbg = read_kdbg(machine)
    assert kdbg.field_u64(KdbgOffset.PTE_BASE) == machine.pte_base
    va = machine.breakpoint_with_status
    pte_address = machine.pte_base + ((va >> 12) & ((1 << 36) - 1)) * 8
    pte = u64(machine.read_virtual(pte_address, 8))
    pa = machine.translate(va)
    assert pa is not None
    assert pte & 1 and pte & 0x000FFFFFFFFFF000 == pa & ~0xFFF
    assert pte & (1 << 63) == 0  # code is executable
    assert not pte & 2  # and read-only


# --- the built-in kernel ------------------------------------------------------------------------


def test_kdbg_is_reachable_from_the_debugger_data_list() -> None:
    machine = SimulatedMachine(MachineConfig(seed=1, processors=3))
    head = machine.read_virtual(machine.debugger_data_list, 16)
    assert u64(head, 0) == u64(head, 8) == machine.kdbg_address
    raw = machine.read_virtual(machine.kdbg_address, 0x18)
    assert raw[0x10:0x14] == b"KDBG" and struct.unpack_from("<I", raw, 0x10)[0] == KDBG_OWNER_TAG
    assert u64(raw, 0) == u64(raw, 8) == machine.debugger_data_list
    kdbg = read_kdbg(machine)
    assert kdbg.size == 0x380
    assert kdbg.kern_base == machine.kernel_base
    assert kdbg.breakpoint_with_status == machine.breakpoint_with_status
    assert machine.read_virtual(kdbg.breakpoint_with_status, 1) == b"\xcc"
    assert kdbg.ps_loaded_module_list == machine.ps_loaded_module_list
    assert kdbg.mm_page_size == PAGE_SIZE
    assert kdbg.field_u64(KdbgOffset.MM_SYSTEM_RANGE_START) == 0xFFFF800000000000
    assert kdbg.ki_bugcheck_data == machine.ki_bugcheck_data
    assert kdbg.saved_context == machine.saved_context
    lab = machine.read_virtual(kdbg.nt_build_lab, 64).split(b"\0")[0].decode()
    assert lab.startswith("22621.") and "amd64fre" in lab
    assert struct.unpack_from("<H", kdbg.raw, 0x2AE)[0] == Eprocess.DIRECTORY_TABLE_BASE
    assert struct.unpack_from("<H", kdbg.raw, 0x2B4)[0] == Kprcb.CURRENT_THREAD
    # KiProcessorBlock: one KPRCB per processor, each pointing at its thread.
    prcbs = struct.unpack("<4Q", machine.read_virtual(kdbg.ki_processor_block, 32))
    assert list(prcbs) == [state.kprcb for state in machine.processor_states] + [0]
    for number, state in enumerate(machine.processor_states):
        prcb = machine.read_virtual(state.kprcb, 0x28)
        assert u64(prcb, Kprcb.CURRENT_THREAD) == state.thread == machine.current_thread(number)
        assert struct.unpack_from("<I", prcb, Kprcb.NUMBER)[0] == number
        assert u64(machine.read_virtual(state.kpcr + Kpcr.SELF, 8)) == state.kpcr
        assert state.kprcb == state.kpcr + Kpcr.PRCB


def test_process_list_has_the_system_process() -> None:
    machine = SimulatedMachine(MachineConfig(seed=2, processors=2))
    kdbg = read_kdbg(machine)
    head = kdbg.ps_active_process_head
    links = u64(machine.read_virtual(head, 8))
    process = links - Eprocess.ACTIVE_PROCESS_LINKS
    assert process == machine.system_process
    assert u64(machine.read_virtual(links, 8)) == head  # only one process
    name = machine.read_virtual(process + Eprocess.IMAGE_FILE_NAME, 15).split(b"\0")[0]
    assert name == b"System"
    assert u64(machine.read_virtual(process + Eprocess.DIRECTORY_TABLE_BASE, 8)) == machine.cr3
    assert u64(machine.read_virtual(process + Eprocess.UNIQUE_PROCESS_ID, 8)) == 4
    # Both processors' threads hang off the System process.
    threads = []
    entry = u64(machine.read_virtual(process + Eprocess.PCB_THREAD_LIST_HEAD, 8))
    while entry != process + Eprocess.PCB_THREAD_LIST_HEAD:
        threads.append(entry - Kthread.THREAD_LIST_ENTRY)
        entry = u64(machine.read_virtual(entry, 8))
    assert threads == [state.thread for state in machine.processor_states]


def test_module_list_walk_and_runtime_changes() -> None:
    machine = SimulatedMachine(MachineConfig(seed=5))
    walked = walk_modules(machine, machine.ps_loaded_module_list)
    names = [name for name, *_ in walked]
    assert names == ["ntoskrnl.exe"] + [name for name, _, _ in BOOT_DRIVERS]
    assert walked[0][1:3] == (machine.kernel_base, machine.kernel_size)
    assert [size for _, _, size, _ in walked[1:]] == [size for _, _, size in BOOT_DRIVERS]
    bases = [base for _, base, _, _ in walked]
    assert bases == sorted(bases) and len(set(bases)) == len(bases)
    for (_, base, size, _), module in zip(walked, machine.modules, strict=True):
        assert (module.base, module.size) == (base, size)
        header = parse_pe(machine.read_virtual(base, 0x400) + bytes(size - 0x400), mapped=True)
        assert header.size_of_image == size and header.image_base == base
    assert machine.modules[2].path == "\\SystemRoot\\system32\\kdcom.dll"

    added = machine.add_module("cartdemo.sys", 0x7000)
    assert added.size == 0x7000 and added.base > bases[-1]
    assert machine.read_virtual(added.base, 2) == b"MZ"
    assert walk_modules(machine, machine.ps_loaded_module_list)[-1][:3] == (
        "cartdemo.sys",
        added.base,
        0x7000,
    )
    with pytest.raises(ValueError, match="already loaded"):
        machine.add_module("CARTDEMO.SYS")
    removed = machine.remove_module("ACPI.sys")
    assert removed is not None and removed.name == "ACPI.sys"
    assert machine.read_virtual(removed.base, 2) == b""  # its image is unmapped
    assert machine.remove_module("ACPI.sys") is None
    assert machine.remove_module(added.base) == added
    names = [name for name, *_ in walk_modules(machine, machine.ps_loaded_module_list)]
    assert names == ["ntoskrnl.exe", "hal.dll", "kdcom.dll", "disk.sys", "Ntfs.sys", "tcpip.sys"]
    with pytest.raises(ValueError, match="kernel"):
        machine.remove_module("ntoskrnl.exe")


def test_physical_memory_descriptor_matches_the_runs() -> None:
    machine = SimulatedMachine(MachineConfig(seed=6, memory_size_bytes=6 * GIB))
    kdbg = read_kdbg(machine)
    pointer = u64(machine.read_virtual(kdbg.mm_physical_memory_block, 8))
    header = machine.read_virtual(pointer, 0x10)
    count = struct.unpack_from("<I", header)[0]
    descriptor = pull_physical_memory_descriptor(machine.read_virtual(pointer, 0x10 + 0x10 * count))
    assert descriptor.runs == machine.physical.runs == pc_ram_runs(6 * GIB)
    assert descriptor.number_of_pages == sum(run.page_count for run in descriptor.runs)
    # Each run really is readable RAM, and the bytes just past it are not.
    for run in descriptor.runs:
        end = (run.base_page + run.page_count) * PAGE_SIZE
        assert len(machine.read_physical(run.base_page * PAGE_SIZE, 16)) == 16
        assert machine.read_physical(end, 16) == b""


def test_bugcheck_data_is_zero_until_a_bugcheck() -> None:
    machine = SimulatedMachine(MachineConfig(seed=7, processors=2))
    kdbg = read_kdbg(machine)
    assert machine.read_virtual(kdbg.ki_bugcheck_data, 40) == bytes(40)
    assert machine.bugcheck is None
    machine.context(1)[0x80:0x88] = struct.pack("<Q", 3)
    machine.set_bugcheck(0x9F, [3, 0xFFFFA00012345678, 0xFFFFF8057A2F3340], processor=1)
    words = struct.unpack("<5Q", machine.read_virtual(kdbg.ki_bugcheck_data, 40))
    assert words == (0x9F, 3, 0xFFFFA00012345678, 0xFFFFF8057A2F3340, 0)
    assert machine.bugcheck == (0x9F, (3, 0xFFFFA00012345678, 0xFFFFF8057A2F3340, 0))
    assert machine.read_virtual(kdbg.saved_context, AMD64_CONTEXT_SIZE) == bytes(machine.context(1))
    machine.clear_bugcheck()
    assert machine.bugcheck is None


def test_registers_are_plausible() -> None:
    machine = SimulatedMachine(MachineConfig(seed=8, processors=2))
    for number, state in enumerate(machine.processor_states):
        context = machine.context(number)
        assert len(context) == AMD64_CONTEXT_SIZE
        assert struct.unpack_from("<I", context, 0x30)[0] & 0x00100000  # CONTEXT_AMD64
        assert struct.unpack_from("<HH", context, 0x38)[0] == 0x10  # SegCs
        assert struct.unpack_from("<H", context, 0x42)[0] == 0x18  # SegSs
        rip, rsp = u64(context, 0xF8), u64(context, 0x98)
        assert machine.kernel_base <= rip < machine.kernel_base + machine.kernel_size
        assert rip == machine.context_rip(number)
        assert state.stack_limit <= rsp < state.stack_base
        assert machine.translate(rsp) is not None
        assert machine.translate(state.stack_limit - 1) is None  # guard page below the stack
        special = machine.special_registers(number)
        assert len(special) == KSPECIAL_REGISTERS_SIZE >= 0xE0
        assert u64(special, KSpecialRegister.CR3) == machine.cr3
        assert u64(special, KSpecialRegister.CR0) & 0x80000001 == 0x80000001  # PG | PE
        assert machine.read_msr(Msr.EFER, number) == 0xD01
        lstar = machine.read_msr(Msr.LSTAR, number)
        assert lstar is not None
        assert machine.kernel_base <= lstar < machine.kernel_base + machine.kernel_size
        assert machine.read_msr(Msr.GS_BASE, number) == state.kpcr == machine.kpcr_address(number)
        assert u64(special, KSpecialRegister.MSR_GS_BASE) == state.kpcr
        thread = machine.read_virtual(state.thread, 0x60)
        assert u64(thread, Kthread.STACK_BASE) == state.stack_base
    assert machine.read_msr(0xDEADBEEF) is None
    assert not machine.write_msr(0xDEADBEEF, 1)
    assert machine.write_msr(Msr.KERNEL_GS_BASE, 0x1234, 1)
    assert machine.read_msr(Msr.KERNEL_GS_BASE, 1) == 0x1234
    machine.set_kernel_dr7(0x401)
    assert all(u64(machine.special_registers(n), 0x48) == 0x401 for n in range(2))


def test_kuser_shared_data() -> None:
    machine = SimulatedMachine(MachineConfig(seed=9, build_number=19041, processors=3))
    page = machine.read_virtual(0xFFFFF78000000000, PAGE_SIZE)
    assert len(page) == PAGE_SIZE
    assert struct.unpack_from("<I", page, KuserSharedData.NT_PRODUCT_TYPE)[0] == 1
    assert struct.unpack_from("<I", page, KuserSharedData.SUITE_MASK)[0] == 0x110
    assert struct.unpack_from("<I", page, KuserSharedData.NT_BUILD_NUMBER)[0] == 19041
    assert struct.unpack_from("<II", page, KuserSharedData.NT_MAJOR_VERSION) == (10, 0)
    assert struct.unpack_from("<I", page, KuserSharedData.ACTIVE_PROCESSOR_COUNT)[0] == 3
    assert page[0x30:0x44].decode("utf-16-le") == "C:\\Windows"
    assert machine.build_number == 19041


def test_builtin_kernel_image_is_a_pe_with_exports() -> None:
    machine = SimulatedMachine(MachineConfig(seed=10))
    image = parse_pe(machine.read_virtual(machine.kernel_base, machine.kernel_size), mapped=True)
    assert image.machine == 0x8664 and image.size_of_image == machine.kernel_size
    assert image.image_base == machine.kernel_base
    base = machine.kernel_base
    assert base + image.export_rva("DbgBreakPointWithStatus") == machine.breakpoint_with_status
    assert base + image.export_rva("KdDebuggerDataBlock") == machine.kdbg_address
    assert base + image.export_rva("PsLoadedModuleList") == machine.ps_loaded_module_list
    number = machine.read_virtual(base + image.export_rva("NtBuildNumber"), 4)
    assert struct.unpack("<I", number)[0] == 0xF0000000 | 22621
    kernel_entry = u64(machine.read_virtual(machine.ps_loaded_module_list, 8))
    entry_point = u64(machine.read_virtual(kernel_entry + LdrEntry.ENTRY_POINT, 8))
    assert base + image.entry_point_rva == entry_point


def _exposed(machine: SimulatedMachine) -> tuple[object, ...]:
    return (
        machine.kernel_base,
        machine.kdbg_address,
        machine.debugger_data_list,
        machine.cr3,
        machine.modules,
        list(machine.physical.allocated_pages()),
        [
            (bytes(s.context), bytes(s.special_registers), sorted(s.msrs.items()))
            for s in machine.processor_states
        ],
    )


def test_same_seed_same_machine_different_seed_different_kernel() -> None:
    config = MachineConfig(seed=1234, memory_size_bytes=2 * GIB, processors=2)
    first, second = SimulatedMachine(config), SimulatedMachine(config)
    assert _exposed(first) == _exposed(second)
    assert first.add_module("a.sys") == second.add_module("a.sys")
    assert _exposed(first) == _exposed(second)
    bases = {SimulatedMachine(MachineConfig(seed=seed)).kernel_base for seed in range(5)}
    assert len(bases) == 5
    assert all(base % LARGE_PAGE_SIZE == 0 and (base >> 39) & 0x1FF == 0x1F0 for base in bases)
    pinned = SimulatedMachine(MachineConfig(seed=1, kernel_base=0xFFFFF8057A200000))
    assert pinned.kernel_base == 0xFFFFF8057A200000


def test_reset_for_boot_restores_the_boot_state() -> None:
    machine = SimulatedMachine(MachineConfig(seed=12))
    before = _exposed(machine)
    machine.add_module("extra.sys", 0x5000)
    machine.set_bugcheck(0xE2, [])
    machine.write_virtual(machine.kernel_base, b"XX")
    machine.context(0)[0xF8:0x100] = bytes(8)
    machine.reset_for_boot()
    assert _exposed(machine) == before


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(MachineConfigError, match="memory_size_bytes"):
        MachineConfig(memory_size_bytes=16 * MIB)
    with pytest.raises(MachineConfigError, match="processors"):
        MachineConfig(processors=0)
    with pytest.raises(MachineConfigError, match="kernel_base"):
        MachineConfig(kernel_base=0x140000000)
    with pytest.raises(MachineConfigError, match="kernel_base"):
        MachineConfig(kernel_base=0xFFFFF8057A201000)


# --- the fake-nt kernel image -------------------------------------------------------------------


def _map_symbols() -> dict[str, int]:
    """Symbol -> address at the preferred base 0x140000000, from the linker's map file."""
    symbols = {}
    for line in (FAKE_NT / "ntoskrnl.map").read_text().splitlines():
        match = re.match(r"\s*[0-9a-f]{4}:[0-9a-f]{8}\s+(\w+)\s+([0-9a-f]{16})", line)
        if match:
            symbols[match.group(1)] = int(match.group(2), 16)
    return symbols


@needs_fake_nt
def test_fake_nt_loads_relocated_at_a_new_base() -> None:
    machine = SimulatedMachine(
        MachineConfig(seed=21, kernel_image=FAKE_NT_IMAGE, kernel_base=FAKE_NT_BASE)
    )
    delta = FAKE_NT_BASE - 0x140000000
    symbols = {name: address + delta for name, address in _map_symbols().items()}
    assert machine.kernel_base == FAKE_NT_BASE
    assert machine.kdbg_address == symbols["KdDebuggerDataBlock"]
    assert machine.debugger_data_list == symbols["KdpDebuggerDataListHead"]
    assert machine.ps_loaded_module_list == symbols["PsLoadedModuleList"]
    assert machine.breakpoint_with_status == symbols["DbgBreakPointWithStatus"]
    assert machine.read_virtual(machine.breakpoint_with_status, 2) == b"\xcc\xc3"
    header = machine.read_virtual(FAKE_NT_BASE, 0x400)
    assert header[:2] == b"MZ" and u64(header, 0x78 + 24 + 24) == FAKE_NT_BASE  # ImageBase
    # Relocated pointers: the list head's Flink is NtLdrEntry, and back.
    head = machine.read_virtual(machine.ps_loaded_module_list, 16)
    assert u64(head) == symbols["NtLdrEntry"]
    ldr = machine.read_virtual(symbols["NtLdrEntry"], 0xA0)
    assert u64(ldr, 8) == machine.ps_loaded_module_list
    assert u64(ldr, LdrEntry.DLL_BASE) == FAKE_NT_BASE
    assert struct.unpack_from("<I", ldr, LdrEntry.SIZE_OF_IMAGE)[0] == 0xB000
    assert u64(ldr, LdrEntry.ENTRY_POINT) == symbols["KiSystemStartup"]
    # Loader fix-ups: the debugger data list links KDBG both ways; the System process has CR3.
    assert machine.read_virtual(machine.debugger_data_list, 16) == struct.pack(
        "<QQ", machine.kdbg_address, machine.kdbg_address
    )
    process = symbols["KiInitialProcess"]
    assert u64(machine.read_virtual(process + 0x28, 8)) == machine.cr3
    # The CodeView record ntoseye looks for is where the debug directory says.
    image = load_pe_file(FAKE_NT_IMAGE)
    debug_rva, _ = struct.unpack_from("<II", image.data, 0x78 + 24 + 112 + 8 * 6)
    record_rva = struct.unpack_from("<I", machine.read_virtual(FAKE_NT_BASE + debug_rva, 28), 20)
    assert machine.read_virtual(FAKE_NT_BASE + record_rva[0], 4) == b"RSDS"


@needs_fake_nt
def test_fake_nt_kdbg_and_lists_parse() -> None:
    machine = SimulatedMachine(MachineConfig(seed=22, kernel_image=FAKE_NT_IMAGE, processors=2))
    kdbg = read_kdbg(machine)
    assert kdbg.size == 0x368
    assert kdbg.kern_base == machine.kernel_base  # relocated: the base is seed-derived here
    assert kdbg.kern_base != 0x140000000 and kdbg.kern_base % LARGE_PAGE_SIZE == 0
    assert kdbg.breakpoint_with_status == machine.breakpoint_with_status
    assert kdbg.ps_loaded_module_list == machine.ps_loaded_module_list
    lab = machine.read_virtual(kdbg.nt_build_lab, 40).split(b"\0")[0]
    assert lab == b"22621.1.amd64fre.ni_release.220506-1250"
    # Fields the image leaves 0 now point at data the machine added.
    assert kdbg.ki_bugcheck_data and machine.read_virtual(kdbg.ki_bugcheck_data, 40) == bytes(40)
    pointer = u64(machine.read_virtual(kdbg.mm_physical_memory_block, 8))
    descriptor = pull_physical_memory_descriptor(machine.read_virtual(pointer, 0x100))
    assert descriptor.runs == machine.physical.runs
    machine.set_bugcheck(0x1E, [0xC0000005, 1, 2, 3])
    assert struct.unpack("<5Q", machine.read_virtual(kdbg.ki_bugcheck_data, 40))[0] == 0x1E
    # Two processors: processor 0 is the image's KiInitialPcr, processor 1 was added.
    prcbs = struct.unpack("<2Q", machine.read_virtual(kdbg.ki_processor_block, 16))
    assert list(prcbs) == [state.kprcb for state in machine.processor_states]
    first = machine.processor_states[0]
    assert machine.read_virtual(first.kpcr + Kpcr.SELF, 8) == struct.pack("<Q", first.kpcr)
    assert first.stack_limit <= first.rsp < first.stack_base
    # The module list: the image's ntoskrnl.exe entry first, then the simulated drivers.
    walked = walk_modules(machine, machine.ps_loaded_module_list)
    assert [name for name, *_ in walked] == ["ntoskrnl.exe"] + [n for n, _, _ in BOOT_DRIVERS]
    assert walked[0][1:3] == (machine.kernel_base, 0xB000)
    assert machine.modules[0].path == "\\SystemRoot\\system32\\ntoskrnl.exe"
    # The System process is the image's, with the machine's CR3.
    links = u64(machine.read_virtual(kdbg.ps_active_process_head, 8))
    process = links - Eprocess.ACTIVE_PROCESS_LINKS
    assert machine.read_virtual(process + Eprocess.IMAGE_FILE_NAME, 6) == b"System"
    assert u64(machine.read_virtual(process + Eprocess.DIRECTORY_TABLE_BASE, 8)) == machine.cr3


@needs_fake_nt
def test_fake_nt_relocations_cover_every_pointer() -> None:
    image = load_pe_file(FAKE_NT_IMAGE)
    assert image.image_base == 0x140000000
    at_preferred = image.load(0x140000000)
    moved = image.load(FAKE_NT_BASE)
    delta = FAKE_NT_BASE - 0x140000000
    relocated = {rva for rva, _kind in image.relocations}
    assert relocated and all(kind == 10 for _rva, kind in image.relocations)  # DIR64 only
    for rva in relocated:
        assert u64(moved, rva) == (u64(at_preferred, rva) + delta) % (1 << 64)
    # Apart from the fixed-up qwords and the ImageBase field, not a byte changed.
    allowed = {rva + index for rva in relocated for index in range(8)}
    allowed |= set(range(image.nt_headers_offset + 48, image.nt_headers_offset + 56))
    changed = {offset for offset in range(len(moved)) if moved[offset] != at_preferred[offset]}
    assert changed and changed <= allowed


# --- bad PE input -------------------------------------------------------------------------------


def _synthetic_pe(patch: dict[int, int] | None = None) -> bytes:
    """A small valid PE32+ file (headers, .text, .data) without relocations; ``patch`` sets u16
    fields at file offsets (e_lfanew is 0x80: Machine at 0x84, optional magic at 0x98)."""
    text = PeSection(
        name=".text",
        virtual_address=0x1000,
        virtual_size=0x10,
        raw_offset=0,
        raw_size=0,
        characteristics=SECTION_TEXT,
    )
    data = PeSection(
        name=".data",
        virtual_address=0x2000,
        virtual_size=0x300,
        raw_offset=0,
        raw_size=0,
        characteristics=SECTION_DATA,
    )
    headers = bytearray(
        build_pe_headers(
            image_base=0x140000000,
            size_of_image=0x3000,
            entry_point_rva=0x1000,
            sections=[text, data],
            timestamp=1,
        )
    )
    for offset, value in (patch or {}).items():
        struct.pack_into("<H", headers, offset, value)
    body = b"\xcc\xc3".ljust(0x200, b"\0") + b"data".ljust(0x400, b"\0")
    return bytes(headers) + body


def test_synthetic_pe_round_trips() -> None:
    image = parse_pe(_synthetic_pe())
    assert [s.name for s in image.sections] == [".text", ".data"]
    loaded = image.load(0x140000000)
    assert loaded[0x1000:0x1002] == b"\xcc\xc3" and loaded[0x2000:0x2004] == b"data"
    with pytest.raises(PeFormatError, match="cannot move"):
        image.load(0xFFFFF80000000000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a PE image: 0 bytes is shorter than a DOS header"),
        (b"ZM" + bytes(0x3E), "not a PE image: no 'MZ' DOS header"),
        (b"MZ" + bytes(0x3A) + struct.pack("<I", 0x1000), "truncated: e_lfanew 0x1000"),
        (_synthetic_pe()[:0x80] + b"NE\0\0" + _synthetic_pe()[0x84:], "no 'PE\\0\\0' signature"),
        (_synthetic_pe({0x84: 0x014C}), "not an AMD64 image: Machine is 0x014c (i386)"),
        (_synthetic_pe({0x98: 0x010B}), "not PE32+: optional header magic is 0x010b (PE32)"),
        (_synthetic_pe()[:0x500], "truncated section .data: raw data [0x600, 0x900)"),
        (_synthetic_pe()[:0x100], "truncated optional header"),
    ],
)
def test_bad_pe_files_are_named(data: bytes, message: str) -> None:
    with pytest.raises(PeFormatError, match=re.escape(message)):
        parse_pe(data)


def test_bad_pe_errors_are_value_errors_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kernel.exe"
    path.write_bytes(b"MZ" + bytes(10))
    with pytest.raises(ValueError, match=r"kernel\.exe: not a PE image"):
        load_pe_file(path)
    with pytest.raises(PeFormatError, match="cannot read"):
        load_pe_file(tmp_path / "missing.exe")
    with pytest.raises(PeFormatError, match="not a PE image"):
        SimulatedMachine(MachineConfig(kernel_image=path))


def test_a_pe_without_kernel_exports_is_not_a_kernel(tmp_path: Path) -> None:
    path = tmp_path / "driver.sys"
    path.write_bytes(_synthetic_pe())
    with pytest.raises(KernelImageError, match="does not export FakeNtExports"):
        SimulatedMachine(MachineConfig(kernel_image=path))


@needs_fake_nt
def test_unsupported_relocation_types_are_named(tmp_path: Path) -> None:
    data = bytearray(FAKE_NT_IMAGE.read_bytes())
    image = load_pe_file(FAKE_NT_IMAGE)
    reloc = next(s for s in image.sections if s.name == ".reloc")
    entry = reloc.raw_offset + 8  # the first entry of the first block
    (value,) = struct.unpack_from("<H", data, entry)
    struct.pack_into("<H", data, entry, (4 << 12) | (value & 0xFFF))  # IMAGE_REL_BASED_HIGHADJ
    with pytest.raises(PeFormatError, match="unsupported base relocation type 4"):
        parse_pe(bytes(data))
