"""A target's KD relay: a remote debugger attaches to the target through the cart.

Theory of operation
-------------------
Each target has a TCP port (127.0.0.1 unless the config says otherwise) and a UNIX socket that
speak plain serial KD, which is what `windbg -k com:ipport=PORT,port=127.0.0.1` and
`ntoseye -b kd --connect SOCKET` expect. The listeners open when the target is first known and
stay open until the daemon stops: across the target's reboots, unplugged cables and new
connections to it, as VirtualKD's pipe does, so a debugger left attached sees its target
come back.

The daemon terminates KD on both hops. Toward the remote debugger it plays the TARGET role
(`KdTarget`, serial dialect, its own packet ids, ACKs and RESENDs); toward the target it stays
the HOST it always is (`KdHost`, serial or KDNET). Between them only payloads travel: the
target's stops, DbgPrints, prompts and file requests go to the remote debugger; its requests
(`KdHost.relay_request`), prompt answers and file replies go to the target. So a KDNET target
is debugged through the relay exactly like a serial one, and everything the target says is
still decoded into the daemon's journal by the worker, which sees every event first.

Ownership: the first debugger to connect owns the target; the worker then stops deciding
anything (it records and watches). A second one is refused: it is sent one DbgPrint that says
who owns the target and how to take over, and is disconnected. `cartd take-over TARGET`
disconnects the owner and keeps the relay for the user who asked for a minute. When the owner
disconnects, or leaves a packet unacknowledged for `silence_seconds`, the worker takes the
target back: a target left stopped stays stopped (and says so), a running one keeps running.

Requests are never answered twice or lost: the remote debugger sends one request at a time,
and its reply goes back only if it is still the request waiting. A request caught by an
unplugged link is sent again when the link is back and the target reports the same stop;
anything else that ends a stop (a new stop, a reboot, the target running) reaches the remote
debugger as what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from cartd import events as ev
from cartd.control.socket_file import SocketFile, SocketFileError
from cartd.daemon.host_driver import KdDriver, KdRequestError
from cartd.daemon.peer_identity import Peer, tcp_peer, unix_peer, user_name
from cartd.kd import events as kd
from cartd.kd.constants import NtStatus, PacketType
from cartd.kd.debug_io import print_string_message, push_debug_io
from cartd.kd.errors import KdUsageError
from cartd.kd.host import RESUMING_APIS
from cartd.kd.host import TargetState as HostState
from cartd.kd.manipulate import ManipulateMessage, ReadMemory, push_manipulate, reply_to
from cartd.kd.state_change import push_state_change
from cartd.kd.target import (
    BreakInRequested,
    FileIoAnswered,
    KdTarget,
    ManipulateReceived,
    Outgoing,
    PacketAbandoned,
    PromptAnswered,
)

log = logging.getLogger(__name__)

OWNER_DAEMON = "cartd"
# After `cartd take-over`, the relay waits this long for the user who asked.
TAKE_OVER_SECONDS = 60.0
# DbgPrints waiting for a remote debugger that reads slower than the target prints; older
# ones are dropped (the journal has them all).
MAX_QUEUED_PRINTS = 2000
# A remote debugger that does not read what is sent to it is let go beyond this.
MAX_UNSENT_BYTES = 1 << 20
REFUSAL_GRACE_SECONDS = 1.0
# Requests from one remote debugger on their way to the target at once. A KD debugger has one
# (it waits for each answer); a second can be a request sent again after a lost answer.
MAX_OUTSTANDING_REQUESTS = 4
CLOSE_GRACE_SECONDS = 2.0
RETRY_LISTEN_SECONDS = 10.0
_READ_SIZE = 65536


class RelayTarget(Protocol):
    """What the relay needs of its target's worker."""

    @property
    def driver(self) -> KdDriver | None:
        """The KD connection to the target; None while the link is down."""
        ...

    def held_stop(self) -> bytes | None:
        """The payload of the stop the target is held in, if any (what a debugger that
        attaches now is told first)."""
        ...

    def remote_attached(self, owner: str) -> None: ...

    def remote_detached(self, unanswered: list[tuple[int, bytes]]) -> None:
        """The worker owns the target again; `unanswered` are the prompts and file requests
        the remote debugger was given and did not answer (packet type, payload)."""
        ...

    def resume_unreported_stop(self) -> None:
        """The remote debugger will not see a LoadSymbols stop (a real target skips it when
        its debugger is absent): continue it."""
        ...


@dataclass(frozen=True, slots=True)
class RelaySettings:
    bind: str
    port: int
    unix_socket: Path | None
    group: str | None
    silence_seconds: float


class TargetRelay:
    def __init__(
        self, target_id: str, settings: RelaySettings, publish: Callable[[ev.Event], None]
    ) -> None:
        self.target_id = target_id
        self.settings = settings
        self._publish = publish
        self.worker: RelayTarget | None = None
        self.remote: RemoteDebugger | None = None
        self.tcp_state = "not listening yet"
        self.unix_state = "not listening yet"
        self._servers: list[asyncio.AbstractServer] = []
        self._socket_file: SocketFile | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        # Set once the TCP listener's first try has succeeded or failed (READY waits for it).
        self.settled = asyncio.Event()
        self.started = False
        # After `cartd take-over`: (uid, name, monotonic deadline) of the user it is kept for.
        self._reserved: tuple[int | None, str, float] | None = None

    # ------------------------------------------------------------------ lifetime

    def start(self) -> None:
        """Start listening (in the background: a TCP port still taken is tried again)."""
        self.started = True
        self._spawn(self._listen_tcp())
        if self.settings.unix_socket is not None:
            self._spawn(self._listen_unix(self.settings.unix_socket))
        else:
            self.unix_state = "off"

    async def close(self) -> None:
        """Stop listening; a remote debugger still attached is let go first (its
        owner_changed is journaled before the records close)."""
        for server in self._servers:
            server.close()
        if self.remote is not None:
            self.remote.end("cartd is stopping")
        for task in list(self._tasks):
            if task not in self._connections:
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_GRACE_SECONDS)
        if self._socket_file is not None:
            self._socket_file.remove()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen_tcp(self) -> None:
        bind, port = self.settings.bind, self.settings.port
        while True:
            try:
                server = await asyncio.start_server(
                    self._accept_tcp, host=bind, port=port, reuse_address=True
                )
            except OSError as error:
                self.settled.set()
                self.tcp_state = f"cannot listen on {bind}:{port}: {error.strerror}"
                log.error(
                    "%s: KD relay %s; trying again in %g s",
                    self.target_id,
                    self.tcp_state,
                    RETRY_LISTEN_SECONDS,
                )
                await asyncio.sleep(RETRY_LISTEN_SECONDS)
                continue
            self._servers.append(server)
            self.settled.set()
            self.tcp_state = f"listening on {bind}:{port}"
            log.info("%s: KD relay listening on %s port %d", self.target_id, bind, port)
            return

    async def _listen_unix(self, path: Path) -> None:
        socket_file = SocketFile(path, self.settings.group, what="the KD relay socket")
        try:
            sock = socket_file.bind()
        except SocketFileError as error:
            self.unix_state = str(error)
            log.error("%s: %s", self.target_id, error)
            return
        try:
            server = await asyncio.start_unix_server(self._accept_unix, sock=sock)
        except OSError as error:
            sock.close()
            socket_file.remove()
            self.unix_state = f"cannot listen on {path}: {error.strerror}"
            log.error("%s: %s", self.target_id, self.unix_state)
            return
        self._socket_file = socket_file
        self._servers.append(server)
        self.unix_state = f"listening on {path}"

    # ------------------------------------------------------------------ connections

    async def _accept_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        _keep_alive(sock)
        local, remote = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
        peer = tcp_peer((str(local[0]), int(local[1])), (str(remote[0]), int(remote[1])))
        await self._accept(reader, writer, peer)

    async def _accept_unix(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._accept(reader, writer, unix_peer(writer.get_extra_info("socket")))

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        connection = asyncio.current_task()
        if connection is not None:  # tracked, so close() waits for the detach
            self._tasks.add(connection)
            self._connections.add(connection)
        try:
            await self._serve_connection(reader, writer, peer)
        finally:
            if connection is not None:
                self._tasks.discard(connection)
                self._connections.discard(connection)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        refusal = self._refusal(peer)
        if refusal is not None:
            await self._refuse(writer, peer, refusal)
            return
        self._reserved = None
        remote = RemoteDebugger(self, reader, writer, peer)
        self._attach(remote)
        reason = await remote.run()
        self._detach(remote, reason)

    def _refusal(self, peer: Peer) -> str | None:
        if self.remote is not None:
            owner = self.remote
            since = time.strftime("%H:%M:%S", time.localtime(owner.since))
            return (
                f"{self.target_id} is owned by {owner.peer.name} since {since}; "
                f"`cartd take-over {self.target_id}` on the cart takes it over"
            )
        reserved = self._reserved
        if reserved is None:
            return None
        uid, name, deadline = reserved
        left = deadline - time.monotonic()
        if left <= 0:
            self._reserved = None
            return None
        if peer.uid is not None and uid is not None and peer.uid != uid:
            return f"{self.target_id} is kept for {name}, who took it over, for {left:.0f} more s"
        return None

    async def _refuse(self, writer: asyncio.StreamWriter, peer: Peer, reason: str) -> None:
        """Tell the debugger why, in the one way a KD debugger shows text: a DbgPrint."""
        self._publish(
            ev.RemoteRefused(
                target=self.target_id, peer=peer.address, user=peer.user, reason=reason
            )
        )
        notice = KdTarget()
        notice.send_debug_print(f"cartd: refused: {reason}\n".encode(), time.monotonic())
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(notice.data_to_send())
            await asyncio.wait_for(writer.drain(), REFUSAL_GRACE_SECONDS)
            await asyncio.sleep(REFUSAL_GRACE_SECONDS)  # let it read before the close
        writer.close()

    def _attach(self, remote: RemoteDebugger) -> None:
        self.remote = remote
        worker = self.worker
        if worker is not None:
            worker.remote_attached(remote.peer.name)
        self._publish(
            ev.OwnerChanged(
                target=self.target_id,
                owner=remote.peer.name,
                previous=OWNER_DAEMON,
                reason="a remote debugger attached through the KD relay",
                peer=remote.peer.address,
                user=remote.peer.user,
            )
        )
        stop = worker.held_stop() if worker is not None else None
        if stop is not None:
            remote.present_stop(stop)

    def _detach(self, remote: RemoteDebugger, reason: str) -> None:
        if self.remote is not remote:
            return
        self.remote = None
        worker = self.worker
        if worker is not None:
            worker.remote_detached(remote.unanswered)
        if remote.dropped_prints:
            reason += (
                f"; {remote.dropped_prints} DbgPrint lines it was too slow for are only in "
                "the journal"
            )
        self._publish(
            ev.OwnerChanged(
                target=self.target_id,
                owner=OWNER_DAEMON,
                previous=remote.peer.name,
                reason=reason,
                peer=remote.peer.address,
                user=remote.peer.user,
            )
        )

    # ------------------------------------------------------------------ from the worker

    def bind_worker(self, worker: RelayTarget) -> None:
        self.worker = worker
        if self.remote is not None:
            worker.remote_attached(self.remote.peer.name)

    @property
    def owner(self) -> str:
        return self.remote.peer.name if self.remote is not None else OWNER_DAEMON

    def forward(self, event: kd.HostEvent) -> None:
        """An event from the target while a remote debugger owns it."""
        if self.remote is not None:
            self.remote.from_target(event)

    def take_over(self, uid: int | None) -> dict[str, Any]:
        """`cartd take-over`: disconnect the owner; keep the relay for `uid` for a while."""
        name = user_name(uid) or "the daemon's user"
        previous = self.remote.peer.name if self.remote is not None else None
        if self.remote is not None:
            self.remote.end(f"taken over by {name}")
        self._reserved = (uid, name, time.monotonic() + TAKE_OVER_SECONDS)
        return {"previous": previous, "reserved_for": name, "seconds": TAKE_OVER_SECONDS}

    def status(self) -> dict[str, Any]:
        remote = self.remote
        return {
            "bind": self.settings.bind,
            "port": self.settings.port,
            "unix_socket": str(self.settings.unix_socket) if self.settings.unix_socket else None,
            "tcp_state": self.tcp_state,
            "unix_state": self.unix_state,
            "owner": self.owner,
            "peer": remote.peer.address if remote is not None else None,
            "user": remote.peer.user if remote is not None else None,
            "since": remote.since if remote is not None else None,
        }


class RemoteDebugger:
    """One attached remote debugger: the serial KD TARGET role toward it."""

    def __init__(
        self,
        relay: TargetRelay,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        self.relay = relay
        self.peer = peer
        self.since = time.time()
        self.endpoint = KdTarget()
        self.dropped_prints = 0
        # Prompts and file requests given to it and not answered yet: (packet type, payload).
        self.unanswered: list[tuple[int, bytes]] = []
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._ended: asyncio.Future[str] = self._loop.create_future()
        # The stop the remote debugger was told of, and the request it waits on.
        self._stop: bytes | None = None
        self._pending: ManipulateReceived | None = None
        self._outstanding = 0  # requests handed to the target and not answered yet

    async def run(self) -> str:
        """Serve the connection; the reason it ended."""
        reading = asyncio.ensure_future(self._read())
        watching = asyncio.ensure_future(self._watch())
        try:
            return await self._ended
        finally:
            for task in (reading, watching):
                task.cancel()
            if self._timer is not None:
                self._timer.cancel()
            self._writer.close()

    def end(self, reason: str) -> None:
        if not self._ended.done():
            self._ended.set_result(reason)

    async def _read(self) -> None:
        try:
            while data := await self._reader.read(_READ_SIZE):
                self.endpoint.receive_data(data, self._loop.time())
                self._service()
        except OSError as error:
            self.end(f"connection lost: {error.strerror or error}")
            return
        self.end("the remote debugger disconnected")

    async def _watch(self) -> None:
        silence = self.relay.settings.silence_seconds
        while True:
            await asyncio.sleep(1.0)
            since = self.endpoint.unanswered_since
            if since is not None and self._loop.time() - since > silence:
                self.end(f"the remote debugger stopped answering for {silence:g} s")
            if self._writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
                self.end("the remote debugger stopped reading")

    # ------------------------------------------------------------------ toward the remote

    def present_stop(self, payload: bytes) -> None:
        """The target is stopped as the debugger attaches: it hears of the stop first (and
        again on each RESET it sends, as from a real target)."""
        self._stop = payload
        self._send(PacketType.KD_STATE_CHANGE64, payload)
        self._service()

    def from_target(self, event: kd.HostEvent) -> None:
        if isinstance(event, kd.StateChanged):
            self._on_stop(event.payload or push_state_change(event.message))
        elif isinstance(event, kd.DebugPrint):
            payload = event.payload or push_debug_io(
                print_string_message(event.data, processor=event.processor)
            )
            self._send(PacketType.KD_DEBUG_IO, payload)
            self.dropped_prints += self.endpoint.drop_queued_prints(MAX_QUEUED_PRINTS)
        elif isinstance(event, kd.PromptReceived) and event.payload:
            self.unanswered.append((PacketType.KD_DEBUG_IO, event.payload))
            self._send(PacketType.KD_DEBUG_IO, event.payload)
        elif isinstance(event, kd.FileIoReceived):
            self.unanswered.append((PacketType.KD_FILE_IO, event.payload))
            self._send(PacketType.KD_FILE_IO, event.payload)
        elif isinstance(event, kd.TargetRunning):
            if self.endpoint.stopped:
                self.endpoint.resume()
            self._stop = self._pending = None
        elif isinstance(event, kd.TargetRebooted):
            # Its next packet carries the sync bit: the debugger sees a reboot, as on a cable.
            self.endpoint.reboot()
            self._stop = self._pending = None
            self.unanswered.clear()
        self._service()

    def _on_stop(self, payload: bytes) -> None:
        if payload == self._stop:
            # The same stop, reported again by a new connection after the link came back:
            # the debugger has it; what it was waiting for is asked again.
            if self._pending is not None:
                self._submit(self._pending)
            return
        self._pending = None
        self._stop = payload
        self._send(PacketType.KD_STATE_CHANGE64, payload)

    def _send(self, packet_type: int, payload: bytes) -> None:
        sent = self.endpoint.send_packet(packet_type, payload, self._loop.time())
        if not sent and packet_type == PacketType.KD_STATE_CHANGE64:
            # A module load while the debugger is absent (it stopped answering DbgPrints): a
            # real target would not stop for it; neither does this one.
            self._stop = None
            self._continue_unreported_stop()

    def _continue_unreported_stop(self) -> None:
        worker = self.relay.worker
        if worker is not None:
            worker.resume_unreported_stop()

    # ------------------------------------------------------------------ from the remote

    def _service(self) -> None:
        data = self.endpoint.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)
        while (event := self.endpoint.next_event()) is not None:
            self._on_remote_event(event)
        data = self.endpoint.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.endpoint.get_timer()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.endpoint.handle_timer(self._loop.time())
        self._service()

    def _on_remote_event(self, event: object) -> None:
        if isinstance(event, BreakInRequested):
            self._break_in()
        elif isinstance(event, ManipulateReceived):
            if event.message.api in RESUMING_APIS:
                # The target leaves the debugger on this request; so does our side of it.
                self.endpoint.resume()
                self._stop = None
            self._pending = event
            self._submit(event)
        elif isinstance(event, PromptAnswered | FileIoAnswered):
            packet_type = (
                PacketType.KD_DEBUG_IO
                if isinstance(event, PromptAnswered)
                else PacketType.KD_FILE_IO
            )
            self._answer(packet_type, event.payload)
        elif isinstance(event, PacketAbandoned) and event.kind is Outgoing.LOAD_SYMBOLS:
            # The debugger never acknowledged a module load: the real target gives up and
            # runs on, and so must ours.
            self._stop = None
            self._continue_unreported_stop()

    def _break_in(self) -> None:
        driver = self._driver()
        if driver is None or driver.host.state not in (HostState.UNKNOWN, HostState.RUNNING):
            return  # stopped already: the stop is (or is about to be) on its way
        driver.command(lambda now: driver.host.break_in(now))

    def _answer(self, packet_type: int, payload: bytes) -> None:
        for index, (kind, _) in enumerate(self.unanswered):
            if kind == packet_type:
                del self.unanswered[index]
                break
        driver = self._driver()
        if driver is not None:
            driver.command(lambda now: driver.host.relay_reply(packet_type, payload, now=now))

    def _driver(self) -> KdDriver | None:
        worker = self.relay.worker
        return worker.driver if worker is not None else None

    def _submit(self, request: ManipulateReceived) -> None:
        driver = self._driver()
        if driver is None:
            return  # the link is down: asked again when the target reports this stop again
        if self._outstanding >= MAX_OUTSTANDING_REQUESTS:
            # A KD debugger waits for each answer; this one does not (a port scanner, a
            # confused tool): let it go before its requests pile up in front of the target.
            self.end(
                f"the remote debugger sent {self._outstanding + 1} requests without waiting "
                "for the answers, which no KD debugger does"
            )
            return
        try:
            future = driver.call(lambda now: driver.host.relay_request(request.payload, now=now))
        except KdUsageError:
            return  # the target's stop is not reported (again) yet: asked again when it is
        self._outstanding += 1
        future.add_done_callback(partial(self._answered, request, driver))

    def _answered(
        self, request: ManipulateReceived, driver: KdDriver, future: asyncio.Future[object]
    ) -> None:
        self._outstanding -= 1
        if self._ended.done() or request is not self._pending:
            return  # the debugger went, or stopped waiting for this (a new stop came)
        error = future.exception()
        if error is None:
            self._pending = None
            reply = future.result()
            if isinstance(reply, bytes) and self.endpoint.stopped:
                self.endpoint.send_packet(PacketType.KD_STATE_MANIPULATE, reply, self._loop.time())
        elif isinstance(error, KdRequestError):
            self._request_failed(request, driver)
        else:
            raise error
        self._service()

    def _request_failed(self, request: ManipulateReceived, driver: KdDriver) -> None:
        if driver.closed.is_set():
            return  # kept: asked again when the link is back and the stop reported again
        if request.message.api in RESUMING_APIS:
            self._pending = None
            return
        if driver.host.stop_payload is not None and driver.host.stop_payload == self._stop:
            # Still the same stop, and the target did not answer: say so, as the target says
            # a request failed, so the debugger does not wait for ever.
            self._pending = None
            failed = _failure_reply(request.message)
            self.endpoint.send_packet(PacketType.KD_STATE_MANIPULATE, failed, self._loop.time())
            return
        self._pending = None  # a new stop, a reboot or a running target reaches it as such


def _failure_reply(request: ManipulateMessage) -> bytes:
    body = request.body
    if isinstance(body, ReadMemory):
        body = replace(body, actual_bytes=0)
    return push_manipulate(reply_to(request, return_status=NtStatus.UNSUCCESSFUL, body=body))


def _keep_alive(sock: socket.socket | None) -> None:
    """Notice a tunnel that died without closing: probes after 30 s idle, three 10 s apart."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
