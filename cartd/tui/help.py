"""The help screen's text, made from the bindings themselves so it always lists every key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.binding import Binding, BindingType
from textual.scroll_view import ScrollView

from cartd.tui.cart_screen import CartScreen
from cartd.tui.dashboard import SlotList
from cartd.tui.dialogs import ConfirmDialog, DumpDialog, KeyDialog
from cartd.tui.target_screen import TargetScreen

if TYPE_CHECKING:
    from cartd.tui.app import CartdApp

# Scrolling keys that matter in the console; ScrollView has more (the mouse wheel among them).
_SCROLL_WORDS = {
    "scroll_up": "line up",
    "scroll_down": "line down",
    "page_up": "page up",
    "page_down": "page down",
    "scroll_home": "oldest line",
    "scroll_end": "newest line (and follow)",
    "scroll_left": "left (long lines)",
    "scroll_right": "right (long lines)",
}


def help_text(app: CartdApp, current: CartScreen | None) -> str:
    sections = [
        ("Everywhere", _bindings(type(app).BINDINGS)),
        ("On the highlighted target (dashboard) or the open one", _bindings(CartScreen.BINDINGS)),
        (
            "Dashboard",
            [("Up / Down", "choose a target"), *_bindings(SlotList.BINDINGS)],
        ),
        ("Target view", _bindings(TargetScreen.BINDINGS)),
        ("Console and timeline", _scroll_keys()),
        (
            "Questions",
            _bindings(ConfirmDialog.BINDINGS)
            + _bindings(KeyDialog.BINDINGS)
            + _bindings(DumpDialog.BINDINGS),
        ),
    ]
    if isinstance(current, TargetScreen):
        sections.insert(0, sections.pop(3))
    lines = []
    if app.model.server:
        lines += [f"{app.model.server}, control socket {app.model.socket}", ""]
    for title, keys in sections:
        lines.append(title)
        lines += [f"  {key:<12} {what}" for key, what in keys]
        lines.append("")
    lines.append("Commands that do not fit the target's state are greyed out in the footer.")
    lines.append("Ctrl+P opens the command palette: every command, by name.")
    return "\n".join(lines)


def _bindings(bindings: list[BindingType]) -> list[tuple[str, str]]:
    """(keys, what they do) for every Binding, those the footer leaves out included."""
    out = []
    for binding in bindings:
        if not isinstance(binding, Binding):
            continue
        keys = " / ".join(_key_name(key) for key in binding.key.split(","))
        what = binding.description or binding.action
        out.append((keys, f"{what}: {binding.tooltip}" if binding.tooltip else what))
    return out


def _scroll_keys() -> list[tuple[str, str]]:
    out = []
    for binding in ScrollView.BINDINGS:
        if isinstance(binding, Binding) and binding.action in _SCROLL_WORDS:
            out.append((_key_name(binding.key), _SCROLL_WORDS[binding.action]))
    return out


_KEY_NAMES = {
    "question_mark": "?",
    "slash": "/",
    "escape": "Esc",
    "enter": "Enter",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "home": "Home",
    "end": "End",
    "up": "Up",
    "down": "Down",
    "left": "Left",
    "right": "Right",
    "ctrl+p": "Ctrl+P",
}


def _key_name(key: str) -> str:
    return _KEY_NAMES.get(key.strip(), key.strip())
