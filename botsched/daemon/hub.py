"""Live fan-out of state changes to ``events --follow`` and ``wait`` streams.

The store announces events after each durable commit; the hub hands them to every
subscriber's bounded queue. A subscriber that cannot keep up is cut off (its stream
ends with an error) rather than letting the daemon's memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from botsched.core.model import Event

QUEUE_LIMIT = 100_000


class Gone:
    """Put in a bot's subscriptions when the bot is deleted (cancelled): no event will come."""


GONE = Gone()


class Subscription:
    def __init__(self, hub: EventHub, bot_id: str | None) -> None:
        self.hub = hub
        self.bot_id = bot_id
        self.queue: asyncio.Queue[Event | Gone | None] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False

    def offer(self, event: Event) -> None:
        if self.bot_id is not None and event.bot_id != self.bot_id:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self.hub.unsubscribe(self)

    async def get(self) -> Event | Gone | None:
        """The next event; ``GONE`` if the bot was deleted; ``None`` once the hub closed or
        dropped this subscription."""
        if self.overflowed and self.queue.empty():
            return None
        return await self.queue.get()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def subscribe(self, bot_id: str | None = None) -> Subscription:
        subscription = Subscription(self, bot_id)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.discard(subscription)
            with contextlib.suppress(asyncio.QueueFull):
                subscription.queue.put_nowait(None)

    def publish(self, events: list[Event]) -> None:
        for subscription in list(self._subscribers):
            for event in events:
                subscription.offer(event)

    def gone(self, bot_id: str) -> None:
        for subscription in list(self._subscribers):
            if subscription.bot_id == bot_id:
                with contextlib.suppress(asyncio.QueueFull):
                    subscription.queue.put_nowait(GONE)

    def close(self) -> None:
        for subscription in list(self._subscribers):
            self.unsubscribe(subscription)
