"""The simulated Windows target: a machine, its kernel's behaviour, and KD in TARGET role.

`SimulatedTarget` is sans-I/O like the core it is built on: `receive_data(data, now)`,
`data_to_send()`, `get_timer()` / `handle_timer(now)`. The asyncio server in `cartd.sim.serve`
and the in-memory tests drive it the same way.

The kernel is single-threaded as far as the debugger can tell. Scheduled work (boot messages,
periodic DbgPrint, driver loads, a bugcheck) runs only while the kernel is running and the KD
transport is idle, one action at a time, just as a real DbgPrint blocks until its ACK arrives.
A stop is a state change; while stopped, requests go to `DebuggerApi` until it says resume.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cartd.kd.bugcheck_codes import bugcheck_name
from cartd.kd.constants import (
    MANUALLY_INITIATED_CRASH,
    DbgStatus,
    NewState,
    NtStatus,
)
from cartd.kd.context import Amd64Register, read_register, with_register
from cartd.kd.dialect import SERIAL, KdDialect
from cartd.kd.manipulate import ManipulateMessage
from cartd.kd.state_change import (
    Amd64ControlReport,
    ExceptionRecord,
    LoadSymbols,
    StateChangeMessage,
)
from cartd.kd.target import (
    BreakInRequested,
    KdTarget,
    ManipulateReceived,
    Outgoing,
    PacketAbandoned,
    PacketDelivered,
)
from cartd.sim.debugger_api import DebuggerApi, Resume, ResumeKind
from cartd.sim.line import FaultRates, LineFaults
from cartd.sim.machine import SimulatedMachine

INT3_OPCODE = 0xCC
REPORT_INCLUDES_SEGS = 1
# The demo driver that the scenario loads and unloads again and again.
CHATTY_DRIVER = "cartdemo.sys"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """What the simulated machine does by itself, in seconds after each boot."""

    # A DbgPrint heartbeat; None for a quiet machine, 0 for as fast as the line allows.
    print_interval: float | None = 2.0
    module_interval: float | None = 5.0  # load, then later unload, the demo driver
    bugcheck_after: float | None = None  # raise a bugcheck this long after boot
    bugcheck_code: int = 0x9F
    bugcheck_parameters: tuple[int, int, int, int] | None = None  # None: plausible defaults
    reboot_after_bugcheck: bool = True  # after the second break is continued
    seconds_to_write_dump: float = 1.0  # between the first and the second bugcheck break
    reboot_delay: float = 2.0  # from a reboot request to the first boot packet


@dataclass(order=True, slots=True)
class _Scheduled:
    when: float
    sequence: int
    action: Callable[[float], None] = field(compare=False)


@dataclass(frozen=True, slots=True)
class _Stop:
    reason: str  # for notices
    processor: int
    status_argument: int | None  # RCX for DbgBreakPointWithStatus stops
    after_resume: Callable[[float], None] | None = None


class SimulatedTarget:
    def __init__(
        self,
        machine: SimulatedMachine,
        scenario: Scenario,
        *,
        seed: int = 0,
        noise: FaultRates | None = None,
        ack_timeout: float = 1.0,
        seconds_per_byte: float = 0.0,
        dialect: KdDialect = SERIAL,
    ) -> None:
        """`dialect`: SERIAL for a byte stream, KDNET for data-channel datagrams (the KDNET
        crypto and handshake are the server's job, see cartd.sim.kdnet_serve)."""
        self.machine = machine
        self.scenario = scenario
        self.kd = KdTarget(
            ack_timeout=ack_timeout, seconds_per_byte=seconds_per_byte, dialect=dialect
        )
        self.api = DebuggerApi(machine, max_transfer=dialect.max_transfer)
        self._rng = random.Random(seed)
        rates = noise or FaultRates()
        self.faults_to_host = LineFaults(rates, seed=seed * 2 + 1)
        self.faults_from_host = LineFaults(rates, seed=seed * 2 + 2)
        self._schedule: list[_Scheduled] = []
        self._sequence = itertools.count()
        self._ready: deque[Callable[[float], None]] = deque()
        self._stop: _Stop | None = None
        self._stop_pc = 0
        self._boot_time = 0.0
        self._boot_generation = 0
        self._heartbeat = 0
        self.notices: deque[str] = deque(maxlen=1000)
        self.bugchecked = False
        self.boots = 0  # how many times the machine has booted (a KDNET server re-handshakes)

    # ------------------------------------------------------------------ sans-I/O surface

    def start(self, now: float) -> None:
        self._boot(now)
        self._process(now)

    def receive_data(self, data: bytes, now: float) -> None:
        self.kd.receive_data(self.faults_from_host.apply(data), now)
        self._process(now)

    def data_to_send(self) -> bytes:
        return self.faults_to_host.apply(self.kd.data_to_send())

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """KDNET: one data-channel datagram's body (already authenticated and decrypted)."""
        for delivered in self.faults_from_host.apply_datagrams([datagram]):
            self.kd.receive_datagram(delivered, now)
        self._process(now)

    def datagrams_to_send(self) -> list[bytes]:
        return self.faults_to_host.apply_datagrams(self.kd.datagrams_to_send())

    def new_kdnet_session(self, now: float) -> None:
        """A KDNET handshake completed: KD packet ids start again on both sides (kdnet.md
        3.3); whatever was on its way is sent again under the new ids."""
        self.kd.restart_ids(now)
        self._process(now)

    def get_timer(self) -> float | None:
        deadlines = [self.kd.get_timer()]
        if self._schedule and self._can_run_actions():
            deadlines.append(self._schedule[0].when)
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        self.kd.handle_timer(now)
        self._process(now)

    @property
    def stopped(self) -> bool:
        return self._stop is not None

    # ------------------------------------------------------------------ the kernel's loop

    def _can_run_actions(self) -> bool:
        return self._stop is None and self.kd.idle

    def _process(self, now: float) -> None:
        while True:
            event = self.kd.next_event()
            if event is None:
                if not self._run_due_action(now):
                    return
                continue
            if isinstance(event, BreakInRequested):
                if self._stop is None:
                    self._break_in(now)
            elif isinstance(event, ManipulateReceived):
                self._serve(event.message, now)
            elif isinstance(event, PacketDelivered):
                if event.kind is Outgoing.PRINT and self.kd.take_ctrl_c_pending():
                    # After each DbgPrint the kernel polls for Ctrl-C (spec section 6).
                    self._break_in(now)
            elif isinstance(event, PacketAbandoned):
                self._abandoned(event.kind, now)

    def _run_due_action(self, now: float) -> bool:
        if not self._can_run_actions():
            return False
        if self._ready:
            self._ready.popleft()(now)
            return True
        if self._schedule and self._schedule[0].when <= now:
            heapq.heappop(self._schedule).action(now)
            return True
        return False

    def _at(self, when: float, action: Callable[[float], None]) -> None:
        generation = self._boot_generation

        def guarded(now: float) -> None:
            if generation == self._boot_generation:  # a reboot cancels what was planned
                action(now)

        heapq.heappush(self._schedule, _Scheduled(when, next(self._sequence), guarded))

    def _then(self, action: Callable[[float], None]) -> None:
        """Run `action` as soon as the kernel is running and the line idle, in order."""
        self._ready.append(action)

    def _note(self, text: str) -> None:
        self.notices.append(text)

    # ------------------------------------------------------------------ boot and scenario

    def _boot(self, now: float) -> None:
        self.boots += 1
        self._boot_generation += 1
        self._boot_time = now
        self._schedule.clear()
        self._ready.clear()
        self._stop = None
        self.bugchecked = False
        self.kd.reboot()
        self.machine.reset_for_boot()
        self.api = DebuggerApi(self.machine, max_transfer=self.kd.dialect.max_transfer)
        self._note(
            f"booting: build {self.machine.build_number}, "
            f"{self.machine.processors} processors, kernel at {self.machine.kernel_base:#x}"
        )
        self._print(
            f"cartd simulated target: Windows build {self.machine.build_number} x64, "
            f"{self.machine.processors} processors\n"
        )
        for module in self.machine.modules[:2]:  # ntoskrnl and hal, as KdInitSystem reports
            self._then(self._load_symbols_action(module.path, module.base, module.size))
        self._print("cartd simulated target: kernel debugger initialised\n")
        scenario = self.scenario
        if scenario.print_interval is not None:
            self._at(now + scenario.print_interval, self._heartbeat_print)
        if scenario.module_interval:
            self._at(now + scenario.module_interval, self._load_demo_driver)
        if scenario.bugcheck_after is not None:
            self._at(now + scenario.bugcheck_after, self._scheduled_bugcheck)

    def _print(self, text: str) -> None:
        self._then(lambda now: self._send_print(text, now))

    def _send_print(self, text: str, now: float) -> None:
        self.kd.send_debug_print(text.encode("latin-1", errors="replace"), now)

    def _heartbeat_print(self, now: float) -> None:
        self._heartbeat += 1
        uptime = now - self._boot_time
        self._send_print(f"cartdemo: heartbeat {self._heartbeat}, up {uptime:.0f} s\n", now)
        assert self.scenario.print_interval is not None
        self._at(now + self.scenario.print_interval, self._heartbeat_print)

    def _load_demo_driver(self, now: float) -> None:
        module = self.machine.add_module(CHATTY_DRIVER, 0x7000)
        self._note(f"loading {module.name} at {module.base:#x}")
        self._load_symbols(module.path, module.base, module.size, False, now)
        self._then(lambda t: self._send_print(f"cartdemo: driver loaded at {module.base:#x}\n", t))
        assert self.scenario.module_interval is not None
        self._at(now + self.scenario.module_interval, self._unload_demo_driver)

    def _unload_demo_driver(self, now: float) -> None:
        module = self.machine.remove_module(CHATTY_DRIVER)
        if module is not None:
            self._note(f"unloading {module.name}")
            self._load_symbols(module.path, module.base, module.size, True, now)
        assert self.scenario.module_interval is not None
        self._at(now + self.scenario.module_interval, self._load_demo_driver)

    def _scheduled_bugcheck(self, now: float) -> None:
        scenario = self.scenario
        parameters = scenario.bugcheck_parameters or self._default_parameters()
        self.bugcheck(scenario.bugcheck_code, parameters, now)

    def _default_parameters(self) -> tuple[int, int, int, int]:
        # Shaped like a DRIVER_POWER_STATE_FAILURE: subcode 3, a device object, a timeout
        # marker and an IRP, all kernel addresses drawn from the seed.
        kernel = self.machine.kernel_base
        return (
            3,
            kernel + 0x1A0000 + self._rng.randrange(0x1000) * 0x10,
            0xFFFFF8057A2F3340,
            kernel + 0x1C0000 + self._rng.randrange(0x1000) * 0x10,
        )

    # ------------------------------------------------------------------ stops

    def _load_symbols_action(self, path: str, base: int, size: int) -> Callable[[float], None]:
        return lambda now: self._load_symbols(path, base, size, False, now)

    def _load_symbols(self, path: str, base: int, size: int, unload: bool, now: float) -> None:
        body = LoadSymbols.for_image(path, base_of_dll=base, size_of_image=size, unload=unload)
        self._report(
            NewState.LOAD_SYMBOLS,
            body,
            0,
            self.machine.context_rip(0),
            _Stop("module unload" if unload else "module load", 0, None),
            now,
        )

    def _break_at_status(
        self,
        status: int,
        processor: int,
        reason: str,
        after_resume: Callable[[float], None] | None,
        now: float,
    ) -> None:
        """DbgBreakPointWithStatus(status): an int3 at BreakpointWithStatus, RCX = status."""
        machine = self.machine
        pc = machine.breakpoint_with_status
        context = machine.context(processor)
        updated = with_register(bytes(context), Amd64Register.RIP, pc)
        updated = with_register(updated, Amd64Register.RCX, status)
        context[:] = updated
        record = ExceptionRecord(
            code=NtStatus.BREAKPOINT, address=pc, parameters=(0,), first_chance=True
        )
        self._report(
            NewState.EXCEPTION,
            record,
            processor,
            pc,
            _Stop(reason, processor, status, after_resume),
            now,
        )

    def _report(
        self,
        new_state: int,
        body: LoadSymbols | ExceptionRecord,
        processor: int,
        pc: int,
        stop: _Stop,
        now: float,
    ) -> None:
        machine = self.machine
        context = bytes(machine.context(processor))
        stream = bytearray(machine.space.read_virtual(pc, 16).ljust(16, b"\0"))
        for address in self.api.planted_addresses:  # the report hides KD's own breakpoints
            if pc <= address < pc + 16:
                stream[address - pc] = self.api.original_byte(address)
        report = Amd64ControlReport(
            dr6=read_register(context, Amd64Register.DR6),
            dr7=read_register(context, Amd64Register.DR7),
            eflags=read_register(context, Amd64Register.EFLAGS),
            instruction_count=16,
            report_flags=REPORT_INCLUDES_SEGS,
            instruction_stream=bytes(stream),
            seg_cs=read_register(context, Amd64Register.SEG_CS),
            seg_ds=read_register(context, Amd64Register.SEG_DS),
            seg_es=read_register(context, Amd64Register.SEG_ES),
            seg_fs=read_register(context, Amd64Register.SEG_FS),
        )
        message = StateChangeMessage(
            new_state=new_state,
            processor_level=6,
            processor=processor,
            number_processors=machine.processors,
            thread=machine.current_thread(processor),
            program_counter=pc,
            body=body,
            control_report=report,
        )
        if not self.kd.send_state_change(message, now):
            return  # LoadSymbols while the debugger is absent: not reported at all
        self._stop = stop
        self._stop_pc = pc
        self.api.new_stop()
        self._note(f"stopped ({stop.reason}) on processor {processor} at {pc:#x}")

    def _break_in(self, now: float) -> None:
        self._break_at_status(DbgStatus.CONTROL_C, 0, "break-in", None, now)

    def bugcheck(self, code: int, parameters: tuple[int, int, int, int], now: float) -> None:
        """KeBugCheckEx as seen by an attached debugger (spec section 4.1)."""
        self.bugchecked = True
        # A bug checking machine does nothing else: whatever the scenario planned is dropped.
        self._boot_generation += 1
        self._schedule.clear()
        self._ready.clear()
        processor = self._rng.randrange(self.machine.processors)
        self.machine.set_bugcheck(code, parameters)
        self._note(f"bugcheck {code:#x} ({bugcheck_name(code)}) on processor {processor}")
        self._send_print("KDTARGET: Refreshing KD connection\n", now)
        if code != MANUALLY_INITIATED_CRASH:
            args = ",".join(f"0x{value:016X}" for value in parameters)
            self._then(
                lambda t: self._send_print(
                    f"\n*** Fatal System Error: 0x{code:08x}\n{' ' * 23}({args})\n\n", t
                )
            )
        self._then(
            lambda t: self._break_at_status(
                DbgStatus.BUGCHECK_FIRST,
                processor,
                "bugcheck, first break",
                lambda t2: self._after_first_bugcheck_break(processor, t2),
                t,
            )
        )

    def _after_first_bugcheck_break(self, processor: int, now: float) -> None:
        self._note("writing the crash dump")
        self._at(
            now + self.scenario.seconds_to_write_dump,
            lambda t: self._break_at_status(
                DbgStatus.BUGCHECK_SECOND,
                processor,
                "bugcheck, second break",
                self._after_second_bugcheck_break,
                t,
            ),
        )

    def _after_second_bugcheck_break(self, now: float) -> None:
        if self.scenario.reboot_after_bugcheck:
            self._note("rebooting after the bugcheck")
            self._at(now + self.scenario.reboot_delay, self._boot)

    def _abandoned(self, kind: Outgoing, now: float) -> None:
        if kind is Outgoing.LOAD_SYMBOLS and self._stop is not None:
            self._stop = None  # nobody to wait for: the load goes on without a debugger
        self._note(f"gave up sending a {kind.value}: debugger absent")
        if kind is Outgoing.PRINT and self.kd.take_ctrl_c_pending():
            # DbgPrint polls for Ctrl-C on its way out, delivered or not.
            self._break_in(now)

    # ------------------------------------------------------------------ serving requests

    def _serve(self, request: ManipulateMessage, now: float) -> None:
        assert self._stop is not None
        outcome = self.api.handle(request)
        if isinstance(outcome, Resume):
            self._resume(outcome, now)
        else:
            self.kd.reply(outcome, now)

    def _resume(self, resume: Resume, now: float) -> None:
        stop = self._stop
        assert stop is not None
        self.kd.resume()
        self._stop = None
        if resume.kind is ResumeKind.REBOOT:
            self._note("reboot requested by the debugger")
            self._boot_generation += 1  # nothing planned before the reboot happens
            self._schedule.clear()
            self._ready.clear()
            self._at(now + self.scenario.reboot_delay, self._boot)
            return
        if resume.kind is ResumeKind.BUGCHECK:
            self.bugcheck(MANUALLY_INITIATED_CRASH, (0, 0, 0, 0), now)
            return
        if resume.kind is ResumeKind.SWITCH_PROCESSOR:
            self._switch_to(resume.processor, now)
            return
        if stop.status_argument is not None and self._would_break_again(stop.processor):
            # The debugger did not step over the hard-coded int3: it executes again.
            self._note("continued onto the same int3: breaking again")
            self._then(
                lambda t: self._break_at_status(
                    stop.status_argument or 0, stop.processor, stop.reason, stop.after_resume, t
                )
            )
            return
        self._note("running")
        if stop.after_resume is not None:
            stop.after_resume(now)
        if self.kd.take_ctrl_c_pending():
            self._then(self._break_in)

    def _would_break_again(self, processor: int) -> bool:
        if self.machine.context_rip(processor) != self._stop_pc:
            return False
        return self.machine.space.read_virtual(self._stop_pc, 1) == bytes([INT3_OPCODE])

    def _switch_to(self, processor: int, now: float) -> None:
        pc = self.machine.context_rip(processor)
        record = ExceptionRecord(code=NtStatus.WAKE_SYSTEM_DEBUGGER, address=pc, first_chance=True)
        self._report(
            NewState.EXCEPTION,
            record,
            processor,
            pc,
            _Stop("processor switch", processor, None),
            now,
        )
