"""After a bugcheck: its code and name, what caused it, and what each of the four parameters
means, the way WinDbg's `!analyze -show` lays it out."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from cartd import events as ev


class BugcheckPanel(Static):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.display = False
        self._shown: ev.Bugcheck | None = None

    def show(self, bugcheck: ev.Bugcheck | None) -> None:
        if bugcheck == self._shown:
            return  # the same bugcheck: nothing to lay out again
        self._shown = bugcheck
        self.display = bugcheck is not None
        if bugcheck is not None:
            self.update(bugcheck_table(bugcheck))


def bugcheck_table(bugcheck: ev.Bugcheck) -> Group:
    title = Text(f"BUGCHECK {bugcheck.code:#010x} {bugcheck.name}", "bold")
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, style="dim")
    table.add_column(no_wrap=True)
    table.add_column(ratio=1)
    meanings = bugcheck.parameter_meanings
    for index, value in enumerate(bugcheck.parameters):
        meaning = meanings[index] if index < len(meanings) else ""
        table.add_row(f"Arg{index + 1}", f"{value:016x}", meaning)
    if not meanings:
        table.add_row("", "", Text("(this code's parameters are not described)", "dim"))
    if bugcheck.cause:
        return Group(title, Text(bugcheck.cause), table)
    return Group(title, table)
