"""HOST against `cartd sim` over a real pseudo-terminal, paced like a 115200 baud line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from cartd.daemon.host_driver import HostDriver
from cartd.kd.events import StateChanged
from cartd.kd.host import KdHost
from cartd.kd.modules import LoadedModule
from cartd.kd.stops import StopReason
from cartd.links.streams import open_pty_pair, open_serial
from cartd.sim.machine import MachineConfig, SimulatedMachine

SEED = 4
PARAMETERS = (0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)


@pytest.fixture
async def sim() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cartd",
        "sim",
        "--scenario",
        "bugcheck",
        "--bugcheck",
        "0x9f",
        "--bugcheck-params",
        ",".join(hex(p) for p in PARAMETERS),
        "--bugcheck-after",
        "6",
        "--seed",
        str(SEED),
        "--memory",
        "1G",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    assert "pseudo-terminal" in line, line
    path = line.split("pseudo-terminal ")[1].split(" ")[0]
    yield path, process
    process.terminate()
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


async def next_stop(driver: HostDriver, timeout: float = 30.0) -> StateChanged:
    while True:
        event = await driver.next_event(timeout)
        if isinstance(event, StateChanged):
            return event


async def test_connect_walk_modules_and_catch_a_bugcheck(
    sim: tuple[str, asyncio.subprocess.Process],
) -> None:
    path, _process = sim
    stream = open_serial(path, 115200)
    driver = HostDriver(stream, KdHost(seconds_per_byte=10 / 115200))
    reader = asyncio.create_task(driver.run())
    try:
        driver.command(lambda now: driver.host.connect(now, break_in=True))
        expected = SimulatedMachine(MachineConfig(seed=SEED, memory_size_bytes=1 << 30))
        # Boot: ntoskrnl and hal module loads, then our break-in.
        while (stop := await next_stop(driver)).reason is not StopReason.BREAK_IN:
            assert stop.reason is StopReason.MODULE_LOAD
            await driver.resume()
        version = await driver.get_version()
        assert version.kern_base == expected.kernel_base
        assert version.minor_version == expected.build_number
        modules = await driver.call(lambda now: driver.host.list_modules(now=now))
        assert modules == [
            LoadedModule(name=m.name, base=m.base, size=m.size) for m in expected.modules
        ]
        await driver.resume()
        while True:
            stop = await next_stop(driver)
            if stop.reason.is_bugcheck:
                break
            await driver.resume()
        assert stop.reason is StopReason.BUGCHECK_FIRST
        assert stop.bugcheck is not None
        assert (stop.bugcheck.code, stop.bugcheck.parameters) == (0x9F, PARAMETERS)
        assert driver.host.noise_counters.get("bad_checksum", 0) == 0
    finally:
        stream.close()
        reader.cancel()


async def test_sim_serves_a_given_serial_device() -> None:
    """`cartd sim --device PATH`: the simulator opens a tty it is given, as it would open
    /dev/ttyUSB0 at the far end of a null-modem cable; here the host holds the pty master."""
    master, slave_path = open_pty_pair()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cartd",
        "sim",
        "--device",
        slave_path,
        "--scenario",
        "quiet",
        "--seed",
        str(SEED),
        "--memory",
        "1G",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    driver = HostDriver(master, KdHost(seconds_per_byte=10 / 115200))
    reader = asyncio.create_task(driver.run())
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert f"serial device {slave_path}" in line, line
        driver.command(lambda now: driver.host.connect(now, break_in=True))
        while (await next_stop(driver)).reason is not StopReason.BREAK_IN:
            await driver.resume()
        version = await driver.get_version()
        expected = SimulatedMachine(MachineConfig(seed=SEED, memory_size_bytes=1 << 30))
        assert version.kern_base == expected.kernel_base
    finally:
        reader.cancel()
        master.close()
        process.terminate()
        _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
