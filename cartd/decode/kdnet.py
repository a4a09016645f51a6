"""Following the KDNET conversations in a capture, as a host would, to decrypt every datagram.

Theory of operation
-------------------
`KdnetFollower.feed` takes the UDP datagrams of a capture in order and returns what each one
is (a `KdnetRecord`). It is a passive listener that knows the key but never sends:

1. Anything that does not start with "MDBG" is not KDNET: `feed` returns None.
2. Control datagrams are encrypted with the root key, so each one is decrypted on its own. Its
   direction bit says which end is the target; a (target, host) pair of UDP addresses is one
   *conversation*. Several targets, or one target on several ports, are several conversations.
3. A host's response starts a *session*: its data key is SHA-256(root key || response body)
   (kdnet.md 3.2), computed from the response exactly as the host computes it. A conversation
   keeps its last few sessions, newest first: a target may not have accepted the newest
   response (it answered an older poke, or was lost), and data already in flight at a rollover
   still uses the older key. Which session a data datagram belongs to is settled by its HMAC.
4. Data datagrams go to the conversation of their two addresses and are decoded by the
   `DatagramCodec` of the sender's direction in that session: the codec the host uses for the
   target's datagrams, or the one the target uses for the host's. So the decoder applies the
   same checks as the two ends (direction bit, replay); a datagram captured twice, or resent
   with an old sequence number, is shown as a replay, not counted twice.
5. A data datagram with no session to try is *undecryptable* (the handshake is not in the
   capture, kdnet.md 5); one that no session's key authenticates is an *authentication
   failure* (another key, or damaged), as is a control datagram under a wrong root key.
6. Pokes say whether the target has a host (the connected-host field, kdnet.md 3.1) and which
   boot they come from (nonce bytes 2..31), so reboots and lost sessions show in the notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from cartd.decode.reader import UdpDatagram
from cartd.kd.constants import BREAKIN_BYTE
from cartd.kd.framing import BreakInByte, KdPacket, NoiseDetected, decode_datagram_packet
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import (
    MAGIC,
    Channel,
    Direction,
    DropReason,
    KdnetDatagram,
    KdnetDecodeError,
    pull_datagram,
    pull_header,
)
from cartd.kd.kdnet.handshake import (
    HandshakeKind,
    PeerAddress,
    Poke,
    handshake_kind,
    pull_poke,
    pull_response,
)
from cartd.kd.kdnet.keys import KdnetKey, derive_data_key

# Rule 3: how many sessions a conversation remembers. A target accepts only a response to one
# of its recent pokes, and a host answers a poke at most every 3 s, so a key older than a few
# handshakes can no longer be in use; four covers a host that answered every poke of a slow
# start, and keeps a long capture of many reboots from trying every key on every datagram.
MAX_SESSIONS_PER_CONVERSATION = 4

KdEvent = KdPacket | NoiseDetected | BreakInByte


class Outcome(StrEnum):
    """What became of one datagram; the values are the `status` of `--json` lines."""

    DECODED = "decoded"  # authenticated and decrypted
    REPLAY = "replay"  # authenticated, but its sequence number is not new (rule 4)
    AUTHENTICATION_FAILED = "authentication_failed"  # no key we hold authenticates it (rule 5)
    UNDECRYPTABLE = "undecryptable"  # data channel with no handshake seen (rule 5)
    MALFORMED = "malformed"  # KDNET magic, but the header or the padding is wrong


class ControlKind(StrEnum):
    """What a decrypted control datagram is (kdnet.md 3.1 and 3.3)."""

    POKE = "poke"
    RESPONSE = "response"
    POKE_REQUEST = "poke_request"  # an empty body from the host: "poke me now"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class KdnetRecord:
    """One KDNET datagram of the capture and what it was found to be."""

    frame: int
    time_ns: int
    src: PeerAddress
    dst: PeerAddress
    size: int
    outcome: Outcome
    reason: DropReason | None = None  # why it was not decoded
    version: int | None = None  # header byte 4, when the header is well formed
    channel: Channel | None = None
    # From the plaintext when decrypted; from the conversation's roles when not (None if the
    # datagram belongs to no conversation we know).
    direction: Direction | None = None
    sequence: int | None = None
    session: int | None = None  # the handshake whose data key decrypted it, numbered from 1
    control: ControlKind | None = None
    poke: Poke | None = None
    keepalive: bool = False  # a poke from a target that has a host (kdnet.md 3.3)
    kd: KdEvent | None = None  # the data channel's KD packet
    note: str = ""  # what a person should know, in words


@dataclass(slots=True)
class _Session:
    number: int
    data_key: bytes
    from_target: DatagramCodec  # decodes the target's datagrams, as the host does
    from_host: DatagramCodec  # decodes the host's datagrams, as the target does


@dataclass(slots=True)
class _Conversation:
    target: PeerAddress
    host: PeerAddress
    sessions: list[_Session] = field(default_factory=list)  # newest last
    last_poke: Poke | None = None

    def direction_of(self, src: PeerAddress) -> Direction:
        return Direction.TARGET_TO_HOST if src == self.target else Direction.HOST_TO_TARGET


def format_address(peer: PeerAddress) -> str:
    """192.168.2.1:51111, or [fe80::1]:51111 for IPv6."""
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KdnetFollower:
    """Decrypts the KDNET datagrams of one capture with one key (see the module docstring)."""

    def __init__(self, key: KdnetKey) -> None:
        self._key = key
        self._conversations: dict[frozenset[PeerAddress], _Conversation] = {}
        self._sessions = 0

    @property
    def sessions(self) -> int:
        """How many handshakes (distinct data keys) the capture held so far."""
        return self._sessions

    @property
    def conversations(self) -> int:
        return len(self._conversations)

    def feed(self, datagram: UdpDatagram) -> KdnetRecord | None:
        """What `datagram` is; None when it is not KDNET at all (rule 1)."""
        payload = datagram.payload
        if not payload.startswith(MAGIC):
            # Checked here rather than by pull_header, which calls an empty or 1-3 byte
            # payload a truncated KDNET header: on a shared network it is just other traffic.
            return None
        # Every record starts from what the capture itself says; `replace` adds the findings.
        base = KdnetRecord(
            frame=datagram.frame,
            time_ns=datagram.time_ns,
            src=datagram.src,
            dst=datagram.dst,
            size=len(payload),
            outcome=Outcome.MALFORMED,
        )
        conversation = self._conversations.get(frozenset((datagram.src, datagram.dst)))
        guessed = conversation.direction_of(datagram.src) if conversation else None
        try:
            header = pull_header(payload)
        except KdnetDecodeError as exc:
            return replace(
                base,
                outcome=Outcome.MALFORMED,
                reason=exc.reason,
                direction=guessed,
                note=str(exc),
            )
        if header.channel is Channel.CONTROL:
            return self._control(datagram, base, guessed)
        return self._data(datagram, base, conversation)

    # ------------------------------------------------------------------ control channel

    def _control(
        self, datagram: UdpDatagram, base: KdnetRecord, guessed: Direction | None
    ) -> KdnetRecord:
        try:
            decoded = pull_datagram(datagram.payload, self._key)
        except KdnetDecodeError as exc:
            failed = exc.reason is DropReason.AUTHENTICATION_FAILED
            return replace(
                base,
                outcome=Outcome.AUTHENTICATION_FAILED if failed else Outcome.MALFORMED,
                reason=exc.reason,
                version=datagram.payload[4],
                channel=Channel.CONTROL,
                direction=guessed,
                note="the key does not authenticate it" if failed else str(exc),
            )
        from_target = decoded.direction is Direction.TARGET_TO_HOST
        target, host = (datagram.src, datagram.dst) if from_target else (datagram.dst, datagram.src)
        conversation = self._conversation(target, host)
        common = replace(
            base,
            outcome=Outcome.DECODED,
            version=decoded.version,
            channel=Channel.CONTROL,
            direction=decoded.direction,
            sequence=decoded.sequence,
        )
        kind = handshake_kind(decoded.body)
        if from_target and kind is HandshakeKind.POKE:
            return self._poke(conversation, decoded, common)
        if not from_target and kind is HandshakeKind.RESPONSE:
            return self._response(conversation, decoded, common)
        if not from_target and not decoded.body:
            return replace(
                common,
                control=ControlKind.POKE_REQUEST,
                note="poke request: the host asks the target to poke now",
            )
        return replace(
            common,
            control=ControlKind.UNKNOWN,
            note=f"unknown control body of {len(decoded.body)} bytes",
        )

    def _conversation(self, target: PeerAddress, host: PeerAddress) -> _Conversation:
        pair = frozenset((target, host))
        conversation = self._conversations.get(pair)
        if conversation is None or conversation.target != target:
            # New, or the two ends swapped roles (never seen; start afresh rather than guess).
            conversation = _Conversation(target=target, host=host)
            self._conversations[pair] = conversation
        return conversation

    def _poke(
        self, conversation: _Conversation, decoded: KdnetDatagram, common: KdnetRecord
    ) -> KdnetRecord:
        try:
            poke = pull_poke(decoded.body)
        except KdnetDecodeError as exc:
            return replace(
                common,
                control=ControlKind.UNKNOWN,
                note=f"malformed poke: {exc}",
            )
        notes = []
        previous = conversation.last_poke
        if previous is not None and previous.boot_id != poke.boot_id:
            notes.append("new boot (the poke nonce changed)")
        if poke.connected_host.is_empty:
            notes.append("no host connected")
            if conversation.sessions:
                notes.append("the target lost its session (rebooted, or missed the response)")
        else:
            notes.append(f"keepalive, connected to {format_address(poke.connected_host.to_peer())}")
        notes.append(
            f"target {format_address(poke.target.to_peer())}, "
            f"configured host {format_address(poke.configured_host.to_peer())}, "
            f"nonce counter {poke.counter}"
        )
        conversation.last_poke = poke
        return replace(
            common,
            control=ControlKind.POKE,
            poke=poke,
            keepalive=not poke.connected_host.is_empty,
            note="; ".join(notes),
        )

    def _response(
        self, conversation: _Conversation, decoded: KdnetDatagram, common: KdnetRecord
    ) -> KdnetRecord:
        try:
            response = pull_response(decoded.body)
        except KdnetDecodeError as exc:
            return replace(
                common,
                control=ControlKind.UNKNOWN,
                note=f"malformed response: {exc}",
            )
        data_key = derive_data_key(self._key, decoded.body)
        latest = conversation.sessions[-1] if conversation.sessions else None
        if latest is not None and latest.data_key == data_key:
            # The same response captured twice: the same session, not a new one.
            return replace(
                common,
                control=ControlKind.RESPONSE,
                session=latest.number,
                note=f"the response of session {latest.number} again",
            )
        self._sessions += 1
        session = _Session(
            number=self._sessions,
            data_key=data_key,
            from_target=DatagramCodec(self._key, local_direction=Direction.HOST_TO_TARGET),
            from_host=DatagramCodec(self._key, local_direction=Direction.TARGET_TO_HOST),
        )
        session.from_target.install_data_key(data_key)
        session.from_host.install_data_key(data_key)
        conversation.sessions.append(session)
        del conversation.sessions[:-MAX_SESSIONS_PER_CONVERSATION]
        poke = conversation.last_poke
        answers = poke is not None and poke.nonce == response.client_nonce
        note = f"session {session.number}: data key derived" + (
            "" if answers else "; it answers no poke in the capture"
        )
        return replace(
            common,
            control=ControlKind.RESPONSE,
            session=session.number,
            note=note,
        )

    # ------------------------------------------------------------------ data channel

    def _data(
        self,
        datagram: UdpDatagram,
        base: KdnetRecord,
        conversation: _Conversation | None,
    ) -> KdnetRecord:
        common = replace(base, version=datagram.payload[4], channel=Channel.DATA)
        if conversation is None or not conversation.sessions:
            return replace(
                common,
                outcome=Outcome.UNDECRYPTABLE,
                reason=DropReason.NO_DATA_KEY,
                direction=conversation.direction_of(datagram.src) if conversation else None,
                note="no data key: no handshake between these two addresses was decoded",
            )
        direction = conversation.direction_of(datagram.src)
        for session in reversed(conversation.sessions):
            codec = (
                session.from_target if direction is Direction.TARGET_TO_HOST else session.from_host
            )
            result = codec.decode(datagram.payload)
            if result is DropReason.AUTHENTICATION_FAILED:
                continue  # rule 3: perhaps an older session's key
            if isinstance(result, KdnetDatagram):
                return self._decoded_data(common, session, result, Outcome.DECODED, "")
            if result is DropReason.REPLAY:
                again = pull_datagram(datagram.payload, self._key, data_key=session.data_key)
                note = f"sequence {again.sequence} is not above {codec.highest_data_sequence}"
                return self._decoded_data(common, session, again, Outcome.REPLAY, note)
            return replace(
                common,
                outcome=Outcome.MALFORMED,
                reason=result,
                direction=direction,
                session=session.number,
                note=f"authenticated but unacceptable: {result.value}",
            )
        return replace(
            common,
            outcome=Outcome.AUTHENTICATION_FAILED,
            reason=DropReason.AUTHENTICATION_FAILED,
            direction=direction,
            note="no data key of this conversation's handshakes authenticates it",
        )

    @staticmethod
    def _decoded_data(
        common: KdnetRecord,
        session: _Session,
        decoded: KdnetDatagram,
        outcome: Outcome,
        note: str,
    ) -> KdnetRecord:
        kd: KdEvent
        if decoded.body == bytes([BREAKIN_BYTE]):
            kd = BreakInByte()  # kdnet.md 3.4 item 4: a 1-byte body is a break-in
        else:
            kd = decode_datagram_packet(decoded.body)
        return replace(
            common,
            outcome=outcome,
            direction=decoded.direction,
            sequence=decoded.sequence,
            session=session.number,
            kd=kd,
            note=note,
        )
