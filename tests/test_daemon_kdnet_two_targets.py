"""Two KDNET targets at once, each `cartd sim --kdnet` in its own process on its own port: both
connect, print, load modules, bug check and, after the daemon continues the bugcheck, reboot
with a new handshake; neither disturbs the other."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from cartd.config import Config, KdnetConfig, Policy, SerialConfig
from cartd.control.client import ControlClient
from cartd.daemon.service import Daemon
from cartd.events import (
    Bugcheck,
    DebugPrint,
    Event,
    ModuleLoaded,
    TargetConnected,
    TargetRebooted,
)

LOOPBACK = "127.0.0.1"
KEYS = ("1.2.3.4", "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p")
CODES = (0x9F, 0xD1)


async def free_udp_ports(count: int) -> list[int]:
    loop = asyncio.get_running_loop()
    transports = [
        (await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)))[0]
        for _ in range(count)
    ]
    ports = [int(t.get_extra_info("sockname")[1]) for t in transports]
    for transport in transports:
        transport.close()
    return ports


async def test_two_kdnet_targets_boot_bugcheck_and_reboot(tmp_path: Path) -> None:
    ports = await free_udp_ports(2)
    config = Config(
        state_dir=tmp_path,
        state_dir_given=True,
        serial=SerialConfig(ports=()),
        # No dumps: the two bugchecks are continued at once (tests/test_dump_* cover dumps).
        policy=Policy(on_bugcheck="continue", dump_on_bugcheck="none"),
        kdnet=KdnetConfig(
            ports=tuple(ports), interface=LOOPBACK, keys=dict(zip(ports, KEYS, strict=True))
        ),
    )
    daemon = Daemon(config)
    running = asyncio.create_task(daemon.run())
    sims: list[subprocess.Popen[bytes]] = []
    seen: dict[str, list[Event]] = defaultdict(list)
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        async with await ControlClient.connect(config.control_socket_path()) as client:
            stream = client.events(replay=0)
            for port, key, code in zip(ports, KEYS, CODES, strict=True):
                sims.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "cartd",
                            "sim",
                            "--kdnet",
                            f"{LOOPBACK}:{port}",
                            "--key",
                            key,
                            "--scenario",
                            "bugcheck",
                            "--bugcheck",
                            hex(code),
                            "--bugcheck-after",
                            "3",
                            "--print-interval",
                            "0.5",
                            "--seed",
                            str(port),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                )

            def rebooted_and_loading(events: list[Event]) -> bool:
                kinds = [type(e) for e in events]
                return TargetRebooted in kinds and (
                    ModuleLoaded in kinds[kinds.index(TargetRebooted) :]
                )

            def done() -> bool:
                return all(rebooted_and_loading(seen[f"kdnet-{port}"]) for port in ports)

            async def collect() -> None:
                async for item in stream:
                    target = getattr(item, "target", None)
                    if isinstance(target, str):
                        seen[target].append(item)  # type: ignore[arg-type]
                    if done():
                        return

            await asyncio.wait_for(collect(), 60)
    finally:
        for sim in sims:
            sim.terminate()
        for sim in sims:
            sim.wait(10)
        daemon.stopping.set()
        await running
    for port, code in zip(ports, CODES, strict=True):
        events = seen[f"kdnet-{port}"]
        kinds = [type(e) for e in events]
        assert TargetConnected in kinds and DebugPrint in kinds
        bugchecks = [e for e in events if isinstance(e, Bugcheck)]
        assert bugchecks and {b.code for b in bugchecks} == {code}, port
        rebooted = kinds.index(TargetRebooted)
        assert ModuleLoaded in kinds[:rebooted] and ModuleLoaded in kinds[rebooted:]
        assert all(e.target == f"kdnet-{port}" for e in events)  # type: ignore[attr-defined]
