"""One crash dump of a stopped target: read its pages over the KD link into a partial dump,
report progress, and finalise it.

The pages come in the order given (a triage dump's most useful pages first; a full dump's runs
in order), read in spans of consecutive pages as large as the link allows; a page the target
cannot read is left out (the dump becomes a bitmap dump without it) instead of failing the
dump. The partial dump's progress is made durable every few seconds, so a link pulled, a daemon
restarted or a disk filled up loses at most that much; `DumpStopped` says whether it can resume.
A dump can resume only at the stop it is of: when the target leaves that stop (it rebooted, or
reported another), the dump stops for good and what was read becomes a bitmap dump.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cartd import events as ev
from cartd.capture.dump_file import PAGE_SIZE, DumpHeader, PhysicalRun
from cartd.capture.dump_store import PartialDump
from cartd.daemon.host_driver import KdDriver, KdRequestError
from cartd.kd.dump_plans import DumpFacts
from cartd.kd.state_change import StateChangeMessage

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # dump_progress at least this often (the issue asks for once a second)
FLUSH_INTERVAL = 2.0  # progress made durable this often: what an interruption can lose
SPAN_PAGES = 16  # consecutive pages asked for in one read at most (the core splits it per packet)
SPAN_SECONDS = 0.5  # and at most about this long a read, at the rate measured
RATE_WINDOW = 5.0  # seconds of reads the rate and ETA are computed over
CONTEXT_SIZE = 0x4D0  # x64 CONTEXT, what the header's ContextRecord holds


@dataclass(frozen=True, slots=True)
class DumpPlan:
    kind: str  # "triage" or "full"
    pages: Sequence[int]  # PFNs in the order to read them


class DumpInterrupted(Exception):
    """The dump stopped before its end; `resumable` says whether the partial dump is kept."""

    def __init__(self, reason: str, *, resumable: bool) -> None:
        super().__init__(reason)
        self.resumable = resumable


def header_from_facts(facts: DumpFacts, comment: str) -> DumpHeader:
    # A context the target would not give: zeros (MxCsr == MxCsr2 still holds for parsers).
    context = facts.context if len(facts.context) == CONTEXT_SIZE else bytes(CONTEXT_SIZE)
    runs = sorted(PhysicalRun(run.base_page, run.page_count) for run in facts.physical_memory.runs)
    return DumpHeader(
        major_version=facts.major_version,
        minor_version=facts.minor_version,
        directory_table_base=facts.directory_table_base,
        pfn_database=facts.pfn_database,
        ps_loaded_module_list=facts.ps_loaded_module_list,
        ps_active_process_head=facts.ps_active_process_head,
        number_processors=facts.number_processors,
        bugcheck_code=facts.bugcheck_code,
        bugcheck_parameters=facts.bugcheck_parameters,
        kd_debugger_data_block=facts.kd_debugger_data_block,
        physical_memory_runs=tuple(runs),
        context=context,
        exception_record=facts.exception_record,
        system_time=facts.system_time,
        system_up_time=facts.system_up_time,
        product_type=facts.product_type,
        suite_mask=facts.suite_mask,
        kd_secondary_version=facts.kd_secondary_version,
        comment=comment,
        machine_image_type=facts.machine_image_type,
    )


def stop_key(header: DumpHeader) -> str:
    """Names one stop of one boot: a dump of it resumes only while the target is still there.
    The bugcheck, the kernel's page tables (new at every boot) and the stopped CPU's registers
    are the same when the target resends the same stop after a RESET, and differ otherwise."""
    digest = hashlib.sha256()
    digest.update(header.bugcheck_code.to_bytes(4, "little"))
    for parameter in header.bugcheck_parameters:
        digest.update(parameter.to_bytes(8, "little"))
    digest.update(header.directory_table_base.to_bytes(8, "little"))
    digest.update(header.context)
    return digest.hexdigest()[:12]


class DumpJob:
    def __init__(
        self,
        *,
        target_id: str,
        partial: PartialDump,
        plan: DumpPlan,
        publish: Callable[[ev.Event], None],
        min_free_bytes: int,
        resumed_pages: int,
    ) -> None:
        self.target_id = target_id
        self.partial = partial
        self.plan = plan
        self._publish = publish
        self._min_free = min_free_bytes
        self._resumed = resumed_pages
        self._to_read = [pfn for pfn in plan.pages if not partial.has_page(pfn)]
        self.pages_total = resumed_pages + len(self._to_read)
        self.pages_done = resumed_pages
        self.missing = 0
        self._recent: deque[tuple[float, int]] = deque()  # (time, bytes read) for the rate
        self._started = time.monotonic()
        self._stop: StateChangeMessage | None = None  # the stop being read, set by `run`

    @property
    def path(self) -> str:
        return str(self.partial.path)

    def status(self) -> dict[str, object]:
        """What `status` says of the dump being read (the TUI's progress bar)."""
        rate = self._rate()
        return {
            "path": self.path,
            "kind": self.plan.kind,
            "pages_done": self.pages_done,
            "pages": self.pages_total,
            "bytes_done": self.pages_done * PAGE_SIZE,
            "rate": rate,
            "eta_seconds": self._eta(rate),
        }

    async def run(self, driver: KdDriver) -> None:
        """Read every page still missing, then finalise. Raises DumpInterrupted (after making
        what was read durable) when it cannot go on."""
        last_flush = time.monotonic()
        self._stop = driver.host.stop
        # Progress on a clock of its own: one read over serial can take longer than a second.
        ticker = asyncio.create_task(self._tick())
        try:
            position = 0
            while position < len(self._to_read):
                span = self._next_span(position)
                await self._read_span(driver, span)
                position += len(span)
                now = time.monotonic()
                if now - last_flush >= FLUSH_INTERVAL:
                    self.partial.flush()
                    last_flush = now
                    self._check_disk()
        except BaseException:
            self.partial.flush()
            raise
        finally:
            ticker.cancel()
        self._publish(self._progress())
        self.finalise()

    def finalise(self) -> None:
        finished = self.partial.finalize()
        self._publish(
            ev.DumpWritten(
                target=self.target_id,
                path=str(finished.path),
                dump_type="full" if finished.dump_type == 1 else "bitmap",
                pages=finished.pages,
                size=finished.size,
                seconds=time.monotonic() - self._started,
                missing_pages=self.pages_total - finished.pages,
            )
        )

    async def _read_span(self, driver: KdDriver, span: list[int]) -> None:
        # Checked just before each request: the core refuses one for a target not stopped.
        self._check_stop(driver)
        asked = time.monotonic()
        try:
            result = await driver.read_physical(span[0] * PAGE_SIZE, len(span) * PAGE_SIZE)
        except KdRequestError as error:
            if driver.closed.is_set():
                raise DumpInterrupted(f"the link went down: {error}", resumable=True) from None
            self._check_stop(driver)  # the request failed because the stop ended
            if len(span) == 1:
                self._page_missing(span[0], str(error))
                return
            for pfn in span:  # find the page that failed; keep the others
                await self._read_span(driver, [pfn])
            return
        data = result.data
        whole = len(data) // PAGE_SIZE
        for index, pfn in enumerate(span[:whole]):
            self.partial.write_page(pfn, data[index * PAGE_SIZE : (index + 1) * PAGE_SIZE])
        self.pages_done += whole
        self._recent.append((asked, whole * PAGE_SIZE))
        if whole < len(span):
            # A short read: the target stopped at a page it cannot read; try the rest alone.
            self._page_missing(span[whole], "the target could not read it")
            for pfn in span[whole + 1 :]:
                await self._read_span(driver, [pfn])

    def _check_stop(self, driver: KdDriver) -> None:
        """The target must still be in the stop the dump is of: a reboot or another stop
        changes its memory, so no page read from now on belongs in this dump."""
        if self._stop is None or driver.host.stop is not self._stop:
            raise DumpInterrupted(
                "the target left the stop the dump is of (it rebooted or stopped anew)",
                resumable=False,
            )

    def _page_missing(self, pfn: int, why: str) -> None:
        log.debug("%s: page %#x left out of the dump: %s", self.target_id, pfn, why)
        self.missing += 1
        self.pages_done += 1

    def _check_disk(self) -> None:
        try:
            free = shutil.disk_usage(self.partial.path.parent).free
        except OSError:
            return
        if free < self._min_free:
            raise DumpInterrupted(
                f"only {free >> 20} MiB left on the disk (dump_min_free_mb is "
                f"{self._min_free >> 20}): free some space and run `cartd dump "
                f"{self.target_id}` to go on",
                resumable=True,
            )

    def average_rate(self) -> float | None:
        """Bytes a second over the whole dump so far, for the next dump's estimate."""
        read = (self.pages_done - self._resumed) * PAGE_SIZE
        elapsed = time.monotonic() - self._started
        return read / elapsed if read and elapsed > 0 else None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            self._publish(self._progress())

    def _next_span(self, position: int) -> list[int]:
        """The consecutive pages from `position` that one read should ask for: about
        SPAN_SECONDS of reading at the measured rate (one page at a time over serial, where a
        page takes a third of a second; up to SPAN_PAGES over KDNET), so progress and an
        interruption are never far apart."""
        rate = self._rate()
        # One page until a read has been timed: the link may be a slow cable.
        limit = 1 if rate == 0 else int(rate * SPAN_SECONDS) // PAGE_SIZE
        limit = max(1, min(SPAN_PAGES, limit))
        pages = self._to_read
        end = position + 1
        while end < len(pages) and end - position < limit and pages[end] == pages[end - 1] + 1:
            end += 1
        return pages[position:end]

    def _rate(self) -> float:
        """Bytes a second over the reads of the last RATE_WINDOW seconds, each counted from
        the moment it was asked for."""
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > RATE_WINDOW:
            self._recent.popleft()
        if not self._recent:
            return 0.0
        span = max(now - self._recent[0][0], 1e-3)
        return sum(size for _, size in self._recent) / span

    def _eta(self, rate: float) -> float | None:
        left = (self.pages_total - self.pages_done) * PAGE_SIZE
        return left / rate if rate > 0 else None

    def _progress(self) -> ev.DumpProgress:
        rate = self._rate()
        return ev.DumpProgress(
            target=self.target_id,
            path=self.path,
            pages_done=self.pages_done,
            pages=self.pages_total,
            bytes_done=self.pages_done * PAGE_SIZE,
            rate=rate,
            eta_seconds=self._eta(rate),
        )
