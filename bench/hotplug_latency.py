"""Hotplug latency: from a serial link appearing to `link_up`, and from the target's first
packet to `target_connected`.

Each run starts the daemon in this process (no udev here: `Daemon(udev=False)`, the udev "add"
event replayed into its detector, as the udev monitor would hand it over) with `[serial]
rescan_seconds` at 30 s, so only the event can start the link. The port is a pty; the simulated
target is started on its master at the moment of the event and paced at 115200 baud, so its
first packet leaves then. Prints medians over the runs.

    .venv/bin/python bench/hotplug_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon_harness import (
    EventWatch,
    daemon_in_process,
    load_test_config,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.links.hotplug import DeviceEvent
from cartd.sim.target import Scenario


async def one_run(directory: Path) -> tuple[float, float]:
    path = write_config(directory / "cartd.toml", ports=[], rescan_seconds=30.0)
    path.write_text(path.read_text().replace("ports = []\nbaud", 'ports = "auto"\nbaud', 1))
    config = load_test_config(path, directory / "s")
    async with daemon_in_process(config, udev=False) as daemon:
        watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
        sim = start_sim(Scenario(print_interval=0.5, module_interval=None), seed=9)
        try:
            appeared = time.monotonic()
            daemon.daemon.detector.on_event(
                DeviceEvent(
                    action="add",
                    subsystem="tty",
                    sys_name="ttyUSB0",
                    device_node=sim.slave_path,
                    properties={"DEVNAME": sim.slave_path},
                )
            )
            link = f"serial:{sim.slave_path}"
            at, _ = await watch.wait_type(ev.LinkUp, link, timeout=20)
            link_up = time.monotonic() - appeared
            await watch.wait_type(ev.TargetConnected, None, after=at, timeout=20)
            connected = time.monotonic() - appeared
        finally:
            await watch.close()
            sim.close()
    return link_up, connected


async def main(runs: int) -> None:
    link_up: list[float] = []
    connected: list[float] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="cartd-hp-") as directory:
            up, target = await one_run(Path(directory))
        link_up.append(up)
        connected.append(target)
    print(f"runs: {runs}")
    print(
        f"link appearing (udev add) -> link_up:  median {statistics.median(link_up) * 1000:.0f} ms"
    )
    print(
        "target's first packet -> target_connected: "
        f"median {statistics.median(connected) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
