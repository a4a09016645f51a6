"""What both ntoseye interop tests (serial and KDNET) share: where the fake-nt vectors are,
finding ntoseye, keeping it off the network, and reading its output."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cartd.kd.context import Amd64Register, KSpecialRegister

SHARED = Path(__file__).resolve().parents[2] / "shared"
FAKE_NT = SHARED / "vectors" / "fake-nt"
KERNEL_IMAGE = FAKE_NT / "ntoskrnl.exe"
KERNEL_PDB = FAKE_NT / "ntkrnlmp.pdb"

# A proxy nobody listens on: with it, ntoseye's symbol downloads fail at once and locally.
CLOSED_PROXY = "http://127.0.0.1:9"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

# ntoseye's dump formats: `db` lines, `dq` lines, `lm` lines, and our ==name== section marks.
BYTES_LINE = re.compile(r"^([0-9a-f`]{8,17})  ((?:[0-9a-f?]{2}[ -])*[0-9a-f?]{2})(?:  |$)")
QWORDS_LINE = re.compile(r"^([0-9a-f`]{8,17})((?: +[0-9a-f`?]{16,17})+) *$")
MODULE_LINE = re.compile(r"^([0-9a-f`]{16,17})  ([0-9a-f`]{16,17})  (\S+) .* (\S+)$")
SECTION_MARK = re.compile(r"^==([a-z0-9_]+)==$")


def find_ntoseye() -> Path:
    """ntoseye from this virtualenv, else from PATH; skips the test when there is none."""
    beside = Path(sys.executable).parent / "ntoseye"
    if beside.exists():
        return beside
    found = shutil.which("ntoseye")
    if found is None:
        pytest.skip("ntoseye is not installed (pip install ntoseye)")
    return Path(found)


def hex_value(text: str) -> int:
    """A number as ntoseye prints it (hex, with WinDbg's ` between the halves)."""
    return int(text.replace("`", ""), 16)


def tail(text: str, lines: int = 60) -> str:
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else "(nothing)"


def qwords(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 8}Q", data))


def network_isolation() -> list[str]:
    """A command prefix that gives ntoseye no network at all, if this machine allows it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    prefix = [unshare, "--net", "--map-root-user"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return prefix if probe.returncode == 0 else []


# `r` prints "name value" pairs; these are ntoseye's names for CONTEXT fields.
CONTEXT_REGISTERS = {
    "rax": Amd64Register.RAX,
    "rbx": Amd64Register.RBX,
    "rcx": Amd64Register.RCX,
    "rdx": Amd64Register.RDX,
    "rsi": Amd64Register.RSI,
    "rdi": Amd64Register.RDI,
    "rsp": Amd64Register.RSP,
    "rbp": Amd64Register.RBP,
    "rip": Amd64Register.RIP,
    "r8": Amd64Register.R8,
    "r9": Amd64Register.R9,
    "r10": Amd64Register.R10,
    "r11": Amd64Register.R11,
    "r12": Amd64Register.R12,
    "r13": Amd64Register.R13,
    "r14": Amd64Register.R14,
    "r15": Amd64Register.R15,
    "rfl": Amd64Register.EFLAGS,
    "cs": Amd64Register.SEG_CS,
    "ds": Amd64Register.SEG_DS,
    "es": Amd64Register.SEG_ES,
    "fs": Amd64Register.SEG_FS,
    "gs": Amd64Register.SEG_GS,
    "ss": Amd64Register.SEG_SS,
}
# ...and these come from KSPECIAL_REGISTERS (ReadControlSpace 2).
SPECIAL_REGISTERS = {
    "cr0": KSpecialRegister.CR0,
    "cr2": KSpecialRegister.CR2,
    "cr3": KSpecialRegister.CR3,
    "cr4": KSpecialRegister.CR4,
    "cr8": KSpecialRegister.CR8,
}
REGISTER_PAIR = re.compile(r"\b(r[a-z0-9]{1,2}|cr\d|[cdefgs]s)\s+([0-9a-f`]{4,17})\b")
