"""x64 4-level paging as a debugger walks it: page-table entries decoded without an MMU.

A dump of a stopped Windows target must hold the page-table pages a debugger needs to translate
the virtual addresses in it, so cartd walks the target's own tables with physical reads instead
of asking the target to translate (ReadVirtualMemory hides which table pages were used). This
module is the pure half of that walk: given one entry and its level, what comes next. The plan
that reads the entries is `cartd.kd.dump_plans.translate`.

Layouts: Intel SDM vol. 3 section 4.5 (4-level paging, tables 4-15 .. 4-20); the simulator's
`cartd.sim.memory.AddressSpace` builds tables with the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT  # the only base page size on x64
LARGE_PAGE_SIZE = 1 << 21  # 2 MiB: a PDE with PS set
HUGE_PAGE_SIZE = 1 << 30  # 1 GiB: a PDPTE with PS set
ENTRIES_PER_TABLE = 512  # every table is one page of 8-byte entries
PTE_SIZE = 8

PTE_PRESENT = 1 << 0  # P: the entry maps something
PTE_LARGE = 1 << 7  # PS in a PDPTE/PDE: the entry maps a page instead of pointing at a table
# Bits 51..12 hold the frame (MAXPHYADDR is at most 52). In a large-page entry bit 12 is PAT, so
# the frame of a 2 MiB / 1 GiB page is this mask less the page's offset bits.
PTE_FRAME_MASK = 0x000F_FFFF_FFFF_F000
# CR3 holds the PML4's physical address in bits 51..12; bits 11..0 are the PCID (or PWT/PCD)
# and bit 63 is the no-flush hint of a MOV to CR3, never the address (spec section 9).
CR3_TABLE_MASK = PTE_FRAME_MASK

VIRTUAL_ADDRESS_BITS = 48  # 4-level paging translates bits 47..0; 63..48 copy bit 47
VIRTUAL_ADDRESS_END = 1 << 64


class PagingLevel(IntEnum):
    """The four table levels, walked in this order; the value is the shift of the level's index
    in a virtual address (and log2 of what one entry maps)."""

    PML4 = 39  # PML4E -> PDPT
    PDPT = 30  # PDPTE -> PD, or a 1 GiB page
    PD = 21  # PDE -> PT, or a 2 MiB page
    PT = 12  # PTE -> 4 KiB page

    @property
    def entry_span(self) -> int:
        """Bytes of virtual address space one entry of this level covers."""
        return 1 << self.value

    @property
    def allows_large_pages(self) -> bool:
        # PS is reserved in a PML4E and is the PAT bit in a PTE.
        return self in (PagingLevel.PDPT, PagingLevel.PD)


WALK_ORDER = (PagingLevel.PML4, PagingLevel.PDPT, PagingLevel.PD, PagingLevel.PT)


@dataclass(frozen=True, slots=True)
class NextTable:
    """The entry points at the next level's table."""

    table: int  # physical address of the table (page aligned)


@dataclass(frozen=True, slots=True)
class MappedPage:
    """The entry maps the address: where it lands and the size of the page that holds it."""

    physical_address: int
    page_size: int  # PAGE_SIZE, LARGE_PAGE_SIZE or HUGE_PAGE_SIZE


def is_canonical(va: int) -> bool:
    """True when bits 63..47 of ``va`` are all equal, i.e. the CPU can translate it."""
    if not 0 <= va < VIRTUAL_ADDRESS_END:
        return False
    top = va >> (VIRTUAL_ADDRESS_BITS - 1)
    return top == 0 or top == (1 << (65 - VIRTUAL_ADDRESS_BITS)) - 1


def pml4_address(cr3: int) -> int:
    """Physical address of the PML4 named by a CR3 value (PCID and flag bits dropped)."""
    return cr3 & CR3_TABLE_MASK


def table_index(va: int, level: PagingLevel) -> int:
    """Which of a table's 512 entries translates ``va`` at ``level``."""
    return (va >> level.value) & (ENTRIES_PER_TABLE - 1)


def decode_entry(entry: int, level: PagingLevel, va: int) -> NextTable | MappedPage | None:
    """What the ``level`` entry that translates ``va`` says: None when it is not present.

    Software PTEs (transition, prototype, paged out) are "not present" here, as they are to the
    MMU: a page they describe may still be in RAM, but nothing proves which frame holds it.
    """
    if not entry & PTE_PRESENT:
        return None
    if level is PagingLevel.PT or (level.allows_large_pages and entry & PTE_LARGE):
        size = level.entry_span
        frame = entry & PTE_FRAME_MASK & ~(size - 1)
        return MappedPage(frame | (va & (size - 1)), size)
    return NextTable(entry & PTE_FRAME_MASK)


def pfn_of(physical_address: int) -> int:
    """Page frame number of a physical address."""
    return physical_address >> PAGE_SHIFT
