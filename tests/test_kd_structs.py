"""DbgKd payload structures: spec vectors, real-target facts, round trips and the fuzz invariant.

Expected bytes are built here with plain ``struct.pack_into`` at the offsets the spec states
(sections 4-7, 13, 15), independently of the codecs' own layouts, so a wrong offset in a codec
cannot hide behind a matching wrong offset in its test.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartd.kd.constants import (
    ALTERNATE_STATE_CHANGE_FLAG,
    MAX_MANIPULATE_DATA,
    DebugIoApi,
    FileIoApi,
    MachineType,
    ManipulateApi,
    NewState,
    NtStatus,
)
from cartd.kd.context import (
    AMD64_CONTEXT_SIZE,
    CONTEXT_ALL,
    CONTEXT_AMD64,
    CONTEXT_CONTROL,
    CONTEXT_DEBUG_REGISTERS,
    CONTEXT_FLOATING_POINT,
    CONTEXT_FULL,
    CONTEXT_INTEGER,
    CONTEXT_SEGMENTS,
    KSPECIAL_REGISTERS_NTOSEYE_READ_SIZE,
    KSPECIAL_REGISTERS_SIZE,
    KSPECIAL_REGISTERS_WINDBG_READ_SIZE,
    Amd64ControlSpace,
    Amd64Register,
    KSpecialRegister,
    pack_register,
    read_register,
    with_register,
)
from cartd.kd.debug_io import (
    DebugIoFrame,
    DebugIoMessage,
    GetString,
    GetStringReply,
    PrintString,
    UnknownDebugIo,
    get_string_message,
    get_string_reply_message,
    print_string_message,
    pull_debug_io,
    pull_debug_io_from_host,
    pull_debug_io_from_target,
    push_debug_io,
)
from cartd.kd.errors import KdDecodeError, KdUsageError
from cartd.kd.file_io import (
    CloseFile,
    CreateFile,
    FileIoMessage,
    RawFileIo,
    ReadFile,
    WriteFile,
    no_such_file_reply,
    pull_file_io,
    push_file_io,
)
from cartd.kd.manipulate import (
    BreakpointEx,
    BusData,
    ContextEx,
    Continue,
    Continue2,
    FillMemory,
    GetContext,
    GetVersion,
    IoSpace,
    IoSpaceExtended,
    ManipulateBody,
    ManipulateMessage,
    Msr,
    QueryMemory,
    RawUnion,
    ReadMemory,
    RestoreBreakpoint,
    SearchMemory,
    SetContext,
    WriteBreakpoint,
    body_type_for,
    cause_bugcheck_request,
    continue2_request,
    continue_request,
    get_context_ex_request,
    get_context_request,
    get_version_request,
    pull_manipulate,
    push_manipulate,
    read_control_space_request,
    read_memory_reply,
    read_msr_request,
    read_physical_memory_request,
    read_virtual_memory_request,
    reboot_request,
    reply_to,
    restore_breakpoint_request,
    set_context_ex_request,
    set_context_request,
    switch_processor_request,
    write_breakpoint_request,
    write_control_space_request,
    write_msr_request,
    write_physical_memory_request,
    write_virtual_memory_request,
)
from cartd.kd.state_change import (
    REPORT_INCLUDES_SEGS,
    Amd64ControlReport,
    CommandString,
    ExceptionRecord,
    LoadSymbols,
    RawStateUnion,
    StateChangeMessage,
    pull_amd64_control_report,
    pull_state_change,
    push_amd64_control_report,
    push_state_change,
)
from cartd.kd.state_change import body_type_for as state_body_type_for

TRAILING_JUNK = b"\x01\x02\x03junk\xff"


def put(buffer: bytearray, offset: int, fmt: str, *values: Any) -> None:
    struct.pack_into("<" + fmt, buffer, offset, *values)


# --- Spec section 13: worked byte examples ------------------------------------------------------

GET_VERSION_PAYLOAD = bytes.fromhex("46310000") + bytes(52)
CONTINUE_PAYLOAD = bytes.fromhex("36310000") + bytes(12) + bytes.fromhex("02000100") + bytes(36)
READ_PHYSICAL_PAYLOAD = (
    bytes.fromhex("3d310000")
    + bytes(12)
    + bytes.fromhex("0010000000000000")  # TargetBaseAddress 0x1000 at 0x10
    + bytes.fromhex("00080000")  # TransferCount 0x800 at 0x18
    + bytes(4)  # caching 0 at 0x1C
    + bytes(0x18)
)


def test_get_version_request_vector() -> None:
    payload = push_manipulate(get_version_request(0))
    assert payload == GET_VERSION_PAYLOAD
    assert len(payload) == 0x38
    assert sum(payload) == 0x77


def test_continue_request_vector() -> None:
    payload = push_manipulate(continue_request(NtStatus.DBG_CONTINUE, 0))
    assert payload == CONTINUE_PAYLOAD
    assert len(payload) == 56
    assert sum(payload) == 0x6A
    assert push_manipulate(continue_request()) == CONTINUE_PAYLOAD


def test_read_physical_memory_request_vector() -> None:
    payload = push_manipulate(read_physical_memory_request(0x1000, 0x800, 0))
    assert payload == READ_PHYSICAL_PAYLOAD
    assert sum(payload) == 0x86


def test_read_physical_memory_reply_vector() -> None:
    request = pull_manipulate(READ_PHYSICAL_PAYLOAD)
    memory = bytes(range(256)) * 8
    reply = push_manipulate(read_memory_reply(request, memory))
    assert len(reply) == 0x38 + 0x800
    assert struct.unpack_from("<I", reply, 0x1C)[0] == 0x800
    assert reply[:4] == bytes.fromhex("3d310000")
    assert reply[0x38:] == memory


@pytest.mark.parametrize(
    ("payload", "api", "body"),
    [
        (GET_VERSION_PAYLOAD, ManipulateApi.GET_VERSION, GetVersion()),
        (CONTINUE_PAYLOAD, ManipulateApi.CONTINUE, Continue(status=NtStatus.DBG_CONTINUE)),
        (
            READ_PHYSICAL_PAYLOAD,
            ManipulateApi.READ_PHYSICAL_MEMORY,
            ReadMemory(address=0x1000, transfer_count=0x800, actual_bytes=0),
        ),
    ],
)
def test_vectors_decode(payload: bytes, api: ManipulateApi, body: ManipulateBody) -> None:
    message = pull_manipulate(payload)
    assert message.api is api
    assert message.body == body
    assert message.data == b""
    assert push_manipulate(message) == payload
    longer = pull_manipulate(payload + TRAILING_JUNK)
    assert longer.data == TRAILING_JUNK
    assert push_manipulate(longer) == payload + TRAILING_JUNK


# --- Spec section 15: facts from a real Windows 10 target ---------------------------------------


def load_symbols_payload(path: bytes, *, base: int, size: int, unload: int = 0) -> bytes:
    payload = bytearray(0xF0)
    put(payload, 0x00, "IHHI", NewState.LOAD_SYMBOLS, 6, 0, 1)
    put(payload, 0x10, "QQ", 0xFFFFF80000001000, 0x7FFF0)
    put(payload, 0x20, "I", len(path))
    put(payload, 0x28, "Q", base)
    put(payload, 0x3C, "I", size)
    put(payload, 0x40, "B", unload)
    return bytes(payload) + path


def test_real_load_symbols_winload() -> None:
    payload = load_symbols_payload(b"winload.efi\0", base=0x8F0000, size=0x1AB000)
    assert len(payload) == 252
    message = pull_state_change(payload)
    assert message.new_state is NewState.LOAD_SYMBOLS
    assert message.body == LoadSymbols(
        path_name_length=12, base_of_dll=0x8F0000, size_of_image=0x1AB000, path="winload.efi"
    )
    assert message.body == LoadSymbols.for_image(
        "winload.efi", base_of_dll=0x8F0000, size_of_image=0x1AB000
    )
    assert message.extra == b""
    assert push_state_change(message) == payload


def test_real_unload_all_symbols() -> None:
    payload = load_symbols_payload(b"", base=0xFFFFFFFFFFFFFFFF, size=0, unload=1)
    assert len(payload) == 0xF0
    message = pull_state_change(payload)
    assert message.body == LoadSymbols.unload_all()
    assert isinstance(message.body, LoadSymbols)
    assert message.body.unload is True
    assert message.body.path == ""
    assert push_state_change(message) == payload


def breakpoint_payload() -> bytes:
    payload = bytearray(0xF0)
    put(payload, 0x00, "IHHI", NewState.EXCEPTION, 6, 0, 4)
    put(payload, 0x10, "QQ", 0xFFFFF8057B2B1440, 0xFFFFF8057A610BF0)
    put(payload, 0x20, "IIQQI", 0x80000003, 0, 0, 0xFFFFF8057A610BF0, 1)
    put(payload, 0x40, "Q", 3)  # ExceptionInformation[0]
    put(payload, 0xB8, "I", 1)  # FirstChance
    put(payload, 0xC0, "QQIHH", 0xFFFF0FF0, 0x400, 0x46, 16, REPORT_INCLUDES_SEGS)
    payload[0xD8:0xE8] = b"\xcc\xc3" + bytes(range(14))
    put(payload, 0xE8, "HHHH", 0x10, 0x2B, 0x2B, 0x53)
    return bytes(payload)


def test_real_breakpoint_exception() -> None:
    payload = breakpoint_payload()
    assert len(payload) == 240
    message = pull_state_change(payload)
    assert message.new_state is NewState.EXCEPTION
    assert message.number_processors == 4
    assert message.program_counter == 0xFFFFF8057A610BF0
    assert message.body == ExceptionRecord(
        code=0x80000003, address=0xFFFFF8057A610BF0, parameters=(3,), first_chance=True
    )
    report = message.control_report
    assert report.instruction_stream[0] == 0xCC
    assert report.instruction_count == 16
    assert (report.seg_cs, report.seg_ds, report.seg_es, report.seg_fs) == (0x10, 0x2B, 0x2B, 0x53)
    assert report.dr6 == 0xFFFF0FF0 and report.dr7 == 0x400 and report.eflags == 0x46
    assert push_state_change(message) == payload


def test_real_get_version_reply_from_boot_debugger() -> None:
    payload = bytearray(0x38)
    put(payload, 0x00, "IHHI", ManipulateApi.GET_VERSION, 6, 0, 0)
    put(payload, 0x10, "HHBBHH", 0x040F, 10586, 6, 2, 0x0002, 0x8664)
    put(payload, 0x1A, "BBBB", 12, 0x32, 0x59, 0)
    put(payload, 0x20, "QQQ", 0x8F0000, 0x9A1230, 0)
    message = pull_manipulate(bytes(payload))
    assert message.body == GetVersion(
        major_version=0x040F,
        minor_version=10586,
        protocol_version=6,
        kd_secondary_version=2,
        flags=0x0002,
        machine_type=MachineType.AMD64,
        max_packet_type=12,
        max_state_change=0x32,
        max_manipulate=0x59,
        kern_base=0x8F0000,
        ps_loaded_module_list=0x9A1230,
        debugger_data_list=0,
    )
    assert push_manipulate(message) == bytes(payload)


def test_windbg_request_junk_in_output_fields_is_accepted() -> None:
    payload = bytearray(0x38)
    put(payload, 0x00, "IHHI", ManipulateApi.READ_VIRTUAL_MEMORY, 0, 1, NtStatus.PENDING)
    put(payload, 0x10, "QII", 0xFFFFF8057A200000, 0x400, 0xDEAD)
    request = pull_manipulate(bytes(payload))
    assert request.return_status == NtStatus.PENDING
    assert request.body == ReadMemory(
        address=0xFFFFF8057A200000, transfer_count=0x400, actual_bytes=0xDEAD
    )
    reply = read_memory_reply(request, b"MZ" + bytes(0x3FE))
    assert reply.return_status == NtStatus.SUCCESS
    assert reply.processor == 1
    assert reply.body == ReadMemory(
        address=0xFFFFF8057A200000, transfer_count=0x400, actual_bytes=0x400
    )
    decoded = pull_manipulate(push_manipulate(reply))
    assert decoded == reply


def test_get_context_ex_refused_then_get_context_returns_full_context() -> None:
    request = pull_manipulate(push_manipulate(get_context_ex_request(0, 0x4D0)))
    refused = pull_manipulate(
        push_manipulate(reply_to(request, return_status=NtStatus.UNSUCCESSFUL))
    )
    assert refused.api is ManipulateApi.GET_CONTEXT_EX
    assert refused.return_status == 0xC0000001
    context = with_register(bytes(AMD64_CONTEXT_SIZE), Amd64Register.RIP, 0xFFFFF8057A610BF0)
    request = pull_manipulate(push_manipulate(get_context_request(0)))
    reply = pull_manipulate(
        push_manipulate(reply_to(request, return_status=NtStatus.SUCCESS, data=context))
    )
    assert len(reply.data) == 1232
    assert read_register(reply.data, Amd64Register.RIP) == 0xFFFFF8057A610BF0


def test_read_control_space_special_registers_lengths() -> None:
    special = bytearray(KSPECIAL_REGISTERS_WINDBG_READ_SIZE)
    put(special, 0x10, "Q", 0x1AD000)
    for size in (KSPECIAL_REGISTERS_WINDBG_READ_SIZE, KSPECIAL_REGISTERS_NTOSEYE_READ_SIZE):
        request = pull_manipulate(
            push_manipulate(read_control_space_request(Amd64ControlSpace.KSPECIAL_REGISTERS, size))
        )
        assert request.body == ReadMemory(address=2, transfer_count=size)
        reply = pull_manipulate(push_manipulate(read_memory_reply(request, bytes(special[:size]))))
        assert isinstance(reply.body, ReadMemory)
        assert reply.body.actual_bytes == size
        assert read_register(reply.data, KSpecialRegister.CR3) == 0x1AD000


def test_real_print_string() -> None:
    text = b"KDTARGET: Refreshing KD connection\n"
    payload = bytearray(0x10)
    put(payload, 0, "IHHI", DebugIoApi.PRINT_STRING, 6, 0, len(text))
    payload += text
    assert len(payload) == 0x10 + len(text)
    message = pull_debug_io_from_target(bytes(payload))
    assert message == DebugIoMessage(
        api=DebugIoApi.PRINT_STRING, processor_level=6, body=PrintString(text=text)
    )
    assert push_debug_io(message) == payload
    frame = pull_debug_io(bytes(payload))
    assert frame.string == text
    assert push_debug_io(frame) == payload


# --- Manipulate: requests, replies, round trips -------------------------------------------------


def test_every_request_constructor_round_trips() -> None:
    context = with_register(bytes(AMD64_CONTEXT_SIZE), Amd64Register.CONTEXT_FLAGS, CONTEXT_FULL)
    requests = [
        (get_version_request(), ManipulateApi.GET_VERSION),
        (
            read_virtual_memory_request(0xFFFFF78000000000, 0x800, 1),
            ManipulateApi.READ_VIRTUAL_MEMORY,
        ),
        (write_virtual_memory_request(0x1000, b"\x90" * 4), ManipulateApi.WRITE_VIRTUAL_MEMORY),
        (read_physical_memory_request(0x2000, 8, caching=2), ManipulateApi.READ_PHYSICAL_MEMORY),
        (write_physical_memory_request(0x2000, b"ab"), ManipulateApi.WRITE_PHYSICAL_MEMORY),
        (get_context_request(2), ManipulateApi.GET_CONTEXT),
        (set_context_request(context), ManipulateApi.SET_CONTEXT),
        (get_context_ex_request(0x78, 0x88), ManipulateApi.GET_CONTEXT_EX),
        (set_context_ex_request(0xF8, b"\x01" * 8), ManipulateApi.SET_CONTEXT_EX),
        (read_control_space_request(2, 0xE0), ManipulateApi.READ_CONTROL_SPACE),
        (write_control_space_request(2, bytes(8)), ManipulateApi.WRITE_CONTROL_SPACE),
        (write_breakpoint_request(0xFFFFF8057A610000), ManipulateApi.WRITE_BREAKPOINT),
        (restore_breakpoint_request(7), ManipulateApi.RESTORE_BREAKPOINT),
        (continue_request(NtStatus.DBG_EXCEPTION_NOT_HANDLED), ManipulateApi.CONTINUE),
        (continue2_request(), ManipulateApi.CONTINUE2),
        (reboot_request(), ManipulateApi.REBOOT),
        (cause_bugcheck_request(), ManipulateApi.CAUSE_BUGCHECK),
        (switch_processor_request(3), ManipulateApi.SWITCH_PROCESSOR),
        (read_msr_request(0xC0000080), ManipulateApi.READ_MSR),
        (write_msr_request(0xC0000082, 0xFFFFF8057A6A1180), ManipulateApi.WRITE_MSR),
    ]
    for request, api in requests:
        assert request.api is api
        assert isinstance(request.body, body_type_for(api))
        payload = push_manipulate(request)
        assert pull_manipulate(payload) == request
        assert push_manipulate(pull_manipulate(payload)) == payload


def test_request_fields_at_spec_offsets() -> None:
    payload = push_manipulate(continue2_request(NtStatus.DBG_CONTINUE, 1, dr7=0x401))
    assert struct.unpack_from("<IHHI", payload, 0) == (ManipulateApi.CONTINUE2, 0, 1, 0)
    assert struct.unpack_from("<IIQQQ", payload, 0x10) == (0x00010002, 0, 0x401, 1, 0)

    payload = push_manipulate(write_msr_request(0xC0000082, 0x1122334455667788))
    assert struct.unpack_from("<III", payload, 0x10) == (0xC0000082, 0x55667788, 0x11223344)

    payload = push_manipulate(write_breakpoint_request(0xFFFFF8057A610000))
    assert struct.unpack_from("<QI", payload, 0x10) == (0xFFFFF8057A610000, 0)

    payload = push_manipulate(get_context_ex_request(0x78, 0x88))
    assert struct.unpack_from("<III", payload, 0x10) == (0x78, 0x88, 0)

    context = with_register(bytes(AMD64_CONTEXT_SIZE), Amd64Register.CONTEXT_FLAGS, CONTEXT_FULL)
    payload = push_manipulate(set_context_request(context))
    assert struct.unpack_from("<I", payload, 0x10) == (CONTEXT_FULL,)
    assert payload[0x38:] == context

    payload = push_manipulate(write_virtual_memory_request(0x1000, b"\xcc"))
    assert struct.unpack_from("<QII", payload, 0x10) == (0x1000, 1, 0)
    assert payload[0x38:] == b"\xcc"


def test_msr_reply_joins_low_and_high() -> None:
    payload = bytearray(0x38)
    put(payload, 0, "IHHI", ManipulateApi.READ_MSR, 6, 0, 0)
    put(payload, 0x10, "III", 0xC0000080, 0x00000D01, 0x00000001)
    assert pull_manipulate(bytes(payload)).body == Msr(msr=0xC0000080, value=0x1_00000D01)


def test_unknown_and_unmodelled_apis_decode_as_raw_union() -> None:
    union = bytes(range(0x28))
    for api in (0x3161, 0x12345678, ManipulateApi.PAGE_IN, ManipulateApi.REBOOT):
        payload = struct.pack("<IHHI4x", api, 0, 0, 0) + union + b"tail"
        message = pull_manipulate(payload)
        assert message.body == RawUnion(data=union)
        assert message.data == b"tail"
        assert push_manipulate(message) == payload
    assert type(pull_manipulate(struct.pack("<I", 0x3161) + bytes(52)).api) is int
    assert pull_manipulate(GET_VERSION_PAYLOAD).api is ManipulateApi.GET_VERSION


def test_reply_to_keeps_api_and_processor() -> None:
    request = ManipulateMessage(
        api=ManipulateApi.WRITE_BREAKPOINT,
        processor_level=6,
        processor=3,
        return_status=NtStatus.PENDING,
        body=WriteBreakpoint(address=0xFFFFF8057A610000, handle=0x55),
    )
    reply = reply_to(
        request,
        return_status=NtStatus.SUCCESS,
        body=WriteBreakpoint(address=0xFFFFF8057A610000, handle=1),
    )
    assert (reply.api, reply.processor_level, reply.processor) == (request.api, 6, 3)
    assert reply.return_status == 0
    assert reply_to(request, return_status=NtStatus.UNSUCCESSFUL).body == request.body


def test_manipulate_usage_errors() -> None:
    with pytest.raises(KdUsageError):
        push_manipulate(ManipulateMessage(api=ManipulateApi.GET_VERSION, body=Continue(status=0)))
    with pytest.raises(KdUsageError):
        push_manipulate(ManipulateMessage(api=ManipulateApi.REBOOT, body=GetContext()))
    with pytest.raises(KdUsageError):
        push_manipulate(read_virtual_memory_request(1 << 64, 8))
    with pytest.raises(KdUsageError):
        push_manipulate(write_msr_request(0xC0000080, -1))
    with pytest.raises(KdUsageError):
        push_manipulate(
            ManipulateMessage(
                api=0x3130, processor=0x10000, body=ReadMemory(address=0, transfer_count=0)
            )
        )
    with pytest.raises(KdUsageError):
        RawUnion(data=b"short")
    with pytest.raises(KdUsageError):
        write_virtual_memory_request(0, bytes(MAX_MANIPULATE_DATA + 1))
    with pytest.raises(KdUsageError):
        set_context_request(b"tiny")
    with pytest.raises(KdUsageError):
        read_memory_reply(get_context_request(), b"")


def test_manipulate_short_payload_is_a_decode_error() -> None:
    for length in (0, 1, 0x10, 0x37):
        with pytest.raises(KdDecodeError):
            pull_manipulate(bytes(length))
    assert isinstance(KdDecodeError("x"), ValueError)
    assert isinstance(KdUsageError("x"), RuntimeError)


# --- State change: robustness -------------------------------------------------------------------


def test_state_change_short_header_reads_missing_bytes_as_zero() -> None:
    payload = bytearray(0x40)
    put(payload, 0, "IHHIxxxxQQ", NewState.EXCEPTION, 6, 1, 2, 0xAAAA, 0xBBBB)
    put(payload, 0x20, "IIQQ", 0x80000004, 0, 0, 0xBBBB)
    message = pull_state_change(bytes(payload))
    assert message.processor == 1 and message.thread == 0xAAAA
    assert message.body == ExceptionRecord(
        code=0x80000004, address=0xBBBB, parameters=(), first_chance=False
    )
    assert message.control_report == Amd64ControlReport()
    assert message.extra == b""
    assert len(push_state_change(message)) == 0xF0
    minimal = struct.pack("<I", NewState.LOAD_SYMBOLS) + bytes(0x1C)
    assert pull_state_change(minimal).body == LoadSymbols(path_name_length=0, base_of_dll=0)
    assert pull_state_change(bytes(0x20)).body == RawStateUnion()
    for length in (0, 0x10, 0x1F):
        with pytest.raises(KdDecodeError):
            pull_state_change(bytes(length))


def test_alternate_flag_is_masked_for_the_body_and_kept_raw() -> None:
    payload = bytearray(breakpoint_payload())
    put(payload, 0, "I", NewState.EXCEPTION | ALTERNATE_STATE_CHANGE_FLAG)
    message = pull_state_change(bytes(payload))
    assert message.new_state == 0x13030
    assert message.kind is NewState.EXCEPTION
    assert message.is_alternate
    assert isinstance(message.body, ExceptionRecord)
    assert push_state_change(message) == payload


def test_exception_extra_and_parameter_clamp() -> None:
    trace = struct.pack("<I", 0)  # ReactOS' trace data: a count of zero
    message = pull_state_change(breakpoint_payload() + trace)
    assert message.extra == trace
    assert push_state_change(message) == breakpoint_payload() + trace

    payload = bytearray(breakpoint_payload())
    put(payload, 0x38, "I", 0xFFFFFFFF)  # junk NumberParameters
    body = pull_state_change(bytes(payload)).body
    assert isinstance(body, ExceptionRecord)
    assert len(body.parameters) == 15
    with pytest.raises(KdUsageError):
        ExceptionRecord(code=0, address=0, parameters=tuple(range(16))).to_union()


def test_load_symbols_extra_and_odd_lengths() -> None:
    payload = load_symbols_payload(b"\\SystemRoot\\system32\\hal.dll\0", base=0x1000, size=0x2000)
    message = pull_state_change(payload + TRAILING_JUNK)
    assert isinstance(message.body, LoadSymbols)
    assert message.body.path == "\\SystemRoot\\system32\\hal.dll"
    assert message.extra == TRAILING_JUNK
    assert push_state_change(message) == payload + TRAILING_JUNK

    # PathNameLength longer than what arrived: the path is what is there, nothing raises.
    truncated = load_symbols_payload(b"abc", base=0, size=0)
    truncated = truncated[:0x20] + struct.pack("<I", 100) + truncated[0x24:]
    message = pull_state_change(truncated)
    assert isinstance(message.body, LoadSymbols)
    assert (message.body.path, message.body.path_name_length, message.extra) == ("abc", 100, b"")

    # Bytes after the NUL inside the path region are padding, not part of the path.
    padded = load_symbols_payload(b"nt\0\0\0", base=0, size=0)
    body = pull_state_change(padded).body
    assert isinstance(body, LoadSymbols) and body.path == "nt"
    assert push_state_change(pull_state_change(padded)) == padded

    # Non-ASCII bytes decode as latin-1 instead of failing.
    body = pull_state_change(load_symbols_payload(b"\xe9\xff\0", base=0, size=0)).body
    assert isinstance(body, LoadSymbols) and body.path == "\xe9\xff"


def test_load_symbols_usage_errors() -> None:
    def push(body: LoadSymbols) -> bytes:
        return push_state_change(StateChangeMessage(new_state=NewState.LOAD_SYMBOLS, body=body))

    with pytest.raises(KdUsageError):
        push(LoadSymbols(path_name_length=3, base_of_dll=0, path="abc"))  # no room for the NUL
    with pytest.raises(KdUsageError):
        push(LoadSymbols(path_name_length=0, base_of_dll=0, path="abc"))
    with pytest.raises(KdUsageError):
        push(LoadSymbols(path_name_length=5000, base_of_dll=0, path="abc"))
    with pytest.raises(KdUsageError):
        LoadSymbols.for_image("\u20ac.sys", base_of_dll=0, size_of_image=0)
    with pytest.raises(KdUsageError):
        push(LoadSymbols(path_name_length=4, base_of_dll=0, path="a\0b"))


def test_command_string() -> None:
    payload = bytearray(0xF0)
    put(payload, 0, "IHHI", NewState.COMMAND_STRING, 6, 0, 1)
    put(payload, 0x20, "I", 7)
    exact = bytes(payload) + b"kd\0.reload\0"
    message = pull_state_change(exact)
    assert message.body == CommandString(flags=7, name="kd", command=".reload")
    assert message.extra == b""
    assert push_state_change(message) == exact
    longer = pull_state_change(exact + TRAILING_JUNK)
    assert longer.extra == TRAILING_JUNK
    assert push_state_change(longer) == exact + TRAILING_JUNK
    unterminated = pull_state_change(bytes(payload) + b"name-only")
    assert unterminated.body == CommandString(flags=7, name="name-only", command="")


def test_unknown_new_state_keeps_raw_union() -> None:
    payload = bytearray(breakpoint_payload())
    put(payload, 0, "I", 0x3099)
    message = pull_state_change(bytes(payload) + TRAILING_JUNK)
    assert message.new_state == 0x3099 and type(message.new_state) is int
    assert message.body == RawStateUnion(data=bytes(payload[0x20:0xC0]))
    assert message.extra == TRAILING_JUNK
    assert push_state_change(message) == bytes(payload) + TRAILING_JUNK


def test_state_change_usage_errors() -> None:
    with pytest.raises(KdUsageError):
        push_state_change(
            StateChangeMessage(new_state=NewState.EXCEPTION, body=LoadSymbols.unload_all())
        )
    with pytest.raises(KdUsageError):
        Amd64ControlReport(instruction_stream=b"\xcc")
    with pytest.raises(KdUsageError):
        RawStateUnion(data=bytes(10))
    with pytest.raises(KdUsageError):
        push_state_change(
            StateChangeMessage(
                new_state=NewState.COMMAND_STRING, body=CommandString(name="a\0", command="")
            )
        )


def test_control_report_alone() -> None:
    raw = breakpoint_payload()[0xC0:0xF0]
    report = pull_amd64_control_report(raw)
    assert push_amd64_control_report(report) == raw
    assert pull_amd64_control_report(raw + TRAILING_JUNK) == report
    with pytest.raises(KdDecodeError):
        pull_amd64_control_report(raw[:-1])


# --- Debug I/O ----------------------------------------------------------------------------------


def debug_io_payload(api: int, length: int, length_read: int, data: bytes) -> bytes:
    return struct.pack("<IHHII", api, 6, 1, length, length_read) + data


def test_get_string_prompt_and_reply() -> None:
    prompt = b"Break, Ignore, Terminate Process or Terminate Thread (bipt)? "
    payload = debug_io_payload(DebugIoApi.GET_STRING, len(prompt), 80, prompt)
    message = pull_debug_io_from_target(payload)
    assert message == get_string_message(prompt, 80, processor=1, processor_level=6)
    assert message.body == GetString(prompt=prompt, max_reply_length=80)
    assert push_debug_io(message) == payload

    reply = get_string_reply_message(b"i", processor=1)
    reply_payload = push_debug_io(reply)
    assert struct.unpack_from("<IHHII", reply_payload) == (0x3231, 0, 1, 0, 1)
    assert reply_payload[0x10:] == b"i"
    assert pull_debug_io_from_host(reply_payload) == reply
    frame = pull_debug_io(reply_payload)
    assert (frame.length_of_string_read, frame.string_read) == (1, b"i")


def test_debug_io_lengths_never_raise() -> None:
    # Longer than the string: the string is the END of the payload; the frame keeps it all.
    payload = debug_io_payload(DebugIoApi.PRINT_STRING, 5, 0, b"\0\0\0hello")
    assert pull_debug_io_from_target(payload).body == PrintString(text=b"hello")
    assert pull_debug_io(payload).data == b"\0\0\0hello"
    assert push_debug_io(pull_debug_io(payload)) == payload
    # Shorter than LengthOfString says: clamp to what is there.
    payload = debug_io_payload(DebugIoApi.PRINT_STRING, 1000, 0, b"hi")
    assert pull_debug_io_from_target(payload).body == PrintString(text=b"hi")
    payload = debug_io_payload(DebugIoApi.GET_STRING, 0, 0xFFFFFFFF, b"answer")
    assert pull_debug_io_from_host(payload).body == GetStringReply(text=b"answer")
    for length in (0, 1, 15):
        with pytest.raises(KdDecodeError):
            pull_debug_io(bytes(length))


def test_unknown_debug_io_api() -> None:
    payload = debug_io_payload(0x3299, 1, 2, b"xyz")
    for pull in (pull_debug_io_from_target, pull_debug_io_from_host):
        message = pull(payload)
        assert message.api == 0x3299 and type(message.api) is int
        assert message.body == UnknownDebugIo(
            length_of_string=1, length_of_string_read=2, data=b"xyz"
        )
        assert push_debug_io(message) == payload


def test_debug_io_usage_errors() -> None:
    with pytest.raises(KdUsageError):
        push_debug_io(DebugIoMessage(api=0, body=PrintString(text=b"x")))
    with pytest.raises(KdUsageError):
        push_debug_io(DebugIoMessage(api=DebugIoApi.PRINT_STRING, body=GetStringReply(text=b"")))
    with pytest.raises(KdUsageError):
        push_debug_io(DebugIoMessage(api=DebugIoApi.GET_STRING, body=UnknownDebugIo()))
    with pytest.raises(KdUsageError):
        push_debug_io(DebugIoFrame(api=DebugIoApi.PRINT_STRING, length_of_string=-1))
    assert print_string_message(b"x").api is DebugIoApi.PRINT_STRING


# --- File I/O -----------------------------------------------------------------------------------


def create_file_payload(name: str) -> bytes:
    payload = bytearray(0x40)
    put(payload, 0, "II", FileIoApi.CREATE_FILE, 0)
    put(payload, 0x08, "IIIII", 0x80100080, 0x80, 1, 1, 0x20)
    put(payload, 0x20, "QQ", 0, 0)
    return bytes(payload) + name.encode("utf-16-le") + b"\0\0"


def test_create_file_request_and_no_such_file_reply() -> None:
    name = "\\SystemRoot\\system32\\drivers\\ntfs.sys"
    payload = create_file_payload(name)
    request = pull_file_io(payload)
    assert request.api is FileIoApi.CREATE_FILE
    assert request.body == CreateFile(
        desired_access=0x80100080,
        file_attributes=0x80,
        share_access=1,
        create_disposition=1,
        create_options=0x20,
        file_name=name,
    )
    assert request.file_name == name
    assert request.data == b""
    assert push_file_io(request) == payload

    longer = pull_file_io(payload + TRAILING_JUNK)
    assert longer.data == TRAILING_JUNK
    assert push_file_io(longer) == payload + TRAILING_JUNK

    reply = no_such_file_reply(request)
    assert len(reply) == 0x40
    assert struct.unpack_from("<II", reply) == (0x3430, 0xC000000F)
    assert reply[8:] == bytes(0x38)
    assert pull_file_io(reply).status == NtStatus.NO_SUCH_FILE


def test_other_file_io_apis() -> None:
    cases: list[tuple[int, Any]] = [
        (FileIoApi.READ_FILE, ReadFile(handle=5, offset=0x1000, length=0x800)),
        (FileIoApi.WRITE_FILE, WriteFile(handle=5, offset=0, length=3)),
        (FileIoApi.CLOSE_FILE, CloseFile(handle=5)),
        (0x3499, RawFileIo(data=bytes(range(0x38)))),
    ]
    for api, body in cases:
        message = FileIoMessage(api=api, status=0, body=body, data=b"abc")
        payload = push_file_io(message)
        assert pull_file_io(payload) == message
        assert push_file_io(pull_file_io(payload)) == payload
        assert pull_file_io(payload).file_name is None
        assert no_such_file_reply(message)[:4] == struct.pack("<I", api)
    payload = push_file_io(FileIoMessage(api=FileIoApi.READ_FILE, body=cases[0][1]))
    assert struct.unpack_from("<QQI", payload, 8) == (5, 0x1000, 0x800)


def test_file_io_robustness_and_usage_errors() -> None:
    for length in (0, 8, 0x3F):
        with pytest.raises(KdDecodeError):
            pull_file_io(bytes(length))
    # Unterminated, odd-length name: decoded with a replacement character, never raising.
    message = pull_file_io(create_file_payload("")[:0x40] + b"a\0b")
    assert message.file_name == "a\ufffd"
    with pytest.raises(KdUsageError):
        push_file_io(
            FileIoMessage(api=FileIoApi.CLOSE_FILE, body=ReadFile(handle=0, offset=0, length=0))
        )
    with pytest.raises(KdUsageError):
        push_file_io(FileIoMessage(api=FileIoApi.CREATE_FILE, body=CreateFile(file_name="a\0")))
    with pytest.raises(KdUsageError):
        push_file_io(FileIoMessage(api=FileIoApi.CREATE_FILE, body=CreateFile(file_name="\ud800")))
    with pytest.raises(KdUsageError):
        RawFileIo(data=b"")


# --- Context ------------------------------------------------------------------------------------


def test_context_flag_values() -> None:
    assert CONTEXT_AMD64 == 0x00100000
    assert (CONTEXT_CONTROL, CONTEXT_INTEGER, CONTEXT_SEGMENTS) == (0x100001, 0x100002, 0x100004)
    assert (CONTEXT_FLOATING_POINT, CONTEXT_DEBUG_REGISTERS) == (0x100008, 0x100010)
    assert CONTEXT_FULL == 0x10000B
    assert CONTEXT_ALL == 0x10001F
    assert AMD64_CONTEXT_SIZE == 1232
    assert [member.value for member in Amd64ControlSpace] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("register", "offset", "fmt"),
    [
        (Amd64Register.CONTEXT_FLAGS, 0x30, "I"),
        (Amd64Register.MX_CSR, 0x34, "I"),
        (Amd64Register.SEG_CS, 0x38, "H"),
        (Amd64Register.SEG_SS, 0x42, "H"),
        (Amd64Register.EFLAGS, 0x44, "I"),
        (Amd64Register.DR0, 0x48, "Q"),
        (Amd64Register.DR7, 0x70, "Q"),
        (Amd64Register.RAX, 0x78, "Q"),
        (Amd64Register.RCX, 0x80, "Q"),
        (Amd64Register.RSP, 0x98, "Q"),
        (Amd64Register.R8, 0xB8, "Q"),
        (Amd64Register.R15, 0xF0, "Q"),
        (Amd64Register.RIP, 0xF8, "Q"),
        (Amd64Register.FLT_CONTROL_WORD, 0x100, "H"),
        (Amd64Register.FLT_MX_CSR, 0x118, "I"),
        (Amd64Register.FLT_MX_CSR_MASK, 0x11C, "I"),
        (KSpecialRegister.CR0, 0x00, "Q"),
        (KSpecialRegister.CR3, 0x10, "Q"),
        (KSpecialRegister.KERNEL_DR2, 0x30, "Q"),
        (KSpecialRegister.KERNEL_DR7, 0x48, "Q"),
        (KSpecialRegister.GDTR_LIMIT, 0x56, "H"),
        (KSpecialRegister.GDTR_BASE, 0x58, "Q"),
        (KSpecialRegister.IDTR_LIMIT, 0x66, "H"),
        (KSpecialRegister.TR, 0x70, "H"),
        (KSpecialRegister.LDTR, 0x72, "H"),
        (KSpecialRegister.MX_CSR, 0x74, "I"),
        (KSpecialRegister.CR8, 0xA0, "Q"),
        (KSpecialRegister.MSR_GS_BASE, 0xA8, "Q"),
        (KSpecialRegister.XCR0, 0xD8, "Q"),
        (KSpecialRegister.MSR_FS_BASE, 0xE0, "Q"),
    ],
)
def test_register_offsets(
    register: Amd64Register | KSpecialRegister, offset: int, fmt: str
) -> None:
    value = (1 << (8 * struct.calcsize(fmt))) - 2
    block = bytearray(AMD64_CONTEXT_SIZE)
    put(block, offset, fmt, value)
    assert read_register(bytes(block), register) == value
    updated = with_register(bytes(AMD64_CONTEXT_SIZE), register, value)
    assert updated == bytes(block)


def test_with_register_keeps_other_bytes_and_checks_ranges() -> None:
    context = bytes(range(256)) * 4 + bytes(AMD64_CONTEXT_SIZE - 1024)
    updated = with_register(context, Amd64Register.RIP, 0x1234)
    assert updated[:0xF8] == context[:0xF8] and updated[0x100:] == context[0x100:]
    assert read_register(updated, Amd64Register.RIP) == 0x1234
    with pytest.raises(KdUsageError):
        with_register(context, Amd64Register.SEG_CS, 0x10000)
    with pytest.raises(KdUsageError):
        with_register(context, Amd64Register.RAX, -1)
    with pytest.raises(KdDecodeError):
        read_register(bytes(0xFF), Amd64Register.RIP)
    with pytest.raises(KdDecodeError):
        with_register(bytes(0x10), KSpecialRegister.CR3, 0)
    # A KSPECIAL_REGISTERS value equal to a CONTEXT offset must still read 8 bytes.
    special = struct.pack("<7Q", 0, 0, 0, 0, 0, 0, 0xAABBCCDD11223344)
    assert read_register(special, KSpecialRegister.KERNEL_DR2) == 0xAABBCCDD11223344
    # ...and widths go both ways: Tr (u16) shares 0x70 with Dr7 (u64).
    assert KSpecialRegister.TR == Amd64Register.DR7
    block = bytearray(b"\xff" * KSPECIAL_REGISTERS_SIZE)
    pack_register(block, KSpecialRegister.TR, 0x40)
    assert block[0x70:0x78] == b"\x40\x00" + b"\xff" * 6
    assert read_register(block, Amd64Register.DR7) == 0xFFFFFFFFFFFF0040


# --- Property tests: round trips ----------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)
ansi_text = st.text(st.characters(min_codepoint=1, max_codepoint=0xFF), max_size=40)

MANIPULATE_BODIES: dict[type[Any], st.SearchStrategy[Any]] = {
    ReadMemory: st.builds(ReadMemory, address=u64, transfer_count=u32, actual_bytes=u32),
    GetContext: st.just(GetContext()),
    SetContext: st.builds(SetContext, context_flags=u32),
    ContextEx: st.builds(ContextEx, offset=u32, byte_count=u32, bytes_copied=u32),
    WriteBreakpoint: st.builds(WriteBreakpoint, address=u64, handle=u32),
    RestoreBreakpoint: st.builds(RestoreBreakpoint, handle=u32),
    Continue: st.builds(Continue, status=u32),
    Continue2: st.builds(
        Continue2, status=u32, trace_flag=u32, dr7=u64, symbol_start=u64, symbol_end=u64
    ),
    GetVersion: st.builds(
        GetVersion,
        major_version=u16,
        minor_version=u16,
        protocol_version=u8,
        kd_secondary_version=u8,
        flags=u16,
        machine_type=u16,
        max_packet_type=u8,
        max_state_change=u8,
        max_manipulate=u8,
        simulation=u8,
        unused=u16,
        kern_base=u64,
        ps_loaded_module_list=u64,
        debugger_data_list=u64,
    ),
    Msr: st.builds(Msr, msr=u32, value=u64),
    IoSpace: st.builds(IoSpace, address=u64, data_size=u32, data_value=u32),
    IoSpaceExtended: st.builds(
        IoSpaceExtended,
        data_size=u32,
        interface_type=u32,
        bus_number=u32,
        address_space=u32,
        address=u64,
        data_value=u32,
    ),
    BreakpointEx: st.builds(BreakpointEx, breakpoint_count=u32, continue_status=u32),
    SearchMemory: st.builds(SearchMemory, address=u64, length=u64, pattern_length=u32),
    BusData: st.builds(
        BusData, bus_data_type=u32, bus_number=u32, slot_number=u32, offset=u32, length=u32
    ),
    FillMemory: st.builds(FillMemory, address=u64, length=u32, flags=u16, pattern_length=u16),
    QueryMemory: st.builds(QueryMemory, address=u64, reserved=u64, address_space=u32, flags=u32),
    RawUnion: st.binary(min_size=0x28, max_size=0x28).map(lambda data: RawUnion(data=data)),
}


def test_every_manipulate_body_has_a_strategy() -> None:
    assert {body_type_for(api) for api in ManipulateApi} | {RawUnion} == set(MANIPULATE_BODIES)


@st.composite
def manipulate_messages(draw: st.DrawFn) -> ManipulateMessage:
    api = draw(st.one_of(st.sampled_from(list(ManipulateApi)), u32))
    return ManipulateMessage(
        api=api,
        processor_level=draw(u16),
        processor=draw(u16),
        return_status=draw(u32),
        body=draw(MANIPULATE_BODIES[body_type_for(api)]),
        data=draw(st.binary(max_size=64)),
    )


@given(manipulate_messages())
def test_manipulate_round_trip(message: ManipulateMessage) -> None:
    payload = push_manipulate(message)
    assert len(payload) == 0x38 + len(message.data)
    assert pull_manipulate(payload) == message
    assert push_manipulate(pull_manipulate(payload)) == payload


control_reports = st.builds(
    Amd64ControlReport,
    dr6=u64,
    dr7=u64,
    eflags=u32,
    instruction_count=u16,
    report_flags=u16,
    instruction_stream=st.binary(min_size=16, max_size=16),
    seg_cs=u16,
    seg_ds=u16,
    seg_es=u16,
    seg_fs=u16,
)


@st.composite
def load_symbols_bodies(draw: st.DrawFn) -> LoadSymbols:
    path = draw(ansi_text)
    if not path and draw(st.booleans()):
        path_name_length = 0
    else:
        path_name_length = len(path) + 1 + draw(st.integers(0, 4))
    return LoadSymbols(
        path_name_length=path_name_length,
        base_of_dll=draw(u64),
        process_id=draw(u64),
        checksum=draw(u32),
        size_of_image=draw(u32),
        unload=draw(st.booleans()),
        path=path,
    )


STATE_BODIES: dict[int, st.SearchStrategy[Any]] = {
    NewState.EXCEPTION: st.builds(
        ExceptionRecord,
        code=u32,
        flags=u32,
        record=u64,
        address=u64,
        parameters=st.lists(u64, max_size=15).map(tuple),
        first_chance=st.booleans(),
    ),
    NewState.LOAD_SYMBOLS: load_symbols_bodies(),
    NewState.COMMAND_STRING: st.builds(CommandString, flags=u32, name=ansi_text, command=ansi_text),
}


@st.composite
def state_change_messages(draw: st.DrawFn) -> StateChangeMessage:
    new_state = draw(st.one_of(st.sampled_from(list(NewState)), u32))
    if draw(st.booleans()):
        new_state |= ALTERNATE_STATE_CHANGE_FLAG
    kind = new_state & ~ALTERNATE_STATE_CHANGE_FLAG
    raw_unions = st.binary(min_size=0xA0, max_size=0xA0).map(lambda data: RawStateUnion(data=data))
    return StateChangeMessage(
        new_state=new_state,
        processor_level=draw(u16),
        processor=draw(u16),
        number_processors=draw(u32),
        thread=draw(u64),
        program_counter=draw(u64),
        body=draw(STATE_BODIES.get(kind, raw_unions)),
        control_report=draw(control_reports),
        extra=draw(st.binary(max_size=32)),
    )


@given(state_change_messages())
def test_state_change_round_trip(message: StateChangeMessage) -> None:
    payload = push_state_change(message)
    assert len(payload) >= 0xF0
    assert payload.endswith(message.extra)
    assert pull_state_change(payload) == message
    assert push_state_change(pull_state_change(payload)) == payload


@given(control_reports)
def test_control_report_round_trip(report: Amd64ControlReport) -> None:
    raw = push_amd64_control_report(report)
    assert len(raw) == 0x30
    assert pull_amd64_control_report(raw) == report


@st.composite
def target_debug_io_messages(draw: st.DrawFn) -> DebugIoMessage:
    body = draw(
        st.one_of(
            st.builds(PrintString, text=st.binary(max_size=64)),
            st.builds(GetString, prompt=st.binary(max_size=64), max_reply_length=u32),
        )
    )
    api = DebugIoApi.PRINT_STRING if isinstance(body, PrintString) else DebugIoApi.GET_STRING
    return DebugIoMessage(api=api, processor_level=draw(u16), processor=draw(u16), body=body)


@given(target_debug_io_messages())
def test_debug_io_from_target_round_trip(message: DebugIoMessage) -> None:
    payload = push_debug_io(message)
    assert pull_debug_io_from_target(payload) == message
    assert push_debug_io(pull_debug_io_from_target(payload)) == payload


@given(st.binary(max_size=64), u16, u16)
def test_debug_io_from_host_round_trip(text: bytes, level: int, processor: int) -> None:
    message = get_string_reply_message(text, processor=processor, processor_level=level)
    payload = push_debug_io(message)
    assert pull_debug_io_from_host(payload) == message


@given(
    st.builds(
        DebugIoFrame,
        api=u32,
        processor_level=u16,
        processor=u16,
        length_of_string=u32,
        length_of_string_read=u32,
        data=st.binary(max_size=64),
    )
)
def test_debug_io_frame_round_trip(frame: DebugIoFrame) -> None:
    payload = push_debug_io(frame)
    assert pull_debug_io(payload) == frame
    assert push_debug_io(pull_debug_io(payload)) == payload


file_names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40)
FILE_BODIES: dict[int, st.SearchStrategy[Any]] = {
    FileIoApi.CREATE_FILE: st.builds(
        CreateFile,
        desired_access=u32,
        file_attributes=u32,
        share_access=u32,
        create_disposition=u32,
        create_options=u32,
        handle=u64,
        length=u64,
        file_name=file_names,
    ),
    FileIoApi.READ_FILE: st.builds(ReadFile, handle=u64, offset=u64, length=u32),
    FileIoApi.WRITE_FILE: st.builds(WriteFile, handle=u64, offset=u64, length=u32),
    FileIoApi.CLOSE_FILE: st.builds(CloseFile, handle=u64),
}


@st.composite
def file_io_messages(draw: st.DrawFn) -> FileIoMessage:
    api = draw(st.one_of(st.sampled_from(list(FileIoApi)), u32))
    raw = st.binary(min_size=0x38, max_size=0x38).map(lambda data: RawFileIo(data=data))
    return FileIoMessage(
        api=api,
        status=draw(u32),
        body=draw(FILE_BODIES.get(api, raw)),
        data=draw(st.binary(max_size=32)),
    )


@given(file_io_messages())
def test_file_io_round_trip(message: FileIoMessage) -> None:
    payload = push_file_io(message)
    assert pull_file_io(payload) == message
    assert push_file_io(pull_file_io(payload)) == payload


def register_bits(register: Amd64Register | KSpecialRegister) -> int:
    if isinstance(register, KSpecialRegister):
        if register.name.endswith("_LIMIT") or register.name in ("TR", "LDTR"):
            return 16
        return 32 if register.name == "MX_CSR" else 64
    if register.name.startswith("SEG_") or register.name == "FLT_CONTROL_WORD":
        return 16
    if register.name in ("CONTEXT_FLAGS", "EFLAGS") or "MX_CSR" in register.name:
        return 32
    return 64


@given(st.sampled_from([*Amd64Register, *KSpecialRegister]), u64)
def test_register_round_trip(register: Amd64Register | KSpecialRegister, value: int) -> None:
    bits = register_bits(register)
    context = bytes(AMD64_CONTEXT_SIZE)
    if value >> bits:
        with pytest.raises(KdUsageError):
            with_register(context, register, value)
        return
    updated = with_register(context, register, value)
    assert len(updated) == AMD64_CONTEXT_SIZE
    assert read_register(updated, register) == value


# --- Property tests: arbitrary bytes ------------------------------------------------------------
# The single invariant: any bytes either decode or raise KdDecodeError, and whatever decodes
# re-encodes to bytes that decode to the same message (decoding normalises, it never loses
# track). Only a LoadSymbols PathNameLength too large for a packet cannot be re-encoded.

Pull = Callable[[bytes], Any]
Push = Callable[[Any], bytes]
DECODERS: list[tuple[Pull, Push | None]] = [
    (pull_manipulate, push_manipulate),
    (pull_state_change, push_state_change),
    (pull_debug_io, push_debug_io),
    (pull_debug_io_from_target, push_debug_io),
    (pull_debug_io_from_host, push_debug_io),
    (pull_file_io, push_file_io),
    (pull_amd64_control_report, push_amd64_control_report),
    (lambda raw: read_register(raw, Amd64Register.RIP), None),
    (lambda raw: read_register(raw, KSpecialRegister.CR3), None),
]


@pytest.mark.parametrize(("pull", "push"), DECODERS)
@settings(max_examples=300)
@given(raw=st.one_of(st.binary(max_size=400), st.binary(min_size=0x38, max_size=0x40)))
def test_arbitrary_bytes_decode_or_raise_decode_error(
    pull: Pull, push: Push | None, raw: bytes
) -> None:
    try:
        decoded = pull(raw)
    except KdDecodeError:
        return
    if push is None:
        return
    try:
        again = push(decoded)
    except KdUsageError:
        assert isinstance(decoded, StateChangeMessage)
        assert isinstance(decoded.body, LoadSymbols)
        assert decoded.body.path_name_length > 4000 - 0xF0
        return
    assert pull(again) == decoded


@given(raw=st.binary(min_size=0xF0, max_size=0x130), new_state=st.sampled_from(list(NewState)))
def test_arbitrary_state_change_bodies(raw: bytes, new_state: NewState) -> None:
    payload = struct.pack("<I", new_state) + raw[4:]
    decoded = pull_state_change(payload)
    assert isinstance(decoded.body, state_body_type_for(new_state))
    try:
        again = push_state_change(decoded)
    except KdUsageError:
        assert isinstance(decoded.body, LoadSymbols)
        return
    assert pull_state_change(again) == decoded


@given(raw=st.binary(min_size=0x38, max_size=0x60), api=st.sampled_from(list(ManipulateApi)))
def test_arbitrary_manipulate_bodies(raw: bytes, api: ManipulateApi) -> None:
    payload = struct.pack("<I", api) + raw[4:]
    decoded = pull_manipulate(payload)
    assert decoded.api is api
    assert isinstance(decoded.body, body_type_for(api))
    assert pull_manipulate(push_manipulate(decoded)) == decoded


@given(raw=st.binary(min_size=0x10, max_size=0x60), api=st.sampled_from(list(DebugIoApi)))
def test_arbitrary_debug_io_bodies(raw: bytes, api: DebugIoApi) -> None:
    payload = struct.pack("<I", api) + raw[4:]
    for pull in (pull_debug_io_from_target, pull_debug_io_from_host):
        decoded = pull(payload)
        assert decoded.api is api
        assert pull(push_debug_io(decoded)) == decoded


@given(raw=st.binary(min_size=0x40, max_size=0x80), api=st.sampled_from(list(FileIoApi)))
def test_arbitrary_file_io_bodies(raw: bytes, api: FileIoApi) -> None:
    payload = struct.pack("<I", api) + raw[4:]
    decoded = pull_file_io(payload)
    assert pull_file_io(push_file_io(decoded)) == decoded
