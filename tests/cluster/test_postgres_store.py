"""What only the PostgreSQL store has: its schema migrations, two handles (two agents) on one
database racing for the same bots, a server restart under it, and passwords kept out of
every message. Real PostgreSQL (the session's private server), never a mock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from botsched.core import states
from botsched.core.errors import DaemonUnavailable
from botsched.core.model import Due, NewBot
from botsched.daemon.store.postgres import SCHEMA_VERSION, DatabaseUnreachable, PostgresStore
from tests.support.home import wait_until
from tests.support.postgres import PostgresServer, _free_port

S = 1_000_000
T0 = 1_750_000_000 * S
URL = "https://meet.google.com/gvy-zzra-ktd"


def new_bots(count: int, join_us: int = T0 + 3600 * S) -> list[NewBot]:
    return [NewBot(URL, "b", None, join_us + i, {}, None) for i in range(count)]


def test_schema_version_is_recorded_once_and_reopening_keeps_the_data(
    agents: Callable[[], PostgresStore], postgres_url: str
) -> None:
    first = agents()
    [bot_id] = first.insert(new_bots(1), T0)
    second = agents()  # migrations already done: nothing is redone, nothing lost
    assert second.get(bot_id) is not None
    with psycopg.connect(postgres_url) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM botsched_schema ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_schema_is_refused_untouched(agents: Callable[[], PostgresStore], postgres_url: str) -> None:
    store = agents()
    [bot_id] = store.insert(new_bots(1), T0)
    with psycopg.connect(postgres_url) as connection:
        connection.execute("INSERT INTO botsched_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(DaemonUnavailable, match=f"has schema {SCHEMA_VERSION + 1}, newer than this botsched"):
        PostgresStore(postgres_url)
    assert store.get(bot_id) is not None


def test_agents_starting_together_migrate_once(postgres_url: str) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(postgres_url))
        except Exception as exc:  # noqa: BLE001  (reported below, not lost in the thread)
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert len(stores) == 4
        stores[0].insert(new_bots(1), T0)
        assert stores[3].counts()["scheduled"] == 1
    finally:
        for store in stores:
            store.close()


def test_two_agents_racing_for_the_same_bots_have_exactly_one_winner_each(
    agents: Callable[[], PostgresStore],
) -> None:
    a, b = agents(), agents()
    ids = a.insert(new_bots(300), T0)
    due = a.due(states.SCHEDULED, T0 + 7200 * S)
    assert len(due) == 300
    won: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def race(name: str, store: PostgresStore, order: list[Due]) -> None:
        barrier.wait()
        for start in range(0, len(order), 10):
            won[name].extend(store.stage_many(order[start : start + 10], T0))

    threads = [
        threading.Thread(target=race, args=("a", a, due)),
        threading.Thread(target=race, args=("b", b, list(reversed(due)))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(won["a"] + won["b"]) == sorted(ids), "every bot staged exactly once"
    assert not set(won["a"]) & set(won["b"])
    assert a.counts()["staged"] == 300
    staged_events = [e for e in b.events() if e.state == states.STAGED]
    assert len(staged_events) == 300
    seqs = [e.seq for e in b.events()]
    assert seqs == sorted(set(seqs)), "sequence numbers unique and in commit order"


def test_compare_and_set_across_agents(agents: Callable[[], PostgresStore]) -> None:
    a, b = agents(), agents()
    [bot_id] = a.insert(new_bots(1), T0)
    assert a.transition(bot_id, "scheduled", "fatal_error", T0, "cancelled by a") is True
    assert b.transition(bot_id, "scheduled", "staged", T0) is False  # b read it scheduled: it lost
    got = b.get(bot_id)
    assert got is not None and got["state"] == "fatal_error"


def test_the_pool_reconnects_after_a_server_restart(
    agents: Callable[[], PostgresStore], postgres_server: PostgresServer
) -> None:
    store = agents()
    [bot_id] = store.insert(new_bots(1), T0)
    postgres_server.restart()
    # the pool's connections died with the server; each is checked (and replaced) before use
    assert store.get(bot_id) is not None
    assert store.transition(bot_id, "scheduled", "staged", T0 + S) is True


def test_an_unreachable_server_is_exit_5_and_the_password_is_never_said(
    agents: Callable[[], PostgresStore], postgres_server: PostgresServer
) -> None:
    password = "pa55-w0rd-never-shown"
    nobody = f"postgresql://botsched:{password}@127.0.0.1:{_free_port()}/postgres"
    with pytest.raises(DaemonUnavailable) as info:
        PostgresStore(nobody)
    assert info.value.exit_code == 5
    assert password not in info.value.message
    assert "botsched:***@127.0.0.1" in info.value.message

    in_query = f"postgresql://botsched@127.0.0.1:{_free_port()}/postgres?password={password}"
    with pytest.raises(DaemonUnavailable) as info:
        PostgresStore(in_query)
    assert password not in info.value.message and "password=***" in info.value.message

    store = PostgresStore(postgres_server.url(password=password, schema=postgres_server.fresh_schema()))
    try:
        assert password not in store.describe() and "***" in store.describe()
        postgres_server.stop()
        try:
            with pytest.raises(DatabaseUnreachable) as lost:
                store.insert(new_bots(1), T0)
            assert lost.value.exit_code == 5
            assert "nothing was changed" in lost.value.message
            assert password not in lost.value.message
            # the probe tells a server that says it is down (refused) from a silent network
            wait_until(lambda: (store.outage() or (None, False))[1], timeout=5, what="the outage seen as the server's")
            started = time.monotonic()
            with pytest.raises(DatabaseUnreachable):  # during the outage: at once, no wait on the pool
                store.counts()
            assert time.monotonic() - started < 0.5
        finally:
            postgres_server.restart()
        wait_until(lambda: store.outage() is None, timeout=10, what="the store to notice the server is back")
        store.insert(new_bots(1), T0)  # and it is back by itself
        assert store.counts()["scheduled"] == 1
    finally:
        store.close()
