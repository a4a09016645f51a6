"""What a SIGHUP's re-read configuration changes, and when each change takes effect.

`config_changes(old, new)` compares two `Config`s key by key (dotted as in the file) and says of
each change whether the running daemon applies it now (LIVE), applies it to links and targets
found from now on (NEW), or needs `systemctl restart cartd` (RESTART): the state directory and
the control socket are in use, and the relay and KDNET listeners hold their sockets, which a
reload must not drop in the middle of an incident. The daemon logs every line of it.

KDNET keys are never shown, only the ports whose key changed.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cartd.config import Config, Policy


class Applies(enum.Enum):
    LIVE = "applied now"
    NEW = "applies to links and targets found from now on"
    RESTART = "needs a restart of cartd"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    key: str  # dotted as in the file: "policy.on_bugcheck", 'targets."srv12".on_bugcheck'
    old: str
    new: str
    applies: Applies

    def __str__(self) -> str:
        return f"{self.key}: {self.old} -> {self.new} ({self.applies.value})"


# By key, or by section for every key in it. Keys not listed need a restart.
_APPLIES: dict[str, Applies] = {
    "serial.ports": Applies.LIVE,  # the port list is searched again
    "serial.rescan_seconds": Applies.LIVE,
    "serial.baud_rates": Applies.NEW,  # a port being probed or open keeps what it had
    "serial.active_probe": Applies.NEW,
    "serial.probe_seconds": Applies.NEW,
    "policy.on_bugcheck": Applies.LIVE,  # read by each session when the target stops
    "policy.dump_on_bugcheck": Applies.LIVE,
    "policy.prompt_answer": Applies.LIVE,
    "policy.break_on_connect": Applies.NEW,  # read by a link when it connects
    "capture.quota_mb": Applies.LIVE,  # read at each quota check
    "capture.fsync_interval": Applies.LIVE,  # read by the housekeeping loop
    "capture.wire_capture": Applies.LIVE,
    "capture.triage_max_mb": Applies.NEW,  # a target's dump settings are made when it appears
    "capture.triage_tiers": Applies.NEW,
    "capture.dump_min_free_mb": Applies.NEW,
    "kdnet.keys": Applies.LIVE,  # each port's listener takes its new key
    "kdnet.ports": Applies.LIVE,  # new ports are listened on; see config_changes for removals
}

_HIDDEN = frozenset({"kdnet.keys"})
_IGNORED = frozenset({"source", "state_dir_given"})


def _show(value: object) -> str:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return str(value)


def _target_key(target_id: str, name: str) -> str:
    return f"targets.{json.dumps(target_id)}.{name}"


def config_changes(old: Config, new: Config) -> list[ConfigChange]:
    """Every key whose value differs, in the order of the file's sections."""
    changes: list[ConfigChange] = []
    for item in dataclasses.fields(Config):
        name = item.name
        if name in _IGNORED:
            continue
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if name == "targets":
            changes += _target_changes(old, new)
        elif dataclasses.is_dataclass(before):
            for sub in dataclasses.fields(before):
                key = f"{name}.{sub.name}"
                value_before, value_after = getattr(before, sub.name), getattr(after, sub.name)
                if value_before != value_after:
                    changes.append(_change(key, value_before, value_after))
        else:
            changes.append(ConfigChange(name, _show(before), _show(after), Applies.RESTART))
    return changes


def _change(key: str, before: object, after: object) -> ConfigChange:
    applies = _APPLIES.get(key, Applies.RESTART)
    if key in _HIDDEN:
        assert isinstance(before, Mapping) and isinstance(after, Mapping)
        ports = sorted({*before, *after} - {p for p in before if before.get(p) == after.get(p)})
        shown = ", ".join(str(port) for port in ports)
        return ConfigChange(key, "(not shown)", f"(changed for port {shown})", applies)
    if key == "kdnet.ports":
        assert isinstance(before, tuple) and isinstance(after, tuple)
        if set(before) - set(after):
            # A listener that goes away would drop its target's session: that waits for a
            # deliberate restart.
            applies = Applies.RESTART
    return ConfigChange(key, _show(before), _show(after), applies)


def _target_changes(old: Config, new: Config) -> list[ConfigChange]:
    """Per-target policies, compared as each target would run (with [policy] filled in)."""
    changes = []
    for target_id in sorted({*old.targets, *new.targets}):
        before, after = old.targets.get(target_id), new.targets.get(target_id)
        if before is None or after is None:
            shown = f"targets.{json.dumps(target_id)}"
            changes.append(
                ConfigChange(
                    shown,
                    "(none)" if before is None else "(set)",
                    "(none)" if after is None else "(set)",
                    Applies.LIVE,
                )
            )
            continue
        for sub in dataclasses.fields(Policy):
            value_before, value_after = getattr(before, sub.name), getattr(after, sub.name)
            if value_before != value_after:
                applies = _APPLIES.get(f"policy.{sub.name}", Applies.RESTART)
                changes.append(
                    ConfigChange(
                        _target_key(target_id, sub.name),
                        _show(value_before),
                        _show(value_after),
                        applies,
                    )
                )
    return changes


def effective_config(old: Config, new: Config, changes: list[ConfigChange]) -> Config:
    """What the daemon runs with after the reload: ``new``, except that every change that
    needs a restart keeps its old value until then (records, sockets and listeners in use stay
    where they are). KDNET ports are only ever added by a reload."""
    config = new
    for change in changes:
        if change.applies is not Applies.RESTART or change.key.startswith("targets."):
            continue
        section, _, name = change.key.partition(".")
        if not name:
            config = dataclasses.replace(config, **{section: getattr(old, section)})
        elif change.key == "kdnet.ports":
            added = tuple(port for port in new.kdnet.ports if port not in old.kdnet.ports)
            kdnet = dataclasses.replace(config.kdnet, ports=old.kdnet.ports + added)
            config = dataclasses.replace(config, kdnet=kdnet)
        else:
            kept = dataclasses.replace(
                getattr(config, section), **{name: getattr(getattr(old, section), name)}
            )
            config = dataclasses.replace(config, **{section: kept})
    if config.state_dir_given != old.state_dir_given:
        config = dataclasses.replace(config, state_dir_given=old.state_dir_given)
    return config
