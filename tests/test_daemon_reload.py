"""SIGHUP (`systemctl reload cartd`) re-reads the configuration without dropping a session.

`python -m cartd run` in a subprocess with a config file, a simulated target connected over a
pseudo-terminal; the test edits the file and sends SIGHUP, as ExecReload= does.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from daemon_harness import (
    DaemonProcess,
    EventWatch,
    session_dirs,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.config import load_config
from cartd.control.client import ControlClient
from cartd.daemon.config_reload import Applies, config_changes, effective_config
from cartd.sim.target import Scenario


async def wait_for_log(daemon: DaemonProcess, text: str, timeout: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        log = daemon.log_path.read_text(errors="replace")
        if text in log:
            return log
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {text!r} in the log within {timeout} s:\n{daemon.stderr()}")
        await asyncio.sleep(0.05)


async def status(daemon: DaemonProcess) -> dict[str, object]:
    client = await ControlClient.connect(daemon.socket_path)
    try:
        result: dict[str, object] = await client.call("status")
        return result
    finally:
        await client.close()


async def test_sighup_applies_policy_and_keeps_the_session(tmp_path: Path) -> None:
    sim = start_sim(Scenario(print_interval=0.5, module_interval=None), seed=5)
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    config_path = write_config(tmp_path / "cartd.toml", ports=[sim.slave_path])
    original = config_path.read_text()
    daemon = DaemonProcess(config_path, tmp_path / "s", tmp_path / "cartd.log")
    await daemon.start()
    watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
    try:
        await watch.wait_type(ev.TargetConnected, target, timeout=30)
        sessions_before = session_dirs(daemon.state_dir, target)
        assert daemon.process is not None

        config_path.write_text(
            original
            + '[policy]\non_bugcheck = "continue"\n'
            + f'[targets."{target}"]\ndump_on_bugcheck = "none"\n'
        )
        daemon.process.send_signal(signal.SIGHUP)
        log = await wait_for_log(daemon, "changes")
        assert 'policy.on_bugcheck: "hold" -> "continue" (applied now)' in log, log
        assert f'targets."{target}": (none) -> (set) (applied now)' in log, log

        # The session survived: same records, no link_down, the target still prints.
        count = len(watch.events)
        await watch.wait_type(ev.DebugPrint, target, timeout=10, after=count)
        assert session_dirs(daemon.state_dir, target) == sessions_before
        assert not [e for e in watch.events if isinstance(e, ev.LinkDown)], watch.summary()
        assert (await status(daemon))["targets"], "the target is gone from status"

        # A change that needs a restart is said so, and not applied.
        config_path.write_text(
            'control_group = "wheel"\n' + original + '[policy]\non_bugcheck = "continue"\n'
        )
        daemon.process.send_signal(signal.SIGHUP)
        log = await wait_for_log(daemon, 'control_group: "cartd" -> "wheel" (needs a restart')

        # A broken file is reported with its line and ignored: the daemon runs on.
        config_path.write_text(original + '[policy]\non_bugcheck = "explode"\n')
        daemon.process.send_signal(signal.SIGHUP)
        log = await wait_for_log(daemon, "cartd keeps the configuration it runs with")
        assert f"{config_path}:" in log and "policy.on_bugcheck" in log, log
        count = len(watch.events)
        await watch.wait_type(ev.DebugPrint, target, timeout=10, after=count)
        assert (await status(daemon))["targets"]
        assert session_dirs(daemon.state_dir, target) == sessions_before
        assert not [e for e in watch.events if isinstance(e, ev.LinkDown)], watch.summary()
        assert "Traceback" not in daemon.log_path.read_text()
    finally:
        await watch.close()
        assert await daemon.stop() == 0
        sim.close()


def test_changes_say_when_they_apply_and_never_show_keys(tmp_path: Path) -> None:
    key_a = "2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"
    key_b = "1steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p"
    first = tmp_path / "a.toml"
    first.write_text(f'[kdnet]\nports = [50000]\nkeys = {{ 50000 = "{key_a}" }}\n')
    second = tmp_path / "b.toml"
    second.write_text(
        'state_dir = "/srv/cart"\n[kdnet]\nports = [50001]\n'
        f'keys = {{ 50000 = "{key_b}" }}\n[capture]\nquota_mb = 10\n'
    )
    old, new = load_config(first), load_config(second)
    changes = {change.key: change for change in config_changes(old, new)}
    assert changes["state_dir"].applies is Applies.RESTART
    assert changes["capture.quota_mb"].applies is Applies.LIVE
    assert changes["kdnet.ports"].applies is Applies.RESTART  # 50000 would go away
    assert changes["kdnet.keys"].applies is Applies.LIVE
    shown = "\n".join(str(change) for change in changes.values())
    assert key_a not in shown and key_b not in shown and "50000" in shown
    running = effective_config(old, new, list(changes.values()))
    assert running.state_dir == old.state_dir
    assert running.kdnet.ports == (50000, 50001)
    assert running.capture.quota_mb == 10
    assert running.kdnet.keys[50000] == key_b
