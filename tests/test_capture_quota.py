"""Quota pruning: oldest sessions first; never dumps, identity.json or an open session."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cartd.capture.layout import create_session_dir, dumps_dir, identity_path
from cartd.capture.quota import disk_usage, prune_sessions

MIB = 1 << 20
SESSION_BYTES = 256 * 1024
T0 = datetime(2026, 12, 1, 7, 0, 0, tzinfo=UTC)


def make_session(state: Path, target: str, minutes: int) -> Path:
    session = create_session_dir(state, target, T0 + timedelta(minutes=minutes))
    # Real, incompressible data so every byte is allocated on any file system.
    (session / "events.jsonl").write_bytes(os.urandom(SESSION_BYTES))
    (session / "console.log").write_bytes(b"x\n")
    return session


@pytest.fixture
def state(tmp_path: Path) -> dict[str, Path]:
    """Target a: sessions at minutes 0 (the open one), 2, 4; a dump; an identity.
    Target b: sessions at minutes 1 and 3."""
    state_dir = tmp_path / "state"
    made = {
        "a0": make_session(state_dir, "a", 0),
        "b1": make_session(state_dir, "b", 1),
        "a2": make_session(state_dir, "a", 2),
        "b3": make_session(state_dir, "b", 3),
        "a4": make_session(state_dir, "a", 4),
    }
    dumps = dumps_dir(state_dir, "a")
    dumps.mkdir()
    made["dump"] = dumps / "20261201T070100Z-0x9f.dmp"
    made["dump"].write_bytes(os.urandom(300 * 1024))
    made["identity"] = identity_path(state_dir, "a")
    made["identity"].write_text('{"build": 19041}\n')
    made["state"] = state_dir
    return made


def test_oldest_closed_sessions_go_first_until_under_quota(state: dict[str, Path]) -> None:
    usage = disk_usage(state["state"])
    # Room for everything but two sessions (and less than a third of slack).
    quota = usage - disk_usage(state["b1"]) - disk_usage(state["a2"]) + 1000

    result = prune_sessions(state["state"], quota / MIB, keep=[state["a0"]])

    assert result.removed == [state["b1"], state["a2"]]
    assert result.problems == []
    assert result.usage_bytes == disk_usage(state["state"]) <= quota
    for kept in ("a0", "b3", "a4", "dump", "identity"):
        assert state[kept].exists(), kept


def test_over_quota_on_dumps_alone_deletes_every_closed_session_and_nothing_else(
    state: dict[str, Path],
) -> None:
    result = prune_sessions(state["state"], 0.01, keep=[state["a0"]])

    assert result.removed == [state[name] for name in ("b1", "a2", "b3", "a4")]
    assert result.usage_bytes > 0.01 * MIB  # the caller sees it is still over quota
    assert state["a0"].is_dir()
    assert (state["a0"] / "events.jsonl").stat().st_size == SESSION_BYTES
    assert state["dump"].stat().st_size == 300 * 1024
    assert state["identity"].read_text() == '{"build": 19041}\n'


def test_under_quota_nothing_is_deleted(state: dict[str, Path]) -> None:
    result = prune_sessions(state["state"], 100)
    assert result.removed == []
    assert result.usage_bytes == disk_usage(state["state"])


def test_an_open_session_is_recognised_under_another_spelling(
    state: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(state["state"])
    spelled_differently = Path("targets/a/../a/sessions") / state["a0"].name
    result = prune_sessions(state["state"], 0, keep=[spelled_differently])
    assert state["a0"] not in result.removed
    assert state["a0"].is_dir()


def test_only_session_directories_are_candidates(state: dict[str, Path]) -> None:
    stray = state["state"] / "targets" / "a" / "sessions" / "notes"
    stray.mkdir()
    (stray / "keep.txt").write_bytes(os.urandom(4096))
    prune_sessions(state["state"], 0)
    assert (stray / "keep.txt").exists()


@pytest.mark.skipif(shutil.which("du") is None, reason="du is not installed")
def test_disk_usage_counts_like_du(state: dict[str, Path]) -> None:
    du = subprocess.run(
        ["du", "--summarize", "--block-size=1", str(state["state"])],
        capture_output=True,
        text=True,
        check=True,
    )
    assert disk_usage(state["state"]) == int(du.stdout.split()[0])


def test_disk_usage_of_a_missing_path_is_zero(tmp_path: Path) -> None:
    assert disk_usage(tmp_path / "targets" / "never-connected") == 0


def test_entries_that_vanish_while_counting_are_left_out(
    state: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruning may delete a session while `status` counts a target's records: what is gone
    counts as nothing, and counting never fails."""
    target = state["state"] / "targets" / "a"
    before = disk_usage(target)
    doomed_file = state["identity"]
    doomed_dir = state["a2"]
    # The directory's own blocks are counted (its lstat comes before it vanishes), not its files.
    doomed_bytes = disk_usage(doomed_file) + sum(disk_usage(f) for f in doomed_dir.iterdir())
    real_lstat, real_scandir = os.lstat, os.scandir

    def lstat_after_unlink(path: os.PathLike[str] | str) -> os.stat_result:
        if Path(path) == doomed_file:
            doomed_file.unlink()  # gone between the directory listing and its lstat
        return real_lstat(path)

    def scandir_after_removal(path: Path) -> object:
        if Path(path) == doomed_dir:
            # Gone between its lstat and its listing (not shutil.rmtree: it uses os.lstat).
            for name in os.listdir(doomed_dir):
                (doomed_dir / name).unlink()
            doomed_dir.rmdir()
        return real_scandir(path)

    monkeypatch.setattr(os, "lstat", lstat_after_unlink)
    monkeypatch.setattr(os, "scandir", scandir_after_removal)
    during = disk_usage(target)
    monkeypatch.undo()

    assert not doomed_file.exists() and not doomed_dir.exists()
    assert during == before - doomed_bytes
