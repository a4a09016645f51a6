"""`cartd sim`: serve a simulated Windows target on a pty, a serial device or a UNIX socket."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from cartd.links.streams import open_pty_pair, open_serial
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
        "0 for no pacing (default 115200)",
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
        seconds_per_byte=10 / args.baud if args.baud else 0.0,
    )


def run(args: argparse.Namespace) -> int:
    if args.processors < 1:
        print("cartd sim: --processors must be at least 1", file=sys.stderr)
        return 2
    try:
        target = build_target(args)
    except (OSError, ValueError) as error:
        print(f"cartd sim: {error}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args, target))


def _notice(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} sim: {text}", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace, target: SimulatedTarget) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
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
        await asyncio.wait_for(stop.wait(), args.seconds)
    except TimeoutError:
        pass
    finally:
        server.close()
        if attached is not None:
            attached.cancel()
        if listener is not None:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.unix)
    return 0
