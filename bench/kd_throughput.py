"""KD throughput: requests per second in memory, protocol overhead per read, serial goodput.

Run with `.venv/bin/python bench/kd_throughput.py`. It prints three figures, each measured in
this one run (the machines are shared and noisy, so nothing here is compared with a stored
number):

1. HOST<->TARGET requests per second in memory (the protocol core and simulator alone);
2. bytes on the wire, both directions, per 3944-byte ReadVirtualMemory, beyond the 3944;
3. goodput of 3944-byte reads from `cartd sim` over a pseudo-terminal paced at 115200 baud, as
   a fraction of the line's 11,520 bytes/s.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from cartd.daemon.host_driver import HostDriver
from cartd.kd.constants import MAX_MANIPULATE_DATA
from cartd.kd.events import StateChanged
from cartd.kd.host import KdHost
from cartd.kd.stops import StopReason
from cartd.links.streams import open_serial
from cartd.sim.loopback import Loopback
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.target import Scenario, SimulatedTarget

LINE_BYTES_PER_SECOND = 115200 / 10


def stopped_loopback() -> Loopback:
    machine = SimulatedMachine(MachineConfig(seed=1, memory_size_bytes=1 << 30))
    target = SimulatedTarget(machine, Scenario(print_interval=None, module_interval=None))
    loopback = Loopback(KdHost(), target)
    loopback.start()
    loopback.host.connect(loopback.now)
    while True:
        loopback.run_until(lambda: any(isinstance(e, StateChanged) for e in loopback.events))
        (stop,) = loopback.take(StateChanged)
        assert isinstance(stop, StateChanged)
        if stop.reason is StopReason.BREAK_IN:
            return loopback
        loopback.call(lambda now: loopback.host.resume(now=now))
        if stop.message.body.path.endswith("hal.dll"):  # type: ignore[union-attr]
            loopback.host.break_in(loopback.now)


def requests_per_second(count: int) -> float:
    loopback = stopped_loopback()
    address = loopback.target.machine.kernel_base
    started = time.perf_counter()
    for _ in range(count):
        loopback.call(lambda now: loopback.host.read_virtual_memory(address, 16, now=now))
    return count / (time.perf_counter() - started)


def overhead_per_full_read() -> int:
    loopback = stopped_loopback()
    address = loopback.target.machine.kernel_base
    loopback.run_for(0.1)  # the ACK of the last stop-analysis reply is still queued
    before = loopback.bytes_to_host + loopback.bytes_to_target
    loopback.call(
        lambda now: loopback.host.read_virtual_memory(address, MAX_MANIPULATE_DATA, now=now)
    )
    loopback.run_for(0.1)  # let the host's ACK of the reply go out
    return loopback.bytes_to_host + loopback.bytes_to_target - before - MAX_MANIPULATE_DATA


async def paced_goodput(reads: int) -> float:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cartd",
        "sim",
        "--scenario",
        "quiet",
        "--baud",
        "115200",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode()
    path = line.split("pseudo-terminal ")[1].split(" ")[0]
    stream = open_serial(path, 115200)
    driver = HostDriver(stream, KdHost(seconds_per_byte=10 / 115200))
    reader = asyncio.create_task(driver.run())
    try:
        driver.command(lambda now: driver.host.connect(now, break_in=True))
        while True:
            event = await driver.next_event(30)
            if isinstance(event, StateChanged):
                if event.reason is StopReason.BREAK_IN:
                    break
                await driver.resume()
        version = await driver.get_version()
        started = time.perf_counter()
        total = 0
        for _ in range(reads):
            result = await driver.read_virtual(version.kern_base, MAX_MANIPULATE_DATA)
            total += len(result.data)
        elapsed = time.perf_counter() - started
        return total / elapsed / LINE_BYTES_PER_SECOND
    finally:
        stream.close()
        reader.cancel()
        process.terminate()
        await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--paced-reads", type=int, default=30)
    args = parser.parse_args()
    print(f"in-memory requests per second: {requests_per_second(args.requests):,.0f}")
    overhead = overhead_per_full_read()
    print(
        f"protocol overhead per {MAX_MANIPULATE_DATA}-byte read: {overhead} bytes "
        f"({overhead / MAX_MANIPULATE_DATA:.1%})"
    )
    ratio = asyncio.run(paced_goodput(args.paced_reads))
    print(
        f"goodput over a paced 115200 pty: {ratio:.1%} of 11,520 bytes/s "
        f"({ratio * LINE_BYTES_PER_SECOND:,.0f} bytes/s)"
    )


if __name__ == "__main__":
    main()
