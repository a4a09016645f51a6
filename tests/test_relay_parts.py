"""The KD relay's parts on their own: splitting reads for a KDNET hop, the TARGET role's
packets passed on as they are, stable ports, who is connected, the [relay] config, and the
warning when the relay is not on the loopback address."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from daemon_harness import LogCapture, daemon_in_process, load_test_config, write_config

from cartd.config import ConfigError, RelayConfig, load_config
from cartd.daemon.peer_identity import tcp_peer, user_name
from cartd.daemon.relay_ports import RelayPorts
from cartd.kd.constants import ManipulateApi, NtStatus, PacketType
from cartd.kd.debug_io import print_string_message, push_debug_io
from cartd.kd.framing import PacketDecoded, PacketDecoder
from cartd.kd.manipulate import (
    ManipulateMessage,
    ReadMemory,
    read_memory_reply,
    read_virtual_memory_request,
    write_virtual_memory_request,
)
from cartd.kd.relay_plans import relay
from cartd.kd.target import KdTarget

MEMORY = bytes(range(256)) * 64  # 16 KiB at BASE
BASE = 0xFFFFF80000000000


def _serve(plan: object, *, unreadable_from: int | None = None) -> tuple[object, list[int]]:
    """Run a relay plan against a memory that answers reads (and writes) piece by piece;
    the plan's result and the sizes of the pieces asked."""
    assert hasattr(plan, "send")
    sizes: list[int] = []
    request = plan.send(None)
    try:
        while True:
            body = request.body
            assert isinstance(body, ReadMemory)
            sizes.append(body.transfer_count)
            offset = body.address - BASE
            if request.api == ManipulateApi.WRITE_VIRTUAL_MEMORY:
                answer = replace(body, actual_bytes=len(request.data))
                reply = replace(request, body=answer, data=b"")
            else:
                end = offset + body.transfer_count
                if unreadable_from is not None:
                    end = min(end, unreadable_from)
                data = MEMORY[offset:end]
                status = NtStatus.SUCCESS if len(data) == body.transfer_count else 0xC0000001
                reply = read_memory_reply(request, data, return_status=status)
            request = plan.send(reply)
    except StopIteration as done:
        return done.value, sizes


def test_a_read_larger_than_the_hop_allows_is_split_and_answered_as_one() -> None:
    request = read_virtual_memory_request(BASE + 8, 3944)
    result, sizes = _serve(relay(request, 1360))
    assert sizes == [1360, 1360, 1224]
    assert isinstance(result, ManipulateMessage)
    assert result.return_status == NtStatus.SUCCESS
    assert isinstance(result.body, ReadMemory)
    assert (result.body.address, result.body.transfer_count) == (BASE + 8, 3944)
    assert result.body.actual_bytes == 3944
    assert result.data == MEMORY[8 : 8 + 3944]


def test_a_split_read_stops_where_the_target_stops_reading() -> None:
    request = read_virtual_memory_request(BASE, 3944)
    result, sizes = _serve(relay(request, 1360), unreadable_from=2000)
    assert sizes == [1360, 1360]  # the second piece came back short: no third
    assert isinstance(result, ManipulateMessage) and isinstance(result.body, ReadMemory)
    assert result.data == MEMORY[:2000] and result.body.actual_bytes == 2000
    assert result.return_status != NtStatus.SUCCESS  # a short read says so


def test_a_large_write_is_split_too() -> None:
    request = write_virtual_memory_request(BASE, bytes(3000))
    result, sizes = _serve(relay(request, 1360))
    assert sizes == [1360, 1360, 280]
    assert isinstance(result, ManipulateMessage) and isinstance(result.body, ReadMemory)
    assert result.body.actual_bytes == 3000 and result.return_status == NtStatus.SUCCESS


def test_a_request_that_fits_goes_out_as_it_came() -> None:
    request = read_virtual_memory_request(BASE, 1360)
    plan = relay(request, 1360)
    assert plan.send(None) is request


def test_the_target_role_sends_a_relayed_packet_byte_for_byte() -> None:
    endpoint = KdTarget()
    payload = push_debug_io(print_string_message(b"hello\n", processor=1)) + b"\x00trailing"
    assert endpoint.send_packet(PacketType.KD_DEBUG_IO, payload, 0.0)
    (decoded,) = PacketDecoder().receive_data(endpoint.data_to_send(), 0.0)
    assert isinstance(decoded, PacketDecoded)
    assert decoded.packet.payload == payload
    assert endpoint.unanswered_since == 0.0


def test_prints_a_slow_debugger_has_not_taken_are_dropped_oldest_first() -> None:
    endpoint = KdTarget()
    for number in range(10):
        payload = push_debug_io(print_string_message(f"line {number}\n".encode()))
        endpoint.send_packet(PacketType.KD_DEBUG_IO, payload, 0.0)
    assert endpoint.queued == 9  # one is on its way
    assert endpoint.drop_queued_prints(keep=4) == 5
    assert endpoint.queued == 4


def test_relay_ports_are_stable_across_restarts_and_fixed_ones_win(tmp_path: Path) -> None:
    ports = RelayPorts(tmp_path, first_port=6000, fixed={"db-07": 6001})
    assert ports.port_for("kdnet-50000") == 6000
    assert ports.port_for("db-07") == 6001
    assert ports.port_for("ttyUSB0") == 6002  # 6001 is someone's
    again = RelayPorts(tmp_path, first_port=6000, fixed={"db-07": 6001})
    assert again.port_for("ttyUSB0") == 6002
    assert again.port_for("kdnet-50000") == 6000
    assert set(again.known_targets()) == {"db-07", "kdnet-50000", "ttyUSB0"}


def test_a_damaged_ports_file_only_means_ports_are_chosen_again(tmp_path: Path) -> None:
    (tmp_path / "relay-ports.json").write_text("{not json")
    ports = RelayPorts(tmp_path, first_port=6000, fixed={})
    assert ports.port_for("ttyUSB0") == 6000
    assert RelayPorts(tmp_path, first_port=6000, fixed={}).port_for("ttyUSB0") == 6000


def test_the_user_behind_a_local_tcp_connection_is_known() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            accepted, address = server.accept()
            with accepted:
                peer = tcp_peer(accepted.getsockname(), address)
            assert peer.uid == os.getuid()
            assert peer.user == user_name(os.getuid())
            assert peer.address == f"tcp 127.0.0.1:{client.getsockname()[1]}"


def test_the_relay_section_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cartd.toml"
    path.write_text(
        textwrap.dedent("""\
        [relay]
        bind = "0.0.0.0"
        first_port = 7000
        silence_seconds = 5
        ports = { "kdnet-50000" = 7100 }
        """)
    )
    relay_config = load_config(path).relay
    assert relay_config == RelayConfig(
        bind="0.0.0.0", first_port=7000, silence_seconds=5.0, ports={"kdnet-50000": 7100}
    )
    assert not relay_config.loopback_only
    assert RelayConfig().loopback_only


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[relay]\nbind = "localhost"\n', "expected an IP address"),
        ('[relay]\nports = { "a b" = 7000 }\n', "expected a target id"),
        ('[relay]\nports = { "a" = 70000 }\n', "not a TCP port"),
        ('[relay]\nports = { "a" = 7000, "b" = 7000 }\n', "port 7000 is given to two targets"),
    ],
)
def test_a_bad_relay_section_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "cartd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


async def test_a_relay_on_every_address_is_warned_about(tmp_path: Path) -> None:
    config = load_test_config(write_config(tmp_path / "cartd.toml", ports=[]), tmp_path / "s")
    config = replace(config, relay=replace(config.relay, bind="0.0.0.0"))
    log = LogCapture()
    logging.getLogger("cartd").addHandler(log)
    try:
        async with daemon_in_process(config):
            await asyncio.sleep(0)
    finally:
        logging.getLogger("cartd").removeHandler(log)
    assert "KD gives whoever connects full control of the targets" in log.text(), log.text()
