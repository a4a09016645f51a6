"""Fan-out of the daemon's events to control subscribers, never waiting for any of them.

The daemon calls `EventHub.publish(event)` for every event (from the event loop's thread); it
returns at once. Each subscriber reads from its own bounded `EventQueue`: one that stops reading
loses events, counted and reported by a single `EventsDropped` where they would have been,
instead of holding up the daemon or the other subscribers. The hub keeps the most recent events
so a new subscriber first sees what just happened, as conserver replays recent console lines to
someone who attaches mid-incident.
"""

from __future__ import annotations

import asyncio
from collections import deque

from cartd.control.protocol import EventsDropped
from cartd.events import Event, event_subject

# Replay history: a bugcheck with the DbgPrint lines and module loads before it fits easily.
DEFAULT_HISTORY = 1000
# Live events a subscriber may fall behind by. A burst of DbgPrint lines arrives at serial speed
# (115200 baud is ~11 KB/s, a few hundred lines a second), so this covers a reader that stalls
# for a few seconds while staying under a megabyte or so per subscriber.
DEFAULT_QUEUE_LIMIT = 1000


class EventQueue:
    """A bounded queue of events for one reader. `put()` never waits: when the queue is full the
    event is counted as dropped, and the reader gets `EventsDropped(count)` in its place before
    the next event that fits (or as soon as it has read everything older)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Event | EventsDropped] = deque()
        self._dropped = 0  # dropped after everything in _items, not yet reported
        self._closed = False
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Event | EventsDropped) -> None:
        """Add an event, or a report of events dropped upstream (merged with our own count)."""
        if self._closed:
            return
        if isinstance(item, EventsDropped):
            self._dropped += item.count
        elif len(self._items) >= self.limit:
            self._dropped += 1
        else:
            if self._dropped:
                self._items.append(EventsDropped(self._dropped))
                self._dropped = 0
            self._items.append(item)
        self._changed.set()

    def close(self) -> None:
        """No more items will come; `get()` returns what is left, then None."""
        self._closed = True
        self._changed.set()

    async def get(self) -> Event | EventsDropped | None:
        while True:
            if self._items:
                return self._items.popleft()
            if self._dropped:
                count, self._dropped = self._dropped, 0
                return EventsDropped(count)
            if self._closed:
                return None
            self._changed.clear()
            await self._changed.wait()


def _is_about(event: Event, target: str | None) -> bool:
    return target is None or event_subject(event) == target


class Subscription:
    """One subscriber's stream: up to `replay` recent events about its target (or about
    anything, when the target is None), then live ones as they are published."""

    def __init__(self, hub: EventHub, target: str | None, replay: list[Event]) -> None:
        self.target = target
        self.replayed = len(replay)
        self._hub = hub
        # The replay does not count against the live limit, so a long replay to a reader that
        # has not started reading yet cannot push out the first live events.
        self._queue = EventQueue(hub.queue_limit + len(replay))
        for event in replay:
            self._queue.put(event)

    def offer(self, event: Event) -> None:
        if _is_about(event, self.target):
            self._queue.put(event)

    async def get(self) -> Event | EventsDropped | None:
        """The next event or drop report; None after `close()`."""
        return await self._queue.get()

    def close(self) -> None:
        self._hub.unsubscribe(self)
        self._queue.close()


class EventHub:
    def __init__(
        self, *, history: int = DEFAULT_HISTORY, queue_limit: int = DEFAULT_QUEUE_LIMIT
    ) -> None:
        self.queue_limit = queue_limit
        self._history: deque[Event] = deque(maxlen=history)
        self._subscriptions: set[Subscription] = set()

    def publish(self, event: Event) -> None:
        self._history.append(event)
        for subscription in self._subscriptions:
            subscription.offer(event)

    def subscribe(self, *, replay: int, target: str | None) -> Subscription:
        """A new subscription; `replay` counts the recent events it starts with (those about
        `target` when one is given). The replay and the live events neither overlap nor leave a
        gap, because both are taken in this one call on the event loop's thread."""
        subscription = Subscription(self, target, self.recent(replay, target))
        self._subscriptions.add(subscription)
        return subscription

    def recent(self, count: int, target: str | None) -> list[Event]:
        """The last `count` events (about `target`, when given), oldest first."""
        if count <= 0:
            return []
        return [event for event in self._history if _is_about(event, target)][-count:]

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
