"""The dashboard: every link and target on the cart at a glance, one card each.

A card says, in words and colour, what the target is doing, how it is connected, who it is
(build, kernel base), when it last said anything, how noisy its line is and how much of the
disk its records take. Enter opens the target's view; the commands act on the highlighted card.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, ListItem, ListView, Static

from cartd.tui.cart_screen import CartScreen
from cartd.tui.model import (
    CartModel,
    Connection,
    Slot,
)
from cartd.tui.redraw import show_state, update_static
from cartd.tui.target_text import append_dump, append_health
from cartd.tui.top_bar import TopBar


class SlotCard(ListItem):
    def __init__(self, slot: Slot) -> None:
        super().__init__()
        self.slot = slot
        # Made here, not in compose(): a card can be shown before it is mounted.
        self.badge = Static("", classes="card-state")
        self.body = Static("", classes="card-body")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="card-head"):
            yield Static(self.slot.name, classes="card-name", markup=False)
            yield self.badge
        yield self.body

    def show(self, slot: Slot, now: float) -> None:
        self.slot = slot
        show_state(self.badge, slot.state)
        update_static(self.body, card_text(slot, now))


SILENT_HINT = "silent so far: a target that booted without a debugger says nothing until b"


def card_text(slot: Slot, now: float) -> Text:
    text = Text(no_wrap=False)
    link, target = slot.link, slot.target
    where = link.describe() if link is not None else (target.link if target else "")
    if target is None:
        text.append(where)
        if link is not None:
            text.append(f" · {link.state}", style="dim")
            if link.needs_key:
                text.append("\npress k to enter the key `bcdedit /dbgsettings` shows", "bold")
        return text
    parts = [where, target.build]
    if target.processors:
        parts.append(f"{target.processors} CPUs")
    text.append(" · ".join(parts) + "\n")
    append_health(text, target, now)
    append_dump(text, target)
    if target.silent:
        text.append(f"\n{SILENT_HINT}", "bold")
    if target.bugcheck is not None:
        bugcheck = target.bugcheck
        text.append(f"\nBUGCHECK {bugcheck.code:#010x} {bugcheck.name}", "bold")
    return text


class SlotList(ListView):
    """The cards; Enter opens one (named in the footer, which ListView's own Enter is not)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Open")]


class DashboardScreen(CartScreen):
    def compose(self) -> ComposeResult:
        yield TopBar()
        yield Static("", id="connection-problem")
        yield Static("", id="no-links")
        yield SlotList(id="slots")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_from_model(self.cart.clock())
        self.ready = True

    def selected_slot(self) -> Slot | None:
        view = self.query_one("#slots", ListView)
        item = view.highlighted_child
        return item.slot if isinstance(item, SlotCard) else None

    def refresh_from_model(self, now: float) -> None:
        model = self.model
        self.query_one(TopBar).show(model, self.cart.hostname)
        problem = self.query_one("#connection-problem", Static)
        problem.display = model.connection is not Connection.CONNECTED
        update_static(problem, connection_text(model))
        slots = model.slots() if model.connection is Connection.CONNECTED else []
        empty = self.query_one("#no-links", Static)
        empty.display = model.connection is Connection.CONNECTED and not slots
        update_static(
            empty,
            "No debug link yet. Plug a null-modem cable into a serial port of the cart, or a "
            "network cable for KDNET ([kdnet] ports in the config), and cartd finds the target "
            "by itself.",
        )
        self._show_slots(slots, now)
        self.refresh_bindings_if_changed()

    def _show_slots(self, slots: list[Slot], now: float) -> None:
        view = self.query_one("#slots", ListView)
        cards = [child for child in view.children if isinstance(child, SlotCard)]
        if [card.slot.name for card in cards] != [slot.name for slot in slots]:
            # The set of targets changed (rare): rebuild, keeping the highlighted one.
            chosen = self.selected_slot()
            view.clear()
            cards = [SlotCard(slot) for slot in slots]
            view.extend(cards)
            names = [slot.name for slot in slots]
            if chosen is not None and chosen.name in names:
                view.index = names.index(chosen.name)
            elif cards:
                view.index = 0
        for card, slot in zip(cards, slots, strict=True):
            card.show(slot, now)

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        self.action_open()

    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        self.refresh_bindings_if_changed()

    def action_open(self) -> None:
        slot = self.selected_slot()
        if slot is None:
            return
        if slot.target is None:
            if slot.link is not None and slot.link.needs_key:
                self.action_key()
            else:
                self.notify(f"no target has spoken on {slot.name} yet")
            return
        self.cart.open_target(slot.target.target)


def connection_text(model: CartModel) -> str:
    if model.connection is Connection.CONNECTING:
        return f"Connecting to the daemon on {model.socket} ..."
    attempt = f" (attempt {model.attempts})" if model.attempts > 1 else ""
    if model.connection is Connection.LOST:
        return f"{model.problem}\nReconnecting{attempt} ..."
    return f"{model.problem}\nTrying again every few seconds{attempt} ..."
