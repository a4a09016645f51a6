"""A scrolling view of a `LineLog`: the DbgPrint console and the event timeline.

It draws only the lines on screen (Textual's line API), so a console of 20,000 lines that grows
by a thousand a second costs what the visible rows cost. Follow mode keeps the newest line in
view until the engineer scrolls up, and comes back when they scroll to the end (`less +F`).
Search finds the newest match first, then older ones (n) and newer ones (N), and marks every
match on screen.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from cartd.tui.model import Line, LineLog, clock_time

TIME_WIDTH = 13  # "HH:MM:SS.mmm "
STRIP_CACHE = 4096  # rendered lines kept; a screen shows a few dozen

# The colour of a timeline entry by event type; the text says what it is in words anyway.
_KIND_CLASSES = {
    "bugcheck": "line-view--bad",
    "link_down": "line-view--bad",
    "capture_error": "line-view--bad",
    "stopped": "line-view--warn",
    "target_rebooted": "line-view--warn",
    "owner_changed": "line-view--warn",
    "running": "line-view--good",
    "target_connected": "line-view--good",
    "link_up": "line-view--good",
    "capture_resumed": "line-view--good",
    "module_loaded": "line-view--info",
    "module_unloaded": "line-view--info",
}


class LineView(ScrollView, can_focus=True):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-view--time",
        "line-view--match",
        "line-view--bad",
        "line-view--warn",
        "line-view--good",
        "line-view--info",
    }
    DEFAULT_CSS = """
    LineView > .line-view--time { color: $text-muted; }
    LineView > .line-view--match { background: $warning; color: $background; text-style: bold; }
    LineView > .line-view--bad { color: $error; text-style: bold; }
    LineView > .line-view--warn { color: $warning; }
    LineView > .line-view--good { color: $success; }
    LineView > .line-view--info { color: $accent; }
    """

    show_times: reactive[bool] = reactive(True)
    follow: reactive[bool] = reactive(True)

    class Changed(Message):
        """Follow mode or the search position changed: the status line should say so."""

    def __init__(self, log: LineLog, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._log = log
        self._seen_dropped = log.dropped
        self._widest = 0
        self._query = ""
        self._match: int | None = None  # index into the log's current lines
        self._moving = False  # our own scrolling, not the engineer's
        self._total_when_paused = 0
        # Rendered lines: in follow mode every row moves up at each redraw, but its line is
        # the same, so only new lines are rendered. Cleared whenever the look changes.
        self._strips: dict[tuple[str, str, str, bool], Strip] = {}

    # --- keeping up with the log ------------------------------------------------------------

    def sync(self) -> None:
        """New lines arrived (or old ones fell off): resize, and keep the engineer's place."""
        log = self._log
        fell_off = log.dropped - self._seen_dropped
        self._seen_dropped = log.dropped
        if fell_off and self._match is not None:
            self._match = self._match - fell_off if self._match >= fell_off else None
        for line in itertools.islice(reversed(log.lines), 64):
            # The newest lines set the width; measuring all 20,000 each time would cost more
            # than drawing them.
            self._widest = max(self._widest, len(line.text))
        self._moving = True
        try:
            self.virtual_size = Size(self._widest + TIME_WIDTH, len(log.lines))
            if self.follow:
                self.scroll_end(animate=False, immediate=True, x_axis=False)
            elif fell_off:
                self.scroll_to(y=max(0, self.scroll_y - fell_off), animate=False, immediate=True)
        finally:
            self._moving = False
        self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if not self._moving:
            at_end = new >= self.max_scroll_y
            if at_end != self.follow:
                self.follow = at_end

    @property
    def unseen(self) -> int:
        """Lines that arrived since follow mode was left."""
        return self._log.dropped + len(self._log.lines) - self._total_when_paused

    def watch_follow(self, follow: bool) -> None:
        self._total_when_paused = self._log.dropped + len(self._log.lines)
        if follow:
            self._moving = True
            try:
                self.scroll_end(animate=False, immediate=True, x_axis=False)
            finally:
                self._moving = False
        self.post_message(self.Changed())

    def watch_show_times(self) -> None:
        self._restyle()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._restyle()

    def _restyle(self) -> None:
        self._strips.clear()
        self.refresh()

    # --- search -----------------------------------------------------------------------------

    @property
    def search_text(self) -> str:
        return self._query

    def search(self, query: str) -> bool:
        """Jump to the newest line containing `query` (case-insensitive); False if none."""
        self._query = query.lower()
        self._strips.clear()
        self._match = None
        found = self._find(len(self._log.lines) - 1, -1)
        self._show_match(found)
        return found is not None

    def next_match(self, *, older: bool) -> bool:
        if not self._query:
            return False
        start = self._match if self._match is not None else len(self._log.lines)
        found = self._find(start - 1, -1) if older else self._find(start + 1, 1)
        if found is None:
            return False
        self._show_match(found)
        return True

    def clear_search(self) -> None:
        self._query = ""
        self._match = None
        self._restyle()
        self.post_message(self.Changed())

    def match_position(self) -> tuple[int, int] | None:
        """(which match, counted from the newest; how many) for the status line."""
        if self._match is None or not self._query:
            return None
        lines = self._log.lines
        query = self._query
        matches = [index for index, line in enumerate(lines) if query in line.text.lower()]
        newer = sum(1 for index in matches if index > self._match)
        return newer + 1, len(matches)

    def _find(self, start: int, step: int) -> int | None:
        lines = self._log.lines
        index = start
        while 0 <= index < len(lines):
            if self._query in lines[index].text.lower():
                return index
            index += step
        return None

    def _show_match(self, index: int | None) -> None:
        self._match = index
        if index is not None:
            self.follow = False
            self._moving = True
            try:
                # The match a third of the way down, with context around it.
                top = max(0, index - self.size.height // 3)
                self.scroll_to(y=top, animate=False, immediate=True)
            finally:
                self._moving = False
        self.refresh()
        self.post_message(self.Changed())

    # --- drawing ----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        lines = self._log.lines
        if index >= len(lines):
            return Strip.blank(width, base)
        line = lines[index]
        key = (line.time, line.text, line.kind, index == self._match)
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > STRIP_CACHE:
                self._strips.clear()
            strip = self._strips[key] = self._line_strip(line, index, base)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_offsets(scroll_x, index)

    def _line_strip(self, line: Line, index: int, base: Style) -> Strip:
        text = Text(no_wrap=True, end="", style=base)
        if self.show_times:
            style = self.get_component_rich_style("line-view--time")
            text.append(clock_time(line.time) + " ", style)
        offset = len(text)
        kind_class = _KIND_CLASSES.get(line.kind)
        body_style = self.get_component_rich_style(kind_class) if kind_class else Style()
        text.append(line.text.expandtabs(8).replace("\r", ""), body_style)
        if self._query:
            match_style = self.get_component_rich_style("line-view--match")
            lowered = text.plain.lower()
            start = lowered.find(self._query, offset)
            while start != -1:
                text.stylize(match_style, start, start + len(self._query))
                start = lowered.find(self._query, start + len(self._query))
        if index == self._match:
            text.stylize(Style(underline=True, bold=True))
        return Strip(text.render(self.app.console))
