"""Every event as a structured journald entry (docs/journald.md lists the fields and ids).

`journal_fields(event, ...)` is pure: it turns an event into the fields of one journal entry,
MESSAGE (what `cartd events` prints), PRIORITY, a fixed MESSAGE_ID per event type (so
`journalctl MESSAGE_ID=...` finds, say, every bugcheck the cart ever saw) and CARTD_* fields
(systemd.journal-fields(7): upper case, digits and underscores, not starting with `_`).
`JournalSink` sends them with systemd-python's `journal.send` when that is installed
(`cartd[systemd]`) and journald's socket exists; otherwise it sends nothing, and the stderr log
(which journald keeps for a service) is all there is.

DbgPrint lines are not sent unless asked for: a chatty driver prints thousands a second, and
journald's per-service rate limit (RateLimitBurst=, 10000 per 30 s by default) would then drop
the daemon's other entries, the bugcheck among them. They are in the target's console.log and
events.jsonl already.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

from cartd import events as ev

# Imported by name: the optional extra may be missing, and it ships no type information.
_systemd_journal: ModuleType | None
try:
    _systemd_journal = importlib.import_module("systemd.journal")
except ImportError:  # the optional extra is not installed
    _systemd_journal = None

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "cartd"

# One MESSAGE_ID per event type, made once with uuid.uuid4().hex and never changed: scripts and
# saved `journalctl` queries rely on them. A new event type gets a new id here and a line in
# docs/journald.md.
MESSAGE_IDS: dict[str, str] = {
    "link_up": "2bbdff7fbebb4eb5a5222686a17d9124",
    "link_down": "22b330d78cdf47e8b137a230da86e246",
    "link_probed": "b7dc852ab5e44469b960317337c68c3b",
    "target_connected": "e4470c5835864ac3ae36acef86b7dfee",
    "debug_print": "c3f0d35b2b4a4752b981d5e46fe5b249",
    "module_loaded": "9a5d5ea8aa3a452b9167ce2a7b8ab4b9",
    "module_unloaded": "bcb7ebd038414a8ba2c0754a46322641",
    "stopped": "18289a115a6845b2a0d47e0ca8dc2a2e",
    "bugcheck": "2c40e5cd86b54151bc01d0a5409465cc",
    "running": "9a440077c9cc4376b0a634f880e5b14b",
    "target_rebooted": "717f5a54e2c54e9391f3de1fa5a98c5a",
    "prompt": "cce76a95668d42af8996ff5f341cfdbb",
    "protocol_noise": "7fda1b09cdca483c80be6d5b4a925c56",
    "owner_changed": "fe2ba99c425b403f9a166195a2e49eb6",
    "remote_refused": "dc43a78646b7494aabec860236ce62e3",
    "capture_error": "1ec9868e52d647b38429766f41aff515",
    "capture_resumed": "9571c0f511c64b7a82f9a94788ccb7d3",
    "dump_started": "444b992713e249f2973d7623baa201ba",
    "dump_progress": "3c9a581b54964f5ca07247ffb4138d68",
    "dump_written": "824f24ee72a742b08e38e5a80e2e3387",
    "dump_stopped": "5c5af06274e449ee85eb2a4f13632efa",
}

# syslog(3) priorities, as PRIORITY= wants them, for the logging levels the daemon logs at.
_PRIORITIES = {
    logging.CRITICAL: 2,  # crit
    logging.ERROR: 3,  # err
    logging.WARNING: 4,  # warning
    logging.INFO: 6,  # info
    logging.DEBUG: 7,  # debug
}

_DUMP_EVENTS = (ev.DumpStarted, ev.DumpProgress, ev.DumpWritten, ev.DumpStopped)


def journal_priority(level: int) -> int:
    """The syslog priority of a logging level (a level between two counts as the lower)."""
    for known in sorted(_PRIORITIES, reverse=True):
        if level >= known:
            return _PRIORITIES[known]
    return _PRIORITIES[logging.DEBUG]


def journal_fields(event: ev.Event, *, level: int, link: str | None = None) -> dict[str, str]:
    """The journal entry for ``event``, logged at ``level`` (the daemon's logging level for its
    type). ``link`` is the target's link, for events that name only the target."""
    data = event.to_json()
    fields = {
        "MESSAGE": f"{ev.event_subject(event)}: {ev.describe(event)}",
        "MESSAGE_ID": MESSAGE_IDS[event.type],
        "PRIORITY": str(journal_priority(level)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "CARTD_EVENT": event.type,
        "CARTD_TIME": event.time,
    }
    target = getattr(event, "target", None)
    if isinstance(target, str):
        fields["CARTD_TARGET"] = target
    event_link = getattr(event, "link", None)
    if isinstance(event_link, str):
        fields["CARTD_LINK"] = event_link
    elif link:
        fields["CARTD_LINK"] = link
    device = getattr(event, "device", None)
    if isinstance(device, str):
        fields["CARTD_DEVICE"] = device
    match event:
        case ev.Bugcheck():
            fields["CARTD_BUGCHECK_CODE"] = f"0x{event.code:08X}"
            fields["CARTD_BUGCHECK_NAME"] = event.name
            for number, value in enumerate(event.parameters, start=1):
                fields[f"CARTD_BUGCHECK_P{number}"] = f"0x{value:016X}"
        case ev.OwnerChanged():
            fields["CARTD_OWNER"] = event.owner
            fields["CARTD_PREVIOUS_OWNER"] = event.previous
        case ev.TargetConnected():
            fields["CARTD_BUILD"] = str(event.build)
        case ev.CaptureError() | ev.CaptureResumed():
            fields["CARTD_PATH"] = event.path
        case _ if isinstance(event, _DUMP_EVENTS):
            fields["CARTD_DUMP_PATH"] = data["path"]
    return fields


def stderr_is_journal(environ: Mapping[str, str], stderr_fd: int = 2) -> bool:
    """Whether stderr is a stream into journald ($JOURNAL_STREAM, "dev:inode", names it:
    systemd.exec(5)); then a structured entry makes the plain log line of the same event a
    duplicate."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(stderr_fd)
    except OSError:
        return False
    return status.st_dev == int(device) and status.st_ino == int(inode)


class JournalSink:
    """Sends events to journald when it can. `send` is replaceable for tests of the logic
    alone; the default is systemd-python's `journal.send`."""

    def __init__(
        self,
        *,
        debug_print: bool = False,
        socket_path: Path = JOURNAL_SOCKET,
        environ: Mapping[str, str] | None = None,
        send: Callable[..., object] | None = None,
    ) -> None:
        self.debug_print = debug_print
        if send is None and _systemd_journal is not None and socket_path.exists():
            send = _systemd_journal.send
        self._send = send
        self.enabled = send is not None
        self.replaces_stderr = self.enabled and stderr_is_journal(
            os.environ if environ is None else environ
        )

    def send(self, event: ev.Event, *, level: int, link: str | None = None) -> bool:
        """Whether the event went to the journal."""
        if self._send is None or (isinstance(event, ev.DebugPrint) and not self.debug_print):
            return False
        fields = journal_fields(event, level=level, link=link)
        try:
            self._send(**fields)
        except OSError:  # journald restarting or gone: the stderr line still has it
            return False
        return True
