"""What an engineer elsewhere types to attach a debugger through a target's KD relay.

`cartd attach-info` and the TUI show this. The engineer's end of the tunnel uses the same port
number as the cart's, so one number is all there is to remember.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from cartd.daemon.relay import TargetRelay


def attach_info(relay: TargetRelay, *, enabled: bool) -> dict[str, Any]:
    settings = relay.settings
    hostname = socket.gethostname()
    port = settings.port
    # A relay bound to every address is still reached through the tunnel at the loopback.
    tunnel_to = "127.0.0.1" if ipaddress.ip_address(settings.bind).is_unspecified else settings.bind
    if ":" in tunnel_to:
        tunnel_to = f"[{tunnel_to}]"
    target = relay.target_id
    unix_socket = str(settings.unix_socket) if settings.unix_socket is not None else None
    commands = {
        "ssh": f"ssh -N -L {port}:{tunnel_to}:{port} {hostname}",
        "windbg": f"windbg -k com:ipport={port},port=127.0.0.1",
        "kd": f"kd -k com:ipport={port},port=127.0.0.1",
        "take_over": f"ssh {hostname} cartd take-over {target}",
    }
    if unix_socket is not None:
        commands["ntoseye"] = f"ntoseye -b kd --connect {unix_socket}"
    return {
        "target": target,
        "enabled": enabled,
        "hostname": hostname,
        **relay.status(),
        "unix_socket": unix_socket,
        "commands": commands,
    }
