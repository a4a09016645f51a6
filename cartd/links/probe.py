"""Does this serial port carry KD? A probe that listens first and speaks only when allowed.

A Windows target waiting for its debugger keeps sending packets (a DbgPrint, a state change)
and sending them again until one is acknowledged, so listening is usually enough: the port is
opened at each configured rate in turn and read for a while, and one packet with a valid header
and checksum settles it (landscape section 7). Random bytes pass those checks with vanishing
probability, and a console's text never does. On a noisy line the only packet heard may be
damaged; one whose leader, type and length passed the checks (its trailer or checksum did not,
or it stopped half way: a flipped bit, a dropped byte) is KD as well, which the protocol core
then asks to have sent again.

Only when every rate stayed silent, and only on a port configured for it, the probe speaks: a
break-in byte and a RESET at the first rate, which a running target answers with a state change
and a target in the debugger with a RESET. A port where anything other than KD was heard is
never written to: it may be a console or another machine's protocol.

The probe decodes nothing beyond "is this a KD packet"; the bytes it read at the winning rate
come back in `initial_bytes` so that the protocol core sees them too, from the first whole
packet on: what came before it was on its way when the port was opened (the tail of a packet)
or is sent again anyway, and is no line noise of the connection's.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cartd.kd.constants import (
    BREAKIN_BYTE,
    CONTROL_PACKET_ID,
    PACKET_HEADER_SIZE,
    PACKET_MAX_SIZE,
    PacketType,
)
from cartd.kd.framing import (
    NoiseDetected,
    NoiseKind,
    PacketDecoded,
    PacketDecoder,
    encode_control_packet,
)
from cartd.links.streams import FdStream, LinkClosed, open_serial

ProbeOutcome = Literal["kd", "silent", "not_kd", "error"]

# 8N1: a start bit, eight data bits and a stop bit cross the line for every byte.
_BITS_PER_BYTE = 10
# The longest frame a target sends: header, 4000 bytes of payload, trailer.
_LONGEST_PACKET = PACKET_HEADER_SIZE + PACKET_MAX_SIZE + 1
# On top of the wire time of the rest of a packet caught half way when listening ends: USB
# adapters deliver bytes in bursts up to 16 ms apart (the FTDI latency timer), and a busy small
# board adds its own delay.
_PACKET_TAIL_SLACK = 0.1
_WAKE_UP = bytes([BREAKIN_BYTE]) + encode_control_packet(PacketType.KD_RESET, CONTROL_PACKET_ID)
# What the decoder reports only after a packet's leader, data packet type and length passed: a
# KD packet damaged on the line, not another protocol's bytes (those fail at the leader or type).
_DAMAGED_KD_PACKET = frozenset(
    {NoiseKind.OVERSIZED, NoiseKind.MISSING_TRAILER, NoiseKind.BAD_CHECKSUM}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """What a probe found. `baud` is the rate KD was heard at (for "not_kd" the rate with the
    most data; None when silent or on error); `initial_bytes` is what was read at that rate (for
    "kd", from the first whole packet on)."""

    result: ProbeOutcome
    baud: int | None
    detail: str
    initial_bytes: bytes = b""


@dataclass(slots=True)
class _Heard:
    baud: int
    data: bytearray = field(default_factory=bytearray)
    packets: int = 0
    damaged: int = 0  # KD packets that line noise spoiled (see _DAMAGED_KD_PACKET)
    skipped: int = 0  # bytes of `data` before the first whole packet

    @property
    def kd(self) -> bool:
        return bool(self.packets or self.damaged)


async def probe_serial(
    device: str, baud_rates: Sequence[int], *, listen_seconds: float, active: bool
) -> ProbeResult:
    """Listen at each rate in `baud_rates` (callers put 115200 first: it is what nearly every
    target uses) for `listen_seconds`, stopping at the first rate where a KD packet arrives.
    With `active`, a port silent at every rate is woken with a break-in and a RESET."""
    if not baud_rates:
        raise ValueError("probe_serial needs at least one baud rate")
    heard: list[_Heard] = []
    try:
        for baud in baud_rates:
            listened = await _listen(device, baud, listen_seconds)
            if listened.kd:
                return _found_kd(listened, "")
            heard.append(listened)
        if any(listened.data for listened in heard):
            return _not_kd(heard)
        silence = (
            f"no bytes in {listen_seconds * len(baud_rates):g} s at any rate "
            f"({_list_rates(baud_rates)} baud)"
        )
        if not active:
            return ProbeResult(result="silent", baud=None, detail=silence)
        answer = await _listen(device, baud_rates[0], listen_seconds, send=_WAKE_UP)
    except _ProbeFailed as failure:
        return ProbeResult(result="error", baud=None, detail=str(failure))
    if answer.kd:
        return _found_kd(answer, " in answer to a break-in and RESET")
    if answer.data:
        return _not_kd([answer], " in answer to a break-in and RESET")
    return ProbeResult(
        result="silent",
        baud=None,
        detail=f"{silence}, and no answer to a break-in and RESET at {baud_rates[0]} baud",
    )


def explain_open_error(device: str, error: LinkClosed) -> str:
    """Why `open_serial(device, ...)` failed, in words that say what to do about it."""
    number = _errno_of(error)
    if number in (errno.EACCES, errno.EPERM):
        return f"{device}: permission denied: {_permission_hint(device)}"
    if number == errno.ENOENT:
        return f"{device}: no such device (unplugged, or a wrong name?)"
    if number in (errno.EBUSY, errno.EAGAIN):
        # EAGAIN is the exclusive lock open_serial takes, held by another program.
        return f"{device}: in use by another program (a terminal program, ModemManager?)"
    if number in (errno.ENXIO, errno.ENODEV, errno.EIO):
        return f"{device}: the device is gone or has no hardware behind it"
    return str(error)


class _ProbeFailed(Exception):
    """The port could not be opened or went away; the message says why."""


async def _listen(device: str, baud: int, seconds: float, *, send: bytes = b"") -> _Heard:
    """Open `device` at `baud`, write `send` if given, and read for `seconds` or until a KD
    packet has arrived."""
    try:
        stream = open_serial(device, baud)
    except LinkClosed as error:
        raise _ProbeFailed(explain_open_error(device, error)) from error
    try:
        if send:
            stream.write(send)
            await stream.drain()
        return await _read_until_packet(stream, baud, seconds)
    except LinkClosed as error:
        reason = f"{device} vanished while probing at {baud} baud ({error})"
        raise _ProbeFailed(reason) from error
    finally:
        stream.close()


async def _read_until_packet(stream: FdStream, baud: int, seconds: float) -> _Heard:
    loop = asyncio.get_running_loop()
    heard = _Heard(baud)
    decoder = PacketDecoder()
    listen_until = loop.time() + seconds
    # A packet still arriving when the listening time is up gets the time its longest possible
    # rest needs at this rate, rather than a KD port being called "not KD" for it.
    give_up_at = listen_until + _LONGEST_PACKET * _BITS_PER_BYTE / baud + _PACKET_TAIL_SLACK
    while True:
        now = loop.time()
        if now >= listen_until and not decoder.buffered:
            return heard
        remaining = (listen_until if now < listen_until else give_up_at) - now
        if remaining <= 0:
            # The decoder keeps a whole header only once it passed the checks: a packet that
            # lost a byte on the way waits for the rest forever.
            if decoder.buffered >= PACKET_HEADER_SIZE:
                heard.damaged += 1
            return heard
        try:
            async with asyncio.timeout(remaining):
                data = await stream.read()
        except TimeoutError:
            continue
        heard.data += data
        for event in decoder.receive_data(data, loop.time()):
            if isinstance(event, PacketDecoded):
                heard.packets += 1
                continue
            if not heard.packets:  # the decoder dropped these bytes
                heard.skipped += event.size if isinstance(event, NoiseDetected) else 1
            if isinstance(event, NoiseDetected) and event.kind in _DAMAGED_KD_PACKET:
                heard.damaged += 1
        if heard.packets:
            return heard


def _found_kd(heard: _Heard, how: str) -> ProbeResult:
    if heard.packets:
        plural = "" if heard.packets == 1 else "s"
        what = f"{heard.packets} valid KD packet{plural}"
    else:
        plural = "" if heard.damaged == 1 else "s"
        what = f"{heard.damaged} KD packet{plural} damaged by line noise (none intact)"
    return ProbeResult(
        result="kd",
        baud=heard.baud,
        detail=f"{what} at {heard.baud} baud{how}",
        initial_bytes=bytes(heard.data[heard.skipped if heard.packets else 0 :]),
    )


def _not_kd(heard: list[_Heard], how: str = "") -> ProbeResult:
    noisy = sorted((h for h in heard if h.data), key=lambda h: len(h.data), reverse=True)
    amounts = [f"{len(h.data):,} bytes of non-KD data at {h.baud} baud" for h in noisy[:1]]
    amounts += [f"{len(h.data):,} at {h.baud}" for h in noisy[1:]]
    return ProbeResult(
        result="not_kd",
        baud=noisy[0].baud,
        detail=f"{', '.join(amounts)}{how} (a console or another protocol?)",
        initial_bytes=bytes(noisy[0].data),
    )


def _list_rates(rates: Sequence[int]) -> str:
    names = [str(rate) for rate in rates]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _errno_of(error: BaseException) -> int | None:
    """The errno behind a LinkClosed from open_serial (pyserial keeps it on its exception)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause.errno
        cause = cause.__cause__
    return None


def _permission_hint(device: str) -> str:
    user = pwd.getpwuid(os.geteuid()).pw_name
    try:
        group = grp.getgrgid(os.stat(device).st_gid).gr_name
    except (OSError, KeyError):
        return f"give user {user} access to it (usually: add it to the dialout group)"
    return f"add user {user} to the {group} group"
