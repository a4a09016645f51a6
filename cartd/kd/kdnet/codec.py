"""One end of a KDNET conversation: its keys, its sequence numbers, and what it dropped.

Theory of operation
-------------------
`DatagramCodec` wraps the stateless `pull_datagram` / `push_datagram` with the state one side
keeps for its peer (kdnet.md sections 2 and 3.4):

1. Keys. The root key and HMAC key are fixed; the data key is installed by the handshake
   (`install_data_key`). Installing one restarts the data channel's sequence numbers in both
   directions: ours start again at 1, and the peer's highest-seen mark goes back to 0 (the
   target "resets its sequence state" on accepting a response, section 3.2).
2. Outgoing data datagrams get the next sequence number, one per datagram, ACKs and
   retransmissions included (section 3.4 item 5). Control datagrams take an explicit sequence:
   a target's poke carries its seconds counter and the host's response copies it (section 3.1).
3. Incoming datagrams are checked in order: the stateless checks of `pull_datagram`, then the
   direction bit (a datagram with our own direction was reflected back at us), then, on the data
   channel, replay: a sequence number not above the highest seen is dropped (section 3.4 item 5).
4. The control channel has no sequence replay check here. A poke's sequence number is the
   target's seconds counter, which starts again after a reboot, and a poke that the host asked
   for may repeat the current second; so a strict "above the highest" rule would lock out a
   rebooted target. The roles check pokes by their nonce counter instead (host.py).
5. Every drop is counted in `drop_counters` under its `DropReason`; `decode` never raises on
   input. It raises `KdUsageError` only when the caller misuses it (sending data without a data
   key, a control datagram without a version).
"""

from __future__ import annotations

from cartd.kd.errors import KdUsageError
from cartd.kd.kdnet.datagram import (
    MAX_SEQUENCE,
    SUPPORTED_VERSIONS,
    Channel,
    Direction,
    DropReason,
    KdnetDatagram,
    KdnetDecodeError,
    pull_datagram,
    push_datagram,
)
from cartd.kd.kdnet.keys import DATA_KEY_SIZE, KdnetKey

# Section 3.4 item 5: each direction of the data channel counts from 1 after the handshake.
FIRST_DATA_SEQUENCE = 1


class DatagramCodec:
    """Encode and decode the datagrams of one side (HOST or TARGET) of one KDNET session."""

    def __init__(
        self, key: KdnetKey, *, local_direction: Direction, version: int | None = None
    ) -> None:
        """`local_direction` is the direction of the datagrams we send. `version` is the
        protocol version we send with: the target's own; for a host, None until the first poke
        tells it (the host copies the target's version, section 2)."""
        self.key = key
        self.local_direction = local_direction
        self._version: int | None = None
        if version is not None:
            self.version = version
        self._data_key: bytes | None = None
        self._next_data_sequence = FIRST_DATA_SEQUENCE
        self._highest_data_sequence = 0
        self._last_control_sequence: int | None = None
        self.drop_counters: dict[DropReason, int] = {}

    # ------------------------------------------------------------------ state

    @property
    def version(self) -> int | None:
        return self._version

    @version.setter
    def version(self, version: int) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise KdUsageError(f"KDNET protocol version {version} is not 4 or 5")
        self._version = version

    @property
    def has_data_key(self) -> bool:
        return self._data_key is not None

    def install_data_key(self, data_key: bytes) -> None:
        """Use a freshly negotiated data key; both directions' data sequences start again."""
        if len(data_key) != DATA_KEY_SIZE:
            raise KdUsageError(f"a KDNET data key is {DATA_KEY_SIZE} bytes, not {len(data_key)}")
        self._data_key = data_key
        self._next_data_sequence = FIRST_DATA_SEQUENCE
        self._highest_data_sequence = 0

    def forget_data_key(self) -> None:
        """Back to control-only, as after a reboot."""
        self._data_key = None
        self._next_data_sequence = FIRST_DATA_SEQUENCE
        self._highest_data_sequence = 0

    @property
    def highest_data_sequence(self) -> int:
        """The highest data-channel sequence number accepted from the peer (0: none yet)."""
        return self._highest_data_sequence

    @property
    def last_control_sequence(self) -> int | None:
        """The sequence of the last accepted control datagram (informational, rule 4)."""
        return self._last_control_sequence

    def count_drop(self, reason: DropReason) -> None:
        """Count a drop decided outside the codec (the roles' handshake checks)."""
        self.drop_counters[reason] = self.drop_counters.get(reason, 0) + 1

    # ------------------------------------------------------------------ receiving

    def decode(self, data: bytes) -> KdnetDatagram | DropReason:
        """One received datagram: decoded and accepted, or the counted reason it was dropped."""
        try:
            datagram = pull_datagram(data, self.key, data_key=self._data_key)
        except KdnetDecodeError as exc:
            self.count_drop(exc.reason)
            return exc.reason
        if datagram.direction is self.local_direction:
            self.count_drop(DropReason.WRONG_DIRECTION)
            return DropReason.WRONG_DIRECTION
        if datagram.channel is Channel.DATA:
            if datagram.sequence <= self._highest_data_sequence:
                self.count_drop(DropReason.REPLAY)
                return DropReason.REPLAY
            self._highest_data_sequence = datagram.sequence
        else:
            self._last_control_sequence = datagram.sequence
        return datagram

    # ------------------------------------------------------------------ sending

    def encode_data(self, body: bytes) -> bytes:
        """A data-channel datagram with the next sequence number (rule 2)."""
        if self._data_key is None:
            raise KdUsageError("no KDNET data key yet: the handshake has not completed")
        sequence = self._next_data_sequence
        if sequence > MAX_SEQUENCE:
            raise KdUsageError("the KDNET data sequence number space is exhausted")
        self._next_data_sequence += 1
        return self._encode(Channel.DATA, body, sequence)

    def encode_control(self, body: bytes, *, sequence: int, version: int | None = None) -> bytes:
        """A control-channel datagram (poke, response, poke request) with the given sequence.
        `version` overrides ours, for a host that has not heard the target's yet."""
        return self._encode(Channel.CONTROL, body, sequence, version)

    def _encode(
        self, channel: Channel, body: bytes, sequence: int, version: int | None = None
    ) -> bytes:
        version = version if version is not None else self._version
        if version is None:
            raise KdUsageError("the KDNET protocol version is not known yet (no poke seen)")
        datagram = KdnetDatagram(
            version=version,
            channel=channel,
            sequence=sequence,
            direction=self.local_direction,
            body=body,
        )
        return push_datagram(datagram, self.key, data_key=self._data_key)
