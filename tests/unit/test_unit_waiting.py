"""``wait_event``: a timeout wait whose cancellation is never lost (3.11's wait_for loses it)."""

from __future__ import annotations

import asyncio

import pytest

from botsched.daemon.waiting import wait_event


def test_set_then_timeout() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, event.set)
        fired = await wait_event(event, 5)
        return fired, await wait_event(asyncio.Event(), 0.01)

    assert asyncio.run(main()) == (True, False)


def test_a_cancel_that_arrives_as_the_event_fires_is_not_swallowed() -> None:
    """The race that hung a webhook worker (and could hang a daemon's shutdown): the event is
    set and the waiting task cancelled in the same loop turn."""

    async def main() -> int:
        swallowed = 0
        for _ in range(200):
            event = asyncio.Event()
            task = asyncio.create_task(wait_event(event, 30))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            event.set()  # the inner wait completes in the next turn...
            task.cancel()  # ...as the cancellation arrives (3.11's wait_for returned here, 200 of 200)
            try:
                await task
                swallowed += 1
            except asyncio.CancelledError:
                pass
        return swallowed

    assert asyncio.run(main()) == 0


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_no_time_left_is_a_timeout(seconds: float) -> None:
    assert asyncio.run(wait_event(asyncio.Event(), seconds)) is False
