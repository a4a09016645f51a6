"""KD relay: what a remote debugger pays for reaching its target through cartd's relay.

Run with `.venv/bin/python bench/relay_latency.py`. For two links it compares a KD host
connected straight to the simulated target ("direct") with a KD host connected to the daemon's
relay TCP port on 127.0.0.1 while the daemon owns the link ("relay"); both hosts are cartd's
own HOST core (`KdHost` under `HostDriver` or `KdnetDriver`), as tests/remote_kd_host.py is.

- serial-paced: the simulator on a pseudo-terminal paced at 115200 baud. Direct: a `KdHost` on
  the pty. Relay: `Daemon` opens the pty; the remote host speaks serial KD over TCP.
- KDNET: the simulator over encrypted UDP on 127.0.0.1, every datagram the target receives
  delivered `--rtt-ms` late (bench/late_delivery.py; with stop-and-wait that costs one round
  trip per exchange, as in bench/kdnet_throughput.py). Direct: a `KdnetDriver`. Relay: the
  daemon's KDNET listener with the key; the remote host still speaks serial KD over TCP, and
  the daemon cuts its 3944-byte reads into the 1360-byte pieces KDNET allows.

It prints, each measured in this one run (the machines are shared and noisy, so nothing is
compared with a stored number):

1. round-trip latency of small requests (an 8-byte ReadVirtualMemory, a GetVersion): median
   and 99th percentile in microseconds, direct and through the relay, and what the relay adds;
2. goodput of reading one block of kernel memory: direct in the link's largest reads (3944
   bytes on serial, 1360 on KDNET), through the relay in 3944-byte reads (serial KD's largest,
   what WinDbg asks for), and the ratio relay/direct.

Everything runs in this one process and event loop (simulator, daemon, both hosts), so a
relay's CPU cost is counted however the work would be spread over machines: KD is stop-and-wait,
so the steps of one request happen one after another anyway. The daemon records as it always
does (journal and wire capture, in a temporary state directory removed at the end), so "relay
adds" is the whole daemon path; `--no-wire-capture` shows how much of it the wire.pcapng is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from late_delivery import LateDelivery

from cartd.config import CaptureConfig, Config, KdnetConfig, RelayConfig, SerialConfig
from cartd.control.client import ControlClient
from cartd.daemon.host_driver import HostDriver, KdDriver
from cartd.daemon.kdnet_driver import KdnetDriver
from cartd.daemon.service import Daemon
from cartd.kd.constants import MAX_MANIPULATE_DATA
from cartd.kd.dialect import KDNET, KDNET_MAX_TRANSFER
from cartd.kd.events import StateChanged
from cartd.kd.host import KdHost
from cartd.kd.kdnet.host import KdnetHost
from cartd.kd.kdnet.keys import parse_key
from cartd.kd.state_change import LoadSymbols
from cartd.kd.stops import StopReason
from cartd.links.streams import FdStream, SocketStream, open_pty_pair, open_serial
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import LoadedModule, MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer
from cartd.sim.target import Scenario, SimulatedTarget

KEY = "1.2.3.4"  # a throwaway key for a benchmark on loopback
LOOPBACK = "127.0.0.1"
BAUD = 115200
MEMORY = 1 << 30  # the simulated machine's memory: pages cost nothing until touched
SMALL_READ = 8
WARM_UP = 5  # requests before the clock starts (first-use costs: caches, the TCP path)
STOP_TIMEOUT = 60.0  # a paced serial boot with its module loads takes a while
BREAK_IN_RETRY = 3.0  # a break-in sent while the target was still booting is asked again
DAEMON_TIMEOUT = 60.0


# --- the simulated targets ------------------------------------------------------------------------


def new_target(*, kdnet: bool) -> SimulatedTarget:
    """The same quiet machine for every run: no DbgPrints or module loads to get in the way."""
    machine = SimulatedMachine(MachineConfig(seed=1, memory_size_bytes=MEMORY))
    quiet = Scenario(print_interval=None, module_interval=None)
    if kdnet:
        return SimulatedTarget(machine, quiet, seed=1, dialect=KDNET)
    return SimulatedTarget(machine, quiet, seed=1, seconds_per_byte=10 / BAUD)


@dataclass
class PtyTarget:
    """A paced simulated target on the master side of a pty (as tests/daemon_harness.py's
    start_sim builds it); a host opens `slave_path`."""

    server: SimServer
    master: FdStream
    slave_path: str
    attached: asyncio.Task[None]

    @property
    def machine(self) -> SimulatedMachine:
        return self.server.target.machine

    def close(self) -> None:
        self.attached.cancel()
        self.server.close()
        self.master.close()


def start_pty_target() -> PtyTarget:
    server = SimServer(new_target(kdnet=False), baud=BAUD)
    master, slave_path = open_pty_pair()
    attached = server.attach(master)
    server.start()
    return PtyTarget(server, master, slave_path, attached)


class LateKdnetSimServer(KdnetSimServer):
    """The simulated KDNET target, every datagram it receives handed to it `delay` s late."""

    def __init__(self, target: SimulatedTarget, *, host: tuple[str, int], delay: float) -> None:
        super().__init__(target, parse_key(KEY), host=host, poke_interval=0.5)
        self.late = LateDelivery(delay, super().datagram_received)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.late.receive(data, addr)

    def close(self) -> None:
        self.late.cancel()
        super().close()


def free_port(kind: socket.SocketKind) -> int:
    """A port nothing uses now (the kernel's choice of an ephemeral one)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


# --- KD hosts -------------------------------------------------------------------------------------


async def until_break_in(driver: KdDriver) -> None:
    """Resume every stop until the target stops for a break-in (asked again while it boots)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT
    while loop.time() < deadline:
        try:
            event = await driver.next_event(BREAK_IN_RETRY)
        except TimeoutError:
            driver.command(lambda now: driver.host.break_in(now))
            continue
        if not isinstance(event, StateChanged):
            continue
        if event.reason is StopReason.BREAK_IN:
            return
        await driver.resume()
        body = event.message.body
        if isinstance(body, LoadSymbols) and body.path.lower().endswith("hal.dll"):
            driver.command(lambda now: driver.host.break_in(now))  # the boot's last module load
    raise TimeoutError(f"no break-in stop within {STOP_TIMEOUT:g} s")


@contextlib.asynccontextmanager
async def serial_host(stream: FdStream | SocketStream, host: KdHost) -> AsyncIterator[HostDriver]:
    """A KD host on a byte stream, attached and stopped at a break-in."""
    driver = HostDriver(stream, host)
    reader = asyncio.create_task(driver.run())
    try:
        driver.command(lambda now: driver.host.connect(now, break_in=True))
        await until_break_in(driver)
        yield driver
    finally:
        stream.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


@contextlib.asynccontextmanager
async def relay_host(port: int) -> AsyncIterator[HostDriver]:
    """A remote debugger on the relay's TCP port: serial KD, as `windbg -k com:ipport=` speaks."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    stream = SocketStream(reader, writer, name=f"tcp:{LOOPBACK}:{port}")
    async with serial_host(stream, KdHost()) as driver:
        yield driver


# --- the daemon -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_daemon(
    state_dir: Path,
    *,
    serial_ports: tuple[str, ...],
    kdnet_port: int | None,
    wire_capture: bool,
) -> AsyncIterator[Daemon]:
    config = Config(
        state_dir=state_dir,
        state_dir_given=True,
        serial=SerialConfig(
            ports=serial_ports, baud_rates=(BAUD,), probe_seconds=1.5, rescan_seconds=0.1
        ),
        kdnet=KdnetConfig(
            ports=() if kdnet_port is None else (kdnet_port,),
            interface=LOOPBACK,
            keys={} if kdnet_port is None else {kdnet_port: KEY},
        ),
        capture=CaptureConfig(fsync_interval=0.5, wire_capture=wire_capture),
        # A relay port of its own: other daemons on this machine may hold the default ones.
        relay=RelayConfig(first_port=free_port(socket.SOCK_STREAM)),
    )
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()  # raises what stopped it
        yield daemon
    finally:
        daemon.stopping.set()
        await asyncio.wait_for(task, 30)


async def running_target_relay_port(daemon: Daemon) -> int:
    """The relay port of the daemon's one target, once the target has booted and runs (so the
    remote debugger's break-in is what stops it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DAEMON_TIMEOUT
    async with await ControlClient.connect(daemon.config.control_socket_path()) as client:
        while loop.time() < deadline:
            for record in (await client.call("status"))["targets"]:
                relay = record["relay"]
                if record["state"] == "running" and relay["tcp_state"].startswith("listening"):
                    return int(relay["port"])
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the daemon's target was not running within {DAEMON_TIMEOUT:g} s")


# --- measurements ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latencies:
    read8: list[float]  # seconds, one per request
    version: list[float]


@dataclass(frozen=True)
class Measured:
    latencies: Latencies
    goodput: float  # bytes/s
    read_size: int


def largest_module(machine: SimulatedMachine) -> LoadedModule:
    """A mapped span of kernel memory to read round and round."""
    return max(machine.modules, key=lambda module: module.size)


async def time_each(count: int, request: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(WARM_UP):
        await request()
    took = []
    for _ in range(count):
        started = time.perf_counter()
        await request()
        took.append(time.perf_counter() - started)
    return took


async def latencies(driver: KdDriver, machine: SimulatedMachine, count: int) -> Latencies:
    address = machine.kernel_base
    expected = machine.read_virtual(address, SMALL_READ)

    async def read8() -> None:
        result = await driver.read_virtual(address, SMALL_READ)
        assert result.data == expected, "the 8-byte read came back wrong"

    async def version() -> None:
        result = await driver.get_version()
        assert result.kern_base == machine.kernel_base, "GetVersion came back wrong"

    return Latencies(await time_each(count, read8), await time_each(count, version))


async def goodput(driver: KdDriver, machine: SimulatedMachine, total: int, piece: int) -> float:
    """Bytes/s of `total` bytes of a module read in `piece`-byte requests, checked afterwards
    against the machine."""
    module = largest_module(machine)
    span = module.size - module.size % piece
    offsets = list(range(0, total, piece))
    got: list[bytes] = []
    started = time.perf_counter()
    for offset in offsets:
        size = min(piece, total - offset)
        result = await driver.read_virtual(module.base + offset % span, size)
        got.append(result.data)
    elapsed = time.perf_counter() - started
    for offset, data in zip(offsets, got, strict=True):
        size = min(piece, total - offset)
        assert data == machine.read_virtual(module.base + offset % span, size), offset
    return total / elapsed


async def measure(
    driver: KdDriver, machine: SimulatedMachine, count: int, total: int, piece: int
) -> Measured:
    timed = await latencies(driver, machine, count)
    return Measured(timed, await goodput(driver, machine, total, piece), piece)


async def serial_direct(count: int, total: int) -> Measured:
    target = start_pty_target()
    try:
        stream = open_serial(target.slave_path, BAUD)
        async with serial_host(stream, KdHost(seconds_per_byte=10 / BAUD)) as driver:
            return await measure(driver, target.machine, count, total, MAX_MANIPULATE_DATA)
    finally:
        target.close()


async def serial_relay(count: int, total: int, state_dir: Path, wire_capture: bool) -> Measured:
    target = start_pty_target()
    try:
        ports = (target.slave_path,)
        async with running_daemon(
            state_dir, serial_ports=ports, kdnet_port=None, wire_capture=wire_capture
        ) as daemon:
            port = await running_target_relay_port(daemon)
            async with relay_host(port) as driver:
                return await measure(driver, target.machine, count, total, MAX_MANIPULATE_DATA)
    finally:
        target.close()


async def kdnet_direct(count: int, total: int, delay: float) -> Measured:
    driver = KdnetDriver(KdnetHost(parse_key(KEY)))
    await driver.open((LOOPBACK, 0))
    assert driver._udp is not None
    host_address = driver._udp.get_extra_info("sockname")[:2]
    server = LateKdnetSimServer(new_target(kdnet=True), host=host_address, delay=delay)
    try:
        await server.start((LOOPBACK, 0))
        await until_break_in(driver)
        return await measure(driver, server.target.machine, count, total, KDNET_MAX_TRANSFER)
    finally:
        server.close()
        driver.close()
        await driver.wait_closed()


async def kdnet_relay(
    count: int, total: int, delay: float, state_dir: Path, wire_capture: bool
) -> Measured:
    port = free_port(socket.SOCK_DGRAM)
    server = LateKdnetSimServer(new_target(kdnet=True), host=(LOOPBACK, port), delay=delay)
    try:
        async with running_daemon(
            state_dir, serial_ports=(), kdnet_port=port, wire_capture=wire_capture
        ) as daemon:
            await server.start((LOOPBACK, 0))
            relay_port = await running_target_relay_port(daemon)
            async with relay_host(relay_port) as driver:
                return await measure(
                    driver, server.target.machine, count, total, MAX_MANIPULATE_DATA
                )
    finally:
        server.close()


# --- the report -----------------------------------------------------------------------------------


def microseconds(samples: list[float]) -> tuple[float, float]:
    """(median, 99th percentile) in microseconds."""
    p99 = statistics.quantiles(samples, n=100, method="inclusive")[98]
    return statistics.median(samples) * 1e6, p99 * 1e6


def report(link: str, direct: Measured, relay: Measured, total: int) -> None:
    print(f"{link}:")
    kinds = (("8-byte ReadVirtualMemory", "read8"), ("GetVersion", "version"))
    for name, field in kinds:
        d50, d99 = microseconds(getattr(direct.latencies, field))
        r50, r99 = microseconds(getattr(relay.latencies, field))
        count = len(getattr(direct.latencies, field))
        print(
            f"  {name:<24} x{count}: direct median {d50:9,.0f} us, p99 {d99:9,.0f} us; "
            f"relay median {r50:9,.0f} us, p99 {r99:9,.0f} us; "
            f"relay adds {r50 - d50:+8,.0f} us median, {r99 - d99:+8,.0f} us p99"
        )
    print(
        f"  goodput reading {total:,} bytes: direct {direct.goodput:12,.0f} bytes/s "
        f"({direct.read_size}-byte reads), relay {relay.goodput:12,.0f} bytes/s "
        f"({relay.read_size}-byte reads), relay/direct {relay.goodput / direct.goodput:.1%}"
    )


async def run(args: argparse.Namespace) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="cartd-relay-bench-"))
    capture = not args.no_wire_capture
    try:
        if not args.skip_serial:
            direct = await serial_direct(args.serial_requests, args.serial_bytes)
            relay = await serial_relay(
                args.serial_requests, args.serial_bytes, state_dir / "s", capture
            )
            report(f"serial-paced ({BAUD} baud pty)", direct, relay, args.serial_bytes)
        if not args.skip_kdnet:
            delay = args.rtt_ms / 1000
            direct = await kdnet_direct(args.kdnet_requests, args.kdnet_bytes, delay)
            relay = await kdnet_relay(
                args.kdnet_requests, args.kdnet_bytes, delay, state_dir / "k", capture
            )
            report(
                f"KDNET (UDP on {LOOPBACK}, RTT +{args.rtt_ms:g} ms)",
                direct,
                relay,
                args.kdnet_bytes,
            )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--serial-requests", type=int, default=200, help="timed small requests of each kind"
    )
    parser.add_argument("--serial-bytes", type=int, default=64 << 10, help="block read (64 KiB)")
    parser.add_argument(
        "--kdnet-requests", type=int, default=1000, help="timed small requests of each kind"
    )
    parser.add_argument("--kdnet-bytes", type=int, default=1 << 20, help="block read (1 MiB)")
    parser.add_argument(
        "--rtt-ms", type=float, default=1.0, help="simulated KDNET round-trip time (default 1)"
    )
    parser.add_argument(
        "--no-wire-capture",
        action="store_true",
        help="the daemon keeps no wire.pcapng (to see what recording costs the relay)",
    )
    parser.add_argument("--skip-serial", action="store_true")
    parser.add_argument("--skip-kdnet", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
