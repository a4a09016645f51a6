"""Who is at the other end of a local connection to the relay.

A remote engineer reaches the relay through `ssh -L`: the connection then comes from sshd's
process for that engineer, which runs as their user. The kernel records the user of a TCP socket
(the `uid` column of /proc/net/tcp, readable by anyone) and of a UNIX socket peer (SO_PEERCRED),
so the owner of a target can be named ("alice") rather than only "127.0.0.1:53122".
"""

from __future__ import annotations

import ipaddress
import pwd
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_PROC_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


@dataclass(frozen=True, slots=True)
class Peer:
    address: str  # "tcp 127.0.0.1:53122" or "unix socket"
    uid: int | None
    user: str  # "" when not known

    @property
    def name(self) -> str:
        """How the owner is shown: "alice (tcp 127.0.0.1:53122)"."""
        return f"{self.user} ({self.address})" if self.user else self.address


def user_name(uid: int | None) -> str:
    if uid is None:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unix_peer(sock: socket.socket) -> Peer:
    try:
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return Peer("unix socket", None, "")
    pid, uid, _gid = struct.unpack("3i", credentials)
    return Peer(f"unix socket, pid {pid}", uid, user_name(uid))


def tcp_peer(local: tuple[str, int], remote: tuple[str, int]) -> Peer:
    """The user of the socket at `remote`, when it is on this machine (a tunnel's sshd)."""
    address = f"tcp {remote[0]}:{remote[1]}"
    uid = _local_socket_uid(remote, local)
    return Peer(address, uid, user_name(uid))


def _local_socket_uid(own: tuple[str, int], other: tuple[str, int]) -> int | None:
    """The uid of the local TCP socket whose address is `own` and whose peer is `other`."""
    wanted = {
        (own_form, other_form) for own_form in _proc_forms(own) for other_form in _proc_forms(other)
    }
    for table in _PROC_TCP:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and (fields[1], fields[2]) in wanted:
                return int(fields[7])
    return None


def _proc_forms(address: tuple[str, int]) -> set[str]:
    """An address as /proc/net/tcp or tcp6 writes it (IPv4 also as IPv6-mapped, as an IPv6
    socket connected to an IPv4 address shows it): each 32-bit word of the IP in host byte
    order, then the port."""
    ip = ipaddress.ip_address(address[0].split("%")[0])
    forms = {ip.packed}
    if isinstance(ip, ipaddress.IPv4Address):
        forms.add(ipaddress.IPv6Address(f"::ffff:{ip}").packed)
    elif ip.ipv4_mapped is not None:
        forms.add(ip.ipv4_mapped.packed)
    return {f"{_proc_words(packed)}:{address[1]:04X}" for packed in forms}


def _proc_words(packed: bytes) -> str:
    words = [packed[i : i + 4] for i in range(0, len(packed), 4)]
    return "".join(word[::-1].hex().upper() for word in words)
