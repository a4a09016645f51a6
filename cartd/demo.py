"""`cartd demo`: the daemon and a simulated Windows target that bug checks, on one machine.

The simulator serves the target on the master side of a new pseudo-terminal, paced like a
115200 baud null-modem cable. The daemon is started on a temporary state directory (or
`--state-dir`) with that pty's other side as its only serial port, exactly as it would use
/dev/ttyUSB0 on a cart; it finds the KD traffic, connects, keeps the target alive, records
everything, and holds the target at the bugcheck. What you see is `cartd tui` (or, with
--no-tui or without a terminal, `cartd events --follow`): a client of the daemon's control socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

from cartd.client_commands import format_event
from cartd.config import CaptureConfig, Config, KdnetConfig, SerialConfig
from cartd.control.client import ControlClient
from cartd.control.protocol import EventsDropped
from cartd.daemon.command import configure_logging
from cartd.daemon.service import Daemon
from cartd.kd.dialect import KDNET
from cartd.kd.kdnet.keys import parse_key
from cartd.links.streams import open_pty_pair
from cartd.sim.command import generate_key, parse_int, parse_rate
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.line import FaultRates
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer
from cartd.sim.target import Scenario, SimulatedTarget

BAUD = 115200
LOOPBACK = "127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--link",
        choices=("serial", "kdnet"),
        default="serial",
        help="how the simulated target is connected: a null-modem cable (a "
        "paced pty) or KDNET (encrypted UDP on 127.0.0.1); default serial",
    )
    parser.add_argument(
        "--no-tui",
        action="store_true",
        help="print events as lines instead of showing the TUI (the default when standard "
        "output is not a terminal)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    parser.add_argument(
        "--seconds",
        type=float,
        metavar="N",
        help="stop after N seconds and exit 0 (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep the records here (default: a new temporary directory)",
    )
    parser.add_argument(
        "--bugcheck",
        type=parse_int,
        default=0x9F,
        metavar="CODE",
        help="bug check code the target raises (default 0x9F)",
    )
    parser.add_argument(
        "--bugcheck-after",
        type=float,
        default=6.0,
        metavar="SECONDS",
        help="seconds after boot at which it bug checks (default 6)",
    )
    parser.add_argument(
        "--noise",
        type=parse_rate,
        default=0.0,
        metavar="RATE",
        help="probability that a packet is damaged on the line (default 0)",
    )
    parser.add_argument(
        "--kernel-image",
        type=Path,
        metavar="PE",
        help="give the simulated target this x64 PE as its kernel",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated machine")


def run(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="cartd-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    args.tui = not (args.no_tui or args.json) and sys.stdin.isatty() and sys.stdout.isatty()
    if args.tui:
        # The screen belongs to the TUI: the daemon's log goes to a file beside the records.
        logging.basicConfig(filename=state_dir / "demo.log", force=True)
        logging.getLogger().setLevel(logging.WARNING)
    else:
        configure_logging(verbose=False)
        # The events are the demo's output; the daemon's own log only for real trouble.
        logging.getLogger().setLevel(logging.ERROR)
    try:
        target = _simulated_target(args)
    except (OSError, ValueError) as error:
        print(f"cartd demo: {error}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(args, target, state_dir.absolute()))
    print(f"cartd demo: the records are in {state_dir.absolute()}/targets/", file=sys.stderr)
    return 0


def _simulated_target(args: argparse.Namespace) -> SimulatedTarget:
    machine = SimulatedMachine(
        MachineConfig(seed=args.seed, memory_size_bytes=1 << 30, kernel_image=args.kernel_image)
    )
    scenario = Scenario(bugcheck_after=args.bugcheck_after, bugcheck_code=args.bugcheck)
    noise = FaultRates.uniform(args.noise)
    if args.link == "kdnet":
        return SimulatedTarget(machine, scenario, seed=args.seed, noise=noise, dialect=KDNET)
    return SimulatedTarget(
        machine, scenario, seed=args.seed, noise=noise, seconds_per_byte=10 / BAUD
    )


async def _demo(args: argparse.Namespace, target: SimulatedTarget, state_dir: Path) -> None:
    started = time.monotonic()
    link: _SerialLink | _KdnetLink
    if args.link == "kdnet":
        link = await _KdnetLink.start(target)
    else:
        link = _SerialLink(target)
    config = Config(
        state_dir=state_dir,
        state_dir_given=True,
        serial=SerialConfig(ports=link.serial_ports, probe_seconds=2.0, active_probe="all"),
        kdnet=link.kdnet,
        capture=CaptureConfig(fsync_interval=0.5),
    )
    daemon = Daemon(config)
    running = asyncio.create_task(daemon.run())
    if not args.json and not args.tui:
        print(
            f"cartd demo: a simulated Windows target {link.description}; it bug checks "
            f"{args.bugcheck:#x} after {args.bugcheck_after:g} s. Ctrl-C stops.",
            file=sys.stderr,
        )
        print(
            f"cartd demo: in another terminal: cartd status --state-dir {state_dir}",
            file=sys.stderr,
        )
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        await link.boot()
        if args.tui:
            await _tui(config, args.seconds)
            return
        watch = _watch(config, as_json=args.json, started=started)
        if args.seconds is None:
            await watch
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch, args.seconds)
    finally:
        daemon.stopping.set()
        await running
        link.close()


class _SerialLink:
    """The simulator on a pty master; the daemon opens the slave as its serial port."""

    def __init__(self, target: SimulatedTarget) -> None:
        self._master, path = open_pty_pair()
        self._server = SimServer(target, baud=BAUD)
        self._server.attach(self._master)
        self.serial_ports: tuple[str, ...] = (path,)
        self.kdnet = KdnetConfig(ports=())
        self.description = f"on {path} ({BAUD} baud 8N1)"

    async def boot(self) -> None:
        self._server.start()

    def close(self) -> None:
        self._server.close()
        self._master.close()


class _KdnetLink:
    """The simulator pokes a KDNET port on 127.0.0.1 with a new random key, which the daemon
    is given in its configuration (on a real cart: `cartd key PORT KEY`)."""

    def __init__(self, target: SimulatedTarget, port: int) -> None:
        self._key = generate_key()
        self._server = KdnetSimServer(target, parse_key(self._key), host=(LOOPBACK, port))
        self.serial_ports: tuple[str, ...] = ()
        self.kdnet = KdnetConfig(ports=(port,), interface=LOOPBACK, keys={port: self._key})
        self.description = f"on KDNET, poking {LOOPBACK}:{port}"

    @classmethod
    async def start(cls, target: SimulatedTarget) -> _KdnetLink:
        return cls(target, await _free_udp_port())

    async def boot(self) -> None:
        await self._server.start()

    def close(self) -> None:
        self._server.close()


async def _free_udp_port() -> int:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    transport.close()
    return port


async def _tui(config: Config, seconds: float | None) -> None:
    # Imported here: the printed mode (and every other command) starts faster without Textual.
    from cartd.tui.app import CartdApp

    app = CartdApp(config.control_socket_path())
    if seconds is not None:
        asyncio.get_running_loop().call_later(seconds, app.exit)
    await app.run_async()


async def _watch(config: Config, *, as_json: bool, started: float) -> None:
    colour = sys.stdout.isatty() and not as_json
    async with await ControlClient.connect(config.control_socket_path()) as client:
        first = True
        async for item in client.events(replay=1000):
            if isinstance(item, EventsDropped):
                continue
            if first and not as_json:
                print(
                    f"cartd demo: first event {time.monotonic() - started:.2f} s after start",
                    file=sys.stderr,
                )
                first = False
            print(format_event(item, as_json=as_json, colour=colour), flush=True)
