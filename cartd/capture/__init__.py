"""The on-disk record of every target: event journal, console log, wire capture, identity.

Plain synchronous file I/O for the daemon to call from its event loop (nothing here blocks for
long or uses asyncio). The daemon needs three things:

- `SessionRecorder` per target session (`recorder.py`): journal, console, wire, identity; never
  raises on a write error, returns `CaptureError` / `CaptureResumed` events to publish instead.
- `recover_state_dir()` once at start (`recover.py`): finishes files a crash left half-written.
- `prune_sessions()` now and then (`quota.py`): keeps the state directory under its quota.

The other modules hold one file format or one rule each: `layout` (paths), `files` (durable
writes), `journal`, `console`, `wire`, `identity`.
"""

from __future__ import annotations

from cartd.capture.journal import JournalContents, JournalProblem, read_journal, scan_journal
from cartd.capture.quota import PruneResult, disk_usage, prune_sessions
from cartd.capture.recorder import SessionRecorder
from cartd.capture.recover import RecoveryNote, recover_state_dir

__all__ = [
    "JournalContents",
    "JournalProblem",
    "PruneResult",
    "RecoveryNote",
    "SessionRecorder",
    "disk_usage",
    "prune_sessions",
    "read_journal",
    "recover_state_dir",
    "scan_journal",
]
