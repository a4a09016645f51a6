"""Serve a `SimulatedTarget` on a real byte stream with asyncio.

The target lives as long as the server; streams come and go like a cable being plugged in and
out (a debugger detaching from the UNIX socket, a host closing the pty). While no stream is
attached, what the target sends is lost, exactly as on an unplugged null-modem cable.

With a baud rate, both directions are paced like a UART: the target sees host bytes only as
fast as they could have crossed the wire, and its own bytes trickle out at baud/10 a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from cartd.links.streams import ByteStream, LinkClosed, SocketStream
from cartd.sim.line import UartPacer
from cartd.sim.target import SimulatedTarget

# Paced writes leave in slices this big, so a long packet trickles out instead of arriving at
# once; at 115200 baud 64 bytes take 5.6 ms.
PACED_SLICE = 64


class SimServer:
    def __init__(
        self,
        target: SimulatedTarget,
        *,
        baud: int | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self._baud = baud
        self._to_host = UartPacer(baud) if baud else None
        self._from_host = UartPacer(baud) if baud else None
        self._on_notice = on_notice
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._stream: ByteStream | None = None
        self._outgoing: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self._writer = self._loop.create_task(self._write_loop())

    def start(self) -> None:
        self.target.start(self._loop.time())
        self._service()

    def close(self) -> None:
        self._writer.cancel()
        if self._timer is not None:
            self._timer.cancel()

    def attach(self, stream: ByteStream) -> asyncio.Task[None]:
        """Plug `stream` in: the target's bytes go to it from now on, and a task feeds the
        target from it until it closes. The target keeps running after that."""
        self._stream = stream
        return self._loop.create_task(self._read_loop(stream))

    async def _read_loop(self, stream: ByteStream) -> None:
        try:
            while True:
                data = await stream.read()
                if self._from_host is not None:
                    arrival = self._from_host.finish_time(len(data), self._loop.time())
                    await asyncio.sleep(max(0.0, arrival - self._loop.time()))
                self.target.receive_data(data, self._loop.time())
                self._service()
        except LinkClosed:
            pass
        finally:
            if self._stream is stream:
                self._stream = None
            stream.close()

    def _service(self) -> None:
        data = self.target.data_to_send()
        if data:
            self._outgoing.put_nowait((data, self._loop.time()))
        while self.target.notices:
            notice = self.target.notices.popleft()
            if self._on_notice is not None:
                self._on_notice(notice)
        deadline = self.target.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.target.handle_timer(self._loop.time())
        self._service()

    async def _write_loop(self) -> None:
        while True:
            data, queued_at = await self._outgoing.get()
            size = PACED_SLICE if self._to_host is not None else len(data)
            for start in range(0, len(data), size):
                piece = data[start : start + size]
                if self._to_host is not None:
                    # Each piece is delivered when its last byte would have arrived. The times
                    # chain from when the bytes were queued, so late wake-ups do not add up.
                    done = self._to_host.finish_time(len(piece), queued_at)
                    await asyncio.sleep(max(0.0, done - self._loop.time()))
                stream = self._stream
                if stream is None:
                    continue  # unplugged: the bytes are lost
                with contextlib.suppress(LinkClosed):
                    stream.write(piece)


async def serve_unix_socket(server: SimServer, path: str) -> asyncio.AbstractServer:
    """Listen on a UNIX stream socket (what `ntoseye -b kd --connect PATH` opens); one
    debugger at a time, a newcomer replaces the previous connection."""
    current: list[asyncio.Task[object]] = []

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for previous in current:
            previous.cancel()
        current.clear()
        task = asyncio.current_task()
        assert task is not None
        current.append(task)
        await server.attach(SocketStream(reader, writer, name=path))

    return await asyncio.start_unix_server(connected, path=path)
