"""KDNET test vectors, in one place for the key, codec, handshake and capture tests.

- The hex vectors of shared/spec/kdnet-vectors.md (key derivations, the first seven datagrams of
  capture A with their plaintexts, the data key), copied verbatim; the all-zero tail lines of
  the two handshake plaintexts are written as ``bytes(n)``.
- Readers for the two real captures in shared/vectors/kdnet (see its README), through scapy. A
  test that needs a capture is skipped, with the path in the reason, when the shared folder is
  not there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.utils import PcapReader

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
CAPTURE_DIR = SHARED_DIR / "vectors" / "kdnet"

WINDBG_UNCUT = "windbg-uncut.pcapng"  # capture A: KDNET v4, key 8.8.8.8, 955 datagrams
KEK_V5 = "kek-v5.pcap"  # capture B: KDNET v5, key 1.2.3.4, every frame twice
WINDBG_KEY = "8.8.8.8"
KEK_KEY = "1.2.3.4"

# Capture A's two ends (kdnet-vectors.md).
WINDBG_TARGET = ("192.168.2.72", 51111)
WINDBG_HOST = ("192.168.2.1", 51111)
# Capture B: the target pokes from .105, its configured and connected host is .101.
KEK_TARGET = ("192.168.1.105", 50000)
KEK_HOST = ("192.168.1.101", 50000)


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --- Key derivation (kdnet-vectors.md, first table) ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyVector:
    text: str
    root_key: bytes
    hmac_key: bytes


KEY_VECTORS = (
    KeyVector(
        text="8.8.8.8",
        root_key=_hex("0800000000000000080000000000000008000000000000000800000000000000"),
        hmac_key=_hex("f7fffffffffffffff7fffffffffffffff7fffffffffffffff7ffffffffffffff"),
    ),
    KeyVector(
        text="1.2.3.4",
        root_key=_hex("0100000000000000020000000000000003000000000000000400000000000000"),
        hmac_key=_hex("fefffffffffffffffdfffffffffffffffcfffffffffffffffbffffffffffffff"),
    ),
    KeyVector(
        text="1.1.1.1",
        root_key=_hex("0100000000000000010000000000000001000000000000000100000000000000"),
        hmac_key=_hex("fefffffffffffffffefffffffffffffffefffffffffffffffeffffffffffffff"),
    ),
    KeyVector(
        text="17890.af3489a.9345kjm.lio147",
        root_key=_hex("84c61e0000000000ce21d6470500000042f7f19a04000000a7e18d4d00000000"),
        hmac_key=_hex("7b39e1ffffffffff31de29b8faffffffbd080e65fbffffff581e72b2ffffffff"),
    ),
    KeyVector(
        text="1.z.10.3w5e11264sgsf",
        root_key=_hex("010000000000000023000000000000002400000000000000ffffffffffffffff"),
        hmac_key=_hex("feffffffffffffffdcffffffffffffffdbffffffffffffff0000000000000000"),
    ),
)

# SHA256(root_key || packet 1 plaintext[8:330]) for capture A.
WINDBG_DATA_KEY = _hex("6bd91c57bd6a551ad30b509c05c0c95b32cc5e47a0866907eaf0b1583384f660")


# --- Session vectors, key 8.8.8.8, capture A (kdnet-vectors.md) ---------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramVector:
    name: str
    index: int  # position in windbg-uncut.pcapng
    from_target: bool
    channel: int
    raw: bytes
    plaintext: bytes  # sequence/flags header + body + zero padding


PACKET0_POKE = DatagramVector(
    name="target poke",
    index=0,
    from_target=True,
    channel=1,
    raw=_hex(
        """
        4d4442470401ff98a9e80cf4f535b9b5f4aff6abe1df77369b5a3a81f76b6641
        757586a65cf107cffed5ed0cc1e0ca5875817aa23703e488f1440b508bdcdcf9
        2177fd54e09ee2fc42fb006b12141f9ea6c467b8e7b1df6e74f33894a40ecabc
        b8503dea6436e3de9fd92dc267b27bcf360143c25a9faf107279de3dd6517bb4
        82d79eb2f7dc5a60e011d534187679957248161686f50faf89f60f48b0d813fe
        603e6ec54dec74e80243413af2c4f7bc1c6aa399398f6cdf6997637f0a88d3e9
        f5d5eaecee47816156b4644160eaa29fb46b5d7fa60c4537fdb519844535c006
        618000244732dccfab419ab6066461867e6f1e87716fa5e780b30a2b409213ae
        4f331b7172d1002e8a98a2ca080c3327ffeff166e96a7cde7e8fa13dc145bc82
        5111905e0c60cd92c1be1f836d905327a59c02072a5c692815c361d7808f8246
        b4f920a82e301706b1b8d38877bb5cb474a8ea92cf6ef6d6db70c287df4f2502
        f095eae585438b8f6c8c48af63ad0a4db64e9e4f18e2
        """
    ),
    plaintext=_hex(
        """
        00000000000003000101c19792dfac7aa1dfe007010018000b00240005000000
        070088f7570043a1260000000000000000000000ffffc0a80248c7a700000000
        000000000000ffffc0a80201c7a700000000000000000000ffff000000000000
        """
    )
    + bytes(352 - 96),
)

PACKET1_RESPONSE = DatagramVector(
    name="host response",
    index=1,
    from_target=False,
    channel=1,
    raw=_hex(
        """
        4d44424704018f7be1b1499dfa39eeb5bcbf4569fca32d891d8cb88733f26ded
        c6e8ee372af836d29caecb0d14e92ec4bfd9e2741afb6e3401f37acdadc2b236
        b3b081c40539ed178c9f291ef1ae42c2075f6c127497ca983dbcab1fa8e8bd82
        c6e9331b4ef281632bb9d471673115e9778470de2cfc155c5ce132728bee382e
        e5e0e9b4be6072b243e0b7c6e94c48939e70af36977301585ea8f1c63b252c9a
        1963539e670afd7d615a9934193c21cd73ef3231004444505e5b289e7d6006dd
        c6ae8eab4efe5d767b41a56f5900383e9a578bf85a4877452ad59417deb19512
        4a06d54cf15d59eb452d44f5f84ebf63f5f98000c1a45c13035009e7c052ff0c
        7bbb2717490a3988c7ce292c6354a7df441a15f12edf1716cca4e3b9a6dae6a6
        b6416697d888692fcdd09283c7c5480123549a9a79cd4fa5d8d60b5119ffc7d0
        177154df128294e91397634d65b257b2923c9c4e2f5f1496556d614cc01df246
        bf79e6332aad
        """
    ),
    plaintext=_hex(
        """
        00000000000003860102c19792dfac7aa1dfe007010018000b00240005000000
        070088f7570043a1260041b4fa1b2ddd14ee3eeb8db987c0c7257ce62eef126a
        b74ef212136c100c540b00000000000000000000000000000000000000000000
        """
    )
    + bytes(336 - 96),
)

PACKET2_UNUSED = DatagramVector(
    name="target KD UNUSED packet",
    index=2,
    from_target=True,
    channel=0,
    raw=_hex(
        """
        4d44424704002fa399cffa8f888c766d5e595a843c6dee47e25b8c9e098bd632
        42f627753eddfb5900eab024ca9c9c435055f1c8e7d2
        """
    ),
    plaintext=_hex("000000000000010c00000000000000000102a8c0000000000000000000000000"),
)

PACKET3_PRINT = DatagramVector(
    name="target DbgKdPrintString",
    index=3,
    from_target=True,
    channel=0,
    raw=_hex(
        """
        4d4442470400f0dd573dc0b3b84378f1adb3d81bc3425773ae20424b769a09c8
        338370e2c253e839687e2fa4b579bba264ca76faace3fb6be828d923b23159e2
        0bc251e5e4f58c9032135c66e111e98df03f51a24fd5fce151f6a78d0877fd24
        cbd8cc0db594
        """
    ),
    plaintext=_hex(
        """
        000000000000020a3030303003002e0000000000df0b00003032000000000000
        1e000000ff07000042443a20426f6f7420446562756767657220496e69746961
        6c697a65640a00000000000000000000
        """
    ),
)

PACKET4_RESEND = DatagramVector(
    name="host KD RESEND",
    index=4,
    from_target=False,
    channel=0,
    raw=_hex(
        """
        4d44424704000c3e6d1655f7c70b5d8a875f9032af003152b7f200de2491adb3
        91c109d86f1e94bbfcb63ea493ff1e588fdbaab8575f
        """
    ),
    plaintext=_hex("0000000000000188696969690500000000000000000000000000000000000000"),
)

PACKET5_PRINT_AGAIN = DatagramVector(
    name="target resends DEBUG_IO",
    index=5,
    from_target=True,
    channel=0,
    raw=_hex(
        """
        4d4442470400bc271bb0942dc3ee1c293f1c30a40f71dae25680f31d82e37bb8
        fd9b3a8c7cbb810a6525f12e2ffaadc5f2bdc8c51408279824a78999f34a00ba
        b978a48a7c9a45765d8db01f76a64d07633a7cfcad831d476f194363be337590
        7e48ab2d60f2
        """
    ),
    plaintext=_hex(
        """
        000000000000030a3030303003002e0000000000df0b00003032000000000000
        1e000000ff07000042443a20426f6f7420446562756767657220496e69746961
        6c697a65640a00000000000000000000
        """
    ),
)

PACKET6_ACK = DatagramVector(
    name="host KD ACK id 0",
    index=6,
    from_target=False,
    channel=0,
    raw=_hex(
        """
        4d444247040053856c8e1086002c3276a4841d89c8ddb68eb775bd0c46538bd0
        b7f597f3daf8a29c3f714570f104a02535febdf9efa6
        """
    ),
    plaintext=_hex("0000000000000288696969690400000000000000000000000000000000000000"),
)

SESSION_VECTORS = (
    PACKET0_POKE,
    PACKET1_RESPONSE,
    PACKET2_UNUSED,
    PACKET3_PRINT,
    PACKET4_RESEND,
    PACKET5_PRINT_AGAIN,
    PACKET6_ACK,
)


# --- Captures -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturedDatagram:
    index: int
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def capture_path(name: str) -> Path:
    path = CAPTURE_DIR / name
    if not path.is_file():
        pytest.skip(f"KDNET capture {path} is not available (the shared folder is absent)")
    return path


@functools.cache
def _read_capture(path: Path) -> tuple[CapturedDatagram, ...]:
    datagrams: list[CapturedDatagram] = []
    with PcapReader(str(path)) as reader:
        for packet in reader:
            if UDP not in packet:
                continue
            ip, udp = packet[IP], packet[UDP]
            datagrams.append(
                CapturedDatagram(
                    index=len(datagrams),
                    time=float(packet.time),
                    src=(str(ip.src), int(udp.sport)),
                    dst=(str(ip.dst), int(udp.dport)),
                    payload=bytes(udp.payload),
                )
            )
    return tuple(datagrams)


def read_capture(name: str) -> tuple[CapturedDatagram, ...]:
    """Every UDP datagram of a capture in order, with time and addresses; skips if absent."""
    return _read_capture(capture_path(name))
