"""`status` disk figures: each target's records and the free space, with the daemon not running
(its `status` handler needs no links)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cartd import events as ev
from cartd.capture.layout import target_dir
from cartd.capture.quota import disk_usage
from cartd.config import Config, KdnetConfig, RelayConfig, SerialConfig
from cartd.daemon.service import Daemon

TARGET = "ttyS9"


def make_daemon(state_dir: Path) -> Daemon:
    return Daemon(
        Config(
            state_dir=state_dir,
            state_dir_given=True,
            serial=SerialConfig(ports=()),
            kdnet=KdnetConfig(ports=()),
            # Outside an event loop: no listeners (the relay has tests of its own).
            relay=RelayConfig(enabled=False),
        )
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon with one serial target known, as after a link found KD on it."""
    daemon = make_daemon(tmp_path)
    daemon._worker_for(TARGET, f"serial:/dev/{TARGET}")
    yield daemon
    daemon.targets[TARGET].recorder.close()


async def status(daemon: Daemon) -> dict[str, Any]:
    method = daemon.methods.get("status")
    assert method is not None
    return await method.handler(method.bind({}))


async def test_records_bytes_is_the_disk_use_of_the_targets_directory(
    daemon: Daemon, tmp_path: Path
) -> None:
    daemon.publish(ev.DebugPrint(target=TARGET, text="hello\n"))
    daemon.targets[TARGET].recorder.flush()

    (shown,) = (await status(daemon))["targets"]

    assert shown["records_bytes"] == disk_usage(target_dir(tmp_path, TARGET)) > 0


async def test_a_target_without_records_on_disk_uses_nothing(
    daemon: Daemon, tmp_path: Path
) -> None:
    shutil.rmtree(target_dir(tmp_path, TARGET))  # removed by hand while the daemon runs

    (shown,) = (await status(daemon))["targets"]

    assert shown["records_bytes"] == 0


async def test_free_space_is_that_of_the_state_directorys_file_system(tmp_path: Path) -> None:
    result = await status(make_daemon(tmp_path))
    free = result["disk_free_bytes"]
    assert isinstance(free, int) and 0 < free <= shutil.disk_usage(tmp_path).total


async def test_free_space_is_null_when_it_cannot_be_asked(tmp_path: Path) -> None:
    result = await status(make_daemon(tmp_path / "not-created-yet"))
    assert result["disk_free_bytes"] is None
