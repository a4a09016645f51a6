"""`cartd decode` on files that are not usable captures: exit 1, one clear line, no traceback."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from kdnet_vectors import KEK_V5, WINDBG_KEY, WINDBG_UNCUT, capture_path
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from cartd.cli import main
from cartd.decode.reader import CaptureError, CaptureReader

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "cartd decode: error: "


def cartd_decode(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cartd", "decode", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def assert_clear_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(PREFIX)
    for text in expected:
        assert text in line
    assert WINDBG_KEY not in result.stderr


def cut(source: Path, target: Path, size: int) -> Path:
    target.write_bytes(source.read_bytes()[:size])
    return target


# --- Through the real command line ---------------------------------------------------------------


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("These are my notes about the crash.\n")
    result = cartd_decode(path, "--key", WINDBG_KEY)
    assert_clear_failure(
        result, str(path), "not a pcap or pcapng capture", "'These are my notes about'"
    )
    assert result.stdout == ""


def test_truncated_pcapng_prints_what_it_read_then_fails(tmp_path: Path) -> None:
    path = cut(capture_path(WINDBG_UNCUT), tmp_path / "cut.pcapng", 150_000)
    result = cartd_decode(path, "--key", WINDBG_KEY)
    assert_clear_failure(
        result,
        "the capture is truncated or damaged after frame 634",
        "420 bytes that are not a whole record",
    )
    # The whole frames before the cut were decoded and printed, no summary after the error.
    lines = result.stdout.splitlines()
    assert len(lines) == 634
    assert "GetVersion -> build 10586" in result.stdout
    assert "Summary" not in result.stdout


def test_truncated_pcap_names_the_short_frame(tmp_path: Path) -> None:
    path = cut(capture_path(KEK_V5), tmp_path / "cut.pcap", 60_000)
    result = cartd_decode(path, "--key", "1.2.3.4", "--summary-only")
    assert_clear_failure(result, "the capture is truncated: frame 339 has 24 of its 1248 bytes")
    assert result.stdout == ""


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcapng"
    path.touch()
    assert_clear_failure(
        cartd_decode(path, "--key", WINDBG_KEY), "the file is empty (0 bytes), not a capture"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pcap"
    assert_clear_failure(cartd_decode(path, "--key", WINDBG_KEY), f"{path}: no such file")


# --- In process, through cartd.cli.main ----------------------------------------------------------


def run_main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["decode", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, tmp_path, "--key", WINDBG_KEY)
    assert code == 1 and out == ""
    assert err == f"{PREFIX}{tmp_path}: is a directory, not a capture file\n"


def test_header_cut_short(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cut(capture_path(KEK_V5), tmp_path / "header.pcap", 20)
    code, out, err = run_main(capsys, path)
    assert code == 1 and out == ""
    assert err.startswith(f"{PREFIX}{path}: not a readable pcap or pcapng capture")
    assert "header is damaged or cut short" in err


def test_capture_without_packets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cut(capture_path(KEK_V5), tmp_path / "header.pcap", 24)  # the file header only
    code, _, err = run_main(capsys, path, "--key", "1.2.3.4")
    assert code == 1
    assert err == f"{PREFIX}{path}: the capture holds no packets\n"


def test_capture_without_kdnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "web.pcap"
    wrpcap(
        str(path),
        [
            Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80),
            Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=5353, dport=53) / Raw(b"q"),
        ],
    )
    code, out, err = run_main(capsys, path, "--key", "1.2.3.4")
    assert code == 1 and out == ""
    assert err == (
        f"{PREFIX}{path}: no KDNET traffic and no cartd serial traffic in 2 frames "
        "(1 UDP datagrams, none starting with 'MDBG'; 1 other frames)\n"
    )


def test_gzip_capture_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Lekensteyn publishes capture A gzipped; scapy reads that directly."""
    path = tmp_path / "windbg-uncut.pcapng.gz"
    path.write_bytes(gzip.compress(capture_path(WINDBG_UNCUT).read_bytes()))
    code, out, _ = run_main(capsys, path, "--key", WINDBG_KEY, "--summary-only")
    assert code == 0
    assert "  KD control packets: 263 (ACK 259, RESEND 2, RESET 2)" in out.splitlines()


def test_truncated_gzip_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cut.pcapng.gz"
    path.write_bytes(gzip.compress(capture_path(WINDBG_UNCUT).read_bytes())[:100_000])
    code, _, err = run_main(capsys, path, "--key", WINDBG_KEY, "--summary-only")
    assert code == 1
    assert "truncated or damaged after frame" in err
    assert "its compressed (gzip) data ends early" in err


def test_reader_raises_capture_error_for_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    path.write_bytes(b"\x00\x01binary junk")
    with pytest.raises(CaptureError, match="it starts with the bytes 00 01 62 69"):
        CaptureReader(path)
