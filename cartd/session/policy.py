"""What the daemon does with a target when nobody is watching: one target's state and policy.

`TargetSession` turns what the KD host core reports (`cartd.kd.events`) into the daemon's
journal events (`cartd.events`) and into a `Decision` for each stop: the daemon carries the
decision out; this module does no I/O and never waits.

The default policy keeps the target alive: module loads, breakpoints, break-ins that nobody
asked for and ordinary exceptions are continued (exceptions as "not handled", so Windows
handles them as it would without a debugger); a bugcheck is held for a human, as is a break-in
a human asked for. Prompts (DbgPrompt) are answered with the configured line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from cartd import events as ev
from cartd.config import Policy
from cartd.kd import events as kd
from cartd.kd.constants import MachineType
from cartd.kd.debugger_data import DebuggerData
from cartd.kd.manipulate import GetVersion
from cartd.kd.state_change import ExceptionRecord, LoadSymbols
from cartd.kd.stops import StopReason

OWNER_DAEMON = "cartd"
_UNLOAD_ALL_BASE = 0xFFFFFFFFFFFFFFFF  # LoadSymbols "everything unloaded": system going down


class TargetState(Enum):
    WAITING = "waiting"  # link open, nothing heard yet
    RUNNING = "running"
    STOPPED = "stopped"  # held for a human
    BUGCHECKED = "bugchecked"  # stopped in a bugcheck, held
    REBOOTING = "rebooting"
    LINK_DOWN = "link_down"


@dataclass(frozen=True, slots=True)
class ResumeTarget:
    """Continue (the host core steps over a hard-coded int3 and picks the status)."""


@dataclass(frozen=True, slots=True)
class HoldTarget:
    reason: str


@dataclass(frozen=True, slots=True)
class RebootTarget:
    pass


Decision = ResumeTarget | HoldTarget | RebootTarget

_ALWAYS_CONTINUED = frozenset(
    {
        StopReason.MODULE_LOAD,
        StopReason.MODULE_UNLOAD,
        StopReason.COMMAND_STRING,
        StopReason.SINGLE_STEP,
        StopReason.SYSRQ,
        StopReason.BREAKPOINT,
        StopReason.EXCEPTION,
        StopReason.OTHER,
    }
)
_MACHINE_NAMES: dict[int, str] = {
    MachineType.AMD64: "x64",
    MachineType.I386: "x86",
    MachineType.ARM64: "arm64",
    MachineType.ARMNT: "arm",
}


class CommandRefused(Exception):
    """A human command that does not fit the target's state; the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TargetSession:
    def __init__(self, target_id: str, link: str, policy: Policy) -> None:
        self.target_id = target_id
        self.link = link
        self.policy = policy
        self.state = TargetState.WAITING
        self.owner = OWNER_DAEMON
        self.stop: kd.StateChanged | None = None
        self.bugcheck: ev.Bugcheck | None = None
        self.identity: dict[str, Any] | None = None
        self.last_traffic: float | None = None  # wall-clock seconds
        self.noise: dict[str, int] = {}
        self._noise_reported: dict[str, int] = {}
        self._human_break = False
        self._reboot_after_break = False
        self._reported_stop = False  # the current stop was journaled as `stopped`

    # ------------------------------------------------------------------ from the protocol core

    def on_host_event(self, event: kd.HostEvent, *, wall_time: float) -> list[ev.Event]:
        """Journal events for what the core reported (everything but stops, which go
        through `on_stop` so the daemon can learn the identity first)."""
        self.last_traffic = wall_time
        if isinstance(event, kd.DebugPrint):
            if self.state in (TargetState.WAITING, TargetState.REBOOTING):
                self.state = TargetState.RUNNING
            return [ev.DebugPrint(target=self.target_id, text=event.text)]
        if isinstance(event, kd.TargetRunning):
            self.stop = None
            self.state = TargetState.RUNNING
            reported, self._reported_stop = self._reported_stop, False
            return [ev.Running(target=self.target_id)] if reported else []
        if isinstance(event, kd.TargetRebooted):
            self.state = TargetState.REBOOTING
            self.stop = None
            self.bugcheck = None
            self.identity = None  # KASLR: the kernel base changes with every boot
            return [ev.TargetRebooted(target=self.target_id)]
        if isinstance(event, kd.ProtocolNoise):
            self.noise[event.kind] = self.noise.get(event.kind, 0) + event.count
        return []

    def on_stop(self, stop: kd.StateChanged) -> tuple[list[ev.Event], Decision]:
        self.stop = stop
        body = stop.message.body
        if isinstance(body, LoadSymbols):
            self.state = TargetState.RUNNING
            return [self._module_event(body)], ResumeTarget()
        self.state = TargetState.STOPPED
        self._reported_stop = True
        exception_code = body.code if isinstance(body, ExceptionRecord) else None
        out: list[ev.Event] = [
            ev.Stopped(
                target=self.target_id,
                reason=stop.reason.value,
                processor=stop.processor,
                pc=stop.message.program_counter,
                exception_code=exception_code,
                first_chance=stop.first_chance,
            )
        ]
        if stop.reason.is_bugcheck or stop.reason is StopReason.FATAL:
            self.state = TargetState.BUGCHECKED
            info = stop.bugcheck
            if info is not None and (
                self.bugcheck is None
                or (self.bugcheck.code, self.bugcheck.parameters) != (info.code, info.parameters)
            ):
                self.bugcheck = ev.Bugcheck(
                    target=self.target_id,
                    code=info.code,
                    name=info.name,
                    parameters=info.parameters,
                    parameter_meanings=info.parameter_meanings or (),
                    cause=info.cause or "",
                )
                out.append(self.bugcheck)
            return out, self._bugcheck_decision()
        return out, self._stop_decision(stop.reason)

    def _module_event(self, body: LoadSymbols) -> ev.Event:
        name = body.path.rsplit("\\", 1)[-1]
        if body.unload:
            if body.base_of_dll == _UNLOAD_ALL_BASE:
                name = "*"  # every module: the system is going down
            return ev.ModuleUnloaded(
                target=self.target_id,
                name=name,
                path=body.path,
                base=body.base_of_dll,
                size=body.size_of_image,
            )
        return ev.ModuleLoaded(
            target=self.target_id,
            name=name,
            path=body.path,
            base=body.base_of_dll,
            size=body.size_of_image,
        )

    def _bugcheck_decision(self) -> Decision:
        if self.policy.on_bugcheck == "continue":
            return ResumeTarget()
        if self.policy.on_bugcheck == "reboot":
            return RebootTarget()
        return HoldTarget("bugcheck: held for a human (policy on_bugcheck = hold)")

    def _stop_decision(self, reason: StopReason) -> Decision:
        human, self._human_break = self._human_break, False
        if reason is StopReason.BREAK_IN and self._reboot_after_break:
            self._reboot_after_break = False
            return RebootTarget()
        if reason is StopReason.BREAK_IN and human:
            return HoldTarget("break-in requested by a human")
        if reason in _ALWAYS_CONTINUED or reason is StopReason.BREAK_IN:
            return ResumeTarget()
        return HoldTarget(f"stopped ({reason.value})")

    def learn_identity(
        self, version: GetVersion, kdbg: DebuggerData | None, *, processors: int
    ) -> tuple[ev.Event, dict[str, Any]]:
        """What GetVersion and KDBG said: the `target_connected` event and identity.json."""
        machine = _MACHINE_NAMES.get(version.machine_type, f"{version.machine_type:#x}")
        self.identity = {
            "target": self.target_id,
            "link": self.link,
            "build": version.minor_version,
            "major_version": version.major_version,
            "protocol_version": version.protocol_version,
            "machine": machine,
            "processors": processors,
            "kernel_base": f"{version.kern_base:#x}",
            "ps_loaded_module_list": f"{version.ps_loaded_module_list:#x}",
            "kdbg": f"{kdbg.address:#x}" if kdbg is not None else None,
        }
        event = ev.TargetConnected(
            target=self.target_id,
            link=self.link,
            build=version.minor_version,
            kernel_base=version.kern_base,
            machine=machine,
            processors=processors,
        )
        return event, self.identity

    def link_down(self) -> None:
        self.state = TargetState.LINK_DOWN

    def link_up(self) -> None:
        if self.state is TargetState.LINK_DOWN:
            self.state = TargetState.WAITING

    # ------------------------------------------------------------------ human commands

    def check_break(self) -> None:
        """A human asks to break in; the next break-in stop is then held for them."""
        if self.state in (TargetState.STOPPED, TargetState.BUGCHECKED):
            raise CommandRefused("not_running", f"{self.target_id} is already stopped")
        if self.state is TargetState.LINK_DOWN:
            raise CommandRefused("link_down", f"{self.target_id}: the link is down")
        self._human_break = True

    def check_go(self) -> None:
        if self.state not in (TargetState.STOPPED, TargetState.BUGCHECKED):
            raise CommandRefused(
                "not_stopped",
                f"{self.target_id} is {self.state.value}, not stopped: nothing to continue",
            )

    def check_reboot(self) -> bool:
        """True if the target is stopped (reboot now); False: break in first, then reboot."""
        if self.state is TargetState.LINK_DOWN:
            raise CommandRefused("link_down", f"{self.target_id}: the link is down")
        if self.state in (TargetState.STOPPED, TargetState.BUGCHECKED):
            return True
        self._reboot_after_break = True
        return False

    # ------------------------------------------------------------------ reporting

    def take_noise_event(self) -> ev.ProtocolNoise | None:
        """Running noise totals, if they changed since the last call (the daemon calls this
        about once a second, so a burst of garbage is one journal line, not thousands)."""
        if self.noise == self._noise_reported:
            return None
        self._noise_reported = dict(self.noise)
        return ev.ProtocolNoise(link=self.link, counters=dict(self.noise))

    def status(self) -> dict[str, Any]:
        stop = self.stop
        return {
            "target": self.target_id,
            "link": self.link,
            "state": self.state.value,
            "owner": self.owner,
            "identity": self.identity,
            "stop_reason": stop.reason.value if stop is not None else None,
            "bugcheck": self.bugcheck.to_json() if self.bugcheck is not None else None,
            "last_traffic": self.last_traffic,
            "noise": dict(self.noise),
        }
