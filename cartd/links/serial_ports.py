"""Finding the serial ports a target may be cabled to, by looking at /dev and /sys only.

`find_serial_ports("auto")` lists every UART-like tty that exists (`ttyS*`, `ttyUSB*`,
`ttyACM*`) once, named in records by the most stable name udev gave it: a
`/dev/serial/by-id/` link follows the adapter to any USB socket, a `/dev/serial/by-path/` link
names the socket (adapters without a serial number get only that, landscape section 6.1), and
a plain device path is the last resort. Nothing here opens a device: deciding whether a port
carries KD is `cartd.links.probe`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Kernel names of the ttys that can be a serial line to a target: 8250-style UARTs, USB serial
# adapters (FTDI, CH340, PL2303, the EHCI debug cable) and CDC-ACM devices.
_TTY_PATTERNS = ("ttyS*", "ttyUSB*", "ttyACM*")
# udev's stable names, most stable first (systemd 60-serial.rules).
_STABLE_LINK_DIRECTORIES = ("serial/by-id", "serial/by-path")
# /sys/class/tty/<name>/type holds the 8250 driver's port type; PORT_UNKNOWN (0) is a
# placeholder the driver registered without finding a UART behind it.
_PORT_UNKNOWN = 0


@dataclass(frozen=True, slots=True)
class SerialCandidate:
    """A serial port worth probing.

    `device` is the path that opens the port now; `stable_name` is what records call it and
    the path to wait for and reopen after an unplug, since a by-id link follows the adapter
    even when it comes back as another ttyUSB number.
    """

    device: str
    stable_name: str


def find_serial_ports(
    spec: Literal["auto"] | Sequence[str],
    *,
    dev: Path = Path("/dev"),
    sysfs: Path = Path("/sys"),
) -> list[SerialCandidate]:
    """The ports to probe: with "auto" every serial tty that exists now, each once; otherwise
    the configured paths as given, even those that do not exist yet (they may be plugged in
    later), in their order and without repeats."""
    if spec == "auto":
        return _discover(dev, sysfs)
    return [SerialCandidate(device=path, stable_name=path) for path in dict.fromkeys(spec)]


def _discover(dev: Path, sysfs: Path) -> list[SerialCandidate]:
    # Keyed by the resolved node, so a tty reached through several links is listed once.
    devices: dict[Path, Path] = {}
    for pattern in _TTY_PATTERNS:
        for node in dev.glob(pattern):
            if node.name.startswith("ttyS") and not _is_real_uart(node.name, sysfs):
                continue
            devices.setdefault(node.resolve(), node)
    stable_names: dict[Path, Path] = {}
    for directory in _STABLE_LINK_DIRECTORIES:
        # Sorted so that when two links name one device the choice does not depend on the
        # order the file system lists them in.
        for link in sorted((dev / directory).glob("*")):
            target = link.resolve()
            if not target.exists():
                continue  # a link udev has not removed yet for a device already gone
            # udev makes these links only for serial ttys, so a target we did not list (a
            # vendor driver's own name, say) is still a serial port.
            devices.setdefault(target, target)
            stable_names.setdefault(target, link)
    candidates = [
        SerialCandidate(device=str(node), stable_name=str(stable_names.get(resolved, node)))
        for resolved, node in devices.items()
    ]
    return sorted(candidates, key=lambda candidate: _natural_key(candidate.device))


def _is_real_uart(name: str, sysfs: Path) -> bool:
    """Linux creates /dev/ttyS0..31 whether or not a UART is there; a real one is bound to a
    driver and, for the 8250 driver, has a known port type."""
    tty = sysfs / "class" / "tty" / name
    if not (tty / "device" / "driver").exists():
        return False
    try:
        port_type = int((tty / "type").read_text().strip())
    except (OSError, ValueError):
        return True  # a driver without the attribute (not an 8250): its binding is enough
    return port_type != _PORT_UNKNOWN


def _natural_key(path: str) -> tuple[tuple[int, str | int], ...]:
    """Sort ttyS2 before ttyS10."""
    return tuple(
        (1, int(part)) if part.isdigit() else (0, part) for part in re.split(r"(\d+)", path)
    )


# --- hotplug: a tty udev announced, and what is behind it ----------------------------------------

_HOTPLUG_TTY = re.compile(r"tty(USB|ACM|S)\d+")
# What FTDI chips buffer before sending a short read to the host, in ms (kernel default 16). KD
# is ping-pong (packet, ACK, next packet), so every turn would wait that long; 1 ms is the least
# the driver takes (landscape.md 5.2 and 6.1).
FTDI_LATENCY_MS = 1


def candidate_for_tty(
    kernel_name: str,
    device_node: str | None,
    device_links: Sequence[str],
    *,
    sysfs: Path = Path("/sys"),
) -> SerialCandidate | None:
    """The candidate for a tty udev just added (`ports = "auto"`), or None if it is not a serial
    line to a target: a virtual console, a pty, or a ttyS with no UART behind it. Its stable
    name is udev's by-id link, else its by-path link, else the node itself."""
    if device_node is None or not _HOTPLUG_TTY.fullmatch(kernel_name):
        return None
    if kernel_name.startswith("ttyS") and not _is_real_uart(kernel_name, sysfs):
        return None
    for directory in _STABLE_LINK_DIRECTORIES:
        for link in sorted(device_links):
            if f"/{directory}/" in link:
                return SerialCandidate(device=device_node, stable_name=link)
    return SerialCandidate(device=device_node, stable_name=device_node)


@dataclass(frozen=True, slots=True, kw_only=True)
class TtyFacts:
    """What sysfs says about a tty: the driver bound to it, and the USB device it is part of."""

    driver: str | None = None
    vendor_id: str | None = None  # "0403", as in sysfs and lsusb
    product_id: str | None = None
    serial: str | None = None
    product: str | None = None


def tty_facts(kernel_name: str, *, sysfs: Path = Path("/sys")) -> TtyFacts:
    device = sysfs / "class" / "tty" / kernel_name / "device"
    if not device.exists():
        return TtyFacts()
    driver_link = device / "driver"
    driver = driver_link.resolve().name if driver_link.exists() else None
    # Up from the port (or interface) to the USB device, the first directory with idVendor.
    for directory in (device.resolve(), *device.resolve().parents):
        if (directory / "idVendor").exists():
            return TtyFacts(
                driver=driver,
                vendor_id=_attribute(directory / "idVendor"),
                product_id=_attribute(directory / "idProduct"),
                serial=_attribute(directory / "serial"),
                product=_attribute(directory / "product"),
            )
        if directory == sysfs or directory.name == "devices":
            break
    return TtyFacts(driver=driver)


def _attribute(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def set_ftdi_low_latency(kernel_name: str, *, sysfs: Path = Path("/sys")) -> str | None:
    """Set an FTDI adapter's latency timer to FTDI_LATENCY_MS. Returns what happened, for the
    log and `cartd links`, or None when the tty is not driven by ftdi_sio. The udev rule in
    udev/ does the same as root; this covers a cart without it (if the daemon may write)."""
    port = sysfs / "bus" / "usb-serial" / "devices" / kernel_name
    driver = port / "driver"
    if not driver.exists() or driver.resolve().name != "ftdi_sio":
        return None
    timer = port / "latency_timer"
    now = _attribute(timer)
    if now == str(FTDI_LATENCY_MS):
        return f"FTDI latency timer is {FTDI_LATENCY_MS} ms"
    try:
        timer.write_text(f"{FTDI_LATENCY_MS}\n")
    except OSError as error:
        return (
            f"FTDI latency timer left at {now or '?'} ms: cannot write {timer} "
            f"({error.strerror}); install cartd's udev rule, which sets it as root"
        )
    return f"FTDI latency timer set from {now or '?'} ms to {FTDI_LATENCY_MS} ms"
