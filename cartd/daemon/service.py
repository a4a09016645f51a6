"""`cartd run`: the daemon. It wires links, targets, records and the control socket together.

Lifecycle (hypercorn's pattern): start-up finishes what a crash left in the state directory,
opens the control socket, then runs one task per serial port (found again every few seconds
when the configuration says `auto`) and one housekeeping task. SIGTERM or SIGINT sets an event;
shutdown then runs in a fixed order within a grace period: stop accepting control clients, stop
the links (each closes its port), and flush, fsync and close every target's records.

Every event goes through `publish`: into its target's records (when it has a target), to the
control socket's subscribers, and to the log (stderr, which journald keeps for the service), and
with structured fields to journald itself when systemd-python is there (journal_fields.py).

Under systemd (deploy/cartd.service) the daemon tells it READY once its sockets are up, keeps
STATUS= current, feeds the watchdog from the event loop and says STOPPING at shutdown
(systemd_notify.py). SIGHUP re-reads the configuration and applies what it can without
dropping a session (config_reload.py says what applies when).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartd import events as ev
from cartd.capture.dump_file import PAGE_SIZE
from cartd.capture.layout import dumps_dir, target_dir
from cartd.capture.quota import disk_usage, prune_sessions
from cartd.capture.recorder import SessionRecorder
from cartd.capture.recover import recover_state_dir
from cartd.capture.wire import LINKTYPE_IPV4, LINKTYPE_USER0
from cartd.config import Config, ConfigError, load_config
from cartd.control.hub import EventHub, Subscription
from cartd.control.protocol import ControlError, unknown_target
from cartd.control.registry import MethodRegistry, Param
from cartd.control.server import ControlServer, requester_uid, server_name
from cartd.daemon.config_reload import Applies, config_changes, effective_config
from cartd.daemon.journal_fields import JournalSink
from cartd.daemon.kdnet_keys import KeyStore
from cartd.daemon.kdnet_link import KdnetLink
from cartd.daemon.link_detector import LinkDetector
from cartd.daemon.relay import RelaySettings, TargetRelay
from cartd.daemon.relay_info import attach_info
from cartd.daemon.relay_ports import RelayPorts
from cartd.daemon.serial_link import SerialLink
from cartd.daemon.systemd_notify import SystemdNotifier, status_line
from cartd.daemon.target_dumps import DumpSettings, TargetDumps
from cartd.daemon.target_worker import TargetWorker
from cartd.kd.dump_plans import TriageTier
from cartd.kd.kdnet.keys import KdnetKeyError, parse_key
from cartd.links.serial_ports import SerialCandidate
from cartd.session.policy import CommandRefused, TargetSession

log = logging.getLogger("cartd")

SHUTDOWN_GRACE_SECONDS = 5.0
# READY waits this long at most for the listeners' first try (binding a socket takes ms).
SETTLE_SECONDS = 5.0
NOISE_REPORT_SECONDS = 1.0  # line-noise totals go to the journal at most this often
QUOTA_CHECK_SECONDS = 60.0
# What a 115200 baud line reads (bench/kd_throughput.py: 95% of 11,520 bytes/s), for the
# estimate of a serial dump before one has measured the link.
SERIAL_DUMP_BYTES_PER_SECOND = 10_900.0


# What reaches the log without --verbose: links, targets and trouble; DbgPrint lines, module
# loads and noise totals are in the journal and `cartd events`, and in the log with --verbose.
_LOG_LEVELS: dict[type[ev.Event], int] = {
    ev.LinkUp: logging.INFO,
    ev.LinkDown: logging.INFO,
    ev.LinkProbed: logging.INFO,
    ev.TargetConnected: logging.INFO,
    ev.Stopped: logging.INFO,
    ev.TargetRebooted: logging.INFO,
    ev.OwnerChanged: logging.INFO,
    ev.Bugcheck: logging.WARNING,
    ev.CaptureError: logging.WARNING,
    ev.CaptureResumed: logging.WARNING,
    ev.DumpStarted: logging.INFO,
    ev.DumpWritten: logging.INFO,
    ev.DumpStopped: logging.WARNING,
}

# The events that change a target's line in STATUS= (systemctl status cartd).
_STATUS_EVENTS = (
    ev.TargetConnected,
    ev.Stopped,
    ev.Bugcheck,
    ev.Running,
    ev.TargetRebooted,
    ev.OwnerChanged,
    ev.LinkUp,
    ev.LinkDown,
)


@dataclass(slots=True)
class _Target:
    session: TargetSession
    worker: TargetWorker
    recorder: SessionRecorder


class Daemon:
    def __init__(self, config: Config, *, sysfs: Path = Path("/sys"), udev: bool = True) -> None:
        """`sysfs` and `udev` are for tests: a fake sysfs tree, and no udev monitor (events
        are then replayed through `self.detector.on_event`)."""
        self.config = config
        self.hub = EventHub(history=max(config.replay_events, 1))
        self._methods = MethodRegistry()
        target = Param(str, required=True)
        self._methods.register("status", self._status)
        self._methods.register("links", self._links)
        self._methods.register(
            "history",
            self._history,
            count=Param(int, default=50, minimum=0, maximum=100_000),
            target=Param(str),
        )
        self._methods.register("break", self._break, target=target)
        self._methods.register("continue", self._continue, target=target)
        self._methods.register("reboot", self._reboot, target=target)
        self._methods.register(
            "dump",
            self._dump,
            target=target,
            kind=Param(str, default="auto"),
            estimate_only=Param(bool, default=False),
            cancel=Param(bool, default=False),
        )
        self._methods.register("attach_info", self._attach_info, target=target)
        self._methods.register("take_over", self._take_over, target=target)
        self._methods.register(
            "key",
            self._set_key,
            port=Param(int, required=True, minimum=1, maximum=65535),
            key=Param(str, required=True),
        )
        self.keys = KeyStore(config.state_dir)
        self.relay_ports = RelayPorts(
            config.state_dir, first_port=config.relay.first_port, fixed=config.relay.ports
        )
        self.relays: dict[str, TargetRelay] = {}
        self.kdnet_links: dict[int, KdnetLink] = {}
        self.targets: dict[str, _Target] = {}
        self.links: dict[str, SerialLink] = {}
        self._link_tasks: dict[str, asyncio.Task[None]] = {}
        self.detector = LinkDetector(
            config,
            publish=self.publish,
            serial_links=self.links,
            start_serial=self._start_serial_link,
            start_kdnet=self._start_interface_links,
            stop_kdnet=self._stop_link,
            sysfs=sysfs,
            use_udev=udev,
        )
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.notifier = SystemdNotifier()
        self.journal = JournalSink()
        self._discovery: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ control backend

    @property
    def methods(self) -> MethodRegistry:
        return self._methods

    def subscribe(self, *, replay: int, target: str | None) -> Subscription:
        return self.hub.subscribe(replay=replay, target=target)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for note in recover_state_dir(self.config.state_dir):
            log.warning("recovered after a crash: %s: %s", note.path, note.note)
        socket_path = self.config.control_socket_path()
        server = ControlServer(
            self,
            socket_path,
            control_group=self.config.control_group,
            default_replay=self.config.replay_events,
        )
        await server.start()
        log.info(
            "cartd running: state in %s, control socket %s", self.config.state_dir, socket_path
        )
        if self.config.relay.enabled and not self.config.relay.loopback_only:
            log.warning(
                "the KD relay listens on %s, not only on this machine: KD gives whoever connects "
                "full control of the targets (memory, registers, reboot); keep it behind a "
                'firewall or use bind = "127.0.0.1" and SSH tunnels',
                self.config.relay.bind,
            )
        for target_id in self.relay_ports.known_targets():
            self._relay_for(target_id)
        housekeeping = asyncio.create_task(self._housekeeping())
        self._discovery = asyncio.create_task(self._discover())
        self._start_kdnet_links()
        await self._listeners_settled()
        self.ready.set()
        self.notifier.ready()
        self._update_status()
        watchdog = asyncio.create_task(self.notifier.run_watchdog())
        try:
            await self.stopping.wait()
        finally:
            self.notifier.stopping()
            log.info("cartd stopping")
            await server.close()
            for relay in self.relays.values():
                await relay.close()
            for record in self.targets.values():
                # A dump being read is made durable; the next daemon resumes it.
                await record.worker.dumps.stop("the daemon is stopping")
            tasks = (self._discovery, housekeeping, watchdog, *self._link_tasks.values())
            for task in tasks:
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*tasks, return_exceptions=True), SHUTDOWN_GRACE_SECONDS
                )
            for record in self.targets.values():
                for event in record.recorder.close():  # flushes and fsyncs
                    self.hub.publish(event)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            log.info("cartd stopped")

    async def _listeners_settled(self) -> None:
        """Until every KDNET port and KD relay has tried to listen (a port that is taken is
        tried again later, and says so): READY means the sockets are there."""
        waits = [link.settled.wait() for link in self.kdnet_links.values()]
        waits += [relay.settled.wait() for relay in self.relays.values() if relay.started]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), SETTLE_SECONDS)

    def reload(self) -> None:
        """SIGHUP (`systemctl reload cartd`): read the configuration file again and apply what
        can change while links, sessions and relays stay up; a file with a mistake is reported
        and the configuration in use is kept."""
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.ready()

    def _reload(self) -> None:
        old = self.config
        override = old.state_dir if old.state_dir_given else None
        try:
            new = load_config(old.source, state_dir_override=override)
        except ConfigError as error:
            log.error("reload: %s; cartd keeps the configuration it runs with", error)
            return
        changes = config_changes(old, new)
        where = new.source or "no configuration file (every setting at its default)"
        if not changes:
            log.info("reload: %s: nothing changed", where)
            return
        for change in changes:
            log.log(
                logging.WARNING if change.applies is Applies.RESTART else logging.INFO,
                "reload: %s",
                change,
            )
        self.config = effective_config(old, new, changes)
        for target_id, record in self.targets.items():
            record.session.policy = self.config.policy_for(target_id)
        for port, link in self.kdnet_links.items():
            key = new.kdnet.keys.get(port)
            if key is not None and key != old.kdnet.keys.get(port):
                link.set_key(key)
        self._start_kdnet_links()
        if new.serial != old.serial and self._discovery is not None:
            self._discovery.cancel()  # ports already open are skipped by the new search
            self._discovery = asyncio.create_task(self._discover())
        log.info("reload: %s: %d changes", where, len(changes))

    async def _discover(self) -> None:
        """Serial ports, USB debug devices and KDNET interfaces, as they come and go (udev
        events, else polling): cartd.daemon.link_detector."""
        self.detector.config = self.config  # a reload may have changed it
        await self.detector.run()

    def _start_serial_link(self, candidate: SerialCandidate) -> None:
        link = SerialLink(
            candidate,
            self.config,
            publish=self.publish,
            worker_for=self._worker_for,
            on_traffic=self._on_traffic,
            wakeup=self.detector.wakeup,
        )
        self.links[candidate.stable_name] = link
        self._link_tasks[candidate.stable_name] = asyncio.create_task(self._run_link(link))

    def _start_interface_links(self, interface: str, address: str) -> list[KdnetLink]:
        """KDNET listeners on one network interface's address, one per configured port."""
        try:
            stored = self.keys.load()
        except KdnetKeyError:
            stored = {}  # said once at start-up by _start_kdnet_links
        links = []
        for port in self.config.kdnet.ports:
            link = KdnetLink(
                port,
                self.config,
                key=self.config.kdnet.keys.get(port) or stored.get(port),
                publish=self.publish,
                worker_for=self._worker_for,
                on_traffic=self._on_traffic,
                interface=(interface, address),
            )
            self._link_tasks[link.link] = asyncio.create_task(self._run_link(link))
            links.append(link)
        return links

    def _stop_link(self, link: KdnetLink) -> None:
        task = self._link_tasks.pop(link.link, None)
        if task is not None:
            task.cancel()

    def _start_kdnet_links(self) -> None:
        try:
            stored = self.keys.load()
        except KdnetKeyError as error:
            log.error("%s; KDNET ports wait for keys given with `cartd key`", error)
            stored = {}
        if self.config.kdnet.interfaces:
            return  # listeners follow those interfaces instead (the link detector's)
        for port in self.config.kdnet.ports:
            if port in self.kdnet_links:  # already listening (a reload adds only new ports)
                continue
            key = self.config.kdnet.keys.get(port) or stored.get(port)
            link = KdnetLink(
                port,
                self.config,
                key=key,
                publish=self.publish,
                worker_for=self._worker_for,
                on_traffic=self._on_traffic,
            )
            self.kdnet_links[port] = link
            self._link_tasks[link.link] = asyncio.create_task(self._run_link(link))

    async def _run_link(self, link: SerialLink | KdnetLink) -> None:
        try:
            await link.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a failing link must never take the daemon or other links down
            log.exception("%s: link task failed; it will not be retried", link.link)

    async def _housekeeping(self) -> None:
        last_quota_check = 0.0
        while True:
            await asyncio.sleep(min(NOISE_REPORT_SECONDS, self.config.capture.fsync_interval))
            for target_id, record in self.targets.items():
                noise = record.session.take_noise_event()
                if noise is not None:
                    self.publish(noise)
                self._publish_all(target_id, record.recorder.flush())
            if time.monotonic() - last_quota_check >= QUOTA_CHECK_SECONDS:
                last_quota_check = time.monotonic()
                self._prune()

    def _prune(self) -> None:
        keep = [record.recorder.session_dir for record in self.targets.values()]
        result = prune_sessions(self.config.state_dir, self.config.capture.quota_mb, keep=keep)
        for removed in result.removed:
            log.info("disk quota: removed the old session %s", removed)
        for problem in result.problems:
            log.warning("disk quota: %s", problem)

    # ------------------------------------------------------------------ targets

    def _relay_for(self, target_id: str) -> TargetRelay:
        """The target's KD relay, listening from the moment the target is first known."""
        relay = self.relays.get(target_id)
        if relay is not None:
            return relay
        settings = self.config.relay
        socket_dir = self.config.control_socket_path().parent / "kd"
        relay = TargetRelay(
            target_id,
            RelaySettings(
                bind=settings.bind,
                port=self.relay_ports.port_for(target_id),
                unix_socket=socket_dir / f"{target_id}.sock",
                group=self.config.control_group,
                silence_seconds=settings.silence_seconds,
            ),
            self.publish,
        )
        self.relays[target_id] = relay
        if settings.enabled:
            relay.start()
        else:
            relay.tcp_state = relay.unix_state = "off ([relay] enabled = false)"
        return relay

    def _worker_for(self, target_id: str, link: str) -> TargetWorker:
        record = self.targets.get(target_id)
        if record is not None:
            return record.worker
        session = TargetSession(target_id, link, self.config.policy_for(target_id))
        kdnet = link.startswith("kdnet:")
        recorder, opened = SessionRecorder.open(
            self.config.state_dir,
            target_id,
            wire_description=f"kdnet udp port {link[6:]}" if kdnet else f"kd-serial {link}",
            wire_link_type=LINKTYPE_IPV4 if kdnet else LINKTYPE_USER0,
            fsync_interval=self.config.capture.fsync_interval,
        )
        capture = self.config.capture
        dumps = TargetDumps(
            target_id,
            DumpSettings(
                dumps_dir=dumps_dir(self.config.state_dir, target_id),
                comment=f"{server_name()} over {link}",
                triage_max_pages=capture.triage_max_mb * (1 << 20) // PAGE_SIZE,
                triage_tiers=tuple(TriageTier(name) for name in capture.triage_tiers),
                min_free_bytes=capture.dump_min_free_mb << 20,
                bytes_per_second=None if kdnet else SERIAL_DUMP_BYTES_PER_SECOND,
            ),
            self.publish,
        )
        worker = TargetWorker(
            session,
            publish=self.publish,
            write_identity=lambda identity: self._write_identity(target_id, identity),
            dumps=dumps,
            relay=self._relay_for(target_id),
        )
        self.targets[target_id] = _Target(session, worker, recorder)
        self._publish_all(target_id, opened)
        self.publish(ev.OwnerChanged(target=target_id, owner=session.owner, previous=""))
        return worker

    def _write_identity(self, target_id: str, identity: dict[str, Any]) -> None:
        self._publish_all(target_id, self.targets[target_id].recorder.write_identity(identity))

    def _on_traffic(self, target_id: str, data: bytes, from_target: bool) -> None:
        record = self.targets.get(target_id)
        if record is None or not self.config.capture.wire_capture:
            return
        self._publish_all(
            target_id, record.recorder.record_wire(data, from_target=from_target, time=time.time())
        )

    def _target_of(self, event: ev.Event) -> str | None:
        target = getattr(event, "target", None)
        if isinstance(target, str):
            return target
        link = getattr(event, "link", None)
        for target_id, record in self.targets.items():
            if record.session.link == link:
                return target_id
        return None

    def publish(self, event: ev.Event) -> None:
        target_id = self._target_of(event)
        if target_id is not None and target_id in self.targets:
            self._publish_all(target_id, self.targets[target_id].recorder.record(event))
        self.hub.publish(event)
        level = _LOG_LEVELS.get(type(event), logging.DEBUG)
        journaled = self._journal_event(event, level, target_id)
        if not (journaled and self.journal.replaces_stderr):
            log.log(level, "%s: %s", ev.event_subject(event), ev.describe(event))
        if isinstance(event, _STATUS_EVENTS):
            self._update_status()

    def _journal_event(self, event: ev.Event, level: int, target_id: str | None) -> bool:
        record = self.targets.get(target_id) if target_id is not None else None
        link = record.session.link if record is not None else None
        return self.journal.send(event, level=level, link=link)

    def _update_status(self) -> None:
        """STATUS= for `systemctl status cartd` (rate-limited by the notifier)."""
        self.notifier.status(
            status_line(
                [
                    (
                        target_id,
                        record.session.state.value,
                        record.session.owner,
                        record.session.bugcheck.code if record.session.bugcheck else None,
                    )
                    for target_id, record in self.targets.items()
                ]
            )
        )

    def _publish_all(self, target_id: str, events: list[ev.Event]) -> None:
        """Publish what a recorder reported (recording paused or resumed). It goes into that
        target's journal too, so a `capture_error` sits exactly where the gap is."""
        recorder = self.targets[target_id].recorder
        for event in events:
            if not recorder.closed:
                recorder.record(event)
            self.hub.publish(event)
            if not (
                self._journal_event(event, logging.WARNING, target_id)
                and self.journal.replaces_stderr
            ):
                log.warning("%s: %s", ev.event_subject(event), ev.describe(event))

    # ------------------------------------------------------------------ control methods

    async def _status(self, params: object) -> dict[str, Any]:
        known = list(self.targets.items())
        # Walking the records and asking the file system may block on a slow card: do it in a
        # thread, not on the event loop that drives the links.
        records_bytes, disk_free = await asyncio.to_thread(
            self._disk_figures, [target_id for target_id, _ in known]
        )
        links: list[dict[str, Any]] = [
            {
                "link": link.link,
                "kind": "serial",
                "device": link.candidate.device,
                "target": link.target_id,
                "state": link.state,
                "baud": link.baud,
            }
            for link in self.links.values()
        ]
        links += [
            {
                "link": link.link,
                "kind": "kdnet",
                "device": link.device,
                "target": link.target_id,
                "state": link.state,
                "port": link.port,
                "peer": link.peer,
            }
            for link in self.kdnet_links.values()
        ]
        targets = []
        for target_id, record in known:
            status = record.session.status()
            status["records"] = str(record.recorder.session_dir)
            status["dump"] = record.worker.dumps.status()
            status["recording"] = not record.recorder.failed
            status["records_bytes"] = records_bytes[target_id]
            status["relay"] = record.worker.relay.status()
            targets.append(status)
        return {
            "links": links,
            "targets": targets,
            "state_dir": str(self.config.state_dir),
            "disk_free_bytes": disk_free,
        }

    async def _links(self, params: object) -> dict[str, Any]:
        """`cartd links`: what is plugged in now and what cartd makes of each."""
        return await asyncio.to_thread(self.detector.report)

    def _disk_figures(self, target_ids: list[str]) -> tuple[dict[str, int], int | None]:
        """Disk use of each target's records (as the quota counts it), and the bytes free on
        the file system that holds them (None if it cannot be asked)."""
        state_dir = self.config.state_dir
        used = {target_id: disk_usage(target_dir(state_dir, target_id)) for target_id in target_ids}
        try:
            free: int | None = shutil.disk_usage(state_dir).free
        except OSError:
            free = None
        return used, free

    async def _history(self, params: Any) -> dict[str, Any]:
        """Recent events, oldest first: `cartd events` without --follow."""
        recent = self.hub.recent(params["count"], params.get("target"))
        return {"events": [event.to_json() for event in recent]}

    def _find(self, params: Any) -> _Target:
        target_id = params["target"]
        record = self.targets.get(target_id)
        if record is None:
            raise unknown_target(target_id, self.targets)
        return record

    async def _command(self, params: Any, action: str) -> dict[str, Any]:
        record = self._find(params)
        try:
            await getattr(record.worker, action)()
        except CommandRefused as refused:
            raise ControlError(refused.code, str(refused)) from refused
        return {}

    async def _break(self, params: object) -> dict[str, Any]:
        return await self._command(params, "break_in")

    async def _continue(self, params: object) -> dict[str, Any]:
        return await self._command(params, "go")

    async def _reboot(self, params: object) -> dict[str, Any]:
        return await self._command(params, "reboot")

    async def _dump(self, params: Any) -> dict[str, Any]:
        """`cartd dump`: estimate, start, resume or cancel a crash dump of a stopped target."""
        kind = params["kind"]
        if kind not in ("auto", "triage", "full"):
            raise ControlError(
                "invalid_params", f"a dump is 'triage', 'full' or 'auto', not {kind!r}"
            )
        record = self._find(params)
        try:
            return await record.worker.dump(
                kind, estimate_only=params["estimate_only"], cancel=params["cancel"]
            )
        except CommandRefused as refused:
            raise ControlError(refused.code, str(refused)) from refused

    async def _attach_info(self, params: Any) -> dict[str, Any]:
        """`cartd attach-info`: where a remote debugger attaches to the target, and the
        commands an engineer elsewhere types."""
        target_id = params["target"]
        relay = self.relays.get(target_id)
        if relay is None:
            raise unknown_target(target_id, self.relays)
        return attach_info(relay, enabled=self.config.relay.enabled)

    async def _take_over(self, params: Any) -> dict[str, Any]:
        """`cartd take-over`: disconnect the remote debugger that owns the target and keep
        the relay for the user who asked, for a minute."""
        target_id = params["target"]
        relay = self.relays.get(target_id)
        if relay is None:
            raise unknown_target(target_id, self.relays)
        return relay.take_over(requester_uid())

    async def _set_key(self, params: Any) -> dict[str, Any]:
        """`cartd key PORT KEY`: store a KDNET key and serve the port with it. The key is
        checked, kept in a file only the daemon's user reads, and never echoed."""
        port, key = params["port"], params["key"].strip().lower()
        link = self.kdnet_links.get(port)
        on_interfaces = [
            interface_link
            for listening in self.detector.listening.values()
            for interface_link in listening.links
            if interface_link.port == port
        ]
        if link is None and not on_interfaces:
            ports = ", ".join(str(p) for p in self.kdnet_links) or "none"
            raise ControlError(
                "invalid_params",
                f"cartd does not listen for KDNET on port "
                f"{port} (ports: {ports}; see [kdnet] ports in the config)",
            )
        try:
            parse_key(key)
        except KdnetKeyError:
            raise ControlError(
                "invalid_params",
                "that is not a KDNET key: four words of 0-9 "
                "and a-z separated by dots, as `bcdedit /dbgsettings` shows",
            ) from None
        try:
            self.keys.store(port, key)
        except OSError as error:
            raise ControlError(
                "internal_error", f"cannot store the key in {self.keys.path}: {error.strerror}"
            ) from None
        for each in ([link] if link is not None else []) + on_interfaces:
            each.set_key(key)
        return {"port": port}
