"""A full disk and a read-only state directory: a clear CaptureError, never an exception.

Real file systems, no mocks:
- full disk: a 64 KiB tmpfs (needs root and permission to mount; skipped with the reason
  otherwise) and, everywhere, a child process whose RLIMIT_FSIZE makes writes past 16 KiB fail
  with EFBIG (SIGXFSZ ignored);
- read-only: a tmpfs mounted read-only, later remounted read-write (root), and a state directory
  with mode 0555, written by a child process that cannot override file permissions (as root,
  one started through setpriv without CAP_DAC_OVERRIDE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pcapng import FileScanner, blocks  # type: ignore[import-untyped]

from cartd.capture.journal import read_journal, scan_journal
from cartd.capture.layout import WIRE_PARTIAL_NAME
from cartd.capture.recorder import SessionRecorder
from cartd.capture.recover import complete_blocks_length
from cartd.events import CaptureError, CaptureResumed, DebugPrint, Event, event_from_json

ROOT = Path(__file__).resolve().parents[1]
TARGET = "19041-fffff80312345000"


def mount_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", *arguments], capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a fresh tmpfs with the given options; unmounted after the test."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (the RLIMIT_FSIZE variant still runs)")
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        result = mount_command("-t", "tmpfs", "-o", options, "tmpfs", str(where))
        if result.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], check=False)


def packets(path: Path) -> list[Any]:
    with open(path, "rb") as capture:
        return [b for b in FileScanner(capture) if isinstance(b, blocks.EnhancedPacket)]


def debug_print(n: int) -> DebugPrint:
    return DebugPrint(target=TARGET, text=f"{n:05d} " + "x" * 100 + "\n")


class Daemon:
    """What the daemon does with a recorder: publish every event it gets back, which includes
    recording it (so a CaptureError lands in the journal where it happened)."""

    def __init__(self, recorder: SessionRecorder, published: list[Event]) -> None:
        self.recorder = recorder
        self.published: list[Event] = []
        self.recorded: list[Event] = []
        self.publish(published)

    def publish(self, events: list[Event]) -> None:
        for event in events:
            self.published.append(event)
            if not self.recorder.closed:
                self.record(event)

    def record(self, event: Event) -> None:
        self.recorded.append(event)
        self.publish(self.recorder.record(event))
        if isinstance(event, DebugPrint):
            wire = self.recorder.record_wire(
                event.text.encode(), from_target=True, time=1764573259.0 + len(self.recorded)
            )
            self.publish(wire)

    def flush(self) -> None:
        self.publish(self.recorder.flush())


def test_a_full_disk_pauses_capture_and_resumes_in_order(tmpfs: Callable[[str], Path]) -> None:
    disk = tmpfs("size=64k")
    filler = disk / "filler"
    filler.write_bytes(os.urandom(40 * 1024))
    daemon = Daemon(
        *SessionRecorder.open(
            disk / "state",
            TARGET,
            wire_description="kd-serial test",
            fsync_interval=0,
            retry_interval=0,
        )
    )
    assert daemon.published == []

    n = 0
    while not daemon.published:
        assert n < 5000, "the disk never filled up"
        daemon.record(debug_print(n))
        daemon.flush()
        n += 1

    [error] = daemon.published
    assert isinstance(error, CaptureError)
    assert error.target == TARGET
    assert error.path.startswith(str(disk / "state"))
    assert error.error.startswith("No space left on device: ")
    assert "capture paused" in error.error
    assert daemon.recorder.failed

    # While the disk is full: more traffic, retries, no new event, no exception...
    for m in range(n, n + 30):
        daemon.record(debug_print(m))
        daemon.flush()
    assert daemon.published == [error]
    # ... and the files on disk hold whole records only.
    session = daemon.recorder.session_dir
    assert scan_journal(session / "events.jsonl").problems == []
    assert (session / "console.log").read_bytes().endswith(b"\n")
    partial = session / WIRE_PARTIAL_NAME
    assert complete_blocks_length(partial) == partial.stat().st_size

    filler.unlink()
    daemon.flush()

    assert [type(event) for event in daemon.published] == [CaptureError, CaptureResumed]
    assert not daemon.recorder.failed
    daemon.publish(daemon.recorder.close())
    assert read_journal(session / "events.jsonl") == daemon.recorded
    prints = [event for event in daemon.recorded if isinstance(event, DebugPrint)]
    assert len((session / "console.log").read_text().splitlines()) == len(prints)
    wire = [packet.packet_data for packet in packets(session / "wire.pcapng")]
    assert wire == [event.text.encode() for event in prints]


def test_a_read_only_mount_then_remounted_writable(tmpfs: Callable[[str], Path]) -> None:
    disk = tmpfs("size=1m,ro")
    daemon = Daemon(
        *SessionRecorder.open(
            disk, TARGET, wire_description=None, fsync_interval=0, retry_interval=0
        )
    )

    [error] = daemon.published
    assert isinstance(error, CaptureError)
    assert error.error.startswith(f"Read-only file system: {disk / 'targets'}")
    assert daemon.recorder.failed
    for n in range(10):
        daemon.record(debug_print(n))
        daemon.flush()
    assert daemon.recorder.write_identity({"build": 19041}) == []
    assert list(disk.iterdir()) == []

    remount = mount_command("-o", "remount,rw", str(disk))
    assert remount.returncode == 0, remount.stderr
    daemon.flush()

    assert [type(event) for event in daemon.published] == [CaptureError, CaptureResumed]
    daemon.publish(daemon.recorder.close())
    assert read_journal(daemon.recorder.session_dir / "events.jsonl") == daemon.recorded
    assert (disk / "targets" / TARGET / "identity.json").is_file()


UNWRITABLE_STATE_DIR_CHILD = """
import json, sys
from pathlib import Path
from cartd.capture.recorder import SessionRecorder
from cartd.events import DebugPrint

state = Path(sys.argv[1])
recorder, published = SessionRecorder.open(
    state, "t", wire_description=None, fsync_interval=0, retry_interval=0
)
published += recorder.record(DebugPrint(target="t", text="hello\\n"))
published += recorder.flush()
state.chmod(0o755)  # the owner may always change the mode
published += recorder.flush()
published += recorder.close()
print(json.dumps([event.to_json() for event in published]))
"""


def without_root_privileges() -> list[str]:
    """A command prefix under which chmod 0555 stops writes: nothing for an ordinary user; for
    root, setpriv drops the capabilities that let root write anywhere (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH) from the child's bounding set."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: root writes into a 0555 directory")
    capabilities = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--bounding-set={capabilities}", f"--inh-caps={capabilities}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.strip()}")
    return prefix


def test_a_state_dir_without_write_permission(tmp_path: Path) -> None:
    prefix = without_root_privileges()
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-c", UNWRITABLE_STATE_DIR_CHILD, str(state)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    finally:
        state.chmod(0o755)
    assert result.returncode == 0, result.stderr
    published = [event_from_json(data) for data in json.loads(result.stdout)]

    error, resumed = published
    assert isinstance(error, CaptureError)
    assert error.error.startswith(f"Permission denied: {state / 'targets'} (capture paused")
    assert isinstance(resumed, CaptureResumed)
    [session] = (state / "targets" / "t" / "sessions").iterdir()
    assert [event.type for event in read_journal(session / "events.jsonl")] == ["debug_print"]


FILE_SIZE_LIMITED_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from cartd.capture.recorder import SessionRecorder
from cartd.events import DebugPrint

# Past RLIMIT_FSIZE the kernel sends SIGXFSZ (which would kill us); ignored, write() fails
# with EFBIG instead, as it would with a full disk's ENOSPC.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))

recorder, published = SessionRecorder.open(
    Path(sys.argv[1]), "t", wire_description=None, fsync_interval=0, retry_interval=0
)
recorded = []

def publish(events):
    for event in events:
        published.append(event)
        recorded.append(event)
        publish(recorder.record(event))

n = 0
while not published and n < 10000:
    event = DebugPrint(target="t", text=f"{n:05d} " + "y" * 100 + "\\n")
    recorded.append(event)
    publish(recorder.record(event))
    publish(recorder.flush())
    n += 1
for m in range(n, n + 20):
    event = DebugPrint(target="t", text=f"{m:05d} while paused\\n")
    recorded.append(event)
    publish(recorder.record(event))
    publish(recorder.flush())
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
publish(recorder.flush())
leftover = recorder.close()
print(json.dumps({
    "session": str(recorder.session_dir),
    "recorded": [event.to_json() for event in recorded],
    "published": [event.to_json() for event in published],
    "leftover": [event.to_json() for event in leftover],
}))
"""


def test_files_past_rlimit_fsize_pause_and_resume(tmp_path: Path) -> None:
    """The disk-full path without mounting anything: EFBIG from RLIMIT_FSIZE in a child."""
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED_CHILD, str(tmp_path / "state")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    published = [event_from_json(data) for data in report["published"]]
    recorded = [event_from_json(data) for data in report["recorded"]]

    error, resumed = published
    assert isinstance(error, CaptureError)
    assert error.error.startswith("File too large: ")
    assert isinstance(resumed, CaptureResumed)
    assert report["leftover"] == []
    session = Path(report["session"])
    assert read_journal(session / "events.jsonl") == recorded
    assert (session / "events.jsonl").stat().st_size > 16 * 1024
    prints = [event for event in recorded if isinstance(event, DebugPrint)]
    assert len((session / "console.log").read_text().splitlines()) == len(prints)
