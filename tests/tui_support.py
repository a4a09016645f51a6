"""Shared parts of the TUI tests: waiting on a running app, reading what a widget shows, and a
control server that answers with recorded data (for snapshots, which must not change from run
to run).

The recorded daemon is cartd's real `ControlServer` on a real UNIX socket, run in a thread of
its own so that Textual's snapshot helper (which runs the app with `asyncio.run`) can reach it;
only its `status` answer and its events are fixed.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Static

from cartd import events as ev
from cartd.control.hub import EventHub, Subscription
from cartd.control.registry import MethodRegistry, Param
from cartd.control.server import ControlServer


async def until(
    pilot: Pilot[Any], check: Callable[[], bool], what: str, *, timeout: float = 20.0
) -> None:
    """Let the app run until `check()` holds; fail saying `what` did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{screen_text(pilot)}")
        await pilot.pause(0.05)


def shown(widget: Widget) -> str:
    """The text a Static shows now (Rich renderables rendered as plain text)."""
    assert isinstance(widget, Static)
    content = widget.content
    if isinstance(content, str | Text):
        return str(content)
    console = Console(width=200, file=io.StringIO(), color_system=None)
    with console.capture() as captured:
        console.print(content)
    return captured.get()


def screen_text(pilot: Pilot[Any]) -> str:
    """Every Static's text on the current screen, for failure messages and loose checks."""
    screen = pilot.app.screen
    return "\n".join(shown(widget) for widget in screen.query(Static) if widget.display)


# --- a control server with recorded answers ------------------------------------------------------


class RecordedDaemon:
    """Answers `status` with `status`, replays `events` to subscribers, and refuses commands
    the way a daemon refuses them for a target that is busy."""

    def __init__(self, status: Mapping[str, Any], events: Sequence[ev.Event]) -> None:
        self._status = dict(status)
        self.hub = EventHub(history=len(events) + 10)
        for event in events:
            self.hub.publish(event)
        self._methods = MethodRegistry()
        self._methods.register("status", self._answer_status)
        self._methods.register("history", self._history, count=Param(int, default=50))

    @property
    def methods(self) -> MethodRegistry:
        return self._methods

    def subscribe(self, *, replay: int, target: str | None) -> Subscription:
        return self.hub.subscribe(replay=replay, target=target)

    async def _answer_status(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._status

    async def _history(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"events": [event.to_json() for event in self.hub.recent(params["count"], None)]}


@contextmanager
def recorded_daemon_thread(
    socket_path: Path, status: Mapping[str, Any], events: Sequence[ev.Event]
) -> Iterator[None]:
    """Serve a RecordedDaemon on `socket_path` from a thread, for as long as the block runs."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with ControlServer(RecordedDaemon(status, events), socket_path, control_group=None):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the recorded daemon did not start"
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
