"""Serve a `SimulatedTarget` over KDNET: encrypted UDP, as a Windows target with
`bcdedit /dbgsettings net hostip:... port:... key:...` does.

The KDNET layer (`cartd.kd.kdnet.target.KdnetTarget`) pokes the configured host every three
seconds until one answers, then carries the simulated kernel's KD packets, one per datagram.
Every new session (a handshake) starts the KD packet ids again, and the target's first data
datagram is the 12-byte UNUSED packet (kdnet.md 3.4). Until a host has answered, what the kernel
sends is lost, as it is on a real network with no debugger.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

from cartd.kd.kdnet.events import DataReceived, SessionStarted
from cartd.kd.kdnet.handshake import PeerAddress
from cartd.kd.kdnet.keys import KdnetKey
from cartd.kd.kdnet.target import KdnetTarget
from cartd.sim.target import SimulatedTarget


def unused_packet(host: PeerAddress) -> bytes:
    """The target's first data datagram: 8 zero bytes and the host's IPv4 address, in the byte
    order capture A shows (`01 02 a8 c0` for 192.168.2.1)."""
    address = ipaddress.ip_address(host[0])
    packed = address.packed if address.version == 4 else bytes(4)
    return bytes(8) + packed[::-1]


def local_address_towards(host: PeerAddress) -> str:
    """The local IPv4 address that datagrams to `host` leave from, or 0.0.0.0 if there is no
    route. connect() on a UDP socket only looks the route up: nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(host)
        except OSError:
            return "0.0.0.0"
        address: str = probe.getsockname()[0]
        return address


class KdnetSimServer(asyncio.DatagramProtocol):
    def __init__(
        self,
        target: SimulatedTarget,
        key: KdnetKey,
        *,
        host: PeerAddress,
        on_notice: Callable[[str], None] | None = None,
        poke_interval: float = 3.0,
    ) -> None:
        """`host` is where the target sends its pokes (bcdedit's hostip and port)."""
        self.target = target
        self._key = key
        self._host = host
        self._on_notice = on_notice
        self._poke_interval = poke_interval
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.kdnet: KdnetTarget | None = None
        self._boots = 0

    async def start(self, bind: PeerAddress = ("127.0.0.1", 0)) -> PeerAddress:
        """Open the socket and boot the target; returns the address it sends from."""
        transport, _ = await self._loop.create_datagram_endpoint(lambda: self, local_addr=bind)
        self._transport = transport
        address: PeerAddress = transport.get_extra_info("sockname")[:2]
        if ipaddress.ip_address(address[0]).is_unspecified:
            # Bound to every interface: a poke still names the target's own address (kdnet.md
            # 3.1), the one the route to the host leaves from.
            address = (local_address_towards(self._host), address[1])
        now = self._loop.time()
        self.kdnet = KdnetTarget(
            self._key,
            address=address,
            host=self._host,
            now=now,
            poke_interval=self._poke_interval,
            first_poke_delay=0.0,
        )
        self.target.start(now)
        self._service()
        return address

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        kdnet = self.kdnet
        if kdnet is None:
            return
        now = self._loop.time()
        kdnet.receive_datagram(data, (str(addr[0]), int(addr[1])), now)
        while (event := kdnet.next_event()) is not None:
            if isinstance(event, SessionStarted):
                self._notice(
                    f"KDNET session with {event.peer[0]}:{event.peer[1]} "
                    f"({event.reason.value}, protocol {event.version})"
                )
                kdnet.send_data(unused_packet(event.peer))
                self.target.new_kdnet_session(now)
            elif isinstance(event, DataReceived):
                self.target.receive_datagram(event.body, now)
        self._service()

    def _notice(self, text: str) -> None:
        if self._on_notice is not None:
            self._on_notice(text)

    def _service(self) -> None:
        kdnet = self.kdnet
        transport = self._transport
        if kdnet is None or transport is None:
            return
        if self.target.boots != self._boots:
            # The machine rebooted: so does its KDNET layer (new nonce, no session), and the
            # host will see a poke without a connected host.
            if self._boots:
                kdnet.reboot(self._loop.time())
            self._boots = self.target.boots
        for body in self.target.datagrams_to_send():
            if kdnet.connected:  # no session yet: lost, as with no debugger on the network
                kdnet.send_data(body)
        for datagram, addr in kdnet.datagrams_to_send():
            transport.sendto(datagram, addr)
        while self.target.notices:
            self._notice(self.target.notices.popleft())
        deadlines = [d for d in (self.target.get_timer(), kdnet.get_timer()) if d is not None]
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(min(deadlines), self._on_timer) if deadlines else None

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        if self.kdnet is not None:
            self.kdnet.handle_timer(now)
        self.target.handle_timer(now)
        self._service()
