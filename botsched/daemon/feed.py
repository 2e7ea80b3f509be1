"""Cluster mode: every agent's ``events --follow`` and ``wait`` hear the changes of every agent.

On one machine the store announces its own commits to the hub. With a shared database the
other agents' commits matter as much, so the hub is fed from the events table instead: a
wake-up (this agent committed, or a ``botsched_events`` notification said another one did,
or the listener reconnected) makes the feed read every event after the last seq it
published, in seq order, and publish them. Sequence numbers commit in order (the store
takes them under a lock), so reading "after the last seq" never skips one, and a missed
notification costs nothing but the wait for the next wake-up: the reconnect is one.

No timer: the feed sleeps until woken. The reads run on a thread of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable

from botsched.core.model import Event
from botsched.daemon.hub import EventHub
from botsched.daemon.store.base import StorageError

__all__ = ["EventFeed"]

log = logging.getLogger("botsched.daemon.feed")

#: Events read per query; a longer backlog is read page after page at once.
PAGE = 2000
#: After a failed read (the database is away), the next try comes this much later.
RETRY_S = 1.0


class EventFeed:
    """Publishes to ``hub`` every event (any agent's) after ``start_seq``, in seq order."""

    def __init__(self, read: Callable[[int, int], list[Event]], hub: EventHub, start_seq: int) -> None:
        self._read = read  # (after_seq, limit) -> events
        self._hub = hub
        self.last_seq = start_seq
        self._wake = asyncio.Event()
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="botsched-feed")
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Something was committed: read the events table (on the loop's thread)."""
        self._wake.set()

    def notice(self, payload: str) -> None:
        """A ``botsched_events`` notification (from the listener's thread): a commit of any
        agent (""), or a cancel ("gone BOT_ID": that bot's streams end, as on one machine)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            if payload.startswith("gone "):
                loop.call_soon_threadsafe(self._hub.gone, payload[5:])
            else:
                loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._catch_up()
        finally:
            self._loop = None
            self._thread.shutdown(wait=False)

    async def _catch_up(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                batch = await loop.run_in_executor(self._thread, self._read, self.last_seq, PAGE)
            except StorageError as exc:
                log.warning("cannot read new events: %s; retrying in %g s", exc.message, RETRY_S)
                await asyncio.sleep(RETRY_S)
                self._wake.set()
                return
            if batch:
                self.last_seq = batch[-1].seq
                self._hub.publish(batch)
            if len(batch) < PAGE:
                return
