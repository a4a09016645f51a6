"""What the TUI knows about the cart, built from the daemon's `status` replies and events.

Pure: no Textual, no I/O; the clock is passed in. The screens read this model and never the
control socket, so they can be tested with fixed data and redrawn at their own pace however
fast the events come.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from cartd import events as ev

# Scrollback of each target's DbgPrint console, and of its event timeline. At a full serial
# line (about 100 lines a second) the console holds the last few minutes; the complete text is
# in the target's console.log.
CONSOLE_LINES = 20_000
TIMELINE_ENTRIES = 2_000
OWNER_DAEMON = "cartd"


class Tone(Enum):
    """How a state should look; the word always says it too, colour only helps."""

    GOOD = "good"
    BUSY = "busy"
    WARN = "warn"
    BAD = "bad"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class DisplayState:
    word: str
    tone: Tone


@dataclass(slots=True)
class Line:
    """One line of a console or timeline: the time it arrived, its text, and its kind (the
    event type, which the view uses for colour)."""

    time: str
    text: str
    kind: str = "debug_print"


@dataclass(slots=True)
class LineLog:
    """A bounded list of lines that remembers how many fell off the front, so a view that is
    not following can keep its place as old lines go."""

    limit: int
    lines: deque[Line] = field(init=False)
    dropped: int = 0
    open_line: bool = False  # the last line has had no newline yet (DbgPrint mid-line)

    def __post_init__(self) -> None:
        self.lines = deque(maxlen=self.limit)

    def append(self, line: Line) -> None:
        if len(self.lines) == self.limit:
            self.dropped += 1
        self.lines.append(line)

    def add_text(self, time: str, text: str, kind: str) -> None:
        """Add DbgPrint text: a print may hold several lines, or end mid-line and be continued
        by the next print."""
        if not text:
            return
        text = text.replace("\r\n", "\n")
        parts = text.split("\n")
        ends_line = text.endswith("\n")
        if ends_line:
            parts.pop()  # the nothing after the last newline
        if self.open_line and self.lines and parts:
            self.lines[-1].text += parts.pop(0)
        for part in parts:
            self.append(Line(time, part, kind))
        self.open_line = not ends_line


@dataclass(slots=True)
class LinkInfo:
    link: str
    device: str
    target: str
    state: str
    kind: str = "serial"
    port: int | None = None
    peer: str | None = None
    baud: int | None = None

    @property
    def needs_key(self) -> bool:
        return self.kind == "kdnet" and self.state in (
            "waiting for a key",
            "key needed",
            "key mismatch",
        )

    def describe(self) -> str:
        if self.kind == "kdnet":
            where = f"KDNET UDP port {self.port}" if self.port is not None else "KDNET"
            return f"{where} from {self.peer}" if self.peer else where
        rate = f" at {self.baud} baud" if self.baud else ""
        return f"serial {self.device}{rate}"


@dataclass(frozen=True, slots=True)
class DumpActivity:
    """A dump being read now: what the progress bar shows."""

    path: str
    kind: str
    pages_done: int
    pages: int
    bytes_done: int
    rate: float  # bytes a second
    eta_seconds: float | None

    @property
    def share(self) -> float:
        return self.pages_done / self.pages if self.pages else 0.0


@dataclass(slots=True)
class TargetInfo:
    target: str
    link: str = ""
    state: str = "waiting"
    owner: str = OWNER_DAEMON
    identity: dict[str, Any] | None = None
    stop_reason: str | None = None
    bugcheck: ev.Bugcheck | None = None
    last_traffic: float | None = None
    noise: dict[str, int] = field(default_factory=dict)
    records: str = ""
    recording: bool = True
    records_bytes: int | None = None
    dump: DumpActivity | None = None
    last_dump: str = ""  # what became of the last dump, for people
    present: bool = True  # in the daemon's last status (false: the daemon forgot it)
    console: LineLog = field(default_factory=lambda: LineLog(CONSOLE_LINES))
    timeline: LineLog = field(default_factory=lambda: LineLog(TIMELINE_ENTRIES))

    @property
    def build(self) -> str:
        if not self.identity:
            # cartd reads GetVersion when the target stops; it does not stop a running one
            # just to ask (unless policy break_on_connect says so).
            return "build not known until it stops"
        return f"build {self.identity.get('build')} {self.identity.get('machine', '')}".strip()

    @property
    def silent(self) -> bool:
        """Its link is up but it has said nothing: a target that booted without a debugger
        sends nothing until something breaks in (kd-serial-and-dumps.md, KdDebuggerNotPresent)."""
        return self.state == "waiting" and self.last_traffic is None

    @property
    def kernel_base(self) -> str:
        return str(self.identity.get("kernel_base", "")) if self.identity else ""

    @property
    def processors(self) -> int | None:
        value = self.identity.get("processors") if self.identity else None
        return value if isinstance(value, int) else None


class Connection(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    NO_DAEMON = "no daemon"
    LOST = "lost"


@dataclass(slots=True)
class CartModel:
    """Everything the screens show. `changes` counts updates so a view redraws only when it
    must; `apply_*` return nothing and never raise on data they do not know."""

    socket: str
    connection: Connection = Connection.CONNECTING
    problem: str = ""  # why we are not connected, for people
    attempts: int = 0
    server: str = ""
    links: dict[str, LinkInfo] = field(default_factory=dict)
    targets: dict[str, TargetInfo] = field(default_factory=dict)
    state_dir: str = ""
    disk_free_bytes: int | None = None
    dropped_events: int = 0
    changes: int = 0
    # Bugchecks that happened while the TUI was open (not ones replayed from before it started),
    # for the app to announce; `live_since` is when it started, as an event time.
    live_since: str = ""
    alerts: list[ev.Bugcheck] = field(default_factory=list)
    # Events up to this time were applied; a replay after a reconnect repeats some of them.
    _last_time: str = ""
    _at_last_time: list[ev.Event] = field(default_factory=list)

    # --- connection -------------------------------------------------------------------------

    def connecting(self, attempt: int) -> None:
        self.attempts = attempt
        self.changes += 1

    def connected(self, server: str) -> None:
        self.connection = Connection.CONNECTED
        self.server = server
        self.problem = ""
        self.attempts = 0
        self.changes += 1

    def disconnected(self, problem: str, *, daemon_seen: bool) -> None:
        self.connection = Connection.LOST if daemon_seen else Connection.NO_DAEMON
        self.problem = problem
        self.changes += 1

    # --- status -----------------------------------------------------------------------------

    def apply_status(self, status: Mapping[str, Any]) -> None:
        self.state_dir = str(status.get("state_dir", ""))
        free = status.get("disk_free_bytes")
        self.disk_free_bytes = free if isinstance(free, int) else None
        self.links = {}
        for item in _objects(status.get("links")):
            info = LinkInfo(
                link=str(item.get("link", "")),
                device=str(item.get("device", "")),
                target=str(item.get("target", "")),
                state=str(item.get("state", "")),
                kind=str(item.get("kind", "serial")),
                port=_int_or_none(item.get("port")),
                peer=item.get("peer") if isinstance(item.get("peer"), str) else None,
                baud=_int_or_none(item.get("baud")),
            )
            self.links[info.link] = info
        present = set()
        for item in _objects(status.get("targets")):
            target = self.target(str(item.get("target", "")))
            present.add(target.target)
            target.link = str(item.get("link", ""))
            target.state = str(item.get("state", "waiting"))
            target.owner = str(item.get("owner") or OWNER_DAEMON)
            identity = item.get("identity")
            target.identity = identity if isinstance(identity, dict) else None
            target.stop_reason = item.get("stop_reason")
            target.bugcheck = _bugcheck_or_none(item.get("bugcheck"))
            traffic = item.get("last_traffic")
            target.last_traffic = float(traffic) if isinstance(traffic, int | float) else None
            noise = item.get("noise")
            target.noise = dict(noise) if isinstance(noise, dict) else {}
            target.records = str(item.get("records", ""))
            target.recording = bool(item.get("recording", True))
            target.records_bytes = _int_or_none(item.get("records_bytes"))
            target.dump = _dump_or_none(item.get("dump"))
        for target in self.targets.values():
            target.present = target.target in present
        self.changes += 1

    def target(self, target_id: str) -> TargetInfo:
        target = self.targets.get(target_id)
        if target is None:
            target = self.targets[target_id] = TargetInfo(target_id)
        return target

    # --- events -----------------------------------------------------------------------------

    def apply_event(self, event: ev.Event) -> None:
        if self._already_applied(event):
            return
        self.changes += 1
        subject = getattr(event, "target", None)
        if not isinstance(subject, str):
            self._apply_link_event(event)
            return
        target = self.target(subject)
        match event:
            case ev.DebugPrint():
                target.console.add_text(event.time, event.text, event.type)
                return
            case ev.Stopped():
                target.state = "bugchecked" if event.reason.startswith("bugcheck") else "stopped"
                target.stop_reason = event.reason
            case ev.Running():
                target.state = "running"
                target.stop_reason = None
            case ev.TargetRebooted():
                target.state = "rebooting"
                target.bugcheck = None
            case ev.Bugcheck():
                target.state = "bugchecked"
                target.bugcheck = event
                if event.time >= self.live_since:
                    self.alerts.append(event)
            case ev.OwnerChanged():
                target.owner = event.owner or OWNER_DAEMON
            case ev.TargetConnected():
                if target.state == "waiting":
                    target.state = "running"
            case ev.CaptureError():
                target.recording = False
            case ev.CaptureResumed():
                target.recording = True
            case ev.DumpStarted():
                target.dump = DumpActivity(
                    event.path, event.kind, event.resumed_pages, event.pages, 0, 0.0, None
                )
            case ev.DumpProgress():
                kind = target.dump.kind if target.dump is not None else ""
                target.dump = DumpActivity(
                    event.path,
                    kind,
                    event.pages_done,
                    event.pages,
                    event.bytes_done,
                    event.rate,
                    event.eta_seconds,
                )
                return  # the progress bar shows it; the timeline keeps the milestones
            case ev.DumpWritten() | ev.DumpStopped():
                target.dump = None
                target.last_dump = ev.describe(event)
        target.timeline.append(Line(event.time, ev.describe(event), event.type))

    def _apply_link_event(self, event: ev.Event) -> None:
        link = getattr(event, "link", "")
        for target in self.targets.values():
            if target.link == link:
                if isinstance(event, ev.LinkDown):
                    target.state = "link_down"
                elif isinstance(event, ev.ProtocolNoise):
                    target.noise = dict(event.counters)
                    return  # running totals, not worth a line of their own
                target.timeline.append(Line(event.time, ev.describe(event), event.type))

    def events_dropped(self, count: int) -> None:
        self.dropped_events += count
        self.changes += 1

    def _already_applied(self, event: ev.Event) -> bool:
        """True for an event a replay repeats (it was applied before a reconnect). Event times
        only grow within one daemon; a restarted daemon replays nothing older than itself."""
        if event.time < self._last_time:
            return True
        if event.time > self._last_time:
            self._last_time = event.time
            self._at_last_time = []
        elif event in self._at_last_time:
            return True
        self._at_last_time.append(event)
        return False

    # --- what the dashboard lists -----------------------------------------------------------

    def slots(self) -> list[Slot]:
        """One entry per target, then one per link that has no target yet (a KDNET port
        waiting for its key, a serial port nobody talks on): what the dashboard lists."""
        slots: list[Slot] = []
        linked = set()
        for target in sorted(self.targets.values(), key=lambda t: t.target):
            if not target.present:
                continue
            link = self.links.get(target.link)
            linked.add(target.link)
            slots.append(Slot(target.target, target, link))
        for link in sorted(self.links.values(), key=lambda item: item.link):
            if link.link not in linked:
                slots.append(Slot(link.target or link.link, None, link))
        return slots


@dataclass(frozen=True, slots=True)
class Slot:
    """A row of the dashboard: a target with its link, or a link with no target yet."""

    name: str
    target: TargetInfo | None
    link: LinkInfo | None

    @property
    def state(self) -> DisplayState:
        return display_state(self.target, self.link)


# The words of every state the TUI shows; the tone only helps (rule: not colour alone).
_TARGET_STATES: dict[str, DisplayState] = {
    "waiting": DisplayState("waiting for target", Tone.IDLE),
    "running": DisplayState("running", Tone.GOOD),
    "stopped": DisplayState("stopped", Tone.WARN),
    "bugchecked": DisplayState("BUGCHECKED", Tone.BAD),
    "rebooting": DisplayState("rebooting", Tone.BUSY),
    "link_down": DisplayState("link down", Tone.BAD),
}
CONNECTING = DisplayState("connecting", Tone.BUSY)
KEY_NEEDED = DisplayState("key needed", Tone.WARN)
WAITING_FOR_TARGET = _TARGET_STATES["waiting"]
OWNED_REMOTELY = "owned remotely"


def display_state(target: TargetInfo | None, link: LinkInfo | None) -> DisplayState:
    if target is None:
        if link is not None and link.needs_key:
            return KEY_NEEDED
        if link is not None and link.state.startswith(("probing", "connected")):
            # KD heard (or being listened for) on the link, no target session yet.
            return CONNECTING
        return WAITING_FOR_TARGET
    if target.owner != OWNER_DAEMON:
        return DisplayState(f"{OWNED_REMOTELY} ({target.owner})", Tone.BUSY)
    if target.dump is not None:
        return DisplayState(f"dumping {target.dump.share:.0%}", Tone.BUSY)
    # A state this TUI does not know (a newer daemon's) is shown as the daemon words it.
    return _TARGET_STATES.get(target.state, DisplayState(target.state or "unknown", Tone.IDLE))


# --- formatting shared by the views ---------------------------------------------------------


def since(moment: float | None, now: float) -> str:
    """'4 s ago', '3 min ago', '2 h ago', 'never'."""
    if moment is None:
        return "never"
    seconds = max(0.0, now - moment)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def size(count: int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def noise_summary(noise: Mapping[str, int], *, every_kind: bool = False) -> str:
    """'line noise 19 (garbage 17)': the total and the commonest kind, or every kind."""
    total = sum(noise.values())
    if total == 0:
        return "no line noise"
    kinds = sorted(noise.items(), key=lambda item: (-item[1], item[0]))
    shown = kinds if every_kind else kinds[:1]
    parts = ", ".join(f"{kind.replace('_', ' ')} {count}" for kind, count in shown)
    return f"line noise {total} ({parts})"


def clock_time(iso: str, *, local: Callable[[datetime], datetime] = datetime.astimezone) -> str:
    """HH:MM:SS.mmm in the cart's local time, from an event's UTC time."""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso[:12]
    return local(moment).strftime("%H:%M:%S.%f")[:12]


def _objects(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dump_or_none(value: object) -> DumpActivity | None:
    if not isinstance(value, dict):
        return None
    eta = value.get("eta_seconds")
    rate = value.get("rate")
    return DumpActivity(
        path=str(value.get("path", "")),
        kind=str(value.get("kind", "")),
        pages_done=_int_or_none(value.get("pages_done")) or 0,
        pages=_int_or_none(value.get("pages")) or 0,
        bytes_done=_int_or_none(value.get("bytes_done")) or 0,
        rate=float(rate) if isinstance(rate, int | float) else 0.0,
        eta_seconds=float(eta) if isinstance(eta, int | float) else None,
    )


def _bugcheck_or_none(value: object) -> ev.Bugcheck | None:
    if not isinstance(value, dict):
        return None
    try:
        event = ev.event_from_json(value)
    except ev.EventFormatError:
        return None
    return event if isinstance(event, ev.Bugcheck) else None
