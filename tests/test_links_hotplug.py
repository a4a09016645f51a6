"""Link detection pieces without a daemon: recognising USB debug devices in a fake sysfs,
stable names and the FTDI latency timer for a udev tty event, bringing an interface up with
`ip`, and udev's absence.

No USB hardware and no udev here: sysfs trees are built in tmp_path from recorded attribute
values (tests/usb_fixtures.py), and pyusb gets a fake backend that serves recorded descriptors.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import usb.backend
from usb_fixtures import CDC_EEM, DEBUG_CABLE, FTDI, WINDOWS_DBC, add_usb_device

from cartd.links.hotplug import DeviceWakeup, udev_unavailable_reason
from cartd.links.network import configure_interface, interface_address
from cartd.links.serial_ports import candidate_for_tty, set_ftdi_low_latency, tty_facts
from cartd.links.usb_links import scan_pyusb, scan_sysfs


def test_usb_debug_devices_are_recognised_from_sysfs(tmp_path: Path) -> None:
    for device in (FTDI, DEBUG_CABLE, CDC_EEM, WINDOWS_DBC):
        add_usb_device(tmp_path, device)
    found = {finding.sys_name: finding for finding in scan_sysfs(tmp_path)}
    assert set(found) == {"1-3", "1-4", "1-5"}  # a plain FTDI adapter is just a serial port
    cable = found["1-3"]
    assert (cable.kind, cable.supported, cable.tty, cable.ids) == (
        "usb_debug_cable",
        True,
        "ttyUSB4",
        "0525:127a",
    )
    assert "/dev/ttyUSB4" in cable.what
    eem = found["1-4"]
    assert (eem.kind, eem.supported, eem.net_interface, eem.driver) == (
        "kdnet_eem",
        True,
        "usb0",
        "cdc_eem",
    )
    dbc = found["1-5"]
    assert (dbc.kind, dbc.supported) == ("usb_debug_class", False)
    assert "no Linux driver" in dbc.what and "KDUSB" in dbc.what


def test_ftdi_latency_timer_is_set_to_one_ms(tmp_path: Path) -> None:
    add_usb_device(tmp_path, FTDI)
    timer = tmp_path / "bus/usb-serial/devices/ttyUSB3/latency_timer"
    assert set_ftdi_low_latency("ttyUSB3", sysfs=tmp_path) == (
        "FTDI latency timer set from 16 ms to 1 ms"
    )
    assert timer.read_text().strip() == "1"
    assert set_ftdi_low_latency("ttyUSB3", sysfs=tmp_path) == "FTDI latency timer is 1 ms"
    facts = tty_facts("ttyUSB3", sysfs=tmp_path)
    assert (facts.driver, facts.vendor_id, facts.product_id, facts.serial) == (
        "ftdi_sio",
        "0403",
        "6001",
        "A50285BI",
    )


def test_an_unwritable_latency_timer_is_reported(tmp_path: Path) -> None:
    add_usb_device(tmp_path, FTDI)
    timer = tmp_path / "bus/usb-serial/devices/ttyUSB3/latency_timer"
    timer.unlink()
    timer.mkdir()  # writing it fails even as root (a directory), as sysfs does without rights
    outcome = set_ftdi_low_latency("ttyUSB3", sysfs=tmp_path)
    assert outcome is not None and "cannot write" in outcome and "udev rule" in outcome


def test_a_non_ftdi_tty_is_left_alone(tmp_path: Path) -> None:
    add_usb_device(tmp_path, DEBUG_CABLE)
    assert set_ftdi_low_latency("ttyUSB4", sysfs=tmp_path) is None


def test_a_udev_tty_gets_its_by_id_name_else_by_path_else_its_node(tmp_path: Path) -> None:
    by_id = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    by_path = "/dev/serial/by-path/platform-3f980000.usb-usb-0:1.2:1.0-port0"
    both = candidate_for_tty("ttyUSB0", "/dev/ttyUSB0", (by_path, by_id), sysfs=tmp_path)
    assert both is not None and both.stable_name == by_id
    # A CH340 (1a86:7523) has no serial number: udev makes only the by-path link.
    path_only = candidate_for_tty("ttyUSB1", "/dev/ttyUSB1", (by_path,), sysfs=tmp_path)
    assert path_only is not None and path_only.stable_name == by_path
    bare = candidate_for_tty("ttyACM0", "/dev/ttyACM0", (), sysfs=tmp_path)
    assert bare is not None and bare.stable_name == "/dev/ttyACM0"
    assert candidate_for_tty("tty3", "/dev/tty3", (), sysfs=tmp_path) is None
    # ttyS0..31 exist without a UART; only one bound to a driver is a port.
    assert candidate_for_tty("ttyS1", "/dev/ttyS1", (), sysfs=tmp_path) is None


def test_udev_is_reported_missing_without_its_run_directory(tmp_path: Path) -> None:
    reason = udev_unavailable_reason(tmp_path / "udev")
    assert reason is not None and "udev is not running" in reason
    (tmp_path / "udev").mkdir()
    reason = udev_unavailable_reason(tmp_path / "udev")
    assert reason is not None and "systemd-udevd is not running" in reason
    (tmp_path / "udev/control").touch()  # udevd's control socket, while it runs
    assert udev_unavailable_reason(tmp_path / "udev") is None


async def test_a_wakeup_ends_the_wait_at_once_and_the_poll_is_the_fallback() -> None:
    wakeup = DeviceWakeup()
    waiting = asyncio.create_task(wakeup.wait(30.0))
    await asyncio.sleep(0)
    wakeup.notify()
    await asyncio.wait_for(waiting, 0.5)
    await asyncio.wait_for(wakeup.wait(0.01), 0.5)  # no event: the poll interval ends it


# --- pyusb with a fake backend (recorded descriptors; no libusb, no device) ----------------------


class _Descriptor:
    def __init__(self, **fields: int) -> None:
        self.__dict__.update(fields)


class FakeBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A pyusb backend serving recorded descriptors of a debug cable and a Windows DbC."""

    DEVICES = (
        # (bus, address, idVendor, idProduct, interface classes (class, subclass))
        (1, 3, 0x0525, 0x127A, [(0xFF, 0x00)]),
        (1, 5, 0x045E, 0x0002, [(0xDC, 0x02)]),
        (1, 6, 0x046D, 0xC52B, [(0x03, 0x01)]),  # a keyboard receiver: not a debug link
    )

    def enumerate_devices(self) -> object:
        return iter(self.DEVICES)

    def get_device_descriptor(
        self, dev: tuple[int, int, int, int, list[tuple[int, int]]]
    ) -> object:
        bus, address, vendor, product, _ = dev
        return _Descriptor(
            bLength=18, bDescriptorType=1, bcdUSB=0x200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=vendor, idProduct=product,
            bcdDevice=0x100, iManufacturer=0, iProduct=0, iSerialNumber=0,
            bNumConfigurations=1, address=address, bus=bus, port_number=None,
            port_numbers=None, speed=None,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: object, config: int) -> object:
        interfaces = dev[4]  # type: ignore[index]
        return _Descriptor(
            bLength=9, bDescriptorType=2, wTotalLength=0, bNumInterfaces=len(interfaces),
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80, bMaxPower=50,
            extra_descriptors=[],
        )  # fmt: skip

    def get_interface_descriptor(self, dev: object, intf: int, alt: int, config: int) -> object:
        if alt > 0:
            raise IndexError(alt)  # one alternate setting each: pyusb stops looking here
        interface_class, subclass = dev[4][intf]  # type: ignore[index]
        return _Descriptor(
            bLength=9, bDescriptorType=4, bInterfaceNumber=intf, bAlternateSetting=alt,
            bNumEndpoints=0, bInterfaceClass=interface_class, bInterfaceSubClass=subclass,
            bInterfaceProtocol=0, iInterface=0, extra_descriptors=[],
        )  # fmt: skip


def test_pyusb_descriptors_are_recognised_too() -> None:
    found = {finding.ids: finding for finding in scan_pyusb(FakeBackend())}
    assert set(found) == {"0525:127a", "045e:0002"}
    assert found["0525:127a"].kind == "usb_debug_cable"
    assert not found["0525:127a"].supported  # pyusb knows no tty: only sysfs does
    assert found["045e:0002"].kind == "usb_debug_class"


# --- ip ------------------------------------------------------------------------------------------


def fake_ip(tmp_path: Path, *, fail: str | None = None) -> Path:
    """A stand-in for iproute2's `ip` (a privileged tool): records its arguments, and fails
    with `fail` on stderr if given, as ip does without CAP_NET_ADMIN."""
    script = tmp_path / "ip"
    log = tmp_path / "ip.log"
    body = f'echo "$*" >> {log}\n'
    if fail is not None:
        body += f'echo "{fail}" >&2\nexit 2\n'
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


async def test_configure_interface_runs_ip_address_and_link(tmp_path: Path) -> None:
    ip = fake_ip(tmp_path)
    assert await configure_interface("usb0", "169.254.50.1/16", ip_command=(str(ip),)) is None
    assert (tmp_path / "ip.log").read_text().splitlines() == [
        "address replace 169.254.50.1/16 dev usb0",
        "link set dev usb0 up",
    ]


async def test_configure_interface_explains_a_missing_capability(tmp_path: Path) -> None:
    ip = fake_ip(tmp_path, fail="RTNETLINK answers: Operation not permitted")
    problem = await configure_interface("usb0", "169.254.50.1/16", ip_command=(str(ip),))
    assert problem is not None
    assert "Operation not permitted" in problem and "CAP_NET_ADMIN" in problem
    missing = await configure_interface("usb0", "169.254.50.1/16", ip_command=("/nonexistent/ip",))
    assert missing is not None and "iproute2" in missing


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_configure_interface_with_the_real_ip_in_a_network_namespace() -> None:
    """The real `ip`, in a network namespace of its own (unshare --net --map-root-user), on
    its loopback interface: no USB adapter here, but the same commands."""
    code = (
        "import asyncio\n"
        "from cartd.links.network import configure_interface, interface_address\n"
        "print(asyncio.run(configure_interface('lo', '169.254.50.1/16')))\n"
        "import subprocess\n"
        "print(subprocess.run(['ip', '-4', '-o', 'address', 'show', 'dev', 'lo'],\n"
        "                     capture_output=True, text=True).stdout)\n"
    )
    result = subprocess.run(
        ["unshare", "--net", "--map-root-user", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"cannot make a network namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "None"
    assert "inet 169.254.50.1/16" in result.stdout and " UP" not in result.stderr


def test_interface_address_of_loopback_and_of_nothing() -> None:
    assert interface_address("lo") == "127.0.0.1"
    assert interface_address("cartd-none0") is None
