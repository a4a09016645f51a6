"""USB devices that can be a debug link, recognised by vendor/product and interface class.

kdnet.md section 7 and landscape.md 6.1 list what a target's USB debug port looks like to the cart:

* the USB 2.0 debug cable (NET20DC), 0525:127a: Linux's `usb_debug` driver makes it a ttyUSB,
  which cartd probes and talks KD on like any serial port;
* an xHCI debug capability (DbC): a Linux machine's shows up as 1d6b:0010 or 1d6b:0011 and also
  gets a ttyUSB from `usb_debug`; a Windows target's VID/PID is not known (UNCONFIRMED in the
  spec), so a device with an interface of class 0xDC ("diagnostic device") is recognised too and
  reported as unsupported: Windows' KDUSB speaks its own framing, for which Linux has no driver;
* a USB-Ethernet adapter (CDC-EEM, class 0x02 subclass 0x0C, or CDC-NCM, subclass 0x0D), as a
  target's KDNET-EEM port appears: its network interface gets the configured address and a
  KDNET listener (the daemon does that; this module only says what it is).

Everything is read from sysfs (`/sys/bus/usb/devices`), which the daemon can read without
privileges; `scan_pyusb` reads the same facts through pyusb (libusb's descriptors) for a box
whose sysfs has no USB tree (some containers), without tty or network names then.
Nothing here opens a device.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DEBUG_CABLE = ("0525", "127a")  # Linux usb_debug.c's id table (PLX/NetChip NET20DC)
LINUX_DBC = {("1d6b", "0010"), ("1d6b", "0011")}  # xhci-dbgcap and early xdbc (Linux)
CLASS_COMMUNICATIONS = 0x02
SUBCLASS_EEM = 0x0C
SUBCLASS_NCM = 0x0D
CLASS_DIAGNOSTIC = 0xDC

UsbKind = Literal["usb_debug_cable", "linux_dbc", "usb_debug_class", "kdnet_eem", "kdnet_ncm"]

UNSUPPORTED_DBC = (
    "a USB debug-class device (interface class 0xDC), most likely a Windows target's xHCI "
    "debug capability (bcdedit /dbgsettings usb, KDUSB); Windows' KDUSB framing has no Linux "
    "driver, so cartd cannot talk to it: configure the target for KDNET or serial instead"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbInterface:
    number: str  # "1.0" (configuration.interface), as in the sysfs name
    interface_class: int
    subclass: int
    driver: str | None = None
    ttys: tuple[str, ...] = ()  # ttyUSB0 ... the interface's driver made
    net: tuple[str, ...] = ()  # usb0 ... network interfaces it carries


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbFinding:
    """A USB device cartd recognised: what it is, and whether cartd can use it (and if not, why)."""

    sys_name: str  # "1-1.2", the device's sysfs name
    vendor_id: str
    product_id: str
    kind: UsbKind
    what: str
    supported: bool
    product: str | None = None
    tty: str | None = None  # the serial port to probe (debug cable, Linux DbC)
    net_interface: str | None = None  # the network interface (EEM, NCM)
    driver: str | None = None

    @property
    def ids(self) -> str:
        return f"{self.vendor_id}:{self.product_id}"


def classify(
    sys_name: str,
    vendor_id: str,
    product_id: str,
    interfaces: Iterable[UsbInterface],
    *,
    product: str | None = None,
) -> UsbFinding | None:
    """What a USB device with these ids and interfaces is to cartd, or None if nothing."""
    interfaces = list(interfaces)
    ids = (vendor_id.lower(), product_id.lower())
    ttys = [tty for interface in interfaces for tty in interface.ttys]
    drivers = [interface.driver for interface in interfaces if interface.driver]

    def finding(
        kind: UsbKind,
        what: str,
        supported: bool,
        *,
        net_interface: str | None = None,
        driver: str | None = drivers[0] if drivers else None,
    ) -> UsbFinding:
        return UsbFinding(
            sys_name=sys_name,
            vendor_id=ids[0],
            product_id=ids[1],
            product=product,
            tty=ttys[0] if ttys else None,
            kind=kind,
            what=what,
            supported=supported,
            net_interface=net_interface,
            driver=driver,
        )

    if ids == DEBUG_CABLE:
        where = (
            f"/dev/{ttys[0]}, probed for KD like any serial port"
            if ttys
            else "no tty yet: Linux's usb_debug driver is not bound (modprobe usb_debug)"
        )
        return finding(
            "usb_debug_cable", f"USB 2.0 EHCI debug cable (NET20DC, usb_debug): {where}", bool(ttys)
        )
    if ids in LINUX_DBC:
        return finding(
            "linux_dbc",
            "a Linux machine's xHCI debug capability (usb_debug); "
            + (f"/dev/{ttys[0]} is probed, but a Linux target speaks no KD" if ttys else "no tty"),
            bool(ttys),
        )
    for interface in interfaces:
        if interface.interface_class == CLASS_COMMUNICATIONS and interface.subclass in (
            SUBCLASS_EEM,
            SUBCLASS_NCM,
        ):
            eem = interface.subclass == SUBCLASS_EEM
            net = interface.net[0] if interface.net else None
            return finding(
                "kdnet_eem" if eem else "kdnet_ncm",
                f"USB-Ethernet (CDC-{'EEM' if eem else 'NCM'}) adapter, as a KDNET-EEM "
                "target's debug port appears"
                + (f", network interface {net}" if net else ", no network interface yet"),
                net is not None,
                net_interface=net,
                driver=interface.driver,
            )
    if any(interface.interface_class == CLASS_DIAGNOSTIC for interface in interfaces):
        return finding("usb_debug_class", UNSUPPORTED_DBC, False)
    return None


# --- sysfs ---------------------------------------------------------------------------------------


def scan_sysfs(sysfs: Path = Path("/sys")) -> list[UsbFinding]:
    """Every recognised USB device under sysfs, in sysfs name order."""
    root = sysfs / "bus" / "usb" / "devices"
    if not root.is_dir():
        return []
    findings = []
    for entry in sorted(root.iterdir()):
        if ":" in entry.name:
            continue  # an interface; read with its device
        finding = read_device(entry)
        if finding is not None:
            findings.append(finding)
    return findings


def read_device(device: Path) -> UsbFinding | None:
    """Classify the USB device at sysfs directory `device` (its interfaces are its children
    named `<device>:<config>.<interface>`)."""
    vendor = _read(device / "idVendor")
    product_id = _read(device / "idProduct")
    if vendor is None or product_id is None:
        return None
    interfaces = []
    for child in sorted(device.iterdir()) if device.is_dir() else ():
        if not child.name.startswith(f"{device.name}:"):
            continue
        interface = _read_interface(child)
        if interface is not None:
            interfaces.append(interface)
    return classify(device.name, vendor, product_id, interfaces, product=_read(device / "product"))


def _read_interface(directory: Path) -> UsbInterface | None:
    try:
        interface_class = int(_read(directory / "bInterfaceClass") or "", 16)
        subclass = int(_read(directory / "bInterfaceSubClass") or "0", 16)
    except ValueError:
        return None
    driver = directory / "driver"
    # usb-serial drivers put ttyUSBn/ in the interface, cdc_acm puts tty/ttyACMn/.
    ttys = sorted(
        {
            path.name
            for path in (*directory.glob("ttyUSB*"), *directory.glob("tty/tty*"))
            if path.name.startswith("tty")
        }
    )
    net = sorted(path.name for path in directory.glob("net/*"))
    return UsbInterface(
        number=directory.name.split(":", 1)[1],
        interface_class=interface_class,
        subclass=subclass,
        driver=driver.resolve().name if driver.exists() else None,
        ttys=tuple(ttys),
        net=tuple(net),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# --- pyusb ---------------------------------------------------------------------------------------


def scan_pyusb(backend: Any = None) -> list[UsbFinding]:
    """The same recognition from libusb's descriptors (pyusb), for a box without a sysfs USB
    tree. No tty or network interface names then: only sysfs knows those. `backend` is a pyusb
    backend (None: libusb's, if pyusb finds one)."""
    import usb.core  # type: ignore[import-untyped]

    try:
        devices = list(usb.core.find(find_all=True, backend=backend) or ())
    except (usb.core.NoBackendError, usb.core.USBError):
        return []
    findings = []
    for device in devices:
        interfaces = [
            UsbInterface(
                number=f"{configuration.bConfigurationValue}.{interface.bInterfaceNumber}",
                interface_class=interface.bInterfaceClass,
                subclass=interface.bInterfaceSubClass,
            )
            for configuration in device
            for interface in configuration
        ]
        finding = classify(
            f"{device.bus}-{device.address}",
            f"{device.idVendor:04x}",
            f"{device.idProduct:04x}",
            interfaces,
        )
        if finding is not None:
            findings.append(finding)
    return findings
