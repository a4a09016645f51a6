"""Events the KDNET roles (`KdnetHost`, `KdnetTarget`) hand their caller.

Frozen, slotted, keyword-only dataclasses, the same classes for both roles. None of them carries
key material: a data key stays inside the codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cartd.kd.kdnet.datagram import DropReason
from cartd.kd.kdnet.handshake import PeerAddress


class SessionReason(StrEnum):
    """Why a session (a data key) started; stable names for the journal."""

    # The host answered a poke with an empty connected-host field while it held no session;
    # the target accepted its first response since boot.
    FIRST_CONTACT = "first_contact"
    # The host's own target poked with an empty connected-host field: it rebooted, or lost our
    # response; its KD packet-id state starts again (kdnet.md section 3.3). On the target: a
    # response from the host it was already connected to.
    ROLLOVER = "rollover"
    # The host held no session but the target named a connected host: it was talking to
    # another debugger, or to us before a restart. Answering re-keys it (checklist item 3). On
    # the target: a response from a host other than the one it was connected to.
    TAKEOVER = "takeover"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted:
    """A data key is in place. Data-channel sequence numbers start again at 1, and the KD layer
    above starts its packet ids again (the KDNET dialect: host 0x80000000, target 0)."""

    peer: PeerAddress
    version: int  # KDNET protocol version of the session (4 or 5)
    reason: SessionReason


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived:
    """One data-channel datagram's body: one KD packet without its 0xAA trailer, the 12-byte
    UNUSED packet a target sends first, or the single break-in byte (kdnet.md section 3.4)."""

    body: bytes
    sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepaliveReceived:
    """Host only: the connected target poked with our session in its connected-host field. It
    is left unanswered (answering would re-key a working session, section 3.3); it shows the
    target is alive."""

    peer: PeerAddress
    uptime: int  # the poke's sequence number: the target's seconds counter (section 3.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramDropped:
    """A received datagram was dropped; `reason` names the counter it was added to."""

    reason: DropReason
    peer: PeerAddress
    size: int


KdnetEvent = SessionStarted | DataReceived | KeepaliveReceived | DatagramDropped
