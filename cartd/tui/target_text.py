"""The lines about a target that the dashboard card and the target view share."""

from __future__ import annotations

from rich.text import Text

from cartd.events import format_duration
from cartd.tui.model import TargetInfo, noise_summary, since, size

BAR_WIDTH = 20


def append_health(text: Text, target: TargetInfo, now: float, *, every_kind: bool = False) -> None:
    """'kernel ... · last traffic ...' and the line noise and disk use, on two lines; the noise
    by every kind (`every_kind`), or its total and commonest kind."""
    if target.kernel_base:
        text.append(f"kernel {target.kernel_base} · ")
    text.append(f"last traffic {since(target.last_traffic, now)}")
    noise = noise_summary(target.noise, every_kind=every_kind)
    text.append(f"\n{noise} · records {size(target.records_bytes)}")
    if not target.recording:
        text.append(" · RECORDING PAUSED", "bold red")


def append_dump(text: Text, target: TargetInfo) -> None:
    """The dump being read, as a progress bar with rate and time left; or the last one's fate."""
    dump = target.dump
    if dump is None:
        if target.last_dump:
            text.append(f"\n{target.last_dump}", "dim")
        return
    filled = round(dump.share * BAR_WIDTH)
    text.append(f"\n[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {dump.share:.0%} ", "bold")
    text.append(f"{dump.kind} dump, {size(dump.bytes_done)} of {dump.pages} pages")
    if dump.rate:
        text.append(f" at {dump.rate / 1024:.1f} KiB/s")
    if dump.eta_seconds is not None:
        text.append(f", {format_duration(dump.eta_seconds)} left")
