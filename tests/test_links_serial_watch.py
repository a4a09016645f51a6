"""Waiting for an unplugged port and opening it again, with a by-id style symlink in tmp_path
standing in for udev's link and real pseudo-terminals for the adapter behind it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cartd.links.serial_watch import reopen_serial, wait_for_device
from cartd.links.streams import LinkClosed, open_pty_pair, open_serial

POLL = 0.01


def point(link: Path, target: str | Path) -> None:
    """(Re)point `link` atomically, as udev does when an adapter comes and goes."""
    fresh = link.with_name(link.name + ".new")
    fresh.symlink_to(target)
    os.replace(fresh, link)


async def test_wait_for_device_returns_at_once_for_a_present_device(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.write_bytes(b"")
    await asyncio.wait_for(wait_for_device(str(device), poll=10.0), 1.0)


async def test_wait_for_device_waits_while_the_link_dangles(tmp_path: Path) -> None:
    node = tmp_path / "ttyUSB0"
    link = tmp_path / "usb-FTDI-if00-port0"
    link.symlink_to(node)  # the adapter is unplugged: the link points nowhere
    waiting = asyncio.create_task(wait_for_device(str(link), poll=POLL))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    node.write_bytes(b"")  # plugged back in
    await asyncio.wait_for(waiting, 1.0)


async def test_a_port_is_reopened_after_an_unplug(tmp_path: Path) -> None:
    link = tmp_path / "usb-FTDI-if00-port0"
    first_master, first_slave = open_pty_pair()
    point(link, first_slave)
    stream = open_serial(str(link), 115200)
    first_master.close()  # unplugged: the daemon's read fails
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(stream.read(), 1.0)
    stream.close()
    link.unlink()  # and udev removes the link

    reopening = asyncio.create_task(reopen_serial(str(link), 115200, poll=POLL))
    await asyncio.sleep(0.1)
    assert not reopening.done()
    # Back, under another tty name (ttyUSB1, say): the stable link follows it.
    second_master, second_slave = open_pty_pair()
    point(link, second_slave)
    stream = await asyncio.wait_for(reopening, 1.0)
    try:
        second_master.write(b"0000")
        assert await asyncio.wait_for(stream.read(), 1.0) == b"0000"
    finally:
        stream.close()
        second_master.close()


async def test_reopen_keeps_trying_while_the_device_cannot_be_opened(tmp_path: Path) -> None:
    """Right after a replug the node can exist before it can be opened; each failure is
    reported and the next try comes `poll` seconds later."""
    link = tmp_path / "usb-FTDI-if00-port0"
    not_a_tty = tmp_path / "not-a-tty"
    not_a_tty.write_bytes(b"")
    point(link, not_a_tty)
    failures: list[str] = []
    reopening = asyncio.create_task(
        reopen_serial(str(link), 115200, poll=POLL, on_failure=failures.append)
    )
    await asyncio.sleep(0.1)
    assert not reopening.done()
    assert len(failures) >= 2
    assert failures[0].startswith(f"cannot open {link}")
    master, slave = open_pty_pair()
    point(link, slave)
    stream = await asyncio.wait_for(reopening, 1.0)
    stream.close()
    master.close()
