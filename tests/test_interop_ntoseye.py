"""Interop with an independent KD host: ntoseye (PyPI) attaches to `cartd sim` over a UNIX socket.

The simulator serves the fake-nt kernel of shared/vectors, whose PDB lets ntoseye attach without
Microsoft's symbol server (shared/vectors/fake-nt/README.md). ntoseye runs in batch mode: it
breaks in, runs the commands, and quits leaving a live target (it steps RIP past the int3 and
continues). Everything it prints is compared with a SimulatedMachine built in this process from
the same command line; the machine is deterministic from its config, so it holds exactly what the
simulator serves. Then ntoseye attaches a second time to the same process, which proves that the
first session left the target running and answering.

ntoseye looks for the drivers' PDBs on Microsoft's symbol server in the background; the tests
must not touch the network, so it runs in a network namespace of its own where unshare(1) allows
one, and otherwise with its HTTP proxy pointed at a closed loopback port (no name lookups, no
connections off the machine).
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from ntoseye_support import (
    BYTES_LINE,
    CLOSED_PROXY,
    CONTEXT_REGISTERS,
    FAKE_NT,
    KERNEL_IMAGE,
    KERNEL_PDB,
    MODULE_LINE,
    PROXY_VARIABLES,
    QWORDS_LINE,
    REGISTER_PAIR,
    SECTION_MARK,
    SPECIAL_REGISTERS,
    find_ntoseye,
    hex_value,
    network_isolation,
    qwords,
    tail,
)

from cartd.cli import build_parser
from cartd.kd.constants import DbgStatus
from cartd.kd.context import Amd64Register, read_register, with_register
from cartd.sim.command import build_target
from cartd.sim.machine import SimulatedMachine
from cartd.sim.memory import pml4_index

ROOT = Path(__file__).resolve().parents[1]
SEED = 11

# ntoseye alternates break-in and RESET every 2 s until the target reports a stop (8 s by
# default); a loaded CI machine gets more room.
HANDSHAKE_TIMEOUT = 20
NTOSEYE_TIMEOUT = 90.0  # one whole batch session, attach to exit
SIM_START_TIMEOUT = 20.0  # `cartd sim` imports, builds a 4 GiB machine and listens
SIM_STATE_TIMEOUT = 10.0  # for the simulator to report that the target runs again
# AF_UNIX paths hold at most 107 bytes on Linux (sun_path is 108 with the NUL).
MAX_SOCKET_PATH = 100


# --------------------------------------------------------------------------- the simulator


@dataclass
class Simulator:
    process: subprocess.Popen[bytes]
    socket: Path
    stderr_path: Path

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def states(self) -> list[str]:
        """The simulator's notices about the kernel stopping and running, in order."""
        return [
            line.split(" sim: ", 1)[1]
            for line in self.log().splitlines()
            if " sim: stopped (" in line or line.endswith(" sim: running")
        ]

    def wait_until_running(self, stops_expected: int) -> None:
        """Wait for the notice that the target runs again after its `stops_expected`-th
        break-in, with nothing stopped since."""
        deadline = time.monotonic() + SIM_STATE_TIMEOUT
        while True:
            states = self.states()
            breaks = sum(state.startswith("stopped (break-in)") for state in states)
            if breaks == stops_expected and states[-1:] == ["running"]:
                return
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(
                    f"the simulated target should run again after break-in {stops_expected}, "
                    f"but its notices say {states[-4:]}\n--- sim stderr:\n{tail(self.log())}"
                )
            time.sleep(0.05)


def _sim_arguments(socket: Path) -> list[str]:
    return [
        "sim",
        "--unix",
        str(socket),
        "--kernel-image",
        str(KERNEL_IMAGE),
        "--baud",
        "0",
        "--scenario",
        "quiet",
        "--seed",
        str(SEED),
    ]


def _socket_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("kd")
    if len(str(directory / "kd.sock")) <= MAX_SOCKET_PATH:
        return directory
    return Path(tempfile.mkdtemp(prefix="cartd-", dir="/tmp"))


@pytest.fixture(scope="module")
def ntoseye() -> Path:
    return find_ntoseye()


@pytest.fixture(scope="module")
def runs_here(ntoseye: Path) -> None:
    for needed in (KERNEL_IMAGE, KERNEL_PDB):
        if not needed.is_file():
            pytest.skip(f"{needed} is missing: the shared fake-nt vectors are not checked out")
    try:
        probe = subprocess.run(
            [str(ntoseye), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"ntoseye cannot run on this machine: {error}")
    if probe.returncode != 0 or "ntoseye" not in probe.stdout:
        pytest.skip(
            f"ntoseye cannot run on this machine (exit {probe.returncode}): "
            f"{(probe.stdout + probe.stderr).strip()[:500]}"
        )


@pytest.fixture(scope="module")
def simulator(runs_here: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    directory = _socket_directory(tmp_path_factory)
    socket = directory / "kd.sock"
    stderr_path = directory / "sim.stderr"
    with stderr_path.open("wb") as stderr, (directory / "sim.stdout").open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "cartd.cli", *_sim_arguments(socket)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    sim = Simulator(process, socket, stderr_path)
    try:
        deadline = time.monotonic() + SIM_START_TIMEOUT
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"cartd sim did not listen on {socket} (exit status {process.poll()})\n"
                    f"--- sim stderr:\n{tail(sim.log())}"
                )
            time.sleep(0.05)
        yield sim
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def machine(runs_here: None) -> SimulatedMachine:
    """The machine `cartd sim` serves: the same MachineConfig, made by the same code from the
    same command line."""
    args = build_parser().parse_args(_sim_arguments(Path("unused.sock")))
    return build_target(args).machine


# --------------------------------------------------------------------------- running ntoseye


@dataclass(frozen=True)
class NtoseyeRun:
    command: Sequence[str]
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    sim_log: str

    def report(self) -> str:
        return (
            f"$ {' '.join(self.command)}\n"
            f"exit status {self.returncode} after {self.seconds:.1f} s\n"
            f"--- ntoseye stdout:\n{tail(self.stdout, 120)}\n"
            f"--- ntoseye stderr (KD trace):\n{tail(self.stderr)}\n"
            f"--- sim stderr:\n{tail(self.sim_log)}"
        )

    def sections(self) -> dict[str, list[str]]:
        """The output lines of each command list, split at the `.echo ==name==` markers."""
        sections: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in self.stdout.splitlines():
            mark = SECTION_MARK.match(line.strip())
            if mark:
                current = sections.setdefault(mark.group(1), [])
            elif current is not None:
                current.append(line.rstrip())
        return sections


@pytest.fixture(scope="module")
def run_ntoseye(
    ntoseye: Path, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Sequence[tuple[str, str]]], NtoseyeRun]:
    home = tmp_path_factory.mktemp("home")  # ntoseye caches PDBs under ~/.ntoseye
    isolation = network_isolation()
    env = {key: value for key, value in os.environ.items() if key.lower() not in PROXY_VARIABLES}
    env.update(HOME=str(home), NTOSEYE_KD_TRACE="1")
    env.update({name.upper(): CLOSED_PROXY for name in PROXY_VARIABLES if name != "no_proxy"})

    def run(commands: Sequence[tuple[str, str]]) -> NtoseyeRun:
        script = "; ".join(f".echo =={name}==; {command}" for name, command in commands)
        command = [
            *isolation,
            str(ntoseye),
            "-b",
            "kd",
            "--connect",
            str(simulator.socket),
            "--memory-source",
            "kd",
            "--kd-handshake-timeout",
            str(HANDSHAKE_TIMEOUT),
            "--sympath-append",
            str(FAKE_NT),
            "--batch",
            "-c",
            script,
        ]
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=NTOSEYE_TIMEOUT,
                check=False,
            )
            returncode: int | None = done.returncode
            stdout, stderr = done.stdout, done.stderr
        except subprocess.TimeoutExpired as timeout:
            returncode = None
            stdout, stderr = timeout.stdout or b"", timeout.stderr or b""
        outcome = NtoseyeRun(
            command=command,
            returncode=returncode,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
            seconds=time.monotonic() - started,
            sim_log=simulator.log(),
        )
        assert outcome.returncode == 0, "ntoseye did not finish its batch\n" + outcome.report()
        return outcome

    return run


# --------------------------------------------------------------------------- parsing its output


def _section(run: NtoseyeRun, name: str) -> list[str]:
    sections = run.sections()
    assert name in sections, f"no output section {name!r}\n{run.report()}"
    return sections[name]


def _registers(run: NtoseyeRun, name: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in _section(run, name):
        for register, value in REGISTER_PAIR.findall(line):
            found[register] = hex_value(value)
    return found


def _memory_bytes(run: NtoseyeRun, name: str) -> tuple[int, bytes]:
    """(first address, bytes) of a `db`/`!db` dump, which must be contiguous and fully read."""
    start: int | None = None
    data = bytearray()
    for line in _section(run, name):
        match = BYTES_LINE.match(line)
        if not match:
            continue
        address, values = hex_value(match.group(1)), match.group(2).replace("-", " ").split()
        if start is None:
            start = address
        assert address == start + len(data), f"gap in the dump at {address:#x}\n{run.report()}"
        assert "??" not in values, f"ntoseye could not read {address:#x}\n{run.report()}"
        data += bytes(int(value, 16) for value in values)
    assert start is not None, f"no byte dump in section {name!r}\n{run.report()}"
    return start, bytes(data)


def _memory_qwords(run: NtoseyeRun, name: str) -> tuple[int, list[int]]:
    start: int | None = None
    values: list[int] = []
    for line in _section(run, name):
        match = QWORDS_LINE.match(line)
        if not match:
            continue
        address = hex_value(match.group(1))
        if start is None:
            start = address
        assert address == start + 8 * len(values), f"gap at {address:#x}\n{run.report()}"
        assert "?" not in match.group(2), f"ntoseye could not read {address:#x}\n{run.report()}"
        values += [hex_value(value) for value in match.group(2).split()]
    assert start is not None, f"no quadword dump in section {name!r}\n{run.report()}"
    return start, values


# --------------------------------------------------------------------------- what to expect


def _break_in_context(machine: SimulatedMachine) -> bytes:
    """Processor 0's CONTEXT at a break-in: DbgBreakPointWithStatus(DBG_STATUS_CONTROL_C), so
    RIP is on its int3 and RCX holds the status (what SimulatedTarget reports)."""
    context = with_register(
        bytes(machine.context(0)), Amd64Register.RIP, machine.breakpoint_with_status
    )
    return with_register(context, Amd64Register.RCX, DbgStatus.CONTROL_C)


def _expected_registers(context: bytes, special: bytes) -> dict[str, int]:
    expected = {name: read_register(context, field) for name, field in CONTEXT_REGISTERS.items()}
    for name, register in SPECIAL_REGISTERS.items():
        expected[name] = read_register(special, register)
    return expected


def _assert_registers(run: NtoseyeRun, name: str, expected: dict[str, int]) -> None:
    shown = _registers(run, name)
    missing = sorted(expected.keys() - shown.keys())
    assert not missing, f"`r` did not show {missing}\n{run.report()}"
    wrong = {
        register: f"shown {shown[register]:#x}, simulated {value:#x}"
        for register, value in expected.items()
        if shown[register] != value
    }
    assert not wrong, f"registers differ from the simulated CONTEXT: {wrong}\n{run.report()}"


def _module_table(run: NtoseyeRun, name: str) -> dict[str, tuple[int, int]]:
    """Image name -> (start, end) from `lm`."""
    table: dict[str, tuple[int, int]] = {}
    for line in _section(run, name):
        match = MODULE_LINE.match(line)
        if match:
            table[match.group(4)] = (hex_value(match.group(1)), hex_value(match.group(2)))
    return table


def _assert_module_list(run: NtoseyeRun, machine: SimulatedMachine) -> None:
    expected = {module.name: (module.base, module.base + module.size) for module in machine.modules}
    shown = _module_table(run, "lm")
    assert shown == expected, (
        f"`lm` shows {sorted(shown.items())}, PsLoadedModuleList holds "
        f"{sorted(expected.items())}\n{run.report()}"
    )
    assert shown["ntoskrnl.exe"][0] == machine.kernel_base, run.report()


# --------------------------------------------------------------------------- the sessions


def _first_session_commands(machine: SimulatedMachine) -> list[tuple[str, str]]:
    int3 = machine.breakpoint_with_status
    kernel_pa = machine.translate(machine.kernel_base)
    assert kernel_pa is not None
    pml4e = machine.cr3 + 8 * pml4_index(machine.kernel_base)
    return [
        ("vertarget", "vertarget"),
        ("lm", "lm"),
        ("r", "r"),
        ("header", f"db {machine.kernel_base:#x} L40"),
        # Across a page boundary, onto the int3 the break-in reported.
        ("int3", f"db {int3 - 0x10:#x} L20"),
        # A PDB symbol of fake-nt, relocated to where the simulator loaded the image.
        ("modules_head", "dq nt!PsLoadedModuleList L2"),
        ("kdbg", f"dq {machine.kdbg_address:#x} L4"),
        ("physical_header", f"!db {kernel_pa:#x} L20"),
        ("pml4e", f"!dq {pml4e:#x} L2"),
        ("cpu1", "vcpu 1; r"),  # last: it changes the processor later commands apply to
    ]


@dataclass(frozen=True)
class FirstSession:
    run: NtoseyeRun
    machine: SimulatedMachine


@pytest.fixture(scope="module")
def first_session(
    run_ntoseye: Callable[[Sequence[tuple[str, str]]], NtoseyeRun], machine: SimulatedMachine
) -> FirstSession:
    run = run_ntoseye(_first_session_commands(machine))
    return FirstSession(run, machine)


def test_vertarget_reports_the_simulated_kernel(first_session: FirstSession) -> None:
    run, machine = first_session.run, first_session.machine
    text = "\n".join(_section(run, "vertarget"))
    kernel = re.search(r"kernel\s+([0-9a-f`]+)\s+size\s+0x([0-9a-f]+)", text)
    assert kernel, run.report()
    assert (hex_value(kernel.group(1)), hex_value(kernel.group(2))) == (
        machine.kernel_base,
        machine.kernel_size,
    ), run.report()
    assert f"build {machine.build_number}" in text, run.report()
    assert re.search(r"arch\s+AMD64", text), run.report()


def test_lm_lists_the_loaded_module_list(first_session: FirstSession) -> None:
    _assert_module_list(first_session.run, first_session.machine)


def test_registers_match_the_simulated_context(first_session: FirstSession) -> None:
    run, machine = first_session.run, first_session.machine
    special0 = bytes(machine.special_registers(0))
    _assert_registers(run, "r", _expected_registers(_break_in_context(machine), special0))
    # Processor 1 did not take the break-in; its context is as the machine built it.
    special1 = bytes(machine.special_registers(1))
    _assert_registers(run, "cpu1", _expected_registers(bytes(machine.context(1)), special1))


def test_virtual_memory_reads_match(first_session: FirstSession) -> None:
    run, machine = first_session.run, first_session.machine
    start, data = _memory_bytes(run, "header")
    assert start == machine.kernel_base, run.report()
    assert data[:2] == b"MZ", run.report()
    assert data == machine.read_virtual(machine.kernel_base, 0x40), run.report()

    start, data = _memory_bytes(run, "int3")
    assert start == machine.breakpoint_with_status - 0x10, run.report()
    assert data == machine.read_virtual(start, 0x20), run.report()
    assert data[0x10] == 0xCC, run.report()

    start, values = _memory_qwords(run, "modules_head")
    assert start == machine.ps_loaded_module_list, run.report()
    assert values == qwords(machine.read_virtual(start, 16)), run.report()

    start, values = _memory_qwords(run, "kdbg")
    assert start == machine.kdbg_address, run.report()
    assert values == qwords(machine.read_virtual(start, 32)), run.report()
    assert struct.pack("<Q", values[2])[:4] == b"KDBG", run.report()


def test_physical_memory_reads_match(first_session: FirstSession) -> None:
    run, machine = first_session.run, first_session.machine
    kernel_pa = machine.translate(machine.kernel_base)
    start, data = _memory_bytes(run, "physical_header")
    assert start == kernel_pa, run.report()
    assert data == machine.read_physical(start, 0x20), run.report()
    assert data == machine.read_virtual(machine.kernel_base, 0x20), run.report()

    start, values = _memory_qwords(run, "pml4e")
    assert values == qwords(machine.read_physical(start, 16)), run.report()
    assert values[0] & 1, f"the kernel's PML4 entry is not present\n{run.report()}"


def test_detach_leaves_the_target_running_and_it_can_be_attached_again(
    first_session: FirstSession,
    simulator: Simulator,
    run_ntoseye: Callable[[Sequence[tuple[str, str]]], NtoseyeRun],
) -> None:
    machine = first_session.machine
    simulator.wait_until_running(stops_expected=1)
    # ntoseye expects the target's packet ids to start at 0x80800000. A target that goes on
    # with its own sequence may report this break-in as 0x80800001: ntoseye ACKs and drops it,
    # RESETs 2 s later, and the stopped target sends its stop again (spec 3.1; rule 6 in
    # cartd.kd.target), as a real Windows target would. That path costs those 2 s.
    second = run_ntoseye([("lm", "lm"), ("r", "r")])
    _assert_module_list(second, machine)
    special0 = bytes(machine.special_registers(0))
    _assert_registers(second, "r", _expected_registers(_break_in_context(machine), special0))
    simulator.wait_until_running(stops_expected=2)
