"""The simulated machine's RAM and its x64 page tables.

`PhysicalMemory` is sparse: a 4 KiB page exists only once something non-zero was written to it,
so a machine with 16 GiB of RAM costs a few hundred pages. RAM comes in runs with holes between
them, as on a PC (legacy video/BIOS below 1 MiB, the PCI hole below 4 GiB), and every read or write
stops at the first byte that is not RAM: a KD target answers such requests short, and the host
must learn how far it got.

`AddressSpace` is a 4-level x64 page-table tree (PML4, PDPT, PD, PT) stored in that RAM, as real
hardware has it, so a physical read of a page-table page shows the same entries a walk uses.
`PageAllocator` hands out the physical pages behind page tables and mapped memory, in an order
that is a pure function of its seed.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cartd.kd.debugger_data import PhysicalMemoryDescriptor, PhysicalMemoryRun

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT  # 4 KiB, the only base page size on x64
LARGE_PAGE_SIZE = 1 << 21  # 2 MiB: a PDE with the PS bit
HUGE_PAGE_SIZE = 1 << 30  # 1 GiB: a PDPTE with the PS bit

# x64 physical addresses have at most 52 bits (Intel SDM vol. 3 section 4.1.4, MAXPHYADDR).
MAX_PHYSICAL_ADDRESS = 1 << 52
ADDRESS_SPACE_END = 1 << 64
# Virtual addresses are 48 bits sign-extended to 64 ("canonical"); 4-level paging translates
# bits 47..12, and bits 63..48 must all equal bit 47.
VIRTUAL_ADDRESS_BITS = 48
KERNEL_SPACE_START = 0xFFFF800000000000  # first canonical address of the upper half

# Page-table entry bits (Intel SDM vol. 3 tables 4-15 .. 4-20).
PTE_PRESENT = 1 << 0
PTE_WRITABLE = 1 << 1
PTE_USER = 1 << 2
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6
PTE_LARGE = 1 << 7  # PS: this PDPTE/PDE maps a 1 GiB/2 MiB page instead of pointing at a table
PTE_GLOBAL = 1 << 8
PTE_NO_EXECUTE = 1 << 63
# Bits 51..12 of an entry hold the physical frame; in a large-page entry bit 12 is PAT, so the
# frame mask for those is narrower (see _LEVELS).
PTE_FRAME_MASK = 0x000F_FFFF_FFFF_F000

# A PC firmware map has a handful of RAM runs; a dump header has room for 42. More than this is a
# configuration mistake, not a machine.
MAX_RAM_RUNS = 64

# The PC layout used by `pc_ram_runs`: page 0 and the legacy region 0xA0000..0xFFFFF are not RAM,
# 0x9F000..0x9FFFF is the EBDA, and 3..4 GiB is the PCI/MMIO hole; RAM that would sit in the hole
# is remapped above 4 GiB, as chipsets do.
_LOW_RAM_START = 0x1000
_LOW_RAM_END = 0x9F000
_MAIN_RAM_START = 0x100000
_PCI_HOLE_START = 3 << 30
_HIGH_RAM_START = 4 << 30


def is_canonical(va: int) -> bool:
    """True when bits 63..47 of ``va`` are all equal, i.e. the CPU can use it."""
    top = va >> (VIRTUAL_ADDRESS_BITS - 1)
    return top == 0 or top == (1 << (65 - VIRTUAL_ADDRESS_BITS)) - 1


def canonical(va: int) -> int:
    """Sign-extend a 48-bit address to its canonical 64-bit form (e.g. for PML4 index 0x1F0)."""
    va &= (1 << VIRTUAL_ADDRESS_BITS) - 1
    if va & (1 << (VIRTUAL_ADDRESS_BITS - 1)):
        va |= ADDRESS_SPACE_END - (1 << VIRTUAL_ADDRESS_BITS)
    return va


def pml4_index(va: int) -> int:
    return (va >> 39) & 0x1FF


def page_align_down(address: int) -> int:
    return address & ~(PAGE_SIZE - 1)


def page_align_up(address: int) -> int:
    return (address + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def pc_ram_runs(memory_size_bytes: int) -> tuple[PhysicalMemoryRun, ...]:
    """RAM runs of a PC with ``memory_size_bytes`` of installed memory.

    [4 KiB, 636 KiB), [1 MiB, min(size, 3 GiB)) and, for more than 3 GiB, the rest remapped above
    4 GiB. ``memory_size_bytes`` must be a whole number of MiB, at least 2 MiB.
    """
    if memory_size_bytes % (1 << 20) or memory_size_bytes < 2 << 20:
        raise ValueError(f"memory size {memory_size_bytes:#x} is not a whole number (>= 2) of MiB")
    runs = [
        PhysicalMemoryRun(_LOW_RAM_START >> PAGE_SHIFT, (_LOW_RAM_END - _LOW_RAM_START) >> 12),
        PhysicalMemoryRun(
            _MAIN_RAM_START >> PAGE_SHIFT,
            (min(memory_size_bytes, _PCI_HOLE_START) - _MAIN_RAM_START) >> PAGE_SHIFT,
        ),
    ]
    if memory_size_bytes > _PCI_HOLE_START:
        runs.append(
            PhysicalMemoryRun(
                _HIGH_RAM_START >> PAGE_SHIFT, (memory_size_bytes - _PCI_HOLE_START) >> PAGE_SHIFT
            )
        )
    return tuple(runs)


class PhysicalMemory:
    """Sparse RAM: a set of runs of 4 KiB pages, each page stored only once it holds data.

    Reading a RAM page nobody wrote returns zeros and allocates nothing; writing zeros to such a
    page allocates nothing either. Addresses outside every run are not RAM: reads and writes stop
    there and report how far they got.
    """

    def __init__(self, runs: Iterable[PhysicalMemoryRun]) -> None:
        ordered = tuple(runs)
        if not ordered:
            raise ValueError("physical memory needs at least one RAM run")
        if len(ordered) > MAX_RAM_RUNS:
            raise ValueError(f"{len(ordered)} RAM runs; at most {MAX_RAM_RUNS} are supported")
        previous_end = 0
        for run in ordered:
            if run.page_count <= 0:
                raise ValueError(f"RAM run at page {run.base_page:#x} has no pages")
            if run.base_page < previous_end:
                raise ValueError(
                    f"RAM run at page {run.base_page:#x} overlaps or precedes the previous one"
                )
            previous_end = run.base_page + run.page_count
        if previous_end << PAGE_SHIFT > MAX_PHYSICAL_ADDRESS:
            raise ValueError("RAM runs end above the 52-bit physical address limit")
        self._runs = ordered
        self._run_starts = [run.base_page for run in ordered]
        self._pages: dict[int, bytearray] = {}

    @property
    def runs(self) -> tuple[PhysicalMemoryRun, ...]:
        return self._runs

    @property
    def total_pages(self) -> int:
        """Pages of RAM (not counting holes)."""
        return sum(run.page_count for run in self._runs)

    @property
    def end_address(self) -> int:
        """One past the highest RAM byte."""
        last = self._runs[-1]
        return (last.base_page + last.page_count) << PAGE_SHIFT

    @property
    def allocated_page_count(self) -> int:
        """Pages that actually cost memory in this process (written with non-zero data)."""
        return len(self._pages)

    def descriptor(self) -> PhysicalMemoryDescriptor:
        """The runs as Windows' PHYSICAL_MEMORY_DESCRIPTOR (MmPhysicalMemoryBlock) states them."""
        return PhysicalMemoryDescriptor(number_of_pages=self.total_pages, runs=self._runs)

    def _run_index(self, pfn: int) -> int | None:
        index = bisect.bisect_right(self._run_starts, pfn) - 1
        if index < 0:
            return None
        run = self._runs[index]
        return index if pfn < run.base_page + run.page_count else None

    def is_ram(self, pa: int) -> bool:
        return pa >= 0 and self._run_index(pa >> PAGE_SHIFT) is not None

    def ram_bytes_at(self, pa: int, size: int) -> int:
        """How many of the ``size`` bytes starting at ``pa`` are RAM before the first hole."""
        _check_range(pa, size)
        index = self._run_index(pa >> PAGE_SHIFT)
        if index is None:
            return 0
        end = pa + size
        reach = pa
        while index < len(self._runs):
            run = self._runs[index]
            if run.base_page << PAGE_SHIFT > reach:
                break  # a hole between this run and the previous one
            reach = (run.base_page + run.page_count) << PAGE_SHIFT
            if reach >= end:
                return size
            index += 1
        return reach - pa

    def read(self, pa: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``pa``; shorter if a hole (or the end of RAM) comes first."""
        length = self.ram_bytes_at(pa, size)
        out = bytearray(length)
        done = 0
        while done < length:
            address = pa + done
            offset = address & (PAGE_SIZE - 1)
            chunk = min(length - done, PAGE_SIZE - offset)
            page = self._pages.get(address >> PAGE_SHIFT)
            if page is not None:
                out[done : done + chunk] = page[offset : offset + chunk]
            done += chunk
        return bytes(out)

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``pa`` up to the first hole; returns how many bytes were written."""
        view = memoryview(data).cast("B")
        length = self.ram_bytes_at(pa, len(view))
        done = 0
        while done < length:
            address = pa + done
            offset = address & (PAGE_SIZE - 1)
            chunk = min(length - done, PAGE_SIZE - offset)
            piece = view[done : done + chunk]
            pfn = address >> PAGE_SHIFT
            page = self._pages.get(pfn)
            if page is None:
                # Zeros into a page nobody wrote change nothing: keep it unallocated, so that
                # clearing memory (or a debugger filling it with zeros) costs nothing.
                if piece.tobytes().count(0) != chunk:
                    page = self._pages[pfn] = bytearray(PAGE_SIZE)
                    page[offset : offset + chunk] = piece
            else:
                page[offset : offset + chunk] = piece
            done += chunk
        return length

    def discard_page(self, pfn: int) -> None:
        """Forget a page's contents (it reads as zeros again and costs nothing)."""
        self._pages.pop(pfn, None)

    def allocated_pages(self) -> Iterator[tuple[int, bytes]]:
        """(page frame number, contents) of every allocated page, in ascending order."""
        for pfn in sorted(self._pages):
            yield pfn, bytes(self._pages[pfn])


def _check_range(address: int, size: int) -> None:
    if address < 0 or size < 0:
        raise ValueError(f"negative address or size ({address:#x}, {size:#x})")


class OutOfPhysicalMemory(RuntimeError):
    """The page allocator has no free RAM page (or aligned block) left."""


class PageAllocator:
    """Hands out free physical pages of a `PhysicalMemory`, deterministically.

    With an ``rng`` the pages are scattered over all of RAM, as they are on a running Windows
    machine (so virtual and physical layouts differ, and a walk that ignores the page tables gives
    wrong bytes); without one they come in ascending order. Pages below ``lowest_address`` are
    left alone, as Windows leaves the firmware's first megabyte alone.
    """

    # Random picks before falling back to a linear scan: with memory mostly free a pick almost
    # always succeeds at once; when it is nearly full the scan guarantees progress.
    _RANDOM_ATTEMPTS = 64

    def __init__(
        self,
        memory: PhysicalMemory,
        *,
        rng: random.Random | None = None,
        lowest_address: int = _MAIN_RAM_START,
    ) -> None:
        self._memory = memory
        self._rng = rng
        self._used: set[int] = set()
        lowest_pfn = page_align_up(lowest_address) >> PAGE_SHIFT
        self._runs: list[PhysicalMemoryRun] = []
        for run in memory.runs:
            start = max(run.base_page, lowest_pfn)
            end = run.base_page + run.page_count
            if start < end:
                self._runs.append(PhysicalMemoryRun(start, end - start))
        if not self._runs:
            raise ValueError(f"no RAM at or above {lowest_address:#x} to allocate from")
        self._starts = [run.base_page for run in self._runs]
        self._cumulative: list[int] = []
        total = 0
        for run in self._runs:
            self._cumulative.append(total)
            total += run.page_count
        self._total = total

    @property
    def memory(self) -> PhysicalMemory:
        return self._memory

    @property
    def used_page_count(self) -> int:
        return len(self._used)

    @property
    def free_page_count(self) -> int:
        return self._total - len(self._used)

    def is_used(self, pa: int) -> bool:
        return pa >> PAGE_SHIFT in self._used

    def allocate(self) -> int:
        """Physical address of a free page, which reads as zeros."""
        pfn = self._pick_random_page() if self._rng is not None else None
        if pfn is None:
            pfn = self._first_free_block(1, 1)
        self._take(pfn, 1)
        return pfn << PAGE_SHIFT

    def allocate_block(self, page_count: int, alignment_pages: int = 1) -> int:
        """Physical address of ``page_count`` free contiguous pages aligned to ``alignment_pages``
        pages (e.g. 512 pages for a 2 MiB large page); they read as zeros."""
        if page_count <= 0 or alignment_pages <= 0:
            raise ValueError("page count and alignment must be positive")
        pfn = None
        if self._rng is not None:
            pfn = self._pick_random_block(page_count, alignment_pages)
        if pfn is None:
            pfn = self._first_free_block(page_count, alignment_pages)
        self._take(pfn, page_count)
        return pfn << PAGE_SHIFT

    def reserve(self, pa: int, size: int) -> None:
        """Mark the pages covering [pa, pa + size) as used without clearing them."""
        for pfn in range(pa >> PAGE_SHIFT, page_align_up(pa + size) >> PAGE_SHIFT):
            self._used.add(pfn)

    def free(self, pa: int, size: int = PAGE_SIZE) -> None:
        """Give pages back; they become free for later allocations."""
        for pfn in range(pa >> PAGE_SHIFT, page_align_up(pa + size) >> PAGE_SHIFT):
            self._used.discard(pfn)

    def _take(self, pfn: int, count: int) -> None:
        for page in range(pfn, pfn + count):
            self._used.add(page)
            # A debugger may have scribbled on a free page; a fresh page must read as zeros
            # (a new page table full of garbage would map random memory).
            self._memory.discard_page(page)

    def _pick_random_page(self) -> int | None:
        assert self._rng is not None
        for _ in range(self._RANDOM_ATTEMPTS):
            index = self._rng.randrange(self._total)
            run_index = bisect.bisect_right(self._cumulative, index) - 1
            pfn = self._runs[run_index].base_page + index - self._cumulative[run_index]
            if pfn not in self._used:
                return pfn
        return None

    def _aligned_blocks(self, count: int, align: int) -> list[tuple[int, int]]:
        """(first aligned pfn, number of candidate blocks) for every run that fits one."""
        blocks = []
        for run in self._runs:
            first = -(-run.base_page // align) * align
            end = run.base_page + run.page_count
            if first + count <= end:
                blocks.append((first, (end - count - first) // align + 1))
        return blocks

    def _block_is_free(self, pfn: int, count: int) -> bool:
        return all(page not in self._used for page in range(pfn, pfn + count))

    def _pick_random_block(self, count: int, align: int) -> int | None:
        assert self._rng is not None
        blocks = self._aligned_blocks(count, align)
        total = sum(number for _, number in blocks)
        if total == 0:
            return None
        for _ in range(self._RANDOM_ATTEMPTS):
            index = self._rng.randrange(total)
            for first, number in blocks:
                if index < number:
                    pfn = first + index * align
                    break
                index -= number
            if self._block_is_free(pfn, count):
                return pfn
        return None

    def _first_free_block(self, count: int, align: int) -> int:
        for first, number in self._aligned_blocks(count, align):
            for block in range(number):
                pfn = first + block * align
                if self._block_is_free(pfn, count):
                    return pfn
        raise OutOfPhysicalMemory(
            f"no free block of {count} page(s) aligned to {align} page(s) "
            f"({self.free_page_count} of {self._total} pages free)"
        )


class PageFaultError(LookupError):
    """A virtual address the simulator itself needed is not mapped (a bug in a builder)."""

    def __init__(self, va: int) -> None:
        super().__init__(f"virtual address {va:#018x} is not mapped")
        self.va = va


@dataclass(frozen=True, slots=True)
class Translation:
    """Where a virtual address lands, and how the page that holds it is mapped."""

    physical_address: int
    page_size: int  # PAGE_SIZE, LARGE_PAGE_SIZE or HUGE_PAGE_SIZE
    writable: bool
    executable: bool


# (shift of the level's index in the VA, size mapped by one entry, whether PS is allowed there)
_LEVELS = (
    (39, 1 << 39, False),  # PML4E -> PDPT
    (30, HUGE_PAGE_SIZE, True),  # PDPTE -> PD or a 1 GiB page
    (21, LARGE_PAGE_SIZE, True),  # PDE -> PT or a 2 MiB page
    (12, PAGE_SIZE, False),  # PTE -> 4 KiB page
)
_TABLE_ENTRY_FLAGS = PTE_PRESENT | PTE_WRITABLE | PTE_ACCESSED


class AddressSpace:
    """An x64 4-level page-table tree in `PhysicalMemory`, rooted at ``cr3``.

    `map` builds it (taking page-table pages from the allocator); `walk`/`translate` read it as
    the MMU does, honouring 2 MiB and 1 GiB large pages built by anyone. Debugger writes ignore
    the writable bit, as KD's own copy routine does, so a host can plant int3 in code pages.
    """

    def __init__(
        self, memory: PhysicalMemory, allocator: PageAllocator, *, cr3: int | None = None
    ) -> None:
        self._memory = memory
        self._allocator = allocator
        self._cr3 = allocator.allocate() if cr3 is None else cr3 & PTE_FRAME_MASK
        self._self_map_index: int | None = None

    @property
    def memory(self) -> PhysicalMemory:
        return self._memory

    @property
    def allocator(self) -> PageAllocator:
        return self._allocator

    @property
    def cr3(self) -> int:
        """Physical address of the PML4 (what CR3 holds; no PCID bits)."""
        return self._cr3

    # --- reading ---------------------------------------------------------------------------------

    def _entry(self, table: int, index: int) -> int:
        raw = self._memory.read(table + 8 * index, 8)
        # A table outside RAM (a corrupt entry written by a debugger) reads as "not present".
        return int.from_bytes(raw, "little") if len(raw) == 8 else 0

    def walk(self, va: int) -> Translation | None:
        """Translate ``va`` as the MMU would; None if it is not canonical or not mapped."""
        _check_virtual(va)
        if not is_canonical(va):
            return None
        table = self._cr3
        writable = True
        executable = True
        for shift, size, large_allowed in _LEVELS:
            entry = self._entry(table, (va >> shift) & 0x1FF)
            if not entry & PTE_PRESENT:
                return None
            writable = writable and bool(entry & PTE_WRITABLE)
            executable = executable and not entry & PTE_NO_EXECUTE
            if shift == 12 or (large_allowed and entry & PTE_LARGE):
                frame = entry & PTE_FRAME_MASK & ~(size - 1)
                return Translation(frame | (va & (size - 1)), size, writable, executable)
            table = entry & PTE_FRAME_MASK
        raise AssertionError("unreachable: the PTE level always returns")

    def translate(self, va: int) -> int | None:
        """Physical address of ``va``, or None."""
        translation = self.walk(va)
        return None if translation is None else translation.physical_address

    def read_virtual(self, va: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``va``; shorter at the first unmapped page or non-RAM byte."""
        _check_virtual(va)
        if size < 0:
            raise ValueError(f"negative size {size}")
        out = bytearray()
        while size > 0 and va < ADDRESS_SPACE_END:
            translation = self.walk(va)
            if translation is None:
                break
            chunk = min(size, translation.page_size - (va & (translation.page_size - 1)))
            data = self._memory.read(translation.physical_address, chunk)
            out += data
            if len(data) < chunk:
                break
            va += chunk
            size -= chunk
        return bytes(out)

    def write_virtual(self, va: int, data: bytes | bytearray | memoryview) -> int:
        """Write up to the first unmapped page or non-RAM byte; returns bytes written."""
        _check_virtual(va)
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view) and va + done < ADDRESS_SPACE_END:
            translation = self.walk(va + done)
            if translation is None:
                break
            offset = (va + done) & (translation.page_size - 1)
            chunk = min(len(view) - done, translation.page_size - offset)
            written = self._memory.write(translation.physical_address, view[done : done + chunk])
            done += written
            if written < chunk:
                break
        return done

    def read_u64(self, va: int) -> int:
        """A qword the caller knows is mapped; raises `PageFaultError` otherwise."""
        raw = self.read_virtual(va, 8)
        if len(raw) != 8:
            raise PageFaultError(va + len(raw))
        return int.from_bytes(raw, "little")

    def write_exact(self, va: int, data: bytes | bytearray) -> None:
        """Write bytes the caller knows are mapped; raises `PageFaultError` otherwise."""
        written = self.write_virtual(va, data)
        if written != len(data):
            raise PageFaultError(va + written)

    def write_u64(self, va: int, value: int) -> None:
        self.write_exact(va, value.to_bytes(8, "little"))

    # --- building --------------------------------------------------------------------------------

    def map(
        self,
        va: int,
        pa: int,
        size: int,
        *,
        writable: bool = True,
        executable: bool = True,
        large_pages: bool = False,
        replace: bool = False,
    ) -> None:
        """Map [va, va + size) to [pa, pa + size).

        With ``large_pages`` every stretch where both addresses are 1 GiB (2 MiB) aligned and
        enough bytes remain is mapped by one PDPTE (PDE) with the PS bit. Mapping over an existing
        mapping raises unless ``replace`` (4 KiB pages only). The physical range need not be RAM
        (MMIO is mapped the same way); reads there just come back short.
        """
        self._check_map_range(va, size)
        if pa % PAGE_SIZE or pa < 0 or pa + size > MAX_PHYSICAL_ADDRESS:
            raise ValueError(f"physical address {pa:#x} (+{size:#x}) is not a usable page range")
        flags = PTE_PRESENT | PTE_ACCESSED | PTE_DIRTY
        if writable:
            flags |= PTE_WRITABLE
        if not executable:
            flags |= PTE_NO_EXECUTE
        done = 0
        while done < size:
            page_size = PAGE_SIZE
            if large_pages:
                for candidate in (HUGE_PAGE_SIZE, LARGE_PAGE_SIZE):
                    aligned = (va + done) % candidate == 0 and (pa + done) % candidate == 0
                    if aligned and size - done >= candidate:
                        page_size = candidate
                        break
            self._set_leaf(va + done, pa + done, page_size, flags, replace=replace)
            done += page_size

    def map_new(
        self, va: int, size: int, *, writable: bool = True, executable: bool = True
    ) -> list[int]:
        """Map fresh 4 KiB pages from the allocator at [va, va + size); returns their physical
        addresses in virtual order."""
        self._check_map_range(va, size)
        frames = []
        for offset in range(0, size, PAGE_SIZE):
            pa = self._allocator.allocate()
            self.map(va + offset, pa, PAGE_SIZE, writable=writable, executable=executable)
            frames.append(pa)
        return frames

    def unmap(self, va: int, size: int) -> list[tuple[int, int]]:
        """Remove the mappings of [va, va + size); returns (physical base, size) of every page
        that was mapped there, so the caller can free them. Page tables are kept. A large page
        must lie wholly inside the range."""
        self._check_map_range(va, size, allow_self_map=False)
        removed: list[tuple[int, int]] = []
        done = 0
        while done < size:
            location = self._leaf_location(va + done)
            if location is None:
                done += PAGE_SIZE
                continue
            entry_pa, page_size, entry = location
            start = (va + done) & ~(page_size - 1)
            if start < va or start + page_size > va + size:
                raise ValueError(f"{page_size:#x}-byte page at {start:#x} is only partly unmapped")
            self._memory.write(entry_pa, bytes(8))
            removed.append((entry & PTE_FRAME_MASK & ~(page_size - 1), page_size))
            done = start + page_size - va
        return removed

    def install_self_map(self, index: int) -> int:
        """Point PML4[index] back at the PML4, as Windows does, and return the resulting PTE base
        (the virtual address of the PTE of virtual address 0; KDBG.PteBase)."""
        if not 0x100 <= index <= 0x1FF:
            raise ValueError(f"self-map index {index:#x} is not in the kernel half")
        entry_pa = self._cr3 + 8 * index
        if self._entry(self._cr3, index) & PTE_PRESENT:
            raise ValueError(f"PML4 entry {index:#x} is already in use")
        entry = self._cr3 | PTE_PRESENT | PTE_WRITABLE | PTE_ACCESSED | PTE_DIRTY | PTE_NO_EXECUTE
        self._memory.write(entry_pa, entry.to_bytes(8, "little"))
        self._self_map_index = index
        return canonical(index << 39)

    def _check_map_range(self, va: int, size: int, *, allow_self_map: bool = False) -> None:
        _check_virtual(va)
        if size <= 0 or size % PAGE_SIZE or va % PAGE_SIZE:
            raise ValueError(f"mapping {va:#x} (+{size:#x}) is not whole pages")
        last = va + size - 1
        if last >= ADDRESS_SPACE_END or not (is_canonical(va) and is_canonical(last)):
            raise ValueError(f"range {va:#x}..{last:#x} is not canonical")
        if (va >> 63) != (last >> 63):
            raise ValueError(f"range {va:#x}..{last:#x} crosses the non-canonical hole")
        if self._self_map_index is not None and not allow_self_map:
            for index in range(pml4_index(va), pml4_index(last) + 1):
                if index == self._self_map_index:
                    raise ValueError(f"range {va:#x}..{last:#x} overlaps the page-table self-map")

    def _set_leaf(self, va: int, pa: int, page_size: int, flags: int, *, replace: bool) -> None:
        table = self._cr3
        for shift, size, _large in _LEVELS:
            entry_pa = table + 8 * ((va >> shift) & 0x1FF)
            entry = self._entry(table, (va >> shift) & 0x1FF)
            if size == page_size:
                if entry & PTE_PRESENT:
                    is_table = shift != 12 and not entry & PTE_LARGE
                    if is_table or not replace or page_size != PAGE_SIZE:
                        raise ValueError(f"{va:#x} is already mapped")
                leaf = pa | flags | (PTE_LARGE if page_size != PAGE_SIZE else 0)
                self._memory.write(entry_pa, leaf.to_bytes(8, "little"))
                return
            if entry & PTE_PRESENT:
                if entry & PTE_LARGE:
                    raise ValueError(f"{va:#x} is already mapped by a {size:#x}-byte page")
                table = entry & PTE_FRAME_MASK
            else:
                new_table = self._allocator.allocate()
                entry = new_table | _TABLE_ENTRY_FLAGS
                self._memory.write(entry_pa, entry.to_bytes(8, "little"))
                table = new_table
        raise AssertionError(f"no paging level maps {page_size:#x}-byte pages")

    def _leaf_location(self, va: int) -> tuple[int, int, int] | None:
        """(physical address of the leaf entry, page size, entry) for a mapped ``va``."""
        table = self._cr3
        for shift, size, large_allowed in _LEVELS:
            index = (va >> shift) & 0x1FF
            entry = self._entry(table, index)
            if not entry & PTE_PRESENT:
                return None
            if shift == 12 or (large_allowed and entry & PTE_LARGE):
                return table + 8 * index, size, entry
            table = entry & PTE_FRAME_MASK
        return None


def _check_virtual(va: int) -> None:
    if not 0 <= va < ADDRESS_SPACE_END:
        raise ValueError(f"virtual address {va:#x} is not a 64-bit unsigned value")
