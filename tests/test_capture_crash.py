"""kill -9 during heavy DbgPrint traffic, then recover and restart: nothing written is lost.

A child process records DebugPrint events (and the matching wire bytes) as fast as it can,
flushing after every batch and reporting on stdout how many events each finished flush made
durable. It is killed with SIGKILL at a random moment, possibly in the middle of a write.
Afterwards every journal line parses, the events are exactly a prefix of what the child wrote,
in order, and at least as long as what it reported; the console and the capture likewise. Then a
new session starts cleanly next to the old one.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pcapng import FileScanner, blocks  # type: ignore[import-untyped]

from cartd.capture.journal import read_journal, scan_journal
from cartd.capture.recorder import SessionRecorder
from cartd.capture.recover import recover_state_dir
from cartd.events import DebugPrint, Running

ROOT = Path(__file__).resolve().parents[1]
TARGET = "crash-target"

CHILD = """
import sys, time
from pathlib import Path
from cartd.capture.recorder import SessionRecorder
from cartd.events import DebugPrint

state_dir, batch = Path(sys.argv[1]), int(sys.argv[2])
recorder, _ = SessionRecorder.open(
    state_dir, "crash-target", wire_description="kd-serial test", fsync_interval=0.05
)
print(recorder.session_dir, flush=True)
n = 0
while True:
    for _ in range(batch):
        text = f"{n:07d} " + "DbgPrint payload, " * (n % 9) + "end\\n"
        recorder.record(DebugPrint(target="crash-target", text=text))
        recorder.record_wire(text.encode(), from_target=True, time=time.time())
        n += 1
    recorder.flush()
    print(n, flush=True)
"""


def expected_text(n: int) -> str:
    return f"{n:07d} " + "DbgPrint payload, " * (n % 9) + "end\n"


def run_child_until_killed(state: Path, batch: int, rng: random.Random) -> tuple[Path, int]:
    """Start the writer, kill it at a random moment; its session and the events it flushed."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state), str(batch)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        session = Path(child.stdout.readline().strip())
        wanted = rng.randrange(1000, 6000)
        flushed = 0
        while flushed < wanted:
            line = child.stdout.readline()
            assert line, "the writer stopped by itself"
            flushed = int(line)
        time.sleep(rng.uniform(0, 0.03))
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()  # progress printed between the last read and the kill
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    reported = [int(line) for line in rest.split()]
    return session, max([flushed, *reported])


def packets(path: Path) -> list[Any]:
    with open(path, "rb") as capture:
        return [b for b in FileScanner(capture) if isinstance(b, blocks.EnhancedPacket)]


@pytest.mark.parametrize("seed", range(4))
def test_kill_9_during_heavy_debug_print_traffic(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    state = tmp_path / "state"
    batch = rng.choice([1, 10, 100, 1000])
    session, flushed = run_child_until_killed(state, batch, rng)

    notes = recover_state_dir(state)

    # The capture was live, so it is always finished by recovery; the other repairs vary.
    assert any(note.path == session / "wire.pcapng" for note in notes)
    contents = scan_journal(session / "events.jsonl")
    assert contents.problems == [], (seed, notes)
    texts = [event.text for event in contents.events if isinstance(event, DebugPrint)]
    assert len(texts) == len(contents.events)
    assert len(texts) >= flushed, (seed, flushed)
    assert texts == [expected_text(n) for n in range(len(texts))], seed

    console = (session / "console.log").read_text(encoding="utf-8")
    assert console == "" or console.endswith("\n")
    console_lines = console.splitlines()
    assert len(console_lines) >= flushed
    stamped = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (.*)")
    for n, line in enumerate(console_lines):
        match = stamped.fullmatch(line)
        assert match is not None, line
        assert match[1] + "\n" == expected_text(n)

    wire = [packet.packet_data for packet in packets(session / "wire.pcapng")]
    assert len(wire) >= flushed
    assert wire == [expected_text(n).encode() for n in range(len(wire))]

    # The daemon starts again: recovery has nothing left to do, and a new session is clean.
    assert recover_state_dir(state) == []
    recorder, published = SessionRecorder.open(
        state, TARGET, wire_description="kd-serial test", fsync_interval=0.05
    )
    assert published == []
    assert recorder.session_dir != session
    assert recorder.session_dir.parent == session.parent
    event = Running(target=TARGET)
    recorder.record(event)
    assert recorder.close() == []
    assert read_journal(recorder.session_dir / "events.jsonl") == [event]
    assert read_journal(session / "events.jsonl") == contents.events  # the old one untouched
