"""The control client against a real server on a UNIX socket, and against a hand-written server
for what cartd's own server never sends (unknown event types, garbage)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cartd.control.client import (
    ConnectionClosed,
    ControlAccessDenied,
    ControlClient,
    DaemonNotRunning,
    call_once,
)
from cartd.control.hub import EventHub, Subscription
from cartd.control.protocol import ControlError, ErrorCode, EventsDropped
from cartd.control.registry import MethodRegistry, Param, Params
from cartd.control.server import ControlServer
from cartd.events import DebugPrint, Event, Running

TIMEOUT = 5.0


class Backend:
    """A daemon stand-in: one method that echoes, one that refuses, and an event hub."""

    def __init__(self) -> None:
        self.hub = EventHub(history=20)
        self.methods = MethodRegistry()
        self.methods.register("echo", self.echo, text=Param(str, required=True))
        self.methods.register("continue", self.refuse, target=Param(str, required=True))
        self.release = asyncio.Event()
        self.methods.register("wait", self.wait)

    def subscribe(self, *, replay: int, target: str | None) -> Subscription:
        return self.hub.subscribe(replay=replay, target=target)

    async def echo(self, params: Params) -> dict[str, Any]:
        return {"text": params["text"]}

    async def refuse(self, params: Params) -> dict[str, Any]:
        raise ControlError(ErrorCode.NOT_STOPPED, f"{params['target']} is running")

    async def wait(self, params: Params) -> dict[str, Any]:
        await self.release.wait()
        return {}


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
async def server(backend: Backend, tmp_path: Path) -> AsyncIterator[ControlServer]:
    async with ControlServer(backend, tmp_path / "control.sock", control_group=None) as server:
        yield server


@pytest.fixture
async def client(server: ControlServer) -> AsyncIterator[ControlClient]:
    async with await ControlClient.connect(server.path) as client:
        yield client


def prints(target: str, count: int, start: int = 0) -> list[Event]:
    return [DebugPrint(target=target, text=f"{target} {n}") for n in range(start, start + count)]


async def take(stream: AsyncIterator[Event | EventsDropped], count: int) -> list[object]:
    return [await asyncio.wait_for(anext(stream), TIMEOUT) for _ in range(count)]


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), TIMEOUT)


# --- connecting ----------------------------------------------------------------------------------


async def test_no_daemon(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    expected = (
        f"no daemon listening on {path}: start it with `cartd run` or `systemctl start cartd`"
    )
    with pytest.raises(DaemonNotRunning) as missing:
        await ControlClient.connect(path)
    assert str(missing.value) == expected

    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(os.fspath(path))
    leftover.close()  # the file of a daemon that died: connecting is refused
    with pytest.raises(DaemonNotRunning) as refused:
        await ControlClient.connect(path)
    assert str(refused.value) == expected


def test_call_once_without_a_daemon(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning):
        call_once(tmp_path / "control.sock", "hello")


async def test_no_permission(server: ControlServer) -> None:
    if os.geteuid() != 0:
        os.chmod(server.path, 0)
        with pytest.raises(ControlAccessDenied) as denied:
            await ControlClient.connect(server.path)
        outcome = f"{type(denied.value).__name__}: {denied.value}"
    else:
        # Root may connect anywhere: try as nobody, in a child (the directory is root's, 0700).
        outcome = await asyncio.to_thread(connect_as_nobody, server.path)
    assert outcome == (
        f"ControlAccessDenied: permission denied on {server.path}: only root and members of "
        "the group `cartd` may use the control socket; add yourself with "
        "`sudo usermod -aG cartd $USER`, then log in again"
    )


def connect_as_nobody(path: Path) -> str:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(ControlClient.connect(path))
                outcome = "connected"
            except Exception as error:
                outcome = f"{type(error).__name__}: {error}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(child, 0)
    return outcome


# --- calls ---------------------------------------------------------------------------------------


async def test_calls_and_errors(client: ControlClient) -> None:
    hello = await client.call("hello")
    assert hello["protocol"] == 1
    assert hello["methods"] == ["continue", "echo", "hello", "subscribe", "unsubscribe", "wait"]
    assert await client.call("echo", text="héllo") == {"text": "héllo"}

    with pytest.raises(ControlError) as refused:
        await client.call("continue", target="alpha")
    assert (refused.value.code, refused.value.message) == ("not_stopped", "alpha is running")
    with pytest.raises(ControlError) as unknown:
        await client.call("reboot")
    assert unknown.value.code == "unknown_method"
    with pytest.raises(ControlError) as bad:
        await client.call("echo", text=3)
    assert bad.value.code == "invalid_params"
    # Still usable after every error.
    assert await client.call("echo", text="again") == {"text": "again"}


async def test_concurrent_calls_get_their_own_replies(
    client: ControlClient, backend: Backend
) -> None:
    waiting = asyncio.create_task(client.call("wait"))
    echoes = [asyncio.create_task(client.call("echo", text=str(n))) for n in range(5)]
    await asyncio.sleep(0.02)
    assert not any(task.done() for task in echoes)  # answered in order, after "wait"
    backend.release.set()
    assert await waiting == {}
    assert [await task for task in echoes] == [{"text": str(n)} for n in range(5)]


@pytest.fixture
def server_in_a_thread(tmp_path: Path) -> Iterator[Path]:
    """A server on an event loop of its own, for the synchronous helper."""
    path = tmp_path / "control.sock"
    started = threading.Event()
    loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        done = asyncio.Event()
        async with ControlServer(Backend(), path, control_group=None):
            loops.append((asyncio.get_running_loop(), done))
            started.set()
            await done.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    assert started.wait(TIMEOUT)
    yield path
    loop, done = loops[0]
    loop.call_soon_threadsafe(done.set)
    thread.join(TIMEOUT)


def test_call_once(server_in_a_thread: Path) -> None:
    assert call_once(server_in_a_thread, "echo", text="once") == {"text": "once"}
    with pytest.raises(ControlError, match="needs 'text'"):
        call_once(server_in_a_thread, "echo")


# --- events --------------------------------------------------------------------------------------


async def test_events_replay_then_live(client: ControlClient, backend: Backend) -> None:
    history = prints("alpha", 5) + prints("beta", 5)
    for event in history:
        backend.hub.publish(event)
    stream = client.events(replay=4, target="alpha")
    assert await take(stream, 4) == history[1:5]
    live = prints("beta", 2, start=5) + prints("alpha", 2, start=5)
    for event in live:
        backend.hub.publish(event)
    assert await take(stream, 2) == live[2:]
    await stream.aclose()  # stops the daemon sending
    await until(lambda: not backend.hub._subscriptions)
    # Calls still work on the same connection afterwards.
    assert await client.call("echo", text="after") == {"text": "after"}


async def test_a_new_events_stream_replaces_the_old(
    client: ControlClient, backend: Backend
) -> None:
    alpha, beta = Running(target="alpha"), Running(target="beta")
    backend.hub.publish(alpha)
    # The subscription is made when iteration starts; a replay lets that happen at once.
    first = client.events(replay=1)
    assert await take(first, 1) == [alpha]
    backend.hub.publish(beta)
    await client.call("echo", text="beta has been sent to the first stream by now")
    second = client.events(replay=1, target="beta")
    assert await take(second, 1) == [beta]
    # The first stream still hands out what it had received, then ends.
    assert [item async for item in first] == [beta]
    assert len(backend.hub._subscriptions) == 1


async def test_a_slow_consumer_sees_where_events_were_dropped(
    server: ControlServer, backend: Backend
) -> None:
    backend.hub.publish(Running(target="alpha"))
    async with await ControlClient.connect(server.path, queue_limit=5) as client:
        stream = client.events(replay=1)
        await take(stream, 1)
        events = prints("alpha", 50)
        for event in events:
            backend.hub.publish(event)
        await until(lambda: client._events is not None and client._events._dropped == 45)
        backend.hub.publish(Running(target="beta"))
        received = await take(stream, 7)
        assert received[:5] == events[:5]
        assert received[5] == EventsDropped(45)
        assert isinstance(received[6], Running)


async def test_the_daemon_going_away(
    server: ControlServer, client: ControlClient, backend: Backend
) -> None:
    backend.hub.publish(Running(target="alpha"))
    stream = client.events(replay=1)
    await take(stream, 1)
    waiting = asyncio.create_task(client.call("wait"))
    await asyncio.sleep(0.02)
    await server.close()
    with pytest.raises(ConnectionClosed, match="the daemon closed the connection"):
        await asyncio.wait_for(waiting, TIMEOUT)
    with pytest.raises(ConnectionClosed, match="the daemon closed the connection"):
        await take(stream, 1)
    with pytest.raises(ConnectionClosed):
        await client.call("hello")


async def test_calls_after_close(client: ControlClient) -> None:
    await client.close()
    with pytest.raises(ConnectionClosed, match="the control client is closed"):
        await client.call("hello")


# --- a hand-written server -----------------------------------------------------------------------


async def scripted_server(path: Path, lines: list[bytes]) -> asyncio.Server:
    """Answers the first request (subscribe) with success, then sends `lines` and hangs up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b'{"v":1,"id":1,"ok":true,"result":{"replayed":0}}\n')
        for line in lines:
            writer.write(line + b"\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(serve, path=os.fspath(path))


async def test_unknown_events_are_skipped_and_drops_passed_on(tmp_path: Path) -> None:
    path = tmp_path / "scripted.sock"
    running = Running(target="alpha")
    lines = [
        b'{"v":1,"event":{"type":"dump_progress","time":"t","target":"alpha","pages":1}}',
        b'{"v":1,"dropped":5}',
        json.dumps({"v": 1, "event": running.to_json()}).encode(),
    ]
    server = await scripted_server(path, lines)
    async with server, await ControlClient.connect(path) as client:
        stream = client.events()
        assert await take(stream, 2) == [EventsDropped(5), running]
        with pytest.raises(ConnectionClosed, match="the daemon closed the connection"):
            await take(stream, 1)


async def test_a_line_the_client_cannot_read_ends_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "scripted.sock"
    server = await scripted_server(path, [b"<html>"])
    async with server, await ControlClient.connect(path) as client:
        stream = client.events()
        with pytest.raises(ConnectionClosed, match="a line this client cannot read: not a JSON"):
            await take(stream, 1)
