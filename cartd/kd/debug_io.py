"""DBGKD_DEBUG_IO: DbgPrint text, DbgPrompt prompts, and the host's answer to a prompt.

The payload is a 16-byte header (ApiNumber, ProcessorLevel, Processor, two u32 lengths) and the
string (spec section 6). The two lengths mean different things by direction: a target's
GetString carries LengthOfPromptString @8 and the longest answer it accepts in
LengthOfStringRead @0xC, while the host's answer carries the answer's actual length @0xC. The wire
cannot tell which one it is, so:

- `pull_debug_io` gives the wire struct as is (`DebugIoFrame`: both lengths and every byte after
  the header), for relays, logs and anything that must keep bytes exact;
- `pull_debug_io_from_target` / `pull_debug_io_from_host` give a typed `DebugIoMessage`;
- `push_debug_io` encodes either: a frame byte for byte, a typed message with its lengths
  filled in.

Strings are taken from the END of the payload (``payload[len(payload) - length:]``, clamped to
what is there), the robust rule of spec section 6; a length that disagrees with the payload is
never an error, only a payload shorter than the header is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cartd.kd.constants import DebugIoApi
from cartd.kd.errors import KdDecodeError, KdUsageError

DEBUG_IO_HEADER_SIZE = 0x10
_HEADER = struct.Struct("<IHHII")  # ApiNumber, ProcessorLevel, Processor, length @8, length @0xC


def _known_api(api: int) -> DebugIoApi | int:
    try:
        return DebugIoApi(api)
    except ValueError:
        return api


def _string_at_end(tail: bytes, length: int) -> bytes:
    return tail if length >= len(tail) else tail[len(tail) - length :]


# --- The wire struct ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugIoFrame:
    """The DBGKD_DEBUG_IO payload field by field, with nothing interpreted."""

    api: DebugIoApi | int
    processor_level: int = 0
    processor: int = 0
    length_of_string: int = 0  # @8: LengthOfString (print) / LengthOfPromptString (prompt)
    length_of_string_read: int = 0  # @0xC: LengthOfStringRead (max answer, or answer length)
    data: bytes = b""  # every byte after the 16-byte header

    @property
    def string(self) -> bytes:
        """The last LengthOfString bytes: a PrintString's text or a GetString's prompt."""
        return _string_at_end(self.data, self.length_of_string)

    @property
    def string_read(self) -> bytes:
        """The last LengthOfStringRead bytes: the answer in a host's GetString reply."""
        return _string_at_end(self.data, self.length_of_string_read)


def pull_debug_io(payload: bytes) -> DebugIoFrame:
    """Decode the header of any DEBUG_IO payload of at least 16 bytes; interpret nothing."""
    if len(payload) < DEBUG_IO_HEADER_SIZE:
        raise KdDecodeError(
            f"debug I/O payload needs {DEBUG_IO_HEADER_SIZE} bytes, got {len(payload)}"
        )
    payload = bytes(payload)
    api, level, processor, length, length_read = _HEADER.unpack_from(payload)
    return DebugIoFrame(
        api=_known_api(api),
        processor_level=level,
        processor=processor,
        length_of_string=length,
        length_of_string_read=length_read,
        data=payload[DEBUG_IO_HEADER_SIZE:],
    )


def _push_frame(frame: DebugIoFrame) -> bytes:
    try:
        header = _HEADER.pack(
            frame.api,
            frame.processor_level,
            frame.processor,
            frame.length_of_string,
            frame.length_of_string_read,
        )
    except struct.error as exc:
        raise KdUsageError(f"debug I/O header field does not fit: {exc}") from exc
    return header + bytes(frame.data)


# --- Typed messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintString:
    """DbgPrint output (target to host); usually ends with a newline, not a NUL (spec 15)."""

    text: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GetString:
    """DbgPrompt (target to host): show ``prompt``, answer with at most ``max_reply_length``
    bytes. The target waits, stopped, until it gets a `GetStringReply`."""

    prompt: bytes
    max_reply_length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GetStringReply:
    """The host's answer to a GetString (ApiNumber 0x3231, LengthOfStringRead = len(text))."""

    text: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownDebugIo:
    """A DEBUG_IO ApiNumber cartd does not know: both lengths and the data, as received."""

    length_of_string: int = 0
    length_of_string_read: int = 0
    data: bytes = b""


DebugIoBody = PrintString | GetString | GetStringReply | UnknownDebugIo


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugIoMessage:
    """A DEBUG_IO payload with its meaning decoded; ``api`` must match the body's kind."""

    api: DebugIoApi | int
    processor_level: int = 0
    processor: int = 0
    body: DebugIoBody


def _typed(frame: DebugIoFrame, get_string: DebugIoBody) -> DebugIoMessage:
    body: DebugIoBody
    if frame.api == DebugIoApi.PRINT_STRING:
        body = PrintString(text=frame.string)
    elif frame.api == DebugIoApi.GET_STRING:
        body = get_string
    else:
        body = UnknownDebugIo(
            length_of_string=frame.length_of_string,
            length_of_string_read=frame.length_of_string_read,
            data=frame.data,
        )
    return DebugIoMessage(
        api=frame.api,
        processor_level=frame.processor_level,
        processor=frame.processor,
        body=body,
    )


def pull_debug_io_from_target(payload: bytes) -> DebugIoMessage:
    """Decode what a host receives: PrintString, GetString, or UnknownDebugIo."""
    frame = pull_debug_io(payload)
    prompt = GetString(prompt=frame.string, max_reply_length=frame.length_of_string_read)
    return _typed(frame, prompt)


def pull_debug_io_from_host(payload: bytes) -> DebugIoMessage:
    """Decode what a target receives: GetStringReply (or PrintString, UnknownDebugIo)."""
    frame = pull_debug_io(payload)
    reply = GetStringReply(text=frame.string_read)
    return _typed(frame, reply)


def _wire_fields(body: DebugIoBody) -> tuple[DebugIoApi | None, int, int, bytes]:
    """(ApiNumber the body travels with, length @8, length @0xC, data)."""
    match body:
        case PrintString(text=text):
            return DebugIoApi.PRINT_STRING, len(text), 0, text
        case GetString(prompt=prompt, max_reply_length=limit):
            return DebugIoApi.GET_STRING, len(prompt), limit, prompt
        case GetStringReply(text=text):
            # LengthOfPromptString means nothing in an answer and ReactOS ignores it: send 0.
            return DebugIoApi.GET_STRING, 0, len(text), text
        case UnknownDebugIo():
            return None, body.length_of_string, body.length_of_string_read, body.data


def _frame_of(message: DebugIoMessage) -> DebugIoFrame:
    expected_api, length, length_read, data = _wire_fields(message.body)
    if expected_api is None and message.api in (DebugIoApi.PRINT_STRING, DebugIoApi.GET_STRING):
        raise KdUsageError(f"ApiNumber {message.api:#x} needs a typed body, not UnknownDebugIo")
    if expected_api is not None and message.api != expected_api:
        raise KdUsageError(
            f"{type(message.body).__name__} travels with ApiNumber {expected_api:#x}, "
            f"not {message.api:#x}"
        )
    return DebugIoFrame(
        api=message.api,
        processor_level=message.processor_level,
        processor=message.processor,
        length_of_string=length,
        length_of_string_read=length_read,
        data=data,
    )


def push_debug_io(message: DebugIoFrame | DebugIoMessage) -> bytes:
    """Encode a frame exactly as it is, or a typed message (whose body must match its
    ApiNumber) with the lengths filled in from the body."""
    frame = _frame_of(message) if isinstance(message, DebugIoMessage) else message
    return _push_frame(frame)


def print_string_message(
    text: bytes, *, processor: int = 0, processor_level: int = 0
) -> DebugIoMessage:
    """A target's DbgPrint of ``text``."""
    return DebugIoMessage(
        api=DebugIoApi.PRINT_STRING,
        processor_level=processor_level,
        processor=processor,
        body=PrintString(text=text),
    )


def get_string_message(
    prompt: bytes, max_reply_length: int, *, processor: int = 0, processor_level: int = 0
) -> DebugIoMessage:
    """A target's DbgPrompt: show ``prompt``, accept up to ``max_reply_length`` bytes."""
    return DebugIoMessage(
        api=DebugIoApi.GET_STRING,
        processor_level=processor_level,
        processor=processor,
        body=GetString(prompt=prompt, max_reply_length=max_reply_length),
    )


def get_string_reply_message(
    text: bytes, *, processor: int = 0, processor_level: int = 0
) -> DebugIoMessage:
    """The host's answer to a DbgPrompt. Targets copy at most the length they asked for, so a
    longer ``text`` is cut there, not refused."""
    return DebugIoMessage(
        api=DebugIoApi.GET_STRING,
        processor_level=processor_level,
        processor=processor,
        body=GetStringReply(text=text),
    )
