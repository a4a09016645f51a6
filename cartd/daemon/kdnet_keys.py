"""KDNET keys added at run time (`cartd key PORT KEY`), kept across restarts.

Anyone with a target's key controls it completely, so the file is readable by its owner only
(mode 0600, written to a temporary name and renamed) and keys never go to logs or events.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from cartd.kd.kdnet.keys import KdnetKeyError, parse_key

KEY_FILE_NAME = "kdnet-keys.json"


class KeyStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / KEY_FILE_NAME

    def load(self) -> dict[int, str]:
        """The stored keys; a missing file is none, an unreadable or damaged one is refused
        with the reason (never the content)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise KdnetKeyError(
                f"cannot read the stored KDNET keys in {self.path}: {type(error).__name__}"
            ) from None
        keys: dict[int, str] = {}
        for port, key in data.items() if isinstance(data, dict) else ():
            with contextlib.suppress(ValueError, KdnetKeyError):
                parse_key(key)
                keys[int(port)] = key
        return keys

    def store(self, port: int, key: str) -> None:
        keys = self.load()
        keys[port] = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps({str(p): k for p, k in sorted(keys.items())}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
