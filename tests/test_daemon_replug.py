"""Unplugging and replugging a target's cable while it prints, with the daemon watching.

The daemon's port is a symlink under /dev (as /dev/serial/by-id/ names are), pointing at a pty
slave. Unplugging closes the pty master (the daemon reads EIO) and removes the link; replugging
makes a new pty pair, points the link at its slave and attaches its master to the same running
simulated target, as a USB adapter comes back under a new tty name.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from daemon_harness import (
    EventWatch,
    cartd_cli,
    daemon_in_process,
    heartbeats,
    load_test_config,
    point,
    session_dirs,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.capture.journal import scan_journal
from cartd.sim.target import Scenario

UNPLUGGED_SECONDS = 1.5


async def test_unplug_and_replug_continue_the_session(tmp_path: Path, dev_link: Path) -> None:
    sim = start_sim(Scenario(print_interval=0.05, module_interval=None), seed=3)
    point(dev_link, sim.slave_path)
    state = tmp_path / "s"
    config = load_test_config(write_config(tmp_path / "cartd.toml", ports=[str(dev_link)]), state)
    target = dev_link.name
    link = f"serial:{dev_link}"
    cli = ("--state-dir", str(state))
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                at, _ = await watch.wait_type(ev.TargetConnected, target)
                for _ in range(20):  # a second of heartbeats
                    at, _ = await watch.wait_type(ev.DebugPrint, target, after=at + 1)
                for cycle in range(2):
                    # --- unplug mid-traffic -------------------------------------------------------
                    sim.unplug()
                    dev_link.unlink()
                    at, down = await watch.wait_type(ev.LinkDown, link, after=at, timeout=10)
                    assert down.device == str(dev_link)
                    status = await watch.client.call("status")
                    (shown,) = status["targets"]
                    assert shown["state"] == "link_down", status
                    assert status["links"][0]["state"] == "waiting for device", status
                    assert status["links"][0]["baud"] is None, status
                    # Commands say why they cannot work now.
                    for command in ("break", "reboot"):
                        refused = await cartd_cli(command, *cli, target)
                        assert refused.returncode == 1, refused
                        assert "the link is down" in refused.stderr, refused
                    await asyncio.sleep(UNPLUGGED_SECONDS)

                    # --- replug: another tty behind the same name -----------------------------
                    point(dev_link, sim.replug())
                    at, up = await watch.wait_type(ev.LinkUp, link, after=at, timeout=15)
                    assert up.device == str(dev_link)
                    for _ in range(10):  # it prints again
                        at, _ = await watch.wait_type(ev.DebugPrint, target, after=at + 1)
                    (shown_link,) = (await watch.client.call("status"))["links"]
                    assert shown_link["baud"] == 115200, shown_link
                    assert not any(isinstance(e, ev.TargetRebooted) for e in watch.events), (
                        watch.failure(f"replug {cycle + 1} was taken for a reboot")
                    )
                assert watch.dropped == 0
            finally:
                await watch.close()
    finally:
        sim.close()

    # One session across both replugs, its heartbeats in an unbroken sequence.
    (session,) = session_dirs(state, target)
    journal = scan_journal(session / "events.jsonl")
    assert journal.problems == []
    kinds = [e.type for e in journal.events]
    # The first connection's link_up and the two replugs' are all in the session's journal.
    assert kinds.count("link_down") == 2 and kinds.count("link_up") == 3, kinds
    assert "target_rebooted" not in kinds
    numbers = heartbeats(journal.events)
    first = numbers[0]
    assert numbers == list(range(first, first + len(numbers))), _gaps(numbers)
    assert len(numbers) >= 30
    # The heartbeats straddle both unplugs.
    downs = [i for i, e in enumerate(journal.events) if e.type == "link_down"]
    assert heartbeats(journal.events[: downs[0]]) and heartbeats(journal.events[downs[1] :])
    console = (session / "console.log").read_text()
    assert [int(n) for n in _console_heartbeats(console)] == numbers


def _gaps(numbers: list[int]) -> str:
    problems = [f"{a} -> {b}" for a, b in itertools.pairwise(numbers) if b != a + 1]
    return "heartbeats out of sequence: " + ", ".join(problems)


def _console_heartbeats(console: str) -> list[str]:
    return [
        line.split("heartbeat ", 1)[1].split(",", 1)[0]
        for line in console.splitlines()
        if "cartdemo: heartbeat " in line
    ]


async def test_a_held_bugcheck_stays_held_across_a_replug(tmp_path: Path, dev_link: Path) -> None:
    """A stopped target says nothing by itself, so the link comes back through the active
    probe (allowed for this port). The target answers with its stop, which the session takes
    up again: still held, the bugcheck not reported twice, and `cartd go` continues it."""
    scenario = Scenario(
        print_interval=0.2,
        module_interval=None,
        bugcheck_after=1.0,
        seconds_to_write_dump=0.3,
        reboot_after_bugcheck=False,
    )
    sim = start_sim(scenario, seed=4)
    point(dev_link, sim.slave_path)
    state = tmp_path / "s"
    # No dump at the bugcheck: this is about the held stop across a replug (a dump being read
    # across one is tests/test_dump_interrupted.py's).
    config_path = write_config(
        tmp_path / "cartd.toml",
        ports=[str(dev_link)],
        active_probe=[str(dev_link)],
        dump_on_bugcheck="none",
    )
    config = load_test_config(config_path, state)
    target = dev_link.name
    link = f"serial:{dev_link}"
    cli = ("--state-dir", str(state))
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                at, _ = await watch.wait_type(ev.Bugcheck, target)
                # Long enough for the last ACK to arrive: from now on the target is silent.
                await asyncio.sleep(0.5)
                sim.unplug()
                dev_link.unlink()
                at, _ = await watch.wait_type(ev.LinkDown, link, after=at, timeout=10)
                refused = await cartd_cli("go", *cli, target)
                assert refused.returncode == 1, refused
                assert "the link is down" in refused.stderr, refused
                await asyncio.sleep(0.5)
                point(dev_link, sim.replug())
                at, _ = await watch.wait_type(ev.LinkUp, link, after=at, timeout=15)
                probed = watch.events[at - 1]
                assert isinstance(probed, ev.LinkProbed) and probed.result == "kd", probed
                assert "in answer to a break-in and RESET" in probed.detail, probed
                at, again = await watch.wait_type(ev.Stopped, target, after=at)
                assert again.reason == "bugcheck_first", again
                (shown,) = (await watch.client.call("status"))["targets"]
                assert shown["state"] == "bugchecked", shown
                assert shown["bugcheck"]["code"] == "0x9f", shown
                go = await cartd_cli("go", *cli, target)
                assert go.returncode == 0, go
                at, _ = await watch.wait_type(ev.Running, target, after=at)
                at, _ = await watch.wait_type(
                    ev.Stopped, target, after=at, where=lambda e: e.reason == "bugcheck_second"
                )
                bugchecks = [e for e in watch.events if isinstance(e, ev.Bugcheck)]
                assert len(bugchecks) == 1, watch.failure("the bugcheck was reported twice")
            finally:
                await watch.close()
    finally:
        sim.close()
