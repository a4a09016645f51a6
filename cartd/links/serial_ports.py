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
