"""Which TCP port each target's KD relay listens on, the same one across restarts.

An engineer's `ssh -L` line and WinDbg command name a port; it must still be right after the
cart rebooted. Ports fixed in the config (`[relay.ports]`) win; every other target gets the
first port from `[relay] first_port` on that no other target has, and keeps it: the choice is
written to <state_dir>/relay-ports.json (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "relay-ports.json"
_HIGHEST_PORT = 65535


class RelayPorts:
    def __init__(self, state_dir: Path, *, first_port: int, fixed: Mapping[str, int]) -> None:
        self.path = state_dir / FILE_NAME
        self._first_port = first_port
        self._fixed = dict(fixed)
        self._stored = self._load()

    def known_targets(self) -> list[str]:
        """Every target that has a port: their relays listen from the start, before the link
        comes up, so a debugger can be attached and wait for its target."""
        return list(dict.fromkeys([*self._fixed, *self._stored]))

    def port_for(self, target_id: str) -> int:
        """The target's port, choosing and remembering one for a new target."""
        if target_id in self._fixed:
            return self._fixed[target_id]
        port = self._stored.get(target_id)
        if port is not None and port not in self._fixed.values():
            return port
        taken = {*self._fixed.values(), *self._stored.values()}
        port = self._first_port
        while port in taken:
            port += 1
        if port > _HIGHEST_PORT:
            raise OSError(f"no TCP port left for the KD relay of {target_id}")
        self._stored[target_id] = port
        self._save()
        return port

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("%s cannot be read (%s); relay ports are chosen again", self.path, error)
            return {}
        if not isinstance(data, dict):
            log.warning("%s is not a table of ports; relay ports are chosen again", self.path)
            return {}
        return {
            str(target): port
            for target, port in data.items()
            if isinstance(port, int) and 0 < port <= _HIGHEST_PORT
        }

    def _save(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "w") as file:
                json.dump(self._stored, file, indent=1, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            # The relay still works; only the port may differ after a restart.
            log.warning("cannot remember the relay ports in %s: %s", self.path, error.strerror)
