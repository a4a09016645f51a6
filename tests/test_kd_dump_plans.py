"""Dump plans against the simulated machine, through the real host core on a fake clock.

Each plan runs request by request through `KdHost.request` over the in-memory loopback (the
host's packet ids, ACKs and reply matching all apply), and what it learns is checked against the
`SimulatedMachine` itself. Page-table pages are checked independently of the plan's own walk:
the simulator maps its tables through a Windows-style self-map (KDBG.PteBase), so the page that
holds the entry of any level for any address is `machine.translate(self-map address)`.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Generator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartd.kd.constants import (
    KD_SECONDARY_VERSION_AMD64_CONTEXT,
    KUSER_SHARED_DATA_ADDRESS,
    MachineType,
    NtStatus,
)
from cartd.kd.context import KSpecialRegister, pack_register
from cartd.kd.debugger_data import KdbgOffset
from cartd.kd.dump_plans import (
    DEFAULT_TRIAGE_MAX_PAGES,
    LIVE_SYSTEM_DUMP,
    DumpFacts,
    PageTableCache,
    RamMap,
    TriageConfig,
    TriageSelection,
    TriageTier,
    VirtualTranslation,
    dump_facts,
    pages_for_bytes,
    translate,
    triage_pages,
)
from cartd.kd.errors import KdUsageError
from cartd.kd.events import RequestCompleted, RequestFailed, StateChanged
from cartd.kd.host import KdHost
from cartd.kd.host_plans import RequestError, Requests, TargetFacts
from cartd.kd.manipulate import ManipulateMessage, ReadMemory
from cartd.kd.paging import (
    HUGE_PAGE_SIZE,
    LARGE_PAGE_SIZE,
    PAGE_SIZE,
    MappedPage,
    NextTable,
    PagingLevel,
    decode_entry,
    is_canonical,
)
from cartd.kd.state_change import ExceptionRecord, StateChangeMessage
from cartd.kd.stops import StopReason
from cartd.sim.kernel_layout import (
    NT_PRODUCT_WIN_NT,
    SUITE_MASK_WORKSTATION,
    KuserSharedData,
)
from cartd.sim.loopback import Loopback
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.target import Scenario, SimulatedTarget

QUIET = Scenario(print_interval=None, module_interval=None)
FAKE_NT = "/work/shared/vectors/fake-nt/ntoskrnl.exe"
BUGCHECK = (0x3B, (0xC0000005, 0xFFFFF8057A2F3340, 0xFFFFA30F12345000, 0))

Plan = Generator[ManipulateMessage, ManipulateMessage | None, object]
# Given the request number (from 0) and the target's reply: the reply to hand the plan, or a
# RequestError to throw into it (what KdHost does when the link fails).
Tamper = Callable[[int, ManipulateMessage], ManipulateMessage | RequestError]


# --- running plans ------------------------------------------------------------------------------


def stopped_loopback(config: MachineConfig | None = None, scenario: Scenario = QUIET) -> Loopback:
    """Boot a simulated machine, continue through its module loads, break in."""
    machine = SimulatedMachine(config or MachineConfig(seed=3, memory_size_bytes=1 << 30))
    loopback = Loopback(KdHost(), SimulatedTarget(machine, scenario, seed=3))
    loopback.start()
    loopback.host.connect(loopback.now)
    for _ in range(2):
        assert wait_for_stop(loopback).reason is StopReason.MODULE_LOAD
        loopback.call(lambda now: loopback.host.resume(now=now))
    if scenario.bugcheck_after is None:
        loopback.host.break_in(loopback.now)
    wait_for_stop(loopback)
    return loopback


def wait_for_stop(loopback: Loopback) -> StateChanged:
    loopback.run_until(lambda: any(isinstance(e, StateChanged) for e in loopback.events))
    (stop,) = loopback.take(StateChanged)
    assert isinstance(stop, StateChanged)
    return stop


def run_plan(
    loopback: Loopback,
    make: Callable[[Requests, TargetFacts, StateChangeMessage], Plan],
    *,
    tamper: Tamper | None = None,
) -> tuple[object, int]:
    """Run a plan to its end, each request through the host; (result, requests sent)."""
    host = loopback.host
    stop = host.stop
    assert stop is not None
    requests = Requests(stop.processor, stop.processor_level, host.dialect.max_transfer)
    plan = make(requests, host.facts, stop)
    sent = 0
    try:
        message = next(plan)
        while True:
            token = host.request(message, now=loopback.now)
            outcome: list[RequestCompleted | RequestFailed] = []

            def settled(token: int = token, outcome: list[object] = outcome) -> bool:
                for event in loopback.events:
                    if isinstance(event, RequestCompleted | RequestFailed) and event.token == token:
                        loopback.events.remove(event)
                        outcome.append(event)
                        return True
                return False

            loopback.run_until(settled)
            event = outcome[0]
            if isinstance(event, RequestFailed):
                message = plan.throw(RequestError(event.reason, event.status))
                continue
            reply = event.result
            assert isinstance(reply, ManipulateMessage)
            changed = tamper(sent, reply) if tamper is not None else reply
            sent += 1
            if isinstance(changed, RequestError):
                message = plan.throw(changed)
            else:
                message = plan.send(changed)
    except StopIteration as done:
        return done.value, sent


def facts_of(loopback: Loopback) -> DumpFacts:
    result, _ = run_plan(loopback, dump_facts)
    assert isinstance(result, DumpFacts)
    return result


def triage_of(
    loopback: Loopback, dump: DumpFacts, config: TriageConfig | None = None
) -> TriageSelection:
    result, _ = run_plan(
        loopback, lambda requests, facts, stop: triage_pages(requests, facts, dump, config)
    )
    assert isinstance(result, TriageSelection)
    return result


# --- the simulator's own view ---------------------------------------------------------------------


def u64(raw: bytes) -> int:
    return int(struct.unpack("<Q", raw)[0])


def self_map_entry(machine: SimulatedMachine, va: int, level: int) -> int:
    """Virtual address of the level-``level`` entry (0 PML4E .. 3 PTE) that maps ``va``."""
    address = va
    for _ in range(4 - level):
        address = machine.pte_base + (((address & ((1 << 48) - 1)) >> 12) << 3)
    return address


def expected_tables(machine: SimulatedMachine, va: int) -> tuple[int, ...]:
    """PFNs of the table pages a walk of ``va`` reads, found through the self-map."""
    if not is_canonical(va):
        return ()
    tables = []
    for level in range(4):
        entry_va = self_map_entry(machine, va, level)
        table = machine.translate(entry_va)
        assert table is not None
        tables.append(table >> 12)
        entry = u64(machine.read_virtual(entry_va, 8))
        if not entry & 1 or (level in (1, 2) and entry & 0x80):
            break
    return tuple(tables)


def interesting_addresses(machine: SimulatedMachine) -> list[int]:
    pfn_database = u64(
        machine.read_virtual(
            u64(machine.read_virtual(machine.kdbg_address + KdbgOffset.MM_PFN_DATABASE, 8)), 8
        )
    )
    addresses = [
        0,
        0x7FFE0000,
        0x00007FFFFFFF0000,
        0x0000800000000000,  # not canonical
        0xFFFF7FFFFFFFFFFF,  # not canonical
        0xFFFFFFFFFFFFFFFF,
        machine.kdbg_address,
        machine.ki_bugcheck_data,
        machine.kernel_base,
        machine.kernel_base + machine.kernel_size,
        KUSER_SHARED_DATA_ADDRESS,
        KUSER_SHARED_DATA_ADDRESS + PAGE_SIZE,
        pfn_database,  # 2 MiB pages
        pfn_database + 0x123456,
        machine.pte_base,  # the self-map
        self_map_entry(machine, machine.kdbg_address, 3),
    ]
    for module in machine.modules:
        addresses += [module.base, module.base + module.size - 1, module.base + module.size]
    for state in machine.processor_states:
        addresses += [state.kpcr, state.thread, state.rsp, state.stack_limit - 1, state.rip]
    return addresses


# --- paging -------------------------------------------------------------------------------------


def test_entries_decode_as_the_mmu_reads_them() -> None:
    va = 0xFFFFF8057A345678
    assert decode_entry(0x1234_5000 | 0x2, PagingLevel.PT, va) is None  # not present
    assert decode_entry(0x1234_5000 | 0x83, PagingLevel.PML4, va) == NextTable(0x1234_5000)
    # PS in a PTE is the PAT bit: still a 4 KiB page.
    assert decode_entry(0x1234_5000 | 0x83, PagingLevel.PT, va) == MappedPage(
        0x1234_5000 | (va & 0xFFF), PAGE_SIZE
    )
    # A 2 MiB page: bit 12 is PAT, not part of the frame.
    pde = 0x4060_0000 | 0x1000 | 0x83 | 1 << 63
    assert decode_entry(pde, PagingLevel.PD, va) == MappedPage(
        0x4060_0000 | (va & (LARGE_PAGE_SIZE - 1)), LARGE_PAGE_SIZE
    )
    pdpte = 0x1_4000_0000 | 0x83
    assert decode_entry(pdpte, PagingLevel.PDPT, va) == MappedPage(
        0x1_4000_0000 | (va & (HUGE_PAGE_SIZE - 1)), HUGE_PAGE_SIZE
    )
    assert is_canonical(0xFFFF800000000000) and is_canonical(0x00007FFFFFFFFFFF)
    assert not is_canonical(0x0000800000000000) and not is_canonical(1 << 64)


# --- dump facts ---------------------------------------------------------------------------------


def test_dump_facts_are_what_the_machine_holds() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    machine.set_bugcheck(BUGCHECK[0], BUGCHECK[1])
    facts = facts_of(loopback)

    assert facts.directory_table_base == machine.cr3
    assert facts.physical_memory == machine.physical_memory_descriptor()
    assert facts.kd_debugger_data_block == machine.kdbg_address
    assert facts.kern_base == machine.kernel_base
    assert facts.ps_loaded_module_list == machine.ps_loaded_module_list
    assert facts.ps_active_process_head == machine.ps_active_process_head
    pointer = u64(machine.read_virtual(machine.kdbg_address + KdbgOffset.MM_PFN_DATABASE, 8))
    assert facts.pfn_database == u64(machine.read_virtual(pointer, 8)) != 0
    assert machine.translate(facts.pfn_database) is not None
    assert facts.machine_image_type == MachineType.AMD64
    assert facts.number_processors == machine.processors == 2
    assert facts.processor == 0
    assert facts.context == bytes(machine.context(0))
    assert facts.bugcheck is not None
    assert (facts.bugcheck_code, facts.bugcheck_parameters) == BUGCHECK
    assert facts.major_version == 0xF and facts.minor_version == machine.build_number
    assert facts.kd_secondary_version == KD_SECONDARY_VERSION_AMD64_CONTEXT
    kuser = machine.read_virtual(KUSER_SHARED_DATA_ADDRESS, PAGE_SIZE)
    assert facts.product_type == NT_PRODUCT_WIN_NT
    assert facts.suite_mask == SUITE_MASK_WORKSTATION
    assert facts.system_time == u64(kuser[KuserSharedData.SYSTEM_TIME :][:8]) != 0
    assert facts.system_up_time == u64(kuser[KuserSharedData.INTERRUPT_TIME :][:8]) != 0
    assert isinstance(facts.exception, ExceptionRecord)
    assert facts.exception.code == NtStatus.BREAKPOINT
    assert facts.exception_record[:4] == struct.pack("<I", NtStatus.BREAKPOINT)
    assert len(facts.exception_record) == 0x98
    assert facts.defaulted == ()


def test_without_a_bugcheck_the_code_is_live_system_dump() -> None:
    facts = facts_of(stopped_loopback())
    assert facts.bugcheck is None
    assert facts.bugcheck_code == LIVE_SYSTEM_DUMP
    assert facts.bugcheck_parameters == (0, 0, 0, 0)
    assert facts.defaulted == ("bugcheck",)


def test_a_scripted_bugcheck_stop_gives_its_code_and_parameters() -> None:
    parameters = (0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)
    scenario = Scenario(
        print_interval=None,
        module_interval=None,
        bugcheck_after=2.0,
        bugcheck_code=0x9F,
        bugcheck_parameters=parameters,
    )
    loopback = stopped_loopback(scenario=scenario)
    facts = facts_of(loopback)
    assert facts.bugcheck is not None
    assert (facts.bugcheck.code, facts.bugcheck.parameters) == (0x9F, parameters)
    assert facts.defaulted == ()


def test_unmapped_kuser_shared_data_gives_documented_defaults() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    machine.space.unmap(KUSER_SHARED_DATA_ADDRESS, PAGE_SIZE)
    facts = facts_of(loopback)
    assert facts.product_type == NT_PRODUCT_WIN_NT  # DEFAULT_PRODUCT_TYPE
    assert (facts.suite_mask, facts.system_time, facts.interrupt_time) == (0, 0, 0)
    assert set(facts.defaulted) == {
        "bugcheck",
        "product_type",
        "suite_mask",
        "system_time",
        "interrupt_time",
    }


def test_cr3_loses_its_pcid_bits() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    pack_register(machine.special_registers(0), KSpecialRegister.CR3, machine.cr3 | 0x5)
    assert facts_of(loopback).directory_table_base == machine.cr3


def _break_cr3(machine: SimulatedMachine) -> None:
    pack_register(machine.special_registers(0), KSpecialRegister.CR3, 0)


def _break_runs(machine: SimulatedMachine) -> None:
    pointer = u64(
        machine.read_virtual(machine.kdbg_address + KdbgOffset.MM_PHYSICAL_MEMORY_BLOCK, 8)
    )
    machine.write_virtual(pointer, bytes(8))


def _break_run_count(machine: SimulatedMachine) -> None:
    pointer = u64(
        machine.read_virtual(machine.kdbg_address + KdbgOffset.MM_PHYSICAL_MEMORY_BLOCK, 8)
    )
    machine.write_virtual(u64(machine.read_virtual(pointer, 8)), struct.pack("<I", 0x45474150))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_break_cr3, "Cr3 is 0"),
        (_break_runs, "MmPhysicalMemoryBlock is NULL"),
        (_break_run_count, "NumberOfRuns"),
    ],
)
def test_essential_facts_fail_with_a_clear_message(
    damage: Callable[[SimulatedMachine], None], message: str
) -> None:
    loopback = stopped_loopback()
    damage(loopback.target.machine)
    with pytest.raises(RequestError, match=message):
        facts_of(loopback)


def test_no_kdbg_is_a_clear_error() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    machine.write_virtual(machine.kdbg_address + KdbgOffset.OWNER_TAG, b"XXXX")
    loopback.host.facts.debugger_data = None  # forget the KDBG the stop analysis read
    with pytest.raises(RequestError, match="KDDEBUGGER_DATA64 is unreadable"):
        facts_of(loopback)


# --- translation --------------------------------------------------------------------------------


def translate_all(loopback: Loopback, addresses: list[int], cache: PageTableCache) -> list[object]:
    def plan(requests: Requests, facts: TargetFacts, stop: StateChangeMessage) -> Plan:
        results = []
        for va in addresses:
            results.append((yield from translate(requests, cache, loopback.target.machine.cr3, va)))
        return results

    result, _ = run_plan(loopback, plan)
    assert isinstance(result, list)
    return result


def test_translation_agrees_with_the_simulator_and_names_its_tables() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    # A 1 GiB page as well (the simulator's own structures use 4 KiB and 2 MiB pages).
    huge = 0x0000004000000000
    assert machine.translate(huge) is None
    machine.space.map(huge, 0, HUGE_PAGE_SIZE, large_pages=True)
    addresses = [*interesting_addresses(machine), huge, huge + 0x3FFF_F123]
    cache = PageTableCache()
    results = translate_all(loopback, addresses, cache)
    sizes = set()
    for va, translation in zip(addresses, results, strict=True):
        assert isinstance(translation, VirtualTranslation)
        assert translation.physical_address == machine.translate(va), hex(va)
        assert translation.table_pfns == expected_tables(machine, va), hex(va)
        walked = machine.space.walk(va) if is_canonical(va) else None
        assert translation.page_size == (walked.page_size if walked else 0)
        sizes.add(translation.page_size)
    assert sizes == {0, PAGE_SIZE, LARGE_PAGE_SIZE, HUGE_PAGE_SIZE}
    # Every table page was read once, and holds what the machine's RAM holds.
    assert cache.reads == len(cache.pages)
    for pfn, page in cache.pages.items():
        assert page == machine.read_physical(pfn << 12, PAGE_SIZE)


@functools.cache
def shared_stopped_loopback() -> Loopback:
    return stopped_loopback(MachineConfig(seed=7, memory_size_bytes=2 << 30, processors=4))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_addresses_translate_as_the_simulator_does(data: st.DataObject) -> None:
    loopback = shared_stopped_loopback()
    machine = loopback.target.machine
    anchor = data.draw(st.sampled_from(interesting_addresses(machine)))
    va = data.draw(
        st.one_of(
            st.integers(0, (1 << 64) - 1),
            st.integers(0xFFFF800000000000, (1 << 64) - 1),
            st.integers(-0x20000, 0x20000).map(lambda delta: (anchor + delta) % (1 << 64)),
        )
    )
    (translation,) = translate_all(loopback, [va], PageTableCache())
    assert isinstance(translation, VirtualTranslation)
    assert translation.physical_address == machine.translate(va)
    assert translation.table_pfns == expected_tables(machine, va)


def test_a_table_outside_ram_is_not_read() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    facts = facts_of(loopback)
    # A corrupt PML4 entry: its "PDPT" is in the PCI hole, where reads may touch devices.
    va = 0x0000005000000000
    pml4e = machine.cr3 + 8 * ((va >> 39) & 0x1FF)
    machine.write_physical(pml4e, struct.pack("<Q", 0xC000_0000 | 0x3))
    assert machine.translate(va) is None
    cache = PageTableCache(RamMap(facts.physical_memory))
    (translation,) = translate_all(loopback, [va], cache)
    assert isinstance(translation, VirtualTranslation)
    assert translation.physical_address is None
    assert cache.reads == 1  # the PML4 only
    assert cache.pages[0xC0000] == b""


# --- triage -------------------------------------------------------------------------------------


def required_addresses(machine: SimulatedMachine) -> dict[str, int]:
    """What a debugger needs to show the bugcheck, the stacks and the module list."""
    required = {
        "KDBG": machine.kdbg_address,
        "KiBugCheckData": machine.ki_bugcheck_data,
        "KUSER_SHARED_DATA": KUSER_SHARED_DATA_ADDRESS,
        "PsLoadedModuleList": machine.ps_loaded_module_list,
    }
    for module in machine.modules:
        required[f"{module.name} header"] = module.base
        required[f"{module.name} entry"] = module.ldr_entry
    for state in machine.processor_states:
        required[f"processor {state.number} stack at RSP"] = state.rsp
        required[f"processor {state.number} KPCR"] = state.kpcr
        required[f"processor {state.number} KPRCB"] = state.kprcb
        required[f"processor {state.number} thread"] = state.thread
        required[f"processor {state.number} RIP"] = state.rip
    return required


def check_triage(machine: SimulatedMachine, selection: TriageSelection, budget: int | None) -> None:
    pfns = selection.pfns
    assert len(pfns) == len(set(pfns)), "duplicates"
    if budget is not None:
        assert len(pfns) <= budget
    ram = RamMap(machine.physical_memory_descriptor())
    assert all(pfn in ram for pfn in pfns)
    position = {pfn: index for index, pfn in enumerate(pfns)}
    assert pfns[0] == machine.cr3 >> 12
    for what, va in required_addresses(machine).items():
        pa = machine.translate(va)
        assert pa is not None
        assert pa >> 12 in position, what
        for table in expected_tables(machine, va):
            # Rule 4: every table a page needs comes before it.
            assert position[table] <= position[pa >> 12], what
    tables = sum(1 for page in selection.pages if page.reason.split()[0] in PagingLevel.__members__)
    assert tables == selection.page_table_pages
    assert sum(count for _, count in selection.pages_by_tier) == len(pfns)


def test_triage_selects_what_a_debugger_needs_within_the_budget() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    machine.set_bugcheck(*BUGCHECK)
    dump = facts_of(loopback)
    selection = triage_of(loopback, dump)
    check_triage(machine, selection, DEFAULT_TRIAGE_MAX_PAGES)
    assert not selection.budget_exhausted and selection.tiers_not_reached == ()
    assert selection.outside_ram_pages == 0
    reasons = {page.reason for page in selection.pages}
    assert {"KDBG", "processor 0 stack", "processor 1 stack", "hal.dll .text"} <= reasons
    # The simulator keeps no DbgPrint buffer: the gap is reported, not hidden.
    assert any("KdPrintCircularBuffer is 0" in note for note in selection.notes)
    # Tiers come in priority order.
    order = [page.tier for page in selection.pages]
    ranks = [list(TriageTier).index(tier) for tier in order]
    assert ranks == sorted(ranks)


def test_triage_is_deterministic() -> None:
    selections = []
    for _ in range(2):
        loopback = stopped_loopback()
        dump = facts_of(loopback)
        selections.append(triage_of(loopback, dump))
        selections.append(triage_of(loopback, dump))
    assert all(selection == selections[0] for selection in selections)


@pytest.mark.parametrize("budget", [1, 5, 17, 40, 100])
def test_a_budget_cuts_the_list_to_a_prefix(budget: int) -> None:
    loopback = stopped_loopback()
    dump = facts_of(loopback)
    full = triage_of(loopback, dump, TriageConfig(max_pages=None))
    cut = triage_of(loopback, dump, TriageConfig(max_pages=budget))
    assert len(cut.pages) <= budget < len(full.pages)
    assert cut.pages == full.pages[: len(cut.pages)]
    assert cut.budget_exhausted
    tiers = tuple(TriageTier)
    assert cut.tiers_not_reached == tiers[len(tiers) - len(cut.tiers_not_reached) :]


def test_tiers_can_be_chosen_and_reordered() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    dump = facts_of(loopback)
    modules_only = triage_of(
        loopback, dump, TriageConfig(tiers=(TriageTier.MODULE_LIST, TriageTier.CORE))
    )
    assert {page.tier for page in modules_only.pages} == {TriageTier.MODULE_LIST, TriageTier.CORE}
    assert modules_only.pages[0].tier is TriageTier.MODULE_LIST
    first_module = machine.translate(machine.modules[0].ldr_entry)
    assert first_module is not None
    assert first_module >> 12 in modules_only.pfns[:5]
    assert TriageConfig(max_pages=pages_for_bytes(8 << 20)).max_pages == 2048
    with pytest.raises(KdUsageError):
        TriageConfig(tiers=(TriageTier.CORE, TriageTier.CORE))
    with pytest.raises(KdUsageError):
        pages_for_bytes(100)


def test_triage_of_the_fake_nt_kernel_finds_its_codeview_record() -> None:
    loopback = stopped_loopback(
        MachineConfig(seed=3, memory_size_bytes=1 << 30, kernel_image=FAKE_NT)
    )
    machine = loopback.target.machine
    dump = facts_of(loopback)
    selection = triage_of(loopback, dump)
    check_triage(machine, selection, DEFAULT_TRIAGE_MAX_PAGES)
    base = machine.kernel_base
    header = machine.read_virtual(base, PAGE_SIZE)
    (nt,) = struct.unpack_from("<I", header, 0x3C)
    debug_rva, debug_size = struct.unpack_from("<II", header, nt + 24 + 112 + 8 * 6)
    assert debug_size
    entries = machine.read_virtual(base + debug_rva, debug_size)
    codeview = [
        struct.unpack_from("<III", entries, offset + 12)
        for offset in range(0, debug_size, 28)
        if struct.unpack_from("<I", entries, offset + 12)[0] == 2
    ]
    assert codeview
    for _, size, rva in codeview:
        assert machine.read_virtual(base + rva, 4) == b"RSDS"
        for va in (base + rva, base + rva + size - 1):
            pa = machine.translate(va)
            assert pa is not None and pa >> 12 in selection.pfns
    assert any(page.reason == "ntoskrnl.exe debug directory" for page in selection.pages)


def test_a_dbgprint_buffer_in_kdbg_is_selected() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    buffer = machine.kernel_base + 0x2000
    for offset, value in ((0x1E0, buffer), (0x1E8, buffer + 0x1800), (0x1F0, machine.kdbg_address)):
        machine.write_virtual(machine.kdbg_address + offset, struct.pack("<Q", value))
    loopback.host.facts.debugger_data = None  # the host read KDBG before we changed it
    dump = facts_of(loopback)
    selection = triage_of(loopback, dump)
    dbgprint = [page.pfn for page in selection.pages if page.reason == "DbgPrint buffer"]
    expected = {machine.translate(va) for va in (buffer, buffer + 0x17FF)}
    assert {pa >> 12 for pa in expected if pa is not None} <= {page.pfn for page in selection.pages}
    assert dbgprint
    assert not any("KdPrintCircularBuffer" in note for note in selection.notes)


def test_a_self_mapped_table_is_listed_once() -> None:
    """Through the self-map the PML4 is its own PDPT, PD, PT and data page."""
    loopback = stopped_loopback()
    machine = loopback.target.machine
    pml4_itself = self_map_entry(machine, machine.kdbg_address, 0)
    assert machine.translate(pml4_itself) == machine.cr3 + (pml4_itself & 0xFFF)
    for offset, value in ((0x1E0, pml4_itself), (0x1E8, pml4_itself + 8)):
        machine.write_virtual(machine.kdbg_address + offset, struct.pack("<Q", value))
    loopback.host.facts.debugger_data = None
    dump = facts_of(loopback)
    selection = triage_of(loopback, dump, TriageConfig(tiers=(TriageTier.DBGPRINT,)))
    assert selection.pfns == (machine.cr3 >> 12,)
    assert selection.pages[0].reason == "PML4 for DbgPrint buffer"
    assert selection.shared_pages == 1


def test_a_corrupt_module_list_ends_the_walk_with_a_note() -> None:
    loopback = stopped_loopback()
    machine = loopback.target.machine
    third = machine.modules[2]
    machine.write_virtual(third.ldr_entry, struct.pack("<Q", 0x1000))  # user half: unmapped
    dump = facts_of(loopback)
    selection = triage_of(loopback, dump)
    assert any("module entry at 0x1000 is unreadable" in note for note in selection.notes)
    header = machine.translate(third.base)
    assert header is not None and header >> 12 in selection.pfns


# --- failures -----------------------------------------------------------------------------------


def _link_fails_at(index: int) -> Tamper:
    def tamper(number: int, reply: ManipulateMessage) -> ManipulateMessage | RequestError:
        return RequestError("no reply to the request after 5 tries") if number == index else reply

    return tamper


def _target_refuses(index: int) -> Tamper:
    def tamper(number: int, reply: ManipulateMessage) -> ManipulateMessage | RequestError:
        if number != index:
            return reply
        body = reply.body
        if isinstance(body, ReadMemory):
            body = replace(body, actual_bytes=0)
        return replace(reply, return_status=NtStatus.UNSUCCESSFUL, body=body, data=b"")

    return tamper


def test_a_failed_link_always_ends_the_plans_and_refusals_never_crash_them() -> None:
    loopback = stopped_loopback()
    loopback.target.machine.set_bugcheck(*BUGCHECK)
    dump = facts_of(loopback)
    _, facts_requests = run_plan(loopback, lambda r, f, s: dump_facts(r, f, s))
    config = TriageConfig(max_pages=None)
    _, triage_requests = run_plan(loopback, lambda r, f, s: triage_pages(r, f, dump, config))
    assert facts_requests >= 5 and triage_requests > 20

    for index in range(facts_requests):
        with pytest.raises(RequestError, match="no reply"):
            run_plan(loopback, lambda r, f, s: dump_facts(r, f, s), tamper=_link_fails_at(index))
        try:
            result, _ = run_plan(
                loopback, lambda r, f, s: dump_facts(r, f, s), tamper=_target_refuses(index)
            )
        except RequestError:
            continue  # an essential fact
        assert isinstance(result, DumpFacts) and result.defaulted

    for index in range(0, triage_requests, 3):
        with pytest.raises(RequestError, match="no reply"):
            run_plan(
                loopback,
                lambda r, f, s: triage_pages(r, f, dump, config),
                tamper=_link_fails_at(index),
            )
        result, _ = run_plan(
            loopback,
            lambda r, f, s: triage_pages(r, f, dump, config),
            tamper=_target_refuses(index),
        )
        assert isinstance(result, TriageSelection)
