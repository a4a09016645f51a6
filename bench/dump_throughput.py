"""Crash dumps: triage time over serial, full-dump goodput over KDNET, the daemon's peak memory.

Run with `.venv/bin/python bench/dump_throughput.py`. In each part a simulated target bug checks
and the daemon writes the dump its policy asks for (dump_on_bugcheck "auto": a triage dump over
serial, a full one over KDNET). It prints, each measured in this one run (the machines are
shared and noisy, so nothing is compared with a stored number):

1. the triage dump of the default simulated machine (`cartd sim`: 4 GiB, seed 1) over a pty
   paced like a 115200 baud cable: its pages, its file size and how long it took, and its
   goodput next to the 11,520 bytes/s the line carries;
2. full-dump goodput over KDNET on 127.0.0.1 with no added delay and with 1 ms of simulated
   round-trip time, from the dump_progress events of a few seconds of a full dump (cancelled
   then): MB/s, and as a fraction of the stop-and-wait bound of 1360 bytes (the most one KDNET
   reply carries, kdnet.md section 6) per round trip;
3. the peak memory (VmHWM) of a real `cartd run` process while it writes the full dump of a
   512 MiB machine over KDNET, next to its resident memory before.

Parts 1 and 3 run at the same time: part 1 is paced by its serial line and part 3 measures
memory, not time (its seconds are printed for information). Part 3's dump, three minutes of
stop-and-wait round trips between two processes, sets the length of the run (three and a half
minutes on a 2-core machine); with `--full-dump-mib 128` it takes under two.
Part 2 runs alone, with the daemon and the simulator in this process and this event loop, as
bench/kdnet_throughput.py does, so its figures compare with that bench's raw reads.

MB here is 10**6 bytes. The delay is added on the simulator's side: every datagram the target
receives is handled the round-trip time late, in order. KD is stop-and-wait, so that costs each
request one round trip, as half the delay each way would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from kdnet_throughput import stopped_pair
from late_delivery import LateDelivery

from cartd import events as ev
from cartd.config import CaptureConfig, Config, KdnetConfig, SerialConfig
from cartd.control.client import ControlClient, ControlConnectError
from cartd.daemon.service import Daemon
from cartd.kd.dialect import KDNET, KDNET_MAX_TRANSFER
from cartd.kd.kdnet.keys import parse_key
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.target import Scenario, SimulatedTarget

KEY = "1.2.3.4"  # a throwaway key for a benchmark on loopback
LOOPBACK = "127.0.0.1"
MB = 1_000_000
PAGE = 4096
SERIAL_BYTES_PER_SECOND = 11_520  # 115200 baud, 10 bits a byte (8N1)
QUIET_BUGCHECK = Scenario(print_interval=None, module_interval=None, bugcheck_after=1.0)
GOODPUT_MEMORY = 1 << 30  # part 2: only a few seconds of the dump are read
GOODPUT_SECONDS = 6.0  # part 2: the span of dump_progress events measured
ROUND_TRIP_READS = 2000  # part 2: raw 1360-byte reads timed for the no-delay bound
DAEMON_START_SECONDS = 30.0
DUMP_TIMEOUT = 900.0
PTY_LINE = re.compile(r"pseudo-terminal (\S+) ")


# --- the daemon as `cartd run`, and its events --------------------------------------------------


@contextlib.asynccontextmanager
async def cartd_run(config: str, state: Path) -> AsyncIterator[tuple[int, ControlClient]]:
    """A `cartd run` process with this config file's text; (its pid, a control connection)."""
    state.mkdir(parents=True)
    config_path = state / "cartd.toml"
    config_path.write_text(config)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "cartd", "run", "--config", str(config_path)),
        *("--state-dir", str(state)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + DAEMON_START_SECONDS
        while True:
            try:
                client = await ControlClient.connect(state / "control.sock")
                break
            except ControlConnectError:
                if time.monotonic() > deadline or process.returncode is not None:
                    raise SystemExit("cartd run did not start") from None
                await asyncio.sleep(0.1)
        async with client:
            yield process.pid, client
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def next_event(events: AsyncIterator[Any], kind: type[ev.Event], timeout: float) -> Any:
    async def find() -> Any:
        async for item in events:
            if isinstance(item, kind):
                return item
        raise SystemExit(f"the daemon's events ended before a {kind.type} event")

    return await asyncio.wait_for(find(), timeout)


def event_seconds(event: ev.Event) -> float:
    """The daemon's own clock of an event (its `time`, to the microsecond)."""
    return datetime.fromisoformat(event.time).timestamp()


def proc_status_kib(pid: int, field: str) -> int:
    """A `kB` line of /proc/<pid>/status: VmRSS (resident now), VmHWM (the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise SystemExit(f"/proc/{pid}/status has no {field}")


# --- 1. a triage dump over 115200 baud ----------------------------------------------------------


async def triage_over_serial(work: Path) -> str:
    """`cartd sim` on a pty paced at 115200 baud, bug checking after its boot, and `cartd run`
    on that pty writing the automatic triage dump."""
    sim = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "cartd", "sim", "--pty", "--scenario", "bugcheck"),
        *("--bugcheck-after", "3", "--baud", "115200"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert sim.stdout is not None
        first_line = (await asyncio.wait_for(sim.stdout.readline(), 30)).decode()
        found = PTY_LINE.search(first_line)
        if found is None:
            raise SystemExit(f"cartd sim said {first_line!r}")
        config = (
            f'[serial]\nports = ["{found[1]}"]\nbaud_rates = [115200]\nprobe_seconds = 1.5\n'
            "[kdnet]\nports = []\n"
        )
        async with cartd_run(config, work / "serial") as (_, client):
            events = client.events(replay=1000)
            started = await next_event(events, ev.DumpStarted, 60)
            written = await next_event(events, ev.DumpWritten, DUMP_TIMEOUT)
    finally:
        sim.terminate()
        await sim.wait()
    read = written.pages * PAGE
    return (
        f"1. triage dump over 115200 baud serial (default simulated machine, 4 GiB): "
        f"{written.pages} pages ({read / MB:.2f} MB read), a {written.size:,}-byte file, "
        f"{written.seconds:.1f} s (the daemon estimated {started.estimate_seconds:.0f} s); "
        f"{read / written.seconds:,.0f} bytes/s = "
        f"{read / written.seconds / SERIAL_BYTES_PER_SECOND:.0%} of the line's "
        f"{SERIAL_BYTES_PER_SECOND:,} bytes/s"
    )


# --- 2. full-dump goodput over KDNET ------------------------------------------------------------


class DelayedKdnetSimServer(KdnetSimServer):
    """The simulated target, with every datagram it receives handled `delay` seconds late, in
    arrival order."""

    def __init__(self, *args: Any, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._late = LateDelivery(delay, super().datagram_received)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._late.receive(data, addr)

    def close(self) -> None:
        self._late.cancel()
        super().close()


async def free_udp_port() -> int:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    transport.close()
    return port


async def full_dump_goodput(work: Path, delay: float) -> float:
    """Bytes a second of a full dump over KDNET, between two dump_progress events
    GOODPUT_SECONDS apart (the first one is a second into the dump, past its start)."""
    port = await free_udp_port()
    config = Config(
        state_dir=work,
        state_dir_given=True,
        serial=SerialConfig(ports=()),
        kdnet=KdnetConfig(ports=(port,), interface=LOOPBACK, keys={port: KEY}),
        capture=CaptureConfig(),  # as shipped: the wire capture on
    )
    daemon = Daemon(config)
    running = asyncio.create_task(daemon.run())
    machine = SimulatedMachine(MachineConfig(seed=1, memory_size_bytes=GOODPUT_MEMORY))
    target = SimulatedTarget(machine, QUIET_BUGCHECK, seed=1, dialect=KDNET)
    server = DelayedKdnetSimServer(
        target, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5, delay=delay
    )
    try:
        await asyncio.wait_for(daemon.ready.wait(), DAEMON_START_SECONDS)
        async with await ControlClient.connect(config.control_socket_path()) as client:
            events = client.events(replay=1000)
            await server.start()
            await next_event(events, ev.DumpStarted, 60)
            first = await next_event(events, ev.DumpProgress, 30)
            while True:
                last = await next_event(events, ev.DumpProgress, 30)
                seconds = event_seconds(last) - event_seconds(first)
                if seconds >= GOODPUT_SECONDS:
                    break
            await client.call("dump", target=f"kdnet-{port}", cancel=True)
            return float(last.bytes_done - first.bytes_done) / seconds
    finally:
        server.close()
        daemon.stopping.set()
        await running


async def request_round_trip() -> float:
    """Seconds per KDNET read of 1360 bytes (one request, one reply) between cartd's host and
    the simulator in this event loop, with nothing else to do: the round trip of the link with
    no added delay, from bench/kdnet_throughput.py's pair."""
    driver, server = await stopped_pair(0.0)
    try:
        started = time.perf_counter()
        for n in range(ROUND_TRIP_READS):
            await driver.read_physical((0x100000 + n * KDNET_MAX_TRANSFER) % (64 << 20), 1360)
        return (time.perf_counter() - started) / ROUND_TRIP_READS
    finally:
        server.close()
        driver.close()


async def goodput_lines(work: Path) -> list[str]:
    round_trip = await request_round_trip()
    lines = [
        "2. full-dump goodput over KDNET on 127.0.0.1 (daemon and simulator in one process, "
        f"wire capture on; {GOODPUT_SECONDS:g} s of a full dump of a 1 GiB machine):"
    ]
    for rtt_ms in (0.0, 1.0):
        rate = await full_dump_goodput(work / f"kdnet-{rtt_ms:g}ms", rtt_ms / 1000)
        # With no added delay the round trip is what host and simulator take for one
        # request and its reply, measured above on its own; with a delay, the delay.
        round_trip_here = rtt_ms / 1000 or round_trip
        bound = KDNET_MAX_TRANSFER / round_trip_here
        where = (
            f"measured request round trip {round_trip * 1000:.3f} ms"
            if not rtt_ms
            else f"{rtt_ms:g} ms simulated round trip"
        )
        lines.append(
            f"   RTT +{rtt_ms:g} ms: {rate / MB:5.2f} MB/s = {rate / bound:.0%} of the bound "
            f"{KDNET_MAX_TRANSFER} B / RTT = {bound / MB:.2f} MB/s ({where})"
        )
    return lines


# --- 3. the daemon's memory while it writes 512 MiB ---------------------------------------------


async def memory_of_a_full_dump(work: Path, memory_mib: int) -> str:
    port = await free_udp_port()
    config = (
        "[serial]\nports = []\n"
        f'[kdnet]\nports = [{port}]\ninterface = "{LOOPBACK}"\n'
        f'[kdnet.keys]\n{port} = "{KEY}"\n'
        # Every datagram of the dump in the capture would take three minutes more (and more
        # disk than the dump) without changing what is measured here, the dump's memory.
        "[capture]\nwire_capture = false\n"
    )
    machine = SimulatedMachine(MachineConfig(seed=2, memory_size_bytes=memory_mib << 20))
    target = SimulatedTarget(machine, QUIET_BUGCHECK, seed=2, dialect=KDNET)
    server = KdnetSimServer(target, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5)
    async with cartd_run(config, work / "memory") as (pid, client):
        try:
            events = client.events(replay=1000)
            before = proc_status_kib(pid, "VmRSS")
            await server.start()
            await next_event(events, ev.DumpStarted, 60)
            written = await next_event(events, ev.DumpWritten, DUMP_TIMEOUT)
            peak = proc_status_kib(pid, "VmHWM")
            after = proc_status_kib(pid, "VmRSS")
        finally:
            server.close()
    return (
        f"3. `cartd run` writing a full dump of a {memory_mib} MiB machine over KDNET "
        f"({written.size / MB:.0f} MB file, {written.seconds:.0f} s, "
        f"{written.pages * PAGE / written.seconds / MB:.2f} MB/s alongside part 1): "
        f"resident {before / 1024:.1f} MiB before, peak (VmHWM) {peak / 1024:.1f} MiB, "
        f"{after / 1024:.1f} MiB after; the peak is {peak / before:.2f} times the start"
    )


async def measure(full_dump_mib: int) -> None:
    # The in-process daemon of part 2 logs its bugchecks and cancelled dumps; not here.
    logging.getLogger("cartd").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="cartd-dump-bench-") as directory:
        work = Path(directory)
        started = time.perf_counter()
        triage, memory = await asyncio.gather(
            triage_over_serial(work), memory_of_a_full_dump(work, full_dump_mib)
        )
        goodput = await goodput_lines(work)
        print(triage)
        print("\n".join(goodput))
        print(memory)
        print(f"(the whole run took {time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full-dump-mib",
        type=int,
        default=512,
        help="memory of the machine part 3 dumps, in MiB, at least 64 (default 512)",
    )
    args = parser.parse_args()
    asyncio.run(measure(args.full_dump_mib))


if __name__ == "__main__":
    main()
