"""`cartd sim --kdnet HOST:PORT`: the simulated target served over KDNET by the command line,
seen by cartd's own host (`KdnetDriver`) listening on HOST:PORT on 127.0.0.1.

The simulator runs as a subprocess, as an engineer runs it; the host side runs in the test's
event loop. Also: the key `cartd sim` makes when given none has bcdedit's shape, works, and is
printed once on stdout and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cartd.cli import build_parser
from cartd.daemon.kdnet_driver import KdnetDriver
from cartd.kd.events import StateChanged
from cartd.kd.kdnet.events import SessionStarted
from cartd.kd.kdnet.host import KdnetHost
from cartd.kd.kdnet.keys import MAX_WORD_DIGITS, parse_key
from cartd.kd.state_change import LoadSymbols
from cartd.kd.stops import StopReason
from cartd.sim import command

ROOT = Path(__file__).resolve().parents[1]
KEY = "1.2.3.4"
BUGCHECK_CODE = 0xD1  # DRIVER_IRQL_NOT_LESS_OR_EQUAL, not the default 0x9F
START_TIMEOUT = 20.0  # `cartd sim` imports, builds its machine and prints its first line
STOP_TIMEOUT = 20.0
# bcdedit's words: 13 base-36 digits each (kdnet.md section 1).
GENERATED_KEY = re.compile(r"^(?:[0-9a-z]{13}\.){3}[0-9a-z]{13}$")
FIRST_LINE = re.compile(
    r"^cartd sim: simulated Windows target on KDNET, poking 127\.0\.0\.1:(\d+) "
    r"with (?:key (\S+)|the --key key) \(from 127\.0\.0\.1:(\d+)\)"
)


@dataclass
class Simulator:
    process: asyncio.subprocess.Process
    first_line: str

    async def stop(self) -> tuple[str, str]:
        """SIGTERM it; (the rest of stdout, all of stderr)."""
        if self.process.returncode is None:
            self.process.terminate()
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), 20)
        assert self.process.returncode == 0, stderr.decode(errors="replace")
        return stdout.decode(errors="replace"), stderr.decode(errors="replace")


@contextlib.asynccontextmanager
async def simulator(arguments: Sequence[str]) -> AsyncIterator[Simulator]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cartd",
        "sim",
        *arguments,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        yield Simulator(process, line.decode(errors="replace"))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def next_stop(driver: KdnetDriver) -> StateChanged:
    while True:
        event = await driver.next_event(STOP_TIMEOUT)
        if isinstance(event, StateChanged):
            return event


def loaded_path(stop: StateChanged) -> str:
    body = stop.message.body
    assert isinstance(body, LoadSymbols), stop
    return body.path


async def open_driver(key: str, bind: tuple[str, int]) -> KdnetDriver:
    driver = KdnetDriver(KdnetHost(parse_key(key)))
    await driver.open(bind)
    return driver


def driver_port(driver: KdnetDriver) -> int:
    assert driver._udp is not None
    port: int = driver._udp.get_extra_info("sockname")[1]
    return port


async def test_module_loads_and_the_bugcheck_reach_a_kdnet_host() -> None:
    sessions: list[SessionStarted] = []
    driver = KdnetDriver(KdnetHost(parse_key(KEY)), on_session=sessions.append)
    await driver.open(("127.0.0.1", 0))
    port = driver_port(driver)
    arguments = [
        *("--kdnet", f"127.0.0.1:{port}", "--key", KEY),
        *("--scenario", "bugcheck", "--bugcheck", hex(BUGCHECK_CODE), "--bugcheck-after", "2"),
        *("--memory", "1G", "--seconds", "120"),
    ]
    try:
        async with simulator(arguments) as sim:
            shown = FIRST_LINE.match(sim.first_line)
            assert shown, sim.first_line
            assert int(shown.group(1)) == port
            assert int(shown.group(3)) != port  # an ephemeral source port, not the host's
            assert KEY not in sim.first_line  # the user's own key is not echoed

            # The boot reports ntoskrnl and hal, as KdInitSystem does.
            loaded = []
            for _ in range(2):
                stop = await next_stop(driver)
                assert stop.reason is StopReason.MODULE_LOAD
                loaded.append(loaded_path(stop).rsplit("\\", 1)[-1].lower())
                await driver.resume()
            assert loaded == ["ntoskrnl.exe", "hal.dll"]
            assert sessions and sessions[0].peer == ("127.0.0.1", int(shown.group(3)))

            while not (stop := await next_stop(driver)).reason.is_bugcheck:
                await driver.resume()
            assert stop.bugcheck is not None
            assert stop.bugcheck.code == BUGCHECK_CODE

            _, stderr = await sim.stop()
            assert f"KDNET session with 127.0.0.1:{port}" in stderr
    finally:
        driver.close()


async def test_a_generated_key_is_printed_once_and_works() -> None:
    # The host needs the key the simulator prints, so it can only listen after the first line.
    # Hold the port meanwhile; the pokes it swallows are sent again every 3 s.
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    driver: KdnetDriver | None = None
    try:
        arguments = ["--kdnet", f"127.0.0.1:{port}", "--scenario", "quiet", "--memory", "1G"]
        async with simulator(arguments) as sim:
            shown = FIRST_LINE.match(sim.first_line)
            assert shown and shown.group(2), sim.first_line
            key = shown.group(2)
            assert GENERATED_KEY.match(key), key
            holder.close()
            driver = await open_driver(key, ("127.0.0.1", port))
            stop = await next_stop(driver)
            assert stop.reason is StopReason.MODULE_LOAD
            await driver.resume()
            stdout, stderr = await sim.stop()
            assert key not in stdout
            assert key not in stderr
            assert "KDNET session" in stderr
    finally:
        holder.close()
        if driver is not None:
            driver.close()


def test_generated_keys_look_like_bcdedits() -> None:
    keys = {command.generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert GENERATED_KEY.match(key), key
        parse_key(key)  # each word below 2**64
        assert all(len(word) == MAX_WORD_DIGITS for word in key.split("."))


@pytest.mark.parametrize(
    "arguments",
    [
        ["--kdnet", "127.0.0.1:50000", "--pty"],
        ["--kdnet", "127.0.0.1:50000", "--unix", "/tmp/x.sock"],
        ["--kdnet", "localhost:50000"],
        ["--kdnet", "127.0.0.1:70000"],
        ["--kdnet", "127.0.0.1:50000", "--key", "1.2.3"],
    ],
)
def test_bad_kdnet_command_lines_are_refused(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["sim", *arguments])
    assert exit_info.value.code == 2


def test_a_bad_key_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["sim", "--kdnet", "127.0.0.1:50000", "--key", "zzzzzzzzzzzzzz.1.2.3"]
        )
    assert "zzzzzzzzzzzzzz" not in capsys.readouterr().err


def test_key_and_source_port_need_kdnet(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["sim", "--key", KEY])
    assert command.run(args) == 2
    assert "--kdnet" in capsys.readouterr().err
