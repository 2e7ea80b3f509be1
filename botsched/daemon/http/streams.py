"""``Streams`` over the store and the event hub: events (past, then live), wait, bulk.

Written against the daemon's parts, not its socket, so that both protocols can share it:
the JSON-lines ``events``/``wait``/``create_many`` only have to write what these yield.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from botsched.core import states
from botsched.core.errors import (
    Conflict,
    DaemonUnavailable,
    InvalidInput,
    NotFound,
    WaitTimeout,
)
from botsched.core.model import Event
from botsched.daemon.hub import EventHub, Gone

Result = tuple[Any, list[str]]
#: A bulk create is checked in slices this big, yielding to the scheduler between them.
BULK_SLICE = 200


class Bulk(Protocol):
    """``BotService.bulk()``: items checked as they arrive, then one transaction."""

    count: int
    problems: list[str]

    def add(self, items: list[Any]) -> None: ...
    def finish(self, want_bots: bool, commit: bool = True) -> Result: ...


class LiveStreams:
    """The ``app.Streams`` hooks, from the service's ``show`` and ``bulk``, the store's
    ``events`` (the history) and the hub. ``before_insert(bot_count)`` runs before a bulk
    commit (the daemon waits there for a moment with no join due)."""

    def __init__(self, show: Callable[[dict[str, Any]], Result], history: Callable[[str | None], Sequence[Event]],
                 hub: EventHub, new_bulk: Callable[[], Bulk],
                 before_insert: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.show = show
        self.history = history
        self.hub = hub
        self.new_bulk = new_bulk
        self.before_insert = before_insert

    @contextlib.asynccontextmanager
    async def events(self, bot_id: str | None, follow: bool) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        if bot_id is not None:
            self.show({"id": bot_id})  # NotFound before any byte is sent
        with self.hub.subscribe(bot_id) as subscription:  # before reading the past: nothing is missed
            past = self.history(bot_id)

            async def stream() -> AsyncIterator[dict[str, Any]]:
                last = 0
                for event in past:
                    yield dict(event.to_stream_json())
                    last = event.seq
                if not follow:
                    return
                while True:
                    live = await subscription.get()
                    if live is None:
                        raise DaemonUnavailable("event stream ended: the daemon is stopping or the client fell behind")
                    if isinstance(live, Gone):  # cancelled: its history is over
                        return
                    if live.seq > last:  # (already sent with the past)
                        yield dict(live.to_stream_json())

            yield stream()

    async def wait(self, bot_id: str, state: str | None, timeout: float | None) -> dict[str, Any]:
        if state is not None and state not in states.ALL_STATES:
            raise InvalidInput(f"unknown state {state!r}; states are: {', '.join(states.ALL_STATES)}")
        if timeout is not None and not 0 <= timeout < 10**9:
            raise InvalidInput("timeout must be a number of seconds >= 0")
        with self.hub.subscribe(bot_id) as subscription:
            reached: list[str] = [e["state"] for e in self.show({"id": bot_id})[0]["events"]]  # NotFound first

            async def until_reached() -> str:
                while True:
                    if state is not None and state in reached:
                        return state
                    if reached and states.is_terminal(reached[-1]):
                        return reached[-1]
                    event = await subscription.get()
                    if event is None:
                        raise DaemonUnavailable("the daemon is stopping")
                    if isinstance(event, Gone):
                        raise NotFound(f"{bot_id} was cancelled (deleted) while waiting")
                    reached.append(event.state)

            try:
                final = await asyncio.wait_for(until_reached(), timeout)
            except TimeoutError:
                raise WaitTimeout(f"timed out after {timeout}s waiting for {bot_id} (it is {reached[-1]})") from None
        if state is not None and final != state:
            raise Conflict(f"{bot_id} finished as {final} without reaching {state}")
        bot: dict[str, Any] = self.show({"id": bot_id})[0]
        return bot

    async def create_many(self, chunks: AsyncIterator[list[dict[str, Any]]], want_bots: bool,
                          commit: Callable[[], bool]) -> Result:
        bulk = self.new_bulk()
        async for items in chunks:
            for start in range(0, len(items), BULK_SLICE):
                bulk.add(items[start : start + BULK_SLICE])
                await asyncio.sleep(0)  # let a due join through between slices
        go = commit()
        if go and not bulk.problems and self.before_insert is not None:
            await self.before_insert(bulk.count)
        return bulk.finish(want_bots, commit=go)
