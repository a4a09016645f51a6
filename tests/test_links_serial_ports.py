"""Serial port discovery on fixture /dev and /sys trees built from real files and symlinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartd.links.serial_ports import SerialCandidate, find_serial_ports

FTDI_ID = "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
ARDUINO_ID = "usb-Arduino__www.arduino.cc__0043_75833353035351A0E1B1-if00"
CH340_PATH = "pci-0000:00:14.0-usb-0:2:1.0-port0"
FTDI_PATH = "pci-0000:00:14.0-usb-0:1:1.0-port0"


def make_node(dev: Path, name: str) -> None:
    (dev / name).write_bytes(b"")  # only existence matters to discovery


def make_link(dev: Path, directory: str, name: str, device: str) -> None:
    folder = dev / "serial" / directory
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).symlink_to(Path("../..") / device)  # relative, as udev makes them


def make_uart(sysfs: Path, name: str, *, bound: bool, port_type: str | None) -> None:
    """/sys/class/tty/<name>: `device/driver` when a driver is bound, `type` when given."""
    tty = sysfs / "class" / "tty" / name
    tty.mkdir(parents=True)
    if bound:
        drivers = sysfs / "bus" / "platform" / "drivers" / "serial8250"
        drivers.mkdir(parents=True, exist_ok=True)
        (tty / "device").mkdir()
        (tty / "device" / "driver").symlink_to(drivers)
    if port_type is not None:
        (tty / "type").write_text(port_type + "\n")


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    sysfs.mkdir()
    return dev, sysfs


def test_auto_names_each_device_once_by_its_most_stable_link(roots: tuple[Path, Path]) -> None:
    dev, sysfs = roots
    for name in ("ttyUSB0", "ttyUSB1", "ttyACM0", "ttyUSB2", "tty0", "ttyprintk", "console"):
        make_node(dev, name)
    # ttyUSB0: an FTDI with a serial number, so both a by-id and a by-path link.
    make_link(dev, "by-id", FTDI_ID, "ttyUSB0")
    make_link(dev, "by-path", FTDI_PATH, "ttyUSB0")
    # ttyUSB1: a CH340 without a serial number: by-path only.
    make_link(dev, "by-path", CH340_PATH, "ttyUSB1")
    make_link(dev, "by-id", ARDUINO_ID, "ttyACM0")
    # ttyUSB2: no udev links at all (udev not running, say).
    assert find_serial_ports("auto", dev=dev, sysfs=sysfs) == [
        SerialCandidate(f"{dev}/ttyACM0", f"{dev}/serial/by-id/{ARDUINO_ID}"),
        SerialCandidate(f"{dev}/ttyUSB0", f"{dev}/serial/by-id/{FTDI_ID}"),
        SerialCandidate(f"{dev}/ttyUSB1", f"{dev}/serial/by-path/{CH340_PATH}"),
        SerialCandidate(f"{dev}/ttyUSB2", f"{dev}/ttyUSB2"),
    ]


def test_auto_merges_several_links_to_one_device_and_skips_dangling_ones(
    roots: tuple[Path, Path],
) -> None:
    dev, sysfs = roots
    make_node(dev, "ttyUSB0")
    make_link(dev, "by-id", "usb-b-second-if00-port0", "ttyUSB0")
    make_link(dev, "by-id", "usb-a-first-if00-port0", "ttyUSB0")
    # An adapter unplugged a moment ago: udev has not removed its link yet.
    make_link(dev, "by-id", "usb-gone-if00-port0", "ttyUSB7")
    assert find_serial_ports("auto", dev=dev, sysfs=sysfs) == [
        SerialCandidate(f"{dev}/ttyUSB0", f"{dev}/serial/by-id/usb-a-first-if00-port0")
    ]


def test_auto_lists_a_by_id_device_under_a_name_it_does_not_glob(
    roots: tuple[Path, Path],
) -> None:
    """Some vendor drivers name their ttys differently; udev's by-id link still finds them."""
    dev, sysfs = roots
    make_node(dev, "ttyXRUSB0")
    make_link(dev, "by-id", "usb-Exar-if00", "ttyXRUSB0")
    assert find_serial_ports("auto", dev=dev, sysfs=sysfs) == [
        SerialCandidate(f"{dev}/ttyXRUSB0", f"{dev}/serial/by-id/usb-Exar-if00")
    ]


def test_auto_keeps_only_ttyS_ports_with_a_uart_behind_them(roots: tuple[Path, Path]) -> None:
    dev, sysfs = roots
    for number in range(12):
        make_node(dev, f"ttyS{number}")
    make_uart(sysfs, "ttyS0", bound=True, port_type="4")  # a 16550A on the motherboard
    make_uart(sysfs, "ttyS1", bound=True, port_type="0")  # PORT_UNKNOWN: nothing there
    make_uart(sysfs, "ttyS2", bound=False, port_type="4")  # no driver bound
    make_uart(sysfs, "ttyS3", bound=True, port_type=None)  # a driver without the attribute
    make_uart(sysfs, "ttyS10", bound=True, port_type="16")  # a PCIe card's UART
    make_uart(sysfs, "ttyS11", bound=True, port_type="garbled")
    # ttyS4..9: no sysfs entry at all.
    assert [c.device for c in find_serial_ports("auto", dev=dev, sysfs=sysfs)] == [
        f"{dev}/ttyS0",
        f"{dev}/ttyS3",
        f"{dev}/ttyS10",
        f"{dev}/ttyS11",
    ]


def test_auto_on_an_empty_or_missing_dev_finds_nothing(tmp_path: Path) -> None:
    assert find_serial_ports("auto", dev=tmp_path, sysfs=tmp_path) == []
    assert find_serial_ports("auto", dev=tmp_path / "absent", sysfs=tmp_path / "absent") == []


def test_explicit_ports_are_taken_as_given(roots: tuple[Path, Path]) -> None:
    dev, sysfs = roots
    make_node(dev, "ttyUSB0")
    make_link(dev, "by-id", FTDI_ID, "ttyUSB0")
    by_id = f"{dev}/serial/by-id/{FTDI_ID}"
    # A configured port that is not plugged in yet is kept: the daemon waits for it. Sysfs is
    # not consulted either: whoever named ttyS5 knows it is there.
    spec = [by_id, "/dev/ttyS5", "/dev/ttyUSB3", by_id]
    assert find_serial_ports(spec, dev=dev, sysfs=sysfs) == [
        SerialCandidate(by_id, by_id),
        SerialCandidate("/dev/ttyS5", "/dev/ttyS5"),
        SerialCandidate("/dev/ttyUSB3", "/dev/ttyUSB3"),
    ]
    assert find_serial_ports([], dev=dev, sysfs=sysfs) == []
