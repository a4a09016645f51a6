"""KDNET throughput: memory-read goodput over encrypted UDP on 127.0.0.1, and the crypto's CPU cost.

Run with `.venv/bin/python bench/kdnet_throughput.py`. cartd's host (`KdnetDriver`: KdnetHost and
the KD core in the KDNET dialect) and the simulated target (`KdnetSimServer`) share one process
and one event loop, and talk over real UDP sockets on 127.0.0.1. It prints, each measured in this
one run (the machines are shared and noisy, so nothing is compared with a stored number):

1. goodput and requests per second of large reads: 4 MiB of kernel memory read in 1360-byte
   pieces (the most one unfragmented KDNET reply holds, kdnet.md section 6), with no added delay
   and with 1 ms of simulated round-trip time. KD is stop-and-wait, so each piece costs one round
   trip and the delay bounds goodput at 1360 bytes / RTT; that bound is printed beside it;
2. the CPU time of the KDNET crypto (AES-256-CBC and HMAC-SHA256, `DatagramCodec`) to encode
   and to decode data datagrams carrying full 1416-byte KD packets, per MB of such bodies.

MB here is 10**6 bytes. The delay is added in this file, not in the product: every datagram the
host receives is delivered the round-trip time late, in order. With stop-and-wait that costs the
same as half the delay each way (the request leaves at once, its ACK and reply come back one RTT
later; the host's ACK and the next request leave together).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from late_delivery import LateDelivery

from cartd.daemon.kdnet_driver import KdnetDriver
from cartd.kd.dialect import KDNET, KDNET_MAX_TRANSFER
from cartd.kd.events import StateChanged
from cartd.kd.kdnet.codec import DatagramCodec
from cartd.kd.kdnet.datagram import Direction
from cartd.kd.kdnet.host import KdnetHost
from cartd.kd.kdnet.keys import derive_data_key, parse_key
from cartd.kd.state_change import LoadSymbols
from cartd.kd.stops import StopReason
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import LoadedModule, MachineConfig, SimulatedMachine
from cartd.sim.target import Scenario, SimulatedTarget

KEY = "1.2.3.4"  # a throwaway key for a benchmark on loopback
MB = 1_000_000
READ_TOTAL = 4 << 20  # 4 MiB
# kdnet.md section 6: at most 1416 bytes of KD data keep a datagram inside a 1500-byte MTU (the
# whole KD packet, with its 16-byte header, is 1432; the crypto cost per byte is the same).
FULL_KD_BODY = 1416
CRYPTO_TOTAL = 8 * MB
STOP_TIMEOUT = 20.0


class DelayedKdnetDriver(KdnetDriver):
    """The host, with every received datagram delivered `delay` seconds late, in order."""

    def __init__(self, kdnet: KdnetHost, *, delay: float) -> None:
        super().__init__(kdnet)
        self.late = LateDelivery(delay, super().datagram_received)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.late.receive(data, addr)


async def next_stop(driver: KdnetDriver) -> StateChanged:
    while True:
        event = await driver.next_event(STOP_TIMEOUT)
        if isinstance(event, StateChanged):
            return event


async def stopped_pair(delay: float) -> tuple[DelayedKdnetDriver, KdnetSimServer]:
    """A host and a simulated target over UDP, the target stopped at a break-in."""
    key = parse_key(KEY)
    driver = DelayedKdnetDriver(KdnetHost(key), delay=delay)
    await driver.open(("127.0.0.1", 0))
    assert driver._udp is not None
    host_address = driver._udp.get_extra_info("sockname")[:2]
    machine = SimulatedMachine(MachineConfig(seed=1, memory_size_bytes=1 << 30))
    quiet = Scenario(print_interval=None, module_interval=None)
    target = SimulatedTarget(machine, quiet, dialect=KDNET)
    server = KdnetSimServer(target, key, host=host_address)
    await server.start(("127.0.0.1", 0))
    while True:
        stop = await next_stop(driver)
        if stop.reason is StopReason.BREAK_IN:
            return driver, server
        await driver.resume()
        body = stop.message.body
        if isinstance(body, LoadSymbols) and body.path.lower().endswith(
            "hal.dll"
        ):  # the boot's last module load
            driver.command(lambda now: driver.host.break_in(now))


def largest_module(machine: SimulatedMachine) -> LoadedModule:
    """A mapped span of kernel memory to read round and round (no module is 4 MiB)."""
    return max(machine.modules, key=lambda module: module.size)


async def read_goodput(delay: float) -> tuple[float, float, float]:
    """(bytes/s, requests/s, mean lateness of the delay line in seconds) of READ_TOTAL bytes
    read in KDNET_MAX_TRANSFER-byte requests."""
    driver, server = await stopped_pair(delay)
    try:
        machine = server.target.machine
        module = largest_module(machine)
        pieces = READ_TOTAL // KDNET_MAX_TRANSFER
        span = module.size - module.size % KDNET_MAX_TRANSFER
        offsets = [(n * KDNET_MAX_TRANSFER) % span for n in range(pieces)]
        got: list[bytes] = []
        started = time.perf_counter()
        for offset in offsets:
            result = await driver.read_virtual(module.base + offset, KDNET_MAX_TRANSFER)
            got.append(result.data)
        elapsed = time.perf_counter() - started
        # Checked after the clock stopped: every piece complete and as the machine holds it.
        for offset, data in zip(offsets, got, strict=True):
            assert data == machine.read_virtual(module.base + offset, KDNET_MAX_TRANSFER)
        late = driver.late.lateness / driver.late.delivered if driver.late.delivered else 0.0
        return pieces * KDNET_MAX_TRANSFER / elapsed, pieces / elapsed, late
    finally:
        server.close()
        driver.close()


def crypto_cost(total: int) -> tuple[float, float]:
    """CPU seconds per MB of FULL_KD_BODY-byte bodies: (encode, decode)."""
    key = parse_key(KEY)
    sender = DatagramCodec(key, local_direction=Direction.TARGET_TO_HOST, version=5)
    receiver = DatagramCodec(key, local_direction=Direction.HOST_TO_TARGET, version=5)
    data_key = derive_data_key(key, bytes(322))
    sender.install_data_key(data_key)
    receiver.install_data_key(data_key)
    body = bytes(range(256)) * (FULL_KD_BODY // 256) + bytes(FULL_KD_BODY % 256)
    count = total // FULL_KD_BODY
    started = time.process_time()
    datagrams = [sender.encode_data(body) for _ in range(count)]
    encoded = time.process_time()
    for datagram in datagrams:
        receiver.decode(datagram)
    decoded = time.process_time()
    assert not receiver.drop_counters, receiver.drop_counters
    megabytes = count * FULL_KD_BODY / MB
    return (encoded - started) / megabytes, (decoded - encoded) / megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rtt-ms", type=float, default=1.0, help="simulated round-trip time (default 1)"
    )
    args = parser.parse_args()
    pieces = READ_TOTAL // KDNET_MAX_TRANSFER
    print(
        f"reading {pieces * KDNET_MAX_TRANSFER / MB:.2f} MB of kernel memory in "
        f"{pieces} requests of {KDNET_MAX_TRANSFER} bytes over KDNET on 127.0.0.1:"
    )
    for rtt_ms in (0.0, args.rtt_ms):
        rate, requests, late = asyncio.run(read_goodput(rtt_ms / 1000))
        if rtt_ms:
            bound = f"bound {KDNET_MAX_TRANSFER} B / {rtt_ms:g} ms = "
            bound += f"{KDNET_MAX_TRANSFER / (rtt_ms / 1000) / MB:.2f} MB/s; "
            bound += f"the loop delivered {late * 1000:.3f} ms late on average"
        else:
            bound = "no added delay: host and target CPU alone"
        print(
            f"  RTT +{rtt_ms:g} ms: {rate / MB:6.2f} MB/s, {requests:7,.0f} requests/s, "
            f"{1000 / requests:.3f} ms per request ({bound})"
        )
    encode, decode = crypto_cost(CRYPTO_TOTAL)
    per_datagram = FULL_KD_BODY / MB
    print(
        f"KDNET crypto CPU per MB of {FULL_KD_BODY}-byte KD bodies: encode {encode * 1000:.2f} ms, "
        f"decode {decode * 1000:.2f} ms ({encode * per_datagram * 1e6:.1f} + "
        f"{decode * per_datagram * 1e6:.1f} us per datagram)"
    )


if __name__ == "__main__":
    main()
