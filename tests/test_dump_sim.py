"""Crash dumps written by the daemon from a simulated target, read back by kdmp-parser.

A scripted bugcheck stops the simulated machine; the daemon (policy dump_on_bugcheck = "auto",
on_bugcheck = "hold") reads its pages over the KD link and writes the dump: a triage dump over
serial, a full one over KDNET. kdmp-parser, a parser cartd shares no code with, opens each file,
and every header field, the stopped processor's CONTEXT and every page it holds are compared
with what the simulator holds. The target is held at its bugcheck throughout, so its memory is
the memory that was read.

Also here: the `dump` control method's estimates and refusals, and the pace of dump_progress;
and, over a cable paced at 115200 baud, commands refused while a dump is prepared and progress
once a second.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import kdmp_parser
from daemon_harness import (
    EventWatch,
    InProcessDaemon,
    daemon_in_process,
    load_test_config,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.control.client import ControlClient
from cartd.control.protocol import ControlError
from cartd.kd.dialect import KDNET
from cartd.kd.kdnet.keys import parse_key
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.target import Scenario, SimulatedTarget

PAGE = 0x1000
CODE = 0x9F
PARAMETERS = (0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)
SCENARIO = Scenario(
    print_interval=None,
    module_interval=None,
    bugcheck_after=0.5,
    bugcheck_code=CODE,
    bugcheck_parameters=PARAMETERS,
)
KEY = "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"
LOOPBACK = "127.0.0.1"
# The KDNET machines: the smallest the simulator builds (64 MiB, 16,286 pages in its runs). A
# full dump of it takes about 25 s over loopback (some 2.7 MB/s, measured); every further
# 64 MiB would add as much again.
KDNET_MEMORY = 64 << 20
# DUMP_HEADER64 offsets (spec kd-serial-and-dumps.md section 10, kdmp-parser's HEADER64).
CONTEXT_OFFSET, CONTEXT_SIZE = 0x348, 0x4D0
SUMMARY_OFFSET = 0x2000  # the bitmap dump's "SDMP" summary: FirstPage +0x20, present pages +0x28
DUMP_NAME = re.compile(r"^[0-9TZ]+-0x9f-(?P<kind>triage|full)-[0-9a-f]{12}\.dmp$")


# --- serial: an automatic triage dump ------------------------------------------------------------


async def test_a_serial_bugcheck_writes_a_triage_dump_that_matches_the_machine(
    tmp_path: Path,
) -> None:
    # Unpaced (baud=None): the pty carries bytes as fast as the two ends go, so the triage dump
    # (about 200 pages) takes a fraction of a second instead of the 70 s a 115200 baud cable
    # would; the KD exchange is the same.
    sim = start_sim(SCENARIO, seed=11, baud=None)
    state = tmp_path / "s"
    config = load_test_config(write_config(tmp_path / "c.toml", ports=[sim.slave_path]), state)
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    machine = sim.target.machine
    try:
        async with daemon_in_process(config) as daemon, _watching(daemon) as watch:
            _, stop = await watch.wait_type(
                ev.Stopped, target, timeout=30, where=lambda e: e.reason == "bugcheck_first"
            )
            _, started = await watch.wait_type(ev.DumpStarted, target)
            assert started.kind == "triage" and started.resumed_pages == 0
            _, written = await watch.wait_type(ev.DumpWritten, target, timeout=60)
            assert written.path == started.path
            assert (written.dump_type, written.missing_pages) == ("bitmap", 0)
            assert not [e for e in watch.of(target) if isinstance(e, ev.DumpStopped)]
            # Held at the bugcheck (policy on_bugcheck = "hold"): the memory is as it was read.
            assert (await _target_status(watch))["state"] == "bugchecked"
            assert sim.target.stopped

            path = Path(written.path)
            assert path.parent == state / "targets" / target / "dumps"
            match = DUMP_NAME.match(path.name)
            assert match is not None and match["kind"] == "triage", path.name
            assert sorted(p.name for p in path.parent.iterdir()) == [path.name]

            parsed = kdmp_parser.KernelDumpParser(path)
            raw = path.read_bytes()
            assert parsed.type == kdmp_parser.DumpType.BMPDump
            assert parsed.header.DumpType.value == 5  # BMPDump
            _assert_header_matches(parsed, raw, machine, stop.processor, f"serial:{sim.slave_path}")

            first_page, present = struct.unpack_from("<QQ", raw, SUMMARY_OFFSET + 0x20)
            assert present == written.pages == started.pages
            assert len(raw) == first_page + present * PAGE == written.size

            addresses = list(parsed.pages.keys())
            assert len(addresses) == present
            for address in addresses:
                assert parsed.read_physical_page(address) == machine.read_physical(address, PAGE), (
                    hex(address)
                )

            # The dump carries its own page tables: what a debugger looks at first translates
            # through them to the machine's bytes.
            state_of_cpu = machine.processor_states[stop.processor]
            for name, address in (
                ("KDBG", machine.kdbg_address),
                ("PsLoadedModuleList", machine.ps_loaded_module_list),
                ("the first module entry", machine.modules[0].ldr_entry),
                ("the stack at RSP", state_of_cpu.rsp),
            ):
                _assert_virtual_page_matches(parsed, machine, address, name)
    finally:
        sim.close()


# --- KDNET: an automatic full dump ---------------------------------------------------------------


async def test_a_kdnet_bugcheck_writes_a_full_dump_of_every_page(tmp_path: Path) -> None:
    async with _kdnet_daemon(tmp_path, KDNET_MEMORY, seed=5) as kdnet:
        watch, machine, target = kdnet.watch, kdnet.machine, kdnet.target
        _, stop = await watch.wait_type(
            ev.Stopped, target, timeout=30, where=lambda e: e.reason == "bugcheck_first"
        )
        _, started = await watch.wait_type(ev.DumpStarted, target)
        assert started.kind == "full"
        _, written = await watch.wait_type(ev.DumpWritten, target, timeout=60)
        assert (written.dump_type, written.missing_pages) == ("full", 0)
        assert (await _target_status(watch))["state"] == "bugchecked"

        path = Path(written.path)
        match = DUMP_NAME.match(path.name)
        assert match is not None and match["kind"] == "full", path.name
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
        parsed = kdmp_parser.KernelDumpParser(path)
        raw = path.read_bytes()
        assert parsed.type == kdmp_parser.DumpType.FullDump
        assert parsed.header.DumpType.value == 1  # FullDump
        _assert_header_matches(parsed, raw, machine, stop.processor, f"kdnet:{kdnet.port}")

        runs = machine.physical_memory_descriptor().runs
        total = sum(run.page_count for run in runs)
        memory = parsed.header.PhysicalMemoryBlock
        assert (memory.NumberOfRuns, memory.NumberOfPages) == (len(runs), total)
        assert written.pages == started.pages == total
        assert len(raw) == 0x2000 + total * PAGE == written.size
        # A full dump is the runs' pages back to back, in run order.
        offset = 0x2000
        for run in sorted(runs, key=lambda run: run.base_page):
            for pfn in range(run.base_page, run.base_page + run.page_count):
                expected = machine.read_physical(pfn * PAGE, PAGE)
                assert raw[offset : offset + PAGE] == expected, hex(pfn)
                offset += PAGE
        assert sorted(parsed.pages.keys()) == [
            pfn * PAGE
            for run in runs
            for pfn in range(run.base_page, run.base_page + run.page_count)
        ]
        # Spot checks through the parser itself, and through the dump's page tables.
        for run in runs:
            for pfn in (run.base_page, run.base_page + run.page_count - 1):
                assert parsed.read_physical_page(pfn * PAGE) == machine.read_physical(
                    pfn * PAGE, PAGE
                )
        rsp = machine.processor_states[stop.processor].rsp
        for name, address in (
            ("KDBG", machine.kdbg_address),
            ("PsLoadedModuleList", machine.ps_loaded_module_list),
            ("the first module entry", machine.modules[0].ldr_entry),
            ("the stack at RSP", rsp),
        ):
            _assert_virtual_page_matches(parsed, machine, address, name)


# --- the dump method -----------------------------------------------------------------------------


async def test_the_dump_method_estimates_refuses_and_reports_progress(tmp_path: Path) -> None:
    """Over KDNET, where a full dump of even the smallest machine takes many seconds: an
    estimate writes nothing; a running target, a second dump and `go` during a dump are
    refused; progress comes at least once a second; a cancelled dump leaves the target held."""
    async with _kdnet_daemon(
        tmp_path, KDNET_MEMORY, seed=6, dump_on_bugcheck="none", bugcheck_after=3.0
    ) as kdnet:
        watch, machine, target, client = kdnet.watch, kdnet.machine, kdnet.target, kdnet.client
        dumps = tmp_path / "targets" / target / "dumps"
        await watch.wait_type(ev.TargetConnected, target, timeout=30)
        assert (await _target_status(watch))["state"] == "running"
        refused = await _refusal(client.call("dump", target=target, kind="full"))
        assert refused.code == "not_stopped" and "break in first" in refused.message, refused
        refused = await _refusal(client.call("dump", target=target, kind="everything"))
        assert refused.code == "invalid_params", refused

        await watch.wait_type(
            ev.Stopped, target, timeout=30, where=lambda e: e.reason == "bugcheck_first"
        )
        total = sum(run.page_count for run in machine.physical_memory_descriptor().runs)
        estimate = await client.call("dump", target=target, kind="full", estimate_only=True)
        # KDNET has no estimate of its speed before a dump has measured it.
        assert estimate == {
            "kind": "full",
            "pages": total,
            "bytes": total * PAGE,
            "estimate_seconds": None,
        }
        triage = await client.call("dump", target=target, kind="triage", estimate_only=True)
        assert triage["kind"] == "triage" and 0 < triage["pages"] < total
        assert triage["bytes"] == triage["pages"] * PAGE and "path" not in triage
        assert not dumps.exists() or list(dumps.iterdir()) == []
        assert not [e for e in watch.of(target) if isinstance(e, ev.DumpStarted)]

        at = len(watch.events)
        started = await client.call("dump", target=target, kind="full")
        assert (started["kind"], started["pages"]) == ("full", total)
        path = Path(started["path"])
        assert path.parent == dumps and DUMP_NAME.match(path.name), path
        _, dump_started = await watch.wait_type(ev.DumpStarted, target, after=at)
        assert (dump_started.path, dump_started.kind) == (str(path), "full")
        began = _seconds(dump_started.time)
        await watch.wait_type(ev.DumpProgress, target, after=at)
        for call in (
            client.call("dump", target=target, kind="triage"),
            client.call("dump", target=target, kind="full", estimate_only=True),
        ):
            busy = await _refusal(call)
            assert busy.code == "target_busy" and f"--cancel {target}" in busy.message, busy
        go = await _refusal(client.call("continue", target=target))
        assert go.code == "target_busy" and "dump" in go.message, go
        assert {p.name for p in dumps.iterdir()} == {
            path.name + ".partial",
            path.name + ".progress",
        }

        # A few seconds of progress events, by the daemon's own clock.
        _, progress_now = await watch.wait_type(
            ev.DumpProgress,
            target,
            after=at,
            where=lambda e: _seconds(e.time) - began >= 4.5,
        )
        status = await _target_status(watch)
        assert status["dump"]["path"] == str(path) and status["dump"]["pages"] == total
        cancelled = await client.call("dump", target=target, cancel=True)
        assert cancelled == {"path": str(path)}
        _, stopped = await watch.wait_type(ev.DumpStopped, target, after=at)
        assert stopped.path == str(path) and stopped.resumable
        progress = [
            e for e in watch.events[at:] if isinstance(e, ev.DumpProgress) and e.target == target
        ]
        times = [began] + [_seconds(e.time) for e in progress]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert len(progress) >= 4 and max(gaps) <= 1.5, gaps
        done = [e.pages_done for e in progress]
        assert done == sorted(done) and 0 < done[-1] < total, done
        assert all(e.pages == total and e.path == str(path) for e in progress)
        assert progress_now.rate > 0 and progress_now.eta_seconds is not None

        # Cancelled: nothing runs, the target is still held, and `go` lets it go.
        refused = await _refusal(client.call("dump", target=target, cancel=True))
        assert refused.code == "not_running", refused
        assert (await _target_status(watch))["state"] == "bugchecked"
        await client.call("continue", target=target)
        at, _ = await watch.wait_type(ev.Running, target, after=at)
        # The stop it was of is gone: what was read becomes a bitmap dump.
        _, kept = await watch.wait_type(ev.DumpWritten, target, after=at)
        assert (kept.path, kept.dump_type) == (str(path), "bitmap")
        assert kept.pages >= done[-1] and kept.pages + kept.missing_pages == total
        assert kdmp_parser.KernelDumpParser(path).type == kdmp_parser.DumpType.BMPDump


# --- over a 115200 baud cable -----------------------------------------------------------------
# (Paced serial, because these only show where a read of a span takes longer than a second and
# choosing a triage dump's pages takes seconds: a real cable, not an unpaced pty.)


async def test_go_is_refused_while_an_automatic_dump_chooses_its_pages(tmp_path: Path) -> None:
    async with _paced_serial_daemon(tmp_path, dump_on_bugcheck="auto") as (watch, target):
        at, _ = await watch.wait_type(ev.Bugcheck, target, timeout=30)
        # The daemon has decided to dump this stop (policy "auto"): it is busy from here on.
        go = await _refusal(watch.client.call("continue", target=target))
        assert go.code == "target_busy", go
        again = await _refusal(watch.client.call("dump", target=target, kind="triage"))
        assert again.code == "target_busy", again
        await watch.wait_type(ev.DumpProgress, target, after=at, timeout=30)
        await watch.client.call("dump", target=target, cancel=True)
        await watch.wait_type(ev.DumpStopped, target, after=at)
        started = [e for e in watch.events[at:] if isinstance(e, ev.DumpStarted)]
        assert len(started) == 1, started


async def test_progress_comes_every_second_over_a_serial_cable(tmp_path: Path) -> None:
    async with _paced_serial_daemon(tmp_path, dump_on_bugcheck="none") as (watch, target):
        await watch.wait_type(
            ev.Stopped, target, timeout=30, where=lambda e: e.reason == "bugcheck_first"
        )
        at = len(watch.events)
        await watch.client.call("dump", target=target, kind="full")
        _, started = await watch.wait_type(ev.DumpStarted, target, after=at)
        began = _seconds(started.time)
        await asyncio.sleep(4.5)
        await watch.client.call("dump", target=target, cancel=True)
        await watch.wait_type(ev.DumpStopped, target, after=at)
        progress = [e for e in watch.events[at:] if isinstance(e, ev.DumpProgress)]
        times = [began] + [_seconds(e.time) for e in progress]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert len(progress) >= 3 and max(gaps) <= 1.5, gaps
        # A 115200 baud line reads about 11 KB/s.
        assert all(5_000 < e.rate < 20_000 for e in progress), [e.rate for e in progress]


# --- helpers ------------------------------------------------------------------------------------


def _assert_header_matches(
    parsed: Any, raw: bytes, machine: SimulatedMachine, processor: int, link: str
) -> None:
    header = parsed.header
    assert (header.BugCheckCode, tuple(header.BugCheckCodeParameter)) == (CODE, PARAMETERS)
    assert header.KdDebuggerDataBlock == machine.kdbg_address
    assert header.PsLoadedModuleList == machine.ps_loaded_module_list
    assert header.PsActiveProcessHead == machine.ps_active_process_head
    assert header.DirectoryTableBase == machine.cr3 & ~0xFFF == parsed.directory_table_base
    assert header.NumberProcessors == machine.processors
    assert header.MachineImageType == 0x8664
    assert header.MinorVersion == machine.build_number
    state = machine.processor_states[processor]
    context = parsed.context
    assert (context.Rip, context.Rsp) == (state.rip, state.rsp)
    assert context.Rip == machine.breakpoint_with_status  # KeBugCheckEx's break
    assert raw[CONTEXT_OFFSET : CONTEXT_OFFSET + CONTEXT_SIZE] == bytes(machine.context(processor))
    comment = bytes(header.Comment).split(b"\0", 1)[0].decode()
    assert comment.startswith("cartd") and comment.endswith(f" over {link}"), comment


def _assert_virtual_page_matches(
    parsed: Any, machine: SimulatedMachine, address: int, name: str
) -> None:
    physical = machine.translate(address)
    assert physical is not None, name
    assert parsed.translate_virtual(address) == physical, name
    page = address & ~(PAGE - 1)
    assert parsed.read_virtual_page(address) == machine.read_virtual(page, PAGE), name


def _seconds(stamp: str) -> float:
    """An event's time (ISO 8601 UTC with microseconds) as POSIX seconds."""
    return datetime.fromisoformat(stamp).timestamp()


@asynccontextmanager
async def _paced_serial_daemon(
    tmp_path: Path, *, dump_on_bugcheck: str
) -> AsyncIterator[tuple[EventWatch, str]]:
    """The daemon and a simulated target on a pty paced like a 115200 baud cable."""
    sim = start_sim(SCENARIO, seed=3, baud=115200)
    config_path = write_config(tmp_path / "c.toml", ports=[sim.slave_path])
    with config_path.open("a") as config_file:
        config_file.write(f'[policy]\ndump_on_bugcheck = "{dump_on_bugcheck}"\n')
    config = load_test_config(config_path, tmp_path / "s")
    try:
        async with daemon_in_process(config) as daemon, _watching(daemon) as watch:
            yield watch, "pts-" + sim.slave_path.rsplit("/", 1)[1]
    finally:
        sim.close()


@asynccontextmanager
async def _watching(daemon: InProcessDaemon) -> AsyncIterator[EventWatch]:
    watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
    try:
        yield watch
        assert watch.dropped == 0
    finally:
        await watch.close()


async def _target_status(watch: EventWatch) -> dict[str, Any]:
    (record,) = (await watch.client.call("status"))["targets"]
    assert isinstance(record, dict)
    return record


async def _refusal(call: Any) -> ControlError:
    try:
        answer = await call
    except ControlError as error:
        return error
    raise AssertionError(f"not refused: {answer}")


@dataclass
class _Kdnet:
    watch: EventWatch
    client: ControlClient
    machine: SimulatedMachine
    target: str
    port: int


async def _free_udp_port() -> int:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    transport.close()
    return port


@asynccontextmanager
async def _kdnet_daemon(
    tmp_path: Path,
    memory: int,
    *,
    seed: int,
    dump_on_bugcheck: str = "auto",
    bugcheck_after: float = 1.0,
) -> AsyncIterator[_Kdnet]:
    """The daemon with the key for a KDNET port on 127.0.0.1, and a simulated target there
    that bug checks `bugcheck_after` seconds after it boots."""
    port = await _free_udp_port()
    config_path = tmp_path / "c.toml"
    config_path.write_text(
        "[serial]\nports = []\n"
        f'[kdnet]\nports = [{port}]\ninterface = "{LOOPBACK}"\n'
        f'[kdnet.keys]\n{port} = "{KEY}"\n'
        "[capture]\nfsync_interval = 0.2\n"
        f'[policy]\ndump_on_bugcheck = "{dump_on_bugcheck}"\n'
    )
    config = load_test_config(config_path, tmp_path)
    assert config.kdnet.keys == {port: KEY} and config.serial.ports == ()
    machine = SimulatedMachine(MachineConfig(seed=seed, memory_size_bytes=memory))
    scenario = Scenario(
        print_interval=None,
        module_interval=None,
        bugcheck_after=bugcheck_after,
        bugcheck_code=CODE,
        bugcheck_parameters=PARAMETERS,
    )
    sim = SimulatedTarget(machine, scenario, seed=seed, dialect=KDNET)
    server = KdnetSimServer(sim, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5)
    try:
        async with daemon_in_process(config) as daemon, _watching(daemon) as watch:
            await server.start()
            yield _Kdnet(watch, watch.client, machine, f"kdnet-{port}", port)
    finally:
        server.close()
