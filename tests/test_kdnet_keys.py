"""KDNET keys: the kdnet-vectors.md key table, clear errors, secrecy, the data key."""

from __future__ import annotations

import pytest
from kdnet_vectors import KEY_VECTORS, PACKET1_RESPONSE, WINDBG_DATA_KEY, WINDBG_KEY, KeyVector

from cartd.kd.errors import KdUsageError
from cartd.kd.kdnet.keys import KdnetKey, KdnetKeyError, derive_data_key, parse_key


@pytest.mark.parametrize("vector", KEY_VECTORS, ids=lambda vector: vector.text)
def test_key_vectors(vector: KeyVector) -> None:
    key = parse_key(vector.text)
    assert key.root_key == vector.root_key
    assert key.hmac_key == vector.hmac_key


def test_uppercase_and_surrounding_whitespace_are_normalised() -> None:
    assert parse_key(" 17890.AF3489A.9345KJM.Lio147\n") == parse_key("17890.af3489a.9345kjm.lio147")


def test_leading_zeros_and_the_largest_word() -> None:
    key = parse_key("0000000000000001.0.0.3W5E11264SGSF")
    assert key.root_key == bytes([1]) + bytes(23) + b"\xff" * 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.2.3", "expected 4 words separated by dots, got 3"),
        ("1.2.3.4.5", "expected 4 words separated by dots, got 5"),
        ("", "expected 4 words separated by dots, got 1"),
        ("1..3.4", "word 2 is empty"),
        ("1.xyz!.3.4", "word 2 'xyz!' has a character that is not 0-9 or a-z"),
        ("1.2.3.-4", "word 4 '-4' has a character that is not 0-9 or a-z"),
        ("1.2.3.4_0", "word 4 '4_0' has a character that is not 0-9 or a-z"),
        ("1.2. 3.4", "word 3 ' 3' has a character that is not 0-9 or a-z"),
        ("1.2.\u0663.4", "word 3 '\u0663' has a character that is not 0-9 or a-z"),
        (
            "1.2.3.3w5e11264sgsg",
            "word 4 is larger than 2^64-1 (at most 13 base-36 digits, largest 3w5e11264sgsf)",
        ),
        ("1.2.3." + "z" * 5000, "word 4 is larger than 2^64-1"),
    ],
)
def test_malformed_keys_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(KdnetKeyError) as caught:
        parse_key(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_an_overflowing_word_is_not_echoed() -> None:
    with pytest.raises(KdnetKeyError) as caught:
        parse_key("2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.zzzzzzzzzzzzzz")
    assert "2steg4fzbj2sz" not in str(caught.value)
    assert "zzzz" not in str(caught.value)


def test_key_material_never_shows() -> None:
    key = parse_key("2steg4fzbj2sz.23418vzkd4ko3.1g34ou07z4pev.1sp3yo9yz874p")
    shown = [repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr({"key": key})]
    for text in shown:
        assert "<secret>" in text
        assert key.root_key.hex() not in text
        assert key.hmac_key.hex() not in text
        assert "2steg4fzbj2sz" not in text
        assert repr(key.root_key) not in text


def test_a_root_key_must_be_32_bytes() -> None:
    with pytest.raises(KdUsageError):
        KdnetKey(root_key=bytes(31))


def test_data_key_vector() -> None:
    body = PACKET1_RESPONSE.plaintext[8:330]
    assert derive_data_key(parse_key(WINDBG_KEY), body) == WINDBG_DATA_KEY


def test_data_key_needs_the_whole_response_body() -> None:
    with pytest.raises(KdUsageError):
        derive_data_key(parse_key(WINDBG_KEY), PACKET1_RESPONSE.plaintext[8:])
