"""`cartd attach-info TARGET` and `cartd take-over TARGET`: attach a debugger through the KD relay.

Each target's relay is a TCP port on the cart (loopback unless `[relay] bind` says otherwise)
and a UNIX socket, both speaking serial KD. `attach-info` prints where they are, who owns the
target, and the lines an engineer pastes: the SSH tunnel and the WinDbg, kd and ntoseye
commands. `take-over` disconnects the remote debugger that owns the target and keeps the relay
for the user who asked, for a minute.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cartd.client_commands import add_socket_arguments, run_client, socket_path
from cartd.control.client import ControlClient

OWNER_DAEMON = "cartd"  # the owner's name while no remote debugger is attached


def add_arguments(commands: Any) -> None:
    info = commands.add_parser(
        "attach-info",
        help="how to attach WinDbg, kd or ntoseye to a target through its KD relay",
        description="Show the target's KD relay (a TCP port on the cart and a UNIX socket, "
        "both speaking serial KD), who owns the target now, and the commands to paste: the "
        "`ssh -L` tunnel and the WinDbg line on your machine, ntoseye on the cart itself.",
    )
    add_socket_arguments(info)
    info.add_argument("target", metavar="TARGET", help="target id (see `cartd status`)")
    info.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    info.set_defaults(run=run_attach_info)

    take_over = commands.add_parser(
        "take-over",
        help="disconnect the remote debugger that owns a target and keep it for you",
        description="Disconnect the remote debugger attached to the target through its KD "
        "relay, and keep the relay for you for a minute: attach your own debugger then. A "
        "target left stopped stays stopped.",
    )
    add_socket_arguments(take_over)
    take_over.add_argument("target", metavar="TARGET", help="target id (see `cartd status`)")
    take_over.set_defaults(run=run_take_over)


def run_attach_info(args: argparse.Namespace) -> int:
    async def show() -> int:
        async with await ControlClient.connect(socket_path(args)) as client:
            info = await client.call("attach_info", target=args.target)
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(format_attach_info(info))
        return 0 if info.get("enabled", True) else 1

    return run_client(show())


def run_take_over(args: argparse.Namespace) -> int:
    async def take() -> int:
        async with await ControlClient.connect(socket_path(args)) as client:
            taken = await client.call("take_over", target=args.target)
            info = await client.call("attach_info", target=args.target)
        print(format_take_over(args.target, taken, info))
        return 0

    return run_client(take())


def format_attach_info(info: dict[str, Any]) -> str:
    target = info.get("target", "?")
    commands = info.get("commands") or {}
    if not info.get("enabled", True):
        return (
            f"{target}: the KD relay is off on this cart ([relay] enabled = false in the "
            "daemon's config)"
        )
    tcp = f"{info.get('bind')}:{info.get('port')}"
    lines = [
        f"{target}: KD relay",
        f"  TCP port {tcp}: {_state(info.get('tcp_state'), tcp)}",
    ]
    if info.get("unix_socket"):
        unix_socket = str(info["unix_socket"])
        lines.append(f"  UNIX socket {unix_socket}: {_state(info.get('unix_state'), unix_socket)}")
    lines.append(f"  owner: {owner_text(info)}")
    lines += [
        "",
        f"On your machine (if you reach the cart by another name than {info.get('hostname')},"
        " use that):",
        f"    {commands.get('ssh', '?')}",
        f"    {commands.get('windbg', '?')}",
        f"  or {commands.get('kd', '?')}",
    ]
    if commands.get("ntoseye"):
        lines += ["", "On the cart itself:", f"    {commands['ntoseye']}"]
    lines += [
        "",
        "One debugger at a time; to take the target from whoever owns it:",
        f"    {commands.get('take_over', '?')}",
    ]
    return "\n".join(lines)


def _state(state: object, where: str) -> str:
    """'listening', not 'listening on 127.0.0.1:5800' again after the address."""
    text = str(state or "unknown")
    return "listening" if text == f"listening on {where}" else text


def owner_text(info: dict[str, Any]) -> str:
    """'cartd (no remote debugger)', or 'alice (tcp 127.0.0.1:53122) since 14:02:11'."""
    owner = info.get("owner") or OWNER_DAEMON
    if owner == OWNER_DAEMON:
        return f"{OWNER_DAEMON} (no remote debugger attached)"
    since = info.get("since")
    if isinstance(since, int | float):
        owner += f" since {time.strftime('%H:%M:%S', time.localtime(since))}"
    return str(owner)


def format_take_over(target: str, taken: dict[str, Any], info: dict[str, Any]) -> str:
    previous = taken.get("previous")
    who = taken.get("reserved_for", "you")
    seconds = taken.get("seconds", 60.0)
    first = (
        f"{target}: disconnected {previous}"
        if previous
        else f"{target}: no remote debugger was attached"
    )
    commands = info.get("commands") or {}
    return "\n".join(
        [
            f"{first}; the relay is kept for {who} for the next {seconds:g} s.",
            "Attach now (through your `ssh -N -L` tunnel):",
            f"    {commands.get('windbg', '?')}",
        ]
    )
