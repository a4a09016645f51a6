"""kill -9 of the daemon while a target floods it with DbgPrint, then a restart.

The daemon is a real `cartd run` process; the simulated target prints its heartbeat as fast as
an unpaced pty carries it. After SIGKILL nothing of the daemon gets to run: whatever the records
hold is what a power cut would leave (minus the page cache). The restart must finish the old
session's files and record a new session beside it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon_harness import (
    HEARTBEAT,
    DaemonProcess,
    EventWatch,
    heartbeats,
    read_wire,
    session_dirs,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.capture.journal import scan_journal
from cartd.kd.constants import PacketType
from cartd.sim.target import Scenario

FLOOD_SECONDS = 1.5
MINIMUM_HEARTBEATS = 200  # recorded before the kill; the flood gives thousands a second


async def test_kill_nine_under_heavy_traffic_and_restart(tmp_path: Path) -> None:
    sim = start_sim(Scenario(print_interval=0, module_interval=None), seed=5, baud=None)
    state = tmp_path / "s"
    config_path = write_config(tmp_path / "cartd.toml", ports=[sim.slave_path], fsync_interval=0.05)
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    first = DaemonProcess(config_path, state, tmp_path / "first.log")
    second = DaemonProcess(config_path, state, tmp_path / "second.log")
    try:
        await first.start()
        watch = await EventWatch.start(first.socket_path, first.stderr)
        await watch.wait_type(ev.TargetConnected, target)
        await watch.close()
        # --- the flood, then SIGKILL ----------------------------------------------------------
        (old,) = session_dirs(state, target)
        journal = old / "events.jsonl"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        await asyncio.sleep(FLOOD_SECONDS)
        while len(heartbeats(scan_journal(journal).events)) < MINIMUM_HEARTBEATS:
            assert loop.time() < deadline, f"the flood is not recorded:\n{first.stderr()}"
            await asyncio.sleep(0.1)
        await first.kill()
        # What the kill left: whole lines, perhaps one torn last line; a wire capture that was
        # never finished.
        left = scan_journal(journal)
        line_count = len(journal.read_bytes().splitlines())
        assert all(problem.line_number == line_count for problem in left.problems), left.problems
        assert (old / "wire.pcapng.partial").exists() and not (old / "wire.pcapng").exists()
        before_kill = heartbeats(left.events)
        assert len(before_kill) >= MINIMUM_HEARTBEATS

        # --- restart: recovery, then a new session --------------------------------------------
        await second.start()
        recovered = scan_journal(journal)
        assert recovered.problems == [], recovered.problems
        assert recovered.events == left.events  # recovery removed nothing whole
        numbers = heartbeats(recovered.events)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers[-20:]
        console = (old / "console.log").read_bytes()
        assert console.endswith(b"\n")
        console_numbers = [
            int(line.split(b"heartbeat ", 1)[1].split(b",", 1)[0])
            for line in console.splitlines()
            if b"cartdemo: heartbeat " in line
        ]
        # The console is flushed with the journal, batch by batch: the same heartbeats, at
        # most the last batch apart.
        assert console_numbers == numbers[: len(console_numbers)]
        assert not (old / "wire.pcapng.partial").exists()
        wire = read_wire(old / "wire.pcapng")
        assert wire.inbound and wire.outbound and not wire.other_flags
        packets, noise, _ = wire.decode(wire.inbound)
        # Only the packet the kill cut off may be incomplete.
        assert len(noise) <= 1, noise
        # Every heartbeat up to where the capture ends (each file keeps all but the batch in
        # flight at the kill, so the capture may end a little before or after the journal).
        on_the_wire = sorted(
            {
                int(match[1])
                for packet in packets
                if packet.packet_type == PacketType.KD_DEBUG_IO
                for match in HEARTBEAT.finditer(packet.payload.decode("latin-1"))
            }
        )
        assert on_the_wire == list(range(1, len(on_the_wire) + 1)), on_the_wire[-20:]
        assert len(on_the_wire) >= MINIMUM_HEARTBEATS
        assert "recovered after a crash" in second.stderr()

        watch = await EventWatch.start(second.socket_path, second.stderr)
        at, _ = await watch.wait_type(ev.LinkUp, f"serial:{sim.slave_path}")
        for _ in range(50):
            at, _ = await watch.wait_type(ev.DebugPrint, target, after=at + 1)
        status = await watch.client.call("status")
        (shown,) = status["targets"]
        assert shown["recording"] is True
        await watch.close()
        assert await second.stop() == 0, second.stderr()
    finally:
        sim.close()
        for daemon in (first, second):
            if daemon.process is not None and daemon.process.returncode is None:
                daemon.process.kill()
                await daemon.process.wait()

    # --- the new session: its own directory, clean, carrying on where the target was ------------
    sessions = session_dirs(state, target)
    assert len(sessions) == 2 and sessions[0] == old, sessions
    new = scan_journal(sessions[1] / "events.jsonl")
    assert new.problems == []
    assert new.events[0].type == "owner_changed"
    assert not any(isinstance(e, ev.CaptureError) for e in new.events)
    after_restart = heartbeats(new.events)
    assert len(after_restart) >= 40
    assert after_restart == list(range(after_restart[0], after_restart[0] + len(after_restart)))
    # The heartbeat the target was sending at the kill may come again (the new daemon cannot know
    # that the old one took it), but nothing goes backwards.
    assert after_restart[0] >= numbers[-1]
    assert (sessions[1] / "wire.pcapng").exists()
    assert not (sessions[1] / "wire.pcapng.partial").exists()
