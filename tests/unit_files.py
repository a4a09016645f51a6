"""Checking deploy/'s systemd units with `systemd-analyze verify`, as they are installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def verify_unit(name: str, directory: Path, *, instance: str | None = None) -> str:
    """Copy deploy/NAME into `directory` with ExecStart pointed at this cartd (the installed
    path does not exist here), run `systemd-analyze verify` on it (on NAME with `instance`
    filled in, for a template) and return the unit's text. Fails the test on any complaint
    about the unit."""
    unit = (DEPLOY / name).read_text()
    cartd = Path(sys.executable).with_name("cartd")
    (directory / name).write_text(unit.replace("/usr/local/bin/cartd", str(cartd)))
    checked = name.replace("@.", f"@{instance}.") if instance is not None else name
    result = subprocess.run(
        ["systemd-analyze", "verify", str(directory / checked)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert checked.split("@")[0] not in result.stderr, result.stderr
    return unit
