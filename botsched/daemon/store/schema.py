"""The SQLite schema and its migrations: ``PRAGMA user_version`` is the schema version.

Each migration runs in its own transaction with the version bump, so a crash mid-way
leaves the previous version whole. A database newer than this code is refused untouched.
"""

from __future__ import annotations

import sqlite3

from botsched.core.errors import DaemonUnavailable
from botsched.daemon.webhooks import outbox

SCHEMA_VERSION = 3

MIGRATIONS: dict[int, str] = {
    # version 0 -> 1: the first schema.
    1: """
    CREATE TABLE bots (
        id          TEXT PRIMARY KEY,
        meeting_url TEXT NOT NULL,
        bot_name    TEXT NOT NULL,
        state       TEXT NOT NULL,
        join_at     TEXT,               -- as shown to users, keeping the given precision
        join_at_us  INTEGER,            -- the same instant, for ordering and timing
        created_us  INTEGER NOT NULL,
        updated_us  INTEGER NOT NULL,
        metadata    TEXT NOT NULL DEFAULT '{}',
        dedup_key   TEXT,
        -- list order: join_at, or created_at for ad-hoc bots
        sort_us     INTEGER GENERATED ALWAYS AS (coalesce(join_at_us, created_us)) VIRTUAL
    );
    CREATE INDEX bots_by_state ON bots (state, sort_us);
    CREATE INDEX bots_by_time ON bots (sort_us);
    CREATE UNIQUE INDEX bots_live_dedup ON bots (dedup_key)
        WHERE dedup_key IS NOT NULL AND state NOT IN ('ended', 'fatal_error');
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,    -- global order, for `events --follow`
        bot_id  TEXT NOT NULL,
        state   TEXT NOT NULL,
        at_us   INTEGER NOT NULL,
        detail  TEXT
    );
    CREATE INDEX events_by_bot ON events (bot_id, seq);
    """,
    # version 1 -> 2: the webhook outbox (SPEC section 8): endpoints and one delivery row per
    # (event, endpoint), written in the transaction of the event (``outbox.enqueue``).
    2: outbox.DDL,
    # version 2 -> 3: the calendars the daemon follows (issue 16). ``source`` and
    # ``options`` are what ``calendar add`` was given (a password's file or variable
    # name, never a password); ``poll`` is the poll state (validators, last success and
    # error, next poll, failures), all JSON.
    3: """
    CREATE TABLE calendars (
        name        TEXT PRIMARY KEY,
        source      TEXT NOT NULL,
        options     TEXT NOT NULL,
        poll        TEXT NOT NULL,
        created_us  INTEGER NOT NULL
    );
    """,
}


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(db: sqlite3.Connection, path: str) -> None:
    """Before anything changes the file (WAL mode included): a newer botsched's database
    is left alone."""
    found = version(db)
    if found > SCHEMA_VERSION:
        raise DaemonUnavailable(
            f"database {path} has schema {found}, newer than this botsched knows ({SCHEMA_VERSION}): "
            "upgrade botsched"
        )


def migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to ``SCHEMA_VERSION``, one version per transaction."""
    for target in range(version(db) + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {target}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
