"""The control protocol without sockets: framing, request parsing, encoding, parameter checks,
and the bounded event queues behind subscriptions."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cartd.control.hub import EventHub, EventQueue
from cartd.control.protocol import (
    ControlError,
    ErrorCode,
    ErrorReply,
    EventsDropped,
    LineBuffer,
    LineTooLong,
    ProtocolError,
    PushedEvent,
    Request,
    Result,
    ServerLineError,
    decode_server_line,
    encode_dropped,
    encode_error,
    encode_event,
    encode_request,
    encode_result,
    parse_request,
    unknown_target,
)
from cartd.control.registry import Method, MethodRegistry, Param, Params
from cartd.events import Bugcheck, DebugPrint, Event, LinkUp

# --- framing -------------------------------------------------------------------------------------


def drain(buffer: LineBuffer) -> list[bytes | LineTooLong]:
    lines = []
    while (line := buffer.next_line()) is not None:
        lines.append(line)
    return lines


STREAM = b'{"a": 1}\n\n  \n{"b": 2}\r\n' + b"x" * 40 + b"\n" + b"y" * 16 + b"\nlast"
EXPECTED: list[bytes | LineTooLong] = [b'{"a": 1}', b'{"b": 2}\r', LineTooLong(16), b"y" * 16]


def test_line_buffer_whole_and_byte_by_byte_agree() -> None:
    whole = LineBuffer(max_line=16)
    whole.feed(STREAM)
    assert drain(whole) == EXPECTED
    whole.feed_eof()
    assert drain(whole) == [b"last"]

    piecewise = LineBuffer(max_line=16)
    lines = []
    for byte in STREAM:
        piecewise.feed(bytes([byte]))
        lines += drain(piecewise)
    piecewise.feed_eof()
    assert lines + drain(piecewise) == [*EXPECTED, b"last"]


def test_line_buffer_reports_a_long_line_once_and_keeps_memory_bounded() -> None:
    buffer = LineBuffer(max_line=16)
    buffer.feed(b"z" * 17)
    assert drain(buffer) == [LineTooLong(16)]  # reported before its end arrives
    for _ in range(1000):
        buffer.feed(b"z" * 1000)
    assert drain(buffer) == []
    assert len(buffer._buffer) == 0
    buffer.feed(b"zzz\nok\n")
    assert drain(buffer) == [b"ok"]


def test_line_buffer_eof_inside_a_long_line_adds_nothing() -> None:
    buffer = LineBuffer(max_line=4)
    buffer.feed(b"123456")
    buffer.feed_eof()
    assert drain(buffer) == [LineTooLong(4)]


# --- requests ------------------------------------------------------------------------------------


def test_a_valid_request() -> None:
    assert parse_request(b'{"v": 1, "id": 7, "method": "break", "params": {"target": "a"}}') == (
        Request(id=7, method="break", params={"target": "a"})
    )
    # params may be left out; unknown fields are ignored (a newer client may send some).
    assert parse_request(b'{"v": 1, "id": "x", "method": "hello", "trace": true}') == Request(
        id="x", method="hello", params={}
    )


@pytest.mark.parametrize(
    ("line", "code", "request_id", "says"),
    [
        (b"\xff\xfe{}", ErrorCode.PARSE_ERROR, None, "not UTF-8"),
        (b"hello", ErrorCode.PARSE_ERROR, None, "not JSON"),
        (b'{"v": 1, "id": 1', ErrorCode.PARSE_ERROR, None, "not JSON"),
        (b"[1, 2]", ErrorCode.PARSE_ERROR, None, "not a list"),
        (b'"hello"', ErrorCode.PARSE_ERROR, None, "not a string"),
        (b'{"v": 1, "method": "hello"}', ErrorCode.INVALID_REQUEST, None, 'without "id"'),
        (b'{"v": 1, "id": null, "method": "x"}', ErrorCode.INVALID_REQUEST, None, "with null"),
        (b'{"v": 1, "id": true, "method": "x"}', ErrorCode.INVALID_REQUEST, None, "true/false"),
        (b'{"v": 1, "id": [1], "method": "x"}', ErrorCode.INVALID_REQUEST, None, "with a list"),
        (b'{"id": 3, "method": "hello"}', ErrorCode.INVALID_REQUEST, 3, '"v": 1'),
        (b'{"v": "1", "id": 3, "method": "hello"}', ErrorCode.INVALID_REQUEST, 3, "version"),
        (b'{"v": 2, "id": 4, "method": "hello"}', ErrorCode.UNSUPPORTED_VERSION, 4, "version 1"),
        (b'{"v": 2, "method": "hello"}', ErrorCode.UNSUPPORTED_VERSION, None, "not 2"),
        (b'{"v": 1, "id": 5}', ErrorCode.INVALID_REQUEST, 5, '"method"'),
        (b'{"v": 1, "id": 5, "method": ""}', ErrorCode.INVALID_REQUEST, 5, '"method"'),
        (b'{"v": 1, "id": 6, "method": "x", "params": []}', ErrorCode.INVALID_REQUEST, 6, "list"),
    ],
)
def test_bad_requests_become_error_replies(
    line: bytes, code: ErrorCode, request_id: int | None, says: str
) -> None:
    error = parse_request(line)
    assert isinstance(error, ProtocolError)
    assert (error.code, error.id) == (code, request_id)
    assert says in error.message


def test_unknown_target_lists_known_ones() -> None:
    error = unknown_target("gamma", ["beta", "alpha"])
    assert error.code == ErrorCode.UNKNOWN_TARGET
    assert error.message == "no target 'gamma'; known targets: alpha, beta"
    assert "no target has connected yet" in unknown_target("gamma", []).message


# --- encoding, and the client's reading of it ----------------------------------------------------


def test_server_lines_round_trip() -> None:
    assert decode_server_line(encode_result(7, {"state": "running"})) == Result(
        id=7, result={"state": "running"}
    )
    error = decode_server_line(encode_error(None, ErrorCode.PARSE_ERROR, "bad"))
    assert error == ErrorReply(id=None, code="parse_error", message="bad")
    assert isinstance(error, ErrorReply)
    assert error.exception().code == "parse_error"
    assert decode_server_line(encode_dropped(12)) == EventsDropped(12)

    bugcheck = Bugcheck(
        target="alpha",
        code=0x9F,
        name="DRIVER_POWER_STATE_FAILURE",
        parameters=(3, 2**64 - 1, 0, 1),
    )
    line = encode_event(bugcheck)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["event"]["parameters"][1] == "0xffffffffffffffff"
    assert decode_server_line(line) == PushedEvent(event=bugcheck, data=bugcheck.to_json())


def test_lines_are_ascii_whatever_the_text() -> None:
    line = encode_event(DebugPrint(target="alpha", text="Grüße \udc80\n"))
    line.decode("ascii")
    decoded = decode_server_line(line)
    assert isinstance(decoded, PushedEvent) and isinstance(decoded.event, DebugPrint)
    assert decoded.event.text == "Grüße \udc80\n"


def test_a_request_line() -> None:
    assert json.loads(encode_request(3, "break", {"target": "a"})) == {
        "v": 1,
        "id": 3,
        "method": "break",
        "params": {"target": "a"},
    }
    assert json.loads(encode_request("q", "hello", {})) == {"v": 1, "id": "q", "method": "hello"}


def test_an_event_type_this_client_does_not_know_is_kept_as_data() -> None:
    line = b'{"v":1,"event":{"type":"dump_progress","time":"t","target":"a","pages":3}}'
    decoded = decode_server_line(line)
    assert decoded == PushedEvent(
        event=None, data={"type": "dump_progress", "time": "t", "target": "a", "pages": 3}
    )


@pytest.mark.parametrize(
    "line",
    [
        b"nonsense",
        b"[]",
        b'{"v": 2, "id": 1, "ok": true, "result": {}}',
        b'{"v": 1, "id": 1, "ok": true}',
        b'{"v": 1, "id": 1, "ok": false, "error": "bad"}',
        b'{"v": 1, "id": [1], "ok": true, "result": {}}',
        b'{"v": 1, "event": 5}',
        b'{"v": 1, "dropped": -1}',
        b'{"v": 1, "id": 1}',
    ],
)
def test_server_lines_that_are_not_control_messages(line: bytes) -> None:
    with pytest.raises(ServerLineError):
        decode_server_line(line)


# --- parameters ----------------------------------------------------------------------------------


async def echo(params: Params) -> dict[str, Any]:
    return dict(params)


def test_parameters_are_checked_and_defaults_filled() -> None:
    method = Method(
        "dump",
        echo,
        {
            "target": Param(str, required=True),
            "pages": Param(int, default=16, minimum=1, maximum=4096),
            "ratio": Param(float, default=0.5),
            "full": Param(bool, default=False),
        },
    )
    assert method.bind({"target": "a"}) == {
        "target": "a",
        "pages": 16,
        "ratio": 0.5,
        "full": False,
    }
    assert method.bind({"target": "a", "ratio": 1, "full": True})["ratio"] == 1

    def refusal(given: dict[str, Any]) -> str:
        with pytest.raises(ControlError) as caught:
            method.bind(given)
        assert caught.value.code == ErrorCode.INVALID_PARAMS
        return caught.value.message

    assert refusal({}) == (
        "'dump' needs 'target' (a string); its parameters: target (a string, "
        "required), pages (an integer from 1 to 4096), ratio (a number), full (true or false)"
    )
    assert refusal({"target": "a", "pagez": 3}).startswith("'dump' has no parameter 'pagez'")
    assert refusal({"target": "a", "pages": "3"}) == (
        "'dump' parameter 'pages' is an integer from 1 to 4096, not \"3\""
    )
    assert refusal({"target": "a", "pages": True}).endswith(", not true")
    assert refusal({"target": "a", "pages": 0}).endswith(", not 0")
    assert refusal({"target": "a", "pages": 5000}).endswith(", not 5000")
    assert refusal({"target": "a", "pages": 2.5}).endswith(", not 2.5")
    assert refusal({"target": "a", "full": 1}) == "'dump' parameter 'full' is true or false, not 1"
    long_list = refusal({"target": ["a"] * 30})
    assert long_list.startswith("'dump' parameter 'target' is a string, not [\"a\", ")
    assert long_list.endswith('"...') and len(long_list) < 120


def test_registry() -> None:
    registry = MethodRegistry()
    registry.register("status", echo)
    registry.register("break", echo, target=Param(str, required=True))
    assert registry.names() == ["break", "status"]
    method = registry.get("break")
    assert method is not None and "target" in method.params
    assert registry.get("nope") is None
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("status", echo)
    with pytest.raises(TypeError):
        Param(set)
    assert Method("status", echo).signature() == "it takes no parameters"


# --- event queues --------------------------------------------------------------------------------


def prints(target: str, count: int, start: int = 0) -> list[Event]:
    return [DebugPrint(target=target, text=f"{target} {n}") for n in range(start, start + count)]


async def take(queue: EventQueue, count: int) -> list[Event | EventsDropped | None]:
    return [await queue.get() for _ in range(count)]


async def test_a_full_queue_drops_and_says_where() -> None:
    queue = EventQueue(limit=3)
    events = prints("a", 10)
    for event in events[:6]:
        queue.put(event)
    assert len(queue) == 3
    queue.put(EventsDropped(4))  # dropped upstream, after the ones dropped here
    assert await take(queue, 2) == events[:2]
    queue.put(events[6])  # room again: the report goes in front of it
    assert await take(queue, 3) == [events[2], EventsDropped(7), events[6]]

    for event in events[:5]:
        queue.put(event)
    assert await take(queue, 4) == [*events[:3], EventsDropped(2)]  # reported once caught up
    queue.close()
    queue.put(events[9])
    assert await queue.get() is None


async def test_hub_replays_recent_events_about_the_target_then_live_ones() -> None:
    hub = EventHub(history=8, queue_limit=100)
    history = [event for pair in zip(prints("a", 6), prints("b", 6), strict=True) for event in pair]
    for event in history:
        hub.publish(event)
    # Only the last 8 are kept: a2 b2 a3 b3 a4 b4 a5 b5.
    about_a = hub.subscribe(replay=3, target="a")
    everything = hub.subscribe(replay=100, target=None)
    nothing = hub.subscribe(replay=0, target=None)
    assert (about_a.replayed, everything.replayed, nothing.replayed) == (3, 8, 0)
    live = [*prints("b", 1, start=6), *prints("a", 1, start=6), LinkUp(link="a", device="/d")]
    for event in live:
        hub.publish(event)

    assert [await about_a.get() for _ in range(5)] == [
        history[6],
        history[8],
        history[10],
        live[1],
        live[2],  # a link event is "about" its link's name
    ]
    assert [await everything.get() for _ in range(11)] == history[4:] + live
    assert [await nothing.get() for _ in range(3)] == live

    about_a.close()
    assert await about_a.get() is None
    hub.publish(prints("a", 1)[0])  # nobody is left to receive it for about_a
    assert len(hub._subscriptions) == 2


def test_the_control_package_imports_no_daemon_or_ui_code() -> None:
    """Architecture: control/ is shared by the daemon and its clients, so it imports neither."""
    code = (
        "import sys, pkgutil, importlib\n"
        "import cartd.control\n"
        "for m in pkgutil.iter_modules(cartd.control.__path__):\n"
        "    importlib.import_module('cartd.control.' + m.name)\n"
        "bad = ('textual', 'cartd.daemon', 'cartd.tui', 'cartd.session', 'cartd.links',\n"
        "       'cartd.capture', 'cartd.kd', 'cartd.sim')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'\n"
        "             or any(m == b or m.startswith(b + '.') for b in bad)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
