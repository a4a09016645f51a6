"""`cartd tui`: the Textual app on the cart's screen and over SSH.

It is a client of the control socket only: a `DaemonConnection` worker keeps the `CartModel`
current, and a timer redraws the screen on top (five times a second at most, so a target
printing a thousand lines a second costs five redraws, not a thousand).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen

from cartd.events import format_time
from cartd.tui.cart_screen import CartScreen
from cartd.tui.connection import RETRY_DELAYS, STATUS_INTERVAL, DaemonConnection
from cartd.tui.dashboard import DashboardScreen
from cartd.tui.dialogs import TextDialog
from cartd.tui.help import help_text
from cartd.tui.model import CartModel
from cartd.tui.target_screen import TargetScreen

REDRAW_INTERVAL = 0.2
# "last traffic 3 s ago" must tick even when nothing happens.
IDLE_REDRAW_INTERVAL = 1.0


class CartdApp(App[None]):
    CSS_PATH = "cartd.tcss"
    TITLE = "cartd"
    ENABLE_COMMAND_PALETTE = True
    # Help (?) is on every main screen; Ctrl+P (the command palette) is Textual's own.
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "quit", "Quit")]

    def __init__(
        self,
        socket_path: Path,
        *,
        clock: Callable[[], float] = time.time,
        hostname: str | None = None,
        target: str | None = None,
        status_interval: float = STATUS_INTERVAL,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.hostname = hostname or socket.gethostname()
        started = datetime.fromtimestamp(clock(), UTC)
        self.model = CartModel(socket=str(socket_path), live_since=format_time(started))
        self.connection = DaemonConnection(
            socket_path, self.model, status_interval=status_interval, retry_delays=retry_delays
        )
        self._first_target = target
        self._drawn_changes = -1
        self._drawn_at = 0.0

    def on_mount(self) -> None:
        self.push_screen(DashboardScreen())
        if self._first_target is not None:
            self.open_target(self._first_target)
        self.run_worker(self.connection.run(), name="daemon-connection", group="daemon")
        self.set_interval(REDRAW_INTERVAL, self._redraw)

    def _redraw(self) -> None:
        now = time.monotonic()
        if (
            self.model.changes == self._drawn_changes
            and now - self._drawn_at < IDLE_REDRAW_INTERVAL
        ):
            return
        self.redraw()
        self._drawn_changes = self.model.changes
        self._drawn_at = now

    def redraw(self) -> None:
        self._announce_bugchecks()
        # Only the main screen in view (a dialog may cover part of it); the others catch up
        # when they are shown again (CartScreen.on_screen_resume).
        screens = [screen for screen in self.screen_stack if isinstance(screen, CartScreen)]
        if screens and screens[-1].ready:
            # NoMatches: the app is closing and has taken the screen's widgets down already.
            with contextlib.suppress(NoMatches):
                screens[-1].refresh_from_model(self.clock())

    def _announce_bugchecks(self) -> None:
        """A bugcheck that happens while someone watches rings the bell and says so, whatever
        screen is open (the dashboard card and the target's panel show it too)."""
        while self.model.alerts:
            bugcheck = self.model.alerts.pop(0)
            self.bell()
            self.notify(
                f"{bugcheck.target}: {bugcheck.code:#010x} {bugcheck.name}",
                title="BUGCHECK",
                severity="error",
                timeout=30,
            )

    def open_target(self, target_id: str) -> None:
        self.push_screen(TargetScreen(target_id))

    def action_help(self) -> None:
        screens = [screen for screen in self.screen_stack if isinstance(screen, CartScreen)]
        self.push_screen(TextDialog("Keys", help_text(self, screens[-1] if screens else None)))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette (Ctrl+P): every key's action, by name."""
        yield SystemCommand("Help: list every key", "What each key does", self.action_help)
        if isinstance(screen, CartScreen):
            for active in screen.active_bindings.values():
                binding = active.binding
                if active.node is not screen or not active.enabled or not binding.description:
                    continue
                yield SystemCommand(
                    binding.description,
                    f"key: {self.get_key_display(binding)}",
                    _runner(screen, binding.action),
                )
        yield SystemCommand("Quit", "Leave the TUI; the daemon keeps running", self.exit)


def _runner(screen: Screen[Any], action: str) -> Callable[[], object]:
    async def run() -> None:
        await screen.run_action(action)

    return run
