"""sd_notify under a real NOTIFY_SOCKET: a datagram socket this test owns plays systemd.

The daemon runs in this process (tests/daemon_harness.py) with NOTIFY_SOCKET, WATCHDOG_USEC and
WATCHDOG_PID in its environment, as systemd sets them for `Type=notify` with `WatchdogSec=`;
a simulated target on a pseudo-terminal gives it something to report. Messages go through
systemd-python's `daemon.notify` (sd_notify(3) in libsystemd), the same path as on a cart, so
these tests need the `systemd` extra (`pip install -e '.[dev,systemd]'`, as the README and .ci/run
do). A thread receives the datagrams and stamps each with the time it arrived and whether the
control socket existed at that moment.

The unit file test runs `systemd-analyze verify` on deploy/cartd.service as installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    ROOT,
    SOCKET_PATH_MAX,
    EventWatch,
    daemon_in_process,
    load_test_config,
    start_sim,
    write_config,
)
from unit_files import verify_unit

from cartd import events as ev
from cartd.daemon.systemd_notify import SystemdNotifier, status_line, watchdog_interval
from cartd.sim.target import Scenario

WATCHDOG_USEC = 400_000  # pings every 0.2 s


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() when it arrived
    message: str
    socket_existed: bool  # whether the control socket file existed then
    udp_bound: bool  # whether the daemon's KDNET port was bound then


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET, read by a thread so that a blocked event loop in
    the daemon cannot delay the reading."""

    def __init__(self, path: Path, control_socket: Path, kdnet_port: int) -> None:
        assert len(os.fsencode(path)) <= SOCKET_PATH_MAX, path
        self.path = path
        self.control_socket = control_socket
        self.kdnet_port = kdnet_port
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: list[Notification] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            existed = self.control_socket.exists()
            bound = _udp_port_taken(self.kdnet_port)
            self.received.append(Notification(time.monotonic(), data.decode(), existed, bound))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def with_line(self, assignment: str) -> list[Notification]:
        return [n for n in self.received if assignment in n.message.split("\n")]

    def statuses(self) -> list[str]:
        return [
            line[len("STATUS=") :]
            for n in self.received
            for line in n.message.split("\n")
            if line.startswith("STATUS=")
        ]

    def summary(self) -> str:
        return "\n".join(f"{n.at:.3f} {n.message!r}" for n in self.received[-40:])


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def requires_systemd_python() -> None:
    try:
        import systemd.daemon  # noqa: F401
    except ImportError:
        pytest.fail(
            "systemd-python is not installed: install the extra, "
            "`.venv/bin/pip install -e '.[dev,systemd]'` (it needs libsystemd-dev pkg-config gcc)"
        )


async def wait_until(condition: object, what: str, fake: FakeSystemd, timeout: float) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s; received:\n{fake.summary()}")
        await asyncio.sleep(0.05)


async def test_ready_status_watchdog_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requires_systemd_python()
    sim = start_sim(Scenario(print_interval=None, module_interval=None), seed=4)
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    config = load_test_config(
        write_config(tmp_path / "cartd.toml", ports=[sim.slave_path]), tmp_path / "s"
    )
    kdnet_port = free_udp_port()
    config = replace(config, kdnet=replace(config.kdnet, ports=(kdnet_port,)))
    fake = FakeSystemd(tmp_path / "notify", config.control_socket_path(), kdnet_port)
    # Binding a UDP socket takes microseconds; made slow here, so that a READY=1 sent before
    # the KDNET port is listening would be caught.
    bind = asyncio.BaseEventLoop.create_datagram_endpoint

    async def slow_bind(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)
        return await bind(*args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_datagram_endpoint", slow_bind)
    monkeypatch.setenv("NOTIFY_SOCKET", str(fake.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    try:
        async with daemon_in_process(config) as daemon:
            await wait_until(lambda: fake.with_line("READY=1"), "READY=1", fake, 10)
            ready = fake.with_line("READY=1")
            assert len(ready) == 1, fake.summary()
            assert ready[0].socket_existed, "READY=1 came before the control socket existed"
            assert ready[0].udp_bound, "READY=1 came before the KDNET port was bound"
            # Nothing claimed readiness earlier, and the listeners were up by then.
            assert daemon.daemon.ready.is_set()

            # STATUS= follows the target: listed once it is connected.
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await watch.wait_type(ev.TargetConnected, target, timeout=30)
            finally:
                await watch.close()
            await wait_until(
                lambda: any(target in line for line in fake.statuses()),
                f"STATUS= naming {target}",
                fake,
                5,
            )
            # The first line says what there was then: nothing yet, or the serial port's
            # target already waiting (the slowed KDNET bind gives it time to be found).
            first = fake.statuses()[0]
            assert first == "no targets yet; listening" or target in first, fake.summary()
            latest = fake.statuses()[-1]
            assert latest.startswith("1 target: ") and target in latest, latest

            # WATCHDOG=1 about every WATCHDOG_USEC / 2.
            before = len(fake.with_line("WATCHDOG=1"))
            await asyncio.sleep(2.0)
            pings = len(fake.with_line("WATCHDOG=1")) - before
            assert 5 <= pings <= 15, f"{pings} pings in 2 s; expected about 10\n{fake.summary()}"

            # A blocked event loop sends no pings; they resume once it runs again.
            block: list[float] = []

            def hang() -> None:
                block.append(time.monotonic())
                time.sleep(2.0)
                block.append(time.monotonic())

            asyncio.get_running_loop().call_soon(hang)
            await asyncio.sleep(0.5)  # runs after the 2 s block
            start, end = block
            during = [n for n in fake.with_line("WATCHDOG=1") if start + 0.05 < n.at < end]
            assert not during, f"pings while the loop was blocked:\n{fake.summary()}"
            await wait_until(
                lambda: any(n.at > end for n in fake.with_line("WATCHDOG=1")),
                "WATCHDOG=1 after the block",
                fake,
                2,
            )
            assert not fake.with_line("STOPPING=1")
        await wait_until(lambda: fake.with_line("STOPPING=1"), "STOPPING=1", fake, 5)
        stopping = fake.with_line("STOPPING=1")[0]
        assert stopping.at > fake.with_line("READY=1")[0].at
    finally:
        fake.close()
        sim.close()


async def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sent: list[str] = []
    notifier = SystemdNotifier(send=sent.append)
    notifier.ready()
    notifier.status("x")
    assert notifier.watchdog_seconds is None
    assert not notifier.enabled and not sent


async def test_status_is_rate_limited_and_the_last_line_wins() -> None:
    sent: list[str] = []
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/nowhere"}, send=sent.append)
    for number in range(50):
        notifier.status(f"line {number}")
    assert sent == ["STATUS=line 0"]
    await asyncio.sleep(1.2)
    assert sent == ["STATUS=line 0", "STATUS=line 49"]


def test_watchdog_interval_reads_systemds_variables() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "7"}, 7) == 0.2
    assert watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({}, 7) is None


def test_status_line() -> None:
    assert (
        status_line([("srv12", "bugchecked", "cartd", 0x9F), ("srv07", "running", "cartd", None)])
        == "2 targets: srv12 bugchecked 0x9F, srv07 running"
    )
    assert status_line([("srv07", "stopped", "alice", None)]) == (
        "1 target: srv07 stopped (owned by alice)"
    )


def test_notify_without_systemd_python_logs_what_to_install() -> None:
    """The package runs without the extra: in a fresh interpreter where `systemd` cannot be
    imported, NOTIFY_SOCKET set makes one clear error, and nothing breaks."""
    script = (
        "import sys, logging\n"
        "sys.modules['systemd'] = None\n"  # import systemd raises ImportError
        "logging.basicConfig(format='%(levelname)s %(message)s')\n"
        "from cartd.daemon.systemd_notify import SystemdNotifier\n"
        "from cartd.daemon.journal_fields import JournalSink\n"
        "n = SystemdNotifier({'NOTIFY_SOCKET': '/run/systemd/notify'})\n"
        "n.ready(); n.stopping()\n"
        "assert not n.enabled and not JournalSink().enabled\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ERROR") == 1, result.stderr
    assert "install cartd[systemd]" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_service_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """deploy/cartd.service as installed: ExecStart pointed at this cartd."""
    unit = verify_unit("cartd.service", tmp_path)
    for setting in ("Type=notify", "WatchdogSec=30s", "DevicePolicy=closed", "TimeoutStopSec=30s"):
        assert f"\n{setting}\n" in unit
    assert "\nPrivateDevices=" not in unit
