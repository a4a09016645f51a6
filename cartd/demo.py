"""`cartd demo`: a simulated Windows target and cartd's KD host on one pseudo-terminal.

The simulator serves the target on the master side of a new pty, paced like a 115200 baud
null-modem cable; the host opens the slave side as a serial port, exactly as it would open
/dev/ttyUSB0, and reports what the target says: DbgPrint lines, module loads, stops and the
bugcheck with its code, name and parameters. It keeps the target alive by continuing every stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from cartd.daemon.host_driver import HostDriver, KdRequestError
from cartd.kd.events import DebugPrint, HostEvent, ProtocolNoise, StateChanged, TargetRebooted
from cartd.kd.host import KdHost
from cartd.kd.stops import StopReason
from cartd.links.streams import open_pty_pair, open_serial
from cartd.sim.command import parse_int, parse_rate
from cartd.sim.line import FaultRates
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer
from cartd.sim.target import Scenario, SimulatedTarget

BAUD = 115200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=20.0, metavar="N", help="stop after N seconds (default 20)"
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
        default=8.0,
        metavar="SECONDS",
        help="seconds after boot at which it bug checks (default 8)",
    )
    parser.add_argument(
        "--noise",
        type=parse_rate,
        default=0.0,
        metavar="RATE",
        help="probability that a packet is damaged on the line (default 0)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated machine")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per event instead of text lines"
    )


class _Printer:
    def __init__(self, as_json: bool, started: float) -> None:
        self._json = as_json
        self._started = started
        self._colour = sys.stdout.isatty() and not as_json

    def __call__(self, kind: str, text: str, fields: dict[str, object] | None = None) -> None:
        elapsed = time.monotonic() - self._started
        if self._json:
            print(
                json.dumps({"elapsed": round(elapsed, 3), "type": kind, **(fields or {})}),
                flush=True,
            )
            return
        label = f"{kind:<10}"
        if self._colour:
            label = f"\033[{_COLOURS.get(kind, '0')}m{label}\033[0m"
        print(f"{elapsed:7.2f}s {label} {text}", flush=True)

    def detail(self, text: str) -> None:
        """Indented lines under the last event, in text mode only."""
        if not self._json:
            for line in text.splitlines():
                print(f"{'':19}{line}", flush=True)


_COLOURS = {
    "bugcheck": "1;31",
    "stop": "33",
    "print": "0",
    "module": "36",
    "reboot": "35",
    "running": "32",
    "noise": "2",
}


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 0


async def _demo(args: argparse.Namespace) -> int:
    emit = _Printer(args.json, time.monotonic())
    machine = SimulatedMachine(MachineConfig(seed=args.seed, memory_size_bytes=1 << 30))
    scenario = Scenario(bugcheck_after=args.bugcheck_after, bugcheck_code=args.bugcheck)
    target = SimulatedTarget(
        machine,
        scenario,
        seed=args.seed,
        noise=FaultRates.uniform(args.noise),
        seconds_per_byte=10 / BAUD,
    )
    master, path = open_pty_pair()
    server = SimServer(target, baud=BAUD)
    server.attach(master)
    stream = open_serial(path, BAUD)
    driver = HostDriver(stream, KdHost(seconds_per_byte=10 / BAUD))
    reader = asyncio.create_task(driver.run())
    if not args.json:
        print(
            f"cartd demo: a simulated Windows target on {path} at {BAUD} baud; "
            f"it bug checks {args.bugcheck:#x} after {args.bugcheck_after:g} s",
            flush=True,
        )
    server.start()
    driver.command(lambda now: driver.host.connect(now))
    try:
        await asyncio.wait_for(_follow(driver, emit), args.seconds)
    except TimeoutError:
        pass
    finally:
        reader.cancel()
        stream.close()
        server.close()
        master.close()
    if not args.json:
        counters = driver.host.noise_counters
        noise = ", ".join(f"{kind} {count}" for kind, count in sorted(counters.items()))
        print(
            f"cartd demo: done after {args.seconds:g} s; line noise absorbed: {noise or 'none'}",
            flush=True,
        )
    return 0


async def _follow(driver: HostDriver, emit: _Printer) -> None:
    while True:
        event = await driver.next_event()
        await _report(driver, event, emit)


async def _report(driver: HostDriver, event: HostEvent, emit: _Printer) -> None:
    if isinstance(event, DebugPrint):
        text = event.text.strip("\n")
        if text:
            emit("print", text, {"text": event.text})
    elif isinstance(event, TargetRebooted):
        emit("reboot", "the target rebooted")
    elif isinstance(event, ProtocolNoise):
        return
    elif isinstance(event, StateChanged):
        await _report_stop(driver, event, emit)


async def _report_stop(driver: HostDriver, stop: StateChanged, emit: _Printer) -> None:
    body = stop.message.body
    if stop.reason in (StopReason.MODULE_LOAD, StopReason.MODULE_UNLOAD):
        verb = "loaded" if stop.reason is StopReason.MODULE_LOAD else "unloaded"
        path = getattr(body, "path", "")
        base = getattr(body, "base_of_dll", 0)
        emit("module", f"{verb} {path} at {base:#x}", {"verb": verb, "path": path, "base": base})
    elif stop.bugcheck is not None:
        info = stop.bugcheck
        emit(
            "bugcheck",
            f"{info} ({stop.reason.value.replace('_', ' ')})",
            {
                "code": info.code,
                "name": info.name,
                "parameters": list(info.parameters),
                "break": stop.reason.value,
            },
        )
        if stop.reason is StopReason.BUGCHECK_FIRST:
            emit.detail(info.describe())
    else:
        emit(
            "stop",
            f"{stop.reason.value} on processor {stop.processor} at "
            f"{stop.message.program_counter:#x}",
            {"reason": stop.reason.value},
        )
    try:
        await driver.resume()
    except KdRequestError as error:
        emit("stop", f"could not continue the target: {error}")
