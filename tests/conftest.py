"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def dev_link() -> Iterator[Path]:
    """A fresh name under /dev for the test's symlink; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the port is a symlink under /dev, which needs root")
    path = Path(f"/dev/cartd-test-{secrets.token_hex(4)}")
    yield path
    if path.is_symlink():
        path.unlink()
