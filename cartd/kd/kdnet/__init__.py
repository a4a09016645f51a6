"""KDNET: Windows kernel debugging over UDP, sans-I/O (kdnet.md).

Layers, bottom up:

- `keys`: the key string, root/HMAC keys, the data key (sections 1, 3.2);
- `datagram`: the stateless datagram codec, pull/push with AES-256-CBC and the HMAC tag
  (section 2), and the `DropReason` counter names;
- `codec`: `DatagramCodec`, one side's keys, sequence numbers, replay check and drop counters;
- `handshake`: poke and response bodies (section 3.1);
- `host` / `target`: the two roles (sections 3.3, 4), with `events` they emit.

Like the rest of `cartd.kd`, nothing here reads a clock, opens a socket or logs; a UDP link feeds
`receive_datagram(data, addr, now)` and sends what `datagrams_to_send()` returns. The data
channel carries KD packets without their 0xAA trailer; the KD dialect above (`cartd.kd.dialect`)
deals with packet ids.
"""

from __future__ import annotations

from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import (
    KDNET_VERSION_4,
    KDNET_VERSION_5,
    Channel,
    Direction,
    DropReason,
    KdnetDatagram,
    KdnetDecodeError,
    pull_datagram,
    push_datagram,
)
from cartd.kd.kdnet.events import (
    DatagramDropped,
    DataReceived,
    KdnetEvent,
    KeepaliveReceived,
    SessionReason,
    SessionStarted,
)
from cartd.kd.kdnet.handshake import PeerAddress, Poke, Response
from cartd.kd.kdnet.host import KdnetHost
from cartd.kd.kdnet.keys import KdnetKey, KdnetKeyError, derive_data_key, parse_key
from cartd.kd.kdnet.target import KdnetTarget

__all__ = [
    "KDNET_VERSION_4",
    "KDNET_VERSION_5",
    "Channel",
    "DataReceived",
    "DatagramCodec",
    "DatagramDropped",
    "Direction",
    "DropReason",
    "KdnetDatagram",
    "KdnetDecodeError",
    "KdnetEvent",
    "KdnetHost",
    "KdnetKey",
    "KdnetKeyError",
    "KdnetTarget",
    "KeepaliveReceived",
    "PeerAddress",
    "Poke",
    "Response",
    "SessionReason",
    "SessionStarted",
    "derive_data_key",
    "parse_key",
    "pull_datagram",
    "push_datagram",
]
