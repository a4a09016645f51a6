"""Hotplug with the daemon running: replayed udev events start and stop links at once.

No udev and no USB hardware here (`Daemon(udev=False)`; the events are recorded ones replayed
through `daemon.detector.on_event`, with sysfs a fake tree in tmp_path, tests/usb_fixtures.py).
The serial ports behind the events are real pseudo-terminals with a simulated Windows target
on the master side, so a session really starts. `[serial] rescan_seconds` is long, so only the
event can have been what started a link within a second. iproute2's `ip` is replaced by a
script that records its arguments (a mock of a privileged tool); the KDNET listener it leads to
is a real UDP socket on a loopback address.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from pathlib import Path

import pytest
from daemon_harness import EventWatch, daemon_in_process, load_test_config, start_sim, write_config
from test_links_hotplug import fake_ip
from usb_fixtures import (
    CDC_EEM,
    DEBUG_CABLE,
    FTDI,
    add_usb_device,
    point_link,
    tty_event,
    usb_event,
)

from cartd import events as ev
from cartd.links.hotplug import DeviceEvent
from cartd.links_command import format_links
from cartd.sim.target import Scenario

SLOW_POLL = 30.0  # seconds: far longer than any wait below, so a poll cannot be what acted


def auto_config(tmp_path: Path, extra: str = "", *, kdnet: str = "ports = []") -> Path:
    path = write_config(tmp_path / "cartd.toml", ports=[], rescan_seconds=SLOW_POLL)
    text = path.read_text().replace("ports = []\nbaud", 'ports = "auto"\nbaud', 1)
    text = text.replace("[kdnet]\nports = []", f"[kdnet]\n{kdnet}")
    path.write_text(text + extra)
    return path


def udp_address_in_use(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_ftdi_adapter_plugged_and_unplugged(tmp_path: Path) -> None:
    """A udev "add" for a ttyUSB of an FTDI adapter (its node a pty with a simulated target)
    starts a link under its by-id name within a second, sets the latency timer to 1 ms, and
    the target connects; "remove" (after the cable is pulled) takes the link down at once."""
    sysfs = tmp_path / "sys"
    add_usb_device(sysfs, FTDI)
    sim = start_sim(Scenario(print_interval=0.2, module_interval=None), seed=5)
    by_id = tmp_path / "dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    point_link(by_id, sim.slave_path)
    link = f"serial:{by_id}"
    config = load_test_config(auto_config(tmp_path), tmp_path / "s")
    try:
        async with daemon_in_process(config, sysfs=sysfs, udev=False) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                plugged = time.monotonic()
                daemon.daemon.detector.on_event(
                    tty_event(sysfs, FTDI, "ttyUSB3", node=sim.slave_path, links=(str(by_id),))
                )
                assert str(by_id) in daemon.daemon.links  # started at once, not at a poll
                at, up = await watch.wait_type(ev.LinkUp, link, timeout=5)
                assert up.device == str(by_id)
                assert time.monotonic() - plugged < 3.0  # the probe hears the booting target
                timer = sysfs / "bus/usb-serial/devices/ttyUSB3/latency_timer"
                assert timer.read_text().strip() == "1"
                target = daemon.daemon.links[str(by_id)].target_id
                at, _ = await watch.wait_type(ev.TargetConnected, target, after=at)
                listing = await watch.client.call("links")
                (port,) = listing["serial"]
                assert port["stable_name"] == str(by_id)
                assert port["state"].startswith("connected")
                assert "FTDI latency timer" in (port["latency"] or "") or port["driver"] is None
                assert listing["hotplug"].startswith("off: ")
                shown = format_links(listing)
                assert f"  {by_id}  (" in shown and "connected" in shown, shown
                # --- unplug ----------------------------------------------------------------
                sim.unplug()
                by_id.unlink()
                pulled = time.monotonic()
                daemon.daemon.detector.on_event(
                    tty_event(
                        sysfs,
                        FTDI,
                        "ttyUSB3",
                        node=sim.slave_path,
                        links=(str(by_id),),
                        action="remove",
                    )
                )
                at, _ = await watch.wait_type(ev.LinkDown, link, after=at, timeout=5)
                assert time.monotonic() - pulled < 1.0
                # --- plugged back: the session goes on ---------------------------------------
                slave = sim.replug()
                point_link(by_id, slave)
                daemon.daemon.detector.on_event(
                    tty_event(sysfs, FTDI, "ttyUSB5", node=slave, links=(str(by_id),))
                )
                await watch.wait_type(ev.LinkUp, link, after=at, timeout=5)
                assert len(daemon.daemon.targets) == 1
            finally:
                await watch.close()
    finally:
        sim.close()


async def test_a_configured_pty_port_is_opened_when_its_event_comes(
    tmp_path: Path, dev_link: Path
) -> None:
    """A configured port that does not exist yet waits; the udev event for it (a pty slave
    behind a ttyUSB-like name under /dev) ends the wait without the poll."""
    port = dev_link
    path = write_config(tmp_path / "cartd.toml", ports=[str(port)], rescan_seconds=SLOW_POLL)
    config = load_test_config(path, tmp_path / "s")
    sim = start_sim(Scenario(print_interval=0.2, module_interval=None), seed=6)
    try:
        async with daemon_in_process(config, udev=False) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await asyncio.sleep(0.3)
                assert daemon.daemon.links[str(port)].state == "waiting for device"
                point_link(port, sim.slave_path)
                daemon.daemon.detector.on_event(
                    DeviceEvent(
                        action="add",
                        subsystem="tty",
                        sys_name="ttyUSB9",
                        device_node=sim.slave_path,
                        properties={"DEVLINKS": str(port)},
                    )
                )
                await watch.wait_type(ev.LinkUp, f"serial:{port}", timeout=5)
            finally:
                await watch.close()
    finally:
        sim.close()


async def test_a_debug_cable_is_reported_and_its_tty_probed(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    config = load_test_config(auto_config(tmp_path), tmp_path / "s")
    async with daemon_in_process(config, sysfs=sysfs, udev=False) as daemon:
        watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
        try:
            add_usb_device(sysfs, DEBUG_CABLE)
            daemon.daemon.detector.on_event(usb_event(sysfs, DEBUG_CABLE))
            _, probed = await watch.wait_type(ev.LinkProbed, "usb:1-3", timeout=2)
            assert probed.result == "usb_debug_cable"
            assert probed.device == "0525:127a"
            assert "debug cable" in probed.detail and "probes its serial port" in probed.detail
            node = str(tmp_path / "ttyUSB4-absent")  # the node: a path that is not there
            daemon.daemon.detector.on_event(tty_event(sysfs, DEBUG_CABLE, "ttyUSB4", node=node))
            assert node in daemon.daemon.links
            listing = await watch.client.call("links")
            (usb,) = listing["usb"]
            assert (usb["kind"], usb["supported"], usb["tty"]) == (
                "usb_debug_cable",
                True,
                "ttyUSB4",
            )
            daemon.daemon.detector.on_event(usb_event(sysfs, DEBUG_CABLE, action="remove"))
            _, gone = await watch.wait_type(
                ev.LinkProbed, "usb:1-3", where=lambda event: event.result == "gone", timeout=2
            )
            assert "unplugged" in gone.detail
        finally:
            await watch.close()


async def test_a_cdc_eem_adapter_is_configured_and_listened_on(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    port = free_udp_port()
    ip = fake_ip(tmp_path)
    extra = f'[usb]\neem_address = "127.0.0.2/8"\nip_command = "{ip}"\n'
    # A specific [kdnet] interface: the adapter's address needs listeners of its own.
    kdnet = f'ports = [{port}]\ninterface = "127.0.0.1"'
    config = load_test_config(auto_config(tmp_path, extra, kdnet=kdnet), tmp_path / "s")
    async with daemon_in_process(config, sysfs=sysfs, udev=False) as daemon:
        watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
        try:
            add_usb_device(sysfs, CDC_EEM)
            daemon.daemon.detector.on_event(usb_event(sysfs, CDC_EEM))
            _, probed = await watch.wait_type(ev.LinkProbed, "usb:1-4", timeout=2)
            assert probed.result == "kdnet_eem"
            assert "usb0" in probed.detail and "127.0.0.2/8" in probed.detail
            for _ in range(50):
                if "usb0" in daemon.daemon.detector.listening:
                    break
                await asyncio.sleep(0.02)
            assert (tmp_path / "ip.log").read_text().splitlines() == [
                "address replace 127.0.0.2/8 dev usb0",
                "link set dev usb0 up",
            ]
            await asyncio.sleep(0.1)  # the listener's task binds its socket
            assert udp_address_in_use("127.0.0.2", port)
            listing = await watch.client.call("links")
            (network,) = listing["network"]
            assert (network["interface"], network["address"], network["source"]) == (
                "usb0",
                "127.0.0.2",
                "usb",
            )
            assert network["listeners"][0]["link"] == f"kdnet:usb0:{port}"
            shown = format_links(listing)  # what `cartd links` prints
            assert "  usb0 127.0.0.2 (usb)\n" in shown, shown
            assert f"    kdnet:usb0:{port}: " in shown, shown
            assert "  1-4 [045e:0001] Windows KDNET USB-EEM\n" in shown, shown
            daemon.daemon.detector.on_event(usb_event(sysfs, CDC_EEM, action="remove"))
            await asyncio.sleep(0.2)
            assert not udp_address_in_use("127.0.0.2", port)
        finally:
            await watch.close()


async def test_kdnet_listeners_follow_a_configured_interface(tmp_path: Path) -> None:
    port = free_udp_port()
    kdnet = f'ports = [{port}]\ninterfaces = ["usb9"]'
    config = load_test_config(auto_config(tmp_path, kdnet=kdnet), tmp_path / "s")
    addresses: dict[str, str | None] = {"usb9": None}
    async with daemon_in_process(config, udev=False) as daemon:
        detector = daemon.daemon.detector
        detector.address_of = addresses.get
        net = DeviceEvent(action="add", subsystem="net", sys_name="usb9", sys_path="")
        detector.on_event(net)
        assert detector.listening == {}
        addresses["usb9"] = "127.0.0.3"  # the interface came, with an address
        detector.on_event(net)
        await asyncio.sleep(0.1)
        assert udp_address_in_use("127.0.0.3", port)
        addresses["usb9"] = None  # and went
        detector.on_event(DeviceEvent(action="remove", subsystem="net", sys_name="usb9"))
        await asyncio.sleep(0.1)
        assert not udp_address_in_use("127.0.0.3", port)
        assert "usb9" not in detector.listening


def test_hotplug_is_off_here_and_says_why() -> None:
    """This machine (a container) runs no systemd-udevd: the daemon falls back to polling."""
    from cartd.links.hotplug import udev_unavailable_reason

    if Path("/run/udev/control").exists():
        pytest.skip("udev runs here")
    assert "not running" in (udev_unavailable_reason() or "")
