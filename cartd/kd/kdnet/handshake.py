"""The KDNET control-channel handshake bodies: the target's poke and the host's response.

A target with a host IP configured sends a *poke* (Microsoft: "OFFER") every 3 seconds, in every
state. A host that wants the target answers with a *response* echoing the poke's 32-byte nonce
and adding 32 random bytes; both sides then take SHA-256(root key || response body) as the
data-channel key (kdnet.md sections 3.1 and 3.2). A host can also send an empty control
datagram, a *poke request*, which kdnet.dll answers with an immediate poke (section 3.3).

Body layouts (offsets within the body; the plaintext adds the 8-byte sequence/flags header)::

    poke, 344 bytes                          response, 322 bytes
    0    1  0x01 (format, UNCONFIRMED)       0    1  0x01
    1    1  0x01 poke                        1    1  0x02 response
    2   32  nonce (bytes 2-3: LE counter)    2   32  the poke's nonce, echoed
    34  18  target address, port             34  32  host random bytes
    52  18  configured host address, port    66 256  zeros
    70  18  connected host address, port
    88 256  zeros

Each address is 16 bytes of IPv6 (IPv4 as ``::ffff:a.b.c.d``) and a big-endian port. The
reserved zeros are not checked on input (their meaning is unknown, and the data key hashes the
body as received, whatever is in it); they are written as zeros.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from cartd.kd.errors import KdUsageError
from cartd.kd.kdnet.datagram import DropReason, KdnetDecodeError
from cartd.kd.kdnet.keys import RESPONSE_BODY_SIZE

# --- Layout (kdnet.md section 3.1) --------------------------------------------------------------

POKE_BODY_SIZE = 344  # NTOS POKE_SIZE; a 374-byte datagram (section 2)
# RESPONSE_BODY_SIZE = 322 (keys.py, where section 3.2 hashes it); a 358-byte datagram
HANDSHAKE_FORMAT = 0x01  # body byte 0 in every poke and response seen; UNCONFIRMED meaning
NONCE_SIZE = 32  # the poke's "client nonce", echoed by the response
HOST_NONCE_SIZE = 32  # the response's random host bytes
RESERVED_SIZE = 256  # trailing zeros of both bodies

_KIND = struct.Struct("BB")  # format, kind
ADDRESS_FIELD = struct.Struct(">16sH")  # IPv6 address, UDP port big-endian
POKE_NONCE_OFFSET = 2
POKE_TARGET_OFFSET = 34  # the target's own address
POKE_CONFIGURED_HOST_OFFSET = 52  # bcdedit hostip / port
POKE_CONNECTED_HOST_OFFSET = 70  # the host the target has a data channel with, or zero
POKE_RESERVED_OFFSET = 88
RESPONSE_NONCE_OFFSET = 2
RESPONSE_HOST_NONCE_OFFSET = 34
RESPONSE_RESERVED_OFFSET = 66

# The nonce's first two bytes are a little-endian counter that goes up by 1 with every poke;
# the other 30 stay the same for a whole boot (VERIFIED-PCAP, section 3.1).
NONCE_COUNTER = struct.Struct("<H")
NONCE_COUNTER_MODULUS = 2**16


class HandshakeKind(IntEnum):
    """Control body byte 1 (kdnet.md section 3.1)."""

    POKE = 0x01  # KdNetConnection "poke" (GSOC: SendPokePacket), Microsoft's "OFFER"
    RESPONSE = 0x02  # GSOC: SendResponsePacket


# --- Addresses -----------------------------------------------------------------------------------

PeerAddress = tuple[str, int]
"""A UDP address as the links layer gives it: (IP address text, port)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PokeAddress:
    """An 18-byte address field of a poke. The IPv6 bytes are kept as sent (the empty field of
    capture A is ``::ffff:0.0.0.0`` port 0, others send all zeros), so push(pull(b)) == b."""

    ip: ipaddress.IPv6Address
    port: int

    @property
    def is_empty(self) -> bool:
        """No host yet. Port 0 decides, as in NTOS (POKE_HOST_PORT_OFFSET = 86): an address
        without a port cannot be a live data channel (section 3.3)."""
        return self.port == 0

    @classmethod
    def from_peer(cls, peer: PeerAddress) -> PokeAddress:
        host, port = peer
        try:
            ip = ipaddress.ip_address(host)
        except ValueError as exc:
            raise KdUsageError(f"{host!r} is not an IP address") from exc
        if isinstance(ip, ipaddress.IPv4Address):
            ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
        return cls(ip=ip, port=port)

    def to_peer(self) -> PeerAddress:
        mapped = self.ip.ipv4_mapped
        return (str(mapped if mapped is not None else self.ip), self.port)


# What a target that has no host writes in the connected-host field (capture A, first poke).
EMPTY_ADDRESS = PokeAddress(ip=ipaddress.IPv6Address("::ffff:0.0.0.0"), port=0)


def _pull_address(body: bytes, offset: int) -> PokeAddress:
    packed, port = ADDRESS_FIELD.unpack_from(body, offset)
    return PokeAddress(ip=ipaddress.IPv6Address(packed), port=port)


def _push_address(address: PokeAddress) -> bytes:
    if not 0 <= address.port <= 0xFFFF:
        raise KdUsageError(f"UDP port {address.port} is out of range")
    return ADDRESS_FIELD.pack(address.ip.packed, address.port)


def handshake_kind(body: bytes) -> HandshakeKind | None:
    """What a control body claims to be, from its second byte; None if empty or unknown (an
    empty body is a host's poke request)."""
    if len(body) < _KIND.size:
        return None
    try:
        return HandshakeKind(body[1])
    except ValueError:
        return None


def _push_kind(format_version: int, kind: HandshakeKind) -> bytes:
    if not 0 <= format_version <= 0xFF:
        raise KdUsageError(f"handshake format {format_version} does not fit a byte")
    return _KIND.pack(format_version, kind)


def _check_body(body: bytes, kind: HandshakeKind, size: int) -> None:
    if len(body) != size or handshake_kind(body) is not kind:
        raise KdnetDecodeError(
            DropReason.BAD_HANDSHAKE,
            f"expected a {size}-byte {kind.name.lower()} body, got {len(body)} bytes "
            f"of kind {body[1:2].hex() or 'none'}",
        )


def _check_nonce(nonce: bytes, size: int) -> None:
    if len(nonce) != size:
        raise KdUsageError(f"a KDNET handshake nonce is {size} bytes, not {len(nonce)}")


# --- Poke ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Poke:
    """The target's offer (kdnet.md section 3.1)."""

    nonce: bytes  # 32 bytes, echoed by the response
    target: PokeAddress
    configured_host: PokeAddress
    connected_host: PokeAddress = EMPTY_ADDRESS
    format_version: int = HANDSHAKE_FORMAT

    @property
    def counter(self) -> int:
        """Nonce bytes 0-1: +1 per poke (section 3.1)."""
        return int(NONCE_COUNTER.unpack_from(self.nonce)[0])

    @property
    def boot_id(self) -> bytes:
        """Nonce bytes 2-31: the same for every poke of one boot (section 3.1)."""
        return self.nonce[NONCE_COUNTER.size :]


def pull_poke(body: bytes) -> Poke:
    _check_body(body, HandshakeKind.POKE, POKE_BODY_SIZE)
    return Poke(
        format_version=body[0],
        nonce=body[POKE_NONCE_OFFSET : POKE_NONCE_OFFSET + NONCE_SIZE],
        target=_pull_address(body, POKE_TARGET_OFFSET),
        configured_host=_pull_address(body, POKE_CONFIGURED_HOST_OFFSET),
        connected_host=_pull_address(body, POKE_CONNECTED_HOST_OFFSET),
    )


def push_poke(poke: Poke) -> bytes:
    _check_nonce(poke.nonce, NONCE_SIZE)
    return b"".join(
        (
            _push_kind(poke.format_version, HandshakeKind.POKE),
            poke.nonce,
            _push_address(poke.target),
            _push_address(poke.configured_host),
            _push_address(poke.connected_host),
            bytes(RESERVED_SIZE),
        )
    )


def next_nonce(nonce: bytes) -> bytes:
    """The nonce of the following poke: the counter +1 (wrapping), the boot bytes unchanged."""
    (counter,) = NONCE_COUNTER.unpack_from(nonce)
    return NONCE_COUNTER.pack((counter + 1) % NONCE_COUNTER_MODULUS) + nonce[NONCE_COUNTER.size :]


# --- Response ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """The host's answer to a poke (kdnet.md section 3.1)."""

    client_nonce: bytes  # the poke's nonce
    host_nonce: bytes  # 32 random bytes the host made up
    format_version: int = HANDSHAKE_FORMAT


def pull_response(body: bytes) -> Response:
    _check_body(body, HandshakeKind.RESPONSE, RESPONSE_BODY_SIZE)
    return Response(
        format_version=body[0],
        client_nonce=body[RESPONSE_NONCE_OFFSET : RESPONSE_NONCE_OFFSET + NONCE_SIZE],
        host_nonce=body[RESPONSE_HOST_NONCE_OFFSET : RESPONSE_HOST_NONCE_OFFSET + HOST_NONCE_SIZE],
    )


def push_response(response: Response) -> bytes:
    _check_nonce(response.client_nonce, NONCE_SIZE)
    _check_nonce(response.host_nonce, HOST_NONCE_SIZE)
    return (
        _push_kind(response.format_version, HandshakeKind.RESPONSE)
        + response.client_nonce
        + response.host_nonce
        + bytes(RESERVED_SIZE)
    )
