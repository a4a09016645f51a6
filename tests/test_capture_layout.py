"""Where files live, unique session names, and identity.json written atomically."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from cartd.capture.files import TEMPORARY_SUFFIX
from cartd.capture.identity import read_identity, write_identity
from cartd.capture.layout import (
    create_session_dir,
    dumps_dir,
    identity_path,
    session_dirs,
    session_sort_key,
    target_dir,
    unused_session_dir,
)

STARTED = datetime(2026, 12, 1, 7, 14, 19, 654321, tzinfo=UTC)


def test_paths_follow_the_architecture(tmp_path: Path) -> None:
    target = "19041-fffff80312345000"
    assert target_dir(tmp_path, target) == tmp_path / "targets" / target
    assert identity_path(tmp_path, target) == tmp_path / "targets" / target / "identity.json"
    assert dumps_dir(tmp_path, target) == tmp_path / "targets" / target / "dumps"
    session = create_session_dir(tmp_path, target, STARTED)
    assert session == tmp_path / "targets" / target / "sessions" / "20261201T071419Z"
    assert session.is_dir()


def test_a_target_id_stays_one_directory_name(tmp_path: Path) -> None:
    assert (
        target_dir(tmp_path, "19041-serial:/dev/ttyUSB0").name == "19041-serial%3A%2Fdev%2FttyUSB0"
    )
    assert target_dir(tmp_path, "..").name == "%2E%2E"
    assert target_dir(tmp_path, ".").name == "%2E"
    with pytest.raises(ValueError):
        target_dir(tmp_path, "")


def test_session_names_are_utc_and_unique_within_a_second(tmp_path: Path) -> None:
    local = STARTED.astimezone(timezone(timedelta(hours=-5)))
    names = [create_session_dir(tmp_path, "t", local).name for _ in range(12)]
    assert names == ["20261201T071419Z"] + [f"20261201T071419Z-{n}" for n in range(2, 13)]
    assert unused_session_dir(tmp_path, "t", STARTED).name == "20261201T071419Z-13"
    assert not unused_session_dir(tmp_path, "t", STARTED).exists()


def test_sessions_sort_by_start_time_across_targets(tmp_path: Path) -> None:
    one_second = timedelta(seconds=1)
    made = [
        create_session_dir(tmp_path, "b", STARTED),
        create_session_dir(tmp_path, "a", STARTED + one_second),
    ]
    made += [create_session_dir(tmp_path, "b", STARTED + one_second) for _ in range(11)]
    (tmp_path / "targets" / "a" / "sessions" / "not-a-session").mkdir()
    (tmp_path / "targets" / "a" / "dumps").mkdir()

    found = session_dirs(tmp_path)

    assert found[0] == made[0]
    assert [session_sort_key(path.name) for path in found] == sorted(
        session_sort_key(path.name) or ("", 0) for path in made
    )
    assert found[-1].name == "20261201T071420Z-11"  # "-11" after "-2", not before
    assert session_sort_key("not-a-session") is None
    assert session_sort_key("20261201T071419Z-0") is None


def test_identity_is_replaced_atomically(tmp_path: Path) -> None:
    path = identity_path(tmp_path, "t")
    path.parent.mkdir(parents=True)
    first = {"build": 19041, "kernel_base": "0xfffff80312345000", "machine": "x64"}
    write_identity(path, first)
    assert read_identity(path) == first
    inode = os.stat(path).st_ino

    second = dict(first, build=22621)
    write_identity(path, second)

    assert read_identity(path) == second
    assert os.stat(path).st_ino != inode  # a new file renamed over the old, not rewritten
    assert not path.with_name(path.name + TEMPORARY_SUFFIX).exists()
    assert json.loads(path.read_text()) == second


def test_identity_that_is_not_json_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    write_identity(path, {"build": 1})
    with pytest.raises(TypeError):
        write_identity(path, {"build": object()})
    assert read_identity(path) == {"build": 1}
    assert sorted(os.listdir(tmp_path)) == ["identity.json"]


def test_a_failed_identity_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    write_identity(path, {"build": 1})
    # The rename target is a non-empty directory by the temporary's name: writing it fails.
    blocker = path.with_name(path.name + TEMPORARY_SUFFIX)
    blocker.mkdir()
    (blocker / "x").write_text("x")
    with pytest.raises(OSError):
        write_identity(path, {"build": 2})
    assert read_identity(path) == {"build": 1}
