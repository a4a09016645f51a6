"""The TUI's one way to the daemon: keep a control connection, feed the model, run commands.

`DaemonConnection.run()` runs for the life of the app (in a Textual worker): it connects,
learns what the daemon offers (`hello`), reads `status` once a second and follows the event
stream; when the daemon is not there or goes away it says so in the model and tries again,
forever, so a TUI started before the daemon (or left open across a restart) picks it up by
itself. Commands go through `call()`, which fails at once with a readable message when there
is no connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from cartd.control.client import ConnectionClosed, ControlClient, ControlConnectError
from cartd.control.protocol import ControlError, ErrorCode, EventsDropped, JsonObject
from cartd.tui.model import CartModel

STATUS_INTERVAL = 1.0
# Retry quickly at first (a daemon restarting is back within a second or two), then every few
# seconds: a cart without its daemon should not spin.
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)
# As many recent events as the daemon keeps: the console and timeline start full.
REPLAY = 1000


class DaemonConnection:
    def __init__(
        self,
        socket: Path,
        model: CartModel,
        *,
        status_interval: float = STATUS_INTERVAL,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.socket = socket
        self.model = model
        self._status_interval = status_interval
        self._retry_delays = retry_delays
        self._client: ControlClient | None = None

    async def run(self) -> None:
        attempt = 0
        daemon_seen = False
        while True:
            attempt += 1
            self.model.connecting(attempt)
            try:
                client = await ControlClient.connect(self.socket)
            except ControlConnectError as error:
                self.model.disconnected(str(error), daemon_seen=daemon_seen)
            else:
                attempt = 0
                daemon_seen = True
                problem = await self._follow(client)
                self.model.disconnected(problem, daemon_seen=True)
            await asyncio.sleep(self._retry_delays[min(attempt, len(self._retry_delays) - 1)])

    async def call(self, method: str, /, **params: Any) -> JsonObject:
        """Run a command; ControlError says why it was refused (or that nothing is connected)."""
        client = self._client
        if client is None:
            raise ControlError(ErrorCode.INTERNAL_ERROR, "not connected to the daemon")
        try:
            return await client.call(method, **params)
        except ConnectionClosed as error:
            raise ControlError(ErrorCode.INTERNAL_ERROR, f"the daemon went away: {error}") from None

    async def _follow(self, client: ControlClient) -> str:
        """Serve one connection until it ends; returns why it ended, for people."""
        self._client = client
        poll: asyncio.Task[None] | None = None
        try:
            hello = await client.call("hello")
            self.model.connected(str(hello.get("server", "cartd")))
            self.model.apply_status(await client.call("status"))
            poll = asyncio.create_task(self._poll_status(client))
            async for item in client.events(replay=REPLAY):
                if isinstance(item, EventsDropped):
                    self.model.events_dropped(item.count)
                else:
                    self.model.apply_event(item)
            return "the daemon ended the event stream"
        except ConnectionClosed as error:
            return f"lost the daemon: {error}"
        except ControlError as error:
            return f"the daemon refused the TUI: {error.message}"
        finally:
            self._client = None
            if poll is not None:
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
            await client.close()

    async def _poll_status(self, client: ControlClient) -> None:
        """Time since last traffic, link states, disk use: what events do not carry."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self._status_interval)
                self.model.apply_status(await client.call("status"))
