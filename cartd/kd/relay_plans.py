"""Requests a remote debugger sends through cartd's relay, as plans for `KdHost`.

The relay hands the target what the remote debugger asked, as it asked it. One thing differs
between the two hops: the remote debugger speaks serial KD, whose reads go up to 3944 bytes,
and the target may be on KDNET, where cartd keeps a read to 1360 bytes so that a reply fits one
unfragmented datagram (kdnet.md section 6; whether a KDNET target answers larger reads is
UNCONFIRMED, so the robust choice is to never ask). A memory read or write larger than the
target's hop allows is therefore cut into pieces here and answered as one: the reply the remote
debugger gets is the one a serial target would have sent.
"""

from __future__ import annotations

from dataclasses import replace

from cartd.kd.constants import ManipulateApi, NtStatus
from cartd.kd.host_plans import Plan
from cartd.kd.manipulate import ManipulateMessage, ReadMemory

_SPLIT_READS = frozenset({ManipulateApi.READ_VIRTUAL_MEMORY, ManipulateApi.READ_PHYSICAL_MEMORY})
_SPLIT_WRITES = frozenset({ManipulateApi.WRITE_VIRTUAL_MEMORY, ManipulateApi.WRITE_PHYSICAL_MEMORY})


def relay(request: ManipulateMessage, max_transfer: int) -> Plan:
    """The remote debugger's request; the result is the reply to give it (None when the
    request has none)."""
    body = request.body
    if isinstance(body, ReadMemory):
        if request.api in _SPLIT_READS and body.transfer_count > max_transfer:
            return (yield from _split_read(request, body, max_transfer))
        if request.api in _SPLIT_WRITES and len(request.data) > max_transfer:
            return (yield from _split_write(request, body, max_transfer))
    reply = yield request
    return reply


def _split_read(request: ManipulateMessage, body: ReadMemory, max_transfer: int) -> Plan:
    """Read piece by piece; stop at the first piece that comes back short or failed, as the
    target itself stops at the first page it cannot read."""
    data = bytearray()
    first: ManipulateMessage | None = None
    status: int = NtStatus.SUCCESS
    while len(data) < body.transfer_count:
        count = min(max_transfer, body.transfer_count - len(data))
        piece = replace(body, address=body.address + len(data), transfer_count=count)
        reply = yield replace(request, body=piece, data=b"")
        assert reply is not None  # reads always have a reply
        first = first or reply
        data += reply.data[:count]
        if reply.return_status != NtStatus.SUCCESS or len(reply.data) < count:
            # A short read says so with a failure status (spec section 5), as one piece would.
            status = reply.return_status or NtStatus.UNSUCCESSFUL
            break
    assert first is not None
    answered = replace(body, actual_bytes=len(data))
    return replace(first, return_status=status, body=answered, data=bytes(data))


def _split_write(request: ManipulateMessage, body: ReadMemory, max_transfer: int) -> Plan:
    written = 0
    first: ManipulateMessage | None = None
    status: int = NtStatus.SUCCESS
    while written < len(request.data):
        chunk = request.data[written : written + max_transfer]
        piece = replace(body, address=body.address + written, transfer_count=len(chunk))
        reply = yield replace(request, body=piece, data=chunk)
        assert reply is not None
        first = first or reply
        done = reply.body.actual_bytes if isinstance(reply.body, ReadMemory) else 0
        written += min(done, len(chunk))
        if reply.return_status != NtStatus.SUCCESS or done < len(chunk):
            status = reply.return_status or NtStatus.UNSUCCESSFUL
            break
    assert first is not None
    answered = replace(body, actual_bytes=written)
    return replace(first, return_status=status, body=answered, data=b"")
