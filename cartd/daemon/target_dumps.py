"""A target's crash dumps: which one to write at a stop, which to resume, which to finish.

Dumps live in `<state_dir>/targets/<id>/dumps/`, named `<UTC time>-<code>-<kind>-<stop>.dmp`,
where `<stop>` names the stop the dump is of (`dump_job.stop_key`). While one is read it is
`NAME.dmp.partial` with its `NAME.dmp.progress`; so at a stop cartd knows whether a dump of this
very stop was cut short (resume it), already written (do not write it twice), or belongs to a
stop that is gone (finish it as a bitmap dump of what was read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cartd import events as ev
from cartd.capture.dump_file import PAGE_SIZE
from cartd.capture.dump_store import DumpProgressError, PartialDump, discard_partial_dump
from cartd.capture.layout import session_stamp
from cartd.daemon.dump_job import DumpInterrupted, DumpJob, DumpPlan, header_from_facts, stop_key
from cartd.daemon.host_driver import KdDriver, KdRequestError
from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.kd.dump_plans import DumpFacts, TriageConfig, TriageTier
from cartd.kd.errors import KdUsageError
from cartd.session.policy import CommandRefused

log = logging.getLogger(__name__)

KINDS = ("triage", "full")
_NAME = re.compile(
    r"^(?P<stamp>[0-9TZ]+)-(?P<code>0x[0-9a-f]+)-(?P<kind>triage|full)-(?P<stop>[0-9a-f]+)\.dmp$"
)
_PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True, slots=True)
class DumpSettings:
    dumps_dir: Path
    comment: str  # in every dump's header: cartd, its version and the link
    triage_max_pages: int
    triage_tiers: tuple[TriageTier, ...]
    min_free_bytes: int
    # What the link reads, for estimates before a dump has measured it: None for "unknown".
    bytes_per_second: float | None


class TargetDumps:
    def __init__(
        self, target_id: str, settings: DumpSettings, publish: Callable[[ev.Event], None]
    ) -> None:
        self.target_id = target_id
        self.settings = settings
        self._publish = publish
        self.job: DumpJob | None = None
        self._task: asyncio.Task[None] | None = None
        self._measured_rate: float | None = None
        self._preparing = False
        # True while a remote debugger owns the target: it drives, so no dump starts (one
        # being prepared when it attached gives up before reading).
        self.paused = False

    @property
    def busy(self) -> bool:
        """A dump is being prepared (its facts and pages chosen: seconds over serial) or
        read: the target must stay at its stop until it is done."""
        return self._preparing or self._task is not None

    def busy_text(self) -> str:
        job = self.job
        if job is None:
            return "a dump is being prepared (choosing its pages)"
        return f"a {job.plan.kind} dump is being read ({job.pages_done} of {job.pages_total} pages)"

    def status(self) -> dict[str, object] | None:
        return self.job.status() if self.job is not None else None

    # --- at a stop --------------------------------------------------------------------------

    async def on_stop(
        self,
        driver: KdDriver,
        known_bugcheck: BugcheckInfo | None,
        wanted: str | None,
        then: Callable[[], Awaitable[None]],
    ) -> bool:
        """A stop: resume the cut-short dump of this stop, or start the `wanted` kind unless
        this stop has its dump already. True if a dump runs (it calls `then` when it ends)."""
        if self.busy or (not self._partials() and wanted is None):
            return False
        self._preparing = True
        try:
            return await self._prepare_at_stop(driver, known_bugcheck, wanted, then)
        finally:
            self._preparing = False

    async def _prepare_at_stop(
        self,
        driver: KdDriver,
        known_bugcheck: BugcheckInfo | None,
        wanted: str | None,
        then: Callable[[], Awaitable[None]],
    ) -> bool:
        try:
            facts = await driver.dump_facts(known_bugcheck)
        except (KdRequestError, KdUsageError) as error:
            log.warning("%s: cannot read what a dump needs: %s", self.target_id, error)
            return False
        if self.paused:
            return False
        key = stop_key(header_from_facts(facts, self.settings.comment))
        self.finish_stale(keep=key)
        pending = self._dump_of(key, partial=True)
        if pending is not None:
            kind = _kind_of(pending)
            self._start(driver, facts, kind, pending, then)
            return True
        if wanted is None or self._dump_of(key, partial=False) is not None:
            return False
        self._start(driver, facts, wanted, self._new_path(facts, wanted, key), then)
        return True

    def finish_stale(self, *, keep: str | None) -> None:
        """Partial dumps of stops that are gone (the target ran on or rebooted): finish each as
        a bitmap dump of what it read; one that read nothing is removed."""
        if self.busy:
            return
        for path in self._partials():
            if keep is not None and _stop_of(path) == keep:
                continue
            try:
                partial = PartialDump.open(path)
            except DumpProgressError as error:
                log.warning("%s: %s: %s; removing it", self.target_id, path, error)
                discard_partial_dump(path)
                continue
            if partial.pages_present == 0:
                partial.discard()
                continue
            finished = partial.finalize()
            self._publish(
                ev.DumpWritten(
                    target=self.target_id,
                    path=str(finished.path),
                    dump_type="full" if finished.dump_type == 1 else "bitmap",
                    pages=finished.pages,
                    size=finished.size,
                    seconds=0.0,
                    missing_pages=partial.total_pages - finished.pages
                    if _kind_of(path) == "full"
                    else 0,
                )
            )

    # --- on request -------------------------------------------------------------------------

    async def request(
        self,
        driver: KdDriver,
        known_bugcheck: BugcheckInfo | None,
        kind: str,
        *,
        estimate_only: bool,
        then: Callable[[], Awaitable[None]],
    ) -> dict[str, object]:
        """`cartd dump`: what a dump of this stop would take, and (unless `estimate_only`)
        start it, or resume the cut-short one of this stop."""
        if self.busy:
            raise CommandRefused(
                "target_busy",
                f"{self.target_id}: {self.busy_text()}; wait for it, or cancel it with "
                f"`cartd dump --cancel {self.target_id}`",
            )
        self._preparing = True
        try:
            return await self._request(
                driver, known_bugcheck, kind, estimate_only=estimate_only, then=then
            )
        finally:
            self._preparing = False

    async def _request(
        self,
        driver: KdDriver,
        known_bugcheck: BugcheckInfo | None,
        kind: str,
        *,
        estimate_only: bool,
        then: Callable[[], Awaitable[None]],
    ) -> dict[str, object]:
        try:
            facts = await driver.dump_facts(known_bugcheck)
            key = stop_key(header_from_facts(facts, self.settings.comment))
            # A dump of this stop that was cut short goes on, whatever kind was asked.
            resumed = self._dump_of(key, partial=True)
            kind = _kind_of(resumed) if resumed is not None else kind
            pages = await self._pages(driver, facts, kind)
        except (KdRequestError, KdUsageError) as error:
            raise CommandRefused("link_down", f"{self.target_id}: {error}") from None
        size = len(pages) * PAGE_SIZE
        rate = self._measured_rate or self.settings.bytes_per_second
        answer: dict[str, object] = {
            "kind": kind,
            "pages": len(pages),
            "bytes": size,
            "estimate_seconds": size / rate if rate else None,
        }
        if estimate_only:
            return answer
        self._check_space(size)
        path = resumed or self._new_path(facts, kind, key)
        self._start(driver, facts, kind, path, then, pages=pages)
        answer["path"] = str(path)
        return answer

    def cancel(self) -> dict[str, object]:
        if self._task is None:
            raise CommandRefused("not_running", f"{self.target_id}: no dump is being written")
        path = self.job.path if self.job is not None else "the dump being prepared"
        self._task.cancel("cancelled by a human")
        return {"path": path}

    async def stop(self, reason: str) -> None:
        """Stop the dump being read, if any, keeping it to resume; wait until it is durable."""
        task = self._task
        if task is None:
            return
        task.cancel(reason)
        await asyncio.wait({task})

    # --- running one ------------------------------------------------------------------------

    def _start(
        self,
        driver: KdDriver,
        facts: DumpFacts,
        kind: str,
        path: Path,
        then: Callable[[], Awaitable[None]],
        *,
        pages: list[int] | None = None,
    ) -> None:
        self._task = asyncio.create_task(self._run(driver, facts, kind, path, then, pages))

    async def _run(
        self,
        driver: KdDriver,
        facts: DumpFacts,
        kind: str,
        path: Path,
        then: Callable[[], Awaitable[None]],
        pages: list[int] | None,
    ) -> None:
        carry_on = True
        partial: PartialDump | None = None
        job: DumpJob | None = None
        try:
            if pages is None:
                pages = await self._pages(driver, facts, kind)
            header = header_from_facts(facts, self.settings.comment)
            if path.with_name(path.name + _PARTIAL_SUFFIX).exists():
                partial = PartialDump.open(path)
            else:
                problem = self._space_problem(len(pages) * PAGE_SIZE)
                if problem is not None:  # checked before a dump starts, and while it runs
                    raise _NoSpace(problem)
                partial = PartialDump.create(path, header)
            job = DumpJob(
                target_id=self.target_id,
                partial=partial,
                plan=DumpPlan(kind, pages),
                publish=self._publish,
                min_free_bytes=self.settings.min_free_bytes,
                resumed_pages=partial.pages_present,
            )
            self.job = job
            rate = self._measured_rate or self.settings.bytes_per_second
            left = (job.pages_total - job.pages_done) * PAGE_SIZE
            self._publish(
                ev.DumpStarted(
                    target=self.target_id,
                    path=str(path),
                    kind=kind,
                    pages=job.pages_total,
                    bytes=job.pages_total * PAGE_SIZE,
                    estimate_seconds=left / rate if rate else None,
                    resumed_pages=job.pages_done,
                )
            )
            await job.run(driver)
            self._measured_rate = job.average_rate() or self._measured_rate
        except _NoSpace as error:
            self._stopped(path, str(error), resumable=False)  # the target's policy goes on
        except DumpInterrupted as error:
            # A stop that is gone takes its decision (continue, reboot) with it.
            carry_on = error.resumable and not driver.closed.is_set()
            self._stopped(path, str(error), resumable=error.resumable)
            if not error.resumable and job is not None:
                self._keep_what_was_read(job)
        except KdRequestError as error:  # deciding what to read failed
            carry_on = not driver.closed.is_set()
            self._stopped(path, str(error), resumable=True)
        except KdUsageError as error:  # the target left its stop while the dump was prepared
            carry_on = False
            self._stopped(path, str(error), resumable=True)
        except (OSError, DumpProgressError) as error:
            self._stopped(path, f"cannot write the dump: {error}", resumable=True)
        except asyncio.CancelledError as cancelled:
            # Cancelled by `cartd dump --cancel` or a stopping daemon: the target stays held.
            carry_on = False
            reason = str(cancelled.args[0]) if cancelled.args else "cancelled"
            self._stopped(path, reason, resumable=True)
        finally:
            self.job = None
            self._task = None
            if partial is not None:
                # Its files stay to be resumed or finished; the next PartialDump opens them.
                # A failing flush here was reported above, and close() closes regardless.
                with contextlib.suppress(OSError):
                    partial.close()
        if carry_on:
            await then()

    def _keep_what_was_read(self, job: DumpJob) -> None:
        """The dump's stop is gone, so it cannot resume: what was read becomes a bitmap dump
        (dump_written), and a dump that read nothing goes."""
        try:
            if job.partial.pages_present:
                job.finalise()
            else:
                job.partial.discard()
        except OSError as error:
            # The partial dump stays; finish_stale finishes it when the target runs again.
            log.warning("%s: cannot finish the dump %s: %s", self.target_id, job.path, error)

    async def _pages(self, driver: KdDriver, facts: DumpFacts, kind: str) -> list[int]:
        if kind == "full":
            return [
                pfn
                for run in sorted(facts.physical_memory.runs, key=lambda run: run.base_page)
                for pfn in range(run.base_page, run.base_page + run.page_count)
            ]
        config = TriageConfig(
            max_pages=self.settings.triage_max_pages, tiers=self.settings.triage_tiers
        )
        return list((await driver.triage_pages(facts, config)).pfns)

    def _stopped(self, path: Path, reason: str, *, resumable: bool) -> None:
        log.warning("%s: dump %s stopped: %s", self.target_id, path, reason)
        self._publish(
            ev.DumpStopped(
                target=self.target_id, path=str(path), reason=reason, resumable=resumable
            )
        )

    def _check_space(self, size: int) -> None:
        problem = self._space_problem(size)
        if problem is not None:
            raise CommandRefused("no_space", f"{self.target_id}: {problem}")

    def _space_problem(self, size: int) -> str | None:
        """Why a dump of `size` bytes does not fit on the disk, or None if it does."""
        try:
            free = shutil.disk_usage(self.settings.dumps_dir.parent).free
        except OSError:
            return None
        if free >= size + self.settings.min_free_bytes:
            return None
        return (
            f"the dump needs {size >> 20} MiB and the disk has {free >> 20} MiB free (keeping "
            f"{self.settings.min_free_bytes >> 20} MiB, dump_min_free_mb): free some space or "
            "ask for a triage dump"
        )

    # --- the files --------------------------------------------------------------------------

    def _partials(self) -> list[Path]:
        """Final paths of the partial dumps on disk."""
        directory = self.settings.dumps_dir
        if not directory.is_dir():
            return []
        return sorted(
            path.with_name(path.name[: -len(_PARTIAL_SUFFIX)])
            for path in directory.glob(f"*.dmp{_PARTIAL_SUFFIX}")
            if _NAME.match(path.name[: -len(_PARTIAL_SUFFIX)])
        )

    def _dump_of(self, key: str, *, partial: bool) -> Path | None:
        directory = self.settings.dumps_dir
        if not directory.is_dir():
            return None
        pattern = f"*-{key}.dmp{_PARTIAL_SUFFIX if partial else ''}"
        for path in sorted(directory.glob(pattern)):
            return path.with_name(path.name[: -len(_PARTIAL_SUFFIX)]) if partial else path
        return None

    def _new_path(self, facts: DumpFacts, kind: str, key: str) -> Path:
        self.settings.dumps_dir.mkdir(parents=True, exist_ok=True)
        stamp = session_stamp(datetime.now(UTC))
        return self.settings.dumps_dir / f"{stamp}-{facts.bugcheck_code:#x}-{kind}-{key}.dmp"


class _NoSpace(Exception):
    """The disk cannot hold the dump: it does not start (the message says how much it needs)."""


def _kind_of(path: Path) -> str:
    match = _NAME.match(path.name)
    return match["kind"] if match else "triage"


def _stop_of(path: Path) -> str | None:
    match = _NAME.match(path.name)
    return match["stop"] if match else None
