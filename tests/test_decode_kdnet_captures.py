"""`cartd decode` on the two real KDNET captures (shared/vectors/kdnet), through the CLI.

Capture A (windbg-uncut.pcapng, key 8.8.8.8): every count of the summary is what the capture
holds (the same numbers test_kdnet_captures.py counts by hand), in text and in JSON, and the KD
layer decodes the GetVersion reply, the LoadSymbols state change and the DbgPrint text.
Capture B (kek-v5.pcap, key 1.2.3.4): the ten pokes authenticate as protocol version 5 and the
rest is reported undecryptable, without a crash.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kdnet_vectors import KEK_KEY, KEK_V5, WINDBG_KEY, WINDBG_UNCUT, capture_path

ROOT = Path(__file__).resolve().parents[1]


def cartd_decode(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m cartd decode ...` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cartd", "decode", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@functools.cache
def decoded(name: str, key: str, *options: str) -> subprocess.CompletedProcess[str]:
    """One CLI run per capture and option set, shared by the tests below."""
    return cartd_decode(capture_path(name), "--key", key, *options)


def json_lines(name: str, key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    result = decoded(name, key, "--json")
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    *records, last = objects
    return records, last["summary"]


# What capture A holds (kdnet.md sections 3 and 5).
WINDBG_SUMMARY = {
    "frames": 955,
    "datagrams": 955,
    "authenticated": 955,
    "versions": {"4": 955},
    "control": {
        "pokes": 427,
        "pokes_without_host": 1,
        "keepalives": 426,
        "responses": 1,
        "poke_requests": 0,
        "unknown": 0,
    },
    "data": {"target->host": 265, "host->target": 262},
    "replays": 0,
    "authentication_failures": 0,
    "undecryptable": 0,
    "malformed": 0,
    "sessions": 1,
    "conversations": 1,
    "kd_data_packets": {"STATE_MANIPULATE": 187, "FILE_IO": 66, "DEBUG_IO": 7, "STATE_CHANGE64": 3},
    "kd_control_packets": {"ACK": 259, "RESEND": 2, "RESET": 2},
    "kd_unused": 1,
    "kd_breakins": 0,
    "kd_malformed": 0,
    "other_udp": 0,
    "other_frames": 0,
    "ip_fragments": 0,
    "notes": [],
}


# --- Capture A ----------------------------------------------------------------------------------


def test_windbg_json_summary_counts_what_the_capture_holds() -> None:
    records, summary = json_lines(WINDBG_UNCUT, WINDBG_KEY)
    assert summary == WINDBG_SUMMARY
    assert len(records) == 955
    assert sum(summary["kd_data_packets"].values()) == 263
    assert sum(summary["kd_control_packets"].values()) == 263


def test_windbg_json_lines_agree_with_the_summary() -> None:
    records, _ = json_lines(WINDBG_UNCUT, WINDBG_KEY)
    assert {record["status"] for record in records} == {"decoded"}
    control = [record for record in records if record["channel"] == "control"]
    data = [record for record in records if record["channel"] == "data"]
    assert len(control) == 428 and len(data) == 527
    pokes = [record for record in control if record["control"]["kind"] == "poke"]
    assert len(pokes) == 427
    assert [poke["control"]["keepalive"] for poke in pokes].count(False) == 1
    assert pokes[0]["control"]["connected_host"] is None
    assert all(poke["control"]["connected_host"] == "192.168.2.1:51111" for poke in pokes[1:])
    [response] = [record for record in control if record["control"]["kind"] == "response"]
    assert response["direction"] == "host->target" and response["sequence"] == 3
    assert response["session"] == 1
    # Data sequence numbers count from 1 in each direction (kdnet.md 3.4 item 5).
    for direction, count in (("target->host", 265), ("host->target", 262)):
        numbers = [record["sequence"] for record in data if record["direction"] == direction]
        assert numbers == list(range(1, count + 1))
    kd_types = [record["kd"]["type"] for record in data]
    assert kd_types.count("UNUSED") == 1 and kd_types[0] == "UNUSED"
    assert kd_types.count("ACK") == 259
    assert records[0]["time"] == "2016-01-24T10:36:11.474228Z"
    assert records[0]["src"] == "192.168.2.72:51111"


def test_windbg_json_get_version_reply() -> None:
    records, _ = json_lines(WINDBG_UNCUT, WINDBG_KEY)
    replies = [
        record["kd"]
        for record in records
        if record.get("kd", {}).get("api") == "GetVersion" and record["direction"] == "target->host"
    ]
    [reply] = replies
    assert reply["type"] == "STATE_MANIPULATE"
    assert reply["build"] == 10586
    assert reply["machine"] == "AMD64"
    assert reply["kernel_base"] == "0x96f000"
    assert reply["kd_protocol"] == 6
    assert reply["text"].startswith("GetVersion -> build 10586")


def test_windbg_json_load_symbols_and_dbgprint() -> None:
    records, _ = json_lines(WINDBG_UNCUT, WINDBG_KEY)
    state_changes = [r["kd"] for r in records if r.get("kd", {}).get("type") == "STATE_CHANGE64"]
    assert [change["api"] for change in state_changes].count("LoadSymbols") == 1
    load = next(change for change in state_changes if change["api"] == "LoadSymbols")
    assert load["path"] == "winload.efi"
    assert load["base"] == "0x96f000"
    assert load["size"] == "0x17d000"
    prints = [r["kd"] for r in records if r.get("kd", {}).get("api") == "PrintString"]
    assert len(prints) == 7  # every DEBUG_IO is a DbgPrint; the first one twice (RESEND)
    assert prints[0]["string"] == prints[1]["string"] == "BD: Boot Debugger Initialized\n"
    assert prints[0]["text"] == 'DbgPrint "BD: Boot Debugger Initialized\\n"'


def test_windbg_text_lines() -> None:
    result = decoded(WINDBG_UNCUT, WINDBG_KEY)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2016-01-24T10:36:11.474228Z  target->host  control  #3 ")
    assert "poke v4: no host connected" in lines[0]
    assert "response v4: session 1: data key derived" in lines[1]
    get_version = [line for line in lines if "GetVersion -> " in line]
    assert len(get_version) == 1
    assert "target->host" in get_version[0] and "STATE_MANIPULATE" in get_version[0]
    assert "GetVersion -> build 10586 (free), AMD64, kernel base 0x96f000" in get_version[0]
    [load] = [line for line in lines if "LoadSymbols" in line]
    assert 'STATE_CHANGE64   id 0x00000002  LoadSymbols "winload.efi" base 0x96f000' in load
    prints = [line for line in lines if 'DbgPrint "BD: Boot Debugger Initialized\\n"' in line]
    assert len(prints) == 2  # the print and its resend after the host's RESEND
    assert any("ReadVirtualMemory 0x" in line and " bytes -> " in line for line in lines)
    assert any("RESET            id 0x80000060" in line for line in lines)
    assert any("Continue2 status DBG_CONTINUE" in line for line in lines)
    assert any('CreateFile "\\Windows\\system32\\kdnet.dll"' in line for line in lines)


def test_windbg_text_summary() -> None:
    result = decoded(WINDBG_UNCUT, WINDBG_KEY, "--summary-only")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Summary of 955 frames",
        "  KDNET datagrams: 955, 955 authenticated (protocol version 4); conversations 1, "
        "sessions 1",
        "  control: 427 pokes (1 without a host, 426 keepalives), 1 responses, "
        "0 poke requests, 0 unknown",
        "  data: 527 datagrams (target->host 265, host->target 262), 0 replays",
        "  authentication failures: 0",
        "  undecryptable (no data key): 0",
        "  malformed: 0",
        "  KD data packets: 263 (STATE_MANIPULATE 187, FILE_IO 66, DEBUG_IO 7, STATE_CHANGE64 3)",
        "  KD control packets: 263 (ACK 259, RESEND 2, RESET 2)",
        "  KD other: 1 UNUSED, 0 break-ins, 0 malformed",
    ]


def test_windbg_summary_only_json_is_one_object() -> None:
    result = decoded(WINDBG_UNCUT, WINDBG_KEY, "--json", "--summary-only")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert json.loads(line) == {"summary": WINDBG_SUMMARY}


# --- Capture B ----------------------------------------------------------------------------------


def test_kek_pokes_authenticate_as_version_5_and_the_rest_is_undecryptable() -> None:
    records, summary = json_lines(KEK_V5, KEK_KEY)
    assert len(records) == summary["datagrams"] == summary["frames"] == 704
    assert summary["authenticated"] == 10
    assert summary["versions"] == {"5": 10}
    assert summary["control"]["pokes"] == 10
    assert summary["control"]["keepalives"] == 10  # the target already had a host
    assert summary["undecryptable"] == 694
    assert summary["authentication_failures"] == 0
    assert summary["sessions"] == 0
    assert summary["kd_data_packets"] == summary["kd_control_packets"] == {}
    assert summary["notes"] == [
        "694 data datagrams are undecryptable: the handshake (the host's response) that set "
        "their data key is not in the capture"
    ]
    pokes = [record for record in records if record["status"] == "decoded"]
    assert len(pokes) == 10
    assert all(poke["version"] == 5 and poke["control"]["kind"] == "poke" for poke in pokes)
    assert [poke["sequence"] for poke in pokes][:4] == [2508, 2508, 2511, 2511]
    rest = [record for record in records if record["status"] != "decoded"]
    assert {record["status"] for record in rest} == {"undecryptable"}
    assert {record["reason"] for record in rest} == {"no_data_key"}
    assert {record["channel"] for record in rest} == {"data"}
    # The pokes name the two ends, so the undecryptable data still has a direction.
    assert {record["direction"] for record in rest} == {"target->host", "host->target"}


def test_kek_text() -> None:
    result = decoded(KEK_V5, KEK_KEY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        sum("poke v5: keepalive, connected to 192.168.1.101:50000" in line for line in lines) == 10
    )
    assert sum("undecryptable v5" in line for line in lines) == 694
    assert "  undecryptable (no data key): 694" in lines
    assert any(line.startswith("Note: 694 data datagrams are undecryptable") for line in lines)


# --- Keys ---------------------------------------------------------------------------------------


WRONG_KEY = "wrongkey.abc.def.ghi"


def test_wrong_key_authenticates_nothing_and_says_so() -> None:
    result = cartd_decode(capture_path(WINDBG_UNCUT), "--key", WRONG_KEY, "--json")
    assert result.returncode == 1
    *records, last = [json.loads(line) for line in result.stdout.splitlines()]
    summary = last["summary"]
    assert summary["authenticated"] == 0
    assert summary["authentication_failures"] == 428  # every control datagram
    assert summary["undecryptable"] == 527  # so no data key either
    assert {record["status"] for record in records} == {"authentication_failed", "undecryptable"}
    assert "the key is probably wrong" in summary["notes"][0]
    assert "nothing authenticated: the key is probably wrong" in result.stderr
    assert "Traceback" not in result.stderr
    assert WRONG_KEY not in result.stdout + result.stderr


def test_wrong_key_text_note() -> None:
    result = cartd_decode(capture_path(KEK_V5), "--key", WRONG_KEY, "--summary-only")
    assert result.returncode == 1
    assert "  authentication failures: 10" in result.stdout.splitlines()
    assert "Note: nothing authenticated" in result.stdout
    assert WRONG_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "key",
    ["1.2.3", "1.2.3.4.5", "1.2.3.zz_top", "1..3.4", "1.2.3.zzzzzzzzzzzzzzzzzzzz"],
)
def test_malformed_key_is_refused_without_echoing_it(key: str) -> None:
    result = cartd_decode(capture_path(KEK_V5), "--key", key)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("cartd decode: error: the --key is malformed: KDNET key: ")
    assert "Traceback" not in result.stderr
    for word in key.split("."):
        if len(word) > 1:
            assert word not in result.stderr


def test_kdnet_capture_without_a_key() -> None:
    result = cartd_decode(capture_path(WINDBG_UNCUT))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "the capture holds KDNET traffic (frame 1); give its key with --key" in result.stderr
