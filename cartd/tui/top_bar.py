"""The line at the top of every main screen: which cart, whether the daemon is there, disk."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from cartd.tui.model import CartModel, Connection, size
from cartd.tui.redraw import update_static


class TopBar(Static):
    def show(self, model: CartModel, hostname: str, title: str = "") -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" cartd ", "bold reverse")
        text.append(f" {hostname}")
        if title:
            text.append(f" · {title}", "bold")
        if model.connection is Connection.CONNECTED:
            text.append(" · connected", "dim")
            if model.disk_free_bytes is not None:
                text.append(f" · {size(model.disk_free_bytes)} free", "dim")
            if model.dropped_events:
                text.append(f" · {model.dropped_events} events missed", "bold")
        elif model.connection is Connection.CONNECTING:
            text.append(" · connecting", "bold")
        else:
            lost = "NO DAEMON" if model.connection is Connection.NO_DAEMON else "DAEMON LOST"
            text.append(f" · {lost}", "bold")
        update_static(self, text)
