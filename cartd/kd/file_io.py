"""DBGKD_FILE_IO: a target asking the debugger for a file, and the debugger's answer.

Windows' boot loader and kernel ask the host for replacement driver files (WinDbg's .kdfiles)
with a CreateFile request and keep retrying until answered (spec section 7). cartd serves no
files, so the host's job is one reply: the request's ApiNumber and STATUS_NO_SUCH_FILE
(`no_such_file_reply`). The full structure is decoded anyway, so that the file name can be logged
and the simulator can send the request.

Layout (0x40 bytes): ApiNumber u32 @0, Status u32 @4, a union of 7 u64 @8, then data: the
UTF-16LE file name for CreateFile, file contents for ReadFile replies and WriteFile requests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from cartd.kd.constants import FileIoApi, NtStatus
from cartd.kd.errors import KdDecodeError, KdUsageError

FILE_IO_SIZE = 0x40
UNION_OFFSET = 0x08
UNION_SIZE = FILE_IO_SIZE - UNION_OFFSET  # ReserveSpace[7]

_HEADER = struct.Struct("<II")  # ApiNumber, Status
_CREATE_FILE = struct.Struct("<IIIII4xQQ")  # DBGKD_CREATE_FILE, Handle aligned to 0x20
_READ_WRITE_FILE = struct.Struct("<QQI")  # DBGKD_READ_FILE / DBGKD_WRITE_FILE
_CLOSE_FILE = struct.Struct("<Q")  # DBGKD_CLOSE_FILE
_UTF16_NUL = b"\0\0"


def _pack_union(layout: struct.Struct, *values: int) -> bytes:
    try:
        return layout.pack(*values).ljust(UNION_SIZE, b"\0")
    except struct.error as exc:
        raise KdUsageError(f"a file I/O field does not fit its wire type: {exc}") from exc


def _split_utf16_name(tail: bytes) -> tuple[str, bytes]:
    """The NUL-terminated UTF-16LE name at the start of ``tail``, and the bytes after its NUL.
    Undecodable code units (lone surrogates, an odd last byte) become U+FFFD."""
    for index in range(0, len(tail) - 1, 2):
        if tail[index : index + 2] == _UTF16_NUL:
            return tail[:index].decode("utf-16-le", "replace"), tail[index + 2 :]
    return tail.decode("utf-16-le", "replace"), b""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateFile:
    """DBGKD_CREATE_FILE: the CreateFile arguments, the Handle and Length the host returns, and
    the file name that follows the 0x40-byte header (NUL-terminated UTF-16LE)."""

    desired_access: int = 0  # 0x08
    file_attributes: int = 0  # 0x0C
    share_access: int = 0  # 0x10
    create_disposition: int = 0  # 0x14
    create_options: int = 0  # 0x18
    handle: int = 0  # 0x20
    length: int = 0  # 0x28
    file_name: str = ""

    @classmethod
    def from_union_and_tail(cls, union: bytes, tail: bytes) -> tuple[Self, bytes]:
        """The body, and the tail bytes after the name's NUL."""
        access, attributes, share, disposition, options, handle, length = _CREATE_FILE.unpack_from(
            union
        )
        name, rest = _split_utf16_name(tail)
        body = cls(
            desired_access=access,
            file_attributes=attributes,
            share_access=share,
            create_disposition=disposition,
            create_options=options,
            handle=handle,
            length=length,
            file_name=name,
        )
        return body, rest

    def to_union(self) -> bytes:
        return _pack_union(
            _CREATE_FILE,
            self.desired_access,
            self.file_attributes,
            self.share_access,
            self.create_disposition,
            self.create_options,
            self.handle,
            self.length,
        )

    def to_tail(self) -> bytes:
        if "\0" in self.file_name:
            raise KdUsageError(f"file name {self.file_name!r} contains a NUL")
        try:
            return self.file_name.encode("utf-16-le") + _UTF16_NUL
        except UnicodeEncodeError as exc:
            raise KdUsageError(f"file name {self.file_name!r} is not encodable") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadFile:
    """DBGKD_READ_FILE: Handle @0x08, Offset @0x10, Length @0x18; the reply's data is the bytes."""

    handle: int
    offset: int
    length: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        handle, offset, length = _READ_WRITE_FILE.unpack_from(union)
        return cls(handle=handle, offset=offset, length=length)

    def to_union(self) -> bytes:
        return _pack_union(_READ_WRITE_FILE, self.handle, self.offset, self.length)


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteFile:
    """DBGKD_WRITE_FILE: Handle @0x08, Offset @0x10, Length @0x18; the request's data is the
    bytes to write."""

    handle: int
    offset: int
    length: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        handle, offset, length = _READ_WRITE_FILE.unpack_from(union)
        return cls(handle=handle, offset=offset, length=length)

    def to_union(self) -> bytes:
        return _pack_union(_READ_WRITE_FILE, self.handle, self.offset, self.length)


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseFile:
    """DBGKD_CLOSE_FILE: Handle @0x08."""

    handle: int

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls(handle=_CLOSE_FILE.unpack_from(union)[0])

    def to_union(self) -> bytes:
        return _pack_union(_CLOSE_FILE, self.handle)


@dataclass(frozen=True, slots=True, kw_only=True)
class RawFileIo:
    """The 0x38 union bytes of an unknown FILE_IO ApiNumber, kept exactly."""

    data: bytes = bytes(UNION_SIZE)

    def __post_init__(self) -> None:
        if len(self.data) != UNION_SIZE:
            raise KdUsageError(f"a raw file I/O union is {UNION_SIZE} bytes, got {len(self.data)}")

    @classmethod
    def from_union(cls, union: bytes) -> Self:
        return cls(data=bytes(union))

    def to_union(self) -> bytes:
        return self.data


FileIoBody = CreateFile | ReadFile | WriteFile | CloseFile | RawFileIo

# Union members without a tail of their own; CreateFile (name after the header) is the other.
_FIXED_BODY_TYPES: dict[int, type[ReadFile | WriteFile | CloseFile | RawFileIo]] = {
    FileIoApi.READ_FILE: ReadFile,
    FileIoApi.WRITE_FILE: WriteFile,
    FileIoApi.CLOSE_FILE: CloseFile,
}


def body_type_for(api: int) -> type[FileIoBody]:
    """The union member an ApiNumber carries (RawFileIo for unknown ones)."""
    if api == FileIoApi.CREATE_FILE:
        return CreateFile
    return _FIXED_BODY_TYPES.get(api, RawFileIo)


def _known_api(api: int) -> FileIoApi | int:
    try:
        return FileIoApi(api)
    except ValueError:
        return api


@dataclass(frozen=True, slots=True, kw_only=True)
class FileIoMessage:
    """One FILE_IO payload, request or reply. ``data`` is what follows the header (after the
    file name, for CreateFile)."""

    api: FileIoApi | int
    status: int = 0
    body: FileIoBody
    data: bytes = b""

    @property
    def file_name(self) -> str | None:
        """The file a CreateFile asks for (None for other ApiNumbers), for logs."""
        return self.body.file_name if isinstance(self.body, CreateFile) else None


def pull_file_io(payload: bytes) -> FileIoMessage:
    if len(payload) < FILE_IO_SIZE:
        raise KdDecodeError(f"file I/O payload needs {FILE_IO_SIZE} bytes, got {len(payload)}")
    payload = bytes(payload)
    api, status = _HEADER.unpack_from(payload)
    union = payload[UNION_OFFSET:FILE_IO_SIZE]
    tail = payload[FILE_IO_SIZE:]
    body: FileIoBody
    if api == FileIoApi.CREATE_FILE:
        body, data = CreateFile.from_union_and_tail(union, tail)
    else:
        body, data = _FIXED_BODY_TYPES.get(api, RawFileIo).from_union(union), tail
    return FileIoMessage(api=_known_api(api), status=status, body=body, data=data)


def push_file_io(message: FileIoMessage) -> bytes:
    expected = body_type_for(message.api)
    if type(message.body) is not expected:
        raise KdUsageError(
            f"ApiNumber {message.api:#x} carries {expected.__name__}, "
            f"not {type(message.body).__name__}"
        )
    try:
        header = _HEADER.pack(message.api, message.status)
    except struct.error as exc:
        raise KdUsageError(f"file I/O header field does not fit: {exc}") from exc
    body = message.body
    name = body.to_tail() if isinstance(body, CreateFile) else b""
    return header + body.to_union() + name + bytes(message.data)


def no_such_file_reply(request: FileIoMessage) -> bytes:
    """The payload that tells a target "no such file": its ApiNumber, STATUS_NO_SUCH_FILE and a
    zeroed union, as radare2 and rizin send (spec section 7)."""
    try:
        header = _HEADER.pack(request.api, NtStatus.NO_SUCH_FILE)
    except struct.error as exc:
        raise KdUsageError(f"ApiNumber {request.api!r} is not a u32") from exc
    return header + bytes(UNION_SIZE)
