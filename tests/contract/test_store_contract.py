"""The store contract: every ``Store`` implementation must pass this whole suite.

Parametrized over implementations the way apscheduler's conftest does it: ``STORES`` lists
a factory per implementation: SQLite (a file in ``tmp_path``) and PostgreSQL (a fresh schema
on the session's private server, ``tests/support/postgres.py``; skipped only where PostgreSQL
is not installed at all).
Only the interface (``botsched.daemon.store.base.Store``) is used here; what is specific to
one implementation (files, schema, WAL) is tested in that implementation's unit tests.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from botsched.core import states
from botsched.core.model import Due, Event, NewBot, new_bot_id
from botsched.core.timeparse import format_instant, parse_instant, to_us
from botsched.daemon.store.base import (
    DeleteListener,
    DuplicateKeys,
    EventListener,
    IllegalTransition,
    KeyClash,
    NotScheduled,
    Store,
)
from botsched.daemon.store.sqlite import SqliteStore

S = 1_000_000
T0 = to_us(datetime(2025, 6, 16, 16, 40, 12, 518204, tzinfo=UTC))
ID_RE = re.compile(r"bot_[A-Za-z0-9]{16}")
TIME_US_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
URL = "https://meet.google.com/gvy-zzra-ktd"

#: (request, directory, on_events, on_deleted) -> a fresh, empty store. A second store made in
#: one test by the same factory opens the *same* storage (two handles on one database).
StoreFactory = Callable[[pytest.FixtureRequest, Path, "EventListener | None", "DeleteListener | None"], Store]


def _sqlite(
    request: pytest.FixtureRequest, directory: Path, on_events: EventListener | None, on_deleted: DeleteListener | None
) -> Store:
    return SqliteStore(directory / "botsched.db", on_events=on_events, on_deleted=on_deleted)


def _postgres(
    request: pytest.FixtureRequest, directory: Path, on_events: EventListener | None, on_deleted: DeleteListener | None
) -> Store:
    from botsched.daemon.store.postgres import PostgresStore

    url: str = request.getfixturevalue("postgres_url")  # this test's own schema
    return PostgresStore(url, on_events=on_events, on_deleted=on_deleted)


STORES = [pytest.param(_sqlite, id="sqlite"), pytest.param(_postgres, id="postgres")]


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    factory: StoreFactory = request.param
    opened: list[Store] = []

    def make(on_events: EventListener | None = None, on_deleted: DeleteListener | None = None) -> Store:
        store = factory(request, tmp_path, on_events, on_deleted)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


def bot(
    join_us: int | None = T0 + 3600 * S,
    *,
    dedup: str | None = None,
    name: str = "My scheduled bot",
    metadata: dict[str, str] | None = None,
    url: str = URL,
) -> NewBot:
    text = None if join_us is None else format_instant(join_us, 0 if join_us % S == 0 else 6)
    return NewBot(url, name, text, join_us, metadata or {}, dedup)


def one(store: Store, new: NewBot, now: int = T0) -> str:
    [bot_id] = store.insert([new], now)
    return bot_id


def fetch(store: Store, bot_id: str) -> dict[str, Any]:
    found = store.get(bot_id)
    assert found is not None, f"{bot_id} is not in the store"
    return dict(found)


def stage(store: Store, bot_id: str, join_at_us: int, now: int) -> bool:
    return store.stage_many([Due(bot_id, states.SCHEDULED, join_at_us)], now) == [bot_id]


def last_seq(store: Store) -> int:
    return max((event.seq for event in store.events()), default=0)


def finish(store: Store, bot_id: str, now: int, final: str = "ended") -> None:
    """Walk a scheduled bot through the lifecycle to a terminal state."""
    path = ["scheduled", "staged", "joining", "joined_recording", final]
    for old, new in itertools.pairwise(path):
        assert store.transition(bot_id, old, new, now)


# -- shape ------------------------------------------------------------------------------


def test_insert_get_round_trip_in_spec_shape(store: Store) -> None:
    join_us = T0 + 15 * 60 * S
    bot_id = one(store, bot(join_us, metadata={"team": "sales"}, dedup="k1"))
    got = fetch(store, bot_id)
    assert set(got) == {
        "id",
        "meeting_url",
        "bot_name",
        "state",
        "join_at",
        "created_at",
        "updated_at",
        "metadata",
        "deduplication_key",
        "events",
    } | (set() if isinstance(store, SqliteStore) else {"agent"})  # SPEC §10: a shared store's bots say who staged
    assert got.get("agent") is None  # nobody yet
    assert ID_RE.fullmatch(got["id"])
    assert got["meeting_url"] == URL
    assert got["bot_name"] == "My scheduled bot"
    assert got["state"] == "scheduled"
    assert got["join_at"] == "2025-06-16T16:55:12.518204Z"
    assert got["created_at"] == got["updated_at"] == "2025-06-16T16:40:12.518204Z"
    assert TIME_US_RE.fullmatch(got["created_at"])
    assert got["metadata"] == {"team": "sales"}
    assert got["deduplication_key"] == "k1"
    assert got["events"] == [{"state": "scheduled", "at": "2025-06-16T16:40:12.518204Z", "detail": None}]


def test_join_at_text_keeps_its_precision(store: Store) -> None:
    join_us = T0 + 3600 * S - (T0 % S)  # a whole second
    bot_id = one(store, NewBot(URL, "b", "2025-06-16T17:40:12Z", join_us, {}, None))
    assert fetch(store, bot_id)["join_at"] == "2025-06-16T17:40:12Z"
    bot_id = one(store, NewBot(URL, "b", "2025-06-16T17:40:12.250Z", join_us + 250_000, {}, None))
    assert fetch(store, bot_id)["join_at"] == "2025-06-16T17:40:12.250Z"


def test_ad_hoc_bot_is_ready_with_null_join_at(store: Store) -> None:
    bot_id = one(store, bot(None))
    got = fetch(store, bot_id)
    assert got["state"] == "ready"
    assert got["join_at"] is None
    assert got["deduplication_key"] is None
    assert got["metadata"] == {}
    assert [e["state"] for e in got["events"]] == ["ready"]


def test_unicode_round_trips(store: Store) -> None:
    bot_id = one(store, bot(name="Réunion 🤖", metadata={"ключ": "значение", "emoji": "🎉"}))
    got = fetch(store, bot_id)
    assert got["bot_name"] == "Réunion 🤖"
    assert got["metadata"] == {"ключ": "значение", "emoji": "🎉"}


def test_unknown_bot_is_none(store: Store) -> None:
    assert store.get("bot_AAAAAAAAAAAAAAAA") is None


def test_ids_are_well_formed_and_unique(store: Store) -> None:
    generated = {new_bot_id() for _ in range(2000)}
    assert len(generated) == 2000
    assert all(ID_RE.fullmatch(i) for i in generated)
    # all 62 characters are used (no stuck alphabet)
    assert set("".join(i[4:] for i in generated)) == set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    )
    ids = store.insert([bot(T0 + i * S) for i in range(500)], T0)
    assert len(set(ids)) == 500


def test_id_characters_are_uniform() -> None:
    # 62 symbols from random bytes: a plain `byte % 62` would make A..H 25 % likelier
    from collections import Counter

    counts = Counter("".join(new_bot_id()[4:] for _ in range(20_000)))
    assert len(counts) == 62
    mean = 20_000 * 16 / 62
    assert all(0.88 * mean < n < 1.12 * mean for n in counts.values()), counts.most_common(3)


def test_get_many_keeps_requested_order_and_skips_unknown(store: Store) -> None:
    ids = store.insert([bot(T0 + i * S) for i in range(3)], T0)
    wanted = [ids[2], "bot_AAAAAAAAAAAAAAAA", ids[0]]
    assert [b["id"] for b in store.get_many(wanted)] == [ids[2], ids[0]]
    assert store.get_many([]) == []


def test_get_many_handles_more_than_one_sql_chunk(store: Store) -> None:
    ids = store.insert([bot(T0 + i * S) for i in range(1203)], T0)
    got = store.get_many(ids)
    assert [b["id"] for b in got] == ids
    assert all(len(b["events"]) == 1 for b in got)


# -- listing ----------------------------------------------------------------------------


def test_list_orders_by_join_at_and_ad_hoc_by_created_at(store: Store) -> None:
    b30 = one(store, bot(T0 + 30 * 60 * S))
    b10 = one(store, bot(T0 + 10 * 60 * S))
    adhoc15 = one(store, bot(None), now=T0 + 15 * 60 * S)
    b20 = one(store, bot(T0 + 20 * 60 * S))
    adhoc5 = one(store, bot(None), now=T0 + 5 * 60 * S)
    bots, more = store.list_bots()
    assert [b["id"] for b in bots] == [adhoc5, b10, adhoc15, b20, b30]
    assert more is False


def test_list_ties_are_stable(store: Store) -> None:
    ids = store.insert([bot(T0 + S) for _ in range(5)], T0)
    first = [b["id"] for b in store.list_bots()[0]]
    assert sorted(first) == sorted(ids)
    assert [b["id"] for b in store.list_bots()[0]] == first


@pytest.mark.parametrize(
    ("limit", "count", "more"), [(2, 2, True), (4, 4, True), (5, 5, False), (6, 5, False), (0, 5, False)]
)
def test_list_limit_and_more_flag(store: Store, limit: int, count: int, more: bool) -> None:
    ids = store.insert([bot(T0 + (5 - i) * S) for i in range(5)], T0)
    bots, has_more = store.list_bots(limit=limit)
    assert len(bots) == count
    assert has_more is more
    assert [b["id"] for b in bots] == list(reversed(ids))[:count]


def test_list_default_limit_is_100(store: Store) -> None:
    store.insert([bot(T0 + i * S) for i in range(101)], T0)
    bots, more = store.list_bots()
    assert len(bots) == 100 and more is True


def test_list_state_filter(store: Store) -> None:
    a, b, c = store.insert([bot(T0 + 1 * S), bot(T0 + 2 * S), bot(T0 + 3 * S)], T0)
    d = one(store, bot(None))
    assert stage(store, b, T0 + 2 * S, T0)
    assert store.transition(c, "scheduled", "fatal_error", T0, "x")
    assert [x["id"] for x in store.list_bots(["staged"])[0]] == [b]
    assert [x["id"] for x in store.list_bots(["scheduled", "fatal_error"])[0]] == [a, c]
    assert [x["id"] for x in store.list_bots(["ready", "ready"])[0]] == [d]
    assert store.list_bots(["ended"]) == ([], False)
    assert len(store.list_bots([])[0]) == 4


def test_list_dedup_prefix(store: Store) -> None:
    a, b, _, _, _ = store.insert(
        [
            bot(T0 + 1 * S, dedup="cal:a"),
            bot(T0 + 2 * S, dedup="cal:b"),
            bot(T0 + 3 * S, dedup="other:cal:c"),
            bot(T0 + 4 * S, dedup="CAL:d"),
            bot(T0 + 5 * S),
        ],
        T0,
    )
    assert [x["id"] for x in store.list_bots(dedup_prefix="cal:")[0]] == [a, b]
    assert store.list_bots(dedup_prefix="cal%")[0] == []  # a literal prefix, not a LIKE pattern
    assert store.list_bots(dedup_prefix="ca_")[0] == []
    assert [x["id"] for x in store.list_bots(dedup_prefix="cal:b")[0]] == [b]
    assert [x["id"] for x in store.list_bots(["staged"], dedup_prefix="cal:")[0]] == []


def test_ids_prefix_is_literal(store: Store) -> None:
    ids = store.insert([bot(T0 + i * S) for i in range(3)], T0)
    assert sorted(store.ids(prefix="bot_")) == sorted(ids)
    assert store.ids(prefix="bot%") == []
    assert store.ids(prefix=ids[1][:12]) == [ids[1]]


# -- dedup ------------------------------------------------------------------------------


def test_live_duplicate_dedup_key_is_refused_naming_the_holder(store: Store) -> None:
    first = one(store, bot(dedup="standup"))
    with pytest.raises(DuplicateKeys) as info:
        one(store, bot(dedup="standup"))
    assert info.value.clashes == [KeyClash(0, "standup", first, "scheduled", None)]
    assert store.counts()["scheduled"] == 1


@pytest.mark.parametrize("final", ["ended", "fatal_error"])
def test_dedup_key_is_free_again_once_the_holder_is_terminal(store: Store, final: str) -> None:
    first = one(store, bot(dedup="standup"))
    finish(store, first, T0, final)
    second = one(store, bot(dedup="standup"))
    assert second != first
    # and the new one blocks a third while it lives
    with pytest.raises(DuplicateKeys) as info:
        one(store, bot(dedup="standup"))
    assert [clash.holder_id for clash in info.value.clashes] == [second]


def test_dedup_key_is_free_after_a_cancel(store: Store) -> None:
    first = one(store, bot(dedup="standup"))
    store.delete_scheduled(first)
    one(store, bot(dedup="standup"))


def test_dedup_duplicates_inside_one_batch(store: Store) -> None:
    with pytest.raises(DuplicateKeys) as info:
        store.insert([bot(dedup="a"), bot(dedup="b"), bot(dedup="a")], T0)
    # The clash names the two items, and no holder: nothing was created, so a bot id
    # would be one that `show` cannot find.
    assert info.value.clashes == [KeyClash(2, "a", None, None, 0)]
    assert store.counts() == {s: 0 for s in states.ALL_STATES}
    with pytest.raises(DuplicateKeys):
        store.insert([bot(dedup="x"), bot(dedup="x")], T0)


def test_bulk_insert_is_all_or_nothing(store: Store) -> None:
    holder = one(store, bot(dedup="taken"))
    seq_before = last_seq(store)
    with pytest.raises(DuplicateKeys) as info:
        store.insert([bot(T0 + i * S) for i in range(50)] + [bot(dedup="taken")], T0)
    assert info.value.clashes == [KeyClash(50, "taken", holder, "scheduled", None)]
    assert [b["id"] for b in store.list_bots(limit=0)[0]] == [holder]
    assert last_seq(store) == seq_before
    # and the store still works, with sequence numbers continuing
    new = one(store, bot())
    assert store.events(new)[0].seq > seq_before


def test_bulk_insert_with_many_bots(store: Store) -> None:
    ids = store.insert([bot(T0 + i * S) for i in range(5_000)], T0)
    assert len(set(ids)) == 5_000
    assert store.counts()["scheduled"] == 5_000
    assert len(store.events()) == 5_000


# -- compare-and-set --------------------------------------------------------------------


def test_transition_is_compare_and_set(store: Store) -> None:
    bot_id = one(store, bot())
    assert store.transition(bot_id, "scheduled", "staged", T0 + S, "go") is True
    assert store.transition(bot_id, "scheduled", "staged", T0 + 2 * S) is False  # the state moved on
    assert store.transition(bot_id, "scheduled", "fatal_error", T0 + 2 * S) is False
    got = fetch(store, bot_id)
    assert got["state"] == "staged"
    assert got["updated_at"] == format_instant(T0 + S)
    assert got["events"][-1] == {"state": "staged", "at": format_instant(T0 + S), "detail": "go"}
    assert len(got["events"]) == 2


def test_transition_of_unknown_bot_is_false(store: Store) -> None:
    assert store.transition("bot_AAAAAAAAAAAAAAAA", "scheduled", "staged", T0) is False


def test_illegal_transition_is_refused_and_changes_nothing(store: Store) -> None:
    bot_id = one(store, bot())
    with pytest.raises(IllegalTransition, match="illegal"):
        store.transition(bot_id, "scheduled", "joining", T0)
    assert fetch(store, bot_id)["state"] == "scheduled"
    assert len(store.events(bot_id)) == 1


def test_transition_many_is_atomic(store: Store) -> None:
    a, b = store.insert([bot(T0 + S), bot(T0 + 2 * S)], T0)
    with pytest.raises(IllegalTransition):
        store.transition_many([(a, "scheduled", "staged", None), (b, "scheduled", "ended", None)], T0)
    assert fetch(store, a)["state"] == "scheduled"
    moved = store.transition_many(
        [(a, "scheduled", "staged", None), (b, "staged", "joining", None), (b, "scheduled", "staged", None)], T0
    )
    assert moved == [a, b]


def test_stage_is_fenced_on_join_at(store: Store) -> None:
    old_join = T0 + 600 * S
    new_join = T0 + 1200 * S
    bot_id = one(store, bot(old_join))
    store.reschedule(bot_id, format_instant(new_join, 0), new_join, T0 + S)
    # the scheduler read the old join_at before the reschedule: its stage loses
    assert stage(store, bot_id, old_join, T0 + 2 * S) is False
    assert fetch(store, bot_id)["state"] == "scheduled"
    assert len(store.events(bot_id)) == 1
    assert stage(store, bot_id, new_join, T0 + 3 * S) is True
    got = fetch(store, bot_id)
    assert got["state"] == "staged"
    assert got["events"][-1]["at"] == format_instant(T0 + 3 * S)
    assert stage(store, bot_id, new_join, T0 + 4 * S) is False  # already staged


def test_stage_of_cancelled_bot_is_false(store: Store) -> None:
    bot_id = one(store, bot(T0 + 600 * S))
    store.delete_scheduled(bot_id)
    assert stage(store, bot_id, T0 + 600 * S, T0) is False


# -- reschedule and cancel --------------------------------------------------------------


def test_reschedule_changes_join_at_only(store: Store) -> None:
    bot_id = one(store, bot(T0 + 600 * S))
    new_join = T0 + 7200 * S + 250_000
    store.reschedule(bot_id, format_instant(new_join, 6), new_join, T0 + 5 * S)
    got = fetch(store, bot_id)
    assert got["state"] == "scheduled"
    assert parse_instant(got["join_at"]) == new_join
    assert got["updated_at"] == format_instant(T0 + 5 * S)
    assert got["created_at"] == format_instant(T0)
    assert store.next_time("scheduled") == new_join


@pytest.mark.parametrize("state_path", [["staged"], ["staged", "joining"], ["fatal_error"]])
def test_reschedule_and_cancel_only_while_scheduled(store: Store, state_path: list[str]) -> None:
    bot_id = one(store, bot(T0 + 600 * S))
    current = "scheduled"
    for new in state_path:
        assert store.transition(bot_id, current, new, T0)
        current = new
    with pytest.raises(NotScheduled) as info:
        store.reschedule(bot_id, "2030-01-01T00:00:00Z", T0 + 9999 * S, T0)
    assert (info.value.bot_id, info.value.state) == (bot_id, current)
    with pytest.raises(NotScheduled) as info:
        store.delete_scheduled(bot_id)
    assert (info.value.bot_id, info.value.state) == (bot_id, current)
    got = fetch(store, bot_id)
    assert got["state"] == current
    assert got["join_at"] == format_instant(T0 + 600 * S, 0 if (T0 + 600 * S) % S == 0 else 6)


def test_reschedule_and_cancel_of_ready_bot_conflict(store: Store) -> None:
    bot_id = one(store, bot(None))
    with pytest.raises(NotScheduled) as info:
        store.reschedule(bot_id, "2030-01-01T00:00:00Z", T0 + 9999 * S, T0)
    assert info.value.state == "ready"
    with pytest.raises(NotScheduled) as info:
        store.delete_scheduled(bot_id)
    assert info.value.state == "ready"


def test_reschedule_and_cancel_unknown_say_no_state(store: Store) -> None:
    with pytest.raises(NotScheduled) as info:
        store.reschedule("bot_AAAAAAAAAAAAAAAA", "2030-01-01T00:00:00Z", T0, T0)
    assert info.value.state is None
    with pytest.raises(NotScheduled) as info:
        store.delete_scheduled("bot_AAAAAAAAAAAAAAAA")
    assert info.value.state is None


def test_cancel_deletes_bot_and_its_events_for_good(store: Store) -> None:
    keep = one(store, bot(T0 + 5 * S))
    gone = one(store, bot(T0 + 6 * S))
    store.delete_scheduled(gone)
    assert store.get(gone) is None
    assert store.events(gone) == []
    assert all(e.bot_id == keep for e in store.events())
    assert store.state_since(gone) is None
    with pytest.raises(NotScheduled):
        store.delete_scheduled(gone)  # a second cancel
    assert store.counts()["scheduled"] == 1


def test_event_seq_numbers_are_never_reused_after_a_delete(store: Store) -> None:
    a = one(store, bot(T0 + 5 * S))
    b = one(store, bot(T0 + 6 * S))
    b_seq = store.events(b)[0].seq
    store.delete_scheduled(b)  # deletes the newest event
    c = one(store, bot(T0 + 7 * S))
    assert store.events(c)[0].seq > b_seq
    assert store.events(a)[0].seq < b_seq


# -- the queue --------------------------------------------------------------------------


def test_next_time_and_due_in_queue_order(store: Store) -> None:
    assert store.next_time("scheduled") is None
    c, a, b = store.insert([bot(T0 + 30 * S), bot(T0 + 10 * S), bot(T0 + 20 * S)], T0)
    assert store.next_time("scheduled") == T0 + 10 * S
    assert store.next_time("staged") is None
    assert store.due("scheduled", T0 + 9 * S) == []
    assert [d.id for d in store.due("scheduled", T0 + 10 * S)] == [a]  # inclusive
    due = store.due("scheduled", T0 + 100 * S)
    assert [d.id for d in due] == [a, b, c]
    assert [d.join_at_us for d in due] == [T0 + 10 * S, T0 + 20 * S, T0 + 30 * S]
    assert all(d.state == "scheduled" for d in due)
    assert [d.id for d in store.due("scheduled", T0 + 100 * S, limit=2)] == [a, b]
    assert stage(store, a, T0 + 10 * S, T0)
    assert store.next_time("scheduled") == T0 + 20 * S
    assert store.next_time("staged") == T0 + 10 * S


def test_ad_hoc_bots_are_due_by_created_at(store: Store) -> None:
    later = one(store, bot(None), now=T0 + 5 * S)
    earlier = one(store, bot(None), now=T0 + 2 * S)
    assert store.next_time("ready") == T0 + 2 * S
    assert [d.id for d in store.due("ready", T0 + 10 * S)] == [earlier, later]


def test_in_states(store: Store) -> None:
    a, b, c = store.insert([bot(T0 + 3 * S), bot(T0 + 1 * S), bot(T0 + 2 * S)], T0)
    stage(store, a, T0 + 3 * S, T0)
    stage(store, b, T0 + 1 * S, T0)
    assert [d.id for d in store.in_states(["staged"])] == [b, a]
    assert [d.id for d in store.in_states(["staged", "scheduled"])] == [b, c, a]


def test_counts_has_every_state(store: Store) -> None:
    assert store.counts() == {s: 0 for s in states.ALL_STATES}
    a, b, _ = store.insert([bot(T0 + S), bot(T0 + 2 * S), bot(T0 + 3 * S)], T0)
    one(store, bot(None))
    finish(store, a, T0)
    stage(store, b, T0 + 2 * S, T0)
    counts = store.counts()
    assert list(counts) == list(states.ALL_STATES)
    assert counts == {**{s: 0 for s in states.ALL_STATES}, "scheduled": 1, "staged": 1, "ready": 1, "ended": 1}


def test_events_and_state_since(store: Store) -> None:
    a = one(store, bot(T0 + 100 * S))
    b = one(store, bot(T0 + 200 * S))
    stage(store, a, T0 + 100 * S, T0 + 10 * S)
    store.transition(a, "staged", "joining", T0 + 20 * S, "joined 1s late")
    all_events = store.events()
    assert [(e.bot_id, e.state) for e in all_events] == [
        (a, "scheduled"), (b, "scheduled"), (a, "staged"), (a, "joining"),
    ]
    assert [e.seq for e in all_events] == sorted(e.seq for e in all_events)
    assert len({e.seq for e in all_events}) == 4
    assert [e.state for e in store.events(a)] == ["scheduled", "staged", "joining"]
    after = store.events(after_seq=all_events[1].seq)
    assert [e.state for e in after] == ["staged", "joining"]
    assert len(store.events(limit=1)) == 1
    assert store.state_since(a) == ("joining", T0 + 20 * S)
    assert store.state_since(b) == ("scheduled", T0)
    assert last_seq(store) == all_events[-1].seq
    assert all_events[-1].to_json() == {
        "state": "joining", "at": format_instant(T0 + 20 * S), "detail": "joined 1s late",
    }
    assert all_events[-1].to_stream_json()["bot_id"] == a


# -- notes, announcements, housekeeping -------------------------------------------------------


def test_note_adds_an_event_without_changing_state(store: Store) -> None:
    bot_id = one(store, bot())
    store.note(bot_id, T0 + S, "waiting for a runner slot")
    found = fetch(store, bot_id)
    assert found["state"] == "scheduled"
    assert found["events"][-1] == {
        "state": "scheduled", "at": format_instant(T0 + S), "detail": "waiting for a runner slot",
    }
    store.note("bot_AAAAAAAAAAAAAAAA", T0, "nobody")  # an unknown bot: nothing happens
    assert len(store.events()) == 2


def test_listeners_hear_commits_in_order_and_nothing_rolled_back(make_store: Callable[..., Store]) -> None:
    heard: list[list[Event]] = []
    deleted: list[str] = []
    store = make_store(on_events=heard.append, on_deleted=deleted.append)
    a, b = store.insert([bot(T0 + S), bot(T0 + 2 * S)], T0)
    assert [[(e.bot_id, e.state) for e in batch] for batch in heard] == [[(a, "scheduled"), (b, "scheduled")]]
    assert stage(store, a, T0 + S, T0)
    assert [(e.bot_id, e.state) for e in heard[-1]] == [(a, "staged")]
    assert store.transition(b, "staged", "joining", T0) is False  # nothing moved: nothing heard
    with pytest.raises(DuplicateKeys):
        store.insert([bot(dedup="d"), bot(dedup="d")], T0)
    with pytest.raises(IllegalTransition):
        store.transition_many([(a, "staged", "joining", None), (b, "scheduled", "ended", None)], T0)
    assert len(heard) == 2
    assert fetch(store, a)["state"] == "staged"  # the rolled-back change is not visible either
    store.delete_scheduled(b)
    assert deleted == [b] and len(heard) == 2
    seqs = [e.seq for batch in heard for e in batch]
    assert seqs == sorted(seqs)


def test_held_announcements_come_out_together_at_the_end(make_store: Callable[..., Store]) -> None:
    heard: list[list[Event]] = []
    store = make_store(on_events=heard.append)
    a, b = store.insert([bot(T0 + S), bot(T0 + 2 * S)], T0)
    heard.clear()
    with store.hold_announcements():
        assert stage(store, a, T0 + S, T0)
        assert stage(store, b, T0 + 2 * S, T0)
        assert heard == []  # committed, not yet announced
        assert fetch(store, a)["state"] == "staged"
    assert [(e.bot_id, e.state) for batch in heard for e in batch] == [(a, "staged"), (b, "staged")]


def test_housekeeping_comes_due_with_commits_and_resets(store: Store) -> None:
    assert store.check_files() is None
    assert not store.checkpoint_due()
    for i in range(300):
        one(store, bot(T0 + (i + 1) * S))
    assert store.checkpoint_due()
    store.checkpoint()
    assert not store.checkpoint_due()
    assert len(store.ids()) == 300  # and nothing was lost by it


def test_followed_calendars_are_stored_updated_and_removed(store: Store) -> None:
    """Issue 16's subscriptions: one record per name, poll state replaced, gone after remove."""
    source = {"kind": "https", "url": "https://calendar.example/feed.ics"}
    assert store.add_calendar("work", source, {"every": 300}, {"failures": 0}, 1_000)
    assert not store.add_calendar("work", {"kind": "file", "path": "/x.ics"}, {}, {}, 2_000), "the name is taken"
    assert store.add_calendar("home", {"kind": "file", "path": "/h.ics"}, {}, {}, 3_000)
    assert store.save_calendar_poll("work", {"failures": 2, "etag": '"abc"'})
    assert not store.save_calendar_poll("gone", {"failures": 1})
    listed = store.calendars()
    assert [c["name"] for c in listed] == ["home", "work"]
    work = listed[1]
    assert (work["source"], work["options"], work["poll"], work["created_us"]) == (
        source, {"every": 300}, {"failures": 2, "etag": '"abc"'}, 1_000)
    assert store.remove_calendar("work") and not store.remove_calendar("work")
    assert [c["name"] for c in store.calendars()] == ["home"]


def test_list_pages_walk_the_whole_order_in_bounded_pages(store: Store) -> None:
    """``list_page`` (issue 12's streamed list): pages of at most ``size`` that, joined, are
    exactly ``list_bots`` with no limit -- ties on join_at included -- and honour the filters."""
    ids = store.insert([bot(T0 + (i // 3) * S, dedup=f"ical/x:{i}" if i % 2 else None) for i in range(50)], T0)
    ids += store.insert([bot(None) for _ in range(4)], T0 + 1)  # ad-hoc: by created_at
    whole, more = store.list_bots(limit=0)
    assert not more and len(whole) == 54
    for wanted, prefix in (((), None), ((states.SCHEDULED,), None), ((), "ical/x:")):
        walked: list[str] = []
        after = None
        while True:
            page, after = store.list_page(wanted, prefix, after, 7)
            assert len(page) <= 7
            if not page:
                break
            walked += [b["id"] for b in page]
        expected = [b["id"] for b in store.list_bots(wanted, limit=0, dedup_prefix=prefix)[0]]
        assert walked == expected and len(set(walked)) == len(walked)
    assert len(expected) == 25
