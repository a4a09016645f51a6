"""`cartd dump TARGET [--triage|--full] [--wait]`: have the daemon write a crash dump.

A full dump over serial takes hours to days (11 KB/s), so the estimate is shown first and a
full dump that would take longer than LONG_DUMP_SECONDS needs a yes (or --yes). With --wait the
command stays until the dump is written, with a progress bar on a terminal and a line every
few seconds otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cartd import events as ev
from cartd.client_commands import add_socket_arguments, run_client, socket_path
from cartd.control.client import ControlClient
from cartd.control.protocol import EventsDropped
from cartd.events import format_duration

LONG_DUMP_SECONDS = 600.0
PLAIN_PROGRESS_INTERVAL = 10.0  # seconds between progress lines when not on a terminal
BAR_WIDTH = 30
REPLAY = 1000  # as many recent events as a daemon keeps


def add_arguments(commands: Any) -> None:
    dump = commands.add_parser(
        "dump",
        help="write a crash dump of a stopped target",
        description="Read a stopped target's memory over its link and write a 64-bit Windows "
        "kernel dump (.dmp) that WinDbg opens, under <state_dir>/targets/TARGET/dumps/. A "
        "triage dump holds what a debugger needs for the bugcheck, the stacks and the module "
        "list (the default over serial, where a full dump takes days); a full dump holds every "
        "page (the default over KDNET). Interrupted dumps resume, or keep what they read.",
    )
    add_socket_arguments(dump)
    dump.add_argument("target", metavar="TARGET", help="target id (see `cartd status`)")
    kind = dump.add_mutually_exclusive_group()
    kind.add_argument("--triage", dest="kind", action="store_const", const="triage")
    kind.add_argument("--full", dest="kind", action="store_const", const="full")
    dump.add_argument("--wait", action="store_true", help="stay until it is written")
    dump.add_argument("--yes", action="store_true", help="do not ask before a long dump")
    dump.add_argument(
        "--cancel",
        action="store_true",
        help="stop the dump being read; what was read is kept (it resumes at the next "
        "`cartd dump` of the same stop, or becomes a dump of what was read)",
    )
    dump.set_defaults(run=run_dump, kind="auto")


def run_dump(args: argparse.Namespace) -> int:
    return run_client(_dump(args))


async def _dump(args: argparse.Namespace) -> int:
    async with await ControlClient.connect(socket_path(args)) as client:
        if args.cancel:
            stopped = await client.call("dump", target=args.target, cancel=True)
            print(f"cartd: stopped {stopped['path']}; what was read is kept", file=sys.stderr)
            return 0
        plan = await client.call("dump", target=args.target, kind=args.kind, estimate_only=True)
        seconds = plan.get("estimate_seconds")
        print(
            f"cartd: a {plan['kind']} dump of {args.target}: {plan['pages']} pages "
            f"({plan['bytes'] / (1 << 20):.1f} MiB)"
            + (f", about {format_duration(seconds)} at this link's speed" if seconds else ""),
            file=sys.stderr,
        )
        if seconds and seconds > LONG_DUMP_SECONDS and not args.yes and not _confirmed():
            print("cartd: not started", file=sys.stderr)
            return 1
        asked_at = ev.utc_now()
        started = await client.call("dump", target=args.target, kind=plan["kind"])
        print(f"cartd: writing {started['path']}", file=sys.stderr)
        if not args.wait:
            return 0
        return await _follow(client, args.target, started["path"], since=asked_at)


def _confirmed() -> bool:
    if not sys.stdin.isatty():
        print("cartd: that is long; add --yes to start it anyway", file=sys.stderr)
        return False
    answer = input("Start it? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _follow(client: ControlClient, target: str, path: str, *, since: str) -> int:
    """Progress until the dump is written or stops. The subscription replays what the daemon
    kept, so a dump that ended before it began is still seen; events from before `since` (an
    earlier, interrupted attempt at the same path) are not this dump's."""
    on_terminal = sys.stderr.isatty()
    last_line = 0.0
    async for item in client.events(replay=REPLAY, target=target):
        if isinstance(item, EventsDropped) or getattr(item, "path", None) != path:
            continue
        if item.time < since:
            continue
        if isinstance(item, ev.DumpProgress):
            now = time.monotonic()
            if on_terminal:
                print(f"\r{_bar(item)}", end="", file=sys.stderr, flush=True)
            elif now - last_line >= PLAIN_PROGRESS_INTERVAL:
                print(ev.describe(item), file=sys.stderr)
                last_line = now
        elif isinstance(item, ev.DumpWritten | ev.DumpStopped):
            if on_terminal:
                print(file=sys.stderr)
            print(f"cartd: {ev.describe(item)}", file=sys.stderr)
            return 0 if isinstance(item, ev.DumpWritten) else 1
    return 1


def _bar(progress: ev.DumpProgress) -> str:
    share = progress.pages_done / progress.pages if progress.pages else 1.0
    filled = round(share * BAR_WIDTH)
    eta = (
        f" {format_duration(progress.eta_seconds)} left" if progress.eta_seconds is not None else ""
    )
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%} "
        f"{progress.bytes_done / (1 << 20):.1f} MiB at {progress.rate / 1024:.1f} KiB/s{eta}  "
    )
