"""Keeping a serial port: waiting for an unplugged one to come back, and opening it again.

USB serial adapters vanish when unplugged and reappear later, possibly under another ttyUSB
number; wait for the port's stable name (`SerialCandidate.stable_name`), which follows the
adapter. With udev running, a hotplug event wakes the wait at once (`DeviceWakeup`); the poll
stays as the fallback (no udev, or an event that never came).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from cartd.links.hotplug import DeviceWakeup
from cartd.links.probe import explain_open_error
from cartd.links.streams import FdStream, LinkClosed, open_serial


async def wait_for_device(device: str, *, poll: float, wakeup: DeviceWakeup | None = None) -> None:
    """Return once `device` exists, looking again at each hotplug event of `wakeup` and at
    least every `poll` seconds. A by-id link left dangling by an unplugged adapter counts as
    missing until the adapter is back."""
    while not os.path.exists(device):
        if wakeup is None:
            await asyncio.sleep(poll)
        else:
            await wakeup.wait(poll)


async def reopen_serial(
    device: str,
    baud: int,
    *,
    poll: float,
    on_failure: Callable[[str], None] | None = None,
    wakeup: DeviceWakeup | None = None,
) -> FdStream:
    """Wait for `device` and open it at `baud`, trying again every `poll` seconds while it
    cannot be opened. Right after a replug the node exists before udev has given it its group
    and mode, so a first "permission denied" is normal; a lasting one is reported again on each
    try through `on_failure(reason)`, so the daemon can tell someone."""
    while True:
        await wait_for_device(device, poll=poll, wakeup=wakeup)
        try:
            return open_serial(device, baud)
        except LinkClosed as error:
            if on_failure is not None:
                on_failure(explain_open_error(device, error))
        await asyncio.sleep(poll)
