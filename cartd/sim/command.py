"""`cartd sim`: serve a simulated Windows target on a pty, a serial device, a UNIX socket, or
over KDNET (encrypted UDP, poking a debugger host as `bcdedit /dbgsettings net` configures)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from cartd.kd.dialect import KDNET, SERIAL
from cartd.kd.kdnet.handshake import PeerAddress
from cartd.kd.kdnet.keys import LARGEST_WORD, MAX_WORD_DIGITS, KdnetKey, KdnetKeyError, parse_key
from cartd.links.streams import open_pty_pair, open_serial
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.line import FaultRates
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer, serve_unix_socket
from cartd.sim.target import Scenario, SimulatedTarget

SCENARIOS = {
    "quiet": "boot, then run silently (only break-ins and requests wake it)",
    "chatty": "boot, a DbgPrint heartbeat every 2 s, a driver loaded and unloaded every 5 s",
    "bugcheck": "like chatty, then bug check after --bugcheck-after seconds (default 5)",
}
_SIZE_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
# bcdedit's generated key words are 13 base-36 digits (kdnet.md section 1): values from 36**12
# (the smallest 13-digit word) up to 2**64 - 1 (the largest a word may hold).
_SMALLEST_GENERATED_WORD = 36 ** (MAX_WORD_DIGITS - 1)
_LARGEST_WORD_VALUE = int(LARGEST_WORD, 36)


def parse_size(text: str) -> int:
    """'4G', '512M', '1048576' -> bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = _SIZE_SUFFIXES.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in _SIZE_SUFFIXES else text
    try:
        value = int(float(digits) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4G or 512M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("memory size must be positive")
    return value


def parse_int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number: {text!r} (0x9F and 159 both work)"
        ) from None


def parse_parameters(text: str) -> tuple[int, int, int, int]:
    values = [parse_int(part) for part in text.split(",")]
    if len(values) != 4:
        raise argparse.ArgumentTypeError("give exactly four parameters, comma-separated")
    return (values[0], values[1], values[2], values[3])


def parse_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("noise rate is a probability between 0 and 1")
    return value


def parse_host_port(text: str) -> PeerAddress:
    """'192.168.2.1:50000' -> ('192.168.2.1', 50000): bcdedit's hostip and port."""
    host, _, port_text = text.rpartition(":")
    try:
        address = ipaddress.IPv4Address(host)
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an IPv4 HOST:PORT: {text!r} (bcdedit's hostip and port, e.g. 127.0.0.1:50000)"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return (str(address), port)


def parse_port(text: str) -> int:
    port = parse_int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 0 and 65535")
    return port


def parse_kdnet_key(text: str) -> KdnetKey:
    try:
        return parse_key(text)
    except KdnetKeyError as error:
        # The message names a bad word only when it cannot be part of a working key.
        raise argparse.ArgumentTypeError(str(error)) from None


def generate_key() -> str:
    """A random KDNET key as `bcdedit /dbgsettings net ... newkey` writes one: four base-36
    words of 13 digits, each below 2**64 (kdnet.md section 1)."""
    span = _LARGEST_WORD_VALUE + 1 - _SMALLEST_GENERATED_WORD
    return ".".join(_base36(_SMALLEST_GENERATED_WORD + secrets.randbelow(span)) for _ in range(4))


def _base36(value: int) -> str:
    digits = ""
    while value:
        value, digit = divmod(value, 36)
        digits = _BASE36[digit] + digits
    return digits or "0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--pty",
        action="store_true",
        help="serve on a new pseudo-terminal and print its path (the default)",
    )
    where.add_argument(
        "--device",
        metavar="PATH",
        help="serve on this serial device, e.g. /dev/ttyUSB0 (a null-modem "
        "cable to the cart makes a lab target)",
    )
    where.add_argument(
        "--unix",
        metavar="PATH",
        help="listen on this UNIX stream socket, the form `ntoseye -b kd --connect PATH` uses",
    )
    where.add_argument(
        "--kdnet",
        type=parse_host_port,
        metavar="HOST:PORT",
        help="serve over KDNET (encrypted UDP) as a target set up with `bcdedit /dbgsettings "
        "net hostip:HOST port:PORT`: poke the debugger listening there, e.g. "
        "`ntoseye -b kdnet --connect HOST:PORT`",
    )
    parser.add_argument(
        "--key",
        type=parse_kdnet_key,
        metavar="KEY",
        help="with --kdnet: the key, four base-36 words such as 1.2.3.4 (visible to other "
        "users in the process list); without it a random key is made and printed once, as "
        "bcdedit shows it",
    )
    parser.add_argument(
        "--source-port",
        type=parse_port,
        metavar="N",
        default=0,
        help="with --kdnet: send from this UDP port (default: an ephemeral one; a real target "
        "uses PORT, which a debugger on this machine already holds)",
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="chatty",
        help="what the target does by itself: "
        + "; ".join(f"{name}: {text}" for name, text in SCENARIOS.items()),
    )
    parser.add_argument(
        "--bugcheck",
        type=parse_int,
        metavar="CODE",
        default=0x9F,
        help="bug check code for the bugcheck scenario (default 0x9F)",
    )
    parser.add_argument(
        "--bugcheck-params",
        type=parse_parameters,
        metavar="P1,P2,P3,P4",
        help="its four parameters (default: plausible values for the code)",
    )
    parser.add_argument(
        "--bugcheck-after",
        type=float,
        metavar="SECONDS",
        default=5.0,
        help="seconds after boot at which it bug checks (default 5)",
    )
    parser.add_argument(
        "--print-interval",
        type=float,
        metavar="SECONDS",
        default=2.0,
        help="seconds between heartbeat DbgPrints in the chatty and bugcheck scenarios; 0 "
        "prints as fast as the line allows (default 2)",
    )
    parser.add_argument(
        "--noise",
        type=parse_rate,
        metavar="RATE",
        default=0.0,
        help="probability that each packet is damaged on the line, in both "
        "directions: bit flips, dropped bytes, duplicates, losses and "
        "garbage bursts in equal parts (default 0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed for everything random: kernel base, noise (default 1)",
    )
    parser.add_argument(
        "--baud",
        type=int,
        default=115200,
        help="pace both directions like a UART at this rate, 10 bits a byte; "
        "0 for no pacing (default 115200); does not apply to --kdnet",
    )
    parser.add_argument(
        "--memory",
        type=parse_size,
        default=parse_size("4G"),
        metavar="SIZE",
        help="physical memory of the simulated machine, e.g. 4G or 512M; "
        "pages cost nothing until touched (default 4G)",
    )
    parser.add_argument("--processors", type=int, default=2, help="processor count (default 2)")
    parser.add_argument(
        "--kernel-image",
        type=Path,
        metavar="PE",
        help="load this x64 PE as ntoskrnl.exe and place kernel data where it "
        "says, so a debugger with its PDB can make sense of the target",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        metavar="N",
        help="stop after N seconds (default: run until interrupted)",
    )


def build_target(args: argparse.Namespace) -> SimulatedTarget:
    kdnet = args.kdnet is not None
    machine = SimulatedMachine(
        MachineConfig(
            seed=args.seed,
            memory_size_bytes=args.memory,
            processors=args.processors,
            kernel_image=args.kernel_image,
        )
    )
    scenario = Scenario(
        print_interval=None if args.scenario == "quiet" else args.print_interval,
        module_interval=None if args.scenario == "quiet" else 5.0,
        bugcheck_after=args.bugcheck_after if args.scenario == "bugcheck" else None,
        bugcheck_code=args.bugcheck,
        bugcheck_parameters=args.bugcheck_params,
    )
    return SimulatedTarget(
        machine,
        scenario,
        seed=args.seed,
        noise=FaultRates.uniform(args.noise),
        # KDNET carries whole datagrams at network speed: no UART to pace.
        seconds_per_byte=10 / args.baud if args.baud and not kdnet else 0.0,
        dialect=KDNET if kdnet else SERIAL,
    )


def run(args: argparse.Namespace) -> int:
    if args.processors < 1:
        print("cartd sim: --processors must be at least 1", file=sys.stderr)
        return 2
    if args.kdnet is None and (args.key is not None or args.source_port):
        print("cartd sim: --key and --source-port go with --kdnet", file=sys.stderr)
        return 2
    try:
        target = build_target(args)
    except (OSError, ValueError) as error:
        print(f"cartd sim: {error}", file=sys.stderr)
        return 2
    if args.kdnet is not None:
        return asyncio.run(_serve_kdnet(args, target))
    return asyncio.run(_serve(args, target))


def _notice(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} sim: {text}", file=sys.stderr, flush=True)


def _stop_on_signals() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _run_until_stopped(stop: asyncio.Event, seconds: float | None) -> None:
    with contextlib.suppress(TimeoutError):  # --seconds ran out
        await asyncio.wait_for(stop.wait(), seconds)


async def _serve_kdnet(args: argparse.Namespace, target: SimulatedTarget) -> int:
    stop = _stop_on_signals()
    host: PeerAddress = args.kdnet
    generated = generate_key() if args.key is None else None
    key: KdnetKey = parse_key(generated) if generated is not None else args.key
    # Send from the loopback address to a debugger on this machine, else from every interface.
    local = "127.0.0.1" if ipaddress.IPv4Address(host[0]).is_loopback else "0.0.0.0"
    server = KdnetSimServer(target, key, host=host, on_notice=_notice)
    try:
        source = await server.start((local, args.source_port))
    except OSError as error:
        print(f"cartd sim: cannot serve: {error}", file=sys.stderr)
        server.close()
        return 1
    # The generated key is shown once, here, as `bcdedit /dbgsettings` shows it to the engineer
    # who must type it into the debugger; it goes nowhere else.
    keyed = f"with key {generated}" if generated is not None else "with the --key key"
    print(
        f"cartd sim: simulated Windows target on KDNET, poking {host[0]}:{host[1]} {keyed} "
        f"(from {source[0]}:{source[1]}); Ctrl-C to stop",
        flush=True,
    )
    try:
        await _run_until_stopped(stop, args.seconds)
    finally:
        server.close()
    return 0


async def _serve(args: argparse.Namespace, target: SimulatedTarget) -> int:
    stop = _stop_on_signals()
    server = SimServer(target, baud=args.baud or None, on_notice=_notice)
    pacing = f"paced at {args.baud} baud" if args.baud else "unpaced"
    listener: asyncio.AbstractServer | None = None
    attached: asyncio.Task[None] | None = None
    try:
        if args.unix:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.unix)
            listener = await serve_unix_socket(server, args.unix)
            where = f"UNIX socket {args.unix}"
        elif args.device:
            stream = open_serial(args.device, args.baud or 115200)
            attached = server.attach(stream)
            where = f"serial device {args.device}"
        else:
            stream, path = open_pty_pair()
            attached = server.attach(stream)
            where = f"pseudo-terminal {path}"
    except OSError as error:
        print(f"cartd sim: cannot serve: {error}", file=sys.stderr)
        server.close()
        return 1
    print(f"cartd sim: simulated Windows target on {where} ({pacing}); Ctrl-C to stop", flush=True)
    server.start()
    try:
        await _run_until_stopped(stop, args.seconds)
    finally:
        server.close()
        if attached is not None:
            attached.cancel()
        if listener is not None:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.unix)
    return 0
