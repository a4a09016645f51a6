"""TUI cost: CPU of `cartd tui` showing a target whose console takes 1,000 DbgPrint lines/s.

Run with `.venv/bin/python bench/tui_console.py` from the repository root. A real `cartd run`
process serves a KD target written for this bench (the protocol core in TARGET role, as in
bench/daemon_load.py) over an unpaced pseudo-terminal; the target sends DbgPrint lines at a set
rate. The TUI runs in a child process of its own, so its CPU is measured alone: `CartdApp`
opened on the target's console view, drawn at 120x40 on a pseudo-terminal the bench reads and
throws away, so the cost of every frame is counted up to the escape sequences written
(`--headless` uses Textual's `run_test()` instead, which composes each frame but never
encodes or writes it). The figures, all measured in this one run:

1. the TUI's CPU as a share of one core while the console scrolls at the rate reached, next
   to the same TUI connected to the same target while it prints nothing;
2. the DbgPrint lines per second the TUI actually received, and any events the daemon had to
   drop because the TUI fell behind;
3. how often the TUI redrew and the CPU per redraw: the app redraws at most five times a second
   whatever the line rate, so this, more than the lines, is what its cost follows;
4. the daemon's CPU over the same windows, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import inspect
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cartd.control.client import ControlClient
from cartd.kd.target import KdTarget, PacketDelivered
from cartd.links.streams import FdStream, LinkClosed, open_pty_pair
from cartd.tui.app import CartdApp
from cartd.tui.model import Connection

LINE = b"cartd bench: a DbgPrint line of a typical length, number %08d\n"
TICKS = os.sysconf("SC_CLK_TCK")
COLUMNS, ROWS = 120, 40
WARM_UP_LINES = 200
# Before its window opens the child waits this long after it has the target: the replay of the
# daemon's recent events and the first frames are start-up cost, not the steady state.
SETTLE_SECONDS = 1.0
CHILD_START_TIMEOUT = 60.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


# --- the target ---------------------------------------------------------------------------------


class PacedTarget:
    """A KD target on the pty master that prints LINE at a set rate when asked to.

    KD has one packet in flight at a time: each line goes when the previous one has been
    acknowledged, or later if the schedule says so; a target that fell behind catches up at
    the line's full speed. It waits on the acknowledgements instead of polling for them,
    because this process shares the machine's cores with the two it measures.
    """

    def __init__(self, stream: FdStream) -> None:
        self.stream = stream
        self.target = KdTarget(ack_timeout=2.0)
        self.delivered = 0
        self._acknowledged = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._pump())

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.stream.close()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self.stream.read()
            self.target.receive_data(data, loop.time())
            while (event := self.target.next_event()) is not None:
                if isinstance(event, PacketDelivered):
                    self.delivered += 1
                    self._acknowledged.set()
            self.stream.write(self.target.data_to_send())

    async def _until_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.target.idle:
            if self._reader is not None and self._reader.done():
                self._reader.result()  # the pty closed: say why
            self._acknowledged.clear()
            deadline = self.target.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(self._acknowledged.wait(), timeout)
            except TimeoutError:
                self.target.handle_timer(loop.time())
                self.stream.write(self.target.data_to_send())

    async def send(self, count: int | None = None, *, rate: float | None = None) -> None:
        """Send `count` lines (forever when None), `rate` a second (as fast as acknowledged
        when None)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while count is None or sent < count:
            await self._until_idle()
            if rate is not None:
                due = started + sent / rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            self.target.send_debug_print(LINE % self.delivered, loop.time())
            self.stream.write(self.target.data_to_send())
            sent += 1
        await self._until_idle()


# --- the TUI, in a child process ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """What the child saw over its measuring window."""

    cpu: float  # seconds, user + system, every thread
    wall: float
    lines: int  # DbgPrint lines the TUI's console received
    redraws: int  # times the app refreshed its screens from the model
    dropped_events: int  # events the daemon could not send the TUI in time

    @property
    def core_share(self) -> float:
        return self.cpu / self.wall

    @property
    def line_rate(self) -> float:
        return self.lines / self.wall

    @property
    def redraw_rate(self) -> float:
        return self.redraws / self.wall


class CountingApp(CartdApp):
    """The TUI as it is, counting its redraws: what its cost follows, more than the lines."""

    # Textual reads a relative CSS_PATH next to the file of the class: cartd's, not this one.
    CSS_PATH = str(Path(inspect.getfile(CartdApp)).parent / CartdApp.CSS_PATH)
    redraws = 0

    def redraw(self) -> None:
        self.redraws += 1
        super().redraw()


def knows_target(app: CartdApp, target: str) -> bool:
    """Connected, and the daemon's status has named the target (the view's own lookup makes an
    empty entry for it before that)."""
    info = app.model.targets.get(target)
    return app.model.connection is Connection.CONNECTED and info is not None and bool(info.link)


def received_lines(app: CartdApp, target: str) -> int:
    console = app.model.target(target).console
    return console.dropped + len(console.lines)


async def measure_app(app: CountingApp, target: str, seconds: float, report: int) -> None:
    """Wait until the TUI has the target, let it settle, then measure it for `seconds`.

    Nothing is reported if the app ends first: it failed, and leaving the Textual context
    raises why."""
    while not knows_target(app, target):
        if app.return_code is not None:
            return
        await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE_SECONDS)
    os.write(report, b"ready\n")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    lines = received_lines(app, target)
    redraws = app.redraws
    dropped = app.model.dropped_events
    await asyncio.sleep(seconds)
    if app.return_code is not None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    window = Window(
        cpu=usage.ru_utime + usage.ru_stime - cpu,
        wall=time.perf_counter() - started,
        lines=received_lines(app, target) - lines,
        redraws=app.redraws - redraws,
        dropped_events=app.model.dropped_events - dropped,
    )
    os.write(report, json.dumps(asdict(window)).encode() + b"\n")


async def run_child(args: argparse.Namespace) -> int:
    app = CountingApp(Path(args.socket), target=args.target)
    if args.headless:
        async with app.run_test(size=(COLUMNS, ROWS)):
            await measure_app(app, args.target, args.seconds, args.report_fd)
        return 0
    # On the pseudo-terminal the bench gave it, as `cartd tui` runs on the cart's screen.
    running = asyncio.create_task(app.run_async())
    try:
        await measure_app(app, args.target, args.seconds, args.report_fd)
    finally:
        if app.return_code is None:  # exit() would overwrite a failed app's status
            app.exit()
        await running
    return app.return_code or 0


# --- the bench ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    tui: Window
    daemon_cpu: float  # seconds over the child's window
    exit_status: int  # the child's, after its report: a TUI that fails on the way out


def drain(terminal: int) -> None:
    """Read what the TUI drew and throw it away, as a terminal would show it."""
    try:
        os.read(terminal, 1 << 16)
    except BlockingIOError:
        pass
    except OSError:  # EIO: the child has ended, and its side of the terminal with it
        asyncio.get_running_loop().remove_reader(terminal)


async def measure_tui(
    socket: Path, target: str, seconds: float, headless: bool, daemon_pid: int
) -> Phase:
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", buffering=0)
    )
    command = [sys.executable, __file__, "--child", "--socket", str(socket), "--target", target]
    command += ["--seconds", str(seconds), "--report-fd", str(write_end)]
    terminal: int | None = None
    if headless:
        child = subprocess.Popen(
            [*command, "--headless"], pass_fds=(write_end,), stdout=subprocess.DEVNULL
        )
    else:
        terminal, screen = os.openpty()
        fcntl.ioctl(screen, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        os.set_blocking(terminal, False)
        loop.add_reader(terminal, drain, terminal)
        child = subprocess.Popen(
            command,
            pass_fds=(write_end,),
            stdin=screen,
            stdout=screen,
            stderr=screen,
            env={**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"},
        )
        os.close(screen)
    os.close(write_end)
    try:
        try:
            ready = await asyncio.wait_for(reader.readline(), CHILD_START_TIMEOUT)
        except TimeoutError:
            raise SystemExit(
                f"the TUI child did not see target {target} within {CHILD_START_TIMEOUT:.0f} s"
            ) from None
        if ready != b"ready\n":
            raise SystemExit(f"the TUI child ended before its window {_failed(child, headless)}")
        daemon_before = cpu_seconds(daemon_pid)
        report = await asyncio.wait_for(reader.readline(), seconds + CHILD_START_TIMEOUT)
        daemon_cpu = cpu_seconds(daemon_pid) - daemon_before
        if not report:
            raise SystemExit(f"the TUI child ended without a report {_failed(child, headless)}")
        exit_status = await loop.run_in_executor(None, child.wait, 30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        transport.close()
        if terminal is not None:
            loop.remove_reader(terminal)
            os.close(terminal)
    return Phase(Window(**json.loads(report)), daemon_cpu, exit_status)


def _failed(child: subprocess.Popen[bytes], headless: bool) -> str:
    status = f"(exit status {child.wait()})"
    # On a pseudo-terminal its traceback went to the screen the bench throws away.
    return status if headless else f"{status}; run with --headless to see its traceback"


async def target_id(socket: Path) -> str:
    async with await ControlClient.connect(socket) as client:
        status = await client.call("status")
    targets = status.get("targets", [])
    if len(targets) != 1:
        raise SystemExit(f"expected one target in the daemon's status, got {targets!r}")
    return str(targets[0]["target"])


async def run_bench(seconds: float, rate: float, headless: bool) -> tuple[Phase, Phase]:
    state = Path(tempfile.mkdtemp(prefix="cartd-bench-"))
    stream, slave = open_pty_pair()
    config = state / "cartd.toml"
    config.write_text(
        f'[serial]\nports = ["{slave}"]\nprobe_seconds = 0.5\nactive_probe = "all"\n'
        "[capture]\nquota_mb = 100000\n"
    )
    records = state / "records"
    socket = records / "control.sock"  # Config.control_socket_path() with --state-dir
    cartd = [sys.executable, "-m", "cartd"]
    daemon = subprocess.Popen(
        [*cartd, "run", "--config", str(config), "--state-dir", str(records)],
        stderr=subprocess.DEVNULL,
    )
    target = PacedTarget(stream)
    target.start()
    try:
        # A few lines first, so the daemon has found the port and names the target.
        await asyncio.wait_for(target.send(WARM_UP_LINES), 60)
        name = await target_id(socket)
        quiet = await measure_tui(socket, name, seconds, headless, daemon.pid)
        printing = asyncio.create_task(target.send(rate=rate))
        try:
            busy = await measure_tui(socket, name, seconds, headless, daemon.pid)
        finally:
            printing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printing
    except LinkClosed as error:
        raise SystemExit(f"the pty closed: {error}") from error
    finally:
        target.close()
        daemon.terminate()
        daemon.wait(30)
        # Tens of megabytes of journal and capture a run: nothing to keep.
        shutil.rmtree(state, ignore_errors=True)
    return quiet, busy


def summary(quiet: Phase, busy: Phase, rate: float, headless: bool) -> list[str]:
    where = "headless by run_test()" if headless else f"on a {COLUMNS}x{ROWS} pseudo-terminal"
    lines = [
        f"TUI CPU: {busy.tui.core_share:.1%} of one core at {busy.tui.line_rate:,.0f} "
        f"DbgPrint lines/s (idle: {quiet.tui.core_share:.1%}; asked for {rate:,.0f}/s, "
        f"drawn {where})",
        f"TUI redraws: {busy.tui.redraw_rate:.1f} a second printing "
        f"({quiet.tui.redraw_rate:.1f} idle); its CPU per redraw while printing: "
        f"{busy.tui.cpu / max(busy.tui.redraws, 1) * 1000:.0f} ms",
        f"daemon CPU over the same windows: {busy.daemon_cpu / busy.tui.wall:.1%} printing, "
        f"{quiet.daemon_cpu / quiet.tui.wall:.1%} quiet",
    ]
    dropped = busy.tui.dropped_events + quiet.tui.dropped_events
    if dropped:
        lines.append(f"events the daemon dropped because the TUI fell behind: {dropped:,}")
    for name, phase in (("quiet", quiet), ("printing", busy)):
        if phase.exit_status:
            lines.append(
                f"the TUI child ({name}) exited with status {phase.exit_status} after its "
                "window; its figures stand"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each window (default 10)")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="DbgPrint lines a second (default 1000)"
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="run the TUI with Textual's run_test(): frames are composed but never written",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raise SystemExit(asyncio.run(run_child(args)))
    quiet, busy = asyncio.run(run_bench(args.seconds, args.rate, args.headless))
    if args.json:
        figures: dict[str, Any] = {
            "rate_asked": args.rate,
            "headless": args.headless,
            "printing": asdict(busy),
            "quiet": asdict(quiet),
        }
        print(json.dumps(figures, indent=2))
    else:
        print("\n".join(summary(quiet, busy, args.rate, args.headless)))


if __name__ == "__main__":
    main()
