"""Unit tests of botsched.daemon.hub: the live fan-out behind ``events --follow`` and ``wait``."""

from __future__ import annotations

import asyncio

import pytest

from botsched.core.model import Event
from botsched.daemon import hub as hub_mod
from botsched.daemon.hub import GONE, EventHub

A, B = "bot_AAAAAAAAAAAAAAAA", "bot_BBBBBBBBBBBBBBBB"


def ev(seq: int, bot_id: str = A, state: str = "staged") -> Event:
    return Event(seq, bot_id, state, 1_000_000 * seq, None)


def drain(queue: asyncio.Queue[object]) -> list[object]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_a_per_bot_subscription_gets_only_its_bots_events() -> None:
    hub = EventHub()
    mine, everything = hub.subscribe(A), hub.subscribe()
    hub.publish([ev(1, A), ev(2, B), ev(3, A)])
    assert [e.seq for e in drain(mine.queue)] == [1, 3]  # type: ignore[attr-defined]
    assert [e.seq for e in drain(everything.queue)] == [1, 2, 3]  # type: ignore[attr-defined]


def test_events_arrive_in_published_order() -> None:
    async def scenario() -> list[int]:
        hub = EventHub()
        with hub.subscribe() as sub:
            hub.publish([ev(1), ev(2)])
            hub.publish([ev(3)])
            got = [await sub.get() for _ in range(3)]
        return [e.seq for e in got if isinstance(e, Event)]

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_gone_reaches_only_the_deleted_bots_subscribers() -> None:
    hub = EventHub()
    mine, other, everything = hub.subscribe(A), hub.subscribe(B), hub.subscribe()
    hub.gone(A)
    assert drain(mine.queue) == [GONE]
    assert drain(other.queue) == [] and drain(everything.queue) == []


def test_leaving_the_with_block_unsubscribes() -> None:
    hub = EventHub()
    with hub.subscribe() as sub:
        pass
    assert drain(sub.queue) == [None]  # its reader is told the stream ended
    hub.publish([ev(1)])
    assert drain(sub.queue) == []  # and it hears nothing more


def test_close_ends_every_stream() -> None:
    async def scenario() -> list[object]:
        hub = EventHub()
        subs = [hub.subscribe(A), hub.subscribe()]
        hub.close()
        return [await sub.get() for sub in subs]

    assert asyncio.run(scenario()) == [None, None]


def test_a_subscriber_that_falls_behind_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_mod, "QUEUE_LIMIT", 3)

    async def scenario() -> tuple[list[object], bool, list[int]]:
        hub = EventHub()
        slow, keeping_up = hub.subscribe(), hub.subscribe(B)
        hub.publish([ev(seq) for seq in range(1, 6)])  # 5 events into a queue of 3
        got = [await slow.get() for _ in range(4)]
        hub.publish([ev(9, B)])
        return got, slow.overflowed, [e.seq for e in drain(keeping_up.queue)]  # type: ignore[attr-defined]

    got, overflowed, other = asyncio.run(scenario())
    assert overflowed
    assert [e.seq for e in got[:3] if isinstance(e, Event)] == [1, 2, 3]
    assert got[3] is None, "a cut-off subscriber must see its stream end, not wait for ever"
    assert other == [9], "the others are not affected"
