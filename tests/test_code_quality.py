"""Lint, types and layer boundaries run with the tests, so one command checks everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    result = run(sys.executable, "-m", "ruff", "check", "cartd", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_core_imports_no_io() -> None:
    """Architecture rule 1: importing cartd.kd pulls in no I/O, clock or UI module."""
    code = (
        "import sys, pkgutil, importlib\n"
        "before = set(sys.modules)\n"
        "import cartd.kd\n"
        "for m in pkgutil.iter_modules(cartd.kd.__path__):\n"
        "    importlib.import_module('cartd.kd.' + m.name)\n"
        "bad = {'asyncio', 'socket', 'serial', 'usb', 'threading', 'textual', 'time', 'logging'}\n"
        "print(sorted(bad & (set(sys.modules) - before)))\n"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
