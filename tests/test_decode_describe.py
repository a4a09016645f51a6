"""`describe_packet`: the one-line meaning of KD packets the real captures do not contain."""

from __future__ import annotations

from cartd.decode.describe import describe_noise, describe_packet, quote, status_name
from cartd.kd.constants import FileIoApi, ManipulateApi, NtStatus, PacketType
from cartd.kd.context import AMD64_CONTEXT_SIZE, Amd64Register, with_register
from cartd.kd.debug_io import get_string_message, get_string_reply_message, push_debug_io
from cartd.kd.file_io import CreateFile, FileIoMessage, push_file_io
from cartd.kd.framing import KdPacket, NoiseDetected, NoiseKind
from cartd.kd.manipulate import (
    ManipulateMessage,
    RawUnion,
    WriteBreakpoint,
    continue_request,
    get_context_request,
    push_manipulate,
    read_memory_reply,
    read_msr_request,
    read_virtual_memory_request,
    reply_to,
    write_breakpoint_request,
    write_virtual_memory_request,
)
from cartd.kd.state_change import (
    CommandString,
    LoadSymbols,
    StateChangeMessage,
    push_state_change,
)


def manipulate(message: ManipulateMessage, packet_id: int = 0x80000000) -> KdPacket:
    return KdPacket(PacketType.KD_STATE_MANIPULATE, packet_id, push_manipulate(message))


def test_memory_read_request_and_reply() -> None:
    request = read_virtual_memory_request(0xFFFFF80012345000, 240)
    described = describe_packet(manipulate(request), from_target=False)
    assert described.text == "ReadVirtualMemory 0xfffff80012345000 240 bytes"
    assert described.api == "ReadVirtualMemory" and described.type == "STATE_MANIPULATE"
    assert described.fields["address"] == "0xfffff80012345000"
    assert "bytes_read" not in described.fields  # junk in a request
    reply = read_memory_reply(request, bytes(200), return_status=NtStatus.UNSUCCESSFUL)
    described = describe_packet(manipulate(reply), from_target=True)
    assert described.text == (
        "ReadVirtualMemory 0xfffff80012345000 240 bytes -> STATUS_UNSUCCESSFUL (0xc0000001)"
    )
    assert described.fields["bytes_read"] == 200
    ok = describe_packet(manipulate(read_memory_reply(request, bytes(240))), from_target=True)
    assert ok.text.endswith("-> 240 bytes read")


def test_other_manipulate_apis() -> None:
    write = write_virtual_memory_request(0x1000, b"\xcc")
    assert describe_packet(manipulate(write), from_target=False).text == (
        "WriteVirtualMemory 0x1000 1 bytes"
    )
    breakpoint_reply = reply_to(
        write_breakpoint_request(0xFFFFF80000002000),
        return_status=0,
        body=WriteBreakpoint(address=0xFFFFF80000002000, handle=7),
    )
    assert describe_packet(manipulate(breakpoint_reply), from_target=True).text == (
        "WriteBreakpoint 0xfffff80000002000 -> handle 7"
    )
    assert describe_packet(manipulate(continue_request()), from_target=False).text == (
        "Continue status DBG_CONTINUE (0x00010002)"
    )
    msr = reply_to(read_msr_request(0xC0000082), return_status=0)
    assert describe_packet(manipulate(msr), from_target=True).text == "ReadMsr 0xc0000082 -> 0x0"
    context = with_register(bytes(AMD64_CONTEXT_SIZE), Amd64Register.RIP, 0xFFFFF80000003000)
    context_reply = reply_to(get_context_request(), return_status=0, data=context)
    assert describe_packet(manipulate(context_reply), from_target=True).text == (
        "GetContext -> 1232-byte CONTEXT, rip 0xfffff80000003000 rsp 0x0"
    )
    unknown = ManipulateMessage(api=0x31FF, body=RawUnion())
    assert describe_packet(manipulate(unknown), from_target=False).text == "Api0x31ff"
    reboot = ManipulateMessage(api=ManipulateApi.REBOOT, body=RawUnion())
    assert describe_packet(manipulate(reboot), from_target=False).api == "Reboot"


def test_state_changes() -> None:
    command = StateChangeMessage(new_state=0x3032, body=CommandString(name="kd", command=".reboot"))
    packet = KdPacket(PacketType.KD_STATE_CHANGE64, 4, push_state_change(command))
    assert describe_packet(packet, from_target=True).text == (
        "CommandString 'kd': '.reboot', CPU 0 of 1"
    )
    unload = StateChangeMessage(new_state=0x3031, body=LoadSymbols.unload_all())
    packet = KdPacket(PacketType.KD_STATE_CHANGE64, 6, push_state_change(unload))
    described = describe_packet(packet, from_target=True)
    assert described.api == "UnloadSymbols"
    assert described.text.startswith("UnloadSymbols everything")


def test_debug_io_prompt_and_answer() -> None:
    prompt = push_debug_io(get_string_message(b"Break, Ignore? ", 512))
    described = describe_packet(KdPacket(PacketType.KD_DEBUG_IO, 8, prompt), from_target=True)
    assert described.text == 'DbgPrompt "Break, Ignore? " (answer up to 512 bytes)'
    answer = push_debug_io(get_string_reply_message(b"i\n"))
    described = describe_packet(KdPacket(PacketType.KD_DEBUG_IO, 8, answer), from_target=False)
    assert described.text == 'DbgPrompt answer "i\\n"'


def test_file_io_request_and_reply() -> None:
    request = FileIoMessage(
        api=FileIoApi.CREATE_FILE, body=CreateFile(file_name="\\Windows\\system32\\kdnet.dll")
    )
    packet = KdPacket(PacketType.KD_FILE_IO, 10, push_file_io(request))
    described = describe_packet(packet, from_target=True)
    assert described.text == 'CreateFile "\\Windows\\system32\\kdnet.dll"'
    assert described.fields["file_name"] == "\\Windows\\system32\\kdnet.dll"
    reply = FileIoMessage(
        api=FileIoApi.CREATE_FILE,
        status=NtStatus.SUCCESS,
        body=CreateFile(handle=0x44, length=4096),
    )
    packet = KdPacket(PacketType.KD_FILE_IO, 0x80000010, push_file_io(reply))
    assert describe_packet(packet, from_target=False).text == (
        "CreateFile -> handle 0x44, length 4096"
    )


def test_control_packets_short_payloads_and_noise() -> None:
    ack = describe_packet(
        KdPacket(PacketType.KD_ACKNOWLEDGE, 0x80000002, b"", True), from_target=True
    )
    assert (ack.type, ack.id, ack.text) == ("ACK", 0x80000002, "ACK id 0x80000002")
    short = describe_packet(
        KdPacket(PacketType.KD_STATE_MANIPULATE, 2, b"\x30\x31"), from_target=None
    )
    assert short.text.startswith("STATE_MANIPULATE, undecodable payload: manipulate payload needs")
    trace = describe_packet(KdPacket(PacketType.KD_TRACE_IO, 2, b"abc"), from_target=True)
    assert trace.text == "TRACE_IO, 3 bytes"
    noise = describe_noise(NoiseDetected(NoiseKind.BAD_CHECKSUM, 1))
    assert noise.text == "not a KD packet: bad checksum, 1 byte"


def test_quote_and_status_names() -> None:
    assert quote(b'say "hi"\r\n\x00\xff C:\\x') == '"say \\"hi\\"\\r\\n\\x00\\xff C:\\x"'
    assert status_name(0xC000000F) == "STATUS_NO_SUCH_FILE (0xc000000f)"
    assert status_name(0x10001) == "DBG_EXCEPTION_HANDLED (0x00010001)"
    assert status_name(0x12345678) == "0x12345678"
