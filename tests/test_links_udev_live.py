"""The live hotplug path: real udev events through pyudev's monitor, not replayed ones.

The other hotplug tests replay recorded events (there is no USB hardware here). This one proves
that `cartd.links.hotplug.start_udev` hears the real thing: a network interface (a veth pair,
made with ip(8)) appearing and vanishing reaches it as udev "add" and "remove" events. Where no
systemd-udevd runs (a container, as CI is), the test starts one for its own duration and stops
it again, so the tests after it see the machine as it was. It skips, saying why, where that
cannot be done (not root, no udevd, no veth).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartd.links.hotplug import UDEV_RUN_DIRECTORY, DeviceEvent, start_udev

UDEVD_CANDIDATES = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
CONTROL = UDEV_RUN_DIRECTORY / "control"
EVENT_SECONDS = 10.0


@pytest.fixture
def udevd() -> Iterator[None]:
    """A running systemd-udevd: the machine's own, or one started for this test."""
    if CONTROL.exists():
        yield  # udev runs here already
        return
    if os.geteuid() != 0:
        pytest.skip("starting systemd-udevd needs root")
    binary = next((path for path in UDEVD_CANDIDATES if Path(path).exists()), None)
    if binary is None:
        pytest.skip("no systemd-udevd on this machine (Debian package udev)")
    had_run_directory = UDEV_RUN_DIRECTORY.exists()
    process = subprocess.Popen(
        [binary], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        for _ in range(100):
            if CONTROL.exists() or process.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"], check=False)
        if not CONTROL.exists():
            pytest.skip(f"systemd-udevd did not start here (exit status {process.poll()})")
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # What it leaves behind would make later tests think udev runs here.
        with contextlib.suppress(FileNotFoundError):
            CONTROL.unlink()
        if not had_run_directory:
            shutil.rmtree(UDEV_RUN_DIRECTORY, ignore_errors=True)


def _ip(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *arguments], capture_output=True, text=True, check=False)


async def _wait_for(events: list[DeviceEvent], action: str, name: str) -> DeviceEvent:
    for _ in range(int(EVENT_SECONDS / 0.05)):
        for event in events:
            if (event.action, event.subsystem, event.sys_name) == (action, "net", name):
                return event
        await asyncio.sleep(0.05)
    seen = [(event.action, event.subsystem, event.sys_name) for event in events]
    raise AssertionError(f"no udev {action} event for {name} in {EVENT_SECONDS} s; saw {seen}")


async def test_a_network_interface_appearing_and_vanishing_is_heard_from_udev(
    udevd: None,
) -> None:
    if shutil.which("ip") is None:
        pytest.skip("ip(8) is not installed (Debian package iproute2)")
    events: list[DeviceEvent] = []
    source = start_udev(events.append)
    if isinstance(source, str):
        pytest.fail(f"udev runs, yet hotplug is off: {source}")
    name = f"cartd{secrets.token_hex(3)}"
    try:
        made = _ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
        if made.returncode != 0:
            pytest.skip(f"cannot make a veth pair here: {made.stderr.strip()}")
        added = await _wait_for(events, "add", name)
        assert added.properties.get("INTERFACE") == name, added
        assert added.sys_path.endswith(f"/net/{name}"), added
        assert _ip("link", "del", name).returncode == 0
        await _wait_for(events, "remove", name)
    finally:
        source.close()
        _ip("link", "del", name)
