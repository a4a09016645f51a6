"""A UNIX socket file that only the daemon's user and one group may use.

The control socket and each target's KD relay socket are made the same way. The socket is
bound, given its group and mode, and only then listens (the caller does that): a connection
attempt before listen() is refused, so nobody outside the group can slip in while it is made.
A socket file left by a daemon that died is removed; one that answers is not.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import socket
import stat
import struct
from pathlib import Path

log = logging.getLogger(__name__)

# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107


class SocketFileError(Exception):
    """The socket cannot be set up; the message says why and what to do."""


class SocketFile:
    def __init__(self, path: Path, group: str | None, *, what: str) -> None:
        """`group`: whose members may connect besides the daemon's own user (None, or a group
        that does not exist: the daemon's user only). `what` names the socket in messages."""
        self.path = path
        self.group = group
        self.what = what
        self._inode: int | None = None  # of our socket file, so remove() removes only ours

    def bind(self) -> socket.socket:
        """A bound, restricted, not yet listening socket. Raises SocketFileError."""
        size = len(os.fsencode(self.path))
        if size > MAX_SOCKET_PATH_BYTES:
            raise SocketFileError(
                f"{self.what} path {self.path} is {size} bytes; a UNIX socket path holds "
                f"at most {MAX_SOCKET_PATH_BYTES}: choose a shorter directory"
            )
        group_id = self._group_id()
        self._make_directory(group_id)
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(self.path))
        except OSError as error:
            sock.close()
            if error.errno == errno.EADDRINUSE:
                raise SocketFileError(f"another cartd is already running on {self.path}") from error
            raise SocketFileError(
                f"cannot create {self.what} {self.path}: {error.strerror}"
            ) from error
        self._inode = os.lstat(self.path).st_ino
        self._restrict(group_id)
        return sock

    def remove(self) -> None:
        # If another daemon has since put its own socket at this path, that one stays.
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    def _group_id(self) -> int | None:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            log.info(
                "there is no group %r: only this user can use %s %s",
                self.group,
                self.what,
                self.path,
            )
            return None

    def _make_directory(self, group_id: int | None) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o750, parents=True)
        except FileExistsError:
            # Someone else's directory (systemd's RuntimeDirectory=, a state directory): its
            # owner chose its mode.
            return
        # mkdir applied the umask; the group needs its x bit exactly to reach the socket.
        os.chmod(directory, 0o750)
        if group_id is not None:
            with contextlib.suppress(PermissionError):
                os.chown(directory, -1, group_id)

    def _remove_stale_socket(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise SocketFileError(
                f"{self.path} exists and is not a socket: remove it or choose another path "
                f"for {self.what}"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(os.fspath(self.path))
        except ConnectionRefusedError:
            log.info("removing stale socket %s: nothing listens on it", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except FileNotFoundError:
            return
        except BlockingIOError:
            pass  # a listener whose backlog is full: alive, and busy
        except PermissionError as error:
            raise SocketFileError(
                f"cannot tell whether another cartd is running on {self.path} "
                f"({error.strerror}): stop it, or remove the file if it is stale"
            ) from error
        finally:
            probe.close()
        raise SocketFileError(f"another cartd is already running on {self.path}")

    def _restrict(self, group_id: int | None) -> None:
        if group_id is not None:
            try:
                os.chown(self.path, -1, group_id)
            except PermissionError as error:
                log.warning(
                    "cannot give %s %s to group %r (%s): only this user can use it",
                    self.what,
                    self.path,
                    self.group,
                    error.strerror,
                )
            else:
                os.chmod(self.path, 0o660)
                return
        os.chmod(self.path, 0o600)


def peer_credentials(sock: socket.socket | None) -> tuple[int, int] | None:
    """The (pid, uid) the kernel recorded for the peer of a connected UNIX socket."""
    if sock is None:
        return None
    try:
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, _gid = struct.unpack("3i", credentials)
    return pid, uid
