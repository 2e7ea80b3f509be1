"""The durable outbox: webhook endpoints and one delivery row per (event, endpoint).

``enqueue`` runs *inside* the store's transaction, so a state change and its deliveries
commit together (or not at all): a crash can lose neither. Everything else opens its own
short ``BEGIN IMMEDIATE`` unless the caller already holds a transaction.

The SQL is the same on both stores (SQLite, and PostgreSQL in cluster mode, through the
store's ``OutboxConnection``): ``?`` placeholders, partial indexes, ``CASE`` instead of
SQLite's scalar ``max()``, no ``INSERT OR ...``. What differs is said by the connection
(``Conn.dialect``): ``seq`` (``INTEGER PRIMARY KEY`` here, ``BIGSERIAL`` there: see
``POSTGRES_DDL``), how a write begins, and the claim's row locks (``FOR UPDATE SKIP
LOCKED``: several agents claim from one outbox, each delivery goes to exactly one).
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from botsched.core import states as bot_states
from botsched.core.errors import Conflict, InvalidInput, NotFound
from botsched.core.timeparse import format_instant
from botsched.daemon.webhooks import payload
from botsched.daemon.webhooks.schedule import DELIVERED, DISABLED, FAILED, RETRY
from botsched.daemon.webhooks.signing import (
    mask_secret,
    new_delivery_id,
    new_endpoint_id,
    new_event_id,
    new_secret,
)

PENDING = "pending"
DELIVERY_STATES = (PENDING, DELIVERED, FAILED)

#: Statements separated by ";" (the store's migration runner splits on it): no ";" in comments.
DDL = """
CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    states          TEXT NOT NULL DEFAULT '[]',   -- JSON list, empty means every change
    created_us      INTEGER NOT NULL,
    disabled_us     INTEGER,                      -- set by a 410 Gone
    disabled_reason TEXT
);
CREATE TABLE webhook_deliveries (
    seq              INTEGER PRIMARY KEY,         -- outbox order (BIGSERIAL in PostgreSQL)
    id               TEXT NOT NULL UNIQUE,
    endpoint_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,               -- the body's id and the webhook-id header
    event_seq        INTEGER,                     -- events.seq, null for webhook.test
    bot_id           TEXT,                        -- null for webhook.test
    type             TEXT NOT NULL,
    new_state        TEXT,
    body             TEXT NOT NULL,               -- frozen: every retry sends the same bytes
    state            TEXT NOT NULL,               -- pending, delivered, failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_us       INTEGER NOT NULL,
    next_us          INTEGER,                     -- due time while pending
    claimed_until_us INTEGER,                     -- a worker is sending it until then
    last_us          INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    replay_of        TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_us) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, bot_id, seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_bot ON webhook_deliveries (bot_id, seq);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, state)
"""

_COLUMNS = (
    "d.id, d.endpoint_id, d.event_id, d.type, d.bot_id, d.new_state, d.state, d.attempts, "
    "d.created_us, d.next_us, d.last_us, d.last_status, d.last_error, d.replay_of"
)


#: The same tables in PostgreSQL: 64-bit integers (microseconds), ``seq`` a sequence; and the
#: per-endpoint index also ordered by bot and seq: before its first ANALYZE (a burst comes
#: sooner than autovacuum), the planner took it for the order check's "earlier pending of this
#: bot" probe, scanning every pending row per row (next_due_us: 0.5 s at 2,000 rows, not 4 ms).
POSTGRES_DDL = (
    DDL.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
    .replace(" INTEGER", " BIGINT")
    .replace("ON webhook_deliveries (endpoint_id, state)", "ON webhook_deliveries (endpoint_id, state, bot_id, seq)")
)

SQLITE = "sqlite"
POSTGRES = "postgres"


class Conn(Protocol):
    """What the outbox asks of a connection: a ``sqlite3.Connection``, or the PostgreSQL
    store's ``OutboxConnection`` (which also says ``dialect = "postgres"``)."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


def _dialect(conn: Conn) -> str:
    return str(getattr(conn, "dialect", SQLITE))


def migrate(conn: sqlite3.Connection) -> None:
    """Create the outbox tables; the caller holds the migration's transaction."""
    for statement in DDL.split(";"):
        if statement.strip():
            conn.execute(statement)


class EventLike(Protocol):
    """What the store's ``Event`` tuple carries (duck-typed: no import of the store)."""

    @property
    def seq(self) -> int: ...
    @property
    def bot_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def at_us(self) -> int: ...
    @property
    def detail(self) -> str | None: ...


class Claim(NamedTuple):
    """A delivery a worker now owns until its lease ends."""

    id: str
    endpoint_id: str
    url: str
    secret: str
    event_id: str
    bot_id: str | None
    body: str
    attempts: int


@contextmanager
def _write(conn: Conn) -> Iterator[None]:
    """Join the caller's transaction, or run one of our own (SQLite: ``BEGIN IMMEDIATE``)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN" if _dialect(conn) == POSTGRES else "BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# -- endpoints ----------------------------------------------------------------------


def validate_url(url: str) -> str:
    """``https://`` anywhere, ``http://`` only to a loopback host (SPEC section 8)."""
    if (
        not isinstance(url, str)
        or not url
        or len(url) > 2048
        or not url.isprintable()
        or " " in url
    ):
        raise InvalidInput(
            "webhook URL must be an http(s) URL without spaces (at most 2048 characters)"
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidInput(f"not a valid URL: {url!r}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInput(
            f"webhook URL must start with https:// (or http:// for loopback): {url!r}"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise InvalidInput(
            f"http:// is allowed only for loopback hosts (use https://): {url!r}"
        )
    return url


def safe_url(url: str) -> str:
    """The URL for a log line: no user info, query or fragment (tokens live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_states(wanted: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(wanted))
    unknown = [s for s in chosen if s not in bot_states.ALL_STATES]
    if unknown:
        raise InvalidInput(
            f"unknown state {unknown[0]!r} (one of {', '.join(bot_states.ALL_STATES)})"
        )
    return chosen


def add_endpoint(
    conn: Conn, url: str, wanted_states: Iterable[str], now_us: int
) -> dict[str, Any]:
    """Register an endpoint; the answer carries the secret, the only time it is shown."""
    url = validate_url(url)
    chosen = _validate_states(wanted_states)
    endpoint_id, secret = new_endpoint_id(), new_secret()
    with _write(conn):
        conn.execute(
            "INSERT INTO webhook_endpoints (id, url, secret, states, created_us) VALUES (?, ?, ?, ?, ?)",
            (endpoint_id, url, secret, json.dumps(chosen), now_us),
        )
    return {
        "id": endpoint_id,
        "url": url,
        "secret": secret,
        "states": chosen,
        "created_at": format_instant(now_us),
    }


def list_endpoints(conn: Conn) -> list[dict[str, Any]]:
    """Every endpoint with its state (active / disabled) and delivery counts; secrets masked."""
    counts: dict[str, dict[str, int]] = {}
    for endpoint_id, state, count in conn.execute(
        "SELECT endpoint_id, state, count(*) FROM webhook_deliveries GROUP BY endpoint_id, state"
    ):
        counts.setdefault(endpoint_id, {})[state] = count
    rows = conn.execute(
        "SELECT id, url, secret, states, created_us, disabled_us, disabled_reason FROM webhook_endpoints "
        "ORDER BY created_us, id"
    ).fetchall()
    return [
        {
            "id": endpoint_id,
            "url": url,
            "secret": mask_secret(secret),
            "states": json.loads(chosen),
            "created_at": format_instant(created_us),
            "state": "active" if disabled_us is None else "disabled",
            "disabled_at": None if disabled_us is None else format_instant(disabled_us),
            "disabled_reason": reason,
            "deliveries": {
                s: counts.get(endpoint_id, {}).get(s, 0) for s in DELIVERY_STATES
            },
        }
        for endpoint_id, url, secret, chosen, created_us, disabled_us, reason in rows
    ]


def _endpoint_row(conn: Conn, endpoint_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT id, disabled_us FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return tuple(row)


def remove_endpoint(conn: Conn, endpoint_id: str) -> None:
    """Delete an endpoint and its deliveries (pending ones are never sent)."""
    with _write(conn):
        _endpoint_row(conn, endpoint_id)
        conn.execute(
            "DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,)
        )
        conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,))


def disable_endpoint(
    conn: Conn, endpoint_id: str, now_us: int, reason: str
) -> None:
    """Switch an endpoint off; its pending deliveries fail now instead of waiting forever."""
    with _write(conn):
        _endpoint_row(conn, endpoint_id)
        conn.execute(
            "UPDATE webhook_endpoints SET disabled_us = ?, disabled_reason = ? WHERE id = ? AND disabled_us IS NULL",
            (now_us, reason, endpoint_id),
        )
        conn.execute(
            "UPDATE webhook_deliveries SET state = ?, next_us = NULL, claimed_until_us = NULL, last_error = ? "
            "WHERE endpoint_id = ? AND state = ?",
            (FAILED, f"endpoint disabled: {reason}", endpoint_id, PENDING),
        )


# -- writing deliveries -------------------------------------------------------------


def _insert(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_seq, bot_id, type, new_state, body, "
        "state, attempts, created_us, next_us, replay_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        rows,
    )


def _bots(
    conn: Conn, bot_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(bot_ids), 500):
        chunk = bot_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for bot_id, url, name, join_at, metadata, dedup in conn.execute(
            f"SELECT id, meeting_url, bot_name, join_at, metadata, dedup_key FROM bots WHERE id IN ({marks})",
            chunk,
        ):
            found[bot_id] = {
                "id": bot_id,
                "meeting_url": url,
                "bot_name": name,
                "join_at": join_at,
                "metadata": json.loads(metadata),
                "deduplication_key": dedup,
            }
    return found


def _previous_states(conn: Conn, firsts: Mapping[str, int]) -> dict[str, str]:
    """Each bot's state just before its first event of this batch (``firsts``: bot id ->
    that event's seq): one query per 500 bots, each an index probe, not one query per
    event (a burst of 1,000 joins is one transaction on the join path)."""
    found: dict[str, str] = {}
    items = list(firsts.items())
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        values = ",".join("(?, ?)" for _ in chunk)
        flat = [value for pair in chunk for value in pair]
        for bot_id, state in conn.execute(
            f"WITH firsts(bot_id, first_seq) AS (VALUES {values}) "
            "SELECT f.bot_id, (SELECT e.state FROM events e WHERE e.bot_id = f.bot_id AND e.seq < f.first_seq "
            "ORDER BY e.seq DESC LIMIT 1) FROM firsts f",
            flat,
        ):
            if state is not None:
                found[bot_id] = state
    return found


def _describe(
    conn: Conn, events: Sequence[EventLike], keep: Callable[[EventLike], bool]
) -> Iterator[tuple[EventLike, dict[str, Any]]]:
    """Each kept event (oldest first) with its section 8 body (a fresh ``evt_`` id).

    ``events`` is the whole batch (the old state of an event is the one before it, kept or
    not); events of a bot deleted meanwhile are left out (nothing is left to describe)."""
    ordered = sorted(events, key=lambda e: e.seq)
    kept = [e for e in ordered if keep(e)]
    if not kept:
        return
    wanted_bots = {e.bot_id for e in kept}
    firsts: dict[str, int] = {}
    for event in ordered:
        if event.bot_id in wanted_bots:
            firsts.setdefault(event.bot_id, event.seq)
    bots = _bots(conn, list(firsts))
    last_state: dict[str, str | None] = dict(_previous_states(conn, firsts))
    for event in ordered:
        if event.bot_id not in wanted_bots:
            continue
        old = last_state.get(event.bot_id)
        last_state[event.bot_id] = event.state
        bot = bots.get(event.bot_id)
        if bot is None or not keep(event):
            continue
        body = payload.state_change(
            new_event_id(), bot, event.state, old, format_instant(event.at_us), event.detail
        )
        yield event, body


def enqueue(conn: Conn, events: Sequence[EventLike]) -> int:
    """Write one pending delivery per (event, matching active endpoint); returns how many.

    Call it inside the store's transaction, right after the events are inserted: it reads
    the ``bots`` and ``events`` tables of that transaction (the bot's fields, the state
    before each event). With no active endpoint it costs one tiny query."""
    if not events:
        return 0
    endpoints = [
        (endpoint_id, frozenset(json.loads(chosen)))
        for endpoint_id, chosen in conn.execute(
            "SELECT id, states FROM webhook_endpoints WHERE disabled_us IS NULL"
        )
    ]
    if not endpoints:
        return 0
    def matching(event: EventLike) -> bool:
        return any(not chosen or event.state in chosen for _, chosen in endpoints)

    rows: list[tuple[Any, ...]] = []
    for event, body in _describe(conn, events, matching):
        targets = [
            endpoint_id
            for endpoint_id, chosen in endpoints
            if not chosen or event.state in chosen
        ]
        if not targets:
            continue
        text = payload.encode(body)
        rows.extend(
            (
                new_delivery_id(), endpoint_id, body["id"], event.seq, event.bot_id, payload.STATE_CHANGE,
                event.state, text, PENDING, event.at_us, event.at_us, None,
            )
            for endpoint_id in targets
        )  # fmt: skip
    _insert(conn, rows)
    return len(rows)


def bodies(
    conn: Conn, events: Sequence[EventLike], keep: Callable[[EventLike], bool]
) -> list[dict[str, Any]]:
    """The section 8 body of each kept event of a committed batch, for ``[[hooks]]``: the
    one already in the outbox when a webhook got it (the same ``id`` on both paths), else
    built now."""
    chosen = [e for e in events if keep(e)]
    if not chosen:
        return []
    sent: dict[int, str] = {}
    seqs = [e.seq for e in chosen]
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for event_seq, body in conn.execute(
            f"SELECT event_seq, body FROM webhook_deliveries WHERE event_seq IN ({marks}) AND replay_of IS NULL",
            chunk,
        ):
            sent.setdefault(event_seq, body)
    found = {e.seq: json.loads(sent[e.seq]) for e in chosen if e.seq in sent}
    if len(found) < len(chosen):
        found.update(
            (event.seq, body) for event, body in _describe(conn, events, lambda e: keep(e) and e.seq not in found)
        )
    return [found[e.seq] for e in sorted(chosen, key=lambda e: e.seq) if e.seq in found]


def enqueue_test(conn: Conn, endpoint_id: str, now_us: int) -> str:
    """``webhook test ID``: a ``webhook.test`` delivery, due now, outside any bot's order."""
    with _write(conn):
        _, disabled_us = _endpoint_row(conn, endpoint_id)
        if disabled_us is not None:
            raise Conflict(f"webhook endpoint {endpoint_id} is disabled")
        event_id, delivery_id = new_event_id(), new_delivery_id()
        body = payload.encode(
            payload.test_event(event_id, endpoint_id, format_instant(now_us))
        )
        _insert(
            conn,
            [
                (
                    delivery_id,
                    endpoint_id,
                    event_id,
                    None,
                    None,
                    payload.TEST,
                    None,
                    body,
                    PENDING,
                    now_us,
                    now_us,
                    None,
                )
            ],
        )
    return delivery_id


def replay(conn: Conn, delivery_id: str, now_us: int) -> str:
    """Queue a delivery again: a new row (same event id and body, so receivers can dedupe)
    that keeps the old one as history; a still-pending delivery is just made due now."""
    with _write(conn):
        row = conn.execute(
            "SELECT d.endpoint_id, d.event_id, d.event_seq, d.bot_id, d.type, d.new_state, d.body, d.state, "
            "e.disabled_us FROM webhook_deliveries d LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.id = ?",
            (delivery_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no webhook delivery {delivery_id}")
        (
            endpoint_id,
            event_id,
            event_seq,
            bot_id,
            kind,
            new_state,
            body,
            state,
            disabled_us,
        ) = row
        if disabled_us is not None:
            raise Conflict(
                f"webhook endpoint {endpoint_id} is disabled (it answered 410 Gone)"
            )
        if state == PENDING:
            conn.execute(
                "UPDATE webhook_deliveries SET next_us = ? WHERE id = ?",
                (now_us, delivery_id),
            )
            return str(delivery_id)
        new_id = new_delivery_id()
        _insert(
            conn,
            [
                (
                    new_id,
                    endpoint_id,
                    event_id,
                    event_seq,
                    bot_id,
                    kind,
                    new_state,
                    body,
                    PENDING,
                    now_us,
                    now_us,
                    delivery_id,
                )
            ],
        )
    return new_id


# -- the worker's side ----------------------------------------------------------------


def _agent(conn: Conn) -> str | None:
    """The cluster agent a PostgreSQL connection claims for (``claimed_by``); ``None``: SQLite."""
    agent = getattr(conn, "agent", None)
    return None if agent is None else str(agent)


def release_claims(conn: Conn) -> int:
    """At start-up: leases of a process that died are void, send at once. One daemon per
    SQLite file: every lease is its own; in cluster mode only this agent's (``claimed_by``;
    two live agents never share a name), the others' stay with their live owners."""
    agent = _agent(conn)
    mine, args = ("AND claimed_by = ?", (PENDING, agent)) if agent is not None else ("", (PENDING,))
    with _write(conn):
        cursor = conn.execute(
            "UPDATE webhook_deliveries SET claimed_until_us = NULL WHERE state = ? AND claimed_until_us IS NOT NULL "
            + mine,
            args,
        )
    return int(cursor.rowcount)


def claim_due(
    conn: Conn,
    now_us: int,
    limit: int,
    lease_us: int = 60_000_000,
    busy: Mapping[str, int] | None = None,
    per_endpoint: int | None = None,
) -> list[Claim]:
    """Take up to ``limit`` due deliveries for ``lease_us``.

    Due: pending, ``next_us`` reached, not leased, endpoint active, and no earlier pending
    delivery for the same bot and endpoint (SPEC: in order per bot per endpoint). With
    ``per_endpoint``, no endpoint gets more than that many in flight (``busy`` counts the
    ones already out), so one slow endpoint cannot take every slot."""
    if limit <= 0:
        return []
    in_flight = dict(busy or {})
    # Endpoints already at their share are left out in SQL: skipping them in Python
    # instead could fill the whole candidate window with their rows and starve the rest.
    full = [
        e
        for e, n in in_flight.items()
        if per_endpoint is not None and n >= per_endpoint
    ]
    skip = f"AND d.endpoint_id NOT IN ({','.join('?' * len(full))}) " if full else ""
    with _write(conn):
        candidates = conn.execute(
            "SELECT d.id, d.endpoint_id, e.url, e.secret, d.event_id, d.bot_id, d.body, d.attempts "
            "FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.state = 'pending' AND d.next_us <= ? AND e.disabled_us IS NULL "
            "AND (d.claimed_until_us IS NULL OR d.claimed_until_us <= ?) "
            f"{skip}"
            "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.state = 'pending' "
            "AND p.endpoint_id = d.endpoint_id AND p.bot_id = d.bot_id AND p.seq < d.seq) "
            "ORDER BY d.next_us, d.seq LIMIT ?"
            # PostgreSQL: agents claiming at once skip each other's rows (and re-check the
            # lease on a row another agent just claimed): each delivery has one sender
            + (" FOR UPDATE OF d SKIP LOCKED" if _dialect(conn) == POSTGRES else ""),
            (now_us, now_us, *full, limit * 4 if per_endpoint else limit),
        ).fetchall()
        taken: list[Claim] = []
        for row in candidates:
            claim = Claim(*row)
            if (
                per_endpoint is not None
                and in_flight.get(claim.endpoint_id, 0) >= per_endpoint
            ):
                continue
            in_flight[claim.endpoint_id] = in_flight.get(claim.endpoint_id, 0) + 1
            taken.append(claim)
            if len(taken) >= limit:
                break
        agent = _agent(conn)
        if agent is None:
            conn.executemany(
                "UPDATE webhook_deliveries SET claimed_until_us = ? WHERE id = ?",
                [(now_us + lease_us, claim.id) for claim in taken],
            )
        else:
            conn.executemany(
                "UPDATE webhook_deliveries SET claimed_until_us = ?, claimed_by = ? WHERE id = ?",
                [(now_us + lease_us, agent, claim.id) for claim in taken],
            )
    return taken


def next_due_us(conn: Conn) -> int | None:
    """When the worker must look again: the earliest due time or lease end among pending
    deliveries of active endpoints (order-blocked ones wake when their predecessor ends)."""
    row = conn.execute(
        "SELECT min(CASE WHEN d.claimed_until_us IS NOT NULL AND d.claimed_until_us > d.next_us "
        "THEN d.claimed_until_us ELSE d.next_us END) "
        "FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
        "WHERE d.state = 'pending' AND e.disabled_us IS NULL AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p "
        "WHERE p.state = 'pending' AND p.endpoint_id = d.endpoint_id AND p.bot_id = d.bot_id AND p.seq < d.seq)"
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def record_attempt(
    conn: Conn,
    delivery_id: str,
    now_us: int,
    status: int | None,
    note: str | None,
    verdict: str,
    next_us: int | None = None,
) -> bool:
    """Store one attempt's answer and the delivery's next state (``schedule.classify``'s
    verdict). False when the row is no longer pending (removed, or its endpoint disabled)."""
    if verdict not in (DELIVERED, RETRY, FAILED, DISABLED):
        raise ValueError(f"unknown verdict {verdict!r}")
    state = {DELIVERED: DELIVERED, RETRY: PENDING, FAILED: FAILED, DISABLED: FAILED}[
        verdict
    ]
    with _write(conn):
        cursor = conn.execute(
            "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, last_us = ?, last_status = ?, "
            "last_error = ?, next_us = ?, claimed_until_us = NULL WHERE id = ? AND state = ?",
            (
                state,
                now_us,
                status,
                note,
                next_us if state == PENDING else None,
                delivery_id,
                PENDING,
            ),
        )
        if cursor.rowcount and verdict == DISABLED:
            (endpoint_id,) = conn.execute(
                "SELECT endpoint_id FROM webhook_deliveries WHERE id = ?",
                (delivery_id,),
            ).fetchone()
            disable_endpoint(conn, endpoint_id, now_us, "410 Gone")
    return bool(cursor.rowcount)


# -- reading ----------------------------------------------------------------------------


def _delivery_json(row: Sequence[Any]) -> dict[str, Any]:
    (delivery_id, endpoint_id, event_id, kind, bot_id, new_state, state, attempts,
     created_us, next_us, last_us, last_status, last_error, replay_of) = row  # fmt: skip
    return {
        "id": delivery_id,
        "endpoint_id": endpoint_id,
        "event_id": event_id,
        "type": kind,
        "bot_id": bot_id,
        "new_state": new_state,
        "state": state,
        "attempts": attempts,
        "last_status": last_status,
        "last_error": last_error,
        "last_attempt_at": None if last_us is None else format_instant(last_us),
        "next_attempt_at": None
        if next_us is None or state != PENDING
        else format_instant(next_us),
        "created_at": format_instant(created_us),
        "replay_of": replay_of,
    }


def list_deliveries(
    conn: Conn,
    bot_id: str | None = None,
    failed: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """``webhook deliveries``: newest first; ``limit`` 0 means no limit."""
    where, args = [], []
    if bot_id is not None:
        where.append("d.bot_id = ?")
        args.append(bot_id)
    if failed:
        where.append("d.state = ?")
        args.append(FAILED)
    sql = f"SELECT {_COLUMNS} FROM webhook_deliveries d"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY d.seq DESC"
    if limit > 0:
        sql += f" LIMIT {int(limit)}"
    return [_delivery_json(row) for row in conn.execute(sql, args)]


def get_delivery(conn: Conn, delivery_id: str) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM webhook_deliveries d WHERE d.id = ?", (delivery_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    return _delivery_json(row)
