"""One target's session over one KD connection: the daemon's glue between layers.

The worker reads what the host core reports (through `KdDriver`), asks the session policy
what each event means and what to do, carries the decision out with requests, and hands every
journal event to `publish` (recording and fan-out happen there). Human commands from the control
socket arrive as `break_in()`, `go()` and `reboot()`.

A connection ends when its link closes; the session (and its records) outlive it, so a cable
pulled and plugged back in continues the same session with a new connection (see
`cartd.daemon.serial_link` for what the KD core keeps across it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cartd import events as ev
from cartd.daemon.host_driver import KdDriver, KdRequestError
from cartd.kd import events as kd
from cartd.session.policy import (
    CommandRefused,
    Decision,
    HoldTarget,
    RebootTarget,
    ResumeTarget,
    TargetSession,
)

log = logging.getLogger(__name__)

Publish = Callable[[ev.Event], None]
IdentitySink = Callable[[dict[str, object]], None]


class TargetWorker:
    def __init__(
        self, session: TargetSession, *, publish: Publish, write_identity: IdentitySink
    ) -> None:
        self.session = session
        self._publish = publish
        self._write_identity = write_identity
        self._driver: KdDriver | None = None

    @property
    def connected(self) -> bool:
        return self._driver is not None

    async def serve(self, driver: KdDriver) -> None:
        """Follow one connection until its link closes."""
        self._driver = driver
        self.session.link_up()
        try:
            events = asyncio.ensure_future(self._follow(driver))
            closed = asyncio.ensure_future(driver.closed.wait())
            done, pending = await asyncio.wait(
                {events, closed}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            for task in done:
                task.result()  # re-raises whatever ended the event loop of this connection
        finally:
            self._driver = None
            self.session.link_down()

    async def _follow(self, driver: KdDriver) -> None:
        while True:
            event = await driver.events.get()
            for journal_event in self.session.on_host_event(event, wall_time=time.time()):
                self._publish(journal_event)
            if isinstance(event, kd.StateChanged):
                await self._on_stop(driver, event)
            elif isinstance(event, kd.PromptReceived):
                self._answer_prompt(driver, event)

    def _answer_prompt(self, driver: KdDriver, prompt: kd.PromptReceived) -> None:
        answer = self.session.policy.prompt_answer
        driver.command(lambda now: driver.host.answer_prompt(answer.encode(), now))
        self._publish(
            ev.Prompt(
                target=self.session.target_id, prompt=prompt.prompt.decode("latin-1"), answer=answer
            )
        )

    async def _on_stop(self, driver: KdDriver, stop: kd.StateChanged) -> None:
        if self.session.identity is None:
            await self._learn_identity(driver, stop)
        journal, decision = self.session.on_stop(stop)
        for journal_event in journal:
            self._publish(journal_event)
        await self._carry_out(driver, decision)

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
        driver.command(lambda now: driver.host.break_in(now))

    async def go(self) -> None:
        driver = self._require_driver()
        self.session.check_go()
        await driver.resume()

    async def reboot(self) -> None:
        driver = self._require_driver()
        if self.session.check_reboot():
            await driver.call(lambda now: driver.host.reboot(now=now))
        else:
            driver.command(lambda now: driver.host.break_in(now))
