"""The TUI as a program: every key documented, resizing, the command palette, `cartd tui` and
`cartd demo` on and off a terminal, and the kiosk unit that runs it on the cart's console."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tui_snapshots import KDNET_TARGET, SERIAL_TARGET, STATUS, _events
from textual.binding import Binding
from textual.command import CommandPalette
from tui_support import recorded_daemon_thread, screen_text, until
from unit_files import verify_unit

from cartd.tui.app import CartdApp
from cartd.tui.cart_screen import CartScreen
from cartd.tui.dashboard import DashboardScreen, SlotList
from cartd.tui.dialogs import TextDialog
from cartd.tui.help import help_text
from cartd.tui.line_view import LineView
from cartd.tui.model import Connection
from cartd.tui.target_screen import TargetScreen

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "control.sock"


async def _loaded(pilot: object, app: CartdApp) -> None:
    await until(
        pilot,  # type: ignore[arg-type]
        lambda: app.model.connection is Connection.CONNECTED and SERIAL_TARGET in app.model.targets,
        "the recorded data",
    )


def test_the_help_screen_lists_every_key() -> None:
    app = CartdApp(Path("/nonexistent/control.sock"))
    text = help_text(app, None)
    classes = (CartdApp, CartScreen, SlotList, TargetScreen)
    for cls in classes:
        for binding in cls.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.description in text, f"{cls.__name__}: {binding.key} is not in help"
    for key in ("PgUp", "PgDn", "Home", "End", "Ctrl+P", "Esc"):
        assert key in text


async def test_resizing_keeps_everything_readable(socket_path: Path) -> None:
    with recorded_daemon_thread(socket_path, STATUS, _events()):
        app = CartdApp(socket_path, hostname="cart-7")
        async with app.run_test(size=(120, 40)) as pilot:
            await _loaded(pilot, app)
            await until(pilot, lambda: SERIAL_TARGET in screen_text(pilot), "dashboard drawn")
            for width, height in ((80, 24), (60, 20), (200, 60), (80, 24)):
                await pilot.resize_terminal(width, height)
                await pilot.pause(0.2)
                assert SERIAL_TARGET in screen_text(pilot)
                assert "BUGCHECKED" in screen_text(pilot)
            app.open_target(SERIAL_TARGET)
            await until(pilot, lambda: isinstance(app.screen, TargetScreen), "target view")
            for width, height in ((60, 20), (120, 40)):
                await pilot.resize_terminal(width, height)
                await pilot.pause(0.2)
                assert "DRIVER_POWER_STATE_FAILURE" in screen_text(pilot)
            console = app.screen.query_one("#console-view", LineView)
            assert console.follow, "still on the newest line after resizing"


async def test_the_command_palette_runs_commands_by_name(socket_path: Path) -> None:
    with recorded_daemon_thread(socket_path, STATUS, _events()):
        app = CartdApp(socket_path, target=KDNET_TARGET)
        async with app.run_test(size=(100, 30)) as pilot:
            await _loaded(pilot, app)
            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
            await pilot.press(*"timestamps")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TargetScreen), "back in the view")
            await until(
                pilot,
                lambda: not app.screen.query_one("#console-view", LineView).show_times,
                "timestamps switched off",
            )
            # The watch-from-elsewhere recipe names this cart.
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, TextDialog), "the recipe")
            assert f"ssh -t {app.hostname} cartd tui" in screen_text(pilot)
            await pilot.press("escape")
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "dashboard")
            # Covered while the target view was open, the dashboard catches up on return.
            await until(pilot, lambda: "BUGCHECKED" in screen_text(pilot), "dashboard redrawn")


def test_cartd_tui_without_a_terminal_says_what_to_do() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cartd", "tui", "--socket", "/nonexistent.sock"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "ssh -t" in result.stderr and "Traceback" not in result.stderr


def _run_on_a_terminal(arguments: list[str], seconds: float) -> tuple[int, bytes]:
    """Run `python -m cartd ...` on a new pseudo-terminal, as on the cart's console; return its
    exit status and everything it drew."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "cartd", *arguments])
    output = bytearray()
    deadline = time.monotonic() + seconds
    status = None
    while status is None:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            with contextlib.suppress(OSError):  # the child closed the terminal
                output += os.read(fd, 65536)
        done, status_word = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(status_word)
        elif time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"still running after {seconds} s:\n{output[-3000:]!r}")
    os.close(fd)
    return status, bytes(output)


def test_cartd_demo_on_a_terminal_shows_the_tui(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    status, drawn = _run_on_a_terminal(
        ["demo", "--seconds", "8", "--bugcheck-after", "2", "--state-dir", str(state)], 60
    )
    assert status == 0, drawn[-3000:]
    assert b"\x1b[?1049h" in drawn, "the TUI takes the alternate screen"
    assert b"BUGCHECKED" in drawn
    assert b"Traceback" not in drawn
    # The daemon's log went to a file, not across the screen; the records are there.
    assert (state / "demo.log").exists()
    assert list(state.glob("targets/*/sessions/*/events.jsonl"))


def test_cartd_tui_with_no_daemon_waits_for_one(tmp_path: Path) -> None:
    """A quick q quits it; until then it says there is no daemon, instead of a traceback."""
    socket = tmp_path / "control.sock"
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "cartd", "tui", "--socket", str(socket)])
    drawn = bytearray()
    deadline = time.monotonic() + 30
    while b"no daemon listening" not in drawn and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            drawn += os.read(fd, 65536)
    os.write(fd, b"q")
    _, status_word = os.waitpid(pid, 0)
    os.close(fd)
    assert b"no daemon listening" in drawn, bytes(drawn[-2000:])
    assert os.waitstatus_to_exitcode(status_word) == 0
    assert b"Traceback" not in drawn


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_kiosk_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """deploy/cartd-tui@.service as installed: ExecStart pointed at this cartd."""
    verify_unit("cartd-tui@.service", tmp_path, instance="tty1")
