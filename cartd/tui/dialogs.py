"""Modal dialogs: confirm a destructive command, enter a KDNET key, read a recipe or the keys.

Each is usable without a mouse: Enter or y confirms, Escape or n cancels.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


class ConfirmDialog(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, question: str) -> None:
        super().__init__()
        self._title = title
        self._question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            yield Static(self._question, classes="dialog-body")
            yield Static("[b]y[/b] / Enter: yes    [b]n[/b] / Escape: no", classes="dialog-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


# Gives the key to the daemon; returns None when accepted, or why it was refused.
KeySender = Callable[[str], Awaitable[str | None]]


class KeyDialog(ModalScreen[bool]):
    """The KDNET key of a waiting target, typed masked; the daemon checks it, and a refusal is
    shown here so the engineer can fix a typo without starting over."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, port: int, send: KeySender) -> None:
        super().__init__()
        self._port = port
        self._send = send

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"KDNET key for UDP port {self._port}", classes="dialog-title")
            yield Static(
                "The key `bcdedit /dbgsettings` shows on the target: four words of 0-9 and a-z "
                "separated by dots.",
                classes="dialog-body",
            )
            yield Input(password=True, placeholder="w.x.y.z", id="key")
            yield Static("", id="key-error", classes="dialog-error")
            yield Static("Enter: use this key    Escape: cancel", classes="dialog-keys")

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = await self._send(event.value)
        if problem is None:
            self.dismiss(True)
        else:
            self.query_one("#key-error", Static).update(problem)

    def action_cancel(self) -> None:
        self.dismiss(False)


class TextDialog(ModalScreen[None]):
    """Text to read (a recipe, the key list); any of Escape, q or Enter closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self._title = title
        self._body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self._title, classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(self._body, classes="dialog-body", markup=False)
            yield Static("Escape: close", classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)


class DumpDialog(ModalScreen[str | None]):
    """Which dump to write, with what each would cost on this link; returns the kind."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "choose('triage')", "Triage dump"),
        Binding("f", "choose('full')", "Full dump"),
        Binding("escape,n", "choose('')", "Cancel"),
    ]

    def __init__(self, target: str, choices: str) -> None:
        super().__init__()
        self._target = target
        self._choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Write a crash dump of {self._target}", classes="dialog-title")
            yield Static(self._choices, classes="dialog-body", markup=False)
            yield Static("t: triage dump    f: full dump    Escape: neither", classes="dialog-keys")

    def action_choose(self, kind: str) -> None:
        self.dismiss(kind or None)
