"""The control protocol's wire format, without I/O: JSON lines between cartd and its clients.

Theory of operation:

1. A connection carries lines of UTF-8 text, each ending in "\\n" and holding one JSON object.
   Blank lines are ignored. A line longer than `MAX_LINE_BYTES` is discarded and answered with
   a `line_too_long` error; the lines after it are read normally.
2. A client sends requests: `{"v": 1, "id": 7, "method": "status", "params": {}}`. `id` is a
   number or a string chosen by the client and copied into the reply; `params` may be left out.
   Fields the server does not know are ignored, so newer clients can add optional ones.
3. The server answers every request line exactly once, in the order the requests arrived:
   `{"v": 1, "id": 7, "ok": true, "result": {...}}` or
   `{"v": 1, "id": 7, "ok": false, "error": {"code": "...", "message": "..."}}`.
   A line it cannot read as a request still gets an error reply, with `"id": null` when no id
   could be read from it. No request, however malformed, closes the connection.
4. Between replies the server pushes `{"v": 1, "event": {...}}` lines to a subscribed client
   (the event's stable JSON form from `cartd.events`), and `{"v": 1, "dropped": N}` where N events
   were left out because the client read too slowly.
5. `v` is the protocol version. Compatible changes (new methods, optional parameters, result
   fields, event types, error codes) keep it; anything else raises it. A server answers a request
   of a version it does not speak with `unsupported_version`, naming the versions it does.

`LineBuffer` frames bytes into lines, `parse_request` turns a line into a `Request` or a
`ProtocolError` (the reply the line earns), the `encode_*` functions write lines, and
`decode_server_line` reads the server's lines on the client side.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cartd.events import Event, EventFormatError, event_from_json

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})

# The longest line either side accepts, newline excluded. Real messages are far shorter (an event
# holds at most one KD packet's text, under 4000 bytes; a status reply a few KiB per target), so
# the limit only bounds the memory a confused or hostile peer can make the other side hold.
MAX_LINE_BYTES = 1 << 20

# Where the daemon listens when it runs as a systemd service (RuntimeDirectory=cartd).

RequestId = int | str
JsonObject = dict[str, Any]

_EXAMPLE_REQUEST = '{"v": 1, "id": 1, "method": "hello"}'


class ErrorCode(StrEnum):
    """Stable error codes. Scripts test these; the messages are for people and may change."""

    PARSE_ERROR = "parse_error"  # the line is not UTF-8 JSON, or not a JSON object
    LINE_TOO_LONG = "line_too_long"  # the line exceeded MAX_LINE_BYTES and was discarded
    INVALID_REQUEST = "invalid_request"  # "v", "id", "method" or "params" missing or mistyped
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_METHOD = "unknown_method"
    INVALID_PARAMS = "invalid_params"  # unknown, missing or mistyped parameter
    UNKNOWN_TARGET = "unknown_target"
    TARGET_BUSY = "target_busy"  # someone else (a debugger through the relay) drives the target
    NOT_STOPPED = "not_stopped"  # the command needs a stopped target
    NOT_RUNNING = "not_running"  # the command needs a running target
    LINK_DOWN = "link_down"  # the target's debug link is down
    NO_SPACE = "no_space"  # not enough disk for what was asked (a dump)
    INTERNAL_ERROR = "internal_error"  # a bug in cartd; the daemon's log has the details


class ControlError(Exception):
    """A request failed. Method handlers raise it to send an error reply; the client raises it
    when a reply says `"ok": false`. `code` is a plain string on the client side, because a newer
    daemon may send codes this version does not know."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unknown_target(name: str, known: Iterable[str]) -> ControlError:
    """The error for a target name the daemon does not know, listing the ones it does."""
    names = sorted(known)
    if names:
        hint = "known targets: " + ", ".join(names)
    else:
        hint = "no target has connected yet (`cartd status` shows the links and targets)"
    return ControlError(ErrorCode.UNKNOWN_TARGET, f"no target {name!r}; {hint}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    id: RequestId
    method: str
    params: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolError:
    """A line the server cannot accept as a request, and the error reply it earns."""

    id: RequestId | None
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Stands where a discarded over-long line was in the stream."""

    limit: int


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """`count` events were left out here because their reader fell behind."""

    count: int


# --- framing -------------------------------------------------------------------------------------


class LineBuffer:
    """Splits a byte stream into lines: `feed()` bytes as they arrive, then take lines with
    `next_line()` until it returns None (more bytes needed). `feed_eof()` at the end of the
    stream makes an unterminated last line available too.

    An over-long line yields one `LineTooLong` as soon as it passes the limit; its remaining
    bytes are thrown away as they arrive, so memory stays bounded by the limit.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already known to hold no newline
        self._discarding = False  # inside an over-long line, waiting for its newline
        self._lines: deque[bytes | LineTooLong] = deque()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline < 0:
                break
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            self._scanned = 0
            if self._discarding:
                # The tail of a line already reported as too long.
                self._discarding = False
            else:
                self._add(line)
        if self._discarding:
            self._buffer.clear()
        elif len(self._buffer) > self.max_line:
            self._lines.append(LineTooLong(self.max_line))
            self._discarding = True
            self._buffer.clear()
        self._scanned = len(self._buffer)

    def feed_eof(self) -> None:
        if not self._discarding:
            self._add(bytes(self._buffer))
        self._buffer.clear()
        self._scanned = 0
        self._discarding = False

    def next_line(self) -> bytes | LineTooLong | None:
        return self._lines.popleft() if self._lines else None

    def _add(self, line: bytes) -> None:
        if len(line) > self.max_line:
            self._lines.append(LineTooLong(self.max_line))
        elif line.strip():
            self._lines.append(line)


# --- requests (server side) ----------------------------------------------------------------------


def parse_request(line: bytes) -> Request | ProtocolError:
    """Read one request line; what is wrong with it comes back as the error reply it earns."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return ProtocolError(
            id=None,
            code=ErrorCode.PARSE_ERROR,
            message=f"the line is not UTF-8 (bad byte at offset {error.start}): "
            f"send one JSON object per line, e.g. {_EXAMPLE_REQUEST}",
        )
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        return ProtocolError(
            id=None,
            code=ErrorCode.PARSE_ERROR,
            message=f"the line is not JSON ({error.msg} at column {error.colno}): "
            f"send one JSON object per line, e.g. {_EXAMPLE_REQUEST}",
        )
    if not isinstance(message, dict):
        return ProtocolError(
            id=None,
            code=ErrorCode.PARSE_ERROR,
            message=f"a request is a JSON object, not {json_kind(message)}: "
            f"e.g. {_EXAMPLE_REQUEST}",
        )

    # The id is read first so that every later complaint can be matched to its request.
    raw_id = message.get("id")
    request_id = raw_id if _is_request_id(raw_id) else None

    def invalid(text: str) -> ProtocolError:
        return ProtocolError(id=request_id, code=ErrorCode.INVALID_REQUEST, message=text)

    version = message.get("v")
    if "v" not in message:
        return invalid(f'a request needs "v": {PROTOCOL_VERSION} (the protocol version)')
    if not _is_int(version):
        return invalid(f'"v" is the protocol version, a number such as {PROTOCOL_VERSION}')
    if version not in SUPPORTED_VERSIONS:
        return ProtocolError(
            id=request_id,
            code=ErrorCode.UNSUPPORTED_VERSION,
            message=f"this cartd speaks protocol version {_versions()}, not {version}: "
            "use a client of the same cartd release",
        )
    if request_id is None:
        what = "without" if "id" not in message else f"with {json_kind(raw_id)} as"
        return invalid(
            f'a request {what} "id": give each request a number or a string as "id", '
            "so its reply can be matched to it"
        )
    method = message.get("method")
    if not isinstance(method, str) or not method:
        return invalid(
            'a request needs "method", the name of a method (the "hello" reply lists them)'
        )
    params = message.get("params", {})
    if not isinstance(params, dict):
        return invalid(f'"params" is a JSON object of named parameters, not {json_kind(params)}')
    return Request(id=request_id, method=method, params=params)


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which Python counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_request_id(value: object) -> bool:
    return _is_int(value) or isinstance(value, str)


def _versions() -> str:
    return ", ".join(str(version) for version in sorted(SUPPORTED_VERSIONS))


def json_kind(value: object) -> str:
    """How a JSON reader would name a value's type ("a string", "null"), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- encoding ------------------------------------------------------------------------------------


def _encode(message: JsonObject) -> bytes:
    # ASCII with \\u escapes: any text a target prints (even undecodable bytes carried as lone
    # surrogates) becomes a valid line, and `nc -U` shows it without a terminal encoding issue.
    text = json.dumps(message, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.encode("ascii") + b"\n"


def encode_request(request_id: RequestId, method: str, params: Mapping[str, Any]) -> bytes:
    message: JsonObject = {"v": PROTOCOL_VERSION, "id": request_id, "method": method}
    if params:
        message["params"] = dict(params)
    return _encode(message)


def encode_result(request_id: RequestId, result: Mapping[str, Any]) -> bytes:
    """A success reply; raises TypeError or ValueError if `result` is not JSON-serialisable."""
    return _encode({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": dict(result)})


def encode_error(request_id: RequestId | None, code: str, message: str) -> bytes:
    error = {"code": str(code), "message": message}
    return _encode({"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error})


def encode_event(event: Event) -> bytes:
    return _encode({"v": PROTOCOL_VERSION, "event": event.to_json()})


def encode_dropped(count: int) -> bytes:
    return _encode({"v": PROTOCOL_VERSION, "dropped": count})


# --- server lines (client side) ------------------------------------------------------------------


class ServerLineError(ValueError):
    """The server sent a line that is not a control message of a version this client speaks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    id: RequestId | None
    result: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReply:
    id: RequestId | None
    code: str
    message: str

    def exception(self) -> ControlError:
        return ControlError(self.code, self.message)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushedEvent:
    """An event line. `event` is None for an event type this client does not know (a newer
    daemon's); `data` is the JSON object either way."""

    event: Event | None
    data: JsonObject


ServerMessage = Result | ErrorReply | PushedEvent | EventsDropped


def decode_server_line(line: bytes) -> ServerMessage:
    """Read one line from the server; raises ServerLineError if it is not a control message."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ServerLineError(f"not a JSON line: {error}") from error
    if not isinstance(message, dict):
        raise ServerLineError(f"a server message is a JSON object, not {json_kind(message)}")
    version = message.get("v")
    if version not in SUPPORTED_VERSIONS:
        raise ServerLineError(
            f"the server speaks protocol version {version!r}; this client speaks {_versions()}"
        )
    if "event" in message:
        data = message["event"]
        if not isinstance(data, dict):
            raise ServerLineError(f"an event is a JSON object, not {json_kind(data)}")
        try:
            event: Event | None = event_from_json(data)
        except EventFormatError:
            event = None
        return PushedEvent(event=event, data=data)
    if "dropped" in message:
        count = message["dropped"]
        if not _is_int(count) or count < 0:
            raise ServerLineError(f'"dropped" is a count, not {count!r}')
        return EventsDropped(count)
    request_id = message.get("id")
    if request_id is not None and not _is_request_id(request_id):
        raise ServerLineError(f"a reply id is a number or string, not {json_kind(request_id)}")
    ok = message.get("ok")
    if ok is True:
        result = message.get("result")
        if not isinstance(result, dict):
            raise ServerLineError(f'"result" is a JSON object, not {json_kind(result)}')
        return Result(id=request_id, result=result)
    if ok is False:
        failure = message.get("error")
        if (
            not isinstance(failure, dict)
            or not isinstance(failure.get("code"), str)
            or not isinstance(failure.get("message"), str)
        ):
            raise ServerLineError('"error" is an object with a "code" and a "message" string')
        return ErrorReply(id=request_id, code=failure["code"], message=failure["message"])
    raise ServerLineError('a server message has "event", "dropped" or "ok"')


# --- where the socket lives ----------------------------------------------------------------------
