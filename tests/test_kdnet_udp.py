"""KD over KDNET end to end on 127.0.0.1: cartd's host (KDNET layer + KD core in the KDNET
dialect) against the simulated target served over encrypted UDP."""

from __future__ import annotations

from cartd.daemon.kdnet_driver import KdnetDriver
from cartd.kd.dialect import KDNET
from cartd.kd.events import StateChanged, TargetRebooted
from cartd.kd.kdnet.events import SessionStarted
from cartd.kd.kdnet.host import KdnetHost
from cartd.kd.kdnet.keys import parse_key
from cartd.kd.stops import StopReason
from cartd.sim.kdnet_serve import KdnetSimServer
from cartd.sim.machine import MachineConfig, SimulatedMachine
from cartd.sim.target import Scenario, SimulatedTarget

KEY = "1.2.3.4"
PARAMETERS = (0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)


async def next_stop(driver: KdnetDriver, timeout: float = 20.0) -> StateChanged:
    while True:
        event = await driver.next_event(timeout)
        if isinstance(event, StateChanged):
            return event


async def test_handshake_prints_stops_memory_bugcheck_and_reboot_over_udp() -> None:
    sessions: list[SessionStarted] = []
    driver = KdnetDriver(KdnetHost(parse_key(KEY)), on_session=sessions.append)
    await driver.open(("127.0.0.1", 0))
    assert driver._udp is not None
    host_address = driver._udp.get_extra_info("sockname")[:2]
    machine = SimulatedMachine(MachineConfig(seed=5, memory_size_bytes=1 << 30))
    scenario = Scenario(
        print_interval=0.2, module_interval=None, bugcheck_after=4.0, bugcheck_parameters=PARAMETERS
    )
    target = SimulatedTarget(machine, scenario, seed=5, dialect=KDNET)
    server = KdnetSimServer(target, parse_key(KEY), host=host_address, poke_interval=0.5)
    await server.start()
    try:
        stop = await next_stop(driver)
        assert sessions and sessions[0].version == 5
        assert stop.reason is StopReason.MODULE_LOAD
        await driver.resume()
        assert (await next_stop(driver)).reason is StopReason.MODULE_LOAD
        await driver.resume()
        driver.command(lambda now: driver.host.break_in(now))
        stop = await next_stop(driver)
        assert stop.reason is StopReason.BREAK_IN
        version = await driver.get_version()
        assert version.kern_base == machine.kernel_base
        read = await driver.read_virtual(machine.kernel_base, 5000)  # four 1360-byte pieces
        assert read.data == machine.read_virtual(machine.kernel_base, 5000)
        await driver.resume()
        while not (stop := await next_stop(driver)).reason.is_bugcheck:
            await driver.resume()
        assert stop.bugcheck is not None
        assert (stop.bugcheck.code, stop.bugcheck.parameters) == (0x9F, PARAMETERS)
        # The debugger reboots the target: a new KDNET session, new KD ids, the boot again.
        await driver.call(lambda now: driver.host.reboot(now=now))
        while True:
            event = await driver.next_event(20)
            if isinstance(event, TargetRebooted):
                break
        assert len(sessions) == 2
        assert (await next_stop(driver)).reason is StopReason.MODULE_LOAD
    finally:
        server.close()
        driver.close()
