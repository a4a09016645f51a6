"""Where things live in the state directory (architecture, "On disk").

```
<state>/targets/<target-id>/identity.json
<state>/targets/<target-id>/sessions/<utc-timestamp>/{events.jsonl,console.log,wire.pcapng}
<state>/targets/<target-id>/dumps/
```

Session directories are named after the UTC second the session started (`20261201T071419Z`); a
second session started in the same second gets `-2`, then `-3`, ... . `session_sort_key()`
orders them by start time, which is how quota pruning finds the oldest.

Target ids become directory names percent-encoded (`urllib.parse.quote`), so an id that contains
a link name such as `serial:/dev/ttyUSB0` stays one directory and maps back to the same name.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from cartd.capture.files import fsync_directory, make_directories_durably

TARGETS = "targets"
SESSIONS = "sessions"
DUMPS = "dumps"
IDENTITY_NAME = "identity.json"
JOURNAL_NAME = "events.jsonl"
CONSOLE_NAME = "console.log"
WIRE_NAME = "wire.pcapng"
# The live capture's name: a crash leaves this, never a `wire.pcapng` with a torn block.
WIRE_PARTIAL_NAME = WIRE_NAME + ".partial"

_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_SESSION_NAME = re.compile(r"(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<serial>[1-9]\d*))?")


def target_dir(state_dir: Path, target_id: str) -> Path:
    if not target_id:
        raise ValueError("a target id is needed to name its directory")
    name = quote(target_id, safe="")
    if name in {".", ".."}:
        name = name.replace(".", "%2E")
    return state_dir / TARGETS / name


def identity_path(state_dir: Path, target_id: str) -> Path:
    return target_dir(state_dir, target_id) / IDENTITY_NAME


def dumps_dir(state_dir: Path, target_id: str) -> Path:
    return target_dir(state_dir, target_id) / DUMPS


def session_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_STAMP_FORMAT)


def session_sort_key(name: str) -> tuple[str, int] | None:
    """(start stamp, serial) for a session directory name; None for anything else."""
    match = _SESSION_NAME.fullmatch(name)
    if match is None:
        return None
    return match["stamp"], int(match["serial"] or 1)


def _session_dir(sessions: Path, stamp: str, serial: int) -> Path:
    return sessions / (stamp if serial == 1 else f"{stamp}-{serial}")


def create_session_dir(state_dir: Path, target_id: str, started: datetime) -> Path:
    """Create and return a new, empty session directory (and its parents) durably."""
    sessions = target_dir(state_dir, target_id) / SESSIONS
    make_directories_durably(sessions)
    stamp = session_stamp(started)
    serial = 1
    while True:
        candidate = _session_dir(sessions, stamp, serial)
        try:
            os.mkdir(candidate)
        except FileExistsError:
            serial += 1
            continue
        fsync_directory(sessions)
        return candidate


def unused_session_dir(state_dir: Path, target_id: str, started: datetime) -> Path:
    """The name `create_session_dir()` would pick, without creating anything (for a recorder
    that cannot create it yet and will try again later)."""
    sessions = target_dir(state_dir, target_id) / SESSIONS
    stamp = session_stamp(started)
    serial = 1
    while os.path.lexists(_session_dir(sessions, stamp, serial)):
        serial += 1
    return _session_dir(sessions, stamp, serial)


def session_dirs(state_dir: Path) -> list[Path]:
    """Every session directory of every target, oldest first; unreadable parts are skipped."""
    found: list[tuple[tuple[str, int], Path]] = []
    for target in _subdirectories(state_dir / TARGETS):
        for session in _subdirectories(target / SESSIONS):
            key = session_sort_key(session.name)
            if key is not None:
                found.append((key, session))
    found.sort(key=lambda item: item[0])
    return [session for _, session in found]


def _subdirectories(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
