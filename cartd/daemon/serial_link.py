"""One serial port, for as long as the daemon runs: probe it, talk KD on it, survive unplugs.

A port is probed passively (and actively only where the configuration allows); a port that
carries KD gets a connection: the bytes read while probing are fed to a new `KdHost`, which
RESETs to synchronise, and the target's worker follows it until the link closes. Then the port
is waited for and the cycle starts again; the target's session and records carry on.
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
    ) -> None:
        self.candidate = candidate
        self.link = f"serial:{candidate.stable_name}"
        self.target_id = target_id_for(candidate.stable_name)
        self._config = config
        self._publish = publish
        self._worker_for = worker_for
        self._on_traffic = on_traffic
        self.state = "probing"

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
            await wait_for_device(device, poll=serial.rescan_seconds)
            self.state = "probing"
            result = await probe_serial(
                device,
                serial.baud_rates,
                listen_seconds=serial.probe_seconds,
                active=self.active_probe,
            )
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
                await asyncio.sleep(pause)
                continue
            await self._connect(result.baud, result.initial_bytes)

    async def _connect(self, baud: int, initial_bytes: bytes) -> None:
        device = self.candidate.stable_name
        try:
            stream = open_serial(device, baud)
        except LinkClosed as error:
            self._publish(ev.LinkDown(link=self.link, device=device, reason=str(error)))
            return
        self.state = f"connected at {baud} baud"
        self._publish(ev.LinkUp(link=self.link, device=device, baud=baud))
        worker = self._worker_for(self.target_id, self.link)
        host = KdHost(seconds_per_byte=BITS_PER_BYTE / baud)
        driver = HostDriver(
            stream,
            host,
            on_traffic=lambda data, inbound: self._on_traffic(self.target_id, data, inbound),
        )
        reader = asyncio.create_task(driver.run())
        if initial_bytes:
            self._on_traffic(self.target_id, initial_bytes, True)
            driver.command(lambda now: host.receive_data(initial_bytes, now))
        driver.command(lambda now: host.connect(now))
        try:
            await worker.serve(driver)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            stream.close()
        reason = "device closed or unplugged"
        self._publish(ev.LinkDown(link=self.link, device=device, reason=reason))
        log.info("%s: link down (%s); waiting for it to come back", self.link, reason)
