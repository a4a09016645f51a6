"""Drives a sans-I/O `KdHost` with asyncio: the daemon's KD connection.

`KdDriver` is what every link shares: request tokens become awaitable results, every other
event goes to `events`, and one re-armed `call_at` handle serves the core's deadline
(aioquic's pattern). Subclasses move the bytes: `HostDriver` over a serial byte stream here,
`KdnetDriver` (cartd.daemon.kdnet_driver) over encrypted UDP datagrams.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.kd.debugger_data import DebuggerData
from cartd.kd.dump_plans import DumpFacts, TriageConfig, TriageSelection
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


class Timed(Protocol):
    """A sans-I/O protocol object with a deadline (a transport's own protocol, e.g. KDNET's
    handshake and crypto layer under the KD core)."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class KdDriver(ABC):
    def __init__(self, host: KdHost, *, transport: Timed | None = None) -> None:
        self.host = host
        self._transport = transport
        self.events: asyncio.Queue[HostEvent] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[object]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()

    def now(self) -> float:
        return self._loop.time()

    @abstractmethod
    def _send_output(self) -> None:
        """Put whatever the core (and the transport's own protocol) wants sent on the wire."""

    def _shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._fail_waiting("the link closed")
        self.closed.set()

    def _fail_waiting(self, reason: str) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(KdRequestError(reason, None))
        self._waiting.clear()

    def _service(self) -> None:
        """After any call into the core: send its output, route its events, re-arm the timer."""
        self._send_output()
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
        transport = self._transport.get_timer() if self._transport is not None else None
        deadlines = [d for d in (self.host.get_timer(), transport) if d is not None]
        deadline = min(deadlines) if deadlines else None
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.now()
        if self._transport is not None:
            self._transport.handle_timer(now)
        self.host.handle_timer(now)
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

    async def dump_facts(self, known_bugcheck: BugcheckInfo | None) -> DumpFacts:
        result = await self.call(
            lambda now: self.host.dump_facts(known_bugcheck=known_bugcheck, now=now)
        )
        assert isinstance(result, DumpFacts)
        return result

    async def triage_pages(self, dump: DumpFacts, config: TriageConfig) -> TriageSelection:
        result = await self.call(lambda now: self.host.triage_pages(dump, config, now=now))
        assert isinstance(result, TriageSelection)
        return result

    async def resume(self, status: int | None = None) -> int:
        result = await self.call(lambda now: self.host.resume(status=status, now=now))
        assert isinstance(result, int)
        return result

    async def next_event(self, timeout: float | None = None) -> HostEvent:
        return await asyncio.wait_for(self.events.get(), timeout)


class HostDriver(KdDriver):
    """A KD connection over a serial byte stream (a tty, a pty, a socket)."""

    def __init__(
        self,
        stream: ByteStream,
        host: KdHost,
        *,
        on_traffic: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        """`on_traffic(data, from_target)` sees every byte in both directions (for capture)."""
        super().__init__(host)
        self.stream = stream
        self._on_traffic = on_traffic

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

    def _send_output(self) -> None:
        data = self.host.data_to_send()
        if data:
            if self._on_traffic is not None:
                self._on_traffic(data, False)
            with contextlib.suppress(LinkClosed):
                self.stream.write(data)
