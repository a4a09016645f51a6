"""The daemon with a KDNET target on 127.0.0.1: a port without a key reports the target, a key
given at run time connects it, and everything arrives as events as on serial."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from cartd.config import CaptureConfig, Config, KdnetConfig, Policy, SerialConfig
from cartd.control.client import ControlClient
from cartd.control.protocol import ControlError
from cartd.daemon.service import Daemon
from cartd.events import Bugcheck, Event, LinkProbed, Running, Stopped, TargetConnected
from cartd.kd.dialect import KDNET
from cartd.kd.kdnet.keys import parse_key
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.target import Scenario, SimulatedTarget

KEY = "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"
LOOPBACK = "127.0.0.1"


async def free_udp_port() -> int:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    transport.close()
    return port


async def wait_for(events: object, kind: type[Event], timeout: float = 20) -> Event:
    async def find() -> Event:
        async for item in events:  # type: ignore[attr-defined]
            if isinstance(item, kind):
                return item
        raise AssertionError(f"the event stream ended before a {kind.type} event")

    return await asyncio.wait_for(find(), timeout)


async def test_key_needed_then_key_at_run_time_then_events(tmp_path: Path) -> None:
    port = await free_udp_port()
    config = Config(
        state_dir=tmp_path,
        state_dir_given=True,
        serial=SerialConfig(ports=()),
        kdnet=KdnetConfig(ports=(port,), interface=LOOPBACK),
        capture=CaptureConfig(fsync_interval=0.2),
    )
    daemon = Daemon(config)
    running = asyncio.create_task(daemon.run())
    machine = SimulatedMachine(MachineConfig(seed=8, memory_size_bytes=1 << 30))
    target = SimulatedTarget(
        machine,
        Scenario(module_interval=None, bugcheck_after=3.0, bugcheck_code=0x133),
        seed=8,
        dialect=KDNET,
    )
    server = KdnetSimServer(target, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5)
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        async with await ControlClient.connect(config.control_socket_path()) as client:
            (waiting,) = (await client.call("status"))["links"]
            assert (waiting["kind"], waiting["port"], waiting["peer"]) == ("kdnet", port, None)
            assert waiting["state"] == "waiting for a key"
            stream = client.events(replay=100)
            sim_address = await server.start()
            needed = await wait_for(stream, LinkProbed)
            assert isinstance(needed, LinkProbed) and needed.result == "key_needed"
            assert KEY not in needed.detail
            try:
                await client.call("key", port=port, key="not-a-key")
            except ControlError as error:
                assert error.code == "invalid_params" and "not-a-key" not in error.message
            else:
                raise AssertionError("a malformed key was accepted")
            await client.call("key", port=port, key=KEY)
            connected = await wait_for(stream, TargetConnected)
            assert isinstance(connected, TargetConnected)
            assert connected.kernel_base == machine.kernel_base
            bugcheck = await wait_for(stream, Bugcheck)
            assert isinstance(bugcheck, Bugcheck) and bugcheck.name == "DPC_WATCHDOG_VIOLATION"
            assert len(bugcheck.parameter_meanings) == 4  # texts from the bug check reference
            status = await client.call("status")
            (record,) = status["targets"]
            assert record["target"] == f"kdnet-{port}" and record["state"] == "bugchecked"
            assert record["bugcheck"]["parameter_meanings"] == list(bugcheck.parameter_meanings)
            assert record["bugcheck"]["cause"] == bugcheck.cause
            assert record["records_bytes"] > 0
            (link,) = status["links"]
            assert link == {
                "link": f"kdnet:{port}",
                "kind": "kdnet",
                "device": f"udp:{LOOPBACK}:{port}",
                "target": f"kdnet-{port}",
                "state": link["state"],
                "port": port,
                "peer": f"{sim_address[0]}:{sim_address[1]}",
            }
            assert link["state"].startswith(f"connected to {sim_address[0]}:{sim_address[1]} ")
            # The keyed listener took the port over from the keyless one at once (it waits for
            # the old socket to close rather than failing on a port still in use).
            history = (await client.call("history", count=200))["events"]
            assert not [e for e in history if e["type"] == "link_probed" and e["result"] == "error"]
    finally:
        server.close()
        daemon.stopping.set()
        await running
    key_file = tmp_path / "kdnet-keys.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    journal = next(tmp_path.glob("targets/*/sessions/*/events.jsonl")).read_text()
    assert "DPC_WATCHDOG_VIOLATION" in journal and KEY not in journal
    # The wire capture holds the real datagrams as IPv4/UDP: `cartd decode` reads it back.
    (wire,) = tmp_path.glob("targets/*/sessions/*/wire.pcapng")
    decoded = subprocess.run(
        [sys.executable, "-m", "cartd", "decode", str(wire), "--key", KEY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert decoded.returncode == 0, decoded.stderr
    assert "GetVersion -> build 22621" in decoded.stdout
    assert KEY not in decoded.stdout


async def test_a_wrong_key_is_reported(tmp_path: Path) -> None:
    port = await free_udp_port()
    config = Config(
        state_dir=tmp_path,
        state_dir_given=True,
        serial=SerialConfig(ports=()),
        kdnet=KdnetConfig(ports=(port,), interface=LOOPBACK, keys={port: "1.2.3.4"}),
    )
    daemon = Daemon(config)
    running = asyncio.create_task(daemon.run())
    target = SimulatedTarget(
        SimulatedMachine(MachineConfig(seed=2, memory_size_bytes=1 << 30)),
        Scenario(),
        seed=2,
        dialect=KDNET,
    )
    server = KdnetSimServer(target, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5)
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        async with await ControlClient.connect(config.control_socket_path()) as client:
            stream = client.events(replay=100)
            await server.start()
            mismatch = await wait_for(stream, LinkProbed)
            assert isinstance(mismatch, LinkProbed) and mismatch.result == "key_mismatch"
    finally:
        server.close()
        daemon.stopping.set()
        await running


async def test_break_on_connect_stops_learns_and_continues(tmp_path: Path) -> None:
    """policy break_on_connect: the daemon breaks in as soon as the target connects, reads its
    identity, and lets it run again, with no one asking."""
    port = await free_udp_port()
    config = Config(
        state_dir=tmp_path,
        state_dir_given=True,
        serial=SerialConfig(ports=()),
        policy=Policy(break_on_connect=True),
        kdnet=KdnetConfig(ports=(port,), interface=LOOPBACK, keys={port: KEY}),
    )
    daemon = Daemon(config)
    running = asyncio.create_task(daemon.run())
    target = SimulatedTarget(
        SimulatedMachine(MachineConfig(seed=4, memory_size_bytes=1 << 30)),
        Scenario(print_interval=None, module_interval=None),
        seed=4,
        dialect=KDNET,
    )
    server = KdnetSimServer(target, parse_key(KEY), host=(LOOPBACK, port), poke_interval=0.5)
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        async with await ControlClient.connect(config.control_socket_path()) as client:
            stream = client.events(replay=100)
            await server.start()
            stopped = await wait_for(stream, Stopped)
            assert isinstance(stopped, Stopped) and stopped.reason == "break_in"
            await wait_for(stream, Running)
            status = await client.call("status")
            (record,) = status["targets"]
            assert record["state"] == "running" and record["identity"]["build"] == 22621
    finally:
        server.close()
        daemon.stopping.set()
        await running
