"""The lines about a target that the dashboard card and the target view share."""

from __future__ import annotations

from rich.text import Text

from cartd.tui.model import TargetInfo, noise_summary, since, size


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
