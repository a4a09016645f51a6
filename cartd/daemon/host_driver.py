"""Drives a sans-I/O `KdHost` over a byte stream with asyncio: the daemon's KD connection.

One task reads the stream and feeds the core; one re-armed `call_at` handle serves the core's
single deadline (aioquic's pattern); bytes the core wants sent are written after every call.
Request tokens become awaitable results; every other event goes to `events`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from cartd.kd.debugger_data import DebuggerData
from cartd.kd.events import (
    HostEvent,
    MemoryRead,
    MemoryWritten,
    RequestCompleted,
    RequestFailed,
)
from cartd.kd.host import KdHost
from cartd.kd.manipulate import GetVersion
from cartd.links.streams import ByteStream, LinkClosed


class KdRequestError(Exception):
    """A request failed: the target refused it or never answered."""

    def __init__(self, reason: str, status: int | None) -> None:
        super().__init__(reason)
        self.status = status


class HostDriver:
    def __init__(
        self,
        stream: ByteStream,
        host: KdHost,
        *,
        on_traffic: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        """`on_traffic(data, from_target)` sees every byte in both directions (for capture)."""
        self.stream = stream
        self.host = host
        self.events: asyncio.Queue[HostEvent] = asyncio.Queue()
        self._on_traffic = on_traffic
        self._waiting: dict[int, asyncio.Future[object]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()

    def now(self) -> float:
        return self._loop.time()

    async def run(self) -> None:
        """Read until the link closes; then fail whatever waits."""
        try:
            while True:
                data = await self.stream.read()
                if self._on_traffic is not None:
                    self._on_traffic(data, True)
                self.host.receive_data(data, self.now())
                self._service()
        except LinkClosed:
            pass
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(KdRequestError("the link closed", None))
        self._waiting.clear()
        self.closed.set()

    def _service(self) -> None:
        """After any call into the core: send its bytes, route its events, re-arm the timer."""
        data = self.host.data_to_send()
        if data:
            if self._on_traffic is not None:
                self._on_traffic(data, False)
            with contextlib.suppress(LinkClosed):
                self.stream.write(data)
        while (event := self.host.next_event()) is not None:
            if isinstance(event, RequestCompleted | RequestFailed):
                self._settle(event)
            else:
                self.events.put_nowait(event)
        self._rearm()

    def _settle(self, event: RequestCompleted | RequestFailed) -> None:
        future = self._waiting.pop(event.token, None)
        if future is None or future.done():
            return
        if isinstance(event, RequestCompleted):
            future.set_result(event.result)
        else:
            future.set_exception(KdRequestError(event.reason, event.status))

    def _rearm(self) -> None:
        deadline = self.host.get_timer()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.host.handle_timer(self.now())
        self._service()

    # ------------------------------------------------------------------ commands

    def call(self, submit: Callable[[float], int]) -> asyncio.Future[object]:
        """Submit a request (`submit(now)` returns its token) and get a future of its result."""
        token = submit(self.now())
        future: asyncio.Future[object] = self._loop.create_future()
        self._waiting[token] = future
        self._service()
        return future

    def command(self, action: Callable[[float], None]) -> None:
        """Run a core command that has no result (connect, break-in, answer a prompt)."""
        action(self.now())
        self._service()

    async def get_version(self) -> GetVersion:
        result = await self.call(lambda now: self.host.get_version(now=now))
        assert isinstance(result, GetVersion)
        return result

    async def read_virtual(self, address: int, size: int) -> MemoryRead:
        result = await self.call(lambda now: self.host.read_virtual_memory(address, size, now=now))
        assert isinstance(result, MemoryRead)
        return result

    async def read_physical(self, address: int, size: int) -> MemoryRead:
        result = await self.call(lambda now: self.host.read_physical_memory(address, size, now=now))
        assert isinstance(result, MemoryRead)
        return result

    async def write_virtual(self, address: int, data: bytes) -> MemoryWritten:
        result = await self.call(lambda now: self.host.write_virtual_memory(address, data, now=now))
        assert isinstance(result, MemoryWritten)
        return result

    async def get_debugger_data(self) -> DebuggerData | None:
        result = await self.call(lambda now: self.host.get_debugger_data(now=now))
        assert result is None or isinstance(result, DebuggerData)
        return result

    async def get_context(self, processor: int | None = None) -> bytes:
        result = await self.call(lambda now: self.host.get_context(processor=processor, now=now))
        assert isinstance(result, bytes)
        return result

    async def resume(self, status: int | None = None) -> int:
        result = await self.call(lambda now: self.host.resume(status=status, now=now))
        assert isinstance(result, int)
        return result

    async def next_event(self, timeout: float | None = None) -> HostEvent:
        return await asyncio.wait_for(self.events.get(), timeout)
