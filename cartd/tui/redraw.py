"""Cheap redraws: the screens are redrawn five times a second while a target prints, and most
of what they show has not changed since the last time."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from cartd.tui.model import DisplayState, Tone


def show_state(badge: Static, state: DisplayState) -> None:
    """The state word on its badge, coloured by its tone (class `tone-<tone>`)."""
    update_static(badge, f" {state.word} ")
    tone = f"tone-{state.tone.value}"
    if not badge.has_class(tone):
        # Changing classes restyles the widget: only when the tone really changes.
        badge.remove_class(*(f"tone-{other.value}" for other in Tone))
        badge.add_class(tone)


def update_static(widget: Static, content: str | Text) -> None:
    """Static.update() lays the screen out again: skip it when the text is the same."""
    if widget.content != content:
        widget.update(content)
