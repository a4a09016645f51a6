"""A remote debugger attached through the daemon's KD relay drives the simulated target.

Everything is real: the daemon runs in this process, the simulator is served on a pty (serial)
or over KDNET UDP on 127.0.0.1, and the remote debugger is a process of its own that connects to
the relay as an engineer's WinDbg would through an SSH tunnel: tests/remote_kd_host.py (cartd's
own HOST core, driven step by step) on the TCP port, and ntoseye (an independent KD host) on the
UNIX socket. What the remote debugger reads is compared with the simulator's memory, read in
this process from the same SimulatedMachine, and the daemon's journal must record what happened
while the remote debugger owned the target, and who owned it when.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    HEARTBEAT,
    EventWatch,
    InProcessDaemon,
    cartd_cli,
    daemon_in_process,
    free_tcp_port,
    load_test_config,
    session_dirs,
    start_sim,
    write_config,
)
from ntoseye_support import (
    CLOSED_PROXY,
    CONTEXT_REGISTERS,
    FAKE_NT,
    KERNEL_IMAGE,
    KERNEL_PDB,
    MODULE_LINE,
    PROXY_VARIABLES,
    REGISTER_PAIR,
    SECTION_MARK,
    SPECIAL_REGISTERS,
    find_ntoseye,
    hex_value,
    network_isolation,
    tail,
)
from relay_support import RemoteHost

from cartd import events as ev
from cartd.capture.journal import scan_journal
from cartd.cli import build_parser
from cartd.config import CaptureConfig, Config, KdnetConfig, Policy, RelayConfig, SerialConfig
from cartd.control.client import ControlClient
from cartd.kd.constants import DbgStatus
from cartd.kd.context import Amd64Register, read_register, with_register
from cartd.kd.dialect import KDNET, KDNET_MAX_TRANSFER
from cartd.kd.kdnet.keys import parse_key
from cartd.links.streams import open_pty_pair
from cartd.sim.command import build_target
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer
from cartd.sim.target import Scenario, SimulatedTarget

LOOPBACK = "127.0.0.1"
# The example key of MS-HV (kdnet.md section 1), as tests/test_daemon_kdnet.py uses it.
KEY = "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"

# Heartbeats, and no demo driver: module loads would be stops the remote debugger continues.
SCENARIO = Scenario(print_interval=0.5, module_interval=None)
CODE = 0x9F  # DRIVER_POWER_STATE_FAILURE
PARAMETERS = (0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)
# The most a serial KD read returns at once (the remote debugger's hop); on the KDNET hop the
# relay must cut it into pieces of KDNET_MAX_TRANSFER (1360) bytes.
SERIAL_MAX_READ = 3944

# Generous bounds for a loaded machine; nothing here measures speed.
CONNECT_TIMEOUT = 60.0  # from the simulator's boot to the daemon's TargetConnected
STOP_TIMEOUT = 60.0  # from a break-in or bugcheck to the stop reaching the remote debugger
NTOSEYE_TIMEOUT = 120.0  # one whole ntoseye batch session, attach to exit
SOCKET_PATH_MAX = 100  # AF_UNIX paths hold 107 bytes; leave room


# --------------------------------------------------------------------------- the daemon's side


async def attach_info(daemon: InProcessDaemon, target: str) -> dict[str, Any]:
    async with await ControlClient.connect(daemon.socket_path) as client:
        info: dict[str, Any] = await client.call("attach_info", target=target)
        return info


async def target_status(daemon: InProcessDaemon, target: str) -> dict[str, Any]:
    async with await ControlClient.connect(daemon.socket_path) as client:
        status = await client.call("status")
    (record,) = [t for t in status["targets"] if t["target"] == target]
    assert isinstance(record, dict)
    return record


def raise_bugcheck(target: SimulatedTarget) -> None:
    """KeBugCheckEx on the running simulated kernel, now (what its scenario's bugcheck_after
    does at a fixed time after boot). The server that serves it sends what the target queues
    at its next wake-up, which the heartbeats keep scheduled."""
    assert not target.stopped
    target.bugcheck(CODE, PARAMETERS, asyncio.get_running_loop().time())


async def wait_stop(remote: RemoteHost) -> dict[str, Any]:
    """The next stop the remote debugger is told of (a loaded machine may need a while)."""
    return await remote.must("wait_stop", timeout=STOP_TIMEOUT)


async def heartbeat_prints(remote: RemoteHost) -> list[str]:
    """The DbgPrint lines the remote debugger saw, once a heartbeat is among them."""
    seen: list[str] = []
    deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT
    while not any(HEARTBEAT.search(line) for line in seen):
        assert asyncio.get_running_loop().time() < deadline, f"no heartbeat reached it: {seen}"
        seen += (await remote.must("prints"))["prints"]
        await asyncio.sleep(0.2)
    return seen


async def debug_through_relay(
    daemon: InProcessDaemon, watch: EventWatch, sim: SimulatedTarget, target: str
) -> None:
    """The session both relay tests run: attach with a break-in, identify the kernel, read
    memory, continue, see prints, receive a bugcheck, leave; the journal follows along."""
    machine = sim.machine
    info = await attach_info(daemon, target)
    assert info["tcp_state"] == f"listening on {LOOPBACK}:{info['port']}", info
    at = len(watch.events)
    remote = await RemoteHost.start(f"tcp:{LOOPBACK}:{info['port']}")
    try:
        # --- attach: the daemon hands the target over and records who took it ---------------
        await remote.must("attach", break_in=True)
        stop = await wait_stop(remote)
        assert (stop["reason"], stop["bugcheck"]) == ("break_in", None), stop
        assert stop["pc"] == machine.breakpoint_with_status, stop
        at, taken = await watch.wait_type(ev.OwnerChanged, target, after=at)
        assert taken.previous == "cartd" and taken.owner != "cartd", taken
        # Named as `cartd status` shows it: the local user behind the connection, and its address.
        assert taken.peer.startswith(f"tcp {LOOPBACK}:"), taken
        assert taken.user == _this_user(), taken
        assert taken.owner == f"{taken.user} ({taken.peer})", taken
        await watch.wait_type(ev.Stopped, target, after=at, where=lambda e: e.reason == "break_in")
        assert (await target_status(daemon, target))["relay"]["owner"] == taken.owner

        # --- what the target is, and its memory, as the remote debugger reads them ------------
        version = await remote.must("version")
        assert version["kern_base"] == machine.kernel_base, version
        assert version["ps_loaded_module_list"] == machine.ps_loaded_module_list, version
        first_page = await remote.read("virtual", machine.kernel_base, 0x1000)
        assert first_page[:2] == b"MZ"
        assert first_page == machine.read_virtual(machine.kernel_base, 0x1000)
        # One whole serial read (more than two KDNET pieces), across a page boundary.
        across = machine.kernel_base + 0x800
        assert SERIAL_MAX_READ > 2 * KDNET_MAX_TRANSFER
        data = await remote.read("virtual", across, SERIAL_MAX_READ)  # see the KDNET test
        assert data == machine.read_virtual(across, SERIAL_MAX_READ)
        kernel_pa = machine.translate(machine.kernel_base)
        assert kernel_pa is not None
        physical = await remote.read("physical", kernel_pa, 0x1000)
        assert physical == machine.read_physical(kernel_pa, 0x1000) == first_page

        # --- continue: the target runs, and its DbgPrints reach the remote debugger -----------
        await remote.must("continue")
        prints = await heartbeat_prints(remote)
        assert not sim.stopped
        at, _ = await watch.wait_type(ev.Running, target, after=at)
        await watch.wait_type(ev.DebugPrint, target, after=at, where=_heartbeat)

        # --- a bugcheck: the remote debugger gets the stop, the journal records it -------------
        raise_bugcheck(sim)
        stop = await wait_stop(remote)
        assert stop["reason"] == "bugcheck_first", stop
        assert stop["bugcheck"] == {"code": CODE, "parameters": list(PARAMETERS)}, stop
        at, stopped = await watch.wait_type(
            ev.Stopped, target, after=at, timeout=STOP_TIMEOUT, where=_bugcheck_first
        )
        # The journal's stop is the one the remote debugger was given.
        assert (stopped.processor, stopped.pc) == (stop["processor"], stop["pc"]), stopped
        _, bugcheck = await watch.wait_type(ev.Bugcheck, target, after=at)
        assert (bugcheck.code, bugcheck.parameters) == (CODE, PARAMETERS), bugcheck
        prints += (await remote.must("prints"))["prints"]
        assert any(f"*** Fatal System Error: 0x{CODE:08x}" in line for line in prints), prints
        # Nothing came between: the remote debugger's session was never taken back.
        assert [e for e in watch.of(target) if isinstance(e, ev.OwnerChanged)][-1] is taken

        # --- the remote debugger leaves: the daemon owns the target again, still held ----------
        await remote.exit()
        assert remote.process.returncode == 0, await remote.stderr()
    finally:
        await remote.kill()
    at, back = await watch.wait_type(ev.OwnerChanged, target, after=at)
    assert (back.owner, back.previous) == ("cartd", taken.owner), back
    record = await target_status(daemon, target)
    assert record["state"] == "bugchecked", record
    assert record["relay"]["owner"] == "cartd", record
    assert sim.stopped and sim.bugchecked
    assert watch.dropped == 0


def assert_journal_recorded(state_dir: Path, target: str) -> None:
    """The journal on disk, after the daemon stopped: the remote debugger's ownership and the
    bugcheck it was given, in the order they happened."""
    (session,) = session_dirs(state_dir, target)
    journal = scan_journal(session / "events.jsonl")
    assert journal.problems == []
    owners = [e.owner for e in journal.events if isinstance(e, ev.OwnerChanged)]
    assert len(owners) == 3 and owners[0] == owners[2] == "cartd", owners
    kinds = [
        e.type if not isinstance(e, ev.OwnerChanged) else f"owner {e.owner}"
        for e in journal.events
        if isinstance(e, ev.OwnerChanged | ev.Bugcheck)
        or (isinstance(e, ev.Stopped) and e.reason in ("break_in", "bugcheck_first"))
    ]
    assert kinds == [
        "owner cartd",
        f"owner {owners[1]}",
        "stopped",
        "stopped",
        "bugcheck",
        "owner cartd",
    ], kinds


def _this_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _heartbeat(event: ev.DebugPrint) -> bool:
    return HEARTBEAT.search(event.text) is not None


def _bugcheck_first(event: ev.Stopped) -> bool:
    return event.reason == "bugcheck_first"


# --------------------------------------------------------------------------- serial and KDNET


async def test_serial_target_debugged_through_the_relay_tcp_port(tmp_path: Path) -> None:
    """A second KD host on the relay's TCP port drives a serial target as if on its cable:
    break-in, GetVersion, virtual and physical reads equal to the simulator's memory, continue
    with DbgPrints, a bugcheck with its code and parameters; the journal records the stops and
    the owner (the remote debugger, then cartd again with the bugcheck still held)."""
    sim = start_sim(SCENARIO, seed=21)
    config_path = write_config(
        tmp_path / "cartd.toml", ports=[sim.slave_path], dump_on_bugcheck="none"
    )
    config = load_test_config(config_path, tmp_path / "s")
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await watch.wait_type(ev.TargetConnected, target, timeout=CONNECT_TIMEOUT)
                await debug_through_relay(daemon, watch, sim.target, target)
            finally:
                await watch.close()
    finally:
        sim.close()
    assert_journal_recorded(tmp_path / "s", target)


async def test_kdnet_target_debugged_through_the_relay_as_serial(tmp_path: Path) -> None:
    """The same session with the target on KDNET (UDP on 127.0.0.1, with a key): the remote
    debugger still speaks serial KD to the relay, and its reads of up to 3944 bytes, which the
    relay cuts into 1360-byte KDNET reads, come back whole and equal to the target's memory."""
    port = await _free_udp_port()
    state = _short_directory(tmp_path)
    config = Config(
        state_dir=state,
        state_dir_given=True,
        serial=SerialConfig(ports=()),
        policy=Policy(dump_on_bugcheck="none"),
        kdnet=KdnetConfig(ports=(port,), interface=LOOPBACK, keys={port: KEY}),
        capture=CaptureConfig(fsync_interval=0.2),
        relay=RelayConfig(first_port=free_tcp_port()),
    )
    machine = SimulatedMachine(MachineConfig(seed=22, memory_size_bytes=1 << 30))
    sim = SimulatedTarget(machine, SCENARIO, seed=22, dialect=KDNET)
    server = KdnetSimServer(sim, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5)
    target = f"kdnet-{port}"
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await server.start()
                await watch.wait_type(ev.TargetConnected, target, timeout=CONNECT_TIMEOUT)
                await debug_through_relay(daemon, watch, sim, target)
            finally:
                await watch.close()
        assert_journal_recorded(state, target)
        await assert_reads_split_on_the_kdnet_hop(state, target, machine)
    finally:
        server.close()
        if state != tmp_path:
            shutil.rmtree(state, ignore_errors=True)


async def assert_reads_split_on_the_kdnet_hop(
    state_dir: Path, target: str, machine: SimulatedMachine
) -> None:
    """The daemon's wire capture of the KDNET hop, decoded by `cartd decode`: no read asked the
    target for more than 1360 bytes, and the remote debugger's 3944-byte read went out as
    three consecutive pieces."""
    (session,) = session_dirs(state_dir, target)
    decoded = await cartd_cli(
        "decode", str(session / "wire.pcapng"), "--key", KEY, "--json", timeout=120
    )
    assert decoded.returncode == 0, decoded
    reads: list[tuple[int, int]] = []
    for line in decoded.stdout.splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        kd = record.get("kd") or {}
        if record.get("direction") == "host->target" and kd.get("api") in (
            "ReadVirtualMemory",
            "ReadPhysicalMemory",
        ):
            reads.append((int(kd["address"], 16), kd["count"]))
    assert reads and max(count for _, count in reads) <= KDNET_MAX_TRANSFER, reads
    across = machine.kernel_base + 0x800
    piece = KDNET_MAX_TRANSFER
    pieces = [
        (across, piece),
        (across + piece, piece),
        (across + 2 * piece, SERIAL_MAX_READ - 2 * piece),
    ]
    assert any(reads[i : i + 3] == pieces for i in range(len(reads))), reads


async def _free_udp_port() -> int:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    transport.close()
    return port


def _short_directory(tmp_path: Path) -> Path:
    """A state directory whose relay sockets (<state>/kd/<target>.sock) fit in sun_path."""
    if len(os.fsencode(tmp_path / "kd" / "kdnet-65535.sock")) <= SOCKET_PATH_MAX:
        return tmp_path
    return Path(tempfile.mkdtemp(prefix="cartd-", dir="/tmp"))


# --------------------------------------------------------------------------- ntoseye


def _fake_nt_arguments() -> list[str]:
    """`cartd sim` serving the fake-nt kernel, quiet, unpaced (tests/test_interop_ntoseye.py)."""
    return [
        *("sim", "--kernel-image", str(KERNEL_IMAGE), "--baud", "0"),
        *("--scenario", "quiet", "--seed", "11"),
    ]


@dataclass(frozen=True)
class NtoseyeRun:
    command: list[str]
    pid: int
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str

    def report(self) -> str:
        return (
            f"$ {' '.join(self.command)}\nexit status {self.returncode}\n"
            f"--- ntoseye stdout:\n{tail(self.stdout, 120)}\n"
            f"--- ntoseye stderr (KD trace):\n{tail(self.stderr)}"
        )

    def section(self, name: str) -> list[str]:
        """The output lines of one command, after its `.echo ==name==` marker."""
        lines: list[str] | None = None
        for line in self.stdout.splitlines():
            mark = SECTION_MARK.match(line.strip())
            if mark:
                if lines is not None:
                    break
                if mark.group(1) == name:
                    lines = []
            elif lines is not None:
                lines.append(line.rstrip())
        assert lines is not None, f"no output section {name!r}\n{self.report()}"
        return lines


async def run_ntoseye(
    ntoseye: Path, unix_socket: str, home: Path, isolation: list[str]
) -> NtoseyeRun:
    """One ntoseye batch session on the relay's UNIX socket, kept off the network (a network
    namespace of its own where unshare(1) allows one, a closed HTTP proxy in any case)."""
    commands = [("vertarget", "vertarget"), ("lm", "lm"), ("r", "r")]
    script = "; ".join(f".echo =={name}==; {command}" for name, command in commands)
    command = [
        *isolation,
        str(ntoseye),
        *("-b", "kd", "--connect", unix_socket, "--memory-source", "kd"),
        *("--kd-handshake-timeout", "20", "--sympath-append", str(FAKE_NT)),
        *("--batch", "-c", script),
    ]
    env = {key: value for key, value in os.environ.items() if key.lower() not in PROXY_VARIABLES}
    env.update(HOME=str(home), NTOSEYE_KD_TRACE="1")
    env.update({name.upper(): CLOSED_PROXY for name in PROXY_VARIABLES if name != "no_proxy"})
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), NTOSEYE_TIMEOUT)
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        returncode: int | None = None
    else:
        returncode = process.returncode
    return NtoseyeRun(
        command,
        process.pid,
        returncode,
        stdout.decode(errors="replace"),
        stderr.decode(errors="replace"),
    )


def _expected_break_in_registers(machine: SimulatedMachine) -> dict[str, int]:
    """Processor 0 at a break-in: DbgBreakPointWithStatus(DBG_STATUS_CONTROL_C), so RIP is on
    its int3 and RCX holds the status (what SimulatedTarget reports)."""
    context = with_register(
        bytes(machine.context(0)), Amd64Register.RIP, machine.breakpoint_with_status
    )
    context = with_register(context, Amd64Register.RCX, DbgStatus.CONTROL_C)
    special = bytes(machine.special_registers(0))
    expected = {name: read_register(context, field) for name, field in CONTEXT_REGISTERS.items()}
    expected.update(
        {name: read_register(special, field) for name, field in SPECIAL_REGISTERS.items()}
    )
    return expected


async def test_ntoseye_attaches_through_the_relay_unix_socket(tmp_path: Path) -> None:
    """ntoseye, an independent KD host, attaches to a serial target through the relay's UNIX
    socket: `vertarget`, `lm` and `r` show the simulated fake-nt kernel, its module list and the
    break-in registers; the journal names ntoseye's connection as the owner, then cartd again,
    and the target runs on after ntoseye's batch continued it."""
    ntoseye = find_ntoseye()
    for needed in (KERNEL_IMAGE, KERNEL_PDB):
        if not needed.is_file():
            pytest.skip(f"{needed} is missing: the shared fake-nt vectors are not checked out")
    arguments = build_parser().parse_args(_fake_nt_arguments())
    sim = build_target(arguments)
    # The machine expected: built again from the same arguments (it is deterministic from its
    # config), so nothing the session did to the served one can hide in the comparison.
    machine = build_target(arguments).machine
    server = SimServer(sim, baud=None)
    master, slave_path = open_pty_pair()
    attached = server.attach(master)
    server.start()
    state = _short_directory(tmp_path)
    config_path = write_config(tmp_path / "cartd.toml", ports=[slave_path])
    config = load_test_config(config_path, state)
    target = "pts-" + slave_path.rsplit("/", 1)[1]
    home = tmp_path / "home"  # ntoseye caches PDBs under ~/.ntoseye
    home.mkdir()
    isolation = network_isolation()
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await watch.wait_type(ev.TargetConnected, target, timeout=CONNECT_TIMEOUT)
                info = await attach_info(daemon, target)
                unix_socket = info["unix_socket"]
                assert unix_socket == str(state / "kd" / f"{target}.sock"), info
                assert info["unix_state"] == f"listening on {unix_socket}", info
                assert info["commands"]["ntoseye"] == f"ntoseye -b kd --connect {unix_socket}"
                # Twice: the relay takes a new debugger once the first has left.
                for _ in range(2):
                    at = len(watch.events)
                    run = await run_ntoseye(ntoseye, unix_socket, home, isolation)
                    assert run.returncode == 0, "ntoseye did not finish its batch\n" + run.report()
                    _assert_ntoseye_saw_the_machine(run, machine)
                    await _assert_owned_by_ntoseye_and_back(watch, target, run, after=at)
                    # ntoseye's batch left the target running (it continues before it quits).
                    record = await target_status(daemon, target)
                    assert record["state"] == "running", record
                    assert record["relay"]["owner"] == "cartd", record
                    assert not sim.stopped
            finally:
                await watch.close()
    finally:
        attached.cancel()
        server.close()
        master.close()
        if state != tmp_path:
            shutil.rmtree(state, ignore_errors=True)


async def _assert_owned_by_ntoseye_and_back(
    watch: EventWatch, target: str, run: NtoseyeRun, *, after: int
) -> None:
    """The journal of one ntoseye session (events from index `after` on): ntoseye's connection
    owns the target, breaks in, continues, and leaves it to cartd."""
    at, taken = await watch.wait_type(ev.OwnerChanged, target, after=after)
    # unshare(1) execs ntoseye: the connection's process is the one started here.
    assert taken.previous == "cartd", taken
    assert taken.peer == f"unix socket, pid {run.pid}", taken
    assert taken.owner == f"{_this_user()} ({taken.peer})", taken
    at, _ = await watch.wait_type(
        ev.Stopped, target, after=at, where=lambda e: e.reason == "break_in"
    )
    at, _ = await watch.wait_type(ev.Running, target, after=at)
    _, back = await watch.wait_type(ev.OwnerChanged, target, after=at)
    assert (back.owner, back.previous) == ("cartd", taken.owner), back


def _assert_ntoseye_saw_the_machine(run: NtoseyeRun, machine: SimulatedMachine) -> None:
    text = "\n".join(run.section("vertarget"))
    kernel = re.search(r"kernel\s+([0-9a-f`]+)\s+size\s+0x([0-9a-f]+)", text)
    assert kernel, run.report()
    assert (hex_value(kernel.group(1)), hex_value(kernel.group(2))) == (
        machine.kernel_base,
        machine.kernel_size,
    ), run.report()
    assert f"build {machine.build_number}" in text, run.report()

    shown_modules: dict[str, tuple[int, int]] = {}
    for line in run.section("lm"):
        match = MODULE_LINE.match(line)
        if match:
            shown_modules[match.group(4)] = (hex_value(match.group(1)), hex_value(match.group(2)))
    expected_modules = {m.name: (m.base, m.base + m.size) for m in machine.modules}
    assert shown_modules == expected_modules, run.report()

    shown: dict[str, int] = {}
    for line in run.section("r"):
        for register, value in REGISTER_PAIR.findall(line):
            shown[register] = hex_value(value)
    expected = _expected_break_in_registers(machine)
    wrong = {
        name: (hex(shown[name]) if name in shown else None, hex(value))
        for name, value in expected.items()
        if shown.get(name) != value
    }
    assert not wrong, f"registers (shown, simulated) differ: {wrong}\n{run.report()}"
