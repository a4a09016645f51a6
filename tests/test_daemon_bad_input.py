"""Bad input at the daemon's edges: control requests, configuration files, and the disk.

- Malformed control requests go over a raw UNIX socket to a running daemon; each earns an error
  reply on the same connection, which then still answers `status` (architecture rule 6).
- `cartd run --config bad.toml` refuses to start, naming the file, the line and the key.
- A read-only state directory and a full disk (real tmpfs mounts; skipped with the reason where
  mounting is not permitted) produce a `capture_error` over the control socket while the daemon
  goes on serving; the full disk resumes (`capture_resumed`) once space is freed, and the
  journal then holds every event in order (rule 5). The control socket lives outside the broken
  state directory (`control_socket` in the config).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    EventWatch,
    cartd_cli,
    daemon_in_process,
    heartbeats,
    load_test_config,
    session_dirs,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.capture.journal import scan_journal
from cartd.control.protocol import MAX_LINE_BYTES
from cartd.sim.target import Scenario

# --- control requests ---------------------------------------------------------------------------


async def test_malformed_control_requests_get_error_replies(tmp_path: Path) -> None:
    sim = start_sim(Scenario(print_interval=0.2, module_interval=None), baud=None)
    config = load_test_config(
        write_config(tmp_path / "cartd.toml", ports=[sim.slave_path]), tmp_path / "s"
    )
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    cases: list[tuple[bytes, object, str, str]] = [
        # (request line, id in the reply, error code, part of the message)
        (b"this is not json", None, "parse_error", "the line is not JSON"),
        (b"\xff\xfe\x00\x01", None, "parse_error", "not UTF-8"),
        (b'{"v": 1, "id": 1, "method": "sta', None, "parse_error", "not JSON"),
        (b"[1, 2, 3]", None, "parse_error", "a request is a JSON object"),
        (b'{"v": 1, "id": 2}', 2, "invalid_request", '"method"'),
        (b'{"id": 3, "method": "status"}', 3, "invalid_request", '"v": 1'),
        (b'{"v": 7, "id": 4, "method": "status"}', 4, "unsupported_version", "not 7"),
        (b'{"v": 1, "id": [5], "method": "status"}', None, "invalid_request", '"id"'),
        (b'{"v": 1, "id": 6, "method": "status", "params": []}', 6, "invalid_request", "params"),
        (b'{"v": 1, "id": 7, "method": "format_disk"}', 7, "unknown_method", "format_disk"),
        (
            b'{"v": 1, "id": 8, "method": "history", "params": {"count": "lots"}}',
            8,
            "invalid_params",
            "'count' is an integer",
        ),
        (
            b'{"v": 1, "id": 9, "method": "history", "params": {"count": -1}}',
            9,
            "invalid_params",
            "from 0 to 100000",
        ),
        (
            b'{"v": 1, "id": 10, "method": "status", "params": {"verbose": true}}',
            10,
            "invalid_params",
            "no parameter 'verbose'",
        ),
        (b'{"v": 1, "id": 11, "method": "break"}', 11, "invalid_params", "needs 'target'"),
        (
            b'{"v": 1, "id": 12, "method": "break", "params": {"target": 42}}',
            12,
            "invalid_params",
            "is a string",
        ),
        (
            b'{"v": 1, "id": "thirteen", "method": "break", "params": {"target": "db-07"}}',
            "thirteen",
            "unknown_target",
            f"no target 'db-07'; known targets: {target}",
        ),
        (
            json.dumps(
                {"v": 1, "id": 14, "method": "continue", "params": {"target": target}}
            ).encode(),
            14,
            "not_stopped",
            "nothing to continue",
        ),
        (b"{" + b" " * (MAX_LINE_BYTES + 1) + b"}", None, "line_too_long", "at most"),
    ]
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            await watch.wait_type(ev.TargetConnected, target)
            await watch.close()
            reader, writer = await asyncio.open_unix_connection(str(daemon.socket_path))
            try:
                # One request at a time: each gets its own error reply.
                for line, request_id, code, message in cases:
                    writer.write(line + b"\n")
                    reply = await _reply(reader, daemon.stderr)
                    assert reply["v"] == 1 and reply["ok"] is False, (line[:80], reply)
                    assert reply["id"] == request_id, (line[:80], reply)
                    assert reply["error"]["code"] == code, (line[:80], reply)
                    assert message in reply["error"]["message"], (line[:80], reply)
                    writer.write(b'{"v": 1, "id": "after", "method": "status"}\n')
                    status = await _reply(reader, daemon.stderr)
                    assert status["ok"] is True and status["id"] == "after", status
                    assert status["result"]["targets"][0]["target"] == target
                # All at once, with blank lines between: one reply each, in order.
                writer.write(b"\n\n".join(line for line, *_ in cases) + b"\n")
                writer.write(b'{"v": 1, "id": "last", "method": "status"}\n')
                for line, request_id, code, _message in cases:
                    reply = await _reply(reader, daemon.stderr)
                    assert (reply["id"], reply["error"]["code"]) == (request_id, code), line[:80]
                status = await _reply(reader, daemon.stderr)
                assert status["ok"] is True and status["id"] == "last", status
                assert status["result"]["targets"][0]["state"] == "running"
            finally:
                writer.close()
                await writer.wait_closed()
            # The daemon logged no failure for any of it.
            assert "failed" not in daemon.log.text()
    finally:
        sim.close()


async def _reply(reader: asyncio.StreamReader, stderr: Callable[[], str]) -> dict[str, Any]:
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
    except TimeoutError:
        raise AssertionError(f"no reply within 10 s; daemon's stderr:\n{stderr()}") from None
    assert line.endswith(b"\n"), f"the daemon closed the connection: {line!r}\n{stderr()}"
    reply = json.loads(line)
    assert isinstance(reply, dict)
    return reply


# --- configuration files ------------------------------------------------------------------------

BAD_CONFIGS = [
    # (file text, line, key or None, part of the problem)
    (
        "# the cart in rack 4\n[serial]\nprots = ['/dev/ttyS0']\n",
        3,
        "serial.prots",
        "unknown key 'prots' (did you mean 'ports'?)",
    ),
    (
        "[serial]\nports = ['/tmp/ttyS0']\n",
        2,
        "serial.ports",
        "expected 'auto' or a list of device paths under /dev/, got '/tmp/ttyS0'",
    ),
    (
        "[serial]\nports = 'auto'\n\n[capture]\nfsync_interval = 'often'\n",
        5,
        "capture.fsync_interval",
        "expected a positive number of seconds, got 'often'",
    ),
    (
        "[policy]\non_bugcheck = 'panic'\n",
        2,
        "policy.on_bugcheck",
        "expected 'hold', 'continue' or 'reboot', got 'panic'",
    ),
    (
        "[serial]\nprobe_seconds = 1\ncontrol_socket = '/run/cartd.sock'\n",
        3,
        "serial.control_socket",
        "top-level keys must come before the first [section]",
    ),
    ("[serial\nports = 'auto'\n", 1, None, "not valid TOML"),
]


async def test_a_malformed_config_stops_cartd_run(tmp_path: Path) -> None:
    runs = []
    for number, (text, _, _, _) in enumerate(BAD_CONFIGS):
        path = tmp_path / f"bad{number}.toml"
        path.write_text(text)
        state = tmp_path / f"state{number}"
        runs.append(cartd_cli("run", "--config", str(path), "--state-dir", str(state)))
    results = await asyncio.gather(*runs)
    for number, ((_, line, key, problem), result) in enumerate(
        zip(BAD_CONFIGS, results, strict=True)
    ):
        path = tmp_path / f"bad{number}.toml"
        assert result.returncode == 2, result
        first, second = result.stderr.splitlines()
        where = f"cartd: {path}:{line}: " + (f"{key}: " if key else "")
        assert first.startswith(where), result
        assert problem in first, result
        assert second == "cartd: not starting with a configuration it cannot read", result
        assert not (tmp_path / f"state{number}").exists()  # it did nothing else


# --- the disk ------------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mount a fresh tmpfs with the given options; unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        where = tmp_path / name
        where.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], check=False)


async def test_read_only_state_dir_is_reported_and_the_daemon_serves_on(
    tmp_path: Path, tmpfs: Callable[[str, str], Path]
) -> None:
    state = tmpfs("ro", "ro,size=1m")
    sim = start_sim(Scenario(print_interval=0.1, module_interval=None))
    config = load_test_config(
        write_config(
            tmp_path / "cartd.toml", ports=[sim.slave_path], control_socket=tmp_path / "c.sock"
        ),
        state,
    )
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                at, error = await watch.wait_type(ev.CaptureError, target)
                assert error.path.startswith(f"{state}/"), error
                assert "Read-only file system" in error.error, error
                assert "capture paused" in error.error, error
                # It goes on: the target connects and prints, people can watch and ask.
                at, _ = await watch.wait_type(ev.TargetConnected, target, after=at)
                for _ in range(10):
                    at, _ = await watch.wait_type(ev.DebugPrint, target, after=at + 1)
                status = await cartd_cli("status", "--json", "--socket", str(daemon.socket_path))
                assert status.returncode == 0, status
                (shown,) = json.loads(status.stdout)["targets"]
                assert shown["recording"] is False and shown["state"] == "running", shown
                human = await cartd_cli("status", "--socket", str(daemon.socket_path))
                assert "(NOT RECORDING)" in human.stdout, human
                history = await watch.client.call("history", count=5, target=target)
                assert len(history["events"]) == 5
                assert sum(isinstance(e, ev.CaptureError) for e in watch.events) == 1
            finally:
                await watch.close()
    finally:
        sim.close()
    assert os.listdir(state) == []


async def test_full_disk_pauses_capture_and_resumes_when_space_is_freed(
    tmp_path: Path, tmpfs: Callable[[str, str], Path]
) -> None:
    state = tmpfs("small", "size=256k")
    sim = start_sim(Scenario(print_interval=0.02, module_interval=None))
    config = load_test_config(
        write_config(
            tmp_path / "cartd.toml", ports=[sim.slave_path], control_socket=tmp_path / "c.sock"
        ),
        state,
    )
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    filler = state / "filler"
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                at, _ = await watch.wait_type(ev.TargetConnected, target)
                for _ in range(10):
                    at, _ = await watch.wait_type(ev.DebugPrint, target, after=at + 1)
                _fill(filler)
                at, error = await watch.wait_type(ev.CaptureError, target, after=at)
                assert error.path.startswith(f"{state}/"), error
                assert "No space left on device" in error.error, error
                assert "capture paused" in error.error, error
                # Still serving while nothing can be written.
                for _ in range(20):
                    at, _ = await watch.wait_type(ev.DebugPrint, target, after=at + 1)
                (shown,) = (await watch.client.call("status"))["targets"]
                assert shown["recording"] is False, shown
                filler.unlink()
                at, resumed = await watch.wait_type(ev.CaptureResumed, target, after=at)
                for _ in range(10):
                    at, _ = await watch.wait_type(ev.DebugPrint, target, after=at + 1)
                (shown,) = (await watch.client.call("status"))["targets"]
                assert shown["recording"] is True, shown
                assert watch.dropped == 0
            finally:
                await watch.close()
    finally:
        sim.close()

    # Nothing was lost or torn: the journal has every event, in order, with the gap marked.
    (session,) = session_dirs(state, target)
    journal = scan_journal(session / "events.jsonl")
    assert journal.problems == []
    recorded = [e.to_json() for e in journal.events if isinstance(getattr(e, "target", None), str)]
    seen = [e.to_json() for e in watch.events if isinstance(getattr(e, "target", None), str)]
    # (The journal may go on a little: the subscriber left before the daemon stopped.)
    assert recorded[: len(seen)] == seen
    kinds = [e.type for e in journal.events]
    assert kinds.count("capture_error") == 1 and kinds.count("capture_resumed") == 1
    numbers = heartbeats(journal.events)
    assert numbers == list(range(1, len(numbers) + 1))
    assert resumed.path == str(session)


def _fill(path: Path) -> None:
    """Write until the file system is full."""
    block = b"\0" * 4096
    with open(path, "wb", buffering=0) as filler:
        while True:
            try:
                filler.write(block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                return
