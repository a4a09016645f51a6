"""`cartd links [--json]`: what is plugged into the cart now and what cartd makes of each.

Serial ports (stable name, driver, USB ids, the link's state), recognised USB debug devices
(what each is, whether cartd can use it and why not), and the network interfaces KDNET listens
on. The daemon answers (control method `links`); this only formats its answer.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cartd.client_commands import add_socket_arguments, run_client, socket_path
from cartd.control.client import ControlClient


def add_arguments(commands: Any) -> None:
    links = commands.add_parser(
        "links",
        help="serial ports, USB debug devices and KDNET interfaces present now",
        description="List what is plugged into the cart now and what cartd thinks each is: "
        "serial ports with their stable names, drivers and USB ids; USB debug devices (the "
        "USB 2.0 debug cable, xHCI debug devices, USB-Ethernet KDNET adapters), with the "
        "reason when cartd cannot use one; and the network interfaces KDNET listens on.",
    )
    add_socket_arguments(links)
    links.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    links.set_defaults(run=run_links)


def run_links(args: argparse.Namespace) -> int:
    async def show() -> int:
        async with await ControlClient.connect(socket_path(args)) as client:
            result = await client.call("links")
        print(json.dumps(result, indent=2) if args.json else format_links(result))
        return 0

    return run_client(show())


def format_links(result: dict[str, Any]) -> str:
    lines = [f"hotplug: {result.get('hotplug', '?')}", "", "serial ports:"]
    serial = result.get("serial") or []
    for port in serial:
        ids = f" [{port['usb_id']}]" if port.get("usb_id") else ""
        device = port.get("device") or "not present"
        lines.append(f"  {port['stable_name']}  ({device}{ids})")
        lines.append(f"    {port.get('what', '')}: {port.get('state', '')}")
        lines.append(f"    target {port.get('target')}, link {port.get('link')}")
        if port.get("latency"):
            lines.append(f"    {port['latency']}")
    if not serial:
        lines.append("  none")
    lines += ["", "USB debug devices:"]
    usb = result.get("usb") or []
    for device in usb:
        product = f" {device['product']}" if device.get("product") else ""
        mark = "" if device.get("supported") else "  UNSUPPORTED"
        lines.append(f"  {device['sys_name']} [{device['usb_id']}]{product}{mark}")
        lines.append(f"    {device.get('what', '')}")
        if device.get("action"):
            lines.append(f"    -> {device['action']}")
    if not usb:
        lines.append("  none")
    lines += ["", "KDNET network interfaces:"]
    network = result.get("network") or []
    for interface in network:
        address = interface.get("address") or "-"
        lines.append(f"  {interface['interface']} {address} ({interface.get('source')})")
        for listener in interface.get("listeners") or []:
            lines.append(f"    {listener['link']}: {listener['state']}")
        if interface.get("state"):
            lines.append(f"    {interface['state']}")
    if not network:
        lines.append("  none followed ([kdnet] interfaces; see `cartd status` for the others)")
    return "\n".join(lines)
