"""PE32+ images for the simulator: parse a kernel file, load it at any base, and write headers.

`parse_pe` reads what a loader needs from an AMD64 PE32+ file (or from an image already mapped in
memory): the headers, the section table, the export directory and the base relocations.
`PeImage.load` lays the image out as Windows maps it (sections at their RVAs, SizeOfImage bytes)
with every DIR64 fixup moved by ``base - ImageBase``, which is how `--kernel-image` serves the
fake-nt kernel at a randomised kernel base. `build_pe_headers` and `build_export_directory` go the
other way, for the synthetic kernel and driver images, so that a host that checks "MZ", "PE",
Machine and SizeOfImage at a module base finds them.

Layouts are the public ones of the PE/COFF specification (Microsoft "PE Format" page).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

DOS_SIGNATURE = b"MZ"  # IMAGE_DOS_SIGNATURE
NT_SIGNATURE = b"PE\0\0"  # IMAGE_NT_SIGNATURE
DOS_HEADER_SIZE = 0x40  # sizeof(IMAGE_DOS_HEADER)
E_LFANEW_OFFSET = 0x3C  # IMAGE_DOS_HEADER.e_lfanew
FILE_HEADER_SIZE = 20  # sizeof(IMAGE_FILE_HEADER)
SECTION_HEADER_SIZE = 40  # sizeof(IMAGE_SECTION_HEADER)
OPTIONAL_HEADER64_SIZE = 0xF0  # sizeof(IMAGE_OPTIONAL_HEADER64) with 16 data directories
DATA_DIRECTORIES_OFFSET = 112  # IMAGE_OPTIONAL_HEADER64.DataDirectory
IMAGE_BASE_OFFSET = 24  # IMAGE_OPTIONAL_HEADER64.ImageBase
NUMBER_OF_DIRECTORIES = 16  # IMAGE_NUMBEROF_DIRECTORY_ENTRIES

MACHINE_AMD64 = 0x8664  # IMAGE_FILE_MACHINE_AMD64
MACHINE_NAMES = {0x014C: "i386", 0x01C4: "ARMNT", 0xAA64: "ARM64", 0x0200: "IA64"}
OPTIONAL_MAGIC_PE32 = 0x10B  # IMAGE_NT_OPTIONAL_HDR32_MAGIC
OPTIONAL_MAGIC_PE32_PLUS = 0x20B  # IMAGE_NT_OPTIONAL_HDR64_MAGIC

FILE_RELOCS_STRIPPED = 0x0001  # IMAGE_FILE_RELOCS_STRIPPED
FILE_EXECUTABLE_IMAGE = 0x0002  # IMAGE_FILE_EXECUTABLE_IMAGE
FILE_LARGE_ADDRESS_AWARE = 0x0020  # IMAGE_FILE_LARGE_ADDRESS_AWARE
SUBSYSTEM_NATIVE = 1  # IMAGE_SUBSYSTEM_NATIVE: drivers and the kernel

DIRECTORY_EXPORT = 0  # IMAGE_DIRECTORY_ENTRY_EXPORT
DIRECTORY_BASERELOC = 5  # IMAGE_DIRECTORY_ENTRY_BASERELOC

SCN_CNT_CODE = 0x00000020  # IMAGE_SCN_CNT_CODE
SCN_CNT_INITIALIZED_DATA = 0x00000040  # IMAGE_SCN_CNT_INITIALIZED_DATA
SCN_MEM_EXECUTE = 0x20000000  # IMAGE_SCN_MEM_EXECUTE
SCN_MEM_READ = 0x40000000  # IMAGE_SCN_MEM_READ
SCN_MEM_WRITE = 0x80000000  # IMAGE_SCN_MEM_WRITE
SECTION_TEXT = SCN_CNT_CODE | SCN_MEM_EXECUTE | SCN_MEM_READ
SECTION_RDATA = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ
SECTION_DATA = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ | SCN_MEM_WRITE

REL_BASED_ABSOLUTE = 0  # IMAGE_REL_BASED_ABSOLUTE: padding that keeps blocks 4-byte aligned
REL_BASED_HIGHLOW = 3  # IMAGE_REL_BASED_HIGHLOW: a 32-bit field
REL_BASED_DIR64 = 10  # IMAGE_REL_BASED_DIR64: a 64-bit field (all an x64 image normally has)
EXPORT_DIRECTORY_SIZE = 40  # sizeof(IMAGE_EXPORT_DIRECTORY)

SECTION_ALIGNMENT = 0x1000
FILE_ALIGNMENT = 0x200
# Sanity limits: the PE format allows 96 sections; a real ntoskrnl maps to about 16 MiB, so an
# image claiming more than this is corrupt (and would cost the simulator that much address space).
MAX_SECTIONS = 96
MAX_IMAGE_SIZE = 256 << 20
MAX_EXPORT_NAME = 512


class PeFormatError(ValueError):
    """The bytes are not a loadable AMD64 PE32+ image; the message says what is wrong."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeSection:
    name: str
    virtual_address: int
    virtual_size: int
    raw_offset: int
    raw_size: int
    characteristics: int

    @property
    def mapped_size(self) -> int:
        """Bytes the section occupies in the loaded image (VirtualSize, or the raw size if 0)."""
        return self.virtual_size or self.raw_size

    @property
    def executable(self) -> bool:
        return bool(self.characteristics & SCN_MEM_EXECUTE)

    @property
    def writable(self) -> bool:
        return bool(self.characteristics & SCN_MEM_WRITE)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeImage:
    """What a loader needs from a PE32+ image; `load` produces the mapped, relocated bytes."""

    machine: int
    timestamp: int
    characteristics: int
    image_base: int
    size_of_image: int
    size_of_headers: int
    entry_point_rva: int
    checksum: int
    subsystem: int
    sections: tuple[PeSection, ...]
    exports: Mapping[str, int]  # name -> RVA (forwarders and ordinal-only exports left out)
    relocations: tuple[tuple[int, int], ...]  # (RVA, IMAGE_REL_BASED_* type), padding left out
    has_relocation_directory: bool
    mapped: bool  # the bytes are a mapped image (sections at their RVAs), not a file
    data: bytes = field(repr=False)
    nt_headers_offset: int

    def export_rva(self, name: str) -> int:
        try:
            return self.exports[name]
        except KeyError:
            raise KeyError(f"the image exports no {name!r}") from None

    def section_at(self, rva: int) -> PeSection | None:
        for section in self.sections:
            if section.virtual_address <= rva < section.virtual_address + section.mapped_size:
                return section
        return None

    def load(self, base: int) -> bytes:
        """The image as mapped at ``base``: SizeOfImage bytes, relocated, ImageBase updated."""
        if base % SECTION_ALIGNMENT or not 0 <= base < 1 << 64:
            raise ValueError(f"load base {base:#x} is not page aligned")
        delta = (base - self.image_base) % (1 << 64)
        if delta and not self.relocations:
            why = (
                "its relocations are stripped"
                if self.characteristics & FILE_RELOCS_STRIPPED or not self.has_relocation_directory
                else "it has no base relocations"
            )
            raise PeFormatError(
                f"image prefers base {self.image_base:#x} and cannot move to {base:#x}: {why}"
            )
        image = bytearray(self.size_of_image)
        image[: self.size_of_headers] = self.data[: self.size_of_headers]
        for section in self.sections:
            if self.mapped:
                source = self.data[
                    section.virtual_address : section.virtual_address + section.mapped_size
                ]
            else:
                length = min(section.raw_size, section.mapped_size)
                source = self.data[section.raw_offset : section.raw_offset + length]
            image[section.virtual_address : section.virtual_address + len(source)] = source
        for rva, kind in self.relocations:
            if kind == REL_BASED_DIR64:
                (value,) = struct.unpack_from("<Q", image, rva)
                struct.pack_into("<Q", image, rva, (value + delta) % (1 << 64))
            else:  # REL_BASED_HIGHLOW, the only other kind parse_pe accepts
                (value,) = struct.unpack_from("<I", image, rva)
                struct.pack_into("<I", image, rva, (value + delta) % (1 << 32))
        # Windows' loader stores the actual base in the mapped header; debuggers that read the
        # header at KernBase then see where the image really is.
        struct.pack_into("<Q", image, self.nt_headers_offset + 24 + IMAGE_BASE_OFFSET, base)
        return bytes(image)


def load_pe_file(path: str | Path) -> PeImage:
    """Read and parse a PE file; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PeFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return parse_pe(data)
    except PeFormatError as exc:
        raise PeFormatError(f"{path}: {exc}") from None


def parse_pe(data: bytes, *, mapped: bool = False) -> PeImage:
    """Parse an AMD64 PE32+ image from file bytes, or (``mapped``) from its in-memory layout."""
    data = bytes(data)
    if len(data) < DOS_HEADER_SIZE:
        raise PeFormatError(
            f"not a PE image: {len(data)} bytes is shorter than a DOS header ({DOS_HEADER_SIZE})"
        )
    if data[:2] != DOS_SIGNATURE:
        raise PeFormatError("not a PE image: no 'MZ' DOS header")
    (e_lfanew,) = struct.unpack_from("<I", data, E_LFANEW_OFFSET)
    if e_lfanew + 4 + FILE_HEADER_SIZE > len(data):
        raise PeFormatError(f"truncated: e_lfanew {e_lfanew:#x} points past the end of the data")
    if data[e_lfanew : e_lfanew + 4] != NT_SIGNATURE:
        raise PeFormatError(f"not a PE image: no 'PE\\0\\0' signature at e_lfanew {e_lfanew:#x}")
    machine, section_count, timestamp, _, _, optional_size, characteristics = struct.unpack_from(
        "<HHIIIHH", data, e_lfanew + 4
    )
    if machine != MACHINE_AMD64:
        name = MACHINE_NAMES.get(machine, "unknown")
        raise PeFormatError(f"not an AMD64 image: Machine is {machine:#06x} ({name})")
    optional = e_lfanew + 4 + FILE_HEADER_SIZE
    if optional + 2 > len(data):
        raise PeFormatError("truncated optional header")
    (magic,) = struct.unpack_from("<H", data, optional)
    if magic != OPTIONAL_MAGIC_PE32_PLUS:
        kind = "PE32" if magic == OPTIONAL_MAGIC_PE32 else "unknown"
        raise PeFormatError(f"not PE32+: optional header magic is {magic:#06x} ({kind})")
    if optional_size < DATA_DIRECTORIES_OFFSET or optional + optional_size > len(data):
        raise PeFormatError(f"truncated optional header (SizeOfOptionalHeader {optional_size:#x})")
    (entry_point,) = struct.unpack_from("<I", data, optional + 16)
    (image_base,) = struct.unpack_from("<Q", data, optional + IMAGE_BASE_OFFSET)
    section_alignment, file_alignment = struct.unpack_from("<II", data, optional + 32)
    size_of_image, size_of_headers, checksum = struct.unpack_from("<III", data, optional + 56)
    (subsystem,) = struct.unpack_from("<H", data, optional + 68)
    (directory_count,) = struct.unpack_from("<I", data, optional + 108)
    if not 0 < size_of_image <= MAX_IMAGE_SIZE:
        raise PeFormatError(f"SizeOfImage {size_of_image:#x} is implausible")
    if size_of_image % SECTION_ALIGNMENT or section_alignment != SECTION_ALIGNMENT:
        raise PeFormatError(
            f"SectionAlignment {section_alignment:#x} / SizeOfImage {size_of_image:#x}: "
            f"only 4 KiB-aligned images can be mapped"
        )
    if file_alignment == 0 or image_base % 0x10000:
        raise PeFormatError(f"bad FileAlignment {file_alignment:#x} or ImageBase {image_base:#x}")
    if not 0 < size_of_headers <= min(len(data), size_of_image):
        raise PeFormatError(f"SizeOfHeaders {size_of_headers:#x} does not fit the image")
    directory_count = min(directory_count, (optional_size - DATA_DIRECTORIES_OFFSET) // 8)
    directories = [
        struct.unpack_from("<II", data, optional + DATA_DIRECTORIES_OFFSET + 8 * index)
        for index in range(min(directory_count, NUMBER_OF_DIRECTORIES))
    ]

    sections = _parse_sections(
        data, optional + optional_size, section_count, size_of_image, size_of_headers, mapped
    )
    image = PeImage(
        machine=machine,
        timestamp=timestamp,
        characteristics=characteristics,
        image_base=image_base,
        size_of_image=size_of_image,
        size_of_headers=size_of_headers,
        entry_point_rva=entry_point,
        checksum=checksum,
        subsystem=subsystem,
        sections=sections,
        exports={},
        relocations=(),
        has_relocation_directory=False,
        mapped=mapped,
        data=data,
        nt_headers_offset=e_lfanew,
    )
    reader = _RvaReader(image)
    exports: dict[str, int] = {}
    relocations: tuple[tuple[int, int], ...] = ()
    if len(directories) > DIRECTORY_EXPORT and directories[DIRECTORY_EXPORT][1]:
        export_rva, export_size = directories[DIRECTORY_EXPORT]
        exports = _parse_exports(reader, export_rva, export_size)
    has_relocation_directory = (
        len(directories) > DIRECTORY_BASERELOC and directories[DIRECTORY_BASERELOC][1] != 0
    )
    if has_relocation_directory:
        reloc_rva, reloc_size = directories[DIRECTORY_BASERELOC]
        relocations = _parse_relocations(reader, reloc_rva, reloc_size, size_of_image)
    return replace(
        image,
        exports=exports,
        relocations=relocations,
        has_relocation_directory=has_relocation_directory,
    )


def _parse_sections(
    data: bytes, table: int, count: int, size_of_image: int, size_of_headers: int, mapped: bool
) -> tuple[PeSection, ...]:
    if count > MAX_SECTIONS:
        raise PeFormatError(f"{count} sections; the PE format allows {MAX_SECTIONS}")
    if table + count * SECTION_HEADER_SIZE > len(data):
        raise PeFormatError(f"truncated section table ({count} sections)")
    sections = []
    previous_end = size_of_headers
    for index in range(count):
        offset = table + index * SECTION_HEADER_SIZE
        raw_name, virtual_size, virtual_address, raw_size, raw_offset = struct.unpack_from(
            "<8sIIII", data, offset
        )
        (characteristics,) = struct.unpack_from("<I", data, offset + 36)
        name = raw_name.rstrip(b"\0").decode("ascii", "replace") or f"#{index}"
        section = PeSection(
            name=name,
            virtual_address=virtual_address,
            virtual_size=virtual_size,
            raw_offset=raw_offset,
            raw_size=raw_size,
            characteristics=characteristics,
        )
        if virtual_address % SECTION_ALIGNMENT or virtual_address < previous_end:
            raise PeFormatError(
                f"section {name} at RVA {virtual_address:#x} is misaligned or overlaps"
            )
        end = virtual_address + section.mapped_size
        if end > size_of_image:
            raise PeFormatError(
                f"section {name} [{virtual_address:#x}, {end:#x}) extends past SizeOfImage "
                f"{size_of_image:#x}"
            )
        if mapped:
            if end > len(data):
                raise PeFormatError(
                    f"truncated section {name}: mapped image ends at {len(data):#x}, "
                    f"section at {end:#x}"
                )
        else:
            loaded = min(raw_size, section.mapped_size)
            if loaded and raw_offset + loaded > len(data):
                raise PeFormatError(
                    f"truncated section {name}: raw data [{raw_offset:#x}, "
                    f"{raw_offset + loaded:#x}) is beyond the file size {len(data):#x}"
                )
        previous_end = end
        sections.append(section)
    return tuple(sections)


class _RvaReader:
    """Reads bytes at an RVA from either a file (through the section table) or a mapped image."""

    def __init__(self, image: PeImage) -> None:
        self._image = image

    def read(self, rva: int, size: int, what: str) -> bytes:
        image = self._image
        if rva + size > image.size_of_image:
            raise PeFormatError(f"{what} at RVA {rva:#x} (+{size:#x}) is outside the image")
        if image.mapped or rva + size <= image.size_of_headers:
            offset = rva
        else:
            section = image.section_at(rva)
            if section is None or rva + size > section.virtual_address + section.raw_size:
                raise PeFormatError(f"{what} at RVA {rva:#x} is not backed by file data")
            offset = section.raw_offset + rva - section.virtual_address
        chunk = image.data[offset : offset + size]
        if len(chunk) != size:
            raise PeFormatError(f"truncated: {what} at RVA {rva:#x} runs past the end of the data")
        return chunk

    def read_c_string(self, rva: int, what: str) -> str:
        # Read byte by byte up to a NUL, bounded, without assuming where the section ends.
        out = bytearray()
        while len(out) < MAX_EXPORT_NAME:
            byte = self.read(rva + len(out), 1, what)
            if byte == b"\0":
                return out.decode("ascii", "replace")
            out += byte
        raise PeFormatError(f"{what} at RVA {rva:#x} is not NUL-terminated")


def _parse_exports(reader: _RvaReader, directory_rva: int, directory_size: int) -> dict[str, int]:
    raw = reader.read(directory_rva, EXPORT_DIRECTORY_SIZE, "export directory")
    _, _, _, _, _, _, function_count, name_count, functions, names, ordinals = struct.unpack(
        "<IIHHIIIIIII", raw
    )
    if function_count > 0x10000 or name_count > 0x10000:
        raise PeFormatError(
            f"export directory claims {function_count} functions and {name_count} names"
        )
    function_rvas = struct.unpack(
        f"<{function_count}I", reader.read(functions, 4 * function_count, "export address table")
    )
    name_rvas = struct.unpack(
        f"<{name_count}I", reader.read(names, 4 * name_count, "export name table")
    )
    name_ordinals = struct.unpack(
        f"<{name_count}H", reader.read(ordinals, 2 * name_count, "export ordinal table")
    )
    exports = {}
    for name_rva, ordinal in zip(name_rvas, name_ordinals, strict=True):
        if ordinal >= function_count:
            raise PeFormatError(f"export ordinal {ordinal} is beyond {function_count} functions")
        target = function_rvas[ordinal]
        # An RVA inside the export directory is a forwarder string ("NTDLL.RtlFoo"), not code.
        if directory_rva <= target < directory_rva + directory_size:
            continue
        exports[reader.read_c_string(name_rva, "export name")] = target
    return exports


def _parse_relocations(
    reader: _RvaReader, directory_rva: int, directory_size: int, size_of_image: int
) -> tuple[tuple[int, int], ...]:
    raw = reader.read(directory_rva, directory_size, "base relocation directory")
    fixups: list[tuple[int, int]] = []
    position = 0
    while position + 8 <= len(raw):
        page_rva, block_size = struct.unpack_from("<II", raw, position)
        if block_size == 0:
            break  # zero padding after the last block
        if block_size < 8 or block_size % 2 or position + block_size > len(raw):
            raise PeFormatError(
                f"malformed base relocation block at +{position:#x} (size {block_size:#x})"
            )
        for index in range(8, block_size, 2):
            (entry,) = struct.unpack_from("<H", raw, position + index)
            kind, rva = entry >> 12, page_rva + (entry & 0xFFF)
            if kind == REL_BASED_ABSOLUTE:
                continue
            if kind not in (REL_BASED_DIR64, REL_BASED_HIGHLOW):
                raise PeFormatError(f"unsupported base relocation type {kind} at RVA {rva:#x}")
            width = 8 if kind == REL_BASED_DIR64 else 4
            if rva + width > size_of_image:
                raise PeFormatError(f"base relocation at RVA {rva:#x} is outside the image")
            fixups.append((rva, kind))
        position += block_size
    return tuple(fixups)


# --- writing headers for synthetic images --------------------------------------------------------

SYNTHETIC_E_LFANEW = 0x80
SYNTHETIC_SIZE_OF_HEADERS = 0x400  # DOS header + NT headers + up to 16 section headers, aligned
_MAX_SYNTHETIC_SECTIONS = (
    SYNTHETIC_SIZE_OF_HEADERS - SYNTHETIC_E_LFANEW - 4 - FILE_HEADER_SIZE - OPTIONAL_HEADER64_SIZE
) // SECTION_HEADER_SIZE


def build_pe_headers(
    *,
    image_base: int,
    size_of_image: int,
    entry_point_rva: int,
    sections: Sequence[PeSection],
    timestamp: int,
    checksum: int = 0,
    export_directory: tuple[int, int] = (0, 0),
    characteristics: int = FILE_EXECUTABLE_IMAGE | FILE_LARGE_ADDRESS_AWARE,
    subsystem: int = SUBSYSTEM_NATIVE,
) -> bytes:
    """DOS header, NT headers and section table of an AMD64 PE32+ image mapped at
    ``image_base``; SYNTHETIC_SIZE_OF_HEADERS bytes. `parse_pe(..., mapped=True)` reads it back."""
    if len(sections) > _MAX_SYNTHETIC_SECTIONS:
        raise ValueError(f"at most {_MAX_SYNTHETIC_SECTIONS} sections fit the synthetic headers")
    out = bytearray(SYNTHETIC_SIZE_OF_HEADERS)
    out[0:2] = DOS_SIGNATURE
    struct.pack_into("<I", out, E_LFANEW_OFFSET, SYNTHETIC_E_LFANEW)
    out[0x40:0x67] = b"This program cannot be run in DOS mode."  # what every linker leaves here
    nt = SYNTHETIC_E_LFANEW
    out[nt : nt + 4] = NT_SIGNATURE
    struct.pack_into(
        "<HHIIIHH",
        out,
        nt + 4,
        MACHINE_AMD64,
        len(sections),
        timestamp,
        0,
        0,
        OPTIONAL_HEADER64_SIZE,
        characteristics,
    )
    optional = nt + 4 + FILE_HEADER_SIZE
    code_size = sum(s.mapped_size for s in sections if s.characteristics & SCN_CNT_CODE)
    data_size = sum(s.mapped_size for s in sections if not s.characteristics & SCN_CNT_CODE)
    code_base = next((s.virtual_address for s in sections if s.executable), 0)
    struct.pack_into(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        out,
        optional,
        OPTIONAL_MAGIC_PE32_PLUS,
        14,  # linker version: any plausible value
        0,
        code_size,
        data_size,
        0,
        entry_point_rva,
        code_base,
        image_base,
        SECTION_ALIGNMENT,
        FILE_ALIGNMENT,
        10,  # MajorOperatingSystemVersion
        0,
        10,  # MajorImageVersion
        0,
        10,  # MajorSubsystemVersion
        0,
        0,  # Win32VersionValue
        size_of_image,
        SYNTHETIC_SIZE_OF_HEADERS,
        checksum,
        subsystem,
        0x4160,  # DllCharacteristics: high-entropy VA, dynamic base, NX compatible, CFG
        0x80000,  # stack reserve/commit and heap reserve/commit, as a kernel's header has them
        0x3000,
        0x100000,
        0x1000,
        0,  # LoaderFlags
        NUMBER_OF_DIRECTORIES,
    )
    struct.pack_into(
        "<II", out, optional + DATA_DIRECTORIES_OFFSET + 8 * DIRECTORY_EXPORT, *export_directory
    )
    table = optional + OPTIONAL_HEADER64_SIZE
    raw_offset = SYNTHETIC_SIZE_OF_HEADERS
    for index, section in enumerate(sections):
        raw_size = -(-section.mapped_size // FILE_ALIGNMENT) * FILE_ALIGNMENT
        struct.pack_into(
            "<8sIIIIIIHHI",
            out,
            table + index * SECTION_HEADER_SIZE,
            section.name.encode("ascii")[:8],
            section.virtual_size,
            section.virtual_address,
            raw_size,
            raw_offset,
            0,
            0,
            0,
            0,
            section.characteristics,
        )
        raw_offset += raw_size
    return bytes(out)


def build_export_directory(
    *, directory_rva: int, dll_name: str, exports: Mapping[str, int], timestamp: int
) -> bytes:
    """An IMAGE_EXPORT_DIRECTORY with its tables and strings, to be placed at ``directory_rva``.

    Names are sorted, as loaders binary-search them; ordinal i is the i-th name."""
    names = sorted(exports)
    count = len(names)
    functions_rva = directory_rva + EXPORT_DIRECTORY_SIZE
    names_rva = functions_rva + 4 * count
    ordinals_rva = names_rva + 4 * count
    strings_rva = ordinals_rva + 2 * count
    strings = bytearray(dll_name.encode("ascii") + b"\0")
    name_rvas = []
    for name in names:
        name_rvas.append(strings_rva + len(strings))
        strings += name.encode("ascii") + b"\0"
    out = bytearray(
        struct.pack(
            "<IIHHIIIIIII",
            0,
            timestamp,
            0,
            0,
            strings_rva,
            1,  # ordinal base
            count,
            count,
            functions_rva,
            names_rva,
            ordinals_rva,
        )
    )
    out += struct.pack(f"<{count}I", *(exports[name] for name in names))
    out += struct.pack(f"<{count}I", *name_rvas)
    out += struct.pack(f"<{count}H", *range(count))
    out += strings
    return bytes(out)
