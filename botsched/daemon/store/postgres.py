"""The PostgreSQL store (cluster mode, SPEC §10): the same ``Store`` as the SQLite one, on a
database that several agents share.

Synchronous, like the interface: psycopg 3 with a small connection pool, so reads from one
thread and writes from another (the daemon's writer) each have a connection of their own.
Every state change is a compare-and-set (``UPDATE ... WHERE id = ... AND state = ...``):
under READ COMMITTED a second writer waits for the first's row lock and then re-checks the
``WHERE``, so racing actors, in one agent or several, have exactly one winner.

Event sequence numbers come from a PostgreSQL sequence (never reused, not even after a
cancel), taken under a transaction-scoped advisory lock, so they also *commit* in order:
a reader that follows ``after_seq`` never skips an event that commits late.

Only the daemon imports this module, and only when ``store.url`` is a ``postgresql://``
URL: it needs the ``postgres`` extra, and the CLI's start-up path never loads it. A password
in the URL is never logged or shown (``describe()`` and every error message mask it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import psycopg
import psycopg_pool
from psycopg import sql

from botsched.core import states
from botsched.core.config import redact_url
from botsched.core.errors import DaemonUnavailable
from botsched.core.model import Bot, Due, Event, NewBot, make_bot, new_bot_id
from botsched.core.timeparse import format_instant
from botsched.daemon.agents import AgentBeat, AgentRow
from botsched.daemon.store.base import (
    Change,
    DeleteListener,
    DuplicateKeys,
    EventListener,
    IllegalTransition,
    KeyClash,
    NotScheduled,
    StorageError,
    insert_rows,
)
from botsched.daemon.webhooks import outbox

__all__ = ["SCHEMA_VERSION", "Claim", "DatabaseUnreachable", "FencedChange", "OutboxConnection", "PostgresStore"]

log = logging.getLogger("botsched.daemon.store")

#: Pool housekeeping (checking idle connections, replacing broken ones) after this many commits.
CHECKPOINT_AFTER_COMMITS = 200
#: Advisory lock keys (any two numbers this database's other users are unlikely to take).
_MIGRATION_LOCK = 0x626F7473_0001
_EVENTS_LOCK = 0x626F7473_0002
CONNECT_TIMEOUT_S = 10
#: The channel of queue changes (LISTEN/NOTIFY): the payload is when the change is due (µs).
QUEUE_CHANNEL = "botsched_queue"
#: ``leave`` asked through one agent for a bot another runs: the payload is the bot's id.
LEAVE_CHANNEL = "botsched_leave"
#: Events committed by any agent (a wake-up, no payload; "gone BOT_ID" for a cancel): every
#: agent's ``events --follow`` and ``wait`` then read the events table from their last seq.
EVENTS_CHANNEL = "botsched_events"
#: A bot's runner output kept in the database (``logs`` from any machine), at most this much:
#: the local log's bound (runners/command.py: LOG_MAX_BYTES, and the one rotated file).
RUNNER_LOG_MAX_BYTES = 32 << 20
#: The listener looks at its stop flag this often, and reconnects after this long.
LISTEN_POLL_S = 0.5
LISTEN_RETRY_S = 1.0
#: A request waits at most this long for a pooled connection (while the server is away the
#: pool reconnects in the background, and the request fails with exit 5).
POOL_WAIT_S = 2.0
#: While the server is away (see ``outage()``) every call fails at once, without waiting on the
#: pool: the daemon's loop (joins, requests) must never wait on a database that is not there. A
#: probe connects this often (each attempt waiting at most PROBE_TIMEOUT_S) to notice its return.
PROBE_EVERY_S = 0.5
PROBE_TIMEOUT_S = 3
#: A silent network (a cut cable, a dead host) shows as an error within seconds, not after
#: the kernel's TCP retransmission timeout (minutes): keepalives and an unacknowledged-data limit.
LIVENESS: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10_000,
}
#: SQLSTATEs of a server that is shutting down, crashed, or starting up / in recovery: it said so.
_SERVER_DOWN_STATES = ("57P01", "57P02", "57P03")
#: Client-side messages of a server that is not there (nothing listens at its address or socket),
#: or whose host closed the connection as it went (an immediate shutdown's backends end without a
#: word: the peer's FIN is an answer, not the silence of a cut link).
_SERVER_DOWN_SAID = ("connection refused", "no such file or directory", "the database system is",
                     "server closed the connection unexpectedly")

_BOT_COLUMNS = "id, meeting_url, bot_name, state, join_at, join_at_us, created_us, updated_us, metadata, dedup_key"
#: What a read of a bot selects: its columns and the agent that staged it (SPEC §10 "agent").
_BOT_READ = f"{_BOT_COLUMNS}, agent"
_EVENT_READ = "seq, bot_id, state, at_us, detail, agent"

SCHEMA_VERSION = 5

#: version -> the statements that bring the schema from version - 1 to it (one transaction each).
MIGRATIONS: dict[int, list[str]] = {
    1: [
        # ids sort and match (LIKE 'prefix%') bytewise, as in SQLite: the "C" collation
        """CREATE TABLE bots (
            id          text COLLATE "C" PRIMARY KEY,
            meeting_url text NOT NULL,
            bot_name    text NOT NULL,
            state       text NOT NULL,
            join_at     text,
            join_at_us  bigint,
            created_us  bigint NOT NULL,
            updated_us  bigint NOT NULL,
            metadata    text NOT NULL DEFAULT '{}',
            dedup_key   text,
            sort_us     bigint GENERATED ALWAYS AS (coalesce(join_at_us, created_us)) STORED
        )""",
        "CREATE INDEX bots_by_state ON bots (state, sort_us)",
        "CREATE INDEX bots_by_time ON bots (sort_us)",
        "CREATE UNIQUE INDEX bots_live_dedup ON bots (dedup_key) "
        "WHERE dedup_key IS NOT NULL AND state NOT IN ('ended', 'fatal_error')",
        """CREATE TABLE events (
            seq     bigint PRIMARY KEY,
            bot_id  text COLLATE "C" NOT NULL,
            state   text NOT NULL,
            at_us   bigint NOT NULL,
            detail  text
        )""",
        "CREATE INDEX events_by_bot ON events (bot_id, seq)",
        "CREATE SEQUENCE events_seq AS bigint",
    ],
    # claims (cluster mode): who holds a bot, until when (the database's clock), and the
    # fencing epoch, bumped at every claim, that each write of the holder must still match
    2: [
        "ALTER TABLE bots ADD COLUMN agent text",
        "ALTER TABLE bots ADD COLUMN lease_until_us bigint",
        "ALTER TABLE bots ADD COLUMN epoch bigint NOT NULL DEFAULT 0",
        "ALTER TABLE events ADD COLUMN agent text",
        "CREATE INDEX bots_by_lease ON bots (lease_until_us) WHERE lease_until_us IS NOT NULL",
    ],
    # the calendars the daemon follows (issue 16), as in SQLite: JSON records, never a password
    3: [
        """CREATE TABLE calendars (
            name        text PRIMARY KEY,
            source      text NOT NULL,
            options     text NOT NULL,
            poll        text NOT NULL,
            created_us  bigint NOT NULL
        )""",
    ],
    # cluster mode, every command on any agent: the webhook outbox (the SQLite store's
    # tables, outbox.POSTGRES_DDL) and the runners' output, in chunks, bounded per bot
    4: [
        *(statement for statement in outbox.POSTGRES_DDL.split(";") if statement.strip()),
        # the agent whose claim it is: a restarted agent voids only its own (outbox.release_claims)
        "ALTER TABLE webhook_deliveries ADD COLUMN claimed_by text",
        """CREATE TABLE runner_logs (
            seq     bigserial PRIMARY KEY,
            bot_id  text COLLATE "C" NOT NULL,
            size    integer NOT NULL,
            data    bytea NOT NULL
        )""",
        "CREATE INDEX runner_logs_by_bot ON runner_logs (bot_id, seq) INCLUDE (size)",
    ],
    # the agents registry (``botsched agents``): one row per agent name, written by its
    # heartbeat; ``instance`` is one daemon process, so two live daemons cannot share a name
    5: [
        """CREATE TABLE agents (
            name            text PRIMARY KEY,
            instance        text NOT NULL,
            host            text NOT NULL,
            pid             integer NOT NULL,
            version         text NOT NULL,
            runner          text NOT NULL,
            slots_used      integer NOT NULL,
            slots_total     integer,
            clock_offset_ms double precision,
            started_us      bigint NOT NULL,
            heartbeat_us    bigint NOT NULL,
            lease_until_us  bigint NOT NULL
        )""",
    ],
}


def _list_filter(state_filter: Iterable[str], dedup_prefix: str | None) -> tuple[list[str], list[Any]]:
    """``list``'s WHERE clauses and their parameters: the states, a dedup-key prefix."""
    wanted = sorted(set(state_filter))
    clauses: list[str] = []
    params: list[Any] = []
    if wanted:
        clauses.append("state = ANY(%s)")
        params.append(wanted)
    if dedup_prefix is not None:
        clauses.append("left(dedup_key, %s) = %s")
        params.extend([len(dedup_prefix), dedup_prefix])
    return clauses, params


class DatabaseUnreachable(StorageError):
    """The PostgreSQL server cannot be reached (down, restarting, failing over, network):
    the request fails with exit 5; the pool reconnects by itself once it is back."""

    exit_code = 5
    code = "unavailable"


class Outage(NamedTuple):
    """The server has been away since ``since`` (``time.monotonic()``). ``server_said``: every
    attempt to reach it since, from the first, got an answer saying that the *server* is not
    serving (its host refused the connection, its socket is gone, it is shutting down, starting
    up, in recovery) -- down for every agent -- never silence (this machine may be cut off
    while others still reach it). One silent attempt and it stays false for this outage."""

    since: float
    server_said: bool


def is_outage(exc: BaseException) -> bool:
    """The connection is gone or cannot be made (not a refused statement, a deadlock...)."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SERVER_DOWN_STATES


def server_said_down(exc: BaseException) -> bool:
    """``exc`` is the server (or its host) saying it is not serving, not a silent network."""
    if getattr(exc, "sqlstate", None) in _SERVER_DOWN_STATES:
        return True
    text = str(exc).lower()
    return any(said in text for said in _SERVER_DOWN_SAID)


class Claim(NamedTuple):
    """A bot an agent now holds: run it only while ``epoch`` is still the bot's (each write
    about it is conditional on that); ``taken_from`` names the agent that lost it, if any."""

    id: str
    state: str
    join_at_us: int
    epoch: int
    taken_from: str | None


#: (bot_id, epoch, from_state, to_state, detail): a compare-and-set fenced on the holder's epoch.
FencedChange = tuple[str, int, str, str, "str | None"]

#: The states an agent runs a bot in (it holds a claim on it); past ``staged``, a lost agent
#: means the meeting was lost with it.
_HELD_STATES = (states.READY, states.STAGED, states.JOINING, states.WAITING_ROOM, states.JOINED_NOT_RECORDING,
                states.JOINED_RECORDING, states.LEAVING, states.POST_PROCESSING)
_PAST_JOINING = [state for state in _HELD_STATES if state not in (states.READY, states.STAGED)]
#: The database server's clock, in microseconds: leases are all measured on this one clock,
#: so an agent whose clock is off neither shortens nor stretches anyone's lease.
_DB_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


class _DuplicateKey(Exception):
    """A live bot already holds a dedup key (the unique index said so)."""


Connection = psycopg.Connection[tuple[Any, ...]]


class OutboxConnection:
    """A pooled connection speaking the outbox's SQL (``webhooks/outbox.py``, shared with the
    SQLite store): ``?`` placeholders become ``%s``; ``dialect`` tells the outbox to begin
    with ``BEGIN`` and to claim with ``FOR UPDATE SKIP LOCKED``."""

    dialect = outbox.POSTGRES

    def __init__(self, connection: Connection, agent: str | None = None) -> None:
        self.connection = connection
        #: the agent deliveries are claimed for (``claimed_by``)
        self.agent = agent

    @property
    def in_transaction(self) -> bool:
        return self.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[tuple[Any, ...]]:
        return self.connection.execute(sql.replace("?", "%s"), parameters or None)

    def executemany(self, sql: str, parameters: Any, /) -> None:
        rows = list(parameters)
        if rows:
            with self.connection.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)


class PostgresStore:
    """``Store`` on a PostgreSQL database (``postgresql://USER@HOST/DB``)."""

    def __init__(
        self,
        url: str,
        on_events: EventListener | None = None,
        on_deleted: DeleteListener | None = None,
        pool_size: int = 4,
        agent: str | None = None,
    ) -> None:
        self.url = url
        #: the agent this store records events for (SPEC §10: each event says which agent
        #: recorded it); None outside a daemon (tests, tools)
        self.agent = agent
        self.shown_url = redact_url(url)
        self._password = _password_of(url)
        self._on_events = on_events
        self._on_deleted = on_deleted
        self._held: list[Event] | None = None  # see hold_announcements()
        #: set while the server is away (see outage()); a probe thread clears it
        self._outage: Outage | None = None
        self._outage_lock = threading.Lock()
        self._closing = threading.Event()
        self._reachable_since = time.monotonic()
        #: called (from the probe thread) once the server is back after an outage
        self.on_reachable: Callable[[], None] | None = None
        #: one writer at a time in this process: listeners hear commits in commit order
        self._write_lock = threading.RLock()
        self.commits_since_checkpoint = 0
        #: webhook deliveries written by this agent (the daemon pokes its delivery worker)
        self.deliveries_written = 0
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as first:
                migrate(first, self.shown_url)
        except psycopg.Error as exc:
            raise DaemonUnavailable(f"cannot use the database {self.shown_url}: {self._said(exc)}") from None
        self._pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            # autocommit: a one-statement read is one round trip; transactions are explicit
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "botsched", "autocommit": True,
                    **LIVENESS},
            # a connection broken by a server restart is found out (and replaced) before use
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=POOL_WAIT_S,
            open=False,
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)

    def describe(self) -> str:
        """The store for ``daemon status`` and the log: the URL without its password."""
        return f"postgresql {self.shown_url}"

    def close(self) -> None:
        self._closing.set()
        self._pool.close()

    # -- outages: fail fast while the server is away, notice its return -----------------

    def outage(self) -> Outage | None:
        """Since when (and how) the server is away; ``None`` while it is reachable."""
        return self._outage

    def reachable_for(self) -> float:
        """Seconds the server has been reachable without a break (0 during an outage)."""
        return 0.0 if self._outage is not None else time.monotonic() - self._reachable_since

    def _unreachable(self, exc: BaseException) -> None:
        """An outage begins (or goes on): from now on calls fail at once; a probe watches."""
        with self._outage_lock:
            if self._outage is not None or self._closing.is_set():
                return
            self._outage = Outage(time.monotonic(), False)  # the first probe, at once, decides
        log.error("the database %s cannot be reached (%s): requests fail with exit 5 until it is back",
                  self.shown_url, self._said(exc))
        threading.Thread(target=self._probe, name="botsched-db-probe", daemon=True).start()

    def _probe(self) -> None:
        """Until the server answers again (or we close): connect at once, then every
        PROBE_EVERY_S (each failure says whether the server itself answered); then
        let the pool drop its broken connections, end the outage, and tell ``on_reachable``."""
        first = True
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.url, connect_timeout=PROBE_TIMEOUT_S, autocommit=True,
                                     application_name="botsched-probe", **LIVENESS) as connection:
                    connection.execute("SELECT 1")
            except psycopg.Error as exc:
                outage = self._outage
                if outage is not None:
                    said = server_said_down(exc) and (first or outage.server_said)
                    if not said and (first or outage.server_said):
                        log.warning("the database %s: no answer from its server (%s): joins go on only "
                                    "while this agent's leases surely hold", self.shown_url, self._said(exc))
                    self._outage = outage._replace(server_said=said)
                first = False
                self._closing.wait(PROBE_EVERY_S)
                continue
            with contextlib.suppress(psycopg.Error, psycopg_pool.PoolTimeout):
                self._pool.check()  # connections broken by the outage are replaced, not handed out
            outage = self._outage
            self._reachable_since = time.monotonic()
            self._outage = None
            if outage is not None:
                log.warning("the database %s is reachable again after %.1f s", self.shown_url,
                            self._reachable_since - outage.since)
            if self.on_reachable is not None:
                self.on_reachable()
            return

    # -- plumbing -----------------------------------------------------------------

    def _said(self, exc: BaseException) -> str:
        """The driver's message, first line only, with the password (if any) masked."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text

    @contextmanager
    def _connection(self, writing: bool) -> Iterator[Connection]:
        """A pooled connection; driver failures become the store's typed errors."""
        suffix = "; nothing was changed" if writing else ""
        outage = self._outage
        if outage is not None:
            raise DatabaseUnreachable(f"the database {self.shown_url} cannot be reached "
                                      f"(for {time.monotonic() - outage.since:.0f} s){suffix}")
        try:
            with self._pool.connection() as connection:
                yield connection
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            if is_outage(exc):
                self._unreachable(exc)
            raise DatabaseUnreachable(
                f"the database {self.shown_url} cannot be reached: {self._said(exc)}{suffix}"
            ) from None
        except psycopg.Error as exc:
            raise StorageError(f"database {self.shown_url}: {self._said(exc)}{suffix}") from None

    @contextmanager
    def _transaction(self) -> Iterator[tuple[Connection, list[Event]]]:
        """One transaction; events appended to the yielded list are announced to the
        listener only once the commit is done (and in commit order: one writer at a time)."""
        with self._write_lock:
            pending: list[Event] = []
            with self._connection(writing=True) as connection, connection.transaction():
                yield connection, pending
            self.commits_since_checkpoint += 1
            if pending and self._on_events is not None:
                if self._held is not None:
                    self._held.extend(pending)
                else:
                    self._on_events(pending)

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """Reads of several statements (a bot and its events) from one consistent snapshot."""
        with self._connection(writing=False) as connection, connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield connection

    @contextmanager
    def hold_announcements(self) -> Iterator[None]:
        """Announce the events committed inside only at the end (see the SQLite store)."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held and self._on_events is not None:
                self._on_events(held)

    def _add_events(
        self,
        connection: Connection,
        pending: list[Event],
        rows: Sequence[tuple[str, str, int, str | None]],
        agent: str | None = None,
    ) -> None:
        """Insert (bot_id, state, at_us, detail) rows with sequence numbers that commit in order,
        recorded by ``agent`` (default: this store's own), their webhook deliveries (same
        transaction), and a wake-up for every agent's streams."""
        if not rows:
            return
        agent = agent or self.agent
        connection.execute("SELECT pg_advisory_xact_lock(%s), pg_notify(%s, '')", (_EVENTS_LOCK, EVENTS_CHANNEL))
        seqs = [
            int(row[0])
            for row in connection.execute(
                "SELECT nextval('events_seq') FROM generate_series(1, %s)", (len(rows),)
            ).fetchall()
        ]
        seqs.sort()
        with connection.cursor().copy("COPY events (seq, bot_id, state, at_us, detail, agent) FROM STDIN") as copy:
            for seq, row in zip(seqs, rows, strict=True):
                copy.write_row((seq, *row, agent))
        added = [Event(seq, *row, agent) for seq, row in zip(seqs, rows, strict=True)]
        pending.extend(added)
        # the webhook outbox: its deliveries commit (or roll back) with these events
        self.deliveries_written += outbox.enqueue(OutboxConnection(connection), added)

    @staticmethod
    def _state_of(connection: Connection, bot_id: str) -> str | None:
        row = connection.execute("SELECT state FROM bots WHERE id = %s", (bot_id,)).fetchone()
        return str(row[0]) if row else None

    # -- life and health ------------------------------------------------------------

    def check_files(self) -> str | None:
        """Nothing to watch: the database is not a file of ours (an outage is per request)."""
        return None

    def checkpoint_due(self) -> bool:
        return self.commits_since_checkpoint >= CHECKPOINT_AFTER_COMMITS

    def checkpoint(self) -> None:
        """PostgreSQL vacuums and checkpoints by itself; ours is the pool's idle connections
        (broken ones, e.g. after a server restart, are replaced). Safe in a worker thread."""
        self.commits_since_checkpoint = 0
        self._pool.check()

    # -- creating -----------------------------------------------------------------

    def insert(self, bots: Sequence[NewBot], now_us: int) -> list[str]:
        """All in one transaction (``DuplicateKeys`` and nothing otherwise); the new ids."""
        ids = [new_bot_id() for _ in bots]
        bot_rows = insert_rows(ids, bots, now_us)
        try:
            with self._transaction() as (connection, pending):
                try:
                    with connection.cursor().copy(f"COPY bots ({_BOT_COLUMNS}) FROM STDIN") as copy:
                        for row in bot_rows:
                            copy.write_row(row)
                except psycopg.errors.UniqueViolation:
                    raise _DuplicateKey() from None
                firsts = [(bot_id, bot.initial_state, now_us, None) for bot_id, bot in zip(ids, bots, strict=True)]
                self._add_events(connection, pending, firsts)
                _notify_queue(connection, min((bot.join_at_us or now_us for bot in bots), default=now_us))
        except _DuplicateKey:
            raise DuplicateKeys(self._key_clashes(bots)) from None  # asked after the rollback
        return ids

    def _key_clashes(self, bots: Sequence[NewBot]) -> list[KeyClash]:
        """Every batch item whose key a live bot (or an earlier item) already holds."""
        keys = sorted({bot.dedup_key for bot in bots if bot.dedup_key is not None})
        with self._connection(writing=True) as connection:
            holders = {
                str(key): (str(bot_id), str(state))
                for key, bot_id, state in connection.execute(
                    "SELECT dedup_key, id, state FROM bots WHERE dedup_key = ANY(%s) "
                    "AND state NOT IN ('ended', 'fatal_error')",
                    (keys,),
                )
            }
        seen: dict[str, int] = {}
        clashes: list[KeyClash] = []
        for index, bot in enumerate(bots):
            if bot.dedup_key is None:
                continue
            if bot.dedup_key in holders:
                holder_id, holder_state = holders[bot.dedup_key]
                clashes.append(KeyClash(index, bot.dedup_key, holder_id, holder_state, None))
            elif bot.dedup_key in seen:
                clashes.append(KeyClash(index, bot.dedup_key, None, None, seen[bot.dedup_key]))
            else:
                seen[bot.dedup_key] = index
        return clashes

    # -- reading ------------------------------------------------------------------

    @staticmethod
    def _bot(row: Sequence[Any], events: list[Event]) -> Bot:
        bot_id, url, name, state, join_at, _join_us, created_us, updated_us, metadata, dedup, agent = row
        return make_bot(bot_id, url, name, state, join_at, created_us, updated_us, metadata, dedup, events,
                        agent=agent, clustered=True)

    @staticmethod
    def _events_for(connection: Connection, bot_ids: Sequence[str]) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {bot_id: [] for bot_id in bot_ids}
        if not bot_ids:
            return found
        for row in connection.execute(
            f"SELECT {_EVENT_READ} FROM events WHERE bot_id = ANY(%s) ORDER BY seq",
            (list(bot_ids),),
        ):
            found[row[1]].append(Event(*row))
        return found

    def get(self, bot_id: str) -> Bot | None:
        with self._snapshot() as connection:
            row = connection.execute(f"SELECT {_BOT_READ} FROM bots WHERE id = %s", (bot_id,)).fetchone()
            if row is None:
                return None
            return self._bot(row, self._events_for(connection, [bot_id])[bot_id])

    def get_many(self, bot_ids: Sequence[str]) -> list[Bot]:
        if not bot_ids:
            return []
        with self._snapshot() as connection:
            rows = {
                row[0]: row
                for row in connection.execute(
                    f"SELECT {_BOT_READ} FROM bots WHERE id = ANY(%s)", (list(bot_ids),)
                )
            }
            events = self._events_for(connection, list(rows))
        return [self._bot(rows[bot_id], events[bot_id]) for bot_id in bot_ids if bot_id in rows]

    def list_bots(
        self, state_filter: Iterable[str] = (), limit: int = 100, dedup_prefix: str | None = None
    ) -> tuple[list[Bot], bool]:
        """A page ordered by join_at (ad-hoc bots by created_at), and whether more match."""
        clauses, params = _list_filter(state_filter, dedup_prefix)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {_BOT_READ} FROM bots {where} ORDER BY sort_us, created_us, id"
        if limit > 0:
            query += " LIMIT %s"
            params.append(limit + 1)
        with self._snapshot() as connection:
            rows = connection.execute(query, params).fetchall()
            more = limit > 0 and len(rows) > limit
            rows = rows[:limit] if limit > 0 else rows
            events = self._events_for(connection, [row[0] for row in rows])
        return [self._bot(row, events[row[0]]) for row in rows], more

    def list_page(
        self, state_filter: Iterable[str], dedup_prefix: str | None, after: tuple[int, int, str] | None, size: int
    ) -> tuple[list[Bot], tuple[int, int, str] | None]:
        """One page of ``list_bots``' order after the key ``after`` (keyset paging, one indexed
        query per page, memory bounded by ``size``); the page and its last key."""
        clauses, params = _list_filter(state_filter, dedup_prefix)
        if after is not None:
            clauses.append("sort_us >= %s AND (sort_us, created_us, id) > (%s, %s, %s)")
            params.extend([after[0], *after])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {_BOT_READ}, sort_us FROM bots {where} ORDER BY sort_us, created_us, id LIMIT %s"
        with self._snapshot() as connection:
            rows = connection.execute(query, [*params, size]).fetchall()
            if not rows:
                return [], None
            events = self._events_for(connection, [row[0] for row in rows])
        last = rows[-1]
        return [self._bot(row[:-1], events[row[0]]) for row in rows], (int(last[-1]), int(last[6]), str(last[0]))

    def ids(self, state_filter: Iterable[str] = (), prefix: str = "", limit: int = 1000) -> list[str]:
        wanted = sorted(set(state_filter))
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = "SELECT id FROM bots WHERE id LIKE %s ESCAPE '\\'"
        params: list[Any] = [pattern]
        if wanted:
            query += " AND state = ANY(%s)"
            params.append(wanted)
        query += " ORDER BY sort_us LIMIT %s"
        params.append(limit)
        with self._connection(writing=False) as connection:
            return [str(row[0]) for row in connection.execute(query, params)]

    def counts(self) -> dict[str, int]:
        result = {state: 0 for state in states.ALL_STATES}
        with self._connection(writing=False) as connection:
            for state, count in connection.execute("SELECT state, count(*) FROM bots GROUP BY state"):
                result[state] = int(count)
        return result

    def events(self, bot_id: str | None = None, after_seq: int = 0, limit: int = 0) -> list[Event]:
        query = f"SELECT {_EVENT_READ} FROM events WHERE seq > %s"
        params: list[Any] = [after_seq]
        if bot_id is not None:
            query += " AND bot_id = %s"
            params.append(bot_id)
        query += " ORDER BY seq"
        if limit:
            query += " LIMIT %s"
            params.append(limit)
        with self._connection(writing=False) as connection:
            return [Event(*row) for row in connection.execute(query, params)]

    def last_seq(self) -> int:
        with self._connection(writing=False) as connection:
            row = connection.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(row[0]) if row else 0

    def state_since(self, bot_id: str) -> tuple[str, int] | None:
        """The bot's state and when it entered it (its last event)."""
        with self._connection(writing=False) as connection:
            row = connection.execute(
                "SELECT b.state, e.at_us FROM bots b JOIN events e ON e.bot_id = b.id "
                "WHERE b.id = %s ORDER BY e.seq DESC LIMIT 1",
                (bot_id,),
            ).fetchone()
        return (str(row[0]), int(row[1])) if row else None

    # -- the queue ----------------------------------------------------------------

    def next_time(self, state: str) -> int | None:
        with self._connection(writing=False) as connection:
            row = connection.execute("SELECT min(sort_us) FROM bots WHERE state = %s", (state,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def due(self, state: str, until_us: int, limit: int = 10_000) -> list[Due]:
        with self._connection(writing=False) as connection:
            rows = connection.execute(
                "SELECT id, state, sort_us FROM bots WHERE state = %s AND sort_us <= %s ORDER BY sort_us LIMIT %s",
                (state, until_us, limit),
            ).fetchall()
        return [Due(*row) for row in rows]

    def in_states(self, wanted: Iterable[str]) -> list[Due]:
        with self._connection(writing=False) as connection:
            rows = connection.execute(
                "SELECT id, state, sort_us FROM bots WHERE state = ANY(%s) ORDER BY sort_us", (list(wanted),)
            ).fetchall()
        return [Due(*row) for row in rows]

    # -- changing -----------------------------------------------------------------

    def transition_many(self, changes: Sequence[Change], now_us: int) -> list[str]:
        """Compare-and-sets in one transaction, in order; the ids that really moved."""
        groups: list[tuple[tuple[str, str, str | None], dict[str, None]]] = []
        for bot_id, old, new, detail in changes:
            if not states.is_legal(old, new):
                raise IllegalTransition(f"illegal transition {old} -> {new} for {bot_id}")
            if groups and groups[-1][0] == (old, new, detail) and bot_id not in groups[-1][1]:
                groups[-1][1][bot_id] = None  # an ordered set
            else:
                groups.append(((old, new, detail), {bot_id: None}))
        moved: list[str] = []
        with self._transaction() as (connection, pending):
            rows: list[tuple[str, str, int, str | None]] = []
            for (old, new, detail), id_set in groups:
                bot_ids = list(id_set)
                won = {
                    row[0]
                    for row in connection.execute(
                        "UPDATE bots SET state = %s, updated_us = %s WHERE state = %s AND id = ANY(%s) RETURNING id",
                        (new, now_us, old, bot_ids),
                    )
                }
                for bot_id in bot_ids:
                    if bot_id in won:
                        moved.append(bot_id)
                        rows.append((bot_id, new, now_us, detail))
            self._add_events(connection, pending, rows)
        return moved

    def transition(self, bot_id: str, old: str, new: str, now_us: int, detail: str | None = None) -> bool:
        return bool(self.transition_many([(bot_id, old, new, detail)], now_us))

    def note(self, bot_id: str, now_us: int, detail: str) -> None:
        with self._transaction() as (connection, pending):
            state = self._state_of(connection, bot_id)
            if state is not None:
                self._add_events(connection, pending, [(bot_id, state, now_us, detail)])

    def stage_many(self, due: Sequence[Due], now_us: int) -> list[str]:
        """scheduled -> staged in one transaction, each fenced on its join_at: a cancel or
        reschedule that slipped in wins. Returns the ids that were staged, in the order asked."""
        if not due:
            return []
        with self._transaction() as (connection, pending):
            won = {
                row[0]
                for row in connection.execute(
                    "UPDATE bots SET state = 'staged', updated_us = %s "
                    "FROM unnest(%s::text[], %s::bigint[]) AS d(id, join_at_us) "
                    "WHERE bots.id = d.id AND bots.state = 'scheduled' AND bots.join_at_us = d.join_at_us "
                    "RETURNING bots.id",
                    (now_us, [bot.id for bot in due], [bot.join_at_us for bot in due]),
                )
            }
            staged = list(dict.fromkeys(bot.id for bot in due if bot.id in won))
            self._add_events(connection, pending, [(bot_id, states.STAGED, now_us, None) for bot_id in staged])
        return staged

    def stage(self, bot_id: str, join_at_us: int, now_us: int) -> bool:
        return bool(self.stage_many([Due(bot_id, states.SCHEDULED, join_at_us)], now_us))

    def reschedule(self, bot_id: str, join_at: str, join_at_us: int, now_us: int) -> None:
        with self._transaction() as (connection, _pending):
            cursor = connection.execute(
                "UPDATE bots SET join_at = %s, join_at_us = %s, updated_us = %s WHERE id = %s AND state = 'scheduled'",
                (join_at, join_at_us, now_us, bot_id),
            )
            if cursor.rowcount != 1:
                raise NotScheduled(bot_id, self._state_of(connection, bot_id))
            _notify_queue(connection, join_at_us)

    def delete_scheduled(self, bot_id: str) -> None:
        """Cancel: a scheduled bot and its history are deleted for good."""
        with self._transaction() as (connection, _pending):
            cursor = connection.execute("DELETE FROM bots WHERE id = %s AND state = 'scheduled'", (bot_id,))
            if cursor.rowcount != 1:
                raise NotScheduled(bot_id, self._state_of(connection, bot_id))
            connection.execute("DELETE FROM events WHERE bot_id = %s", (bot_id,))
            connection.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, f"gone {bot_id}"))
        if self._on_deleted is not None:
            self._on_deleted(bot_id)

    # -- followed calendars (issue 16) -------------------------------------------------

    def calendars(self) -> list[dict[str, Any]]:
        with self._connection(writing=False) as connection:
            rows = connection.execute("SELECT name, source, options, poll, created_us FROM calendars ORDER BY name")
            return [{"name": name, "source": json.loads(source), "options": json.loads(options),
                     "poll": json.loads(poll), "created_us": int(created)}
                    for name, source, options, poll, created in rows.fetchall()]

    def add_calendar(self, name: str, source: dict[str, Any], options: dict[str, Any], poll: dict[str, Any],
                     now_us: int) -> bool:
        with self._connection(writing=True) as connection, connection.transaction():
            cursor = connection.execute(
                "INSERT INTO calendars (name, source, options, poll, created_us) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (name, json.dumps(source), json.dumps(options), json.dumps(poll), now_us),
            )
            return cursor.rowcount == 1

    def save_calendar_poll(self, name: str, poll: dict[str, Any]) -> bool:
        with self._connection(writing=True) as connection, connection.transaction():
            cursor = connection.execute("UPDATE calendars SET poll = %s WHERE name = %s", (json.dumps(poll), name))
            return cursor.rowcount == 1

    def remove_calendar(self, name: str) -> bool:
        with self._connection(writing=True) as connection, connection.transaction():
            return connection.execute("DELETE FROM calendars WHERE name = %s", (name,)).rowcount == 1

    # -- claims, leases and fencing (cluster mode) ---------------------------------------
    #
    # Not part of the ``Store`` interface: what a cluster agent adds. Event times are the
    # caller's ``now_us`` as everywhere; lease times are the database's clock (see _DB_NOW_US).

    def database_now_us(self) -> int:
        """The database server's clock (for an agent's clock offset, and lease arithmetic)."""
        with self._connection(writing=False) as connection:
            row = connection.execute(f"SELECT {_DB_NOW_US}").fetchone()
        assert row is not None
        return int(row[0])

    def claim_due(self, agent: str, until_us: int, slots: int, lease_us: int, now_us: int,
                  take_over: bool = True) -> list[Claim]:
        """Claim at most ``slots`` bots for ``agent`` and stage them, earliest first: scheduled
        bots due by ``until_us`` (-> staged), ad-hoc ``ready`` bots nobody holds, and staged bots
        whose holder's lease ran out (re-staged here; the event says from whom). ``SKIP LOCKED``:
        agents claiming at once never wait for each other, and each bot has exactly one winner.
        A bot being rescheduled or cancelled at that moment is skipped (it is locked): the
        change wins, and the next tick sees the bot as it then is. Without ``take_over`` no
        lapsed lease is taken (just after an outage: their holders renew first)."""
        if slots <= 0:
            return []
        lapsed = f"b.lease_until_us < {_DB_NOW_US}" if take_over else "false"
        with self._transaction() as (connection, pending):
            rows = connection.execute(
                f"""WITH picked AS (
                    SELECT b.id, b.agent AS previous, b.state AS was FROM bots b
                    WHERE (b.state = 'scheduled' AND b.sort_us <= %(until)s)
                       OR (b.state = 'ready' AND (b.agent IS NULL OR {lapsed}))
                       OR (b.state = 'staged' AND {lapsed})
                    ORDER BY b.sort_us LIMIT %(slots)s
                    FOR UPDATE OF b SKIP LOCKED
                )
                UPDATE bots b SET state = CASE WHEN b.state = 'scheduled' THEN 'staged' ELSE b.state END,
                    updated_us = %(now)s, agent = %(agent)s, lease_until_us = {_DB_NOW_US} + %(lease)s,
                    epoch = b.epoch + 1
                FROM picked WHERE b.id = picked.id
                RETURNING b.id, b.state, b.sort_us, b.epoch, picked.previous, picked.was""",
                {"until": until_us, "slots": slots, "now": now_us, "agent": agent, "lease": lease_us},
            ).fetchall()
            claims: list[Claim] = []
            events: list[tuple[str, str, int, str | None]] = []
            for bot_id, state, sort_us, epoch, previous, was in sorted(rows, key=lambda row: (row[2], row[0])):
                claims.append(Claim(bot_id, state, int(sort_us), int(epoch), None if was == "scheduled" else previous))
                if was == states.SCHEDULED:
                    events.append((bot_id, states.STAGED, now_us, None))
                elif was == states.STAGED:
                    events.append((bot_id, states.STAGED, now_us, f"re-staged: agent {previous} lost its lease"))
            self._add_events(connection, pending, events, agent)
        return claims

    def renew(self, agent: str, held: Sequence[tuple[str, int]], lease_us: int) -> set[str]:
        """Heartbeat: extend the leases of the (bot_id, epoch) claims ``agent`` still holds; the
        ids returned are those. A runner whose bot is not among them must stop: its bot was
        taken over (another agent runs it) or given up, and none of its writes is accepted."""
        if not held:
            return set()
        with self._transaction() as (connection, _pending):
            rows = connection.execute(
                f"""UPDATE bots b SET lease_until_us = {_DB_NOW_US} + %s
                FROM unnest(%s::text[], %s::bigint[]) AS h(id, epoch)
                WHERE b.id = h.id AND b.epoch = h.epoch AND b.agent = %s AND b.state = ANY(%s)
                RETURNING b.id""",
                (lease_us, [bot_id for bot_id, _ in held], [epoch for _, epoch in held], agent, list(_HELD_STATES)),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def transition_held(self, agent: str, changes: Sequence[FencedChange], now_us: int) -> list[str]:
        """Compare-and-sets that also need ``agent`` to still hold each bot at that epoch (the
        fence: an agent that lost its lease cannot write for the bots it ran). In order, one
        transaction; the ids that really moved. A bot reaching a final state is let go."""
        for bot_id, _epoch, old, new, _detail in changes:
            if not states.is_legal(old, new):
                raise IllegalTransition(f"illegal transition {old} -> {new} for {bot_id}")
        moved: list[str] = []
        with self._transaction() as (connection, pending):
            rows: list[tuple[str, str, int, str | None]] = []
            for bot_id, epoch, old, new, detail in changes:
                cursor = connection.execute(
                    "UPDATE bots SET state = %s, updated_us = %s, "
                    "lease_until_us = CASE WHEN %s THEN NULL ELSE lease_until_us END "
                    "WHERE id = %s AND state = %s AND epoch = %s AND agent = %s",
                    (new, now_us, states.is_terminal(new), bot_id, old, epoch, agent),
                )
                if cursor.rowcount == 1:
                    moved.append(bot_id)
                    rows.append((bot_id, new, now_us, detail))
            self._add_events(connection, pending, rows, agent)
        return moved

    def fail_lost(self, now_us: int, limit: int = 1000) -> list[str]:
        """Bots past ``staged`` whose holder's lease ran out: the meeting went with that agent,
        so they become ``fatal_error`` ("agent NAME lost"), and its epoch moves on (the lost
        agent, if it comes back, can write nothing for them). Any agent may run this."""
        with self._transaction() as (connection, pending):
            rows = connection.execute(
                f"""WITH lost AS (
                    SELECT id, agent FROM bots
                    WHERE state = ANY(%s) AND lease_until_us < {_DB_NOW_US}
                    ORDER BY lease_until_us LIMIT %s
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE bots b SET state = 'fatal_error', updated_us = %s, lease_until_us = NULL,
                    epoch = b.epoch + 1
                FROM lost WHERE b.id = lost.id
                RETURNING b.id, lost.agent""",
                (_PAST_JOINING, limit, now_us),
            ).fetchall()
            failed = sorted((str(bot_id), str(agent)) for bot_id, agent in rows)
            lost = [(bot_id, states.FATAL_ERROR, now_us, f"agent {agent} lost") for bot_id, agent in failed]
            self._add_events(connection, pending, lost)
        return [bot_id for bot_id, _ in failed]

    def listen(self, on_due: Callable[[int], None], stopping: threading.Event,
               on_leave: Callable[[str], None] | None = None,
               on_events: Callable[[str], None] | None = None) -> None:
        """Until ``stopping`` is set (in a thread of its own): call ``on_due(due_us)`` for
        each queue change any agent commits (a create, a reschedule: see _notify_queue), so
        the agent with a free slot plans its staging at once, not at its next re-plan; and
        ``on_leave(bot_id)`` for each ``leave`` asked through another agent (notify_leave);
        ``on_events(payload)`` when any agent committed events ("") or cancelled a bot
        ("gone BOT_ID"). A lost connection is re-made (every LISTEN_RETRY_S); once it is,
        ``on_due(0)`` and ``on_events("")`` say "look again": what was missed meanwhile is
        read from the tables (the events from the last seq seen), not from notifications.
        This connection is the first to hear of a server restart (its session is ended at
        once): it starts the outage (``outage()``) for every caller."""
        while not stopping.is_set():
            try:
                with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                                     application_name="botsched-listen", **LIVENESS) as connection:
                    connection.execute(f"LISTEN {QUEUE_CHANNEL}")
                    if on_leave is not None:
                        connection.execute(f"LISTEN {LEAVE_CHANNEL}")
                    if on_events is not None:
                        connection.execute(f"LISTEN {EVENTS_CHANNEL}")
                        on_events("")  # events committed while we were not listening: catch up
                    on_due(0)  # anything sent while we were not listening: re-plan now
                    while not stopping.is_set():
                        for notice in connection.notifies(timeout=LISTEN_POLL_S):
                            if notice.channel == EVENTS_CHANNEL and on_events is not None:
                                on_events(notice.payload)
                            elif notice.channel == LEAVE_CHANNEL and on_leave is not None:
                                on_leave(notice.payload)
                            elif notice.channel == QUEUE_CHANNEL:
                                on_due(int(notice.payload) if notice.payload.isdigit() else 0)
            except psycopg.Error as exc:
                if not stopping.is_set():
                    if is_outage(exc):
                        self._unreachable(exc)
                    if self._outage is None:
                        log.warning("listening for queue changes failed: %s; retrying", self._said(exc))
                    stopping.wait(LISTEN_RETRY_S)

    def notify_leave(self, bot_id: str) -> None:
        """Ask the agent that runs ``bot_id`` (it LISTENs) to tell its runner to leave."""
        with self._connection(writing=True) as connection:
            connection.execute("SELECT pg_notify(%s, %s)", (LEAVE_CHANNEL, bot_id))

    def holder(self, bot_id: str) -> tuple[str | None, int] | None:
        """(agent, epoch) of a bot; ``None`` if there is no such bot."""
        with self._connection(writing=False) as connection:
            row = connection.execute("SELECT agent, epoch FROM bots WHERE id = %s", (bot_id,)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    # -- what every agent serves: the webhook outbox, the runners' output -------------------

    def outbox_call(self, fn: Callable[[OutboxConnection], Any], agent: str | None = None) -> Any:
        """Run an outbox function (webhooks/outbox.py) on a pooled connection, claiming for
        ``agent`` (the caller's thread: the daemon's webhook thread). Driver failures become
        the store's errors."""
        with self._connection(writing=True) as connection:
            return fn(OutboxConnection(connection, agent))

    def append_logs(self, chunks: Sequence[tuple[str, bytes]], max_bytes: int = RUNNER_LOG_MAX_BYTES) -> None:
        """Runner output, (bot_id, bytes) in order, in one transaction; each bot keeps only its
        newest chunks within ``max_bytes`` (older ones are deleted)."""
        if not chunks:
            return
        with self._connection(writing=True) as connection, connection.transaction():
            with connection.cursor().copy("COPY runner_logs (bot_id, size, data) FROM STDIN") as copy:
                for bot_id, data in chunks:
                    copy.write_row((bot_id, len(data), data))
            connection.execute(
                """DELETE FROM runner_logs r USING (
                    SELECT seq, sum(size) OVER (PARTITION BY bot_id ORDER BY seq DESC) AS newer
                    FROM runner_logs WHERE bot_id = ANY(%s)
                ) k WHERE r.seq = k.seq AND k.newer > %s""",
                (sorted({bot_id for bot_id, _ in chunks}), max_bytes),
            )

    def read_logs(self, bot_id: str, after: int = 0, limit: int = 64) -> list[tuple[int, bytes]]:
        """(seq, bytes) chunks of a bot's runner output after ``after``, oldest first."""
        with self._connection(writing=False) as connection:
            rows = connection.execute(
                "SELECT seq, data FROM runner_logs WHERE bot_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (bot_id, after, limit),
            ).fetchall()
        return [(int(seq), bytes(data)) for seq, data in rows]


    # -- the agents registry (``botsched agents``) ----------------------------------------

    def clock_offset_ms(self, samples: int = 3) -> float:
        """This machine's clock minus the database server's, in ms, from the sample of
        ``SELECT clock_timestamp()`` with the shortest round trip: the server read its clock
        within half of it of the round trip's midpoint (on a LAN, well under a millisecond)."""
        best: tuple[int, float] | None = None
        with self._connection(writing=False) as connection:
            for _ in range(samples):
                sent = time.time_ns()
                row = connection.execute(f"SELECT {_DB_NOW_US}").fetchone()
                back = time.time_ns()
                assert row is not None
                offset_ms = ((sent + back) / 2_000 - int(row[0])) / 1_000
                if best is None or back - sent < best[0]:
                    best = (back - sent, offset_ms)
        assert best is not None
        return round(best[1], 3)

    def beat_agent(self, beat: AgentBeat, lease_us: int, replacing: str | None = None) -> bool:
        """Write ``beat.name``'s registry row (its heartbeat; alive for ``lease_us`` by the
        database's clock), but only if that name is free, is this daemon's (``beat.instance``),
        lapsed (its lease ran out), or held by the instance ``replacing`` (a dead daemon of
        this host). False: another live daemon has the name."""
        with self._connection(writing=True) as connection:
            row = connection.execute(
                f"""INSERT INTO agents AS a (name, instance, host, pid, version, runner, slots_used, slots_total,
                        clock_offset_ms, started_us, heartbeat_us, lease_until_us)
                    VALUES (%(name)s, %(instance)s, %(host)s, %(pid)s, %(version)s, %(runner)s, %(used)s,
                        %(total)s, %(offset)s, {_DB_NOW_US}, {_DB_NOW_US}, {_DB_NOW_US} + %(lease)s)
                    ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, host = excluded.host,
                        pid = excluded.pid, version = excluded.version, runner = excluded.runner,
                        slots_used = excluded.slots_used, slots_total = excluded.slots_total,
                        clock_offset_ms = coalesce(excluded.clock_offset_ms, a.clock_offset_ms),
                        started_us = CASE WHEN a.instance = excluded.instance THEN a.started_us
                                          ELSE excluded.started_us END,
                        heartbeat_us = excluded.heartbeat_us, lease_until_us = excluded.lease_until_us
                    WHERE a.instance = excluded.instance OR a.lease_until_us < {_DB_NOW_US}
                       OR a.instance = %(replacing)s
                    RETURNING name""",
                {"name": beat.name, "instance": beat.instance, "host": beat.host, "pid": beat.pid,
                 "version": beat.version, "runner": beat.runner, "used": beat.slots_used, "total": beat.slots_total,
                 "offset": beat.clock_offset_ms, "lease": lease_us, "replacing": replacing},
            ).fetchone()
        return row is not None

    def agent_holder(self, name: str) -> tuple[str, str, int, float] | None:
        """Who has the name ``name`` in the registry: (instance, host, pid, seconds its lease has
        left, negative once lapsed); None if no agent ever had it."""
        with self._connection(writing=False) as connection:
            row = connection.execute(
                f"SELECT instance, host, pid, (lease_until_us - {_DB_NOW_US}) / 1e6 FROM agents WHERE name = %s",
                (name,),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]), float(row[3]))

    def retire_agent(self, name: str, instance: str) -> None:
        """A graceful stop: the agent is listed as not alive at once (its name is free)."""
        with self._connection(writing=True) as connection:
            connection.execute(
                f"UPDATE agents SET lease_until_us = {_DB_NOW_US} - 1, slots_used = 0 "
                "WHERE name = %s AND instance = %s",
                (name, instance),
            )

    def agents(self) -> list[AgentRow]:
        """Every agent that ever used this database, by name; ``alive`` while its lease holds."""
        with self._connection(writing=False) as connection:
            rows = connection.execute(
                "SELECT name, version, runner, slots_used, slots_total, heartbeat_us, clock_offset_ms, "
                f"lease_until_us >= {_DB_NOW_US} FROM agents ORDER BY name"
            ).fetchall()
        return [{"name": str(name), "version": str(version), "runner": str(runner), "slots_used": int(used),
                 "slots_total": None if total is None else int(total), "last_heartbeat": format_instant(int(beat)),
                 "clock_offset_ms": None if offset is None else float(offset), "alive": bool(alive)}
                for name, version, runner, used, total, beat, offset, alive in rows]


def _notify_queue(connection: Connection, due_us: int) -> None:
    """Tell every listening agent (at this transaction's commit) that something is due at ``due_us``."""
    connection.execute("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, str(max(due_us, 0))))


# -- the schema ---------------------------------------------------------------------------


def schema_version(connection: Connection) -> int:
    """The schema's version (0: none yet) from ``botsched_schema``."""
    exists = connection.execute("SELECT to_regclass('botsched_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = connection.execute("SELECT max(version) FROM botsched_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(connection: Connection, shown_url: str) -> None:
    """Bring the schema up to ``SCHEMA_VERSION``, one version per transaction (DDL is
    transactional here: a crash mid-way leaves the previous version whole). Agents starting
    together take turns (an advisory lock); a schema newer than this code is refused untouched."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS botsched_schema (version integer NOT NULL)")
        found = schema_version(connection)
    if found > SCHEMA_VERSION:
        raise DaemonUnavailable(
            f"database {shown_url} has schema {found}, newer than this botsched knows ({SCHEMA_VERSION}): "
            "upgrade botsched"
        )
    for target in range(found + 1, SCHEMA_VERSION + 1):
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if schema_version(connection) >= target:  # another agent did it meanwhile
                continue
            for statement in MIGRATIONS[target]:
                connection.execute(sql.SQL(statement))
            connection.execute("INSERT INTO botsched_schema (version) VALUES (%s)", (target,))
            log.info("database %s: schema migrated to version %d", shown_url, target)


def _password_of(url: str) -> str | None:
    """The URL's password (in its user part, or a ``?password=`` parameter), to mask it."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
        password = unquote(parts.password) if parts.password else None
        query = dict(parse_qsl(parts.query))
    except ValueError:
        return None
    return password or query.get("password") or None
