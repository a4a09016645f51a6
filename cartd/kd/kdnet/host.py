"""The HOST side of KDNET: answer pokes, hold one session, carry data-channel datagrams.

Theory of operation
-------------------
A KDNET host listens on one UDP port for one target. The target pokes every 3 s in every state;
the host decides from each poke whether to answer, and an answer (the response) creates the
data key. Everything else the host sends is data-channel datagrams under that key.

Numbered rules (kdnet.md section 3.3 and checklist item 3, UNCONFIRMED but matching both
captures and NTOS):

1. Only authenticated pokes count (the codec's checks). A control body that is not a 344-byte
   poke is `BAD_HANDSHAKE`.
2. While a session is live, a poke from another IP is `OTHER_TARGET` and ignored: two targets
   may share a key, and a second one must not take the session over. The port may differ (a
   restarted target may pick a new source port).
3. Replay: a poke whose nonce counter is not above the highest seen for its boot, or that
   belongs to an earlier boot than the latest, is `REPLAY`. The nonce, not the sequence number,
   decides: the sequence is the target's seconds counter, which restarts on reboot (section
   3.1). Captured traffic (capture B has every frame twice) therefore cannot roll a session
   over.
4. A poke whose connected-host field is set, from the session's target, is a keepalive: it is
   not answered (answering would re-key a working session) and is reported as
   `KeepaliveReceived`.
5. Any other poke is answered: with no session (`FIRST_CONTACT`, or `TAKEOVER` when the target
   names a connected host), or with an empty connected-host field during a session
   (`ROLLOVER`: the target rebooted or lost our response; the KD layer above starts its packet
   ids again). The response copies the poke's sequence number and version; the data key is
   SHA-256(root || response body) and replaces the old one at once.
6. Data-channel datagrams are accepted only from the session's peer (`WRONG_PEER` otherwise),
   and with the codec's replay rule.
7. Poke requests (section 3.3, NTOS, UNCONFIRMED): an empty control datagram makes kdnet.dll
   poke at once. `request_poke` sends one, or one every 0.5 s until a session starts (MS-KD's
   `target=` mode). A data datagram that arrives while there is no session comes from a target
   still bound to a session we do not hold (say cartd restarted); it gets a poke request too,
   at most one per interval, as NTOS does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
from cartd.kd.kdnet.events import (
    DataReceived,
    KeepaliveReceived,
    SessionReason,
    SessionStarted,
)
from cartd.kd.kdnet.handshake import (
    HOST_NONCE_SIZE,
    NONCE_COUNTER_MODULUS,
    HandshakeKind,
    PeerAddress,
    Poke,
    Response,
    handshake_kind,
    pull_poke,
    push_response,
)
from cartd.kd.kdnet.keys import KdnetKey, derive_data_key

# MS-KD: with target=<ip> the debugger "sends special packets to the target" about every half
# second (the Japanese page says about every 1/5 s). Rule 7.
POKE_REQUEST_INTERVAL = 0.5

# Rule 3: how many target boots the replay check remembers. Each boot is 30 bytes; a handful
# covers any realistic run of reboots between two sessions.
BOOTS_REMEMBERED = 16


def counter_is_newer(counter: int, highest: int) -> bool:
    """Serial-number comparison of 16-bit poke counters (RFC 1982): `counter` follows
    `highest` by 1..32767 pokes, so the counter may wrap (after 54 hours of 3-s pokes)."""
    return 0 < (counter - highest) % NONCE_COUNTER_MODULUS < NONCE_COUNTER_MODULUS // 2


class PokeReplayGuard:
    """Rule 3: accept each poke of a boot once, in counter order, and no poke of an old boot."""

    def __init__(self, boots_remembered: int = BOOTS_REMEMBERED) -> None:
        self._boots_remembered = boots_remembered
        # boot id -> highest counter; insertion order is boot order, the last is the latest.
        self._highest: dict[bytes, int] = {}

    def accept(self, poke: Poke) -> bool:
        boot, counter = poke.boot_id, poke.counter
        if boot in self._highest:
            latest_boot = next(reversed(self._highest))
            if boot != latest_boot or not counter_is_newer(counter, self._highest[boot]):
                return False
            self._highest[boot] = counter
            return True
        self._highest[boot] = counter
        while len(self._highest) > self._boots_remembered:
            del self._highest[next(iter(self._highest))]
        return True


@dataclass(frozen=True, slots=True)
class _Session:
    peer: PeerAddress
    version: int


class KdnetHost(KdnetEndpoint):
    """KDNET HOST role for one target (one UDP port)."""

    def __init__(
        self,
        key: KdnetKey,
        *,
        random_bytes: RandomBytes = os.urandom,
        poke_request_interval: float = POKE_REQUEST_INTERVAL,
        poke_request_version: int = KDNET_VERSION_5,
    ) -> None:
        """`poke_request_version` is the version of poke requests sent before any poke told us
        the target's (which version an older target accepts there is UNCONFIRMED)."""
        super().__init__(DatagramCodec(key, local_direction=Direction.HOST_TO_TARGET), random_bytes)
        self._key = key
        self._poke_request_interval = poke_request_interval
        self._poke_request_version = poke_request_version
        self._session: _Session | None = None
        self._pokes = PokeReplayGuard()
        # Our own control-channel sequence for poke requests (section 3.3 does not say what
        # kdnet.dll expects there; it only ever answers, so any number will do).
        self._control_sequence = 0
        self._poke_request_target: PeerAddress | None = None
        self._poke_request_deadline: float | None = None
        self._last_unsolicited_request: float | None = None

    # ------------------------------------------------------------------ state

    @property
    def peer(self) -> PeerAddress | None:
        """The target of the live session, or None before the first answered poke."""
        return self._session.peer if self._session is not None else None

    @property
    def connected(self) -> bool:
        return self._session is not None

    # ------------------------------------------------------------------ input

    def receive_datagram(self, data: bytes, addr: PeerAddress, now: float) -> None:
        """One UDP payload received from `addr`. Never raises on its content."""
        session = self._session
        if session is not None and addr != session.peer and peek_channel(data) is Channel.DATA:
            self._drop(DropReason.WRONG_PEER, addr, len(data))
            return
        decoded = self._codec.decode(data)
        if isinstance(decoded, DropReason):
            self._dropped(decoded, addr, len(data))
            if decoded is DropReason.NO_DATA_KEY and session is None:
                self._request_unsolicited_poke(addr, now)
            return
        if decoded.channel is Channel.DATA:
            self._events.append(DataReceived(body=decoded.body, sequence=decoded.sequence))
        else:
            self._handle_poke(decoded, addr, len(data))

    def _handle_poke(self, datagram: KdnetDatagram, addr: PeerAddress, size: int) -> None:
        if handshake_kind(datagram.body) is not HandshakeKind.POKE:
            self._drop(DropReason.BAD_HANDSHAKE, addr, size)
            return
        try:
            poke = pull_poke(datagram.body)
        except KdnetDecodeError as exc:
            self._drop(exc.reason, addr, size)
            return
        session = self._session
        if session is not None and addr[0] != session.peer[0]:
            self._drop(DropReason.OTHER_TARGET, addr, size)  # rule 2
            return
        if not self._pokes.accept(poke):
            self._drop(DropReason.REPLAY, addr, size)  # rule 3
            return
        if session is not None and not poke.connected_host.is_empty:
            self._events.append(KeepaliveReceived(peer=addr, uptime=datagram.sequence))  # rule 4
            return
        if session is not None:
            reason = SessionReason.ROLLOVER
        elif poke.connected_host.is_empty:
            reason = SessionReason.FIRST_CONTACT
        else:
            reason = SessionReason.TAKEOVER
        self._answer(datagram, poke, addr, reason)

    def _answer(
        self, datagram: KdnetDatagram, poke: Poke, addr: PeerAddress, reason: SessionReason
    ) -> None:
        """Rule 5: response, data key, new session."""
        body = push_response(
            Response(client_nonce=poke.nonce, host_nonce=self._random(HOST_NONCE_SIZE))
        )
        self._codec.version = datagram.version
        self._out.append((self._codec.encode_control(body, sequence=datagram.sequence), addr))
        self._codec.install_data_key(derive_data_key(self._key, body))
        self._session = _Session(peer=addr, version=datagram.version)
        self._poke_request_target = None
        self._poke_request_deadline = None
        self._events.append(SessionStarted(peer=addr, version=datagram.version, reason=reason))

    # ------------------------------------------------------------------ output

    def send_data(self, body: bytes) -> None:
        """Queue one data-channel datagram (one KD packet without its trailer, or the break-in
        byte) for the session's target."""
        if self._session is None:
            raise KdUsageError("no KDNET session yet: no poke has been answered")
        self._out.append((self._codec.encode_data(body), self._session.peer))

    def request_poke(self, addr: PeerAddress, now: float, *, repeat: bool = False) -> None:
        """Rule 7: ask the target at `addr` to poke now; with `repeat`, again every
        `poke_request_interval` until a session starts (no repeats while one is live: a target
        with a session answers with a keepalive, which rule 4 leaves unanswered)."""
        self._send_poke_request(addr)
        if repeat and self._session is None:
            self._poke_request_target = addr
            self._poke_request_deadline = now + self._poke_request_interval

    def stop_poke_requests(self) -> None:
        self._poke_request_target = None
        self._poke_request_deadline = None

    def get_timer(self) -> float | None:
        return self._poke_request_deadline

    def handle_timer(self, now: float) -> None:
        deadline = self._poke_request_deadline
        if deadline is None or now < deadline or self._poke_request_target is None:
            return
        self._send_poke_request(self._poke_request_target)
        self._poke_request_deadline = now + self._poke_request_interval

    def _request_unsolicited_poke(self, addr: PeerAddress, now: float) -> None:
        last = self._last_unsolicited_request
        if last is not None and now - last < self._poke_request_interval:
            return
        self._last_unsolicited_request = now
        self._send_poke_request(addr)

    def _send_poke_request(self, addr: PeerAddress) -> None:
        # An empty body: 8 header bytes and 8 pad bytes, 38 bytes on the wire (section 3.3).
        self._control_sequence += 1
        version = self._codec.version or self._poke_request_version
        self._out.append(
            (
                self._codec.encode_control(b"", sequence=self._control_sequence, version=version),
                addr,
            )
        )
