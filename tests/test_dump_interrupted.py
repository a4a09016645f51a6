"""Crash dumps cut short: the link pulled and plugged back, the daemon restarted, the target
rebooted, each in the middle of a dump; and a full dump of a 512 MiB machine over KDNET.

Each interruption must end in a valid dump and never in a corrupt file: a dump of the same stop
goes on where it stopped and ends complete; a dump whose stop is gone (the target rebooted)
ends as a bitmap dump of the pages read before. Afterwards the dumps directory holds only
`.dmp` files (no `.partial`, `.progress` or `.tmp`), each opened by kdmp-parser, a parser cartd
shares no code with, each exactly as long as its header says, and every page in it equal to the
simulated machine's memory at the stop it was read at.

The serial dumps are the automatic triage dump of a bugcheck (policy dump_on_bugcheck "auto"),
over a pty paced at BAUD: fast enough for a test, slow enough to interrupt after a few
dump_progress events.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kdmp_parser
import pytest
from daemon_harness import (
    DaemonProcess,
    EventWatch,
    PtySim,
    daemon_in_process,
    load_test_config,
    session_dirs,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.capture.journal import scan_journal
from cartd.control.protocol import ControlError
from cartd.kd.dialect import KDNET
from cartd.kd.kdnet.keys import parse_key
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.memory import PhysicalMemory
from cartd.sim.target import Scenario, SimulatedTarget

PAGE = 0x1000
HEADER_SIZE = 0x2000  # DUMP_HEADER64; a full dump's pages follow it
SUMMARY_OFFSET = 0x2000  # a bitmap dump's "SDMP" summary: FirstPage +0x20, present pages +0x28
# The simulator's 1 GiB machine has a triage dump of about 190 pages; at 1.5 Mbaud (13 times a
# 115200 baud cable, the same KD exchange) it takes about 6 s, a dump_progress a second.
BAUD = 1_500_000
SCENARIO = Scenario(
    print_interval=None,
    module_interval=None,
    bugcheck_after=1.0,
    reboot_after_bugcheck=False,
)
DUMP_TIMEOUT = 60.0  # a triage dump at BAUD, with room for a slow, shared machine
KEY = "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"
LOOPBACK = "127.0.0.1"


# --- the link cut and restored ----------------------------------------------------------------


@pytest.fixture
def dev_link() -> Iterator[Path]:
    """A name under /dev for the port (as /dev/serial/by-id/ names are), so a replug can put a
    new pty behind it; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the port is a symlink under /dev, which needs root")
    path = Path(f"/dev/cartd-test-{secrets.token_hex(4)}")
    yield path
    if path.is_symlink():
        path.unlink()


def point(link: Path, slave: str) -> None:
    """Make `link` name `slave`, replacing what it named (atomically, as udev does)."""
    temporary = link.with_name(link.name + ".new")
    os.symlink(slave, temporary)
    os.replace(temporary, link)


async def test_a_dump_cut_by_an_unplug_resumes_after_the_replug(
    tmp_path: Path, dev_link: Path
) -> None:
    sim = start_sim(SCENARIO, seed=21, baud=BAUD)
    point(dev_link, sim.slave_path)
    state = tmp_path / "s"
    config_path = write_config(
        tmp_path / "cartd.toml",
        ports=[str(dev_link)],
        baud_rates=[BAUD],
        active_probe=[str(dev_link)],  # a target held at its bugcheck says nothing by itself
    )
    target = dev_link.name
    dumps = state / "targets" / target / "dumps"
    try:
        async with daemon_in_process(load_test_config(config_path, state)) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                at, started = await _started_then_progress(watch, target)
                sim.unplug()
                dev_link.unlink()
                at, stopped = await watch.wait_type(ev.DumpStopped, target, after=at)
                assert stopped.path == started.path and stopped.resumable, stopped
                assert "link" in stopped.reason, stopped
                # Nothing that looks like a dump: the pages read wait in the partial dump.
                name = Path(started.path).name
                assert _names(dumps) == {f"{name}.partial", f"{name}.progress"}

                await asyncio.sleep(0.5)
                point(dev_link, sim.replug())
                at, resumed = await watch.wait_type(ev.DumpStarted, target, after=at, timeout=30)
                assert (resumed.path, resumed.kind) == (started.path, "triage"), resumed
                assert 0 < resumed.resumed_pages < started.pages, resumed
                assert resumed.pages == started.pages, resumed
                _, written = await watch.wait_type(
                    ev.DumpWritten, target, after=at, timeout=DUMP_TIMEOUT
                )
                assert (written.path, written.dump_type) == (started.path, "bitmap"), written
                # Everything the triage dump asked for, across the two connections.
                assert (written.pages, written.missing_pages) == (started.pages, 0), written
                assert sim.target.stopped  # still held at the bugcheck the dump is of
                # The first connection's partial dump was closed, not left open and deleted.
                assert _open_files_under(dumps) == [], _open_files_under(dumps)
            finally:
                await watch.close()
    finally:
        sim.close()
    (parsed,) = _check_dumps(dumps).values()
    _assert_pages_match(parsed, sim.target.machine.physical)


# --- the daemon restarted -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_a_dump_cut_by_a_daemon_restart_resumes_in_the_next_daemon(
    tmp_path: Path, how: str
) -> None:
    """SIGTERM: the daemon makes what it read durable and says so (dump_stopped); SIGKILL:
    the next daemon finds what the last flush made durable. Either way it resumes the dump."""
    sim = start_sim(SCENARIO, seed=22, baud=BAUD)
    state = tmp_path / "s"
    config_path = write_config(
        tmp_path / "cartd.toml",
        ports=[sim.slave_path],
        baud_rates=[BAUD],
        active_probe=[sim.slave_path],  # the next daemon finds the target held and silent
    )
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    dumps = state / "targets" / target / "dumps"
    first = DaemonProcess(config_path, state, tmp_path / "first.log")
    second = DaemonProcess(config_path, state, tmp_path / "second.log")
    try:
        await first.start()
        watch = await EventWatch.start(first.socket_path, first.stderr)
        try:
            # Three progress events: more than FLUSH_INTERVAL (2 s) of reading, so even a
            # SIGKILL leaves pages the progress file vouches for.
            _, started = await _started_then_progress(watch, target, progress=3)
        finally:
            await watch.close()
        if how == "sigterm":
            assert await first.stop() == 0, first.stderr()
        else:
            await first.kill()
        name = Path(started.path).name
        left = _names(dumps)
        # A SIGKILL in the middle of a flush also leaves the progress file's next version,
        # which the next daemon removes.
        assert {f"{name}.partial", f"{name}.progress"} <= left, left
        assert left <= {f"{name}.partial", f"{name}.progress", f"{name}.progress.tmp"}, left
        if how == "sigterm":
            # Said after the control socket closed, so it is in the journal only.
            (session,) = session_dirs(state, target)
            journal = scan_journal(session / "events.jsonl").events
            (stopped,) = [e for e in journal if isinstance(e, ev.DumpStopped)]
            assert stopped.path == started.path and stopped.resumable, stopped
            assert stopped.reason == "the daemon is stopping", stopped

        await second.start()
        watch = await EventWatch.start(second.socket_path, second.stderr)
        try:
            at, resumed = await watch.wait_type(ev.DumpStarted, target, timeout=30)
            assert (resumed.path, resumed.kind) == (started.path, "triage"), resumed
            assert 0 < resumed.resumed_pages < started.pages, resumed
            _, written = await watch.wait_type(
                ev.DumpWritten, target, after=at, timeout=DUMP_TIMEOUT
            )
            assert (written.path, written.dump_type) == (started.path, "bitmap"), written
            assert (written.pages, written.missing_pages) == (started.pages, 0), written
        finally:
            await watch.close()
        assert await second.stop() == 0, second.stderr()
    finally:
        for daemon in (first, second):
            if daemon.process is not None and daemon.process.returncode is None:
                await daemon.kill()
        sim.close()
    (parsed,) = _check_dumps(dumps).values()
    _assert_pages_match(parsed, sim.target.machine.physical)
    for log in (first.log_path, second.log_path):
        assert "Traceback" not in log.read_text(), log.read_text()


# --- the target rebooted ------------------------------------------------------------------------


async def test_a_target_that_reboots_mid_dump_leaves_a_bitmap_dump_of_what_was_read(
    tmp_path: Path,
) -> None:
    """The target resets by itself (a watchdog, a power cycle) while its dump is read over a
    link that stays up: the stop is gone, so what was read becomes a bitmap dump at once. The
    bugcheck after the reboot is a new stop, with a dump of its own."""
    sim = start_sim(SCENARIO, seed=23, baud=BAUD)
    state = tmp_path / "s"
    config = load_test_config(
        write_config(tmp_path / "cartd.toml", ports=[sim.slave_path], baud_rates=[BAUD]), state
    )
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    dumps = state / "targets" / target / "dumps"
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                at, started = await _started_then_progress(watch, target)
                before = _power_cycle(sim)
                at, stopped = await watch.wait_type(ev.DumpStopped, target, after=at)
                assert stopped.path == started.path and not stopped.resumable, stopped
                _, written = await watch.wait_type(ev.DumpWritten, target, after=at)
                assert (written.path, written.dump_type) == (started.path, "bitmap"), written
                assert 0 < written.pages < started.pages, written
                assert written.pages + written.missing_pages == started.pages, written
                await watch.wait_type(ev.TargetRebooted, target, after=at)
                kept = _names(dumps)
                assert kept == {Path(started.path).name}, kept

                at, again = await _next_dump(watch, target, after=at)
                assert again.path != started.path and again.resumed_pages == 0, again
            finally:
                await watch.close()
    finally:
        sim.close()
    parsed = _check_dumps(dumps)
    assert set(parsed) == {Path(started.path).name, Path(again.path).name}
    assert len(parsed[Path(started.path).name].pages) == written.pages
    _assert_pages_match(parsed[Path(started.path).name], before)
    _assert_pages_match(parsed[Path(again.path).name], sim.target.machine.physical)


async def test_a_dump_cancelled_to_reboot_the_target_leaves_a_bitmap_dump(
    tmp_path: Path,
) -> None:
    """`reboot` is refused while a dump is read; an engineer cancels the dump (it stays
    resumable while the target is held) and reboots: the stop is gone, and what was read
    becomes a bitmap dump."""
    sim = start_sim(SCENARIO, seed=24, baud=BAUD)
    state = tmp_path / "s"
    config = load_test_config(
        write_config(tmp_path / "cartd.toml", ports=[sim.slave_path], baud_rates=[BAUD]), state
    )
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    dumps = state / "targets" / target / "dumps"
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            client = watch.client
            try:
                at, started = await _started_then_progress(watch, target)
                with pytest.raises(ControlError) as refused:
                    await client.call("reboot", target=target)
                assert refused.value.code == "target_busy", refused.value
                assert await client.call("dump", target=target, cancel=True) == {
                    "path": started.path
                }
                at, stopped = await watch.wait_type(ev.DumpStopped, target, after=at)
                assert stopped.path == started.path and stopped.resumable, stopped
                name = Path(started.path).name
                assert _names(dumps) == {f"{name}.partial", f"{name}.progress"}
                before = sim.target.machine.physical  # the reboot builds the memory anew

                await client.call("reboot", target=target)
                _, written = await watch.wait_type(ev.DumpWritten, target, after=at)
                assert (written.path, written.dump_type) == (started.path, "bitmap"), written
                assert 0 < written.pages < started.pages, written
                at, again = await _next_dump(watch, target, after=at)
                assert again.path != started.path and again.resumed_pages == 0, again
            finally:
                await watch.close()
    finally:
        sim.close()
    parsed = _check_dumps(dumps)
    assert set(parsed) == {Path(started.path).name, Path(again.path).name}
    _assert_pages_match(parsed[Path(started.path).name], before)
    _assert_pages_match(parsed[Path(again.path).name], sim.target.machine.physical)


# --- a full dump of 512 MiB over KDNET ----------------------------------------------------------

KDNET_MEMORY = 512 << 20  # two RAM runs, with holes at page 0 and from 636 KiB to 1 MiB
# Free pages whose PFN is a multiple of this get a tag naming them, so a page stored in the
# wrong slot of the dump shows; the stride is prime to the dump job's 16-page reads.
TAG_STRIDE = 17
FULL_DUMP_TIMEOUT = 250.0  # about 120 s here; under pytest's 300 s, to fail with the events


async def test_a_full_dump_of_512_mib_over_kdnet_matches_the_machine(tmp_path: Path) -> None:
    port = await _free_udp_port()
    config_path = tmp_path / "cartd.toml"
    config_path.write_text(
        "[serial]\nports = []\n"
        f'[kdnet]\nports = [{port}]\ninterface = "{LOOPBACK}"\n'
        f'[kdnet.keys]\n{port} = "{KEY}"\n'
        # The wire capture would hold every datagram of the dump: more disk than the dump and
        # a third of the daemon's time, for nothing this test looks at.
        "[capture]\nwire_capture = false\n"
    )
    config = load_test_config(config_path, tmp_path)
    machine = SimulatedMachine(MachineConfig(seed=25, memory_size_bytes=KDNET_MEMORY))
    sim = SimulatedTarget(machine, SCENARIO, seed=25, dialect=KDNET)
    server = KdnetSimServer(sim, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5)
    target = f"kdnet-{port}"
    dumps = tmp_path / "targets" / target / "dumps"
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await server.start()  # boots the machine, which builds its memory
                tagged = _tag_free_pages(machine)
                assert len(tagged) > 7000, len(tagged)  # most of 131,072 / 17 pages are free
                at, started = await watch.wait_type(ev.DumpStarted, target, timeout=30)
                assert started.kind == "full", started
                _, written = await watch.wait_type(
                    ev.DumpWritten, target, after=at, timeout=FULL_DUMP_TIMEOUT
                )
                assert (written.dump_type, written.missing_pages) == ("full", 0), written
                assert sim.stopped
            finally:
                await watch.close()
    finally:
        server.close()
    (parsed,) = _check_dumps(dumps).values()
    runs = machine.physical_memory_descriptor().runs
    assert len(runs) == 2 and runs[0].base_page > 0, runs
    total = sum(run.page_count for run in runs)
    assert written.pages == started.pages == total
    assert parsed.type == kdmp_parser.DumpType.FullDump
    # The file itself, run after run: every page equal to the machine's.
    with open(written.path, "rb") as dump:
        dump.seek(HEADER_SIZE)
        for run in runs:
            for pfn in range(run.base_page, run.base_page + run.page_count):
                assert dump.read(PAGE) == machine.read_physical(pfn * PAGE, PAGE), hex(pfn)
    # And through the parser: where it finds the tagged pages, and that there is nothing else.
    assert len(parsed.pages) == total
    for pfn in tagged:
        assert parsed.read_physical_page(pfn * PAGE) == machine.read_physical(pfn * PAGE, PAGE)
    for hole in (
        0,
        runs[0].base_page + runs[0].page_count,
        runs[-1].base_page + runs[-1].page_count,
    ):
        assert parsed.read_physical_page(hole * PAGE) is None, hex(hole)


def _tag_free_pages(machine: SimulatedMachine) -> list[int]:
    """Write a tag into every TAG_STRIDE-th free page (what the kernel holds stays as it is);
    the PFNs tagged."""
    tagged = []
    for run in machine.physical_memory_descriptor().runs:
        for pfn in range(run.base_page, run.base_page + run.page_count):
            if pfn % TAG_STRIDE == 0 and not machine.allocator.is_used(pfn * PAGE):
                machine.write_physical(pfn * PAGE, b"cartd test page %#x\n" % pfn)
                tagged.append(pfn)
    return tagged


async def _free_udp_port() -> int:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    transport.close()
    return port


# --- helpers ------------------------------------------------------------------------------------


async def _started_then_progress(
    watch: EventWatch, target: str, *, progress: int = 2
) -> tuple[int, Any]:
    """The automatic dump of the bugcheck, once it has reported `progress` times; (the index
    of the last progress event, the dump_started event)."""
    at, started = await watch.wait_type(ev.DumpStarted, target, timeout=30)
    assert (started.kind, started.resumed_pages) == ("triage", 0), started
    for _ in range(progress):
        at, _ = await watch.wait_type(ev.DumpProgress, target, after=at + 1)
    assert not [e for e in watch.events[:at] if isinstance(e, ev.DumpWritten)], watch.summary()
    return at, started


async def _next_dump(watch: EventWatch, target: str, *, after: int) -> tuple[int, Any]:
    """The dump of the bugcheck after a reboot, once written: (index, its dump_started)."""
    at, started = await watch.wait_type(ev.DumpStarted, target, after=after, timeout=30)
    at, written = await watch.wait_type(ev.DumpWritten, target, after=at, timeout=DUMP_TIMEOUT)
    assert (written.path, written.dump_type) == (started.path, "bitmap"), written
    assert (written.pages, written.missing_pages) == (started.pages, 0), written
    return at, started


def _power_cycle(sim: PtySim) -> PhysicalMemory:
    """Reset the simulated target at once, whatever it was doing; the memory it had, which the
    boot replaces. `SimServer.start` is the power button: it boots the target again."""
    before = sim.target.machine.physical
    sim.server.start()
    assert sim.target.machine.physical is not before
    return before


def _open_files_under(directory: Path) -> list[str]:
    """What this process (the daemon in it) holds open in `directory`, deleted files too."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
        if name.startswith(f"{directory}/"):
            held.append(name)
    return held


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def _check_dumps(directory: Path) -> dict[str, Any]:
    """Every file in the dumps directory is a finished dump that kdmp-parser opens and whose
    size is exactly what its header describes; the parsed dumps by name."""
    parsed: dict[str, Any] = {}
    for path in sorted(directory.iterdir()):
        assert path.suffix == ".dmp", f"{path.name} is left in {directory}"
        dump = kdmp_parser.KernelDumpParser(path)
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(SUMMARY_OFFSET + 0x30)
        if dump.type == kdmp_parser.DumpType.FullDump:
            assert size == HEADER_SIZE + len(dump.pages) * PAGE, path.name
        else:
            assert dump.type == kdmp_parser.DumpType.BMPDump, (path.name, dump.type)
            first_page, present = struct.unpack_from("<QQ", head, SUMMARY_OFFSET + 0x20)
            assert present == len(dump.pages), path.name
            assert size == first_page + present * PAGE, path.name
        parsed[path.name] = dump
    return parsed


def _assert_pages_match(parsed: Any, memory: PhysicalMemory) -> None:
    for address in parsed.pages:
        assert parsed.read_physical_page(address) == memory.read(address, PAGE), hex(address)
