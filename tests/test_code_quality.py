"""Lint, types and layer boundaries run with the tests, so one command checks everything."""

from __future__ import annotations

import ast
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


def _imported_by(package: str) -> set[str]:
    """Every module importing `package` (and all its modules) pulls in, in a fresh Python."""
    code = (
        "import sys, pkgutil, importlib\n"
        f"import {package}\n"
        f"for m in pkgutil.walk_packages(getattr({package}, '__path__', []), '{package}.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_tui_talks_to_the_control_socket_only() -> None:
    """Architecture: what cartd/tui knows of the daemon comes through cartd.control (and the
    events and config it shares); it imports neither the daemon, the links, the KD core, the
    session policy nor the simulator."""
    allowed = (
        "cartd.tui",
        "cartd.control",
        "cartd.events",
        "cartd.config",
        "cartd.client_commands",
    )
    wrong = []
    for path in sorted((ROOT / "cartd" / "tui").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                names = names[:1] if node.module != "cartd" else names[1:]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            wrong += [
                f"{path.name}: {name}"
                for name in names
                if name.startswith("cartd") and not name.startswith(allowed)
            ]
    assert not wrong


def test_headless_code_never_imports_textual() -> None:
    """The daemon, the simulator and the command line start without the TUI's toolkit."""
    for package in ("cartd.daemon", "cartd.sim", "cartd.control", "cartd.capture"):
        assert not [m for m in _imported_by(package) if m.startswith("textual")], package
    assert not [m for m in _imported_by("cartd.cli") if m.startswith("textual")]
