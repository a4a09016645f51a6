"""What the two KDNET roles share: the codec, the event queue, the outgoing datagrams.

The surface follows h11 and aioquic: `receive_datagram(data, addr, now)` feeds one datagram,
`next_event()` returns what it meant, `datagrams_to_send()` drains (datagram, address) pairs,
`get_timer()` / `handle_timer(now)` drive the deadlines. Nothing here reads a clock or a socket.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

from cartd.kd.errors import KdUsageError
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import DropReason
from cartd.kd.kdnet.events import DatagramDropped, KdnetEvent
from cartd.kd.kdnet.handshake import PeerAddress

RandomBytes = Callable[[int], bytes]
"""Where nonces come from: os.urandom by default; tests pass a fixed source to reproduce a
capture byte for byte."""


class KdnetEndpoint:
    """Base of `KdnetHost` and `KdnetTarget`."""

    def __init__(self, codec: DatagramCodec, random_bytes: RandomBytes = os.urandom) -> None:
        self._codec = codec
        self._random_bytes = random_bytes
        self._events: deque[KdnetEvent] = deque()
        self._out: list[tuple[bytes, PeerAddress]] = []

    @property
    def drop_counters(self) -> dict[DropReason, int]:
        """Every datagram dropped so far, by reason (the codec's checks and the role's)."""
        return self._codec.drop_counters

    @property
    def version(self) -> int | None:
        """The KDNET protocol version we send with (a host learns it from the first poke)."""
        return self._codec.version

    def next_event(self) -> KdnetEvent | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, PeerAddress]]:
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ helpers for the roles

    def _random(self, size: int) -> bytes:
        data = self._random_bytes(size)
        if len(data) != size:
            raise KdUsageError(f"the random source gave {len(data)} bytes, not {size}")
        return data

    def _dropped(self, reason: DropReason, addr: PeerAddress, size: int) -> None:
        """Report a drop the codec already counted."""
        self._events.append(DatagramDropped(reason=reason, peer=addr, size=size))

    def _drop(self, reason: DropReason, addr: PeerAddress, size: int) -> None:
        """Count and report a drop decided by the role."""
        self._codec.count_drop(reason)
        self._dropped(reason, addr, size)
