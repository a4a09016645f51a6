"""The byte layout of a 64-bit Windows crash dump (`.dmp`): the header and the bitmap summary.

Only the layout lives here; `dump_store` decides which of the two layouts a dump gets and writes
the files. Offsets and magic numbers are from spec kd-serial-and-dumps.md section 10, which checks
them against kdmp-parser's static_asserted structs (KDMP), volatility3's crash64.json and
crash_common.json (VOL), QEMU's win_dump_defs.h (QDMP) and Bin2Dmp's dmp.h (B2D).

- DUMP_HEADER64 is 0x2000 bytes. Every byte cartd does not set keeps the "PAGE" fill that
  Windows leaves in unused space (KDMP; B2D fills the same way); every field kdmp-parser,
  volatility3 or WinDbg read is set explicitly, and so are the padding and flag words that a
  "PAGE" would give a meaning to.
- Full dump (DumpType 1): the pages of every physical memory run follow the header back to back,
  in run order; holes between runs take no room in the file.
- Bitmap dump (DumpType 5): an "SDMP" summary at 0x2000, a bitmap with one bit per PFN
  (LSB first), then the present pages in ascending PFN order from the first page boundary after
  the bitmap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from cartd.kd.context import AMD64_CONTEXT_SIZE, Amd64Register

PAGE_SIZE = 0x1000  # x64 small page; a PFN is a physical address >> 12
HEADER_SIZE = 0x2000  # sizeof(DUMP_HEADER64) (KDMP static_assert, VOL headerpages=2)

DUMP_SIGNATURE = 0x45474150  # "PAGE": Signature, and the fill of every unused header byte
VALID_DUMP_64 = 0x34365544  # "DU64": ValidDump of a 64-bit dump ("DUMP" is 32-bit)
IMAGE_FILE_MACHINE_AMD64 = 0x8664  # MachineImageType of an x64 target
SUMMARY_SIGNATURE = 0x504D4453  # "SDMP": bitmap summary Signature (KDMP also accepts "FDMP")
SUMMARY_VALID_DUMP = 0x504D5544  # "DUMP": bitmap summary ValidDump

# PhysicalMemoryBlockBuffer is 700 bytes: NumberOfRuns, pad, NumberOfPages (0x10 bytes), then
# 16-byte runs: (700 - 0x10) // 0x10 = 42. QDMP squeezes a 43rd into the 4 padding bytes after
# the buffer; cartd keeps to the declared size.
MAX_PHYSICAL_MEMORY_RUNS = 42
EXCEPTION_RECORD64_SIZE = 0x98  # sizeof(EXCEPTION_RECORD64) (KDMP static_assert)
COMMENT_FIELD_SIZE = 128  # Comment[128]: ASCII, NUL-terminated, so 127 characters at most

# What a dump's bitmap must be a whole number of. kdmp-parser reads Pages / 8 bytes (rounding
# down) and volatility3 reads (BitmapSize + 31) // 32 ULONGs, so with a multiple of 32 both read
# exactly the bits written.
_BITMAP_BITS_GRANULE = 32


class DumpType(IntEnum):
    """DUMP_HEADER64.DumpType values cartd writes: the two every validator reads (spec 10)."""

    FULL = 1  # FullDump (KDMP DumpType_t; VOL supported_dumptypes)
    BITMAP = 5  # BMPDump (KDMP DumpType_t; VOL supported_dumptypes)


class _Header(IntEnum):
    """Byte offsets in DUMP_HEADER64 (spec section 10); u64 unless noted."""

    SIGNATURE = 0x000  # Signature (u32)
    VALID_DUMP = 0x004  # ValidDump (u32)
    MAJOR_VERSION = 0x008  # MajorVersion (u32)
    MINOR_VERSION = 0x00C  # MinorVersion (u32)
    DIRECTORY_TABLE_BASE = 0x010  # DirectoryTableBase
    PFN_DATABASE = 0x018  # PfnDatabase
    PS_LOADED_MODULE_LIST = 0x020  # PsLoadedModuleList
    PS_ACTIVE_PROCESS_HEAD = 0x028  # PsActiveProcessHead
    MACHINE_IMAGE_TYPE = 0x030  # MachineImageType (u32)
    NUMBER_PROCESSORS = 0x034  # NumberProcessors (u32)
    BUGCHECK_CODE = 0x038  # BugCheckCode (u32, then 4 bytes of padding)
    BUGCHECK_PARAMETERS = 0x040  # BugCheckParameter1..4 (4 x u64)
    VERSION_USER = 0x060  # VersionUser[32]
    KD_DEBUGGER_DATA_BLOCK = 0x080  # KdDebuggerDataBlock
    PHYSICAL_MEMORY_BLOCK = 0x088  # PhysicalMemoryBlockBuffer[700]
    CONTEXT_RECORD = 0x348  # ContextRecord[3000]
    EXCEPTION = 0xF00  # Exception (EXCEPTION_RECORD64)
    DUMP_TYPE = 0xF98  # DumpType (u32, then 4 bytes of padding)
    REQUIRED_DUMP_SPACE = 0xFA0  # RequiredDumpSpace: the file's size
    SYSTEM_TIME = 0xFA8  # SystemTime (FILETIME)
    COMMENT = 0xFB0  # Comment[128]
    SYSTEM_UP_TIME = 0x1030  # SystemUpTime
    MINI_DUMP_FIELDS = 0x1038  # MiniDumpFields (u32)
    SECONDARY_DATA_STATE = 0x103C  # SecondaryDataState (u32)
    PRODUCT_TYPE = 0x1040  # ProductType (u32)
    SUITE_MASK = 0x1044  # SuiteMask (u32)
    WRITER_STATUS = 0x1048  # WriterStatus (u32)
    UNUSED1 = 0x104C  # Unused1 (u8)
    KD_SECONDARY_VERSION = 0x104D  # KdSecondaryVersion (u8)
    UNUSED = 0x104E  # Unused[2]
    ATTRIBUTES = 0x1050  # Attributes (u32; KDMP, newer dumps)
    BOOT_ID = 0x1054  # BootId (u32; KDMP, newer dumps)


# PHYSICAL_MEMORY_DESCRIPTOR64 inside PhysicalMemoryBlockBuffer: NumberOfRuns u32, pad u32,
# NumberOfPages u64, then Run[i] = {BasePage u64, PageCount u64} (KDMP PHYSMEM_DESC; spec 9, 10).
_MEMORY_DESCRIPTOR = struct.Struct("<IIQ")
_MEMORY_RUN = struct.Struct("<QQ")

# _SUMMARY_DUMP / BMP_HEADER64 at 0x2000 (KDMP, VOL crash_common.json): Signature u32, ValidDump
# u32, DumpOptions u32 and reserved bytes to 0x20, FirstPage u64 (VOL: HeaderSize) at 0x20,
# TotalPresentPages u64 (VOL: Pages) at 0x28, Pages u64 (VOL: BitmapSize; the number of bits) at
# 0x30, then the bitmap at 0x38.
_SUMMARY = struct.Struct("<II24xQQQ")


class PhysicalRun(NamedTuple):
    """One run of a PHYSICAL_MEMORY_DESCRIPTOR64: pages [base_page, base_page + page_count)."""

    base_page: int
    page_count: int

    @property
    def end_page(self) -> int:
        return self.base_page + self.page_count


@dataclass(frozen=True, slots=True, kw_only=True)
class DumpHeader:
    """What the caller knows about the target for a dump's header; `encode_header` lays it out.

    Where each value comes from on a live target (spec sections 9 and 10): the versions from
    GetVersion, `directory_table_base` from KSPECIAL_REGISTERS.Cr3, the list heads and
    `pfn_database` from KDDEBUGGER_DATA64 (the PFN database dereferenced once), the runs from
    MmPhysicalMemoryBlock, `context` from GetContext (0x4D0 bytes as the target sent them),
    `exception_record` the first 0x98 bytes of the state change's DBGKM_EXCEPTION64 union,
    `product_type` and `suite_mask` from KUSER_SHARED_DATA, `system_time` a FILETIME.

    Runs must be in ascending order without overlaps (as Windows keeps them), so the full dump's
    run order is also PFN order.
    """

    major_version: int  # 0xF for every NT kernel
    minor_version: int  # the build number
    directory_table_base: int
    pfn_database: int
    ps_loaded_module_list: int
    ps_active_process_head: int
    number_processors: int
    bugcheck_code: int
    bugcheck_parameters: tuple[int, int, int, int]
    kd_debugger_data_block: int  # virtual address of KDDEBUGGER_DATA64
    physical_memory_runs: tuple[PhysicalRun, ...]
    context: bytes
    exception_record: bytes
    system_time: int
    system_up_time: int
    product_type: int
    suite_mask: int
    kd_secondary_version: int
    comment: str = ""  # for example "cartd 0.1.0 over serial:/dev/ttyUSB0"
    machine_image_type: int = IMAGE_FILE_MACHINE_AMD64

    def __post_init__(self) -> None:
        # Callers (and the progress file) may hand in plain tuples or lists; keep PhysicalRuns.
        runs = tuple(PhysicalRun(*run) for run in self.physical_memory_runs)
        object.__setattr__(self, "physical_memory_runs", runs)
        parameters = tuple(self.bugcheck_parameters)
        if len(parameters) != 4:
            raise ValueError(f"a bugcheck has 4 parameters, not {len(parameters)}")
        object.__setattr__(self, "bugcheck_parameters", parameters)
        for name, bits in _FIELD_BITS.items():
            _check_unsigned(name, getattr(self, name), bits)
        for index, parameter in enumerate(parameters, start=1):
            _check_unsigned(f"bugcheck parameter {index}", parameter, 64)
        _check_runs(runs)
        _check_context(self.context)
        if len(self.exception_record) != EXCEPTION_RECORD64_SIZE:
            raise ValueError(
                f"an EXCEPTION_RECORD64 is {EXCEPTION_RECORD64_SIZE:#x} bytes, "
                f"not {len(self.exception_record):#x}"
            )
        _encode_comment(self.comment)

    @property
    def total_pages(self) -> int:
        """Pages in all runs: what a full dump holds."""
        return sum(run.page_count for run in self.physical_memory_runs)


# Width in bits of every integer field of DumpHeader except the runs and bugcheck parameters.
_FIELD_BITS = {
    "major_version": 32,
    "minor_version": 32,
    "directory_table_base": 64,
    "pfn_database": 64,
    "ps_loaded_module_list": 64,
    "ps_active_process_head": 64,
    "number_processors": 32,
    "bugcheck_code": 32,
    "kd_debugger_data_block": 64,
    "system_time": 64,
    "system_up_time": 64,
    "product_type": 32,
    "suite_mask": 32,
    "kd_secondary_version": 8,
    "machine_image_type": 32,
}


def _check_unsigned(name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be an unsigned {bits}-bit integer, not {value!r}")


def _check_runs(runs: tuple[PhysicalRun, ...]) -> None:
    if not runs:
        raise ValueError("a dump needs at least one physical memory run")
    if len(runs) > MAX_PHYSICAL_MEMORY_RUNS:
        raise ValueError(
            f"{len(runs)} physical memory runs do not fit in a dump header "
            f"(PhysicalMemoryBlockBuffer holds {MAX_PHYSICAL_MEMORY_RUNS})"
        )
    previous_end = 0
    for base_page, page_count in runs:
        _check_unsigned("a run's base page", base_page, 64)
        _check_unsigned("a run's page count", page_count, 64)
        if page_count == 0:
            raise ValueError(f"the run at page {base_page:#x} has no pages")
        if base_page < previous_end:
            raise ValueError(
                f"the run at page {base_page:#x} overlaps or precedes the one before it: "
                "runs must be in ascending order"
            )
        previous_end = base_page + page_count
    # The bitmap summary and the PFN arithmetic of readers stay within 64 bits.
    _check_unsigned("the end of the last run", previous_end, 52)


def _check_context(context: bytes) -> None:
    if len(context) != AMD64_CONTEXT_SIZE:
        raise ValueError(f"an x64 CONTEXT is {AMD64_CONTEXT_SIZE:#x} bytes, not {len(context):#x}")
    # kdmp-parser rejects a dump whose CONTEXT.MxCsr (+0x34) differs from FltSave.MxCsr
    # (+0x118, which KDMP calls MxCsr2): its sign that the record is a real CONTEXT.
    mx_csr = int.from_bytes(context[Amd64Register.MX_CSR : Amd64Register.MX_CSR + 4], "little")
    flt_save_mx_csr = int.from_bytes(
        context[Amd64Register.FLT_MX_CSR : Amd64Register.FLT_MX_CSR + 4], "little"
    )
    if mx_csr != flt_save_mx_csr:
        raise ValueError(
            f"CONTEXT.MxCsr ({mx_csr:#x} at +0x34) differs from FltSave.MxCsr "
            f"({flt_save_mx_csr:#x} at +0x118); kdmp-parser would reject the dump"
        )


def _encode_comment(comment: str) -> bytes:
    try:
        encoded = comment.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"a dump comment is ASCII, {comment!r} is not") from None
    if b"\0" in encoded:
        raise ValueError(f"a dump comment cannot contain a NUL: {comment!r}")
    if len(encoded) >= COMMENT_FIELD_SIZE:
        raise ValueError(
            f"a dump comment holds at most {COMMENT_FIELD_SIZE - 1} characters, "
            f"not {len(encoded)}: {comment!r}"
        )
    return encoded.ljust(COMMENT_FIELD_SIZE, b"\0")


def encode_header(header: DumpHeader, dump_type: DumpType, required_dump_space: int) -> bytes:
    """The 0x2000-byte DUMP_HEADER64; `required_dump_space` is the size of the whole file."""
    _check_unsigned("required_dump_space", required_dump_space, 64)
    block = bytearray(DUMP_SIGNATURE.to_bytes(4, "little") * (HEADER_SIZE // 4))
    runs = header.physical_memory_runs

    def put(offset: _Header, fmt: str, *values: int) -> None:
        struct.pack_into("<" + fmt, block, offset, *values)

    put(_Header.SIGNATURE, "II", DUMP_SIGNATURE, VALID_DUMP_64)
    put(_Header.MAJOR_VERSION, "II", header.major_version, header.minor_version)
    put(_Header.DIRECTORY_TABLE_BASE, "Q", header.directory_table_base)
    put(_Header.PFN_DATABASE, "Q", header.pfn_database)
    put(_Header.PS_LOADED_MODULE_LIST, "Q", header.ps_loaded_module_list)
    put(_Header.PS_ACTIVE_PROCESS_HEAD, "Q", header.ps_active_process_head)
    put(_Header.MACHINE_IMAGE_TYPE, "II", header.machine_image_type, header.number_processors)
    # BugCheckCode and its padding are the first qword of the KiBugCheckData image (spec 10).
    put(_Header.BUGCHECK_CODE, "Q", header.bugcheck_code)
    put(_Header.BUGCHECK_PARAMETERS, "4Q", *header.bugcheck_parameters)
    block[_Header.VERSION_USER : _Header.VERSION_USER + 32] = bytes(32)
    put(_Header.KD_DEBUGGER_DATA_BLOCK, "Q", header.kd_debugger_data_block)
    _MEMORY_DESCRIPTOR.pack_into(
        block, _Header.PHYSICAL_MEMORY_BLOCK, len(runs), 0, header.total_pages
    )
    for index, run in enumerate(runs):
        offset = _Header.PHYSICAL_MEMORY_BLOCK + _MEMORY_DESCRIPTOR.size + index * _MEMORY_RUN.size
        _MEMORY_RUN.pack_into(block, offset, run.base_page, run.page_count)
    block[_Header.CONTEXT_RECORD : _Header.CONTEXT_RECORD + AMD64_CONTEXT_SIZE] = header.context
    block[_Header.EXCEPTION : _Header.EXCEPTION + EXCEPTION_RECORD64_SIZE] = header.exception_record
    put(_Header.DUMP_TYPE, "II", dump_type, 0)
    put(_Header.REQUIRED_DUMP_SPACE, "Q", required_dump_space)
    put(_Header.SYSTEM_TIME, "Q", header.system_time)
    block[_Header.COMMENT : _Header.COMMENT + COMMENT_FIELD_SIZE] = _encode_comment(header.comment)
    put(_Header.SYSTEM_UP_TIME, "Q", header.system_up_time)
    # No minidump streams, no secondary data, no writer error.
    put(_Header.MINI_DUMP_FIELDS, "II", 0, 0)
    put(_Header.PRODUCT_TYPE, "II", header.product_type, header.suite_mask)
    put(_Header.WRITER_STATUS, "I", 0)
    put(_Header.UNUSED1, "BBH", 0, header.kd_secondary_version, 0)
    # Attributes are flags: "PAGE" in them would claim things about how the dump was made.
    put(_Header.ATTRIBUTES, "II", 0, 0)
    return bytes(block)


def bitmap_bits(header: DumpHeader) -> int:
    """How many PFNs a bitmap dump's bitmap covers: every page up to the end of the last run,
    rounded up to whole 32-bit words (see _BITMAP_BITS_GRANULE)."""
    end = header.physical_memory_runs[-1].end_page
    return -(-end // _BITMAP_BITS_GRANULE) * _BITMAP_BITS_GRANULE


def bitmap_first_page(bits: int) -> int:
    """File offset of the first page of a bitmap dump whose bitmap has `bits` bits."""
    end_of_bitmap = HEADER_SIZE + _SUMMARY.size + bits // 8
    return -(-end_of_bitmap // PAGE_SIZE) * PAGE_SIZE


def full_dump_size(header: DumpHeader) -> int:
    return HEADER_SIZE + header.total_pages * PAGE_SIZE


def bitmap_dump_size(header: DumpHeader, present_pages: int) -> int:
    return bitmap_first_page(bitmap_bits(header)) + present_pages * PAGE_SIZE


def encode_summary(header: DumpHeader, present_pfns: int) -> bytes:
    """Everything of a bitmap dump from 0x2000 to its first page: the "SDMP" summary and the
    bitmap, zero-padded to the page. `present_pfns` is the bitmap as an integer: bit n set means
    PFN n is present (an int's little-endian bytes are the LSB-first bitmap both readers want)."""
    bits = bitmap_bits(header)
    if not 0 <= present_pfns < 1 << bits:
        raise ValueError(f"the present PFNs go beyond the bitmap ({bits:#x} pages)")
    first_page = bitmap_first_page(bits)
    summary = _SUMMARY.pack(
        SUMMARY_SIGNATURE, SUMMARY_VALID_DUMP, first_page, present_pfns.bit_count(), bits
    )
    bitmap = present_pfns.to_bytes(bits // 8, "little")
    return (summary + bitmap).ljust(first_page - HEADER_SIZE, b"\0")
