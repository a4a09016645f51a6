"""Three serial links at once: a clean target, a target on a very noisy line, and a port that
spews garbage. The clean target's records must not notice the others (architecture rule 6).

- clean: a simulated target in this process on a pty paced at 115200 baud;
- noisy: `cartd sim --noise 0.5` as a subprocess (half its packets damaged, both ways);
- garbage: a task writing random bytes into a pty at full speed: mostly bytes that can never
  start a packet, with runs of KD leader bytes mixed in, none of it a valid packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from daemon_harness import (
    ROOT,
    EventWatch,
    daemon_in_process,
    heartbeats,
    load_test_config,
    session_dirs,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.capture.journal import scan_journal
from cartd.kd.constants import BREAKIN_BYTE, CONTROL_LEADER_BYTE, DATA_LEADER_BYTE
from cartd.kd.framing import NoiseDetected, NoiseKind, PacketDecoded, PacketDecoder
from cartd.links.streams import FdStream, LinkClosed, open_pty_pair
from cartd.sim.target import Scenario

_LEADERS = (DATA_LEADER_BYTE, CONTROL_LEADER_BYTE, BREAKIN_BYTE)


def garbage(seed: int, size: int = 1 << 16) -> bytes:
    """Random bytes that hold no KD packet: no leader or break-in byte at all, except in runs
    of four leader bytes (what starts a packet) followed by a random header that is none."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.02:
            out += bytes([rng.choice((DATA_LEADER_BYTE, CONTROL_LEADER_BYTE))]) * 4
            out += rng.randbytes(12)
        else:
            out += bytes(b for b in rng.randbytes(64) if b not in _LEADERS)
    block = bytes(out)
    # Not even a damaged packet: every leader is followed by something that is no KD header.
    decoder = PacketDecoder()
    events = decoder.receive_data(block * 2, 0.0)
    kinds = {event.kind for event in events if isinstance(event, NoiseDetected)}
    assert kinds == {NoiseKind.GARBAGE, NoiseKind.BAD_HEADER}, kinds
    assert not any(isinstance(event, PacketDecoded) for event in events)
    return block


async def spew(stream: FdStream, block: bytes) -> None:
    """Write garbage as fast as the pty takes it, for as long as the test runs."""
    with contextlib.suppress(LinkClosed):
        while True:
            stream.write(block)
            await stream.drain()


@contextlib.asynccontextmanager
async def noisy_sim() -> AsyncIterator[str]:
    """`cartd sim --noise 0.5` on a pty of its own, unpaced; its pty's path."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cartd",
        "sim",
        "--noise",
        "0.5",
        "--print-interval",
        "0.05",
        "--baud",
        "0",
        "--seed",
        "11",
        "--memory",
        "1G",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert "pseudo-terminal " in line, line
        yield line.split("pseudo-terminal ", 1)[1].split(" ", 1)[0]
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def test_garbage_and_noise_on_other_links_leave_a_clean_target_alone(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    clean = start_sim(Scenario(print_interval=0.05, module_interval=0.3), seed=2)
    spewing, garbage_path = open_pty_pair()
    spewer = asyncio.create_task(spew(spewing, garbage(seed=3)))
    try:
        async with noisy_sim() as noisy_path:
            ports = [clean.slave_path, noisy_path, garbage_path]
            config = load_test_config(write_config(tmp_path / "cartd.toml", ports=ports), state)
            clean_target, noisy_target = ("pts-" + path.rsplit("/", 1)[1] for path in ports[:2])
            async with daemon_in_process(config) as daemon:
                watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
                try:
                    await _watch_all_three(watch, ports)
                finally:
                    await watch.close()
    finally:
        spewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spewer
        spewing.close()
        clean.close()

    # The clean target's records: every event subscribers saw, in order; no noise at all.
    clean_events = watch.of(clean_target) + watch.of(f"serial:{clean.slave_path}")
    assert not any(isinstance(e, ev.ProtocolNoise) for e in clean_events)
    (session,) = session_dirs(state, clean_target)
    journal = scan_journal(session / "events.jsonl")
    assert journal.problems == []
    seen = [e.to_json() for e in watch.of(clean_target)]
    recorded = [e.to_json() for e in journal.events if getattr(e, "target", None)]
    # (The journal may go on a little: the subscriber left before the daemon stopped.)
    assert recorded[: len(seen)] == seen
    numbers = heartbeats(journal.events)
    assert numbers == list(range(1, len(numbers) + 1))
    modules = [
        (e.type, e.name)
        for e in journal.events
        if isinstance(e, ev.ModuleLoaded | ev.ModuleUnloaded) and e.name == "cartdemo.sys"
    ]
    assert len(modules) >= 4
    assert modules == [
        ("module_loaded" if i % 2 == 0 else "module_unloaded", "cartdemo.sys")
        for i in range(len(modules))
    ]
    # The noisy target's journal is whole too, whatever its line did.
    (noisy_session,) = session_dirs(state, noisy_target)
    assert scan_journal(noisy_session / "events.jsonl").problems == []
    # Nothing was recorded for the garbage port: it never carried KD.
    assert not (state / "targets" / ("pts-" + garbage_path.rsplit("/", 1)[1])).exists()


async def _watch_all_three(watch: EventWatch, ports: list[str]) -> None:
    """What the control socket shows while the three links run."""
    clean_target, noisy_target = ("pts-" + path.rsplit("/", 1)[1] for path in ports[:2])
    clean_link, noisy_link, garbage_link = (f"serial:{path}" for path in ports)
    _, probed = await watch.wait_type(ev.LinkProbed, garbage_link)
    assert probed.result == "not_kd", probed
    assert "non-KD data" in probed.detail, probed
    _, probed = await watch.wait_type(ev.LinkProbed, noisy_link)
    assert probed.result == "kd", probed
    _, noise = await watch.wait_type(
        ev.ProtocolNoise, noisy_link, where=lambda e: sum(e.counters.values()) > 0
    )
    at, _ = await watch.wait_type(ev.TargetConnected, clean_target)
    for _ in range(40):  # two seconds of heartbeats, and a few module loads
        at, _ = await watch.wait_type(ev.DebugPrint, clean_target, after=at + 1)
    # The noisy line goes on being reported.
    await watch.wait_type(ev.ProtocolNoise, noisy_link, after=watch.events.index(noise) + 1)
    status = await watch.client.call("status")
    links = {link["link"]: link for link in status["links"]}
    assert links[garbage_link]["state"] == "no KD (not_kd)", links
    assert links[clean_link]["state"] == "connected at 115200 baud", links
    targets = {target["target"]: target for target in status["targets"]}
    assert set(targets) == {clean_target, noisy_target}, targets
    assert targets[clean_target]["noise"] == {}, targets[clean_target]
    assert targets[clean_target]["state"] == "running"
    assert sum(targets[noisy_target]["noise"].values()) > 0
    assert watch.dropped == 0
