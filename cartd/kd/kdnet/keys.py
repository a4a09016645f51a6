"""KDNET keys: the key string a person types, the 32-byte root key, the HMAC key, the data key.

A KDNET key string is four base-36 words separated by dots (`bcdedit /dbgsettings net ...
key:w.x.y.z`). Each word is an unsigned 64-bit number written little-endian into eight bytes; the
four in word order are the *root key*, the AES-256 key of the control channel. The HMAC key is
the bitwise NOT of the root key and never changes. The data channel's AES key is negotiated in
the handshake: SHA-256 of the root key and the host's 322-byte response body (kdnet.md sections 1
and 3.2).

Key material must never reach a log, an event or an exception message: `KdnetKey` prints as
``KdnetKey(<secret>)``. Error messages name a bad word only when it cannot be part of a working
key (it has a character outside 0-9/a-z).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cartd.kd.errors import KdUsageError

# kdnet.md section 1: exactly four words, each below 2**64 and so at most 13 base-36 digits.
KEY_WORD_COUNT = 4
KEY_WORD_SIZE = 8  # bytes per word, little-endian
ROOT_KEY_SIZE = KEY_WORD_COUNT * KEY_WORD_SIZE  # 32: an AES-256 key
DATA_KEY_SIZE = 32  # a SHA-256 digest, used as an AES-256 key (section 3.2)
MAX_WORD_VALUE = 2**64 - 1
MAX_WORD_DIGITS = 13
LARGEST_WORD = "3w5e11264sgsf"  # 2**64 - 1 in base 36
BASE36_DIGITS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")

# kdnet.md section 3.2 hashes the whole response body; its size is fixed by section 3.1.
RESPONSE_BODY_SIZE = 322


class KdnetKeyError(ValueError):
    """The KDNET key string the user configured is malformed (the user's fault, not the
    target's). The message says which word is wrong and why, without echoing usable key
    material."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class KdnetKey:
    """A parsed KDNET key: the root key and the HMAC key derived from it (kdnet.md section 1).

    `repr()` and `str()` never show the bytes, so a key that ends up in a log line, a traceback
    or an event does not leak.
    """

    root_key: bytes
    hmac_key: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.root_key) != ROOT_KEY_SIZE:
            raise KdUsageError(
                f"a KDNET root key is {ROOT_KEY_SIZE} bytes, not {len(self.root_key)}"
            )
        # Section 1, step 5: the HMAC key is ~k[i] for every root-key byte, on both channels.
        object.__setattr__(self, "hmac_key", bytes(byte ^ 0xFF for byte in self.root_key))

    def __repr__(self) -> str:
        return "KdnetKey(<secret>)"

    __str__ = __repr__


def parse_key(text: str) -> KdnetKey:
    """Parse a key string such as ``1.2.3.4`` or ``2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.
    1sp3yo9yz874p`` (kdnet.md section 1).

    Surrounding whitespace is ignored and uppercase letters are read as lowercase (R2/RZ reject
    them, NTOS lowercases; a person copying a key from a screen should not have to care). Raises
    `KdnetKeyError` with a message naming the wrong word.
    """
    words = text.strip().split(".")
    if len(words) != KEY_WORD_COUNT:
        raise KdnetKeyError(
            f"KDNET key: expected {KEY_WORD_COUNT} words separated by dots, got {len(words)}"
        )
    root_key = b"".join(
        _parse_word(word, number).to_bytes(KEY_WORD_SIZE, "little")
        for number, word in enumerate(words, start=1)
    )
    return KdnetKey(root_key=root_key)


def _parse_word(word: str, number: int) -> int:
    if not word:
        raise KdnetKeyError(f"KDNET key: word {number} is empty")
    # int(word, 36) alone would also take '_', '+', '-', spaces and non-ASCII digits, so the
    # alphabet is checked by hand first.
    normalised = word.lower()
    if not (word.isascii() and set(normalised) <= BASE36_DIGITS):
        raise KdnetKeyError(
            f"KDNET key: word {number} {word!r} has a character that is not 0-9 or a-z"
        )
    # Leading zeros do not change the value; checking the length first keeps int() away from
    # absurdly long words.
    digits = normalised.lstrip("0")
    if len(digits) > MAX_WORD_DIGITS or int(digits or "0", 36) > MAX_WORD_VALUE:
        raise KdnetKeyError(
            f"KDNET key: word {number} is larger than 2^64-1 (at most {MAX_WORD_DIGITS} base-36 "
            f"digits, largest {LARGEST_WORD})"
        )
    return int(digits or "0", 36)


def derive_data_key(key: KdnetKey, response_body: bytes) -> bytes:
    """The data-channel AES key: SHA-256(root key || the 322-byte response body), kdnet.md
    section 3.2. Both sides compute it from the body as it was on the wire, `01 02` first."""
    if len(response_body) != RESPONSE_BODY_SIZE:
        raise KdUsageError(
            f"a KDNET response body is {RESPONSE_BODY_SIZE} bytes, not {len(response_body)}"
        )
    return hashlib.sha256(key.root_key + response_body).digest()
