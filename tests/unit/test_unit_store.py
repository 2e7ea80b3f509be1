"""Unit tests of botsched.daemon.store: the SQLite store, its JSON shape and its queue queries."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from botsched.core import states
from botsched.core.errors import BotschedError, Conflict, InvalidInput, NotFound
from botsched.core.model import Event, NewBot, new_bot_id
from botsched.daemon.store import SCHEMA_VERSION, Store
from botsched.core.timeparse import format_instant, parse_instant, to_us

S = 1_000_000
T0 = to_us(datetime(2025, 6, 16, 16, 40, 12, 518204, tzinfo=timezone.utc))
ID_RE = re.compile(r"bot_[A-Za-z0-9]{16}")
TIME_US_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
URL = "https://meet.google.com/gvy-zzra-ktd"


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


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "db")
    yield s
    s.close()


def one(store: Store, new: NewBot, now: int = T0) -> str:
    [bot_id] = store.insert([new], now)
    return bot_id


def finish(store: Store, bot_id: str, now: int, final: str = "ended") -> None:
    """Walk a scheduled bot through the lifecycle to a terminal state."""
    path = ["scheduled", "staged", "joining", "joined_recording", final]
    for old, new in zip(path, path[1:]):
        assert store.transition(bot_id, old, new, now)


# -- shape ------------------------------------------------------------------------------


def test_insert_get_round_trip_in_spec_shape(store: Store) -> None:
    join_us = T0 + 15 * 60 * S
    bot_id = one(store, bot(join_us, metadata={"team": "sales"}, dedup="k1"))
    got = store.get(bot_id)
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
    }
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
    assert store.get(bot_id)["join_at"] == "2025-06-16T17:40:12Z"
    bot_id = one(store, NewBot(URL, "b", "2025-06-16T17:40:12.250Z", join_us + 250_000, {}, None))
    assert store.get(bot_id)["join_at"] == "2025-06-16T17:40:12.250Z"


def test_ad_hoc_bot_is_ready_with_null_join_at(store: Store) -> None:
    bot_id = one(store, bot(None))
    got = store.get(bot_id)
    assert got["state"] == "ready"
    assert got["join_at"] is None
    assert got["deduplication_key"] is None
    assert got["metadata"] == {}
    assert [e["state"] for e in got["events"]] == ["ready"]


def test_unicode_round_trips(store: Store) -> None:
    bot_id = one(store, bot(name="Réunion 🤖", metadata={"ключ": "значение", "emoji": "🎉"}))
    got = store.get(bot_id)
    assert got["bot_name"] == "Réunion 🤖"
    assert got["metadata"] == {"ключ": "значение", "emoji": "🎉"}


def test_unknown_bot_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        store.get("bot_AAAAAAAAAAAAAAAA")
    assert info.value.exit_code == 3


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
    bots, more = store.list()
    assert [b["id"] for b in bots] == [adhoc5, b10, adhoc15, b20, b30]
    assert more is False


def test_list_ties_are_stable(store: Store) -> None:
    ids = store.insert([bot(T0 + S) for _ in range(5)], T0)
    first = [b["id"] for b in store.list()[0]]
    assert sorted(first) == sorted(ids)
    assert [b["id"] for b in store.list()[0]] == first


@pytest.mark.parametrize("limit, count, more", [(2, 2, True), (4, 4, True), (5, 5, False), (6, 5, False), (0, 5, False)])
def test_list_limit_and_more_flag(store: Store, limit: int, count: int, more: bool) -> None:
    ids = store.insert([bot(T0 + (5 - i) * S) for i in range(5)], T0)
    bots, has_more = store.list(limit=limit)
    assert len(bots) == count
    assert has_more is more
    assert [b["id"] for b in bots] == list(reversed(ids))[:count]


def test_list_default_limit_is_100(store: Store) -> None:
    store.insert([bot(T0 + i * S) for i in range(101)], T0)
    bots, more = store.list()
    assert len(bots) == 100 and more is True


def test_list_state_filter(store: Store) -> None:
    a, b, c = store.insert([bot(T0 + 1 * S), bot(T0 + 2 * S), bot(T0 + 3 * S)], T0)
    d = one(store, bot(None))
    assert store.stage(b, T0 + 2 * S, T0)
    assert store.transition(c, "scheduled", "fatal_error", T0, "x")
    assert [x["id"] for x in store.list(["staged"])[0]] == [b]
    assert [x["id"] for x in store.list(["scheduled", "fatal_error"])[0]] == [a, c]
    assert [x["id"] for x in store.list(["ready", "ready"])[0]] == [d]
    assert store.list(["ended"]) == ([], False)
    assert len(store.list([])[0]) == 4


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
    assert [x["id"] for x in store.list(dedup_prefix="cal:")[0]] == [a, b]
    assert store.list(dedup_prefix="cal%")[0] == []  # a literal prefix, not a LIKE pattern
    assert store.list(dedup_prefix="ca_")[0] == []
    assert [x["id"] for x in store.list(dedup_prefix="cal:b")[0]] == [b]
    assert [x["id"] for x in store.list(["staged"], dedup_prefix="cal:")[0]] == []


def test_ids_prefix_is_literal(store: Store) -> None:
    ids = store.insert([bot(T0 + i * S) for i in range(3)], T0)
    assert sorted(store.ids(prefix="bot_")) == sorted(ids)
    assert store.ids(prefix="bot%") == []
    assert store.ids(prefix=ids[1][:12]) == [ids[1]]


# -- dedup ------------------------------------------------------------------------------


def test_live_duplicate_dedup_key_conflicts_naming_the_holder(store: Store) -> None:
    first = one(store, bot(dedup="standup"))
    with pytest.raises(Conflict) as info:
        one(store, bot(dedup="standup"))
    assert first in info.value.message
    assert info.value.exit_code == 4
    assert store.counts()["scheduled"] == 1


@pytest.mark.parametrize("final", ["ended", "fatal_error"])
def test_dedup_key_is_free_again_once_the_holder_is_terminal(store: Store, final: str) -> None:
    first = one(store, bot(dedup="standup"))
    finish(store, first, T0, final)
    second = one(store, bot(dedup="standup"))
    assert second != first
    # and the new one blocks a third while it lives
    with pytest.raises(Conflict, match=second):
        one(store, bot(dedup="standup"))


def test_dedup_key_is_free_after_a_cancel(store: Store) -> None:
    first = one(store, bot(dedup="standup"))
    store.delete_scheduled(first)
    one(store, bot(dedup="standup"))


def test_dedup_duplicates_inside_one_batch(store: Store) -> None:
    with pytest.raises(Conflict) as info:
        store.insert([bot(dedup="a"), bot(dedup="b"), bot(dedup="a")], T0, ["line 1", "line 2", "line 3"])
    message = info.value.message
    assert store.counts() == {s: 0 for s in states.ALL_STATES}
    # The error must name the two clashing lines, and no bot id: nothing was created, so
    # an id in the message would be a bot that `show` cannot find.
    assert "line 3" in message and "line 1" in message, message
    for named in ID_RE.findall(message):
        with pytest.raises(NotFound):
            store.get(named)
        pytest.fail(f"the conflict names {named}, a bot that was rolled back: {message!r}")
    assert store.counts() == {s: 0 for s in states.ALL_STATES}
    with pytest.raises(Conflict):
        store.insert([bot(dedup="x"), bot(dedup="x")], T0)


def test_bulk_insert_is_all_or_nothing(store: Store) -> None:
    holder = one(store, bot(dedup="taken"))
    seq_before = store.last_seq()
    with pytest.raises(Conflict) as info:
        store.insert([bot(T0 + i * S) for i in range(50)] + [bot(dedup="taken")], T0, [f"line {i}" for i in range(1, 52)])
    assert "line 51" in info.value.message and holder in info.value.message
    assert [b["id"] for b in store.list(limit=0)[0]] == [holder]
    assert store.last_seq() == seq_before
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
    got = store.get(bot_id)
    assert got["state"] == "staged"
    assert got["updated_at"] == format_instant(T0 + S)
    assert got["events"][-1] == {"state": "staged", "at": format_instant(T0 + S), "detail": "go"}
    assert len(got["events"]) == 2


def test_transition_of_unknown_bot_is_false(store: Store) -> None:
    assert store.transition("bot_AAAAAAAAAAAAAAAA", "scheduled", "staged", T0) is False


def test_illegal_transition_is_refused_and_changes_nothing(store: Store) -> None:
    bot_id = one(store, bot())
    with pytest.raises(InvalidInput, match="illegal"):
        store.transition(bot_id, "scheduled", "joining", T0)
    assert store.get(bot_id)["state"] == "scheduled"
    assert len(store.events(bot_id)) == 1


def test_transition_many_is_atomic(store: Store) -> None:
    a, b = store.insert([bot(T0 + S), bot(T0 + 2 * S)], T0)
    with pytest.raises(InvalidInput):
        store.transition_many([(a, "scheduled", "staged", None), (b, "scheduled", "ended", None)], T0)
    assert store.get(a)["state"] == "scheduled"
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
    assert store.stage(bot_id, old_join, T0 + 2 * S) is False
    assert store.get(bot_id)["state"] == "scheduled"
    assert len(store.events(bot_id)) == 1
    assert store.stage(bot_id, new_join, T0 + 3 * S) is True
    got = store.get(bot_id)
    assert got["state"] == "staged"
    assert got["events"][-1]["at"] == format_instant(T0 + 3 * S)
    assert store.stage(bot_id, new_join, T0 + 4 * S) is False  # already staged


def test_stage_of_cancelled_bot_is_false(store: Store) -> None:
    bot_id = one(store, bot(T0 + 600 * S))
    store.delete_scheduled(bot_id)
    assert store.stage(bot_id, T0 + 600 * S, T0) is False


# -- reschedule and cancel --------------------------------------------------------------


def test_reschedule_changes_join_at_only(store: Store) -> None:
    bot_id = one(store, bot(T0 + 600 * S))
    new_join = T0 + 7200 * S + 250_000
    store.reschedule(bot_id, format_instant(new_join, 6), new_join, T0 + 5 * S)
    got = store.get(bot_id)
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
    with pytest.raises(Conflict) as info:
        store.reschedule(bot_id, "2030-01-01T00:00:00Z", T0 + 9999 * S, T0)
    assert current in info.value.message and bot_id in info.value.message
    with pytest.raises(Conflict) as info:
        store.delete_scheduled(bot_id)
    assert current in info.value.message
    got = store.get(bot_id)
    assert got["state"] == current
    assert got["join_at"] == format_instant(T0 + 600 * S, 0 if (T0 + 600 * S) % S == 0 else 6)


def test_reschedule_and_cancel_of_ready_bot_conflict(store: Store) -> None:
    bot_id = one(store, bot(None))
    with pytest.raises(Conflict, match="ready"):
        store.reschedule(bot_id, "2030-01-01T00:00:00Z", T0 + 9999 * S, T0)
    with pytest.raises(Conflict, match="ready"):
        store.delete_scheduled(bot_id)


def test_reschedule_and_cancel_unknown_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.reschedule("bot_AAAAAAAAAAAAAAAA", "2030-01-01T00:00:00Z", T0, T0)
    with pytest.raises(NotFound):
        store.delete_scheduled("bot_AAAAAAAAAAAAAAAA")


def test_cancel_deletes_bot_and_its_events_for_good(store: Store) -> None:
    keep = one(store, bot(T0 + 5 * S))
    gone = one(store, bot(T0 + 6 * S))
    store.delete_scheduled(gone)
    with pytest.raises(NotFound):
        store.get(gone)
    assert store.events(gone) == []
    assert all(e.bot_id == keep for e in store.events())
    assert store.state_since(gone) is None
    with pytest.raises(NotFound):
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
    assert store.stage(a, T0 + 10 * S, T0)
    assert store.next_time("scheduled") == T0 + 20 * S
    assert store.next_time("staged") == T0 + 10 * S


def test_ad_hoc_bots_are_due_by_created_at(store: Store) -> None:
    later = one(store, bot(None), now=T0 + 5 * S)
    earlier = one(store, bot(None), now=T0 + 2 * S)
    assert store.next_time("ready") == T0 + 2 * S
    assert [d.id for d in store.due("ready", T0 + 10 * S)] == [earlier, later]


def test_in_states(store: Store) -> None:
    a, b, c = store.insert([bot(T0 + 3 * S), bot(T0 + 1 * S), bot(T0 + 2 * S)], T0)
    store.stage(a, T0 + 3 * S, T0)
    store.stage(b, T0 + 1 * S, T0)
    assert [d.id for d in store.in_states(["staged"])] == [b, a]
    assert [d.id for d in store.in_states(["staged", "scheduled"])] == [b, c, a]


def test_counts_has_every_state(store: Store) -> None:
    assert store.counts() == {s: 0 for s in states.ALL_STATES}
    a, b, _ = store.insert([bot(T0 + S), bot(T0 + 2 * S), bot(T0 + 3 * S)], T0)
    one(store, bot(None))
    finish(store, a, T0)
    store.stage(b, T0 + 2 * S, T0)
    counts = store.counts()
    assert list(counts) == list(states.ALL_STATES)
    assert counts == {**{s: 0 for s in states.ALL_STATES}, "scheduled": 1, "staged": 1, "ready": 1, "ended": 1}


def test_events_and_state_since(store: Store) -> None:
    a = one(store, bot(T0 + 100 * S))
    b = one(store, bot(T0 + 200 * S))
    store.stage(a, T0 + 100 * S, T0 + 10 * S)
    store.transition(a, "staged", "joining", T0 + 20 * S, "joined 1s late")
    all_events = store.events()
    assert [(e.bot_id, e.state) for e in all_events] == [(a, "scheduled"), (b, "scheduled"), (a, "staged"), (a, "joining")]
    assert [e.seq for e in all_events] == sorted(e.seq for e in all_events)
    assert len({e.seq for e in all_events}) == 4
    assert [e.state for e in store.events(a)] == ["scheduled", "staged", "joining"]
    after = store.events(after_seq=all_events[1].seq)
    assert [e.state for e in after] == ["staged", "joining"]
    assert len(store.events(limit=1)) == 1
    assert store.state_since(a) == ("joining", T0 + 20 * S)
    assert store.state_since(b) == ("scheduled", T0)
    assert store.last_seq() == all_events[-1].seq
    assert all_events[-1].to_json() == {"state": "joining", "at": format_instant(T0 + 20 * S), "detail": "joined 1s late"}
    assert all_events[-1].to_stream_json()["bot_id"] == a


# -- the file ---------------------------------------------------------------------------


def test_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    raw.close()


def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = Store(path)
    a = one(first, bot(T0 + 10 * S, dedup="k", metadata={"m": "v"}))
    first.stage(a, T0 + 10 * S, T0 + S)
    before = first.get(a)
    last = first.last_seq()
    first.close()
    second = Store(path)
    assert second.get(a) == before
    assert second.integrity_check() == "ok"
    with pytest.raises(Conflict):
        one(second, bot(dedup="k"))  # the dedup index survived too
    b = one(second, bot())
    assert second.events(b)[0].seq > last
    second.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(BotschedError, match="newer"):
        Store(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(BotschedError):
        Store(path)


# -- the event listener -----------------------------------------------------------------


def test_listener_fires_after_commit_only(tmp_path: Path) -> None:
    path = tmp_path / "db"
    seen: list[tuple[list[Event], dict[str, str]]] = []

    def listener(events: list[Event]) -> None:
        # another connection must already see the change: the commit is done
        other = sqlite3.connect(path)
        visible = dict(other.execute("SELECT id, state FROM bots"))
        other.close()
        seen.append((list(events), visible))

    s = Store(path, on_events=listener)
    a, b = s.insert([bot(T0 + S), bot(T0 + 2 * S)], T0)
    assert len(seen) == 1
    events, visible = seen[0]
    assert [(e.bot_id, e.state) for e in events] == [(a, "scheduled"), (b, "scheduled")]
    assert visible == {a: "scheduled", b: "scheduled"}

    s.stage(a, T0 + S, T0)
    assert [(e.bot_id, e.state) for e in seen[-1][0]] == [(a, "staged")]
    assert seen[-1][1] == {a: "staged", b: "scheduled"}
    assert len(seen) == 2

    # nothing changed: no announcement
    assert s.transition(b, "staged", "joining", T0) is False
    assert s.stage(a, T0 + S, T0) is False
    s.reschedule(b, "2030-01-01T00:00:00Z", T0 + 999 * S, T0)
    assert len(seen) == 2

    # rolled back: no announcement, and nothing visible
    with pytest.raises(Conflict):
        s.insert([bot(dedup="d"), bot(dedup="d")], T0)
    with pytest.raises(InvalidInput):
        s.transition_many([(a, "staged", "joining", None), (b, "scheduled", "ended", None)], T0)
    assert len(seen) == 2
    assert s.get(a)["state"] == "staged"

    # a cancel announces nothing new either
    s.delete_scheduled(b)
    assert len(seen) == 2
    s.close()
