"""SVG snapshots of the TUI's three main views at 80x24 (a plain SSH terminal) and 120x40.

The data is fixed: a recorded daemon (cartd's real control server answering with a fixed
`status` and fixed events) and a fixed clock, in UTC, so a snapshot changes only when the
screens do. After a deliberate change to a screen, look at the new SVGs and accept them with
`pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_support import recorded_daemon_thread, until

from cartd import events as ev
from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.tui.app import CartdApp
from cartd.tui.model import Connection

NOW = 1_796_094_900.0  # 2026-12-01T03:15:00Z
SERIAL_TARGET = "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
SERIAL_LINK = f"serial:/dev/serial/by-id/{SERIAL_TARGET}"
KDNET_TARGET = "kdnet-50000"
SIZES = [(80, 24), (120, 40)]


def _at(seconds: float) -> str:
    """An event time `seconds` after 03:14:00 UTC."""
    return ev.format_time(datetime.fromtimestamp(NOW - 60 + seconds, UTC))


def _bugcheck() -> ev.Bugcheck:
    info = BugcheckInfo(
        code=0x9F, parameters=(0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)
    )
    return ev.Bugcheck(
        time=_at(41.2),
        target=SERIAL_TARGET,
        code=info.code,
        name=info.name,
        parameters=info.parameters,
        parameter_meanings=info.parameter_meanings or (),
        cause=info.cause or "",
    )


def _identity(build: int, kernel_base: str) -> dict[str, Any]:
    return {"build": build, "machine": "x64", "processors": 8, "kernel_base": kernel_base}


STATUS: dict[str, Any] = {
    "links": [
        {
            "link": SERIAL_LINK,
            "device": "/dev/ttyUSB0",
            "target": SERIAL_TARGET,
            "state": "connected at 115200 baud",
            "kind": "serial",
            "baud": 115200,
        },
        {
            "link": "kdnet:50000",
            "device": "udp:0.0.0.0:50000",
            "target": KDNET_TARGET,
            "state": "connected to 10.20.0.12:49731 (KDNET protocol 6)",
            "kind": "kdnet",
            "port": 50000,
            "peer": "10.20.0.12:49731",
        },
        {
            "link": "kdnet:50001",
            "device": "udp:0.0.0.0:50001",
            "target": "kdnet-50001",
            "state": "key needed",
            "kind": "kdnet",
            "port": 50001,
            "peer": None,
        },
    ],
    "targets": [
        {
            "target": SERIAL_TARGET,
            "link": SERIAL_LINK,
            "state": "bugchecked",
            "owner": "cartd",
            "identity": _identity(20348, "0xfffff80226400000"),
            "stop_reason": "bugcheck_first",
            "bugcheck": _bugcheck().to_json(),
            "last_traffic": NOW - 18.6,
            "noise": {"bad_checksum": 2, "garbage": 17},
            "records": f"/var/lib/cartd/targets/{SERIAL_TARGET}/sessions/20261201T031200Z",
            "recording": True,
            "records_bytes": 3_481_600,
        },
        {
            "target": KDNET_TARGET,
            "link": "kdnet:50000",
            "state": "running",
            "owner": "cartd",
            "identity": _identity(26100, "0xfffff8071e000000"),
            "stop_reason": None,
            "bugcheck": None,
            "last_traffic": NOW - 0.4,
            "noise": {},
            "records": f"/var/lib/cartd/targets/{KDNET_TARGET}/sessions/20261201T030500Z",
            "recording": True,
            "records_bytes": 912_384,
        },
    ],
    "state_dir": "/var/lib/cartd",
    "disk_free_bytes": 41_875_931_136,
}


def _events() -> list[ev.Event]:
    out: list[ev.Event] = [
        ev.TargetConnected(
            time=_at(0.5),
            target=SERIAL_TARGET,
            link=SERIAL_LINK,
            build=20348,
            kernel_base=0xFFFFF80226400000,
            machine="x64",
            processors=8,
        ),
        ev.ModuleLoaded(
            time=_at(0.6),
            target=SERIAL_TARGET,
            name="ntoskrnl.exe",
            base=0xFFFFF80226400000,
            size=0x1046000,
        ),
        ev.ModuleLoaded(
            time=_at(0.8),
            target=SERIAL_TARGET,
            name="storport.sys",
            base=0xFFFFF80229A00000,
            size=0xA1000,
        ),
    ]
    for second in range(1, 40, 3):
        out.append(
            ev.DebugPrint(
                time=_at(second),
                target=SERIAL_TARGET,
                text=f"storport: adapter 2 reset, queue depth {second % 7 + 24}\n",
            )
        )
        out.append(
            ev.DebugPrint(
                time=_at(second + 0.5),
                target=KDNET_TARGET,
                text=f"mydriver: IRP_MJ_POWER irp {0xFFFFA30F00001000 + second:#x} pending\n",
            )
        )
    out += [
        ev.DebugPrint(
            time=_at(41.0),
            target=SERIAL_TARGET,
            text="*** Fatal System Error: 0x0000009f\n"
            "                       (0x0000000000000003,0xFFFFA30F12345678,0xFFFFF8057A2F3340,"
            "0xFFFFA30F9ABCDEF0)\n",
        ),
        ev.Stopped(
            time=_at(41.1),
            target=SERIAL_TARGET,
            reason="bugcheck_first",
            processor=3,
            pc=0xFFFFF80226401000,
            exception_code=0x80000003,
            first_chance=True,
        ),
        _bugcheck(),
    ]
    return out


@pytest.fixture(autouse=True)
def _same_everywhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC, and none of the developer's Textual or colour settings apply."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    # (TEXTUAL_SNAPSHOT_* belong to the snapshot plugin itself.)
    settings = [name for name in os.environ if name.startswith("TEXTUAL")]
    settings += [name for name in ("NO_COLOR", "FORCE_COLOR") if name in os.environ]
    for name in [name for name in settings if not name.startswith("TEXTUAL_SNAPSHOT")]:
        monkeypatch.delenv(name)
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "control.sock"
    with recorded_daemon_thread(path, STATUS, _events()):
        yield path


def _loaded() -> Callable[[Pilot[Any]], Any]:
    """Wait until the recorded daemon's data is on screen."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CartdApp)
        await until(
            pilot,
            lambda: (
                app.model.connection is Connection.CONNECTED
                and len(app.model.target(SERIAL_TARGET).timeline.lines) >= 5
            ),
            "the recorded data",
        )
        await pilot.pause(0.3)
        app.redraw()
        await pilot.pause()

    return run_before


def _app(socket_path: Path, target: str | None = None) -> CartdApp:
    return CartdApp(socket_path, clock=lambda: NOW, hostname="cart-7", target=target)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_dashboard(snap_compare: Any, socket_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(socket_path), terminal_size=size, run_before=_loaded())


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_target_view(snap_compare: Any, socket_path: Path, size: tuple[int, int]) -> None:
    app = _app(socket_path, KDNET_TARGET)
    assert snap_compare(app, terminal_size=size, run_before=_loaded())


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_bugcheck_panel(snap_compare: Any, socket_path: Path, size: tuple[int, int]) -> None:
    app = _app(socket_path, SERIAL_TARGET)
    assert snap_compare(app, terminal_size=size, run_before=_loaded())
