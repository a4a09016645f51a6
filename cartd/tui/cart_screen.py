"""What every main screen can do to the target it shows: break in, continue, reboot, give a
KDNET key, show how to watch or attach a debugger from elsewhere, take the target back from a
remote debugger. Both the dashboard (for the highlighted row) and
the target view (for its target) are `CartScreen`s; the commands go to the daemon through the
app's `DaemonConnection` and what happens next arrives as events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual.binding import Binding, BindingType
from textual.screen import Screen

from cartd.control.protocol import ControlError
from cartd.events import format_duration
from cartd.tui.dialogs import ConfirmDialog, DumpDialog, KeyDialog, TextDialog
from cartd.tui.model import OWNER_DAEMON, CartModel, Connection, Slot, size

if TYPE_CHECKING:
    from cartd.tui.app import CartdApp

# The target states each command makes sense in (the daemon checks again, and says why not).
_TARGET_COMMANDS = {
    # A waiting target may be one that booted without a debugger: silent until broken into.
    "break_in": frozenset({"running", "waiting", "rebooting"}),
    "go": frozenset({"stopped", "bugchecked"}),
    "reboot": frozenset({"running", "waiting", "rebooting", "stopped", "bugchecked"}),
    "dump": frozenset({"stopped", "bugchecked"}),
}


class CartScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        # First, so the footer always has room for it, even at 80 columns.
        Binding("question_mark", "app.help", "Help", tooltip="list every key"),
        Binding("b", "break_in", "Break", tooltip="break into the running target and hold it"),
        Binding("g", "go", "Go", tooltip="let a stopped target run (asks first at a bugcheck)"),
        Binding("r", "reboot", "Reboot", tooltip="restart the target (asks first)"),
        Binding(
            "d", "dump", "Dump", tooltip="write a crash dump of the stopped target (or stop one)"
        ),
        Binding("k", "key", "Key", tooltip="give the KDNET key of a target on the network"),
        Binding(
            "a",
            "attach_recipe",
            "Watch remotely",
            show=False,
            tooltip="how to watch from elsewhere over SSH, or attach WinDbg through the KD relay",
        ),
        Binding(
            "t",
            "take_over",
            "Take over",
            tooltip="disconnect the remote debugger that owns the target (asks first)",
        ),
    ]

    # Set by each screen's on_mount, once its widgets exist: only then can it be redrawn.
    ready = False
    _bindings_key: tuple[object, ...] | None = None

    @property
    def cart(self) -> CartdApp:
        return cast("CartdApp", self.app)

    @property
    def model(self) -> CartModel:
        return self.cart.model

    def selected_slot(self) -> Slot | None:
        """The target (or link) the commands apply to."""
        raise NotImplementedError

    def refresh_from_model(self, now: float) -> None:
        """Redraw from the model; the app calls this when it changed, and once a second."""
        raise NotImplementedError

    def refresh_bindings_if_changed(self) -> None:
        """The footer rebuilds all its keys on refresh_bindings(): do it only when what
        check_action() decides on has changed, not at every redraw."""
        slot = self.selected_slot()
        key = (
            self.model.connection,
            slot.name if slot else None,
            slot.target.state if slot and slot.target else None,
            slot.link.kind if slot and slot.link else None,
            slot.target.owner if slot and slot.target else None,
        )
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()

    def on_screen_resume(self) -> None:
        """Only the screen on top is redrawn while others are covered: catch up."""
        if self.ready:
            self.refresh_from_model(self.cart.clock())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Commands that do not fit the selected target stay in the footer, greyed out; the
        KDNET key is offered only where there is a KDNET link, and take-over only while a
        remote debugger owns the target (which greys out the others)."""
        if action == "key":
            slot = self.selected_slot()
            return slot is not None and slot.link is not None and slot.link.kind == "kdnet"
        if action == "take_over":
            slot = self.selected_slot()
            return (
                self.model.connection is Connection.CONNECTED
                and slot is not None
                and slot.target is not None
                and slot.target.owner != OWNER_DAEMON
            )
        states = _TARGET_COMMANDS.get(action)
        if states is None:
            return True
        slot = self.selected_slot()
        if self.model.connection is not Connection.CONNECTED or slot is None or not slot.target:
            return None
        if slot.target.owner != OWNER_DAEMON:
            return None  # a remote debugger drives it: the daemon refuses these until `t`
        return True if slot.target.state in states else None

    # --- the commands -----------------------------------------------------------------------

    def action_break_in(self) -> None:
        target = self._target_id()
        if target is not None:
            self._command("break", target, f"break-in sent to {target}")

    def action_go(self) -> None:
        slot = self.selected_slot()
        target = self._target_id()
        if slot is None or slot.target is None or target is None:
            return
        if slot.target.state != "bugchecked":
            self._command("continue", target, f"{target} told to continue")
            return
        question = (
            f"{target} is held at its bugcheck. If it runs on, Windows writes its own dump "
            "(if configured) and restarts, and the stopped state is gone for good.\n\n"
            "Let it continue?"
        )
        self._confirmed(
            ConfirmDialog("Continue a bugcheck?", question),
            "continue",
            target,
            f"{target} told to continue",
        )

    def action_reboot(self) -> None:
        target = self._target_id()
        if target is None:
            return
        question = (
            f"Restart {target} now? Whatever it is doing is lost. cartd keeps recording, and "
            "the records so far stay on disk."
        )
        self._confirmed(
            ConfirmDialog("Reboot the target?", question),
            "reboot",
            target,
            f"{target} told to reboot",
        )

    def action_dump(self) -> None:
        slot = self.selected_slot()
        target = self._target_id()
        if target is None or slot is None or slot.target is None:
            return
        if slot.target.dump is not None:
            # One dump at a time: d on a target being dumped offers to stop it.
            question = (
                f"Stop the {slot.target.dump.kind} dump of {target}? What was read is kept: it "
                "goes on if you ask again while the target is at this stop, and becomes a dump "
                "of what was read once the target runs on."
            )
            self._confirmed(
                ConfirmDialog("Stop the dump?", question),
                "dump",
                target,
                f"dump of {target} stopped",
                cancel=True,
            )
            return

        async def offer() -> None:
            lines = []
            for kind in ("triage", "full"):
                try:
                    plan = await self.cart.connection.call(
                        "dump", target=target, kind=kind, estimate_only=True
                    )
                except ControlError as error:
                    self.notify(error.message, title="dump refused", severity="error", timeout=8)
                    return
                lines.append(f"{kind}: {dump_estimate_text(plan)}")
            lines.append("")
            lines.append("The dump appears in the target's dumps/ directory once complete.")
            self.app.push_screen(DumpDialog(target, "\n".join(lines)), chosen)

        def chosen(kind: str | None) -> None:
            if kind:
                self._command("dump", target, f"{kind} dump of {target} started", kind=kind)

        self.run_worker(offer(), group="commands")

    def action_key(self) -> None:
        slot = self.selected_slot()
        if slot is None or slot.link is None or slot.link.port is None:
            return
        port = slot.link.port

        async def send(key: str) -> str | None:
            try:
                await self.cart.connection.call("key", port=port, key=key)
            except ControlError as error:
                return error.message
            return None

        def stored(accepted: bool | None) -> None:
            if accepted:
                self.notify(f"key stored: cartd now answers the target on UDP port {port}")

        self.app.push_screen(KeyDialog(port, send), stored)

    def action_attach_recipe(self) -> None:
        slot = self.selected_slot()
        target = self._target_id()
        watch = watch_recipe(self.cart.hostname, slot.name if slot else None, self.model.state_dir)
        if target is None:
            self.app.push_screen(TextDialog("Watch from elsewhere", watch))
            return

        async def show() -> None:
            try:
                info = await self.cart.connection.call("attach_info", target=target)
            except ControlError as error:
                attach = f"(how to attach a debugger is not known: {error.message})"
            else:
                attach = attach_recipe(info)
            self.app.push_screen(
                TextDialog(f"Watch or debug {target} from elsewhere", f"{attach}\n\n{watch}")
            )

        self.run_worker(show(), group="commands")

    def action_take_over(self) -> None:
        slot = self.selected_slot()
        target = self._target_id()
        if target is None or slot is None or slot.target is None:
            return
        owner = slot.target.owner
        question = (
            f"{owner} is debugging {target} through the KD relay. Disconnect that debugger? "
            "A stopped target stays stopped, and cartd looks after it again; the relay is kept "
            "for you for a minute, so you can attach your own debugger."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(take(), group="commands")

        async def take() -> None:
            try:
                taken = await self.cart.connection.call("take_over", target=target)
            except ControlError as error:
                self.notify(error.message, title="take-over refused", severity="error", timeout=8)
                return
            self.notify(take_over_text(target, taken), timeout=10)

        self.app.push_screen(ConfirmDialog("Take over the target?", question), answered)

    def _target_id(self) -> str | None:
        slot = self.selected_slot()
        return slot.target.target if slot is not None and slot.target is not None else None

    def _confirmed(
        self, dialog: ConfirmDialog, method: str, target: str, done: str, **params: object
    ) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._command(method, target, done, **params)

        self.app.push_screen(dialog, answered)

    def _command(self, method: str, target: str, done: str, **params: object) -> None:
        """Send in the background: the screen stays live while the daemon answers."""

        async def send() -> None:
            try:
                await self.cart.connection.call(method, target=target, **params)
            except ControlError as error:
                self.notify(error.message, title=f"{method} refused", severity="error", timeout=8)
            else:
                self.notify(done)

        self.run_worker(send(), group="commands")


def dump_estimate_text(plan: Mapping[str, Any]) -> str:
    """'412 pages (1.6 MiB), about 2 min': what the daemon's estimate says."""
    seconds = plan.get("estimate_seconds")
    text = f"{plan.get('pages', 0)} pages ({size(plan.get('bytes'))})"
    return text + (
        f", about {format_duration(seconds)}" if isinstance(seconds, int | float) else ""
    )


def watch_recipe(host: str, name: str | None, state_dir: str | None) -> str:
    """How someone else sees what this screen shows, over SSH."""
    lines = [
        "Anyone with an SSH login on this cart sees this same screen:",
        "",
        f"    ssh -t {host} cartd tui",
        "",
        "Their keys act on the targets just as yours do. To let someone only watch, give",
        "them the read-only commands instead:",
        "",
        f"    ssh {host} cartd events --follow" + (f" --target {name}" if name else ""),
        f"    ssh {host} cartd status",
        "",
        f"Everything is also on disk under {state_dir or 'the state directory'}/targets/.",
    ]
    return "\n".join(lines)


def attach_recipe(info: Mapping[str, Any]) -> str:
    """What the daemon's attach_info says, as lines to paste: the tunnel, then the debugger."""
    target = info.get("target", "?")
    if not info.get("enabled", True):
        return (
            f"The KD relay is off on this cart ([relay] enabled = false): no debugger can "
            f"attach to {target} through cartd."
        )
    commands = info.get("commands") or {}
    owner = str(info.get("owner") or OWNER_DAEMON)
    tcp_state = str(info.get("tcp_state") or "")
    if tcp_state.startswith("listening on "):
        tcp_state = "listening"
    lines = [
        f"Attach WinDbg to {target} through its KD relay (TCP port {info.get('port')}, "
        f"{tcp_state}). On your machine:",
        "",
        f"    {commands.get('ssh', '?')}",
        f"    {commands.get('windbg', '?')}",
        "or, with kd:",
        f"    {commands.get('kd', '?')}",
    ]
    if commands.get("ntoseye"):
        lines += ["", "On the cart itself:", f"    {commands['ntoseye']}"]
    now = "none is attached now" if owner == OWNER_DAEMON else f"{owner} has it now"
    lines += [
        "",
        f"One debugger at a time; {now}. To take it over, press t here, or:",
        f"    {commands.get('take_over', '?')}",
    ]
    return "\n".join(lines)


def take_over_text(target: str, taken: Mapping[str, Any]) -> str:
    previous = taken.get("previous")
    seconds = taken.get("seconds", 60.0)
    seconds_text = f"{seconds:g}" if isinstance(seconds, int | float) else str(seconds)
    first = f"{previous} disconnected from {target}" if previous else f"nobody owned {target}"
    return (
        f"{first}; the relay is kept for {taken.get('reserved_for', 'you')} for "
        f"{seconds_text} s: attach your debugger now (a shows how)"
    )
