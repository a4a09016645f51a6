"""Link detection: which serial ports, USB debug devices and network interfaces are there, and
what cartd does with each, as they come and go.

With udev (`cartd.links.hotplug`), every tty, USB or network event is handled as it arrives: a
new serial port gets its `SerialLink` at once, a vanished one is told to drop its connection, a
recognised USB debug device is reported (and a USB-Ethernet adapter configured and listened on),
and KDNET listeners follow the interfaces named in `[kdnet] interfaces`. Without udev the
serial ports and interfaces are polled every `[serial] rescan_seconds`, as before, and the log
says once why hotplug is off. Tests call `on_event` with recorded events.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cartd import events as ev
from cartd.config import Config
from cartd.daemon.kdnet_link import KdnetLink
from cartd.daemon.serial_link import SerialLink
from cartd.links.hotplug import DeviceEvent, DeviceWakeup, UdevSource, start_udev
from cartd.links.network import configure_interface, interface_address
from cartd.links.serial_ports import (
    SerialCandidate,
    candidate_for_tty,
    find_serial_ports,
    set_ftdi_low_latency,
    tty_facts,
)
from cartd.links.usb_links import UsbFinding, read_device, scan_sysfs

log = logging.getLogger("cartd")

_WILDCARDS = ("0.0.0.0", "::")


@dataclass(slots=True)
class _Listening:
    """KDNET listeners on one network interface's address."""

    address: str
    source: str  # "config" ([kdnet] interfaces) or "usb" (a USB-Ethernet adapter)
    links: list[KdnetLink] = field(default_factory=list)


class LinkDetector:
    def __init__(
        self,
        config: Config,
        *,
        publish: Callable[[ev.Event], None],
        serial_links: dict[str, SerialLink],
        start_serial: Callable[[SerialCandidate], None],
        start_kdnet: Callable[[str, str], list[KdnetLink]],
        stop_kdnet: Callable[[KdnetLink], None],
        sysfs: Path = Path("/sys"),
        address_of: Callable[[str], str | None] = interface_address,
        use_udev: bool = True,
    ) -> None:
        self.config = config
        self._publish = publish
        self._serial_links = serial_links
        self._start_serial = start_serial
        self._start_kdnet = start_kdnet
        self._stop_kdnet = stop_kdnet
        self.sysfs = sysfs
        self.address_of = address_of
        self._use_udev = use_udev
        self.wakeup = DeviceWakeup()
        self.hotplug_off: str | None = None  # why hotplug is off; None while udev feeds us
        self.usb: dict[str, UsbFinding] = {}  # by sysfs name
        self.usb_actions: dict[str, str] = {}  # what cartd does with each
        self.latency: dict[str, str] = {}  # FTDI latency timer outcome by tty name
        self.listening: dict[str, _Listening] = {}  # by interface name
        self._source: UdevSource | None = None
        self._said_off = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        if self._use_udev:
            started = start_udev(self.on_event)
            if isinstance(started, str):
                self.hotplug_off = started
            else:
                self._source = started
        else:
            self.hotplug_off = "turned off for this daemon"
        if self.hotplug_off is not None and not self._said_off:
            self._said_off = True  # once, not at every reload
            log.warning(
                "hotplug is off: %s; polling for serial ports and interfaces every %g s",
                self.hotplug_off,
                self.config.serial.rescan_seconds,
            )
        try:
            for finding in scan_sysfs(self.sysfs):
                self._usb_seen(finding)
            while True:
                self._scan_serial()
                self._refresh_interfaces()
                if self.config.serial.ports != "auto" and not self.config.kdnet.interfaces:
                    return  # nothing left to poll: configured ports wait inside their tasks
                # With udev this is only the fallback (addresses change without udev events).
                await asyncio.sleep(self.config.serial.rescan_seconds)
        finally:
            if self._source is not None:
                self._source.close()
            for task in self._tasks:
                task.cancel()

    def _scan_serial(self) -> None:
        for candidate in find_serial_ports(self.config.serial.ports, sysfs=self.sysfs):
            self._add_serial(candidate)

    def _add_serial(self, candidate: SerialCandidate) -> None:
        if candidate.stable_name in self._serial_links:
            return
        kernel_name = os.path.basename(os.path.realpath(candidate.device))
        self._set_latency(kernel_name)
        self._start_serial(candidate)

    def _set_latency(self, kernel_name: str) -> None:
        outcome = set_ftdi_low_latency(kernel_name, sysfs=self.sysfs)
        if outcome is None or self.latency.get(kernel_name) == outcome:
            return
        self.latency[kernel_name] = outcome
        if "cannot" in outcome:
            log.warning("/dev/%s: %s", kernel_name, outcome)
        else:
            log.info("/dev/%s: %s", kernel_name, outcome)

    # ------------------------------------------------------------------ udev events

    def on_event(self, event: DeviceEvent) -> None:
        """One hotplug event (from udev, or replayed by a test)."""
        if event.subsystem == "tty":
            self._tty_event(event)
        elif event.subsystem == "net":
            self._refresh_interfaces()
        if event.subsystem in ("usb", "tty", "net"):
            self._usb_event(event)
        self.wakeup.notify()

    def _tty_event(self, event: DeviceEvent) -> None:
        names = {event.device_node, *event.device_links} - {None}
        for link in self._serial_links.values():
            mine = {link.candidate.device, link.candidate.stable_name} & names
            if not mine:
                continue
            if event.action == "remove":
                link.device_removed()
            elif event.action == "add":
                self._set_latency(event.sys_name)
                link.device_added()
            return
        if event.action != "add":
            return
        if self.config.serial.ports == "auto":
            candidate = candidate_for_tty(
                event.sys_name, event.device_node, event.device_links, sysfs=self.sysfs
            )
            if candidate is not None and candidate.stable_name not in self._serial_links:
                self._set_latency(event.sys_name)
                self._add_serial(candidate)

    def _usb_event(self, event: DeviceEvent) -> None:
        if event.subsystem == "usb" and event.action == "remove":
            name = Path(event.sys_path).name or event.sys_name
            if ":" not in name:  # the device itself, not one of its interfaces
                self._usb_gone(name)
            return
        device = _usb_device_dir(Path(event.sys_path)) if event.sys_path else None
        if device is None:
            return
        finding = read_device(device)
        if finding is not None and finding != self.usb.get(device.name):
            self._usb_seen(finding)

    def _usb_gone(self, sys_name: str) -> None:
        gone = self.usb.pop(sys_name, None)
        self.usb_actions.pop(sys_name, None)
        if gone is None:
            return
        self._publish(
            ev.LinkProbed(
                link=f"usb:{gone.sys_name}",
                device=gone.ids,
                result="gone",
                detail=f"unplugged: {gone.what}",
            )
        )
        listening = self.listening.get(gone.net_interface or "")
        if gone.net_interface is not None and listening is not None and listening.source == "usb":
            self._stop_listening(gone.net_interface)

    # ------------------------------------------------------------------ USB devices

    def _usb_seen(self, finding: UsbFinding) -> None:
        """Report a recognised USB device and act on it."""
        self.usb[finding.sys_name] = finding
        action = self._usb_action(finding)
        self.usb_actions[finding.sys_name] = action
        result = finding.kind if finding.supported else "unsupported"
        self._publish(
            ev.LinkProbed(
                link=f"usb:{finding.sys_name}",
                device=finding.ids,
                result=result,
                detail=f"{finding.what}; {action}",
            )
        )
        if (
            finding.kind in ("kdnet_eem", "kdnet_ncm")
            and finding.net_interface is not None
            and self.config.usb.eem_address
        ):
            task = asyncio.create_task(self._bring_up(finding))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _usb_action(self, finding: UsbFinding) -> str:
        if finding.kind in ("usb_debug_cable", "linux_dbc"):
            return (
                "cartd probes its serial port for KD"
                if finding.tty
                else "nothing until Linux gives it a tty"
            )
        if finding.kind == "usb_debug_class":
            return "cartd cannot use it (unsupported)"
        address = self.config.usb.eem_address
        if finding.net_interface is None:
            return "waiting for its network interface"
        if not address:
            return "left alone ([usb] eem_address is empty)"
        if self._wildcard_listeners():
            return (
                f"cartd gives {finding.net_interface} the address {address}; the KDNET "
                f"listeners on {self.config.kdnet.interface} hear it"
            )
        return (
            f"cartd gives {finding.net_interface} the address {address} and listens for KDNET "
            f"on it (ports {', '.join(str(p) for p in self.config.kdnet.ports) or 'none'})"
        )

    def _wildcard_listeners(self) -> bool:
        kdnet = self.config.kdnet
        return not kdnet.interfaces and kdnet.interface in _WILDCARDS

    async def _bring_up(self, finding: UsbFinding) -> None:
        name = finding.net_interface
        assert name is not None
        address = self.config.usb.eem_address
        problem = await configure_interface(name, address, ip_command=(self.config.usb.ip_command,))
        if problem is not None:
            self.usb_actions[finding.sys_name] = f"cannot configure {name}: {problem}"
            self._publish(
                ev.LinkProbed(
                    link=f"usb:{finding.sys_name}",
                    device=finding.ids,
                    result="error",
                    detail=f"cannot give {name} the address {address}: {problem}",
                )
            )
            return
        if not self._wildcard_listeners():  # else those on 0.0.0.0 hear the adapter already
            self._listen(name, address.split("/")[0], "usb")

    # ------------------------------------------------------------------ KDNET on interfaces

    def _refresh_interfaces(self) -> None:
        """Start or stop the listeners of `[kdnet] interfaces` to match their addresses now."""
        for name in self.config.kdnet.interfaces:
            current = self.listening.get(name)
            if current is not None and current.source == "usb":
                continue  # a USB-Ethernet adapter cartd configured itself
            address = self.address_of(name)
            if current is not None and current.address == address:
                continue
            self._stop_listening(name)
            if address is not None:
                self._listen(name, address, "config")

    def _listen(self, name: str, address: str, source: str) -> None:
        current = self.listening.get(name)
        if current is not None:
            if current.address == address:
                return
            self._stop_listening(name)
        log.info("KDNET: listening on %s (%s)", name, address)
        self.listening[name] = _Listening(address, source, self._start_kdnet(name, address))

    def _stop_listening(self, name: str) -> None:
        listening = self.listening.pop(name, None)
        if listening is None:
            return
        log.info("KDNET: %s (%s) is gone; its listeners stop", name, listening.address)
        for link in listening.links:
            self._stop_kdnet(link)

    # ------------------------------------------------------------------ `cartd links`

    def report(self) -> dict[str, Any]:
        serial = []
        for stable_name, link in self._serial_links.items():
            present = os.path.exists(stable_name)
            kernel_name = os.path.basename(os.path.realpath(stable_name)) if present else None
            facts = tty_facts(kernel_name, sysfs=self.sysfs) if kernel_name else None
            serial.append(
                {
                    "stable_name": stable_name,
                    "device": os.path.realpath(stable_name) if present else None,
                    "present": present,
                    "driver": facts.driver if facts else None,
                    "usb_id": f"{facts.vendor_id}:{facts.product_id}"
                    if facts and facts.vendor_id
                    else None,
                    "product": facts.product if facts else None,
                    "latency": self.latency.get(kernel_name or ""),
                    "link": link.link,
                    "target": link.target_id,
                    "state": link.state,
                    "what": _serial_what(link, facts.driver if facts else None),
                }
            )
        usb = [
            {
                "sys_name": finding.sys_name,
                "usb_id": finding.ids,
                "product": finding.product,
                "kind": finding.kind,
                "supported": finding.supported,
                "what": finding.what,
                "action": self.usb_actions.get(finding.sys_name, ""),
                "tty": finding.tty,
                "net_interface": finding.net_interface,
            }
            for finding in self.usb.values()
        ]
        network: list[dict[str, Any]] = [
            {
                "interface": name,
                "address": listening.address,
                "source": listening.source,
                "listeners": [
                    {"link": link.link, "port": link.port, "state": link.state}
                    for link in listening.links
                ],
            }
            for name, listening in self.listening.items()
        ]
        waiting = [name for name in self.config.kdnet.interfaces if name not in self.listening]
        network += [
            {
                "interface": name,
                "address": None,
                "source": "config",
                "listeners": [],
                "state": "absent or without an IPv4 address",
            }
            for name in waiting
        ]
        return {
            "hotplug": "udev" if self.hotplug_off is None else f"off: {self.hotplug_off}",
            "serial": serial,
            "usb": usb,
            "network": network,
        }


def _serial_what(link: SerialLink, driver: str | None) -> str:
    if driver == "usb_debug":
        what = "USB debug cable (usb_debug)"
    elif driver == "ftdi_sio":
        what = "FTDI USB-serial adapter"
    elif driver:
        what = f"serial port ({driver})"
    else:
        what = "serial port"
    if link.state.startswith("connected"):
        return f"{what} carrying KD"
    return what


def _usb_device_dir(path: Path) -> Path | None:
    """The USB device directory at or above a sysfs path (tty, interface, net), if any."""
    for directory in (path, *path.parents):
        if (directory / "idVendor").exists():
            return directory
        if directory.name in ("devices", "sys") or directory == directory.parent:
            return None
    return None
