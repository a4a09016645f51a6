"""The KDNET datagram: header, AES-256-CBC, the HMAC tag, sequence number, direction, padding.

Layout (kdnet.md section 2)::

    0    4  magic "MDBG"
    4    1  protocol version (4: Windows 10 1511, capture A; 5: Windows 10 2004, capture B)
    5    1  channel (0 data, 1 control)
    6    N  AES-256-CBC ciphertext, N a multiple of 16
    6+N 16  tag: the first 16 bytes of HMAC-SHA256(HMAC key, header + plaintext); also the IV

    plaintext:
    0    7  sequence number, big-endian
    7    1  bit 7 direction (1 = host to target), bits 0-6 number of zero pad bytes
    8    L  body: one KD packet (data channel) or a handshake body (control channel)
    8+L  p  zero padding to a multiple of 16

Encryption is deterministic (the IV is the tag of the plaintext), so re-encrypting a decrypted
datagram gives back the same bytes; the capture tests rely on it.

This module is stateless: `pull_datagram` / `push_datagram` and the pieces they are made of.
`pull_*` raise `KdnetDecodeError` carrying a `DropReason`; the stateful `DatagramCodec`
(codec.py) turns those into counted drops and never raises on input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.constant_time import bytes_eq
from cryptography.hazmat.primitives.hmac import HMAC

from cartd.kd.errors import KdDecodeError, KdUsageError
from cartd.kd.kdnet.keys import DATA_KEY_SIZE, KdnetKey

# --- Layout (kdnet.md section 2) -----------------------------------------------------------------

MAGIC = b"MDBG"  # 4D 44 42 47, compared as raw bytes
HEADER = struct.Struct(">4sBB")  # magic, protocol version, channel
HEADER_SIZE = HEADER.size  # 6, all covered by the HMAC
BLOCK_SIZE = 16  # AES block; the ciphertext is whole blocks (explicit padding, no PKCS#7)
TAG_SIZE = 16  # HMAC-SHA256 truncated to its first 16 bytes; doubles as the CBC IV

# The 8-byte plaintext header read as one big-endian u64: sequence << 8 | flags.
PLAINTEXT_HEADER = struct.Struct(">Q")
PLAINTEXT_HEADER_SIZE = PLAINTEXT_HEADER.size
SEQUENCE_BITS = 56
MAX_SEQUENCE = 2**SEQUENCE_BITS - 1
DIRECTION_FLAG = 0x80  # bit 7 of plaintext byte 7: set on host-to-target datagrams
# Bits 0-6 count the pad bytes. R2/RZ's kd.h defines this 0x7F mask, their readers and NTOS use
# 0x0F; every real datagram pads 0..15 so both agree. The whole field is read, and padding that
# runs past the plaintext or is not zero is a drop, so a Windows that used bits 4-6 for
# something else would show up in the counters instead of being mis-parsed silently.
PAD_COUNT_MASK = 0x7F

# The smallest datagram: header, one block (the 8-byte plaintext header and 8 pad bytes), tag.
MIN_DATAGRAM_SIZE = HEADER_SIZE + BLOCK_SIZE + TAG_SIZE  # 38, the size of a break-in


class Channel(IntEnum):
    """Header byte 5 (kdnet.md section 2)."""

    DATA = 0  # KD packets, AES key = the negotiated data key (section 3.4)
    CONTROL = 1  # poke / response handshake, AES key = the root key (section 3.1)


class Direction(IntEnum):
    """Plaintext byte 7, bit 7 (kdnet.md section 2)."""

    TARGET_TO_HOST = 0
    HOST_TO_TARGET = 1


# Header byte 4. The host copies the target's version into everything it sends (section 2).
KDNET_VERSION_4 = 4  # capture A: Windows 10 1511 boot debugger (2016)
KDNET_VERSION_5 = 5  # capture B: Windows 10 2004 / 19041 (2020), same crypto and layout
SUPPORTED_VERSIONS = frozenset({KDNET_VERSION_4, KDNET_VERSION_5})


class DropReason(StrEnum):
    """Why a received datagram was dropped. The values are stable counter names (they go into
    events and the journal). Noise is counted, never raised (architecture rule 2)."""

    # Stateless checks, in the order `pull_datagram` makes them (kdnet.md section 2).
    BAD_MAGIC = "bad_magic"  # does not start with "MDBG": not KDNET at all
    TRUNCATED = "truncated"  # shorter than 38 bytes, the smallest datagram
    BAD_LENGTH = "bad_length"  # the ciphertext is not a whole number of AES blocks
    BAD_VERSION = "bad_version"  # a protocol version other than 4 and 5
    BAD_CHANNEL = "bad_channel"  # channel byte other than 0 and 1
    NO_DATA_KEY = "no_data_key"  # data channel before any handshake: undecryptable
    AUTHENTICATION_FAILED = "authentication_failed"  # forged, corrupted, or a different key
    BAD_PADDING = "bad_padding"  # pad count runs past the plaintext, or pad bytes not zero
    # Checks of the per-peer codec (codec.py).
    WRONG_DIRECTION = "wrong_direction"  # carries our own direction bit: reflected back at us
    REPLAY = "replay"  # sequence (data) or poke counter (control) not above the highest seen
    # Checks of the handshake roles (host.py, target.py; kdnet.md section 3).
    BAD_HANDSHAKE = "bad_handshake"  # control body is not a poke, response or poke request
    OTHER_TARGET = "other_target"  # host: a poke from another IP while a session is live
    WRONG_PEER = "wrong_peer"  # data from an address other than the session's peer
    STALE_RESPONSE = "stale_response"  # target: a response that echoes none of our recent pokes


class KdnetDecodeError(KdDecodeError):
    """The peer sent a datagram we cannot accept (remote fault); `reason` names the check."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


# --- Header -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramHeader:
    """The 6 clear-text bytes in front of the ciphertext."""

    version: int
    channel: Channel


def pull_header(data: bytes) -> DatagramHeader:
    """Check the clear-text parts of a datagram (magic, size, version, channel) without keys."""
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise KdnetDecodeError(DropReason.TRUNCATED, f"{len(data)} bytes")
        raise KdnetDecodeError(DropReason.BAD_MAGIC, f"starts with {data[:4].hex()}")
    if len(data) < MIN_DATAGRAM_SIZE:
        raise KdnetDecodeError(
            DropReason.TRUNCATED, f"{len(data)} bytes, the smallest datagram is 38"
        )
    if (len(data) - HEADER_SIZE - TAG_SIZE) % BLOCK_SIZE:
        raise KdnetDecodeError(
            DropReason.BAD_LENGTH, f"{len(data)} bytes is not 22 + a multiple of 16"
        )
    _, version, channel = HEADER.unpack_from(data)
    if version not in SUPPORTED_VERSIONS:
        raise KdnetDecodeError(DropReason.BAD_VERSION, f"protocol version {version}")
    if channel not in (Channel.DATA, Channel.CONTROL):
        raise KdnetDecodeError(DropReason.BAD_CHANNEL, f"channel {channel}")
    return DatagramHeader(version=version, channel=Channel(channel))


def peek_channel(data: bytes) -> Channel | None:
    """The channel a datagram claims, read without any check but the magic; lets a role turn
    away data from a stranger before it touches the session's replay state."""
    if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
        return None
    channel = data[HEADER_SIZE - 1]
    return Channel(channel) if channel in (Channel.DATA, Channel.CONTROL) else None


def push_header(header: DatagramHeader) -> bytes:
    if header.version not in SUPPORTED_VERSIONS:
        raise KdUsageError(f"KDNET protocol version {header.version} is not 4 or 5")
    return HEADER.pack(MAGIC, header.version, header.channel)


# --- Cryptography (kdnet.md section 2, "Cryptography") -------------------------------------------


def _tag(hmac_key: bytes, header: bytes, plaintext: bytes) -> bytes:
    mac = HMAC(hmac_key, hashes.SHA256())
    mac.update(header)
    mac.update(plaintext)
    return mac.finalize()[:TAG_SIZE]


def seal(header: bytes, plaintext: bytes, *, cipher_key: bytes, hmac_key: bytes) -> bytes:
    """Header + AES-256-CBC(plaintext, IV = tag) + tag: a whole datagram."""
    if len(plaintext) % BLOCK_SIZE or not plaintext:
        raise KdUsageError(f"a KDNET plaintext is whole AES blocks, not {len(plaintext)} bytes")
    tag = _tag(hmac_key, header, plaintext)
    encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(tag)).encryptor()
    return header + encryptor.update(plaintext) + encryptor.finalize() + tag


def unseal(data: bytes, *, cipher_key: bytes, hmac_key: bytes) -> bytes:
    """Decrypt a datagram whose header `pull_header` accepted, check its tag in constant time,
    and return the plaintext with its padding."""
    header, ciphertext, tag = data[:HEADER_SIZE], data[HEADER_SIZE:-TAG_SIZE], data[-TAG_SIZE:]
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(tag)).decryptor()
    plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    # A datagram under another key decrypts to noise whose HMAC does not match either, so a
    # wrong key, a forgery and a flipped bit all end here.
    if not bytes_eq(_tag(hmac_key, header, plaintext), tag):
        raise KdnetDecodeError(DropReason.AUTHENTICATION_FAILED, "the HMAC tag does not match")
    return plaintext


# --- Plaintext ----------------------------------------------------------------------------------


def padding_for(body_length: int) -> int:
    """Zero bytes that bring 8 + body to a whole number of AES blocks (section 2)."""
    return -(PLAINTEXT_HEADER_SIZE + body_length) % BLOCK_SIZE


def datagram_size(body_length: int) -> int:
    """6 + 16*ceil((8+L)/16) + 16: 54 for an ACK, 38 for a break-in, 374 for a poke."""
    plaintext = PLAINTEXT_HEADER_SIZE + body_length + padding_for(body_length)
    return HEADER_SIZE + plaintext + TAG_SIZE


@dataclass(frozen=True, slots=True, kw_only=True)
class Plaintext:
    """The decrypted part of a datagram, padding stripped."""

    sequence: int
    direction: Direction
    body: bytes
    padding: int  # pad bytes the sender used; kept so a re-encryption is byte-identical


def pull_plaintext(plaintext: bytes) -> Plaintext:
    (word,) = PLAINTEXT_HEADER.unpack_from(plaintext)
    flags = word & 0xFF
    padding = flags & PAD_COUNT_MASK
    end = len(plaintext) - padding
    if end < PLAINTEXT_HEADER_SIZE:
        raise KdnetDecodeError(
            DropReason.BAD_PADDING, f"{padding} pad bytes in a {len(plaintext)}-byte plaintext"
        )
    if any(plaintext[end:]):
        raise KdnetDecodeError(DropReason.BAD_PADDING, "pad bytes are not zero")
    return Plaintext(
        sequence=word >> 8,
        direction=Direction.HOST_TO_TARGET if flags & DIRECTION_FLAG else Direction.TARGET_TO_HOST,
        body=plaintext[PLAINTEXT_HEADER_SIZE:end],
        padding=padding,
    )


def push_plaintext(
    *, sequence: int, direction: Direction, body: bytes, padding: int | None = None
) -> bytes:
    """The plaintext with its header and explicit zero padding (the smallest, unless a capture's
    own `padding` is given back to reproduce it)."""
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise KdUsageError(f"KDNET sequence number {sequence} does not fit 56 bits")
    if padding is None:
        padding = padding_for(len(body))
    if not 0 <= padding <= PAD_COUNT_MASK or (padding - padding_for(len(body))) % BLOCK_SIZE:
        raise KdUsageError(f"{padding} pad bytes do not fill a {len(body)}-byte body to a block")
    flags = padding | (DIRECTION_FLAG if direction is Direction.HOST_TO_TARGET else 0)
    return PLAINTEXT_HEADER.pack(sequence << 8 | flags) + body + bytes(padding)


# --- Whole datagrams ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KdnetDatagram:
    """One datagram, decrypted and authenticated."""

    version: int
    channel: Channel
    sequence: int
    direction: Direction
    body: bytes
    padding: int | None = None  # None when building: the smallest padding

    @property
    def header(self) -> DatagramHeader:
        return DatagramHeader(version=self.version, channel=self.channel)


def cipher_key_for(channel: Channel, key: KdnetKey, data_key: bytes | None) -> bytes | None:
    """The AES key of a channel: the root key on control, the data key on data (section 2)."""
    return key.root_key if channel is Channel.CONTROL else data_key


def pull_datagram(data: bytes, key: KdnetKey, *, data_key: bytes | None = None) -> KdnetDatagram:
    """Check, decrypt and authenticate one datagram. `data_key` is needed for the data channel;
    without it a data datagram is `NO_DATA_KEY` (it cannot even be authenticated, because the
    HMAC covers the plaintext)."""
    header = pull_header(data)
    cipher_key = cipher_key_for(header.channel, key, data_key)
    if cipher_key is None:
        raise KdnetDecodeError(DropReason.NO_DATA_KEY, "data channel before a handshake")
    plaintext = pull_plaintext(unseal(data, cipher_key=cipher_key, hmac_key=key.hmac_key))
    return KdnetDatagram(
        version=header.version,
        channel=header.channel,
        sequence=plaintext.sequence,
        direction=plaintext.direction,
        body=plaintext.body,
        padding=plaintext.padding,
    )


def push_datagram(
    datagram: KdnetDatagram, key: KdnetKey, *, data_key: bytes | None = None
) -> bytes:
    cipher_key = cipher_key_for(datagram.channel, key, data_key)
    if cipher_key is None or len(cipher_key) != DATA_KEY_SIZE:
        raise KdUsageError("a KDNET data-channel datagram needs the 32-byte data key")
    plaintext = push_plaintext(
        sequence=datagram.sequence,
        direction=datagram.direction,
        body=datagram.body,
        padding=datagram.padding,
    )
    return seal(
        push_header(datagram.header), plaintext, cipher_key=cipher_key, hmac_key=key.hmac_key
    )
