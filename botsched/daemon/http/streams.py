"""``app.Streams`` over the service's own streams (``events``, ``wait``, ``bulk`` +
``finish_bulk``): the JSON-lines protocol and HTTP share every rule; this only reshapes
them for HTTP (the bot is checked before the status line goes out, bulk items arrive as
chunks of a request body).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

Result = tuple[Any, list[str]]
#: A bulk create is checked in slices this big, yielding to the scheduler between them.
BULK_SLICE = 200


class StreamingService(Protocol):
    """What ``BotService`` offers for the long-lived operations."""

    def show(self, args: dict[str, Any]) -> Result: ...
    def events(self, args: dict[str, Any]) -> AsyncIterator[Any]: ...
    async def wait(self, args: dict[str, Any]) -> Result: ...
    def bulk(self) -> Any: ...
    async def finish_bulk(self, bulk: Any, want_bots: bool, commit: bool) -> Result: ...


class ServiceStreams:
    def __init__(self, service: StreamingService) -> None:
        self.service = service

    @contextlib.asynccontextmanager
    async def events(self, bot_id: str | None, follow: bool) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        if bot_id is not None:
            self.service.show({"id": bot_id})  # NotFound while a status can still say so
        stream = self.service.events({"id": bot_id, "follow": follow})
        try:
            yield stream
        finally:
            aclose = getattr(stream, "aclose", None)  # unsubscribe now, not when collected
            if aclose is not None:
                await aclose()

    async def wait(self, bot_id: str, state: str | None, timeout: float | None) -> dict[str, Any]:
        bot, _ = await self.service.wait({"id": bot_id, "state": state, "timeout": timeout})
        return dict(bot)

    async def create_many(self, chunks: AsyncIterator[list[dict[str, Any]]], want_bots: bool,
                          commit: Callable[[], bool]) -> Result:
        bulk = self.service.bulk()
        async for items in chunks:
            for start in range(0, len(items), BULK_SLICE):
                bulk.add(items[start : start + BULK_SLICE])
                await asyncio.sleep(0)  # let a due join through between slices
        return await self.service.finish_bulk(bulk, want_bots, commit())
