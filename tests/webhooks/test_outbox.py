"""The outbox on each store (a real SQLite file, a real PostgreSQL schema: ``backend``):
matching, order per bot per endpoint, leases, 410, replay, listing, and rows that survive a
reopened connection; on PostgreSQL also two agents claiming at once."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
from webhook_helpers import Backend, Bots, begin

from botsched.core.errors import Conflict, InvalidInput, NotFound
from botsched.daemon.webhooks import outbox

NOW = 1_800_000_000_000_000


def _add(conn: sqlite3.Connection, states: tuple[str, ...] = ()) -> str:
    return str(outbox.add_endpoint(conn, "http://127.0.0.1:9/hook", states, NOW)["id"])


def test_urls() -> None:
    for ok in (
        "https://example.com/h",
        "http://127.0.0.1:8080/h",
        "http://localhost/h",
        "http://[::1]/h",
    ):
        assert outbox.validate_url(ok) == ok
    for bad in (
        "http://example.com/h",
        "ftp://x/",
        "https://",
        "not a url",
        "https://a b/",
    ):
        with pytest.raises(InvalidInput):
            outbox.validate_url(bad)


def test_one_row_per_event_and_matching_endpoint(
    conn: sqlite3.Connection, bots: Bots
) -> None:
    every = _add(conn)
    only_end = _add(conn, ("ended", "fatal_error"))
    with pytest.raises(InvalidInput):
        _add(conn, ("nonsense",))
    bots.change([("bot_a", "scheduled"), ("bot_a", "staged")])
    bots.change([("bot_a", "joining"), ("bot_a", "ended")])
    rows = conn.execute(
        "SELECT endpoint_id, new_state, body FROM webhook_deliveries ORDER BY seq"
    ).fetchall()
    assert [(e, s) for e, s, _ in rows] == [
        (every, "scheduled"), (every, "staged"), (every, "joining"), (every, "ended"), (only_end, "ended"),
    ]  # fmt: skip
    bodies = [json.loads(b)["data"] for _, _, b in rows]
    assert [b["old_state"] for b in bodies[:4]] == [
        None,
        "scheduled",
        "staged",
        "joining",
    ]
    assert bodies[3]["bot"]["metadata"] == {"team": "sales"}
    # one event id per event, shared by the endpoints it goes to
    ended = conn.execute(
        "SELECT DISTINCT event_id FROM webhook_deliveries WHERE new_state = 'ended'"
    ).fetchall()
    assert len(ended) == 1


def test_no_endpoint_no_rows(conn: sqlite3.Connection, bots: Bots) -> None:
    bots.change([("bot_a", "scheduled")])
    assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0] == 0


def test_a_rolled_back_state_change_leaves_no_delivery(
    conn: sqlite3.Connection, bots: Bots
) -> None:
    _add(conn)
    bots.add("bot_a")
    begin(conn)
    conn.execute(
        "INSERT INTO events (seq, bot_id, state, at_us) VALUES (1, 'bot_a', 'scheduled', 1)"
    )

    class Ev:
        seq, bot_id, state, at_us, detail = 1, "bot_a", "scheduled", 1, None

    assert outbox.enqueue(conn, [Ev()]) == 1
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0] == 0


def test_order_per_bot_per_endpoint(conn: sqlite3.Connection, bots: Bots) -> None:
    first, second = _add(conn), _add(conn)
    bots.change(
        [
            ("bot_a", "scheduled"),
            ("bot_b", "scheduled"),
            ("bot_a", "staged"),
            ("bot_a", "joining"),
        ]
    )
    now = NOW * 2
    claims = outbox.claim_due(conn, now, 100)
    # per endpoint: bot_a's first and bot_b's first; never two of one bot for one endpoint
    assert sorted((c.endpoint_id, c.bot_id) for c in claims) == sorted(
        [(first, "bot_a"), (first, "bot_b"), (second, "bot_a"), (second, "bot_b")]
    )
    assert outbox.claim_due(conn, now, 100) == []  # leased
    a_first = next(c for c in claims if c.endpoint_id == first and c.bot_id == "bot_a")
    # a retry keeps the next one back
    outbox.record_attempt(conn, a_first.id, now, 500, None, "retry", now + 5_000_000)
    assert [c for c in outbox.claim_due(conn, now, 100) if c.endpoint_id == first] == []
    assert (
        outbox.next_due_us(conn) == now + 5_000_000
    )  # not the order-blocked ones, due long ago
    retried = [
        c
        for c in outbox.claim_due(conn, now + 5_000_000, 100)
        if c.endpoint_id == first
    ]
    assert [c.id for c in retried] == [a_first.id] and retried[0].attempts == 1
    # given up (failed) also lets the next one go, in order
    outbox.record_attempt(conn, a_first.id, now, 500, None, "failed")
    nxt = [
        c
        for c in outbox.claim_due(conn, now + 5_000_000, 100)
        if c.endpoint_id == first
    ]
    assert [json.loads(c.body)["data"]["new_state"] for c in nxt] == ["staged"]


def test_per_endpoint_share(conn: sqlite3.Connection, bots: Bots) -> None:
    slow, fast = _add(conn), _add(conn)
    bots.change([(f"bot_{i}", "scheduled") for i in range(10)])
    claims = outbox.claim_due(conn, NOW * 2, 6, busy={slow: 2}, per_endpoint=3)
    assert sum(c.endpoint_id == slow for c in claims) == 1
    assert sum(c.endpoint_id == fast for c in claims) == 3  # its own share too


def test_rows_and_order_survive_a_reopened_connection(
    backend: Backend, conn: sqlite3.Connection, bots: Bots
) -> None:
    endpoint = _add(conn)
    bots.change([("bot_a", "scheduled"), ("bot_a", "staged")])
    claimed = outbox.claim_due(conn, NOW * 2, 10)
    assert len(claimed) == 1
    conn.close()  # the daemon dies mid-send
    again = backend.connect()
    try:
        assert (
            outbox.claim_due(again, NOW * 2, 10) == []
        )  # the dead process's lease still holds
        assert outbox.release_claims(again) == 1  # a restart voids it
        [claim] = outbox.claim_due(again, NOW * 2, 10)
        assert (claim.id, claim.endpoint_id) == (claimed[0].id, endpoint)
        assert claim.body == claimed[0].body
    finally:
        again.close()


def test_410_disables_and_fails_the_rest(conn: sqlite3.Connection, bots: Bots) -> None:
    endpoint = _add(conn)
    bots.change([("bot_a", "scheduled"), ("bot_a", "staged"), ("bot_b", "scheduled")])
    claim = next(c for c in outbox.claim_due(conn, NOW * 2, 10) if c.bot_id == "bot_a")
    assert outbox.record_attempt(
        conn, claim.id, NOW, 410, "410 Gone: endpoint disabled", "disabled"
    )
    [listed] = outbox.list_endpoints(conn)
    assert listed["state"] == "disabled" and listed["deliveries"] == {
        "pending": 0,
        "delivered": 0,
        "failed": 3,
    }
    assert outbox.claim_due(conn, NOW * 3, 10) == []
    assert (
        bots.change([("bot_a", "joining")])
        and outbox.list_endpoints(conn)[0]["deliveries"]["failed"] == 3
    )
    with pytest.raises(Conflict):
        outbox.replay(conn, claim.id, NOW)
    with pytest.raises(Conflict):
        outbox.enqueue_test(conn, endpoint, NOW)


def test_replay_list_remove(conn: sqlite3.Connection, bots: Bots) -> None:
    endpoint = _add(conn)
    added = outbox.add_endpoint(conn, "https://example.com/h", (), NOW)
    assert added["secret"].startswith("whsec_")
    listed = {e["id"]: e for e in outbox.list_endpoints(conn)}
    assert listed[added["id"]]["secret"] != added["secret"] and added[
        "secret"
    ] not in json.dumps(listed)
    outbox.remove_endpoint(conn, added["id"])
    bots.change([("bot_a", "scheduled"), ("bot_b", "scheduled")])
    [a, b] = sorted(outbox.claim_due(conn, NOW * 2, 10), key=lambda c: str(c.bot_id))
    outbox.record_attempt(conn, a.id, NOW, 200, None, "delivered")
    outbox.record_attempt(conn, b.id, NOW, 500, "x", "failed")
    assert [d["id"] for d in outbox.list_deliveries(conn, failed=True)] == [b.id]
    assert [d["id"] for d in outbox.list_deliveries(conn, bot_id="bot_a")] == [a.id]
    assert len(outbox.list_deliveries(conn, limit=1)) == 1
    again = outbox.replay(conn, b.id, NOW * 2)
    shown = outbox.get_delivery(conn, again)
    assert (
        shown["state"] == "pending"
        and shown["replay_of"] == b.id
        and shown["event_id"] == b.event_id
    )
    assert outbox.get_delivery(conn, b.id)["state"] == "failed"  # history kept
    test_id = outbox.enqueue_test(conn, endpoint, NOW)
    assert outbox.get_delivery(conn, test_id)["type"] == "webhook.test"
    with pytest.raises(NotFound):
        outbox.replay(conn, "dlv_nope", NOW)
    outbox.remove_endpoint(conn, endpoint)
    assert outbox.list_deliveries(conn) == []
    with pytest.raises(NotFound):
        outbox.remove_endpoint(conn, endpoint)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # one daemon per SQLite file
def test_two_agents_claiming_at_once_send_each_delivery_once_in_order(
    backend: Backend, conn: sqlite3.Connection, bots: Bots
) -> None:
    """Cluster mode: agents claim from one outbox at the same moment (``SKIP LOCKED``): no
    delivery is claimed twice, and per bot and endpoint each goes only after the previous one."""
    endpoints = [_add(conn), _add(conn)]
    path = ["scheduled", "staged", "joining", "ended"]
    for state in path:
        bots.change([(f"bot_{i:02d}", state) for i in range(30)])
    claimed: dict[str, list[str]] = {"a": [], "b": []}
    sent: dict[tuple[str, str], list[str]] = {}
    lock = threading.Lock()
    start = threading.Barrier(2)

    def agent(name: str) -> None:
        mine = backend.connect(agent=name)
        try:
            start.wait()
            idle = 0
            while idle < 20:
                claims = outbox.claim_due(mine, NOW * 2, 4)
                if not claims:
                    idle += 1
                    time.sleep(0.005)
                    continue
                idle = 0
                for claim in claims:
                    with lock:  # before the record: the next one of this bot cannot be claimed yet
                        claimed[name].append(claim.id)
                        state = json.loads(claim.body)["data"]["new_state"]
                        sent.setdefault((claim.endpoint_id, str(claim.bot_id)), []).append(state)
                    outbox.record_attempt(mine, claim.id, NOW * 2, 200, None, "delivered")
        finally:
            mine.close()

    threads = [threading.Thread(target=agent, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = claimed["a"] + claimed["b"]
    assert len(every) == len(set(every)) == 240, "a delivery was claimed twice, or one was never claimed"
    assert claimed["a"] and claimed["b"], "both agents took part"
    assert set(sent) == {(e, f"bot_{i:02d}") for e in endpoints for i in range(30)}
    assert all(states == path for states in sent.values()), "out of order for a bot and an endpoint"
    [state] = conn.execute("SELECT DISTINCT state FROM webhook_deliveries").fetchall()
    assert state[0] == "delivered"
    # each claim is its agent's: a restarted agent voids its own leases, never another's
    bots.change([("bot_z", "scheduled")])
    a, b = backend.connect(agent="a"), backend.connect(agent="b")
    try:
        assert len(outbox.claim_due(a, NOW * 2, 10)) == 2  # bot_z, to each endpoint
        assert outbox.release_claims(b) == 0
        assert outbox.release_claims(a) == 2
    finally:
        a.close()
        b.close()
