"""cartd's configuration: one optional TOML file, read once when the daemon starts.

The file is `/etc/cartd/cartd.toml` unless `--config PATH` names another;
`deploy/cartd.toml.example` documents every key. Every key has a default, so the daemon runs with
no file at all. A file that is there is read strictly: a syntax error, a value of the wrong type
or out of range, an unknown key or a bad path stops the daemon with a `ConfigError` that names
the file, the line and the key, for example

    /etc/cartd/cartd.toml:12: serial.baud_rates: expected a list of positive integers, got 'fast'

A crash cart is set up once and then trusted in an emergency; a typo that silently fell back to a
default would be found only when the recording it should have made is missing.

tomllib reports where a syntax error is, but not where a key was written, so `_key_line` finds
that by scanning the text.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import posixpath
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from cartd.kd.dump_plans import TriageTier
from cartd.kd.kdnet.keys import KdnetKeyError, parse_key

DEFAULT_CONFIG_PATH = Path("/etc/cartd/cartd.toml")
DEFAULT_RUNTIME_DIRECTORY = Path("/run/cartd")  # the service's RuntimeDirectory=cartd

OnBugcheck = Literal["hold", "continue", "reboot"]
DumpOnBugcheck = Literal["auto", "triage", "full", "none"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialConfig:
    """Which serial ports cartd uses and how it finds a KD target on them."""

    ports: Literal["auto"] | tuple[str, ...] = "auto"
    baud_rates: tuple[int, ...] = (115200, 57600, 38400, 19200, 9600)
    # Ports on which cartd may write (break-in, RESET) to wake a silent target; elsewhere it
    # only listens, because bytes sent to a device that is not a debug cable can do harm.
    active_probe: Literal["all"] | tuple[str, ...] = ()
    probe_seconds: float = 3.0  # passive listening per baud rate
    rescan_seconds: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What cartd does on its own when a target stops; `[policy]`, or `[targets."<id>"]`."""

    on_bugcheck: OnBugcheck = "hold"
    # Write a dump when the target bug checks, before on_bugcheck is carried out. "auto": a
    # triage dump over serial (a full one takes days there), a full one over KDNET.
    dump_on_bugcheck: DumpOnBugcheck = "auto"
    break_on_connect: bool = False
    prompt_answer: str = ""  # the answer to a DbgPrompt; empty waits for a human


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureConfig:
    """How the on-disk record is kept."""

    quota_mb: int = 1024
    fsync_interval: float = 1.0
    wire_capture: bool = True
    # A triage dump reads the most useful pages first and stops at this size.
    triage_max_mb: int = 32
    # What a triage dump holds, most important first (cartd.kd.dump_plans.TriageTier values).
    triage_tiers: tuple[str, ...] = tuple(tier.value for tier in TriageTier)
    # A dump stops (and keeps what it has read) when the disk has less than this left.
    dump_min_free_mb: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class KdnetConfig:
    """Where cartd listens for KDNET targets: one UDP port per target (kdnet.md 3.5)."""

    ports: tuple[int, ...] = (50000,)
    interface: str = "0.0.0.0"  # the address to listen on; the targets' hostip must reach it
    # Instead of `interface`: listen on the address each of these network interfaces has, and
    # follow them as they come, go and change address (USB-Ethernet adapters, a late DHCP).
    interfaces: tuple[str, ...] = ()
    # Keys by port, as `bcdedit /dbgsettings` printed them. Never logged; keys added at run time
    # with `cartd key` are kept in <state_dir>/kdnet-keys.json instead.
    keys: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbConfig:
    """USB debug links: what cartd does with a USB-Ethernet (KDNET-EEM) adapter."""

    # The cart's address on a CDC-EEM/NCM adapter's interface (the targets' hostip must be in
    # it); empty leaves such adapters alone (they are still reported).
    eem_address: str = "169.254.50.1/16"
    # iproute2's ip, which configures that interface (needs CAP_NET_ADMIN).
    ip_command: str = "ip"


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """The KD relay: where a remote debugger attaches to a target (through an SSH tunnel).

    KD gives whoever speaks it full control of the target, so the relay listens on the
    loopback address unless `bind` says otherwise (and then the daemon warns in the log)."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    # Targets get ports from here on in the order they first appear; the choice is kept in
    # <state_dir>/relay-ports.json so a target keeps its port across restarts.
    first_port: int = 5800
    ports: Mapping[str, int] = field(default_factory=dict)  # fixed ports by target id
    # A remote debugger that leaves a packet unacknowledged this long loses the target.
    silence_seconds: float = 30.0

    @property
    def loopback_only(self) -> bool:
        return ipaddress.ip_address(self.bind).is_loopback


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The daemon's whole configuration; `Config()` is what it runs with when there is no file."""

    state_dir: Path = Path("/var/lib/cartd")
    control_socket: Path | None = None  # None: see control_socket_path()
    state_dir_given: bool = False  # state_dir came from --state-dir (load_config's override)
    control_group: str = "cartd"
    replay_events: int = 200
    serial: SerialConfig = SerialConfig()
    policy: Policy = Policy()
    targets: Mapping[str, Policy] = field(default_factory=dict)  # complete, [policy] filled in
    capture: CaptureConfig = CaptureConfig()
    kdnet: KdnetConfig = field(default_factory=KdnetConfig)
    usb: UsbConfig = field(default_factory=UsbConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    source: Path | None = None  # the file this came from; None when it is all defaults

    def control_socket_path(self) -> Path:
        """Where the daemon listens and clients connect, the same rule on both sides: the
        configured socket; else the state directory given with --state-dir (a demo's or a
        test's private daemon); else systemd's RuntimeDirectory= ($RUNTIME_DIRECTORY, set for
        the service); else /run/cartd, where clients outside the service find the service."""
        if self.control_socket is not None:
            return self.control_socket
        if self.state_dir_given:
            return self.state_dir / "control.sock"
        # systemd exports RuntimeDirectory= as $RUNTIME_DIRECTORY, several directories joined by
        # ':' when the unit names several; the first is the unit's own.
        runtime_directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        if runtime_directory:
            return Path(runtime_directory) / "control.sock"
        return DEFAULT_RUNTIME_DIRECTORY / "control.sock"

    def policy_for(self, target_id: str) -> Policy:
        return self.targets.get(target_id, self.policy)


class ConfigError(ValueError):
    """A config file cartd will not start with. `key` is dotted as in TOML
    (`targets."db.07".on_bugcheck`); `line` and `key` are None when the problem has none."""

    def __init__(self, path: Path, line: int | None, key: str | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
        where = str(path) if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {problem}" if key is None else f"{where}: {key}: {problem}")


def load_config(path: Path | None = None, *, state_dir_override: Path | None = None) -> Config:
    """Read the config file at ``path``, or at DEFAULT_CONFIG_PATH if there is one there.

    ``state_dir_override`` (`--state-dir`) replaces state_dir; a relative one is taken from the
    current directory. Raises ConfigError for a named file that cannot be read or any problem in
    the file.
    """
    source = DEFAULT_CONFIG_PATH if path is None else path
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(source, None, None, "no such file") from None
        config = Config()
    except OSError as error:
        raise ConfigError(source, None, None, f"cannot read it: {error.strerror}") from None
    else:
        config = _read_file(source, data)
    if state_dir_override is not None:
        config = dataclasses.replace(
            config, state_dir=state_dir_override.absolute(), state_dir_given=True
        )
    return config


# --- Reading a file ------------------------------------------------------------------------------


def _read_file(path: Path, data: bytes) -> Config:
    try:
        # utf-8-sig: Windows editors may start a file with a byte-order mark, which tomllib
        # rejects and which means nothing here.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bad_line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(path, bad_line, None, "not UTF-8 text, which TOML requires") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line, problem = _syntax_problem(str(error), text)
        raise ConfigError(path, line, None, problem) from None
    reader = _Reader(path, text)
    top_level: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    targets: dict[str, dict[str, Any]] = {}
    # Tables come in the order they are written, so the first problem reported is near the top.
    for name, value in document.items():
        if name in _SECTIONS:
            sections[name] = reader.table((name,), value, _SECTIONS[name])
        elif name == "targets":
            targets = reader.targets((name,), value)
        else:
            top_level[name] = reader.value((name,), value, _TOP_LEVEL)
    kdnet = sections.get("kdnet", {})
    if "interface" in kdnet and kdnet.get("interfaces"):
        reader.fail(
            ("kdnet", "interfaces"),
            "give either interface (one address) or interfaces (names to follow), not both",
        )
    policy = Policy(**sections.get("policy", {}))
    return Config(
        **top_level,
        serial=SerialConfig(**sections.get("serial", {})),
        policy=policy,
        targets={
            target_id: dataclasses.replace(policy, **overrides)
            for target_id, overrides in targets.items()
        },
        capture=CaptureConfig(**sections.get("capture", {})),
        kdnet=KdnetConfig(**sections.get("kdnet", {})),
        usb=UsbConfig(**sections.get("usb", {})),
        relay=RelayConfig(**sections.get("relay", {})),
        source=path,
    )


# tomllib's messages end with " (at line L, column C)" or " (at end of document)".
_TOML_POSITION = re.compile(
    r"(?P<what>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)",
    re.DOTALL,
)


def _syntax_problem(message: str, text: str) -> tuple[int | None, str]:
    """The line and our wording of a tomllib syntax error."""
    position = _TOML_POSITION.fullmatch(message)
    if position is None:  # a wording this code does not know: pass it on whole
        return None, f"not valid TOML: {message}"
    what = position["what"][:1].lower() + position["what"][1:]
    if position["line"] is None:
        return text.rstrip("\n").count("\n") + 1, f"not valid TOML: {what} (at the end of the file)"
    return int(position["line"]), f"not valid TOML: {what} (column {position['column']})"


class _Reader:
    """Checks a parsed document against the schema; each problem found becomes a ConfigError."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, keys: tuple[str, ...], problem: str) -> NoReturn:
        raise ConfigError(self.path, _key_line(self.text, keys), _dotted(keys), problem)

    def value(self, keys: tuple[str, ...], value: object, schema: Mapping[str, _Convert]) -> Any:
        convert = schema.get(keys[-1])
        if convert is None:
            self.fail(keys, _unknown_key(keys, value, schema))
        try:
            return convert(value)
        except _Invalid as invalid:
            self.fail(keys, str(invalid))

    def table(
        self, keys: tuple[str, ...], value: object, schema: Mapping[str, _Convert]
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(keys, _expected("a table", value))
        return {name: self.value((*keys, name), item, schema) for name, item in value.items()}

    def targets(self, keys: tuple[str, ...], value: object) -> dict[str, dict[str, Any]]:
        if not isinstance(value, dict):
            self.fail(keys, _expected("a table", value))
        targets = {}
        for target_id, overrides in value.items():
            where = (*keys, target_id)
            if not _TARGET_ID.fullmatch(target_id):
                self.fail(where, _expected(_TARGET_ID_DESCRIPTION, target_id))
            targets[target_id] = self.table(where, overrides, _POLICY)
        return targets


def _unknown_key(keys: tuple[str, ...], value: object, schema: Mapping[str, _Convert]) -> str:
    name = keys[-1]
    at_top = len(keys) == 1
    kind = "section" if at_top and isinstance(value, dict) else "key"
    problem = f"unknown {kind} {name!r}"
    known = [*schema, *_SECTIONS, "targets"] if at_top else list(schema)
    if close := difflib.get_close_matches(name, known, n=1):
        return f"{problem} (did you mean {close[0]!r}?)"
    # A real key in the wrong table. The usual cause: a top-level key added at the end of the
    # file, where TOML puts it in the last [section] above it.
    if name in _TOP_LEVEL:
        return f"{problem} (top-level keys must come before the first [section])"
    home = next((section for section, names in _SECTIONS.items() if name in names), None)
    return problem if home is None else f"{problem} (it belongs in [{home}])"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(keys: Sequence[str]) -> str:
    """A key path as TOML writes it: `targets."db-07.lab".on_bugcheck`."""
    return ".".join(
        key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False) for key in keys
    )


# --- Finding the line of a key -------------------------------------------------------------------
#
# The scanner reads the text line by line, remembering the table opened by the last [header] (or
# [[header]]), and works out the full key path each `key = value` line defines. The line for a
# wanted path is the first one that defines the path exactly or a path inside it (`a.b.c = 1`
# defines `a.b` too). Failing that it is the first that defines the closest enclosing path: the
# key of an inline table (`serial = { baud_rates = "fast" }`, always on one line in TOML 1.0), or
# a table header. Quoted keys and escapes are undone by tomllib itself. A line inside a
# multi-line string could look like a key or a header, so those strings are skipped. This is a
# heuristic for messages only; the document itself comes from tomllib.

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
# Only a comment may follow a header, so `[1],` in a multi-line array is not taken for one.
_TABLE_HEADER = re.compile(rf"\s*\[\[?\s*({_KEY})\s*\]\]?\s*(?:#.*)?")
_KEY_VALUE = re.compile(rf"\s*({_KEY})\s*=(.*)")


def _key_line(text: str, wanted: tuple[str, ...]) -> int | None:
    best_line, best_depth = None, 0
    table: tuple[str, ...] = ()
    string_end: str | None = None  # the closing quotes of the multi-line string we are in
    for number, line in enumerate(text.split("\n"), start=1):
        if string_end is not None:
            if string_end in line:
                string_end = None
            continue
        if header := _TABLE_HEADER.fullmatch(line):
            table = _key_path(header[1])
            defined = table
        elif pair := _KEY_VALUE.match(line):
            defined = table + _key_path(pair[1])
            string_end = _opened_string(pair[2])
        else:
            continue
        depth = min(len(defined), len(wanted))
        if defined[:depth] != wanted[:depth]:
            continue
        if depth == len(wanted):
            return number
        if depth > best_depth:
            best_line, best_depth = number, depth
    return best_line


def _key_path(key: str) -> tuple[str, ...]:
    """The names in a dotted TOML key as written (`serial."ports"` -> ("serial", "ports"))."""
    try:
        node: object = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:  # e.g. a bad escape on a line of a string we took for a key
        return ()
    path: list[str] = []
    while isinstance(node, dict):
        ((name, node),) = node.items()
        path.append(name)
    return tuple(path)


def _opened_string(value: str) -> str | None:
    """The closing quotes of a multi-line string that this value opens and does not close."""
    value = value.lstrip()
    for quotes in ('"""', "'''"):
        if value.startswith(quotes) and quotes not in value[len(quotes) :]:
            return quotes
    return None


# --- Values --------------------------------------------------------------------------------------


class _Invalid(Exception):
    """A value a converter refuses; the reader adds the file, line and key."""


_Convert = Callable[[object], Any]


def _describe(value: object) -> str:
    """A value as the person who wrote the file would recognise it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"  # the only other kind of TOML value


def _expected(what: str, value: object) -> str:
    return f"expected {what}, got {_describe(value)}"


def _integer(lowest: int, highest: int | None = None) -> _Convert:
    what = (
        f"an integer of at least {lowest}"
        if highest is None
        else f"an integer from {lowest} to {highest}"
    )

    def convert(value: object) -> int:
        if (
            isinstance(value, bool)  # TOML true and false are bools, which Python counts as ints
            or not isinstance(value, int)
            or value < lowest
            or (highest is not None and value > highest)
        ):
            raise _Invalid(_expected(what, value))
        return value

    return convert


def _seconds(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Invalid(_expected("a positive number of seconds", value))
    # TOML allows inf and nan.
    if not math.isfinite(value) or value <= 0:
        raise _Invalid(_expected("a positive number of seconds", value))
    return float(value)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(_expected("true or false", value))
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(_expected("a string", value))
    return value


def _one_of(*choices: str) -> _Convert:
    what = ", ".join(repr(choice) for choice in choices[:-1]) + f" or {choices[-1]!r}"

    def convert(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(_expected(what, value))
        return value

    return convert


def _group_name(value: object) -> str:
    # Not checked against /etc/group: the group may come from a directory service, or be created
    # after the file is written; the daemon reports a missing group when it makes the socket.
    if not isinstance(value, str) or not value:
        raise _Invalid(_expected("a group name", value))
    return value


def _absolute_path(value: object) -> Path:
    if not isinstance(value, str) or not posixpath.isabs(value) or "\0" in value:
        raise _Invalid(_expected("an absolute path", value))
    return Path(value)


# sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included.
_SOCKET_PATH_MAX = 107


def _socket_path(value: object) -> Path:
    path = _absolute_path(value)
    size = len(os.fsencode(path))
    if size > _SOCKET_PATH_MAX:
        raise _Invalid(f"a Unix socket path has at most {_SOCKET_PATH_MAX} bytes, this has {size}")
    return path


def _is_device(value: object) -> bool:
    # normpath leaves a path alone only if it has no '..', '.', '//' or trailing '/', so
    # "/dev/../etc/passwd" and "/dev/" fail here.
    return (
        isinstance(value, str)
        and value.startswith("/dev/")
        and posixpath.normpath(value) == value
        and "\0" not in value
    )


def _devices(everything: str) -> _Convert:
    """``everything`` (a word such as 'auto') or a list of distinct device paths."""
    what = f"{everything!r} or a list of device paths under /dev/"

    def convert(value: object) -> str | tuple[str, ...]:
        if value == everything:
            return everything
        if not isinstance(value, list):
            raise _Invalid(_expected(what, value))
        for item in value:
            if not _is_device(item):
                raise _Invalid(_expected(what, item))
        return _distinct(value)

    return convert


# The lowest and highest rates termios names (B50, B4000000); Linux serial drivers accept any
# rate between them, so only these bounds are checked.
_BAUD_MIN = 50
_BAUD_MAX = 4_000_000


def _baud_rates(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _Invalid(_expected("a list of positive integers", value))
    if not value:
        raise _Invalid(_expected("at least one baud rate", value))
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):  # bool: see _integer
            raise _Invalid(_expected("a list of positive integers", item))
        if not _BAUD_MIN <= item <= _BAUD_MAX:
            raise _Invalid(_expected(f"baud rates from {_BAUD_MIN} to {_BAUD_MAX}", item))
    return _distinct(value)


def _triage_tiers(value: object) -> tuple[str, ...]:
    names = [tier.value for tier in TriageTier]
    what = "a list of " + ", ".join(repr(name) for name in names)
    if not isinstance(value, list) or not value:
        raise _Invalid(_expected(what, value))
    for item in value:
        if item not in names:
            raise _Invalid(_expected(what, item))
    return _distinct(value)


def _distinct(items: list[Any]) -> tuple[Any, ...]:
    seen = set()
    for item in items:
        if item in seen:
            raise _Invalid(f"{_describe(item)} is listed twice")
        seen.add(item)
    return tuple(items)


# A range of ports is written "50000-50009"; more than this many in one range is a typo.
_MAX_PORT_RANGE = 256


def _udp_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Invalid(_expected("a UDP port from 1 to 65535", value))
    return value


def _udp_ports(value: object) -> tuple[int, ...]:
    what = 'a list of UDP ports or ranges, e.g. [50000, "50010-50019"]'
    if not isinstance(value, list):
        raise _Invalid(_expected(what, value))
    ports: list[int] = []
    for item in value:
        if isinstance(item, str) and re.fullmatch(r"\d+-\d+", item):
            first, last = (int(part) for part in item.split("-"))
            if not 1 <= first <= last <= 65535 or last - first >= _MAX_PORT_RANGE:
                raise _Invalid(f"{item!r} is not a range of at most {_MAX_PORT_RANGE} ports")
            ports.extend(range(first, last + 1))
        elif isinstance(item, int) and not isinstance(item, bool):
            ports.append(_udp_port(item))
        else:
            raise _Invalid(_expected(what, item))
    return _distinct(ports)


def _ip_address(value: object) -> str:
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise _Invalid(_expected('an IP address such as "0.0.0.0" or "10.0.0.2"', value)) from None


def _ip_interface(value: object) -> str:
    """An address with its prefix length ("169.254.50.1/16"), or "" for none."""
    if value == "":
        return ""
    what = 'an address with a prefix length such as "169.254.50.1/16", or "" for none'
    if not isinstance(value, str) or "/" not in value:
        raise _Invalid(_expected(what, value))
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise _Invalid(_expected(what, value)) from None


# Linux network interface names: at most 15 bytes, no '/', ':' or white space (dev_valid_name).
_INTERFACE_NAME = re.compile(r"[^/:\s]{1,15}")


def _interface_names(value: object) -> tuple[str, ...]:
    what = 'a list of network interface names, e.g. ["eth0", "usb0"]'
    if not isinstance(value, list):
        raise _Invalid(_expected(what, value))
    for item in value:
        if not isinstance(item, str) or not _INTERFACE_NAME.fullmatch(item) or item in (".", ".."):
            raise _Invalid(_expected("a network interface name (1 to 15 characters)", item))
    return _distinct(value)


def _command_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise _Invalid(_expected('a program name or absolute path, e.g. "/usr/sbin/ip"', value))
    if "/" in value and not value.startswith("/"):
        raise _Invalid(_expected("a program name or an absolute path", value))
    return value


def _relay_ports(value: object) -> dict[str, int]:
    """Target id -> TCP port."""
    if not isinstance(value, dict):
        raise _Invalid(
            _expected('a table of ports by target id, e.g. { "kdnet-50000" = 5801 }', value)
        )
    ports: dict[str, int] = {}
    for target_id, port in value.items():
        if not _TARGET_ID.fullmatch(target_id):
            raise _Invalid(_expected(_TARGET_ID_DESCRIPTION, target_id))
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise _Invalid(f"the port of {target_id!r} is not a TCP port from 1 to 65535")
        if port in ports.values():
            raise _Invalid(f"port {port} is given to two targets")
        ports[target_id] = port
    return ports


def _kdnet_keys(value: object) -> dict[int, str]:
    """Port -> key. A bad key is described without repeating it: keys must not reach logs."""
    if not isinstance(value, dict):
        raise _Invalid(_expected('a table of keys by port, e.g. keys = { 50000 = "..." }', value))
    keys: dict[int, str] = {}
    for port_text, key in value.items():
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise _Invalid(f"{port_text!r} is not a UDP port (the table is keyed by port)")
        try:
            parse_key(key if isinstance(key, str) else "")
        except KdnetKeyError:
            raise _Invalid(
                f"the key for port {port_text} is not a KDNET key: it should be four words of "
                "0-9 and a-z separated by dots, as `bcdedit /dbgsettings` prints it"
            ) from None
        keys[int(port_text)] = key.strip().lower()
    return keys


# --- The schema ----------------------------------------------------------------------------------
# Each table's keys and how each value is checked and converted. The dataclasses above hold the
# defaults; a key left out of the file keeps its default.

_TOP_LEVEL: dict[str, _Convert] = {
    "state_dir": _absolute_path,
    "control_socket": _socket_path,
    "control_group": _group_name,
    "replay_events": _integer(0, 100_000),
}

_POLICY: dict[str, _Convert] = {
    "on_bugcheck": _one_of("hold", "continue", "reboot"),
    "dump_on_bugcheck": _one_of("auto", "triage", "full", "none"),
    "break_on_connect": _boolean,
    "prompt_answer": _string,
}

_SECTIONS: dict[str, dict[str, _Convert]] = {
    "serial": {
        "ports": _devices("auto"),
        "baud_rates": _baud_rates,
        "active_probe": _devices("all"),
        "probe_seconds": _seconds,
        "rescan_seconds": _seconds,
    },
    "policy": _POLICY,
    "capture": {
        "quota_mb": _integer(1),
        "fsync_interval": _seconds,
        "wire_capture": _boolean,
        "triage_max_mb": _integer(1),
        "triage_tiers": _triage_tiers,
        "dump_min_free_mb": _integer(0),
    },
    "kdnet": {
        "ports": _udp_ports,
        "interface": _ip_address,
        "interfaces": _interface_names,
        "keys": _kdnet_keys,
    },
    "usb": {
        "eem_address": _ip_interface,
        "ip_command": _command_name,
    },
    "relay": {
        "enabled": _boolean,
        "bind": _ip_address,
        "first_port": _integer(1, 65535),
        "ports": _relay_ports,
        "silence_seconds": _seconds,
    },
}

# Target ids name directories under <state_dir>/targets/.
_TARGET_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TARGET_ID_DESCRIPTION = "a target id (1 to 64 letters, digits, '.', '_' or '-')"
