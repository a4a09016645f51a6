"""Interop over KDNET with an independent host: ntoseye (PyPI) attaches to `cartd sim --kdnet`.

ntoseye is the HOST: it listens on 127.0.0.1:PORT (`-b kdnet --connect`), and the simulator,
given that address as bcdedit's hostip and port, pokes it from an ephemeral port. The simulator
serves the fake-nt kernel of shared/vectors, whose PDB lets ntoseye attach without Microsoft's
symbol server (shared/vectors/fake-nt/README.md). ntoseye runs one batch session: the KDNET
handshake, break-in, `vertarget`, `lm` and memory reads, then it quits leaving the target
running. What it prints is compared with a SimulatedMachine built in this process from the same
command line (the machine is deterministic from its config).

The tests must not touch the network. Where unshare(1) allows it, both processes run in a
network namespace of their own (only its loopback, brought up by `ip`); ntoseye's HTTP proxy
also points at a closed loopback port, so its background symbol downloads fail at once and
locally, which is all the isolation there is where no namespace can be made.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from ntoseye_support import (
    BYTES_LINE,
    CLOSED_PROXY,
    FAKE_NT,
    KERNEL_IMAGE,
    KERNEL_PDB,
    MODULE_LINE,
    PROXY_VARIABLES,
    QWORDS_LINE,
    SECTION_MARK,
    find_ntoseye,
    hex_value,
    qwords,
    tail,
)

from cartd.cli import build_parser
from cartd.kd.dialect import KDNET_MAX_TRANSFER
from cartd.sim.command import build_target
from cartd.sim.machine import SimulatedMachine

ROOT = Path(__file__).resolve().parents[1]
SEED = 13
# The example key of MS-HV (kdnet.md section 1): 13-digit words, so every byte of each word
# matters, unlike 1.2.3.4.
KEY = "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"
# A read longer than one unfragmented KDNET reply (1360 bytes) and crossing pages: ntoseye splits
# it into several ReadVirtualMemory requests of up to 2 KiB.
LONG_READ = 0x1000

# The target pokes every 3 s; the first poke may go out before ntoseye listens.
HANDSHAKE_TIMEOUT = 20
SESSION_TIMEOUT = 120.0  # the simulator's start and one whole batch session, attach to exit


def _sim_arguments(host_port: str) -> list[str]:
    return [
        *("sim", "--kdnet", host_port, "--key", KEY),
        *("--kernel-image", str(KERNEL_IMAGE), "--scenario", "quiet", "--seed", str(SEED)),
    ]


# --------------------------------------------------------------------------- fixtures


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
            [str(ntoseye), "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"ntoseye cannot run on this machine: {error}")
    if probe.returncode != 0 or "--kdnet-key" not in probe.stdout:
        pytest.skip(
            f"this ntoseye cannot run here or has no KDNET backend (exit {probe.returncode}): "
            f"{(probe.stdout + probe.stderr).strip()[:500]}"
        )


@pytest.fixture(scope="module")
def machine(runs_here: None) -> SimulatedMachine:
    """The machine `cartd sim` serves: the same MachineConfig, made by the same code from the
    same command line (the address does not change the machine)."""
    args = build_parser().parse_args(_sim_arguments("127.0.0.1:50000"))
    return build_target(args).machine


def _own_network_namespace() -> tuple[list[str], str]:
    """(a prefix that runs a command in a new network namespace, the shell command that brings
    up its loopback), or ([], "") if this machine does not allow it."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return [], ""
    prefix = [unshare, "--net", "--map-root-user"]
    loopback_up = [ip, "link", "set", "lo", "up"]
    try:
        probe = subprocess.run(
            [*prefix, *loopback_up], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return [], ""
    return (prefix, shlex.join(loopback_up)) if probe.returncode == 0 else ([], "")


def _free_udp_port() -> int:
    """A port free on this machine's loopback now. In a namespace of our own every port is."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Session:
    script: str
    returncode: int | None  # None: killed at the timeout
    stdout: str  # ntoseye's
    stderr: str  # ntoseye's, with its KD trace
    sim_stdout: str
    sim_stderr: str

    def report(self) -> str:
        return (
            f"--- script:\n{self.script}\n"
            f"exit status {self.returncode}\n"
            f"--- ntoseye stdout:\n{tail(self.stdout, 150)}\n"
            f"--- ntoseye stderr (KD trace):\n{tail(self.stderr)}\n"
            f"--- sim stdout:\n{tail(self.sim_stdout)}\n"
            f"--- sim stderr:\n{tail(self.sim_stderr)}"
        )

    def section(self, name: str) -> list[str]:
        """The output lines of one command list, between the `.echo ==name==` markers."""
        sections: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in self.stdout.splitlines():
            mark = SECTION_MARK.match(line.strip())
            if mark:
                current = sections.setdefault(mark.group(1), [])
            elif current is not None:
                current.append(line.rstrip())
        assert name in sections, f"no output section {name!r}\n{self.report()}"
        return sections[name]


def _commands(machine: SimulatedMachine) -> list[tuple[str, str]]:
    return [
        ("vertarget", "vertarget"),
        ("lm", "lm"),
        ("header", f"db {machine.kernel_base:#x} L40"),
        ("long", f"db {machine.kernel_base:#x} L{LONG_READ:#x}"),
        ("modules_head", "dq nt!PsLoadedModuleList L2"),
        ("kdbg", f"dq {machine.kdbg_address:#x} L4"),
    ]


@pytest.fixture(scope="module")
def session(
    ntoseye: Path, machine: SimulatedMachine, tmp_path_factory: pytest.TempPathFactory
) -> Session:
    """One ntoseye batch session against one `cartd sim --kdnet`, both started by one shell
    script so that they share the network namespace."""
    directory = tmp_path_factory.mktemp("kdnet")
    home = directory / "home"  # ntoseye caches PDBs under ~/.ntoseye
    home.mkdir()
    namespace, loopback_up = _own_network_namespace()
    address = f"127.0.0.1:{_free_udp_port()}"
    script_commands = "; ".join(
        f".echo =={name}==; {command}" for name, command in _commands(machine)
    )
    sim = [sys.executable, "-m", "cartd", *_sim_arguments(address)]
    debugger = [
        *(str(ntoseye), "-b", "kdnet", "--connect", address, "--kdnet-key", KEY),
        *("--memory-source", "kd", "--kd-handshake-timeout", str(HANDSHAKE_TIMEOUT)),
        *("--sympath-append", str(FAKE_NT), "--batch", "-c", script_commands),
    ]
    files = {name: directory / name for name in ("nt.out", "nt.err", "sim.out", "sim.err")}
    quoted = {name: shlex.quote(str(path)) for name, path in files.items()}
    # ntoseye listens first, so the simulator's first poke usually finds it; if not, the next
    # one (3 s later) does. The simulator is stopped once ntoseye has quit.
    script = "\n".join(
        [
            f"{loopback_up} || exit 97" if namespace else "",
            f"{shlex.join(debugger)} >{quoted['nt.out']} 2>{quoted['nt.err']} </dev/null &",
            "debugger=$!",
            f"{shlex.join(sim)} >{quoted['sim.out']} 2>{quoted['sim.err']} </dev/null &",
            "sim=$!",
            "wait $debugger",
            "status=$?",
            "kill -TERM $sim",
            "wait $sim",
            "exit $status",
        ]
    )
    env = {key: value for key, value in os.environ.items() if key.lower() not in PROXY_VARIABLES}
    env.update(HOME=str(home), NTOSEYE_KD_TRACE="1")
    env.update({name.upper(): CLOSED_PROXY for name in PROXY_VARIABLES if name != "no_proxy"})
    process = subprocess.Popen(
        [*namespace, "sh", "-c", script],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # one process group: a timeout kills both children
    )
    try:
        returncode: int | None = process.wait(timeout=SESSION_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        returncode = None
    text = {
        name: path.read_text(errors="replace") if path.exists() else ""
        for name, path in files.items()
    }
    outcome = Session(
        script=script,
        returncode=returncode,
        stdout=text["nt.out"],
        stderr=text["nt.err"],
        sim_stdout=text["sim.out"],
        sim_stderr=text["sim.err"],
    )
    assert returncode != 97, "could not bring up loopback in the namespace\n" + outcome.report()
    assert returncode == 0, "ntoseye did not finish its batch\n" + outcome.report()
    return outcome


# --------------------------------------------------------------------------- parsing its output


def _memory_bytes(session: Session, name: str) -> tuple[int, bytes]:
    """(first address, bytes) of a `db` dump, which must be contiguous and fully read."""
    start: int | None = None
    data = bytearray()
    for line in session.section(name):
        match = BYTES_LINE.match(line)
        if not match:
            continue
        address, values = hex_value(match.group(1)), match.group(2).replace("-", " ").split()
        if start is None:
            start = address
        assert address == start + len(data), f"gap in the dump at {address:#x}\n{session.report()}"
        assert "??" not in values, f"ntoseye could not read {address:#x}\n{session.report()}"
        data += bytes(int(value, 16) for value in values)
    assert start is not None, f"no byte dump in section {name!r}\n{session.report()}"
    return start, bytes(data)


def _memory_qwords(session: Session, name: str) -> tuple[int, list[int]]:
    start: int | None = None
    values: list[int] = []
    for line in session.section(name):
        match = QWORDS_LINE.match(line)
        if not match:
            continue
        address = hex_value(match.group(1))
        if start is None:
            start = address
        assert address == start + 8 * len(values), f"gap at {address:#x}\n{session.report()}"
        assert "?" not in match.group(2), f"ntoseye could not read {address:#x}\n{session.report()}"
        values += [hex_value(value) for value in match.group(2).split()]
    assert start is not None, f"no quadword dump in section {name!r}\n{session.report()}"
    return start, values


# --------------------------------------------------------------------------- the tests


def test_ntoseye_completes_the_kdnet_handshake(session: Session, machine: SimulatedMachine) -> None:
    first_line = session.sim_stdout.splitlines()[:1]
    assert first_line and "with the --key key" in first_line[0], session.report()
    assert KEY not in session.sim_stdout + session.sim_stderr, session.report()
    assert re.search(
        r"KDNET session with 127\.0\.0\.1:\d+ \(first_contact, protocol 5\)", session.sim_stderr
    ), session.report()
    text = "\n".join(session.section("vertarget"))
    kernel = re.search(r"kernel\s+([0-9a-f`]+)\s+size\s+0x([0-9a-f]+)", text)
    assert kernel, session.report()
    assert (hex_value(kernel.group(1)), hex_value(kernel.group(2))) == (
        machine.kernel_base,
        machine.kernel_size,
    ), session.report()
    assert f"build {machine.build_number}" in text, session.report()
    assert re.search(r"backend\s+kdnet", text), session.report()


def test_lm_lists_the_loaded_module_list(session: Session, machine: SimulatedMachine) -> None:
    shown: dict[str, tuple[int, int]] = {}
    for line in session.section("lm"):
        match = MODULE_LINE.match(line)
        if match:
            shown[match.group(4)] = (hex_value(match.group(1)), hex_value(match.group(2)))
    expected = {module.name: (module.base, module.base + module.size) for module in machine.modules}
    assert shown == expected, (
        f"`lm` shows {sorted(shown.items())}, PsLoadedModuleList holds "
        f"{sorted(expected.items())}\n{session.report()}"
    )
    assert shown["ntoskrnl.exe"][0] == machine.kernel_base, session.report()


def test_virtual_memory_reads_match(session: Session, machine: SimulatedMachine) -> None:
    start, data = _memory_bytes(session, "header")
    assert start == machine.kernel_base, session.report()
    assert data[:2] == b"MZ", session.report()
    assert data == machine.read_virtual(machine.kernel_base, 0x40), session.report()

    start, data = _memory_bytes(session, "long")
    assert (start, len(data)) == (machine.kernel_base, LONG_READ), session.report()
    assert len(data) > 2 * KDNET_MAX_TRANSFER
    assert data == machine.read_virtual(machine.kernel_base, LONG_READ), session.report()

    start, values = _memory_qwords(session, "modules_head")
    assert start == machine.ps_loaded_module_list, session.report()
    assert values == qwords(machine.read_virtual(start, 16)), session.report()

    start, values = _memory_qwords(session, "kdbg")
    assert start == machine.kdbg_address, session.report()
    assert values == qwords(machine.read_virtual(start, 32)), session.report()
    assert struct.pack("<Q", values[2])[:4] == b"KDBG", session.report()


def test_ntoseye_leaves_the_target_running(session: Session) -> None:
    states = [
        line.split(" sim: ", 1)[1]
        for line in session.sim_stderr.splitlines()
        if " sim: stopped (" in line or line.endswith(" sim: running")
    ]
    assert any(state.startswith("stopped (break-in)") for state in states), session.report()
    assert states[-1:] == ["running"], session.report()
