"""One serial port, for as long as the daemon runs: probe it, talk KD on it, survive unplugs.

A port is probed passively (and actively only where the configuration allows); a port that
carries KD gets a connection: the bytes read while probing are fed to a `KdHost` (the last
connection's, if the target was running; see `_host_for`), which RESETs to synchronise unless
it heard the target in them, and the target's worker follows it until the link closes. Then the
port is waited for and the cycle starts again; the target's session and records carry on.

With udev, the daemon tells the link when its device comes (`device_added`: stop waiting or
pausing, probe now) and goes (`device_removed`: the connection ends at once, even where the
driver would not report an error until the next write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable

from cartd import events as ev
from cartd.config import Config
from cartd.daemon.host_driver import HostDriver
from cartd.daemon.target_worker import TargetWorker
from cartd.kd.host import KdHost
from cartd.kd.host import TargetState as HostState
from cartd.links.hotplug import DeviceWakeup
from cartd.links.probe import probe_serial
from cartd.links.serial_ports import SerialCandidate
from cartd.links.serial_watch import wait_for_device
from cartd.links.streams import LinkClosed, open_serial

log = logging.getLogger(__name__)

BITS_PER_BYTE = 10  # 8N1
# A port that answered with something other than KD is looked at again only this often: it is
# probably a console, and cartd never writes to it.
NOT_KD_RETRY_SECONDS = 60.0
_TARGET_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def target_id_for(stable_name: str) -> str:
    """A target's id: its link's stable name made file-name safe ("ttyUSB0", "pts-3",
    "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"). The link is what stays the same across the
    target's reboots (KASLR moves the kernel base at every boot), so the records of one cable to
    one server stay together."""
    name = stable_name
    for prefix in ("/dev/serial/by-id/", "/dev/serial/by-path/", "/dev/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return _TARGET_ID_CHARACTERS.sub("-", name).strip("-")[:64] or "serial"


WorkerFactory = Callable[[str, str], TargetWorker]
TrafficSink = Callable[[str, bytes, bool], None]


class SerialLink:
    def __init__(
        self,
        candidate: SerialCandidate,
        config: Config,
        *,
        publish: Callable[[ev.Event], None],
        worker_for: WorkerFactory,
        on_traffic: TrafficSink,
        wakeup: DeviceWakeup | None = None,
    ) -> None:
        self.candidate = candidate
        self._wakeup = wakeup
        self._device_added = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.link = f"serial:{candidate.stable_name}"
        self.target_id = target_id_for(candidate.stable_name)
        self._config = config
        self._publish = publish
        self._worker_for = worker_for
        self._on_traffic = on_traffic
        self.state = "probing"
        self.baud: int | None = None  # the speed of the open connection; None between them
        self._host: KdHost | None = None
        self._seen_kd = False
        self._last_probe: tuple[str, int | None] | None = None
        self._host_baud: int | None = None

    @property
    def active_probe(self) -> bool:
        allowed = self._config.serial.active_probe
        names = {self.candidate.device, self.candidate.stable_name}
        return allowed == "all" or bool(names & set(allowed))

    async def run(self) -> None:
        # Open the stable name: a by-id link follows a USB adapter that comes back as ttyUSB1.
        device = self.candidate.stable_name
        serial = self._config.serial
        while True:
            self.state = "waiting for device"
            await wait_for_device(device, poll=serial.rescan_seconds, wakeup=self._wakeup)
            self._device_added.clear()
            self.state = "probing"
            # A port that has carried KD may be woken like a configured one: a target held at
            # a stop sends nothing by itself, and would otherwise never be found again.
            result = await probe_serial(
                device,
                serial.baud_rates,
                listen_seconds=serial.probe_seconds,
                active=self.active_probe or self._seen_kd,
            )
            if (result.result, result.baud) != self._last_probe:
                # A silent port is probed every few seconds; say so once, not every time.
                self._last_probe = (result.result, result.baud)
                self._publish(
                    ev.LinkProbed(
                        link=self.link,
                        device=device,
                        result=result.result,
                        detail=result.detail,
                        baud=result.baud,
                    )
                )
            if result.result != "kd" or result.baud is None:
                self.state = f"no KD ({result.result})"
                pause = NOT_KD_RETRY_SECONDS if result.result == "not_kd" else serial.rescan_seconds
                # A replug (a hotplug event for this port) ends the pause: probe the new cable.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._device_added.wait(), pause)
                continue
            self._seen_kd = True
            await self._connect(result.baud, result.initial_bytes)
            self._last_probe = None  # after a link down, report the next probe again

    def device_added(self) -> None:
        """udev says the port (or an adapter under its stable name) is there now."""
        self._device_added.set()

    def device_removed(self) -> None:
        """udev says the port is gone: end the connection now."""
        if self._reader is not None:
            self._reader.cancel()

    def _host_for(self, baud: int) -> KdHost:
        """The KD core for a new connection. The last one carries on if the target was running
        when the link went (and the speed is the same): to the target an unplug only lost some
        bytes, and the core's rules for lost bytes then work across the gap, so a DbgPrint it
        sends again because our ACK went down with the link is not delivered twice. A target
        that was in a stop gets a new core, which has the stop reported again for the session
        to decide on (the decision may have been lost with the link)."""
        host = self._host
        if host is None or self._host_baud != baud or host.state is not HostState.RUNNING:
            host = self._host = KdHost(seconds_per_byte=BITS_PER_BYTE / baud)
            self._host_baud = baud
        return host

    async def _connect(self, baud: int, initial_bytes: bytes) -> None:
        device = self.candidate.stable_name
        try:
            stream = open_serial(device, baud)
        except LinkClosed as error:
            self._publish(ev.LinkDown(link=self.link, device=device, reason=str(error)))
            return
        self.state = f"connected at {baud} baud"
        self.baud = baud
        # The worker (and with it the session's records) first, so link_up is journaled too.
        worker = self._worker_for(self.target_id, self.link)
        self._publish(ev.LinkUp(link=self.link, device=device, baud=baud))
        host = self._host_for(baud)
        driver = HostDriver(
            stream,
            host,
            on_traffic=lambda data, inbound: self._on_traffic(self.target_id, data, inbound),
        )
        reader = self._reader = asyncio.create_task(driver.run())
        if initial_bytes:
            self._on_traffic(self.target_id, initial_bytes, True)
            driver.command(lambda now: host.receive_data(initial_bytes, now))
        if host.state is HostState.UNKNOWN:
            # Only a target not heard yet needs the RESET. One that was heard is in step (its
            # packets carry their own ids, and a stop that comes before ours are known is held
            # while the core RESETs): a RESET now would cross the packet it sends after our
            # ACK and make both sides send again.
            driver.command(lambda now: host.connect(now))
        if self._config.policy_for(self.target_id).break_on_connect and host.state in (
            HostState.UNKNOWN,
            HostState.RUNNING,
        ):
            # policy break_on_connect: stop the target at once, so cartd learns who it is; the
            # session continues it once identity is read (a break-in nobody asked for).
            driver.command(lambda now: host.break_in(now))
        try:
            await worker.serve(driver)
        finally:
            self.baud = None
            self._reader = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            stream.close()
        reason = "device closed or unplugged"
        self._publish(ev.LinkDown(link=self.link, device=device, reason=reason))
        log.info("%s: link down (%s); waiting for it to come back", self.link, reason)
