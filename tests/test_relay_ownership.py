"""One owner at a time through the KD relay, and both hops in step whatever the remote does.

Each test runs the daemon in this process against the simulator on a pty, and remote debuggers
as separate processes (tests/remote_kd_host.py: cartd's own HOST core) or as raw TCP clients
that misbehave on purpose. After every disturbance (attaching while stopped or running, leaving
in the middle of a request, being killed, being refused, being taken over, going silent) a
remote debugger must find the target where it was and read memory that matches the simulator,
and neither side may see a reply it did not ask for (`unexpected_reply`) or a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from daemon_harness import (
    EventWatch,
    InProcessDaemon,
    PtySim,
    daemon_in_process,
    load_test_config,
    point,
    start_sim,
    write_config,
)
from relay_support import RemoteHost

from cartd import events as ev
from cartd.control.client import ControlClient
from cartd.kd.constants import INITIAL_PACKET_ID, PacketType
from cartd.kd.debug_io import pull_debug_io
from cartd.kd.framing import (
    KdPacket,
    PacketDecoded,
    PacketDecoder,
    encode_control_packet,
    encode_data_packet,
)
from cartd.kd.manipulate import push_manipulate, read_virtual_memory_request
from cartd.sim.target import Scenario

QUIET_PRINTS = Scenario(print_interval=0.5, module_interval=None)
# Noise counters that would mean a request was answered twice, or an answer went astray. (A
# stray ACK is not an answer: RESETs crossing packets in flight make a few, on any KD link.)
WRONG_ANSWERS = ("unexpected_reply", "duplicate")


@dataclass
class Relayed:
    sim: PtySim
    daemon: InProcessDaemon
    watch: EventWatch
    target: str
    port: int

    @property
    def tcp(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    async def status(self) -> dict[str, object]:
        async with await ControlClient.connect(self.daemon.socket_path) as client:
            status = await client.call("status")
        (target,) = [t for t in status["targets"] if t["target"] == self.target]
        assert isinstance(target, dict)
        return target

    async def owner_is(self, owner: str, *, after: int = 0, timeout: float = 20.0) -> int:
        """Where the journal says a remote debugger ("remote": any) took the target."""
        at, _ = await self.watch.wait_type(
            ev.OwnerChanged,
            self.target,
            after=after,
            timeout=timeout,
            where=lambda e: e.owner == owner or (owner != "cartd" and e.owner != "cartd"),
        )
        return at

    async def owner_back(self, *, after: int, timeout: float = 20.0) -> tuple[int, ev.OwnerChanged]:
        """Where (and why) the daemon took the target back after index `after`."""
        at, back = await self.watch.wait_type(
            ev.OwnerChanged,
            self.target,
            after=after,
            timeout=timeout,
            where=lambda e: e.owner == "cartd",
        )
        assert isinstance(back, ev.OwnerChanged)
        return at, back

    def memory(self, address: int, size: int) -> bytes:
        return self.sim.target.machine.read_virtual(address, size)


@contextlib.asynccontextmanager
async def relayed(
    tmp_path: Path,
    scenario: Scenario = QUIET_PRINTS,
    *,
    noise: float = 0.0,
    silence: float = 30,
    device: Path | None = None,
    dump_on_bugcheck: str = "none",
) -> AsyncIterator[Relayed]:
    """A daemon with the simulator on its serial port: the pty's slave, or `device`, a
    symlink to it that a test can unplug and plug back."""
    sim = start_sim(scenario, seed=5, baud=None, noise=noise)
    if device is not None:
        point(device, sim.slave_path)
    config_path = write_config(
        tmp_path / "cartd.toml",
        ports=[str(device or sim.slave_path)],
        dump_on_bugcheck=dump_on_bugcheck,
        relay_silence_seconds=silence,
        active_probe=[str(device)] if device is not None else (),
    )
    config = load_test_config(config_path, tmp_path / "state")
    target = device.name if device is not None else "pts-" + sim.slave_path.rsplit("/", 1)[1]
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await watch.wait_type(ev.TargetConnected, target, timeout=30)
                async with await ControlClient.connect(daemon.socket_path) as client:
                    info = await client.call("attach_info", target=target)
                yield Relayed(sim, daemon, watch, target, int(info["port"]))
            finally:
                await watch.close()
    finally:
        sim.close()


async def _no_wrong_answers(remote: RemoteHost, relayed_target: Relayed) -> None:
    noise = (await remote.must("noise"))["noise"]
    assert not {kind: noise[kind] for kind in WRONG_ANSWERS if kind in noise}, noise
    daemon_noise = (await relayed_target.status())["noise"]
    assert isinstance(daemon_noise, dict)
    assert not {k: v for k, v in daemon_noise.items() if k in WRONG_ANSWERS}, daemon_noise


async def test_attach_while_running_then_another_attaches_while_stopped(tmp_path: Path) -> None:
    """The first debugger breaks into a running target; it leaves the target stopped, and the
    next one is given the pending stop when it RESETs (no break-in needed), reads, continues."""
    async with relayed(tmp_path) as relay:
        kernel = relay.sim.target.machine.kernel_base
        first = await RemoteHost.start(relay.tcp)
        try:
            mark = await relay.owner_is("remote")
            await first.must("attach", break_in=True)
            stop = await first.must("wait_stop", timeout=30)
            assert stop["reason"] == "break_in"
            assert await first.read("virtual", kernel, 512) == relay.memory(kernel, 512)
        finally:
            await first.exit()
        at, back = await relay.owner_back(after=mark + 1)
        assert back.reason == "the remote debugger disconnected", back
        await relay.watch.wait_type(
            ev.Stopped, relay.target, where=lambda e: e.reason == "break_in"
        )
        assert (await relay.status())["state"] == "stopped"  # left stopped, and said so

        second = await RemoteHost.start(relay.tcp)
        try:
            await relay.owner_is("remote", after=at + 1)
            await second.must("attach", break_in=False)
            again = await second.must("wait_stop", timeout=30)
            assert (again["reason"], again["pc"]) == (stop["reason"], stop["pc"])
            version = await second.must("version")
            assert version["kern_base"] == kernel
            assert await second.read("virtual", kernel, 3944) == relay.memory(kernel, 3944)
            await second.must("continue")
            await relay.watch.wait_type(ev.Running, relay.target, timeout=20)
            await asyncio.sleep(1.5)
            prints = (await second.must("prints"))["prints"]
            assert any("heartbeat" in line for line in prints), prints
            await _no_wrong_answers(second, relay)
        finally:
            await second.exit()
        await relay.owner_back(after=at + 1)
        assert (await relay.status())["state"] == "running"


async def test_a_second_debugger_is_refused_until_it_takes_over(tmp_path: Path) -> None:
    async with relayed(tmp_path) as relay:
        kernel = relay.sim.target.machine.kernel_base
        first = await RemoteHost.start(relay.tcp)
        try:
            mark = await relay.owner_is("remote")
            await first.must("attach", break_in=False)

            # A second connection gets one DbgPrint that says why, then the connection closes.
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            said = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            text = _printed(said)
            assert "refused" in text and "cartd take-over" in text and relay.target in text, text
            _, refused = await relay.watch.wait_type(ev.RemoteRefused, relay.target)
            assert "owned by" in refused.reason

            # The control command disconnects the owner and keeps the relay for the asker.
            async with await ControlClient.connect(relay.daemon.socket_path) as client:
                taken = await client.call("take_over", target=relay.target)
            assert taken["previous"] is not None and taken["seconds"] > 0
            at, back = await relay.owner_back(after=mark + 1)
            assert back.reason.startswith("taken over by"), back
        finally:
            await first.kill()

        second = await RemoteHost.start(relay.tcp)
        try:
            await relay.owner_is("remote", after=at + 1)
            await second.must("attach", break_in=True)
            assert (await second.must("wait_stop", timeout=30))["reason"] == "break_in"
            assert await second.read("virtual", kernel, 1000) == relay.memory(kernel, 1000)
            await second.must("continue")
            await _no_wrong_answers(second, relay)
        finally:
            await second.exit()


async def test_leaving_mid_request_or_being_killed_leaves_both_hops_in_step(
    tmp_path: Path,
) -> None:
    async with relayed(tmp_path) as relay:
        kernel = relay.sim.target.machine.kernel_base
        first = await RemoteHost.start(relay.tcp)
        mark = await relay.owner_is("remote")
        await first.must("attach", break_in=True)
        stop = await first.must("wait_stop", timeout=30)
        # Killed while a large read is on its way: the reply comes back to nobody.
        first.send("read_virtual", address=kernel, size=3944)
        await asyncio.sleep(0.01)
        await first.kill()
        at, _ = await relay.owner_back(after=mark + 1)

        # A raw client sends a read and hangs up before the answer.
        _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        request = push_manipulate(read_virtual_memory_request(kernel + 0x1000, 3944))
        writer.write(encode_data_packet(PacketType.KD_STATE_MANIPULATE, INITIAL_PACKET_ID, request))
        await writer.drain()
        writer.close()
        at = await relay.owner_is("remote", after=at + 1)
        at, _ = await relay.owner_back(after=at + 1)
        assert (await relay.status())["state"] == "stopped"

        second = await RemoteHost.start(relay.tcp)
        try:
            await second.must("attach", break_in=False)
            again = await second.must("wait_stop", timeout=30)
            assert again["pc"] == stop["pc"]
            for offset in (0, 0x1000, 0x2000):
                got = await second.read("virtual", kernel + offset, 3944)
                assert got == relay.memory(kernel + offset, 3944), offset
            await second.must("continue")
            await relay.watch.wait_type(ev.Running, relay.target, timeout=20)
            await _no_wrong_answers(second, relay)
        finally:
            await second.exit()


async def test_a_silent_debugger_loses_the_target(tmp_path: Path) -> None:
    """A connection that never acknowledges what it is sent (a hung tunnel) is let go after
    silence_seconds; the target kept running all along."""
    async with relayed(tmp_path, silence=2) as relay:
        _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            mark = await relay.owner_is("remote")
            _, back = await relay.owner_back(after=mark + 1, timeout=30)
            assert "stopped answering" in back.reason, back
            assert (await relay.status())["state"] == "running"
        finally:
            writer.close()


async def test_remote_reads_match_through_a_noisy_serial_line(tmp_path: Path) -> None:
    """1% of the target's packets damaged on the serial hop: the daemon's KD core recovers,
    and what the remote debugger reads is still exactly the target's memory."""
    async with relayed(tmp_path, noise=0.01) as relay:
        kernel = relay.sim.target.machine.kernel_base
        remote = await RemoteHost.start(relay.tcp)
        try:
            await relay.owner_is("remote")
            await remote.must("attach", break_in=True)
            await remote.must("wait_stop", timeout=60)
            for page in range(12):
                address = kernel + page * 0x1000
                got = await remote.read("virtual", address, 3944)
                assert got == relay.memory(address, 3944), hex(address)
            await remote.must("continue")
            await _no_wrong_answers(remote, relay)
        finally:
            await remote.exit()


async def test_an_attached_debugger_sees_its_target_through_a_replug_and_a_reboot(
    tmp_path: Path, dev_link: Path
) -> None:
    """The relay outlives the link: a read asked while the cable is out is answered once it
    is back (the target reports the same stop again), and a reboot reaches the debugger as
    packets with the sync bit, as on a real cable."""
    async with relayed(tmp_path, device=dev_link) as relay:
        kernel = relay.sim.target.machine.kernel_base
        remote = await RemoteHost.start(relay.tcp)
        try:
            await relay.owner_is("remote")
            await remote.must("attach", break_in=True)
            await remote.must("wait_stop", timeout=30)

            relay.sim.unplug()
            dev_link.unlink()
            at, _ = await relay.watch.wait_type(ev.LinkDown, f"serial:{dev_link}", timeout=15)
            remote.send("read_virtual", address=kernel + 0x2000, size=2048)
            await asyncio.sleep(1.0)
            point(dev_link, relay.sim.replug())
            await relay.watch.wait_type(ev.LinkUp, f"serial:{dev_link}", after=at, timeout=30)
            answer = await remote._line(60.0)
            assert bytes.fromhex(answer["data"]) == relay.memory(kernel + 0x2000, 2048), answer

            await remote.must("reboot")
            await relay.watch.wait_type(ev.TargetRebooted, relay.target, timeout=30)
            at, _ = await relay.watch.wait_type(ev.TargetRebooted, relay.target)
            await relay.watch.wait_type(
                ev.DebugPrint, relay.target, after=at, where=lambda e: "heartbeat" in e.text
            )
            await asyncio.sleep(1.0)
            seen = await remote.must("prints")
            assert seen["rebooted"] >= 1, seen
            # The new boot's own messages reach it.
            assert any("kernel debugger initialised" in line for line in seen["prints"]), seen
            # Still the owner, and the new boot answers it.
            await remote.must("break")
            assert (await remote.must("wait_stop", timeout=30))["reason"] == "break_in"
            new_kernel = relay.sim.target.machine.kernel_base
            assert (await remote.must("version"))["kern_base"] == new_kernel
            await remote.must("continue")
            await _no_wrong_answers(remote, relay)
        finally:
            await remote.exit()


async def test_a_bugcheck_goes_to_the_remote_debugger_and_its_dump_is_written_when_it_leaves(
    tmp_path: Path,
) -> None:
    """While a remote debugger owns the target, a bugcheck is its to handle: the daemon records
    it but writes no dump. When the debugger leaves the target held in the bugcheck, the daemon
    takes over and writes the dump its policy wants; the target stays stopped."""
    scenario = Scenario(print_interval=0.5, module_interval=None, bugcheck_after=2.0)
    async with relayed(tmp_path, scenario, dump_on_bugcheck="triage") as relay:
        remote = await RemoteHost.start(relay.tcp)
        try:
            mark = await relay.owner_is("remote")
            await remote.must("attach", break_in=False)
            stop = await remote.must("wait_stop", timeout=60)
            assert stop["reason"] == "bugcheck_first", stop
            assert stop["bugcheck"]["code"] == scenario.bugcheck_code
            _, recorded = await relay.watch.wait_type(ev.Bugcheck, relay.target, after=mark)
            assert recorded.code == scenario.bugcheck_code
            await asyncio.sleep(1.0)
            assert not [e for e in relay.watch.of(relay.target) if isinstance(e, ev.DumpStarted)]
        finally:
            await remote.exit()
        at, _ = await relay.owner_back(after=mark + 1)
        _, written = await relay.watch.wait_type(
            ev.DumpWritten, relay.target, after=at, timeout=120
        )
        assert written.pages > 0 and Path(written.path).exists()
        assert (await relay.status())["state"] == "bugchecked"


async def test_a_client_that_floods_requests_is_let_go(tmp_path: Path) -> None:
    """Requests sent without waiting for the answers (no KD debugger does that) are not let
    pile up in front of the target: the client is disconnected, and a real debugger that
    comes next finds the target stopped where it was and reads it correctly."""
    async with relayed(tmp_path) as relay:
        kernel = relay.sim.target.machine.kernel_base
        first = await RemoteHost.start(relay.tcp)
        try:
            await first.must("attach", break_in=True)
            stop = await first.must("wait_stop", timeout=30)
        finally:
            await first.exit()
        mark = len(relay.watch.events)
        _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            # ACK the stop the relay presents (its first packet: the initial id with the sync
            # bit, ACKed without it), then fire requests with the ids it expects in turn.
            flood = [encode_control_packet(PacketType.KD_ACKNOWLEDGE, INITIAL_PACKET_ID)]
            request = push_manipulate(read_virtual_memory_request(kernel, 3944))
            for number in range(12):
                packet_id = INITIAL_PACKET_ID ^ (number & 1)
                flood.append(encode_data_packet(PacketType.KD_STATE_MANIPULATE, packet_id, request))
            writer.write(b"".join(flood))
            await writer.drain()
            _, back = await relay.owner_back(after=mark, timeout=30)
            assert "without waiting for the answers" in back.reason, back
        finally:
            writer.close()
        second = await RemoteHost.start(relay.tcp)
        try:
            await second.must("attach", break_in=False)
            assert (await second.must("wait_stop", timeout=30))["pc"] == stop["pc"]
            assert await second.read("virtual", kernel, 3944) == relay.memory(kernel, 3944)
            await second.must("continue")
            await _no_wrong_answers(second, relay)
        finally:
            await second.exit()


async def test_a_prompt_goes_to_the_remote_debugger_and_is_answered_when_it_leaves(
    tmp_path: Path,
) -> None:
    """A DbgPrompt while a remote debugger owns the target is that debugger's to answer. One
    that leaves without answering does not leave the target waiting for ever: the daemon
    answers it as it answers any prompt (the configured line), and journals the answer."""
    async with relayed(tmp_path) as relay:
        remote = await RemoteHost.start(relay.tcp)
        try:
            mark = await relay.owner_is("remote")
            await remote.must("attach", break_in=False)
            target = relay.sim.target
            # The simulated kernel asks its debugger for a line (it waits for the answer).
            target.kd.send_prompt(b"cartd test prompt: ", 32, asyncio.get_running_loop().time())
            await asyncio.sleep(2.0)  # the remote debugger has it, and does not answer
            assert not [e for e in relay.watch.of(relay.target) if isinstance(e, ev.Prompt)]
        finally:
            await remote.exit()
        at, _ = await relay.owner_back(after=mark + 1)
        # Answered as the daemon takes the target back (journaled just before that).
        _, prompt = await relay.watch.wait_type(ev.Prompt, relay.target, after=mark)
        assert (prompt.prompt, prompt.answer) == ("cartd test prompt: ", "")
        # The target got its answer and runs on: its heartbeats come again.
        await relay.watch.wait_type(
            ev.DebugPrint, relay.target, after=at, where=lambda e: "heartbeat" in e.text
        )


def _printed(wire: bytes) -> str:
    """The text of the DbgPrint packets in a serial KD byte stream."""
    decoder = PacketDecoder()
    text = []
    for event in decoder.receive_data(wire, 0.0):
        if (
            isinstance(event, PacketDecoded)
            and isinstance(event.packet, KdPacket)
            and event.packet.packet_type == PacketType.KD_DEBUG_IO
        ):
            text.append(pull_debug_io(event.packet.payload).string.decode())
    return "".join(text)
