"""The control socket server: JSON-lines requests and pushed events over a UNIX stream socket.

The server knows nothing about the daemon. It is given a `ControlBackend`: the daemon's methods
(a `MethodRegistry`) and a way to subscribe to its events (an `EventHub` has one). It adds the
built-in methods `hello`, `subscribe` and `unsubscribe`, answers each request line once and in
order, and pushes a subscriber's events between the replies.

Each connection has one task that reads and answers requests and, while subscribed, another
that writes events; both write whole lines to the same stream, so lines never interleave. A
client that stops reading stalls only its own tasks: its subscription drops events (and later
says how many), while the daemon and the other clients carry on.

The socket file is bound, given its group and mode, and only then listens: a connection attempt
before listen() is refused, so nobody outside the control group can slip in while it is made.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.metadata
import logging
from pathlib import Path
from typing import Any, Protocol

from cartd.control.protocol import (
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    ControlError,
    ErrorCode,
    EventsDropped,
    LineBuffer,
    LineTooLong,
    ProtocolError,
    encode_dropped,
    encode_error,
    encode_event,
    encode_result,
    parse_request,
)
from cartd.control.registry import Method, MethodRegistry, Param, Params
from cartd.control.socket_file import SocketFile, SocketFileError, peer_credentials
from cartd.events import Event

log = logging.getLogger(__name__)

DEFAULT_CONTROL_GROUP = "cartd"
# The credentials of the client a connection's task serves (each connection is its own task,
# so each sees its own value).
_REQUESTER: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "cartd_control_requester", default=None
)
# Events a subscriber gets first when it does not say how many: about a screenful of context.
DEFAULT_REPLAY = 100
BUILTIN_METHODS = ("hello", "subscribe", "unsubscribe")

_READ_SIZE = 65536
# How long a finished connection may take to hand its last replies to a slow reader.
_CLOSE_GRACE_SECONDS = 5.0


class EventStream(Protocol):
    """One subscriber's events: `replayed` recent ones first, then live ones."""

    @property
    def replayed(self) -> int: ...

    async def get(self) -> Event | EventsDropped | None:
        """The next event or drop report; None when the stream has ended."""
        ...

    def close(self) -> None: ...


class ControlBackend(Protocol):
    """What the server needs from the daemon."""

    @property
    def methods(self) -> MethodRegistry: ...

    def subscribe(self, *, replay: int, target: str | None) -> EventStream:
        """Events about `target` (a target id or link name; None: all), starting with up to
        `replay` recent ones. May raise ControlError to refuse."""
        ...


ControlSocketError = SocketFileError  # the control socket cannot be set up: the message says why


def server_name() -> str:
    try:
        return f"cartd {importlib.metadata.version('cartd')}"
    except importlib.metadata.PackageNotFoundError:
        return "cartd (version unknown)"


class ControlServer:
    def __init__(
        self,
        backend: ControlBackend,
        path: Path | str,
        *,
        control_group: str | None = DEFAULT_CONTROL_GROUP,
        default_replay: int = DEFAULT_REPLAY,
    ) -> None:
        """`control_group`: the group whose members may connect besides the daemon's own user
        (None, or a group that does not exist: the daemon's user only)."""
        clash = set(BUILTIN_METHODS) & set(backend.methods.names())
        if clash:
            raise ValueError(f"methods {sorted(clash)} are built into the control server")
        self.backend = backend
        self.path = Path(path)
        self.control_group = control_group
        self.default_replay = default_replay
        self.server_name = server_name()
        self._server: asyncio.Server | None = None
        self._socket_file = SocketFile(self.path, control_group, what="the control socket")
        self._clients: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def method_names(self) -> list[str]:
        return sorted([*BUILTIN_METHODS, *self.backend.methods.names()])

    async def start(self) -> None:
        """Create the socket and start accepting. Raises ControlSocketError if the socket
        cannot be made, or another daemon is listening on it."""
        sock = self._socket_file.bind()
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except BaseException:
            sock.close()
            self._socket_file.remove()
            raise
        log.info("control socket listening on %s", self.path)

    async def close(self) -> None:
        """Stop accepting, close every client's connection, remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        clients = set(self._clients)
        for task in clients:
            task.cancel()
        if clients:
            await asyncio.wait(clients)
        await server.wait_closed()
        self._socket_file.remove()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection runs in a task of its own that close() cancels; asyncio's task for this
        # callback then ends normally (Python 3.11 logs an error for a cancelled one).
        connection = asyncio.create_task(_Connection(self, reader, writer).run())
        self._clients.add(connection)
        await asyncio.wait({connection})
        self._clients.discard(connection)
        if not connection.cancelled() and connection.exception() is not None:
            # A bug in one connection must not take the server or the other clients down.
            log.error("control connection failed", exc_info=connection.exception())


class _Connection:
    """One client: its requests in order, and its subscription if it has one."""

    def __init__(
        self, server: ControlServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._events: EventStream | None = None
        self._pump: asyncio.Task[None] | None = None
        credentials = peer_credentials(writer.get_extra_info("socket"))
        # Methods that act for someone (take-over) ask who with requester_uid().
        _REQUESTER.set(credentials)
        self._peer = _describe_peer(credentials)
        replay = Param(int, default=server.default_replay, minimum=0)
        self._builtins = {
            "hello": Method("hello", self._hello),
            "subscribe": Method(
                "subscribe", self._subscribe, {"replay": replay, "target": Param(str)}
            ),
            "unsubscribe": Method("unsubscribe", self._unsubscribe),
        }

    async def run(self) -> None:
        log.debug("control client connected: %s", self._peer)
        lines = LineBuffer()
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if data:
                    lines.feed(data)
                else:
                    lines.feed_eof()
                while (line := lines.next_line()) is not None:
                    self._writer.write(await self._answer(line))
                    # Events start after the subscribe reply, so the replay follows it.
                    self._start_events()
                    await self._writer.drain()
                if not data:
                    break
            # The client has finished sending; as a subscriber it still gets events until it
            # closes the connection (the next write then fails and ends the pump).
            if self._pump is not None:
                await asyncio.wait({self._pump})
        except ConnectionError as error:
            log.debug("control client %s went away: %s", self._peer, error)
        except asyncio.CancelledError:
            # The server is closing: what this client has not read yet is not waited for.
            self._writer.transport.abort()
            raise
        finally:
            await self._stop_events()
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), _CLOSE_GRACE_SECONDS)
            except (TimeoutError, ConnectionError):
                self._writer.transport.abort()
            log.debug("control client disconnected: %s", self._peer)

    async def _answer(self, line: bytes | LineTooLong) -> bytes:
        if isinstance(line, LineTooLong):
            return encode_error(
                None,
                ErrorCode.LINE_TOO_LONG,
                f"a request line holds at most {line.limit} bytes; a longer one was discarded",
            )
        request = parse_request(line)
        if isinstance(request, ProtocolError):
            return encode_error(request.id, request.code, request.message)
        method = self._builtins.get(request.method) or self._server.backend.methods.get(
            request.method
        )
        if method is None:
            known = ", ".join(self._server.method_names())
            return encode_error(
                request.id,
                ErrorCode.UNKNOWN_METHOD,
                f"there is no method {request.method!r}; this cartd knows: {known}",
            )
        try:
            reply = encode_result(request.id, await method.handler(method.bind(request.params)))
        except ControlError as error:
            return encode_error(request.id, error.code, error.message)
        except Exception:
            log.exception("control method %r failed", request.method)
            return encode_error(
                request.id,
                ErrorCode.INTERNAL_ERROR,
                f"{request.method!r} failed inside cartd, which is a bug: the daemon's log "
                "(journalctl -u cartd) has the details",
            )
        if len(reply) > MAX_LINE_BYTES:
            log.error("the reply to %r is %d bytes; not sent", request.method, len(reply))
            return encode_error(
                request.id,
                ErrorCode.INTERNAL_ERROR,
                f"the reply to {request.method!r} would be {len(reply)} bytes, more than a line "
                f"holds ({MAX_LINE_BYTES}), which is a bug in cartd",
            )
        return reply

    async def _hello(self, params: Params) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "server": self._server.server_name,
            "methods": self._server.method_names(),
        }

    async def _subscribe(self, params: Params) -> dict[str, Any]:
        # A second subscribe replaces the first, with its own filter and replay.
        await self._stop_events()
        self._events = self._server.backend.subscribe(
            replay=params["replay"], target=params["target"]
        )
        return {"replayed": self._events.replayed}

    async def _unsubscribe(self, params: Params) -> dict[str, Any]:
        await self._stop_events()
        return {}

    def _start_events(self) -> None:
        if self._events is not None and self._pump is None:
            self._pump = asyncio.create_task(self._push_events(self._events))

    async def _stop_events(self) -> None:
        pump, self._pump = self._pump, None
        events, self._events = self._events, None
        if pump is not None:
            pump.cancel()
            await asyncio.wait({pump})
        if events is not None:
            events.close()

    async def _push_events(self, events: EventStream) -> None:
        try:
            while (item := await events.get()) is not None:
                if isinstance(item, EventsDropped):
                    self._writer.write(encode_dropped(item.count))
                else:
                    self._writer.write(self._event_line(item))
                await self._writer.drain()
        except ConnectionError as error:
            log.debug("control client %s went away: %s", self._peer, error)

    def _event_line(self, event: Event) -> bytes:
        """The event's line, or a drop report for one that cannot be sent (a bug elsewhere
        must not end the stream, nor break a client's line limit)."""
        try:
            line = encode_event(event)
        except (TypeError, ValueError):
            log.exception("cannot encode a %s event", event.type)
            return encode_dropped(1)
        if len(line) > MAX_LINE_BYTES:
            log.error("a %s event is %d bytes; not sent", event.type, len(line))
            return encode_dropped(1)
        return line


def _describe_peer(credentials: tuple[int, int] | None) -> str:
    """Who connected, for the log: the kernel's record of the peer's pid and user."""
    if credentials is None:
        return "unknown peer"
    pid, uid = credentials
    return f"pid {pid} uid {uid}"


def requester_uid() -> int | None:
    """The user of the control client whose request is being answered (None outside one)."""
    credentials = _REQUESTER.get()
    return credentials[1] if credentials is not None else None
