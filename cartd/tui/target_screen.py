"""One target up close: its live DbgPrint console, its event timeline, and after a bugcheck the
panel that explains it.

The console keeps the newest line in view (follow mode) until the engineer scrolls up or
searches; `f` or End brings it back. `/` searches, `n` and `N` step to older and newer matches,
`T` hides or shows the timestamps, `1` and `2` switch between console and timeline. (`t` is
take-over, on every main screen: see cart_screen.py.)
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from cartd.tui.bugcheck_panel import BugcheckPanel
from cartd.tui.cart_screen import CartScreen
from cartd.tui.line_view import LineView
from cartd.tui.model import Slot, TargetInfo, display_state
from cartd.tui.redraw import show_state, update_static
from cartd.tui.target_text import append_dump, append_health
from cartd.tui.top_bar import TopBar


class TargetScreen(CartScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="close the search, or back to the dashboard"),
        Binding("slash", "search", "Search", tooltip="search (the newest match first)"),
        Binding("n", "next_match(True)", "Older match", show=False),
        Binding("N", "next_match(False)", "Newer match", show=False),
        Binding("f", "follow", "Follow", tooltip="follow the newest line, or stop following"),
        Binding("T", "times", "Timestamps", show=False, tooltip="timestamps on or off"),
        Binding("1", "show_tab('console')", "Console", show=False, tooltip="the DbgPrint console"),
        Binding(
            "2",
            "show_tab('timeline')",
            "Timeline",
            show=False,
            tooltip="the events: stops, modules, reboots, owners",
        ),
    ]

    def __init__(self, target_id: str) -> None:
        super().__init__()
        self.target_id = target_id

    @property
    def target(self) -> TargetInfo:
        return self.model.target(self.target_id)

    def compose(self) -> ComposeResult:
        yield TopBar()
        with Horizontal(id="target-head"):
            yield Static("", id="target-state")
            yield Static("", id="target-summary")
        yield BugcheckPanel(id="bugcheck")
        with TabbedContent(initial="console"):
            with TabPane("1 Console", id="console"):
                yield LineView(self.target.console, id="console-view")
            with TabPane("2 Timeline", id="timeline"):
                yield LineView(self.target.timeline, id="timeline-view")
        yield Static("", id="view-status")
        yield Input(
            placeholder="search (Enter finds the newest match, Escape cancels)", id="search"
        )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#search", Input).display = False
        self.refresh_from_model(self.cart.clock())
        self.ready = True
        self.active_view().focus()

    def selected_slot(self) -> Slot:
        target = self.target
        return Slot(target.target, target, self.model.links.get(target.link))

    def active_view(self) -> LineView:
        tabs = self.query_one(TabbedContent)
        return self.query_one(f"#{tabs.active}-view", LineView)

    def refresh_from_model(self, now: float) -> None:
        target = self.target
        self.query_one(TopBar).show(self.model, self.cart.hostname, target.target)
        self._show_summary(target, now)
        self.query_one(BugcheckPanel).show(target.bugcheck)
        for view in self.query(LineView):
            view.sync()
        self._show_view_status()
        self.refresh_bindings_if_changed()

    def _show_summary(self, target: TargetInfo, now: float) -> None:
        slot = self.selected_slot()
        state = display_state(target, slot.link)
        show_state(self.query_one("#target-state", Static), state)
        where = slot.link.describe() if slot.link is not None else target.link
        text = Text(f"{where} · {target.build}\n")
        append_health(text, target, now, every_kind=True)
        append_dump(text, target)
        update_static(self.query_one("#target-summary", Static), text)

    def _show_view_status(self) -> None:
        view = self.active_view()
        if view.follow:
            parts = ["FOLLOW"]
        else:
            parts = [f"PAUSED, {view.unseen} new lines (f or End: follow)"]
        parts.append("times on" if view.show_times else "times off")
        position = view.match_position()
        if view.search_text:
            where = f"match {position[0]} of {position[1]}" if position else "no match"
            parts.append(f"search {view.search_text!r}: {where} (n older, N newer)")
        update_static(self.query_one("#view-status", Static), " · ".join(parts))

    def on_line_view_changed(self, message: LineView.Changed) -> None:
        self._show_view_status()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._show_view_status()

    # --- keys -------------------------------------------------------------------------------

    def action_back(self) -> None:
        search = self.query_one("#search", Input)
        if search.display:
            self._close_search()
        elif self.active_view().search_text:
            self.active_view().clear_search()
        else:
            self.app.pop_screen()

    def action_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = True
        search.value = ""
        search.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "search":
            return
        event.stop()
        query = event.value.strip()
        self._close_search()
        if query and not self.active_view().search(query):
            self.notify(f"{query!r} is not in the {self.query_one(TabbedContent).active}")

    def _close_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = False
        self.active_view().focus()

    def action_next_match(self, older: bool) -> None:
        view = self.active_view()
        if view.search_text and not view.next_match(older=older):
            self.notify("no older match" if older else "no newer match")

    def action_follow(self) -> None:
        view = self.active_view()
        view.follow = not view.follow

    def action_times(self) -> None:
        for view in self.query(LineView):
            view.show_times = not view.show_times
        self._show_view_status()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.active_view().focus()
        self._show_view_status()
