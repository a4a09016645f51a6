"""KDNET datagrams: the kdnet-vectors.md datagrams byte for byte, and every way to drop one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kdnet_vectors import (
    KEK_KEY,
    PACKET0_POKE,
    PACKET1_RESPONSE,
    PACKET2_UNUSED,
    PACKET3_PRINT,
    PACKET4_RESEND,
    PACKET5_PRINT_AGAIN,
    PACKET6_ACK,
    SESSION_VECTORS,
    WINDBG_DATA_KEY,
    WINDBG_KEY,
    DatagramVector,
)

from cartd.kd.errors import KdUsageError
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import (
    HEADER,
    MAGIC,
    MIN_DATAGRAM_SIZE,
    Channel,
    DatagramHeader,
    Direction,
    DropReason,
    KdnetDatagram,
    KdnetDecodeError,
    datagram_size,
    peek_channel,
    pull_datagram,
    pull_header,
    pull_plaintext,
    push_datagram,
    push_header,
    push_plaintext,
    seal,
    unseal,
)
from cartd.kd.kdnet.keys import parse_key

KEY = parse_key(WINDBG_KEY)


def cipher_key(vector: DatagramVector) -> bytes:
    return KEY.root_key if vector.channel == Channel.CONTROL else WINDBG_DATA_KEY


def host_codec() -> DatagramCodec:
    """The host's view of capture A after the handshake: receives target datagrams."""
    codec = DatagramCodec(KEY, local_direction=Direction.HOST_TO_TARGET, version=4)
    codec.install_data_key(WINDBG_DATA_KEY)
    return codec


def target_codec() -> DatagramCodec:
    codec = DatagramCodec(KEY, local_direction=Direction.TARGET_TO_HOST, version=4)
    codec.install_data_key(WINDBG_DATA_KEY)
    return codec


def receiver_for(vector: DatagramVector) -> DatagramCodec:
    return host_codec() if vector.from_target else target_codec()


# --- The vectors of kdnet-vectors.md ------------------------------------------------------------


@pytest.mark.parametrize("vector", SESSION_VECTORS, ids=lambda vector: vector.name)
def test_vector_decrypts_to_its_plaintext(vector: DatagramVector) -> None:
    header = pull_header(vector.raw)
    assert header == DatagramHeader(version=4, channel=Channel(vector.channel))
    plaintext = unseal(vector.raw, cipher_key=cipher_key(vector), hmac_key=KEY.hmac_key)
    assert plaintext == vector.plaintext


@pytest.mark.parametrize("vector", SESSION_VECTORS, ids=lambda vector: vector.name)
def test_vector_reencrypts_byte_for_byte(vector: DatagramVector) -> None:
    header = push_header(DatagramHeader(version=4, channel=Channel(vector.channel)))
    sealed = seal(header, vector.plaintext, cipher_key=cipher_key(vector), hmac_key=KEY.hmac_key)
    assert sealed == vector.raw
    # Through the whole-datagram pair as well, with the padding it works out itself.
    datagram = pull_datagram(vector.raw, KEY, data_key=WINDBG_DATA_KEY)
    rebuilt = KdnetDatagram(
        version=datagram.version,
        channel=datagram.channel,
        sequence=datagram.sequence,
        direction=datagram.direction,
        body=datagram.body,
    )
    assert push_datagram(rebuilt, KEY, data_key=WINDBG_DATA_KEY) == vector.raw


@pytest.mark.parametrize(
    ("vector", "sequence", "direction", "body_size", "padding"),
    [
        (PACKET0_POKE, 3, Direction.TARGET_TO_HOST, 344, 0),
        (PACKET1_RESPONSE, 3, Direction.HOST_TO_TARGET, 322, 6),
        (PACKET2_UNUSED, 1, Direction.TARGET_TO_HOST, 12, 12),
        (PACKET3_PRINT, 2, Direction.TARGET_TO_HOST, 62, 10),
        (PACKET5_PRINT_AGAIN, 3, Direction.TARGET_TO_HOST, 62, 10),
        (PACKET6_ACK, 2, Direction.HOST_TO_TARGET, 16, 8),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_vector_fields(
    vector: DatagramVector, sequence: int, direction: Direction, body_size: int, padding: int
) -> None:
    datagram = pull_datagram(vector.raw, KEY, data_key=WINDBG_DATA_KEY)
    assert datagram.version == 4
    assert datagram.channel == vector.channel
    assert datagram.sequence == sequence
    assert datagram.direction is direction
    assert len(datagram.body) == body_size
    assert datagram.padding == padding
    assert datagram.body == vector.plaintext[8 : 8 + body_size]
    assert len(vector.raw) == datagram_size(body_size)


def test_plaintext_pair() -> None:
    plaintext = push_plaintext(
        sequence=2, direction=Direction.HOST_TO_TARGET, body=PACKET6_ACK.plaintext[8:24]
    )
    assert plaintext == PACKET6_ACK.plaintext
    decoded = pull_plaintext(plaintext)
    assert (decoded.sequence, decoded.direction, decoded.padding) == (
        2,
        Direction.HOST_TO_TARGET,
        8,
    )


def test_datagram_sizes_of_section_2() -> None:
    assert datagram_size(16) == 54  # KD ACK
    assert datagram_size(1) == 38  # break-in
    assert datagram_size(344) == 374  # poke
    assert datagram_size(322) == 358  # response
    assert datagram_size(0) == MIN_DATAGRAM_SIZE  # poke request


def test_the_codec_accepts_the_vectors_in_order() -> None:
    host, target = host_codec(), target_codec()
    for vector in SESSION_VECTORS:
        receiver = host if vector.from_target else target
        decoded = receiver.decode(vector.raw)
        assert isinstance(decoded, KdnetDatagram), vector.name
        assert decoded.body == pull_plaintext(vector.plaintext).body
    assert host.drop_counters == {}
    assert target.drop_counters == {}
    assert host.highest_data_sequence == 3
    assert target.highest_data_sequence == 2


def test_encoding_reproduces_the_host_side() -> None:
    """Packets 4 and 6 are the host's data sequences 1 and 2 after the handshake."""
    host = host_codec()
    assert host.encode_data(PACKET4_RESEND.plaintext[8:24]) == PACKET4_RESEND.raw
    assert host.encode_data(PACKET6_ACK.plaintext[8:24]) == PACKET6_ACK.raw


def test_encoding_reproduces_the_target_side_and_the_handshake() -> None:
    target = target_codec()
    assert target.encode_control(PACKET0_POKE.plaintext[8:], sequence=3) == PACKET0_POKE.raw
    assert target.encode_data(PACKET2_UNUSED.plaintext[8:20]) == PACKET2_UNUSED.raw
    assert target.encode_data(PACKET3_PRINT.plaintext[8:70]) == PACKET3_PRINT.raw
    assert target.encode_data(PACKET3_PRINT.plaintext[8:70]) == PACKET5_PRINT_AGAIN.raw
    host = DatagramCodec(KEY, local_direction=Direction.HOST_TO_TARGET, version=4)
    body = PACKET1_RESPONSE.plaintext[8:330]
    assert host.encode_control(body, sequence=3) == PACKET1_RESPONSE.raw


def test_a_new_data_key_restarts_both_sequences() -> None:
    host = host_codec()
    host.encode_data(b"x")
    assert isinstance(host.decode(PACKET2_UNUSED.raw), KdnetDatagram)
    host.install_data_key(WINDBG_DATA_KEY)
    assert host.highest_data_sequence == 0
    assert isinstance(host.decode(PACKET2_UNUSED.raw), KdnetDatagram)
    assert host.encode_data(PACKET4_RESEND.plaintext[8:24]) == PACKET4_RESEND.raw


# --- Dropped and counted ------------------------------------------------------------------------


def decode_many(codec: DatagramCodec, datagrams: list[bytes]) -> list[KdnetDatagram | DropReason]:
    return [codec.decode(datagram) for datagram in datagrams]


@pytest.mark.parametrize("vector", SESSION_VECTORS, ids=lambda vector: vector.name)
def test_wrong_key_is_an_authentication_failure(vector: DatagramVector) -> None:
    receiver = receiver_for(vector)
    wrong = DatagramCodec(parse_key(KEK_KEY), local_direction=receiver.local_direction)
    wrong.install_data_key(bytes(32))
    assert wrong.decode(vector.raw) is DropReason.AUTHENTICATION_FAILED
    assert wrong.drop_counters == {DropReason.AUTHENTICATION_FAILED: 1}


def test_wrong_data_key_is_an_authentication_failure() -> None:
    codec = DatagramCodec(KEY, local_direction=Direction.HOST_TO_TARGET)
    codec.install_data_key(bytes(32))
    assert codec.decode(PACKET3_PRINT.raw) is DropReason.AUTHENTICATION_FAILED
    assert isinstance(codec.decode(PACKET0_POKE.raw), KdnetDatagram)  # root key still right


@pytest.mark.parametrize("vector", SESSION_VECTORS, ids=lambda vector: vector.name)
def test_every_flipped_bit_is_dropped(vector: DatagramVector) -> None:
    codec = receiver_for(vector)
    flipped = []
    for bit in range(len(vector.raw) * 8):
        damaged = bytearray(vector.raw)
        damaged[bit // 8] ^= 1 << (bit % 8)
        flipped.append(bytes(damaged))
    results = decode_many(codec, flipped)
    assert all(isinstance(result, DropReason) for result in results)
    assert sum(codec.drop_counters.values()) == len(flipped)
    # Magic bits fail the magic check, the rest the tag (or version/channel before it).
    assert codec.drop_counters[DropReason.BAD_MAGIC] == 32
    assert set(codec.drop_counters) <= {
        DropReason.BAD_MAGIC,
        DropReason.BAD_VERSION,
        DropReason.BAD_CHANNEL,
        DropReason.NO_DATA_KEY,
        DropReason.AUTHENTICATION_FAILED,
    }
    # The original still goes through: nothing above advanced the replay state.
    assert isinstance(codec.decode(vector.raw), KdnetDatagram)


@pytest.mark.parametrize("vector", SESSION_VECTORS, ids=lambda vector: vector.name)
def test_truncated_at_every_length_is_dropped(vector: DatagramVector) -> None:
    codec = receiver_for(vector)
    results = decode_many(codec, [vector.raw[:size] for size in range(len(vector.raw))])
    assert all(isinstance(result, DropReason) for result in results)
    assert sum(codec.drop_counters.values()) == len(vector.raw)
    assert codec.drop_counters[DropReason.TRUNCATED] == MIN_DATAGRAM_SIZE
    assert isinstance(codec.decode(vector.raw), KdnetDatagram)


def test_trailing_bytes_are_dropped() -> None:
    codec = host_codec()
    assert codec.decode(PACKET3_PRINT.raw + b"\0") is DropReason.BAD_LENGTH
    assert codec.decode(PACKET3_PRINT.raw + bytes(16)) is DropReason.AUTHENTICATION_FAILED


def test_replays_are_dropped_and_counted() -> None:
    codec = host_codec()
    assert isinstance(codec.decode(PACKET3_PRINT.raw), KdnetDatagram)  # sequence 2
    assert codec.decode(PACKET3_PRINT.raw) is DropReason.REPLAY
    assert codec.decode(PACKET2_UNUSED.raw) is DropReason.REPLAY  # sequence 1, older
    assert isinstance(codec.decode(PACKET5_PRINT_AGAIN.raw), KdnetDatagram)  # sequence 3
    assert codec.decode(PACKET5_PRINT_AGAIN.raw) is DropReason.REPLAY
    assert codec.drop_counters == {DropReason.REPLAY: 3}


def test_our_own_datagrams_reflected_back_are_dropped() -> None:
    codec = host_codec()
    assert codec.decode(PACKET6_ACK.raw) is DropReason.WRONG_DIRECTION
    assert codec.decode(PACKET1_RESPONSE.raw) is DropReason.WRONG_DIRECTION
    assert codec.drop_counters == {DropReason.WRONG_DIRECTION: 2}


def test_data_before_the_handshake_is_undecryptable() -> None:
    codec = DatagramCodec(KEY, local_direction=Direction.HOST_TO_TARGET)
    assert codec.decode(PACKET2_UNUSED.raw) is DropReason.NO_DATA_KEY
    assert isinstance(codec.decode(PACKET0_POKE.raw), KdnetDatagram)
    assert codec.drop_counters == {DropReason.NO_DATA_KEY: 1}


def forge(version: int, channel: int, plaintext: bytes) -> bytes:
    """A datagram authenticated with the right keys around an arbitrary plaintext."""
    key_for_channel = KEY.root_key if channel == Channel.CONTROL else WINDBG_DATA_KEY
    return seal(
        HEADER.pack(MAGIC, version, channel),
        plaintext,
        cipher_key=key_for_channel,
        hmac_key=KEY.hmac_key,
    )


def test_header_checks() -> None:
    codec = host_codec()
    ack = PACKET6_ACK.plaintext.replace(b"\x88", b"\x08", 1)  # as if from the target
    assert codec.decode(forge(6, 0, ack)) is DropReason.BAD_VERSION
    assert codec.decode(forge(3, 0, ack)) is DropReason.BAD_VERSION
    assert codec.decode(forge(4, 2, ack)) is DropReason.BAD_CHANNEL
    assert codec.decode(b"MDB") is DropReason.TRUNCATED
    assert codec.decode(b"") is DropReason.TRUNCATED
    assert codec.decode(b"GET / HTTP/1.1\r\n") is DropReason.BAD_MAGIC
    decoded = codec.decode(forge(5, 0, ack))
    assert isinstance(decoded, KdnetDatagram)
    assert decoded.version == 5


def test_bad_padding_is_dropped() -> None:
    codec = host_codec()
    too_much = bytes.fromhex("00000000000001") + bytes([0x7F]) + bytes(24)
    assert codec.decode(forge(4, 0, too_much)) is DropReason.BAD_PADDING
    not_zero = bytes.fromhex("00000000000001") + bytes([0x08]) + bytes(16) + b"\x01" + bytes(7)
    assert codec.decode(forge(4, 0, not_zero)) is DropReason.BAD_PADDING
    # A whole extra block of padding is odd but consistent: accepted.
    extra_block = bytes.fromhex("00000000000001") + bytes([0x18]) + bytes(24)
    decoded = codec.decode(forge(4, 0, extra_block))
    assert isinstance(decoded, KdnetDatagram)
    assert decoded.body == b""
    assert codec.drop_counters == {DropReason.BAD_PADDING: 2}


def test_pull_raises_a_remote_error_with_the_reason() -> None:
    with pytest.raises(KdnetDecodeError) as caught:
        pull_datagram(PACKET3_PRINT.raw[:-1], KEY, data_key=WINDBG_DATA_KEY)
    assert caught.value.reason is DropReason.BAD_LENGTH


def test_peek_channel() -> None:
    assert peek_channel(PACKET0_POKE.raw) is Channel.CONTROL
    assert peek_channel(PACKET3_PRINT.raw) is Channel.DATA
    assert peek_channel(b"MDBG\x04") is None
    assert peek_channel(b"MDBG\x04\x07") is None


# --- Misuse is a local error --------------------------------------------------------------------


def test_misuse_raises_usage_errors() -> None:
    codec = DatagramCodec(KEY, local_direction=Direction.HOST_TO_TARGET)
    with pytest.raises(KdUsageError):
        codec.encode_data(b"x")  # no data key
    with pytest.raises(KdUsageError):
        codec.encode_control(b"", sequence=1)  # no version yet
    with pytest.raises(KdUsageError):
        codec.version = 6
    with pytest.raises(KdUsageError):
        codec.install_data_key(bytes(16))
    with pytest.raises(KdUsageError):
        push_plaintext(sequence=2**56, direction=Direction.HOST_TO_TARGET, body=b"")
    with pytest.raises(KdUsageError):
        push_plaintext(sequence=1, direction=Direction.HOST_TO_TARGET, body=b"", padding=7)
    with pytest.raises(KdUsageError):
        push_header(DatagramHeader(version=7, channel=Channel.DATA))
    with pytest.raises(KdUsageError):
        seal(b"MDBG\x04\x00", b"123", cipher_key=KEY.root_key, hmac_key=KEY.hmac_key)


# --- Fuzz: arbitrary input never raises ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for codec in (host_codec(), DatagramCodec(KEY, local_direction=Direction.TARGET_TO_HOST)):
        result = codec.decode(data)
        assert isinstance(result, DropReason)
        assert sum(codec.drop_counters.values()) == 1


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([4, 5, 6]),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=1, max_value=6).flatmap(
        lambda blocks: st.binary(min_size=16 * blocks, max_size=16 * blocks)
    ),
    st.binary(max_size=3),
)
def test_authenticated_junk_never_raises(
    version: int, channel: int, plaintext: bytes, tail: bytes
) -> None:
    """Past the tag check: arbitrary flags, pad counts and bodies under valid keys."""
    datagram = HEADER.pack(MAGIC, version, channel) + bytes(16) + bytes(16)
    if channel <= 1:
        datagram = forge(version, channel, plaintext)
    codec = host_codec()
    for data in (datagram, datagram + tail, datagram[6:], MAGIC + datagram[4:]):
        result = codec.decode(data)
        assert isinstance(result, KdnetDatagram | DropReason)
