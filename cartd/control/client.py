"""A client of the control socket, for the CLI, the TUI and Python scripts.

    client = await ControlClient.connect(load_config().control_socket_path())
    status = await client.call("status")
    async for item in client.events(replay=20):
        ...  # an Event, or EventsDropped where the daemon left some out
    await client.close()

One task reads the connection: replies resolve the matching `call()`, events go to the current
`events()` iterator through a bounded queue (a consumer that falls behind sees `EventsDropped`
instead of making this process grow). `call_once()` is the synchronous one-shot for commands
such as `cartd status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from cartd.control.hub import DEFAULT_QUEUE_LIMIT, EventQueue
from cartd.control.protocol import (
    MAX_LINE_BYTES,
    ErrorReply,
    EventsDropped,
    JsonObject,
    LineBuffer,
    LineTooLong,
    PushedEvent,
    RequestId,
    Result,
    ServerLineError,
    decode_server_line,
    encode_request,
)
from cartd.events import Event

log = logging.getLogger(__name__)

_READ_SIZE = 65536


class ControlConnectError(Exception):
    """The daemon's control socket cannot be reached; the message says what to do."""


class DaemonNotRunning(ControlConnectError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"no daemon listening on {path}: start it with `cartd run` or `systemctl start cartd`"
        )


class ControlAccessDenied(ControlConnectError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"permission denied on {path}: only root and members of the group `cartd` may use "
            "the control socket; add yourself with `sudo usermod -aG cartd $USER`, then log in "
            "again"
        )


class ConnectionClosed(Exception):
    """The connection ended while a call or an event stream was using it."""


class ControlClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
    ) -> None:
        """Use `connect()`; this wraps a connection that is already open."""
        self._reader = reader
        self._writer = writer
        self._queue_limit = queue_limit
        self._next_id = 1
        self._waiting: dict[RequestId, asyncio.Future[JsonObject]] = {}
        # The queue of the current events() iterator, and queues that take over once the reply
        # to their subscribe request arrives (events before that reply are the old stream's).
        self._events: EventQueue | None = None
        self._pending_events: dict[RequestId, EventQueue] = {}
        self._closing = False
        self._lost: ConnectionClosed | None = None  # why the connection ended, unless we ended it
        self._read_task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, path: Path | str, *, queue_limit: int = DEFAULT_QUEUE_LIMIT
    ) -> ControlClient:
        path = Path(path)
        try:
            reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise DaemonNotRunning(path) from error
        except PermissionError as error:
            raise ControlAccessDenied(path) from error
        return cls(reader, writer, queue_limit=queue_limit)

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def call(self, method: str, /, **params: Any) -> JsonObject:
        """Call a method; returns its result, raises ControlError for an error reply and
        ConnectionClosed if the connection ends first."""
        return await self._request(method, params)

    async def events(
        self, *, replay: int | None = None, target: str | None = None
    ) -> AsyncGenerator[Event | EventsDropped, None]:
        """Subscribe, then yield `replay` recent events (the daemon's default when None) and
        live ones, about `target` only when given. The subscription is made when iteration
        starts. Events of types this client does not know are skipped. Ends when another
        `events()` replaces this one or the client is closed; raises ConnectionClosed if the
        daemon goes away."""
        params: dict[str, Any] = {}
        if replay is not None:
            params["replay"] = replay
        if target is not None:
            params["target"] = target
        queue = EventQueue(self._queue_limit)
        await self._request("subscribe", params, events=queue)
        try:
            while (item := await queue.get()) is not None:
                yield item
            if self._lost is not None and queue is self._events:
                raise self._lost
        finally:
            if queue is self._events and self._lost is None and not self._closing:
                # The consumer stopped early: stop the daemon sending, without waiting.
                self._events = None
                self._send("unsubscribe", {})

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        await asyncio.wait({self._read_task})

    def _send(self, method: str, params: JsonObject) -> RequestId:
        request_id = self._next_id
        self._next_id += 1
        line = encode_request(request_id, method, params)
        if len(line) > MAX_LINE_BYTES:
            # The daemon could only answer with an id-less error that matches no call.
            raise ValueError(f"a {method!r} request of {len(line)} bytes exceeds the line limit")
        self._writer.write(line)
        return request_id

    async def _request(
        self, method: str, params: JsonObject, *, events: EventQueue | None = None
    ) -> JsonObject:
        if self._lost is not None:
            raise self._lost
        if self._closing:
            raise ConnectionClosed("the control client is closed")
        request_id = self._send(method, params)
        reply: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = reply
        if events is not None:
            self._pending_events[request_id] = events
        # A broken connection is seen by the reader too, which fails the reply with the reason.
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()
        return await reply

    async def _read(self) -> None:
        lines = LineBuffer()
        reason = "the daemon closed the connection"
        try:
            while data := await self._reader.read(_READ_SIZE):
                lines.feed(data)
                while (line := lines.next_line()) is not None:
                    self._dispatch(line)
        except ConnectionError as error:
            reason = f"the connection to the daemon broke: {error}"
        except ServerLineError as error:
            reason = f"the daemon sent a line this client cannot read: {error}"
            self._writer.close()
        finally:
            self._ended(reason)

    def _ended(self, reason: str) -> None:
        """Fail what still waits: calls get the reason, event iterators end (and raise it)."""
        if not self._closing:
            self._lost = ConnectionClosed(reason)
        ended = self._lost or ConnectionClosed("the control client is closed")
        for reply in self._waiting.values():
            if not reply.done():
                reply.set_exception(ended)
        self._waiting.clear()
        for queue in (self._events, *self._pending_events.values()):
            if queue is not None:
                queue.close()

    def _dispatch(self, line: bytes | LineTooLong) -> None:
        if isinstance(line, LineTooLong):
            raise ServerLineError(f"a line longer than {line.limit} bytes")
        message = decode_server_line(line)
        if isinstance(message, PushedEvent):
            if self._events is not None and message.event is not None:
                self._events.put(message.event)
        elif isinstance(message, EventsDropped):
            if self._events is not None:
                self._events.put(message)
        else:
            self._resolve(message)

    def _resolve(self, message: Result | ErrorReply) -> None:
        if message.id is None:
            # Only a request this client could not have sent earns an id-less reply.
            log.warning("control reply matching no request: %s", message)
            return
        queue = self._pending_events.pop(message.id, None)
        if queue is not None and isinstance(message, Result):
            # From here on the daemon sends the new subscription's events.
            if self._events is not None:
                self._events.close()
            self._events = queue
        reply = self._waiting.pop(message.id, None)
        if reply is None or reply.done():
            return  # a reply nobody waits for (an unsubscribe sent on the way out)
        if isinstance(message, Result):
            reply.set_result(message.result)
        else:
            reply.set_exception(message.exception())


def call_once(path: Path | str, method: str, /, **params: Any) -> JsonObject:
    """Connect, call one method, close: for one-shot commands outside an event loop."""

    async def run() -> JsonObject:
        async with await ControlClient.connect(path) as client:
            return await client.call(method, **params)

    return asyncio.run(run())
