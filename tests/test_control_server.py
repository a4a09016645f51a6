"""The control server over real UNIX sockets, driven by raw JSON lines as a script would send.

The backend is a small stand-in for the daemon: two targets with a state each, the methods a
daemon registers, and an EventHub it publishes into. (The real daemon is tested end to end with
its own tests.)
"""

from __future__ import annotations

import asyncio
import grp
import importlib.metadata
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cartd.control.hub import EventHub, Subscription
from cartd.control.protocol import MAX_LINE_BYTES, ControlError, ErrorCode, unknown_target
from cartd.control.registry import MethodRegistry, Param, Params
from cartd.control.server import ControlServer, ControlSocketError
from cartd.events import DebugPrint, Event, Running, Stopped

TIMEOUT = 5.0


class FakeDaemon:
    """Two targets, "alpha" running and "beta" stopped, and the events they produce."""

    def __init__(self, *, queue_limit: int = 1000) -> None:
        self.hub = EventHub(history=50, queue_limit=queue_limit)
        self.states = {"alpha": "running", "beta": "stopped"}
        self.methods = MethodRegistry()
        self.methods.register("status", self.status)
        self.methods.register("break", self.break_in, target=Param(str, required=True))
        self.methods.register("continue", self.go, target=Param(str, required=True))
        self.methods.register("crash", self.crash)
        self.methods.register("huge", self.huge)
        self.released = asyncio.Event()
        self.methods.register("slow", self.slow)

    def subscribe(self, *, replay: int, target: str | None) -> Subscription:
        return self.hub.subscribe(replay=replay, target=target)

    def publish(self, event: Event) -> None:
        self.hub.publish(event)

    async def status(self, params: Params) -> dict[str, Any]:
        return {"targets": [{"target": t, "state": s} for t, s in sorted(self.states.items())]}

    def _target(self, name: str) -> str:
        if name not in self.states:
            raise unknown_target(name, self.states)
        return name

    async def break_in(self, params: Params) -> dict[str, Any]:
        target = self._target(params["target"])
        if self.states[target] != "running":
            raise ControlError(ErrorCode.NOT_RUNNING, f"{target} is already stopped")
        self.states[target] = "stopped"
        self.publish(
            Stopped(
                target=target,
                reason="break_in",
                processor=0,
                pc=0xFFFFF80512345678,
                exception_code=0x80000003,
                first_chance=True,
            )
        )
        return {}

    async def go(self, params: Params) -> dict[str, Any]:
        target = self._target(params["target"])
        if self.states[target] != "stopped":
            raise ControlError(ErrorCode.NOT_STOPPED, f"{target} is running: nothing to continue")
        self.states[target] = "running"
        self.publish(Running(target=target))
        return {}

    async def crash(self, params: Params) -> dict[str, Any]:
        raise RuntimeError("a bug in a handler")

    async def huge(self, params: Params) -> dict[str, Any]:
        return {"blob": "x" * MAX_LINE_BYTES}

    async def slow(self, params: Params) -> dict[str, Any]:
        await self.released.wait()
        return {"slow": True}


class RawClient:
    """A client that writes bytes and reads JSON lines, as `nc -U` would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self, method: str, request_id: int | str = 1, **params: Any
    ) -> dict[str, Any]:
        message = {"v": 1, "id": request_id, "method": method, "params": params}
        await self.send(json.dumps(message).encode() + b"\n")
        return await self.line()

    async def line(self) -> dict[str, Any]:
        data = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert data.endswith(b"\n"), f"connection closed: {data!r}"
        message: dict[str, Any] = json.loads(data)
        assert message["v"] == 1
        return message

    async def events(self, count: int) -> list[dict[str, Any]]:
        return [(await self.line())["event"] for _ in range(count)]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "control.sock"


@pytest.fixture
async def server(daemon: FakeDaemon, socket_path: Path) -> AsyncIterator[ControlServer]:
    async with ControlServer(daemon, socket_path, control_group=None) as server:
        yield server


@pytest.fixture
async def client(server: ControlServer) -> AsyncIterator[RawClient]:
    client = await RawClient.open(server.path)
    yield client
    await client.close()


def ok(request_id: int | str, result: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "id": request_id, "ok": True, "result": result}


def prints(target: str, count: int, start: int = 0) -> list[DebugPrint]:
    return [DebugPrint(target=target, text=f"{target} {n}\n") for n in range(start, start + count)]


# --- requests and replies ------------------------------------------------------------------------


async def test_hello(client: RawClient) -> None:
    reply = await client.request("hello", request_id="first")
    assert reply["id"] == "first" and reply["ok"] is True
    result = reply["result"]
    assert result["protocol"] == 1
    assert result["server"] == f"cartd {importlib.metadata.version('cartd')}"
    assert result["methods"] == [
        "break",
        "continue",
        "crash",
        "hello",
        "huge",
        "slow",
        "status",
        "subscribe",
        "unsubscribe",
    ]


async def test_status_and_commands(client: RawClient, daemon: FakeDaemon) -> None:
    assert await client.request("status", 1) == ok(
        1,
        {
            "targets": [
                {"target": "alpha", "state": "running"},
                {"target": "beta", "state": "stopped"},
            ]
        },
    )
    assert await client.request("break", 2, target="alpha") == ok(2, {})
    assert await client.request("continue", 3, target="beta") == ok(3, {})
    assert daemon.states == {"alpha": "stopped", "beta": "running"}


async def test_a_request_without_params_or_newline_at_the_end(server: ControlServer) -> None:
    # `printf '{"v":1,...}' | nc -U`: the last line has no newline, then the client half-closes.
    client = await RawClient.open(server.path)
    await client.send(b'{"v":1,"id":1,"method":"hello"}\n{"v":1,"id":2,"method":"status"}')
    client.writer.write_eof()
    assert (await client.line())["id"] == 1
    assert (await client.line())["id"] == 2
    assert await client.reader.read() == b""
    await client.close()


ALPHA_BETA = "known targets: alpha, beta"


@pytest.mark.parametrize(
    ("line", "code", "request_id", "says"),
    [
        (b"this is not json", "parse_error", None, "not JSON"),
        (b"\xc3\x28", "parse_error", None, "not UTF-8"),
        (b"[1, 2, 3]", "parse_error", None, "a JSON object, not a list"),
        (b"42", "parse_error", None, "a JSON object, not a number"),
        (b'{"v": 1, "method": "status"}', "invalid_request", None, 'without "id"'),
        (b'{"v": 1, "id": {}, "method": "status"}', "invalid_request", None, "an object as"),
        (b'{"id": 9, "method": "status"}', "invalid_request", 9, "protocol version"),
        (b'{"v": 1, "id": 9, "params": {}}', "invalid_request", 9, '"method"'),
        (b'{"v": 1, "id": 9, "method": "status", "params": 3}', "invalid_request", 9, "number"),
        (b'{"v": 7, "id": 9, "method": "status"}', "unsupported_version", 9, "version 1, not 7"),
        (b'{"v": 1, "id": 9, "method": "explode"}', "unknown_method", 9, "knows: break, cont"),
        (b'{"v": 1, "id": 9, "method": "break"}', "invalid_params", 9, "needs 'target'"),
        (
            b'{"v": 1, "id": 9, "method": "break", "params": {"target": 3}}',
            "invalid_params",
            9,
            "is a string, not 3",
        ),
        (
            b'{"v": 1, "id": 9, "method": "subscribe", "params": {"replay": "all"}}',
            "invalid_params",
            9,
            "'replay' is an integer >= 0",
        ),
        (
            b'{"v": 1, "id": 9, "method": "hello", "params": {"verbose": true}}',
            "invalid_params",
            9,
            "no parameter 'verbose'; it takes no parameters",
        ),
        (
            b'{"v": 1, "id": 9, "method": "break", "params": {"target": "gamma"}}',
            "unknown_target",
            9,
            f"no target 'gamma'; {ALPHA_BETA}",
        ),
        (
            b'{"v": 1, "id": 9, "method": "break", "params": {"target": "beta"}}',
            "not_running",
            9,
            "already stopped",
        ),
        (
            b'{"v": 1, "id": 9, "method": "continue", "params": {"target": "alpha"}}',
            "not_stopped",
            9,
            "nothing to continue",
        ),
        (b'{"v": 1, "id": 9, "method": "crash"}', "internal_error", 9, "journalctl -u cartd"),
        (b'{"v": 1, "id": 9, "method": "huge"}', "internal_error", 9, "more than a line holds"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_stays_usable(
    client: RawClient, line: bytes, code: str, request_id: int | None, says: str
) -> None:
    await client.send(line + b"\n")
    reply = await client.line()
    assert reply["ok"] is False
    assert reply["id"] == request_id
    assert reply["error"]["code"] == code
    assert says in reply["error"]["message"]
    assert (await client.request("hello", 10))["ok"] is True


async def test_a_failing_handler_is_logged(
    client: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cartd.control.server"):
        await client.request("crash")
    assert "a bug in a handler" in caplog.text


@pytest.mark.parametrize("chunk", [MAX_LINE_BYTES + 100, 4096])
async def test_an_over_long_line_is_discarded_with_an_error(client: RawClient, chunk: int) -> None:
    long_line = b'{"v": 1, "id": 1, "method": "hello", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}\n'
    for start in range(0, len(long_line), chunk):
        await client.send(long_line[start : start + chunk])
    await client.send(b'{"v": 1, "id": 2, "method": "hello"}\n')
    reply = await client.line()
    assert reply["id"] is None
    assert reply["error"]["code"] == "line_too_long"
    assert "at most 1048576 bytes" in reply["error"]["message"]
    assert (await client.line())["id"] == 2


async def test_requests_are_answered_in_order(client: RawClient, daemon: FakeDaemon) -> None:
    # A slow first request holds back the replies after it, but not their ids' order.
    lines = [
        b'{"v": 1, "id": 1, "method": "slow"}',
        b"garbage",
        b'{"v": 1, "id": 3, "method": "status"}',
        b'{"v": 1, "id": "four", "method": "hello"}',
    ]
    await client.send(b"\n".join(lines) + b"\n")
    await asyncio.sleep(0.05)
    daemon.released.set()
    assert [(await client.line())["id"] for _ in lines] == [1, None, 3, "four"]


# --- events --------------------------------------------------------------------------------------


async def test_replay_then_live_events_in_order(client: RawClient, daemon: FakeDaemon) -> None:
    history = prints("alpha", 10)
    for event in history:
        daemon.publish(event)
    assert await client.request("subscribe", 1, replay=3) == ok(1, {"replayed": 3})
    assert await client.events(3) == [event.to_json() for event in history[-3:]]

    assert await client.request("break", 2, target="alpha") == ok(2, {})
    stopped = (await client.line())["event"]
    assert stopped["type"] == "stopped"
    assert stopped["pc"] == "0xfffff80512345678"
    live = prints("beta", 5)
    for event in live:
        daemon.publish(event)
    assert await client.events(5) == [event.to_json() for event in live]


async def test_default_replay_and_none(server: ControlServer, daemon: FakeDaemon) -> None:
    for event in prints("alpha", 120):
        daemon.publish(event)  # the hub keeps 50
    first = await RawClient.open(server.path)
    assert (await first.request("subscribe"))["result"] == {"replayed": 50}
    second = await RawClient.open(server.path)
    assert (await second.request("subscribe", replay=0))["result"] == {"replayed": 0}
    daemon.publish(Running(target="alpha"))
    assert (await second.line())["event"]["type"] == "running"
    await first.close()
    await second.close()


async def test_a_target_filter(client: RawClient, daemon: FakeDaemon) -> None:
    for alpha, beta in zip(prints("alpha", 4), prints("beta", 4), strict=True):
        daemon.publish(alpha)
        daemon.publish(beta)
    assert await client.request("subscribe", replay=2, target="beta") == ok(1, {"replayed": 2})
    daemon.publish(Running(target="alpha"))
    daemon.publish(Running(target="beta"))
    events = await client.events(3)
    assert [(event["target"], event["type"]) for event in events] == [
        ("beta", "debug_print"),
        ("beta", "debug_print"),
        ("beta", "running"),
    ]
    assert [event.get("text") for event in events] == ["beta 2\n", "beta 3\n", None]


async def test_unsubscribe_and_resubscribe(client: RawClient, daemon: FakeDaemon) -> None:
    await client.request("subscribe", 1, replay=0)
    daemon.publish(Running(target="alpha"))
    assert (await client.events(1))[0]["type"] == "running"
    assert await client.request("unsubscribe", 2) == ok(2, {})
    daemon.publish(Running(target="alpha"))
    # Nothing more arrives: the next line is the reply to the next request.
    assert (await client.request("subscribe", 3, replay=1, target="beta"))["id"] == 3
    daemon.publish(Running(target="alpha"))
    daemon.publish(Running(target="beta"))
    assert (await client.events(1))[0]["target"] == "beta"
    assert len(daemon.hub._subscriptions) == 1


async def read_prints(
    client: RawClient, total: int, numbers: list[int] | None = None
) -> tuple[list[int], int]:
    """Read until `total` numbered prints are accounted for, received (appended to `numbers`
    as they come) or reported dropped."""
    numbers = [] if numbers is None else numbers
    dropped = 0
    while len(numbers) + dropped < total:
        line = await client.line()
        if "dropped" in line:
            assert line == {"v": 1, "dropped": line["dropped"]}
            dropped += line["dropped"]
        else:
            numbers.append(int(line["event"]["text"].split()[0]))
    return numbers, dropped


async def test_a_subscriber_that_never_reads_holds_up_nobody(socket_path: Path) -> None:
    daemon = FakeDaemon(queue_limit=20)
    async with ControlServer(daemon, socket_path, control_group=None):
        stuck = await RawClient.open(socket_path)
        assert (await stuck.request("subscribe", replay=0))["ok"] is True
        other = await RawClient.open(socket_path)
        assert (await other.request("subscribe", replay=0))["ok"] is True
        watcher = await RawClient.open(socket_path)
        total = 3000
        seen_by_other: list[int] = []
        other_reads = asyncio.create_task(read_prints(other, total, seen_by_other))

        async def other_caught_up(count: int) -> None:
            while len(seen_by_other) < count:
                await asyncio.sleep(0)

        # Far more than the socket buffers hold: the stuck client's writes stall, its queue
        # fills and the rest is dropped, while publishing never waits and the others go on.
        # (The publisher lets the reading client keep up, so that one never drops.)
        for n in range(total):
            daemon.publish(DebugPrint(target="alpha", text=f"{n} {'x' * 2000}"))
            if n % 10 == 9:
                await asyncio.wait_for(other_caught_up(n + 1), TIMEOUT)
            if n % 500 == 499:
                assert (await watcher.request("status", n))["ok"] is True
        assert await asyncio.wait_for(other_reads, TIMEOUT) == (list(range(total)), 0)

        # The stuck client finally reads: the events that got through, one report of the
        # gap, and then the stream goes on.
        numbers, dropped = await read_prints(stuck, total)
        assert dropped > 0
        assert numbers == list(range(len(numbers)))
        daemon.publish(Running(target="alpha"))
        assert (await stuck.events(1))[0]["type"] == "running"
        for client in (stuck, other, watcher):
            await client.close()


async def test_two_clients_at_once(server: ControlServer, daemon: FakeDaemon) -> None:
    first = await RawClient.open(server.path)
    second = await RawClient.open(server.path)
    await first.request("subscribe", replay=0)
    await second.request("subscribe", replay=0, target="alpha")
    replies = await asyncio.gather(
        first.request("break", 2, target="alpha"), second.request("status", 2)
    )
    assert [reply["ok"] for reply in replies] == [True, True]
    assert (await first.events(1))[0]["type"] == "stopped"
    assert (await second.events(1))[0]["type"] == "stopped"
    await first.close()
    # The other client carries on after one leaves.
    daemon.publish(Running(target="alpha"))
    assert (await second.events(1))[0]["type"] == "running"
    await second.close()


async def test_a_client_that_disconnects_mid_stream_is_forgotten(
    server: ControlServer, daemon: FakeDaemon
) -> None:
    client = await RawClient.open(server.path)
    await client.request("subscribe", replay=0)
    await client.close()
    for event in prints("alpha", 50):
        daemon.publish(event)
        await asyncio.sleep(0)
    for _ in range(100):
        if not daemon.hub._subscriptions:
            break
        await asyncio.sleep(0.01)
    assert not daemon.hub._subscriptions


# --- the socket file -----------------------------------------------------------------------------


async def test_socket_and_directory_modes(tmp_path: Path, daemon: FakeDaemon) -> None:
    own_group = grp.getgrgid(os.getgid()).gr_name
    path = tmp_path / "new" / "control.sock"
    async with ControlServer(daemon, path, control_group=own_group):
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getgid()
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
    assert not path.exists()

    for group in (None, "no-such-group-cartd-test"):
        async with ControlServer(daemon, path, control_group=group):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_a_stale_socket_file_is_replaced(socket_path: Path, daemon: FakeDaemon) -> None:
    socket_path.parent.mkdir()
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(os.fspath(socket_path))
    leftover.close()  # a daemon that died: the file stays, nobody listens
    async with ControlServer(daemon, socket_path, control_group=None):
        client = await RawClient.open(socket_path)
        assert (await client.request("hello"))["ok"] is True
        await client.close()


async def test_a_live_socket_is_not_taken_over(server: ControlServer, daemon: FakeDaemon) -> None:
    with pytest.raises(ControlSocketError) as refused:
        await ControlServer(FakeDaemon(), server.path, control_group=None).start()
    assert str(refused.value) == f"another cartd is already running on {server.path}"
    client = await RawClient.open(server.path)
    assert (await client.request("hello"))["ok"] is True
    await client.close()


async def test_a_file_that_is_not_a_socket_is_left_alone(
    socket_path: Path, daemon: FakeDaemon
) -> None:
    socket_path.parent.mkdir()
    socket_path.write_text("notes")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        await ControlServer(daemon, socket_path, control_group=None).start()
    assert socket_path.read_text() == "notes"


async def test_a_path_too_long_for_a_socket(tmp_path: Path, daemon: FakeDaemon) -> None:
    path = tmp_path / ("d" * 100) / "control.sock"
    with pytest.raises(ControlSocketError, match="choose a shorter directory"):
        await ControlServer(daemon, path, control_group=None).start()


def test_methods_may_not_shadow_the_built_ins(socket_path: Path, daemon: FakeDaemon) -> None:
    daemon.methods.register("subscribe", daemon.status)
    with pytest.raises(ValueError, match="built into the control server"):
        ControlServer(daemon, socket_path)


async def test_close_disconnects_clients_and_removes_the_socket(
    socket_path: Path, daemon: FakeDaemon
) -> None:
    server = ControlServer(daemon, socket_path, control_group=None)
    await server.start()
    idle = await RawClient.open(socket_path)
    subscribed = await RawClient.open(socket_path)
    await subscribed.request("subscribe")
    waiting = await RawClient.open(socket_path)
    await waiting.send(b'{"v": 1, "id": 1, "method": "slow"}\n')
    await asyncio.sleep(0.05)

    await asyncio.wait_for(server.close(), TIMEOUT)
    for client in (idle, subscribed, waiting):
        assert await asyncio.wait_for(client.reader.read(), TIMEOUT) == b""
        await client.close()
    assert not socket_path.exists()
    assert not daemon.hub._subscriptions
    await server.close()  # a second close does nothing
