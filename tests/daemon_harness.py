"""Shared parts of the daemon's end-to-end tests (tests/test_daemon_*.py).

Everything is real: configuration files read by `load_config`, the daemon in this process
(`Daemon(config)`) or as `python -m cartd run` where a test kills it, simulated targets on real
pseudo-terminals, the control socket through `ControlClient`, the `cartd` command line as
subprocesses, and the records on disk. Every wait is bounded, and a failed wait says what the
daemon published and what it logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapng import FileScanner, blocks  # type: ignore[import-untyped]

from cartd import events as ev
from cartd.config import Config, load_config
from cartd.control.client import ControlClient, ControlConnectError
from cartd.control.protocol import EventsDropped
from cartd.daemon.service import Daemon
from cartd.kd.framing import BreakInByte, KdPacket, NoiseDetected, PacketDecoded, PacketDecoder
from cartd.links.streams import FdStream, open_pty_pair
from cartd.sim.line import FaultRates
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer
from cartd.sim.target import Scenario, SimulatedTarget

ROOT = Path(__file__).resolve().parents[1]
MEMORY = 1 << 30  # the simulated machines' memory: pages cost nothing until touched
HEARTBEAT = re.compile(r"cartdemo: heartbeat (\d+), ")
# The longest a UNIX socket path may be (sun_path, NUL included); pytest's tmp_path can be long.
SOCKET_PATH_MAX = 107


# --- configuration ----------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    ports: Sequence[str],
    control_socket: Path | None = None,
    # Longer than a booting target's resend interval (the simulator's ACK timeout, 1 s): a probe
    # that opens the port half way through a packet must still hear a whole one.
    probe_seconds: float = 1.5,
    rescan_seconds: float = 0.1,
    fsync_interval: float = 0.1,
    baud_rates: Sequence[int] = (115200,),
    active_probe: Sequence[str] = (),
    dump_on_bugcheck: str | None = None,
    relay_silence_seconds: float | None = None,
) -> Path:
    """A config file as an operator would write one (JSON strings are TOML basic strings)."""
    lines = []
    if control_socket is not None:
        assert len(os.fsencode(control_socket)) <= SOCKET_PATH_MAX, control_socket
        lines.append(f"control_socket = {json.dumps(str(control_socket))}")
    lines += [
        "[serial]",
        f"ports = {json.dumps(list(ports))}",
        f"baud_rates = {json.dumps(list(baud_rates))}",
        f"active_probe = {json.dumps(list(active_probe))}",
        f"probe_seconds = {probe_seconds}",
        f"rescan_seconds = {rescan_seconds}",
        "[capture]",
        f"fsync_interval = {fsync_interval}",
        # Serial only: no KDNET listener on a fixed UDP port that another daemon may hold.
        "[kdnet]",
        "ports = []",
        # A KD relay port of its own: daemons of other tests may hold the default ones.
        "[relay]",
        f"first_port = {free_tcp_port()}",
    ]
    if relay_silence_seconds is not None:
        lines.append(f"silence_seconds = {relay_silence_seconds}")
    if dump_on_bugcheck is not None:
        lines += ["[policy]", f"dump_on_bugcheck = {json.dumps(dump_on_bugcheck)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def free_tcp_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice of an ephemeral one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_test_config(path: Path, state_dir: Path) -> Config:
    """What `cartd run --config PATH --state-dir STATE` runs with."""
    config = load_config(path, state_dir_override=state_dir)
    socket_path = config.control_socket_path()
    assert len(os.fsencode(socket_path)) <= SOCKET_PATH_MAX, f"{socket_path} is too long"
    return config


# --- the daemon -------------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """The daemon's log lines, as `cartd run -v` would write them to stderr."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class InProcessDaemon:
    daemon: Daemon
    config: Config
    log: LogCapture
    task: asyncio.Task[None]

    @property
    def socket_path(self) -> Path:
        return self.config.control_socket_path()

    def stderr(self) -> str:
        return tail(self.log.text())


@contextlib.asynccontextmanager
async def daemon_in_process(config: Config, **options: Any) -> AsyncIterator[InProcessDaemon]:
    """`Daemon(config, **options).run()` in this event loop, stopped (as SIGTERM would) on the
    way out. Afterwards the run must have ended cleanly and logged no traceback."""
    capture = LogCapture()
    logger = logging.getLogger("cartd")
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    daemon = Daemon(config, **options)
    task = asyncio.create_task(daemon.run())
    running = InProcessDaemon(daemon, config, capture, task)
    try:
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()  # raises what stopped it
        assert daemon.ready.is_set(), f"the daemon did not start:\n{running.stderr()}"
        yield running
    finally:
        daemon.stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        finally:
            logger.removeHandler(capture)
            logger.setLevel(previous_level)
    assert "Traceback" not in capture.text(), capture.text()


class DaemonProcess:
    """`python -m cartd run --config C --state-dir S -v`, its stderr kept in a file (a pipe
    nobody reads would stall a daemon logging every DbgPrint line)."""

    def __init__(self, config_path: Path, state_dir: Path, log_path: Path) -> None:
        self.config = load_test_config(config_path, state_dir)
        self.config_path = config_path
        self.state_dir = state_dir
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    @property
    def socket_path(self) -> Path:
        return self.config.control_socket_path()

    def stderr(self) -> str:
        try:
            return tail(self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return "(no log)"

    async def start(self, *, timeout: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cartd",
                "run",
                "--config",
                str(self.config_path),
                "--state-dir",
                str(self.state_dir),
                "-v",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=ROOT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.returncode is not None:
                raise AssertionError(
                    f"cartd run exited with {self.process.returncode}:\n{self.stderr()}"
                )
            with contextlib.suppress(ControlConnectError):
                client = await ControlClient.connect(self.socket_path)
                await client.call("status")
                await client.close()
                return
            if loop.time() > deadline:
                raise AssertionError(
                    f"cartd run did not answer within {timeout} s:\n{self.stderr()}"
                )
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), 10)

    async def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"cartd run ignored SIGTERM:\n{self.stderr()}") from None


# --- watching the control socket ----------------------------------------------------------------


class EventWatch:
    """Everything one control-socket subscriber is sent, collected in the background."""

    def __init__(self, client: ControlClient, describe: Callable[[], str]) -> None:
        self.client = client
        self.events: list[ev.Event] = []
        self.dropped = 0
        self._describe = describe
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._collect())

    @classmethod
    async def start(cls, socket_path: Path, describe: Callable[[], str]) -> EventWatch:
        client = await ControlClient.connect(socket_path, queue_limit=1_000_000)
        return cls(client, describe)

    async def _collect(self) -> None:
        with contextlib.suppress(Exception):
            async for item in self.client.events(replay=100_000):
                if isinstance(item, EventsDropped):
                    self.dropped += item.count
                else:
                    self.events.append(item)
                self._changed.set()
        self._changed.set()

    async def close(self) -> None:
        await self.client.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def summary(self, count: int = 40) -> str:
        return "\n".join(
            f"  {ev.event_subject(event)} {event.type}: {ev.describe(event)[:100]}"
            for event in self.events[-count:]
        )

    def failure(self, what: str) -> str:
        return (
            f"{what}\nlast events over the control socket:\n{self.summary()}\n"
            f"daemon's stderr:\n{self._describe()}"
        )

    async def wait_for(
        self,
        predicate: Callable[[ev.Event], bool],
        what: str,
        *,
        timeout: float = 20.0,
        after: int = 0,
    ) -> tuple[int, ev.Event]:
        """The first event from index `after` on that matches, and its index."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        position = after
        while True:
            while position < len(self.events):
                event = self.events[position]
                if predicate(event):
                    return position, event
                position += 1
            remaining = deadline - loop.time()
            if remaining <= 0 or self._task.done():
                raise AssertionError(self.failure(f"no {what} within {timeout} s"))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_type(
        self,
        kind: type[ev.Event],
        subject: str | None = None,
        *,
        timeout: float = 20.0,
        after: int = 0,
        where: Callable[[Any], bool] = lambda event: True,
    ) -> tuple[int, Any]:
        def matches(event: ev.Event) -> bool:
            return (
                isinstance(event, kind)
                and (subject is None or ev.event_subject(event) == subject)
                and where(event)
            )

        return await self.wait_for(
            matches,
            f"{kind.type} event about {subject or 'anything'}",
            timeout=timeout,
            after=after,
        )

    def of(self, subject: str) -> list[ev.Event]:
        return [event for event in self.events if ev.event_subject(event) == subject]


# --- the command line ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


async def cartd_cli(*arguments: str, timeout: float = 30.0) -> CliResult:
    """`cartd ARGUMENTS` as a subprocess (without blocking the event loop the daemon may be
    running in)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cartd",
        *arguments,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"cartd {' '.join(arguments)} took over {timeout} s") from None
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


# --- simulated targets ----------------------------------------------------------------------------


@dataclass
class PtySim:
    """A simulated target served on the master side of a pty; the daemon opens `slave_path`."""

    server: SimServer
    target: SimulatedTarget
    master: FdStream
    slave_path: str
    attached: asyncio.Task[None]
    notices: list[str] = field(default_factory=list)

    def unplug(self) -> None:
        """Pull the cable: the master closes, and the daemon's side reads EIO."""
        self.attached.cancel()  # its read loop closes the master stream on the way out
        self.master.close()

    def replug(self) -> str:
        """A new cable (a new pty pair) into the same running target; its slave's path."""
        self.master, self.slave_path = open_pty_pair()
        self.attached = self.server.attach(self.master)
        return self.slave_path

    def close(self) -> None:
        self.attached.cancel()
        self.server.close()
        self.master.close()


def start_sim(
    scenario: Scenario,
    *,
    seed: int = 1,
    baud: int | None = 115200,
    noise: float = 0.0,
) -> PtySim:
    """A simulated target booting now on a new pty, paced at `baud` (None: as fast as a pty)."""
    machine = SimulatedMachine(MachineConfig(seed=seed, memory_size_bytes=MEMORY))
    target = SimulatedTarget(
        machine,
        scenario,
        seed=seed,
        noise=FaultRates.uniform(noise),
        seconds_per_byte=10 / baud if baud else 0.0,
    )
    notices: list[str] = []
    server = SimServer(target, baud=baud, on_notice=notices.append)
    master, slave_path = open_pty_pair()
    attached = server.attach(master)
    server.start()
    return PtySim(server, target, master, slave_path, attached, notices)


# --- records on disk ------------------------------------------------------------------------------


def heartbeats(events: Sequence[ev.Event]) -> list[int]:
    """The heartbeat numbers of the DbgPrint events, in order."""
    numbers: list[int] = []
    for event in events:
        if isinstance(event, ev.DebugPrint):
            numbers.extend(int(match[1]) for match in HEARTBEAT.finditer(event.text))
    return numbers


def session_dirs(state_dir: Path, target: str) -> list[Path]:
    return sorted((state_dir / "targets" / target / "sessions").iterdir())


@dataclass
class WireCapture:
    inbound: list[bytes]  # chunks from the target, in order
    outbound: list[bytes]  # chunks to the target
    other_flags: list[str]  # directions of packets that were neither

    def decode(self, chunks: list[bytes]) -> tuple[list[KdPacket], list[NoiseDetected], int]:
        """The packets in one direction's bytes, the noise between them, and break-in bytes."""
        decoder = PacketDecoder()
        packets: list[KdPacket] = []
        noise: list[NoiseDetected] = []
        break_ins = 0
        stream = decoder.receive_data(b"".join(chunks), 0.0) + decoder.handle_timer(1e9)
        for item in stream:
            if isinstance(item, PacketDecoded):
                packets.append(item.packet)
            elif isinstance(item, NoiseDetected):
                noise.append(item)
            elif isinstance(item, BreakInByte):
                break_ins += 1
        return packets, noise, break_ins


def read_wire(path: Path) -> WireCapture:
    """A wire.pcapng read back with the `pcapng` library (independent of cartd's writer)."""
    capture = WireCapture([], [], [])
    with open(path, "rb") as handle:
        scanner = FileScanner(handle)
        for block in scanner:
            if not isinstance(block, blocks.EnhancedPacket):
                continue
            # The library's own reading of the flags word (pcapng spec, epb_flags bits 0-1).
            direction = block.options["epb_flags"].inout
            if direction == "inbound":
                capture.inbound.append(bytes(block.packet_data))
            elif direction == "outbound":
                capture.outbound.append(bytes(block.packet_data))
            else:
                capture.other_flags.append(direction)
    return capture


# --- a serial port under /dev that can be unplugged and plugged back ------------------------------


def point(link: Path, slave: str) -> None:
    """Make `link` name `slave`, replacing what it named (atomically, as udev does)."""
    temporary = link.with_name(link.name + ".new")
    os.symlink(slave, temporary)
    os.replace(temporary, link)
