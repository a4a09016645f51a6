"""`cartd attach-info` and `cartd take-over`, the command line, against a daemon in this process
that holds a simulated target on a real pty.

A remote debugger is a plain TCP connection to the target's relay port: the connection alone
makes it the owner, and a take-over ends it (it reads EOF).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from daemon_harness import (
    EventWatch,
    PtySim,
    cartd_cli,
    daemon_in_process,
    load_test_config,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.config import Config
from cartd.sim.target import Scenario


@dataclass
class _Cart:
    sim: PtySim
    watch: EventWatch
    config: Config
    target: str
    cli: tuple[str, ...]  # the arguments that reach this daemon


@asynccontextmanager
async def _cart(tmp_path: Path) -> AsyncIterator[_Cart]:
    sim = start_sim(Scenario(print_interval=0.5, module_interval=None), seed=4)
    state = tmp_path / "s"
    config = load_test_config(write_config(tmp_path / "c.toml", ports=[sim.slave_path]), state)
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await watch.wait_type(ev.TargetConnected, target, timeout=30)
                yield _Cart(sim, watch, config, target, ("--state-dir", str(state)))
            finally:
                await watch.close()
    finally:
        sim.close()


async def test_attach_info_prints_the_commands_to_paste(tmp_path: Path) -> None:
    async with _cart(tmp_path) as cart:
        port = cart.config.relay.first_port
        host = socket.gethostname()
        result = await cartd_cli("attach-info", cart.target, *cart.cli)
        assert result.returncode == 0, result
        out = result.stdout
        assert out.startswith(f"{cart.target}: KD relay\n  TCP port 127.0.0.1:{port}: listening\n")
        unix_socket = cart.config.control_socket_path().parent / "kd" / f"{cart.target}.sock"
        assert f"  UNIX socket {unix_socket}: listening\n" in out, result
        assert "owner: cartd (no remote debugger attached)" in out, result
        for line in (
            f"    ssh -N -L {port}:127.0.0.1:{port} {host}\n",
            f"    windbg -k com:ipport={port},port=127.0.0.1\n",
            f"  or kd -k com:ipport={port},port=127.0.0.1\n",
            f"    ntoseye -b kd --connect {unix_socket}\n",
            f"    ssh {host} cartd take-over {cart.target}\n",
        ):
            assert line in out, result
        assert result.stderr == "", result

        as_json = await cartd_cli("attach-info", cart.target, "--json", *cart.cli)
        assert as_json.returncode == 0, as_json
        info = json.loads(as_json.stdout)
        assert info["target"] == cart.target and info["enabled"] is True
        assert (info["port"], info["bind"], info["owner"]) == (port, "127.0.0.1", "cartd")
        assert info["unix_socket"] == str(unix_socket)
        assert info["commands"]["windbg"] == f"windbg -k com:ipport={port},port=127.0.0.1"


async def test_take_over_disconnects_the_remote_debugger(tmp_path: Path) -> None:
    async with _cart(tmp_path) as cart:
        port = cart.config.relay.first_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            at, attached = await cart.watch.wait_type(
                ev.OwnerChanged, cart.target, where=lambda e: e.owner != "cartd"
            )
            owner = attached.owner
            assert f"tcp 127.0.0.1:{writer.get_extra_info('sockname')[1]}" in owner

            shown = await cartd_cli("attach-info", cart.target, *cart.cli)
            assert f"owner: {owner} since " in shown.stdout, shown
            status = await cartd_cli("status", *cart.cli)
            assert f", driven by {owner}" in status.stdout, status
            assert f"port {port}" in status.stdout, status

            result = await cartd_cli("take-over", cart.target, *cart.cli)
            assert result.returncode == 0, result
            assert result.stdout.startswith(f"{cart.target}: disconnected {owner}; "), result
            assert "the relay is kept for " in result.stdout and " for the next 60 s." in (
                result.stdout
            ), result
            assert f"    windbg -k com:ipport={port},port=127.0.0.1\n" in result.stdout, result

            # The remote debugger's connection is closed, and cartd owns the target again.
            async with asyncio.timeout(10):
                while await reader.read(65536):
                    pass
            await cart.watch.wait_type(
                ev.OwnerChanged, cart.target, after=at + 1, where=lambda e: e.owner == "cartd"
            )

            # Nobody owns it now: a second take-over says so.
            again = await cartd_cli("take-over", cart.target, *cart.cli)
            assert again.returncode == 0, again
            assert again.stdout.startswith(f"{cart.target}: no remote debugger was attached; ")
        finally:
            writer.close()


async def test_an_unknown_target_is_one_line_and_exit_1(tmp_path: Path) -> None:
    async with _cart(tmp_path) as cart:
        for command in ("attach-info", "take-over"):
            result = await cartd_cli(command, "no-such-target", *cart.cli)
            assert result.returncode == 1, result
            assert result.stdout == "", result
            assert result.stderr.startswith("cartd: ") and result.stderr.count("\n") == 1, result
            assert "no-such-target" in result.stderr, result


async def test_no_daemon_is_one_line_and_exit_1(tmp_path: Path) -> None:
    for command in ("attach-info", "take-over"):
        result = await cartd_cli(command, "pts-1", "--state-dir", str(tmp_path))
        assert result.returncode == 1, result
        assert result.stderr == (
            f"cartd: no daemon listening on {tmp_path / 'control.sock'}: start it with "
            "`cartd run` or `systemctl start cartd`\n"
        ), result
