"""A second KD host in a process of its own: cartd's HOST core attached through the KD relay.

Run as `python tests/remote_kd_host.py tcp:127.0.0.1:PORT` (or `unix:PATH`). It reads one
JSON command per line on stdin and answers each with one JSON line on stdout, so a test drives
it step by step as an engineer drives WinDbg:

    {"op": "attach", "break_in": true}      RESET (and break in); answers once connected
    {"op": "break"}                          send the break-in byte
    {"op": "wait_stop", "timeout": 20}       the next stop: reason, processor, pc, bugcheck
    {"op": "version"}                        GetVersion: kern_base, ps_loaded_module_list, ...
    {"op": "read_virtual", "address": A, "size": N}   -> {"data": hex}
    {"op": "read_physical", "address": A, "size": N}  -> {"data": hex}
    {"op": "continue"}                       leave the stop (stepping over a hard-coded int3)
    {"op": "reboot"}                         DbgKdRebootApi
    {"op": "prints"}                         the DbgPrint lines seen since the last "prints"
    {"op": "noise"}                          the KD core's noise counters
    {"op": "exit"}

Errors come back as {"error": "..."}; the process keeps going.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from cartd.daemon.host_driver import HostDriver, KdRequestError
from cartd.kd import events as kd
from cartd.kd.host import KdHost
from cartd.kd.stops import StopReason
from cartd.links.streams import SocketStream

_MODULE_STOPS = (StopReason.MODULE_LOAD, StopReason.MODULE_UNLOAD)


async def _open(where: str) -> SocketStream:
    kind, _, address = where.partition(":")
    if kind == "tcp":
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
    elif kind == "unix":
        reader, writer = await asyncio.open_unix_connection(address)
    else:
        raise SystemExit(f"connect to tcp:HOST:PORT or unix:PATH, not {where!r}")
    return SocketStream(reader, writer, name=where)


class RemoteHost:
    def __init__(self, driver: HostDriver) -> None:
        self.driver = driver
        self.stops: asyncio.Queue[kd.StateChanged] = asyncio.Queue()
        self.prints: list[str] = []
        self.rebooted = 0
        self.modules = 0

    async def follow(self) -> None:
        while True:
            event = await self.driver.events.get()
            if isinstance(event, kd.StateChanged):
                if event.reason in _MODULE_STOPS:
                    # As WinDbg does by default: note the module and go on.
                    self.modules += 1
                    self.driver.command(lambda now: self.driver.host.resume(now=now))
                else:
                    self.stops.put_nowait(event)
            elif isinstance(event, kd.DebugPrint):
                self.prints.append(event.text)
            elif isinstance(event, kd.TargetRebooted):
                self.rebooted += 1

    async def run(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        driver, host = self.driver, self.driver.host
        if op == "attach":
            driver.command(lambda now: host.connect(now, break_in=bool(command.get("break_in"))))
            return {}
        if op == "break":
            driver.command(lambda now: host.break_in(now))
            return {}
        if op == "wait_stop":
            stop = await asyncio.wait_for(self.stops.get(), command.get("timeout", 20))
            bugcheck = stop.bugcheck
            return {
                "reason": stop.reason.value,
                "processor": stop.processor,
                "pc": stop.message.program_counter,
                "bugcheck": None
                if bugcheck is None
                else {"code": bugcheck.code, "parameters": list(bugcheck.parameters)},
            }
        if op == "version":
            version = await driver.get_version()
            return {
                "kern_base": version.kern_base,
                "ps_loaded_module_list": version.ps_loaded_module_list,
                "debugger_data_list": version.debugger_data_list,
                "build": version.minor_version,
            }
        if op in ("read_virtual", "read_physical"):
            reader = driver.read_virtual if op == "read_virtual" else driver.read_physical
            read = await reader(int(command["address"]), int(command["size"]))
            return {"data": read.data.hex()}
        if op == "continue":
            return {"status": await driver.resume()}
        if op == "reboot":
            await driver.call(lambda now: host.reboot(now=now))
            return {}
        if op == "prints":
            prints, self.prints = self.prints, []
            return {"prints": prints, "rebooted": self.rebooted, "modules": self.modules}
        if op == "noise":
            return {"noise": dict(host.noise_counters), "state": host.state.value}
        raise ValueError(f"unknown op {op!r}")


async def main(where: str) -> None:
    stream = await _open(where)
    driver = HostDriver(stream, KdHost())
    remote = RemoteHost(driver)
    tasks = [asyncio.create_task(driver.run()), asyncio.create_task(remote.follow())]
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := await commands.readline():
        command = json.loads(line)
        if command.get("op") == "exit":
            break
        try:
            answer = await remote.run(command)
        except (KdRequestError, TimeoutError, ValueError, KeyError) as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)
    for task in tasks:
        task.cancel()
    stream.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
