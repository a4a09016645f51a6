"""Crash dumps on disk: every file written here is opened by kdmp-parser, an independent parser.

Offsets in these tests are spelled out from spec section 10 rather than taken from
cartd.capture.dump_file, so a wrong constant there cannot hide behind the same wrong constant here.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kdmp_parser
import pytest

from cartd.capture import dump_store
from cartd.capture.dump_file import (
    DumpHeader,
    DumpType,
    PhysicalRun,
    bitmap_dump_size,
    encode_header,
)
from cartd.capture.dump_store import (
    DumpAlreadyFinalizedError,
    DumpProgressError,
    PartialDump,
    partial_path,
    progress_path,
)
from cartd.kd.context import AMD64_CONTEXT_SIZE, Amd64Register, with_register

ROOT = Path(__file__).resolve().parents[1]
PAGE = 4096
RIP = 0xFFFFF800_12345678
RSP = 0xFFFFF800_0ABCDEF0
MX_CSR = 0x1F80  # the x64 power-on value

# Three runs with holes below, between and after them, as a real machine's memory map has.
RUNS = (PhysicalRun(1, 0x9E), PhysicalRun(0x100, 0x20), PhysicalRun(0x1000, 0x41))
ALL_PFNS = [pfn for run in RUNS for pfn in range(run.base_page, run.end_page)]

EXCEPTION = struct.Struct("<IIQQI4x15Q")  # EXCEPTION_RECORD64


def make_context(*, rip: int = RIP, mx_csr: int = MX_CSR, flt_mx_csr: int = MX_CSR) -> bytes:
    context = bytes(AMD64_CONTEXT_SIZE)
    for register, value in (
        (Amd64Register.RIP, rip),
        (Amd64Register.RSP, RSP),
        (Amd64Register.RAX, 0x1111),
        (Amd64Register.R15, 0xF15),
        (Amd64Register.SEG_CS, 0x10),
        (Amd64Register.EFLAGS, 0x246),
        (Amd64Register.MX_CSR, mx_csr),
        (Amd64Register.FLT_MX_CSR, flt_mx_csr),
    ):
        context = with_register(context, register, value)
    return context


def make_header(runs: Iterable[tuple[int, int]] = RUNS, **overrides: Any) -> DumpHeader:
    fields: dict[str, Any] = {
        "major_version": 0xF,
        "minor_version": 19041,
        "directory_table_base": 0x1AA000,
        "pfn_database": 0xFFFFFA80_00000000,
        "ps_loaded_module_list": 0xFFFFF800_02A4E890,
        "ps_active_process_head": 0xFFFFF800_02A2A590,
        "number_processors": 4,
        "bugcheck_code": 0xD1,
        "bugcheck_parameters": (0xFFFF_FFFF_FFFF_FFD0, 2, 0, 0xFFFFF800_1234_0000),
        "kd_debugger_data_block": 0xFFFFF800_02A190A0,
        "physical_memory_runs": tuple(PhysicalRun(*run) for run in runs),
        "context": make_context(),
        "exception_record": EXCEPTION.pack(0x80000003, 1, 0, RIP, 2, 0xAA, 0xBB, *(0,) * 13),
        "system_time": 133_485_408_000_000_000,
        "system_up_time": 98_765_432,
        "product_type": 3,
        "suite_mask": 0x110,
        "kd_secondary_version": 2,
        "comment": "cartd 0.1.0 over serial:/dev/ttyUSB0",
    }
    fields.update(overrides)
    return DumpHeader(**fields)


def page_for(pfn: int) -> bytes:
    """The contents of a page: random, but the same for a PFN in every process."""
    return random.Random(pfn).randbytes(PAGE)


def write_pages(dump: PartialDump, pfns: Iterable[int]) -> None:
    for pfn in pfns:
        dump.write_page(pfn, page_for(pfn))


def parse(path: Path) -> Any:
    return kdmp_parser.KernelDumpParser(path)


# --- The header on its own -----------------------------------------------------------------------


def test_header_is_page_filled_with_every_field_at_its_spec_offset() -> None:
    header = make_header()
    block = encode_header(header, DumpType.BITMAP, 0x123000)
    assert len(block) == 0x2000

    def u32(offset: int) -> int:
        value: int = struct.unpack_from("<I", block, offset)[0]
        return value

    def u64(offset: int) -> int:
        value: int = struct.unpack_from("<Q", block, offset)[0]
        return value

    assert block[:8] == b"PAGEDU64"
    assert (u32(0x8), u32(0xC)) == (0xF, 19041)
    assert u64(0x10) == header.directory_table_base
    assert u64(0x18) == header.pfn_database
    assert u64(0x20) == header.ps_loaded_module_list
    assert u64(0x28) == header.ps_active_process_head
    assert (u32(0x30), u32(0x34)) == (0x8664, 4)
    assert u64(0x38) == 0xD1  # BugCheckCode and its zeroed padding
    assert struct.unpack_from("<4Q", block, 0x40) == header.bugcheck_parameters
    assert block[0x60:0x80] == bytes(32)  # VersionUser
    assert u64(0x80) == header.kd_debugger_data_block
    assert (u32(0x88), u32(0x8C), u64(0x90)) == (3, 0, sum(run.page_count for run in RUNS))
    assert [struct.unpack_from("<QQ", block, 0x98 + 16 * i) for i in range(3)] == list(RUNS)
    assert block[0x98 + 16 * 3 : 0x98 + 16 * 4] == b"PAGE" * 4  # the unused runs keep the fill
    assert block[0x348 : 0x348 + 0x4D0] == header.context
    assert block[0xF00:0xF98] == header.exception_record
    assert (u32(0xF98), u32(0xF9C)) == (5, 0)
    assert (u64(0xFA0), u64(0xFA8)) == (0x123000, header.system_time)
    assert block[0xFB0:0x1030] == header.comment.encode().ljust(128, b"\0")
    assert u64(0x1030) == header.system_up_time
    assert (u32(0x1038), u32(0x103C)) == (0, 0)  # MiniDumpFields, SecondaryDataState
    assert (u32(0x1040), u32(0x1044), u32(0x1048)) == (3, 0x110, 0)
    assert block[0x104C:0x1050] == b"\0\x02\0\0"  # Unused1, KdSecondaryVersion, Unused[2]
    assert (u32(0x1050), u32(0x1054)) == (0, 0)  # Attributes, BootId
    assert block[0x1058:] == b"PAGE" * ((0x2000 - 0x1058) // 4)


# --- Full and bitmap dumps through kdmp-parser ---------------------------------------------------


def test_a_dump_with_every_page_is_a_full_dump(tmp_path: Path) -> None:
    header = make_header()
    dump = PartialDump.create(tmp_path / "full.dmp", header)
    write_pages(dump, ALL_PFNS)
    finished = dump.finalize()

    size = 0x2000 + len(ALL_PFNS) * PAGE
    assert (finished.dump_type, finished.pages, finished.size) == (
        DumpType.FULL,
        len(ALL_PFNS),
        size,
    )
    assert (tmp_path / "full.dmp").stat().st_size == size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.dmp"]

    parsed = parse(tmp_path / "full.dmp")
    assert parsed.type == kdmp_parser.DumpType.FullDump
    assert sorted(parsed.pages.keys()) == [pfn * PAGE for pfn in ALL_PFNS]
    for pfn in ALL_PFNS:
        assert parsed.read_physical_page(pfn * PAGE) == page_for(pfn), hex(pfn)
    for hole in (0, 0x9F, 0xFF, 0x120, 0xFFF, 0x1041):
        assert parsed.read_physical_page(hole * PAGE) is None
    assert_header_round_trips(parsed, header, size)


def test_a_dump_with_some_pages_is_a_bitmap_dump(tmp_path: Path) -> None:
    header = make_header()
    rng = random.Random(1)
    present = sorted(rng.sample(ALL_PFNS, 97))
    dump = PartialDump.create(tmp_path / "some.dmp", header)
    write_pages(dump, reversed(present))  # the order of reading does not matter
    finished = dump.finalize()
    assert (finished.dump_type, finished.pages) == (DumpType.BITMAP, len(present))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some.dmp"]

    parsed = parse(tmp_path / "some.dmp")
    assert parsed.type == kdmp_parser.DumpType.BMPDump
    summary = parsed.header.BmpHeader
    assert (summary.Signature, summary.ValidDump) == (0x504D4453, 0x504D5544)  # SDMP, DUMP
    assert summary.FirstPage % PAGE == 0
    assert summary.FirstPage >= 0x2038 + summary.Pages // 8
    assert summary.TotalPresentPages == len(present)
    assert summary.Pages % 32 == 0 and summary.Pages >= RUNS[-1].end_page
    size = summary.FirstPage + len(present) * PAGE
    assert finished.size == size == (tmp_path / "some.dmp").stat().st_size
    assert parsed.header.RequiredDumpSpace == size

    assert sorted(parsed.pages.keys()) == [pfn * PAGE for pfn in present]
    for pfn in present:
        assert parsed.read_physical_page(pfn * PAGE) == page_for(pfn), hex(pfn)
    for pfn in set(ALL_PFNS) - set(present):
        assert parsed.read_physical_page(pfn * PAGE) is None
    assert_header_round_trips(parsed, header, size)


def assert_header_round_trips(parsed: Any, header: DumpHeader, size: int) -> None:
    fields = parsed.header
    assert (fields.Signature, fields.ValidDump) == (0x45474150, 0x34365544)
    assert (fields.MajorVersion, fields.MinorVersion) == (0xF, 19041)
    assert parsed.directory_table_base == header.directory_table_base
    assert fields.PfnDatabase == header.pfn_database
    assert fields.PsLoadedModuleList == header.ps_loaded_module_list
    assert fields.PsActiveProcessHead == header.ps_active_process_head
    assert (fields.MachineImageType, fields.NumberProcessors) == (0x8664, 4)
    assert fields.BugCheckCode == header.bugcheck_code
    assert tuple(fields.BugCheckCodeParameter) == header.bugcheck_parameters
    assert fields.KdDebuggerDataBlock == header.kd_debugger_data_block
    memory = fields.PhysicalMemoryBlock
    assert (memory.NumberOfRuns, memory.NumberOfPages) == (len(RUNS), len(ALL_PFNS))
    assert (memory.Run.BasePage, memory.Run.PageCount) == RUNS[0]
    assert fields.RequiredDumpSpace == size
    assert (fields.SystemTime, fields.SystemUpTime) == (header.system_time, header.system_up_time)
    assert bytes(fields.Comment).rstrip(b"\0").decode() == header.comment
    assert (fields.ProductType, fields.SuiteMask, fields.KdSecondaryVersion) == (3, 0x110, 2)
    exception = fields.Exception
    assert (exception.ExceptionCode, exception.ExceptionAddress) == (0x80000003, RIP)
    assert exception.NumberParameters == 2
    assert list(exception.ExceptionInformation[:2]) == [0xAA, 0xBB]
    context = parsed.context
    assert (context.Rip, context.Rsp, context.Rax, context.R15) == (RIP, RSP, 0x1111, 0xF15)
    assert (context.SegCs, context.EFlags) == (0x10, 0x246)
    assert context.MxCsr == context.MxCsr2 == MX_CSR


@pytest.mark.parametrize("complete", [True, False], ids=["full", "bitmap"])
def test_virtual_addresses_translate_through_the_dumps_own_page_tables(
    tmp_path: Path, complete: bool
) -> None:
    """A 4-level x64 page table in the dump's pages, rooted at the header's DirectoryTableBase."""
    virtual = 0xFFFFF800_12345000
    pml4, pdpt, pd, pt, data = 0x100, 0x101, 0x102, 0x103, 0x1020
    tables = {
        pml4: (virtual >> 39) & 0x1FF,
        pdpt: (virtual >> 30) & 0x1FF,
        pd: (virtual >> 21) & 0x1FF,
        pt: (virtual >> 12) & 0x1FF,
    }
    next_level = {pml4: pdpt, pdpt: pd, pd: pt, pt: data}
    pages = {pfn: bytes(PAGE) for pfn in (ALL_PFNS if complete else ())}
    for table, index in tables.items():
        entry = bytearray(PAGE)
        struct.pack_into("<Q", entry, index * 8, next_level[table] << 12 | 0x3)  # present, write
        pages[table] = bytes(entry)
    pages[data] = page_for(data)

    dump = PartialDump.create(tmp_path / "paged.dmp", make_header(directory_table_base=pml4 << 12))
    for pfn, contents in pages.items():
        dump.write_page(pfn, contents)
    assert dump.finalize().dump_type == (DumpType.FULL if complete else DumpType.BITMAP)

    parsed = parse(tmp_path / "paged.dmp")
    assert parsed.directory_table_base == pml4 << 12
    assert parsed.translate_virtual(virtual + 0x123) == (data << 12) + 0x123
    assert parsed.read_virtual_page(virtual) == page_for(data)
    assert parsed.translate_virtual(virtual + PAGE) is None  # the next PTE is empty


def test_forty_two_runs_fit_and_all_of_them_are_read(tmp_path: Path) -> None:
    runs = [(0x10 * i + 1, 1 + i % 3) for i in range(42)]
    pfns = [base + n for base, count in runs for n in range(count)]
    dump = PartialDump.create(tmp_path / "runs.dmp", make_header(runs))
    write_pages(dump, pfns)
    dump.finalize()
    parsed = parse(tmp_path / "runs.dmp")
    assert parsed.header.PhysicalMemoryBlock.NumberOfRuns == 42
    assert sorted(parsed.pages.keys()) == [pfn * PAGE for pfn in pfns]
    assert parsed.read_physical_page(pfns[-1] * PAGE) == page_for(pfns[-1])


def test_volatility3_reads_both_kinds_when_it_is_installed(tmp_path: Path) -> None:
    """Optional second opinion: volatility3 is not a dependency of cartd."""
    pytest.importorskip("volatility3")
    from volatility3.framework import contexts
    from volatility3.framework.layers import crash, physical

    header = make_header()
    for name, pfns in (("full", ALL_PFNS), ("bitmap", ALL_PFNS[::3])):
        dump = PartialDump.create(tmp_path / f"{name}.dmp", header)
        write_pages(dump, pfns)
        dump.finalize()
        context = contexts.Context()
        context.config["base.location"] = (tmp_path / f"{name}.dmp").as_uri()
        context.layers.add_layer(physical.FileLayer(context, "base", "base"))
        layer = crash.WindowsCrashDumpStacker.stack(context, "base")
        assert isinstance(layer, crash.WindowsCrashDump64Layer), name
        assert layer.dtb == header.directory_table_base
        for pfn in ALL_PFNS:
            if pfn in pfns:
                assert layer.read(pfn * PAGE, PAGE) == page_for(pfn), (name, hex(pfn))
            else:
                assert not layer.is_valid(pfn * PAGE, PAGE), (name, hex(pfn))


# --- The partial dump: sparse, durable, resumable ------------------------------------------------


def test_unwritten_pages_take_no_disk(tmp_path: Path) -> None:
    big = make_header([(0, 0x8000)])  # 128 MiB of memory
    dump = PartialDump.create(tmp_path / "big.dmp", big)
    write_pages(dump, [0x10, 0x4000])
    dump.flush()
    stat = partial_path(tmp_path / "big.dmp").stat()
    assert stat.st_size == 0x2000 + 0x8000 * PAGE
    assert stat.st_blocks * 512 < 1 << 20
    assert dump.bytes_present == 2 * PAGE
    dump.close()


CRASHING_WRITER = """
import json, os, random, signal, sys
from pathlib import Path
from cartd.capture.dump_store import PartialDump, progress_path

path, flushed, unflushed = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
dump = PartialDump.open(path)
for pfn in flushed:
    dump.write_page(pfn, random.Random(pfn).randbytes(4096))
dump.flush()
for pfn in unflushed:
    dump.write_page(pfn, random.Random(pfn).randbytes(4096))
# A progress write that was cut short, as a crash in the middle of flush() leaves it.
torn = progress_path(path).with_name(progress_path(path).name + ".tmp")
torn.write_bytes(progress_path(path).read_bytes()[:100])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_dump_resumes_after_a_crash_and_only_flushed_pages_count(tmp_path: Path) -> None:
    path = tmp_path / "resumed.dmp"
    PartialDump.create(path, make_header()).close()
    flushed, unflushed = ALL_PFNS[:40], ALL_PFNS[40:55]
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_WRITER,
            str(path),
            json.dumps(flushed),
            json.dumps(unflushed),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    torn = progress_path(path).with_name(progress_path(path).name + ".tmp")
    assert torn.exists()

    dump = PartialDump.open(path)
    assert not torn.exists()  # the torn write is cleared away, the last good record kept
    assert dump.pages_present == len(flushed)
    assert all(dump.has_page(pfn) for pfn in flushed)
    assert not any(dump.has_page(pfn) for pfn in unflushed)
    missing = list(dump.missing_pages())
    assert missing == ALL_PFNS[40:]

    write_pages(dump, missing)
    assert dump.finalize().dump_type == DumpType.FULL
    parsed = parse(path)
    assert parsed.type == kdmp_parser.DumpType.FullDump
    for pfn in ALL_PFNS:
        assert parsed.read_physical_page(pfn * PAGE) == page_for(pfn), hex(pfn)


def test_the_progress_file_records_flushed_pages_in_run_order(tmp_path: Path) -> None:
    path = tmp_path / "progress.dmp"
    header = make_header()
    dump = PartialDump.create(path, header)
    write_pages(dump, [1, 0x100, 0x1040])  # first slot of runs 0 and 1, last slot of run 2
    before = json.loads(progress_path(path).read_bytes())
    assert not any(base64.b64decode(before["present"]))  # written is not yet durable
    dump.flush()
    document = json.loads(progress_path(path).read_bytes())
    assert (document["format"], document["version"]) == ("cartd-dump-progress", 1)
    assert document["header"]["physical_memory_runs"] == [list(run) for run in RUNS]
    assert bytes.fromhex(document["header"]["context"]) == header.context
    bitmap = int.from_bytes(base64.b64decode(document["present"]), "little")
    slots = [0, 0x9E, len(ALL_PFNS) - 1]
    assert bitmap == sum(1 << slot for slot in slots)
    assert PartialDump.open(path).header == header
    dump.close()


def test_flush_makes_the_pages_durable_before_the_progress_file_claims_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = PartialDump.create(tmp_path / "order.dmp", make_header())
    write_pages(dump, [1, 2])
    steps: list[str] = []
    real_fsync, real_write = os.fsync, dump_store.write_file_atomically

    def fsync(fd: int) -> None:
        steps.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def write_progress(path: Path, data: bytes) -> None:
        steps.append("write " + path.name)
        real_write(path, data)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(dump_store, "write_file_atomically", write_progress)
    dump.flush()
    assert steps[:2] == ["fsync order.dmp.partial", "write order.dmp.progress"]
    steps.clear()
    dump.flush()  # nothing new: nothing to do
    assert steps == []
    dump.close()


def test_a_finalize_cut_short_after_its_rename_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "done.dmp"
    dump = PartialDump.create(path, make_header())
    write_pages(dump, ALL_PFNS[:3])
    dump.flush()
    progress = progress_path(path).read_bytes()
    dump.finalize()
    progress_path(path).write_bytes(progress)  # as if the crash came before its removal
    with pytest.raises(DumpAlreadyFinalizedError):
        PartialDump.open(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.dmp"]


def test_bytes_needed_to_finish_match_the_files_finalize_writes(tmp_path: Path) -> None:
    path = tmp_path / "space.dmp"
    header = make_header()
    dump = PartialDump.create(path, header)
    write_pages(dump, ALL_PFNS[:10])
    dump.flush()
    progress = progress_path(path).stat().st_size
    missing = len(ALL_PFNS) - 10
    assert dump.bytes_needed_to_finish() == missing * PAGE + 0x2000 + progress
    assert dump.bytes_needed_to_finish(5) == 5 * PAGE + bitmap_dump_size(header, 15) + progress
    with pytest.raises(ValueError, match="missing"):
        dump.bytes_needed_to_finish(missing + 1)
    needed_now = dump.bytes_needed_to_finish(0)
    assert dump.finalize().size == needed_now - progress


# --- Bad input and misuse ------------------------------------------------------------------------


def test_pages_must_be_whole_and_inside_a_run(tmp_path: Path) -> None:
    dump = PartialDump.create(tmp_path / "bad.dmp", make_header())
    with pytest.raises(ValueError, match="a page is 4096 bytes, not 4095"):
        dump.write_page(1, bytes(PAGE - 1))
    for pfn in (0, 0x9F, 0x120, 0x1041):
        with pytest.raises(ValueError, match=f"PFN {pfn:#x} is in none of the dump's"):
            dump.write_page(pfn, bytes(PAGE))
        assert not dump.has_page(pfn)
    assert dump.pages_present == 0
    dump.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"runs": [(i * 2, 1) for i in range(43)]}, "43 physical memory runs do not fit"),
        ({"runs": []}, "at least one physical memory run"),
        ({"runs": [(0x10, 4), (0x12, 4)]}, "overlaps or precedes"),
        ({"runs": [(0x10, 0)]}, "has no pages"),
        ({"comment": "x" * 128}, "at most 127 characters, not 128"),
        ({"comment": "caf\u00e9"}, "ASCII"),
        ({"context": make_context(flt_mx_csr=0x1F81)}, "MxCsr .* differs from FltSave.MxCsr"),
        ({"context": bytes(0x4C8)}, "an x64 CONTEXT is 0x4d0 bytes, not 0x4c8"),
        ({"exception_record": bytes(0xA0)}, "EXCEPTION_RECORD64 is 0x98 bytes"),
        ({"bugcheck_code": 1 << 32}, "bugcheck_code must be an unsigned 32-bit integer"),
        ({"bugcheck_parameters": (1, 2, 3)}, "4 parameters, not 3"),
    ],
)
def test_a_header_that_cannot_be_written_is_refused(
    overrides: dict[str, Any], message: str
) -> None:
    runs = overrides.pop("runs", RUNS)
    with pytest.raises(ValueError, match=message):
        make_header(runs, **overrides)


def test_a_comment_of_127_characters_fits() -> None:
    block = encode_header(make_header(comment="y" * 127), DumpType.FULL, 0)
    assert block[0xFB0:0x1030] == b"y" * 127 + b"\0"


def test_a_dump_without_pages_is_not_finalized(tmp_path: Path) -> None:
    """volatility3 refuses a dump with no pages, so cartd does not write one."""
    dump = PartialDump.create(tmp_path / "empty.dmp", make_header())
    with pytest.raises(ValueError, match="no page has been written"):
        dump.finalize()
    write_pages(dump, [1])  # still usable
    assert dump.finalize().pages == 1


def test_create_refuses_to_replace_anything(tmp_path: Path) -> None:
    path = tmp_path / "twice.dmp"
    dump = PartialDump.create(path, make_header())
    with pytest.raises(FileExistsError):
        PartialDump.create(path, make_header())
    dump.discard()
    path.write_bytes(b"an older dump")
    with pytest.raises(FileExistsError):
        PartialDump.create(path, make_header())


def test_a_closed_dump_refuses_further_use(tmp_path: Path) -> None:
    dump = PartialDump.create(tmp_path / "closed.dmp", make_header())
    write_pages(dump, [1])
    dump.finalize()
    with pytest.raises(ValueError, match="closed"):
        dump.write_page(2, bytes(PAGE))
    with pytest.raises(ValueError, match="closed"):
        dump.finalize()


@pytest.mark.parametrize(
    "damage",
    [
        "missing progress",
        "garbage progress",
        "wrong version",
        "short bitmap",
        "missing partial",
        "truncated partial",
        "bad header field",
    ],
)
def test_a_partial_dump_that_cannot_be_resumed_says_so(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.dmp"
    PartialDump.create(path, make_header()).close()
    progress = progress_path(path)
    document = json.loads(progress.read_bytes())
    if damage == "missing progress":
        progress.unlink()
    elif damage == "garbage progress":
        progress.write_bytes(b"\x00{not json")
    elif damage == "wrong version":
        progress.write_text(json.dumps({**document, "version": 2}))
    elif damage == "short bitmap":
        progress.write_text(json.dumps({**document, "present": base64.b64encode(b"\0").decode()}))
    elif damage == "missing partial":
        partial_path(path).unlink()
    elif damage == "truncated partial":
        os.truncate(partial_path(path), 0x2000)
    else:
        document["header"]["number_processors"] = "four"
        progress.write_text(json.dumps(document))
    with pytest.raises(DumpProgressError, match=r"damaged\.dmp"):
        PartialDump.open(path)
    dump_store.discard_partial_dump(path)
    assert list(tmp_path.iterdir()) == []
