"""Hotplug: udev's add/remove events for ttys, USB devices and network interfaces, as plain data.

The daemon reacts to `DeviceEvent`, a small frozen dataclass, never to pyudev objects, so tests
replay recorded events without udev. `UdevSource` reads udev's netlink monitor on the asyncio
loop (its file descriptor under `loop.add_reader`, no thread) and hands each event on as it
comes: a plugged adapter is seen within milliseconds, not at the next poll.

Where udev is not running (no /run/udev/control: containers, chroots, a minimal image) `start_udev`
says why and the daemon keeps polling /dev as before; the reason goes to the log once.

`DeviceWakeup` lets code that waits for a device sleep until *something* changed instead of
polling fast: every hotplug event wakes all its waiters, who look again; a slow poll stays as
the fallback for events that never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The subsystems cartd follows: serial ports, USB devices and interfaces (debug cables, DbC,
# USB-Ethernet adapters), and network interfaces (KDNET listeners).
SUBSYSTEMS = ("tty", "usb", "net")
# udev keeps its database here, and systemd-udevd its control socket while it runs; without
# the socket nobody sends the events pyudev would read.
UDEV_RUN_DIRECTORY = Path("/run/udev")
_UDEVD_CONTROL = "control"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEvent:
    """One udev event, reduced to what cartd looks at.

    `action` is udev's ("add", "remove", "change", "bind", "unbind", "move"); `sys_name` the
    kernel name (ttyUSB0, 1-1.2:1.0, usb0); `device_node` the /dev path if the device has one;
    `properties` udev's environment (DEVLINKS, ID_VENDOR_ID, ID_MODEL_ID, INTERFACE, ...);
    `sys_path` where its attributes live in sysfs (which a replayed event may point at a fake
    tree)."""

    action: str
    subsystem: str
    sys_name: str
    sys_path: str = ""
    device_node: str | None = None
    device_type: str | None = None  # "usb_device", "usb_interface", ...
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def device_links(self) -> tuple[str, ...]:
        """udev's symlinks for the device (/dev/serial/by-id/..., /dev/serial/by-path/...)."""
        return tuple(self.properties.get("DEVLINKS", "").split())


def event_from_pyudev(device: Any) -> DeviceEvent:
    """A pyudev Device from the monitor as a DeviceEvent."""
    return DeviceEvent(
        action=str(device.action or "change"),
        subsystem=str(device.subsystem or ""),
        sys_name=str(device.sys_name),
        sys_path=str(device.sys_path),
        device_node=device.device_node,
        device_type=device.device_type,
        properties={str(key): str(value) for key, value in device.properties.items()},
    )


def udev_unavailable_reason(run_directory: Path = UDEV_RUN_DIRECTORY) -> str | None:
    """Why hotplug events cannot be had here, or None if they can."""
    if not run_directory.is_dir():
        return f"udev is not running here ({run_directory} does not exist; a container?)"
    if not (run_directory / _UDEVD_CONTROL).exists():
        return f"systemd-udevd is not running here (no {run_directory / _UDEVD_CONTROL})"
    try:
        import pyudev  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as error:
        return f"pyudev cannot be imported ({error})"
    return None


class UdevSource:
    """udev's monitor on the asyncio loop. `close()` stops it."""

    def __init__(self, monitor: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._monitor = monitor
        self._loop = loop
        self._fd: int = monitor.fileno()

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)


def start_udev(
    on_event: Callable[[DeviceEvent], None],
    *,
    run_directory: Path = UDEV_RUN_DIRECTORY,
) -> UdevSource | str:
    """Start following udev; returns the source, or a sentence saying why hotplug is off."""
    reason = udev_unavailable_reason(run_directory)
    if reason is not None:
        return reason
    import pyudev

    loop = asyncio.get_running_loop()
    try:
        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        for subsystem in SUBSYSTEMS:
            monitor.filter_by(subsystem)
        monitor.start()
    except (OSError, ImportError) as error:
        return f"cannot open udev's event monitor ({error})"

    def readable() -> None:
        # Everything queued now, without blocking: poll(timeout=0) returns None when empty.
        while True:
            try:
                device = monitor.poll(timeout=0)
            except OSError as error:
                log.warning("reading a udev event failed: %s", error)
                return
            if device is None:
                return
            try:
                on_event(event_from_pyudev(device))
            except Exception:  # one bad event must not stop hotplug for every other device
                log.exception("handling the udev event for %s failed", device.sys_path)

    source = UdevSource(monitor, loop)
    loop.add_reader(source._fd, readable)
    return source


class DeviceWakeup:
    """Wakes everyone waiting for "something changed in /dev or /sys" at each hotplug event."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.events_seen = 0

    def notify(self) -> None:
        self.events_seen += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, timeout: float) -> None:
        """Return at the next event, or after `timeout` seconds (the fallback poll)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
