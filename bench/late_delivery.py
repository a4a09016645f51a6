"""Simulated round-trip delay for the KDNET benches: datagrams handed on `delay` seconds late."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

Address = tuple[str | int, ...]


class LateDelivery:
    """Hands each datagram to `deliver` `delay` seconds after it arrived, in arrival order. One
    FIFO and one timer, because two call_later handles due at the same instant may run in
    either order, and a reordered KDNET datagram is dropped as a replay."""

    def __init__(self, delay: float, deliver: Callable[[bytes, Address], None]) -> None:
        self._delay = delay
        self._deliver_now = deliver
        self._queue: deque[tuple[float, bytes, Address]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        # How late the event loop delivered, beyond `delay`: its timers wake on whole
        # milliseconds (epoll), which a 1 ms delay feels.
        self.lateness = 0.0
        self.delivered = 0

    def receive(self, data: bytes, addr: Address) -> None:
        if self._delay <= 0:
            self._deliver_now(data, addr)
            return
        loop = asyncio.get_running_loop()
        self._queue.append((loop.time() + self._delay, data, addr))
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0][0], self._deliver)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        while self._queue and self._queue[0][0] <= loop.time():
            due, data, addr = self._queue.popleft()
            self.lateness += loop.time() - due
            self.delivered += 1
            self._deliver_now(data, addr)
        if self._queue:
            self._timer = loop.call_at(self._queue[0][0], self._deliver)
