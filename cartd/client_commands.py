"""`cartd status`, `cartd events`, `cartd break|go|reboot`: clients of the daemon's control socket.

Human output is short (a table, one line per event, coloured by type on a terminal); `--json`
output is stable for scripts: the control protocol's objects as they are (docs/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from cartd import events as ev
from cartd.config import ConfigError, load_config
from cartd.control.client import ConnectionClosed, ControlClient, ControlConnectError
from cartd.control.protocol import ControlError, EventsDropped

_COLOURS = {
    "bugcheck": "1;31",
    "stopped": "33",
    "capture_error": "1;31",
    "target_rebooted": "35",
    "module_loaded": "36",
    "module_unloaded": "36",
    "running": "32",
    "target_connected": "1;32",
    "link_up": "32",
    "link_down": "31",
    "protocol_noise": "2",
    "link_probed": "2",
}


def add_socket_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", type=Path, metavar="PATH", help="the daemon's control socket")
    where.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="reach the daemon started with this --state-dir (as `cartd demo "
        "--state-dir DIR` does)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="read the socket path from this config (default /etc/cartd/cartd.toml if it exists)",
    )


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    config = load_config(args.config, state_dir_override=args.state_dir)
    return config.control_socket_path()


def add_arguments(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="links and targets at a glance",
        description="Show every link and target the daemon knows.",
    )
    add_socket_arguments(status)
    status.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    status.set_defaults(run=run_status)

    events = commands.add_parser(
        "events",
        help="what the targets said, recent and live",
        description="Print recent events (DbgPrint lines, module loads, stops, bugchecks ...), "
        "and with --follow keep printing new ones until Ctrl-C.",
    )
    add_socket_arguments(events)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--target", metavar="ID", help="only this target (or link)")
    events.add_argument(
        "--replay",
        type=int,
        default=50,
        metavar="N",
        help="how many recent events to show first (default 50)",
    )
    events.set_defaults(run=run_events)

    key = commands.add_parser(
        "key",
        help="give cartd the KDNET key of the target on a port",
        description="Give the daemon the key of the KDNET target that sends to PORT (the key "
        "`bcdedit /dbgsettings` shows on the target). It is checked, kept readable only by the "
        "daemon's user, and never shown again. KEY '-' reads it from standard input, which "
        "keeps it out of the shell history and the process list.",
    )
    add_socket_arguments(key)
    key.add_argument("port", type=int, metavar="PORT", help="the UDP port (bcdedit's port:)")
    key.add_argument("key", metavar="KEY", help="the key, or - to read it from standard input")
    key.set_defaults(run=run_key)

    for name, method, text in (
        ("break", "break", "break in to a running target and hold it for you"),
        ("go", "continue", "continue a stopped target (after a break-in or a held bugcheck)"),
        ("reboot", "reboot", "reboot the target (breaking in first if it runs)"),
    ):
        command = commands.add_parser(name, help=text, description=text[0].upper() + text[1:])
        add_socket_arguments(command)
        command.add_argument("target", metavar="TARGET", help="target id (see `cartd status`)")
        command.set_defaults(run=run_target_command, method=method)


def _fail(message: str) -> int:
    print(f"cartd: {message}", file=sys.stderr)
    return 1


def run_client(run: Any) -> int:
    try:
        result: int = asyncio.run(run)
        return result
    except ConfigError as error:
        return _fail(str(error))
    except ControlConnectError as error:
        return _fail(str(error))
    except ControlError as error:
        return _fail(error.message)
    except ConnectionClosed as error:
        return _fail(f"the daemon closed the connection: {error}")
    except KeyboardInterrupt:
        return 130


def run_status(args: argparse.Namespace) -> int:
    async def status() -> int:
        async with await ControlClient.connect(socket_path(args)) as client:
            result = await client.call("status")
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(format_status(result))
        return 0

    return run_client(status())


def _ago(moment: object) -> str:
    if not isinstance(moment, int | float):
        return "never"
    seconds = max(0.0, time.time() - moment)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def format_status(result: dict[str, Any]) -> str:
    rows = [("TARGET", "STATE", "BUILD", "KERNEL BASE", "LAST HEARD", "NOISE", "KD RELAY", "LINK")]
    for target in result.get("targets", []):
        identity = target.get("identity") or {}
        state = target["state"]
        if target.get("bugcheck"):
            bugcheck = target["bugcheck"]
            state += f" {bugcheck['code']} {bugcheck['name']}"
        if not target.get("recording", True):
            state += " (NOT RECORDING)"
        owner = target.get("owner")
        if owner and owner != "cartd":
            state += f", driven by {owner}"
        relay = target.get("relay") or {}
        rows.append(
            (
                target["target"],
                state,
                str(identity.get("build", "?")),
                identity.get("kernel_base", "?"),
                _ago(target.get("last_traffic")),
                str(sum(target.get("noise", {}).values())),
                f"port {relay['port']}" if relay.get("port") else "-",
                target["link"],
            )
        )
    lines = []
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]))
    else:
        lines.append("no targets yet")
    links = result.get("links", [])
    if links:
        lines.append("")
        lines.append("links:")
        lines.extend(f"  {link['device']}: {link['state']}" for link in links)
    lines.append("")
    lines.append(f"records in {result.get('state_dir', '?')}")
    return "\n".join(lines)


def run_events(args: argparse.Namespace) -> int:
    colour = sys.stdout.isatty() and not args.json

    def show(item: ev.Event | EventsDropped) -> None:
        if isinstance(item, EventsDropped):
            print(
                json.dumps({"dropped": item.count})
                if args.json
                else f"... {item.count} events missed (this terminal fell behind) ..."
            )
        else:
            print(format_event(item, as_json=args.json, colour=colour), flush=True)

    async def events() -> int:
        async with await ControlClient.connect(socket_path(args)) as client:
            if not args.follow:
                result = await client.call(
                    "history",
                    count=max(0, args.replay),
                    **({"target": args.target} if args.target else {}),
                )
                for data in result["events"]:
                    show(ev.event_from_json(data))
                return 0
            async for item in client.events(replay=max(0, args.replay), target=args.target):
                show(item)
        return 0

    return run_client(events())


def format_event(event: ev.Event, *, as_json: bool, colour: bool) -> str:
    if as_json:
        return json.dumps(event.to_json(), separators=(",", ":"))
    stamp = event.time[11:23]  # HH:MM:SS.mmm of the UTC timestamp
    subject = ev.event_subject(event)
    kind = f"{event.type:<16}"
    if colour:
        kind = f"\033[{_COLOURS.get(event.type, '0')}m{kind}\033[0m"
    prefix = f"{stamp} {subject} {kind} "
    # Multi-line DbgPrint text (the Fatal System Error banner) stays under its first line.
    lines = ev.describe(event).split("\n")
    indent = " " * (len(stamp) + len(subject) + 18)
    return prefix + ("\n" + indent).join(lines)


def run_key(args: argparse.Namespace) -> int:
    key = sys.stdin.readline().strip() if args.key == "-" else args.key

    async def command() -> int:
        async with await ControlClient.connect(socket_path(args)) as client:
            await client.call("key", port=args.port, key=key)
        print(
            f"cartd: key stored for KDNET port {args.port}; the target connects at its next "
            "poke (within 3 s)"
        )
        return 0

    return run_client(command())


def run_target_command(args: argparse.Namespace) -> int:
    async def command() -> int:
        async with await ControlClient.connect(socket_path(args)) as client:
            await client.call(args.method, target=args.target)
        print(
            f"{args.target}: {args.method} requested; `cartd events -f --target "
            f"{args.target}` shows what happens"
        )
        return 0

    return run_client(command())
