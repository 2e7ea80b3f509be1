"""Waiting for an ``asyncio.Event`` with a timeout, without losing a cancellation.

Python 3.11's ``asyncio.wait_for`` can swallow a ``CancelledError`` that arrives as the
awaited event fires (fixed in 3.12): a forever-loop built on it then never stops -- a
webhook worker test hung in CI that way, and a daemon could hang at shutdown. The
``asyncio.timeout`` context manager counts cancellations correctly.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """``True`` once ``event`` is set, ``False`` after ``seconds``; a cancellation always propagates."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
