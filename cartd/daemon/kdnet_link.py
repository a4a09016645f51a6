"""One KDNET port, for as long as the daemon runs: one target sends to it (kdnet.md 3.5).

With a key, the port is served by a `KdnetDriver`: the first handshake makes the target known
(link up, its worker follows the driver), a later one is a reboot. Without a key, cartd still
listens, and a target that pokes the port is reported ("key needed") rather than ignored: that is
how the cart notices a network cable. A key that does not authenticate the pokes is reported too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cartd import events as ev
from cartd.config import Config
from cartd.daemon.kdnet_driver import KdnetDriver
from cartd.daemon.target_worker import TargetWorker
from cartd.kd.kdnet.datagram import Channel, DropReason, peek_channel
from cartd.kd.kdnet.events import DatagramDropped, SessionStarted
from cartd.kd.kdnet.host import KdnetHost
from cartd.kd.kdnet.keys import parse_key

log = logging.getLogger(__name__)

# A target pokes every 3 s; say "key needed" or "key mismatch" about one peer at most this often.
REPORT_INTERVAL = 60.0
RETRY_LISTEN_SECONDS = 10.0

WorkerFactory = Callable[[str, str], TargetWorker]


class _KeylessListener(asyncio.DatagramProtocol):
    """Listens on a port without a key: notices KDNET pokes, answers nothing."""

    def __init__(self, on_poke: Callable[[tuple[str, int]], None]) -> None:
        self._on_poke = on_poke
        # Resolved once the socket is really closed: closing a transport only schedules it,
        # and the keyed driver that follows needs the port free.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if peek_channel(data) is Channel.CONTROL:
            self._on_poke((str(addr[0]), int(addr[1])))


class KdnetLink:
    def __init__(
        self,
        port: int,
        config: Config,
        *,
        key: str | None,
        publish: Callable[[ev.Event], None],
        worker_for: WorkerFactory,
        on_traffic: Callable[[str, bytes, bool], None],
        interface: tuple[str, str] | None = None,
    ) -> None:
        """`interface` is (name, address) for a listener on one network interface's address
        (`[kdnet] interfaces`, a USB-Ethernet adapter): its link and target are named after
        the interface, "kdnet:usb0:50000" and "kdnet-usb0-50000"."""
        self.port = port
        if interface is None:
            self.link = f"kdnet:{port}"
            self.target_id = f"kdnet-{port}"
            self._interface = config.kdnet.interface
        else:
            self.link = f"kdnet:{interface[0]}:{port}"
            self.target_id = f"kdnet-{interface[0]}-{port}"
            self._interface = interface[1]
        self._key = key
        self._publish = publish
        self._worker_for = worker_for
        self._on_traffic = on_traffic
        self._break_on_connect = config.policy_for(self.target_id).break_on_connect
        self._key_changed = asyncio.Event()
        self._reported: dict[tuple[str, tuple[str, int]], float] = {}
        self.state = "waiting for a key" if key is None else "waiting for the target"
        self.device = f"udp:{self._interface}:{port}"
        # "ip:port" of the target of the latest KDNET session: a target that reboots (or a
        # new one) starts another session, perhaps from another address.
        self.peer: str | None = None
        self._driver: KdnetDriver | None = None
        self._serving: asyncio.Task[None] | None = None
        # Set once the first try to listen has succeeded or failed (READY waits for it).
        self.settled = asyncio.Event()

    def set_key(self, key: str) -> None:
        """A key given at run time: the port is served with it from now on."""
        self._key = key
        self._key_changed.set()

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except OSError as error:  # the port is taken, or the interface has no such address
                self.settled.set()
                self.state = f"cannot listen: {error.strerror}"
                self._publish(
                    ev.LinkProbed(
                        link=self.link,
                        device=self.device,
                        result="error",
                        detail=f"cannot listen on {self.device}: {error.strerror}; trying again "
                        f"in {RETRY_LISTEN_SECONDS:g} s",
                    )
                )
                await asyncio.sleep(RETRY_LISTEN_SECONDS)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._key_changed.clear()
            key = self._key
            if key is None:
                self.state = "waiting for a key"
                transport, listener = await loop.create_datagram_endpoint(
                    lambda: _KeylessListener(self._key_needed),
                    local_addr=(self._interface, self.port),
                )
                self.settled.set()
                try:
                    await self._key_changed.wait()
                finally:
                    transport.close()
                    await listener.closed
                continue
            await self._serve(key)

    async def _serve(self, key: str) -> None:
        self.state = "waiting for the target"
        self.peer = None  # a new key, a new host: no session until the target's next poke
        driver = KdnetDriver(
            KdnetHost(parse_key(key)),
            on_session=self._session,
            on_drop=self._dropped,
            on_traffic=lambda packet, inbound: self._on_traffic(self.target_id, packet, inbound),
        )
        self._driver = driver
        self._serving = None
        await driver.open((self._interface, self.port))
        self.settled.set()
        try:
            await self._key_changed.wait()  # serve until the key is replaced (or cancelled)
        finally:
            driver.close()
            if self._serving is not None:
                self._serving.cancel()
            await driver.wait_closed()

    def _session(self, event: SessionStarted) -> None:
        peer = self.peer = f"{event.peer[0]}:{event.peer[1]}"
        self.state = f"connected to {peer} (KDNET protocol {event.version})"
        driver = self._driver
        if self._serving is None and driver is not None:
            # The worker (and with it the session's records) first, so link_up is journaled.
            worker = self._worker_for(self.target_id, self.link)
            self._serving = asyncio.create_task(worker.serve(driver))
        self._publish(ev.LinkUp(link=self.link, device=f"udp:{peer}"))
        if driver is not None and self._break_on_connect:
            # policy break_on_connect: stop the target so cartd learns who it is; the session
            # continues it once identity is read.
            driver.command(lambda now: driver.host.break_in(now))

    def _dropped(self, event: DatagramDropped) -> None:
        driver = self._driver
        if event.reason is DropReason.AUTHENTICATION_FAILED and (
            driver is not None and not driver.kdnet.connected
        ):
            self._report(
                "key_mismatch",
                event.peer,
                f"a KDNET target at {event.peer[0]}:{event.peer[1]} pokes port "
                f"{self.port} with another key: check `bcdedit /dbgsettings` on it",
            )

    def _key_needed(self, peer: tuple[str, int]) -> None:
        self._report(
            "key_needed",
            peer,
            f"KDNET target at {peer[0]}:{peer[1]} on port {self.port}: key needed "
            f"(`cartd key {self.port} KEY`, the key `bcdedit /dbgsettings` shows)",
        )

    def _report(self, result: str, peer: tuple[str, int], detail: str) -> None:
        now = time.monotonic()
        last = self._reported.get((result, peer))
        if last is not None and now - last < REPORT_INTERVAL:
            return
        self._reported[(result, peer)] = now
        self.state = result.replace("_", " ")
        self._publish(
            ev.LinkProbed(
                link=self.link, device=f"udp:{peer[0]}:{peer[1]}", result=result, detail=detail
            )
        )
