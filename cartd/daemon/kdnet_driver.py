"""A KD connection over KDNET: UDP datagrams, the KDNET layer, and the KD core in its KDNET
dialect (`cartd.kd.dialect.KDNET`).

The socket delivers datagrams to `KdnetHost`, which checks, decrypts and handshakes; the bodies
of data datagrams go to `KdHost`. A new session with the same target (it rebooted: kdnet.md 3.3)
starts the KD packet ids again, so the KD core is replaced, what was waiting fails, and the
session layer is told the target rebooted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cartd.capture.wire import ipv4_udp_packet
from cartd.daemon.host_driver import KdDriver
from cartd.kd import events as kd
from cartd.kd.dialect import KDNET
from cartd.kd.host import KdHost
from cartd.kd.kdnet.events import DatagramDropped, DataReceived, SessionStarted
from cartd.kd.kdnet.handshake import PeerAddress
from cartd.kd.kdnet.host import KdnetHost

# kdnet.md section 4: WinDbg gives up on a missing KDNET reply after about half a second.
KDNET_ACK_TIMEOUT = 0.5


def new_kd_host() -> KdHost:
    return KdHost(dialect=KDNET, ack_timeout=KDNET_ACK_TIMEOUT, reply_timeout=2.0, max_retries=24)


class KdnetDriver(KdDriver, asyncio.DatagramProtocol):
    def __init__(
        self,
        kdnet: KdnetHost,
        *,
        on_session: Callable[[SessionStarted], None] | None = None,
        on_drop: Callable[[DatagramDropped], None] | None = None,
        on_traffic: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        """`on_traffic(packet, from_target)` sees every datagram both ways, as the IPv4 packet
        that carried it (for the wire capture)."""
        super().__init__(new_kd_host(), transport=kdnet)
        self.kdnet = kdnet
        self._on_session = on_session
        self._on_drop = on_drop
        self._on_traffic = on_traffic
        self._local: PeerAddress = ("0.0.0.0", 0)
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_closed = asyncio.Event()
        self._sessions = 0

    async def open(self, bind: PeerAddress) -> None:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: self, local_addr=bind
        )
        self._udp = transport
        name = transport.get_extra_info("sockname")
        self._local = (str(name[0]), int(name[1]))

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        self._shutdown()

    async def wait_closed(self) -> None:
        """Until the socket is really closed (close() only schedules it): a listener that
        takes over the port needs it free."""
        if self._udp is not None:
            await self._udp_closed.wait()

    def connection_lost(self, exc: Exception | None) -> None:
        self._udp_closed.set()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        now = self.now()
        peer = (str(addr[0]), int(addr[1]))
        if self._on_traffic is not None:
            self._on_traffic(ipv4_udp_packet(data, peer, self._local), True)
        self.kdnet.receive_datagram(data, peer, now)
        while (event := self.kdnet.next_event()) is not None:
            if isinstance(event, SessionStarted):
                self._session_started(event, now)
            elif isinstance(event, DataReceived):
                self.host.receive_datagram(event.body, now)
            elif isinstance(event, DatagramDropped):
                self.events.put_nowait(kd.ProtocolNoise(kind=f"kdnet_{event.reason}", count=1))
                if self._on_drop is not None:
                    self._on_drop(event)
        self._service()

    def _session_started(self, event: SessionStarted, now: float) -> None:
        self._sessions += 1
        if self._sessions > 1:
            # New KD ids on both sides: a new core; what waited on the old one is gone.
            self._fail_waiting("the KDNET session started again")
            self.host = new_kd_host()
            self.events.put_nowait(kd.TargetRebooted())
        self.host.connect(now)
        if self._on_session is not None:
            self._on_session(event)

    def _send_output(self) -> None:
        if self.kdnet.connected:
            for body in self.host.datagrams_to_send():
                self.kdnet.send_data(body)
        if self._udp is not None:
            for datagram, addr in self.kdnet.datagrams_to_send():
                if self._on_traffic is not None:
                    self._on_traffic(ipv4_udp_packet(datagram, self._local, addr), False)
                self._udp.sendto(datagram, addr)
