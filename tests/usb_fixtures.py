"""A fake sysfs tree and udev events for USB devices, built from recorded values.

There is no USB hardware (and no udev) on the machines these tests run on: the attribute values
(idVendor, idProduct, product, bInterfaceClass, bInterfaceSubClass), the driver names and the
layout (interfaces as `<device>:<config>.<interface>` children, `ttyUSBn/` in a usb-serial
interface, `net/<name>/` in a network one, /sys/bus/usb-serial/devices/ttyUSBn links with
`latency_timer`) are copied from real machines' /sys and `udevadm monitor --property` output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cartd.links.hotplug import DeviceEvent

USB_ROOT = "devices/pci0000:00/0000:00:14.0/usb1"


@dataclass
class Interface:
    interface_class: int
    subclass: int = 0
    driver: str | None = None
    ttys: tuple[str, ...] = ()
    net: tuple[str, ...] = ()
    latency_timer: int = 16  # ftdi_sio's default, in ms


@dataclass
class UsbDevice:
    sys_name: str  # "1-2"
    vendor_id: str
    product_id: str
    product: str
    interfaces: list[Interface] = field(default_factory=list)
    serial: str | None = None


def add_usb_device(sysfs: Path, device: UsbDevice) -> Path:
    """Write `device` into the fake sysfs at `sysfs`; returns its directory."""
    directory = sysfs / USB_ROOT / device.sys_name
    directory.mkdir(parents=True)
    (directory / "idVendor").write_text(device.vendor_id + "\n")
    (directory / "idProduct").write_text(device.product_id + "\n")
    (directory / "product").write_text(device.product + "\n")
    if device.serial is not None:
        (directory / "serial").write_text(device.serial + "\n")
    bus = sysfs / "bus" / "usb" / "devices"
    bus.mkdir(parents=True, exist_ok=True)
    (bus / device.sys_name).symlink_to(directory)
    for number, interface in enumerate(device.interfaces):
        path = directory / f"{device.sys_name}:1.{number}"
        path.mkdir()
        (path / "bInterfaceClass").write_text(f"{interface.interface_class:02x}\n")
        (path / "bInterfaceSubClass").write_text(f"{interface.subclass:02x}\n")
        (bus / path.name).symlink_to(path)
        if interface.driver is not None:
            _driver(sysfs, "usb", interface.driver, path)
        for tty in interface.ttys:
            port = path / tty
            (port / "tty" / tty).mkdir(parents=True)
            if interface.driver is not None:
                _driver(sysfs, "usb-serial", interface.driver, port)
            (port / "latency_timer").write_text(f"{interface.latency_timer}\n")
            serial_bus = sysfs / "bus" / "usb-serial" / "devices"
            serial_bus.mkdir(parents=True, exist_ok=True)
            (serial_bus / tty).symlink_to(port)
            tty_class = sysfs / "class" / "tty" / tty
            tty_class.mkdir(parents=True)
            (tty_class / "device").symlink_to(port)
        for name in interface.net:
            (path / "net" / name).mkdir(parents=True)
    return directory


def _driver(sysfs: Path, bus: str, name: str, device: Path) -> None:
    driver = sysfs / "bus" / bus / "drivers" / name
    driver.mkdir(parents=True, exist_ok=True)
    (device / "driver").symlink_to(driver)


def usb_event(sysfs: Path, device: UsbDevice, action: str = "add") -> DeviceEvent:
    """udev's event for the USB device itself (DEVTYPE=usb_device)."""
    return DeviceEvent(
        action=action,
        subsystem="usb",
        sys_name=device.sys_name,
        sys_path=str(sysfs / USB_ROOT / device.sys_name),
        device_node=f"/dev/bus/usb/001/{int(device.sys_name.split('-')[-1]) + 1:03d}",
        device_type="usb_device",
        properties={
            "ACTION": action,
            "ID_VENDOR_ID": device.vendor_id,
            "ID_MODEL_ID": device.product_id,
            "PRODUCT": f"{int(device.vendor_id, 16):x}/{int(device.product_id, 16):x}/100",
        },
    )


def tty_event(
    sysfs: Path,
    device: UsbDevice,
    tty: str,
    *,
    node: str,
    links: tuple[str, ...] = (),
    action: str = "add",
) -> DeviceEvent:
    """udev's event for a ttyUSB of `device`, its node (a pty slave in tests) and DEVLINKS."""
    return DeviceEvent(
        action=action,
        subsystem="tty",
        sys_name=tty,
        sys_path=str(
            sysfs / USB_ROOT / device.sys_name / f"{device.sys_name}:1.0" / tty / "tty" / tty
        ),
        device_node=node,
        properties={"ACTION": action, "DEVNAME": node, "DEVLINKS": " ".join(links)},
    )


def point_link(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    os.symlink(target, link)


FTDI = UsbDevice(
    "1-2",
    "0403",
    "6001",
    "FT232R USB UART",
    [Interface(0xFF, 0xFF, driver="ftdi_sio", ttys=("ttyUSB3",))],
    serial="A50285BI",
)
DEBUG_CABLE = UsbDevice(
    "1-3", "0525", "127a", "NET20DC", [Interface(0xFF, 0x00, driver="usb_debug", ttys=("ttyUSB4",))]
)
CDC_EEM = UsbDevice(
    "1-4",
    "045e",
    "0001",  # UNCONFIRMED ids: what a KDNET-EEM target reports is not in the spec; class decides
    "Windows KDNET USB-EEM",
    [Interface(0x02, 0x0C, driver="cdc_eem", net=("usb0",))],
)
WINDOWS_DBC = UsbDevice(
    "1-5", "045e", "0002", "USB Debug Connection Device", [Interface(0xDC, 0x02)]
)
