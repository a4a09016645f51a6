"""Resident memory of the daemon with 8 serial and 8 KDNET targets connected and idle.

Run with `.venv/bin/python bench/idle_memory.py`. Two real `cartd run` processes, one after the
other, each with its own config and state directory in a temporary directory:

1. a daemon with no ports at all (no serial port, no KDNET port): the floor, what the
   interpreter, the imported modules and the control socket cost;
2. a daemon configured with 8 pseudo-terminals and 8 KDNET ports on 127.0.0.1 (with their keys),
   and 16 simulated Windows targets that this process serves, in its own event loop: 8 on the
   ptys (paced like 115200 baud cables) and 8 over encrypted UDP to the daemon's KDNET ports.

Each daemon is left idle for `--idle` seconds (the targets quiet: booted, then silent) before
VmRSS is read from /proc/PID/status; the second only once `status` on its control socket shows
all 16 targets running. It prints both figures, the difference and the difference per target,
each measured in this one run (the machines are shared, so nothing is compared with a stored
number). MiB here is 2**20 bytes.

Everything is cleaned up on the way out: the daemons get SIGTERM (SIGKILL after 30 s), the
simulators are closed, the ptys and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartd.control.client import ControlClient, DaemonNotRunning
from cartd.kd.dialect import KDNET
from cartd.kd.kdnet.keys import parse_key
from cartd.links.streams import FdStream, open_pty_pair
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer
from cartd.sim.target import Scenario, SimulatedTarget

LOOPBACK = "127.0.0.1"
# A throwaway key for targets on loopback (the one the KDNET daemon tests use).
KEY = "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"
# The simulated machines' memory: pages cost nothing until touched.
MEMORY = 1 << 30
# Booted, then silent: only a break-in or a request wakes them, so "idle" means idle.
QUIET = Scenario(print_interval=None, module_interval=None)
# Boot over a paced 115200 baud pty takes a few seconds, probing each of 8 ports a few more;
# a KDNET target pokes every 3 s. A minute covers both with room on a loaded machine.
CONNECT_TIMEOUT = 120.0
MIB = 1 << 20


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    socket_path: Path
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port(kind: socket.SocketKind) -> int:
    """A port nothing is bound to now (the kernel's choice of an ephemeral one)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])  # "VmRSS:    41236 kB"
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def write_config(
    path: Path,
    *,
    serial_ports: Sequence[str],
    kdnet_ports: Sequence[int],
    relay_ports: dict[str, int],
) -> Path:
    """A config as an operator would write one (JSON strings are TOML basic strings)."""
    keys = ", ".join(f'{port} = "{KEY}"' for port in kdnet_ports)
    relay = ", ".join(f"{json.dumps(target)} = {port}" for target, port in relay_ports.items())
    lines = [
        "[serial]",
        f"ports = {json.dumps(list(serial_ports))}",
        "baud_rates = [115200]",
        # Longer than a booting target's resend interval (1 s), as in the daemon tests.
        "probe_seconds = 1.5",
        "[kdnet]",
        f"ports = {json.dumps(list(kdnet_ports))}",
        f'interface = "{LOOPBACK}"',
        f"keys = {{ {keys} }}",
        "[relay]",
        # Ports of their own (fixed by target id), so other daemons on this machine do not clash.
        f"first_port = {free_port(socket.SOCK_STREAM)}",
        f"ports = {{ {relay} }}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def running_daemon(config: Path, state_dir: Path) -> Iterator[Daemon]:
    log_path = state_dir.parent / f"{state_dir.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "cartd", "run"),
                *("--config", str(config), "--state-dir", str(state_dir)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(process, state_dir / "control.sock", log_path)
    try:
        yield daemon
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def status(daemon: Daemon) -> dict[str, Any]:
    async with await ControlClient.connect(daemon.socket_path) as client:
        return await client.call("status")


async def wait_for_targets(daemon: Daemon, expected: set[str], timeout: float) -> float:
    """Seconds until every target in `expected` is running with its identity (build, kernel
    base) known, as the daemon's status says."""
    started = time.monotonic()
    states: dict[str, str] = {}
    while time.monotonic() - started < timeout:
        if daemon.process.poll() is not None:
            raise SystemExit(
                f"the daemon exited ({daemon.process.returncode}):\n" + daemon.log_tail()
            )
        with contextlib.suppress(DaemonNotRunning, ConnectionError, OSError):
            result = await status(daemon)
            states = {
                # Running, and its identity learned: the daemon has spoken KD with it.
                target["target"]: target["state"] if target.get("identity") else "identifying"
                for target in result.get("targets", [])
            }
            if all(states.get(name) == "running" for name in expected):
                return time.monotonic() - started
        await asyncio.sleep(0.5)
    missing = {
        name: states.get(name, "absent") for name in expected if states.get(name) != "running"
    }
    raise SystemExit(
        f"not all targets running after {timeout:.0f} s: {missing}\n" + daemon.log_tail()
    )


async def wait_for_socket(daemon: Daemon, timeout: float = 30.0) -> None:
    await wait_for_targets(daemon, set(), timeout)


def pts_target_id(slave_path: str) -> str:
    """The daemon's id for a target on /dev/pts/N (the README: the link's stable name)."""
    return "pts-" + Path(slave_path).name


async def measure_empty(work: Path, idle: float) -> int:
    state_dir = work / "empty"
    config = write_config(work / "empty.toml", serial_ports=[], kdnet_ports=[], relay_ports={})
    with running_daemon(config, state_dir) as daemon:
        await wait_for_socket(daemon)
        await asyncio.sleep(idle)
        return vm_rss_kib(daemon.process.pid)


async def measure_loaded(work: Path, serial: int, kdnet: int, idle: float) -> tuple[int, float]:
    """(VmRSS in KiB after `idle` seconds with every target running, seconds to connect all)."""
    ptys = [open_pty_pair() for _ in range(serial)]
    udp_ports = [free_port(socket.SOCK_DGRAM) for _ in range(kdnet)]
    serial_ids = [pts_target_id(slave) for _, slave in ptys]
    kdnet_ids = [f"kdnet-{port}" for port in udp_ports]
    relay_ports = {target: free_port(socket.SOCK_STREAM) for target in serial_ids + kdnet_ids}
    config = write_config(
        work / "loaded.toml",
        serial_ports=[slave for _, slave in ptys],
        kdnet_ports=udp_ports,
        relay_ports=relay_ports,
    )
    serial_sims: list[SimServer] = []
    kdnet_sims: list[KdnetSimServer] = []
    masters: list[FdStream] = [master for master, _ in ptys]
    try:
        with running_daemon(config, work / "loaded") as daemon:
            await wait_for_socket(daemon)  # its KDNET ports are bound before the socket is up
            for seed, master in enumerate(masters, start=1):
                machine = SimulatedMachine(MachineConfig(seed=seed, memory_size_bytes=MEMORY))
                target = SimulatedTarget(machine, QUIET, seed=seed, seconds_per_byte=10 / 115200)
                sim = SimServer(target, baud=115200)
                sim.attach(master)
                sim.start()
                serial_sims.append(sim)
            for seed, port in enumerate(udp_ports, start=100):
                machine = SimulatedMachine(MachineConfig(seed=seed, memory_size_bytes=MEMORY))
                target = SimulatedTarget(machine, QUIET, seed=seed, dialect=KDNET)
                kdnet_sim = KdnetSimServer(target, parse_key(KEY), host=(LOOPBACK, port))
                await kdnet_sim.start((LOOPBACK, 0))
                kdnet_sims.append(kdnet_sim)
            connect_seconds = await wait_for_targets(
                daemon, set(serial_ids + kdnet_ids), CONNECT_TIMEOUT
            )
            await asyncio.sleep(idle)
            # Still all there after the idle time, then the figure.
            await wait_for_targets(daemon, set(serial_ids + kdnet_ids), 10.0)
            return vm_rss_kib(daemon.process.pid), connect_seconds
    finally:
        for sim in serial_sims:
            sim.close()
        for kdnet_sim in kdnet_sims:
            kdnet_sim.close()
        for master in masters:
            master.close()


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="cartd-mem-"))
    try:
        empty_kib = await measure_empty(work, args.idle)
        loaded_kib, connect_seconds = await measure_loaded(work, args.serial, args.kdnet, args.idle)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets = args.serial + args.kdnet
    print(f"daemon VmRSS, no targets, idle {args.idle:.0f} s: {empty_kib / 1024:.1f} MiB")
    print(
        f"daemon VmRSS, {args.serial} serial + {args.kdnet} KDNET targets connected, "
        f"idle {args.idle:.0f} s: {loaded_kib / 1024:.1f} MiB "
        f"(all {targets} running {connect_seconds:.1f} s after the simulators started)"
    )
    difference = loaded_kib - empty_kib
    print(f"difference: {difference / 1024:.1f} MiB, {difference / targets:.0f} KiB per target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", type=int, default=8, help="serial targets (default 8)")
    parser.add_argument("--kdnet", type=int, default=8, help="KDNET targets (default 8)")
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds idle before reading VmRSS (default 10)"
    )
    args = parser.parse_args()
    if args.serial + args.kdnet < 1:
        parser.error("at least one target")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
