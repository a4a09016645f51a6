"""The daemon against the simulator over a real pty, from boot to a held bugcheck and beyond.

The simulated target is paced like a 115200 baud cable; the daemon runs in this process; people
reach it through the control socket and the `cartd` command line (subprocesses), and the
records are read back from disk: the journal with `read_journal`, the wire capture with the
`pcapng` library and cartd's KD packet decoder.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from daemon_harness import (
    EventWatch,
    cartd_cli,
    daemon_in_process,
    heartbeats,
    load_test_config,
    read_wire,
    session_dirs,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.capture.journal import scan_journal
from cartd.kd.constants import PacketType
from cartd.kd.debug_io import pull_debug_io
from cartd.sim.target import Scenario

CODE = 0x9F
PARAMETERS = (0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)
SCENARIO = Scenario(
    print_interval=0.3,
    module_interval=0.4,  # cartdemo.sys loaded at 0.4 s, unloaded at 0.8 s, ...
    bugcheck_after=2.0,
    bugcheck_code=CODE,
    bugcheck_parameters=PARAMETERS,
    seconds_to_write_dump=0.5,
    reboot_delay=0.5,
)


async def test_daemon_records_and_drives_a_simulated_target(tmp_path: Path) -> None:
    sim = start_sim(SCENARIO, seed=7)
    state = tmp_path / "s"
    # No dump at the bugcheck (tests/test_dump_sim.py has those): `cartd go` right after it.
    config_path = write_config(
        tmp_path / "cartd.toml", ports=[sim.slave_path], dump_on_bugcheck="none"
    )
    config = load_test_config(config_path, state)
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    link = f"serial:{sim.slave_path}"
    cli = ("--state-dir", str(state))
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                # --- boot, prints, module loads and the bugcheck, as events -----------------
                _, probed = await watch.wait_type(ev.LinkProbed, link, where=_kd)
                assert probed.baud == 115200
                await watch.wait_type(ev.LinkUp, link)
                _, connected = await watch.wait_type(ev.TargetConnected, target)
                machine = sim.target.machine
                assert (connected.build, connected.kernel_base) == (
                    machine.build_number,
                    machine.kernel_base,
                )
                assert (connected.machine, connected.processors) == ("x64", 2)
                at, bugcheck = await watch.wait_type(ev.Bugcheck, target, timeout=30)
                assert (bugcheck.code, bugcheck.parameters) == (CODE, PARAMETERS)
                assert bugcheck.name == "DRIVER_POWER_STATE_FAILURE"
                before = watch.of(target)
                texts = "".join(e.text for e in before if isinstance(e, ev.DebugPrint))
                assert "cartd simulated target: Windows build" in texts
                assert "kernel debugger initialised" in texts
                assert "*** Fatal System Error: 0x0000009f" in texts
                assert heartbeats(before) == list(range(1, len(heartbeats(before)) + 1))
                assert len(heartbeats(before)) >= 3, watch.failure("too few heartbeats")
                loaded = [e.name for e in before if isinstance(e, ev.ModuleLoaded)]
                assert loaded[:3] == ["ntoskrnl.exe", "hal.dll", "cartdemo.sys"], loaded
                assert any(
                    isinstance(e, ev.ModuleUnloaded) and e.name == "cartdemo.sys" for e in before
                )
                stop = watch.events[at - 1]
                assert isinstance(stop, ev.Stopped) and stop.reason == "bugcheck_first"

                # --- what the records say while it is held ------------------------------------
                identity = json.loads((state / "targets" / target / "identity.json").read_text())
                assert identity["build"] == machine.build_number
                assert identity["kernel_base"] == f"{machine.kernel_base:#x}"
                assert identity["target"] == target and identity["link"] == link

                status = await cartd_cli("status", "--json", *cli)
                assert status.returncode == 0, status
                result = json.loads(status.stdout)
                (shown,) = result["targets"]
                assert shown["target"] == target
                assert shown["state"] == "bugchecked"
                assert shown["bugcheck"]["code"] == "0x9f"
                assert shown["bugcheck"]["name"] == "DRIVER_POWER_STATE_FAILURE"
                # Parameter 1 is 3: a device object blocked an IRP for too long.
                assert (
                    shown["bugcheck"]["cause"] == "A device object blocked a power IRP for too long"
                )
                assert shown["bugcheck"]["parameter_meanings"][3] == "The blocked IRP"
                assert shown["identity"]["kernel_base"] == f"{machine.kernel_base:#x}"
                assert shown["recording"] is True
                assert shown["noise"] == {}, shown["noise"]
                # Disk use as the quota counts it; the journal alone is several KiB by now.
                assert shown["records_bytes"] > 0, shown["records_bytes"]
                assert result["disk_free_bytes"] > 0
                assert result["links"] == [
                    {
                        "link": link,
                        "kind": "serial",
                        "device": sim.slave_path,
                        "target": target,
                        "state": "connected at 115200 baud",
                        "baud": 115200,
                    }
                ]
                events = await cartd_cli("events", "--json", "--replay", "1000", *cli)
                assert events.returncode == 0, events
                shown_events = [json.loads(line) for line in events.stdout.splitlines()]
                (shown_bugcheck,) = [e for e in shown_events if e["type"] == "bugcheck"]
                assert shown_bugcheck["target"] == target
                assert shown_bugcheck["code"] == "0x9f"
                assert shown_bugcheck["parameters"] == [f"{p:#x}" for p in PARAMETERS]
                assert any(e["type"] == "target_connected" for e in shown_events)

                # --- commands that do not fit a held bugcheck -------------------------------------
                refused = await cartd_cli("break", *cli, target)
                assert refused.returncode == 1, refused
                assert refused.stderr == f"cartd: {target} is already stopped\n", refused
                unknown = await cartd_cli("go", *cli, "no-such-target")
                assert unknown.returncode == 1, unknown
                assert f"no target 'no-such-target'; known targets: {target}" in unknown.stderr

                # From here on the machine behaves after a reboot: no new bugcheck.
                sim.target.scenario = Scenario(
                    print_interval=0.3, module_interval=None, reboot_delay=0.5
                )

                # --- go: it writes its dump, breaks a second time, is held, and reboots -------
                go = await cartd_cli("go", *cli, target)
                assert go.returncode == 0, go
                assert f"{target}: continue requested" in go.stdout
                at, _ = await watch.wait_type(ev.Running, target, after=at)
                at, second = await watch.wait_type(ev.Stopped, target, after=at)
                assert second.reason == "bugcheck_second"
                status_result = await _status(watch)
                assert status_result["state"] == "bugchecked"
                go = await cartd_cli("go", *cli, target)
                assert go.returncode == 0, go
                at, _ = await watch.wait_type(ev.TargetRebooted, target, after=at)
                at, _ = await watch.wait_type(ev.TargetConnected, target, after=at)
                await watch.wait_type(ev.DebugPrint, target, after=at, where=_heartbeat)
                # One bugcheck event for both breaks of one bugcheck.
                assert sum(isinstance(e, ev.Bugcheck) for e in watch.events) == 1

                # --- running: go is refused, break holds it, a second break is refused --------
                refused = await cartd_cli("go", *cli, target)
                assert refused.returncode == 1, refused
                assert refused.stderr == (
                    f"cartd: {target} is running, not stopped: nothing to continue\n"
                ), refused
                broken = await cartd_cli("break", *cli, target)
                assert broken.returncode == 0, broken
                at, held = await watch.wait_type(ev.Stopped, target, after=at)
                assert held.reason == "break_in"
                assert (await _status(watch))["state"] == "stopped"
                refused = await cartd_cli("break", *cli, target)
                assert refused.returncode == 1, refused
                assert "is already stopped" in refused.stderr

                # --- reboot: at once when stopped, after a break-in when running -----------------
                reboot = await cartd_cli("reboot", *cli, target)
                assert reboot.returncode == 0, reboot
                at, _ = await watch.wait_type(ev.TargetRebooted, target, after=at)
                at, _ = await watch.wait_type(ev.TargetConnected, target, after=at)
                at, _ = await watch.wait_type(ev.DebugPrint, target, after=at, where=_heartbeat)
                reboot = await cartd_cli("reboot", *cli, target)
                assert reboot.returncode == 0, reboot
                at, stopped = await watch.wait_type(ev.Stopped, target, after=at)
                assert stopped.reason == "break_in"
                at, _ = await watch.wait_type(ev.TargetRebooted, target, after=at)
                await watch.wait_type(ev.TargetConnected, target, after=at)
                assert watch.dropped == 0
            finally:
                await watch.close()
    finally:
        sim.close()

    # --- the records after a clean stop -----------------------------------------------------------
    (session,) = session_dirs(state, target)
    journal = scan_journal(session / "events.jsonl")
    assert journal.problems == []
    # Every event about the target that subscribers saw is in the journal, in the same order.
    seen = [e.to_json() for e in watch.events if isinstance(getattr(e, "target", None), str)]
    recorded = [e.to_json() for e in journal.events if isinstance(getattr(e, "target", None), str)]
    # (The journal may go on a little: the subscriber left before the daemon stopped.)
    assert recorded[: len(seen)] == seen
    # The session starts when the link first carries KD (its link_up came just before it).
    assert journal.events[0].type == "owner_changed"

    console = (session / "console.log").read_text()
    assert "cartd simulated target: kernel debugger initialised" in console
    assert "*** Fatal System Error: 0x0000009f" in console
    assert "cartdemo: heartbeat 1, up " in console
    assert all(line[:4].isdigit() and line[26:28] == "Z " for line in console.splitlines())

    assert not (session / "wire.pcapng.partial").exists()
    wire = read_wire(session / "wire.pcapng")
    assert wire.inbound and wire.outbound and not wire.other_flags
    from_target, noise_in, _ = wire.decode(wire.inbound)
    to_target, noise_out, break_ins = wire.decode(wire.outbound)
    assert noise_in == [] and noise_out == []
    assert break_ins >= 2  # `cartd break` and the break-in before `cartd reboot`
    printed = "".join(
        pull_debug_io(p.payload).string.decode("latin-1")
        for p in from_target
        if p.packet_type == PacketType.KD_DEBUG_IO
    )
    assert "*** Fatal System Error: 0x0000009f" in printed
    assert "cartdemo: heartbeat 3," in printed
    assert any(p.packet_type == PacketType.KD_STATE_CHANGE64 for p in from_target)
    sent = {p.packet_type for p in to_target}
    assert {PacketType.KD_ACKNOWLEDGE, PacketType.KD_STATE_MANIPULATE} <= sent


def _kd(event: ev.LinkProbed) -> bool:
    return event.result == "kd"


def _heartbeat(event: ev.DebugPrint) -> bool:
    return "heartbeat" in event.text


async def _status(watch: EventWatch) -> dict[str, object]:
    result = await watch.client.call("status")
    (target,) = result["targets"]
    assert isinstance(target, dict)
    return target


async def test_a_break_in_asked_during_the_boots_module_loads_is_carried_out(
    tmp_path: Path,
) -> None:
    """Right after the target is identified it still reports its boot module loads, each a
    stop the daemon continues. A human's break-in then (the session counts the target as
    running) must not be refused by the KD core as "already stopped": it goes out as soon as
    the target runs, and the break-in stop is held for the human."""
    sim = start_sim(Scenario(print_interval=None, module_interval=None), seed=9)
    config = load_test_config(
        write_config(tmp_path / "cartd.toml", ports=[sim.slave_path]), tmp_path / "s"
    )
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await watch.wait_type(ev.TargetConnected, target, timeout=30)
                await watch.client.call("break", target=target)
                await watch.wait_type(
                    ev.Stopped, target, timeout=20, where=lambda e: e.reason == "break_in"
                )
                await asyncio.sleep(1.0)  # held: no `running` follows
                status = await watch.client.call("status")
                assert status["targets"][0]["state"] == "stopped", status
                assert "Traceback" not in daemon.stderr(), daemon.stderr()
            finally:
                await watch.close()
    finally:
        sim.close()
