"""The kernel's loaded-module list (PsLoadedModuleList) as a debugger walks it.

PsLoadedModuleList is a LIST_ENTRY head; each entry is a KLDR_DATA_TABLE_ENTRY whose
InLoadOrderLinks is at offset 0. The x64 offsets below have been stable from Windows 7 to 11
(they match the fake-nt image's layout in shared/vectors/fake-nt/fake_nt.c).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cartd.kd.errors import KdDecodeError

LDR_DLL_BASE = 0x30  # DllBase
LDR_SIZE_OF_IMAGE = 0x40  # SizeOfImage (u32)
LDR_FULL_DLL_NAME = 0x48  # FullDllName (UNICODE_STRING)
LDR_BASE_DLL_NAME = 0x58  # BaseDllName (UNICODE_STRING)
LDR_ENTRY_READ_SIZE = 0x68  # enough for every field above
# A real kernel has a few hundred modules; a longer walk means a corrupted or looping list.
MAX_MODULES = 4096
# UNICODE_STRING.Length is a u16; names are short, and this bounds a read of a corrupt one.
MAX_NAME_BYTES = 520


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleEntry:
    """One KLDR_DATA_TABLE_ENTRY, before its name has been read."""

    address: int
    flink: int
    base: int
    size: int
    name_length: int  # bytes of UTF-16
    name_buffer: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModule:
    name: str
    base: int
    size: int


def pull_module_entry(raw: bytes, *, address: int) -> ModuleEntry:
    if len(raw) < LDR_ENTRY_READ_SIZE:
        raise KdDecodeError(f"module entry at {address:#x}: only {len(raw)} bytes readable")
    flink, _blink = struct.unpack_from("<QQ", raw, 0)
    (base,) = struct.unpack_from("<Q", raw, LDR_DLL_BASE)
    (size,) = struct.unpack_from("<I", raw, LDR_SIZE_OF_IMAGE)
    length, _maximum, buffer = struct.unpack_from("<HH4xQ", raw, LDR_BASE_DLL_NAME)
    return ModuleEntry(
        address=address,
        flink=flink,
        base=base,
        size=size,
        name_length=min(length, MAX_NAME_BYTES),
        name_buffer=buffer,
    )


def decode_module_name(raw: bytes) -> str:
    return raw[: len(raw) & ~1].decode("utf-16-le", errors="replace")
