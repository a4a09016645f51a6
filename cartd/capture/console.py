"""`console.log`: the target's DbgPrint text as a person reads it, each line stamped in UTC.

DbgPrint text arrives in arbitrary pieces: one packet may hold several lines or half of one. A
line is written once its newline arrives, stamped with the time of the piece that started it; a
line still open when the session closes is written then, with a newline added, so the file only
ever holds whole lines. A line looks like:

    2026-12-01T07:14:19.123456Z Loading driver foo.sys

Windows drivers end lines with "\\n" or "\\r\\n"; the "\\r" is dropped so the file reads the same
either way (the journal keeps the text exactly as it came).
"""

from __future__ import annotations

from pathlib import Path

from cartd.capture.files import AppendOnlyFile


def format_console_line(time: str, text: str) -> bytes:
    """One line of console.log; text a target sends that is not valid Unicode is escaped."""
    return f"{time} {text}\n".encode("utf-8", errors="backslashreplace")


class ConsoleWriter:
    def __init__(self, path: Path) -> None:
        self._file = AppendOnlyFile(path)
        self._open_line = ""
        self._open_line_time = ""  # time of the piece that started `_open_line`

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def pending_lines(self) -> int:
        return self._file.pending_records

    def append(self, text: str, time: str) -> None:
        """Add a piece of DbgPrint text that arrived at `time` (the event's UTC ISO time)."""
        *finished, rest = text.split("\n")
        for piece in finished:
            line = self._open_line + piece
            line_time = self._open_line_time or time
            self._file.append(format_console_line(line_time, line.removesuffix("\r")))
            self._open_line = ""
            self._open_line_time = ""
        if rest:
            if not self._open_line:
                self._open_line_time = time
            self._open_line += rest

    def finish_line(self) -> None:
        """Queue the unfinished line, if any, as a whole line (the session is ending)."""
        if self._open_line:
            self.append("\n", self._open_line_time)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self.finish_line()
        self._file.close()

    def abandon(self) -> None:
        self._file.abandon()
