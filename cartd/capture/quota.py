"""Keep the state directory under its disk quota by deleting the oldest sessions first.

Only session directories (`targets/*/sessions/<stamp>/`) are ever deleted: never a dump, never
an `identity.json`, never a session the caller says is open. If dumps alone exceed the quota,
every closed session goes and the state directory stays over quota; the caller reports that.

Sizes are disk use as `du` counts it (allocated blocks), since that is what fills the disk. A
quota is in MiB. Pruning deletes whole directory trees and may take a moment on a slow card;
the daemon can run it in a worker thread.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cartd.capture.layout import session_dirs

_MIB = 1 << 20
_BLOCK = 512  # st_blocks counts 512-byte units on Linux whatever the file system's block size


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    removed: list[Path]  # oldest first
    usage_bytes: int  # disk use of the state directory afterwards
    problems: list[str]  # sessions that could not be deleted, and why


def disk_usage(path: Path) -> int:
    """Bytes allocated to `path` and everything under it (symbolic links are not followed);
    entries that vanish or cannot be read while counting are left out."""
    try:
        status = os.lstat(path)
    except OSError:
        return 0
    total = status.st_blocks * _BLOCK
    if stat.S_ISDIR(status.st_mode):
        try:
            with os.scandir(path) as entries:
                children = [Path(entry.path) for entry in entries]
        except OSError:
            return total
        total += sum(disk_usage(child) for child in children)
    return total


def prune_sessions(state_dir: Path, quota_mb: float, *, keep: Collection[Path] = ()) -> PruneResult:
    """Delete the oldest sessions until the state directory uses at most `quota_mb` MiB."""
    quota_bytes = int(quota_mb * _MIB)
    usage = disk_usage(state_dir)
    kept = {_normalised(path) for path in keep}
    removed: list[Path] = []
    problems: list[str] = []
    for session in session_dirs(state_dir):
        if usage <= quota_bytes:
            break
        if _normalised(session) in kept:
            continue
        size = disk_usage(session)
        try:
            shutil.rmtree(session)
        except OSError as error:
            problems.append(f"{session}: {error.strerror or error}")
            # Part of it may be gone; count again rather than guess.
            usage = disk_usage(state_dir)
            continue
        usage -= size
        removed.append(session)
    return PruneResult(removed=removed, usage_bytes=usage, problems=problems)


def _normalised(path: Path) -> Path:
    return Path(os.path.realpath(path))
