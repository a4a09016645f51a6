"""One target's session over one KD connection: the daemon's glue between layers.

The worker reads what the host core reports (through `KdDriver`), asks the session policy
what each event means and what to do, carries the decision out with requests, and hands every
journal event to `publish` (recording and fan-out happen there). Human commands from the control
socket arrive as `break_in()`, `go()` and `reboot()`.

A connection ends when its link closes; the session (and its records) outlive it, so a cable
pulled and plugged back in continues the same session with a new connection (see
`cartd.daemon.serial_link` for what the KD core keeps across it).

While a remote debugger owns the target through the KD relay (`cartd.daemon.relay`), the worker
still records everything, but decides nothing: stops, prompts and file requests go to the
remote debugger, and human commands are refused until it leaves or is taken over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cartd import events as ev
from cartd.daemon.host_driver import KdDriver, KdRequestError
from cartd.daemon.relay import OWNER_DAEMON, TargetRelay
from cartd.daemon.target_dumps import TargetDumps
from cartd.kd import events as kd
from cartd.kd.constants import PacketType
from cartd.kd.debug_io import pull_debug_io
from cartd.kd.file_io import no_such_file_reply, pull_file_io
from cartd.kd.host import TargetState as HostState
from cartd.kd.stops import StopReason
from cartd.session.policy import (
    CommandRefused,
    Decision,
    HoldTarget,
    RebootTarget,
    ResumeTarget,
    TargetSession,
    TargetState,
)

log = logging.getLogger(__name__)

_HELD = (TargetState.STOPPED, TargetState.BUGCHECKED)

Publish = Callable[[ev.Event], None]
IdentitySink = Callable[[dict[str, object]], None]


class TargetWorker:
    def __init__(
        self,
        session: TargetSession,
        *,
        publish: Publish,
        write_identity: IdentitySink,
        dumps: TargetDumps,
        relay: TargetRelay,
    ) -> None:
        self.session = session
        self._publish = publish
        self._write_identity = write_identity
        self.dumps = dumps
        self.relay = relay
        self._driver: KdDriver | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A human's break-in asked while the target sat in a stop the daemon was continuing:
        # it goes out once the target runs.
        self._break_when_running = False
        relay.bind_worker(self)

    @property
    def connected(self) -> bool:
        return self._driver is not None

    @property
    def driver(self) -> KdDriver | None:
        return self._driver

    @property
    def owned_remotely(self) -> bool:
        return self.relay.remote is not None

    async def serve(self, driver: KdDriver) -> None:
        """Follow one connection until its link closes."""
        self._driver = driver
        driver.host.relaying = self.owned_remotely
        self.session.link_up()
        events = asyncio.ensure_future(self._follow(driver))
        closed = asyncio.ensure_future(driver.closed.wait())
        try:
            done, _ = await asyncio.wait({events, closed}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raises whatever ended the event loop of this connection
        finally:
            # Also when this task is cancelled (the daemon stopping): nothing left pending.
            events.cancel()
            closed.cancel()
            self._driver = None
            self.session.link_down()

    async def _follow(self, driver: KdDriver) -> None:
        while True:
            event = await driver.events.get()
            for journal_event in self.session.on_host_event(event, wall_time=time.time()):
                self._publish(journal_event)
            if isinstance(event, kd.TargetRunning | kd.TargetRebooted):
                # The stop a partial dump was of is gone: keep what was read as a dump.
                self.dumps.finish_stale(keep=None)
            if isinstance(event, kd.TargetRebooted):
                # A KDNET reboot comes with a new KD core (cartd.daemon.kdnet_driver).
                driver.host.relaying = self.owned_remotely
            if isinstance(event, kd.TargetRunning | kd.TargetRebooted) and self._break_when_running:
                self._break_when_running = False
                driver.command(lambda now: driver.host.break_in(now))
            if isinstance(event, kd.StateChanged):
                await self._on_stop(driver, event)
            elif self.owned_remotely:
                self.relay.forward(event)
            elif isinstance(event, kd.PromptReceived):
                self._answer_prompt(driver, event.prompt)
            elif isinstance(event, kd.FileIoReceived):
                # Asked while a remote debugger owned the target, which has since left.
                self._refuse_file(driver, event.payload)

    def _answer_prompt(self, driver: KdDriver, prompt: bytes) -> None:
        answer = self.session.policy.prompt_answer
        driver.command(lambda now: driver.host.answer_prompt(answer.encode(), now))
        self._publish(
            ev.Prompt(target=self.session.target_id, prompt=prompt.decode("latin-1"), answer=answer)
        )

    def _refuse_file(self, driver: KdDriver, payload: bytes) -> None:
        reply = no_such_file_reply(pull_file_io(payload))
        driver.command(lambda now: driver.host.relay_reply(PacketType.KD_FILE_IO, reply, now=now))

    async def _on_stop(self, driver: KdDriver, stop: kd.StateChanged) -> None:
        if self.session.identity is None:
            await self._learn_identity(driver, stop)
        journal, decision = self.session.on_stop(stop)
        for journal_event in journal:
            self._publish(journal_event)
        if self.session.state in _HELD:
            self._break_when_running = False  # stopped already, as the human wanted
        if self.owned_remotely:
            self.relay.forward(stop)
            return
        if self.session.state in _HELD and await self.dumps.on_stop(
            driver,
            stop.bugcheck,
            self._dump_wanted(stop),
            lambda: self._carry_out(driver, decision),
        ):
            return  # the decision is carried out when the dump ends
        await self._carry_out(driver, decision)

    def _dump_wanted(self, stop: kd.StateChanged) -> str | None:
        """The dump policy's kind for this stop: only a bugcheck's first break (the second
        comes after Windows wrote its own dump) and KeEnterKernelDebugger."""
        if stop.reason not in (StopReason.BUGCHECK_FIRST, StopReason.FATAL):
            return None
        wanted = self.session.policy.dump_on_bugcheck
        if wanted == "none":
            return None
        if wanted == "auto":
            return "full" if self.session.link.startswith("kdnet:") else "triage"
        return wanted

    async def _learn_identity(self, driver: KdDriver, stop: kd.StateChanged) -> None:
        try:
            version = await driver.get_version()
            kdbg = await driver.get_debugger_data()
        except KdRequestError as error:
            log.warning(
                "%s: could not read the target's identity: %s", self.session.target_id, error
            )
            return
        event, identity = self.session.learn_identity(
            version, kdbg, processors=stop.message.number_processors
        )
        self._write_identity(identity)
        self._publish(event)

    async def _carry_out(self, driver: KdDriver, decision: Decision) -> None:
        if self.owned_remotely:
            return  # a remote debugger attached meanwhile (a dump was stopped for it): its call
        try:
            if isinstance(decision, ResumeTarget):
                await driver.resume()
            elif isinstance(decision, RebootTarget):
                await driver.call(lambda now: driver.host.reboot(now=now))
            elif isinstance(decision, HoldTarget):
                log.info("%s: holding the target: %s", self.session.target_id, decision.reason)
        except KdRequestError as error:
            log.warning("%s: %s failed: %s", self.session.target_id, type(decision).__name__, error)

    # ------------------------------------------------------------------ human commands

    def _require_driver(self) -> KdDriver:
        if self.owned_remotely:
            target = self.session.target_id
            raise CommandRefused(
                "target_busy",
                f"{target} is driven by {self.relay.owner} through the KD relay; "
                f"`cartd take-over {target}` takes it back",
            )
        if self._driver is None:
            raise CommandRefused(
                "link_down",
                f"{self.session.target_id}: the link is down; "
                "the command will be possible when it comes back",
            )
        return self._driver

    async def break_in(self) -> None:
        driver = self._require_driver()
        self.session.check_break()
        if driver.host.state in (HostState.STOPPED, HostState.RESUMING):
            # The session counts the target as running, but it sits in a stop the daemon is
            # continuing (a module load at boot): a break-in byte now would only be remembered
            # by it, so it goes out as soon as the target runs.
            self._break_when_running = True
            return
        driver.command(lambda now: driver.host.break_in(now))

    def _refuse_while_dumping(self, what: str) -> None:
        if self.dumps.busy:
            raise CommandRefused(
                "target_busy",
                f"{self.session.target_id}: {self.dumps.busy_text()}; {what} once it is "
                f"written, or stop it with `cartd dump --cancel {self.session.target_id}` "
                "(what was read is kept)",
            )

    async def go(self) -> None:
        driver = self._require_driver()
        self.session.check_go()
        self._refuse_while_dumping("let it go")
        await driver.resume()

    async def dump(self, kind: str, *, estimate_only: bool, cancel: bool) -> dict[str, object]:
        """`cartd dump`: a dump of the stopped target (kind "triage", "full" or "auto")."""
        if cancel:
            return self.dumps.cancel()
        driver = self._require_driver()
        stop = self.session.stop
        if self.session.state not in _HELD or stop is None:
            target = self.session.target_id
            raise CommandRefused(
                "not_stopped",
                f"{target} is {self.session.state.value}: a dump reads a stopped target; break "
                f"in first (`cartd break {target}`, or b in the TUI)",
            )
        if kind == "auto":
            kind = "full" if self.session.link.startswith("kdnet:") else "triage"
        return await self.dumps.request(
            driver, stop.bugcheck, kind, estimate_only=estimate_only, then=_stay_stopped
        )

    async def reboot(self) -> None:
        driver = self._require_driver()
        self._refuse_while_dumping("reboot it")
        if self.session.check_reboot():
            await driver.call(lambda now: driver.host.reboot(now=now))
        else:
            driver.command(lambda now: driver.host.break_in(now))

    # ------------------------------------------------------------------ the KD relay

    def held_stop(self) -> bytes | None:
        driver = self._driver
        if driver is None or driver.host.state is not HostState.STOPPED:
            return None
        if self.session.state not in _HELD:
            return None  # e.g. a module load the daemon is about to continue
        return driver.host.stop_payload

    def remote_attached(self, owner: str) -> None:
        self.session.owner = owner
        self.dumps.paused = True
        if self._driver is not None:
            self._driver.host.relaying = True
        if self.dumps.busy:
            # The remote debugger drives from now on; what was read is kept, and the dump can
            # be resumed (`cartd dump`) while the target is still at this stop.
            self._spawn(self.dumps.stop("a remote debugger attached"))

    def remote_detached(self, unanswered: list[tuple[int, bytes]]) -> None:
        self.session.owner = OWNER_DAEMON
        self.dumps.paused = False
        driver = self._driver
        if driver is None:
            return
        driver.host.relaying = False
        for packet_type, payload in unanswered:
            if packet_type == PacketType.KD_FILE_IO:
                self._refuse_file(driver, payload)
            else:
                # A prompt the remote debugger left: answered as the daemon answers any.
                self._answer_prompt(driver, pull_debug_io(payload).string)
        if driver.host.state is not HostState.STOPPED:
            return
        stop = self.session.stop
        if self.session.state not in _HELD or stop is None:
            # A stop the daemon continues by policy (a module load) that the remote debugger
            # held: continue it.
            self._spawn(self._carry_out(driver, ResumeTarget()))
            return
        # A stop held for a human stays as the remote debugger left it. At a bugcheck, the
        # dump the policy wants (or the one the remote debugger's arrival cut short) is
        # written now; the target stays stopped after it.
        self._spawn(self._dump_after_remote(driver, stop))

    async def _dump_after_remote(self, driver: KdDriver, stop: kd.StateChanged) -> None:
        await self.dumps.on_stop(driver, stop.bugcheck, self._dump_wanted(stop), _stay_stopped)

    def resume_unreported_stop(self) -> None:
        driver = self._driver
        if driver is not None and driver.host.state is HostState.STOPPED:
            self._spawn(self._resume_quietly(driver))

    async def _resume_quietly(self, driver: KdDriver) -> None:
        try:
            await driver.resume()
        except KdRequestError as error:
            log.warning("%s: continuing a module load failed: %s", self.session.target_id, error)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _stay_stopped() -> None:
    """After a dump someone asked for, the target stays as it was: stopped, for them."""
