"""The KD probe on real pseudo-terminals: the simulator, a fake console, silence and unplugs.

The probe opens the pty slave as it would open /dev/ttyUSB0; the far end (the pty master) is
the target's side of the cable. Every test that must not write checks what the far end received.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import serial

from cartd.kd.constants import PacketType
from cartd.kd.framing import (
    KdPacket,
    PacketDecoded,
    PacketDecoder,
    encode_control_packet,
    encode_data_packet,
)
from cartd.links.probe import explain_open_error, probe_serial
from cartd.links.streams import FdStream, LinkClosed, open_pty_pair, open_serial
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.serve import SimServer
from cartd.sim.target import Scenario, SimulatedTarget

LISTEN = 0.25
QUIET = Scenario(print_interval=None, module_interval=None)


class RecordingStream:
    """The far end of the cable, remembering every byte that reached it from the probe."""

    def __init__(self, inner: FdStream) -> None:
        self.inner = inner
        self.received = bytearray()

    async def read(self) -> bytes:
        data = await self.inner.read()
        self.received += data
        return data

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    async def drain(self) -> None:
        await self.inner.drain()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
async def far_end() -> AsyncIterator[tuple[RecordingStream, str]]:
    """A pty: the recorded master (the target's end) and the slave path to probe. A task reads
    the master throughout, so that anything the probe writes is seen."""
    master, slave_path = open_pty_pair()
    recording = RecordingStream(master)

    async def drain_forever() -> None:
        with contextlib.suppress(LinkClosed):
            while True:
                await recording.read()

    reader = asyncio.create_task(drain_forever())
    yield recording, slave_path
    await asyncio.sleep(0.05)  # let anything still in flight arrive before the check
    reader.cancel()
    master.close()


def simulated_target(scenario: Scenario, *, ack_timeout: float) -> SimulatedTarget:
    machine = SimulatedMachine(MachineConfig(seed=5, memory_size_bytes=1 << 30))
    return SimulatedTarget(machine, scenario, seed=5, ack_timeout=ack_timeout)


def decode_all(data: bytes) -> list[KdPacket]:
    events = PacketDecoder().receive_data(data, 0.0)
    return [event.packet for event in events if isinstance(event, PacketDecoded)]


async def test_a_talking_target_is_kd_and_its_first_bytes_are_kept() -> None:
    master, slave_path = open_pty_pair()
    recording = RecordingStream(master)
    target = simulated_target(Scenario(), ack_timeout=1.0)
    server = SimServer(target, baud=115200)  # paced: packets trickle in 64-byte slices
    attached = server.attach(recording)
    try:
        probe = asyncio.create_task(
            probe_serial(slave_path, [115200, 57600], listen_seconds=2.0, active=False)
        )
        await asyncio.sleep(0.05)  # the probe has opened the port (which flushes stale input)
        server.start()  # the target boots and announces itself with a DbgPrint
        result = await probe
    finally:
        server.close()
        attached.cancel()
    assert result.result == "kd", result
    assert result.baud == 115200
    assert re.fullmatch(r"\d+ valid KD packets? at 115200 baud", result.detail), result.detail
    # Nothing lost: the bytes start with the first packet's leader and decode to the boot print.
    assert result.initial_bytes.startswith(b"0000")
    first = decode_all(result.initial_bytes)[0]
    assert first.packet_type == PacketType.KD_DEBUG_IO
    assert b"cartd simulated target" in first.payload
    assert recording.received == b""
    assert target.kd.noise_counters == {}


async def test_a_packet_arriving_as_listening_ends_is_waited_for(
    far_end: tuple[RecordingStream, str],
) -> None:
    recording, slave_path = far_end
    packet = encode_data_packet(PacketType.KD_DEBUG_IO, 0x80800800, b"x" * 200)
    probe = asyncio.create_task(
        probe_serial(slave_path, [115200], listen_seconds=LISTEN, active=False)
    )
    await asyncio.sleep(LISTEN - 0.1)
    recording.write(packet[:100])
    await asyncio.sleep(0.2)  # the rest comes after the listening time is up
    recording.write(packet[100:])
    result = await probe
    assert result.result == "kd", result
    assert result.initial_bytes == packet


async def test_a_port_opened_half_way_through_a_packet_starts_at_the_next_one(
    far_end: tuple[RecordingStream, str],
) -> None:
    """The tail of a packet that was on its way when the port was opened is not handed on: the
    daemon's core would count it as line noise on a clean line."""
    recording, slave_path = far_end
    packet = encode_data_packet(PacketType.KD_DEBUG_IO, 0x80800800, b"a build of bits\n" * 4)
    probe = asyncio.create_task(
        probe_serial(slave_path, [115200], listen_seconds=LISTEN, active=False)
    )
    await asyncio.sleep(0.05)
    recording.write(packet[-31:])  # the tail (it holds break-in bytes: "b")
    await asyncio.sleep(0.05)
    recording.write(packet)  # sent again: no ACK came
    result = await probe
    assert result.result == "kd", result
    assert result.detail == "1 valid KD packet at 115200 baud"
    assert result.initial_bytes == packet


async def test_a_quiet_target_answers_the_active_probe() -> None:
    master, slave_path = open_pty_pair()
    # Short ACK timeouts so that the boot packets nobody acknowledges are given up quickly.
    target = simulated_target(QUIET, ack_timeout=0.02)
    server = SimServer(target)
    attached = server.attach(master)
    try:
        server.start()
        async with asyncio.timeout(10):
            while target.kd.debugger_present or not target.kd.idle:
                await asyncio.sleep(0.01)
        # Now it runs and says nothing: the passive phase hears silence at both rates.
        result = await probe_serial(slave_path, [115200, 57600], listen_seconds=LISTEN, active=True)
    finally:
        server.close()
        attached.cancel()
    assert result.result == "kd", result
    assert result.baud == 115200
    assert result.detail.endswith("at 115200 baud in answer to a break-in and RESET")
    assert decode_all(result.initial_bytes)
    assert target.stopped  # the break-in byte stopped it, as it would stop Windows


async def test_a_console_is_not_kd_and_is_never_written_to(
    far_end: tuple[RecordingStream, str],
) -> None:
    recording, slave_path = far_end
    console = (
        b"[    0.000000] Linux version 6.1.0-18-amd64\r\n"
        b"[    0.004000] x86/fpu: Supporting XSAVE feature 0x001\r\n"
        b"\r\nDebian GNU/Linux 12 server ttyS0\r\n\r\nserver login: "
    )

    async def chatter() -> None:
        while True:
            recording.write(console)
            await asyncio.sleep(0.02)

    writer = asyncio.create_task(chatter())
    try:
        # active=True on purpose: a port that speaks something else is never woken.
        result = await probe_serial(slave_path, [115200, 9600], listen_seconds=LISTEN, active=True)
    finally:
        writer.cancel()
    assert result.result == "not_kd", result
    assert result.baud in (115200, 9600)
    assert re.fullmatch(
        r"[\d,]+ bytes of non-KD data at \d+ baud, [\d,]+ at \d+ "
        r"\(a console or another protocol\?\)",
        result.detail,
    ), result.detail
    assert b"server login: " in result.initial_bytes
    await asyncio.sleep(0.05)
    assert recording.received == b""


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p[:40] + bytes([p[40] ^ 0x04]) + p[41:], id="flipped-bit"),
        pytest.param(lambda p: p[:40] + p[41:], id="dropped-byte"),
    ],
)
async def test_a_kd_packet_damaged_by_line_noise_is_kd(
    far_end: tuple[RecordingStream, str], damage: Callable[[bytes], bytes]
) -> None:
    """On a noisy line the only packet heard may be damaged: a KD packet all the same (a
    console would be left alone for a minute), which the daemon's core has sent again."""
    recording, slave_path = far_end
    packet = encode_data_packet(PacketType.KD_DEBUG_IO, 0x80800800, b"x" * 60)
    probe = asyncio.create_task(
        probe_serial(slave_path, [115200], listen_seconds=LISTEN, active=False)
    )
    await asyncio.sleep(0.05)
    recording.write(damage(packet))
    result = await probe
    assert decode_all(damage(packet)) == []
    assert result.result == "kd", result
    assert result.detail == "1 KD packet damaged by line noise (none intact) at 115200 baud"
    assert result.initial_bytes == damage(packet)
    await asyncio.sleep(0.05)
    assert recording.received == b""


async def test_silence_without_active_probing_writes_nothing(
    far_end: tuple[RecordingStream, str],
) -> None:
    recording, slave_path = far_end
    result = await probe_serial(slave_path, [115200, 57600], listen_seconds=LISTEN, active=False)
    assert result.result == "silent"
    assert result.baud is None
    assert result.detail == "no bytes in 0.5 s at any rate (115200 or 57600 baud)"
    await asyncio.sleep(0.05)
    assert recording.received == b""


async def test_silence_with_active_probing_sends_one_break_in_and_a_reset(
    far_end: tuple[RecordingStream, str],
) -> None:
    recording, slave_path = far_end
    result = await probe_serial(slave_path, [115200], listen_seconds=LISTEN, active=True)
    assert result.result == "silent"
    assert result.detail == (
        "no bytes in 0.25 s at any rate (115200 baud), "
        "and no answer to a break-in and RESET at 115200 baud"
    )
    await asyncio.sleep(0.05)
    assert recording.received == b"b" + encode_control_packet(PacketType.KD_RESET, 0)


async def test_a_missing_device_is_an_error(tmp_path: Path) -> None:
    device = str(tmp_path / "ttyUSB0")
    result = await probe_serial(device, [115200], listen_seconds=LISTEN, active=True)
    assert result.result == "error"
    assert result.baud is None
    assert result.detail == f"{device}: no such device (unplugged, or a wrong name?)"


async def test_a_device_unplugged_while_probing_is_an_error() -> None:
    master, slave_path = open_pty_pair()
    probe = asyncio.create_task(
        probe_serial(slave_path, [115200], listen_seconds=5.0, active=False)
    )
    await asyncio.sleep(0.05)
    master.close()  # the far side hangs up, as an unplugged USB adapter does
    result = await asyncio.wait_for(probe, 2.0)
    assert result.result == "error"
    assert result.detail.startswith(f"{slave_path} vanished while probing at 115200 baud")


async def test_a_port_held_by_another_program_is_an_error() -> None:
    master, slave_path = open_pty_pair()
    holder = open_serial(slave_path, 115200)  # takes the exclusive lock, like a terminal program
    try:
        result = await probe_serial(slave_path, [115200], listen_seconds=LISTEN, active=False)
    finally:
        holder.close()
        master.close()
    assert result.result == "error"
    assert result.detail.startswith(f"{slave_path}: in use by another program")


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any device")
async def test_a_port_without_permission_says_which_group_to_join() -> None:
    master, slave_path = open_pty_pair()
    os.chmod(slave_path, 0)
    try:
        result = await probe_serial(slave_path, [115200], listen_seconds=LISTEN, active=False)
    finally:
        master.close()
    assert result.result == "error"
    assert re.fullmatch(
        rf"{re.escape(slave_path)}: permission denied: add user \S+ to the \S+ group",
        result.detail,
    ), result.detail


def test_permission_denied_explains_the_group(tmp_path: Path) -> None:
    """The same explanation as above, for test runs as root: an open failure as pyserial
    reports it, with the errno kept on its exception."""
    device = tmp_path / "ttyUSB0"
    device.write_bytes(b"")
    try:
        try:
            raise serial.SerialException(errno.EACCES, f"could not open port {device}")
        except serial.SerialException as cause:
            raise LinkClosed(f"cannot open {device}: {cause}") from cause
    except LinkClosed as error:
        reason = explain_open_error(str(device), error)
    assert re.fullmatch(
        rf"{re.escape(str(device))}: permission denied: add user \S+ to the \S+ group", reason
    ), reason
