"""`identity.json`: what a target told us about itself (GetVersion, KDBG), one file per target.

The session layer decides what goes in it; this module only stores it atomically, so a reader
(or a restarted daemon) sees the previous identity or the new one, never half of either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cartd.capture.files import write_file_atomically


def encode_identity(identity: Mapping[str, Any]) -> bytes:
    """The file's bytes; raises TypeError if `identity` holds something JSON cannot."""
    return (json.dumps(dict(identity), indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_identity(path: Path, identity: Mapping[str, Any]) -> None:
    write_file_atomically(path, encode_identity(identity))


def read_identity(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        identity = json.load(file)
    if not isinstance(identity, dict):
        raise ValueError(f"{path}: an identity is a JSON object")
    return identity
