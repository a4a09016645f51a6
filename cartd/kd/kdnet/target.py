"""The TARGET side of KDNET, as kdnet.dll behaves: poke on a timer, accept a response, carry data.

This is what the simulator speaks; tests pair it with `KdnetHost` in memory.

Theory of operation
-------------------
Numbered rules (kdnet.md sections 3.1-3.4 and 4):

1. Pokes go out every `poke_interval` (3 s) in every state, connected or not, to the connected
   host if there is one, else to the configured host. The first goes `first_poke_delay` after
   boot (by default one interval, as in capture A whose first poke says uptime 3).
2. A poke's sequence number is the target's seconds counter. In capture A it grows by exactly 3
   per poke although the pokes are 3.016-3.018 s apart, so kdnet.dll advances it by the poke
   interval rather than reading a clock; `uptime` does the same.
3. The nonce is 32 random bytes per boot; bytes 0-1 are a little-endian counter, +1 per poke.
   A poke's connected-host field is the host we hold a session with, else ``::ffff:0.0.0.0``
   port 0.
4. A response is accepted if it echoes one of the last `RECENT_POKES` pokes' nonces and that
   poke has not been answered yet (NTOS: "any response that echoes a recent poke"; which window
   kdnet.dll uses is UNCONFIRMED). Otherwise it is `STALE_RESPONSE` or `REPLAY`. Accepting one
   installs the data key, which restarts the data sequences, and makes its sender the
   connected host: a later response re-keys, from the same host (`ROLLOVER`) or another
   (`TAKEOVER`; MS-KD: the target "will drop any existing connections").
5. An empty control datagram from a host is a poke request: a poke goes to its sender at once,
   with the counter as it stands (section 3.3).
6. Data-channel datagrams are accepted only from the connected host, with the codec's replay
   rule. `reboot(now)` forgets the session and the nonce, as a real reboot does.
"""

from __future__ import annotations

import os

from cartd.kd.errors import KdUsageError
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import (
    KDNET_VERSION_5,
    Channel,
    Direction,
    DropReason,
    KdnetDatagram,
    KdnetDecodeError,
    peek_channel,
)
from cartd.kd.kdnet.endpoint import KdnetEndpoint, RandomBytes
from cartd.kd.kdnet.events import DataReceived, SessionReason, SessionStarted
from cartd.kd.kdnet.handshake import (
    EMPTY_ADDRESS,
    NONCE_SIZE,
    HandshakeKind,
    PeerAddress,
    Poke,
    PokeAddress,
    handshake_kind,
    next_nonce,
    pull_response,
    push_poke,
)
from cartd.kd.kdnet.keys import KdnetKey, derive_data_key

# MS-KD: "it will send OFFER packets to the host every three seconds"; both captures show
# 3.016-3.018 s (section 4).
DEFAULT_POKE_INTERVAL = 3.0
# Rule 4: responses to any of the last four pokes (about 12 s) are accepted.
RECENT_POKES = 4


class KdnetTarget(KdnetEndpoint):
    """KDNET TARGET role: one debuggee and the host it talks to."""

    def __init__(
        self,
        key: KdnetKey,
        *,
        address: PeerAddress,
        host: PeerAddress,
        now: float,
        version: int = KDNET_VERSION_5,
        poke_interval: float = DEFAULT_POKE_INTERVAL,
        first_poke_delay: float | None = None,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        """`address` is the target's own (ip, port) and `host` the configured host (bcdedit
        hostip and port); both go into every poke. `now` is the time of boot."""
        if poke_interval <= 0:
            raise KdUsageError("the poke interval must be positive")
        super().__init__(
            DatagramCodec(key, local_direction=Direction.TARGET_TO_HOST, version=version),
            random_bytes,
        )
        self._key = key
        self._own_version = version
        self._address = PokeAddress.from_peer(address)
        self._configured_host = host
        self._configured_host_field = PokeAddress.from_peer(host)
        self._poke_interval = poke_interval
        self._first_poke_delay = poke_interval if first_poke_delay is None else first_poke_delay
        self._boot(now)

    def _boot(self, now: float) -> None:
        self._nonce = self._random(NONCE_SIZE)
        self._uptime = 0.0
        self._next_poke = now + self._first_poke_delay
        self._connected: PeerAddress | None = None
        # Nonces of the recent pokes (oldest first) -> whether a response was accepted.
        self._recent_pokes: dict[bytes, bool] = {}
        self._codec.forget_data_key()

    def reboot(self, now: float) -> None:
        """Start again as a freshly booted target: new nonce, no session, uptime 0. Datagrams
        not yet sent are lost with the old boot."""
        self._out.clear()
        self._boot(now)

    # ------------------------------------------------------------------ state

    @property
    def connected_host(self) -> PeerAddress | None:
        """The host whose response we accepted last, or None."""
        return self._connected

    @property
    def connected(self) -> bool:
        return self._connected is not None

    @property
    def uptime(self) -> int:
        """The seconds counter the next timed poke will carry, less one interval (rule 2)."""
        return int(self._uptime)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float:
        return self._next_poke

    def handle_timer(self, now: float) -> None:
        if now < self._next_poke:
            return
        self._uptime += self._poke_interval
        self._send_poke(self._connected or self._configured_host)
        self._next_poke = now + self._poke_interval

    def _send_poke(self, destination: PeerAddress) -> None:
        connected = (
            PokeAddress.from_peer(self._connected) if self._connected is not None else EMPTY_ADDRESS
        )
        poke = Poke(
            nonce=self._nonce,
            target=self._address,
            configured_host=self._configured_host_field,
            connected_host=connected,
        )
        datagram = self._codec.encode_control(push_poke(poke), sequence=int(self._uptime))
        self._out.append((datagram, destination))
        self._recent_pokes[self._nonce] = False
        while len(self._recent_pokes) > RECENT_POKES:
            del self._recent_pokes[next(iter(self._recent_pokes))]
        self._nonce = next_nonce(self._nonce)

    # ------------------------------------------------------------------ input

    def receive_datagram(self, data: bytes, addr: PeerAddress, now: float) -> None:
        """One UDP payload received from `addr`. Never raises on its content."""
        if (
            self._connected is not None
            and addr != self._connected
            and peek_channel(data) is Channel.DATA
        ):
            self._drop(DropReason.WRONG_PEER, addr, len(data))
            return
        decoded = self._codec.decode(data)
        if isinstance(decoded, DropReason):
            self._dropped(decoded, addr, len(data))
        elif decoded.channel is Channel.DATA:
            self._events.append(DataReceived(body=decoded.body, sequence=decoded.sequence))
        elif not decoded.body:
            self._send_poke(addr)  # rule 5
        elif handshake_kind(decoded.body) is HandshakeKind.RESPONSE:
            self._handle_response(decoded, addr, len(data))
        else:
            self._drop(DropReason.BAD_HANDSHAKE, addr, len(data))

    def _handle_response(self, datagram: KdnetDatagram, addr: PeerAddress, size: int) -> None:
        try:
            response = pull_response(datagram.body)
        except KdnetDecodeError as exc:
            self._drop(exc.reason, addr, size)
            return
        answered = self._recent_pokes.get(response.client_nonce)
        if answered is None:
            self._drop(DropReason.STALE_RESPONSE, addr, size)
            return
        if answered:
            self._drop(DropReason.REPLAY, addr, size)
            return
        self._recent_pokes[response.client_nonce] = True
        if self._connected is None:
            reason = SessionReason.FIRST_CONTACT
        elif self._connected == addr:
            reason = SessionReason.ROLLOVER
        else:
            reason = SessionReason.TAKEOVER
        self._codec.install_data_key(derive_data_key(self._key, datagram.body))
        self._connected = addr
        self._events.append(SessionStarted(peer=addr, version=self._own_version, reason=reason))

    # ------------------------------------------------------------------ output

    def send_data(self, body: bytes) -> None:
        """Queue one data-channel datagram for the connected host."""
        if self._connected is None:
            raise KdUsageError("no KDNET session yet: no response has been accepted")
        self._out.append((self._codec.encode_data(body), self._connected))
