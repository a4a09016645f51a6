"""`cartd demo` end to end: a simulated target bug checks and the host reports it."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_reports_boot_modules_and_the_bugcheck_as_json() -> None:
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
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "print"
    modules = [event["path"] for event in events if event["type"] == "module"]
    assert modules[:2] == [
        "\\SystemRoot\\system32\\ntoskrnl.exe",
        "\\SystemRoot\\system32\\hal.dll",
    ]
    bugchecks = [event for event in events if event["type"] == "bugcheck"]
    assert bugchecks[0]["code"] == 0xD1
    assert bugchecks[0]["name"] == "DRIVER_IRQL_NOT_LESS_OR_EQUAL"
    assert bugchecks[0]["break"] == "bugcheck_first"
    assert len(bugchecks[0]["parameters"]) == 4


def test_demo_text_output_names_the_bugcheck() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cartd", "demo", "--seconds", "6", "--bugcheck-after", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DRIVER_POWER_STATE_FAILURE" in result.stdout
    assert "Arg1: 0000000000000003" in result.stdout
