"""Telling systemd how the daemon is doing: sd_notify(3) for `Type=notify` (deploy/cartd.service).

What is sent, and when (sd_notify(3), systemd.service(5)):

1. `READY=1` once the control socket and the link listeners are up: systemd starts units
   ordered after cartd (the TUI) only then, and `systemctl start cartd` returns only then.
2. `STATUS=...`, one line that `systemctl status cartd` shows, e.g.
   "2 targets: srv12 bugchecked 0x9F, srv07 running"; sent when a target's state, owner or
   bugcheck changes, at most once every STATUS_MIN_SECONDS (the last change always goes out).
3. `WATCHDOG=1` every half of `WATCHDOG_USEC` (`WatchdogSec=`), from a task on the event loop:
   a loop that hangs stops the pings, and systemd kills and restarts the daemon.
4. `RELOADING=1` with `MONOTONIC_USEC=` while SIGHUP re-reads the configuration, then `READY=1`.
5. `STOPPING=1` when shutdown begins.

systemd-python (`pip install 'cartd[systemd]'`) sends the datagrams; it is optional so the
package installs where libsystemd's headers are missing. Without `NOTIFY_SOCKET` (not under
systemd: the demo, the tests, a shell) every call here does nothing. With `NOTIFY_SOCKET` but
without systemd-python, the daemon logs one error saying what to install, since systemd would
otherwise time out waiting for READY and kill a daemon that works.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from types import ModuleType

log = logging.getLogger("cartd")

# STATUS= changes with every stop and owner change; a target that breaks in and goes on many
# times a second must not flood PID 1 with datagrams.
STATUS_MIN_SECONDS = 1.0

# Imported by name: the optional extra may be missing, and it ships no type information.
_systemd_daemon: ModuleType | None
try:
    _systemd_daemon = importlib.import_module("systemd.daemon")
except ImportError:  # the optional extra is not installed
    _systemd_daemon = None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between `WATCHDOG=1` pings, half of `WATCHDOG_USEC` as sd_watchdog_enabled(3)
    advises; None when systemd expects none (no `WatchdogSec=`, or `WATCHDOG_PID` names
    another process, which happens when the variables leak into a child)."""
    usec_text = environ.get("WATCHDOG_USEC", "")
    if not usec_text.isdigit() or int(usec_text) == 0:
        return None
    pid_text = environ.get("WATCHDOG_PID", "")
    if pid_text and (not pid_text.isdigit() or int(pid_text) != pid):
        return None
    return int(usec_text) / 1e6 / 2


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, for `MONOTONIC_USEC=` with `RELOADING=1`."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class SystemdNotifier:
    """The daemon's side of sd_notify. `send` is replaceable for tests of the logic alone;
    the default is systemd-python's `daemon.notify`."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        send: Callable[[str], object] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self._send = send
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        if self.enabled and send is None:
            if _systemd_daemon is None:
                log.error(
                    "NOTIFY_SOCKET is set (systemd runs cartd as Type=notify), but "
                    "systemd-python is not installed, so cartd cannot tell systemd it is ready "
                    "and systemd will stop it: install cartd[systemd] "
                    "(pip install 'cartd[systemd]', which needs libsystemd-dev)"
                )
                self.enabled = False
            else:
                self._send = _systemd_daemon.notify
        self.watchdog_seconds = watchdog_interval(environ, os.getpid()) if self.enabled else None
        self._status_sent: str | None = None
        self._status_wanted: str | None = None
        self._status_sent_at = -STATUS_MIN_SECONDS
        self._status_timer: asyncio.TimerHandle | None = None

    def notify(self, message: str) -> None:
        if not self.enabled or self._send is None:
            return
        try:
            self._send(message)
        except OSError as error:  # PID 1 gone or its socket full: nothing to do but say so
            log.warning("cannot notify systemd (%s): %s", message.split("\n")[0], error)

    def ready(self) -> None:
        self.notify("READY=1")

    def reloading(self) -> None:
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> None:
        self.cancel_status()
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    async def run_watchdog(self) -> None:
        """Ping until cancelled. Runs on the event loop on purpose: if the loop is blocked, the
        pings stop and systemd restarts the daemon (WatchdogSec=)."""
        if self.watchdog_seconds is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_seconds)

    def status(self, line: str) -> None:
        """Set STATUS= to ``line``: now, or when STATUS_MIN_SECONDS have passed since the last
        one (then the newest line wanted by that time goes out)."""
        if not self.enabled:
            return
        self._status_wanted = line
        if self._status_timer is not None or line == self._status_sent:
            return
        loop = asyncio.get_running_loop()
        wait = self._status_sent_at + STATUS_MIN_SECONDS - loop.time()
        if wait <= 0:
            self._send_status()
        else:
            self._status_timer = loop.call_later(wait, self._send_status)

    def cancel_status(self) -> None:
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None

    def _send_status(self) -> None:
        self._status_timer = None
        line = self._status_wanted
        if line is None or line == self._status_sent:
            return
        self._status_sent = line
        self._status_sent_at = asyncio.get_running_loop().time()
        # sd_notify's assignments are newline-separated: the line must be one line.
        self.notify("STATUS=" + " ".join(line.split()))


def status_line(targets: list[tuple[str, str, str, int | None]]) -> str:
    """`systemctl status`'s one line: (target, state, owner, bugcheck code or None) each.
    E.g. "2 targets: srv12 bugchecked 0x9F, srv07 running (owned by alice)"."""
    if not targets:
        return "no targets yet; listening"
    parts = []
    for target, state, owner, bugcheck in targets:
        text = f"{target} {state}"
        if bugcheck is not None:
            text = f"{target} bugchecked {bugcheck:#X}".replace("0X", "0x")
        if owner != "cartd":
            text += f" (owned by {owner})"
        parts.append(text)
    count = f"{len(targets)} target" + ("s" if len(targets) != 1 else "")
    return f"{count}: {', '.join(parts)}"
