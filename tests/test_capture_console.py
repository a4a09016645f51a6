"""console.log: DbgPrint text in whole lines, each stamped with the time its first piece came."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cartd.capture.console import ConsoleWriter

T1 = "2026-12-01T07:14:19.000001Z"
T2 = "2026-12-01T07:14:19.500000Z"
T3 = "2026-12-01T07:14:20.250000Z"


def lines_of(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def test_one_piece_with_several_lines(tmp_path: Path) -> None:
    console = ConsoleWriter(tmp_path / "console.log")
    console.append("first\nsecond\nthird\n", T1)
    console.close()
    assert lines_of(tmp_path / "console.log") == [f"{T1} first", f"{T1} second", f"{T1} third"]


def test_a_line_in_pieces_is_stamped_when_it_started(tmp_path: Path) -> None:
    console = ConsoleWriter(tmp_path / "console.log")
    console.append("Loading dri", T1)
    console.append("ver foo.sys", T2)
    console.append(" ... done\nNext", T3)
    console.append(" line\n", T3)
    console.close()
    assert lines_of(tmp_path / "console.log") == [
        f"{T1} Loading driver foo.sys ... done",
        f"{T3} Next line",
    ]


def test_a_line_waits_for_its_newline_and_is_written_on_close(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    console = ConsoleWriter(path)
    console.append("done\nno newline yet", T1)
    console.flush()
    assert lines_of(path) == [f"{T1} done"]
    console.append(", still none", T2)
    console.flush()
    assert lines_of(path) == [f"{T1} done"]
    console.close()
    assert lines_of(path) == [f"{T1} done", f"{T1} no newline yet, still none"]


@pytest.mark.parametrize("split", range(1, len("a\r\nb\r\n")))
def test_crlf_becomes_one_line_end_wherever_the_piece_splits(tmp_path: Path, split: int) -> None:
    text = "a\r\nb\r\n"
    console = ConsoleWriter(tmp_path / "console.log")
    console.append(text[:split], T1)
    console.append(text[split:], T2)
    console.close()
    content = (tmp_path / "console.log").read_bytes()
    assert b"\r" not in content
    assert [line.split(" ", 1)[1] for line in lines_of(tmp_path / "console.log")] == ["a", "b"]


def test_empty_lines_are_kept_and_every_line_is_stamped(tmp_path: Path) -> None:
    console = ConsoleWriter(tmp_path / "console.log")
    console.append("\n\nx\n", T1)
    console.close()
    lines = lines_of(tmp_path / "console.log")
    assert lines == [f"{T1} ", f"{T1} ", f"{T1} x"]
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ")
    assert all(stamp.match(line) for line in lines)


def test_text_that_is_not_valid_unicode_is_escaped_not_fatal(tmp_path: Path) -> None:
    console = ConsoleWriter(tmp_path / "console.log")
    console.append("bad \udcff byte\n", T1)
    console.close()
    assert lines_of(tmp_path / "console.log") == [f"{T1} bad \\udcff byte"]
