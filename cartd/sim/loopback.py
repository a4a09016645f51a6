"""A KD host and a simulated target joined in memory, with a fake clock.

Nothing sleeps: when neither side has bytes to deliver, the clock jumps to the earliest
deadline either side asked for. Tests and benchmarks use it to run thousands of exchanges,
with exact timing and with noise on the line, in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Callable

from cartd.kd.events import HostEvent, RequestCompleted, RequestFailed
from cartd.kd.host import KdHost
from cartd.sim.target import SimulatedTarget


class LoopbackStalled(RuntimeError):
    """Nothing was left to do and the condition never came true."""


class Loopback:
    def __init__(
        self,
        host: KdHost,
        target: SimulatedTarget,
        *,
        start: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        """`chunk_size` cuts every delivery into pieces that small (1: byte by byte), the
        way a serial port hands over whatever has arrived."""
        self.host = host
        self._chunk_size = chunk_size
        self.target = target
        self.now = start
        self.events: list[HostEvent] = []
        self.bytes_to_target = 0
        self.bytes_to_host = 0
        self.wire_log: list[tuple[float, bool, bytes]] | None = None  # (time, from_target, data)

    def start(self) -> None:
        self.target.start(self.now)

    def step(self) -> bool:
        """Move bytes once, or advance the clock to the next deadline. False if idle."""
        moved = False
        to_target = self.host.data_to_send()
        if to_target:
            self._log(False, to_target)
            self.bytes_to_target += len(to_target)
            for piece in self._pieces(to_target):
                self.target.receive_data(piece, self.now)
            moved = True
        to_host = self.target.data_to_send()
        if to_host:
            self._log(True, to_host)
            self.bytes_to_host += len(to_host)
            for piece in self._pieces(to_host):
                self.host.receive_data(piece, self.now)
            moved = True
        while (event := self.host.next_event()) is not None:
            self.events.append(event)
        if moved:
            return True
        deadlines = [d for d in (self.host.get_timer(), self.target.get_timer()) if d is not None]
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        self.host.handle_timer(self.now)
        self.target.handle_timer(self.now)
        return True

    def _pieces(self, data: bytes) -> list[bytes]:
        size = self._chunk_size or len(data)
        return [data[start : start + size] for start in range(0, len(data), size)]

    def _log(self, from_target: bool, data: bytes) -> None:
        if self.wire_log is not None:
            self.wire_log.append((self.now, from_target, data))

    def run_until(self, condition: Callable[[], bool], *, timeout: float = 60.0) -> None:
        deadline = self.now + timeout
        while not condition():
            if self.now > deadline:
                raise LoopbackStalled(f"condition not met within {timeout} simulated seconds")
            if not self.step():
                raise LoopbackStalled("both sides are idle and the condition is not met")

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            if not self.step():
                self.now = end

    def call(self, submit: Callable[[float], int], *, timeout: float = 60.0) -> object:
        """Submit a request and run until it completes; raise if it fails."""
        token = submit(self.now)
        outcome: list[HostEvent] = []

        def settled() -> bool:
            for event in self.events:
                if isinstance(event, RequestCompleted | RequestFailed) and event.token == token:
                    outcome.append(event)
                    return True
            return False

        self.run_until(settled, timeout=timeout)
        event = outcome[0]
        self.events.remove(event)
        if isinstance(event, RequestFailed):
            raise RuntimeError(f"request failed: {event.reason}")
        assert isinstance(event, RequestCompleted)
        return event.result

    def take(self, kind: type[HostEvent]) -> list[HostEvent]:
        """Remove and return the collected events of one type."""
        taken = [event for event in self.events if isinstance(event, kind)]
        self.events = [event for event in self.events if not isinstance(event, kind)]
        return taken
