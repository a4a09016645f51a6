"""The kernel's loaded-module list (PsLoadedModuleList) as a debugger walks it.

PsLoadedModuleList is a LIST_ENTRY head; each entry is a KLDR_DATA_TABLE_ENTRY whose
InLoadOrderLinks is at offset 0. The x64 offsets a host reads (up to BaseDllName) have been
stable from Windows 7 to 11; `LdrEntry` is the whole entry as the fake-nt image lays it out
(shared/vectors/fake-nt/fake_nt.c, Windows 10/11), which the simulator builds too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from cartd.kd.errors import KdDecodeError


class LdrEntry(IntEnum):
    """KLDR_DATA_TABLE_ENTRY offsets on x64 (fake_nt.c); u64 unless noted."""

    IN_LOAD_ORDER_LINKS = 0x00  # InLoadOrderLinks (LIST_ENTRY)
    DLL_BASE = 0x30  # DllBase
    ENTRY_POINT = 0x38  # EntryPoint
    SIZE_OF_IMAGE = 0x40  # SizeOfImage (u32)
    FULL_DLL_NAME = 0x48  # FullDllName (UNICODE_STRING)
    BASE_DLL_NAME = 0x58  # BaseDllName (UNICODE_STRING)
    FLAGS = 0x68  # Flags (u32)
    LOAD_COUNT = 0x6C  # LoadCount (u16)
    CHECK_SUM = 0x78  # CheckSum (u32)
    SIZE_OF_IMAGE_NOT_ROUNDED = 0x98  # SizeOfImageNotRounded (u32)
    TIME_DATE_STAMP = 0x9C  # TimeDateStamp (u32)


LDR_ENTRY_SIZE = 0xA0  # sizeof(KLDR_DATA_TABLE_ENTRY) in fake_nt.c
# What a host reads of each entry: InLoadOrderLinks through BaseDllName.
LDR_ENTRY_READ_SIZE = 0x68
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
    (base,) = struct.unpack_from("<Q", raw, LdrEntry.DLL_BASE)
    (size,) = struct.unpack_from("<I", raw, LdrEntry.SIZE_OF_IMAGE)
    length, _maximum, buffer = struct.unpack_from("<HH4xQ", raw, LdrEntry.BASE_DLL_NAME)
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
