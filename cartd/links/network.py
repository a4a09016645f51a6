"""Network interfaces for KDNET listeners: which address an interface has now, and bringing a
USB-Ethernet (KDNET-EEM) interface up with the cart's address.

The address is asked of the kernel (SIOCGIFADDR, the interface's primary IPv4 address), which
needs no privileges; configuring one runs iproute2's `ip`, which needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import socket
import struct
from collections.abc import Sequence

_SIOCGIFADDR = 0x8915  # <linux/sockios.h>: get the interface's (primary) IPv4 address
_IFNAMSIZ = 16


def interface_address(name: str) -> str | None:
    """The interface's IPv4 address, or None if it has none or does not exist."""
    if not name or len(name.encode()) >= _IFNAMSIZ:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", name.encode())
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
        except OSError as error:
            if error.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENXIO):
                return None
            raise
    return socket.inet_ntoa(answer[20:24])


async def configure_interface(
    name: str, address: str, *, ip_command: Sequence[str] = ("ip",)
) -> str | None:
    """Give `name` the address `address` ("169.254.50.1/16") and bring it up, with
    `ip address replace` (idempotent) and `ip link set up`. Returns None when done, else what
    went wrong in a sentence for the operator."""
    for arguments in (
        ("address", "replace", address, "dev", name),
        ("link", "set", "dev", name, "up"),
    ):
        command = [*ip_command, *arguments]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            return (
                f"cannot run {command[0]} ({error.strerror}): iproute2's ip is needed "
                f"to configure {name}"
            )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            said = stderr.decode(errors="replace").strip() or f"exit status {process.returncode}"
            hint = (
                " (cartd needs CAP_NET_ADMIN for this: the service unit grants it)"
                if "not permitted" in said.lower()
                else ""
            )
            return f"`{' '.join(command)}` failed: {said}{hint}"
    return None
