"""`cartd demo` end to end: daemon, simulated target on a paced pty, control-socket client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cartd.capture.journal import read_journal
from cartd.events import Bugcheck, DebugPrint, LinkUp, OwnerChanged


def test_demo_reports_and_records_the_bugcheck(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cartd",
            "demo",
            "--json",
            "--seconds",
            "8",
            "--bugcheck",
            "0xD1",
            "--bugcheck-after",
            "3",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "link_probed"
    assert kinds.index("link_up") < kinds.index("target_connected")
    assert "target_connected" in kinds
    modules = [event["name"] for event in events if event["type"] == "module_loaded"]
    assert modules[:2] == ["ntoskrnl.exe", "hal.dll"]
    (bugcheck,) = [event for event in events if event["type"] == "bugcheck"]
    assert bugcheck["code"] == "0xd1"
    assert bugcheck["name"] == "DRIVER_IRQL_NOT_LESS_OR_EQUAL"
    assert len(bugcheck["parameters"]) == 4
    assert f"records are in {tmp_path}" in result.stderr
    # What was shown was also recorded.
    (journal,) = tmp_path.glob("targets/*/sessions/*/events.jsonl")
    recorded = read_journal(journal)
    assert any(isinstance(e, Bugcheck) and e.code == 0xD1 for e in recorded)
    assert any(isinstance(e, DebugPrint) and "Fatal System Error" in e.text for e in recorded)
    assert isinstance(recorded[0], OwnerChanged) and isinstance(recorded[1], LinkUp)
    (console,) = tmp_path.glob("targets/*/sessions/*/console.log")
    assert "*** Fatal System Error: 0x000000d1" in console.read_text()
    assert list(tmp_path.glob("targets/*/sessions/*/wire.pcapng"))
    assert list(tmp_path.glob("targets/*/identity.json"))


def test_demo_text_output_names_the_bugcheck() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cartd", "demo", "--seconds", "6", "--bugcheck-after", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "BUGCHECK 0x0000009f DRIVER_POWER_STATE_FAILURE" in result.stdout
    assert "first event" in result.stderr


def test_demo_over_kdnet(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cartd",
            "demo",
            "--link",
            "kdnet",
            "--json",
            "--seconds",
            "7",
            "--bugcheck-after",
            "3",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [event["type"] for event in events]
    assert "link_up" in kinds and "target_connected" in kinds
    assert all(event.get("target", "kdnet").startswith("kdnet") for event in events)
    (bugcheck,) = [event for event in events if event["type"] == "bugcheck"]
    assert bugcheck["name"] == "DRIVER_POWER_STATE_FAILURE"
    # The KDNET capture is IPv4/UDP and the demo's key never reaches the records.
    assert list(tmp_path.glob("targets/kdnet-*/sessions/*/wire.pcapng"))
